"""Redaction speed and recall: the project's redaction against vanilla Presidio, side by side.

Both run on the same labeled records (pipelines/pii_testset.py: realistic support dialogues whose
every injected value is known) with the same recognizers and entity types:
- vanilla: `AnalyzerEngine.analyze` then `AnonymizerEngine.anonymize`, one text at a time, in one
  process;
- project: `pipelines.redact.redact_file` with params.yaml's `redact` section (distinct texts once,
  recognizer triggers, `workers` processes), plus its residual scan; also with one worker, to show
  what the processes add;
- Dask: the same map as Prefect tasks on Prefect's Dask task runner with 1 and with `workers`
  Dask worker processes (wall time of the whole flow, Dask cluster start included).
Engine building (spaCy, the recognizers) is done once before the clocks start; it is the same
for both. Prints records/s, the ratio, and recall per entity type and format.

    python benchmarks/redact_bench.py [--records 20000] [--no-dask]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import pipelines  # noqa: F401  (offline and telemetry defaults)
from pipelines import params as params_mod
from pipelines import pii_testset, redact

ROOT = Path(__file__).resolve().parent.parent


def vanilla(p: params_mod.RedactParams, records: list[dict]) -> tuple[list[dict], float]:
    """Presidio as documented: analyze, then anonymize, each text on its own."""
    from presidio_anonymizer import AnonymizerEngine

    analyzer = redact.build_analyzer(p.language, p.ner_model)
    anonymizer = AnonymizerEngine()
    entities = redact.Redactor(p).entities
    started = time.perf_counter()
    out = []
    for record in records:
        messages = []
        for m in record["messages"]:
            results = analyzer.analyze(m["content"], language=p.language, entities=entities,
                                       score_threshold=p.score_threshold)
            text = anonymizer.anonymize(m["content"], results).text if results else m["content"]
            messages.append({**m, "content": text})
        out.append({**record, "messages": messages})
    return out, time.perf_counter() - started


def project(p: params_mod.RedactParams, src: Path, dst: Path) -> tuple[list[dict], float, dict]:
    started = time.perf_counter()
    report = redact.redact_file(p, src, dst)
    seconds = time.perf_counter() - started
    return [json.loads(line) for line in dst.read_text().splitlines()], seconds, report


def summarize(recall: dict) -> dict:
    return {k: v.get("recall") for k, v in recall.items() if "/" not in k}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dask", action="store_true", help="skip the Prefect/Dask runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/redact.json")
    args = parser.parse_args(argv)
    p = params_mod.load(ROOT / "params.yaml").redact
    pairs = pii_testset.generate(args.records, args.seed)
    records = [record for record, _ in pairs]
    tmp = Path(tempfile.mkdtemp(prefix="redact-bench-"))
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    redact.build_analyzer(p.language, p.ner_model)  # engines built before any clock starts
    print(f"{args.records} records ({sum(len(i) for _, i in pairs)} injected values), "
          f"{os.cpu_count()} cores", flush=True)

    vanilla_out, vanilla_s = vanilla(p, records)
    print(f"vanilla Presidio        {args.records / vanilla_s:8.0f} records/s  ({vanilla_s:.1f} s)",
          flush=True)
    one = dataclasses.replace(p, workers=1)
    one_out, one_s, _ = project(one, src, tmp / "one.jsonl")
    print(f"project, 1 worker       {args.records / one_s:8.0f} records/s  ({one_s:.1f} s)", flush=True)
    ours_out, ours_s, report = project(p, src, tmp / "out.jsonl")
    print(f"project, {p.workers} workers      {args.records / ours_s:8.0f} records/s  ({ours_s:.1f} s)",
          flush=True)
    identical = (tmp / "one.jsonl").read_bytes() == (tmp / "out.jsonl").read_bytes()

    vanilla_recall = pii_testset.recall(pairs, vanilla_out, ner=bool(p.ner_model))
    ours_recall = pii_testset.recall(pairs, ours_out, ner=bool(p.ner_model))
    result = {
        "records": args.records, "cores": os.cpu_count(), "workers": p.workers,
        "vanilla": {"seconds": round(vanilla_s, 2), "records_per_s": round(args.records / vanilla_s, 1)},
        "project_1_worker": {"seconds": round(one_s, 2), "records_per_s": round(args.records / one_s, 1)},
        "project": {"seconds": round(ours_s, 2), "records_per_s": round(args.records / ours_s, 1)},
        "speedup_vs_vanilla": round(vanilla_s / ours_s, 2),
        "speedup_1_worker_vs_vanilla": round(vanilla_s / one_s, 2),
        "output_identical_1_vs_n_workers": identical,
        "residual": report["residual"], "records_with_residual": report["records_with_residual"],
        "recall_vanilla": summarize(vanilla_recall), "recall_project": summarize(ours_recall),
        "recall_project_by_format": {k: v.get("recall") for k, v in ours_recall.items() if "/" in k},
        "recall_vanilla_by_format": {k: v.get("recall") for k, v in vanilla_recall.items() if "/" in k},
    }
    if not args.no_dask:
        from flows.redact_dask import redact_with_dask

        dask = {}
        for workers in sorted({1, p.workers}):
            started = time.perf_counter()
            redact_with_dask(p, src, tmp / f"dask{workers}.jsonl", workers)
            seconds = time.perf_counter() - started
            dask[workers] = seconds
            same = (tmp / f"dask{workers}.jsonl").read_bytes() == (tmp / "out.jsonl").read_bytes()
            print(f"Prefect+Dask, {workers} worker(s) {args.records / seconds:8.0f} records/s  "
                  f"({seconds:.1f} s, output identical to the stage: {same})", flush=True)
            result[f"dask_{workers}_workers"] = {"seconds": round(seconds, 2), "identical": same,
                                                 "records_per_s": round(args.records / seconds, 1)}
        result["dask_speedup"] = round(dask[1] / dask[max(dask)], 2)

    print(f"\nproject / vanilla: {result['speedup_vs_vanilla']}x   (1 worker: "
          f"{result['speedup_1_worker_vs_vanilla']}x)" +
          (f"   Dask {p.workers} vs 1 worker: {result['dask_speedup']}x" if "dask_speedup" in result else ""))
    print(f"{'entity type':<16} {'injected':>8} {'vanilla':>8} {'project':>8}")
    for key, v in ours_recall.items():
        if "/" in key:
            continue
        fmt = lambda r: "n/m" if r is None else f"{r:.4f}"  # noqa: E731
        print(f"{key:<16} {v['injected']:>8} {fmt(vanilla_recall[key].get('recall')):>8} "
              f"{fmt(v.get('recall')):>8}")
    missed = {k: v for k, v in ours_recall.items() if "/" in k and v.get("recall") not in (None, 1.0)}
    if missed:
        print("formats the project missed some of:", json.dumps(missed, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
