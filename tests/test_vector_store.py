"""The retrieval index in PostgreSQL with pgvector (pipelines/common/vector_store.py), on a real
PostgreSQL 16 with the pgvector extension: the table mirrors the index file through inserts and
deletions, searches as the in-memory FAISS index does, is used only while it mirrors the file
asked for, erases with `forget`'s sync, and a server without pgvector is a clear error."""
import random

import numpy as np
import psycopg2
import pytest

from pipelines.common import vector_store
from pipelines.common.records import write_jsonl
from pipelines.common.retrieval import Index, pack


def lines(n: int, seed: int, start: int = 0) -> list[dict]:
    """Index lines with random unit embeddings (ids r<start>...)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [{"id": f"r{start + i}", "cycle": "2026-01-05",
             "messages": [{"role": "user", "content": f"question {start + i}"},
                          {"role": "assistant", "content": f"answer {start + i}"}],
             "metadata": {"subjects": [f"s{(start + i) % 7}"]}, "embedding": pack(v)}
            for i, v in enumerate(vectors)]


def rows(url: str) -> dict[str, dict]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, line FROM {vector_store.TABLE}")
        return dict(cur.fetchall())


def test_the_table_mirrors_the_index_file_through_nights_that_add_and_remove_lines(tmp_path, pgvector_url):
    night1 = lines(50, 1)
    write_jsonl(tmp_path / "index.jsonl", night1)
    assert vector_store.sync(pgvector_url, tmp_path / "index.jsonl") == {"rows": 50, "inserted": 50, "deleted": 0}
    # Night 2: feedback took two lines out, and 20 new ones came.
    night2 = [line for line in night1 if line["id"] not in {"r3", "r4"}] + lines(20, 2, start=50)
    write_jsonl(tmp_path / "index.jsonl", night2)
    assert vector_store.sync(pgvector_url, tmp_path / "index.jsonl") == {"rows": 68, "inserted": 20, "deleted": 2}
    held = rows(pgvector_url)
    assert set(held) == {line["id"] for line in night2}
    assert held["r60"] == {k: v for k, v in night2[-10].items() if k != "embedding"}  # the line, less its vector
    assert vector_store.mirrored_digest(pgvector_url) == vector_store.digest(tmp_path / "index.jsonl")
    assert vector_store.sync(pgvector_url, tmp_path / "index.jsonl")["inserted"] == 0  # idempotent


@pytest.mark.parametrize("bulk", [False, True], ids=["graph-kept-row-by-row", "graph-built-after-loading"])
def test_the_table_finds_the_same_nearest_records_with_the_same_scores_as_the_in_memory_index(
        tmp_path, pgvector_url, monkeypatch, bulk):
    monkeypatch.setattr(vector_store, "BULK_ROWS", 100 if bulk else 1000)
    write_jsonl(tmp_path / "index.jsonl", lines(300, 3))
    vector_store.sync(pgvector_url, tmp_path / "index.jsonl")
    memory, table = Index.load(tmp_path / "index.jsonl"), vector_store.PgvectorIndex(pgvector_url)
    assert len(table) == len(memory) == 300
    queries = memory.vectors[:40] + np.random.default_rng(4).normal(0, 0.05, (40, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exclude = [{f"r{i}"} for i in range(40)]  # each query's own record, as evaluate leaves it out
    expected, found = memory.search(queries, 2, exclude), table.search(queries, 2, exclude)
    assert [[r["id"] for _, r in hits] for hits in found] == [[r["id"] for _, r in hits] for hits in expected]
    assert np.allclose([[s for s, _ in hits] for hits in found], [[s for s, _ in hits] for hits in expected], atol=1e-5)
    assert all(f"r{i}" not in {r["id"] for _, r in hits} for i, hits in enumerate(found))
    assert table.search(queries, 0) == [[]] * 40


def test_evaluate_searches_the_table_only_while_it_mirrors_the_file_it_was_given(tmp_path, pgvector_url, capsys):
    write_jsonl(tmp_path / "tonight.jsonl", lines(30, 5))
    write_jsonl(tmp_path / "last_week.jsonl", lines(10, 6))
    vector_store.sync(pgvector_url, tmp_path / "tonight.jsonl")
    assert isinstance(vector_store.open_index(tmp_path / "tonight.jsonl", pgvector_url), vector_store.PgvectorIndex)
    # An older cycle's file (dvc repro of a past commit) is searched as it was, not as tonight's table.
    older = vector_store.open_index(tmp_path / "last_week.jsonl", pgvector_url)
    assert isinstance(older, Index) and len(older) == 10
    assert "does not mirror" in capsys.readouterr().out
    assert isinstance(vector_store.open_index(tmp_path / "tonight.jsonl", None), Index)


def test_forgets_sync_deletes_a_persons_rows_and_rewrites_the_table(tmp_path, pgvector_url):
    index = lines(40, 7)
    write_jsonl(tmp_path / "index.jsonl", index)
    vector_store.sync(pgvector_url, tmp_path / "index.jsonl")
    # forget rewrote the file without subject s3's records; the table follows with VACUUM FULL.
    kept = [line for line in index if "s3" not in line["metadata"]["subjects"]]
    write_jsonl(tmp_path / "index.jsonl", kept)
    with psycopg2.connect(pgvector_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT pg_relation_filenode('{vector_store.TABLE}')")
        before = cur.fetchone()[0]
    done = vector_store.sync(pgvector_url, tmp_path / "index.jsonl", vacuum=True)
    assert done["deleted"] == len(index) - len(kept) > 0
    held = rows(pgvector_url)
    assert set(held) == {line["id"] for line in kept}
    assert not any("s3" in line["metadata"]["subjects"] for line in held.values())
    with psycopg2.connect(pgvector_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT pg_relation_filenode('{vector_store.TABLE}')")
        assert cur.fetchone()[0] != before  # VACUUM FULL wrote the table anew: the old pages are gone


def test_a_server_without_pgvector_or_out_of_reach_is_a_clear_error(tmp_path, postgres_url):
    write_jsonl(tmp_path / "index.jsonl", lines(3, 8))
    with pytest.raises(vector_store.VectorStoreError, match="no pgvector extension.*retrieval.vector_store: null"):
        vector_store.sync(postgres_url, tmp_path / "index.jsonl")
    with pytest.raises(vector_store.VectorStoreError, match="cannot reach retrieval.vector_store"):
        vector_store.sync(f"postgresql://nobody@127.0.0.1:{random.randint(20000, 30000)}/none",
                          tmp_path / "index.jsonl")
