"""The evaluation sets and reading one metric of a model's scores: shared by evaluate (which
writes reports/eval.json), gate, model_drift, register and the summary (which read it)."""

from __future__ import annotations

import math

# The sets every model is scored on: the night's held-out records, the curated golden answers,
# older topics from the replay buffer (forgetting) and the base model's own domain (anchor).
SETS = ("new", "golden", "replay", "anchor")


def metric(entry: dict | None, name: str) -> float | None:
    """One metric of a model's entry by dotted name ("new.eval_loss", "generations.pii_rate");
    None when it was not measured or is not a finite number."""
    value = entry
    for key in name.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
