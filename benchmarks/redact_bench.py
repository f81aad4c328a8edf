"""Redaction speed and recall with the NER model on: the project's redaction against vanilla
Presidio with the same NER model, side by side on the same labeled records.

The records: pipelines/samples/pii_testset.py's support dialogues (every injected value known, names
included), followed by data/labeled/persons.jsonl's sentences as user turns (names and places in
many chat shapes, and entity-free sentences).
- vanilla: Presidio as documented, `AnalyzerEngine.analyze` then `AnonymizerEngine.anonymize`, one
  text at a time, in one process, with `SpacyNlpEngine` on params.yaml's `redact.ner_model` (its
  whole pipeline), Presidio's predefined recognizers and its spaCy NER recognizer, plus the
  project's pattern recognizers (so that the structured types compare like with like);
- project: `pipelines.privacy.redact.redact_file` with params.yaml's `redact` section (distinct texts
  once, the NER run over whole chunks with spaCy's `nlp.pipe`, its unused pipes off, recognizer
  triggers, the chat-text name rules, `workers` processes), plus its residual scan; also with one
  worker, to show what the processes add;
- Dask: the same with `runner: dask` on `workers` (at least 2) local Dask worker processes (wall
  time of the whole run, cluster start included); with one worker either runner redacts in the
  calling process, so the 1-worker run above is Dask's too.
Engines are built once before the clocks start (the same work for both). Prints records/s, the
ratio, recall per entity type, and PERSON/LOCATION recall and false positives on the sentences;
writes them as JSON.

    python benchmarks/redact_bench.py [--records 2000] [--sentences N] [--no-dask]
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
from pipelines.common import params as params_mod
from pipelines.privacy import names as redact_names
from pipelines.privacy import redact
from pipelines.samples import pii_testset

ROOT = Path(__file__).resolve().parent.parent


def vanilla_analyzer(p: params_mod.RedactParams):
    """Presidio's AnalyzerEngine with the same NER model, as a user would set it up."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine, TransformersNlpEngine

    from pipelines.privacy.recognizers import REPLACED_PREDEFINED, project_recognizers

    if p.ner_engine == "transformers":
        nlp = TransformersNlpEngine(models=[{"lang_code": p.language, "model_name": {
            "spacy": redact.TRANSFORMERS_SPACY_MODEL, "transformers": p.ner_model}}])
    else:
        nlp = SpacyNlpEngine(models=[{"lang_code": p.language, "model_name": p.ner_model}])
    nlp.load()
    registry = RecognizerRegistry(supported_languages=[p.language])
    registry.load_predefined_recognizers(nlp_engine=nlp, languages=[p.language])
    for name in REPLACED_PREDEFINED:
        registry.remove_recognizer(name)
    for recognizer in project_recognizers(p.language):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=[p.language])


def vanilla(p: params_mod.RedactParams, analyzer, entities: list[str],
            records: list[dict]) -> tuple[list[dict], float]:
    """Presidio as documented: analyze, then anonymize, each text on its own."""
    from presidio_anonymizer import AnonymizerEngine

    anonymizer = AnonymizerEngine()
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


def sentence_records(rows: list[dict]) -> list[dict]:
    return [{"id": f"persons-{i:04d}", "timestamp": "2026-01-05T12:00:00Z", "feedback": None,
             "metadata": {}, "messages": [{"role": "user", "content": row["text"]}]}
            for i, row in enumerate(rows)]


