import json
import subprocess
import sys

import pytest

from pipelines.common.records import parse_line
from pipelines.privacy import redact


@pytest.fixture(scope="module")
def redactor(params):
    return redact.Redactor(params.redact)


def chat(*turns):
    return {"id": "r1", "timestamp": "2026-01-05T10:00:00Z", "feedback": None, "metadata": {},
            "messages": [{"role": role, "content": text} for role, text in turns]}


def test_personal_data_and_secrets_are_replaced_with_typed_placeholders(redactor):
    record = chat(("user", "Mail me at jo.smith@example.com, card 4111 1111 1111 1111, "
                           "IBAN DE89370400440532013000, key sk-abcdefghijklmnopqrstuvwxyz0123456789, "
                           "from 10.20.30.40, I live at 12 Maple Street, Springfield"),
                  ("assistant", "Done."))
    text = redactor.redact_record(record)["messages"][0]["content"]
    for secret in ["jo.smith@example.com", "4111 1111 1111 1111", "DE89370400440532013000",
                   "sk-abcdefghij", "10.20.30.40", "12 Maple Street"]:
        assert secret not in text
    for placeholder in ["<EMAIL_ADDRESS_1>", "<CREDIT_CARD_1>", "<IBAN_CODE_1>", "<API_KEY_1>",
                        "<IP_ADDRESS_1>", "<STREET_ADDRESS_1>"]:
        assert placeholder in text


def test_the_same_value_keeps_its_placeholder_across_one_records_messages(redactor):
    record = chat(("user", "I am a@example.com, not b@example.com."),
                  ("assistant", "Noted: a@example.com."))
    out = redactor.redact_record(record)
    assert out["messages"][0]["content"] == "I am <EMAIL_ADDRESS_1>, not <EMAIL_ADDRESS_2>."
    assert out["messages"][1]["content"] == "Noted: <EMAIL_ADDRESS_1>."


def test_roles_ids_and_structure_survive(redactor):
    record = chat(("system", "Be nice."), ("user", "hi, x@example.com"), ("assistant", "hello"))
    out = redactor.redact_record(record)
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant"]
    assert {k: v for k, v in out.items() if k != "messages"} == {
        k: v for k, v in record.items() if k != "messages"}


def test_unparseable_lines_are_redacted_as_text(redactor):
    out = redactor.redact_record(parse_line(b'{"id": 1, "messages": "call +1 415 555 0199 x@y.com'))
    assert "x@y.com" not in out["_invalid"] and out["_error"].startswith("invalid_json")


def test_a_named_ner_model_that_is_not_installed_is_a_clear_error(params, replace):
    with pytest.raises(redact.RedactionSetupError, match="no such spaCy model is installed"):
        redact.Redactor(replace(params.redact, ner_model="en_core_web_lg"))


def test_report_says_which_entity_types_were_not_looked_for(params, replace, redactor):
    without_ner = redact.Redactor(replace(params.redact, ner_model=None)).looked_for()
    assert "PERSON" in without_ner["entities_not_looked_for"] and without_ner["ner_model"] is None
    assert "PERSON" in redactor.looked_for()["entities_looked_for"]


def test_cli_redacts_a_file_one_record_in_one_out_same_order(tmp_path):
    records = [chat(("user", f"I am user{i}@example.com"), ("assistant", "ok")) for i in range(5)]
    for i, r in enumerate(records):
        r["id"] = f"r{i}"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "flows.cli", "redact", str(src), str(out),
                             "--report", str(report)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l.get("id") for l in lines[:5]] == [f"r{i}" for i in range(5)] and len(lines) == 6
    assert "@example.com" not in out.read_text()
    assert json.loads(report.read_text())["replaced"]["EMAIL_ADDRESS"] == 5


# --- secrets, formats, placeholders, residual scan, speed-ups that must not change the output ---

