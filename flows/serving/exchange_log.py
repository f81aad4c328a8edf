"""What the server answered, written to the workspace's source: the log tonight's cycle pulls.

Each exchange becomes one record in the format ingest reads (id, timestamp, messages with the
answer last, feedback, metadata), with `metadata` holding the adapter version that answered,
its base, the latency, the conversation id and, when the client sent one, the user id. It goes
where `ingest.url` points: a JSONL folder (one file per UTC day, appended one whole line per
write, so a cycle reading the folder never sees half a record) or a file, or the SQL table
`ingest.table` at a database URL (one row: id, timestamp, the record as JSON text).

The log is the source, which holds personal data as users wrote it; ingest redacts it as it
pulls. A request that opts out (`"store": false`, or the header X-Nightshift-Opt-Out) is written
nowhere, and the server keeps nothing of it in memory after answering.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from pipelines.common import params as params_mod
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
            fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
            finally:
                os.close(fd)
            return
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


def served_counts(ws: Path, p: params_mod.IngestParams) -> dict[str, int]:
    """How many logged answers each adapter version gave, read from the source (`ingest.url`):
    every exchange `serve-model` logged there, pulled by a cycle or not. Reads each JSONL line
    that names the server, or the table's rows that do."""
    counts: dict[str, int] = {}

    def count(raw: str | bytes) -> None:
        try:
            metadata = json.loads(raw).get("metadata") or {}
        except (ValueError, AttributeError):
            return
        if metadata.get("source") == SOURCE:
            version = str(metadata.get("adapter_version"))
            counts[version] = counts.get(version, 0) + 1

    if is_sql_url(p.url):
        import sqlalchemy as sa

        engine = sa.create_engine(p.url)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(p.table):
                    return {}
                table = sa.Table(p.table, sa.MetaData(), autoload_with=conn)
                for (raw,) in conn.execute(sa.select(table.c.record).where(table.c.record.contains(SOURCE))):
                    count(raw)
        finally:
            engine.dispose()
        return counts
    path = ws / p.url
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.exists() else []
    marker = SOURCE.encode()
    for file in files:
        with open(file, "rb") as f:
            for line in f:
                if marker in line:
                    count(line)
    return counts
