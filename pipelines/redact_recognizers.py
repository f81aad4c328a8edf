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
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult

# detect-secrets plugins whose regexes name a provider's key format. The keyword- and
# entropy-based plugins are left to the residual scan (pipelines/residual.py), so that it looks
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
    """The recognizers added to Presidio's predefined ones."""
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
        GroupPatternRecognizer("US_SSN", "SsnKeywordRecognizer",
                               [("ssn_after_keyword", SSN_AFTER_KEYWORD, 0.6)], language),
        PatternRecognizer(supported_entity="STREET_ADDRESS", supported_language=language,
                          name="StreetAddressRecognizer",
                          patterns=[Pattern("street", STREET_PATTERN, 0.6)],
                          global_regex_flags=re.DOTALL | re.MULTILINE),
    ]
