"""evaluate: the candidate against the champion (and the bare base model) on the same held-out data.

Every model is loaded the way it was trained (same base, same quantisation) and scored by the
token-weighted mean loss on the assistant tokens of this cycle's held-out records. The numbers go
to reports/eval.json for the gate; a candidate that cannot be loaded or scores NaN is recorded as
such, so the gate rejects it instead of the cycle crashing.

    python -m pipelines.evaluate models/candidate models/parent data/dataset/eval.jsonl reports/eval.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pipelines import params as params_mod
from pipelines.records import read_jsonl, write_json


def score(base_model: str, quantization: str, adapter: Path | None, examples: list[dict],
          batch_size: int, pad_token_id: int) -> dict:
    """Loss and perplexity of base + adapter (or the bare base when adapter is None)."""
    from pipelines.modeling import load_with_adapter, mean_loss

    model = load_with_adapter(base_model, quantization, adapter, trainable=False)
    loss = mean_loss(model, examples, batch_size, pad_token_id)
    return {"eval_loss": round(loss, 5) if math.isfinite(loss) else None,
            "perplexity": round(math.exp(loss), 4) if math.isfinite(loss) and loss < 50 else None}


def run(p: params_mod.EvaluateParams, train: params_mod.TrainParams, base_model: str, seed: int,
        candidate: Path, champion: Path, eval_file: Path) -> dict:
    """Score candidate, champion and base on eval_file.

    Args:
        p, train: the `evaluate` and `train` sections of params.yaml (quantisation, length).
        candidate: the adapter just trained; champion: the parent adapter (may hold none).
    Returns:
        {"examples", "candidate": {...} or {"error"}, "champion": {...} or None, "base": {...}}
    """
    from pipelines.modeling import encode_chat, is_adapter, load_tokenizer, set_determinism

    set_determinism(seed)
    tokenizer = load_tokenizer(base_model)
    examples = [encode_chat(tokenizer, r["messages"], train.max_length) for r in read_jsonl(eval_file)]
    data = (examples, p.batch_size, tokenizer.pad_token_id)
    report = {"examples": len(examples), "base": score(base_model, train.quantization, None, *data)}
    if is_adapter(candidate):
        try:
            report["candidate"] = score(base_model, train.quantization, candidate, *data)
        except Exception as exc:  # a corrupt adapter is a failed candidate, not a failed cycle
            report["candidate"] = {"eval_loss": None, "error": f"{type(exc).__name__}: {exc}"}
    else:
        report["candidate"] = {"eval_loss": None, "error": f"no adapter in {candidate}"}
    report["champion"] = (score(base_model, train.quantization, champion, *data)
                          if is_adapter(champion) else None)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("champion", type=Path)
    parser.add_argument("eval_file", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    report = run(params.evaluate, params.train, params.base.model, params.seed, args.candidate,
                 args.champion, args.eval_file)
    write_json(args.report, report)
    champion = report["champion"]["eval_loss"] if report["champion"] else "none"
    print(f"evaluate: {report['examples']} examples; loss candidate {report['candidate']['eval_loss']}, "
          f"champion {champion}, base {report['base']['eval_loss']}")


if __name__ == "__main__":
    main()
