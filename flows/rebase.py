"""Moving the adapter line onto another base model: `nightshift base build` and `nightshift rebase`.

An adapter is tied to the base it was trained on, so a rebase trains a fresh adapter (no parent)
on the new base from the versioned data: the replay buffer over all its strata, the current
night's new training examples, and the anchor training set, within `rebase.max_examples`, mixed
by the dataset stage's own helpers. It is scored against @champion, each on its own base, on the
same held-out, golden and anchor sets; the gate compares bits per byte of the answer text (a
per-token loss depends on the tokenizer) and runs the generation checks of `gate`. A passing
rebase is registered with its lineage (`base_model`, `rebased_from`, the data it read, the
reason), moves @champion (or @challenger) with the reason recorded in the history, and the
workspace's `base_model.model` follows it; a rejected one is registered with its verdict only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import json
import random
import re
import shutil
from pathlib import Path

from flows import cycle_lock
from flows.forget import redact_reason
from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.common import paths
from pipelines.common.metrics import metric
from pipelines.common.records import read_jsonl, write_json, write_jsonl

REBASE_DIR = Path("models/rebase")          # the new adapter and the champion's, downloaded
REBASE_DATA = REBASE_DIR / "train.jsonl"
REBASE_REPORT = Path("reports/rebase.json")
GOLDEN = Path("data/golden/golden.jsonl")
ANCHOR = Path("data/anchor/anchor.jsonl")
ANCHOR_TRAIN = Path(wsp.ANCHOR_TRAIN)
# The generation checks a nightly candidate passes; the loss checks are per token, so they are
# replaced by bits per byte.
GENERATION_CHECKS = ("generations.pii_rate", "generations.format_pass_rate")


def build_base(ws: Path, out_dir: Path, **overrides) -> dict:
    """A tiny base into `out_dir`: the base_model stage with the workspace's `base_model` params,
    `overrides` (num_layers, vocab_size, hidden_size, ...; None is left as it is) replacing some.
    `seed` among them replaces the global seed. Returns the stage's metrics and the shape used."""
    from pipelines.model import base_model

    p = wsp.load_params(ws)
    seed = overrides.pop("seed", None)
    changes = {k: v for k, v in overrides.items() if v is not None}
    # A pydantic dataclass: `replace` validates the new values like params.yaml's.
    shape = dataclasses.replace(p.base_model, **changes)
    metrics = base_model.run(shape, p.seed if seed is None else seed, out_dir, ws / "data/corpus")
    return {**metrics, "base_model": dataclasses.asdict(shape), "out_dir": str(out_dir)}


def md5(path: Path) -> str:
    """A file's md5, as DVC records it: what version of the data a rebase read."""
    return hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else "missing"


def training_mix(p: params_mod.Params, ws: Path, out: Path) -> dict:
    """The rebase's training set: the replay buffer and the current night's new training examples
    (at most `rebase.max_examples`, drawn evenly over their strata past it), plus the anchor
    training set at `replay.anchor_ratio` of the mix, each record tagged `_source`. The sampling
    is the dataset stage's (draw_evenly, mix_sizes). Returns counts and the data versions read."""
    from pipelines.data import dataset

    buffer_file, night_file = ws / paths.BUFFER, ws / paths.DATASET / "train.jsonl"
    anchor_file = ws / ANCHOR_TRAIN
    strip = ("_source",)
    pool: dict[str, dict] = {}
    for r in read_jsonl(buffer_file) if buffer_file.exists() else []:
        pool[str(r["id"])] = {**r, "_source": "replay"}
    for r in read_jsonl(night_file) if night_file.exists() else []:
        if r.get("_source") == "new":
            pool.setdefault(str(r["id"]), {**{k: v for k, v in r.items() if k not in strip},
                                           "_source": "new"})
    records = sorted(pool.values(), key=lambda r: str(r["id"]))
    rng = random.Random(f"{p.seed}-rebase")
    if len(records) > p.rebase.max_examples:
        records = dataset.draw_evenly(records, p.rebase.max_examples, rng)
    anchors = list(read_jsonl(anchor_file)) if anchor_file.exists() else []
    # The anchor share of the nightly mix, with no replay share: every buffered record is in.
    _, n_anchor = dataset.mix_sizes(len(records), 0, len(anchors),
                                    dataclasses.replace(p.replay, ratio=0.0), 0.0)
    anchored = [{**r, "_source": "anchor"} for r in dataset.draw_evenly(anchors, n_anchor, rng)]
    train = records + anchored
    rng.shuffle(train)
    write_jsonl(out, train)
    return {"examples": len(train), "replay": sum(r["_source"] == "replay" for r in records),
            "new": sum(r["_source"] == "new" for r in records), "anchor": len(anchored),
            "data_versions": {str(paths.BUFFER): md5(buffer_file),
                              str(paths.DATASET / "train.jsonl"): md5(night_file),
                              str(ANCHOR_TRAIN): md5(anchor_file)}}


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
    missing = [f"/{REBASE_DIR}/", f"/{REBASE_REPORT}"]
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
        reason = redact_reason(p, reason)
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

        mix = training_mix(p, ws, ws / REBASE_DATA)
        trained = train.run(p.train, new_base, p.seed, empty, ws / REBASE_DATA, candidate)
        # The mix is a copy of versioned records that `nightshift forget` would not reach: it does
        # not outlive the training (the lineage names the files it was drawn from, by md5).
        (ws / REBASE_DATA).unlink()

        sets = evaluate.load_sets(ws / paths.DATASET / "eval.jsonl", ws / GOLDEN, ws / ANCHOR, None,
                                  None, p.evaluate.replay_examples, p.seed)
        # Each adapter on its own base: one evaluate run per base, the adapter as its candidate.
        on_new = evaluate.run(p.evaluate, p.train, new_base, p.seed, candidate, empty, sets)
        on_old = (evaluate.run(p.evaluate, p.train, old_base, p.seed, champion_dir, empty, sets)
                  if champion else {"candidate": None, "base": None})
        evaluation = {"examples": on_new["examples"], "candidate": on_new["candidate"],
                      "champion": on_old["candidate"], "base": on_new["base"],
                      "champion_base": on_old["base"], "divergence": None}
        verdict = gate.decide(gate_params(p), evaluation)

        rebased = dataclasses.replace(p, base_model=dataclasses.replace(p.base_model, model=named))
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
                      who: {s: metric(evaluation[who], f"{s}.bits_per_byte") for s in ("new", "golden", "anchor")}
                      for who in ("candidate", "champion")},
                  "generations": {who: {k.split(".")[1]: metric(evaluation[who], k) for k in GENERATION_CHECKS}
                                  for who in ("candidate", "champion")},
                  "evaluation": evaluation, "gate": verdict}
        write_json(ws / REBASE_REPORT, report)
        registered = reg.register(rebased.registry, candidate, cycle, tags,
                                  lineage_mod.run_metrics(evaluation, trained),
                                  lineage_mod.logged_params(rebased), [ws / REBASE_REPORT], verdict)
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
            wsp.git(ws, "add", "params.yaml")
            wsp.git(ws, "commit", "-q", "-m", f"base_model.model: {named} ({why}; version {version})")
        report.update({"version": version, "alias": alias, "outcome": outcome,
                       "params_base_model": wsp.load_params(ws).base_model.model})
        write_json(ws / REBASE_REPORT, report)
        return report
