"""The replay buffer (a reservoir sample stratified by cycle x topic), the replay draw for a
cycle's training mix, and the anchor training set mixed in beside it."""

import collections
import random
from pathlib import Path

import pytest

from pipelines.common import params as params_mod
from pipelines.common.records import content_hash, read_jsonl, write_jsonl
from pipelines.data import dataset

ROOT = Path(__file__).resolve().parent.parent
ANCHOR_EVAL = ROOT / "data/anchor/anchor.jsonl"
ANCHOR_TRAIN = ROOT / "data/anchor/anchor_train.jsonl"


def rec(cycle, topic, i):
    return {"id": f"{cycle}-{topic}-{i}", "timestamp": "2026-01-05T10:00:00Z", "feedback": None,
            "metadata": {"topic": topic} if topic else {}, "_cycle": cycle,
            "messages": [{"role": "user", "content": f"question {cycle} {topic} {i}"},
                         {"role": "assistant", "content": f"answer {i}"}]}


def batch(cycle, sizes):
    return [rec(cycle, topic, i) for topic, n in sizes.items() for i in range(n)]


def counts(records):
    return collections.Counter(dataset.stratum(r) for r in records)


def uniform_buffer(buffer, new, capacity, rng):
    """The baseline: a uniform random sample of everything, as the buffer kept before strata."""
    combined = buffer + new
    if len(combined) <= capacity:
        return combined
    return [combined[i] for i in sorted(rng.sample(range(len(combined)), capacity))]


def test_capacity_holds_and_each_stratum_keeps_its_fair_share():
    old = batch("2026-01-04", {"billing": 300, "shipping": 5})
    new = batch("2026-01-05", {"returns": 200, None: 50})  # no topic: a stratum of its own
    kept = dataset.update_buffer(old, new, 200, seed=1, rng=random.Random(1))
    assert len(kept) == 200
    got = counts(kept)
    # An equal split is 50 each: shipping (5) stays whole, so does the topic-less stratum (50 <
    # 195/3), and billing and returns share the remaining 145.
    assert got[("2026-01-04", "shipping")] == 5 and got[("2026-01-05", "")] == 50
    assert sorted([got[("2026-01-04", "billing")], got[("2026-01-05", "returns")]]) == [72, 73]
    assert len({r["id"] for r in kept}) == 200


def test_fair_shares_add_up_and_no_cut_stratum_gets_less_than_another():
    rng = random.Random(0)
    for _ in range(200):
        sizes = {(str(i), ""): rng.randint(1, 60) for i in range(rng.randint(1, 12))}
        total = rng.randint(0, 400)
        shares = dataset.fair_shares(sizes, total, rng)
        assert sum(shares.values()) == min(total, sum(sizes.values()))
        assert all(0 <= shares[k] <= sizes[k] for k in sizes)
        for k in sizes:
            if shares[k] < sizes[k]:  # cut: at least as much as any other stratum, bar the odd slot
                assert all(shares[k] >= shares[o] - 1 for o in sizes)


def test_an_old_rare_topic_survives_many_big_cycles_unlike_in_a_uniform_sample():
    first = batch("2026-01-01", {"rare": 10, "common": 190})
    stratified, uniform = list(first), list(first)
    for day in range(2, 22):  # twenty big nights of another topic
        cycle = f"2026-01-{day:02d}"
        new = batch(cycle, {"big": 300})
        stratified = dataset.update_buffer(stratified, new, 500, 7, random.Random(f"7-{cycle}"))
        uniform = uniform_buffer(uniform, new, 500, random.Random(f"7-{cycle}"))
    rare = ("2026-01-01", "rare")
    assert counts(stratified)[rare] == 10          # 22 strata share 500 slots: 10 is within its share
    assert counts(uniform)[rare] <= 2              # a uniform sample keeps ~10 * 500/6200 of them
    assert len(stratified) == len(uniform) == 500


def test_within_a_stratum_every_record_is_equally_likely_to_be_kept():
    members = batch("2026-01-04", {"billing": 20})
    others = batch("2026-01-05", {"shipping": 20})
    kept_times = collections.Counter()
    for seed in range(400):
        kept = dataset.update_buffer(members, others, 10, seed, random.Random(seed))
        kept_times.update(r["id"] for r in kept if r["_cycle"] == "2026-01-04")
    assert sum(kept_times.values()) == 400 * 5
    assert all(60 <= kept_times[r["id"]] <= 140 for r in members)  # 100 expected each


