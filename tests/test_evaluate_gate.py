import datetime as dt
import math
import random

import pytest

from pipelines import evaluate, gate, sample_logs, train
from pipelines.records import write_jsonl


def verdict(params, candidate, champion=None, base=4.0, **extra):
    return gate.decide(params.gate, {
        "candidate": {"eval_loss": candidate, **extra},
        "champion": None if champion is None else {"eval_loss": champion},
        "base": {"eval_loss": base}})


def test_first_candidate_must_beat_the_base_model(params):
    assert verdict(params, 3.5)["passed"]
    rejected = verdict(params, 4.2)
    assert not rejected["passed"] and "base model" in rejected["reasons"][0]


def test_regression_beyond_the_change_threshold_is_rejected_with_the_numbers(params):
    assert verdict(params, 3.0, champion=3.0 / (1 + params.gate.max_regression / 2))["passed"]
    rejected = verdict(params, 3.3, champion=3.0)
    assert not rejected["passed"] and "champion 3.0000" in rejected["reasons"][0]


@pytest.mark.parametrize("loss", [None, math.nan, math.inf])
def test_nan_or_missing_loss_never_passes(params, loss):
    assert not verdict(params, loss, champion=3.0)["passed"]


def test_value_threshold_applies_even_without_a_baseline(params):
    assert not verdict(params, params.gate.max_eval_loss + 1, base=None)["passed"]


def test_evaluate_scores_candidate_champion_and_base_and_survives_a_corrupt_adapter(
        tmp_path, tiny_base, params, replace):
    rng = random.Random(1)
    records = [sample_logs.make_record(rng, dt.date(2026, 1, 5), i, sample_logs.TOPICS[i % 6])
               for i in range(40)]
    write_jsonl(tmp_path / "train.jsonl", records[:32])
    write_jsonl(tmp_path / "eval.jsonl", records[32:])
    tp = replace(params.train, epochs=3)
    p = params.evaluate
    train.run(tp, tiny_base, params.seed, tmp_path / "none", tmp_path / "train.jsonl", tmp_path / "cand")

    report = evaluate.run(p, tp, tiny_base, params.seed, tmp_path / "cand", tmp_path / "none",
                          tmp_path / "eval.jsonl")
    assert report["examples"] == 8 and report["champion"] is None
    assert report["candidate"]["eval_loss"] < report["base"]["eval_loss"]

    (tmp_path / "cand/adapter_model.safetensors").write_bytes(b"not a tensor file")
    broken = evaluate.run(p, tp, tiny_base, params.seed, tmp_path / "cand", tmp_path / "none",
                          tmp_path / "eval.jsonl")
    assert broken["candidate"]["eval_loss"] is None and "error" in broken["candidate"]
    assert not gate.decide(params.gate, broken)["passed"]
