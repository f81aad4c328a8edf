"""Mark the registered versions that learned from data `nightshift forget` erased.

A version learned from erased data when its own training data held an erased record (decided by
the caller from the version's `git_commit` lineage tag), or when it continued training from a
version that did (its `parent_version` tag): the adapter carries what its parent learned. Each
such version gets the tag `nightshift.erased_data` ("<date>: <redacted reason>", erasures joined by
"; "), which `nightshift status` and the MLflow UI show. Retraining without the data is
`nightshift rebase`'s work; the tag says which versions need it.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines.common import params as params_mod
from registry import mlflow_registry as reg

ERASED = reg.TAG + "erased_data"
SEPARATOR = "; "
MAX_TAG_CHARS = 4000  # under the 5000 characters MLflow's stores take for a tag value


def tag_erased_versions(p: params_mod.RegistryParams, learned_from: Callable[[str], list[str]],
                        note: str) -> list[dict]:
    """Tag every version whose training data held erased records, and every version trained from
    one of them. `learned_from(git_commit)` lists the erased files of a commit's training data.
    Returns, oldest first, {"version", "cycle", "why"} for each version tagged."""
    from mlflow.exceptions import MlflowException

    c = reg.client(p)
    try:
        versions = sorted(c.search_model_versions(f"name = '{p.model_name}'"), key=lambda v: int(v.version))
    except MlflowException:
        return []  # no registered model yet
    tagged: dict[str, dict] = {}
    for v in versions:  # oldest first: a parent is decided before its children
        version, tags = str(v.version), v.tags
        parent = tags.get(f"{reg.TAG}parent_version")
        commit = tags.get(f"{reg.TAG}git_commit")
        files = learned_from(commit) if commit and commit != "none" else []
        if files:
            why = "trained on " + ", ".join(files)
        elif parent in tagged:
            why = f"continued from version {parent}, which learned from erased data"
        else:
            continue
        notes = [n for n in (tags.get(ERASED) or "").split(SEPARATOR) if n and n != note] + [note]
        value = SEPARATOR.join(notes)
        while len(value) > MAX_TAG_CHARS and len(notes) > 1:  # the newest erasures stay
            notes = notes[1:]
            value = SEPARATOR.join(notes)
        c.set_model_version_tag(p.model_name, version, ERASED, value)
        tagged[version] = {"version": version, "cycle": tags.get(f"{reg.TAG}cycle"), "why": why}
    return list(tagged.values())


def inherited(p: params_mod.RegistryParams, parent_version: str | None) -> str | None:
    """The erasure notes a new version trained from `parent_version` carries on: the parent's
    adapter learned from erased data, so the child has learned it too."""
    if not parent_version:
        return None
    return reg.client(p).get_model_version(p.model_name, parent_version).tags.get(ERASED)