def test_secrets_of_common_providers_private_keys_jwts_and_url_passwords_are_replaced(redactor):
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAabc123\nxyz789+/abc\n-----END RSA PRIVATE KEY-----"
    values = ["AKIAABCDEFGHIJKLMNOP", "ghp_" + "a1B2" * 9, "xoxb-1234567890-1234567890-AbCdEfGhIjKlMnOpQrStUvWx",
              "sk-proj-" + "Ab1_" * 12, "sk_live_" + "a1B2c3D4" * 4, "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
              "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"]
    record = chat(("user", " and ".join(values) + f"\n{pem}\nconnect postgres://admin:Secr3tPass@db.internal:5432/app"))
    text = redactor.redact_record(record)["messages"][0]["content"]
    for value in values + ["MIIEowIBAAKCAQEAabc123", "xyz789", "Secr3tPass"]:
        assert value not in text
    assert "<PRIVATE_KEY_1>" in text and "postgres://<PASSWORD_1>@" in text


def test_phone_numbers_in_common_formats_are_replaced_even_when_unassigned(redactor):
    phones = ["+14155550199", "+1 415 555 0199", "(555) 123-4567", "555.123.4567", "555-123-4567",
              "+44 20 7946 0958", "+49 30 12345678", "020 7946 0958"]
    text = redactor.redact_record(chat(("user", "; ".join(phones))))["messages"][0]["content"]
    assert not any(p in text for p in phones), text
    assert text.count("<PHONE_NUMBER_") == len(phones)


def test_placeholders_of_a_type_are_numbered_per_distinct_value(redactor):
    record = chat(("user", "Call 555-123-4567 or 555-987-6543, card 4111 1111 1111 1111"),
                  ("assistant", "I will call 555-987-6543."))
    out = redactor.redact_record(record)
    assert out["messages"][0]["content"] == "Call <PHONE_NUMBER_1> or <PHONE_NUMBER_2>, card <CREDIT_CARD_1>"
    assert out["messages"][1]["content"] == "I will call <PHONE_NUMBER_2>."


def test_a_clean_redacted_record_has_no_residual_key(redactor):
    out = redactor.redact_record(chat(("user", "My email is a@example.com, order #123456, $45.99")))
    assert "_residual" not in out


def test_residual_scan_flags_what_redaction_left_and_ignores_placeholders():
    from pipelines.privacy import residual

    assert residual.scan_text("Mail <EMAIL_ADDRESS_1>, call <PHONE_NUMBER_2>, order #123456") == set()
    left = residual.scan_record(chat(("user", "reach me at jo@example.com or 415 555 0199"),
                                     ("assistant", "key AKIAABCDEFGHIJKLMNOP, ip 10.1.2.3, "
                                                   "card 4111-1111-1111-1111, ssn 123-45-6789")))
    assert left == ["API_KEY", "CREDIT_CARD", "EMAIL_ADDRESS", "IP_ADDRESS", "PHONE_NUMBER", "US_SSN"]


def test_a_record_the_redaction_missed_something_in_gets_a_sorted_residual(params, replace):
    # Without the email recognizer, the residual scan must catch the address that slipped through.
    no_email = redact.Redactor(replace(params.redact, entities=["PHONE_NUMBER"]))
    out = no_email.redact_record(chat(("user", "x@example.com, 555-123-4567")))
    assert out["_residual"] == ["EMAIL_ADDRESS"] and "<PHONE_NUMBER_1>" in out["messages"][0]["content"]
    assert no_email.residual == {"EMAIL_ADDRESS": 1}
    # Quarantined, but redacted all the same: the residual scan's find is replaced too.
    assert "x@example.com" not in json.dumps(out) and "<EMAIL_ADDRESS_1>" in out["messages"][0]["content"]


def test_every_recognizer_has_a_trigger_that_all_its_matches_contain(redactor):
    """The triggers table covers every recognizer in use, and on the labeled set each recognizer's
    every hit (run on its own, over whole texts) contains its trigger."""
    import re

    from pipelines.samples import pii_testset

    recognizers = redactor.analyzer.registry.get_recognizers("en", entities=redactor.entities)
    assert {r.name for r in recognizers} <= set(redact.RECOGNIZER_TRIGGERS)
    texts = {m["content"] for record, _ in pii_testset.generate(300, 3) for m in record["messages"]}
    nlp = redactor.analyzer.nlp_engine
    for text in texts:
        artifacts = nlp.process_text(text, "en")
        for r in recognizers:
            trigger = re.compile(redact.RECOGNIZER_TRIGGERS[r.name], re.IGNORECASE)
            for hit in r.analyze(text, r.supported_entities, artifacts) or []:
                assert trigger.search(text[hit.start:hit.end]), (r.name, text[hit.start:hit.end])


