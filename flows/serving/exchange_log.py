"""What the server answered, written to the workspace's source: the log tonight's cycle pulls.

Each exchange becomes one record in the format ingest reads (id, timestamp, messages with the
answer last, feedback, metadata), with `metadata` holding the adapter version that answered,
its base, the latency, the conversation id and, when the client sent one, the user id. It goes
where `ingest.url` points: a JSONL folder (one file per UTC day, appended one whole line per
write, so a cycle reading the folder never sees half a record) or a file, or the SQL table
`ingest.table` at a database URL (one row: id, timestamp, the record as JSON text).

The log is the source, which holds personal data as users wrote it; ingest redacts it as it
pulls. A request that opts out (`"store": false`, or the header X-Nightshift-Opt-Out) is written
nowhere, and the server keeps nothing of it in memory after answering. Since the server wrote it,
`nightshift forget` erases a person from it too (`forget_in_log`): their exchanges and the
feedback on them go, from the files (rewritten whole, under a lock the server's writes take too)
or the table.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.records import is_feedback_event
from pipelines.data.ingest import is_sql_url

SOURCE = "nightshift serve-model"   # metadata.source of every exchange the server logs


class ExchangeLog:
    def __init__(self, ws: Path, p: params_mod.IngestParams):
        self.url, self.table = p.url, p.table
        self.path = None if is_sql_url(p.url) else (ws / p.url)
        self._engine = None
        self._lock = threading.Lock()

    def where(self) -> str:
        return f"table {self.table} at {self.url}" if self.path is None else str(self.path)

    def file_for(self, timestamp: dt.datetime) -> Path:
        """The JSONL file an exchange goes to: the folder's file of its UTC day, or the file."""
        if self.path.suffix == ".jsonl" and not self.path.is_dir():
            return self.path
        return self.path / f"{timestamp.date().isoformat()}.jsonl"

    def write(self, record: dict, timestamp: dt.datetime) -> None:
        line = json.dumps(record, ensure_ascii=False)
        if self.path is not None:
            file = self.file_for(timestamp)
            file.parent.mkdir(parents=True, exist_ok=True)
            # One write(2) of the whole line on an O_APPEND descriptor: lines from concurrent
            # requests never interleave, and a reader sees whole lines only.
            while True:
                fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)   # not while `forget` rewrites the file
                    if _same_file(fd, file):
                        os.write(fd, (line + "\n").encode("utf-8"))
                        return
                finally:
                    os.close(fd)   # and the lock with it
                # `forget` replaced the file while this waited: write to the new one.
        self._insert(record["id"], record["timestamp"], line)

    def _insert(self, record_id: str, timestamp: str, line: str) -> None:
        import sqlalchemy as sa

        with self._lock:
            if self._engine is None:
                self._engine = sa.create_engine(self.url)
            table = sa.Table(self.table, sa.MetaData(), sa.Column("id", sa.Text),
                             sa.Column("timestamp", sa.Text), sa.Column("record", sa.Text))
            with self._engine.begin() as conn:
                table.create(conn, checkfirst=True)
                conn.execute(table.insert(), [{"id": record_id, "timestamp": timestamp, "record": line}])

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def server_record(raw: str | bytes) -> dict | None:
    """A log line as a record when `serve-model` wrote it (its metadata names the server), else None."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    metadata = record.get("metadata") if isinstance(record, dict) else None
    return record if isinstance(metadata, dict) and metadata.get("source") == SOURCE else None


def served_records(ws: Path, p: params_mod.IngestParams) -> Iterator[dict]:
    """Every record `serve-model` logged in the source (`ingest.url`), pulled by a cycle or not:
    its exchanges and its feedback events, as written (raw: the source is not redacted). Reads
    the JSONL lines that name the server, or the table's rows that do."""
    if is_sql_url(p.url):
        import sqlalchemy as sa

        engine = sa.create_engine(p.url)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(p.table):
                    return
                table = sa.Table(p.table, sa.MetaData(), autoload_with=conn)
                query = sa.select(table.c.record).where(table.c.record.contains(SOURCE))
                for (raw,) in conn.execute(query):
                    if (record := server_record(raw)) is not None:
                        yield record
        finally:
            engine.dispose()
        return
    marker = SOURCE.encode()
    for file in log_files(ws / p.url):
        with open(file, "rb") as f:
            for line in f:
                if marker in line and (record := server_record(line)) is not None:
                    yield record


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_ino, opened.st_dev) == (now.st_ino, now.st_dev)


def about(record: dict, user_id: str | None, text: str | None) -> bool:
    """Whether a raw exchange is about a person: their user id, or `text` (an email, a phone
    number, a name) in any of its strings, compared as `subjects.normal_forms` compares values
    (case and spacing folded; by its digits alone for a number)."""
    from pipelines.privacy import subjects

    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    if user_id and str(metadata.get("user_id")) == user_id:
        return True
    if not text:
        return False
    strings: list[str] = []

    def collect(value) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)

    collect(record)
    for form in subjects.normal_forms(text):
        for value in strings:
            if form.startswith("#") and form[1:] in re.sub(r"\D", "", value):
                return True
            if not form.startswith("#") and form in " ".join(value.casefold().split()):
                return True
    return False


def forget_in_log(ws: Path, p: params_mod.IngestParams, user_id: str | None, text: str | None) -> int:
    """Remove the exchanges the server logged about a person, and the feedback on them, from the
    source; returns how many records went. Lines the server did not write are left alone: the
    team's own logs are theirs to erase."""
    def doomed(records: list[dict]) -> set[str]:
        mine = [r for r in records if not is_feedback_event(r)]
        gone = {str(r["id"]) for r in mine if about(r, user_id, text)}
        return gone | {str(r["id"]) for r in records if is_feedback_event(r)
                       and (str(r.get("response_id")) in gone or about(r, None, text))}

    if is_sql_url(p.url):
        import sqlalchemy as sa

        ids = doomed(list(served_records(ws, p)))
        if not ids:
            return 0
        engine = sa.create_engine(p.url)
        try:
            with engine.begin() as conn:
                table = sa.Table(p.table, sa.MetaData(), autoload_with=conn)
                conn.execute(table.delete().where(table.c.id.in_(sorted(ids))))
        finally:
            engine.dispose()
        return len(ids)
    removed, marker = 0, SOURCE.encode()
    for file in log_files(ws / p.url):
        with open(file, "rb+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)   # the server's appends wait
            lines = f.read().splitlines(keepends=True)
            records = {i: r for i, line in enumerate(lines)
                       if marker in line and (r := server_record(line)) is not None}
            ids = doomed(list(records.values()))
            drop = {i for i, r in records.items() if str(r.get("id")) in ids}
            if not drop:
                continue
            tmp = file.with_name(file.name + ".forget")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.writelines(line for i, line in enumerate(lines) if i not in drop)
            tmp.replace(file)   # still holding the old file's lock: a waiting write sees the swap
            removed += len(drop)
    return removed


def log_files(path: Path) -> list[Path]:
    """The JSONL files of a source folder (or the one file)."""
    return sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.exists() else []


def served_counts(ws: Path, p: params_mod.IngestParams) -> dict[str, int]:
    """How many logged answers each adapter version gave (feedback events are not answers)."""
    counts: dict[str, int] = {}
    for record in served_records(ws, p):
        if not is_feedback_event(record):
            version = str(record["metadata"].get("adapter_version"))
            counts[version] = counts.get(version, 0) + 1
    return counts
