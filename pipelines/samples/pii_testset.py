"""A seeded, labeled set of realistic records with personal data and secrets in many formats.

Records are the sample generator's support dialogues (pipelines/samples/sample_logs.py), but every value
that identifies someone is drawn here, in one of many written formats, and recorded: each record
knows exactly what it holds. Some records carry an extra sentence with a type the templates lack
(SSNs, IP addresses, JWTs, PEM keys, passwords in URLs, more providers' keys). Used by the tests
(nothing of the must-vanish types may survive redaction) and by benchmarks/redact_bench.py (recall
per type, side by side with vanilla Presidio).

    python -m pipelines.samples.pii_testset --records 1000 --out labeled.jsonl
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import random
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.samples import sample_logs

# National identity, tax and health numbers, each with its check digits computed here from the
# issuing authority's published algorithm (not from the recognizers that find them).
NATIONAL_IDS = ["UK_NHS", "UK_NINO", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE", "AU_TFN", "IN_AADHAAR",
                "IN_PAN", "SG_NRIC_FIN", "PL_PESEL"]
# Types that must never survive redaction (no NER model needed to find them).
MUST_VANISH = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
               "API_KEY", "PRIVATE_KEY", "PASSWORD", "STREET_ADDRESS", *NATIONAL_IDS]
# Found only by an NER model: recall is measured only when one is configured.
NEEDS_NER = ["PERSON"]

ALNUM = string.ascii_letters + string.digits


@dataclass
class Injected:
    """One value put into a record: its type, written format, and the exact text."""
    entity: str
    format: str
    value: str
    # Parts that must be gone after redaction (default: the value itself).
    parts: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.parts:
            self.parts = [self.value]


def _rand(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


# Regions whose example numbers (libphonenumber's metadata: one real-format mobile and fixed-line
# number per region) are written in the labeled set, in their national, international and E.164
# layouts, with the subscriber digits redrawn while the number stays valid.
EXAMPLE_PHONE_REGIONS = ["US", "CA", "GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "ES", "PT",
                         "IT", "PL", "CZ", "SE", "NO", "DK", "FI", "RU", "UA", "TR", "GR", "RO",
                         "HU", "IL", "AE", "SA", "EG", "ZA", "NG", "KE", "IN", "PK", "BD", "CN",
                         "HK", "TW", "JP", "KR", "SG", "MY", "ID", "TH", "VN", "PH", "AU", "NZ",
                         "BR", "MX", "AR", "CO", "CL", "PE"]


def example_phone(rng: random.Random) -> Injected:
    """A number in the format of libphonenumber's example for a region and type, its last digits
    redrawn until it is still valid (the example itself when no redraw is)."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    region = rng.choice(EXAMPLE_PHONE_REGIONS)
    kind, number_type = rng.choice([("mobile", PhoneNumberType.MOBILE),
                                    ("fixed", PhoneNumberType.FIXED_LINE)])
    number = phonenumbers.example_number_for_type(region, number_type)
    national = str(number.national_number)
    for _ in range(20):
        candidate = phonenumbers.parse(
            f"+{number.country_code}{national[:-4]}{rng.randint(0, 9999):04d}")
        if phonenumbers.is_valid_number(candidate):
            number = candidate
            break
    layout, fmt = rng.choice([("national", PhoneNumberFormat.NATIONAL),
                              ("international", PhoneNumberFormat.INTERNATIONAL),
                              ("e164", PhoneNumberFormat.E164)])
    return Injected("PHONE_NUMBER", f"{region.lower()}_{kind}_{layout}",
                    phonenumbers.format_number(number, fmt))


