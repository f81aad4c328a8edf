"""The project's Presidio recognizers: secrets, phone formats, keyword-anchored SSNs, street addresses.

Presidio's predefined recognizers cover emails, cards, IBANs, IPs, SSNs, URLs and more; these add
what it has no recognizer for, or finds only in part:

- API keys and tokens: detect-secrets' provider plugins (AWS, GitHub, GitLab, Slack, Stripe,
  OpenAI, SendGrid, Twilio, ...) find them; each hit is widened to the whole key-like token,
  since several of its patterns match only a key's prefix (Stripe's `sk_live_` plus 24 characters,
  lowercase-only Slack tokens, a JWT without its signature). Formats no plugin covers (Google
  `AIza...`, OpenAI project keys, GitHub fine-grained tokens, Stripe test keys, whole JWTs) are
  patterns of our own.
- PEM private keys over several lines, and passwords in URLs (`scheme://user:pass@host`).
- Phone numbers in the common written formats, including numbers that libphonenumber rejects as
  unassigned (555 numbers, made-up area codes): leaving those in would still leak what a user typed.
- Nine-digit SSNs next to the word SSN (Presidio's context boost needs lemmas a blank spaCy
  pipeline does not produce).
- In place of Presidio's own (REPLACED_PREDEFINED): payment cards of every brand and length
  (12-19 digits, IIN ranges, Luhn); phone numbers through libphonenumber's matcher over
  PHONE_REGIONS; URLs with a scheme, `www.` or a known TLD where a domain stands (not
  `result.append`); IP addresses that are not versions; dates that are not timestamps.
- National identity, tax and health numbers of other countries (Presidio's recognizers, loaded
  for English; the purely numeric ones only next to a word that names them).
"""

from __future__ import annotations

import functools
import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult

from pipelines.privacy import residual

# detect-secrets plugins whose regexes name a provider's key format. The keyword- and
# entropy-based plugins are left to the residual scan (pipelines/privacy/residual.py), so that it looks
# with different eyes from the ones that redacted.
DETECT_SECRETS_PLUGINS = [
    "AWSKeyDetector", "AzureStorageKeyDetector", "DiscordBotTokenDetector", "GitHubTokenDetector",
    "GitLabTokenDetector", "JwtTokenDetector", "MailchimpDetector", "NpmDetector", "OpenAIDetector",
    "PypiTokenDetector", "SendGridDetector", "SlackDetector", "SquareOAuthDetector",
    "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
]
# Characters a key or token is made of: a hit is widened over them to the whole token.
TOKEN_CHAR = re.compile(r"[A-Za-z0-9_\-+/=.]")

# Formats no detect-secrets plugin covers in full. (name, regex, score)
OWN_KEY_PATTERNS = [
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", 0.9),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", 0.9),
    ("github_fine_grained", r"\bgithub_pat_[A-Za-z0-9_]{40,}", 0.9),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{30,}", 0.9),
    ("stripe_key", r"\b(?:sk|rk|pk|whsec)_(?:live|test)_[0-9A-Za-z]{16,}", 0.9),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0.9),
    ("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b", 0.9),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", 0.9),
]
PEM_PRIVATE_KEY = (r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                   r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|.*)")
# user:password between `scheme://` and `@host` (the scheme and host stay readable).
URL_CREDENTIALS = r"(?<=://)[^\s:/?#@<>\"']+:[^\s/?#@<>\"']+(?=@)"
STREET_PATTERN = (r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}"
                  r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Way|Court|Ct|"
                  r"Place|Pl|Square|Sq|Terrace|Parkway|Pkwy|Highway|Hwy)\b\.?"
                  r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)?)?")
# Written phone formats: E.164, +CC with groups, (NPA) NXX-XXXX, NPA-NXX-XXXX, NPA.NXX.XXXX.
PHONE_PATTERNS = [
    ("international", r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)", 0.6),
    ("e164", r"(?<![\w+])\+[1-9]\d{7,14}(?!\w)", 0.6),
    ("nanp_parens", r"(?<!\w)\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}(?!\w)", 0.6),
    ("nanp_separated", r"(?<![\w.-])\d{3}([ .-])\d{3}\1\d{4}(?![\w-])", 0.5),
    ("uk_national", r"(?<![\w+])0\d{2,4}[ -]?\d{3,4}[ -]?\d{3,4}(?!\w)", 0.45),
]
SSN_AFTER_KEYWORD = r"(?i:\b(?:ssn|social security(?: number| no\.?)?)\b)\D{0,12}?(\d{9})\b"


