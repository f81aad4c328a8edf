"""ingest: pull the interactions newer than the watermark, up to the end of the cycle's day,
redacting each record as it is pulled.

Nothing unredacted is written: the lines read from the source go, in memory, through redaction
(pipelines/privacy/redact.py, the `redact` section of params.yaml) and only the redacted records reach
data/snapshots/<date>.jsonl, the cycle's pinned snapshot, with the night's redaction counts in
data/snapshots/<date>.report.json. Each record keeps the salted hashes of who it is about
(pipelines/privacy/subjects.py); a record whose hashes `nightshift forget` tombstoned is dropped and
counted as `forgotten`. Ingest then points data/cycle.yaml at the snapshot and moves the watermark
in data/watermark.json. It reads a live source, so it sits outside the DVC DAG; the snapshot it
writes is what the DAG reproduces from, and the source stays the one system of record for the
raw text: a night pulled again is pulled from the source.

Sources (ingest.url in params.yaml):
  - a folder of *.jsonl files, or one .jsonl file (log files as written by the assistant, or
    OpenAI-style fine-tuning files)
  - any SQLAlchemy URL (sqlite:///..., postgresql://...) with a table holding `id`, `timestamp`
    and either a `record` column of JSON text or the record's fields as columns; it is read in
    chunks of ingest.chunk_rows rows

The rules that keep the watermark honest:
  - All or nothing. A source that fails, vanishes or is truncated while being read leaves no
    snapshot and does not move the watermark; the cycle fails and the next attempt reads again.
  - A cycle pulls records stamped after the watermark and before the end of its day (midnight
    on the clock of schedule.timezone, the clock that names the night; midnight belongs to the
    next day) or the present, whichever is earlier. A record stamped in the future stays in the source until
    its night comes (counted as `future_records`), so a wrong clock upstream can never push the
    watermark past records that have not been written yet.
  - Order does not matter: every record in the window is pulled, whatever its place in the file.
  - A line without a readable timestamp takes the timestamp of its neighbour in the same file
    (log files are written in time order), so it is pulled once, by its neighbours' cycle.
  - A file in which no line has a timestamp (an OpenAI-style fine-tuning file: {"messages"} or
    {"prompt", "completion"} lines) is dated by its modification time: its lines are pulled by
    the first cycle whose window reaches that time, written to the snapshot with that time as
    their `timestamp` (and `metadata.timestamp_from: "file_mtime"`), and the watermark file
    records how many of its bytes were pulled. Pulling the same file again adds nothing; lines
    appended later are pulled by the cycle that reaches the file's new modification time. Such
    files do not move the watermark, which stays the time of the newest record that had its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import yaml

from pipelines.common import params as params_mod
from pipelines.common import paths
from pipelines.common.records import parse_timestamp
from pipelines.privacy import redact as redact_mod
from pipelines.privacy import subjects

SNAPSHOT_DIR, CYCLE_FILE, WATERMARK_FILE = paths.SNAPSHOTS, paths.CYCLE_FILE, paths.WATERMARK
EPOCH = "1970-01-01T00:00:00Z"


class SourceError(RuntimeError):
    """The source could not be read; the watermark has not moved."""


class Line(NamedTuple):
    timestamp: dt.datetime | None
    raw: bytes
    file_dated: bool  # True: the timestamp is the file's modification time, not the record's


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _line_timestamp(raw: bytes) -> dt.datetime | None:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return parse_timestamp(data.get("timestamp")) if isinstance(data, dict) else None


def _stamp(raw: bytes, ts: dt.datetime) -> bytes:
    """A JSON object line with the file's time as its timestamp; other lines stay as they are."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw
    if not isinstance(data, dict):
        return raw
    data["timestamp"] = iso(ts)
    if isinstance(data.get("metadata", {}), dict):
        data["metadata"] = {**data.get("metadata", {}), "timestamp_from": "file_mtime"}
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


