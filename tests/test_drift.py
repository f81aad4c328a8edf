"""Drift on embeddings from the real all-MiniLM-L6-v2 encoder, offline."""

import datetime as dt
import json
import random

import pytest

from pipelines.common.embedding import EmbeddingCache
from pipelines.data import drift
from pipelines.samples import sample_logs


def batch(seed: int, n: int, topics=sample_logs.TOPICS) -> list[dict]:
    rng = random.Random(seed)
    return [sample_logs.make_record(rng, dt.date(2026, 1, 5), i, rng.choice(topics)) for i in range(n)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return EmbeddingCache(tmp_path_factory.mktemp("emb"))


def test_a_batch_like_the_reference_raises_no_alarm(params, cache):
    report = drift.compare(params.drift, batch(1, 150), batch(2, 150), params.seed, cache)
    assert not report["alarm"], report
    assert report["embedding"]["p_value"] >= params.drift.alpha


def test_a_shift_to_other_topics_is_detected_in_embeddings_and_topic_mix(params, cache):
    reference = batch(1, 150, topics=["billing", "shipping", "returns"])
    shifted = batch(3, 150, topics=["account", "technical", "subscription"])
    report = drift.compare(params.drift, reference, shifted, params.seed, cache)
    assert {"embedding", "topic_mix"} <= set(report["alarms"])
    assert report["embedding"]["p_value"] < params.drift.alpha and report["topic_tvd"] > 0.9


def test_without_enough_history_nothing_is_compared(params, cache):
    report = drift.compare(params.drift, [], batch(1, 100), params.seed, cache)
    assert not report["alarm"] and "not compared" in report["note"]


def test_the_stage_writes_json_and_a_readable_html_page(tmp_path, params, monkeypatch):
    from pipelines.common.records import write_jsonl

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "clean.jsonl", batch(3, 80, topics=["technical"]))
    write_jsonl(tmp_path / "buffer.jsonl", batch(1, 80, topics=["billing"]))
    report = drift.run(params.drift, params.seed, "2026-01-06", tmp_path / "clean.jsonl",
                       tmp_path / "buffer.jsonl", tmp_path / "drift.json", tmp_path / "drift.html")
    assert json.loads((tmp_path / "drift.json").read_text())["alarm"] is True == report["alarm"]
    page = (tmp_path / "drift.html").read_text()
    assert "DRIFT" in page and "Topic mix" in page and "technical" in page
    assert page.count('<img src="data:image/png;base64,') == 2  # the plots, inline
    assert (tmp_path / ".cache/embeddings/all-MiniLM-L6-v2.npz").exists()  # cached for next time


def test_the_page_escapes_text_and_shows_alarms_and_plots(tmp_path):
    import numpy as np

    report = {"reference_records": 40, "current_records": 50, "alarm": True,
              "alarms": ["embedding", "topic_mix"],
              "embedding": {"mmd2": 0.0123, "p_value": 0.005, "alpha": 0.01, "samples": [40, 50]},
              "length_psi": 0.0456, "oov_rate": 0.0789, "topic_tvd": 0.75,
              "topic_mix": {"reference": {"billing": 1.0},
                            "current": {"<script>alert(1)</script>": 0.75, "billing $5": 0.25}}}
    rng = np.random.default_rng(0)
    samples = {"reference_lengths": rng.integers(10, 200, 40), "current_lengths": rng.integers(10, 400, 50),
               "null": rng.normal(0, 0.002, 200)}
    page = drift.render_html(report, "2026-01-06", samples)
    assert "Input drift, cycle 2026-01-06: DRIFT: embedding, topic_mix" in page
    assert page.count(">ALARM<") == 2 and "p = 0.005" in page and "0.0456" in page and "7.9%" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "billing $5" in page and "75%" in page
    assert page.count('<img src="data:image/png;base64,') == 2
    drift.write_plot_data(tmp_path / "lengths.csv", samples)  # for `dvc plots`
    lines = (tmp_path / "lengths.csv").read_text().splitlines()
    assert lines[0] == "length,reference,batch" and len(lines) == 31
