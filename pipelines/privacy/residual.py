"""The residual scan: after redaction, what still looks like personal data or a secret.

It looks with other eyes than the redaction did: detect-secrets' own ad-hoc line scan (every
regex plugin and its keyword detector, with its false-positive filters) and broad regexes of this
module, not Presidio. A record with a hit gets `"_residual": [TYPE, ...]` (sorted, unique) and
validate quarantines it (`residual_pii`); `redact_residual` replaces each flagged span with a typed
placeholder, so what is kept never holds the value. Placeholders such as `<EMAIL_ADDRESS_1>` are
blanked out before the scan, so they never count.

What is not personal data is told apart here too, for the redaction's recognizers and for the
scan: version strings (`v1.2.3.4`, `numpy==1.26.4.1`, a list of versions) are not IP addresses,
an analogy's `::` is not IPv6, a commit hash or a sha256 digest is not a key, a long integer, a
timestamp or an order number is not a phone number.
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
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w.]*\d)")
# Colon-separated hex groups; ip_spans keeps those that are IPv6 addresses with real groups.
IPV6_LIKE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
PEM_HEADER = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY")
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
                       r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|.*)", re.DOTALL)
URL_PASSWORD = re.compile(r"(?<=://)[^\s:/?#@<>]+:[^\s/?#@<>]+(?=@)")
# A long token mixing letters and digits: how API keys and tokens look, whatever the provider.
KEY_LIKE = re.compile(r"(?<![\w/-])(?=[\w\-]*\d)(?=[\w\-]*[A-Za-z])[A-Za-z0-9_\-]{24,}(?![\w-])")
# Lower-case hex of the lengths git and sha256sum print: a commit (short or full) or a digest,
# which says what a file or commit is, not who anyone is. Keys are longer, mixed-case or base64.
HASH_LIKE = re.compile(r"[0-9a-f]{7,12}|[0-9a-f]{40}|[0-9a-f]{64}")
MIN_DIGITS_PHONE = 9      # fewer digits in a run is an order number, an amount, a year
# What stands right before a version: `v1.2.3.4`, `==1.2.3.4`, `@1.2.3.4`, `torch-1.2.3.4`.
VERSION_PREFIX = re.compile(r"(?:[vV]|[=<>~!^@]=?|[\w)]-|_)\s*$")
# Words after which a dotted number is a version (`version 10.2.3.4`, `bumped to 1.0.0.1`).
VERSION_WORDS = re.compile(r"(?i)\b(?:version|ver|release[sd]?|build|tag|rev|revision|firmware|"
                           r"driver|bump(?:ed)?|upgrad(?:e[sd]?|ing)|downgrad(?:e[sd]?|ing)|"
                           r"updat(?:e[sd]?|ing)|patch|"
                           r"pin(?:ned)?|requires?)\W{0,3}(?:\S+\s+){0,1}$")
# The same words anywhere earlier on the line: "firmware is 4.12.0.7 on the old units and 4.14.2.1".
LINE_VERSION_WORDS = re.compile(r"(?i)\b(?:version|versions|release[sd]?|firmware|changelog|requires?|"
                                r"upgrad(?:e[sd]?|ing)|downgrad(?:e[sd]?|ing)|bump(?:ed)?)\b")
# Words after which a dotted number is an address, which outweigh VERSION_WORDS' from/to.
IP_WORDS = re.compile(r"(?i)\b(?:ip|ips|ipv4|address|addr|host|hostname|server|client|gateway|"
                      r"dns|subnet|proxy|inet|src|dst|remote|peer|ping|ssh|connect(?:ed|ing)?|"
                      r"listen(?:ing)?|bind|nameserver|route)\b")
# A dotted number of three or more than four parts: where one stands beside it, it is a list of
# versions (a decimal such as 45.99 says nothing).
OTHER_VERSION = re.compile(r"(?<![\w.])\d+\.\d+\.(?:\d{1,3}|x)(?![\w.]*\d)|(?<![\w.])\d+(?:\.\d+){4,}")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer identification number ranges and lengths of the card brands in circulation, from the
# brands' published ranges (ISO/IEC 7812 registrations as summarised by the brands and by
# Wikipedia's "Payment card number"): (first digits low, high, lengths).
CARD_IIN_RANGES = [
    ("visa", "4", "4", range(13, 20)),
    ("mastercard", "51", "55", [16]), ("mastercard", "2221", "2720", [16]),
    ("amex", "34", "34", [15]), ("amex", "37", "37", [15]),
    ("discover", "6011", "6011", range(16, 20)), ("discover", "644", "649", range(16, 20)),
    ("discover", "65", "65", range(16, 20)),
    ("jcb", "3528", "3589", range(15, 20)), ("jcb", "2131", "2131", [15]),
    ("jcb", "1800", "1800", [15]),
    ("diners", "300", "305", range(14, 20)), ("diners", "36", "36", range(14, 20)),
    ("diners", "38", "39", range(14, 20)),
    ("maestro", "50", "50", range(12, 20)), ("maestro", "56", "69", range(12, 20)),
    ("unionpay", "62", "62", range(16, 20)), ("unionpay", "81", "81", range(16, 20)),
    ("rupay", "60", "60", range(16, 20)), ("rupay", "508", "508", range(16, 20)),
    ("rupay", "82", "82", [16]), ("rupay", "353", "353", [16]), ("rupay", "356", "356", [16]),
    ("mir", "2200", "2204", range(16, 20)),
    ("uatp", "1", "1", [15]),
    ("verve", "506099", "506198", [16, 18, 19]), ("verve", "650002", "650027", [16, 18, 19]),
    ("troy", "9792", "9792", [16]),
]


def card_brand(digits: str) -> str | None:
    """The brand whose IIN range and length fit `digits`, or None."""
    for brand, low, high, lengths in CARD_IIN_RANGES:
        head = digits[:len(low)]
        if len(digits) in lengths and low <= head <= high:
            return brand
    return None


def iban_ok(candidate: str) -> bool:
    s = re.sub(r"[ -]", "", candidate)
    if not 15 <= len(s) <= 34:
        return False
    numeric = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(numeric) % 97 == 1


def is_version(text: str, start: int, end: int) -> bool:
    """Whether the four-part dotted number at text[start:end] reads as a version, not an IPv4
    address: a version's prefix or word before it, a pre-release or file suffix after it, a
    first part of 0, or other dotted numbers of other lengths on its line (a list of versions)."""
    value = text[start:end]
    before = text[max(0, start - 40):start]
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if value.startswith("0."):
        return True
    if VERSION_PREFIX.search(before):
        return True
    if re.match(r"(?i)(?:-?(?:alpha|beta|rc|dev|post|pre|snapshot|final)|[ab]\d|\+\w|"
                r"\.(?:tar|zip|whl|jar|tgz|exe|msi|dmg|deb|rpm|gz))", text[end:end + 12]):
        return True
    if IP_WORDS.search(text[max(line_start, start - 40):start]) or text[end:end + 1] in (":", "/"):
        return False
    if VERSION_WORDS.search(before) or LINE_VERSION_WORDS.search(text[line_start:start]):
        return True
    line = text[line_start:start] + " " * (end - start) + text[end:line_end]
    if re.search(r"(?:\b[vV]|[=<>~^@]=?)\d+(?:\.\d+){3}(?!\.?\d)", line):
        return True                 # another four-part number on the line is a version
    return any(not IPV4.fullmatch(m.group()) for m in OTHER_VERSION.finditer(line))


def is_identifier(token: str) -> bool:
    """A name of code or a file, not a key: snake- or kebab-case whose every part is a word or
    at most 5 characters (`aws_s3_bucket_lifecycle_configuration`, `cp311-manylinux_2_17_x86_64`).
    A key has a long part mixing letters and digits."""
    return all(part.isalpha() or len(part) <= 5 for part in re.split(r"[_-]+", token))


def ip_spans(text: str) -> list[tuple[int, int]]:
    """IPv4 addresses (each part at most 255) that are not versions, and IPv6 addresses with at
    least three groups of hex digits, one digit among them: `::`, `a::b` of C++ and "Night : Day ::
    Right : Left" are not addresses."""
    spans = []
    for m in IPV4.finditer(text):
        address = m.group().split("/")[0]
        if address.startswith(("127.", "0.")):
            continue                # this machine or "any address": nobody's
        if all(int(octet) <= 255 for octet in address.split(".")) and not is_version(
                text, m.start(), m.start() + len(address)):
            spans.append((m.start(), m.end()))
    if "::" in text or text.count(":") >= 3:
        for m in IPV6_LIKE.finditer(text):
            address = m.group().split("%")[0]
            groups = [g for g in address.split(":") if g]
            if len(groups) < 3 or not re.search(r"\d", address):
                continue
            try:
                ipaddress.IPv6Address(address)
            except ValueError:
                continue
            spans.append((m.start(), m.end()))
    return spans


