"""Moving the adapter line onto another base model: `nightshift base build` and `nightshift rebase`.

An adapter is tied to the base it was trained on, so a rebase trains a fresh adapter (no parent)
on the new base from the versioned data (`flows.rebase_data`: the replay buffer over all its
strata, the recent nights' clean records and the anchor training set, within `rebase.*`). It is
scored against @champion, each on its own base, on the same held-out, golden, replay and anchor
sets; the gate compares bits per byte of the answer text (a
per-token loss depends on the tokenizer) and runs the generation checks of `gate`. A passing
rebase is registered with its lineage (`base_model`, `rebased_from`, the data it read, the
reason), moves @champion (or @challenger) with the reason recorded in the history, and the
workspace's `base_model.model` follows it; a rejected one is registered with its verdict only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import getpass
import hashlib
import json
import re
import shutil
from pathlib import Path

from flows import cycle_lock, rebase_data, rebase_report
from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.common import paths
from pipelines.common.metrics import SETS, metric
from pipelines.common.records import write_json

REBASE_DIR = Path("models/rebase")          # the new adapter and the champion's, downloaded
REBASE_DATA = REBASE_DIR / "train.jsonl"
REBASE_REPORT = Path("reports/rebase.json")
REBASE_HTML = Path("reports/rebase.html")
GOLDEN = Path("data/golden/golden.jsonl")
ANCHOR = Path("data/anchor/anchor.jsonl")
# The generation checks a nightly candidate passes; the loss checks are per token, so they are
# replaced by bits per byte.
GENERATION_CHECKS = ("generations.pii_rate", "generations.format_pass_rate")


def build_base(ws: Path, out_dir: Path, **overrides) -> dict:
    """A tiny base into `out_dir`: the base_model stage with the workspace's `base_model` params,
    `overrides` (num_layers, vocab_size, hidden_size, ...; None is left as it is) replacing some.
    `seed` among them replaces the global seed. A base built inside the workspace is versioned
    with DVC there (its .dvc file committed), as the workspace's own base is: a clone of the
    workspace gets it back with `dvc pull`, and no cycle commits its weights to git. Returns the
    stage's metrics and the shape used."""
    from pipelines.model import base_model

    p = wsp.load_params(ws)
    seed = overrides.pop("seed", None)
    changes = {k: v for k, v in overrides.items() if v is not None}
    # A pydantic dataclass: `replace` validates the new values like params.yaml's.
    shape = dataclasses.replace(p.base_model, **changes)
    metrics = base_model.run(shape, p.seed if seed is None else seed, out_dir, ws / "data/corpus")
    named = workspace_model(ws, str(out_dir))
    if not Path(named).is_absolute():
        with cycle_lock.hold(ws, "base build"):
            wsp.dvc(ws, "add", "-q", named)
            ignore = (Path(named).parent / ".gitignore").as_posix()
            wsp.git(ws, "add", "--", f"{named}.dvc", ignore)
            wsp.git(ws, "commit", "-q", "-m", f"base build: {named}, versioned with DVC")
    return {**metrics, "base_model": dataclasses.asdict(shape), "out_dir": str(out_dir),
            "versioned": None if Path(named).is_absolute() else f"{named}.dvc"}


def answer_divergence(champion: dict | None, candidate: dict | None) -> dict | None:
    """How far the two models' answers to the same golden prompts are apart, without tokens (the
    KL of a nightly cycle needs one vocabulary): the share of identical answers, and their mean
    character similarity (difflib's ratio, 1 = the same text). None without both models."""
    if not champion or not candidate or "error" in champion or "error" in candidate:
        return None
    pairs = list(zip(champion["generations"]["samples"], candidate["generations"]["samples"]))
    if not pairs:
        return None
    similar = [difflib.SequenceMatcher(None, a["answer"], b["answer"]).ratio() for a, b in pairs]
    return {"generation_agreement": round(sum(a["answer"] == b["answer"] for a, b in pairs) / len(pairs), 5),
            "answer_similarity": round(sum(similar) / len(similar), 5), "answers": len(pairs)}


def gate_params(p: params_mod.Params) -> params_mod.GateParams:
    """The rebase's gate: bits per byte on the held-out set against the champion's (at most
    `rebase.max_bpb_increase` higher), and the generation checks of `gate` as they are."""
    thresholds = {"new.bits_per_byte": params_mod.MetricThreshold(max_increase=p.rebase.max_bpb_increase)}
    thresholds.update({k: v for k, v in p.gate.thresholds.items() if k in GENERATION_CHECKS})
    return params_mod.GateParams(thresholds=thresholds)


