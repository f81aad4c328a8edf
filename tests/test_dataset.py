import json

import pytest

from pipelines.common import params as params_mod
from pipelines.common.records import read_jsonl, write_jsonl
from pipelines.data import dataset
from pipelines.model import evaluate


def rec(i, text=None):
    return {"id": f"r{i}", "timestamp": "2026-01-05T10:00:00Z", "feedback": None, "metadata": {},
            "messages": [{"role": "user", "content": text or f"q{i}"},
                         {"role": "assistant", "content": "a"}]}


def test_duplicates_by_id_and_by_content_are_dropped_and_counted(tmp_path, params):
    records = [rec(i) for i in range(50)] + [rec(3), rec(99, text="q4")]
    write_jsonl(tmp_path / "clean.jsonl", records)
    report = dataset.run(params.dataset, params.replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "none.jsonl", tmp_path / "out")
    assert report["duplicates"] == 2 and report["unique"] == 50
    assert report["train_new"] + report["eval"] == 50


def test_split_is_stable_across_runs(tmp_path, params):
    write_jsonl(tmp_path / "clean.jsonl", [rec(i) for i in range(200)])
    for out in ("a", "b"):
        dataset.run(params.dataset, params.replay, params.seed, "2026-01-05",
                    tmp_path / "clean.jsonl", tmp_path / "none.jsonl", tmp_path / out)
    assert (tmp_path / "a/eval.jsonl").read_bytes() == (tmp_path / "b/eval.jsonl").read_bytes()
    n_eval = len(list(read_jsonl(tmp_path / "a/eval.jsonl")))
    assert 5 <= n_eval <= 40  # ~10% of 200


def test_replay_is_mixed_at_the_configured_ratio_and_the_buffer_stays_bounded(tmp_path, params, replace):
    buffer = [{**rec(1000 + i), "_cycle": "2026-01-04"} for i in range(300)]
    write_jsonl(tmp_path / "buffer.jsonl", buffer)
    write_jsonl(tmp_path / "clean.jsonl", [rec(i) for i in range(100)])
    replay = replace(params.replay, ratio=0.25, anchor_ratio=0.0, capacity=250)
    report = dataset.run(params.dataset, replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "buffer.jsonl", tmp_path / "out")
    train = list(read_jsonl(tmp_path / "out/train.jsonl"))
    replayed = [r for r in train if r["_source"] == "replay"]
    assert abs(len(replayed) / len(train) - 0.25) < 0.02
    assert report["buffer_after"] == 250
    new_in_buffer = [r for r in read_jsonl(tmp_path / "out/buffer.jsonl") if r["_cycle"] == "2026-01-05"]
    assert new_in_buffer  # this cycle's examples entered the buffer
    assert json.loads((tmp_path / "out/report.json").read_text())["train_replay"] == len(replayed)


def test_a_small_buffer_is_never_replayed_whole_so_forgetting_can_be_measured(tmp_path, params, replace):
    # 20 buffered examples, and the mix asks for more than that: a tenth stays out of training.
    write_jsonl(tmp_path / "buffer.jsonl", [{**rec(1000 + i), "_cycle": "2026-01-04"} for i in range(20)])
    write_jsonl(tmp_path / "clean.jsonl", [rec(i) for i in range(100)])
    replay = replace(params.replay, ratio=0.55, anchor_ratio=0.0)
    report = dataset.run(replace(params.dataset, eval_fraction=0.1), replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "buffer.jsonl", tmp_path / "out")
    assert report["train_replay"] == 18
    unseen = evaluate.replay_set(tmp_path / "buffer.jsonl", tmp_path / "out/train.jsonl", 64, params.seed)
    assert len(unseen) == 2  # what evaluate scores as the replay set tonight


LONG_ANSWER = ("Your order left our warehouse yesterday and is now with the carrier; the tracking "
               "page shows delivery by Friday evening and I will send you an update if that changes.")


