"""worth: does tonight's adapter earn its keep against prompting and retrieval, and at what cost?

evaluate scores five contenders on the same records (reports/eval.json `contenders`): the base
model as prompted (prompting), the base model with the k most similar past conversations in its
context (retrieval), the champion, the candidate, and the candidate with retrieval. This step turns
that into what a team decides on:

- the verdict, with its uncertainty: the candidate's gain in answer-token loss over retrieval and
  over prompting, with a paired bootstrap interval over records (the same records resampled for
  both sides). The adapter *adds* over a contender when the interval's lower end is above
  worth.min_gain of the contender's loss; otherwise that contender *matches* it.
- the kind of gap the data shows: a format gap (few-shot examples already bring the format pass
  rate up to the adapter's), a knowledge gap (retrieval closes at least worth.closes_most of the
  loss gap between prompting and the adapter) or a behaviour gap (only the adapter closes it).
- the cycle's cost: seconds per stage on its device, priced at worth.cpu_hour_usd and
  worth.gpu_hour_usd, with the tokens and examples trained and the peak memory.
- the break-even: retrieval adds its examples' tokens to every request; at the source's requests
  per day and worth.input_token_usd_per_1k that is a daily cost, against the nightly cycle's. The
  request volume where the two meet is where fine-tuning starts to pay.
- the history (reports/worth.csv, one row per cycle, charted by `dvc plots`) and the alarm: when
  retrieval has matched the adapter worth.alert_after_nights nights in a row, fine-tuning is not
  paying for itself on this data, and the summary and the alert say so.

The nightly flow runs it after the gate and before the cycle is versioned, so its reports are
committed with the cycle and logged to the version's MLflow run.

    python -m pipelines.model.worth reports/eval.json reports/train.json reports/worth.json \\
        --timings timings.json --requests 150
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from pipelines.common import params as params_mod
from pipelines.common import report as html_report
from pipelines.common.records import read_json, write_json

CONTENDERS = ("prompting", "retrieval", "champion", "candidate", "candidate_retrieval")
SETS = ("new", "golden")
# Steps that run a model, so they run on the GPU when training did; the rest are CPU work.
MODEL_STEPS = {"base_model", "train", "evaluate"}
HISTORY_FIELDS = ["cycle", "verdict", "gain_over_retrieval", "gain_over_retrieval_low",
                  "gain_over_retrieval_high", "gain_over_prompting", "diagnosis", "cycle_cost_usd",
                  "retrieval_daily_usd", "break_even_requests_per_day", "requests_per_day"]


def entries(evaluation: dict) -> dict[str, dict | None]:
    """Each contender's scores from reports/eval.json (None where it was not measured)."""
    contenders = evaluation.get("contenders") or {}
    found = {name: contenders.get(name) for name in ("prompting", "retrieval", "candidate_retrieval")}
    found.update(champion=evaluation.get("champion"), candidate=evaluation.get("candidate"))
    return {n: e if e and "error" not in e else None for n, e in found.items()}


def per_record(entry: dict | None, name: str) -> np.ndarray | None:
    """[[nats, tokens], ...] of one set, as an array (None when not measured)."""
    rows = ((entry or {}).get(name) or {}).get("per_example")
    return np.asarray(rows, dtype=np.float64) if rows else None


def paired_gain(better: np.ndarray, reference: np.ndarray, samples: int, confidence: float,
                seed: int) -> dict:
    """reference's token-weighted loss minus better's, with a paired bootstrap interval: records
    are resampled with replacement and the same draw is used for both sides."""
    def loss(rows: np.ndarray, idx: np.ndarray | slice = slice(None)) -> np.ndarray | float:
        picked = rows[idx]
        return picked[..., 0].sum(-1) / np.maximum(picked[..., 1].sum(-1), 1)

    n = min(len(better), len(reference))
    better, reference = better[:n], reference[:n]
    gain = float(loss(reference) - loss(better))
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    gains = loss(reference, draws) - loss(better, draws)
    tail = (1 - confidence) / 2
    low, high = np.quantile(gains, [tail, 1 - tail])
    return {"gain": round(gain, 5), "low": round(float(low), 5), "high": round(float(high), 5),
            "reference_loss": round(float(loss(reference)), 5), "records": n}


