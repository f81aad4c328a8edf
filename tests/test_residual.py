"""The residual scan (pipelines/privacy/residual.py): where it finds what redaction left, and
`redact_residual`, which replaces those spans with typed placeholders."""

import pytest

from pipelines.privacy import residual


def test_redact_residual_replaces_each_span_numbering_with_the_records_placeholders():
    placeholders = {("EMAIL_ADDRESS", "a@example.com"): "<EMAIL_ADDRESS_1>",
                    ("PHONE_NUMBER", "+1 415 555 0199"): "<PHONE_NUMBER_1>"}
    text = "write b@example.com or a@example.com, card 4111-1111-1111-1111, again b@example.com"
    out, found = residual.redact_residual(text, placeholders)
    assert out == ("write <EMAIL_ADDRESS_2> or <EMAIL_ADDRESS_1>, card <CREDIT_CARD_1>, "
                   "again <EMAIL_ADDRESS_2>")
    assert found == {"EMAIL_ADDRESS", "CREDIT_CARD"}
    assert placeholders[("EMAIL_ADDRESS", "b@example.com")] == "<EMAIL_ADDRESS_2>"
    assert residual.scan_text(out) == set()


def test_redact_residual_leaves_a_clean_text_and_its_placeholders_as_they_are():
    text = "Mail <EMAIL_ADDRESS_1>, call <PHONE_NUMBER_2>, order #123456"
    assert residual.redact_residual(text, {}) == (text, set())


def test_a_secret_that_detect_secrets_reports_is_replaced_where_it_stands_in_the_line():
    out, found = residual.redact_residual('db:\n  password = "hunter2hunter2"  # prod', {})
    assert out == 'db:\n  password = "<PASSWORD_1>"  # prod' and found == {"PASSWORD"}
    out, found = residual.redact_residual("key AKIAABCDEFGHIJKLMNOP and AKIAABCDEFGHIJKLMNOP", {})
    assert out == "key <API_KEY_1> and <API_KEY_1>" and found == {"API_KEY"}


def test_a_pem_private_key_is_replaced_whole():
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAabc\nxyz789+/abc\n-----END RSA PRIVATE KEY-----"
    out, found = residual.redact_residual(f"key:\n{pem}\nthanks", {})
    assert out == "key:\n<PRIVATE_KEY_1>\nthanks" and found == {"PRIVATE_KEY"}


def test_scan_text_and_scan_record_still_say_what_is_left():
    record = {"messages": [{"role": "user", "content": "reach me at jo@example.com or 415 555 0199"},
                           {"role": "assistant", "content": "ip 10.1.2.3, ssn 123-45-6789"}]}
    assert residual.scan_record(record) == ["EMAIL_ADDRESS", "IP_ADDRESS", "PHONE_NUMBER", "US_SSN"]
    assert {e for e, _, _ in residual.scan_spans("jo@example.com")} == {"EMAIL_ADDRESS"}


@pytest.mark.parametrize("text", [
    "3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f",                            # a commit
    "git show 9fceb02",                                                    # a short commit
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",    # a sha256 digest
    "tokenizers-0.19.1-cp311-cp311-manylinux_2_17_x86_64.whl",
    "aws_s3_bucket_lifecycle_configuration",
])
def test_hashes_and_identifiers_are_not_keys(text):
    assert residual.scan_text(text) == set()


def test_a_random_token_is_still_a_key():
    assert residual.scan_text("token Zk3q9XfT2mWb7LpR4sV8nC1d") == {"API_KEY"}


@pytest.mark.parametrize("text", [
    "Night : Day :: Right : Left", "std::vector<int> a::b", "a :: b :: c", "12:30:45",
    "version 10.2.3.4", "v1.2.3.4", "numpy==1.26.4.1", "firmware 4.12.0.7 and 4.14.2.1",
    "1.2.3.4.5", "0.1.2.3", "fleet: 1.2.3, 1.2.3.4", "localhost 127.0.0.1",
])
def test_versions_analogies_and_code_are_not_ip_addresses(text):
    assert residual.scan_text(text) == set()


@pytest.mark.parametrize("text", [
    "My IP is 96.143.122.184.", "Requests from 10.20.30.40 are blocked", "ping 192.168.1.20",
    "2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "host 8.8.4.4:53",
])
def test_real_addresses_are_still_found(text):
    assert residual.scan_text(text) == {"IP_ADDRESS"}


@pytest.mark.parametrize("text", ["x = 1234567890123", "ts=1700000000123", "2^40 = 1099511627776 (2^40)",
                                  "2024-03-05 12:00:01", "order 4512893"])
def test_long_integers_and_timestamps_are_not_phone_numbers(text):
    assert residual.scan_text(text) == set()


@pytest.mark.parametrize("text, entity", [
    ("+44 20 7946 0958", "PHONE_NUMBER"), ("(415) 555-0199", "PHONE_NUMBER"),
    ("4111 1111 1111 1111 003", "CREDIT_CARD"), ("3782 822463 10005", "CREDIT_CARD"),
])
def test_phones_and_cards_are_still_found(text, entity):
    assert residual.scan_text(text) == {entity}
