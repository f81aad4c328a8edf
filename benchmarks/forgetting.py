"""Forgetting across continual cycles: replay against no replay and against full retraining.

A sequence of cycles whose topics shift completely is learned three ways from the same tiny base
model, each cycle continuing from the arm's previous adapter. Cycle k's logs are all about one
counter of a store that has issued new codes (DEPARTMENTS): keys no other cycle names and an
answer of its own, with a code per key, to questions every cycle asks the same ways. Learning a
counter thus overwrites what the earlier ones taught, unless they are replayed. The arms:

- replay: the dataset stage's real mix (params.yaml `replay`: the stratified buffer and the anchor
  training set), as a nightly cycle trains;
- no_replay: the cycle's new examples only (replay.ratio = replay.anchor_ratio = 0);
- full_retrain: a new adapter each cycle, trained on every cycle's new examples so far.

Each cycle's records go through `pipelines.data.dataset.run` (dedup, the held-out split by id, the
mix), training is `pipelines.model.train.run`, and losses are `pipelines.common.modeling.loss_and_accuracy` on
assistant tokens, as the evaluate stage scores them. After every cycle each arm is scored on every
cycle's held-out records and on the anchor eval set (data/anchor/anchor.jsonl). Reported:

- old_loss_increase_pct: for each cycle but the last, its held-out loss after the final cycle
  against the best it reached after being learned, in %, averaged over those cycles;
- new_loss_gain_pct: the drop of each cycle's held-out loss from before to after training on it,
  in %, averaged over cycles;
- train_seconds: wall time of all the arm's `train.run` calls;
- anchor_loss_increase_pct: anchor eval loss after the final cycle against the base model's.

The records are generated here and hold no personal data (forgetting, not privacy, is measured).
Writes benchmarks/results/forgetting.json and forgetting.png (old-data and anchor loss per cycle).

    python benchmarks/forgetting.py [--cycles 6] [--records-per-cycle 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from pipelines.common import modeling
from pipelines.common import params as params_mod
from pipelines.common.records import read_jsonl, write_jsonl
from pipelines.data import dataset
from pipelines.model import base_model as base_model_stage
from pipelines.model import train
from pipelines.samples import sample_logs

ROOT = Path(__file__).resolve().parent.parent
ANCHOR_EVAL = ROOT / "data/anchor/anchor.jsonl"
ANCHOR_TRAIN = ROOT / "data/anchor/anchor_train.jsonl"
ARMS = ("replay", "no_replay", "full_retrain")
START = dt.date(2026, 2, 2)


# Each cycle is one counter of the store that has just issued new codes: its own keys (words no
# other cycle names: products, devices, plans, months, weekdays, cities) and its own answer, with a
# code per key that only this counter's conversations teach. Keys and answers use words the base
# model knows from its pre-training corpus, so a cycle's loss falls to what is left to learn: the
# answer and the codes. The questions are asked the same ways in every cycle, so learning the new
# counter pulls every answer towards it: unless the earlier ones are replayed, their answers are
# overwritten. (The sample logs' topics share the store's language and answers: learning one
# lowered the loss on the others, and no arm visibly forgot.)
DEPARTMENTS: dict[str, tuple[list[str], str]] = {
    "products": (sample_logs.PRODUCTS,
                 "Hi {first}! The code for the {item} is {code}. Please use it at checkout."),
    "devices": (sample_logs.DEVICES,
                "Hi {first}, for your {item} the code is {code}; enter it under Settings."),
    "plans": (sample_logs.PLANS, "{first}, the {item} plan code is {code}. It is valid for 30 days."),
    "months": (["January", "February", "March", "April", "May", "June"],
               "The {item} invoice code is {code}, {first}. It shows on your statement."),
    "weekdays": (["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
                 "For {item} delivery use code {code}, {first}. The carrier will confirm."),
    "cities": (sample_logs.CITIES, "{first}, our {item} store uses code {code}. Drop the parcel there."),
}
QUESTIONS = ["Hi, I'm {name}. What is the code for {item}?", "{name} here. Which code do I need for {item}?",
             "Hello, this is {name}. Please tell me the code for {item}.",
             "What code goes with {item}? I'm {name}."]


def cycle_topic(index: int) -> str:
    return list(DEPARTMENTS)[index % len(DEPARTMENTS)]


def item_codes(seed: int, department: str) -> dict[str, str]:
    """The code of each of the counter's keys: fixed per key (a letter and a number)."""
    rng = random.Random(f"forgetting-codes-{seed}-{department}")
    return {item: f"{rng.choice('ABCDEFGHJKLMN')}{rng.randint(1, 30)}"
            for item in DEPARTMENTS[department][0]}