class GroupPatternRecognizer(EntityRecognizer):
    """Like Presidio's PatternRecognizer, but a hit is the span of the regex's first group:
    for values found by what stands around them (an SSN after the word "SSN")."""

    def __init__(self, entity: str, name: str, patterns: list[tuple[str, str, float]],
                 language: str):
        self.patterns = [(n, re.compile(r), s) for n, r, s in patterns]
        super().__init__(supported_entities=[entity], name=name, supported_language=language)

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        return [RecognizerResult(self.supported_entities[0], m.start(1), m.end(1), score,
                                 recognition_metadata={"recognizer_name": self.name,
                                                       "recognizer_identifier": self.id})
                for _, regex, score in self.patterns for m in regex.finditer(text)]


class DetectSecretsRecognizer(EntityRecognizer):
    """API keys and tokens found by detect-secrets' provider plugins, widened to the whole token."""

    def __init__(self, language: str, score: float = 0.9):
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

        by_name = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
        missing = [n for n in DETECT_SECRETS_PLUGINS if n not in by_name]
        if missing:
            raise RuntimeError(f"detect-secrets has no plugin(s) {missing}: pin detect-secrets==1.5.0")
        self.regexes = [regex for n in DETECT_SECRETS_PLUGINS for regex in by_name[n].denylist]
        self.score = score
        super().__init__(supported_entities=["API_KEY"], name="DetectSecretsRecognizer",
                         supported_language=language)

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        results = []
        for regex in self.regexes:
            for m in regex.finditer(text):
                group = 1 if regex.groups and m.start(1) >= 0 else 0
                start, end = widen_to_token(text, m.start(group), m.end(group))
                results.append(RecognizerResult("API_KEY", start, end, self.score,
                                                recognition_metadata={
                                                    "recognizer_name": self.name,
                                                    "recognizer_identifier": self.id}))
        return EntityRecognizer.remove_duplicates(results)


