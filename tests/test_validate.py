import json

import pytest

from pipelines import validate
from pipelines.records import parse_line, write_jsonl


def good(i):
    return {"id": f"g{i}", "timestamp": "2026-01-05T10:00:00Z", "feedback": None, "metadata": {},
            "messages": [{"role": "user", "content": f"question {i}"},
                         {"role": "assistant", "content": f"answer {i}"}]}


def bad_records(max_chars):
    return {
        "unparseable": parse_line(b'{"id": "x", "messages": ['),
        "missing_messages": {"id": "m", "timestamp": "2026-01-05T10:00:00Z"},
        "unknown_role": {**good(0), "id": "u", "messages": [{"role": "wizard", "content": "hi"},
                                                            *good(0)["messages"]]},
        "empty_message": {**good(0), "id": "e", "messages": [{"role": "user", "content": " "},
                                                            {"role": "assistant", "content": "a"}]},
        "message_too_long": {**good(0), "id": "l", "messages": [
            {"role": "user", "content": "x" * (max_chars + 1)}, {"role": "assistant", "content": "a"}]},
        "bad_timestamp": {**good(0), "id": "t", "timestamp": "yesterday"},
        "missing_id": {k: v for k, v in good(0).items() if k != "id"},
        "no_assistant_turn": {**good(0), "id": "n", "messages": [{"role": "user", "content": "q"}]},
    }


def test_each_kind_of_bad_record_is_quarantined_with_its_reason(tmp_path, params):
    bad = bad_records(params.validate.max_message_chars)
    records = [good(i) for i in range(40)] + list(bad.values())
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out")
    assert report["clean"] == 40 and report["quarantined"] == len(bad)
    quarantined = [json.loads(l) for l in (tmp_path / "out/quarantine.jsonl").read_text().splitlines()]
    for expected, record in zip(bad, quarantined):
        assert expected in record["_reasons"], (expected, record["_reasons"])


def test_a_batch_with_too_many_bad_records_stops_the_cycle_but_keeps_its_outputs(tmp_path, params):
    records = [good(i) for i in range(5)] + list(bad_records(10).values())
    write_jsonl(tmp_path / "records.jsonl", records)
    with pytest.raises(validate.BatchRejected, match="quarantine_rate_too_high"):
        validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out")
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert not report["batch_passed"] and report["clean"] + report["quarantined"] == len(records)


def test_too_few_records_is_a_batch_failure(tmp_path, params):
    write_jsonl(tmp_path / "records.jsonl", [good(0)])
    with pytest.raises(validate.BatchRejected, match="too_few_records"):
        validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out")
