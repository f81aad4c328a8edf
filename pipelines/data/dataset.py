"""dataset: de-duplicate the clean records, hold some out, and mix in replay of earlier cycles.

Duplicates, all counted in the report's `duplicates` and each kind on its own:
  - exact: a repeated id, or the same conversation word for word (`exact_duplicates`);
  - near: user and assistant turns with a Jaccard similarity of word shingles of at least
    dataset.near_duplicate_threshold, found by MinHash LSH (datasketch), either to an earlier
    record of this batch (`near_duplicates_in_batch`) or to one in the replay buffer, learned on
    an earlier night (`near_duplicates_of_replay`). The first of a group is kept.
Records whose feedback is in dataset.exclude_feedback stay in the clean data (they are counted in
`unique`) but are neither trained nor evaluated on (`filtered_feedback`).

Feedback that came after its answer (data/validated/feedback.jsonl: the night's feedback events,
see pipelines/common/records.py) is applied first: to the night's records, and to the replay
buffer for answers pulled on an earlier night. A buffered answer rated into exclude_feedback
leaves the buffer (`feedback_removed_from_buffer`): it is no longer replayed. An event whose
answer is in neither (held out, a duplicate, quarantined, or never logged) is counted as
`feedback_unmatched`.

The replay buffer read here (data/replay/buffer.jsonl) is a pinned input: the flow puts the
previous cycle's buffer there before the DAG runs. This stage writes the *next* buffer to its own
output, so it never reads what it writes and `dvc repro` at any recorded cycle rebuilds it.

Replay: the training mix is the new examples plus replay.ratio of examples drawn from the buffer
and replay.anchor_ratio from the fixed anchor training set (data/anchor/anchor_train.jsonl, like
the base model's pre-training data, disjoint from the anchor eval set), both drawn evenly over
strata (cycle x topic). At least dataset.eval_fraction of the buffer is left out of each
night's replay, for evaluate to measure forgetting on. The buffer grows by this cycle's training examples and, past
replay.capacity, keeps a stratified reservoir sample: see `update_buffer`.

    python -m pipelines.data.dataset --cycle 2026-01-05 data/validated/clean.jsonl data/replay/buffer.jsonl data/dataset \\
        --anchor data/anchor/anchor_train.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.records import content_hash, latest_feedback, read_jsonl, write_json, write_jsonl


def held_out(record_id: str, seed: int, fraction: float) -> bool:
    """Stable split by id: the same record lands on the same side in every run and every cycle."""
    h = int(hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def deduplicate(records: list[dict]) -> tuple[list[dict], int]:
    """Drop repeats of an id or of the exact same conversation; keeps the first. Returns (kept, dropped)."""
    seen_ids, seen_content, kept = set(), set(), []
    for r in records:
        key = content_hash(r)
        if r["id"] in seen_ids or key in seen_content:
            continue
        seen_ids.add(r["id"])
        seen_content.add(key)
        kept.append(r)
    return kept, len(records) - len(kept)


def shingles(record: dict, words: int) -> set[bytes]:
    """Word n-grams of the user and assistant turns (a shared system prompt would make every
    conversation look alike), lower-cased."""
    text = " ".join(m["content"] for m in record.get("messages") or []
                    if isinstance(m, dict) and m.get("role") != "system"
                    and isinstance(m.get("content"), str))
    tokens = text.lower().split()
    if len(tokens) <= words:
        return {" ".join(tokens).encode()}
    return {" ".join(tokens[i:i + words]).encode() for i in range(len(tokens) - words + 1)}


def near_deduplicate(records: list[dict], buffer: list[dict], p: params_mod.DatasetParams
                     ) -> tuple[list[dict], int, int]:
    """Drop records that nearly repeat an earlier one of the batch or one of the replay buffer.

    Candidates come from MinHash LSH; each is confirmed by its estimated Jaccard similarity, so a
    chance collision in a band drops nothing. Returns (kept, near duplicates in the batch, near
    duplicates of the replay buffer); a record like both counts as one of the buffer.
    """
    from datasketch import MinHash, MinHashLSH

    def signature(record: dict) -> MinHash:
        m = MinHash(num_perm=p.minhash_num_perm)
        m.update_batch(list(shingles(record, p.shingle_words)))
        return m

    try:
        lsh = MinHashLSH(threshold=p.near_duplicate_threshold, num_perm=p.minhash_num_perm)
    except ValueError as exc:
        raise params_mod.ParamsError(
            f"dataset.near_duplicate_threshold {p.near_duplicate_threshold} with "
            f"dataset.minhash_num_perm {p.minhash_num_perm}: {exc}; use a threshold between 0 "
            "and 1 and, for one close to 1, more permutations") from exc
    signatures: dict[str, MinHash] = {}
    for i, r in enumerate(buffer):
        key = f"replay:{i}"
        signatures[key] = signature(r)
        lsh.insert(key, signatures[key])
    kept, in_batch, of_replay = [], 0, 0
    for i, r in enumerate(records):
        m = signature(r)
        matches = [k for k in lsh.query(m) if m.jaccard(signatures[k]) >= p.near_duplicate_threshold]
        if any(k.startswith("replay:") for k in matches):
            of_replay += 1
        elif matches:
            in_batch += 1
        else:
            key = f"new:{i}"
            signatures[key] = m
            lsh.insert(key, m)
            kept.append(r)
    return kept, in_batch, of_replay


NO_TOPIC = ""  # the stratum key part of records without metadata.topic: they form their own stratum


def stratum(record: dict) -> tuple[str, str]:
    """A record's stratum: (the cycle it was learned in, its topic). Records from before cycles
    were recorded, or without a topic, get "" for that part and so form strata of their own."""
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    topic = metadata.get("topic")
    return (str(record.get("_cycle") or ""), str(topic) if topic else NO_TOPIC)


def by_stratum(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault(stratum(r), []).append(r)
    return groups


def fair_shares(sizes: dict[tuple[str, str], int], total: int, rng: random.Random
                ) -> dict[tuple[str, str], int]:
    """Split `total` slots over strata of the given sizes, as evenly as they allow (water-filling).

    A stratum smaller than an equal split keeps all of its records, and what it leaves over is
    split evenly among the others, until every remaining stratum is larger than its share: those
    all get the same quota, and the few slots that do not divide evenly go one each to strata
    picked by `rng`. So a small stratum is never crowded out by big ones, a big one gives up only
    what is needed, and the shares add up to min(total, sum of sizes).
    """
    if sum(sizes.values()) <= total:
        return dict(sizes)
    shares: dict[tuple[str, str], int] = {}
    remaining, left = dict(sizes), total
    while True:
        level = left // len(remaining)
        small = {k: n for k, n in remaining.items() if n <= level}
        if not small:
            break
        for k, n in small.items():
            shares[k] = n
            left -= n
            del remaining[k]
    extra = left - level * len(remaining)
    order = sorted(remaining)
    rng.shuffle(order)
    for i, k in enumerate(order):
        shares[k] = level + (1 if i < extra else 0)
    return shares


def reservoir_priority(record: dict, seed: int) -> str:
    """The record's fixed random priority in its stratum's reservoir: a hash of the seed, the
    record's cycle and its id (and content, so two records sharing an id differ)."""
    key = f"{seed}:{record.get('_cycle') or ''}:{record.get('id')}:{content_hash(record)}"
    return hashlib.sha256(key.encode()).hexdigest()


