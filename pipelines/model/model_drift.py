"""model_drift: how the model itself moves from version to version.

Two views, written for every cycle to reports/model_drift.json and reports/model_drift.html:

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

import html

from pipelines.common import params as params_mod
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
    """Build the model-drift report of one cycle.

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
              "max_output_kl": p.max_output_kl, "trends": trends, "alarm": bool(alarms),
              "alarms": alarms}
    write_json(out_json, report)
    out_html.write_text(render_html(report))
    return report


def sparkline(values: list[float], width: int = 240, height: int = 48) -> str:
    """An inline SVG line through `values` (the last point, the candidate, drawn larger)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / max(len(values) - 1, 1)
    xy = [(i * step, height - 4 - (v - lo) / span * (height - 8)) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    x, y = xy[-1]
    return (f"<svg width='{width + 8}' height='{height}'><polyline points='{line}' fill='none' "
            f"stroke='#36c' stroke-width='2'/><circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='#c33'/></svg>")


def render_html(report: dict) -> str:
    """A page a person reads: the divergence, then one line chart per metric over versions."""
    d = report.get("divergence") or {}
    kl = d.get("kl_champion_to_candidate")
    divergence = (f"<p>No champion to compare with: the first adapter.</p>" if not d else
                  f"<table><tr><td>KL(champion &#8214; candidate), per answer token</td>"
                  f"<td class='{'bad' if 'output_divergence' in report['alarms'] else 'ok'}'>{kl}</td>"
                  f"<td>alarm above {report['max_output_kl']}</td></tr>"
                  f"<tr><td>Greedy answers to golden prompts that are identical</td>"
                  f"<td>{d.get('generation_agreement')}</td><td></td></tr></table>")
    rows = []
    for name, t in report["trends"].items():
        values = [pt["value"] for pt in t["points"]] + ([t["candidate"]] if t["candidate"] is not None else [])
        versions = [pt["version"] for pt in t["points"]] + [report["version"]]
        change = "" if t["change"] is None else f"{t['change']:+.1%} vs version {t['reference']['version']}"
        rows.append(f"<tr class='{'bad' if t['alarm'] else 'ok'}'><td>{html.escape(name)}</td>"
                    f"<td>{sparkline(values)}</td><td>{t['candidate']}</td><td>{html.escape(change)}</td>"
                    f"<td>{html.escape(', '.join(versions[-8:]))}</td><td>{'ALARM' if t['alarm'] else 'ok'}</td></tr>")
    verdict = ("DRIFT: " + ", ".join(report["alarms"])) if report["alarm"] else "no model drift"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>nightshift model drift {html.escape(report['cycle'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}td,th{{padding:.3em .8em;text-align:left}}
tr.bad,td.bad{{background:#fdd}}tr.ok,td.ok{{background:#efe}}</style></head><body>
<h1>Model drift, cycle {html.escape(report['cycle'])} (version {html.escape(report['version'])}): {html.escape(verdict)}</h1>
<h2>Candidate against champion</h2>{divergence}
<h2>Metrics over passed versions (red dot: this candidate)</h2>
<table><tr><th>metric</th><th>trend</th><th>candidate</th><th>change</th><th>versions</th><th></th></tr>
{''.join(rows)}</table></body></html>
"""
