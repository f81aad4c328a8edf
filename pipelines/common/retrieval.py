"""Few-shot retrieval over the index the retrieval stage keeps: load it, find a record's nearest
past conversations, and put them in a chat's context.

The index is a JSONL file, one line per indexed conversation: the record as the dataset stage
wrote it (messages, metadata with its subject hashes) and `embedding`, its user turns embedded by
all-MiniLM-L6-v2 (pipelines/common/embedding.py) as base64 float16. Because the vectors live in
the same lines as the records, `nightshift forget` erases a person from the index the way it
erases them from every record file. The search structure is built from those lines when the
index is loaded: a FAISS `IndexFlatIP`, exact cosine search on unit vectors. FAISS because it is
the maintained standard for dense vector search, installs as one wheel with no server, and has
exact and approximate (IVF, HNSW) indexes behind one interface, so the index can change with the
volume without changing the callers; benchmarks/retrieval_bench.py measures it. At a scale where
one machine's memory is not enough, pgvector on the PostgreSQL nightshift already supports keeps
the same lines as rows (docs/SCALING.md).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.common.embedding import DIMENSIONS
from pipelines.common.records import read_jsonl


def pack(vector: np.ndarray) -> str:
    """A unit embedding as base64 float16: 768 bytes a record, cosine error below 1e-3."""
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)


def conversation(record: dict) -> list[dict]:
    """A record's turns without its system message: what goes into another chat's context."""
    return [{"role": m["role"], "content": m["content"]} for m in record["messages"]
            if m.get("role") in ("user", "assistant")]


def with_examples(messages: list[dict], examples: list[dict]) -> list[dict]:
    """`messages` with `examples` (records, nearest first) as earlier turns of the same chat:
    the system message first, then the examples farthest to nearest, so the nearest sits right
    before the question, then the chat's own turns: the shape of a multi-turn chat, which an
    instruction-tuned base reads as earlier exchanges to follow."""
    system = [m for m in messages if m.get("role") == "system"]
    own = [m for m in messages if m.get("role") != "system"]
    context = [turn for example in reversed(examples) for turn in conversation(example)]
    return system + context + own


@dataclass
class Index:
    """The indexed records and a FAISS index over their embeddings (row i is records[i])."""
    records: list[dict]
    vectors: np.ndarray
    _faiss: object = field(default=None, repr=False)
    kind = "faiss"  # what evaluate's report names as searched

    @classmethod
    def load(cls, path: Path) -> Index:
        records, vectors = [], []
        for line in read_jsonl(path) if path.exists() else []:
            vectors.append(unpack(line.pop("embedding")))
            records.append(line)
        matrix = np.stack(vectors) if vectors else np.zeros((0, DIMENSIONS), dtype=np.float32)
        return cls(records, matrix)

    def __len__(self) -> int:
        return len(self.records)

    def search(self, queries: np.ndarray, k: int, exclude: list[set[str]] | None = None
               ) -> list[list[tuple[float, dict]]]:
        """The `k` nearest records to each query embedding, nearest first, as (cosine, record);
        a record whose id is in that query's `exclude` set is skipped."""
        import faiss

        if not len(self) or k <= 0:
            return [[] for _ in range(len(queries))]
        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.vectors.shape[1])
            self._faiss.add(self.vectors)
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        scores, rows = self._faiss.search(np.asarray(queries, dtype=np.float32), min(k + extra, len(self)))
        found = []
        for q, (row_scores, row_ids) in enumerate(zip(scores, rows)):
            skip = exclude[q] if exclude else set()
            hits = [(float(s), self.records[i]) for s, i in zip(row_scores, row_ids)
                    if i >= 0 and self.records[i].get("id") not in skip]
            found.append(hits[:k])
        return found