def set_base_model(params_file: Path, model: str) -> None:
    """Point params.yaml's `base_model.model` at `model`, leaving every other line, comment
    included, as it is: the one `model:` line inside the `base_model:` section is substituted
    (a YAML load and dump would drop the comments that hold the why of every value). The result
    is checked by loading it."""
    lines = params_file.read_text().splitlines(keepends=True)
    in_section, done = False, False
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            in_section = line.startswith("base_model:")
            continue
        m = re.match(r"^(\s+model:\s*)(\S.*?)?(\s+#.*)?(\n?)$", line)
        if in_section and m and not done:
            lines[i] = f"{m.group(1)}{json.dumps(model)}{m.group(3) or ''}{m.group(4)}"
            done = True
    if not done:
        raise params_mod.ParamsError(f"{params_file} has no base_model.model line to change")
    text = "".join(lines)
    params_file.write_text(text)
    if params_mod.load(params_file).base_model.model != model:
        raise params_mod.ParamsError(f"{params_file}: base_model.model did not become {model}")


def follow_champion(ws: Path, p: params_mod.Params) -> str | None:
    """Make params.yaml's `base_model.model` the base @champion was trained on (its version's
    `base_model` tag), so that a rollback or promotion across a rebase, by the CLI or in the
    MLflow UI, takes the base with the adapter. Returns the base it changed to, None when
    params.yaml already names it (or the champion has no such tag)."""
    from registry import mlflow_registry as reg

    champion = reg.resolve_alias(p.registry, reg.CHAMPION)
    base = champion.tags.get(f"{reg.TAG}base_model") if champion else None
    if not base or base == p.base_model.model:
        return None
    set_base_model(ws / "params.yaml", base)
    return base


def version_base(p: params_mod.Params, tags: dict) -> str:
    """The base model a registered version was trained on: its `base_model` tag, else (a version
    registered before the tag existed) the workspace's."""
    from registry import mlflow_registry as reg

    return tags.get(f"{reg.TAG}base_model") or p.base_model.model


def workspace_model(ws: Path, model: str) -> str:
    """How params.yaml names MODEL: relative to the workspace when it lies inside it, absolute
    for another local folder, a hub id as it is."""
    local = Path(model)
    if not local.is_absolute():
        local = Path.cwd() / local
    if not local.exists():
        return model
    local = local.resolve()
    try:
        return str(local.relative_to(ws))
    except ValueError:
        return str(local)


def ignore_rebase_outputs(ws: Path) -> None:
    """Keep the rebase's outputs out of git (a cycle's commit adds everything else), also in a
    workspace made before they were listed in its .gitignore."""
    ignore = ws / ".gitignore"
    text = ignore.read_text() if ignore.exists() else ""
    missing = [f"/{REBASE_DIR}/", f"/{REBASE_REPORT}", f"/{REBASE_HTML}"]
    missing = [line for line in missing if line not in text.splitlines()]
    if missing:
        ignore.write_text(text + ("" if text.endswith("\n") or not text else "\n") + "\n".join(missing) + "\n")