def verdict(p: params_mod.WorthParams, gain: dict | None) -> str | None:
    """With m = min_gain of the contender's loss: "adds" when the interval lies above m, "matches"
    when it lies below m (the contender does as well, or better), "undecided" when it straddles m
    (too few records, or too close to tell)."""
    if gain is None:
        return None
    margin = p.min_gain * gain["reference_loss"]
    if gain["low"] > margin:
        return "adds"
    return "matches" if gain["high"] <= margin else "undecided"


def diagnose(p: params_mod.WorthParams, losses: dict[str, float | None], formats: dict[str, float | None],
             adds_over_retrieval: bool) -> dict:
    """Which kind of gap between prompting and the adapter the data shows (see the module doc)."""
    prompting, retrieval, candidate = (losses.get(n) for n in ("prompting", "retrieval", "candidate"))
    f_prompt, f_retrieval, f_candidate = (formats.get(n) for n in ("prompting", "retrieval", "candidate"))
    gaps, closed = [], None
    if None not in (f_prompt, f_retrieval, f_candidate) and (
            f_prompt < f_candidate - p.format_tolerance <= f_retrieval):
        gaps.append("format")
    if None not in (prompting, retrieval, candidate) and prompting - candidate > 0:
        closed = round((prompting - retrieval) / (prompting - candidate), 4)
        if closed >= p.closes_most:
            gaps.append("knowledge")
        elif adds_over_retrieval:
            gaps.append("behaviour")
    if closed is None and not gaps:
        diagnosis = "none: the adapter does not beat prompting on this data"
    elif not gaps:
        diagnosis = ("undecided: retrieval closes less than worth.closes_most of the gap, and the "
                     "adapter's gain over it is not significant on these records")
    else:
        words = {"format": "a format gap (few-shot examples already fix the format)",
                 "knowledge": "a knowledge gap (retrieval closes most of the loss gap)",
                 "behaviour": "a behaviour gap (only the adapter closes it)"}
        diagnosis = "; ".join(words[g] for g in gaps)
    caveat = None
    if None not in (prompting, retrieval) and abs(prompting - retrieval) < p.min_gain * prompting:
        caveat = ("the retrieved examples change the base model's loss by less than worth.min_gain: "
                  "either they do not resemble the questions, or the base does not learn from its "
                  "context (the tiny default base does not: docs/BENCHMARKS.md). The verdict over "
                  "retrieval then says more about the base than about the data.")
    return {"gaps": gaps, "retrieval_closes": closed, "diagnosis": diagnosis, "caveat": caveat}


def cycle_cost(p: params_mod.WorthParams, timings: dict[str, float], train: dict) -> dict:
    """Seconds per step on its device, priced; with what training did and held."""
    on_gpu = train.get("device", "cpu") != "cpu"
    steps = {}
    for step, seconds in timings.items():
        device = train.get("device") if on_gpu and step in MODEL_STEPS else "cpu"
        rate = p.gpu_hour_usd if device != "cpu" else p.cpu_hour_usd
        steps[step] = {"seconds": seconds, "device": device, "usd": round(seconds / 3600 * rate, 6)}
    return {"steps": steps, "seconds": round(sum(timings.values()), 1),
            "usd": round(sum(s["usd"] for s in steps.values()), 6),
            "tokens_trained": train.get("tokens"), "examples_trained": train.get("examples"),
            "peak_memory_mb": train.get("peak_memory_mb"), "device": train.get("device", "cpu")}


def break_even(p: params_mod.WorthParams, cost_usd: float, context_tokens: float | None,
               requests_per_day: int) -> dict:
    """Daily cost of fine-tuning (one cycle a night) and of retrieval's extra prompt tokens at
    `requests_per_day`, and the volume at which they are equal."""
    per_request = (context_tokens or 0) / 1000 * p.input_token_usd_per_1k
    return {"requests_per_day": requests_per_day, "context_tokens_per_request": context_tokens,
            "fine_tuning_daily_usd": round(cost_usd, 6),
            "retrieval_daily_usd": round(per_request * requests_per_day, 6),
            "retrieval_usd_per_request": per_request,
            "break_even_requests_per_day": math.ceil(cost_usd / per_request) if per_request > 0 else None}


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_history(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def evaluation_hash(evaluation: dict) -> str:
    """Which evaluation a report judged: a re-run of the same night over the same evaluation
    keeps the report of the run that did the work (flows/tasks.py: worth)."""
    return hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode()).hexdigest()[:16]


