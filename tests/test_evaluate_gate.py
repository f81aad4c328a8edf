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


def test_a_candidate_trained_on_shuffled_responses_is_rejected_and_a_healthy_one_passes(
        tmp_path, tiny_base, params, replace):
    rng = random.Random(2)
    records = [sample_logs.make_record(rng, dt.date(2026, 1, 5), i, sample_logs.TOPICS[i % 6])
               for i in range(144)]
    earlier, new, held_out = records[:48], records[48:120], records[120:]
    answers = [r["messages"][-1]["content"] for r in new]
    random.Random(3).shuffle(answers)
    corrupted = [{**r, "messages": r["messages"][:-1] + [{"role": "assistant", "content": a}]}
                 for r, a in zip(new, answers)]
    for name, rows in [("earlier", earlier), ("new", new), ("corrupted", corrupted),
                       ("eval", held_out)]:
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    tp = replace(params.train, epochs=3)
    train.run(tp, tiny_base, params.seed, tmp_path / "none", tmp_path / "earlier.jsonl",
              tmp_path / "champion")

    verdicts = {}
    for name in ("new", "corrupted"):
        train.run(tp, tiny_base, params.seed, tmp_path / "champion", tmp_path / f"{name}.jsonl",
                  tmp_path / f"cand-{name}")
        report = evaluate.run(params.evaluate, tp, tiny_base, params.seed, tmp_path / f"cand-{name}",
                              tmp_path / "champion", tmp_path / "eval.jsonl")
        verdicts[name] = gate.decide(params.gate, report)
    assert verdicts["new"]["passed"], verdicts["new"]
    assert not verdicts["corrupted"]["passed"]
    assert "champion" in verdicts["corrupted"]["reasons"][0]


def test_a_collapsed_pairing_margin_is_rejected_even_when_the_loss_improved(params):
    evaluation = {"candidate": {"eval_loss": 3.0, "pairing_margin": 0.1},
                  "champion": {"eval_loss": 3.2, "pairing_margin": 0.25}, "base": {"eval_loss": 4.0}}
    verdict = gate.decide(params.gate, evaluation)
    assert not verdict["passed"]
    assert "pairing margin 0.1000 vs champion 0.2500" in verdict["reasons"][0]


def test_the_first_adapter_is_not_held_to_the_base_models_pairing_margin(params):
    evaluation = {"candidate": {"eval_loss": 3.0, "pairing_margin": 0.1},
                  "champion": None, "base": {"eval_loss": 4.0, "pairing_margin": 0.4}}
    assert gate.decide(params.gate, evaluation)["passed"]
