"""Drift detection: how often a real topic shift is caught, how often a same-distribution batch
raises a false alarm, and how long 10,000 new records against 10,000 reference records take.

Batches come from the project's sample generator. Same-distribution trials draw the reference
and the batch from one day's topic mix with different seeds; shifted trials draw the batch from
the mix three days later (the generator's topic focus moves one topic a day). All trials use
params.yaml's `drift` section. The timing run embeds the reference once (cached, as the pipeline's
EmbeddingCache does across cycles), then times `compare` on 10,000 new records.

    python benchmarks/drift_bench.py [--trials 20] [--batch 500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.embedding import EmbeddingCache
from pipelines.data import drift
from pipelines.samples import sample_logs

ROOT = Path(__file__).resolve().parent.parent


def batch(seed: int, n: int, day_index: int, shift: float) -> list[dict]:
    rng = random.Random(seed)
    weights = sample_logs.topic_weights(day_index, shift)
    day = dt.date(2026, 1, 5) + dt.timedelta(days=day_index)
    return [sample_logs.make_record(rng, day, i, rng.choices(sample_logs.TOPICS, weights=weights)[0])
            for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--timing-records", type=int, default=10_000)
    parser.add_argument("--shift", type=float, default=0.8, help="the generator's topic_shift")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/drift.json")
    args = parser.parse_args(argv)
    p = params_mod.load(ROOT / "params.yaml")
    cache = EmbeddingCache(Path(tempfile.mkdtemp()))

    false_alarms = detections = 0
    for t in range(args.trials):
        reference = batch(1000 + t, args.batch, day_index=t, shift=args.shift)
        same = batch(2000 + t, args.batch, day_index=t, shift=args.shift)
        shifted = batch(3000 + t, args.batch, day_index=t + 3, shift=args.shift)
        false_alarms += drift.compare(p.drift, reference, same, p.seed + t, cache)["alarm"]
        detections += drift.compare(p.drift, reference, shifted, p.seed + t, cache)["alarm"]
        print(f"trial {t + 1}/{args.trials}: {detections} detected, {false_alarms} false alarms",
              flush=True)

    reference = batch(1, args.timing_records, day_index=0, shift=args.shift)
    current = batch(2, args.timing_records, day_index=3, shift=args.shift)
    cache.embed(drift.user_texts(reference))  # the reference window was embedded in earlier cycles
    started = time.time()
    timed = drift.compare(p.drift, reference, current, p.seed, cache)
    seconds = time.time() - started

    result = {"trials": args.trials, "batch_records": args.batch,
              "detection_rate": detections / args.trials,
              "false_alarm_rate": false_alarms / args.trials,
              "timing": {"reference_records": len(reference), "current_records": len(current),
                         "seconds": round(seconds, 1), "alarm": timed["alarm"]},
              "params": {"alpha": p.drift.alpha, "permutations": p.drift.permutations,
                         "max_samples": p.drift.max_samples}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