def run(p: params_mod.WorthParams, seed: int, cycle: str, evaluation: dict, train: dict,
        timings: dict[str, float], requests_per_day: int, history: list[dict]) -> dict:
    """The night's report (see the module doc). `history`: earlier cycles' rows of worth.csv."""
    found = entries(evaluation)
    report = {"cycle": cycle, "evaluation": evaluation_hash(evaluation),
              "verdict_set": p.verdict_set, "confidence": p.confidence,
              "contenders": {}, "gains": {}, "format_pass_rate": {}, "pii_rate": {}}
    for name in CONTENDERS:
        entry = found[name]
        report["contenders"][name] = {s: {k: (entry or {}).get(s, {}).get(k) for k in
                                          ("eval_loss", "token_accuracy", "examples")} for s in SETS}
        generations = (entry or {}).get("generations") or {}
        report["format_pass_rate"][name] = generations.get("format_pass_rate")
        report["pii_rate"][name] = generations.get("pii_rate")
    for s in SETS:
        candidate = per_record(found["candidate"], s)
        others = {over: per_record(found[over], s)
                  for over in ("retrieval", "prompting", "champion", "candidate_retrieval")}
        report["gains"][s] = {
            over: paired_gain(candidate, other, p.bootstrap_samples, p.confidence, seed)
            if candidate is not None and other is not None else None for over, other in others.items()}
    gains = report["gains"][p.verdict_set]
    report["over_retrieval"] = verdict(p, gains["retrieval"])
    report["over_prompting"] = verdict(p, gains["prompting"])
    losses = {n: report["contenders"][n][p.verdict_set]["eval_loss"] for n in CONTENDERS}
    report.update(diagnose(p, losses, report["format_pass_rate"], report["over_retrieval"] == "adds"))

    context_tokens = ((evaluation.get("contenders") or {}).get("context_tokens") or {}).get(p.verdict_set)
    report["cost"] = cycle_cost(p, timings, train)
    report["break_even"] = break_even(p, report["cost"]["usd"], context_tokens, requests_per_day)

    earlier = [h for h in history if h["cycle"] < cycle]
    streak = 0
    for row in [*earlier, {"verdict": report["over_retrieval"]}][::-1]:
        if row["verdict"] != "matches":
            break
        streak += 1
    report["nights_retrieval_matched"] = streak
    report["not_paying"] = streak >= p.alert_after_nights
    report["headline"] = headline(p, report)
    return report


def headline(p: params_mod.WorthParams, r: dict) -> str:
    g = r["gains"][p.verdict_set]["retrieval"]
    if g is None:
        return "no verdict: the candidate or few-shot retrieval was not scored"
    interval = f"{g['gain']:+.3f} nats/token ({r['confidence']:.0%} interval {g['low']:+.3f} to {g['high']:+.3f})"
    if r["not_paying"]:
        return (f"fine-tuning is not paying for itself on this data: retrieval alone has matched the "
                f"adapter {r['nights_retrieval_matched']} nights in a row (tonight {interval})")
    if r["over_retrieval"] == "adds":
        return f"the adapter adds over few-shot retrieval: {interval}"
    if r["over_retrieval"] == "matches":
        return f"few-shot retrieval matches the adapter tonight: {interval}"
    return f"undecided between the adapter and few-shot retrieval tonight: {interval}"


