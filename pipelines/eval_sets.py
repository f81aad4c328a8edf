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

`python -m pipelines.eval_sets build` writes the project's initial golden and anchor sets from the
sample-log templates (run once; the files are committed, and each workspace DVC-tracks its copy).

    python -m pipelines.eval_sets build --golden data/golden/golden.jsonl --anchor data/anchor/anchor.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
from pathlib import Path

from pipelines import params as params_mod
from pipelines.records import content_hash, read_json, read_jsonl, write_jsonl
from pipelines.sample_logs import TEMPLATES, make_record

GOLDEN_PER_TEMPLATE = 2     # every template of every topic, twice with different slot values
ANCHOR_RECORDS = 36         # six per topic
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


def redact_records(p: params_mod.RedactParams, records: list[dict]) -> list[dict]:
    """The pipeline's own redaction, so the sets look exactly like what the model trains on."""
    from pipelines.redact import Redactor

    redactor = Redactor(p)
    return [redactor.redact_record(r) for r in records]


def build(p: params_mod.Params, golden: Path, anchor: Path) -> dict:
    """Write the initial golden and anchor sets. Returns their sizes."""
    n_golden = write_jsonl(golden, redact_records(p.redact, golden_records(p.seed)))
    n_anchor = write_jsonl(anchor, redact_records(p.redact, anchor_records(p.seed)))
    return {"golden": n_golden, "anchor": n_anchor}


class GoldenRejected(ValueError):
    """Records offered to the golden set failed the pipeline's row checks."""


def add_to_golden(p: params_mod.Params, new_records: Path, golden: Path, out_dir: Path) -> dict:
    """Redact and validate `new_records`, then append the ones not already in the golden set.

    Nothing is added unless every record passes validation: a golden set is curated, so a bad
    record is an error to fix, not something to quarantine. Returns {"added", "already_there"}.
    """
    from pipelines import redact, validate

    redacted = out_dir / "redacted.jsonl"
    redact.redact_file(p.redact, new_records, redacted)
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
    parser = argparse.ArgumentParser(prog="python -m pipelines.eval_sets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the initial golden and anchor sets")
    b.add_argument("--golden", type=Path, default=Path("data/golden/golden.jsonl"))
    b.add_argument("--anchor", type=Path, default=Path("data/anchor/anchor.jsonl"))
    b.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    sizes = build(params_mod.load(args.params), args.golden, args.anchor)
    print(f"eval_sets: {sizes['golden']} golden records in {args.golden}, "
          f"{sizes['anchor']} anchor records in {args.anchor}")


if __name__ == "__main__":
    main()
