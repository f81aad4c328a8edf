import datetime as dt
import json

import pytest

from pipelines import ingest, sample_logs
from pipelines.params import SourceParams

DAY1, DAY2 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)


def lines_per_day(path):
    return len([l for l in path.read_text().splitlines() if l.strip()])


@pytest.fixture
def jsonl_logs(tmp_path):
    paths = sample_logs.generate(tmp_path / "logs", DAY1, 2, 30, seed=5, topic_shift=0.5)
    return tmp_path / "logs", paths


def run(tmp_path, url, day, table="interactions"):
    return ingest.run(SourceParams(str(url), table), day, raw_dir=tmp_path / "data/raw",
                      watermark_file=tmp_path / "data/watermark.json",
                      cycle_file=tmp_path / "data/cycle.yaml")


def test_each_day_is_pulled_once_broken_lines_included(tmp_path, jsonl_logs):
    folder, paths = jsonl_logs
    first = run(tmp_path, folder, DAY1)
    second = run(tmp_path, folder, DAY2)
    assert first["pulled"] == lines_per_day(paths[0])  # every line of day 1, the cut-off one too
    assert second["pulled"] == lines_per_day(paths[1])
    snapshot = (tmp_path / "data/raw/2026-01-05.jsonl").read_bytes()
    assert snapshot.splitlines() == [l for l in paths[0].read_bytes().splitlines() if l.strip()]


def test_running_the_same_night_twice_pulls_nothing_twice(tmp_path, jsonl_logs):
    folder, _ = jsonl_logs
    first = run(tmp_path, folder, DAY1)
    again = run(tmp_path, folder, DAY1)
    assert again["reused_snapshot"] and again["pulled"] == first["pulled"]
    assert not (tmp_path / "data/raw/2026-01-06.jsonl").exists()


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
    assert not list((tmp_path / "data").glob("raw/*.jsonl"))


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
        pulled = (tmp_path / f"data/raw/{day.isoformat()}.jsonl").read_text().splitlines()
        assert sorted(pulled) == sorted(expected)  # the same lines, byte for byte, none twice


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
        lines = (tmp_path / f"data/raw/{day.isoformat()}.jsonl").read_text().splitlines()
        return [json.loads(line)["id"] for line in lines]

    assert first["pulled"] == len(day1_ids) and sorted(pulled_ids(DAY1)) == sorted(day1_ids)
    assert second["pulled"] == len(day2_ids) and sorted(pulled_ids(DAY2)) == sorted(day2_ids)
    assert again["reused_snapshot"] and again["pulled"] == second["pulled"]
    record = json.loads((tmp_path / "data/raw/2026-01-06.jsonl").read_text().splitlines()[0])
    assert set(record) >= {"id", "timestamp", "messages"}  # the record itself, not the table row
    watermark = json.loads((tmp_path / "data/watermark.json").read_text())["timestamp"]
    assert watermark == day2_last
