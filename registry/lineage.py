"""What a registered version records about where it came from (its lineage tags), the scores its
run logs as metrics, and the parameters it was trained with, built from the cycle's reports."""

from __future__ import annotations

import dataclasses

from pipelines.common import params as params_mod
from pipelines.common.metrics import SETS, metric

# Each set's scores and the behaviour checks on generations, logged as run metrics so that the
# MLflow UI charts them across versions.
SET_METRICS = ("eval_loss", "perplexity", "token_accuracy", "bits_per_byte", "pairing_margin")
GENERATION_METRICS = ("pii_rate", "format_pass_rate")


def lineage(cycle: str, parent_version: str | None, versioned: dict, p: params_mod.Params,
            flow_run_id: str, evaluation: dict, erased_data: str | None) -> dict:
    """The version's lineage tags: its cycle, parent, data and code versions, params and scores.
    `erased_data`: set when it was trained from an adapter that learned from data `nightshift
    forget` erased (registry.erasure.inherited)."""
    tags = {
        "cycle": cycle, "parent_version": parent_version or "none",
        "data_version": versioned["data_version"], "git_commit": versioned["git_commit"] or "none",
        "params_hash": p.digest(), "base_model": p.base_model.model, "flow_run_id": flow_run_id,
        "eval_loss": metric(evaluation["candidate"], "new.eval_loss"),
        "champion_eval_loss": metric(evaluation.get("champion"), "new.eval_loss"),
    }
    if erased_data:
        tags["erased_data"] = erased_data
    return tags


def run_metrics(evaluation: dict, train: dict) -> dict:
    """The run's metrics: training, the candidate on every set, and against the champion."""
    candidate = evaluation["candidate"]
    scores = {f"{s}.{k}": metric(candidate, f"{s}.{k}") for s in SETS for k in SET_METRICS}
    scores.update({f"generations.{k}": metric(candidate, f"generations.{k}")
                   for k in GENERATION_METRICS})
    divergence = evaluation.get("divergence") or {}
    return {"train_loss": train.get("train_loss"), "final_train_loss": train.get("final_loss"),
            "eval_loss": metric(candidate, "new.eval_loss"),
            "base_eval_loss": metric(evaluation["base"], "new.eval_loss"),
            "champion_eval_loss": metric(evaluation.get("champion"), "new.eval_loss"),
            "tokens_per_second": train.get("tokens_per_second"),
            "kl_champion_to_candidate": divergence.get("kl_champion_to_candidate"),
            "generation_agreement": divergence.get("generation_agreement"), **scores}


def logged_params(p: params_mod.Params) -> dict:
    """Every parameter as a flat `section.key` mapping, the source URL's password masked (a
    credential never rests in the registry)."""
    return _flatten(dataclasses.asdict(p)) | {"ingest.url": without_password(p.ingest.url)}


def without_password(url: str) -> str:
    """A database URL as logged to MLflow: its password masked."""
    if "://" not in url or url.startswith("file://"):
        return url
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparseable URL, not logged)"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
