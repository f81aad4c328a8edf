"""reports/rebase.html: the rebase's page, for the person deciding whether the line moves.

Both models side by side, each adapter on its own base and each base bare: bits per byte of the
answer text on every evaluation set (one chart), the generation checks, how far their answers
to the same golden prompts are apart, the data the fresh adapter learned from, and the gate.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from pipelines.common import report as html_report
from pipelines.common.metrics import SETS

MODELS = {"candidate": "rebased adapter (new base)", "champion": "@champion (its base)",
          "base": "new base, bare", "champion_base": "champion's base, bare"}
COLOURS = {"candidate": "#36c", "champion": "#c63", "base": "#9bd", "champion_base": "#dba"}
SAMPLES = 8  # answers shown side by side: enough to see the style of each, short enough to read


def bpb_figure(report: dict) -> Markup | None:
    """Grouped bars: bits per byte of each model on each set (lower is better). None when no
    model has a score."""
    scores = report["bits_per_byte"]
    models = [m for m in MODELS if any(v is not None for v in (scores.get(m) or {}).values())]
    if not models:
        return None
    fig = html_report.figure(7, 3)
    ax = fig.subplots()
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        xs = [j + i * width for j in range(len(SETS))]
        ys = [scores[model].get(s) or 0.0 for s in SETS]
        ax.bar(xs, ys, width, label=MODELS[model], color=COLOURS[model])
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(SETS))], list(SETS))
    ax.set(ylabel="bits per byte (lower is better)")
    ax.legend(fontsize="small")
    return html_report.img(fig, "bits per byte of the answer text on each set, per model")


def samples(report: dict) -> list[dict]:
    """The first answers of both adapters to the same golden prompts, paired by record id."""
    evaluation = report["evaluation"]

    def answers(model: str) -> dict:
        entry = evaluation.get(model) or {}
        return {s["id"]: s["answer"] for s in (entry.get("generations") or {}).get("samples", [])}

    new, old = answers("candidate"), answers("champion")
    return [{"id": i, "candidate": new[i], "champion": old.get(i)} for i in list(new)[:SAMPLES]]


def render(report: dict) -> str:
    return html_report.render("rebase.html.j2", report=report, models=MODELS, sets=SETS,
                              figure=bpb_figure(report), samples=samples(report),
                              divergence=report.get("divergence") or {})


def write(report: dict, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    return out
