"""evaluate: the candidate against the champion (and the bare base model) on the same sets.

One base model is loaded with both adapters beside it, the way they were trained (same base, same
quantisation). Each model is scored on the assistant tokens of four sets:

- new: this cycle's held-out records (data/dataset/eval.jsonl);
- golden: the frozen, curated set (data/golden/golden.jsonl);
- replay: older topics, records of the replay buffer this cycle did not train on;
- anchor: what the base model knew before any cycle (data/anchor/anchor.jsonl);

with mean loss, perplexity, next-token accuracy and bits per byte of the answer text (the one of
them that does not depend on the tokenizer), and on new and golden also the pairing margin
(does the answer still depend on the question?). Behaviour checks run on sampled generations:
answers to golden prompts may not contain anything that looks like personal data or a secret, and
must match the format the golden record expects. Model drift: the KL divergence of the candidate's
next-token distributions from the champion's, and how often their generated answers agree.
A candidate that cannot be loaded or scores NaN is recorded as such, so the gate rejects it instead
of the cycle crashing.

Contenders (`contenders`), on the new and golden sets, for the worth step: prompting (the base with
evaluate.prompt, or as logged), few-shot retrieval (the base with the evaluate.retrieved_examples
nearest conversations of the retrieval index as earlier turns of the chat), and the candidate with
those examples; each scored on the record's own answer tokens, with the same generation checks.

    python -m pipelines.model.evaluate models/candidate models/parent data/dataset reports/eval.json \\
        --golden data/golden/golden.jsonl --anchor data/anchor/anchor.jsonl --replay data/replay/buffer.jsonl \\
        --index data/retrieval/index.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import re
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.embedding import EmbeddingCache, user_texts
from pipelines.common.metrics import SETS, metric
from pipelines.common.records import read_jsonl, write_json
from pipelines.common import vector_store

MARGIN_SETS = ("new", "golden")  # sets of distinct questions, where a wrong answer means something
# The sets the contenders (prompting, retrieval, the adapters with and without it) are compared on:
# the night's held-out records and the curated answers.
CONTENDER_SETS = ("new", "golden")

def pii_shapes(text: str) -> list[str]:
    """The kinds of personal data or secrets that `text` appears to contain, by the same scan that
    checks redacted records (placeholders such as <EMAIL_ADDRESS_1> do not count). Training data
    is redacted, so a model that emits these learned them from somewhere they should not be."""
    from pipelines.privacy.residual import scan_text

    return sorted(scan_text(text))


def mismatched(records: list[dict]) -> list[dict]:
    """The same conversations with each final answer moved to the next record's question."""
    answers = [r["messages"][-1] for r in records]
    return [{**r, "messages": r["messages"][:-1] + [a]}
            for r, a in zip(records, answers[1:] + answers[:1])]


def replay_set(buffer: Path, train: Path | None, size: int, seed: int) -> list[dict]:
    """Up to `size` buffer records this cycle did not train on, the same ones for the same inputs."""
    if not buffer.exists():
        return []
    trained = {r.get("id") for r in read_jsonl(train)} if train and train.exists() else set()
    unseen = [r for r in read_jsonl(buffer) if r.get("id") not in trained]
    unseen.sort(key=lambda r: hashlib.sha256(f"{seed}:{r.get('id')}".encode()).hexdigest())
    return unseen[:size]


def answered(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("messages") and r["messages"][-1].get("role") == "assistant"]


