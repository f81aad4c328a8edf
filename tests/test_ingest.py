import datetime as dt
import json

import pytest

from pipelines.common.params import IngestParams
from pipelines.common.records import parse_line
from pipelines.data import ingest
from pipelines.privacy import redact
from pipelines.samples import sample_logs

DAY1, DAY2 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)


@pytest.fixture(autouse=True)
def _redact_params(params):
    global REDACT
    REDACT = params.redact


def paths(root):
    """Where ingest keeps its files in a workspace rooted at `root`."""
    return dict(snapshot_dir=root / "data/snapshots", watermark_file=root / "data/watermark.json",
                cycle_file=root / "data/cycle.yaml", salt_file=root / ".nightshift/subject-salt",
                tombstones_file=root / "data/forgotten.jsonl")


def as_pulled(root, lines):
    """Source lines as ingest writes them: redacted, with the workspace's subject hashes."""
    redactor = redact.Redactor(REDACT)
    salt = (root / ".nightshift/subject-salt").read_text().strip().encode()
    return [json.dumps(redactor.redact_record(parse_line(line), salt), ensure_ascii=False)
            for line in lines if line.strip()]


def lines_per_day(path):
    return len([l for l in path.read_text().splitlines() if l.strip()])


@pytest.fixture
def jsonl_logs(tmp_path):
    paths = sample_logs.generate(tmp_path / "logs", DAY1, 2, 30, seed=5, topic_shift=0.5)
    return tmp_path / "logs", paths


def run(tmp_path, url, day, table="interactions"):
    return ingest.run(IngestParams(str(url), table, 1000, retries=0, retry_backoff_seconds=0), REDACT, day, **paths(tmp_path))


def test_each_day_is_pulled_once_broken_lines_included(tmp_path, jsonl_logs):
    folder, paths = jsonl_logs
    first = run(tmp_path, folder, DAY1)
    second = run(tmp_path, folder, DAY2)
    assert first["pulled"] == lines_per_day(paths[0])  # every line of day 1, the cut-off one too
    assert second["pulled"] == lines_per_day(paths[1])
    snapshot = (tmp_path / "data/snapshots/2026-01-05.jsonl").read_text()
    # The night's records, in order, redacted as they were pulled: nothing else was written.
    assert snapshot.splitlines() == as_pulled(tmp_path, paths[0].read_text().splitlines())


def test_nothing_unredacted_is_written_and_records_keep_who_they_are_about_as_hashes(tmp_path):
    from pipelines.privacy import subjects

    folder = tmp_path / "logs"
    write_lines(folder / "log.jsonl", [
        chat(1, "2026-01-05T10:00:00Z", text="I'm at jo.lee@example.com, card 4111 1111 1111 1111",
             metadata={"user_id": "acct-77", "contact": "call +44 20 7946 0958"},
             feedback={"rating": "down", "comment": "reply to jo.lee@example.com please"}),
        chat(2, "2026-01-05T11:00:00Z", metadata={"user_id": "acct-88"})])
    with open(folder / "log.jsonl", "a") as log:  # cut off: kept as text, redacted as text
        log.write('{"id": "x", "timestamp": "2026-01-05T12:00:00Z", "messages": "mail jo.lee@example.com\n')
    pulled = run(tmp_path, folder, DAY1)
    assert pulled["pulled"] == 3 and pulled["redaction"]["replaced"]["EMAIL_ADDRESS"] == 3
    written = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()
                       and folder not in f.parents)
    for value in (b"jo.lee@example.com", b"4111 1111 1111 1111", b"7946 0958", b"acct-77"):
        assert value not in written
    first, second, broken = [parse_line(l) for l in
                             (tmp_path / "data/snapshots/2026-01-05.jsonl").read_bytes().splitlines()]
    assert "<EMAIL_ADDRESS_1>" in first["feedback"]["comment"] and "_invalid" in broken
    assert "user_id" not in first["metadata"] and "<PHONE_NUMBER_1>" in first["metadata"]["contact"]
    salt = subjects.load_salt(tmp_path / ".nightshift/subject-salt")
    # A record is found by any of its identifiers, however they are written.
    for about in ({"user_id": "acct-77"}, {"text": "JO.LEE@example.com "}, {"text": "+44 (20) 7946-0958"},
                  {"text": "4111-1111-1111-1111"}):
        assert subjects.match_subjects(salt, **about) & subjects.subjects_of(first), about
        assert not subjects.match_subjects(salt, **about) & subjects.subjects_of(second), about
    # The cut-off line is found by the email it held too, though it is no record.
    assert subjects.match_subjects(salt, text="jo.lee@example.com") & subjects.subjects_of(broken)