def cycle_records(seed: int, index: int, n: int) -> list[dict]:
    """One night's logs, all about one counter: a real shift from the last (see DEPARTMENTS)."""
    rng = random.Random(f"forgetting-{seed}-{index}")
    day = START + dt.timedelta(days=index)
    department = cycle_topic(index)
    items, answer = DEPARTMENTS[department]
    codes = item_codes(seed, department)
    records = []
    for i in range(n):
        first, last = rng.choice(sample_logs.FIRST_NAMES), rng.choice(sample_logs.LAST_NAMES)
        item = rng.choice(items)
        ts = dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(seconds=rng.randint(0, 86399))
        records.append({
            "id": f"{day.isoformat()}-{i:05d}",
            "timestamp": ts.isoformat().replace("+00:00", "Z"),
            "messages": [
                {"role": "system", "content": sample_logs.SYSTEM_PROMPT},
                {"role": "user", "content": rng.choice(QUESTIONS).format(name=f"{first} {last}", item=item)},
                {"role": "assistant", "content": answer.format(first=first, item=item, code=codes[item])},
            ],
            "feedback": rng.choice(["up", None]),
            "metadata": {"topic": department, "channel": "app"},
        })
    return records


def scorer(p: params_mod.Params, base: str):
    """score(adapter) -> loss on each named set of encoded examples, through the project's loss."""
    tokenizer = modeling.load_tokenizer(base)

    def encode(records: list[dict]) -> list[dict]:
        examples = [modeling.encode_chat(tokenizer, r["messages"], p.train.max_length) for r in records]
        return [e for e in examples if any(label != modeling.IGNORE_INDEX for label in e["labels"])]

    def score(adapter: Path | None, sets: dict[str, list[dict]]) -> dict[str, float]:
        model = modeling.load_with_adapter(base, p.train.quantization, adapter, trainable=False)
        return {name: round(modeling.loss_and_accuracy(model, examples, p.evaluate.batch_size,
                                                       tokenizer.pad_token_id)[0], 5)
                for name, examples in sets.items()}

    return encode, score


def pct(new: float, old: float) -> float:
    return round((new - old) / old * 100, 2)


