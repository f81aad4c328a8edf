"""retrieval: grow the few-shot retrieval index by the night's new training records.

The index (pipelines/common/retrieval.py) holds every clean, redacted conversation nightshift has
trained on so far, each with its embedding, so that evaluate can score the base model and the
adapters with the most similar past conversations in their context, and a team can serve that
way. It only ever holds what training may see: train.jsonl's new records (`_source: new`), never
the held-out, golden or anchor records, nor replayed records (indexed on their own night).

Incremental: the index the last cycle left (data/retrieval/previous.jsonl, a pinned input like the
replay buffer) is copied line by line with its stored embeddings, and only the night's new records
are embedded. A record the night's feedback rates into dataset.exclude_feedback leaves the index,
as it leaves the replay buffer: a thumbs-down answer is not held up as an example.

With `--prefetch data/validated/clean.jsonl data/golden/golden.jsonl` it also embeds the rest of
the night's records and the golden set into the workspace's embedding cache
(pipelines/common/embedding.EmbeddingCache), so the encoder this stage loads anyway is the night's
only one: drift finds its sample there, and evaluate the held-out and golden questions it looks up
(docs/BENCHMARKS.md, "A demo cycle, stage by stage").

With `retrieval.vector_store` set to a PostgreSQL URL, the stage then mirrors the index into a
pgvector table there (pipelines/common/vector_store.py), which evaluate searches instead of
loading the file.

    python -m pipelines.data.retrieval --cycle 2026-01-06 data/retrieval/previous.jsonl \\
        data/dataset/train.jsonl data/retrieval/index.jsonl --feedback data/validated/feedback.jsonl \\
        --prefetch data/validated/clean.jsonl data/golden/golden.jsonl
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common import vector_store
from pipelines.common.embedding import EmbeddingCache, user_texts
from pipelines.common.records import latest_feedback, read_jsonl, write_json, write_jsonl
from pipelines.common.retrieval import pack


def indexable(record: dict) -> bool:
    """A new training record with a question and an answer (held-out records never reach
    train.jsonl; replayed and anchor records are tagged otherwise)."""
    turns = [m.get("role") for m in record.get("messages") or []]
    return record.get("_source") == "new" and "user" in turns and turns[-1:] == ["assistant"]


def run(cycle: str, previous: Path, train: Path, out: Path, exclude_feedback: list[str],
        feedback: Path | None = None, encoder=None, cache: EmbeddingCache | None = None,
        prefetch: Sequence[Path] = ()) -> dict:
    """Write the grown index to `out`; returns what was kept, added and dropped. The new records
    are embedded through `cache` (the workspace's: what another stage embedded is reused; None: one
    in memory), and so are the records of the `prefetch` files (those that exist), for the stages
    after this one."""
    started = time.time()
    latest = latest_feedback(read_jsonl(feedback)) if feedback is not None and feedback.exists() else {}

    def rated_out(record: dict) -> bool:
        event = latest.get(str(record.get("id")))
        return event is not None and event.get("feedback") in exclude_feedback

    kept, dropped, seen = [], 0, set()
    for line in read_jsonl(previous) if previous.exists() else []:
        if rated_out(line):
            dropped += 1
            continue
        kept.append(line)
        seen.add(line["id"])
    new = [r for r in read_jsonl(train) if indexable(r) and r["id"] not in seen]
    embedded_at = time.time()
    cache = cache if cache is not None else EmbeddingCache(None)
    cache.encoder = cache.encoder or encoder
    vectors = cache.embed(user_texts(new))
    for path in (p for p in prefetch if p.exists()):
        cache.embed(user_texts(list(read_jsonl(path))))
    newly_embedded = cache.added
    cache.save()
    embed_seconds = time.time() - embedded_at
    added = [{"id": r["id"], "cycle": cycle, "messages": r["messages"],
              "metadata": r.get("metadata") or {}, "embedding": pack(v)}
             for r, v in zip(new, vectors)]
    write_jsonl(out, kept + added)
    return {"cycle": cycle, "indexed": len(kept) + len(added), "added": len(added),
            "kept": len(kept), "removed_by_feedback": dropped, "newly_embedded": newly_embedded,
            "embed_seconds": round(embed_seconds, 2), "seconds": round(time.time() - started, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("previous", type=Path, help="the index the last cycle left (may be missing or empty)")
    parser.add_argument("train", type=Path, help="the dataset stage's train.jsonl")
    parser.add_argument("out", type=Path, help="where the grown index is written")
    parser.add_argument("--cycle", required=True, help="the cycle's date, stamped on the records it adds")
    parser.add_argument("--feedback", type=Path, default=None,
                        help="the night's feedback events (validate's feedback.jsonl)")
    parser.add_argument("--prefetch", type=Path, nargs="*", default=[],
                        help="record files embedded into the workspace's cache for drift and evaluate "
                             "(validate's clean.jsonl, the golden set)")
    parser.add_argument("--metrics", type=Path, default=Path("reports/retrieval.json"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = run(args.cycle, args.previous, args.train, args.out, params.dataset.exclude_feedback,
                 args.feedback, cache=EmbeddingCache(), prefetch=args.prefetch)
    if params.retrieval.vector_store:
        report["vector_store"] = vector_store.sync(params.retrieval.vector_store, args.out)
    write_json(args.metrics, report)
    print(f"retrieval: {report['indexed']} conversations indexed ({report['added']} new, embedded "
          f"in {report['embed_seconds']} s; {report['removed_by_feedback']} taken out by feedback)")
    if "vector_store" in report:
        print(f"retrieval: the vector store's table mirrors it ({report['vector_store']['inserted']} rows "
              f"inserted, {report['vector_store']['deleted']} deleted)")


if __name__ == "__main__":
    main()