@contextlib.contextmanager
def using(model, name: str):
    """Make `name` the active model: an adapter's name, or "base" for the bare base model."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):  # no adapter loaded: only the base model is there
        yield model
    elif name == "base":
        with model.disable_adapter():
            yield model
    else:
        model.set_adapter(name)
        yield model


def score_set(model, examples: list[dict], shuffled: list[dict] | None, batch_size: int,
              pad_token_id: int) -> dict:
    """Loss, perplexity, token accuracy (and pairing margin) of the active model on one set.

    The pairing margin is how much worse the model scores an answer given another record's
    question than given its own: near zero when answers no longer depend on the question, as
    after training on logs whose responses were shuffled across prompts.
    """
    from pipelines.common.modeling import answer_scores, loss_and_accuracy, per_byte

    if not examples:
        return {"examples": 0}
    sums = answer_scores(model, examples, batch_size, pad_token_id)
    loss = sums["nats"] / sums["tokens"] if sums["tokens"] else math.nan
    if not math.isfinite(loss):
        return {"examples": len(examples), "eval_loss": None, "perplexity": None,
                "token_accuracy": None, "bits_per_byte": None}
    bpb = per_byte(sums)
    scores = {"examples": len(examples), "eval_loss": round(loss, 5),
              "per_example": [[round(n, 4), t] for n, t in sums["per_example"]],
              "perplexity": round(math.exp(min(loss, 50)), 4),
              "token_accuracy": round(sums["correct"] / sums["tokens"], 5),
              # Tokenizer-free: comparable between models on different tokenizers (a rebase).
              "bits_per_byte": round(bpb, 5) if math.isfinite(bpb) else None}
    if shuffled is not None and len(shuffled) >= 2:
        mismatched_loss, _ = loss_and_accuracy(model, shuffled, batch_size, pad_token_id)
        scores["pairing_margin"] = (round(mismatched_loss - loss, 5)
                                    if math.isfinite(mismatched_loss) else None)
    return scores


def behaviour(model, tokenizer, golden: list[dict], max_new_tokens: int,
              contexts: list[list[dict]] | None = None, limit: int = 0) -> dict:
    """Generate answers to golden prompts; count PII-looking output and kept formats. With
    `contexts`, each prompt's retrieved examples go before it (as many as fit in `limit` tokens)."""
    from pipelines.common.modeling import fit_examples, reply

    samples = []
    for i, record in enumerate(golden):
        prompt = record["messages"][:-1]
        if contexts:
            prompt = fit_examples(tokenizer, prompt, contexts[i], limit, reserve=max_new_tokens)
        answer = reply(model, tokenizer, prompt, max_new_tokens)
        expect = (record.get("metadata") or {}).get("expect")
        samples.append({"id": record["id"], "answer": answer, "pii": pii_shapes(answer),
                        "format_ok": bool(re.search(expect, answer)) if expect else None})
    checked = [s for s in samples if s["format_ok"] is not None]
    return {"answers": len(samples),
            "pii_rate": round(sum(bool(s["pii"]) for s in samples) / len(samples), 5) if samples else None,
            "format_checked": len(checked),
            "format_pass_rate": (round(sum(s["format_ok"] for s in checked) / len(checked), 5)
                                 if checked else None),
            "samples": samples}


def prompted(record: dict, prompt: str | None) -> dict:
    """The record with `prompt` as its system message (None: as it was logged)."""
    if prompt is None:
        return record
    turns = [m for m in record["messages"] if m.get("role") != "system"]
    return {**record, "messages": [{"role": "system", "content": prompt}] + turns}


def retrieve(index, records: dict[str, list[dict]], k: int, cache=None) -> dict[str, list[list[dict]]]:
    """The `k` nearest indexed conversations to each record of each set, nearest first (a record
    is never its own example). With the workspace's embedding `cache`, only texts no stage has
    embedded yet load the encoder: the retrieval stage put the night's held-out records and the
    golden set there. None: a cache in memory."""
    if index is None or not len(index) or k <= 0:
        return {name: [[] for _ in rs] for name, rs in records.items()}
    cache = cache if cache is not None else EmbeddingCache(None)
    found = {}
    for name, rs in records.items():
        hits = index.search(cache.embed(user_texts(rs)), k, [{r.get("id")} for r in rs])
        found[name] = [[record for _, record in h] for h in hits]
    cache.save()
    return found


