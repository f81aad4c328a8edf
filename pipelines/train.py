"""train: fine-tune a LoRA adapter (QLoRA by default) that continues from the production adapter.

The parent adapter is a pinned input (models/parent, put there by the flow from `@champion`); when
it holds an adapter, training continues from it, otherwise a new adapter starts. The base model is
loaded in 4-bit NF4 with double quantisation and bf16 compute (QLoRA), or in full precision with
`train.quantization: none`. Loss is on assistant tokens only, through the model's chat template.
Batches are packed without padding (`train.packing`), and each cycle re-warms and re-decays the
learning rate (`train.lr_scheduler`, `train.warmup_ratio`).

    python -m pipelines.train models/parent data/dataset/train.jsonl models/candidate
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from pipelines import params as params_mod
from pipelines.records import read_jsonl, write_json

ADAPTER_INFO = "nightshift.json"  # written beside the adapter: what it was trained from


def lora_config(p: params_mod.TrainParams):
    from peft import LoraConfig

    return LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                      target_modules=list(p.target_modules), task_type="CAUSAL_LM")


# Non-reentrant checkpointing: works with frozen inputs (no enable_input_require_grads hack) and
# with keyword arguments such as position_ids; the reentrant variant is deprecated in torch.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def trainable_model(base_model: str, p: params_mod.TrainParams, parent: Path):
    """The base model, prepared for k-bit training if quantised, with a trainable adapter on it."""
    from pipelines.modeling import load_base

    return add_adapter(load_base(base_model, p.quantization), p, parent)


def add_adapter(model, p: params_mod.TrainParams, parent: Path):
    """A loaded base model made trainable: k-bit preparation when quantised, gradient
    checkpointing when `train.gradient_checkpointing`, and the parent's adapter (or a new one)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    from pipelines.modeling import is_adapter

    if p.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if p.gradient_checkpointing:  # transformers 5 calls it activation checkpointing
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    model.config.use_cache = False  # no generation while training; a cache only costs memory
    if is_adapter(parent):
        return PeftModel.from_pretrained(model, str(parent), is_trainable=True)
    return get_peft_model(model, lora_config(p))


class ProgressCallback(TrainerCallback):
    """One line every tenth of the run: step and loss."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        every = max(1, state.max_steps // 10)
        if logs and "loss" in logs and (state.global_step % every == 0
                                        or state.global_step == state.max_steps):
            print(f"train: step {state.global_step}/{state.max_steps} loss {logs['loss']:.3f}",
                  flush=True)


def run(p: params_mod.TrainParams, base_model: str, seed: int, parent: Path, train_file: Path,
        out_dir: Path) -> dict:
    """Train one cycle's adapter.

    Args:
        p: the `train` section of params.yaml.
        base_model: `base.model` (hub id or path).
        seed: the global seed; training is deterministic on the CPU for a given seed.
        parent: folder of the adapter to continue from (no adapter_config.json: start fresh).
        train_file: data/dataset/train.jsonl.
        out_dir: the candidate adapter (PEFT format) and nightshift.json.
    Returns:
        metrics: losses (first, final, per step), steps, tokens, seconds, tokens/s.
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from pipelines.modeling import data_collator, encode_chat, is_adapter, load_tokenizer, set_determinism

    started = time.time()
    set_determinism(seed)
    tokenizer = load_tokenizer(base_model)
    examples = [encode_chat(tokenizer, r["messages"], p.max_length) for r in read_jsonl(train_file)]
    examples = [e for e in examples if any(l != -100 for l in e["labels"])]
    if not examples:
        raise ValueError(f"{train_file} has no example with an assistant turn to learn from")
    model = trainable_model(base_model, p, parent)
    trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, num_train_epochs=p.epochs, **schedule_arguments(p), logging_steps=1,
            save_strategy="no", report_to=[], seed=seed,
            data_seed=seed, full_determinism=True, use_cpu=not torch.cuda.is_available(),
            bf16=p.quantization != "none", disable_tqdm=True, remove_unused_columns=False)
        trainer = Trainer(model=model, args=args, train_dataset=examples,
                          data_collator=data_collator(p.packing, tokenizer.pad_token_id))
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressCallback())
        result = trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    losses = [round(h["loss"], 4) for h in logged]
    if not losses or not all(math.isfinite(l) for l in losses):
        raise FloatingPointError(f"training diverged: losses {losses[-5:]}")

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    canonicalize_adapter_config(out_dir)
    tokens = trainer.state.num_input_tokens_seen  # real tokens: pads are not counted
    # Steps see different examples, so single steps are noisy; the first and the last epoch see
    # the same ones, so their mean losses show what was learned. One epoch: first vs last tenth.
    epochs_run = math.ceil(trainer.state.epoch - 1e-9)
    if epochs_run > 1:
        first = [h["loss"] for h in logged if h["epoch"] <= 1]
        last = [h["loss"] for h in logged if h["epoch"] > epochs_run - 1]
    else:
        tenth = max(1, len(losses) // 10)
        first, last = losses[:tenth], losses[-tenth:]
    seconds = time.time() - started
    info = {"base_model": base_model, "parent": _parent_info(parent) if is_adapter(parent) else None,
            "quantization": p.quantization, "examples": len(examples)}
    (out_dir / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return {"examples": len(examples), "steps": result.global_step, "trainable_parameters": trainable,
            "first_loss": _mean(first), "final_loss": _mean(last),
            "train_loss": round(result.training_loss, 4), "tokens": tokens,
            "seconds": round(seconds, 1), "tokens_per_second": round(tokens / seconds),
            "continued_from_parent": is_adapter(parent), "losses": losses}


def schedule_arguments(p: params_mod.TrainParams) -> dict:
    """TrainingArguments for the batch, learning-rate schedule, step budget and checkpointing:
    shared by the training stage and benchmarks/train_bench.py (and its plain baseline)."""
    return {"per_device_train_batch_size": p.batch_size, "learning_rate": p.learning_rate,
            "lr_scheduler_type": p.lr_scheduler,
            "warmup_steps": p.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
            "max_steps": p.max_steps if p.max_steps is not None else -1,
            "activation_checkpointing": p.gradient_checkpointing,
            "activation_checkpointing_kwargs": CHECKPOINTING_KWARGS,
            # Real tokens trained on: a packed row has no pads, so all its tokens count; a padded
            # one counts its attention mask.
            "include_num_input_tokens_seen": "all" if p.packing else "non_padding"}


def canonicalize_adapter_config(adapter_dir: Path) -> None:
    """PEFT saves target_modules from a set, in an order that varies between processes; sort it so
    the same training writes the same bytes and DVC sees an unchanged output."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def _parent_info(parent: Path) -> dict:
    path = parent / "PARENT.json"
    return json.loads(path.read_text()) if path.exists() else {"path": str(parent)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parent", type=Path)
    parser.add_argument("train_file", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--metrics", type=Path, default=Path("reports/train.json"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    metrics = run(params.train, params.base.model, params.seed, args.parent, args.train_file,
                  args.out_dir)
    write_json(args.metrics, metrics)
    print(f"train: {metrics['steps']} steps, loss {metrics['first_loss']:.3f} -> "
          f"{metrics['final_loss']:.3f}, {metrics['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
