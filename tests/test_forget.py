"""`nightshift forget` through the real command line, DVC and MLflow: a workspace runs a real
cycle on logs where two users wrote several records each (one of them also a golden record),
then one user is forgotten by user id and one record of the other by an email it held. Their
records must be gone from every data file, the objects that held them from the DVC cache and
remote, the version that trained on them tagged, the tombstone free of any value, the past cycle
refused by `nightshift reproduce`, and a record of theirs pulled again dropped by the next
cycle, which runs normally."""

import datetime as dt
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from flows import forget as forget_mod
from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.common.embedding import CACHE_DIR, EmbeddingCache, user_texts
from pipelines.privacy import subjects
from pipelines.samples import sample_logs
from tests.conftest import pgvector_database, write_tiny_params
from tests.test_s3_remote import aws_env, s3_endpoint, s3_workspace  # noqa: F401  (fixtures: moto's S3 server)

pytestmark = pytest.mark.slow

S3_BUCKET = "nightshift-forget"
DAY1, DAY2 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
ALICE, BOB = "u-alice-0001", "u-bob-0002"
BOB_EMAIL = "bob.keeper@example.net"
# A barely trained model keeps the cycle short: this test needs a registered version that trained
# on the records, not a good one.
SHORT = {"base_model.corpus_records": 60, "base_model.pretrain_steps": 10, "train.quantization": "none",
         "train.max_steps": 2, "evaluate.generation_examples": 2, "evaluate.max_new_tokens": 8,
         "evaluate.replay_examples": 8}
REASON = "Alice Example (alice.example@mail.com) asked by phone on +1 415 555 0100"


def nightshift(*args, ws: Path):
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--workspace", str(ws)],
                         capture_output=True, text=True)
    return out