def update_buffer(buffer: list[dict], new: list[dict], capacity: int, seed: int,
                  rng: random.Random) -> list[dict]:
    """Add this cycle's training examples; past capacity, keep a sample balanced over strata.

    Strata are (cycle, topic) (see `stratum`). Each stratum's quota is its fair share of the
    capacity (`fair_shares`): every stratum smaller than an equal split is kept whole, the rest
    share what is left equally. Within a stratum the records kept are a reservoir sample by random
    priority (bottom-k): each record has a fixed pseudo-random priority from (seed, its cycle, its
    id) and a stratum keeps the `quota` records of lowest priority. Every record of a stratum is
    thus equally likely to be kept, the same inputs keep the same records, and as quotas shrink
    over later cycles a stratum keeps a subset of what it kept before, so the sample stays uniform
    within the stratum. Records keep their order (old first) in the result.
    """
    combined = buffer + new
    if len(combined) <= capacity:
        return combined
    positions: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(combined):
        positions.setdefault(stratum(r), []).append(i)
    quotas = fair_shares({k: len(v) for k, v in positions.items()}, capacity, rng)
    keep: set[int] = set()
    for k, members in positions.items():
        ranked = sorted(members, key=lambda i: reservoir_priority(combined[i], seed))
        keep.update(ranked[:quotas[k]])
    return [combined[i] for i in sorted(keep)]