def summarise(losses: list[list[float]], anchor: list[float], seconds: list[float]) -> dict:
    """losses[r][j]: loss on cycle j's held-out data after r cycles (row 0: the base model);
    seconds[k]: the wall time of cycle k's training."""
    cycles = len(losses[0])
    gains = [-pct(losses[k + 1][k], losses[k][k]) for k in range(cycles)]
    increases = [pct(losses[cycles][j], min(losses[r][j] for r in range(j + 1, cycles + 1)))
                 for j in range(cycles - 1)]
    old_mean = [statistics.mean(losses[k + 1][:k]) if k else None for k in range(cycles)]
    return {"old_loss_increase_pct": round(statistics.mean(increases), 2) if increases else None,
            "new_loss_gain_pct": round(statistics.mean(gains), 2),
            "train_seconds": round(sum(seconds), 1),
            "train_seconds_cumulative_per_cycle": [round(sum(seconds[:k + 1]), 1)
                                                   for k in range(len(seconds))],
            "anchor_loss_increase_pct": pct(anchor[-1], anchor[0]),
            "old_loss_increase_pct_per_cycle": increases, "new_loss_gain_pct_per_cycle": gains,
            "old_loss_mean_per_cycle": [round(v, 5) if v is not None else None for v in old_mean],
            "anchor_loss_per_cycle": anchor, "loss_matrix": losses}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (old, anchor, cost) = plt.subplots(1, 3, figsize=(16, 4))
    for arm in ARMS:
        r = results[arm]
        cycles = range(1, len(r["old_loss_mean_per_cycle"]) + 1)
        old.plot(list(cycles)[1:], r["old_loss_mean_per_cycle"][1:], marker="o", label=arm)
        anchor.plot(range(len(r["anchor_loss_per_cycle"])), r["anchor_loss_per_cycle"], marker="o",
                    label=arm)
        cost.plot(list(cycles), r["train_seconds_cumulative_per_cycle"], marker="o", label=arm)
    old.set(title="Earlier cycles' held-out data", xlabel="after cycle",
            ylabel="mean eval loss (assistant tokens)")
    anchor.set(title="Anchor eval set (base model's kind)", xlabel="after cycle (0 = base model)",
               ylabel="eval loss")
    cost.set(title="Training time so far", xlabel="after cycle", ylabel="seconds (cumulative)")
    for ax in (old, anchor, cost):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(p: params_mod.Params, cycles: int, records_per_cycle: int, eval_fraction: float,
        base: str | None, work: Path) -> dict:
    """The three arms over `cycles` cycles; returns the results written to forgetting.json."""
    if base is None:
        print("forgetting: building the default tiny base model (params.yaml `base`)", flush=True)
        base = str(work / "base")
        base_model_stage.run(p.base_model, p.seed, Path(base), ROOT / "data/corpus")
    data_p = dataclasses.replace(p.dataset, eval_fraction=eval_fraction)
    without_replay = dataclasses.replace(p.replay, ratio=0.0, anchor_ratio=0.0)
    encode, score = scorer(p, base)
    anchor_eval = encode(list(read_jsonl(ANCHOR_EVAL)))
    empty = work / "empty.jsonl"
    write_jsonl(empty, [])
    no_adapter = work / "no-adapter"
    no_adapter.mkdir()

    held_out, new_train_files, reports = [], [], {arm: [] for arm in ARMS}
    for k in range(cycles):
        cycle = (START + dt.timedelta(days=k)).isoformat()
        clean = work / f"cycle{k}/clean.jsonl"
        write_jsonl(clean, cycle_records(p.seed, k, records_per_cycle))
        split = dataset.run(data_p, without_replay, p.seed, cycle, clean, empty, work / f"cycle{k}/split")
        held_out.append(encode(list(read_jsonl(work / f"cycle{k}/split/eval.jsonl"))))
        new_train_files.append(work / f"cycle{k}/split/train.jsonl")
        print(f"forgetting: cycle {k + 1}/{cycles} is about {cycle_topic(k)}: {split['train_new']} "
              f"new training examples, {split['eval']} held out", flush=True)

    sets = {f"cycle{j}": held_out[j] for j in range(cycles)} | {"anchor": anchor_eval}
    base_scores = score(None, sets)
    results = {}
    for arm in ARMS:
        losses = [[base_scores[f"cycle{j}"] for j in range(cycles)]]
        anchor = [base_scores["anchor"]]
        parent, buffer, seconds, examples = no_adapter, empty, [], []
        for k in range(cycles):
            cycle = (START + dt.timedelta(days=k)).isoformat()
            out = work / arm / f"cycle{k}"
            if arm == "replay":
                report = dataset.run(data_p, p.replay, p.seed, cycle, work / f"cycle{k}/clean.jsonl",
                                     buffer, out / "dataset", ANCHOR_TRAIN)
                train_file, buffer = out / "dataset/train.jsonl", out / "dataset/buffer.jsonl"
                reports[arm].append({key: report[key] for key in
                                     ("train_new", "train_replay", "train_anchor", "buffer_after")})
            elif arm == "no_replay":
                train_file = new_train_files[k]
            else:
                train_file = out / "train.jsonl"
                write_jsonl(train_file, [r for f in new_train_files[:k + 1] for r in read_jsonl(f)])
            started = time.time()
            metrics = train.run(p.train, base, p.seed, parent, train_file, out / "adapter")
            seconds.append(time.time() - started)
            examples.append(metrics["examples"])
            if arm != "full_retrain":
                parent = out / "adapter"
            scores = score(out / "adapter", sets)
            losses.append([scores[f"cycle{j}"] for j in range(cycles)])
            anchor.append(scores["anchor"])
            earlier = statistics.mean(losses[-1][:k]) if k else float("nan")
            print(f"forgetting: {arm} cycle {k + 1}/{cycles}: {metrics['examples']} examples trained in "
                  f"{seconds[-1]:.0f} s; loss on this cycle {losses[k][k]:.3f} -> "
                  f"{losses[-1][k]:.3f}, on earlier cycles {earlier:.3f}, anchor {anchor[-1]:.3f}",
                  flush=True)
        results[arm] = summarise(losses, anchor, seconds) | {"train_examples_per_cycle": examples}
    results["replay"]["dataset_reports"] = reports["replay"]
    return results