def _digit_run_type(text: str, m: re.Match) -> str | None:
    run = m.group()
    digits = re.sub(r"\D", "", run)
    if re.fullmatch(r"\d{3}([- .])\d{2}\1\d{4}", run):
        return "US_SSN"
    if 12 <= len(digits) <= 19 and luhn_ok(digits) and (run.startswith("+") is False):
        if card_brand(digits):
            return "CREDIT_CARD"
    if len(digits) < MIN_DIGITS_PHONE or len(digits) > 15 or IPV4.fullmatch(run):
        return None
    # A phone number is written with a + or in groups; a bare integer is an id, a count or a
    # timestamp, and a date-time (2024-03-05 12:00) is neither.
    if re.search(r"\d{4}[-/.]\d{2}[-/.]\d{2}|\d{2}[-/.]\d{2}[-/.]\d{4}", run):
        return None
    groups = re.findall(r"\d+", run)
    if len(groups) > 1 and len(groups[-1]) < 2:
        return None                 # "1099511627776 (2^40)": a number, then another
    if run.startswith("+") or re.search(r"\d[ ()\-/]+\d", run) or run.startswith("("):
        if "." in run and not re.fullmatch(r"\d{3}\.\d{3}\.\d{4}", run):
            return None
        return "PHONE_NUMBER"
    return None


