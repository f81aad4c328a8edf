import datetime as dt
import math
import random

import pytest

from pipelines.model import evaluate, gate, train

from pipelines.privacy import redact

from pipelines.samples import sample_logs
from pipelines.common.records import read_jsonl, write_jsonl
from pipelines.common import metrics
from tests.conftest import ROOT

GOLDEN = ROOT / "data/golden/golden.jsonl"
ANCHOR = ROOT / "data/anchor/anchor.jsonl"


def entry(new_loss, **sets):
    """A model's eval entry: new-data loss plus other sets' metrics, e.g. golden={"eval_loss": 2}."""
    return {"new": {"eval_loss": new_loss}, **sets}


def verdict(params, candidate, champion=None, base=4.0, **sets):
    return gate.decide(params.gate, {
        "candidate": entry(candidate, **sets),
        "champion": None if champion is None else entry(champion),
        "base": entry(base)})


def records(seed, n, day=dt.date(2026, 1, 5)):
    rng = random.Random(seed)
    return [sample_logs.make_record(rng, day, i, sample_logs.TOPICS[i % 6]) for i in range(n)]


def sets_for(held_out, golden=GOLDEN, anchor=ANCHOR):
    return {"new": held_out, "golden": list(read_jsonl(golden)), "anchor": list(read_jsonl(anchor)),
            "replay": []}


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