def widen_to_token(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow [start, end) over key characters on both sides; a trailing '.' or '=' of a sentence
    ending stays outside when nothing key-like follows it."""
    while start > 0 and TOKEN_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and TOKEN_CHAR.match(text[end]):
        end += 1
    while end > start and text[end - 1] in ".-/":
        end -= 1
    return start, end


def project_recognizers(language: str) -> list[EntityRecognizer]:
    """The recognizers added to Presidio's predefined ones (less REPLACED_PREDEFINED)."""
    return [
        DetectSecretsRecognizer(language),
        PatternRecognizer(supported_entity="API_KEY", supported_language=language,
                          name="ApiKeyRecognizer",
                          patterns=[Pattern(n, r, s) for n, r, s in OWN_KEY_PATTERNS]),
        PatternRecognizer(supported_entity="PRIVATE_KEY", supported_language=language,
                          name="PemPrivateKeyRecognizer",
                          patterns=[Pattern("pem_private_key", PEM_PRIVATE_KEY, 0.95)]),
        PatternRecognizer(supported_entity="PASSWORD", supported_language=language,
                          name="UrlCredentialsRecognizer",
                          patterns=[Pattern("url_user_password", URL_CREDENTIALS, 0.9)]),
        PatternRecognizer(supported_entity="PHONE_NUMBER", supported_language=language,
                          name="PhoneFormatRecognizer",
                          patterns=[Pattern(n, r, s) for n, r, s in PHONE_PATTERNS],
                          global_regex_flags=re.DOTALL | re.MULTILINE),
        CardNumberRecognizer(language),
        PhoneMatcherRecognizer(language),
        UrlPatternRecognizer(language),
        IpAddressRecognizer(language),
        date_recognizer(language),
        *national_id_recognizers(language),
        GroupPatternRecognizer("US_SSN", "SsnKeywordRecognizer",
                               [("ssn_after_keyword", SSN_AFTER_KEYWORD, 0.6)], language),
        PatternRecognizer(supported_entity="STREET_ADDRESS", supported_language=language,
                          name="StreetAddressRecognizer",
                          patterns=[Pattern("street", STREET_PATTERN, 0.6)],
                          global_regex_flags=re.DOTALL | re.MULTILINE),
    ]


# --- Replacements for Presidio's card, phone, URL and IP recognizers ----------------------------
# Presidio's versions miss card brands and phone layouts that occur (19-digit Visa, 12-digit
# Maestro, 15-digit JCB, national layouts of countries outside its default regions) and, on code,
# logs and version lists, replace what is not personal data (`result.append` -> URL `result.app`,
# `torch 2.3.1.0` -> IP address). build_analyzer removes these and adds the project's below.
# Presidio's DateRecognizer is replaced by its subclass below, of the same name.
REPLACED_PREDEFINED = ["CreditCardRecognizer", "PhoneRecognizer", "UrlRecognizer", "IpRecognizer",
                       "DateRecognizer"]


def _result(recognizer: EntityRecognizer, entity: str, start: int, end: int,
            score: float) -> RecognizerResult:
    return RecognizerResult(entity, start, end, score,
                            recognition_metadata={"recognizer_name": recognizer.name,
                                                  "recognizer_identifier": recognizer.id})


class _OwnRecognizer(EntityRecognizer):
    def load(self) -> None:
        pass


# Maximal runs of digit groups joined by one space or dash: the candidates a card is cut from.
CARD_RUN = re.compile(r"(?<![\w+.,/:-])\d+(?:[ -]\d+)*(?![\w]|[.,/:-]\d)")


def card_spans(text: str) -> list[tuple[int, int]]:
    """Spans of card numbers: 12 to 19 digits, plain or in groups of 3-6 (the last 1-6) split by
    one kind of separator, of a known brand's range and length, passing Luhn."""
    spans = []
    for m in CARD_RUN.finditer(text):
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", m.group())]
        seps = set(m.group()[e:s] for (_, e), (s, _) in zip(groups, groups[1:]))
        i = 0
        while i < len(groups):
            found = None
            for j in range(len(groups), i, -1):
                part = m.group()[groups[i][0]:groups[j - 1][1]]
                digits = re.sub(r"\D", "", part)
                lengths = [e - s for s, e in groups[i:j]]
                if not 12 <= len(digits) <= 19 or len(seps) > 1:
                    continue
                if j - i > 1 and (min(lengths[:-1]) < 3 or max(lengths) > 6):
                    continue
                if residual.card_brand(digits) and residual.luhn_ok(digits):
                    found = j
                    spans.append((m.start() + groups[i][0], m.start() + groups[j - 1][1]))
                    break
            i = found or i + 1
    return spans


class CardNumberRecognizer(_OwnRecognizer):
    """Payment cards of every brand and length in residual.CARD_IIN_RANGES, checked by Luhn."""

    def __init__(self, language: str, score: float = 0.9):
        self.score = score
        super().__init__(supported_entities=["CREDIT_CARD"], name="CardNumberRecognizer",
                         supported_language=language)

    def analyze(self, text, entities, nlp_artifacts=None):
        return [_result(self, "CREDIT_CARD", s, e, self.score) for s, e in card_spans(text)]


# Regions whose national layouts libphonenumber's matcher is asked about: the countries with the
# most telephone subscribers and the languages an English-speaking assistant hears from, so that
# "06 12 34 56 78" (FR) or "090-1234-5678" (JP) is found without the +country code. Presidio's
# PhoneRecognizer asks only US, UK, DE, FE, IL, IN, CA and BR.
PHONE_REGIONS = [
    "US", "CA", "GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "LU", "ES", "PT", "IT", "PL", "CZ",
    "SE", "NO", "DK", "FI", "RU", "UA", "TR", "GR", "RO", "HU", "IL", "AE", "SA", "EG", "ZA",
    "NG", "KE", "IN", "PK", "BD", "CN", "HK", "TW", "JP", "KR", "SG", "MY", "ID", "TH", "VN", "PH",
    "AU", "NZ", "BR", "MX", "AR", "CO", "CL", "PE",
]
# Where a phone number could be: digits and the separators people write numbers with. Only these
# windows go to libphonenumber's matcher (with every region), which keeps the cost per text low.
PHONE_WINDOW = re.compile(r"(?:\+|\()?\d(?:[ .\-]?\(?\d\)?){6,20}")
# Words that say the number next to them is a phone number, for numbers written without
# separators or country code (a bare 10-digit integer is an id or a timestamp otherwise).
PHONE_CONTEXT = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|ring|text|sms|"
                           r"whats ?app|fax|(?:my|our|his|her|their|your) number|reach|dial|"
                           r"landline|handy|t[ée]l[ée]fono)\b")
