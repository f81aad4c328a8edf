"""base_model: build the default tiny Llama and its tokenizer, and pre-train it on bundled text.

So the whole cycle runs offline on a CPU and its loss curves mean something, nightshift makes its
own base model: a byte-level BPE tokenizer (the `tokenizers` library) with a chat template, and a
small Llama-architecture model pre-trained on generated support dialogues plus the general text in
data/corpus/. The result is an ordinary transformers folder: AutoModelForCausalLM and AutoTokenizer
load it like any hub model. When `base_model.model` names another model this stage still builds the
tiny one (it is cheap), and train uses the named one.

    python -m pipelines.model.base_model models/base
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.records import write_json
from pipelines.samples.sample_logs import corpus_dialogues

CORPUS_DIR = Path("data/corpus")
SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# `{% generation %}` marks the assistant's tokens, so training can put its loss on them alone.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|end|>' }}{% endif %}{{ '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "</s>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def pretraining_texts(p: params_mod.BaseModelParams, seed: int, corpus_dir: Path, tokenizer=None) -> list[str]:
    """Generated support dialogues (chat-formatted once a tokenizer exists) and the general text."""
    dialogues = corpus_dialogues(seed, p.corpus_records)
    general = [line for f in sorted(corpus_dir.glob("*.txt"))
               for line in f.read_text().splitlines() if line.strip()]
    if tokenizer is None:
        return [m["content"] for chat in dialogues for m in chat] + general
    return [tokenizer.apply_chat_template(chat, tokenize=False) for chat in dialogues] + general


def copy_row(stream: list[int], rng: random.Random, bos_id: int) -> tuple[list[int], int]:
    """A passage of the stream's tokens in random order, then the same passage again, and how many
    leading tokens are not scored: only the repeat is, since nothing but the context predicts it.
    Tokens drawn by their frequency in the text, the words the model knows; uniform draws over the
    vocabulary do not work, since with tied embeddings the tokens the text never uses collapse
    together. Spans of 8 to 64 tokens, log-uniform: short and long look-backs alike."""
    span = int(math.exp(rng.uniform(math.log(8), math.log(64))))
    passage = [stream[rng.randrange(len(stream))] for _ in range(span)]
    return [bos_id, *passage, *passage], span + 1


def answer_words(text: str) -> list[str]:
    """The words of `text` without the punctuation around them, in order, repeats kept."""
    return [w for w in (word.strip(".,;:!?()\"'") for word in text.split()) if w]


def copy_chat_row(tokenizer, dialogues: list[list[dict]], words: list[str], rng: random.Random,
                  max_length: int) -> tuple[list[int], int]:
    """A chat of 1-3 exchanges (questions from the dialogues, answers of 6-30 `words` in random
    order), then one of them again word for word, scored on its answer: few-shot retrieval's
    format, where the earlier answer is the only way to know the last one. `words` is every word of
    the pre-training text with its repeats, so answers draw common and rare words alike by their
    frequency: common ones also occur in the questions, and the model must match more than one
    token to find where the answer is. Drawn again until it fits in `max_length` tokens, so the
    scored answer is never cut off."""
    for _ in range(100):
        exchanges: list[dict] = []
        for _ in range(rng.randint(1, 3)):
            question = next(m["content"] for m in rng.choice(dialogues) if m["role"] == "user")
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(6, 30)))
            exchanges += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        again = rng.randrange(len(exchanges) // 2) * 2
        system = [m for m in rng.choice(dialogues) if m["role"] == "system"][:1]
        chat = system + exchanges + exchanges[again:again + 2]
        ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
        if len(ids) <= max_length:
            prompt = tokenizer.apply_chat_template(chat[:-1], tokenize=True, add_generation_prompt=True,
                                                   return_dict=True)["input_ids"]
            return list(ids), len(prompt)
    raise ValueError(f"base_model.max_length ({max_length}) is too short for copy_chat_share's rows (a "
                     "question and answer, twice, in about 200 tokens): raise it or set copy_chat_share to 0")


def padded(rows: list[tuple[list[int], int]], pad_id: int):
    """Right-padded ids, attention mask and labels of (ids, unscored) rows: the first `unscored`
    tokens and the padding are out of the loss."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for n, (ids, _) in enumerate(rows):
        input_ids[n, :len(ids)] = torch.tensor(ids)
        attention[n, :len(ids)] = 1
    labels = input_ids.masked_fill(attention == 0, -100)  # -100: out of transformers' loss
    for n, (_, unscored) in enumerate(rows):
        labels[n, :unscored] = -100
    return input_ids, attention, labels