@pytest.mark.parametrize("text,kinds", [
    ("Write to jane.doe@example.com today", ["EMAIL_ADDRESS"]),
    ("call +1 415 555 0132 now", ["PHONE_NUMBER"]),
    ("card 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("IBAN DE89 3704 0044 0532 0130 00", ["IBAN_CODE"]),
    ("my ssn 123-45-6789", ["US_SSN"]),
    ("server 10.0.12.7 is down", ["IP_ADDRESS"]),
    ("use AKIAABCDEFGHIJKLMNOP", ["API_KEY"]),
    ("Hi <PERSON_1>, order #123456 costs $12.50; call <PHONE_NUMBER_1> within 5 days", []),
])
def test_pii_shapes_flags_personal_data_but_not_placeholders_or_order_numbers(text, kinds):
    found = evaluate.pii_shapes(text)
    assert set(kinds) <= set(found) and bool(found) == bool(kinds)  # a card also has a phone's shape


def test_evaluate_scores_every_set_for_candidate_champion_and_base_and_survives_a_corrupt_adapter(
        tmp_path, tiny_base, params, replace):
    rows = records(1, 40)
    write_jsonl(tmp_path / "train.jsonl", rows[:32])
    tp = replace(params.train, epochs=3)
    p = replace(params.evaluate, generation_examples=6)
    train.run(tp, tiny_base, params.seed, tmp_path / "none", tmp_path / "train.jsonl", tmp_path / "cand")
    sets = sets_for(rows[32:])
    sets["replay"] = rows[:4]

    report = evaluate.run(p, tp, tiny_base, params.seed, tmp_path / "cand", tmp_path / "none", sets)
    assert report["examples"] == {"new": 8, "golden": 36, "replay": 4, "anchor": 36}
    assert report["champion"] is None and report["divergence"] is None
    for name in metrics.SETS:
        assert math.isfinite(report["candidate"][name]["eval_loss"])
    assert report["candidate"]["new"]["eval_loss"] < report["base"]["new"]["eval_loss"]
    generations = report["candidate"]["generations"]
    assert generations["answers"] == 6 and len(generations["samples"]) == 6
    assert generations["format_checked"] >= 1 and 0 <= generations["format_pass_rate"] <= 1

    (tmp_path / "cand/adapter_model.safetensors").write_bytes(b"not a tensor file")
    broken = evaluate.run(p, tp, tiny_base, params.seed, tmp_path / "cand", tmp_path / "none", sets)
    assert "error" in broken["candidate"] and metrics.metric(broken["candidate"], "new.eval_loss") is None
    assert not gate.decide(params.gate, broken)["passed"]


def test_identical_adapters_do_not_diverge_and_a_retrained_one_does(tmp_path, tiny_base, params, replace):
    rows = records(4, 60)
    write_jsonl(tmp_path / "a.jsonl", rows[:24])
    write_jsonl(tmp_path / "b.jsonl", rows[24:48])
    tp = replace(params.train, epochs=3)
    p = replace(params.evaluate, generation_examples=6)
    train.run(tp, tiny_base, params.seed, tmp_path / "none", tmp_path / "a.jsonl", tmp_path / "champ")
    train.run(tp, tiny_base, params.seed, tmp_path / "champ", tmp_path / "b.jsonl", tmp_path / "cand")

    same = evaluate.run(p, tp, tiny_base, params.seed, tmp_path / "champ", tmp_path / "champ",
                        sets_for(rows[48:]))
    assert same["divergence"]["kl_champion_to_candidate"] == pytest.approx(0, abs=1e-6)
    assert same["divergence"]["generation_agreement"] == 1.0
    moved = evaluate.run(p, tp, tiny_base, params.seed, tmp_path / "cand", tmp_path / "champ",
                         sets_for(rows[48:]))
    assert moved["divergence"]["kl_champion_to_candidate"] > 1e-3
    assert moved["champion"]["new"] == same["champion"]["new"]  # the champion scores the same


def test_an_adapter_that_learned_to_emit_an_email_is_rejected_by_the_behaviour_check(
        tmp_path, tiny_base, params, replace):
    # Redacted as the pipeline's records are (the golden prompts the generations answer are),
    # with one address that got through added to the answers.
    redactor = redact.Redactor(params.redact)
    rows = [redactor.redact_record(r) for r in records(5, 72)]
    leaky = [{**r, "messages": r["messages"][:-1] + [{
        "role": "assistant", "content": "Email me at jane@example.com. " + r["messages"][-1]["content"]}]}
        for r in rows[:48]]
    write_jsonl(tmp_path / "leaky.jsonl", leaky)
    # Plain LoRA at a higher rate: the behaviour check is the same for both, and this learns the
    # address in seconds.
    tp = replace(params.train, epochs=10, quantization="none", learning_rate=0.01)
    train.run(tp, tiny_base, params.seed, tmp_path / "none", tmp_path / "leaky.jsonl", tmp_path / "cand")
    report = evaluate.run(replace(params.evaluate, generation_examples=8), tp, tiny_base, params.seed,
                          tmp_path / "cand", tmp_path / "none", sets_for(rows[48:]))
    leaked = report["candidate"]["generations"]
    assert leaked["pii_rate"] > 0, leaked["samples"]
    assert report["base"]["generations"]["pii_rate"] == 0
    v = gate.decide(params.gate, report)
    assert not v["passed"] and any("generations.pii_rate" in r for r in v["reasons"])


def test_a_candidate_trained_on_shuffled_responses_is_rejected_and_a_healthy_one_passes(
        tmp_path, tiny_base, params, replace):
    rows = records(2, 144)
    earlier, new, held_out = rows[:48], rows[48:120], rows[120:]
    answers = [r["messages"][-1]["content"] for r in new]
    random.Random(3).shuffle(answers)
    corrupted = [{**r, "messages": r["messages"][:-1] + [{"role": "assistant", "content": a}]}
                 for r, a in zip(new, answers)]
    for name, r in [("earlier", earlier), ("new", new), ("corrupted", corrupted)]:
        write_jsonl(tmp_path / f"{name}.jsonl", r)
    tp = replace(params.train, epochs=3)
    train.run(tp, tiny_base, params.seed, tmp_path / "none", tmp_path / "earlier.jsonl",
              tmp_path / "champion")
    sets = sets_for(held_out)
    sets["replay"] = earlier[:24]

    verdicts = {}
    for name in ("new", "corrupted"):
        train.run(tp, tiny_base, params.seed, tmp_path / "champion", tmp_path / f"{name}.jsonl",
                  tmp_path / f"cand-{name}")
        report = evaluate.run(replace(params.evaluate, generation_examples=6), tp, tiny_base,
                              params.seed, tmp_path / f"cand-{name}", tmp_path / "champion", sets)
        verdicts[name] = gate.decide(params.gate, report)
    assert verdicts["new"]["passed"], verdicts["new"]
    assert not verdicts["corrupted"]["passed"]
    assert any("champion" in r for r in verdicts["corrupted"]["reasons"])
