import dataclasses
import json
import shutil

import pytest

from pipelines.common import params as params_mod
from pipelines.common.records import parse_line, write_jsonl
from pipelines.data import validate
from tests.conftest import ROOT

CYCLE = "2026-01-05"


def good(i):
    return {"id": f"g{i}", "timestamp": "2026-01-05T10:00:00Z", "feedback": None, "metadata": {},
            "messages": [{"role": "user", "content": f"question number {i}"},
                         {"role": "assistant", "content": f"answer {i}"}]}


def bad_records(max_chars):
    """One record per row-level reason code of the suite, each failing only for that reason."""
    return {
        "invalid_json": parse_line(b'{"id": "x", "messages": ['),
        "invalid_utf8": parse_line(b'{"id": "u8", "messages": "caf\xe9"}'),
        "not_an_object": parse_line(b'["a", "list"]'),
        "missing_id": {k: v for k, v in good(0).items() if k != "id"},
        "invalid_id": {**good(0), "id": ["a", "list"]},
        "bad_timestamp": {**good(0), "id": "t", "timestamp": "yesterday"},
        "future_timestamp": {**good(0), "id": "f", "timestamp": "2026-01-06T02:00:00Z"},
        "missing_messages": {"id": "m", "timestamp": "2026-01-05T10:00:00Z"},
        "invalid_messages": {**good(0), "id": "im", "messages": "hello, a string"},
        "unknown_role": {**good(0), "id": "u", "messages": [{"role": "wizard", "content": "hi"},
                                                            *good(0)["messages"]]},
        "no_user_turn": {**good(0), "id": "nu", "messages": [{"role": "assistant", "content": "a"}]},
        "no_assistant_turn": {**good(0), "id": "n", "messages": [{"role": "user", "content": "q"}]},
        "empty_message": {**good(0), "id": "e", "messages": [{"role": "user", "content": " "},
                                                            {"role": "assistant", "content": "a"}]},
        "message_too_long": {**good(0), "id": "l", "messages": [
            {"role": "user", "content": "x" * (max_chars + 1)}, {"role": "assistant", "content": "a"}]},
        "invalid_feedback": {**good(0), "id": "fb", "feedback": ["up", "down"]},
        "invalid_metadata": {**good(0), "id": "md", "metadata": "web"},
        "residual_pii": {**good(0), "id": "r", "_residual": ["EMAIL_ADDRESS", "PHONE_NUMBER"]},
        "invalid_response_id": event("ev", None),
    }


def event(event_id, response_id, feedback="up"):
    """A feedback event: a rating of the answer `response_id`, given later."""
    return {"id": event_id, "timestamp": "2026-01-05T11:00:00Z", "event": "feedback",
            "response_id": response_id, "feedback": feedback, "metadata": {}}


def suite_reasons(name):
    spec = json.loads((validate.SUITE_DIR / f"{name}.json").read_text())
    return [e["meta"]["reason"] for e in spec["expectations"]]


def test_each_kind_of_bad_record_is_quarantined_with_exactly_its_reason(tmp_path, params):
    bad = bad_records(params.validate.max_message_chars)
    records = [good(i) for i in range(80)] + list(bad.values())
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    assert report["clean"] == 80 and report["quarantined"] == len(bad)
    quarantined = [json.loads(l) for l in (tmp_path / "out/quarantine.jsonl").read_text().splitlines()]
    for line, (expected, record) in enumerate(zip(bad, quarantined), start=81):
        assert record["_reasons"] == [expected], (expected, record["_reasons"])
        assert record["_line"] == line
    assert report["quarantine_reasons"] == {reason: 1 for reason in bad}


def test_every_row_reason_code_of_the_suite_is_exercised_above():
    """The suite file and the test agree: a new rule in the suite needs a record here."""
    assert set(suite_reasons(validate.ROW_SUITE)) == set(bad_records(10)) | {"unparseable"}


def test_a_parse_error_records_does_not_know_is_still_quarantined(tmp_path, params):
    records = [good(i) for i in range(9)] + [{"_invalid": "?", "_error": "new_kind: of failure"}]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    assert report["quarantine_reasons"] == {"unparseable": 1}