# Written like a date, a time, a version or a range: never a phone number.
NOT_PHONE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$|"
                       r"^\d{1,3}(?:\.\d{1,3}){2,}$|^\d+\.\d+$")


@functools.lru_cache(maxsize=1)
def _phone_matcher_class():
    """libphonenumber's matcher, less the parses that cannot succeed.

    The matcher tries every candidate (and the groups inside it) with `parse` and `is_valid_number`
    for its region; run once per region, that is where nearly all the time of phone_spans went.
    Two things make it cheaper and change no result:
    - a candidate with a `+` parses the same whatever the region: it is parsed once per window
      and the result shared by the matchers of all regions (`shared`, which also keeps each
      candidate's digits);
    - a number without `+` is only valid for a region if, after the parse strips an IDD, a
      country code or a national prefix from its front, the rest is a national number of that
      country: some suffix of its digits of a possible length matching the country's general
      pattern (`_may_be_national`). Where that is impossible the parse is skipped. Regions whose
      national prefix rule rewrites digits (AR, BR, JP), and numbers that start with the
      region's IDD, are always parsed.
    tests/test_no_pii.py checks the results against the plain matcher's. And the metadata's
    patterns are compiled once (phonenumbers' documented pattern cache): the regions' patterns
    are more than `re`'s cache holds, so without it they were compiled again and again.
    """
    import phonenumbers

    phonenumbers.enable_pattern_cache()

    class ScreenedMatcher(phonenumbers.PhoneNumberMatcher):
        def __init__(self, text: str, region: str, shared: dict):
            super().__init__(text, region, leniency=phonenumbers.Leniency.VALID)
            self.shared = shared

        def _parse_and_verify(self, candidate, offset):
            if "+" in candidate or "＋" in candidate:
                key = (candidate, offset)
                if key not in self.shared:
                    self.shared[key] = super()._parse_and_verify(candidate, offset)
                return self.shared[key]
            digits = self.shared.get(candidate)
            if digits is None:
                digits = self.shared[candidate] = (re.sub(r"\D", "", candidate) if candidate.isascii()
                                                   else phonenumbers.normalize_digits_only(candidate))
            if not _may_be_national(digits, self.preferred_region):
                return None
            return super()._parse_and_verify(candidate, offset)

    return ScreenedMatcher


@functools.lru_cache(maxsize=None)
def _national_screen(region: str):
    """(IDD regex, [(possible lengths, general pattern)] of the regions of its country code), or
    None where the region's national prefix rule rewrites digits (no screening)."""
    import phonenumbers
    from phonenumbers import PhoneMetadata

    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata.national_prefix_transform_rule:
        return None
    descs = []
    for other in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[metadata.country_code]:
        m = PhoneMetadata.metadata_for_region_or_calling_code(metadata.country_code, other)
        if m is not None and m.general_desc is not None and m.general_desc.national_number_pattern:
            descs.append((tuple(m.general_desc.possible_length),
                          re.compile(m.general_desc.national_number_pattern)))
    idd = re.compile(metadata.international_prefix) if metadata.international_prefix else None
    return idd, descs


def _may_be_national(digits: str, region: str) -> bool:
    """Could `digits` (no `+`) parse as a valid number for `region`? False only where no suffix of
    them is a national number of the region's country and they do not start with its IDD."""
    screen = _national_screen(region)
    if screen is None:
        return True
    idd, descs = screen
    if idd is not None and idd.match(digits):
        return True
    for lengths, pattern in descs:
        for n in lengths or range(1, len(digits) + 1):
            if n <= len(digits) and pattern.fullmatch(digits[len(digits) - n:]):
                return True
    return False


