"""Loading models, tokenising chats and measuring loss: the pieces train and evaluate share."""

from __future__ import annotations

from collections.abc import Iterator

import math
import os
from pathlib import Path

import torch

# Loss counts assistant tokens only: the model should learn to answer, not to ask.
IGNORE_INDEX = -100


def set_determinism(seed: int) -> None:
    """Same seed, same weights on the CPU: `dvc repro --force train` rebuilds bit-identically."""
    from transformers import set_seed

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(seed, deterministic=True)


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer of {model} has no chat template; nightshift trains on "
                         "chat-formatted data, so use an instruct/chat model")
    return tokenizer


def quantization_config(quantization: str, quant_storage: str | None = None):
    """QLoRA's recipe (Dettmers et al., 2023): 4-bit NormalFloat, double quantisation, bf16 compute.

    `quant_storage` is the dtype the packed 4-bit weights are stored in (bitsandbytes' default is
    uint8); FSDP needs it to be the model's float dtype to shard them (FSDP with QLoRA)."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    extra = {"bnb_4bit_quant_storage": getattr(torch, quant_storage)} if quant_storage else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
                              **extra)


def load_base(model: str, quantization: str, quant_storage: str | None = None):
    """The base model, from a hub id or a local path, 4-bit quantised for QLoRA or not."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model, quantization_config=quantization_config(quantization, quant_storage),
        dtype=torch.float32 if quantization == "none" else torch.bfloat16)


def is_adapter(path: str | Path | None) -> bool:
    return path is not None and Path(path, "adapter_config.json").exists()


def load_with_adapter(model: str, quantization: str, adapter: str | Path | None, trainable: bool):
    """Base model plus the adapter at `adapter` (or none when it holds no adapter)."""
    from peft import PeftModel

    base = load_base(model, quantization)
    if not is_adapter(adapter):
        return base
    return PeftModel.from_pretrained(base, str(adapter), is_trainable=trainable)


