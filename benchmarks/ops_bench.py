"""Operations benchmarks: a night with no new data, many nights in a row, and the stages at
growing volume. The first two run the real `nightshift run` command in a scratch workspace; the
third calls each stage's run() in this process. Figures go to benchmarks/results/ops_<part>.json
(docs/BENCHMARKS.md and docs/SCALING.md quote them).

    python benchmarks/ops_bench.py empty              # wall time of a night with no new records
    python benchmarks/ops_bench.py cycles --cycles 30 # cycle N against cycle 2, same daily volume
    python benchmarks/ops_bench.py stages             # each stage's work at 1x, 10x, 100x the demo

CPU seconds are those of the `nightshift run` process and everything it waited for (DVC, the
stages, Prefect's temporary API server): resource.getrusage(RUSAGE_CHILDREN) before and after.
On a machine shared with other work they move less than wall seconds do.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows import workspace as wsp  # noqa: E402
from pipelines.samples import sample_logs  # noqa: E402

RESULTS = ROOT / "benchmarks/results"
START = dt.date(2026, 1, 5)
DEMO_RECORDS = 150  # demo.records_per_day of params.yaml: "1x"
# Prefect's temporary API server gives up after 20 s by default; a loaded machine needs longer.
PREFECT_ENV = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def set_params(ws: Path, overrides: dict) -> None:
    """Override params.yaml keys given as {"section.key": value}."""
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def write_day(ws: Path, day: dt.date, index: int, records: int, seed: int = 11) -> None:
    """The day's sample log, as a logging host would leave it before the night's run."""
    lines = sample_logs.generate_day(seed, day, index, records, 0.8)
    (ws / "logs").mkdir(exist_ok=True)
    (ws / f"logs/{day.isoformat()}.jsonl").write_text("\n".join(lines) + "\n")


def run_night(ws: Path, day: dt.date) -> dict:
    """`nightshift run` for one date: wall and CPU seconds, and the cycle's summary."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "nightshift"), "run", "--workspace",
                           str(ws), "--date", day.isoformat()], capture_output=True, text=True,
                          env={**os.environ, **PREFECT_ENV})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"nightshift run --date {day} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads((ws / f"reports/cycles/{day.isoformat()}.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"date": day.isoformat(), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "status": summary["status"], "pulled": summary.get("pulled"),
            "new_examples": summary.get("new_examples"), "timings": summary["timings"]}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def history_sizes(ws: Path) -> dict:
    """What accumulates with the nights: the places a cycle could get slower from."""
    buffer = ws / "data/replay/buffer.jsonl"
    return {"git_bytes": folder_bytes(ws / ".git"), "dvc_cache_bytes": folder_bytes(ws / ".dvc/cache"),
            "mlflow_db_bytes": (ws / "mlflow.db").stat().st_size if (ws / "mlflow.db").exists() else 0,
            "mlartifacts_bytes": folder_bytes(ws / "mlartifacts"),
            "replay_buffer_records": len(buffer.read_text().splitlines()) if buffer.exists() else 0,
            "log_files": len(list((ws / "logs").glob("*.jsonl")))}