def contenders(p: params_mod.EvaluateParams, model, tokenizer, records: dict[str, list[dict]],
               prompts: list[dict], index, report: dict, cache=None) -> dict:
    """Prompting, few-shot retrieval and the candidate with retrieval on the new and golden sets,
    beside the champion and the candidate already in `report`: the same records, the loss on the
    answer tokens only (retrieved examples are context), and the behaviour checks on generations."""
    from pipelines.common.modeling import encode_in_context, encode_scored

    limit = min(getattr(model.config, "max_position_embeddings", None) or p.max_context_tokens,
                p.max_context_tokens)
    plain = {s: [prompted(r, p.prompt) for r in records[s]] for s in CONTENDER_SETS}
    found = retrieve(index, {**plain, "prompts": prompts}, p.retrieved_examples, cache)
    with_context = {s: [encode_in_context(tokenizer, r["messages"], ex, limit)
                        for r, ex in zip(plain[s], found[s])] for s in CONTENDER_SETS}
    alone = {s: [encode_scored(tokenizer, r["messages"], limit) for r in plain[s]] for s in CONTENDER_SETS}
    prompt_messages = [prompted(r, p.prompt) for r in prompts]

    def score(name: str, encoded: dict, contexts) -> dict:
        with using(model, name) as active:
            entry = {s: score_set(active, encoded[s], None, p.batch_size, tokenizer.pad_token_id)
                     for s in CONTENDER_SETS}
            entry["generations"] = behaviour(active, tokenizer, prompt_messages, p.max_new_tokens,
                                             contexts, limit)
        return entry

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 2) if values else None

    result = {"examples_in_context": p.retrieved_examples, "indexed": len(index) if index is not None else 0,
              "searched": getattr(index, "kind", None), "prompt": p.prompt,
              "prompt_tokens": {s: mean([len(e["input_ids"]) for e in alone[s]]) for s in CONTENDER_SETS},
              "context_tokens": {s: mean([e["context_tokens"] for e in with_context[s]])
                                 for s in CONTENDER_SETS}}
    if p.prompt is None:  # the base as logged is already scored: prompting is that
        result["prompting"] = {**{s: report["base"][s] for s in CONTENDER_SETS},
                               "generations": report["base"]["generations"]}
    else:
        result["prompting"] = score("base", alone, None)
    usable = report.get("candidate") and "error" not in report["candidate"]
    if not any(examples for s in found.values() for examples in s):
        # Nothing to retrieve (no index, or an empty one): the retrieval contenders are prompting
        # and the candidate as they are, already scored.
        result["retrieval"] = result["prompting"]
        result["candidate_retrieval"] = ({**{s: report["candidate"][s] for s in CONTENDER_SETS},
                                          "generations": report["candidate"]["generations"]} if usable else None)
        return result
    result["retrieval"] = score("base", with_context, found["prompts"])
    result["candidate_retrieval"] = score("candidate", with_context, found["prompts"]) if usable else None
    return result