def read_jsonl_file(file: Path, ledger: dict[str, dict]) -> Iterator[Line]:
    """The lines of one JSONL file not pulled before, each with the timestamp it is pulled by.

    `ledger` (file name -> {"bytes", "sha256", "mtime", "mtime_ns"}) holds how much of each
    file-dated file, and of each timestamped file a cycle's window has passed, earlier cycles
    took. A file of that size and modification time is not read again (a night's work does not
    grow with the history in the log folder); if the file still starts with exactly those bytes
    they are skipped, and after the read the entry covers the whole file. Keyed by name, not path, so a workspace
    or log folder that moves keeps its ledger. Raises SourceError if the file vanishes, is
    replaced or shrinks while it is read.
    """
    key = file.name
    with open(file, "rb") as f:
        opened = os.fstat(f.fileno())
        seen = ledger.get(key)
        if seen and seen.get("mtime_ns") == opened.st_mtime_ns and seen["bytes"] == opened.st_size:
            return  # untouched since a cycle took all of it: not read again, however long the history
        mtime = dt.datetime.fromtimestamp(opened.st_mtime, dt.timezone.utc)
        digest, offset = hashlib.sha256(), 0
        if seen and opened.st_size >= seen["bytes"]:
            prefix = f.read(seen["bytes"])
            if hashlib.sha256(prefix).hexdigest() == seen["sha256"]:
                digest.update(prefix)
                offset = len(prefix)
            else:  # rewritten, not appended to: all of it is new
                f.seek(0)
        pending: list[bytes] = []
        last: dt.datetime | None = None
        latest: dt.datetime | None = None
        dated = False
        for raw in f:
            digest.update(raw)
            offset += len(raw)
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            ts = _line_timestamp(raw)
            if ts is None and last is None:
                pending.append(raw)
                continue
            dated = True
            if ts is None:
                ts = last
            for held in pending:
                yield Line(ts, held, False)
            pending = []
            last = ts
            latest = ts if latest is None else max(latest, ts)
            yield Line(ts, raw, False)
        _check_unchanged(file, opened, offset)
    entry = {"bytes": offset, "sha256": digest.hexdigest(), "mtime": iso(mtime),
             "mtime_ns": opened.st_mtime_ns}
    if not dated:  # no line has a timestamp of its own: the file's time dates them all
        for held in pending:
            yield Line(mtime, _stamp(held, mtime), True)
        ledger[key] = entry
    else:
        # Its lines are pulled by their own timestamps; once a cycle's window has passed the
        # latest of them (see run), the file is done and later cycles skip what it held then.
        ledger[key] = {**entry, "latest_timestamp": iso(latest)}


def _check_unchanged(file: Path, opened: os.stat_result, offset: int) -> None:
    """The file read to its end is still the file that was opened, with all the bytes read."""
    try:
        now = os.stat(file)
    except FileNotFoundError:
        raise SourceError(f"{file} disappeared while it was being read") from None
    if (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev):
        raise SourceError(f"{file} was replaced while it was being read")
    if offset < opened.st_size or now.st_size < offset:
        raise SourceError(f"{file} was truncated while it was being read "
                          f"({offset} bytes read, {opened.st_size} when opened, {now.st_size} now)")


def read_jsonl_source(path: Path, ledger: dict[str, dict] | None = None) -> Iterator[Line]:
    """Every line (not pulled before, per `ledger`) of the JSONL files under `path`."""
    ledger = {} if ledger is None else ledger
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    for file in files:
        try:
            yield from read_jsonl_file(file, ledger)
        except FileNotFoundError:
            raise SourceError(f"{file} disappeared before it could be read") from None


def read_sql_source(url: str, table: str, after: dt.datetime, until: dt.datetime,
                    chunk_rows: int) -> Iterator[Line]:
    """Rows with after < timestamp < until, in timestamp order, fetched chunk_rows at a time."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
            ts_col = tbl.c.timestamp
            lo, hi = _bounds(ts_col, after, until)
            query = (sa.select(tbl).where(ts_col > lo, ts_col < hi)
                     .order_by(ts_col, *(c for c in tbl.c if c.name == "id")))
            streaming = conn.execution_options(stream_results=True, yield_per=chunk_rows)
            for row in streaming.execute(query).mappings():
                row = dict(row)
                ts = parse_timestamp(row.get("timestamp"))
                if "record" in row and isinstance(row["record"], (str, bytes)):
                    raw = row["record"]
                    raw = raw if isinstance(raw, bytes) else raw.encode("utf-8")
                elif "record" in row and isinstance(row["record"], dict):
                    # a JSON/JSONB column (PostgreSQL) comes back parsed: the record, not the row
                    raw = json.dumps(row["record"], ensure_ascii=False).encode("utf-8")
                else:
                    raw = json.dumps(row, default=str, ensure_ascii=False).encode("utf-8")
                yield Line(ts, raw, False)
    finally:
        engine.dispose()


def count_sql_after(url: str, table: str, after: dt.datetime) -> int:
    """How many rows are stamped later than `after` (records from the future, for the report)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
            lo, _ = _bounds(tbl.c.timestamp, after, after)
            return conn.execute(sa.select(sa.func.count()).where(tbl.c.timestamp > lo)).scalar_one()
    finally:
        engine.dispose()


