"""The record format of DESIGN.md and the JSONL files stages pass to each other.

A record is one interaction:
    {"id", "timestamp", "messages": [{"role", "content"}], "feedback", "metadata"}
Converted on input:
  - flat {"prompt", "response"} records (older clients);
  - OpenAI-style fine-tuning lines: {"messages": [...]} without an id, and the legacy
    {"prompt", "completion"}. A record without an id gets one from its content (`content_id`),
    so the same line read twice is the same record. Such lines carry no timestamp either: ingest
    gives them their file's modification time (see pipelines/data/ingest.py).
A line that cannot become a record is kept as {"_invalid": <text>, "_error": <why>} so that
validate can quarantine it: nothing pulled is ever dropped silently.

A feedback event is the other kind of line a source may hold: a rating given after the answer,
possibly after the night that pulled the answer:
    {"id", "timestamp", "event": "feedback", "response_id", "feedback", "comment", "metadata"}
`response_id` is the `id` of the record it rates. validate passes events on (feedback.jsonl) and
the dataset stage applies them to the night's records and to the replay buffer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

ROLES = ("system", "user", "assistant")


def parse_line(raw: bytes | str) -> dict:
    """Turn one raw log line into a record, or an `_invalid` stand-in that says why not."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return {"_invalid": raw.decode("utf-8", errors="replace"),
                    "_error": f"invalid_utf8: {exc.reason} at byte {exc.start}"}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {"_invalid": raw, "_error": f"invalid_json: {exc.msg} at column {exc.colno}"}
    if not isinstance(data, dict):
        return {"_invalid": raw, "_error": f"not_an_object: a JSON {type(data).__name__}"}
    return normalize(data)


def normalize(data: dict) -> dict:
    """Bring a parsed record into the chat format; unknown shapes pass through for validate."""
    data = dict(data)
    if "messages" not in data and ("prompt" in data or "response" in data or "completion" in data):
        # {"prompt", "response"} from older clients; {"prompt", "completion"} is OpenAI's legacy
        # fine-tuning format.
        prompt, response = data.pop("prompt", None), data.pop("response", None)
        completion = data.pop("completion", None)
        data["messages"] = [{"role": "user", "content": prompt},
                            {"role": "assistant", "content": response if response is not None else completion}]
    if data.get("id") is None and isinstance(data.get("messages"), list):
        data["id"] = content_id(data)
    data.setdefault("feedback", None)
    data.setdefault("metadata", {})
    return data


def is_invalid(record: dict) -> bool:
    return "_invalid" in record


FEEDBACK_EVENT = "feedback"   # the `event` of a feedback event


def is_feedback_event(record: dict) -> bool:
    return record.get("event") == FEEDBACK_EVENT


def latest_feedback(events: Iterable[dict]) -> dict[str, dict]:
    """Each rated response's last event (by timestamp, then by order): a user who changes their
    mind is heard last."""
    latest: dict[str, tuple] = {}
    for order, event in enumerate(events):
        key = (parse_timestamp(event.get("timestamp")) or dt.datetime.min.replace(tzinfo=dt.timezone.utc), order)
        seen = latest.get(str(event["response_id"]))
        if seen is None or key >= seen[0]:
            latest[str(event["response_id"])] = (key, event)
    return {rid: event for rid, (_, event) in latest.items()}


def content_hash(record: dict) -> str:
    """Identity of what was said, independent of id and timestamp: for exact de-duplication."""
    turns = [(m.get("role"), m.get("content")) for m in record.get("messages") or []
             if isinstance(m, dict)]
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode()).hexdigest()


def content_id(record: dict) -> str:
    """A stable id for a record that came without one: the same conversation, the same id."""
    return "sha256-" + content_hash(record)[:24]


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file written by a stage (always valid JSON, one object per line)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_json(path: str | Path) -> dict:
    """A stage's JSON report, or {} when it has not been written."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def parse_timestamp(value) -> dt.datetime | None:
    """An aware UTC datetime from an ISO-8601 string or datetime, or None if it is not one."""
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, str):
        try:
            ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)