def phone_spans(text: str, matcher=None) -> list[tuple[int, int]]:
    """Spans of phone numbers that libphonenumber's matcher finds valid in one of PHONE_REGIONS.

    International numbers (+ or 00) are taken as found. A national number must be written like
    one (groups, parentheses, a leading trunk 0) or have a phone word before it, and at least
    8 digits: a bare integer, a date, a version or a decimal is not a phone number.
    `matcher(window, region, shared)`: the matcher to use, by default the screened one."""
    matcher = matcher or _phone_matcher_class()
    spans = set()
    for w in PHONE_WINDOW.finditer(text):
        window = w.group()
        if "+" not in window and "00" not in window and sum(c.isdigit() for c in window) < 8:
            continue  # too short for a national number, and no international prefix
        shared: dict = {}
        for region in PHONE_REGIONS:
            for m in matcher(window, region, shared):
                raw = m.raw_string
                start = w.start() + m.start
                if raw.startswith(("+", "00")):
                    spans.add((start, start + len(raw)))
                    continue
                digits = re.sub(r"\D", "", raw)
                if len(digits) < 8 or NOT_PHONE.search(raw):
                    continue
                written = (re.search(r"\d[ ()-]+\d", raw) or re.match(r"\(\d{1,5}\)", raw)
                           or (raw.startswith("0") and len(digits) >= 9))
                if "." in raw and not re.fullmatch(r"\d{2,4}(?:\.\d{2,4}){2,3}", raw):
                    continue
                if written or PHONE_CONTEXT.search(text[max(0, start - 40):start]):
                    spans.add((start, start + len(raw)))
    # Keep the longest of overlapping spans (the same number found through several regions).
    kept: list[tuple[int, int]] = []
    for s, e in sorted(spans, key=lambda se: (se[0], -se[1])):
        if kept and s < kept[-1][1]:
            continue
        kept.append((s, e))
    return kept


class PhoneMatcherRecognizer(_OwnRecognizer):
    """Phone numbers through libphonenumber's matcher over PHONE_REGIONS (see phone_spans)."""

    def __init__(self, language: str, score: float = 0.75):
        self.score = score
        super().__init__(supported_entities=["PHONE_NUMBER"], name="PhoneMatcherRecognizer",
                         supported_language=language)

    def analyze(self, text, entities, nlp_artifacts=None):
        return [_result(self, "PHONE_NUMBER", s, e, self.score) for s, e in phone_spans(text)]


# Top-level domains a bare domain (no scheme, no www.) is recognised with: the generic ones and
# country codes that are not also file extensions or words of code (.py, .sh, .md, .rs, .pl, .in,
# .is, .it, .at, .be, .to, .so, .do, .go, .me, .us, .no, .id are left out: `v.begin()`,
# `main.py`, `file.md`).
BARE_DOMAIN_TLDS = ("com|org|net|edu|gov|mil|int|io|co|ai|dev|app|info|biz|cloud|online|site|"
                    "tech|xyz|uk|de|fr|nl|eu|ca|au|jp|cn|ru|br|ch|se|es|dk|fi|pt|ie|nz|za|mx|ar|"
                    "kr|tw|hk|sg|ua|cz|gr|ro|hu|tr|il|ae|sa|eg|ng|ke|pk|bd|my|th|vn|ph|cl|pe")
URL_CHARS = r"[^\s<>\"'`\]\[{}|\\^]"
URL_SCHEME = re.compile(rf"(?i)\b(?:https?|ftps?)://{URL_CHARS}+")
URL_WWW = re.compile(rf"(?i)(?<![\w.@/-])www\d{{0,3}}\.[a-z0-9-]+(?:\.[a-z0-9-]+)+(?:[/?#]{URL_CHARS}*)?")
# A bare domain: labels ending in a known TLD, standing alone, not called, indexed or assigned
# like an attribute in code (`self.app = ...`, `model.net(x)`).
URL_BARE = re.compile(
    rf"(?i)(?<![\w.@/:$-])(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{BARE_DOMAIN_TLDS})"
    rf"(?![\w-]|\.\w|\s*[(\[=])(?:[/?#]{URL_CHARS}*)?")
# First labels that make `x.tld` an attribute of an object in code, not a domain.
CODE_OWNERS = {"self", "this", "cls", "obj", "model", "ctx", "app", "args", "opts", "config",
               "cfg", "module", "super", "data", "node", "parent", "root", "base", "main", "env",
               "os", "sys", "np", "pd", "tf", "torch", "nn", "req", "res", "request", "response",
               "it", "item", "x", "y", "e", "err", "m", "r", "s", "t", "v", "w", "window",
               "document", "client", "server", "user", "db", "session", "state", "props"}
