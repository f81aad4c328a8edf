"""The frozen evaluation sets that every candidate and champion are scored on, beside the cycle's
held-out new data (data/dataset/eval.jsonl) and the older topics of the replay buffer.

- golden (data/golden/golden.jsonl): curated conversations with answers known to be right. Some
  carry `metadata.expect`, a regular expression the model's own answer must match (it names the
  menu path, it repeats the customer's order number), which the behaviour checks test on sampled
  generations. Frozen: it changes only by a deliberate `nightshift golden add FILE`, which runs the
  new records through the pipeline's redaction and row checks and records the change with DVC and
  git.
- anchor (data/anchor/anchor.jsonl): conversations of the kind the base model learned in
  pre-training and no cycle trains on. A loss rise here is lost general ability.

Beside them, one training set: anchor_train (data/anchor/anchor_train.jsonl), more conversations
of the base model's kind, which the dataset stage mixes into every cycle's training at
replay.anchor_ratio to protect what the base model could do. It is disjoint from the anchor eval
set (no shared id, conversation or user question, compared after redaction), so the anchor loss
still measures ability on conversations never trained on.

`python -m pipelines.samples.eval_sets build` writes the project's initial golden, anchor and anchor_train
sets from the sample-log templates (run once; the files are committed, and each workspace
DVC-tracks its copy). The same seed writes the same bytes.

    python -m pipelines.samples.eval_sets build --golden data/golden/golden.jsonl --anchor data/anchor/anchor.jsonl \\
        --anchor-train data/anchor/anchor_train.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import re
from pathlib import Path
from typing import Callable

from pipelines.common import params as params_mod
from pipelines.common.records import content_hash, read_json, read_jsonl, write_jsonl
from pipelines.samples.sample_logs import TEMPLATES, make_record

GOLDEN_PER_TEMPLATE = 2     # every template of every topic, twice with different slot values
ANCHOR_RECORDS = 36         # six per topic
# Twenty per topic: a cycle draws ~5% of its ~150-record mix from it, so a night's few anchor
# examples differ from the last night's for weeks.
ANCHOR_TRAIN_RECORDS = 120
DAY = dt.date(2025, 1, 1)   # the sets are outside every cycle's dates


def expected_format(answer: str) -> str | None:
    """The regex a model's answer to the same question should match, if the answer has a shape."""
    path = re.search(r"\b(Settings|Orders) > ", answer)
    if path:
        return rf"\b{path.group(1)} > \w+"
    order = re.search(r"#\d{6}", answer)
    if order:
        return re.escape(order.group(0))
    return None


def golden_records(seed: int) -> list[dict]:
    """Every topic's every template, with the format its answer must keep."""
    rng = random.Random(f"golden-{seed}")
    records = []
    for topic, templates in TEMPLATES.items():
        for t in range(len(templates)):
            for _ in range(GOLDEN_PER_TEMPLATE):
                record = make_record(rng, DAY, len(records), topic, {topic: templates[t:t + 1]})
                record["id"] = f"golden-{len(records) + 1:04d}"
                record["feedback"] = None
                expect = expected_format(record["messages"][-1]["content"])
                record["metadata"] = {"topic": topic, "source": "golden",
                                      **({"expect": expect} if expect else {})}
                records.append(record)
    return records


def anchor_records(seed: int) -> list[dict]:
    """Conversations like the base model's pre-training dialogues (each topic's first template)."""
    rng = random.Random(f"anchor-{seed}")
    first_only = {topic: templates[:1] for topic, templates in TEMPLATES.items()}
    topics = list(TEMPLATES)
    records = []
    for i in range(ANCHOR_RECORDS):
        record = make_record(rng, DAY, i, topics[i % len(topics)], first_only)
        record["id"] = f"anchor-{i + 1:04d}"
        record["feedback"] = None
        record["metadata"] = {"topic": topics[i % len(topics)], "source": "anchor"}
        records.append(record)
    return records


def user_turns(record: dict) -> tuple[str, ...]:
    return tuple(m.get("content") for m in record.get("messages") or [] if m.get("role") == "user")