def history_row(report: dict) -> dict:
    g = report["gains"][report["verdict_set"]]
    over_retrieval, over_prompting = g["retrieval"] or {}, g["prompting"] or {}
    return {"cycle": report["cycle"], "verdict": report["over_retrieval"],
            "gain_over_retrieval": over_retrieval.get("gain"),
            "gain_over_retrieval_low": over_retrieval.get("low"),
            "gain_over_retrieval_high": over_retrieval.get("high"),
            "gain_over_prompting": over_prompting.get("gain"), "diagnosis": ",".join(report["gaps"]) or "none",
            "cycle_cost_usd": report["cost"]["usd"],
            "retrieval_daily_usd": report["break_even"]["retrieval_daily_usd"],
            "break_even_requests_per_day": report["break_even"]["break_even_requests_per_day"],
            "requests_per_day": report["break_even"]["requests_per_day"]}


def metrics(report: dict) -> dict[str, float]:
    """Flat numbers for the version's MLflow run, so the UI charts them across versions."""
    out = {}
    for s in SETS:
        for name, scores in report["contenders"].items():
            if scores[s]["eval_loss"] is not None:
                out[f"contenders.{s}.{name}.eval_loss"] = scores[s]["eval_loss"]
        for over, g in report["gains"][s].items():
            if g:
                out[f"worth.{s}.gain_over_{over}"] = g["gain"]
                out[f"worth.{s}.gain_over_{over}_low"] = g["low"]
    for name, rate in report["format_pass_rate"].items():
        if rate is not None:
            out[f"contenders.{name}.format_pass_rate"] = rate
    out["worth.cycle_cost_usd"] = report["cost"]["usd"]
    out["worth.retrieval_daily_usd"] = report["break_even"]["retrieval_daily_usd"]
    if report["break_even"]["break_even_requests_per_day"] is not None:
        out["worth.break_even_requests_per_day"] = report["break_even"]["break_even_requests_per_day"]
    out["worth.nights_retrieval_matched"] = report["nights_retrieval_matched"]
    return out


LABELS = {"prompting": "prompting", "retrieval": "few-shot retrieval", "champion": "champion",
          "candidate": "candidate", "candidate_retrieval": "candidate + retrieval"}