def run(p: params_mod.EvaluateParams, train: params_mod.TrainParams, base_model: str, seed: int,
        candidate: Path, champion: Path, sets: dict[str, list[dict]], index=None, cache=None) -> dict:
    """Score candidate, champion and base on every set.

    Args:
        p, train: the `evaluate` and `train` sections of params.yaml (quantisation, length).
        candidate: the adapter just trained; champion: the parent adapter (may hold none).
        sets: records per name in SETS (an empty list where a set has nothing yet).
        index: the retrieval index (pipelines/common/retrieval.Index, or the pgvector table's
            vector_store.PgvectorIndex) the retrieval contenders
            draw their examples from; None or empty: they have no examples.
        cache: the workspace's EmbeddingCache the queries are embedded through; None: one in
            memory.
    Returns:
        {"examples": {set: n}, "base": {...}, "candidate": {...} or {"error"}, "champion": {...}
        or None, "divergence": {...} or None, "contenders": {...}}; each model's entry has one
        score dict per set and "generations" with the behaviour checks; "contenders" adds
        prompting, retrieval and candidate_retrieval on the new and golden sets (`contenders`).
    """
    from pipelines.common.modeling import (
        encode_chat,
        encode_scored,
        is_adapter,
        load_adapters,
        load_tokenizer,
        output_divergence,
        set_determinism,
    )

    set_determinism(seed)
    tokenizer = load_tokenizer(base_model)
    records = {name: answered(sets.get(name, [])) for name in SETS}
    encoded = {name: [encode_scored(tokenizer, r["messages"], train.max_length) for r in rs]
               for name, rs in records.items()}
    shuffled = {name: [encode_chat(tokenizer, r["messages"], train.max_length)
                       for r in mismatched(records[name])] for name in MARGIN_SETS}
    prompts = records["golden"][:p.generation_examples]

    adapters = {"champion": champion} if is_adapter(champion) else {}
    adapters["candidate"] = candidate
    model, errors = load_adapters(base_model, train.quantization, adapters)

    def evaluate_model(name: str) -> dict:
        with using(model, name) as active:
            entry = {s: score_set(active, encoded[s], shuffled.get(s), p.batch_size,
                                  tokenizer.pad_token_id) for s in SETS}
            entry["generations"] = behaviour(active, tokenizer, prompts, p.max_new_tokens)
        return entry

    report = {"examples": {s: len(encoded[s]) for s in SETS}, "base": evaluate_model("base")}
    for name in ("candidate", "champion"):
        if name not in adapters:
            report[name] = None
        elif name in errors:
            report[name] = {"error": errors[name]}
        else:
            try:
                report[name] = evaluate_model(name)
            except Exception as exc:  # a broken adapter is a failed candidate, not a failed cycle
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
    report["divergence"] = None
    if all(report[n] and "error" not in report[n] for n in ("candidate", "champion")):
        kl = output_divergence(model, "champion", "candidate", encoded["new"] + encoded["golden"],
                               p.batch_size, tokenizer.pad_token_id)
        pairs = zip(report["champion"]["generations"]["samples"],
                    report["candidate"]["generations"]["samples"])
        same = [a["answer"] == b["answer"] for a, b in pairs]
        report["divergence"] = {
            "kl_champion_to_candidate": round(kl, 6) if math.isfinite(kl) else None,
            "generation_agreement": round(sum(same) / len(same), 5) if same else None}
    report["contenders"] = contenders(p, model, tokenizer, records, prompts, index, report, cache)
    return report


def load_sets(eval_file: Path, golden: Path | None, anchor: Path | None, replay: Path | None,
              train_file: Path | None, replay_examples: int, seed: int) -> dict[str, list[dict]]:
    def read(path: Path | None) -> list[dict]:
        return list(read_jsonl(path)) if path and path.exists() else []

    return {"new": read(eval_file), "golden": read(golden), "anchor": read(anchor),
            "replay": replay_set(replay, train_file, replay_examples, seed) if replay else []}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.model.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", type=Path)
    parser.add_argument("champion", type=Path)
    parser.add_argument("dataset_dir", type=Path, help="the dataset stage's output (eval.jsonl, train.jsonl)")
    parser.add_argument("report", type=Path)
    parser.add_argument("--golden", type=Path, help="the frozen golden set (JSONL)")
    parser.add_argument("--anchor", type=Path, help="the anchor set (JSONL)")
    parser.add_argument("--replay", type=Path, help="the replay buffer the cycle started from")
    parser.add_argument("--index", type=Path, help="the retrieval index (the retrieval stage's index.jsonl)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    sets = load_sets(args.dataset_dir / "eval.jsonl", args.golden, args.anchor, args.replay,
                     args.dataset_dir / "train.jsonl", params.evaluate.replay_examples, params.seed)
    index = vector_store.open_index(args.index, params.retrieval.vector_store) if args.index else None
    report = run(params.evaluate, params.train, params.base_model.model, params.seed, args.candidate,
                 args.champion, sets, index, EmbeddingCache())
    write_json(args.report, report)
    losses = {n: metric(report[n], "new.eval_loss") if report[n] else "none"
              for n in ("candidate", "champion", "base")}
    print(f"evaluate: {report['examples']}; new-data loss candidate {losses['candidate']}, "
          f"champion {losses['champion']}, base {losses['base']}")


if __name__ == "__main__":
    main()
