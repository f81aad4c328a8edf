"""What a rebase trains on and is scored on, read from the workspace's versioned data.

The fresh adapter learns what the line learned, within a budget: the replay buffer as the last
cycle grew it (every stratum the line has kept, cycle x topic) and the clean records of the recent nights'
snapshots (`rebase.recent_nights`), at most `rebase.max_examples` of them drawn evenly over
their strata, plus the anchor training set at `replay.anchor_ratio`. Each night is cleaned the
way its cycle cleaned it: the `validate` stage on its snapshot (a night whose batch validate
rejects was never trained on, and is skipped), then the `dataset` stage's rules: duplicates
(exact, and near ones of the buffer) dropped, feedback in `dataset.exclude_feedback` dropped,
and every record the split holds out (`dataset.held_out`) left out, so the held-out set the
rebase is judged on stays unseen. A share of the buffer (`dataset.eval_fraction`, at most
`evaluate.replay_examples`) is left out too: the replay set, older topics the fresh adapter
never saw, scored like a nightly cycle's.

Nothing drawn here is written where `nightshift forget` would not reach it: the validated
copies of each night live in a temporary folder, and the training mix is deleted by the rebase
once trained. Its lineage names each file read by md5 (what DVC records).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import tempfile
from pathlib import Path

from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.common import paths
from pipelines.common.records import latest_feedback, read_jsonl, write_jsonl

ANCHOR_TRAIN = Path(wsp.ANCHOR_TRAIN)


def md5(path: Path) -> str:
    """A file's md5, as DVC records it: what version of the data a rebase read."""
    return hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else "missing"


def recent_snapshots(ws: Path, nights: int) -> list[Path]:
    """The newest `nights` snapshots in data/snapshots/, oldest first (named by their date)."""
    found = sorted((ws / paths.SNAPSHOTS).glob("????-??-??.jsonl"))
    return found[-nights:] if nights else []


def clean_night(p: params_mod.Params, snapshot: Path, scratch: Path) -> tuple[list[dict], list[dict]] | None:
    """The snapshot's records that `validate` passes, as its cycle saw them, and its clean
    feedback events; None when the night's batch is rejected (its cycle trained on nothing)."""
    from pipelines.data import validate

    cycle = snapshot.name.removesuffix(".jsonl")
    out = scratch / cycle
    try:
        validate.run(p.validate, snapshot, out, cycle)
    except validate.BatchRejected:
        return None
    return list(read_jsonl(out / "clean.jsonl")), list(read_jsonl(out / "feedback.jsonl"))


def learnable(p: params_mod.Params, records: list[dict], buffer: list[dict], cycle: str) -> list[dict]:
    """A night's clean records by the dataset stage's rules: no duplicates (within the night or
    of the buffer), no excluded feedback, nothing the split holds out. Tagged with their cycle."""
    from pipelines.data import dataset

    return [{**r, "_cycle": cycle} for r in dataset.split_new(records, buffer, p.dataset, p.seed)["train"]]


def replay_held_out(p: params_mod.Params, buffer_file: Path) -> list[dict]:
    """The buffer records the rebase leaves out to score older topics on: as a nightly cycle
    leaves `dataset.eval_fraction` of the buffer unreplayed, at most `evaluate.replay_examples`,
    chosen the way evaluate chooses its replay set."""
    from pipelines.model import evaluate

    buffered = sum(1 for _ in read_jsonl(buffer_file)) if buffer_file.exists() else 0
    size = min(p.evaluate.replay_examples, math.ceil(buffered * p.dataset.eval_fraction))
    return evaluate.replay_set(buffer_file, None, size, p.seed)


def current_buffer(ws: Path) -> Path:
    """The replay buffer as the last cycle left it: the one its dataset stage grew (what the next
    cycle will replay from), else the one pinned for it (a workspace before its first cycle)."""
    grown = ws / paths.NEXT_BUFFER
    return grown if grown.exists() else ws / paths.BUFFER


def training_mix(p: params_mod.Params, ws: Path, out: Path) -> dict:
    """Write the rebase's training set to `out`, each record tagged `_source` (replay, recent or
    anchor). Returns the counts, the nights read (and skipped), the replay set held out (its
    records, under "replay_set") and the data versions read."""
    from pipelines.data import dataset

    buffer_file, anchor_file = current_buffer(ws), ws / ANCHOR_TRAIN
    buffer = list(read_jsonl(buffer_file)) if buffer_file.exists() else []
    replay_set = replay_held_out(p, buffer_file)
    held = {str(r["id"]) for r in replay_set}
    pool: dict[str, dict] = {}
    for r in buffer:
        if str(r["id"]) not in held:
            pool[str(r["id"])] = {**r, "_source": "replay"}

    snapshots = recent_snapshots(ws, p.rebase.recent_nights)
    nights: dict[str, int | None] = {}
    cleaned: dict[str, list[dict]] = {}
    events: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="validated-", dir=out.parent) as scratch:
        for snapshot in snapshots:
            cycle = snapshot.name.removesuffix(".jsonl")
            night = clean_night(p, snapshot, Path(scratch))
            if night is None:
                nights[cycle] = None
                continue
            cleaned[cycle], night_events = night
            events.extend(night_events)
        # Feedback given on a later night counts, as the nightly cycles applied it.
        latest = latest_feedback(events)
        for cycle, clean in cleaned.items():
            kept = learnable(p, dataset.apply_feedback(clean, latest)[0], buffer, cycle)
            fresh = [r for r in kept if str(r["id"]) not in pool and str(r["id"]) not in held]
            for r in fresh:
                pool[str(r["id"])] = {**r, "_source": "recent"}
            nights[cycle] = len(fresh)

    records = sorted(pool.values(), key=lambda r: str(r["id"]))
    available = len(records)
    rng = random.Random(f"{p.seed}-rebase")
    if len(records) > p.rebase.max_examples:
        records = dataset.draw_evenly(records, p.rebase.max_examples, rng)
    anchors = list(read_jsonl(anchor_file)) if anchor_file.exists() else []
    # The anchor share of the nightly mix, with no replay share: the replay is in `records`.
    _, n_anchor = dataset.mix_sizes(len(records), 0, len(anchors),
                                    dataclasses.replace(p.replay, ratio=0.0), 0.0)
    anchored = [{**r, "_source": "anchor"} for r in dataset.draw_evenly(anchors, n_anchor, rng)]
    train = records + anchored
    rng.shuffle(train)
    write_jsonl(out, train)
    versions = {str(buffer_file.relative_to(ws)): md5(buffer_file), str(ANCHOR_TRAIN): md5(anchor_file)}
    versions.update({str(s.relative_to(ws)): md5(s) for s in snapshots})
    return {"examples": len(train), "available": available,
            "replay": sum(r["_source"] == "replay" for r in records),
            "recent": sum(r["_source"] == "recent" for r in records), "anchor": len(anchored),
            "nights": nights, "skipped_nights": sorted(c for c, n in nights.items() if n is None),
            "replay_set": replay_set, "data_versions": versions}