def test_a_record_about_a_forgotten_person_is_dropped_when_pulled_again(tmp_path):
    from pipelines.privacy import subjects

    folder = tmp_path / "logs"
    salt = subjects.load_salt(tmp_path / ".nightshift/subject-salt")
    tombstone = {"subjects": sorted(subjects.match_subjects(salt, user_id="acct-77")), "date": "2026-01-05"}
    write_lines(tmp_path / "data/forgotten.jsonl", [tombstone])
    write_lines(folder / "log.jsonl", [chat(1, "2026-01-05T10:00:00Z", metadata={"user_id": "acct-77"}),
                                       chat(2, "2026-01-05T11:00:00Z", metadata={"user_id": "acct-88"})])
    pulled = run(tmp_path, folder, DAY1)
    assert (pulled["pulled"], pulled["in_snapshot"], pulled["forgotten"]) == (2, 1, 1)
    assert snapshot_ids(tmp_path, "2026-01-05") == ["c2"]
    again = run(tmp_path, folder, DAY1)  # a re-run reuses the snapshot and still counts the drop
    assert again["reused_snapshot"] and (again["pulled"], again["forgotten"]) == (2, 1)


def test_running_the_same_night_twice_pulls_nothing_twice(tmp_path, jsonl_logs):
    folder, _ = jsonl_logs
    first = run(tmp_path, folder, DAY1)
    again = run(tmp_path, folder, DAY1)
    assert again["reused_snapshot"] and again["pulled"] == first["pulled"]
    assert not (tmp_path / "data/snapshots/2026-01-06.jsonl").exists()


def test_cycle_file_points_the_dag_at_the_snapshot(tmp_path, jsonl_logs):
    import yaml

    run(tmp_path, jsonl_logs[0], DAY1)
    cycle = yaml.safe_load((tmp_path / "data/cycle.yaml").read_text())["cycle"]
    assert cycle == {"date": "2026-01-05", "snapshot": "2026-01-05.jsonl"}


def test_sqlite_table_is_read_incrementally(tmp_path):
    db = tmp_path / "log.db"
    sample_logs.generate(db, DAY1, 2, 25, seed=5, topic_shift=0.5, fmt="sqlite")
    first = run(tmp_path, f"sqlite:///{db}", DAY1)
    second = run(tmp_path, f"sqlite:///{db}", DAY2)
    assert first["pulled"] == 25 + 6 and second["pulled"] == 25 + 6
    assert json.loads((tmp_path / "data/watermark.json").read_text())["timestamp"].startswith("2026-01-06")


def test_missing_source_fails_clearly_and_keeps_the_watermark(tmp_path):
    with pytest.raises(ingest.SourceError, match="does not exist"):
        run(tmp_path, tmp_path / "nowhere", DAY1)
    with pytest.raises(ingest.SourceError, match="could not read source"):
        run(tmp_path, f"sqlite:///{tmp_path}/empty.db", DAY1)
    assert not (tmp_path / "data/watermark.json").exists()
    assert not list((tmp_path / "data").glob("snapshots/*.jsonl"))


def test_postgresql_table_is_pulled_night_by_night_each_row_once(tmp_path, postgres_url):
    """The sample log as rows of a real PostgreSQL table (raw lines as text), broken lines included."""
    sample_logs.generate(postgres_url, DAY1, 2, 25, seed=5, topic_shift=0.5, fmt="sql")
    first = run(tmp_path, postgres_url, DAY1)
    again = run(tmp_path, postgres_url, DAY1)
    second = run(tmp_path, postgres_url, DAY2)
    assert first["pulled"] == 25 + 6 and second["pulled"] == 25 + 6
    assert again["reused_snapshot"] and again["pulled"] == first["pulled"]
    for day in (DAY1, DAY2):
        expected = sample_logs.generate_day(5, day, (day - DAY1).days, 25, 0.5)
        pulled = (tmp_path / f"data/snapshots/{day.isoformat()}.jsonl").read_text().splitlines()
        assert sorted(pulled) == sorted(as_pulled(tmp_path, expected))  # each line once, redacted


