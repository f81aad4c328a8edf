"""Does a base model use retrieved examples in its context? The question few-shot retrieval's
verdict rests on (docs/BENCHMARKS.md, "Does the tiny base use retrieved examples?").

For held-out records, the loss on the record's own answer tokens (and token accuracy) of the base
(a) alone, (b) with the k most similar earlier conversations in its context, exactly as evaluate's
few-shot retrieval contender puts them (pipelines/common/retrieval.py, modeling.encode_in_context),
and (c) with the record itself as the one example (the oracle: a base that can copy from its
context scores near zero there). Records are the sample generator's, redacted: three days indexed,
the fourth held out, the topic mix shifting from day to day as in the demo.

    python benchmarks/icl_bench.py                 # builds the tiny base with params.yaml's defaults
    python benchmarks/icl_bench.py --model PATH    # any local causal LM with a chat template
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.embedding import encode, load_encoder, user_texts
from pipelines.common.modeling import answer_scores, encode_in_context, load_base, load_tokenizer
from pipelines.common.records import write_jsonl
from pipelines.common.retrieval import Index, pack
from pipelines.samples import sample_logs

ROOT = Path(__file__).resolve().parent.parent


def day(index: int, n: int, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}-{index}")
    date = dt.date(2026, 1, 5) + dt.timedelta(days=index)
    weights = sample_logs.topic_weights(index, 0.8)
    return [sample_logs.make_record(rng, date, i, rng.choices(sample_logs.TOPICS, weights=weights)[0],
                                    redacted=True) for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a base model folder (default: build the tiny one)")
    parser.add_argument("--records", type=int, default=150, help="records per day")
    parser.add_argument("-k", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/icl.json")
    args = parser.parse_args(argv)
    params = params_mod.load(ROOT / "params.yaml")
    tmp = Path(tempfile.mkdtemp())
    model_dir, seconds = args.model, None
    if model_dir is None:
        from pipelines.model import base_model

        started = time.time()
        base_model.run(params.base_model, params.seed, tmp / "base", ROOT / "data/corpus")
        model_dir, seconds = str(tmp / "base"), round(time.time() - started, 1)

    indexed = [r for d in range(3) for r in day(d, args.records, params.seed)]
    held = day(3, args.records, params.seed)
    encoder = load_encoder()
    write_jsonl(tmp / "index.jsonl", [{**r, "embedding": pack(v)}
                                      for r, v in zip(indexed, encode(encoder, user_texts(indexed)))])
    hits = Index.load(tmp / "index.jsonl").search(encode(encoder, user_texts(held)), args.k)
    tokenizer = load_tokenizer(model_dir)
    model = load_base(model_dir, "none")
    limit = min(model.config.max_position_embeddings, params.evaluate.max_context_tokens)
    variants = {"alone": [[] for _ in held], "retrieval": [[r for _, r in h] for h in hits],
                "oracle": [[r] for r in held]}
    result = {"model": model_dir, "pretrain_seconds": seconds, "held_out": len(held),
              "indexed": len(indexed), "k": args.k}
    for name, examples in variants.items():
        encoded = [encode_in_context(tokenizer, r["messages"], ex, limit) for r, ex in zip(held, examples)]
        s = answer_scores(model, encoded, 16, tokenizer.pad_token_id)
        result[name] = {"loss": round(s["nats"] / s["tokens"], 4),
                        "token_accuracy": round(s["correct"] / s["tokens"], 4),
                        "context_tokens": round(sum(e["context_tokens"] for e in encoded) / len(encoded), 1)}
    for name in ("retrieval", "oracle"):
        result[f"{name}_change"] = round(result[name]["loss"] / result["alone"]["loss"] - 1, 4)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
