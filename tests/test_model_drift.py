"""The model-drift report: the trend alarm, and a page with its chart, its alarms and escaped text."""

import csv
import json

from pipelines.model import model_drift


def history(values: list[float], metric="new.eval_loss") -> list[dict]:
    return [{"version": str(i + 1), "cycle": f"2026-01-{i + 1:02d}", "gate": "passed",
             "metrics": {metric: v}} for i, v in enumerate(values)]


def evaluation(loss: float, kl: float | None) -> dict:
    sets = {s: {"eval_loss": loss} for s in ("new", "golden", "replay", "anchor")}
    return {"candidate": sets,
            "divergence": None if kl is None else {"kl_champion_to_candidate": kl,
                                                   "generation_agreement": 0.75}}


def test_a_creeping_metric_and_a_large_divergence_raise_alarms_shown_with_a_chart(tmp_path, params):
    p = params.model_drift
    report = model_drift.run(p, "2026-01-09", evaluation(2.0, p.max_output_kl * 2), "9",
                             history([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7]),
                             tmp_path / "model_drift.json", tmp_path / "model_drift.html")
    assert {"output_divergence", "trend:new.eval_loss"} <= set(report["alarms"])
    assert json.loads((tmp_path / "model_drift.json").read_text())["alarms"] == report["alarms"]
    page = (tmp_path / "model_drift.html").read_text()
    assert "Model drift, cycle 2026-01-09 (version 9): DRIFT" in page
    assert "output_divergence" in page and "trend:new.eval_loss" in page and "ALARM" in page
    assert str(p.max_output_kl * 2) in page and "0.75" in page  # the KL and the agreement
    assert "+53.8% vs version 4" in page  # the change against the version trend_window back
    assert '<img src="data:image/png;base64,' in page and "<polyline" not in page
    with (tmp_path / "model_drift.csv").open() as f:  # the trend for `dvc plots`
        rows = list(csv.DictReader(f))
    assert [r["version"] for r in rows] == [str(v) for v in range(1, 10)]
    assert rows[-1]["new_eval_loss"] == "2.0" and rows[0]["golden_eval_loss"] == ""


def test_the_first_adapter_has_no_champion_and_no_chart(tmp_path, params):
    report = model_drift.run(params.model_drift, "2026-01-05", evaluation(2.0, None), "1", [],
                             tmp_path / "model_drift.json", tmp_path / "model_drift.html")
    assert not report["alarm"]
    page = (tmp_path / "model_drift.html").read_text()
    assert "no model drift" in page and "No champion to compare with" in page
    assert "<img" not in page and "No earlier passed versions" in page  # one point: no chart


def test_text_on_the_page_is_html_escaped(tmp_path, params):
    report = {"cycle": "<script>alert(1)</script>", "version": "2", "divergence": None,
              "max_output_kl": 0.5, "max_trend_increase": 0.1, "alarm": False, "alarms": [],
              "trends": {"<b>loss</b>": {"points": [{"version": "1", "cycle": None, "value": 1.0}],
                                         "candidate": 1.0, "reference": None, "change": None,
                                         "alarm": False}}}
    page = model_drift.render_html(report)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>" not in page and "&lt;b&gt;loss&lt;/b&gt;" in page
    assert '<img src="data:image/png;base64,' in page
