"""Training speed: the project's training path against the plain Hugging Face default, side by side.

Both train a LoRA adapter (QLoRA by default, the `train` section of params.yaml) on a randomly
initialised Llama of the chosen shape, on the same synthetic chat examples in the same order, with
the same batch size, sequence length, LoRA settings and schedule. They differ only where the
project differs from the default:

  project   pipelines/model/train.py: padding-free packed batches (`train.packing`), no KV cache while
            training, gradient checkpointing if `--gradient-checkpointing`
  default   transformers' Trainer with DataCollatorForSeq2Seq (each batch padded to its longest
            example), peft's get_peft_model (after prepare_model_for_kbit_training for QLoRA)

For each, after `--warmup-steps` steps it times `--steps` steps and reports real (non-pad) tokens
per second, peak memory (GPU: torch.cuda.max_memory_allocated; CPU: peak resident memory above
the level before training, sampled every 10 ms, after freed memory is handed back to the OS), model FLOPs utilisation and the final loss, then
the ratios. MFU counts LoRA training as 2/3 of full fine-tuning (no weight gradients for the
frozen base): 6 * N * tokens/s * 2/3 / peak, with N the parameters that take part in a matmul per
token (all but an untied input embedding table). Results go to
benchmarks/results/train_bench_<shape>.json.

Shapes come from the models' public config.json (no weights are needed or downloaded):

    python benchmarks/train_bench.py --shape tiny                    # CPU, seconds
    python benchmarks/train_bench.py --shape llama-3.2-1b            # one GPU
    python benchmarks/train_bench.py --shape llama-3.1-8b --peak-tflops 989
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import math
import os
import random
import resource
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings, RoPE base: as in the
# models' config.json. `tiny` is the project's default base shape (params.yaml `base`).
SHAPES = {
    "tiny": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
             "tie_word_embeddings": False, "rope_theta": 10000.0},
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "tie_word_embeddings": True, "rope_theta": 500000.0},
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "tie_word_embeddings": False, "rope_theta": 500000.0},
}
# Per shape: examples per step, tokens per example (cap), steps timed after warmup steps.
DEFAULTS = {
    "tiny": {"batch_size": 8, "max_length": 256, "warmup_steps": 2, "steps": 8},
    "llama-3.2-1b": {"batch_size": 8, "max_length": 2048, "warmup_steps": 5, "steps": 20},
    "llama-3.1-8b": {"batch_size": 4, "max_length": 2048, "warmup_steps": 5, "steps": 20},
}
PAD_ID = 0


def synthetic_chats(n: int, max_length: int, vocab_size: int, seed: int) -> list[dict]:
    """Tokenised chats of realistic, long-tailed lengths: total length log-normal with a median of
    a fifth of `max_length` (most chats are short, a few fill the window and are truncated), a
    prompt of 20-60% of it with labels masked, the rest an assistant answer that is trained on.
    Token ids follow a Zipf law (as words do), so there is something to learn and loss falls."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(1, vocab_size)]  # id 0 is the pad id
    ids_pool = list(range(1, vocab_size))
    chats = []
    for _ in range(n):
        length = int(min(max_length, max(16, rng.lognormvariate(math.log(max_length / 5), 0.7))))
        prompt = max(1, int(length * rng.uniform(0.2, 0.6)))
        ids = rng.choices(ids_pool, weights=weights, k=length)
        chats.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return chats


def matmul_parameters(model) -> int:
    """Parameters that take part in a matmul for each token: all but an untied input embedding
    (a table lookup). A tied embedding counts once, as the output layer."""
    total = sum(t.numel() for t in model.parameters())
    if not model.config.tie_word_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total


def build_random_model(shape: str, max_length: int, out: Path) -> int:
    """A randomly initialised Llama of `shape`, saved as a bf16 checkpoint in `out` (that is what
    the training path loads and quantises). Returns its matmul parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=max(max_length, 8192),
                         bos_token_id=1, eos_token_id=2, pad_token_id=PAD_ID)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    n = matmul_parameters(model)
    model.save_pretrained(out)
    del model
    return n


class PeakResidentMemory:
    """Peak resident memory of this process above the level at start, sampled every 10 ms."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _timer_callback(warmup_steps: int):
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Time and real tokens from the end of the warmup steps to the end of training."""

        def __init__(self):
            self.start = self.end = None
            self.tokens_start = self.tokens_end = 0

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if state.global_step == warmup_steps:
                self.start, self.tokens_start = time.perf_counter(), state.num_input_tokens_seen
            self.end, self.tokens_end = time.perf_counter(), state.num_input_tokens_seen

    return StepTimer()


def train_once(path: str, p, model_dir: Path, examples: list[dict], warmup_steps: int,
               seed: int) -> dict:
    """Train with the project's path (`path="project"`) or the plain default (`"default"`)."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        DataCollatorForSeq2Seq,
        PreTrainedTokenizerFast,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    from pipelines.common import modeling
    from pipelines.model import train

    modeling.set_determinism(seed)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:  # hand memory freed by the path before back to the OS, so this one's growth is its own
        gc.collect()
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    memory = PeakResidentMemory()
    with memory:
        if path == "project":
            model = train.trainable_model(str(model_dir), p, model_dir / "no-parent")
            collator = modeling.data_collator(p.packing, PAD_ID)
        else:
            p = dataclasses.replace(p, packing=False)  # so that its pads are not counted as tokens
            model = modeling.load_base(str(model_dir), p.quantization)
            if p.quantization != "none":  # peft's QLoRA recipe, checkpointing as in the project path
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=p.gradient_checkpointing,
                    gradient_checkpointing_kwargs=train.CHECKPOINTING_KWARGS)
            elif p.gradient_checkpointing:
                model.activation_checkpointing_enable(train.CHECKPOINTING_KWARGS)
            model = get_peft_model(model, train.lora_config(p))
            collator = DataCollatorForSeq2Seq(_padding_tokenizer(PreTrainedTokenizerFast), padding=True)
        timer = _timer_callback(warmup_steps)
        with tempfile.TemporaryDirectory() as scratch:
            args = TrainingArguments(
                output_dir=scratch, num_train_epochs=1, **train.schedule_arguments(p),
                logging_steps=1, save_strategy="no", report_to=[], seed=seed, data_seed=seed,
                use_cpu=not gpu, bf16=p.quantization != "none", disable_tqdm=True,
                remove_unused_columns=False)
            trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collator)
            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(timer)
            trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = timer.end - timer.start
    tokens = timer.tokens_end - timer.tokens_start
    peak = torch.cuda.max_memory_allocated() if gpu else memory.peak - memory.start
    del trainer, model
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    return {"timed_steps": len(losses) - warmup_steps, "tokens": int(tokens),
            "seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1),
            "peak_memory_bytes": int(peak),
            "peak_memory": "torch.cuda.max_memory_allocated" if gpu else "peak RSS above start",
            "losses": [round(l, 4) for l in losses]}