def summarize(recall: dict) -> dict:
    return {k: v.get("recall") for k, v in recall.items() if "/" not in k}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2_000, help="support dialogues (plus the sentences)")
    parser.add_argument("--sentences", type=int, default=None,
                        help="labeled sentences to add (default: all of data/labeled/persons.jsonl)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask runs")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/redact.json")
    args = parser.parse_args(argv)
    p = params_mod.load(args.params).redact
    if not p.ner_model:
        parser.error("redact.ner_model is null: this benchmark compares redaction with an NER model")
    pairs = pii_testset.generate(args.records, args.seed)
    rows = redact_names.labeled_set()[:args.sentences]
    records = [record for record, _ in pairs] + sentence_records(rows)
    n = len(records)
    tmp = Path(tempfile.mkdtemp(prefix="redact-bench-"))
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    entities = redact.Redactor(p).entities  # engines built before any clock starts
    analyzer = vanilla_analyzer(p)
    print(f"{n} records ({args.records} dialogues with {sum(len(i) for _, i in pairs)} injected values, "
          f"{len(rows)} labeled sentences), NER model {p.ner_model} ({p.ner_engine}), "
          f"{os.cpu_count()} cores", flush=True)

    vanilla_out, vanilla_s = vanilla(p, analyzer, entities, records)
    print(f"vanilla Presidio        {n / vanilla_s:8.1f} records/s  ({vanilla_s:.1f} s)", flush=True)
    one = dataclasses.replace(p, workers=1)
    one_out, one_s, _ = project(one, src, tmp / "one.jsonl")
    print(f"project, 1 worker       {n / one_s:8.1f} records/s  ({one_s:.1f} s)", flush=True)
    ours_out, ours_s, report = project(p, src, tmp / "out.jsonl")
    print(f"project, {p.workers} workers      {n / ours_s:8.1f} records/s  ({ours_s:.1f} s)", flush=True)
    identical = (tmp / "one.jsonl").read_bytes() == (tmp / "out.jsonl").read_bytes()

    k = len(pairs)
    vanilla_recall = pii_testset.recall(pairs, vanilla_out[:k], ner=True)
    ours_recall = pii_testset.recall(pairs, ours_out[:k], ner=True)
    names = {name: redact_names.score(rows, [r["messages"][0]["content"] for r in out[k:]])
             for name, out in (("vanilla", vanilla_out), ("project", ours_out))}
    result = {
        "records": n, "dialogues": args.records, "sentences": len(rows), "cores": os.cpu_count(),
        "workers": p.workers, "ner_model": p.ner_model, "ner_engine": p.ner_engine,
        "vanilla": {"seconds": round(vanilla_s, 2), "records_per_s": round(n / vanilla_s, 1)},
        "project_1_worker": {"seconds": round(one_s, 2), "records_per_s": round(n / one_s, 1)},
        "project": {"seconds": round(ours_s, 2), "records_per_s": round(n / ours_s, 1)},
        "speedup_vs_vanilla": round(vanilla_s / ours_s, 2),
        "speedup_1_worker_vs_vanilla": round(vanilla_s / one_s, 2),
        "output_identical_1_vs_n_workers": identical,
        "residual": report["residual"], "records_with_residual": report["records_with_residual"],
        "recall_vanilla": summarize(vanilla_recall), "recall_project": summarize(ours_recall),
        "recall_project_by_format": {k: v.get("recall") for k, v in ours_recall.items() if "/" in k},
        "recall_vanilla_by_format": {k: v.get("recall") for k, v in vanilla_recall.items() if "/" in k},
        "names_vanilla": names["vanilla"], "names_project": names["project"],
    }
    if not args.no_dask:
        workers = max(p.workers, 2)
        q = dataclasses.replace(p, runner="dask", workers=workers)
        _, seconds, _ = project(q, src, tmp / f"dask{workers}.jsonl")
        same = (tmp / f"dask{workers}.jsonl").read_bytes() == (tmp / "out.jsonl").read_bytes()
        print(f"Dask, {workers} workers         {n / seconds:8.1f} records/s  "
              f"({seconds:.1f} s, output identical to the process pool's: {same})", flush=True)
        result[f"dask_{workers}_workers"] = {"seconds": round(seconds, 2), "identical": same,
                                             "records_per_s": round(n / seconds, 1)}
        result["dask_speedup"] = round(one_s / seconds, 2)

    print(f"\nproject / vanilla: {result['speedup_vs_vanilla']}x   (1 worker: "
          f"{result['speedup_1_worker_vs_vanilla']}x)" +
          (f"   Dask {max(p.workers, 2)} workers vs 1 worker: {result['dask_speedup']}x"
           if "dask_speedup" in result else ""))
    fmt = lambda r: "n/m" if r is None else f"{r:.4f}"  # noqa: E731
    print(f"{'entity type':<26} {'injected':>8} {'vanilla':>8} {'project':>8}")
    for key, v in ours_recall.items():
        if "/" not in key:
            print(f"{key:<26} {v['injected']:>8} {fmt(vanilla_recall[key].get('recall')):>8} "
                  f"{fmt(v.get('recall')):>8}")
    print(f"\n{'labeled sentences':<26} {'count':>8} {'vanilla':>8} {'project':>8}")
    for label, key, count in (("PERSON recall", "person_recall", "names"),
                              ("LOCATION recall", "location_recall", "places"),
                              ("entity-free with a name", "false_positive_rate", "entity_free")):
        print(f"{label:<26} {names['project'][count]:>8} {fmt(names['vanilla'][key]):>8} "
              f"{fmt(names['project'][key]):>8}")
    missed = {k: v for k, v in ours_recall.items() if "/" in k and v.get("recall") not in (None, 1.0)}
    if missed:
        print("formats the project missed some of:", json.dumps(missed, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