def encode_chat(tokenizer, messages: list[dict], max_length: int) -> dict:
    """Token ids of a chat through the tokenizer's chat template, labels on assistant tokens only."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])[:max_length]
    mask = list(encoded["assistant_masks"])[:max_length]
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    return {"input_ids": ids, "labels": labels}


def fit_examples(tokenizer, messages: list[dict], examples: list[dict], max_length: int,
                 reserve: int = 0) -> list[dict]:
    """`messages` with as many of `examples` (nearest first) in its context as fit in
    `max_length` tokens with `reserve` to spare (an answer yet to be generated); the farthest go
    first. With none fitting, `messages` alone."""
    from pipelines.common.retrieval import with_examples

    for n in range(len(examples), 0, -1):
        chat = with_examples(messages, examples[:n])
        if len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]) + reserve <= max_length:
            return chat
    return messages


def encode_in_context(tokenizer, messages: list[dict], examples: list[dict], max_length: int) -> dict:
    """`encode_scored` of `messages` with retrieved `examples` as earlier turns (`fit_examples`),
    labels on the chat's own answers only: the examples' answers are context, not scored. Adds
    `context_tokens`, how many tokens the examples added to the prompt."""
    chat = fit_examples(tokenizer, messages, examples, max_length)
    encoded = encode_scored(tokenizer, chat, max_length)
    own_answers = sum(m.get("role") == "assistant" for m in messages)
    spans, previous = [], IGNORE_INDEX
    for i, label in enumerate(encoded["labels"]):
        if label != IGNORE_INDEX and previous == IGNORE_INDEX:
            spans.append(i)
        previous = label
    context_answers = spans[:max(len(spans) - own_answers, 0)]
    labels = list(encoded["labels"])
    if context_answers:
        cut = spans[len(context_answers)] if len(spans) > len(context_answers) else len(labels)
        labels[:cut] = [IGNORE_INDEX] * cut
    alone = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    full = len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"])
    n_bytes = sum(len(m["content"].encode("utf-8")) for m in messages if m.get("role") == "assistant")
    if full > max_length:
        kept = [t for t in labels if t != IGNORE_INDEX]
        n_bytes = len(tokenizer.decode(kept, skip_special_tokens=True).encode("utf-8"))
    return {"input_ids": encoded["input_ids"], "labels": labels, "answer_bytes": n_bytes,
            "context_tokens": full - alone}


def collate(batch: list[dict], pad_token_id: int) -> dict:
    """Pad a batch on the right; padded positions are masked out of attention and loss.

    Kept rather than transformers' `DataCollatorForSeq2Seq`, which pads the same way but through a
    tokenizer object: the scoring helpers below get only the pad id, and this is all it takes."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        labels[i, :n] = torch.tensor(b["labels"])
        attention[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def collate_packed(batch: list[dict]) -> dict:
    """Padding-free: the batch's examples end to end in one row, no pad token anywhere
    (transformers' `DataCollatorWithFlattening`).

    `position_ids` restart at 0 with each example. transformers reads a restart as an example
    boundary (its packed-sequence detection, used when no attention_mask is given) and blocks
    attention across it: a block-diagonal causal mask for sdpa and eager attention, variable-length
    kernels for flash attention, so the collator's flash-attention kwargs are not needed. Each
    example's first label is the collator's separator (-100), so that the last token of one example
    is not trained to predict the first of the next; unpacked, that label is never predicted either
    (labels shift by one), so the loss is the padded batch's loss (tests/test_train.py checks it for
    sdpa and eager on the CPU).

    The one thing added to the collator's batch is `use_cache=False`. transformers only looks for
    packing when there is no KV cache, and a model whose config has `use_cache: true` (most) makes
    one even in training, which silently lets the examples attend to each other: on the tiny base
    with transformers 5.23, a packed batch of five chats gives loss 4.431 with the cache and 3.641
    without it, the padded batch's 3.641.
    """
    from transformers import DataCollatorWithFlattening

    return {**DataCollatorWithFlattening(return_tensors="pt")(batch), "use_cache": False}


def on_device(batch: dict, model) -> dict:
    """The batch's tensors on the model's device (a 4-bit model is placed on the GPU when there is
    one; a batch is built on the CPU)."""
    return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def data_collator(packing: bool, pad_token_id: int):
    """The training batches: padding-free packed rows (`train.packing`), or padded rows."""
    if packing:
        return collate_packed
    return lambda batch: collate(batch, pad_token_id)


def encode_scored(tokenizer, messages: list[dict], max_length: int) -> dict:
    """`encode_chat` plus `answer_bytes`: how many UTF-8 bytes of answer text its labels cover,
    for bits per byte. The answers' own text when the chat fits in `max_length`; when it was cut,
    the bytes of the labelled tokens kept (decoded without special tokens), so the numerator and
    the denominator always cover the same text."""
    encoded = encode_chat(tokenizer, messages, max_length)
    full = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    if full <= max_length:
        n_bytes = sum(len(m["content"].encode("utf-8")) for m in messages if m.get("role") == "assistant")
    else:
        kept = [t for t in encoded["labels"] if t != IGNORE_INDEX]
        n_bytes = len(tokenizer.decode(kept, skip_special_tokens=True).encode("utf-8"))
    return {**encoded, "answer_bytes": n_bytes}


@torch.no_grad()
def answer_scores(model, examples: list[dict], batch_size: int, pad_token_id: int) -> dict:
    """Sums over the labelled (answer) tokens: negative log-likelihood in nats, tokens, tokens
    predicted right, and the examples' `answer_bytes` (0 where they carry none); `per_example`
    holds each example's [nats, tokens], for comparisons paired by example."""
    model.eval()
    total, correct, tokens, per_example = 0.0, 0, 0, []
    for start in range(0, len(examples), batch_size):
        batch = on_device(collate(examples[start:start + batch_size], pad_token_id), model)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
        mask = shift_labels != IGNORE_INDEX
        row_nats, row_tokens = (losses * mask).sum(1), mask.sum(1)
        per_example.extend([float(n), int(t)] for n, t in zip(row_nats.tolist(), row_tokens.tolist()))
        total += float(row_nats.sum())
        correct += int(((shift_logits.argmax(-1) == shift_labels) & mask).sum())
        tokens += int(mask.sum())
    return {"nats": total, "tokens": tokens, "correct": correct,
            "bytes": sum(e.get("answer_bytes", 0) for e in examples), "per_example": per_example}


def loss_and_accuracy(model, examples: list[dict], batch_size: int, pad_token_id: int) -> tuple[float, float]:
    """Token-weighted mean cross-entropy and next-token accuracy over the labelled tokens
    (nan, nan if there are none)."""
    s = answer_scores(model, examples, batch_size, pad_token_id)
    return (s["nats"] / s["tokens"], s["correct"] / s["tokens"]) if s["tokens"] else (math.nan, math.nan)


def per_byte(scores: dict) -> float:
    """Bits per byte of answer text from `answer_scores`: the answers' summed negative
    log-likelihood in bits over their UTF-8 bytes (nan without bytes). Unlike the loss per token,
    it does not depend on how a tokenizer cuts the text, so models on different tokenizers (a
    rebase onto another base) are compared on it."""
    return scores["nats"] / math.log(2) / scores["bytes"] if scores["bytes"] else math.nan


def bits_per_byte(model, examples: list[dict], batch_size: int, pad_token_id: int) -> float:
    """Bits per byte of the answers of `examples` (made by `encode_scored`) under `model`."""
    return per_byte(answer_scores(model, examples, batch_size, pad_token_id))


@torch.no_grad()
def reply_counted(model, tokenizer, messages: list[dict], max_new_tokens: int) -> tuple[str, int, int]:
    """The assistant's next message after `messages`, greedy, through the chat template, with
    the prompt's and the answer's token counts."""
    import torch

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt").to(model.device)
    model.eval()
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    prompt_tokens = inputs["input_ids"].shape[1]
    new = output[0, prompt_tokens:]
    return tokenizer.decode(new, skip_special_tokens=True).strip(), prompt_tokens, len(new)


def reply_streamed(model, tokenizer, messages: list[dict], max_new_tokens: int, counts: dict) -> Iterator[str]:
    """`reply_counted` as it is generated: yields the answer's text piece by piece (transformers'
    TextIteratorStreamer, with generation in a thread of its own) and, once done, puts the
    prompt's and the answer's token counts into `counts`. The same greedy answer."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt").to(model.device)
    model.eval()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    done: dict = {}

    def generate() -> None:
        try:
            with torch.inference_mode():
                done["output"] = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=tokenizer.pad_token_id,
                                                eos_token_id=tokenizer.eos_token_id, streamer=streamer)
        except BaseException as exc:   # handed to the reader, who would otherwise wait forever
            done["error"] = exc
            streamer.end()

    thread = threading.Thread(target=generate, daemon=True, name="generate")
    thread.start()
    yield from streamer
    thread.join()
    if "error" in done:
        raise done["error"]
    prompt_tokens = inputs["input_ids"].shape[1]
    counts.update(prompt_tokens=prompt_tokens, answer_tokens=done["output"].shape[1] - prompt_tokens)


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int) -> str:
    """The assistant's next message after `messages`, greedy, through the chat template."""
    return reply_counted(model, tokenizer, messages, max_new_tokens)[0]


def generate(model, tokenizer, prompt: str, max_new_tokens: int, system: str | None = None) -> str:
    """The assistant's answer to one user message, greedy, through the chat template."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]
    return reply(model, tokenizer, messages, max_new_tokens)


def load_adapters(model: str, quantization: str, adapters: dict[str, str | Path | None]):
    """One base model with every adapter in `adapters` that loads, each under its own name.

    Returns (model, errors): switch with `model.set_adapter(name)`, score the bare base inside
    `model.disable_adapter()`; `errors` maps each adapter that did not load to why. One base in
    memory however many adapters are compared.
    """
    from peft import PeftModel

    base = load_base(model, quantization)
    peft_model, errors = None, {}
    for name, path in adapters.items():
        if not is_adapter(path):
            errors[name] = f"no adapter in {path}"
            continue
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(base, str(path), adapter_name=name)
            else:
                peft_model.load_adapter(str(path), adapter_name=name)
        except Exception as exc:  # a corrupt adapter is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {exc}"
            if peft_model is None:
                base = load_base(model, quantization)  # a failed load may have half-wrapped it
            elif name in peft_model.peft_config:
                peft_model.delete_adapter(name)
    if peft_model is not None:
        peft_model.eval()
    return (peft_model if peft_model is not None else base), errors


@torch.no_grad()
def output_divergence(model, reference: str, other: str, examples: list[dict], batch_size: int,
                      pad_token_id: int) -> float:
    """Mean KL(reference || other) of the next-token distributions over the labelled tokens:
    how differently two adapters on the same base would answer the same conversations."""
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = on_device(collate(examples[start:start + batch_size], pad_token_id), model)
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        logprobs = []
        for name in (reference, other):
            model.set_adapter(name)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logprobs.append(torch.log_softmax(logits[:, :-1].float(), dim=-1)[mask])
        p_log, q_log = logprobs
        total += float((p_log.exp() * (p_log - q_log)).sum())
        tokens += int(mask.sum())
    return total / tokens if tokens else math.nan
