import json
import subprocess
import sys

import pytest

from pipelines import redact
from pipelines.records import parse_line


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


def test_report_says_which_entity_types_were_not_looked_for(redactor):
    assert "PERSON" in redactor.report(0)["entities_not_looked_for"]


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