def test_the_buffer_is_deterministic_for_a_seed_and_nested_as_quotas_shrink():
    old, new = batch("2026-01-04", {"billing": 80}), batch("2026-01-05", {"shipping": 80})
    a = dataset.update_buffer(old, new, 60, 3, random.Random("3-2026-01-05"))
    b = dataset.update_buffer(old, new, 60, 3, random.Random("3-2026-01-05"))
    c = dataset.update_buffer(old, new, 60, 4, random.Random("4-2026-01-05"))
    assert a == b and a != c
    later = dataset.update_buffer(a, batch("2026-01-06", {"returns": 80}), 60, 3,
                                  random.Random("3-2026-01-06"))
    assert {r["id"] for r in later if r["_cycle"] == "2026-01-04"} <= {r["id"] for r in a}


def run_cycle(tmp_path, params, replace, buffer, new, anchor=None, **replay_overrides):
    write_jsonl(tmp_path / "buffer.jsonl", buffer)
    write_jsonl(tmp_path / "clean.jsonl", new)
    replay = replace(params.replay, **replay_overrides)
    report = dataset.run(params.dataset, replay, params.seed, "2026-01-06", tmp_path / "clean.jsonl",
                         tmp_path / "buffer.jsonl", tmp_path / "out", anchor)
    return report, list(read_jsonl(tmp_path / "out/train.jsonl"))


def test_the_replay_draw_is_even_over_strata(tmp_path, params, replace):
    buffer = batch("2026-01-04", {"returns": 6}) + batch("2026-01-05", {"billing": 300})
    new = [{**r, "id": f"new-{i}"} for i, r in enumerate(batch("", {"shipping": 120}))]
    report, train = run_cycle(tmp_path, params, replace, buffer, new, ratio=0.25, anchor_ratio=0.0)
    replayed = [r for r in train if r["_source"] == "replay"]
    assert len(replayed) == report["train_replay"] > 30
    assert counts(replayed)[("2026-01-04", "returns")] == 6  # all of the small old stratum


def test_anchor_examples_are_mixed_at_their_ratio_and_every_example_is_tagged(tmp_path, params, replace):
    buffer = batch("2026-01-04", {"returns": 100})
    new = [{**r, "id": f"new-{i}", "_cycle": None} for i, r in enumerate(batch("x", {"shipping": 200}))]
    report, train = run_cycle(tmp_path, params, replace, buffer, new, ANCHOR_TRAIN,
                              ratio=0.2, anchor_ratio=0.1)
    sources = collections.Counter(r["_source"] for r in train)
    assert sources == {"new": report["train_new"], "replay": report["train_replay"],
                       "anchor": report["train_anchor"]}
    assert abs(sources["replay"] / len(train) - 0.2) < 0.01
    assert abs(sources["anchor"] / len(train) - 0.1) < 0.01
    anchors = [r for r in train if r["_source"] == "anchor"]
    assert all(r["id"].startswith("anchor-train-") for r in anchors)
    assert len(counts(anchors)) == 6  # drawn evenly over the anchor set's six topics
    buffered = list(read_jsonl(tmp_path / "out/buffer.jsonl"))
    assert not any(r["id"].startswith("anchor") for r in buffered)  # the buffer holds cycles only


def test_a_missing_anchor_training_set_is_a_clear_error(tmp_path, params, replace):
    with pytest.raises(FileNotFoundError, match="eval_sets build"):
        run_cycle(tmp_path, params, replace, [], batch("x", {"a": 10}), tmp_path / "missing.jsonl")


def test_the_anchor_training_set_is_disjoint_from_the_anchor_eval_set(params):
    evaluation, training = list(read_jsonl(ANCHOR_EVAL)), list(read_jsonl(ANCHOR_TRAIN))
    assert len(training) == 120 and set(counts(training).values()) == {20}

    def questions(records):
        return {tuple(m["content"] for m in r["messages"] if m["role"] == "user") for r in records}

    assert not {r["id"] for r in evaluation} & {r["id"] for r in training}
    assert not {content_hash(r) for r in evaluation} & {content_hash(r) for r in training}
    assert not questions(evaluation) & questions(training)
    # No question twice within a topic, except in a topic whose templates hold nothing but
    # personal values: redacted, its conversations differ in nothing, and it repeats them.
    import string

    from pipelines.samples.sample_logs import PERSONAL_SLOTS, TEMPLATES

    only_personal = {topic for topic, templates in TEMPLATES.items()
                     if all(name in PERSONAL_SLOTS for user, _ in templates
                            for _, name, _, _ in string.Formatter().parse(user) if name)}
    assert only_personal == {"account"}
    for topic in TEMPLATES:
        of_topic = [r for r in training if r["metadata"]["topic"] == topic]
        if topic not in only_personal:
            assert len(questions(of_topic)) == len(of_topic), topic


def test_replay_shares_must_leave_room_for_new_examples(params, replace):
    with pytest.raises(params_mod.ParamsError, match="ratio"):
        replace(params.replay, ratio=0.7, anchor_ratio=0.3)
    with pytest.raises(params_mod.ParamsError, match="capacity"):
        replace(params.replay, capacity=-1)