def user_records(day: dt.date, user: str, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        r = sample_logs.make_record(rng, day, 900 + i, sample_logs.TOPICS[i % len(sample_logs.TOPICS)])
        r["id"] = f"{day}-{user}-{i}"
        r["metadata"]["user_id"] = user
        records.append(r)
    return records


def write_day(ws: Path, day: dt.date, extra: list[dict]) -> Path:
    """The sample log of `day` with `extra` records appended."""
    sample_logs.generate(ws / "logs", day, 1, 40, seed=11, topic_shift=0.8)
    path = ws / "logs" / f"{day}.jsonl"
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    return path


def records_in(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


def data_files(ws: Path) -> list[Path]:
    """Every JSONL file of the workspace that holds records (not the source logs, not DVC's own
    stores, not the tombstones)."""
    skip = ("logs", ".dvc", "dvc-remote", ".git", "mlartifacts")
    return [f for f in ws.rglob("*.jsonl") if f.relative_to(ws).parts[0] not in skip
            and f.relative_to(ws) != subjects.TOMBSTONES_FILE]


def about(records: list[dict], hashes: set[str]) -> list[dict]:
    return [r for r in records if subjects.subjects_of(r) & hashes]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def object_files(root: Path) -> dict[str, Path]:
    """md5 -> file of every object in a DVC cache or local remote."""
    return {f.parent.name + f.name: f for f in (root / "files/md5").rglob("*") if f.is_file()}


@pytest.fixture(scope="module")
def cycled(tmp_path_factory, pgvector_server):
    """A workspace after one real cycle: Alice and Bob wrote six records each; one of Bob's
    holds his email; Alice is also in the golden set. The retrieval index is mirrored into a
    pgvector table (`retrieval.vector_store`), which evaluate searches."""
    ws = wsp.init(tmp_path_factory.mktemp("forget") / "ws")
    write_tiny_params(ws / "params.yaml", **SHORT, **{"retrieval.vector_store": pgvector_database(pgvector_server)})
    wsp.git(ws, "commit", "-q", "-am", "tiny params")
    alice, bob = user_records(DAY1, ALICE, 6, seed=1), user_records(DAY1, BOB, 6, seed=2)
    bob[0]["messages"][1]["content"] += f" You can write to me at {BOB_EMAIL}."
    write_day(ws, DAY1, alice + bob)

    golden = user_records(DAY1, ALICE, 1, seed=3)
    golden[0]["id"] = "golden-alice"
    (ws / "golden_add.jsonl").write_text(json.dumps(golden[0]) + "\n")
    out = nightshift("golden", "add", str(ws / "golden_add.jsonl"), "--reason", "a good example", ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    (ws / "golden_add.jsonl").unlink()

    out = nightshift("run", "--date", DAY1.isoformat(), ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((ws / "reports/summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["version"] == "1", summary
    salt = subjects.load_salt(ws / subjects.SALT_FILE)
    return ws, salt


SERVED_DAY = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)


def write_served(ws: Path) -> None:
    """What `serve-model` logged: an answer to Alice with her feedback on it, and one to Bob."""
    from flows.serving.exchange_log import SOURCE, ExchangeLog

    log = ExchangeLog(ws, wsp.load_params(ws).ingest)
    for i, user in enumerate((ALICE, BOB)):
        log.write({"id": f"chatcmpl-{i:032x}", "timestamp": "2026-03-01T12:00:00Z",
                   "messages": [{"role": "user", "content": f"hello, {user} here"},
                                {"role": "assistant", "content": "hi"}], "feedback": None,
                   "metadata": {"source": SOURCE, "user_id": user, "adapter_version": "1"}}, SERVED_DAY)
    log.write({"id": "fb-0000000000000001", "timestamp": "2026-03-01T12:01:00Z", "event": "feedback",
               "response_id": f"chatcmpl-{0:032x}", "feedback": "up", "metadata": {"source": SOURCE}},
              SERVED_DAY)


@pytest.fixture(scope="module")
def forgotten_alice(cycled):
    ws, salt = cycled
    hashes = subjects.match_subjects(salt, user_id=ALICE)
    before = {f: about(records_in(f), hashes) for f in data_files(ws)}
    held = {md5(f) for f, recs in before.items() if recs}
    bob_before = len(about(records_in(ws / f"data/snapshots/{DAY1}.jsonl"),
                           subjects.match_subjects(salt, user_id=BOB)))
    write_served(ws)
    # Drift keeps vectors of the messages it sampled, by text hash: Alice's among them.
    cache = EmbeddingCache(ws / CACHE_DIR)
    cache.embed(user_texts(about(records_in(ws / "data/validated/clean.jsonl"), hashes)))
    cache.save()
    out = nightshift("forget", "--user-id", ALICE, "--reason", REASON, ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    return ws, salt, hashes, before, held, bob_before, out.stdout


def test_the_users_records_are_gone_from_every_data_file_and_the_other_users_stay(forgotten_alice):
    ws, salt, hashes, before, _, bob_before, stdout = forgotten_alice
    files = {f.relative_to(ws).as_posix() for f, recs in before.items() if recs}
    # Alice was in the snapshot, the validated records, the training data, the retrieval index
    # (whose lines keep each record's embedding beside it) and the golden set.
    assert {f"data/snapshots/{DAY1}.jsonl", "data/validated/clean.jsonl", "data/dataset/train.jsonl",
            "data/retrieval/index.jsonl", "data/golden/golden.jsonl"} <= files, files
    for f in data_files(ws):
        assert not about(records_in(f), hashes), f
    bob = subjects.match_subjects(salt, user_id=BOB)
    assert len(about(records_in(ws / f"data/snapshots/{DAY1}.jsonl"), bob)) == bob_before == 6
    assert about(records_in(ws / "data/dataset/train.jsonl"), bob)
    removed = sum(len(recs) for recs in before.values())
    assert f"records removed: {removed}" in stdout
    for path in files:
        assert path in stdout


def test_the_vector_stores_table_mirrored_the_index_for_evaluate_and_lost_their_rows_with_it(forgotten_alice):
    import psycopg2

    from pipelines.common import vector_store

    ws, salt, hashes, before, *_, stdout = forgotten_alice
    url = wsp.load_params(ws).retrieval.vector_store
    synced = json.loads((ws / "reports/retrieval.json").read_text())["vector_store"]
    index_before = before[ws / "data/retrieval/index.jsonl"]
    assert synced["inserted"] == synced["rows"] > 0 and index_before  # the cycle's stage filled it
    contenders = json.loads((ws / "reports/eval.json").read_text())["contenders"]
    assert contenders["searched"] == "pgvector" and contenders["indexed"] == synced["rows"]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT line FROM {vector_store.TABLE}")
        lines = [row[0] for row in cur.fetchall()]
    assert sorted(line["id"] for line in lines) == sorted(r["id"] for r in records_in(ws / "data/retrieval/index.jsonl"))
    assert not about(lines, hashes) and len(lines) == synced["rows"] - len(index_before)
    assert vector_store.mirrored_digest(url) == vector_store.digest(ws / "data/retrieval/index.jsonl")
    assert f"pgvector table synced to the erased index ({len(index_before)} rows deleted)" in stdout


def test_drifts_embedding_cache_which_held_vectors_of_their_messages_is_deleted(forgotten_alice):
    ws, *_, stdout = forgotten_alice
    assert not (ws / CACHE_DIR).exists()
    assert "embedding cache (.cache/embeddings) deleted" in stdout


def test_the_objects_that_held_them_are_deleted_from_cache_and_remote(forgotten_alice):
    ws, _, hashes, _, held, _, _ = forgotten_alice
    for store in (ws / ".dvc/cache", ws / "dvc-remote"):
        objects = object_files(store)
        assert not held & set(objects), store
        for path in objects.values():
            assert not any(h.encode() in path.read_bytes() for h in hashes), path
    tomb = forget_mod.erasures(ws)[-1]
    assert held <= set(tomb["objects_deleted"])
    # The workspace's data is recorded and pushed again: DVC and git are clean, the remote holds
    # every object the workspace now records.
    assert "up to date" in wsp.dvc(ws, "status").lower() or not wsp.dvc(ws, "status").strip()
    assert not wsp.git(ws, "status", "--porcelain", "--untracked-files=no").strip()
    assert "everything is up to date" in wsp.dvc(ws, "push").lower()


def test_the_tombstone_and_commit_hold_hashes_and_the_redacted_reason_never_a_value(forgotten_alice):
    ws, _, hashes, _, _, _, _ = forgotten_alice
    tomb = forget_mod.erasures(ws)[-1]
    assert set(tomb["subjects"]) == hashes and tomb["versions_tagged"] == ["1"]
    assert tomb["records_removed"] > 0 and tomb["date"]
    message = wsp.git(ws, "log", "-1", "--format=%B")
    text = (ws / subjects.TOMBSTONES_FILE).read_text() + message
    for value in (ALICE, "alice.example@mail.com", "415 555 0100", "4155550100"):
        assert value not in text
    assert "<EMAIL_" in tomb["reason"] and "<EMAIL_" in message
    assert wsp.git(ws, "ls-files", str(subjects.TOMBSTONES_FILE)).strip()


def test_the_version_that_trained_on_them_is_tagged_and_status_shows_it(forgotten_alice):
    ws, _, _, _, _, _, stdout = forgotten_alice
    assert f"version 1 (cycle {DAY1}): trained on data/dataset/train.jsonl" in stdout
    assert "nightshift rebase" in stdout
    out = nightshift("status", "--json", ws=ws)
    versions = json.loads(out.stdout)["versions"]
    assert versions[0]["erased_data"].startswith(dt.date.today().isoformat()[:4])
    assert "alice" not in versions[0]["erased_data"].lower()
    out = nightshift("status", ws=ws)
    assert "ERASED DATA" in out.stdout


def test_a_version_trained_from_a_tagged_one_carries_its_erasure_note(forgotten_alice):
    """What register puts into a new version's lineage: the note of the parent it trains from."""
    from contextlib import chdir

    from registry import erasure

    ws = forgotten_alice[0]
    p = params_mod.load(ws / "params.yaml").registry
    with chdir(ws):
        note = erasure.inherited(p, "1")
        assert note and "alice" not in note.lower() and note.startswith(dt.date.today().isoformat()[:4])
        assert erasure.inherited(p, None) is None


def test_the_erased_cycle_says_it_cannot_be_rebuilt(forgotten_alice):
    ws = forgotten_alice[0]
    out = nightshift("reproduce", "--cycle", DAY1.isoformat(), "--check", ws=ws)
    assert out.returncode != 0
    assert "can no longer be rebuilt" in out.stderr and f"data/snapshots/{DAY1}.jsonl" in out.stderr
    assert "<EMAIL_" in out.stderr  # the redacted reason


def test_match_forgets_the_record_that_held_an_email(forgotten_alice):
    ws, salt = forgotten_alice[0], forgotten_alice[1]
    snapshot = ws / f"data/snapshots/{DAY1}.jsonl"
    email = subjects.match_subjects(salt, text=BOB_EMAIL)
    bob = subjects.match_subjects(salt, user_id=BOB)
    assert len(about(records_in(snapshot), email)) == 1
    assert BOB_EMAIL not in snapshot.read_text()  # redacted as pulled: only its hash finds it
    out = nightshift("forget", "--match", BOB_EMAIL, "--reason", "asked by email", ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not any(about(records_in(f), email) for f in data_files(ws))
    assert len(about(records_in(snapshot), bob)) == 5
    assert len(forget_mod.erasures(ws)) == 2


def test_a_record_pulled_again_is_dropped_and_the_next_cycle_runs(forgotten_alice):
    ws, salt, hashes = forgotten_alice[:3]
    # The data stages run and are versioned as every night; training is left out (its stages
    # are the first cycle's, unchanged by forgetting) to keep the test short.
    write_tiny_params(ws / "params.yaml", **SHORT, **{"nightly.min_new_examples": 10_000})
    write_day(ws, DAY2, user_records(DAY2, ALICE, 3, seed=4) + user_records(DAY2, BOB, 3, seed=5))
    out = nightshift("run", "--date", DAY2.isoformat(), ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((ws / "reports/summary.json").read_text())
    assert summary["status"] == "skipped", summary
    assert summary["accounting"]["forgotten"] == 3 and summary["accounting"]["balanced"]
    for f in data_files(ws):
        assert not about(records_in(f), hashes), f
    assert about(records_in(ws / f"data/snapshots/{DAY2}.jsonl"), subjects.match_subjects(salt, user_id=BOB))
    out = nightshift("reproduce", "--cycle", DAY2.isoformat(), "--check", ws=ws)
    assert out.returncode == 0 and "can be rebuilt" in out.stdout, out.stdout + out.stderr


def test_what_the_server_logged_about_them_is_gone_from_the_source_and_the_rest_stays(forgotten_alice):
    ws, *_, stdout = forgotten_alice
    left = records_in(ws / "logs" / "2026-03-01.jsonl")
    assert [r["metadata"].get("user_id") for r in left] == [BOB]
    assert "removed from the source: 2" in stdout
    assert ALICE in "".join(f.read_text() for f in (ws / "logs").glob("2026-01-*.jsonl")), \
        "the sample logs are the team's own: forget leaves them to the team"


def test_the_stages_to_record_again_follow_the_dag():
    entries = [forget_mod.Entry("data/snapshots/d.jsonl", "a", "data/snapshots/d.jsonl.dvc", "out"),
               forget_mod.Entry("data/snapshots/d.jsonl", "a", "dvc.lock:validate", "dep"),
               forget_mod.Entry("data/validated", "b.dir", "dvc.lock:validate", "out"),
               forget_mod.Entry("data/validated/clean.jsonl", "c", "dvc.lock:dataset", "dep"),
               forget_mod.Entry("data/dataset", "d.dir", "dvc.lock:dataset", "out"),
               forget_mod.Entry("data/dataset/train.jsonl", "e", "dvc.lock:train", "dep"),
               forget_mod.Entry("models/candidate", "f.dir", "dvc.lock:train", "out"),
               forget_mod.Entry("models/base", "g.dir", "dvc.lock:base_model", "out")]
    assert forget_mod.stages_to_commit(entries, {"data/snapshots/d.jsonl"}) == ["validate", "dataset", "train"]
    assert forget_mod.stages_to_commit(entries, {"data/dataset/buffer.jsonl"}) == ["dataset", "train"]
    assert forget_mod.stages_to_commit(entries, set()) == []


def snapshot_record(salt: bytes, user: str, i: int) -> dict:
    return {"id": f"{user}-{i}", "timestamp": "2026-01-05T10:00:00Z",
            "messages": [{"role": "user", "content": f"question {i} of {user}"},
                         {"role": "assistant", "content": "an answer"}],
            "metadata": {"subjects": subjects.record_subjects(salt, user, [])}}


def write_records(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_on_an_s3_remote_objects_of_earlier_commits_are_deleted_there_too(tmp_path, s3_endpoint, aws_env):
    """No cycle: a snapshot and two versions of the replay buffer, committed and pushed to S3
    (moto), the first buffer's object no longer in the local cache, and a pushed file no commit
    recorded. Forgetting finds the first on the remote through the commit that recorded it, the
    last by reading the objects no commit records, and deletes both there."""
    ws, s3 = s3_workspace(tmp_path / "ws", s3_endpoint, S3_BUCKET, "ws")
    salt = subjects.load_salt(ws / subjects.SALT_FILE)
    snapshot, buffer = ws / f"data/snapshots/{DAY1}.jsonl", ws / "data/replay/buffer.jsonl"
    alice = [snapshot_record(salt, ALICE, i) for i in range(2)]
    bob = [snapshot_record(salt, BOB, i) for i in range(3)]
    write_records(snapshot, alice + bob)
    write_records(buffer, alice[:1] + bob[:1])
    wsp.configure_remote(ws, params_mod.load(ws / "params.yaml").version)
    held = {md5(snapshot), md5(buffer)}
    wsp.dvc(ws, "add", "-q", str(snapshot.relative_to(ws)), str(buffer.relative_to(ws)))
    wsp.dvc(ws, "push", "-q", "-r", "s3")
    wsp.git(ws, "add", "-A")
    wsp.git(ws, "commit", "-q", "-m", f"nightshift cycle {DAY1}")
    old_buffer = md5(buffer)
    write_records(buffer, alice + bob[:2])  # the next night's buffer
    held.add(md5(buffer))
    wsp.dvc(ws, "add", "-q", str(buffer.relative_to(ws)))
    wsp.dvc(ws, "push", "-q", "-r", "s3")
    wsp.git(ws, "add", "-A")
    wsp.git(ws, "commit", "-q", "-m", f"nightshift cycle {DAY2}")
    cached = ws / ".dvc/cache/files/md5" / old_buffer[:2] / old_buffer[2:]
    cached.chmod(0o644)
    cached.unlink()  # only the remote has it now
    # A run stopped between its push and its commit: objects that no commit records.
    stray = ws / "data/partial/night.jsonl"
    write_records(stray, alice[1:] + bob[2:])
    held.add(md5(stray))
    wsp.dvc(ws, "add", "-q", str(stray.relative_to(ws)))
    wsp.dvc(ws, "push", "-q", "-r", "s3")
    for f in (stray, stray.with_name("night.jsonl.dvc"), stray.with_name(".gitignore")):
        f.unlink()

    def remote_md5s() -> set[str]:
        listing = s3.list_objects_v2(Bucket=S3_BUCKET, Prefix="ws/")
        return {"".join(o["Key"].split("/")[-2:]) for o in listing.get("Contents", [])}

    assert held <= remote_md5s()
    out = nightshift("forget", "--user-id", ALICE, "--reason", "erasure request 17", ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "records removed: 4" in out.stdout and "versions tagged: none" in out.stdout
    assert "4 from the remote 's3'" in out.stdout and "3 from the DVC cache" in out.stdout
    remaining = remote_md5s()
    assert not held & remaining
    assert {md5(snapshot), md5(buffer)} <= remaining  # the rewritten files, pushed
    assert [r["id"] for r in records_in(snapshot)] == [r["id"] for r in bob]
    assert set(forget_mod.erasures(ws)[-1]["objects_deleted"]) == held
    for cycle in (DAY1, DAY2):
        out = nightshift("reproduce", "--cycle", cycle.isoformat(), "--check", ws=ws)
        assert out.returncode != 0 and "can no longer be rebuilt" in out.stderr


def test_a_rebase_onto_the_same_base_after_forget_trains_a_version_that_never_saw_the_user(forgotten_alice):
    """Last in this module. The rebase reads the data files as forget left them (its lineage
    names their md5s), none of Alice's records is in them or in its training mix, and the new
    version carries no erasure tag, while the version that learned from her keeps its own. (This
    workspace's barely trained versions were all rejected, so there is no @champion: the rebase is
    judged like a first adapter, against the bare base.)"""
    from flows import rebase as rb
    from registry import mlflow_registry as reg

    ws, salt, *_ = forgotten_alice
    p = wsp.load_params(ws)
    out = nightshift("rebase", "--base", p.base_model.model, "--reason", f"retrain without the data of {REASON}",
                     "--json", ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["rebased_from"] == "none" and report["base_model"] == p.base_model.model

    c = reg.client(p.registry)
    new = c.get_model_version(p.registry.model_name, report["version"])
    assert "nightshift.erased_data" not in new.tags
    assert "nightshift.erased_data" in c.get_model_version(p.registry.model_name, "1").tags
    alice = subjects.match_subjects(salt, user_id=ALICE)
    read = json.loads(new.tags["nightshift.data_versions"])
    for name, digest in read.items():
        assert md5(ws / name) == digest, name   # the files as they are now, after forget
        assert not about(records_in(ws / name), alice), name
    # The training mix was drawn from those files and does not outlive the training: a copy of
    # records left in the workspace is one `forget` would not reach.
    assert report["data"]["examples"] > 0 and not (ws / rb.REBASE_DATA).exists()
    # The reason is redacted wherever it rests: the version's tags, the report, the history, git.
    for value in ("alice.example@mail.com", "415 555 0100", "Alice Example"):
        assert value not in new.tags["nightshift.rebase_reason"]
        assert value not in (ws / rb.REBASE_REPORT).read_text()
        assert value not in wsp.git(ws, "log", "--format=%B")


def test_an_unreachable_vector_store_stops_forget_before_anything_is_erased(tmp_path):
    ws = wsp.init(tmp_path / "ws")
    write_tiny_params(ws / "params.yaml", **{"retrieval.vector_store": "postgresql://nobody@127.0.0.1:1/none"})
    with pytest.raises(forget_mod.ForgetError, match="vector store must be erased from too: cannot reach"):
        forget_mod.forget(ws, REASON, user_id=ALICE)
    assert not (ws / subjects.TOMBSTONES_FILE).exists()