# Hosts that point at nobody: this machine, and the names RFC 2606 reserves for examples.
NOT_PERSONAL_HOST = re.compile(r"^(?:localhost|127(?:\.\d{1,3}){3}|0\.0\.0\.0|\[::1?\])$|"
                               r"(?:^|\.)example\.(?:com|org|net)$|\.(?:example|test|invalid|localhost)$")
URL_TRAILING = ".,;:!?)'\""


def url_spans(text: str) -> list[tuple[int, int]]:
    """URLs with a scheme or `www.`, and bare domains with a known TLD in a place a domain stands."""
    spans = []
    for regex in (URL_SCHEME, URL_WWW, URL_BARE):
        for m in regex.finditer(text):
            s, e = m.start(), m.end()
            while e > s and text[e - 1] in URL_TRAILING:
                if text[e - 1] == ")" and text[s:e].count("(") >= text[s:e].count(")"):
                    break
                e -= 1
            host = re.sub(r"(?i)^[a-z]+://", "", text[s:e]).split("/")[0].split(":")[0].lower()
            if NOT_PERSONAL_HOST.search(host):
                continue
            if regex is URL_BARE:
                labels = text[s:e].split("/")[0].split(".")
                if len(labels) == 2 and labels[0].lower() in CODE_OWNERS:
                    continue
            spans.append((s, e))
    return spans


class UrlPatternRecognizer(_OwnRecognizer):
    def __init__(self, language: str, score: float = 0.6):
        self.score = score
        super().__init__(supported_entities=["URL"], name="UrlPatternRecognizer",
                         supported_language=language)

    def analyze(self, text, entities, nlp_artifacts=None):
        return EntityRecognizer.remove_duplicates(
            [_result(self, "URL", s, e, self.score) for s, e in url_spans(text)])


class IpAddressRecognizer(_OwnRecognizer):
    """IPv4 addresses that are not version numbers, and IPv6 addresses of real hex groups
    (pipelines/privacy/residual.py's ip_spans, shared with the residual scan)."""

    def __init__(self, language: str, score: float = 0.6):
        self.score = score
        super().__init__(supported_entities=["IP_ADDRESS"], name="IpAddressRecognizer",
                         supported_language=language)

    def analyze(self, text, entities, nlp_artifacts=None):
        return [_result(self, "IP_ADDRESS", s, e, self.score) for s, e in residual.ip_spans(text)]


# A time of day right after a date (or an ISO `T`): the date is a machine timestamp.
TIME_AFTER_DATE = re.compile(r"(?:[T ]|, )?\d{1,2}:\d{2}")


def _dotted_version(text: str, start: int, end: int) -> bool:
    """`4.2.11`, `1.9.23`: three dotted numbers with a two-digit last part are a version unless a
    word of dates stands before them (`born 1.9.83`); so is anything residual.is_version says is."""
    value = text[start:end]
    if not re.fullmatch(r"\d{1,2}\.\d{1,2}\.\d{2}", value):
        return bool(re.fullmatch(r"[\d.]+", value)) and residual.is_version(text, start, end)
    return not DATE_WORDS.search(text[max(0, start - 24):start])


DATE_WORDS = re.compile(r"(?i)\b(?:born|birth|birthday|dob|date|on|since|until|from|due|"
                        r"expires?|expiry|valid|issued|dated|appointment)\b")


# Words that make a date a person's: their birth, age, or a visit or appointment of theirs (the
# dates HIPAA's Safe Harbor lists). A release date, a deadline, an invoice month are not, and
# redacting them would only cost training text (`deprecated 2023-06-30`, `my invoice for March`).
PERSONAL_DATE_WORDS = re.compile(
    r"(?i)\b(?:born|birth|birthday|b-?day|dob|d\.o\.b\.?|age[ds]?|anniversary|appointment|"
    r"admitted|admission|discharged?|visit(?:ed)?|died|death|deceased|married|wedding)\b")
PERSONAL_DATE_WINDOW = 40  # characters before the date in which such a word ties it to a person


