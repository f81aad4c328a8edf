"""The evaluate stage (pipelines/model/evaluate.py): every set scored for candidate, champion and
base; divergence; and the gate's verdict on candidates evaluated for real."""
import datetime as dt
import math
import random

import pytest

from pipelines.common import metrics
from pipelines.common.records import read_jsonl, write_jsonl
from pipelines.model import evaluate, gate, train
from pipelines.privacy import redact
from pipelines.samples import sample_logs
from tests.conftest import ROOT

GOLDEN = ROOT / "data/golden/golden.jsonl"
ANCHOR = ROOT / "data/anchor/anchor.jsonl"



def records(seed, n, day=dt.date(2026, 1, 5)):
    rng = random.Random(seed)
    return [sample_logs.make_record(rng, day, i, sample_logs.TOPICS[i % 6]) for i in range(n)]


def sets_for(held_out, golden=GOLDEN, anchor=ANCHOR):
    return {"new": held_out, "golden": list(read_jsonl(golden)), "anchor": list(read_jsonl(anchor)),
            "replay": []}


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
