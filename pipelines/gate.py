"""gate: decide whether the candidate may replace the champion, and say why.

Following TFX's Evaluator ("blessing"), each check is either a value threshold (the candidate's
eval loss is finite and below `gate.max_eval_loss`) or a change threshold against a baseline: the
champion when there is one (eval loss at most `gate.max_regression` worse), else the bare base
model (the first adapter must beat the model it adapts). The pairing margin may drop by at most
`gate.max_pairing_margin_drop` against the champion (no baseline on the first cycle): loss alone misses an adapter trained on
answers shuffled across questions, since it still learns their wording. A missing, corrupt or NaN candidate never passes.
The verdict goes to reports/gate.json and, by register, to the model version's tags.

    python -m pipelines.gate reports/eval.json reports/gate.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipelines import params as params_mod
from pipelines.records import write_json


def _loss(entry: dict | None) -> float | None:
    loss = (entry or {}).get("eval_loss")
    return loss if isinstance(loss, (int, float)) and math.isfinite(loss) else None


def decide(p: params_mod.GateParams, evaluation: dict) -> dict:
    """The verdict on one candidate: {"passed", "baseline", "checks": [...], "reasons": [...]}."""
    candidate = _loss(evaluation.get("candidate"))
    checks = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append({"check": name, "passed": bool(passed), "detail": detail})

    if candidate is None:
        error = (evaluation.get("candidate") or {}).get("error", "eval loss is NaN or missing")
        check("candidate_scored", False, f"the candidate could not be scored: {error}")
    else:
        check("max_eval_loss", candidate <= p.max_eval_loss,
              f"eval loss {candidate:.4f} vs value threshold {p.max_eval_loss}")
        champion = _loss(evaluation.get("champion"))
        base = _loss(evaluation.get("base"))
        if champion is not None:
            limit = champion * (1 + p.max_regression)
            check("no_regression_vs_champion", candidate <= limit,
                  f"eval loss {candidate:.4f} vs champion {champion:.4f} "
                  f"(at most {p.max_regression:.0%} worse: {limit:.4f})")
        elif base is not None:
            check("beats_base_model", candidate < base,
                  f"eval loss {candidate:.4f} vs base model {base:.4f} (first adapter: no champion yet)")
        # Against the champion only: the bare base model knows only its pre-training answers,
        # and a first adapter that learns new ones rightly narrows the margin it had on them.
        margin = (evaluation.get("candidate") or {}).get("pairing_margin")
        reference = (evaluation.get("champion") or {}).get("pairing_margin")
        if champion is not None and margin is not None and reference is not None and reference > 0:
            floor = reference * (1 - p.max_pairing_margin_drop)
            check("answers_fit_questions", margin >= floor,
                  f"pairing margin {margin:.4f} vs champion {reference:.4f} (at most "
                  f"{p.max_pairing_margin_drop:.0%} lower: {floor:.4f}); a low margin means answers "
                  "no longer depend on the question")
    passed = all(c["passed"] for c in checks)
    return {"passed": passed,
            "baseline": "champion" if _loss(evaluation.get("champion")) is not None else "base",
            "checks": checks,
            "reasons": [c["detail"] for c in checks if not c["passed"]] or ["all checks passed"]}


def run(p: params_mod.GateParams, eval_report: Path, out: Path) -> dict:
    """Read reports/eval.json, write the verdict. Returns it."""
    verdict = decide(p, json.loads(eval_report.read_text()))
    write_json(out, verdict)
    return verdict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.gate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    verdict = run(params_mod.load(args.params).gate, args.eval_report, args.out)
    print(f"gate: {'PASSED' if verdict['passed'] else 'REJECTED'}: {'; '.join(verdict['reasons'])}")


if __name__ == "__main__":
    main()
