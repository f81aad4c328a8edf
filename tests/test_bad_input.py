"""Bad input through the real stages, as the nightly flow runs them: a JSONL log folder with good
and broken lines -> ingest (redacting with Presidio as it pulls) -> validate (GX) -> dataset. Each
broken line must end in quarantine with its reason, or be counted as a duplicate; the good ones must
be clean; and pulled = clean + quarantined + duplicates must hold (flows.summary.accounting)."""

import datetime as dt
import json
import random
from contextlib import chdir

import pytest

from flows.summary import accounting
from pipelines.common.params import IngestParams
from pipelines.data import dataset, ingest, validate

DAY = dt.date(2026, 1, 5)
WORDS = ("order refund invoice password shipping discount parcel courier address basket voucher "
         "account login email receipt warranty return exchange size colour delivery tracking "
         "payment card bank transfer cancel subscription renew upgrade plan price tax country "
         "store branch opening hours phone support agent manager complaint review rating gift "
         "wrap label printer battery charger cable screen repair replacement damaged missing").split()


def good(i: int) -> dict:
    """A valid record; each one's words are drawn at random, so no two are near-duplicates."""
    rng = random.Random(i)
    return {"id": f"good-{i}", "timestamp": f"2026-01-05T{8 + i // 60:02d}:{i % 60:02d}:00Z",
            "feedback": "up", "metadata": {"channel": "web"},
            "messages": [{"role": "user", "content": "about my " + " ".join(rng.sample(WORDS, 10)) + "?"},
                         {"role": "assistant", "content": "please check " + " ".join(rng.sample(WORDS, 12))}]}


def line(record: dict) -> bytes:
    return json.dumps(record).encode()


TS = "2026-01-05T12:30:00Z"
# name -> (raw line as logged, reasons it must be quarantined with)
BAD = {
    "invalid_json": (b'{"id": "cut-off", "timestamp": "' + TS.encode() + b'", "messages": [{"role": "us',
                     ["invalid_json"]),
    "invalid_utf8": (b'{"id": "latin1", "timestamp": "' + TS.encode()
                     + b'", "messages": [{"role": "user", "content": "caf\xe9 cr\xe8me?"}]}', ["invalid_utf8"]),
    "not_an_object": (b'["user", "hello"]', ["not_an_object"]),
    "missing_messages": (line({"id": "no-messages", "timestamp": TS, "feedback": None}), ["missing_messages"]),
    "missing_timestamp": (line({k: v for k, v in good(901).items() if k != "timestamp"}), ["bad_timestamp"]),
    "id_of_wrong_type": (line({**good(902), "id": {"nested": 1}}), ["invalid_id"]),
    "messages_a_string": (line({**good(903), "messages": "user: hi / assistant: hello"}), ["invalid_messages"]),
    "content_a_number": (line({**good(904), "messages": [{"role": "user", "content": 42},
                                                          {"role": "assistant", "content": "yes"}]}),
                         ["invalid_messages"]),
    "role_a_number": (line({**good(905), "messages": [{"role": 1, "content": "hi"},
                                                       {"role": "assistant", "content": "yes"}]}),
                      ["invalid_messages"]),
    "feedback_an_object": (line({**good(906), "feedback": {"thumbs": "up"}}), ["invalid_feedback"]),
    "metadata_a_string": (line({**good(907), "metadata": "web"}), ["invalid_metadata"]),
    "empty_content": (line({**good(908), "messages": [{"role": "user", "content": ""},
                                                       {"role": "assistant", "content": "ok"}]}),
                      ["empty_message"]),
    "no_messages_at_all": (line({**good(909), "messages": []}), ["missing_messages"]),
    "unknown_role": (line({**good(910), "messages": [{"role": "wizard", "content": "abracadabra"},
                                                      *good(910)["messages"]]}), ["unknown_role"]),
}
# Valid on their own, but repeats: the dataset stage counts them as duplicates.
DUPLICATES = {
    "duplicate_id": line({**good(911), "id": "good-3"}),    # same id, other conversation
    "duplicate_content": line({**good(4), "id": "copy-of-4"}),  # same conversation, other id
    "logged_twice": line(good(5)),                            # the very same line again
}
GOOD = 90  # enough good records that the bad ones stay under max_quarantine_rate
# No id, as in OpenAI fine-tuning files: ingest gives it a stable id from its content; it is clean.
NO_ID = {k: v for k, v in good(900).items() if k != "id"}


