"""dataset: de-duplicate the clean records, hold some out, and mix in replay of earlier cycles.

Duplicates, all counted in the report's `duplicates` and each kind on its own:
  - exact: a repeated id, or the same conversation word for word (`exact_duplicates`);
  - near: user and assistant turns with a Jaccard similarity of word shingles of at least
    dataset.near_duplicate_threshold, found by MinHash LSH (datasketch), either to an earlier
    record of this batch (`near_duplicates_in_batch`) or to one in the replay buffer, learned on
    an earlier night (`near_duplicates_of_replay`). The first of a group is kept.
Records whose feedback is in dataset.exclude_feedback stay in the clean data (they are counted in
`unique`) but are neither trained nor evaluated on (`filtered_feedback`).

The replay buffer read here (data/replay/buffer.jsonl) is a pinned input: the flow puts the
previous cycle's buffer there before the DAG runs. This stage writes the *next* buffer to its own
output, so it never reads what it writes and `dvc repro` at any recorded cycle rebuilds it.

    python -m pipelines.dataset --cycle 2026-01-05 data/validated/clean.jsonl data/replay/buffer.jsonl data/dataset
"""

from __future__ import annotations

import argparse
import hashlib
import random
from pathlib import Path

from pipelines import params as params_mod
from pipelines.records import content_hash, read_jsonl, write_json, write_jsonl


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


def update_buffer(buffer: list[dict], new: list[dict], capacity: int, rng: random.Random) -> list[dict]:
    """Add this cycle's training examples; past capacity, keep a uniform random sample of all."""
    combined = buffer + new
    if len(combined) <= capacity:
        return combined
    keep = sorted(rng.sample(range(len(combined)), capacity))
    return [combined[i] for i in keep]


def run(p: params_mod.DatasetParams, replay: params_mod.ReplayParams, seed: int, cycle: str,
        clean: Path, buffer_in: Path, out_dir: Path) -> dict:
    """Build this cycle's training and evaluation sets.

    Args:
        p, replay: the `dataset` and `replay` sections of params.yaml.
        seed: the global seed; cycle: the cycle's date, which seeds its sampling.
        clean: validated records; buffer_in: the replay buffer before this cycle.
        out_dir: gets train.jsonl (new + replay, shuffled), eval.jsonl (new, held out),
            buffer.jsonl (the buffer after this cycle) and report.json.
    Returns:
        counts of each.
    """
    rng = random.Random(f"{seed}-{cycle}")
    buffer = list(read_jsonl(buffer_in)) if buffer_in.exists() else []
    incoming = list(read_jsonl(clean))
    records, exact = deduplicate(incoming)
    records, near_in_batch, near_of_replay = near_deduplicate(records, buffer, p)
    duplicates = exact + near_in_batch + near_of_replay
    learnable = [r for r in records if r.get("feedback") not in p.exclude_feedback]
    evaluation = [r for r in learnable if held_out(str(r["id"]), seed, p.eval_fraction)]
    new_train = [r for r in learnable if not held_out(str(r["id"]), seed, p.eval_fraction)]

    # ratio is the replayed share of the mix: n_replay / (n_new + n_replay) = ratio.
    n_replay = min(len(buffer), round(len(new_train) * replay.ratio / (1 - replay.ratio)))
    replayed = rng.sample(buffer, n_replay)
    train = [{**r, "_source": "new"} for r in new_train] + [{**r, "_source": "replay"} for r in replayed]
    rng.shuffle(train)
    next_buffer = update_buffer(buffer, [{**r, "_cycle": cycle} for r in new_train],
                                replay.capacity, rng)

    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", evaluation)
    write_jsonl(out_dir / "buffer.jsonl", next_buffer)
    report = {"cycle": cycle, "clean_in": len(incoming), "duplicates": duplicates,
              "exact_duplicates": exact, "near_duplicates_in_batch": near_in_batch,
              "near_duplicates_of_replay": near_of_replay, "unique": len(records),
              "filtered_feedback": len(records) - len(learnable),
              "train_new": len(new_train), "train_replay": n_replay,
              "eval": len(evaluation), "buffer_before": len(buffer), "buffer_after": len(next_buffer)}
    write_json(out_dir / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path)
    parser.add_argument("buffer_in", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cycle", required=True, help="the cycle's date; seeds its sampling")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = run(params.dataset, params.replay, params.seed, args.cycle, args.clean, args.buffer_in,
                 args.out_dir)
    print(f"dataset: {report['train_new']} new + {report['train_replay']} replayed for training, "
          f"{report['eval']} held out, {report['duplicates']} duplicates dropped "
          f"({report['exact_duplicates']} exact, {report['near_duplicates_in_batch']} near within "
          f"the batch, {report['near_duplicates_of_replay']} near to the replay buffer), "
          f"{report['filtered_feedback']} kept out of training by their feedback")


if __name__ == "__main__":
    main()