def test_invalid_utf8_keeps_the_line_readable_and_says_where(tmp_path, params):
    write_jsonl(tmp_path / "records.jsonl",
                [good(i) for i in range(9)] + [parse_line(b'{"id": "u8", "content": "caf\xe9"}')])
    validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    [record] = [json.loads(l) for l in (tmp_path / "out/quarantine.jsonl").read_text().splitlines()]
    assert record["_reasons"] == ["invalid_utf8"] and record["_line"] == 10
    assert record["_invalid"].startswith('{"id": "u8", "content": "caf') and "at byte 28" in record["_error"]


def test_a_residual_finding_after_redaction_quarantines_and_keeps_the_types(tmp_path, params):
    records = [good(i) for i in range(9)] + [
        {**good(9), "id": "r1", "_residual": ["API_KEY"]},
        {**good(10), "id": "r2", "_residual": []},           # scanned, nothing found: clean
        {**good(11), "id": "r3", "_residual": "EMAIL_ADDRESS"},  # malformed: cannot prove clean
    ]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    quarantined = [json.loads(l) for l in (tmp_path / "out/quarantine.jsonl").read_text().splitlines()]
    assert [(q["id"], q["_reasons"], q["_residual"]) for q in quarantined] == [
        ("r1", ["residual_pii"], ["API_KEY"]), ("r3", ["residual_pii"], "EMAIL_ADDRESS")]
    assert report["clean"] == 10


def test_future_timestamps_are_measured_from_the_end_of_the_cycle_with_a_tolerance(tmp_path, params,
                                                                                 replace):
    p = replace(params.validate, future_tolerance_minutes=30)
    records = [good(i) for i in range(8)] + [
        {**good(8), "id": "in_tolerance", "timestamp": "2026-01-06T00:29:00Z"},
        {**good(9), "id": "too_late", "timestamp": "2026-01-06T00:31:00Z"},
        {**good(10), "id": "next_year", "timestamp": "2027-01-05T10:00:00+02:00"}]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(p, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    quarantined = [json.loads(l)["id"] for l in (tmp_path / "out/quarantine.jsonl").read_text().splitlines()]
    assert quarantined == ["too_late", "next_year"] and report["clean"] == 9
    # Without a cycle, "future" is measured from now: all of 2026-01 lies in the past.
    report = validate.run(p, tmp_path / "records.jsonl", tmp_path / "now", None)
    assert report["quarantined"] == 1  # only next year's


def test_a_batch_with_too_many_bad_records_stops_the_cycle_but_keeps_its_outputs(tmp_path, params):
    records = [good(i) for i in range(5)] + list(bad_records(10).values())
    write_jsonl(tmp_path / "records.jsonl", records)
    with pytest.raises(validate.BatchRejected, match="quarantine_rate_too_high"):
        validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE,
                     data_docs=tmp_path / "docs")
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert not report["batch_passed"] and report["clean"] + report["quarantined"] == len(records)
    assert report["batch_failures"] == ["quarantine_rate_too_high"]
    assert (tmp_path / "docs/index.html").exists()


def test_too_few_records_are_not_judged_as_a_batch_but_their_rows_are_checked(tmp_path, params):
    # One good record and one bad: 50% quarantined would reject a real batch; of two it is noise.
    write_jsonl(tmp_path / "records.jsonl", [good(0), list(bad_records(1).values())[0]])
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    assert report["batch_judged"] is False and report["batch_passed"] is None
    assert "record_count_out_of_range" in report["batch_failures"]
    assert report["clean"] == 1 and report["quarantined"] == 1


def test_too_many_records_is_a_batch_failure(tmp_path, params, replace):
    write_jsonl(tmp_path / "records.jsonl", [good(i) for i in range(12)])
    with pytest.raises(validate.BatchRejected, match=r"record_count_out_of_range \(observed 12\)"):
        validate.run(replace(params.validate, max_records=10), tmp_path / "records.jsonl",
                     tmp_path / "out", CYCLE)


def test_an_empty_batch_is_not_judged(tmp_path, params):
    write_jsonl(tmp_path / "records.jsonl", [])
    validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["records"] == 0 and report["batch_judged"] is False


def test_a_batch_of_repeats_is_rejected_for_its_duplicate_rate(tmp_path, params, replace):
    same_id = [{**good(100 + i), "id": "same"} for i in range(4)]    # repeated id, new content
    same_talk = [{**good(0), "id": f"copy{i}"} for i in range(4)]    # repeated content, new id
    records = [good(i) for i in range(10)] + same_id + same_talk
    write_jsonl(tmp_path / "records.jsonl", records)
    # good(0) is repeated 4 times, "same" 3 times after its first: 7 of 18.
    report = validate.run(replace(params.validate, max_duplicate_rate=0.4),
                          tmp_path / "records.jsonl", tmp_path / "ok", CYCLE)
    assert report["exact_duplicates"] == 7 and report["clean"] == 18
    with pytest.raises(validate.BatchRejected, match=r"duplicate_rate_too_high \(observed 0.3889"):
        validate.run(replace(params.validate, max_duplicate_rate=0.3),
                     tmp_path / "records.jsonl", tmp_path / "out", CYCLE)