def run(p: params_mod.BaseModelParams, seed: int, out_dir: Path, corpus_dir: Path = CORPUS_DIR) -> dict:
    """Build, pre-train and save the tiny base model.

    Each batch holds blocks of the text stream and, with `copy_share` and `copy_chat_share` above
    0, rows that teach the model to copy from its context (`copy_row`, `copy_chat_row`): what few-
    shot retrieval needs of a base, and what 250 steps of plain text do not grow
    (docs/BENCHMARKS.md, "Does the tiny base use retrieved examples?").

    Args:
        p: the `base_model` section of params.yaml (shape and pre-training budget).
        seed: the global seed.
        out_dir: where the model and tokenizer are saved (models/base).
    Returns:
        metrics: parameter count, first and last pre-training loss, seconds.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipelines.common.modeling import set_determinism

    started = time.time()
    set_determinism(seed)
    raw_texts = pretraining_texts(p, seed, corpus_dir)
    tokenizer = build_tokenizer(raw_texts, p.vocab_size)
    texts = pretraining_texts(p, seed, corpus_dir, tokenizer)
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
    block = min(128, p.max_length)
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=p.hidden_size, intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers, num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads, max_position_embeddings=p.max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    # On the GPU when there is one (a bigger `base_model` shape pre-trains in seconds there).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = LlamaForCausalLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.pretrain_learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / p.pretrain_steps)))
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(f"base-model-{seed}")
    n_copy = round(p.pretrain_batch_size * p.copy_share)
    n_chat = round(p.pretrain_batch_size * p.copy_chat_share)
    n_text = p.pretrain_batch_size - n_copy - n_chat
    dialogues = corpus_dialogues(seed, p.corpus_records) if n_chat else []
    words = [word for text in raw_texts for word in answer_words(text)] if n_chat else []
    losses = []
    model.train()
    for step in range(p.pretrain_steps):
        # Each kind of row weighs in by its share of the batch, whatever its number of tokens.
        loss = torch.zeros((), device=device)
        if n_text:
            batch = blocks[torch.randint(len(blocks), (n_text,), generator=generator)].to(device)
            loss = loss + model(input_ids=batch, labels=batch).loss * n_text / p.pretrain_batch_size
        for n_rows, make in ((n_copy, lambda: copy_row(stream, rng, tokenizer.bos_token_id)),
                             (n_chat, lambda: copy_chat_row(tokenizer, dialogues, words, rng, p.max_length))):
            if n_rows:
                ids, attention, labels = (t.to(device) for t in padded([make() for _ in range(n_rows)],
                                                                      tokenizer.pad_token_id))
                loss = loss + (model(input_ids=ids, attention_mask=attention, labels=labels).loss
                               * n_rows / p.pretrain_batch_size)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
        if step % 50 == 0 or step == p.pretrain_steps - 1:
            print(f"base_model: step {step + 1}/{p.pretrain_steps} loss {loss.item():.3f}", flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"parameters": sum(t.numel() for t in model.parameters()), "tokens": len(stream),
            "first_loss": losses[0], "final_loss": sum(losses[-10:]) / len(losses[-10:]),
            "seconds": round(time.time() - started, 1), "losses": losses}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.model.base_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--metrics", type=Path, default=Path("reports/base_model.json"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    metrics = run(params.base_model, params.seed, args.out_dir)
    write_json(args.metrics, metrics)
    print(f"base_model: {metrics['parameters']:,} parameters, loss {metrics['first_loss']:.2f} -> "
          f"{metrics['final_loss']:.2f} in {metrics['seconds']} s")


if __name__ == "__main__":
    main()
