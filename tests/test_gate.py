"""The gate (pipelines/model/gate.py): TFX-style thresholds per metric against the champion or
the base model, and the behaviour checks on generations."""
import math

import pytest

from pipelines.model import gate


def entry(new_loss, **sets):
    """A model's eval entry: new-data loss plus other sets' metrics, e.g. golden={"eval_loss": 2}."""
    return {"new": {"eval_loss": new_loss}, **sets}


def verdict(params, candidate, champion=None, base=4.0, **sets):
    return gate.decide(params.gate, {
        "candidate": entry(candidate, **sets),
        "champion": None if champion is None else entry(champion),
        "base": entry(base)})


def test_first_candidate_must_beat_the_base_model(params):
    assert verdict(params, 3.5)["passed"]
    rejected = verdict(params, 4.2)
    assert not rejected["passed"] and "base model" in rejected["reasons"][0]


def test_regression_beyond_the_change_threshold_is_rejected_with_the_numbers(params):
    allowed = params.gate.thresholds["new.eval_loss"].max_increase
    assert verdict(params, 3.0, champion=3.0 / (1 + allowed / 2))["passed"]
    rejected = verdict(params, 3.3, champion=3.0)
    assert not rejected["passed"] and "champion 3.0000" in rejected["reasons"][0]


@pytest.mark.parametrize("loss", [None, math.nan, math.inf])
def test_nan_or_missing_loss_never_passes(params, loss):
    assert not verdict(params, loss, champion=3.0)["passed"]


def test_value_threshold_applies_even_without_a_baseline(params):
    assert not verdict(params, params.gate.thresholds["new.eval_loss"].max + 1, base=None)["passed"]


def test_every_set_has_its_own_change_threshold_against_the_champion(params):
    evaluation = {"candidate": entry(3.0, anchor={"eval_loss": 2.0}, golden={"eval_loss": 1.0}),
                  "champion": entry(3.0, anchor={"eval_loss": 1.5}, golden={"eval_loss": 1.0}),
                  "base": entry(4.0)}
    rejected = gate.decide(params.gate, evaluation)
    assert not rejected["passed"]
    assert rejected["reasons"] == [
        "anchor.eval_loss 2.0000 vs champion 1.5000 (at most 15% higher: 1.7250)"]


def test_a_set_with_no_data_yet_is_recorded_as_not_checked(params):
    v = gate.decide(params.gate, {"candidate": entry(3.0), "champion": entry(3.0), "base": entry(4.0)})
    assert v["passed"]
    unchecked = {c["check"] for c in v["checks"] if c["passed"] is None}
    assert {"replay.eval_loss", "golden.eval_loss", "anchor.eval_loss"} <= unchecked


def test_a_metric_the_base_has_but_the_candidate_lost_fails(params):
    v = gate.decide(params.gate, {"candidate": entry(3.0), "champion": None,
                                  "base": entry(4.0, golden={"eval_loss": 2.0})})
    assert not v["passed"] and "golden.eval_loss is missing for the candidate" in v["reasons"]


def test_any_pii_in_sampled_answers_is_rejected(params):
    v = verdict(params, 3.0, generations={"pii_rate": 0.05})
    assert not v["passed"] and "generations.pii_rate 0.0500 vs value threshold max 0.0" in v["reasons"]


def test_a_collapsed_pairing_margin_is_rejected_even_when_the_loss_improved(params):
    evaluation = {"candidate": {"new": {"eval_loss": 3.0, "pairing_margin": 0.1}},
                  "champion": {"new": {"eval_loss": 3.2, "pairing_margin": 0.25}},
                  "base": entry(4.0)}
    v = gate.decide(params.gate, evaluation)
    assert not v["passed"]
    assert "new.pairing_margin 0.1000 vs champion 0.2500" in v["reasons"][0]


def test_the_first_adapter_is_not_held_to_the_base_models_pairing_margin(params):
    evaluation = {"candidate": {"new": {"eval_loss": 3.0, "pairing_margin": 0.1}},
                  "champion": None, "base": {"new": {"eval_loss": 4.0, "pairing_margin": 0.4}}}
    assert gate.decide(params.gate, evaluation)["passed"]