def draw_evenly(records: list[dict], n: int, rng: random.Random) -> list[dict]:
    """`n` records drawn evenly over their strata (`fair_shares`), uniformly within each: a
    cycle's replay sample, so an old small topic is replayed as often as a big recent one."""
    groups = by_stratum(records)
    quotas = fair_shares({k: len(v) for k, v in groups.items()}, n, rng)
    drawn = []
    for k in sorted(groups):
        drawn.extend(rng.sample(groups[k], quotas[k]))
    return drawn


def mix_sizes(n_new: int, buffered: int, anchors: int, replay: params_mod.ReplayParams,
              held_out_fraction: float) -> tuple[int, int]:
    """How many replayed and anchor examples join `n_new` new ones, so that they make up
    replay.ratio and replay.anchor_ratio of the mix (fewer when fewer are there). At least
    `held_out_fraction` of the buffer (dataset.eval_fraction, the share held out of the new
    data too) is never replayed in the cycle: evaluate measures forgetting on it (its replay
    set), which a small early buffer replayed whole would leave empty."""
    total = n_new / (1 - replay.ratio - replay.anchor_ratio)
    replayable = buffered - math.ceil(buffered * held_out_fraction)
    return min(replayable, round(total * replay.ratio)), min(anchors, round(total * replay.anchor_ratio))


def split_new(records: list[dict], buffer: list[dict], p: params_mod.DatasetParams, seed: int) -> dict:
    """A batch of clean records by this stage's rules: duplicates dropped (exact ones, near ones
    within the batch and of the buffer), feedback in `exclude_feedback` dropped, the rest split
    by `held_out` into "train" and "eval". Also returns what each rule dropped. `nightshift
    rebase` reads earlier nights through it too."""
    kept, exact = deduplicate(records)
    kept, near_in_batch, near_of_replay = near_deduplicate(kept, buffer, p)
    learnable = [r for r in kept if r.get("feedback") not in p.exclude_feedback]
    return {"train": [r for r in learnable if not held_out(str(r["id"]), seed, p.eval_fraction)],
            "eval": [r for r in learnable if held_out(str(r["id"]), seed, p.eval_fraction)],
            "unique": len(kept), "exact": exact, "near_in_batch": near_in_batch,
            "near_of_replay": near_of_replay, "filtered_feedback": len(kept) - len(learnable)}


def apply_feedback(records: list[dict], latest: dict[str, dict]) -> tuple[list[dict], set[str]]:
    """`records` with the feedback of `latest` (response id -> its last event) set on the ones it
    rates, and the ids of those."""
    rated, out = set(), []
    for record in records:
        event = latest.get(str(record.get("id")))
        if event is None:
            out.append(record)
            continue
        rated.add(str(record["id"]))
        metadata = {**(record.get("metadata") or {}), "feedback_at": event.get("timestamp")}
        if event.get("comment"):
            metadata["feedback_comment"] = event["comment"]
        out.append({**record, "feedback": event.get("feedback"), "metadata": metadata})
    return out, rated


