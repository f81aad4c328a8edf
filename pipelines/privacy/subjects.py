"""Who a record is about, kept as salted hashes: how `nightshift forget` finds a person's records
after redaction has removed every value that named them.

Ingest redacts each record as it pulls it. Before the values are gone it keeps, in
`metadata.subjects`, a keyed hash (HMAC-SHA256 with the workspace's salt) of each identifier the
record held: its `metadata.user_id`, and every value redaction replaced (emails, phone numbers,
names, card numbers, ...), normalised so that the same value written another way hashes alike
(case and spacing; for values with digits, the digits alone). The values themselves are never
stored, and without the salt a hash cannot be tested against guesses.

The salt is the workspace's own: `.nightshift/subject-salt` (created on first use, readable by its
owner only, never committed or pushed), or the environment variable NIGHTSHIFT_SUBJECT_SALT for
teams that keep it in a secret store. Lose it and `forget --match` can no longer find old records
(`--user-id` neither); keep it as safe as the source's credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

SALT_FILE = Path(".nightshift/subject-salt")
SALT_ENV = "NIGHTSHIFT_SUBJECT_SALT"
USER_PREFIX = "user_id:"  # a user id and a text that happens to spell it are different subjects
MIN_DIGITS = 7            # a value with this many digits is also matched by its digits alone


def load_salt(path: Path = SALT_FILE) -> bytes:
    """The workspace's salt: from NIGHTSHIFT_SUBJECT_SALT, else `path`, created if missing."""
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV].encode("utf-8")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # never replaces a salt another process wrote first
        except FileExistsError:
            pass
        tmp.unlink()
    return path.read_text().strip().encode("utf-8")


def normal_forms(value: str) -> set[str]:
    """The forms a value is matched by: case-folded with spacing collapsed, and its digits alone
    when it has MIN_DIGITS of them (`+1 (415) 555-0100` and `4155550100` then share a form; a
    leading country code is dropped as well as kept)."""
    value = value.strip()
    forms = {" ".join(value.casefold().split())} if value else set()
    digits = re.sub(r"\D", "", value)
    if len(digits) >= MIN_DIGITS:
        forms.add("#" + digits)
        if value.lstrip().startswith("+"):
            forms.update("#" + digits[i:] for i in (1, 2, 3) if len(digits) - i >= MIN_DIGITS)
    return forms


def digest(salt: bytes, form: str) -> str:
    return hmac.new(salt, form.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def record_subjects(salt: bytes, user_id, values: Iterable[str]) -> list[str]:
    """The sorted hashes stored with one record: its user id and the values redaction replaced."""
    forms = {USER_PREFIX + str(user_id)} if user_id not in (None, "") else set()
    for value in values:
        forms |= normal_forms(value)
    return sorted({digest(salt, f) for f in forms})


def match_subjects(salt: bytes, user_id: str | None = None, text: str | None = None) -> set[str]:
    """The hashes a record about `user_id` or holding `text` (as it appeared in the source) has."""
    forms = set()
    if user_id:
        forms.add(USER_PREFIX + user_id)
    if text:
        forms |= normal_forms(text)
    return {digest(salt, f) for f in forms}


def subjects_of(record: dict) -> set[str]:
    """The hashes stored with a record: `metadata.subjects`, or `_subjects` beside a line that
    is no record (or whose metadata is no object)."""
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    return set(metadata.get("subjects") or []) | set(record.get("_subjects") or [])


# The tombstones `nightshift forget` leaves: one JSON line per erasure, with the hashes it matched
# (never the values), the date and the reason. Ingest drops a pulled record that has any of them.
TOMBSTONES_FILE = Path("data/forgotten.jsonl")


def tombstones(path: Path = TOMBSTONES_FILE) -> set[str]:
    """Every hash an erasure so far asked to forget."""
    import json

    if not path.exists():
        return set()
    return {h for line in path.read_text().splitlines() if line.strip()
            for h in json.loads(line)["subjects"]}