def test_one_redacted_question_from_many_people_is_not_a_repeat_but_from_one_person_it_is(tmp_path, params):
    """Redaction leaves one text for the same question asked by different people; the salted
    hashes of who each record is about (metadata.subjects) tell them apart."""
    def asked_by(i, subject):
        record = good(i)
        return {**record, "messages": [{"role": "user", "content": "My email is <EMAIL_ADDRESS_1>. Help?"},
                                       {"role": "assistant", "content": "A reset link is on its way."}],
                "metadata": {**record.get("metadata", {}), "subjects": [subject]}}

    many_people = [asked_by(i, f"hash-of-person-{i}") for i in range(10)]
    one_person_again = [asked_by(10 + i, "hash-of-person-0") for i in range(3)]
    write_jsonl(tmp_path / "records.jsonl", many_people + one_person_again)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    assert report["exact_duplicates"] == 3 and report["clean"] == 13


def test_the_user_message_length_distribution_is_checked_on_clean_records(tmp_path, params, replace):
    def asking(i, n):
        return {**good(i), "messages": [{"role": "user", "content": f"{i:03d}" + "q" * (n - 3)},
                                        {"role": "assistant", "content": "a"}]}

    records = [asking(i, 50) for i in range(18)] + [asking(18, 900), asking(19, 900)]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "ok", CYCLE)
    assert report["user_chars_median"] == 50 and report["batch_passed"]
    with pytest.raises(validate.BatchRejected, match="user_length_median_out_of_bounds"):
        validate.run(replace(params.validate, min_median_user_chars=60),
                     tmp_path / "records.jsonl", tmp_path / "short", CYCLE)
    # 2 of 20 (10%) above 800: the 95th percentile is too.
    with pytest.raises(validate.BatchRejected, match="user_length_p95_too_high"):
        validate.run(replace(params.validate, max_p95_user_chars=800),
                     tmp_path / "records.jsonl", tmp_path / "long", CYCLE)
    # A quarantined giant does not count: 19 clean records of 50 chars pass.
    records = [asking(i, 50) for i in range(19)] + [asking(19, params.validate.max_message_chars + 1)]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(replace(params.validate, max_p95_user_chars=60),
                          tmp_path / "records.jsonl", tmp_path / "giant", CYCLE)
    assert report["batch_passed"] and report["quarantine_reasons"] == {"message_too_long": 1}


def test_data_docs_render_both_validations_with_their_reasons(tmp_path, params):
    records = [good(i) for i in range(20)] + [bad_records(10)["unknown_role"]]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE,
                          data_docs=tmp_path / "docs")
    assert report["data_docs"] == str(tmp_path / "docs/index.html")
    index = (tmp_path / "docs/index.html").read_text()
    assert validate.ROW_SUITE in index and validate.BATCH_SUITE in index
    pages = {p.parent.parent.parent.name: p.read_text()
             for p in (tmp_path / "docs/validations").glob(f"*/{CYCLE}/*/*.html")}
    assert set(pages) == {validate.ROW_SUITE, validate.BATCH_SUITE}
    assert "n_unknown_roles" in pages[validate.ROW_SUITE] and "Failed" in pages[validate.ROW_SUITE]
    assert "duplicate" in pages[validate.BATCH_SUITE]


def test_the_suite_files_hold_reasons_and_no_thresholds_of_their_own():
    """params.yaml is the single source of every threshold: each validate param is a suite
    parameter, each suite parameter is a validate param, and the only literal bounds in the
    suites are the structural 0 and 1 of count rules (and `mostly` of the p95 rule)."""
    fields = {f.name for f in dataclasses.fields(params_mod.ValidateParams)}
    named = set()
    for name in (validate.ROW_SUITE, validate.BATCH_SUITE):
        spec = json.loads((validate.SUITE_DIR / f"{name}.json").read_text())
        named |= validate.suite_parameter_names(spec)
        reasons = suite_reasons(name)
        assert len(reasons) == len(set(reasons)) and all(reasons)
        for e in spec["expectations"]:
            for key in ("min_value", "max_value"):
                value = e["kwargs"].get(key)
                assert value is None or isinstance(value, dict) or value in (0, 1), (name, e)
        domains = [(e["type"], e["kwargs"].get("column")) for e in spec["expectations"]]
        assert len(domains) == len(set(domains)), "GX keeps one expectation per type and column"
    assert named == fields