def anchor_training_records(seed: int, anchor_eval: list[dict], redact: Callable[[dict], dict]
                            ) -> list[dict]:
    """The anchor training set: conversations drawn like `anchor_records` (each topic's first
    template), redacted by `redact`, skipping any that shares an id, the whole conversation or a
    user question with a record of `anchor_eval` (the redacted eval set) or with one already
    taken. ANCHOR_TRAIN_RECORDS in all, the same number per topic. A first template whose
    redacted variants run out (every slot it has is personal, so redaction makes them alike)
    is followed by the topic's next template; a topic whose templates all run out repeats the
    distinct conversations it has (never one of the eval set's) up to its number."""
    rng = random.Random(f"anchor-train-{seed}")
    topics = list(TEMPLATES)
    per_topic = ANCHOR_TRAIN_RECORDS // len(topics)
    taken_ids = {r["id"] for r in anchor_eval}
    taken_content = {content_hash(r) for r in anchor_eval}
    taken_questions = {user_turns(r) for r in anchor_eval}
    records: list[dict] = []
    for topic in topics:
        kept, tries, distinct = 0, 0, []
        while kept < per_topic:
            tries += 1
            used = 1 + tries // (20 * per_topic)  # templates in use: one more each time they run out
            if used > len(TEMPLATES[topic]):
                if not distinct:
                    raise RuntimeError(f"no anchor training record for topic {topic!r} differs "
                                       "from the anchor eval set's")
                for again in itertools.islice(itertools.cycle(distinct), per_topic - kept):
                    records.append({**again, "id": f"anchor-train-{len(records) + 1:04d}"})
                break
            record = redact(make_record(rng, DAY, len(records), topic, {topic: TEMPLATES[topic][:used]}))
            record["id"] = f"anchor-train-{len(records) + 1:04d}"
            record["feedback"] = None
            record["metadata"] = {"topic": topic, "source": "anchor_train"}
            if (record["id"] in taken_ids or content_hash(record) in taken_content
                    or user_turns(record) in taken_questions):
                continue
            taken_ids.add(record["id"])
            taken_content.add(content_hash(record))
            taken_questions.add(user_turns(record))
            records.append(record)
            distinct.append(record)
            kept += 1
    return records


def build(p: params_mod.Params, golden: Path, anchor: Path, anchor_train: Path) -> dict:
    """Write the initial golden, anchor and anchor training sets, through the pipeline's own
    redaction so they look exactly like what the model trains on. Returns their sizes."""
    from pipelines.privacy.redact import Redactor

    redactor = Redactor(p.redact)
    anchor_eval = [redactor.redact_record(r) for r in anchor_records(p.seed)]
    n_golden = write_jsonl(golden, [redactor.redact_record(r) for r in golden_records(p.seed)])
    n_anchor = write_jsonl(anchor, anchor_eval)
    n_train = write_jsonl(anchor_train,
                          anchor_training_records(p.seed, anchor_eval, redactor.redact_record))
    return {"golden": n_golden, "anchor": n_anchor, "anchor_train": n_train}


class GoldenRejected(ValueError):
    """Records offered to the golden set failed the pipeline's row checks."""


def add_to_golden(p: params_mod.Params, new_records: Path, golden: Path, out_dir: Path,
                  salt: bytes | None = None) -> dict:
    """Redact and validate `new_records`, then append the ones not already in the golden set.
    With the workspace's `salt`, each keeps the hashes of who it is about, as ingest's records do,
    so `nightshift forget` finds them here too.

    Nothing is added unless every record passes validation: a golden set is curated, so a bad
    record is an error to fix, not something to quarantine. Returns {"added", "already_there"}.
    """
    from pipelines.data import validate
    from pipelines.privacy import redact

    redacted = out_dir / "redacted.jsonl"
    redact.redact_file(p.redact, new_records, redacted, salt=salt)
    try:
        report = validate.run(p.validate, redacted, out_dir / "validated")
    except validate.BatchRejected:  # volume and rate checks are for nightly batches, not a handful
        report = read_json(out_dir / "validated/report.json")
    if report["quarantined"]:
        bad = [f"{r.get('id', '?')}: {', '.join(r['_reasons'])}"
               for r in read_jsonl(out_dir / "validated/quarantine.jsonl")]
        raise GoldenRejected(f"{len(bad)} record(s) failed validation, nothing was added:\n  "
                             + "\n  ".join(bad))
    existing = list(read_jsonl(golden)) if golden.exists() else []
    seen = {content_hash(r) for r in existing}
    added = []
    for r in read_jsonl(out_dir / "validated/clean.jsonl"):
        if content_hash(r) in seen:
            continue
        seen.add(content_hash(r))
        metadata = r.get("metadata") if isinstance(r.get("metadata"), dict) else {}
        added.append({**r, "id": f"golden-{len(existing) + len(added) + 1:04d}",
                      "metadata": {**metadata, "source": "golden", "added_as": r.get("id")}})
    write_jsonl(golden, existing + added)
    return {"added": len(added), "already_there": report["clean"] - len(added),
            "golden_records": len(existing) + len(added)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.samples.eval_sets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the initial golden, anchor and anchor training sets")
    b.add_argument("--golden", type=Path, default=Path("data/golden/golden.jsonl"))
    b.add_argument("--anchor", type=Path, default=Path("data/anchor/anchor.jsonl"))
    b.add_argument("--anchor-train", type=Path, default=Path("data/anchor/anchor_train.jsonl"))
    b.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    sizes = build(params_mod.load(args.params), args.golden, args.anchor, args.anchor_train)
    print(f"eval_sets: {sizes['golden']} golden records in {args.golden}, "
          f"{sizes['anchor']} anchor records in {args.anchor}, "
          f"{sizes['anchor_train']} anchor training records in {args.anchor_train}")


if __name__ == "__main__":
    main()