@pytest.mark.slow
def test_triggers_and_the_text_cache_change_nothing_against_the_full_analyzer(redactor):
    """On the labeled set: no text the full analyzer flags is skipped, and every result is equal."""
    from pipelines.samples import pii_testset

    texts = [m["content"] for record, _ in pii_testset.generate(300, 4) for m in record["messages"]]
    key = lambda results: sorted((r.entity_type, r.start, r.end, r.score) for r in results)  # noqa: E731
    for text in texts:
        full = redactor.analyzer.analyze(text, language="en", entities=redactor.entities,
                                         score_threshold=redactor.params.score_threshold)
        assert key(redactor.analyze(text)) == key(full), text


@pytest.mark.slow
def test_output_is_byte_identical_whatever_the_number_of_workers(params, replace, tmp_path):
    from pipelines.samples import pii_testset

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r, _ in pii_testset.generate(120, 5)) + "not json\n")
    outputs = []
    for workers in (1, 2, 3):
        p = replace(params.redact, workers=workers, chunk_records=25)
        report = redact.redact_file(p, src, tmp_path / f"out{workers}.jsonl")
        outputs.append(((tmp_path / f"out{workers}.jsonl").read_bytes(), report["replaced"],
                        report["residual"]))
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0][0].splitlines()) == 121


def test_a_named_ner_model_disables_the_triggers(redactor, monkeypatch):
    monkeypatch.setitem(redact.RECOGNIZER_TRIGGERS, "EmailRecognizer", None)
    assert redact.entity_triggers(redactor.analyzer, "en", redactor.entities) is None


@pytest.mark.slow
def test_a_text_longer_than_one_window_is_redacted_across_window_boundaries(params):
    from pipelines.privacy.redact import WINDOW_CHARS, WINDOW_OVERLAP, Redactor

    email = "jane.doe@example.com"
    # One e-mail straddles the first window's end, one sits deep in the third window.
    cut = WINDOW_CHARS - len(email) // 2
    text = "word " * (cut // 5) + email + " " + "word " * (WINDOW_CHARS // 5 * 2) + "mail ann@example.org now"
    assert len(text) > 2 * WINDOW_CHARS - WINDOW_OVERLAP
    redacted = Redactor(params.redact).redact_text(text, {})
    assert email not in redacted and "ann@example.org" not in redacted
    assert redacted.count("<EMAIL_ADDRESS_1>") == 1 and redacted.count("<EMAIL_ADDRESS_2>") == 1


def test_a_date_is_redacted_when_it_is_a_persons_not_when_it_dates_a_release_or_a_log_line(redactor):
    personal = ["I was born on 12/03/1984 in Leeds.", "DOB: 1984-03-12", "my appointment on 2024-05-02"]
    other = ["deprecated 2023-06-30, use v2 instead", "Why is my invoice for March higher?",
             "2024-03-05 12:00:01 INFO job started", "released 2024-03-04 with the new API"]
    for text in personal:
        assert "<DATE_TIME_1>" in redactor.redact_text(text, {}), text
    for text in other:
        assert redactor.redact_text(text, {}) == text, text


@pytest.mark.slow
def test_in_a_process_with_other_threads_the_workers_are_spawned_and_write_the_same_bytes(
        params, replace, tmp_path):
    """Ingest redacts inside a Prefect task, whose process runs other threads: forking there is
    unsafe, so the pool spawns its workers, which must redact exactly as forked ones do."""
    import threading

    from pipelines.samples import pii_testset

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r, _ in pii_testset.generate(60, 7)))
    p = replace(params.redact, workers=2, chunk_records=20)
    redact.redact_file(p, src, tmp_path / "forked.jsonl")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert threading.active_count() > 1
        redact.redact_file(p, src, tmp_path / "spawned.jsonl")
    finally:
        stop.set()
        other.join()
    assert (tmp_path / "spawned.jsonl").read_bytes() == (tmp_path / "forked.jsonl").read_bytes()
