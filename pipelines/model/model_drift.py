"""model_drift: how the model itself moves from version to version.

Two views, written for every cycle to reports/model_drift.json and reports/model_drift.html (a
page with a chart per tracked metric), the metric trend also to reports/model_drift.csv for
`dvc plots` (dvc.yaml):

- output divergence of the candidate from the champion (measured by evaluate): the mean KL of
  their next-token distributions on the new and golden sets, and how often their greedy answers
  to golden prompts agree. A large jump means tonight's adapter answers differently from
  production, whatever the loss says.
- each tracked eval metric over the registered versions (their MLflow run metrics), the candidate
  last. The gate's change thresholds compare with the champion only, so a metric may creep a
  little every night (2% a night is 15% a week); the trend alarm compares the candidate with the
  passed version `trend_window` versions back.

The nightly flow calls `run` after registration (the history lives in the registry) and logs the
report to the version's MLflow run.
"""

from __future__ import annotations

import csv
from pathlib import Path

from markupsafe import Markup

from pipelines.common import params as params_mod
from pipelines.common import report as html_report
from pipelines.common.metrics import metric
from pipelines.common.records import write_json


def trend(p: params_mod.ModelDriftParams, history: list[dict], candidate: dict) -> dict:
    """Per tracked metric: the values over passed versions plus the candidate, and the alarm."""
    passed = [h for h in history if h.get("gate") == "passed" and h["version"] != candidate["version"]]
    out = {}
    for name in p.trend_metrics:
        points = [{"version": h["version"], "cycle": h.get("cycle"), "value": h["metrics"].get(name)}
                  for h in passed if h["metrics"].get(name) is not None]
        value = candidate["metrics"].get(name)
        entry = {"points": points, "candidate": value, "reference": None, "change": None,
                 "alarm": False}
        if value is not None and len(points) >= p.trend_window:
            reference = points[-p.trend_window]
            change = (value - reference["value"]) / abs(reference["value"]) if reference["value"] else 0.0
            entry.update(reference=reference, change=round(change, 5),
                         alarm=change > p.max_trend_increase)
        out[name] = entry
    return out


def run(p: params_mod.ModelDriftParams, cycle: str, evaluation: dict, version: str,
        history: list[dict], out_json, out_html) -> dict:
    """Build the model-drift report of one cycle; write it as JSON and HTML, and its metric trend
    as CSV beside the JSON (reports/model_drift.csv, charted by `dvc plots`: dvc.yaml).

    Args:
        p: the `model_drift` section of params.yaml.
        evaluation: reports/eval.json; version: the candidate's registered version.
        history: every registered version, oldest first: {"version", "cycle", "gate", "metrics"}.
    Returns:
        {"cycle", "version", "divergence", "trends", "alarm", "alarms"}
    """
    divergence = evaluation.get("divergence")
    candidate = {"version": version,
                 "metrics": {name: metric(evaluation.get("candidate"), name) for name in p.trend_metrics}}
    trends = trend(p, history, candidate)
    alarms = []
    kl = (divergence or {}).get("kl_champion_to_candidate")
    if kl is not None and kl > p.max_output_kl:
        alarms.append("output_divergence")
    alarms += [f"trend:{name}" for name, t in trends.items() if t["alarm"]]
    report = {"cycle": cycle, "version": version, "divergence": divergence,
              "max_output_kl": p.max_output_kl, "max_trend_increase": p.max_trend_increase,
              "trends": trends, "alarm": bool(alarms), "alarms": alarms}
    write_json(out_json, report)
    out_html.write_text(render_html(report))
    write_trend_csv(Path(out_json).with_suffix(".csv"), report)
    return report


def series(report: dict, name: str) -> list[tuple[str, float]]:
    """(version, value) of metric `name` over the passed versions, the candidate last."""
    t = report["trends"][name]
    points = [(pt["version"], pt["value"]) for pt in t["points"]]
    return points + ([(report["version"], t["candidate"])] if t["candidate"] is not None else [])


def write_trend_csv(path: Path, report: dict) -> None:
    """One row per version (the candidate last), one column per trend metric with `.` written `_`
    (Vega, which draws `dvc plots`, reads a dot in a field name as a nested field)."""
    names = list(report["trends"])
    rows: dict[str, dict] = {}
    for name in names:
        for v, value in series(report, name):
            rows.setdefault(v, {"version": int(v)})[name.replace(".", "_")] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["version"] + [n.replace(".", "_") for n in names])
        writer.writeheader()
        writer.writerows(sorted(rows.values(), key=lambda r: r["version"]))


def trend_figure(report: dict) -> Markup | None:
    """One line chart per trend metric over the passed versions: the candidate a red (alarm) or
    blue dot, the trend alarm's threshold a dashed line where there is a reference version. None
    before there are passed versions to compare with."""
    names = [n for n in report["trends"] if len(series(report, n)) > 1]
    if not names:
        return None
    cols = min(len(names), 2)
    rows = -(-len(names) // cols)
    fig = html_report.figure(5 * cols, 2.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        t = report["trends"][name]
        points = series(report, name)
        x = [int(v) for v, _ in points]
        ax.plot(x, [value for _, value in points], marker="o", ms=3, color="#36c")
        if t["candidate"] is not None:
            ax.plot(x[-1], t["candidate"], "o", ms=8, color="#c33" if t["alarm"] else "#36c",
                    label=f"candidate (version {report['version']})")
        if t["reference"] is not None:
            ref = t["reference"]["value"]
            limit = ref + abs(ref) * report["max_trend_increase"]  # where `trend` raises the alarm
            ax.axhline(limit, color="#c33", ls="--", lw=1,
                       label=f"alarm above (version {t['reference']['version']} + "
                             f"{report['max_trend_increase']:.0%})")
        ax.set(title=html_report.label(name), xlabel="version")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return html_report.img(fig, "tracked metrics over the passed versions, the candidate last")


def render_html(report: dict) -> str:
    """A page a person reads: the divergence, then one line chart per metric over versions."""
    trends = []
    for name, t in report["trends"].items():
        versions = [pt["version"] for pt in t["points"]] + [report["version"]]
        change = "" if t["change"] is None else f"{t['change']:+.1%} vs version {t['reference']['version']}"
        trends.append({"name": name, "candidate": t["candidate"], "change": change,
                       "versions": ", ".join(versions[-8:]), "alarm": t["alarm"]})
    verdict = ("DRIFT: " + ", ".join(report["alarms"])) if report["alarm"] else "no model drift"
    return html_report.render("model_drift.html.j2", report=report, verdict=verdict,
                              divergence=report.get("divergence") or {}, trends=trends,
                              figure=trend_figure(report))