def chat(i, question, answer=LONG_ANSWER, feedback=None):
    return {"id": f"n{i}", "timestamp": "2026-01-05T10:00:00Z", "feedback": feedback, "metadata": {},
            "messages": [{"role": "system", "content": "You are a helpful support assistant."},
                         {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def run_dataset(tmp_path, params, records, buffer=(), **dataset_overrides):
    import dataclasses

    write_jsonl(tmp_path / "clean.jsonl", records)
    write_jsonl(tmp_path / "buffer.jsonl", list(buffer))
    p = dataclasses.replace(params.dataset, **dataset_overrides)
    return dataset.run(p, params.replay, params.seed, "2026-01-05", tmp_path / "clean.jsonl",
                       tmp_path / "buffer.jsonl", tmp_path / "out")


def test_near_duplicates_within_the_batch_are_dropped_and_counted_apart_from_exact_ones(tmp_path, params):
    records = [chat(0, "Where is my order #123456? It was supposed to arrive Friday."),
               chat(1, "where is my order #123456? it was suposed to arrive Friday"),  # retried, typo
               chat(2, "Can I return the coffee grinder I bought last week?",
                    "Yes, returns are free within 30 days: start one from Orders and print the label."),
               chat(3, "Where is my order #123456? It was supposed to arrive Friday.")]  # exact repeat
    report = run_dataset(tmp_path, params, records)
    assert report["exact_duplicates"] == 1 and report["near_duplicates_in_batch"] == 1
    assert report["near_duplicates_of_replay"] == 0
    assert report["duplicates"] == 2 and report["unique"] == 2
    kept = {r["id"] for name in ("train", "eval") for r in read_jsonl(tmp_path / f"out/{name}.jsonl")}
    assert kept == {"n0", "n2"}  # the first of each group stays


def test_near_duplicates_of_the_replay_buffer_are_counted_on_their_own(tmp_path, params):
    learned_before = {**chat(900, "Where is my order #123456? It was supposed to arrive Friday."),
                      "_cycle": "2026-01-04"}
    records = [chat(0, "Where is my order #123456? It was suposed to arrive Friday."),
               chat(1, "How do I change the card on file?",
                    "Go to Settings, then Billing, then Payment methods, and add the new card there.")]
    report = run_dataset(tmp_path, params, records, buffer=[learned_before])
    assert report["near_duplicates_of_replay"] == 1 and report["near_duplicates_in_batch"] == 0
    assert report["unique"] == 1 and report["clean_in"] == report["unique"] + report["duplicates"]


def test_the_same_template_with_other_facts_is_not_a_near_duplicate(tmp_path, params):
    questions = ["I was charged twice for order #{n}. Can you refund the extra ${a}.00?".format(n=100000 + 7919 * i, a=10 + i)
                 for i in range(5)]
    answers = ["I'm sorry about the double charge on order #{n}. I have requested a refund of ${a}.00; "
               "it will reach your card within 5 business days.".format(n=100000 + 7919 * i, a=10 + i)
               for i in range(5)]
    report = run_dataset(tmp_path, params, [chat(i, q, a) for i, (q, a) in enumerate(zip(questions, answers))])
    assert report["near_duplicates_in_batch"] == 0 and report["unique"] == 5


def test_the_near_duplicate_threshold_comes_from_params(tmp_path, params):
    records = [chat(0, "Where is my order #123456? It was supposed to arrive Friday."),
               chat(1, "Where is my order #123456? It was suposed to arrive Friday.")]
    assert run_dataset(tmp_path, params, records, near_duplicate_threshold=0.95)["near_duplicates_in_batch"] == 0
    with pytest.raises(params_mod.ParamsError, match="near_duplicate_threshold"):
        run_dataset(tmp_path, params, records, near_duplicate_threshold=1.5)
    assert run_dataset(tmp_path, params, records, near_duplicate_threshold=0.5)["near_duplicates_in_batch"] == 1


def test_thumbs_down_records_stay_clean_but_are_neither_trained_nor_evaluated_on(tmp_path, params):
    records = [rec(i) | {"feedback": "down" if i % 4 == 0 else "up"} for i in range(40)]
    report = run_dataset(tmp_path, params, records)
    assert report["filtered_feedback"] == 10 and report["unique"] == 40  # clean includes them
    used = [r for name in ("train", "eval") for r in read_jsonl(tmp_path / f"out/{name}.jsonl")]
    assert len(used) == 30 and all(r["feedback"] == "up" for r in used)
    assert all(r["feedback"] == "up" for r in read_jsonl(tmp_path / "out/buffer.jsonl"))
    assert report["train_new"] + report["eval"] == 30

    everything = run_dataset(tmp_path, params, records, exclude_feedback=[])
    assert everything["filtered_feedback"] == 0 and everything["train_new"] + everything["eval"] == 40


def feedback_event(event_id, response_id, rating, at="2026-01-05T12:00:00Z", comment=None):
    return {"id": event_id, "timestamp": at, "event": "feedback", "response_id": response_id,
            "feedback": rating, "comment": comment, "metadata": {}}


def test_late_feedback_takes_a_buffered_answer_out_of_replay_and_rates_tonights(tmp_path, params):
    """A thumbs-down on an answer an earlier night pulled removes it from the replay buffer; one on
    tonight's answer keeps it out of training; the last word of a user who changed their mind
    counts; a rating of an answer in neither place is counted, not lost."""
    buffer = [{**rec(1000 + i), "_cycle": "2026-01-04"} for i in range(40)]
    tonight = [rec(i) for i in range(60)]
    events = [feedback_event("e1", "r1000", "down", comment="wrong store hours"),
              feedback_event("e2", "r1001", "down", at="2026-01-05T09:00:00Z"),
              feedback_event("e3", "r1001", "up", at="2026-01-05T10:00:00Z"),   # changed their mind
              feedback_event("e4", "r5", "down"),
              feedback_event("e5", "r6", "up"),
              feedback_event("e6", "never-logged", "down")]
    write_jsonl(tmp_path / "clean.jsonl", tonight)
    write_jsonl(tmp_path / "buffer.jsonl", buffer)
    write_jsonl(tmp_path / "feedback.jsonl", events)
    report = dataset.run(params.dataset, params.replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "buffer.jsonl", tmp_path / "out",
                         feedback=tmp_path / "feedback.jsonl")
    assert report["feedback_events"] == 6
    assert (report["feedback_applied_new"], report["feedback_applied_buffer"]) == (2, 2)
    assert (report["feedback_removed_from_buffer"], report["feedback_unmatched"]) == (1, 1)
    assert report["filtered_feedback"] == 1   # r5, rated down tonight
    next_buffer = {r["id"]: r for r in read_jsonl(tmp_path / "out/buffer.jsonl")}
    assert "r1000" not in next_buffer and next_buffer["r1001"]["feedback"] == "up"
    trained = {r["id"]: r for r in read_jsonl(tmp_path / "out/train.jsonl")}
    assert "r5" not in trained and "r1000" not in trained
    rated = next_buffer.get("r6") or trained.get("r6") or next(
        r for r in read_jsonl(tmp_path / "out/eval.jsonl") if r["id"] == "r6")
    assert rated["feedback"] == "up" and rated["metadata"]["feedback_at"] == "2026-01-05T12:00:00Z"


def test_feedback_on_a_record_with_a_numeric_id_is_applied(tmp_path, params):
    """A source's own ids may be numbers; an event names them as its logger wrote them."""
    records = [{**rec(i), "id": 7000 + i} for i in range(30)]
    write_jsonl(tmp_path / "clean.jsonl", records)
    write_jsonl(tmp_path / "feedback.jsonl", [feedback_event("e1", 7003, "down")])
    report = dataset.run(params.dataset, params.replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "none.jsonl", tmp_path / "out",
                         feedback=tmp_path / "feedback.jsonl")
    assert (report["feedback_applied_new"], report["filtered_feedback"], report["feedback_unmatched"]) == (1, 1, 0)