def verdict(results: dict) -> dict:
    replay, no_replay, full = results["replay"], results["no_replay"], results["full_retrain"]
    gain_ratio = (replay["new_loss_gain_pct"] / no_replay["new_loss_gain_pct"]
                  if no_replay["new_loss_gain_pct"] else None)
    return {"replay_old_loss_increase_at_most_5_pct": replay["old_loss_increase_pct"] <= 5.0,
            "no_replay_old_loss_increase_pct": no_replay["old_loss_increase_pct"],
            "replay_gain_vs_no_replay": round(gain_ratio, 3) if gain_ratio is not None else None,
            "replay_keeps_90_pct_of_no_replay_gain": gain_ratio is not None and gain_ratio >= 0.9,
            "replay_train_time_vs_full_retrain": round(replay["train_seconds"] / full["train_seconds"], 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/forgetting.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=6, help="cycles, one topic each (at least 2)")
    parser.add_argument("--records-per-cycle", type=int, default=200,
                        help="logged records each cycle (before dedup and the held-out split)")
    parser.add_argument("--eval-fraction", type=float, default=0.2,
                        help="share of each cycle held out to measure on (by hash of id)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--base-model", default=None,
                        help="a base model path; default: build the tiny default one from params")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/forgetting.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks/results/forgetting.png")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw --plot from the results already in --out (no training)")
    args = parser.parse_args(argv)
    if args.replot:
        if not args.out.exists():
            parser.error(f"--replot needs the results of a run: {args.out} does not exist")
        results = json.loads(args.out.read_text())
        plot(results, args.plot)
        print(f"forgetting: redrew {args.plot} from {args.out}")
        return results
    if args.cycles < 2:
        parser.error("--cycles must be at least 2: forgetting needs an earlier cycle to forget")
    p = params_mod.load(args.params)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="nightshift-forgetting-") as work:
        results = run(p, args.cycles, args.records_per_cycle, args.eval_fraction, args.base_model,
                      Path(work))
    results["verdict"] = verdict(results)
    results["setup"] = {
        "cycles": args.cycles, "topics": [cycle_topic(k) for k in range(args.cycles)],
        "records_per_cycle": args.records_per_cycle, "eval_fraction": args.eval_fraction,
        "params": args.params, "base_model": args.base_model or "tiny default (params `base`)",
        "replay": dataclasses.asdict(p.replay), "train": dataclasses.asdict(p.train),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "wall_seconds": round(time.time() - started)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.plot)
    for arm in ARMS:
        r = results[arm]
        print(f"forgetting: {arm:12s} old data loss {r['old_loss_increase_pct']:+.1f}%, new data gain "
              f"{r['new_loss_gain_pct']:.1f}%, anchor {r['anchor_loss_increase_pct']:+.1f}%, "
              f"training {r['train_seconds']:.0f} s")
    print(f"forgetting: {json.dumps(results['verdict'])}\nforgetting: wrote {args.out} and {args.plot}")
    return results


if __name__ == "__main__":
    main()
