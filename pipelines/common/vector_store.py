"""The retrieval index in PostgreSQL with pgvector, for a history too big for every process that
searches it to load, or one index that several processes share (`retrieval.vector_store`).

The JSONL index the retrieval stage writes (pipelines/common/retrieval.py) stays the versioned
source. `sync` makes a table mirror it: the lines the file has and the table lacks are inserted,
the ones the table has and the file lacks are deleted, and the file's digest is stamped beside
the table. `nightshift forget` erases a person from the table by syncing it to the file it has
erased them from, then `VACUUM FULL`, so the deleted rows do not linger in the table's pages.
`PgvectorIndex` searches the table through the same interface as the in-memory `Index`;
`open_index` uses it only while the table mirrors the file asked for, so evaluating an older
cycle (`dvc repro` of a past commit) searches that cycle's file, not tonight's table.

The table, `nightshift_retrieval`: `id` (primary key), `line` (the index line without its
embedding, jsonb) and `embedding` (vector(384)) with an HNSW index for cosine distance; the one-row
table `nightshift_retrieval_state` holds the digest of the file it mirrors. Search is by cosine
similarity, as the in-memory index's inner product of unit vectors: the same scores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.common.embedding import DIMENSIONS
from pipelines.common.records import read_jsonl
from pipelines.common.retrieval import Index, unpack

TABLE = "nightshift_retrieval"
STATE = f"{TABLE}_state"
# Candidates HNSW keeps per query (pgvector's hnsw.ef_search, default 40): more is closer to
# exact search for a little more time; at least k plus the excluded ids are asked for anyway.
EF_SEARCH = 100
# A first sync of more rows than this into an empty table builds the HNSW graph after loading
# them, in up to BUILD_MEMORY (the graph of 100k rows of 384 dimensions takes ~200 MB; past the
# memory pgvector builds more slowly, not wrongly).
BULK_ROWS = 1000
BUILD_MEMORY = "1GB"


class VectorStoreError(RuntimeError):
    """The vector store cannot be used; the message says what to do."""


def digest(path: Path) -> str:
    """The md5 of the file's bytes: which version of the index a table mirrors."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def connect(url: str):
    """A psycopg2 connection to `url` (postgresql://... as libpq takes it; SQLAlchemy's
    postgresql+psycopg2:// too)."""
    import psycopg2

    try:
        return psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://", 1))
    except psycopg2.OperationalError as e:
        raise VectorStoreError(f"cannot reach retrieval.vector_store ({str(e).strip().splitlines()[0]}): "
                               "start that PostgreSQL, "
                               "fix the URL, or set retrieval.vector_store: null to search the "
                               "index file in memory") from e


def literal(vector: np.ndarray) -> str:
    """pgvector's text form of a vector: [x1,x2,...]."""
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, dtype=np.float32)) + "]"


def create_hnsw(cur) -> None:
    cur.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops)")


def prepare(cur) -> None:
    """The pgvector extension, the table with its HNSW index, and the state table, if missing."""
    import psycopg2

    try:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg2.Error as e:
        raise VectorStoreError(
            f"the PostgreSQL of retrieval.vector_store has no pgvector extension ({str(e).splitlines()[0]}): "
            "install pgvector on that server (https://github.com/pgvector/pgvector), or set "
            "retrieval.vector_store: null to search the index file in memory") from e
    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, line jsonb NOT NULL, "
                f"embedding vector({DIMENSIONS}) NOT NULL)")
    create_hnsw(cur)
    cur.execute(f"CREATE TABLE IF NOT EXISTS {STATE} (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
                "digest text NOT NULL, synced_at timestamptz NOT NULL)")