def test_postgresql_rows_logged_after_a_pull_go_to_the_next_night_only(tmp_path, postgres_url):
    """An application's own table: timestamptz and a JSONB record, rows arriving day after day."""
    import sqlalchemy as sa

    def log_day(conn, day, index):
        rows = [json.loads(line) for line in sample_logs.generate_day(5, day, index, 20, 0.5)
                if line.startswith("{") and line.endswith("}") and '"messages"' in line]
        rows = list({r["id"]: r for r in rows}.values())  # the app's primary key: one row per id
        conn.execute(sa.text("INSERT INTO interactions (id, timestamp, record) "
                             "VALUES (:id, CAST(:ts AS timestamptz), CAST(:record AS jsonb))"),
                     [{"id": r["id"], "ts": r["timestamp"], "record": json.dumps(r)} for r in rows])
        return {r["id"] for r in rows}, max(r["timestamp"] for r in rows)

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE interactions (id text PRIMARY KEY, "
                             "timestamp timestamptz NOT NULL, record jsonb NOT NULL)"))
        day1_ids, _ = log_day(conn, DAY1, 0)
    first = run(tmp_path, postgres_url, DAY1)
    with engine.begin() as conn:  # the next day's traffic is logged after the first pull
        day2_ids, day2_last = log_day(conn, DAY2, 1)
    second = run(tmp_path, postgres_url, DAY2)
    again = run(tmp_path, postgres_url, DAY2)
    engine.dispose()

    def pulled_ids(day):
        lines = (tmp_path / f"data/snapshots/{day.isoformat()}.jsonl").read_text().splitlines()
        return [json.loads(line)["id"] for line in lines]

    assert first["pulled"] == len(day1_ids) and sorted(pulled_ids(DAY1)) == sorted(day1_ids)
    assert second["pulled"] == len(day2_ids) and sorted(pulled_ids(DAY2)) == sorted(day2_ids)
    assert again["reused_snapshot"] and again["pulled"] == second["pulled"]
    record = json.loads((tmp_path / "data/snapshots/2026-01-06.jsonl").read_text().splitlines()[0])
    assert set(record) >= {"id", "timestamp", "messages"}  # the record itself, not the table row
    watermark = json.loads((tmp_path / "data/watermark.json").read_text())["timestamp"]
    assert watermark == day2_last


# --- Sources that misbehave -------------------------------------------------------------------

def chat(i, ts, text=None, **extra):
    return {"id": f"c{i}", "timestamp": ts, "feedback": None, "metadata": {},
            "messages": [{"role": "user", "content": text or f"question {i}"},
                         {"role": "assistant", "content": f"answer {i}"}], **extra}


