import datetime as dt
import json
import re
import sqlite3

from pipelines.samples import sample_logs


def test_same_seed_writes_the_same_bytes(tmp_path):
    a = sample_logs.generate(tmp_path / "a", dt.date(2026, 1, 5), 2, 30, seed=1, topic_shift=0.8)
    b = sample_logs.generate(tmp_path / "b", dt.date(2026, 1, 5), 2, 30, seed=1, topic_shift=0.8)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_a_day_holds_records_personal_data_and_malformed_lines(tmp_path):
    [path] = sample_logs.generate(tmp_path, dt.date(2026, 1, 5), 1, 200, seed=3, topic_shift=0.8)
    lines = path.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    assert len(lines) - len(parsed) == 1  # one line cut off mid-record
    text = path.read_text()
    assert re.search(r"[\w.]+@example\.com", text)
    assert re.search(r"\bDE\d{20}\b", text)
    assert re.search(r"\b(sk-|AKIA|ghp_)", text)
    assert any("prompt" in r for r in parsed)  # a flat record
    assert any(m.get("role") == "wizard" for r in parsed for m in r.get("messages", []))
    ids = [r.get("id") for r in parsed]
    assert len(ids) != len(set(ids))  # an interaction logged twice


def test_topic_mix_shifts_from_day_to_day(tmp_path):
    paths = sample_logs.generate(tmp_path, dt.date(2026, 1, 5), 3, 300, seed=3, topic_shift=0.9)

    def top_topic(path):
        counts = {}
        for line in path.read_text().splitlines():
            try:
                topic = json.loads(line)["metadata"]["topic"]
            except (json.JSONDecodeError, KeyError):
                continue
            counts[topic] = counts.get(topic, 0) + 1
        return max(counts, key=counts.get)

    assert len({top_topic(p) for p in paths}) == 3


def test_generated_card_numbers_and_ibans_are_valid():
    import random

    card = sample_logs.luhn_complete("4" + "1" * 14)
    digits = [int(c) for c in card][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    assert total % 10 == 0
    iban = sample_logs.iban_de(random.Random(0))
    rearranged = iban[4:] + iban[:4]
    assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def test_sqlite_format_writes_a_table(tmp_path):
    [db] = sample_logs.generate(tmp_path / "log.db", dt.date(2026, 1, 5), 2, 20, seed=1,
                                topic_shift=0.5, fmt="sqlite")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM interactions").fetchone()[0] == 2 * (20 + 6)
