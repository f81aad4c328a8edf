"""ingest: pull the interactions newer than the watermark, up to the end of the cycle's day.

Writes the raw lines exactly as pulled to data/raw/<date>.jsonl (the cycle's pinned snapshot),
points data/cycle.yaml at it, and moves the watermark in data/watermark.json. Ingest reads a live
source, so it sits outside the DVC DAG; the snapshot it writes is what the DAG reproduces from.

Sources (source.url in params.yaml):
  - a folder of *.jsonl files, or one .jsonl file (log files as written by the assistant)
  - any SQLAlchemy URL (sqlite:///..., postgresql://...) with a table holding `id`, `timestamp`
    and either a `record` column of JSON text or the record's fields as columns
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import yaml

from pipelines import params as params_mod

RAW_DIR = Path("data/raw")
CYCLE_FILE = Path("data/cycle.yaml")
WATERMARK_FILE = Path("data/watermark.json")
EPOCH = "1970-01-01T00:00:00Z"


class SourceError(RuntimeError):
    """The source could not be read; the watermark has not moved."""


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


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def read_jsonl_source(path: Path) -> Iterator[tuple[dt.datetime | None, bytes]]:
    """(timestamp, raw line) for every non-empty line of the JSONL files under `path`.

    A line whose timestamp cannot be read (broken JSON, say) takes the timestamp of the line
    before it in the same file (or the next one, at the top of a file), since log files are
    written in time order: so it is pulled exactly once, by the cycle of its neighbours.
    """
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    for file in files:
        pending: list[bytes] = []
        last: dt.datetime | None = None
        with open(file, "rb") as f:
            for raw in f:
                raw = raw.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                ts = None
                try:
                    data = json.loads(raw)
                    if isinstance(data, dict):
                        ts = parse_timestamp(data.get("timestamp"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass
                if ts is None and last is None:
                    pending.append(raw)
                    continue
                if ts is None:
                    ts = last
                for held in pending:
                    yield ts, held
                pending = []
                last = ts
                yield ts, raw
        for held in pending:  # a file with no readable timestamp at all
            yield None, held


def read_sql_source(url: str, table: str, after: dt.datetime, until: dt.datetime
                    ) -> Iterator[tuple[dt.datetime | None, bytes]]:
    """(timestamp, raw line) for rows with after < timestamp <= until, in timestamp order."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
            ts_col = tbl.c.timestamp
            is_text = isinstance(ts_col.type, sa.String)
            lo, hi = (iso(after), iso(until)) if is_text else (after, until)
            query = (sa.select(tbl).where(ts_col > lo, ts_col <= hi)
                     .order_by(ts_col, *(c for c in tbl.c if c.name == "id")))
            for row in conn.execute(query).mappings():
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
                yield ts, raw
    finally:
        engine.dispose()


def is_sql_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def read_watermark(path: Path = WATERMARK_FILE) -> dt.datetime:
    if path.exists():
        return parse_timestamp(json.loads(path.read_text())["timestamp"])
    return parse_timestamp(EPOCH)


def run(source: params_mod.SourceParams, date: dt.date, raw_dir: Path = RAW_DIR,
        watermark_file: Path = WATERMARK_FILE, cycle_file: Path = CYCLE_FILE) -> dict:
    """Pull one cycle's records and pin them as the cycle's snapshot.

    Args:
        source: where the log lives (params.yaml `source`).
        date: the day whose interactions this cycle learns from.
    Returns:
        metrics: pulled count, snapshot path, watermark before and after, reused or not.
    """
    snapshot = raw_dir / f"{date.isoformat()}.jsonl"
    watermark = read_watermark(watermark_file)
    cutoff = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    if snapshot.exists():
        # This night was pulled already: the snapshot is the cycle's input, pull nothing twice.
        pulled = sum(1 for line in snapshot.read_bytes().splitlines() if line.strip())
        _write_cycle(cycle_file, date, snapshot)
        return {"date": date.isoformat(), "snapshot": str(snapshot), "pulled": pulled,
                "reused_snapshot": True, "watermark": iso(watermark)}

    try:
        if is_sql_url(source.url):
            rows = list(read_sql_source(source.url, source.table, watermark, cutoff))
        else:
            path = Path(source.url)
            if not path.exists():
                raise SourceError(f"source {path} does not exist: set source.url in params.yaml "
                                  "to a folder of JSONL logs or a database URL")
            rows = [(ts, raw) for ts, raw in read_jsonl_source(path)
                    if ts is not None and watermark < ts <= cutoff]
    except SourceError:
        raise
    except Exception as exc:  # a driver or file error: the watermark stays where it was
        raise SourceError(f"could not read source {source.url!r}: {exc}") from exc

    raw_dir.mkdir(parents=True, exist_ok=True)
    tmp = snapshot.with_suffix(".partial")
    with open(tmp, "wb") as f:
        for _, raw in rows:
            f.write(raw + b"\n")
    tmp.rename(snapshot)  # atomic: a crash never leaves half a snapshot under the real name
    new_watermark = max([ts for ts, _ in rows if ts is not None], default=watermark)
    watermark_file.parent.mkdir(parents=True, exist_ok=True)
    watermark_file.write_text(json.dumps({"timestamp": iso(new_watermark),
                                          "cycle": date.isoformat()}, indent=2) + "\n")
    _write_cycle(cycle_file, date, snapshot)
    return {"date": date.isoformat(), "snapshot": str(snapshot), "pulled": len(rows),
            "reused_snapshot": False, "watermark_before": iso(watermark),
            "watermark": iso(new_watermark)}


def _write_cycle(cycle_file: Path, date: dt.date, snapshot: Path) -> None:
    cycle_file.parent.mkdir(parents=True, exist_ok=True)
    cycle_file.write_text(
        "# Written by ingest: the snapshot this cycle's DVC stages read (dvc.yaml `vars`).\n"
        + yaml.safe_dump({"cycle": {"date": date.isoformat(), "snapshot": snapshot.name}}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True,
                        help="the day whose interactions to pull (YYYY-MM-DD)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    print(json.dumps(run(params_mod.load(args.params).source, args.date), indent=2))


if __name__ == "__main__":
    main()