def _bounds(ts_col, after: dt.datetime, until: dt.datetime):
    import sqlalchemy as sa

    if isinstance(ts_col.type, sa.String):  # ISO-8601 text sorts as time when written alike
        return iso(after), iso(until)
    if getattr(ts_col.type, "timezone", False):
        return after, until
    return after.replace(tzinfo=None), until.replace(tzinfo=None)  # naive columns hold UTC


def is_sql_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _check_sqlite_file(url: str) -> None:
    """SQLite would create a missing database file; a source that is not there is an error."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not parsed.query.get("uri") and not Path(parsed.database).exists():
        raise SourceError(f"the SQLite database {parsed.database} does not exist")


def read_watermark(path: Path = WATERMARK_FILE) -> dt.datetime:
    return parse_timestamp(_read_state(path).get("timestamp", EPOCH))


def _read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _finish_interrupted_commit(pending: Path, watermark_file: Path, snapshot_dir: Path) -> None:
    """A run that stopped between writing its snapshot and its watermark: complete or undo it."""
    if not pending.exists():
        return
    cycle = json.loads(pending.read_text()).get("cycle")
    if cycle and (snapshot_dir / f"{cycle}.jsonl").exists():
        pending.replace(watermark_file)  # the snapshot was committed: so is its watermark
    else:
        pending.unlink()


def run(source: params_mod.IngestParams, redact: params_mod.RedactParams, date: dt.date,
        snapshot_dir: Path = SNAPSHOT_DIR, watermark_file: Path = WATERMARK_FILE,
        cycle_file: Path = CYCLE_FILE, salt_file: Path = subjects.SALT_FILE,
        tombstones_file: Path = subjects.TOMBSTONES_FILE, now: dt.datetime | None = None,
        log: Callable[[str], None] | None = None, timezone: str = "UTC") -> dict:
    """Pull one cycle's records, redact them as they come, and pin them as the cycle's snapshot.

    Args:
        source: where the log lives (params.yaml `ingest`: url, table, chunk_rows).
        redact: how to redact (params.yaml `redact`).
        date: the day whose interactions this cycle learns from.
        salt_file, tombstones_file: the workspace's subject salt and `nightshift forget`'s
            tombstones (pipelines/privacy/subjects.py).
        now: the present (default: the clock); nothing stamped later is pulled.
        timezone: the IANA time zone whose midnight ends `date` (params.yaml schedule.timezone,
            the clock a scheduled run names its night by).
        log: receives a progress line every ingest.chunk_rows records.
    Returns:
        metrics: records pulled (= in the snapshot + forgotten), snapshot path, watermark before
        and after, reused or not, records left in the source because they are stamped in the
        future, file-dated records, and the redaction report.
    Raises:
        SourceError: the source could not be read completely; nothing was written.
        RedactionSetupError: the configured redaction cannot run; nothing was read.
    """
    snapshot = snapshot_dir / f"{date.isoformat()}.jsonl"
    report_file = snapshot.with_suffix(".report.json")
    pending = watermark_file.with_name(watermark_file.name + ".pending")
    _finish_interrupted_commit(pending, watermark_file, snapshot_dir)
    state = _read_state(watermark_file)
    watermark = parse_timestamp(state.get("timestamp", EPOCH))
    if snapshot.exists():
        # This night was pulled already: the snapshot is the cycle's input, pull nothing twice.
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        _write_cycle(cycle_file, date, snapshot)
        in_snapshot = sum(1 for line in snapshot.read_bytes().splitlines() if line.strip())
        return {"date": date.isoformat(), "snapshot": str(snapshot), "reused_snapshot": True,
                "pulled": in_snapshot + report.get("forgotten", 0), "in_snapshot": in_snapshot,
                "forgotten": report.get("forgotten", 0), "watermark": iso(watermark),
                "redaction": report}

    salt, forgotten = subjects.load_salt(salt_file), subjects.tombstones(tombstones_file)
    now = now or dt.datetime.now(dt.timezone.utc)
    day_end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=zoneinfo.ZoneInfo(timezone))
    cutoff = day_end.astimezone(dt.timezone.utc)
    until = min(cutoff, now)
    ledger = dict(state.get("files", {}))
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    tmp = snapshot.with_suffix(".partial")
    counts = {"pulled": 0, "file_dated": 0, "future": 0}
    new_watermark = watermark

    def window(lines: Iterator[Line]) -> Iterator[bytes]:
        """The lines of this night, as they are read; the watermark follows them."""
        nonlocal new_watermark
        for line in lines:
            ts = line.timestamp  # None only for a database row the query put in the window
            if ts is not None and ts > now:
                counts["future"] += 1
                continue
            if ts is not None and (ts >= until or (not line.file_dated and ts <= watermark)):
                continue
            counts["pulled"] += 1
            counts["file_dated"] += line.file_dated
            if ts is not None and not line.file_dated:
                new_watermark = max(new_watermark, ts)
            if log and counts["pulled"] % source.chunk_rows == 0:
                log(f"ingest: {counts['pulled']} records pulled and redacted so far")
            yield line.raw

    tally, dropped = redact_mod.Tally(), 0
    started = time.time()
    try:
        if is_sql_url(source.url):
            _check_sqlite_file(source.url)
            lines = read_sql_source(source.url, source.table, watermark, until, source.chunk_rows)
        else:
            path = Path(source.url)
            if not path.exists():
                raise SourceError(f"{path} does not exist")
            lines = read_jsonl_source(path, ledger)
        with open(tmp, "w", encoding="utf-8") as out:
            for chunk in redact_mod.redact_stream(redact, window(lines), salt):
                kept = [r for r in chunk.records if not (forgotten and subjects.subjects_of(r) & forgotten)]
                dropped += len(chunk.records) - len(kept)
                tally.add(chunk._replace(records=kept))
                out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
        if is_sql_url(source.url):
            counts["future"] = count_sql_after(source.url, source.table, now)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, Exception) or isinstance(exc, redact_mod.RedactionSetupError):
            raise
        raise SourceError(_what_to_do(source.url, date, watermark, exc)) from exc

    # A file-dated file counts as pulled once the cycle's window reaches its time; for a later
    # one the ledger keeps what it said before, so the cycle that reaches it pulls it.
    # The same for a file of timestamped lines once the window passed its latest line: all of
    # it was pulled or lay behind the watermark, so later cycles need not read it again.
    ledger = {**state.get("files", {}),
              **{k: v for k, v in ledger.items()
                 if parse_timestamp(v.get("latest_timestamp") or v["mtime"]) < until}}
    new_state = {"timestamp": iso(new_watermark), "cycle": date.isoformat()}
    if ledger:
        new_state["files"] = ledger
    report = {**tally.report(redact, seconds=time.time() - started), "forgotten": dropped}
    _write_atomically(report_file, json.dumps(report, indent=2) + "\n")
    _write_atomically(pending, json.dumps(new_state, indent=2) + "\n")
    tmp.rename(snapshot)  # the commit point: a crash before it leaves no snapshot, after it ...
    pending.replace(watermark_file)  # ... the next run completes the watermark (see above)
    _write_cycle(cycle_file, date, snapshot)
    return {"date": date.isoformat(), "snapshot": str(snapshot), "reused_snapshot": False,
            "pulled": counts["pulled"], "in_snapshot": counts["pulled"] - dropped,
            "forgotten": dropped, "watermark_before": iso(watermark),
            "watermark": iso(new_watermark), "future_records": counts["future"],
            "file_dated_records": counts["file_dated"], "redaction": report}


def _what_to_do(url: str, date: dt.date, watermark: dt.datetime, exc: Exception) -> str:
    if not isinstance(exc, SourceError):
        exc = getattr(exc, "orig", None) or exc  # the driver's error, without SQLAlchemy's SQL echo
    reason = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
    return (f"could not read source {url!r}: {reason}. Nothing was pulled and the watermark has "
            f"not moved (still {iso(watermark)}). Check that the source is up and readable and "
            "that ingest.url in params.yaml (or --source) points at it, then run the cycle again: "
            f"nightshift run --date {date.isoformat()}")


def _write_cycle(cycle_file: Path, date: dt.date, snapshot: Path) -> None:
    cycle_file.parent.mkdir(parents=True, exist_ok=True)
    cycle_file.write_text(
        "# Written by ingest: the snapshot this cycle's DVC stages read (dvc.yaml `vars`).\n"
        + yaml.safe_dump({"cycle": {"date": date.isoformat(), "snapshot": snapshot.name}}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True,
                        help="the day whose interactions to pull (YYYY-MM-DD)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        p = params_mod.load(args.params)
        metrics = run(p.ingest, p.redact, args.date, log=lambda line: print(line, file=sys.stderr),
                      timezone=p.schedule.timezone)
    except (SourceError, redact_mod.RedactionSetupError) as exc:
        sys.exit(f"ingest failed: {exc}")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