def sync(url: str, path: Path, vacuum: bool = False) -> dict:
    """Make the table mirror the index file at `path` (a missing file is an empty index); with
    `vacuum`, rewrite the table afterwards so deleted rows leave its pages. Returns the rows it
    holds and how many were inserted and deleted."""
    from psycopg2.extras import execute_values

    lines = {}
    for line in read_jsonl(path) if path.exists() else []:
        lines[line["id"]] = line
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:  # one transaction: committed on success, else rolled back
            prepare(cur)
            cur.execute(f"SELECT id FROM {TABLE}")
            held = {row[0] for row in cur.fetchall()}
            gone = sorted(held - lines.keys())
            new = [lines[i] for i in lines if i not in held]
            if gone:
                cur.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (gone,))
            # Into an empty table the HNSW graph is built once after the rows are in, as pgvector
            # advises: 4x faster at 100k rows than keeping it up to date row by row
            # (docs/BENCHMARKS.md). Nightly syncs add a few rows to the graph as they go in.
            bulk = not held and len(new) > BULK_ROWS
            if bulk:
                cur.execute(f"DROP INDEX IF EXISTS {TABLE}_hnsw")
            execute_values(
                cur, f"INSERT INTO {TABLE} (id, line, embedding) VALUES %s",
                [(line["id"], json.dumps({k: v for k, v in line.items() if k != "embedding"}),
                  literal(unpack(line["embedding"]))) for line in new],
                template="(%s, %s::jsonb, %s::vector)", page_size=1000)
            if bulk:
                cur.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
                create_hnsw(cur)
            cur.execute(f"INSERT INTO {STATE} (digest, synced_at) VALUES (%s, now()) ON CONFLICT (one) "
                        "DO UPDATE SET digest = EXCLUDED.digest, synced_at = EXCLUDED.synced_at",
                        (digest(path) if path.exists() else "",))
        if vacuum and gone:
            conn.autocommit = True  # VACUUM runs outside a transaction
            with conn.cursor() as cur:
                cur.execute(f"VACUUM FULL {TABLE}")
    finally:
        conn.close()
    return {"rows": len(lines), "inserted": len(new), "deleted": len(gone)}


def mirrored_digest(url: str) -> str | None:
    """The digest of the file the table last mirrored; None if it never mirrored one."""
    conn = connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (STATE,))
            if cur.fetchone()[0] is None:
                return None
            cur.execute(f"SELECT digest FROM {STATE}")
            row = cur.fetchone()
            return row[0] if row else None
    finally:
        conn.close()


@dataclass
class PgvectorIndex:
    """The table as an index: `len` and `search` as `Index` has them."""
    url: str
    kind = "pgvector"  # what evaluate's report names as searched

    def __len__(self) -> int:
        conn = connect(self.url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {TABLE}")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def search(self, queries: np.ndarray, k: int, exclude: list[set[str]] | None = None
               ) -> list[list[tuple[float, dict]]]:
        """The `k` nearest records to each query embedding, nearest first, as (cosine, record);
        a record whose id is in that query's `exclude` set is skipped."""
        if k <= 0:
            return [[] for _ in range(len(queries))]
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        found = []
        conn = connect(self.url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k + extra)}")
                for q, vector in enumerate(np.asarray(queries, dtype=np.float32)):
                    cur.execute(f"SELECT line, 1 - (embedding <=> %s::vector) FROM {TABLE} "
                                "ORDER BY embedding <=> %s::vector LIMIT %s",
                                (literal(vector), literal(vector), k + extra))
                    skip = exclude[q] if exclude else set()
                    hits = [(float(score), line) for line, score in cur.fetchall() if line.get("id") not in skip]
                    found.append(hits[:k])
        finally:
            conn.close()
        return found


def open_index(path: Path, url: str | None = None):
    """The index to search: the table at `url` while it mirrors the file at `path`, else the file
    loaded into memory (no vector store, or one that holds another version of the index)."""
    if url and path.exists() and mirrored_digest(url) == digest(path):
        return PgvectorIndex(url)
    if url:
        print(f"retrieval: the vector store does not mirror {path} (another version of the index); "
              "searching the file in memory")
    return Index.load(path)