def phone(rng: random.Random) -> Injected:
    if rng.random() < 0.5:
        return example_phone(rng)
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(1000, 9999)
    fmt, value = rng.choice([
        ("e164", f"+1{a}{b}{c}"),
        ("us_intl_spaces", f"+1 {a} {b} {c}"),
        ("us_intl_dashes", f"+1-{a}-{b}-{c}"),
        ("us_parens", f"({a}) {b}-{c}"),
        ("us_555", f"(555) {rng.randint(100, 199)}-{c}"),
        ("us_dots", f"{a}.{b}.{c}"),
        ("us_dashes", f"{a}-{b}-{c}"),
        ("uk_london", f"+44 20 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}"),
        ("uk_mobile", f"+44 7{rng.randint(100, 999)} {rng.randint(100000, 999999)}"),
        ("uk_national", f"020 {rng.randint(7000, 8999)} {rng.randint(1000, 9999)}"),
        ("de_intl", f"+49 30 {rng.randint(1000000, 99999999)}"),
        ("fr_intl", f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} "
                    f"{rng.randint(10, 99)}"),
        ("in_intl", f"+91 {rng.randint(70000, 99999)} {rng.randint(10000, 99999)}"),
    ])
    return Injected("PHONE_NUMBER", fmt, value)


# Card brands: issuer identification number ranges and lengths as the brands publish them
# (summarised in ISO/IEC 7812 registers and Wikipedia's "Payment card number"), and how the
# number is printed on the card. (brand, IIN low, IIN high, lengths)
CARD_BRANDS = [
    ("visa", 4, 4, [13, 16, 19]), ("mastercard", 51, 55, [16]), ("mastercard_2series", 2221, 2720, [16]),
    ("amex", 34, 34, [15]), ("amex", 37, 37, [15]), ("discover", 6011, 6011, [16, 19]),
    ("discover", 644, 649, [16]), ("discover", 65, 65, [16, 19]), ("jcb", 3528, 3589, [15, 16, 19]),
    ("diners", 300, 305, [14, 16]), ("diners", 36, 36, [14]), ("diners", 38, 39, [14, 16]),
    ("maestro", 5018, 5018, [12, 13, 15, 16, 19]), ("maestro", 6759, 6759, [12, 16, 18, 19]),
    ("maestro", 5020, 5020, [12, 16]), ("maestro", 6304, 6304, [16, 19]),
    ("unionpay", 62, 62, [16, 17, 18, 19]), ("rupay", 60, 60, [16]), ("rupay", 508, 508, [16]),
    ("mir", 2200, 2204, [16]),
]