def scan_spans(text: str) -> list[tuple[str, int, int]]:
    """(entity type, start, end) of everything in one redacted text that still looks present."""
    if not text:
        return []
    text = PLACEHOLDER.sub(lambda m: " " * len(m.group()), text)
    found: list[tuple[str, int, int]] = []
    if "@" in text:
        found += [("EMAIL_ADDRESS", m.start(), m.end()) for m in EMAIL.finditer(text)]
    if "://" in text:
        found += [("PASSWORD", m.start(), m.end()) for m in URL_PASSWORD.finditer(text)]
    if "PRIVATE KEY" in text:
        found += [("PRIVATE_KEY", m.start(), m.end()) for m in PEM_BLOCK.finditer(text)]
    found += [("IBAN_CODE", m.start(), m.end()) for m in IBAN_LIKE.finditer(text)
              if iban_ok(m.group())]
    found += [("IP_ADDRESS", s, e) for s, e in ip_spans(text)]
    for m in DIGIT_RUN.finditer(text):
        entity = _digit_run_type(text, m)
        if entity:
            found.append((entity, m.start(), m.end()))
    found += [("API_KEY", m.start(), m.end()) for m in KEY_LIKE.finditer(text)
              if not HASH_LIKE.fullmatch(m.group()) and not is_identifier(m.group())]
    found += _detect_secrets(text)
    return found


def scan_text(text: str) -> set[str]:
    """Entity types that still look present in one redacted text."""
    return {entity for entity, _, _ in scan_spans(text)}


def _detect_secrets(text: str) -> list[tuple[str, int, int]]:
    """detect-secrets' plugins on every line: all its provider regexes (the redaction used only
    some) and its keyword detector (`password = "..."`, `api_key: ...`); each secret value they
    report is found where it stands in the line (the whole line where it cannot be found)."""
    plugins = _secret_plugins()
    found = []
    offset = 0
    for line in text.splitlines(keepends=True):
        if len(line.strip()) >= 8:
            for plugin in plugins:
                entity = SECRET_TYPES.get(plugin.secret_type, "API_KEY")
                for secret in plugin.analyze_string(line):
                    value = secret if isinstance(secret, str) else getattr(secret, "secret_value", None)
                    if value and HASH_LIKE.fullmatch(value):
                        continue
                    at = line.find(value) if value else -1
                    if at < 0:
                        found.append((entity, offset, offset + len(line.rstrip("\r\n"))))
                    while at >= 0:
                        found.append((entity, offset + at, offset + at + len(value)))
                        at = line.find(value, at + len(value))
        offset += len(line)
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


def placeholder(placeholders: dict[tuple[str, str], str], entity: str, value: str) -> str:
    """The placeholder of `value` within one record: `<TYPE_n>`, n counting the values of that type
    the record's `placeholders` hold so far; the same value keeps its placeholder."""
    key = (entity, value)
    if key not in placeholders:
        n = 1 + sum(1 for t, _ in placeholders if t == entity)
        placeholders[key] = f"<{entity}_{n}>"
    return placeholders[key]


def redact_residual(text: str, placeholders: dict[tuple[str, str], str]) -> tuple[str, set[str]]:
    """Replace every span the scan flags in `text` with a typed placeholder `<TYPE_n>`.

    Numbering is shared with `placeholders`, as in pipelines/privacy/redact.py's Redactor.redact_text: the
    key (entity type, value) maps to `<TYPE_n>`, n being 1 + the number of keys of that type
    already there, so a value keeps its placeholder across a record. Where spans overlap, the
    one that starts first (the longer at the same start) is replaced. Returns the new text and
    the types found."""
    spans = sorted(scan_spans(text), key=lambda s: (s[1], -s[2]))
    if not spans:
        return text, set()
    kept: list[tuple[str, int, int]] = []
    for entity, start, end in spans:
        if kept and start < kept[-1][2]:
            continue
        kept.append((entity, start, end))
    out, last = [], 0
    for entity, start, end in kept:
        out += [text[last:start], placeholder(placeholders, entity, text[start:end])]
        last = end
    out.append(text[last:])
    return "".join(out), {entity for entity, _, _ in kept}