def run_cycle(ws, params, lines: list[bytes]) -> dict:
    """The flow's data path for one night: returns the reports and outputs of each stage."""
    (ws / "logs").mkdir(parents=True)
    (ws / "logs" / f"{DAY}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with chdir(ws):
        pulled = ingest.run(IngestParams(str(ws / "logs"), "interactions", 1000, retries=0, retry_backoff_seconds=0), params.redact, DAY)
        snapshot = ws / pulled["snapshot"]
        validated = validate.run(params.validate, snapshot,
                                 ws / "data/validated", DAY.isoformat(),
                                 data_docs=ws / "reports/data_docs")
        deduplicated = dataset.run(params.dataset, params.replay, params.seed, DAY.isoformat(),
                                   ws / "data/validated/clean.jsonl", ws / "data/replay/buffer.jsonl",
                                   ws / "data/dataset")
    quarantine = [json.loads(l) for l in (ws / "data/validated/quarantine.jsonl").read_text().splitlines()]
    return {"pulled": pulled, "validated": validated, "dataset": deduplicated,
            "source": [l for l in lines if l.strip()], "quarantine": quarantine,
            "clean": [json.loads(l) for l in (ws / "data/validated/clean.jsonl").read_text().splitlines()],
            "accounting": accounting(ws, pulled).model_dump()}


@pytest.fixture(scope="module")
def cycle(tmp_path_factory, params):
    """One night of 90 good lines with every kind of bad line mixed in, through all stages."""
    lines = [line(good(i)) for i in range(GOOD)] + [line(NO_ID)]
    for n, raw in enumerate([raw for raw, _ in BAD.values()] + list(DUPLICATES.values())):
        lines.insert(7 + 5 * n, raw)
    return run_cycle(tmp_path_factory.mktemp("ws"), params, lines)


def quarantined_line(cycle, raw: bytes) -> dict:
    """The quarantined record of a raw line, found through `_line`: the snapshot keeps the
    source's order, one record per line pulled."""
    [record] = [q for q in cycle["quarantine"] if cycle["source"][q["_line"] - 1] == raw]
    return record


@pytest.mark.parametrize("kind", list(BAD))
def test_each_bad_line_is_quarantined_with_its_reason(cycle, kind):
    raw, reasons = BAD[kind]
    assert quarantined_line(cycle, raw)["_reasons"] == reasons


def test_nothing_but_the_bad_lines_is_quarantined_and_every_pulled_line_is_accounted_for(cycle):
    pulled = GOOD + 1 + len(BAD) + len(DUPLICATES)
    assert cycle["pulled"]["pulled"] == pulled
    assert cycle["validated"]["quarantined"] == len(BAD)
    counts = {k: cycle["accounting"][k] for k in ("pulled", "clean", "quarantined", "duplicates", "balanced")}
    assert counts == {"pulled": pulled, "clean": GOOD + 1, "quarantined": len(BAD),
                      "duplicates": len(DUPLICATES), "balanced": True}


def test_a_record_without_an_id_gets_a_stable_id_from_its_content_and_is_clean(cycle):
    from pipelines.common.records import content_id

    [record] = [r for r in cycle["clean"] if r["id"].startswith("sha256-")]
    assert record["id"] == content_id(NO_ID) and record["messages"] == NO_ID["messages"]


def test_the_good_lines_are_clean_and_unchanged_by_validation(cycle):
    clean: dict = {}
    for record in cycle["clean"]:
        clean.setdefault(record["id"], record)  # the first of a repeated id is the original
    for i in range(GOOD):
        assert clean[f"good-{i}"]["messages"] == good(i)["messages"]


def test_duplicate_ids_and_repeated_conversations_are_counted_as_duplicates(cycle):
    assert cycle["dataset"]["duplicates"] == len(DUPLICATES)
    assert cycle["validated"]["exact_duplicates"] == len(DUPLICATES)
    train_and_eval = cycle["dataset"]["train_new"] + cycle["dataset"]["eval"]
    assert train_and_eval == GOOD + 1  # the first of each repeated pair is kept, the repeat is not


def test_invalid_utf8_bytes_are_quarantined_readable(cycle):
    raw, _ = BAD["invalid_utf8"]
    record = quarantined_line(cycle, raw)
    assert "caf\ufffd cr\ufffdme?" in record["_invalid"] and record["_error"].startswith("invalid_utf8")


def test_the_cycle_writes_data_docs_for_the_batch(cycle):
    assert cycle["validated"]["batch_passed"]
    assert cycle["validated"]["data_docs"].endswith("reports/data_docs/index.html")


@pytest.mark.slow
def test_a_10_mb_message_is_quarantined_as_too_long(tmp_path, params):
    huge = {**good(950), "messages": [{"role": "user", "content": "x" * 10_000_000},
                                      {"role": "assistant", "content": "ok"}]}
    lines = [line(good(i)) for i in range(20)] + [line(huge)]
    result = run_cycle(tmp_path / "ws", params, lines)
    assert [q["_reasons"] for q in result["quarantine"]] == [["message_too_long"]]
    assert result["accounting"]["balanced"] and result["accounting"]["clean"] == 20
