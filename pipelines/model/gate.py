"""gate: decide whether the candidate may replace the champion, and say why.

Following TFX's Evaluator ("blessing"), every metric named in `gate.thresholds` (a set and a
metric of reports/eval.json, e.g. `golden.eval_loss`, `generations.pii_rate`) may have a value
threshold (min/max) and a change threshold against the champion (max_increase/max_decrease,
relative). There is no baseline on the first cycle: only value thresholds apply, and the first
adapter must beat the bare base model on the new data. A metric the candidate lacks (a missing,
corrupt or NaN candidate) fails; a metric a set could not measure yet (no replay buffer on the
first cycle) is recorded as not checked. The verdict goes to reports/gate.json and, by register,
to the model version's tags.

    python -m pipelines.model.gate reports/eval.json reports/gate.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.metrics import metric
from pipelines.common.records import write_json

HEADLINE = "new.eval_loss"  # the number that must be measured for a candidate to count at all


def decide(p: params_mod.GateParams, evaluation: dict) -> dict:
    """The verdict on one candidate: {"passed", "baseline", "checks": [...], "reasons": [...]}."""
    candidate, champion = evaluation.get("candidate") or {}, evaluation.get("champion")
    has_champion = metric(champion, HEADLINE) is not None
    checks = []

    def check(name: str, passed: bool | None, detail: str) -> None:
        checks.append({"check": name, "passed": passed, "detail": detail})

    if metric(candidate, HEADLINE) is None:
        error = candidate.get("error", "its loss on the new data is NaN or missing")
        check("candidate_scored", False, f"the candidate could not be scored: {error}")
        return _verdict(checks, has_champion)
    for name, t in p.thresholds.items():
        value = metric(candidate, name)
        if value is None:
            # Measured for the base model but not the candidate: the candidate broke it.
            measured = metric(evaluation.get("base"), name) is not None
            check(name, False if measured else None,
                  f"{name} is missing for the candidate" if measured else
                  f"{name} not measured this cycle (no data for it yet)")
            continue
        if t.max is not None:
            check(f"{name} <= {t.max}", value <= t.max, f"{name} {value:.4f} vs value threshold max {t.max}")
        if t.min is not None:
            check(f"{name} >= {t.min}", value >= t.min, f"{name} {value:.4f} vs value threshold min {t.min}")
        reference = metric(champion, name) if has_champion else None
        if reference is None or (t.max_increase is None and t.max_decrease is None):
            continue
        if t.max_increase is not None:
            limit = reference + abs(reference) * t.max_increase
            check(f"{name} change", value <= limit,
                  f"{name} {value:.4f} vs champion {reference:.4f} (at most {t.max_increase:.0%} "
                  f"higher: {limit:.4f})")
        if t.max_decrease is not None:
            limit = reference - abs(reference) * t.max_decrease
            check(f"{name} change", value >= limit,
                  f"{name} {value:.4f} vs champion {reference:.4f} (at most {t.max_decrease:.0%} "
                  f"lower: {limit:.4f})" + ("; a low pairing margin means answers no longer depend "
                                            "on the question" if "pairing_margin" in name else ""))
    if not has_champion:
        value, base = metric(candidate, HEADLINE), metric(evaluation.get("base"), HEADLINE)
        if base is not None:
            check("beats_base_model", value < base,
                  f"{HEADLINE} {value:.4f} vs base model {base:.4f} (first adapter: no champion yet)")
    return _verdict(checks, has_champion)


def _verdict(checks: list[dict], has_champion: bool) -> dict:
    failed = [c for c in checks if c["passed"] is False]
    return {"passed": not failed, "baseline": "champion" if has_champion else "base",
            "checks": checks,
            "reasons": [c["detail"] for c in failed] or ["all checks passed"]}


def run(p: params_mod.GateParams, eval_report: Path, out: Path) -> dict:
    """Read reports/eval.json, write the verdict. Returns it."""
    verdict = decide(p, json.loads(eval_report.read_text()))
    write_json(out, verdict)
    return verdict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.model.gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    verdict = run(params_mod.load(args.params).gate, args.eval_report, args.out)
    print(f"gate: {'PASSED' if verdict['passed'] else 'REJECTED'}: {'; '.join(verdict['reasons'])}")


if __name__ == "__main__":
    main()