def fresh_workspace(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return wsp.init(path)


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ops_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def bench_empty(args) -> dict:
    """A night with no new records, in a fresh workspace: `nightshift run` start to exit."""
    ws = fresh_workspace(args.workspace / "empty")
    (ws / "logs").mkdir()
    nights = [run_night(ws, START + dt.timedelta(days=i)) for i in range(args.repeats)]
    for night in nights:
        assert night["status"] == "skipped" and night["pulled"] == 0, night
        print(f"empty night {night['date']}: {night['wall_s']:.1f} s wall, {night['cpu_s']:.1f} s CPU, "
              f"stages {night['timings']}", flush=True)
    walls = sorted(n["wall_s"] for n in nights)
    result = {"nights": nights, "median_wall_s": walls[len(walls) // 2], "target_wall_s": 30,
              "meets_target": max(walls) <= 30}
    print(f"median {result['median_wall_s']:.1f} s (target <= 30 s): {save('empty', result)}")
    return result


# Small enough that 30 nights run in well under an hour on 2 cores; the same code paths as the
# defaults. The replay buffer reaches its capacity on night 3 (about 30 examples a night), so
# what grows after that is the history (git, DVC cache, MLflow, logs), not the buffer.
CYCLE_PARAMS = {"base_model.corpus_records": 300, "base_model.pretrain_steps": 100, "base.pretrain_batch_size": 8,
                "replay.capacity": 60, "evaluate.generation_examples": 8, "drift.min_records": 20,
                "nightly.min_new_examples": 10}


def bench_cycles(args) -> dict:
    """`--cycles` nights of `--records` records each in one workspace; cycle N against cycle 2."""
    ws = fresh_workspace(args.workspace / "cycles")
    set_params(ws, CYCLE_PARAMS)
    result: dict = {"records_per_night": args.records, "params": CYCLE_PARAMS, "nights": []}
    for i in range(args.cycles):
        day = START + dt.timedelta(days=i)
        write_day(ws, day, i, args.records)
        night = run_night(ws, day)
        night["history"] = history_sizes(ws)
        result["nights"].append(night)
        print(f"night {i + 1:>2} {night['date']}: {night['status']}, {night['wall_s']:.1f} s wall, "
              f"{night['cpu_s']:.1f} s CPU, buffer {night['history']['replay_buffer_records']}, "
              f"git {night['history']['git_bytes'] // 1024} KiB, DVC cache "
              f"{night['history']['dvc_cache_bytes'] // 1024} KiB", flush=True)
        if len(result["nights"]) >= 3:
            result["last_vs_second"] = last_vs_second(result["nights"])
        save("cycles", result)  # after every night: a long run that stops early keeps its figures
    result["target"] = 1.2
    print(json.dumps(result.get("last_vs_second"), indent=2))
    print(save("cycles", result))
    return result


def last_vs_second(nights: list[dict]) -> dict:
    """The latest night against night 2 (night 1 builds the base model and has no champion)."""
    second, last = nights[1], nights[-1]
    stages = sorted(set(second["timings"]) | set(last["timings"]))
    return {"nights": [2, len(nights)],
            "wall": round(last["wall_s"] / second["wall_s"], 3),
            "cpu": round(last["cpu_s"] / second["cpu_s"], 3),
            "stages_sum": round(sum(last["timings"].values()) / sum(second["timings"].values()), 3),
            "per_stage": {s: [second["timings"].get(s), last["timings"].get(s)] for s in stages}}


# ingest includes redaction: it redacts each record as it pulls it.
STAGES = ["ingest", "validate", "dataset", "drift", "train", "evaluate"]


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def parse_record(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None  # the sample's deliberately broken lines


def bench_stages(args) -> dict:
    """Seconds of each stage's own work (called in this process: no process start-up, no Prefect,
    no DVC) on one night of 1x, 10x, 100x ... the demo's daily volume, with the default params.

    Against a replay buffer of earlier sample records at the default capacity. Train and evaluate
    use the tiny default architecture (a quickly pre-trained one: the same shape, so the same
    tokens/s) and run up to --train-up-to; above it they are extrapolated from tokens.
    """
    from pipelines.common import params as params_mod
    from pipelines.common.records import read_jsonl, write_jsonl
    from pipelines.data import dataset, drift, ingest, validate
    from pipelines.model import base_model, evaluate, train

    p = params_mod.load(ROOT / "params.yaml")
    root = args.workspace / "stages"
    base = args.workspace / "stages-base"  # kept between runs: building it is not measured here
    if root.exists():
        shutil.rmtree(root)
    base_s = None
    if not (base / "config.json").exists():
        _, base_s = timed(base_model.run, dataclasses.replace(p.base_model, corpus_records=300,
                                                              pretrain_steps=50),
                          p.seed, base, ROOT / "data/corpus")
    buffer = root / "buffer.jsonl"
    earlier = [r for r in map(parse_record, sample_logs.generate_day(5, START, 0, 4000, 0.8))
               if isinstance(r, dict) and isinstance(r.get("messages"), list)]
    write_jsonl(buffer, earlier[:p.replay.capacity])
    day = START + dt.timedelta(days=1)
    result: dict = {"demo_records_per_night": DEMO_RECORDS, "replay_buffer": p.replay.capacity,
                    "base_model_s": base_s and round(base_s, 1), "scales": {}}
    for scale in args.scales:
        d = root / f"{scale}x"
        records = DEMO_RECORDS * scale
        (d / "logs").mkdir(parents=True)
        (d / f"logs/{day}.jsonl").write_text(
            "\n".join(sample_logs.generate_day(11, day, 1, records, 0.8)) + "\n")
        seconds: dict[str, float] = {}
        pulled, seconds["ingest"] = timed(
            ingest.run, dataclasses.replace(p.ingest, url=str(d / "logs")),
            p.redact, day, snapshot_dir=d / "snapshots", watermark_file=d / "watermark.json",
            cycle_file=d / "cycle.yaml", salt_file=d / "subject-salt",
            tombstones_file=d / "forgotten.jsonl")
        try:
            _, seconds["validate"] = timed(validate.run, p.validate, d / f"snapshots/{day}.jsonl",
                                           d / "validated", str(day))
        except validate.BatchRejected as exc:  # the verdict does not matter for the timing
            seconds["validate"] = None
            print(f"{scale}x: {exc}", flush=True)
        clean = d / "validated/clean.jsonl"
        made, seconds["dataset"] = timed(dataset.run, p.dataset, p.replay, p.seed, str(day), clean,
                                         buffer, d / "dataset")
        _, seconds["drift"] = timed(drift.run, p.drift, p.seed, str(day), clean, buffer,
                                    d / "drift.json", d / "drift.html")
        night = {"records": pulled["pulled"], "train_examples": made["train_new"] + made["train_replay"],
                 "eval_examples": made["eval"], "seconds": seconds}
        if scale <= args.train_up_to:
            trained, seconds["train"] = timed(train.run, p.train, str(base), p.seed, d / "no-parent",
                                              d / "dataset/train.jsonl", d / "candidate")
            sets = evaluate.load_sets(d / "dataset/eval.jsonl", ROOT / "data/golden/golden.jsonl",
                                      ROOT / "data/anchor/anchor.jsonl", buffer,
                                      d / "dataset/train.jsonl", p.evaluate.replay_examples, p.seed)
            _, seconds["evaluate"] = timed(evaluate.run, p.evaluate, p.train, str(base), p.seed,
                                           d / "candidate", d / "no-parent", sets)
            night["train_tokens"] = trained.get("tokens")
            night["train_tokens_per_s"] = trained.get("tokens_per_second")
        night["records_per_s"] = {s: round(night["records"] / v, 1) for s, v in seconds.items() if v}
        result["scales"][f"{scale}x"] = night
        print(f"{scale}x ({night['records']} records): " + ", ".join(
            f"{k} {v:.1f} s" for k, v in seconds.items() if v is not None), flush=True)
        save("stages", result)
    print(save("stages", result))
    return result


def extrapolate(args) -> dict:
    """Seconds per stage at --to x the demo volume, from ops_stages.json: a straight line through
    the two largest scales each stage was measured at (fixed cost + cost per record)."""
    measured = json.loads((RESULTS / "ops_stages.json").read_text())["scales"]
    scales = sorted(measured, key=lambda k: int(k[:-1]))
    table = {}
    for stage in STAGES:
        points = [(measured[k]["records"], measured[k]["seconds"][stage]) for k in scales
                  if measured[k]["seconds"].get(stage) is not None]
        if len(points) >= 2:
            (n1, t1), (n2, t2) = points[-2:]
            per_record = (t2 - t1) / (n2 - n1)
            fixed = t1 - per_record * n1
            if per_record < 0:  # bounded work (drift samples at most drift.max_samples): flat
                per_record, fixed = 0.0, max(t1, t2)
        elif stage == "train" and points:
            # One night trained: its training loop's tokens/s gives the cost per record; the rest
            # of the stage (loading, saving) is the fixed part.
            night = next(measured[k] for k in reversed(scales) if measured[k]["seconds"].get("train"))
            loop = night["train_tokens"] / night["train_tokens_per_s"]
            n1 = n2 = night["records"]
            per_record, fixed = loop / night["records"], night["seconds"]["train"] - loop
        else:
            continue
        records = DEMO_RECORDS * args.to
        table[stage] = {"from_records": [n1, n2], "fixed_s": round(fixed, 2),
                        "ms_per_record": round(per_record * 1000, 3),
                        f"{args.to}x_s": round(fixed + per_record * records, 1)}
    print(f"| stage | fit from (records) | fixed (s) | ms per record | {args.to}x = "
          f"{DEMO_RECORDS * args.to:,} records (s) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for stage, row in table.items():
        print(f"| {stage} | {row['from_records'][0]:,} and {row['from_records'][1]:,} | "
              f"{row['fixed_s']} | {row['ms_per_record']} | {row[f'{args.to}x_s']:,} |")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nightshift-ops-bench"),
                        help="scratch folder for the benchmark workspaces (default: %(default)s)")
    sub = parser.add_subparsers(dest="part", required=True)
    empty = sub.add_parser("empty", help="a night with no new records")
    empty.add_argument("--repeats", type=int, default=3)
    cycles = sub.add_parser("cycles", help="many nights of the same volume in one workspace")
    cycles.add_argument("--cycles", type=int, default=30)
    cycles.add_argument("--records", type=int, default=40, help="records per night (default: %(default)s)")
    stages = sub.add_parser("stages", help="per-stage seconds at growing volume")
    stages.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    stages.add_argument("--train-up-to", type=int, default=10,
                        help="largest scale that also trains and evaluates (default: %(default)s)")
    extra = sub.add_parser("extrapolate", help="per-stage seconds at a larger scale, from `stages`")
    extra.add_argument("--to", type=int, default=1000, help="scale to extrapolate to (default: %(default)s)")
    args = parser.parse_args(argv)
    {"empty": bench_empty, "cycles": bench_cycles, "stages": bench_stages,
     "extrapolate": extrapolate}[args.part](args)


if __name__ == "__main__":
    main()