def rebase(ws: Path, model: str, reason: str, by: str | None = None) -> dict:
    """Train, score, gate and register a fresh adapter on `model`; move @champion when it passes.
    Returns the report (also written to reports/rebase.json)."""
    from pipelines.model import evaluate, gate, train
    from registry import history
    from registry import lineage as lineage_mod
    from registry import mlflow_registry as reg

    by = by or getpass.getuser()
    with cycle_lock.hold(ws, "rebase"):
        p = wsp.load_params(ws)
        # The reason rests in tags, the history, the report and a commit: redacted like forget's,
        # since "retrain without Alice's data" is the natural reason after `nightshift forget`.
        from pipelines.privacy.redact import redact_reason

        reason = redact_reason(p.redact, reason)
        named = workspace_model(ws, model)
        new_base = wsp.model_path(ws, named)
        # With no @champion (every candidate so far rejected) the rebase is judged like a first
        # adapter: against the bare new base, on the gate's thresholds that need no champion.
        champion = reg.resolve_alias(p.registry)
        old_base = wsp.model_path(ws, version_base(p, champion.tags if champion else {}))

        ignore_rebase_outputs(ws)
        work = ws / REBASE_DIR
        shutil.rmtree(work, ignore_errors=True)
        candidate, champion_dir, empty = work / "candidate", work / "champion", work / "none"
        empty.mkdir(parents=True)
        if champion:
            reg.download_adapter(p.registry, champion.source, champion_dir)

        mix = rebase_data.training_mix(p, ws, ws / REBASE_DATA)
        replay = mix.pop("replay_set")
        # The workspace's params as the new version is trained with them: the new base, and
        # `rebase.epochs` passes (logged with the version, as they were used).
        rebased = dataclasses.replace(p, base_model=dataclasses.replace(p.base_model, model=named),
                                      train=dataclasses.replace(p.train, epochs=p.rebase.epochs))
        trained = train.run(rebased.train, new_base, p.seed, empty, ws / REBASE_DATA, candidate)
        # The mix is a copy of versioned records that `nightshift forget` would not reach: it does
        # not outlive the training (the lineage names the files it was drawn from, by md5).
        (ws / REBASE_DATA).unlink()

        sets = evaluate.load_sets(ws / paths.DATASET / "eval.jsonl", ws / GOLDEN, ws / ANCHOR, None,
                                  None, p.evaluate.replay_examples, p.seed)
        sets["replay"] = replay
        # Each adapter on its own base: one evaluate run per base, the adapter as its candidate.
        on_new = evaluate.run(p.evaluate, p.train, new_base, p.seed, candidate, empty, sets)
        on_old = (evaluate.run(p.evaluate, p.train, old_base, p.seed, champion_dir, empty, sets)
                  if champion else {"candidate": None, "base": None})
        evaluation = {"examples": on_new["examples"], "candidate": on_new["candidate"],
                      "champion": on_old["candidate"], "base": on_new["base"],
                      "champion_base": on_old["base"],
                      "divergence": answer_divergence(on_old["candidate"], on_new["candidate"])}
        verdict = gate.decide(gate_params(p), evaluation)

        cycle = "rebase-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        commit = wsp.git(ws, "rev-parse", "HEAD").strip() or None
        data_version = hashlib.md5(json.dumps(mix["data_versions"], sort_keys=True).encode()).hexdigest()
        # No erased_data tag: a fresh adapter learns only the data as it is now, from which
        # `nightshift forget` removed what it erased; so a rebase onto the same base is how a
        # line is retrained without it, and the tag ends with the champion it replaces.
        tags = lineage_mod.lineage(cycle, None, {"data_version": data_version, "git_commit": commit},
                                   rebased, "none", evaluation, None)
        rebased_from = champion.version if champion else "none"
        tags.update({"rebased_from": rebased_from, "rebase_reason": reason,
                     "data_versions": json.dumps(mix["data_versions"], sort_keys=True)})
        report = {"cycle": cycle, "base_model": named, "champion_base_model": old_base,
                  "rebased_from": rebased_from, "reason": reason, "data": mix, "train": {
                      k: v for k, v in trained.items() if k != "losses"},
                  "bits_per_byte": {
                      who: {s: metric(evaluation[who], f"{s}.bits_per_byte") for s in SETS}
                      for who in ("candidate", "champion", "base", "champion_base")},
                  "generations": {who: {k.split(".")[1]: metric(evaluation[who], k) for k in GENERATION_CHECKS}
                                  for who in ("candidate", "champion")},
                  "divergence": evaluation["divergence"], "evaluation": evaluation, "gate": verdict}
        write_json(ws / REBASE_REPORT, report)
        rebase_report.write(report, ws / REBASE_HTML)
        registered = reg.register(rebased.registry, candidate, cycle, tags,
                                  lineage_mod.run_metrics(evaluation, trained),
                                  lineage_mod.logged_params(rebased),
                                  [ws / REBASE_REPORT, ws / REBASE_HTML], verdict)
        version = registered["version"]
        why = f"rebase onto {named}: {reason}"
        if verdict["passed"]:
            alias = reg.CHAMPION if p.registry.auto_promote else reg.CHALLENGER
            history.promote(p.registry, version, why, by=by, alias=alias)
            outcome = f"gate passed; @{alias} -> version {version}"
        else:
            alias = None
            outcome = "gate rejected: " + "; ".join(verdict["reasons"])
        reg.mark_finalised(p.registry, version, outcome)
        if alias == reg.CHAMPION:
            # The workspace follows the champion: the next night continues on the new base.
            set_base_model(ws / "params.yaml", named)
            wsp.git(ws, "add", "params.yaml", ".gitignore")
            # Onto the base params.yaml names already (a retrain after `forget`): nothing to commit.
            if wsp.git(ws, "diff", "--cached", "--name-only").strip():
                wsp.git(ws, "commit", "-q", "-m", f"base_model.model: {named} ({why}; version {version})")
        report.update({"version": version, "alias": alias, "outcome": outcome,
                       "params_base_model": wsp.load_params(ws).base_model.model})
        write_json(ws / REBASE_REPORT, report)
        rebase_report.write(report, ws / REBASE_HTML)
        return report
