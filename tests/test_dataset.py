import json

from pipelines import dataset
from pipelines.records import read_jsonl, write_jsonl


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
    replay = replace(params.replay, ratio=0.25, capacity=250)
    report = dataset.run(params.dataset, replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "buffer.jsonl", tmp_path / "out")
    train = list(read_jsonl(tmp_path / "out/train.jsonl"))
    replayed = [r for r in train if r["_source"] == "replay"]
    assert abs(len(replayed) / len(train) - 0.25) < 0.02
    assert report["buffer_after"] == 250
    new_in_buffer = [r for r in read_jsonl(tmp_path / "out/buffer.jsonl") if r["_cycle"] == "2026-01-05"]
    assert new_in_buffer  # this cycle's examples entered the buffer
    assert json.loads((tmp_path / "out/report.json").read_text())["train_replay"] == len(replayed)
