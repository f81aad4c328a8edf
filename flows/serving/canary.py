"""`nightshift canary`: @challenger against @champion on the traffic each answered.

While both are served (`serving.canary_fraction`), every logged exchange says which one answered
(`metadata.served_as`) and which version that was. The comparison reads those exchanges and the
feedback events on them from the source the server logs to, and measures each side:

- the thumbs-up share of its rated answers (the last rating of each answer counts), compared by
  Fisher's exact test (exact at the small counts a canary starts with);
- its latency (p50 and p95 of `metadata.latency_ms`);
- the share of its answers in which the residual PII scan (pipelines/privacy/residual.py) finds
  something that looks like personal data.

The verdict, by the `canary` section of params.yaml:
- wait: either side has fewer than `min_rated` ratings, or the difference is not significant at
  `alpha` yet;
- reject: the challenger's flagged-answer share is above the champion's by more than
  `max_pii_rate_increase` (once it answered `min_rated` times), or it is rated significantly worse;
- promote: it is rated significantly better.

Acting on it (`canary.act: true` or `--act`) moves the aliases through the registry and records
each move in the alias history with the verdict as its reason: promote points @champion at the
challenger and removes @challenger; reject removes @challenger. The server follows either within
its polling interval.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.serving.exchange_log import served_records
from pipelines.common import params as params_mod
from pipelines.common.records import is_feedback_event, latest_feedback
from registry.mlflow_registry import CHALLENGER, CHAMPION


@dataclass
class Side:
    """What one version did while the canary ran."""
    alias: str
    version: str | None
    answered: int = 0
    rated: int = 0
    up: int = 0
    pii_flagged: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None

    @property
    def up_rate(self) -> float | None:
        return self.up / self.rated if self.rated else None

    @property
    def pii_rate(self) -> float | None:
        return self.pii_flagged / self.answered if self.answered else None

    def as_dict(self) -> dict:
        return {**asdict(self), "up_rate": self.up_rate, "pii_rate": self.pii_rate}


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 1) if values else None


def measure(records: list[dict], alias: str, version: str | None) -> Side:
    """One side, from the server's records (exchanges and feedback events)."""
    from pipelines.privacy import residual

    latest = latest_feedback(r for r in records if is_feedback_event(r))
    side, latencies = Side(alias, version), []
    for record in records:
        metadata = record.get("metadata") or {}
        if (is_feedback_event(record) or metadata.get("served_as") != alias
                or str(metadata.get("adapter_version")) != str(version)):
            continue
        side.answered += 1
        rid = str(record.get("id"))
        rating = latest[rid]["feedback"] if rid in latest else record.get("feedback")
        if rating in ("up", "down"):
            side.rated += 1
            side.up += rating == "up"
        answer = next((m.get("content") for m in reversed(record.get("messages") or [])
                       if m.get("role") == "assistant"), "")
        side.pii_flagged += bool(residual.scan_text(answer or ""))
        if isinstance(metadata.get("latency_ms"), (int, float)):
            latencies.append(float(metadata["latency_ms"]))
    side.latency_p50_ms, side.latency_p95_ms = _percentile(latencies, 50), _percentile(latencies, 95)
    return side


def verdict(champion: Side, challenger: Side, p: params_mod.CanaryParams) -> dict:
    """promote, reject or wait, with the reasons and the test's p-value."""
    from scipy.stats import fisher_exact

    result = {"decision": "wait", "reasons": [], "p_value": None,
              "champion": champion.as_dict(), "challenger": challenger.as_dict()}
    if challenger.version is None:
        result["reasons"].append("there is no @challenger to compare")
        return result
    if challenger.answered >= p.min_rated and champion.answered:
        increase = challenger.pii_rate - champion.pii_rate
        if increase > p.max_pii_rate_increase:
            result["decision"] = "reject"
            result["reasons"].append(
                f"the residual PII scan flags {challenger.pii_rate:.1%} of the challenger's answers "
                f"against {champion.pii_rate:.1%} of the champion's (canary.max_pii_rate_increase "
                f"{p.max_pii_rate_increase:.1%})")
            return result
    if min(champion.rated, challenger.rated) < p.min_rated:
        result["reasons"].append(
            f"too little traffic yet: {challenger.rated} rated answers from the challenger and "
            f"{champion.rated} from the champion, {p.min_rated} each needed (canary.min_rated)")
        return result
    table = [[challenger.up, challenger.rated - challenger.up], [champion.up, champion.rated - champion.up]]
    result["p_value"] = float(fisher_exact(table)[1])
    rates = (f"thumbs-up {challenger.up_rate:.1%} of {challenger.rated} for the challenger (version "
             f"{challenger.version}) against {champion.up_rate:.1%} of {champion.rated} for the "
             f"champion (version {champion.version}), p = {result['p_value']:.3g}")
    if result["p_value"] >= p.alpha:
        result["reasons"].append(f"no significant difference yet: {rates} (canary.alpha {p.alpha})")
    elif challenger.up_rate > champion.up_rate:
        result["decision"] = "promote"
        result["reasons"].append(f"rated better: {rates}")
    else:
        result["decision"] = "reject"
        result["reasons"].append(f"rated worse: {rates}")
    return result


def compare(ws: Path, p: params_mod.Params) -> dict:
    """The verdict on the registry's @challenger and @champion, from the server's log."""
    from registry import mlflow_registry as reg

    champion, challenger = reg.resolve_alias(p.registry, CHAMPION), reg.resolve_alias(p.registry, CHALLENGER)
    records = list(served_records(ws, p.ingest))
    return verdict(measure(records, CHAMPION, champion.version if champion else None),
                   measure(records, CHALLENGER, challenger.version if challenger else None), p.canary)


def act(p: params_mod.Params, result: dict, by: str | None = None) -> list:
    """Carry out a promote or reject verdict through the registry; returns the alias moves."""
    from registry import history

    by = by or getpass.getuser()
    why = f"canary: {result['decision']}: " + "; ".join(result["reasons"])
    moves = []
    if result["decision"] == "promote":
        moves.append(history.move_alias(p.registry, CHAMPION, result["challenger"]["version"],
                                        "canary", by, why))
    if result["decision"] in ("promote", "reject"):
        moves.append(history.remove_alias(p.registry, CHALLENGER, "canary", by, why))
    return [m for m in moves if m is not None]
