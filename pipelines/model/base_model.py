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


def run(p: params_mod.BaseModelParams, seed: int, out_dir: Path, corpus_dir: Path = CORPUS_DIR) -> dict:
    """Build, pre-train and save the tiny base model.

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
    tokenizer = build_tokenizer(pretraining_texts(p, seed, corpus_dir), p.vocab_size)
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
    losses = []
    model.train()
    for step in range(p.pretrain_steps):
        batch = blocks[torch.randint(len(blocks), (p.pretrain_batch_size,), generator=generator)].to(device)
        loss = model(input_ids=batch, labels=batch).loss
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