def _card_groups(length: int, brand: str) -> tuple[int, ...]:
    if brand == "amex" or (brand == "jcb" and length == 15):
        return (4, 6, 5)
    if brand == "diners" and length == 14:
        return (4, 6, 4)
    return tuple([4] * (length // 4) + ([length % 4] if length % 4 else []))


def card(rng: random.Random) -> Injected:
    brand, low, high, lengths = rng.choice(CARD_BRANDS)
    length = rng.choice(lengths)
    prefix = str(rng.randint(low, high))
    number = sample_logs.luhn_complete(prefix + _rand(rng, string.digits, length - len(prefix) - 1))
    grouping = _card_groups(length, brand.split("_")[0])
    fmt = f"{brand}_{length}"
    groups, i = [], 0
    for g in grouping:
        groups.append(number[i:i + g])
        i += g
    sep_name, sep = rng.choice([("spaces", " "), ("dashes", "-"), ("plain", "")])
    return Injected("CREDIT_CARD", f"{fmt}_{sep_name}", sep.join(groups))


# (country, BBAN length, BBAN characters): digits, or letters and digits.
IBAN_COUNTRIES = [("DE", 18, string.digits), ("GB", 18, None), ("FR", 23, string.digits),
                  ("ES", 20, string.digits), ("NL", 14, None), ("IT", 23, None),
                  ("CH", 17, string.digits), ("BE", 12, string.digits)]


def iban(rng: random.Random) -> Injected:
    country, length, chars = rng.choice(IBAN_COUNTRIES)
    if chars is None:  # a bank code of letters, then digits (GB: NWBK..., NL: ABNA..., IT: X...)
        letters = 1 if country == "IT" else 4
        bban = _rand(rng, string.ascii_uppercase, letters) + _rand(rng, string.digits, length - letters)
    else:
        bban = _rand(rng, chars, length)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if rng.random() < 0.5:
        return Injected("IBAN_CODE", f"{country.lower()}_compact", compact)
    return Injected("IBAN_CODE", f"{country.lower()}_spaced",
                    " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)))


def ssn(rng: random.Random) -> tuple[Injected, str]:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    digits = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    fmt, value = rng.choice([("dashes", f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"),
                             ("spaces", f"{digits[:3]} {digits[3:5]} {digits[5:]}"),
                             ("dots", f"{digits[:3]}.{digits[3:5]}.{digits[5:]}"),
                             ("plain_after_keyword", digits)])
    sentence = rng.choice(["My SSN is {v}.", "For the tax form: social security number {v}.",
                           "ssn: {v}"])
    return Injected("US_SSN", fmt, value), sentence


VERHOEFF_D = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
              [2, 3, 4, 0, 1, 7, 8, 9, 5, 6], [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
              [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
              [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
              [8, 7, 6, 5, 9, 3, 2, 1, 0, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
VERHOEFF_P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
              [5, 8, 0, 3, 7, 9, 6, 1, 4, 2], [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
              [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
              [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]
VERHOEFF_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]
# Italian codice fiscale: values of characters in odd and even positions (DM 23/12/1976).
IT_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]


def _verhoeff_digit(digits: str) -> str:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = VERHOEFF_D[c][VERHOEFF_P[(i + 1) % 8][int(ch)]]
    return str(VERHOEFF_INV[c])


def _it_value(ch: str, odd: bool) -> int:
    index = int(ch) if ch.isdigit() else ord(ch) - 65
    return IT_ODD[index] if odd else index


def national_id(rng: random.Random) -> tuple[Injected, str]:
    """A national identity, tax or health number with valid check characters, and a sentence."""
    entity = rng.choice(NATIONAL_IDS)
    digits = lambda n: _rand(rng, string.digits, n)  # noqa: E731
    if entity == "UK_NHS":
        while True:
            body = str(rng.randint(4, 9)) + digits(8)
            check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(body)) % 11
            if check != 10:
                value = body + str(check % 11)
                break
        fmt, value = rng.choice([("spaced", f"{value[:3]} {value[3:6]} {value[6:]}"), ("plain", value)])
        sentence = rng.choice(["My NHS number is {v}.", "NHS no. {v}"])
    elif entity == "UK_NINO":
        prefix = rng.choice(["AB", "CE", "JG", "PR", "SW", "TZ"])
        body = digits(6)
        fmt, value = rng.choice([("compact", f"{prefix}{body}{rng.choice('ABCD')}"),
                                 ("spaced", f"{prefix} {body[:2]} {body[2:4]} {body[4:]} {rng.choice('ABCD')}")])
        sentence = rng.choice(["My national insurance number is {v}.", "NINO: {v}"])
    elif entity == "ES_NIF":
        body = digits(8)
        fmt, value = "dni", body + "TRWAGMYFPDXBNJZSQVHLCKE"[int(body) % 23]
        sentence = rng.choice(["Mi DNI es {v}.", "My NIF is {v}"])
    elif entity == "ES_NIE":
        first, body = rng.choice("XYZ"), digits(7)
        fmt, value = "nie", first + body + "TRWAGMYFPDXBNJZSQVHLCKE"[int(f"{'XYZ'.index(first)}{body}") % 23]
        sentence = rng.choice(["My NIE is {v}.", "NIE: {v}"])
    elif entity == "IT_FISCAL_CODE":
        letters = lambda n: _rand(rng, "BCDFGHLMNPRSTVZ", n)  # noqa: E731
        body = (letters(3) + letters(3) + f"{rng.randint(40, 99):02d}" + rng.choice("ABCDEHLMPRST")
                + f"{rng.randint(1, 28) + rng.choice([0, 40]):02d}" + rng.choice("ABCDEFGHLM")
                + f"{rng.randint(1, 999):03d}")
        total = sum(_it_value(ch, i % 2 == 0) for i, ch in enumerate(body))
        fmt, value = "codice_fiscale", body + chr(65 + total % 26)
        sentence = rng.choice(["Il mio codice fiscale è {v}.", "My fiscal code: {v}"])
    elif entity == "AU_TFN":
        while True:
            body = digits(8)
            for last in range(10):
                tfn = body + str(last)
                if sum(int(d) * w for d, w in zip(tfn, [1, 4, 3, 7, 5, 8, 6, 9, 10])) % 11 == 0:
                    break
            else:
                continue
            break
        fmt, value = rng.choice([("spaced", f"{tfn[:3]} {tfn[3:6]} {tfn[6:]}"), ("plain", tfn)])
        sentence = rng.choice(["My TFN is {v}.", "Tax file number: {v}"])
    elif entity == "IN_AADHAAR":
        body = str(rng.randint(2, 9)) + digits(10)
        number = body + _verhoeff_digit(body)
        fmt, value = rng.choice([("spaced", f"{number[:4]} {number[4:8]} {number[8:]}"), ("plain", number)])
        sentence = rng.choice(["My Aadhaar number is {v}.", "aadhaar: {v}"])
    elif entity == "IN_PAN":
        fmt, value = "pan", (_rand(rng, string.ascii_uppercase, 3) + rng.choice("PCHFAT")
                             + _rand(rng, string.ascii_uppercase, 1) + digits(4)
                             + _rand(rng, string.ascii_uppercase, 1))
        sentence = rng.choice(["My PAN is {v}.", "PAN card: {v}"])
    elif entity == "SG_NRIC_FIN":
        first, body = rng.choice("STFG"), digits(7)
        total = sum(int(d) * w for d, w in zip(body, [2, 7, 6, 5, 4, 3, 2])) + (4 if first in "TG" else 0)
        table = "JZIHGFEDCBA" if first in "ST" else "XWUTRQPNMLK"
        fmt, value = "nric", first + body + table[total % 11]
        sentence = rng.choice(["My NRIC is {v}.", "FIN {v}"])
    else:  # PL_PESEL
        year, month, day = rng.randint(1950, 2009), rng.randint(1, 12), rng.randint(1, 28)
        body = f"{year % 100:02d}{month + (20 if year >= 2000 else 0):02d}{day:02d}" + digits(4)
        check = (10 - sum(int(d) * w for d, w in zip(body, [1, 3, 7, 9] * 3)) % 10) % 10
        fmt, value = "pesel", body + str(check)
        sentence = rng.choice(["Mój PESEL to {v}.", "PESEL: {v}"])
    return Injected(entity, fmt, value), sentence


def ip(rng: random.Random) -> Injected:
    fmt, value = rng.choice([
        ("ipv4_private", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
        ("ipv4_public", f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                        f"{rng.randint(1, 254)}"),
        ("ipv6_full", ":".join(f"{rng.randint(0, 65535):x}" for _ in range(8))),
        ("ipv6_compressed", f"2001:db8::{rng.randint(1, 65535):x}:{rng.randint(1, 65535):x}"),
        ("ipv6_link_local", f"fe80::{rng.randint(1, 65535):x}:{rng.randint(1, 255):x}ff:"
                            f"fe{rng.randint(16, 255):x}:{rng.randint(1, 65535):x}"),
    ])
    return Injected("IP_ADDRESS", fmt, value)


def email(rng: random.Random, first: str, last: str) -> Injected:
    fmt, value = rng.choice([
        ("first_last", f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com"),
        ("plus_tag", f"{first.lower()}+orders@mail.example.org"),
        ("subdomain", f"{first[0].lower()}{last.lower()}@eu.corp.example.co.uk"),
        ("uppercase", f"{first.upper()}.{last.upper()}@EXAMPLE.NET"),
    ])
    return Injected("EMAIL_ADDRESS", fmt, value)


def _jwt(rng: random.Random) -> str:
    def b64(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = b64({"sub": str(rng.randint(10**6, 10**7)), "name": "user", "iat": 1767225600})
    return f"{header}.{payload}.{_rand(rng, ALNUM + '-_', 43)}"


def _pem(rng: random.Random) -> tuple[str, list[str]]:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    body = [_rand(rng, ALNUM + "+/", 64) for _ in range(rng.randint(3, 6))]
    pem = f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(body) + f"\n-----END {kind}PRIVATE KEY-----"
    return pem, body


def secret(rng: random.Random) -> tuple[Injected, str]:
    """A key, token or password, and a sentence to put it in."""
    kind = rng.choice(["aws", "github", "github_fine_grained", "slack", "openai", "openai_project",
                       "stripe", "google", "jwt", "pem", "url_password", "sendgrid", "gitlab"])
    sentence = rng.choice(["Here is my key: {v}", "I set the token to {v} but it fails.",
                           "config: {v}", "Is {v} still valid?"])
    if kind == "aws":
        value = "AKIA" + _rand(rng, string.ascii_uppercase + string.digits, 16)
    elif kind == "github":
        value = "ghp_" + _rand(rng, ALNUM, 36)
    elif kind == "github_fine_grained":
        value = "github_pat_" + _rand(rng, ALNUM, 22) + "_" + _rand(rng, ALNUM, 59)
    elif kind == "slack":
        value = f"xoxb-{rng.randint(10**9, 10**10)}-{rng.randint(10**9, 10**10)}-{_rand(rng, ALNUM, 24)}"
    elif kind == "openai":
        value = "sk-" + _rand(rng, ALNUM, 48)
    elif kind == "openai_project":
        value = "sk-proj-" + _rand(rng, ALNUM + "-_", 64)
    elif kind == "stripe":
        value = rng.choice(["sk_live_", "sk_test_", "rk_live_"]) + _rand(rng, ALNUM, 32)
    elif kind == "google":
        value = "AIza" + _rand(rng, ALNUM + "-_", 35)
    elif kind == "jwt":
        value = _jwt(rng)
    elif kind == "sendgrid":
        value = "SG." + _rand(rng, ALNUM + "-_", 22) + "." + _rand(rng, ALNUM + "-_", 43)
    elif kind == "gitlab":
        value = "glpat-" + _rand(rng, ALNUM + "-_", 20)
    elif kind == "pem":
        value, body = _pem(rng)
        return Injected("PRIVATE_KEY", "pem", value, parts=body), "My deploy key:\n{v}\nwhy is it rejected?"
    else:  # url_password
        password = _rand(rng, ALNUM, 12)
        host = rng.choice(["db.internal:5432/app", "example.com/admin", "10.1.2.3:8080"])
        scheme = rng.choice(["https", "postgres", "ftp"])
        value = f"{scheme}://admin:{password}@{host}"
        return (Injected("PASSWORD", f"url_{scheme}", value, parts=[f"admin:{password}", password]),
                rng.choice(["I connect with {v} and it times out.", "URL: {v}"]))
    return Injected("API_KEY", kind, value), sentence


def address(rng: random.Random) -> Injected:
    street = rng.choice(sample_logs.STREETS + ["Sunset Boulevard", "Cedar Drive", "Baker Street",
                                               "Pine Court", "Lake Shore Drive"])
    number = rng.randint(1, 9999)
    fmt, value = rng.choice([("number_street_city", f"{number} {street}, {rng.choice(sample_logs.CITIES)}"),
                             ("number_street", f"{number} {street}")])
    return Injected("STREET_ADDRESS", fmt, value, parts=[f"{number} {street}"])


def labeled_record(rng: random.Random, day: dt.date, index: int) -> tuple[dict, list[Injected]]:
    """A support dialogue whose personal values are drawn (and recorded) here."""
    topic = rng.choice(sample_logs.TOPICS)
    user_t, assistant_t = rng.choice(sample_logs.TEMPLATES[topic])
    slots = sample_logs.fill_slots(rng)  # the non-personal slots: orders, products, plans ...
    first, last = rng.choice(sample_logs.FIRST_NAMES), rng.choice(sample_logs.LAST_NAMES)
    drawn = {"name": Injected("PERSON", "first_last", f"{first} {last}"),
             "email": email(rng, first, last), "phone": phone(rng), "card": card(rng),
             "iban": iban(rng), "address": address(rng)}
    api = secret(rng)[0]
    while api.entity != "API_KEY":
        api = secret(rng)[0]
    drawn["api_key"] = api
    injected = [inj for slot, inj in drawn.items() if "{" + slot + "}" in user_t + assistant_t]
    slots.update({slot: inj.value for slot, inj in drawn.items()})
    user_text = user_t.format(**slots)
    greeting = ""
    if rng.random() < 0.25:
        user_text = f"Hello, this is {first} {last}. " + user_text
        greeting = f"Hi {first}! "
        injected.append(drawn["name"])
    if rng.random() < 0.4:  # one more value, of a type the templates lack
        kind = rng.choice(["ssn", "ip", "secret", "phone", "card", "email", "iban", "national_id",
                           "national_id"])
        if kind == "ssn":
            extra, sentence = ssn(rng)
        elif kind == "national_id":
            extra, sentence = national_id(rng)
        elif kind == "ip":
            extra, sentence = ip(rng), rng.choice(["My IP is {v}.", "Requests from {v} are blocked."])
        elif kind == "secret":
            extra, sentence = secret(rng)
        else:
            extra = {"phone": phone, "card": card, "iban": iban}.get(kind, lambda r: email(r, first, last))(rng)
            sentence = rng.choice(["Also: {v}", "You can use {v} too.", "({v})"])
        user_text += " " + sentence.format(v=extra.value)
        injected.append(extra)
    ts = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=rng.randint(0, 86399))
    record = {
        "id": f"{day.isoformat()}-pii-{index:05d}",
        "timestamp": ts.replace(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "messages": [{"role": "system", "content": sample_logs.SYSTEM_PROMPT},
                     {"role": "user", "content": user_text},
                     {"role": "assistant", "content": greeting + assistant_t.format(**slots)}],
        "feedback": rng.choice(["up", "down", None]),
        "metadata": {"topic": topic, "channel": rng.choice(["web", "app", "email"])},
    }
    return record, injected


def generate(n: int, seed: int = 0) -> list[tuple[dict, list[Injected]]]:
    """`n` labeled records; the same seed gives the same records."""
    rng = random.Random(f"pii-testset-{seed}")
    day = dt.date(2026, 1, 5)
    return [labeled_record(rng, day, i) for i in range(n)]


def survivors(redacted: dict, injected: list[Injected]) -> list[Injected]:
    """The injected values of which some part is still in the redacted record."""
    text = "\n".join(m.get("content") or "" for m in redacted.get("messages") or [])
    return [inj for inj in injected if any(part in text for part in inj.parts)]


def recall(pairs: list[tuple[dict, list[Injected]]], redacted: list[dict],
           ner: bool = False) -> dict[str, dict]:
    """Per entity type and per format: injected, redacted, recall. PERSON without an NER model is
    reported as not measured."""
    totals: dict[str, dict] = {}
    for (_, injected), out in zip(pairs, redacted, strict=True):
        left = {id(i) for i in survivors(out, injected)}
        for inj in injected:
            for key in (inj.entity, f"{inj.entity}/{inj.format}"):
                t = totals.setdefault(key, {"injected": 0, "redacted": 0})
                t["injected"] += 1
                t["redacted"] += id(inj) not in left
    for key, t in totals.items():
        if key.split("/")[0] in NEEDS_NER and not ner:
            t.update(redacted=None, recall=None, note="not measured: no NER model configured")
        else:
            t["recall"] = round(t["redacted"] / t["injected"], 4)
    return dict(sorted(totals.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.samples.pii_testset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True,
                        help="JSONL: one {record, injected} object per line")
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as f:
        for record, injected in generate(args.records, args.seed):
            f.write(json.dumps({"record": record, "injected": [asdict(i) for i in injected]},
                               ensure_ascii=False) + "\n")
    print(f"{args.records} labeled records written to {args.out}")


if __name__ == "__main__":
    main()