def test_a_suite_naming_a_parameter_params_lacks_is_a_clear_error(tmp_path, params):
    suites = tmp_path / "suites"
    shutil.copytree(validate.SUITE_DIR, suites)
    path = suites / f"{validate.BATCH_SUITE}.json"
    spec = json.loads(path.read_text())
    spec["expectations"][0]["kwargs"]["min_value"] = {"$PARAMETER": "min_recordz"}
    path.write_text(json.dumps(spec))
    write_jsonl(tmp_path / "records.jsonl", [good(i) for i in range(10)])
    with pytest.raises(validate.SuiteError, match="min_recordz"):
        validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE, suites)


def test_a_validate_param_that_no_suite_uses_is_a_clear_error(tmp_path, params):
    suites = tmp_path / "suites"
    shutil.copytree(validate.SUITE_DIR, suites)
    path = suites / f"{validate.ROW_SUITE}.json"
    spec = json.loads(path.read_text())
    spec["expectations"] = [e for e in spec["expectations"] if e["meta"]["reason"] != "future_timestamp"]
    path.write_text(json.dumps(spec))
    write_jsonl(tmp_path / "records.jsonl", [good(i) for i in range(10)])
    with pytest.raises(validate.SuiteError, match="future_tolerance_minutes is used by no suite"):
        validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE, suites)


def test_the_thresholds_come_from_params_not_the_suite_files(tmp_path, params, replace):
    records = [good(i) for i in range(10)] + [{**good(i), "messages": [
        {"role": "user", "content": f"short q {i:02d}"}, {"role": "assistant", "content": "a"}]}
        for i in range(90)]
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(replace(params.validate, max_message_chars=16),
                          tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    # "question number 0".."9" are 17 chars: too long for a limit of 16.
    assert report["quarantine_reasons"] == {"message_too_long": 10} and report["clean"] == 90


def test_the_stage_command_and_the_workspace_read_the_suites_from_the_repository():
    import yaml

    from flows.workspace import SCAFFOLD

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["validate"]
    assert "--suites validation/expectations" in stage["cmd"]
    assert "validation/expectations" in stage["deps"]
    assert "validation" in SCAFFOLD and validate.SUITE_DIR == ROOT / "validation/expectations"


def test_the_command_exits_non_zero_with_the_reason_on_a_rejected_batch(tmp_path, params):
    import subprocess
    import sys

    from tests.conftest import write_tiny_params

    write_jsonl(tmp_path / "snapshot.jsonl", [good(i) for i in range(12)])
    out = subprocess.run([sys.executable, "-m", "pipelines.data.validate", str(tmp_path / "snapshot.jsonl"),
                          str(tmp_path / "out"), "--cycle", CYCLE, "--params",
                          str(write_tiny_params(tmp_path / "params.yaml", **{"validate.max_records": 10})), "--data-docs",
                          str(tmp_path / "docs")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    assert "validate: batch rejected: record_count_out_of_range (observed 12)" in out.stderr
    assert str(tmp_path / "docs/index.html") in out.stderr


def test_feedback_events_pass_to_feedback_jsonl_apart_from_the_records(tmp_path, params):
    """A rating of an earlier answer holds no messages: it is not quarantined as a record without
    any, not counted in the batch, and every line is still accounted for."""
    records = [good(i) for i in range(80)] + [event(f"ev{i}", f"g{i}") for i in range(30)]
    records.append(event("bad", ["not", "an", "id"]))
    write_jsonl(tmp_path / "records.jsonl", records)
    report = validate.run(params.validate, tmp_path / "records.jsonl", tmp_path / "out", CYCLE)
    assert (report["clean"], report["feedback_events"], report["quarantined"]) == (80, 30, 1)
    assert report["quarantine_reasons"] == {"invalid_response_id": 1}
    events = [json.loads(l) for l in (tmp_path / "out/feedback.jsonl").read_text().splitlines()]
    assert [e["response_id"] for e in events] == [f"g{i}" for i in range(30)]
    assert report["batch_judged"] and report["batch_passed"]