def run(p: params_mod.DatasetParams, replay: params_mod.ReplayParams, seed: int, cycle: str,
        clean: Path, buffer_in: Path, out_dir: Path, anchor_train: Path | None = None,
        feedback: Path | None = None) -> dict:
    """Build this cycle's training and evaluation sets.

    Args:
        p, replay: the `dataset` and `replay` sections of params.yaml.
        seed: the global seed; cycle: the cycle's date, which seeds its sampling.
        clean: validated records; buffer_in: the replay buffer before this cycle.
        out_dir: gets train.jsonl (new + replay + anchor, shuffled, each tagged `_source`),
            eval.jsonl (new, held out), buffer.jsonl (the buffer after this cycle) and report.json.
        anchor_train: the fixed anchor training set, mixed in at replay.anchor_ratio; None mixes
            no anchor examples (the report's train_anchor is then 0).
        feedback: the night's feedback events (validate's feedback.jsonl); None or a missing
            file: none.
    Returns:
        counts of each.
    """
    rng = random.Random(f"{seed}-{cycle}")
    buffer = list(read_jsonl(buffer_in)) if buffer_in.exists() else []
    anchors = []
    if anchor_train is not None:
        if not anchor_train.exists():
            raise FileNotFoundError(
                f"anchor training set {anchor_train} not found: build it with `python -m "
                "pipelines.samples.eval_sets build` (or copy data/anchor/anchor_train.jsonl from the project)")
        anchors = list(read_jsonl(anchor_train))
    events = list(read_jsonl(feedback)) if feedback is not None and feedback.exists() else []
    latest = latest_feedback(events)
    incoming, rated_new = apply_feedback(list(read_jsonl(clean)), latest)
    buffer, rated_buffer = apply_feedback(buffer, latest)
    kept_buffer = [r for r in buffer if r.get("feedback") not in p.exclude_feedback]
    removed_from_buffer = len(buffer) - len(kept_buffer)
    buffer = kept_buffer
    split = split_new(incoming, buffer, p, seed)
    new_train, evaluation = split["train"], split["eval"]

    n_replay, n_anchor = mix_sizes(len(new_train), len(buffer), len(anchors), replay, p.eval_fraction)
    replayed = draw_evenly(buffer, n_replay, rng)
    anchored = draw_evenly(anchors, n_anchor, rng)
    train = ([{**r, "_source": "new"} for r in new_train]
             + [{**r, "_source": "replay"} for r in replayed]
             + [{**r, "_source": "anchor"} for r in anchored])
    rng.shuffle(train)
    next_buffer = update_buffer(buffer, [{**r, "_cycle": cycle} for r in new_train],
                                replay.capacity, seed, rng)

    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", evaluation)
    write_jsonl(out_dir / "buffer.jsonl", next_buffer)
    report = {"cycle": cycle, "clean_in": len(incoming),
              "duplicates": split["exact"] + split["near_in_batch"] + split["near_of_replay"],
              "exact_duplicates": split["exact"], "near_duplicates_in_batch": split["near_in_batch"],
              "near_duplicates_of_replay": split["near_of_replay"], "unique": split["unique"],
              "filtered_feedback": split["filtered_feedback"],
              "feedback_events": len(events), "feedback_applied_new": len(rated_new),
              "feedback_applied_buffer": len(rated_buffer),
              "feedback_removed_from_buffer": removed_from_buffer,
              "feedback_unmatched": len(set(latest) - rated_new - rated_buffer),
              "train_new": len(new_train), "train_replay": len(replayed),
              "train_anchor": len(anchored), "eval": len(evaluation),
              "buffer_before": len(buffer), "buffer_after": len(next_buffer),
              "buffer_strata": len(by_stratum(next_buffer))}
    write_json(out_dir / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path)
    parser.add_argument("buffer_in", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cycle", required=True, help="the cycle's date; seeds its sampling")
    parser.add_argument("--anchor", type=Path, default=Path("data/anchor/anchor_train.jsonl"),
                        help="the fixed anchor training set mixed in at replay.anchor_ratio")
    parser.add_argument("--feedback", type=Path, default=None,
                        help="the night's feedback events (validate's feedback.jsonl), applied to "
                             "the night's records and to the replay buffer")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = run(params.dataset, params.replay, params.seed, args.cycle, args.clean, args.buffer_in,
                 args.out_dir, args.anchor, args.feedback)
    print(f"dataset: {report['train_new']} new + {report['train_replay']} replayed + "
          f"{report['train_anchor']} anchor examples for training, "
          f"{report['eval']} held out, {report['duplicates']} duplicates dropped "
          f"({report['exact_duplicates']} exact, {report['near_duplicates_in_batch']} near within "
          f"the batch, {report['near_duplicates_of_replay']} near to the replay buffer), "
          f"{report['filtered_feedback']} kept out of training by their feedback; "
          f"{report['feedback_events']} feedback events ({report['feedback_applied_new']} on "
          f"tonight's records, {report['feedback_applied_buffer']} on the replay buffer, "
          f"{report['feedback_removed_from_buffer']} taken out of it, "
          f"{report['feedback_unmatched']} on answers in neither)")


if __name__ == "__main__":
    main()