def figures(report: dict, history: list[dict]) -> dict:
    """The page's plots: the contenders' losses, the adapter's gains with their intervals, the
    format pass rates, the nights so far, and daily cost against request volume."""
    out = {}
    fig = html_report.figure(9, 3.2)
    ax_loss, ax_gain = fig.subplots(1, 2)
    width = 0.38
    names = [n for n in CONTENDERS if any(report["contenders"][n][s]["eval_loss"] is not None for s in SETS)]
    for i, s in enumerate(SETS):
        values = [report["contenders"][n][s]["eval_loss"] or 0 for n in names]
        ax_loss.bar(np.arange(len(names)) + (i - 0.5) * width, values, width, label=s)
    ax_loss.set_xticks(range(len(names)), [LABELS[n] for n in names], rotation=25, ha="right")
    ax_loss.set(ylabel="answer-token loss (nats)", title="Loss of each contender (lower is better)")
    ax_loss.legend(title="set")
    overs = ["prompting", "retrieval", "champion", "candidate_retrieval"]
    for i, s in enumerate(SETS):
        gains = [report["gains"][s].get(o) for o in overs]
        xs = [j + (i - 0.5) * width for j, g in enumerate(gains) if g]
        ys = [g["gain"] for g in gains if g]
        err = [[g["gain"] - g["low"] for g in gains if g], [g["high"] - g["gain"] for g in gains if g]]
        ax_gain.errorbar(xs, ys, yerr=err, fmt="o", capsize=4, label=s)
    ax_gain.axhline(0, color="#888", lw=1)
    ax_gain.set_xticks(range(len(overs)), [LABELS[o] for o in overs], rotation=25, ha="right")
    ax_gain.set(ylabel="candidate's gain (nats/token)",
                title=f"Candidate's gain over each, {report['confidence']:.0%} interval")
    ax_gain.legend(title="set")
    out["contenders"] = html_report.img(fig, "loss per contender and the candidate's gain over each")

    fig = html_report.figure(5, 2.6)
    ax = fig.subplots()
    rates = [(LABELS[n], r) for n, r in report["format_pass_rate"].items() if r is not None]
    if rates:
        ax.bar([n for n, _ in rates], [r for _, r in rates], color="#5a8")
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", rotation=25)
    ax.set(ylabel="share of golden answers", title="Format pass rate (behaviour check)")
    out["formats"] = html_report.img(fig, "format pass rate per contender")

    rows = [*[h for h in history if h["cycle"] < report["cycle"]], history_row(report)]
    fig = html_report.figure(9, 3)
    ax_gain, ax_cost = fig.subplots(1, 2)
    cycles = [r["cycle"] for r in rows]

    def column(name: str) -> list[float]:
        return [float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows]

    gain, low, high = column("gain_over_retrieval"), column("gain_over_retrieval_low"), column("gain_over_retrieval_high")
    ax_gain.plot(cycles, gain, "o-", label="gain over retrieval")
    ax_gain.fill_between(cycles, low, high, alpha=0.25, label="interval")
    ax_gain.plot(cycles, column("gain_over_prompting"), "s--", label="gain over prompting")
    ax_gain.axhline(0, color="#888", lw=1)
    ax_gain.set(ylabel="nats/token", title="The adapter's gain over the nights")
    ax_gain.legend()
    ax_cost.plot(cycles, column("cycle_cost_usd"), "o-", label="nightly cycle")
    ax_cost.plot(cycles, column("retrieval_daily_usd"), "s--", label="retrieval's extra tokens")
    ax_cost.set(ylabel="USD per day", title="Cost over the nights")
    ax_cost.legend()
    for a in (ax_gain, ax_cost):
        a.tick_params(axis="x", rotation=30)
    out["nights"] = html_report.img(fig, "gain and cost over the nights")

    be = report["break_even"]
    fig = html_report.figure(5.5, 3)
    ax = fig.subplots()
    top = max(be["requests_per_day"], be["break_even_requests_per_day"] or 0, 1) * 2
    volume = np.linspace(0, top, 50)
    ax.plot(volume, np.full_like(volume, be["fine_tuning_daily_usd"]), label="fine-tuning (one cycle a night)")
    ax.plot(volume, volume * be["retrieval_usd_per_request"], label="retrieval's extra prompt tokens")
    ax.axvline(be["requests_per_day"], color="#888", ls=":", label="the source's volume")
    if be["break_even_requests_per_day"]:
        ax.axvline(be["break_even_requests_per_day"], color="#c33", ls="--", label="break-even")
    ax.set(xlabel="requests per day", ylabel="USD per day", title="Daily cost against volume")
    ax.legend(fontsize=8)
    out["break_even"] = html_report.img(fig, "daily cost of each way against request volume")
    return out


def render_html(report: dict, history: list[dict]) -> str:
    return html_report.render("worth.html.j2", report=report, labels=LABELS,
                              figures=figures(report, history))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.model.worth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_report", type=Path, help="reports/eval.json, with its contenders")
    parser.add_argument("train_report", type=Path, help="reports/train.json")
    parser.add_argument("out", type=Path, help="the report (JSON); the page and the history go beside it")
    parser.add_argument("--cycle", required=True)
    parser.add_argument("--timings", type=Path, required=True,
                        help="JSON of seconds per step of the cycle (the flow passes its own)")
    parser.add_argument("--requests", type=int, required=True, help="requests the source logged that day")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = write(params.worth, params.seed, args.cycle, read_json(args.eval_report),
                   read_json(args.train_report), read_json(args.timings), args.requests, args.out)
    print(f"worth: {report['headline']}")


def write(p: params_mod.WorthParams, seed: int, cycle: str, evaluation: dict, train: dict,
          timings: dict[str, float], requests_per_day: int, out: Path) -> dict:
    """`run`, then write the report (out), its page (.html) and the history (.csv) beside it."""
    history_path = out.with_suffix(".csv")
    history = read_history(history_path)
    report = run(p, seed, cycle, evaluation, train, timings, requests_per_day, history)
    write_json(out, report)
    out.with_suffix(".html").write_text(render_html(report, history))
    write_history(history_path, [*[h for h in history if h["cycle"] != cycle], history_row(report)])
    return report


if __name__ == "__main__":
    main()
