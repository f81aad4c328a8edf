"""The residual scan: after redaction, what still looks like personal data or a secret.

It looks with other eyes than the redaction did: detect-secrets' own ad-hoc line scan (every
plugin, entropy and keyword detectors included, with its false-positive filters) and broad regexes
of this module, not Presidio. A record with a hit gets `"_residual": [TYPE, ...]` (sorted, unique)
and validate quarantines it (`residual_pii`). Placeholders such as `<EMAIL_ADDRESS_1>` are blanked
out before the scan, so they never count.
"""

from __future__ import annotations

import functools
import ipaddress
import re

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")

EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
# Runs of digits with at most two separators between them: phone numbers, cards, SSNs, accounts.
DIGIT_RUN = re.compile(r"(?<![\w.])\+?\d(?:[ ().\-/]{0,2}\d)+")
IBAN_LIKE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
IPV6_LIKE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
PEM_HEADER = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY")
URL_PASSWORD = re.compile(r"://[^\s:/?#@<>]+:[^\s/?#@<>]+@")
# A long token mixing letters and digits: how API keys and tokens look, whatever the provider.
KEY_LIKE = re.compile(r"(?<![\w/-])(?=[\w\-]*\d)(?=[\w\-]*[A-Za-z])[A-Za-z0-9_\-]{24,}(?![\w-])")
MIN_DIGITS_PHONE = 9      # fewer digits in a run is an order number, an amount, a year


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = re.sub(r"[ -]", "", candidate)
    if not 15 <= len(s) <= 34:
        return False
    numeric = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(numeric) % 97 == 1


def scan_text(text: str) -> set[str]:
    """Entity types that still look present in one redacted text."""
    if not text:
        return set()
    text = PLACEHOLDER.sub(" ", text)
    found: set[str] = set()
    if "@" in text and EMAIL.search(text):
        found.add("EMAIL_ADDRESS")
    if "://" in text and URL_PASSWORD.search(text):
        found.add("PASSWORD")
    if "PRIVATE KEY" in text and PEM_HEADER.search(text):
        found.add("PRIVATE_KEY")
    for m in IBAN_LIKE.finditer(text):
        if iban_ok(m.group()):
            found.add("IBAN_CODE")
    for m in IPV4.finditer(text):
        if all(int(octet) <= 255 for octet in m.group().split(".")):
            found.add("IP_ADDRESS")
    if "::" in text or text.count(":") >= 3:
        for m in IPV6_LIKE.finditer(text):
            try:
                ipaddress.IPv6Address(m.group().split("%")[0])
                found.add("IP_ADDRESS")
            except ValueError:
                pass
    for m in DIGIT_RUN.finditer(text):
        run = m.group()
        digits = re.sub(r"\D", "", run)
        if re.fullmatch(r"\d{3}([- .])\d{2}\1\d{4}", run):
            found.add("US_SSN")
        elif 13 <= len(digits) <= 19 and luhn_ok(digits):
            found.add("CREDIT_CARD")
        elif len(digits) >= MIN_DIGITS_PHONE and not IPV4.fullmatch(run):
            found.add("PHONE_NUMBER")
    if KEY_LIKE.search(text):
        found.add("API_KEY")
    found |= _detect_secrets(text)
    return found


def _detect_secrets(text: str) -> set[str]:
    """detect-secrets' plugins on every line: all its provider regexes (the redaction used only
    some) and its keyword detector (`password = "..."`, `api_key: ...`)."""
    plugins = _secret_plugins()
    found = set()
    for line in text.splitlines():
        if len(line) < 8:
            continue
        for plugin in plugins:
            for _ in plugin.analyze_string(line):
                found.add(SECRET_TYPES.get(plugin.secret_type, "API_KEY"))
                break
    return found


@functools.lru_cache(maxsize=1)
def _secret_plugins() -> list:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.keyword import KeywordDetector

    classes = get_mapping_from_secret_type_to_class().values()
    regex_based = [cls() for cls in classes
                   if issubclass(cls, RegexBasedDetector) and cls.__name__ != "IPPublicDetector"]
    return [*sorted(regex_based, key=lambda p: p.secret_type), KeywordDetector()]


SECRET_TYPES = {"Private Key": "PRIVATE_KEY", "Basic Auth Credentials": "PASSWORD",
                "Secret Keyword": "PASSWORD"}


def scan_record(record: dict) -> list[str]:
    """Sorted, unique entity types still visible in a redacted record's texts."""
    found: set[str] = set()
    if "_invalid" in record and isinstance(record["_invalid"], str):
        found |= scan_text(record["_invalid"])
    for m in record.get("messages") or []:
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            found |= scan_text(m["content"])
    return sorted(found)
