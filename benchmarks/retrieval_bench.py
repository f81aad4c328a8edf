"""The retrieval stage and index against the number of indexed records, 1k to 1M.

Per size N, side by side in one run:
  - grow: the stage's nightly run on an index of N records plus a night of 150 new training
    records (carries N lines with their embeddings, embeds the 150) against the baseline of
    re-embedding the whole index every night, run up to --max-reembed and past it taken at the
    measured rate per record; the ratio is what being incremental saves;
  - load: reading the index file into records and a FAISS IndexFlatIP (what evaluate and a
    retrieval server do once per process);
  - query: the k=2 nearest of 1,000 questions, per question, exact (IndexFlatIP), and at 100k with
    HNSW (IndexHNSWFlat, M=32, efSearch 128), the approximate index for when exact search grows too slow, with
    its recall of the exact top 2;
  - pgvector (`retrieval.vector_store`), up to --max-pgvector records, on a PostgreSQL 16 with
    pgvector from the pgserver wheel: the first sync of the index into its table (HNSW index
    kept as rows go in), the nightly sync of 150 more, and the k=2 nearest per question through
    `PgvectorIndex` (a connection, then one query each), with its recall of the exact top 2.

The records are the sample generator's (redacted form); the embeddings of N records are the
embeddings of distinct generated questions up to --embed (measured with all-MiniLM-L6-v2), and
past it unit vectors near them (the same vectors jittered), so the FAISS figures at 1M are
measured, not extrapolated. The JSONL index at 1M (~1.6 GB) is written and read only up to
--max-file; past it, load and grow are extrapolated linearly from the largest measured size
(both are one pass over the lines) and marked so.

    python benchmarks/retrieval_bench.py [--sizes 1000 10000 100000 1000000] [--max-file 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.common.embedding import encode, load_encoder, user_texts
from pipelines.common.records import write_jsonl
from pipelines.common.retrieval import Index, pack
from pipelines.data import retrieval
from pipelines.samples import sample_logs

ROOT = Path(__file__).resolve().parent.parent
NIGHT = 150   # the demo's records per day


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    day = dt.date(2026, 1, 5)
    return [sample_logs.make_record(rng, day, i, sample_logs.TOPICS[i % 6], redacted=True) for i in range(n)]


def vectors(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` unit vectors: `base` first, then jittered copies of it (noise of 0.05 per dimension)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    out[:min(n, len(base))] = base[:n]
    for start in range(len(base), n, len(base)):
        block = base[: n - start] + rng.normal(0, 0.05, base[: n - start].shape).astype(np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def write_index(path: Path, rows: list[dict], matrix: np.ndarray) -> None:
    with path.open("w") as f:
        for i, v in enumerate(matrix):
            r = rows[i % len(rows)]
            f.write(json.dumps({"id": f"r{i}", "cycle": "2026-01-04", "messages": r["messages"],
                                "metadata": r.get("metadata") or {}, "embedding": pack(v)}) + "\n")


def pgvector(tmp: Path, query_vectors: np.ndarray) -> dict:
    """The index file at tmp/index.jsonl synced into a fresh pgvector table, then tmp/grown.jsonl
    (150 more), and the k=2 nearest of each question searched there, against the exact answer of
    the grown file loaded into memory."""
    import pgserver

    from pipelines.common import vector_store

    server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri()
        first, _ = timed(lambda: vector_store.sync(url, tmp / "index.jsonl"))
        nightly, _ = timed(lambda: vector_store.sync(url, tmp / "grown.jsonl"))
        table = vector_store.PgvectorIndex(url)
        exact = Index.load(tmp / "grown.jsonl").search(query_vectors, 2)
        seconds, found = timed(lambda: table.search(query_vectors, 2))
        recall = np.mean([len({r["id"] for _, r in hits} & {r["id"] for _, r in e}) / 2
                          for hits, e in zip(found, exact)])
        # Among near-identical questions (one template, other order numbers) which two are "the"
        # nearest is close to arbitrary: how much less similar the two found are tells more.
        gap = np.mean([np.mean([s for s, _ in e]) - np.mean([s for s, _ in hits]) for hits, e in zip(found, exact)])
        return {"pgvector_first_sync_seconds": round(first, 2), "pgvector_nightly_sync_seconds": round(nightly, 2),
                "pgvector_query_ms": round(seconds / len(query_vectors) * 1000, 3),
                "pgvector_recall_at_2": round(float(recall), 4), "pgvector_cosine_below_exact": round(float(gap), 5)}
    finally:
        server.cleanup()


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--max-file", type=int, default=100000, help="largest index written as JSONL")
    parser.add_argument("--embed", type=int, default=5000, help="distinct questions embedded for real")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--max-reembed", type=int, default=10000,
                        help="largest index whose full re-embedding (the baseline) is run, not extrapolated")
    parser.add_argument("--max-hnsw", type=int, default=100000,
                        help="largest size HNSW is built for (its build is minutes past 100k on 2 cores)")
    parser.add_argument("--max-pgvector", type=int, default=100000,
                        help="largest index synced into pgvector (0: skip it)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/retrieval.json")
    args = parser.parse_args(argv)
    import faiss

    encoder = load_encoder()
    pool = records(args.embed, 1)
    encode(encoder, user_texts(pool[:64]))  # warm up
    seconds, base = timed(lambda: encode(encoder, user_texts(pool)))
    per_record = seconds / len(pool)
    print(f"embedding: {len(pool)} questions in {seconds:.1f} s ({per_record * 1000:.2f} ms each)", flush=True)
    questions = records(args.queries, 2)
    query_vectors = encode(encoder, user_texts(questions))
    tonight = [{**r, "_source": "new", "id": f"new-{i}"} for i, r in enumerate(records(NIGHT, 3))]

    results = {"embedding_ms_per_record": round(per_record * 1000, 3), "night": NIGHT,
               "faiss": faiss.__version__, "sizes": []}
    measured_file = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jsonl(tmp / "train.jsonl", tonight)
        for n in args.sizes:
            matrix = vectors(base, n, n)
            row = {"records": n}
            if n <= args.max_file:
                write_index(tmp / "index.jsonl", pool, matrix)
                row["file_mb"] = round((tmp / "index.jsonl").stat().st_size / 2**20, 1)
                grow, _ = timed(lambda: retrieval.run("2026-01-05", tmp / "index.jsonl", tmp / "train.jsonl",
                                                      tmp / "grown.jsonl", ["down"], encoder=encoder))
                load, index = timed(lambda: Index.load(tmp / "index.jsonl"))
                index.search(query_vectors[:1], 2)  # builds the FAISS index
                row.update(grow_seconds=round(grow, 3), load_seconds=round(load, 3), measured=True)
                measured_file = row
                if n <= args.max_pgvector:
                    row.update(pgvector(tmp, query_vectors))
            else:
                scale = n / measured_file["records"]
                row.update(file_mb=round(measured_file["file_mb"] * scale, 1),
                           grow_seconds=round(measured_file["grow_seconds"] * scale, 2),
                           load_seconds=round(measured_file["load_seconds"] * scale, 2), measured=False)
            if n <= args.max_reembed:  # the baseline, run: re-embed the whole index and the night
                texts = user_texts([pool[i % len(pool)] for i in range(n)] + tonight)
                full, _ = timed(lambda: encode(encoder, texts))
                row.update(full_reembed_seconds=round(full, 2), full_reembed_measured=True)
            else:  # past it, at the measured rate per record
                row.update(full_reembed_seconds=round((n + NIGHT) * per_record, 2), full_reembed_measured=False)
            row["incremental_speedup"] = round(row["full_reembed_seconds"] / row["grow_seconds"], 1)
            build, flat = timed(lambda: faiss.IndexFlatIP(matrix.shape[1]))
            build_add, _ = timed(lambda: flat.add(matrix))
            exact, (_, exact_ids) = timed(lambda: flat.search(query_vectors, 2))
            row.update(flat_build_seconds=round(build + build_add, 3),
                       flat_query_ms=round(exact / len(query_vectors) * 1000, 3))
            if 100000 <= n <= args.max_hnsw:
                hnsw = faiss.IndexHNSWFlat(matrix.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
                hnsw_build, _ = timed(lambda: hnsw.add(matrix))
                hnsw.hnsw.efSearch = 128  # FAISS's default of 16 trades recall away on near-duplicates
                approx, (_, approx_ids) = timed(lambda: hnsw.search(query_vectors, 2))
                recall = np.mean([len(set(a) & set(e)) / 2 for a, e in zip(approx_ids, exact_ids)])
                row.update(hnsw_build_seconds=round(hnsw_build, 2),
                           hnsw_query_ms=round(approx / len(query_vectors) * 1000, 3),
                           hnsw_recall_at_2=round(float(recall), 4))
            results["sizes"].append(row)
            print(json.dumps(row), flush=True)
            del matrix
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