def _padding_tokenizer(cls):
    """A tokenizer that only pads (DataCollatorForSeq2Seq pads through one): pad id 0."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    return cls(tokenizer_object=Tokenizer(WordLevel({"<pad>": PAD_ID}, unk_token="<pad>")),
               pad_token="<pad>", model_input_names=["input_ids", "attention_mask"])


def run(shape: str, batch_size: int, max_length: int, warmup_steps: int, steps: int,
        quantization: str | None, gradient_checkpointing: bool, peak_tflops: float,
        out: Path, params_file: Path = ROOT / "params.yaml") -> dict:
    import torch

    from pipelines.common import params as params_mod

    params = params_mod.load(params_file)
    p = dataclasses.replace(params.train, batch_size=batch_size, max_length=max_length,
                            max_steps=warmup_steps + steps, packing=True,
                            gradient_checkpointing=gradient_checkpointing,
                            quantization=quantization or params.train.quantization)
    examples = synthetic_chats((warmup_steps + steps) * batch_size, max_length,
                               SHAPES[shape]["vocab_size"], params.seed)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"train_bench: {shape} on {device}, batch {batch_size} x up to {max_length} tokens, "
          f"{quantization or p.quantization}, {warmup_steps} warmup + {steps} timed steps", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        n_params = build_random_model(shape, max_length, model_dir)
        results = {}
        for path in ("default", "project"):
            results[path] = train_once(path, p, model_dir, examples, warmup_steps, params.seed)
            r = results[path]
            r["mfu"] = 6 * n_params * r["tokens_per_second"] * 2 / 3 / (peak_tflops * 1e12)
            print(f"  {path:8s} {r['tokens_per_second']:>12,.0f} tokens/s  peak "
                  f"{r['peak_memory_bytes'] / 2**20:>9,.0f} MiB  MFU {100 * r['mfu']:.3g}%  "
                  f"loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}", flush=True)
    project, default = results["project"], results["default"]
    result = {
        "shape": shape, "config": SHAPES[shape], "matmul_parameters": n_params, "device": device,
        "gpu": torch.cuda.is_available(), "batch_size": batch_size, "max_length": max_length,
        "quantization": p.quantization, "gradient_checkpointing": gradient_checkpointing,
        "lora": {"r": p.lora_r, "alpha": p.lora_alpha, "target_modules": list(p.target_modules)},
        "warmup_steps": warmup_steps, "steps": steps, "peak_tflops": peak_tflops,
        "mean_example_tokens": round(sum(len(e["input_ids"]) for e in examples) / len(examples), 1),
        "project": project, "default": default,
        "speedup": round(project["tokens_per_second"] / default["tokens_per_second"], 3),
        "memory_ratio": round(project["peak_memory_bytes"] / max(1, default["peak_memory_bytes"]), 3),
        "torch": torch.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"train_bench: project/default tokens/s {result['speedup']:.2f}x, peak memory "
          f"{result['memory_ratio']:.2f}x; written to {out}", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batch-size", type=int, help="examples per step (default: per shape)")
    parser.add_argument("--max-length", type=int, help="tokens per example at most (default: per shape)")
    parser.add_argument("--warmup-steps", type=int, help="steps before timing (default: per shape)")
    parser.add_argument("--steps", type=int, help="steps timed (default: per shape)")
    parser.add_argument("--quantization", choices=["4bit", "none"],
                        help="default: params.yaml train.quantization")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="checkpoint activations in both paths")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the accelerator's dense bf16 peak for MFU (H200: 989)")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/train_bench_<shape>.json")
    args = parser.parse_args(argv)
    if args.warmup_steps is not None and args.warmup_steps < 1:
        parser.error("--warmup-steps must be at least 1: timing starts at the end of a step")
    d = DEFAULTS[args.shape]
    run(args.shape, args.batch_size or d["batch_size"], args.max_length or d["max_length"],
        d["warmup_steps"] if args.warmup_steps is None else args.warmup_steps,
        args.steps or d["steps"], args.quantization, args.gradient_checkpointing, args.peak_tflops,
        args.out or ROOT / f"benchmarks/results/train_bench_{args.shape}.json")


if __name__ == "__main__":
    main()
