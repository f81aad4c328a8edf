"""evaluate: the candidate against the champion (and the bare base model) on the same held-out data.

Every model is loaded the way it was trained (same base, same quantisation) and scored on the
assistant tokens of this cycle's held-out records: mean loss, perplexity, next-token accuracy, and
the pairing margin (does the answer still depend on the question?). The numbers go
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


def mismatched(records: list[dict]) -> list[dict]:
    """The same conversations with each final answer moved to the next record's question."""
    answers = [r["messages"][-1] for r in records]
    return [{**r, "messages": r["messages"][:-1] + [a]}
            for r, a in zip(records, answers[1:] + answers[:1])]


def score(base_model: str, quantization: str, adapter: Path | None, matched: list[dict],
          shuffled: list[dict], batch_size: int, pad_token_id: int) -> dict:
    """Loss, perplexity, token accuracy and pairing margin of base + adapter (or the bare base).

    The pairing margin is how much worse the model scores an answer given another record's
    question than given its own: near zero when answers no longer depend on the question, as
    after training on logs whose responses were shuffled across prompts.
    """
    from pipelines.modeling import load_with_adapter, loss_and_accuracy

    model = load_with_adapter(base_model, quantization, adapter, trainable=False)
    loss, accuracy = loss_and_accuracy(model, matched, batch_size, pad_token_id)
    if not math.isfinite(loss):
        return {"eval_loss": None, "perplexity": None, "token_accuracy": None, "pairing_margin": None}
    margin = None
    if len(shuffled) >= 2:
        mismatched_loss, _ = loss_and_accuracy(model, shuffled, batch_size, pad_token_id)
        margin = round(mismatched_loss - loss, 5) if math.isfinite(mismatched_loss) else None
    return {"eval_loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 50)), 4),
            "token_accuracy": round(accuracy, 5), "pairing_margin": margin}


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
    records = [r for r in read_jsonl(eval_file) if r["messages"][-1].get("role") == "assistant"]
    examples = [encode_chat(tokenizer, r["messages"], train.max_length) for r in records]
    shuffled = [encode_chat(tokenizer, r["messages"], train.max_length) for r in mismatched(records)]
    data = (examples, shuffled, p.batch_size, tokenizer.pad_token_id)
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