def write_lines(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def snapshot_ids(tmp_path, day):
    from pipelines.common.records import parse_line

    return [parse_line(l)["id"] for l in (tmp_path / f"data/snapshots/{day}.jsonl").read_bytes().splitlines()]


def set_mtime(path, when: str):
    import os

    stamp = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    os.utime(path, (stamp, stamp))


def test_openai_fine_tuning_lines_get_a_content_id_and_their_file_time_and_are_pulled_once(tmp_path):
    from pipelines.common.records import parse_line

    folder = tmp_path / "logs"
    lines = [{"messages": [{"role": "user", "content": "How do I reset my password?"},
                           {"role": "assistant", "content": "Use the link on the sign-in page."}]},
             {"prompt": "Do you ship abroad?", "completion": "Yes, to over 40 countries."}]
    ft = write_lines(folder / "finetune.jsonl", lines)
    set_mtime(ft, "2026-01-05T12:00:00Z")

    first = run(tmp_path, folder, DAY1)
    assert first["pulled"] == 2 and first["file_dated_records"] == 2
    records = [parse_line(l) for l in (tmp_path / "data/snapshots/2026-01-05.jsonl").read_bytes().splitlines()]
    assert all(r["timestamp"] == "2026-01-05T12:00:00Z" for r in records)
    assert all(r["metadata"]["timestamp_from"] == "file_mtime" for r in records)
    assert [m["role"] for m in records[1]["messages"]] == ["user", "assistant"]
    assert records[1]["messages"][1]["content"] == "Yes, to over 40 countries."
    assert records[0]["id"].startswith("sha256-") and records[0]["id"] != records[1]["id"]
    assert parse_line(json.dumps(lines[0]))["id"] == records[0]["id"]  # stable: from the content
    # Undated lines do not move the watermark: it stays where records with their own time put it.
    assert first["watermark"] == ingest.EPOCH

    assert run(tmp_path, folder, DAY2)["pulled"] == 0  # the same file again adds nothing

    with open(ft, "a") as f:  # appended to later: only the new line is pulled, by its night
        f.write(json.dumps({"prompt": "Can I pay by invoice?", "completion": "Yes, for business accounts."}) + "\n")
    set_mtime(ft, "2026-01-07T09:00:00Z")
    third = run(tmp_path, folder, dt.date(2026, 1, 7))
    assert third["pulled"] == 1
    [added] = [parse_line(l) for l in (tmp_path / "data/snapshots/2026-01-07.jsonl").read_bytes().splitlines()]
    assert added["messages"][0]["content"] == "Can I pay by invoice?"
    assert added["timestamp"] == "2026-01-07T09:00:00Z"


def test_a_file_dated_after_the_cycle_waits_for_its_own_night(tmp_path):
    folder = tmp_path / "logs"
    ft = write_lines(folder / "finetune.jsonl", [{"prompt": "p", "completion": "c"}])
    set_mtime(ft, "2026-01-06T08:00:00Z")
    assert run(tmp_path, folder, DAY1)["pulled"] == 0
    assert run(tmp_path, folder, DAY2)["pulled"] == 1


def test_future_timestamps_stay_in_the_source_and_never_move_the_watermark_past_now(tmp_path):
    folder = tmp_path / "logs"
    write_lines(folder / "log.jsonl", [chat(1, "2026-01-06T10:00:00Z"), chat(2, "2026-01-06T18:00:00Z"),
                                       chat(3, "2027-01-06T00:00:00Z")])  # a wrong clock upstream
    source = IngestParams(str(folder), "interactions", 1000, retries=0, retry_backoff_seconds=0)
    noon = ingest.run(source, REDACT, DAY2, now=dt.datetime(2026, 1, 6, 12, tzinfo=dt.timezone.utc),
                      **paths(tmp_path))
    assert noon["pulled"] == 1 and noon["future_records"] == 2
    assert noon["watermark"] == "2026-01-06T10:00:00Z"  # not 2027: 18:00 is still to be pulled

    next_night = ingest.run(source, REDACT, dt.date(2026, 1, 7),
                            now=dt.datetime(2026, 1, 8, 3, tzinfo=dt.timezone.utc), **paths(tmp_path))
    assert next_night["pulled"] == 1 and next_night["future_records"] == 1
    assert snapshot_ids(tmp_path, "2026-01-07") == ["c2"]
    assert next_night["watermark"] == "2026-01-06T18:00:00Z"


def test_the_night_ends_at_midnight_on_the_schedules_clock_not_utc(tmp_path):
    # 23:30 in New York on 6 January is 04:30 UTC on the 7th: New York's night of the 6th.
    folder = tmp_path / "logs"
    write_lines(folder / "log.jsonl", [chat(1, "2026-01-06T15:00:00Z"), chat(2, "2026-01-07T04:30:00Z"),
                                       chat(3, "2026-01-07T05:30:00Z")])  # 00:30 on the 7th there
    source = IngestParams(str(folder), "interactions", 1000, retries=0, retry_backoff_seconds=0)
    later = dt.datetime(2026, 1, 9, tzinfo=dt.timezone.utc)
    for zone, night in (("America/New_York", ["c1", "c2"]), ("UTC", ["c1"])):
        root = tmp_path / zone.replace("/", "-")
        ingest.run(source, REDACT, DAY2, now=later, timezone=zone, **paths(root))
        assert snapshot_ids(root, DAY2.isoformat()) == night, zone


def test_out_of_order_timestamps_across_files_skip_nothing_and_pull_nothing_twice(tmp_path):
    import random

    folder = tmp_path / "logs"
    day1 = [chat(i, f"2026-01-05T{i % 24:02d}:{i % 60:02d}:00Z") for i in range(40)]
    day2 = [chat(100 + i, f"2026-01-06T{i % 24:02d}:{i % 60:02d}:00Z") for i in range(40)]
    mixed = day1 + day2
    random.Random(3).shuffle(mixed)
    write_lines(folder / "a.jsonl", mixed[:50])
    write_lines(folder / "b.jsonl", mixed[50:])

    assert run(tmp_path, folder, DAY1)["pulled"] == 40
    assert run(tmp_path, folder, DAY2)["pulled"] == 40
    first, second = snapshot_ids(tmp_path, "2026-01-05"), snapshot_ids(tmp_path, "2026-01-06")
    assert sorted(first) == sorted(r["id"] for r in day1)
    assert sorted(second) == sorted(r["id"] for r in day2)


def test_duplicate_ids_in_the_source_are_pulled_and_counted_as_duplicates(tmp_path, params):
    from pipelines.common.records import parse_line, write_jsonl
    from pipelines.data import dataset

    folder = tmp_path / "logs"
    write_lines(folder / "log.jsonl", [chat(i, f"2026-01-05T10:{i:02d}:00Z") for i in range(10)]
                + [chat(3, "2026-01-05T11:00:00Z", text="a different question under an old id"),
                   chat(4, "2026-01-05T11:01:00Z")])  # logged twice
    pulled = run(tmp_path, folder, DAY1)["pulled"]
    assert pulled == 12  # ingest keeps everything; the dataset stage decides
    clean = [parse_line(l) for l in (tmp_path / "data/snapshots/2026-01-05.jsonl").read_bytes().splitlines()]
    write_jsonl(tmp_path / "clean.jsonl", clean)
    report = dataset.run(params.dataset, params.replay, params.seed, "2026-01-05",
                         tmp_path / "clean.jsonl", tmp_path / "none.jsonl", tmp_path / "out")
    assert report["exact_duplicates"] == 2 and report["unique"] == 10
    assert pulled == report["unique"] + report["duplicates"]


def test_a_jsonl_file_truncated_or_removed_while_being_read_is_an_error(tmp_path):
    for mishap in ("truncate", "remove"):
        log = write_lines(tmp_path / mishap / "log.jsonl",
                          [chat(i, "2026-01-05T10:00:00Z", text="x" * 2000) for i in range(2000)])
        lines = ingest.read_jsonl_source(log.parent)
        for _ in range(10):
            next(lines)
        if mishap == "truncate":
            with open(log, "r+b") as f:
                f.truncate(5000)
        else:
            log.unlink()
        with pytest.raises(ingest.SourceError, match="truncated|disappeared"):
            list(lines)


def test_a_file_gone_mid_read_writes_no_snapshot_and_keeps_the_watermark(tmp_path):
    folder = tmp_path / "logs"
    write_lines(folder / "2026-01-05.jsonl", [chat(i, f"2026-01-05T10:{i:02d}:00Z") for i in range(5)])
    run(tmp_path, folder, DAY1)
    watermark = (tmp_path / "data/watermark.json").read_bytes()
    write_lines(folder / "2026-01-06.jsonl", [chat(10 + i, f"2026-01-06T10:{i:02d}:00Z") for i in range(5)])
    (folder / "2026-01-07.jsonl").symlink_to(tmp_path / "rotated-away.jsonl")  # listed, then gone

    with pytest.raises(ingest.SourceError, match="disappeared.*watermark has not moved.*run the cycle again"):
        run(tmp_path, folder, DAY2)
    assert (tmp_path / "data/watermark.json").read_bytes() == watermark
    assert sorted(p.name for p in (tmp_path / "data/snapshots").glob("*.jsonl")) == ["2026-01-05.jsonl"]


@pytest.mark.slow
def test_a_database_failing_in_the_middle_of_a_chunked_read_writes_nothing(tmp_path):
    import sqlite3

    db = tmp_path / "log.db"
    start = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    stamps = [ingest.iso(start + dt.timedelta(seconds=10 * i)) for i in range(3000)]
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE interactions (id TEXT, timestamp TEXT, record TEXT)")
        conn.executemany("INSERT INTO interactions VALUES (?, ?, ?)",
                         [(f"c{i}", ts, json.dumps(chat(i, ts, text="y" * 500))) for i, ts in enumerate(stamps)])
        conn.execute("CREATE INDEX by_time ON interactions (timestamp, id)")  # rows stream in time order
    size = db.stat().st_size
    with open(db, "r+b") as f:  # the pages holding the later rows go bad under the reader
        f.seek(size // 2)
        f.write(b"\xff" * (size // 4))
    source = IngestParams(f"sqlite:///{db}", "interactions", 100, retries=0, retry_backoff_seconds=0)
    progress = []
    with pytest.raises(ingest.SourceError, match="malformed.*watermark has not moved"):
        ingest.run(source, REDACT, DAY1, log=progress.append, **paths(tmp_path))
    assert progress, "the read should have failed after some chunks, not before the first"
    assert not (tmp_path / "data/watermark.json").exists()
    assert not list((tmp_path / "data/snapshots").iterdir())  # no snapshot, no partial one


def test_a_missing_sqlite_database_is_an_error_and_is_not_created(tmp_path):
    with pytest.raises(ingest.SourceError, match="does not exist"):
        run(tmp_path, f"sqlite:///{tmp_path}/gone.db", DAY1)
    assert not (tmp_path / "gone.db").exists()


def test_a_run_stopped_between_snapshot_and_watermark_is_completed_by_the_next(tmp_path, jsonl_logs):
    run(tmp_path, jsonl_logs[0], DAY1)
    watermark_file = tmp_path / "data/watermark.json"
    # As left by a crash right after the snapshot's rename: the new watermark still pending.
    watermark_file.rename(tmp_path / "data/watermark.json.pending")
    again = run(tmp_path, jsonl_logs[0], DAY1)
    assert again["reused_snapshot"] and watermark_file.exists()
    assert json.loads(watermark_file.read_text())["timestamp"].startswith("2026-01-05")
    assert not (tmp_path / "data/watermark.json.pending").exists()


@pytest.mark.slow
def test_source_down_fails_the_cycle_after_retries_alerts_and_keeps_the_watermark(tmp_path, monkeypatch):
    """The one flow-level test here: a real Prefect run, real retries, a real HTTP receiver."""
    from prefect.testing.utilities import prefect_test_harness

    from flows import workspace as wsp
    from flows.nightly import nightly
    from tests.conftest import write_tiny_params
    from tests.test_notify import Receiver

    receiver = Receiver()
    monkeypatch.setenv("NIGHTSHIFT_ALERT_URLS", receiver.url)
    ws = wsp.init(tmp_path / "workspace")
    write_tiny_params(ws / "params.yaml", **{"ingest.url": f"sqlite:///{tmp_path}/down/interactions.db",
                                             "ingest.retries": 2, "ingest.retry_backoff_seconds": 0.05})
    watermark = {"timestamp": "2026-01-04T23:59:00Z", "cycle": "2026-01-04"}
    (ws / "data").mkdir(exist_ok=True)
    (ws / "data/watermark.json").write_text(json.dumps(watermark))
    before = (ws / "data/watermark.json").read_bytes()

    with prefect_test_harness(server_startup_timeout=120):
        with pytest.raises(ingest.SourceError, match=r"attempt 3 of 3"):
            nightly(date="2026-01-05", workspace=str(ws))
    receiver.server.shutdown()

    assert (ws / "data/watermark.json").read_bytes() == before
    assert not (ws / "data/snapshots/2026-01-05.jsonl").exists()
    summary = json.loads((ws / "reports/summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_stage"] == "ingest"
    [alert] = receiver.received
    assert "FAILED in ingest" in alert["title"]
    assert "watermark has not moved" in alert["message"] and "attempt 3 of 3" in alert["message"]
    assert "nightshift run --date 2026-01-05" in alert["message"]


def test_log_files_a_night_took_in_full_are_not_read_again(tmp_path, monkeypatch):
    """A night's ingest reads the files that may still hold new lines, not the whole history."""
    paths = sample_logs.generate(tmp_path / "logs", DAY1, 3, 20, seed=5, topic_shift=0.5)
    parsed = []
    line_timestamp = ingest._line_timestamp
    monkeypatch.setattr(ingest, "_line_timestamp", lambda raw: parsed.append(raw) or line_timestamp(raw))
    pulled, read = [], []
    for day in (DAY1, DAY2, DAY2 + dt.timedelta(days=1)):
        parsed.clear()
        pulled.append(run(tmp_path, tmp_path / "logs", day)["pulled"])
        read.append(len(parsed))
    assert pulled == [lines_per_day(p) for p in paths]  # each line once, in its own night
    # Night 1 reads all three files; night 3 only its own: days 1 and 2 were taken in full.
    assert read[0] == sum(pulled) and read[2] == pulled[2]
    # A file appended to after it was taken is read again, from where it was left.
    with open(paths[0], "a") as f:
        f.write(json.dumps({"id": "late", "timestamp": "2026-01-08T09:00:00Z",
                            "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    parsed.clear()
    assert run(tmp_path, tmp_path / "logs", DAY2 + dt.timedelta(days=3))["pulled"] == 1
    assert len(parsed) == 1