def date_recognizer(language: str) -> EntityRecognizer:
    """Presidio's DateRecognizer, for a person's dates only: a date with a word of
    PERSONAL_DATE_WORDS shortly before it (`born 12/03/1984`, `DOB: 1984-03-12`), never the
    date of a timestamp (`2024-03-05 12:00:01`, `2024-03-05T12:00:01Z`: when something ran) or a
    dotted version."""
    from presidio_analyzer.predefined_recognizers import DateRecognizer

    class PersonalDateRecognizer(DateRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
            results = super().analyze(text, entities, nlp_artifacts, regex_flags) or []
            return [r for r in results
                    if "T" not in text[r.start:r.end] and not TIME_AFTER_DATE.match(text, r.end)
                    and not _dotted_version(text, r.start, r.end)
                    and PERSONAL_DATE_WORDS.search(text[max(0, r.start - PERSONAL_DATE_WINDOW):r.start])]

    return PersonalDateRecognizer(supported_language=language, name="DateRecognizer")


# --- National identity, tax and health numbers ---------------------------------------------------
# Presidio ships these, but loads them for English only where listed in its default config (and
# most are off there). Each is a checksum-validated or tightly shaped format.
NATIONAL_ID_RECOGNIZERS = [
    "UkNinoRecognizer", "EsNifRecognizer", "EsNieRecognizer", "ItFiscalCodeRecognizer",
    "AuTfnRecognizer", "AuAbnRecognizer", "AuAcnRecognizer", "AuMedicareRecognizer",
    "InPanRecognizer", "InAadhaarRecognizer", "SgFinRecognizer", "PlPeselRecognizer",
    "FiPersonalIdentityCodeRecognizer", "SePersonnummerRecognizer", "KrRrnRecognizer",
    "ZaIdNumberRecognizer", "TrNationalIdRecognizer", "ThTninRecognizer", "DeTaxIdRecognizer",
    "CaSinRecognizer",
]
# Numbers of digits only, whose checksum passes for one number in 10 to 100: without a word that
# names them nearby, a 9- to 13-digit integer in a log or in code would be taken for one.
NEEDS_CONTEXT = {"AuTfnRecognizer", "AuAbnRecognizer", "AuAcnRecognizer", "AuMedicareRecognizer",
                 "InAadhaarRecognizer", "PlPeselRecognizer", "KrRrnRecognizer",
                 "ZaIdNumberRecognizer", "TrNationalIdRecognizer", "ThTninRecognizer",
                 "DeTaxIdRecognizer", "CaSinRecognizer", "SePersonnummerRecognizer"}
# Words naming them, besides each recognizer's own context words.
ID_CONTEXT_WORDS = ["identity", "national", "tax", "personal", "passport", "insurance",
                    "medicare", "aadhaar", "pesel", "tckn", "kimlik", "steuer", "idnr", "rrn",
                    "personnummer", "sin", "tfn", "abn", "acn", "tin", "citizen", "resident"]
CONTEXT_BEFORE = 48       # characters before a number that are searched for its words


class ContextGatedRecognizer(EntityRecognizer):
    """One of Presidio's recognizers whose hits count only with one of its words just before, and
    only as a whole number (not 11 digits inside a 13-digit one)."""

    def __init__(self, inner: EntityRecognizer, words: list[str]):
        self.inner = inner
        self.words = re.compile(r"(?i)\b(?:" + "|".join(map(re.escape, sorted(set(words)))) + r")\b")
        super().__init__(supported_entities=inner.supported_entities, name=inner.name,
                         supported_language=inner.supported_language)

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        results = self.inner.analyze(text, entities, nlp_artifacts) or []
        kept = []
        for r in results:
            inside = (r.start > 0 and text[r.start - 1].isalnum()) or (
                r.end < len(text) and text[r.end].isalnum())
            if not inside and self.words.search(text[max(0, r.start - CONTEXT_BEFORE):r.start]):
                r.recognition_metadata.update(recognizer_name=self.name, recognizer_identifier=self.id)
                kept.append(r)
        return kept


def national_id_recognizers(language: str) -> list[EntityRecognizer]:
    from presidio_analyzer import predefined_recognizers

    out = []
    for name in NATIONAL_ID_RECOGNIZERS:
        inner = getattr(predefined_recognizers, name)(supported_language=language)
        if name == "InPanRecognizer":
            # Its "Low" pattern (any 10 characters, score 0.01, below any threshold even with
            # context) looks ahead past the token and hits words without a digit.
            inner = predefined_recognizers.InPanRecognizer(
                supported_language=language, patterns=[p for p in inner.patterns if p.score > 0.01])
        if name in NEEDS_CONTEXT:
            out.append(ContextGatedRecognizer(inner, list(inner.context or []) + ID_CONTEXT_WORDS))
        else:
            out.append(inner)
    return out
