"""train: fine-tune a LoRA adapter (QLoRA by default) that continues from the production adapter.

The parent adapter is a pinned input (models/parent, put there by the flow from `@champion`); when
it holds an adapter, training continues from it, otherwise a new adapter starts. The base model is
loaded in 4-bit NF4 with double quantisation and bf16 compute (QLoRA), or in full precision with
`train.quantization: none`. Loss is on assistant tokens only, through the model's chat template.
Batches are packed without padding (`train.packing`), and each cycle re-warms and re-decays the
learning rate (`train.lr_scheduler`, `train.warmup_ratio`).

Every `train.checkpoint_steps` steps a checkpoint goes to models/checkpoints/<fingerprint>/, where
the fingerprint hashes what the run depends on (training data, parent adapter, base model, train
params, seed, library versions); a run killed midway resumes from the newest complete checkpoint of
the same fingerprint when started again, and deletes the checkpoints when it succeeds. With
`train.distributed.processes` > 1 the stage re-launches itself through `accelerate launch` (DDP, or
FSDP with QLoRA); only the main process writes the adapter and the metrics.

    python -m pipelines.model.train models/parent data/dataset/train.jsonl models/candidate
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from pipelines.common import params as params_mod
from pipelines.common.records import read_jsonl, write_json

ADAPTER_INFO = "nightshift.json"  # written beside the adapter: what it was trained from
CHECKPOINTS = Path("models/checkpoints")  # outside every DVC out: DVC deletes outs before a stage runs
CHECKPOINT_COMPLETE = "COMPLETE"  # written into a checkpoint folder once the Trainer has saved all of it
# Base-model files up to this size are hashed whole into the fingerprint; bigger ones (the
# weights of a real model) by size and their first and last MiB, so a fingerprint stays cheap.
FULL_HASH_BYTES = 64 * 2**20


def lora_config(p: params_mod.TrainParams):
    from peft import LoraConfig

    return LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                      target_modules=list(p.target_modules), task_type="CAUSAL_LM")


# Non-reentrant checkpointing: works with frozen inputs (no enable_input_require_grads hack) and
# with keyword arguments such as position_ids; the reentrant variant is deprecated in torch.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def uses_fsdp(p: params_mod.TrainParams) -> bool:
    return p.distributed.processes > 1 and p.distributed.strategy == "fsdp"


def trainable_model(base_model: str, p: params_mod.TrainParams, parent: Path):
    """The base model, prepared for k-bit training if quantised, with a trainable adapter on it."""
    from pipelines.common.modeling import load_base

    # FSDP shards only floating tensors of one dtype: the 4-bit weights are stored in bf16, the
    # compute dtype, so the quantised layers are wrapped together with the others.
    model = load_base(base_model, p.quantization, quant_storage="bfloat16" if uses_fsdp(p) else None)
    return add_adapter(model, p, parent)


def add_adapter(model, p: params_mod.TrainParams, parent: Path):
    """A loaded base model made trainable: k-bit preparation when quantised, gradient
    checkpointing when `train.gradient_checkpointing`, and the parent's adapter (or a new one)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    from pipelines.common.modeling import is_adapter

    if p.quantization != "none" and not uses_fsdp(p):
        # It upcasts the non-quantised weights to fp32; FSDP needs them in the storage dtype
        # (TRL skips it for sharded QLoRA for the same reason).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if p.gradient_checkpointing:  # transformers 5 calls it activation checkpointing
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    model.config.use_cache = False  # no generation while training; a cache only costs memory
    if is_adapter(parent):
        return PeftModel.from_pretrained(model, str(parent), is_trainable=True)
    return get_peft_model(model, lora_config(p))


class CheckpointCompleteCallback(TrainerCallback):
    """Marks a checkpoint folder complete once the Trainer has written all of it (adapter,
    optimizer, scheduler, RNG state, trainer state), so a kill while saving is never resumed from."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process has written its part (its RNG state) before the mark
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                (folder / CHECKPOINT_COMPLETE).write_text(json.dumps({"step": state.global_step}) + "\n")


class ProgressCallback(TrainerCallback):
    """One line every tenth of the run: step and loss."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        every = max(1, state.max_steps // 10)
        if logs and "loss" in logs and (state.global_step % every == 0
                                        or state.global_step == state.max_steps):
            print(f"train: step {state.global_step}/{state.max_steps} loss {logs['loss']:.3f}",
                  flush=True)


def run(p: params_mod.TrainParams, base_model: str, seed: int, parent: Path, train_file: Path,
        out_dir: Path, checkpoints: Path | None = None) -> dict:
    """Train one cycle's adapter.

    Args:
        p: the `train` section of params.yaml.
        base_model: `base_model.model` (hub id or path).
        seed: the global seed; training is deterministic on the CPU for a given seed.
        parent: folder of the adapter to continue from (no adapter_config.json: start fresh).
        train_file: data/dataset/train.jsonl.
        out_dir: the candidate adapter (PEFT format) and nightshift.json.
        checkpoints: where checkpoints go, in a subfolder named by the run's fingerprint; a run
            resumes from the newest complete one there and deletes them when it succeeds.
            None: no checkpoints.
    Returns:
        metrics: losses (first, final, per step), steps, tokens, seconds, tokens/s, and the step
        resumed from (None when the run started from the beginning).
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from pipelines.common.modeling import (
        data_collator,
        encode_chat,
        is_adapter,
        load_tokenizer,
        set_determinism,
    )

    started = time.time()
    set_determinism(seed)
    tokenizer = load_tokenizer(base_model)
    examples = [encode_chat(tokenizer, r["messages"], p.max_length) for r in read_jsonl(train_file)]
    examples = [e for e in examples if any(l != -100 for l in e["labels"])]
    if not examples:
        raise ValueError(f"{train_file} has no example with an assistant turn to learn from")
    model = trainable_model(base_model, p, parent)
    trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)
    checkpoint_dir = (checkpoints / run_fingerprint(p, base_model, seed, parent, train_file)
                      if checkpoints is not None else None)
    resume_from = prepare_checkpoint_dir(checkpoint_dir) if checkpoint_dir else None
    resumed_from_step = checkpoint_step(resume_from) if resume_from else None
    if resume_from and is_main_process():
        print(f"train: resuming from {resume_from} (step {resumed_from_step}), left by a run of "
              "the same inputs that did not finish", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=str(checkpoint_dir or scratch), **checkpoint_arguments(p, checkpoint_dir),
            num_train_epochs=p.epochs, **schedule_arguments(p), logging_steps=1, report_to=[], seed=seed,
            data_seed=seed, full_determinism=True, use_cpu=not torch.cuda.is_available(),
            bf16=p.quantization != "none", disable_tqdm=True, remove_unused_columns=False,
            ddp_find_unused_parameters=False)  # every LoRA weight takes part in every step
        # A plain Trainer rather than TRL's SFTTrainer (assistant_only_loss, padding_free): it would
        # save no code and would change results. The assistant-only labels already come from the
        # chat template's generation mask (encode_chat, the mask SFTTrainer uses) and packing is
        # transformers' own collator. As SFTTrainer's source reads, padding_free without its
        # own packing needs max_length=None and pre-truncated examples, and forbids passing a
        # collator; it wants a `datasets.Dataset`; it casts the LoRA weights of a 4-bit model to
        # bf16 (they train in fp32 here, so the adapters would change); it computes entropy and
        # token accuracy over the full logits at every step and writes a model card into every
        # checkpoint. And it would be one more pinned dependency.
        trainer = Trainer(model=model, args=args, train_dataset=examples,
                          data_collator=data_collator(p.packing, tokenizer.pad_token_id))
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressCallback())
        trainer.add_callback(CheckpointCompleteCallback())
        if args.world_size > 1 and trainer.is_world_process_zero():
            state = trainer.accelerator.state
            print(f"train: {args.world_size} processes, {state.distributed_type.value} over "
                  f"{state.backend}, {p.per_device_batch_size} examples each per step", flush=True)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    losses = [round(h["loss"], 4) for h in logged]
    if not losses or not all(math.isfinite(l) for l in losses):
        raise FloatingPointError(f"training diverged: losses {losses[-5:]}")

    save_adapter(trainer, model, out_dir)
    main_process = trainer.is_world_process_zero()
    if checkpoint_dir and main_process:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run finished: nothing to resume
    tokens = trainer.state.num_input_tokens_seen  # real tokens, over all processes: pads are not counted
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
    if main_process:
        (out_dir / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return {"examples": len(examples), "steps": result.global_step, "trainable_parameters": trainable,
            "first_loss": _mean(first), "final_loss": _mean(last),
            "train_loss": round(result.training_loss, 4), "tokens": tokens,
            "seconds": round(seconds, 1), "tokens_per_second": round(tokens / seconds),
            "continued_from_parent": is_adapter(parent), "resumed_from_step": resumed_from_step,
            "processes": p.distributed.processes, **peak_memory(), "losses": losses}


def peak_memory() -> dict:
    """Where training ran and the most memory it held: the GPU's peak allocation when it ran on
    one, else this process's peak resident size (Linux reports ru_maxrss in KiB)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return {"device": torch.cuda.get_device_name(0),
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return {"device": "cpu", "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def save_adapter(trainer, model, out_dir: Path) -> None:
    """The trained adapter in PEFT format, written by the main process only. Every process calls
    this: under FSDP the adapter's shards are gathered from all of them first."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(str(out_dir))  # collective; writes on the main process only
        if trainer.is_world_process_zero():
            (out_dir / "training_args.bin").unlink(missing_ok=True)  # pickled, differs per run
    elif trainer.is_world_process_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
    if trainer.is_world_process_zero():
        canonicalize_adapter_config(out_dir)


# --- Checkpoints ---------------------------------------------------------------------------------

def checkpoint_arguments(p: params_mod.TrainParams, checkpoint_dir: Path | None) -> dict:
    """TrainingArguments for checkpoints: every `checkpoint_steps` steps, the last
    `checkpoints_kept` kept, each with optimizer, scheduler and RNG state (not only the model),
    so that training resumes exactly where it stopped."""
    if checkpoint_dir is None:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": p.checkpoint_steps,
            "save_total_limit": p.checkpoints_kept, "save_only_model": False}


def run_fingerprint(p: params_mod.TrainParams, base_model: str, seed: int, parent: Path,
                    train_file: Path) -> str:
    """A hash of everything the trained adapter depends on: a checkpoint is resumed only by a run
    whose training data, parent adapter, base model, train params, seed and library versions are
    the same. How often checkpoints are saved and kept does not change the result, so it is left out."""
    import bitsandbytes
    import peft
    import torch
    import transformers

    digest = hashlib.sha256()

    def add(label: str, value: str) -> None:
        digest.update(f"{label}\0{value}\n".encode())

    add("train_file", _file_digest(train_file, sample_big=False))
    for path in sorted(parent.rglob("*")) if parent.is_dir() else []:
        if path.is_file():
            add(f"parent/{path.relative_to(parent).as_posix()}", _file_digest(path, sample_big=False))
    add("base_model", base_model)
    base = Path(base_model)
    for path in sorted(base.rglob("*")) if base.is_dir() else []:
        if path.is_file():
            add(f"base/{path.relative_to(base).as_posix()}", _file_digest(path, sample_big=True))
    train = dataclasses.asdict(p)
    for key in ("checkpoint_steps", "checkpoints_kept"):
        train.pop(key)
    add("train", json.dumps(train, sort_keys=True))
    add("seed", str(seed))
    add("versions", " ".join(f"{m.__name__}=={m.__version__}"
                             for m in (torch, transformers, peft, bitsandbytes)))
    return digest.hexdigest()[:16]


def _file_digest(path: Path, sample_big: bool) -> str:
    """sha256 of a file's bytes; with `sample_big`, a file over FULL_HASH_BYTES is hashed by its
    size and its first and last MiB (re-reading a real model's weights each run would be slow)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if sample_big and size > FULL_HASH_BYTES:
            digest.update(f"{size}:".encode() + f.read(2**20))
            f.seek(size - 2**20)
            digest.update(f.read())
        else:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The checkpoints the Trainer finished writing, oldest first.

    Not transformers' `get_last_checkpoint` (which `resume_from_checkpoint=True` calls): it returns
    the highest-numbered checkpoint-N folder whether or not it was finished, and the Trainer writes
    a checkpoint file by file into its final folder, so a run killed while saving would resume from
    a folder without its optimizer or RNG state (with checkpoint-2 and -4 marked complete and
    checkpoint-6 half-written, it returns checkpoint-6); and `resume_from_checkpoint=True` raises
    when there is none yet, which is every first run. Deleting the unfinished ones first and then
    asking it would do in one process, but in a distributed launch the other processes look while
    the main one may still be deleting, before there is a process group to wait on; reading the
    COMPLETE marks gives every process the same answer whenever it looks.
    """
    found = [f for f in checkpoint_dir.glob("checkpoint-*")
             if f.name.rsplit("-", 1)[1].isdigit() and (f / CHECKPOINT_COMPLETE).exists()]
    return sorted(found, key=checkpoint_step)


def prepare_checkpoint_dir(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint to resume from (None: start from the beginning). The main
    process first deletes checkpoints a kill left half-written, and their folder's other runs'
    leftovers are never looked at: each fingerprint has its own folder."""
    if is_main_process() and checkpoint_dir.is_dir():
        complete = set(complete_checkpoints(checkpoint_dir))
        for folder in checkpoint_dir.glob("checkpoint-*"):
            if folder not in complete:
                print(f"train: removing {folder}, a checkpoint that was not finished", flush=True)
                shutil.rmtree(folder, ignore_errors=True)
    complete = complete_checkpoints(checkpoint_dir) if checkpoint_dir.is_dir() else []
    return complete[-1] if complete else None


def is_main_process() -> bool:
    """Rank 0 of a distributed launch, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def schedule_arguments(p: params_mod.TrainParams) -> dict:
    """TrainingArguments for the batch, learning-rate schedule, step budget and checkpointing:
    shared by the training stage and benchmarks/train_bench.py (and its plain baseline)."""
    return {"per_device_train_batch_size": p.per_device_batch_size, "learning_rate": p.learning_rate,
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


# --- Several processes: accelerate launch ------------------------------------------------------

def in_distributed_launch() -> bool:
    """True inside a process started by `accelerate launch` or torchrun with more than one process."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def accelerate_config(p: params_mod.TrainParams, cuda: bool) -> dict:
    """The `accelerate launch` config file for `train.distributed`, as a dict to write as YAML.

    On GPUs: DDP is MULTI_GPU; FSDP follows PEFT's FSDP+QLoRA recipe (decoder layers wrapped as
    FSDP units, `use_orig_params: false`, weights loaded on rank 0 only and broadcast, sharded
    checkpoints). Without CUDA (DDP only: FSDP with 4-bit weights needs GPUs): accelerate's
    MULTI_CPU type starts its processes through mpirun, which is not here, so the config asks for
    its torchrun launcher (the MULTI_GPU one) with `use_cpu`; the Trainer, told to use the CPU,
    then runs the processes as MULTI_CPU over gloo.
    """
    d = p.distributed
    if d.strategy == "fsdp" and not cuda:
        raise RuntimeError("train.distributed.strategy fsdp (FSDP with QLoRA) needs CUDA GPUs and "
                           "none is visible: use strategy ddp, or processes 1, on this machine")
    config = {
        "compute_environment": "LOCAL_MACHINE", "debug": False, "num_machines": 1,
        "machine_rank": 0, "num_processes": d.processes, "main_process_ip": "127.0.0.1",
        # 0: accelerate picks a free port (29500, the usual one, may be taken by another job).
        "main_process_port": 0, "rdzv_backend": "static", "same_network": True,
        # The Trainer's bf16 flag (QLoRA's compute dtype) decides; the launcher agrees with it.
        "mixed_precision": "bf16" if p.quantization != "none" else "no", "downcast_bf16": "no",
        "use_cpu": not cuda,
    }
    if d.strategy == "ddp":
        config.update(distributed_type="MULTI_GPU", gpu_ids="all")
    else:
        config.update(distributed_type="FSDP", fsdp_config={
            "fsdp_version": 1,
            "fsdp_sharding_strategy": "FULL_SHARD",
            # Each decoder layer (the model's _no_split_modules) is one FSDP unit; PEFT's policy
            # also wraps the trainable LoRA layers on their own.
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_forward_prefetch": False,
            # Only rank 0 reads the weights; the others get them by broadcast (needs sync).
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_sync_module_states": True,
            # Flat parameters mixing frozen 4-bit and trainable LoRA weights: PEFT's QLoRA recipe
            # turns use_orig_params off.
            "fsdp_use_orig_params": False,
            "fsdp_offload_params": d.fsdp_offload_params,
            # Checkpoints hold each rank's shard; the final adapter is gathered whole on rank 0.
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        })
    return config


def launch_command(config_file: Path, argv: list[str]) -> list[str]:
    """This stage, with the same arguments, under `accelerate launch`."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
            "-m", "pipelines.model.train", *argv]


def launch_distributed(p: params_mod.TrainParams, argv: list[str]) -> None:
    """Run this stage in `train.distributed.processes` processes through `accelerate launch` and
    wait for them; raise SystemExit with what to do when they fail."""
    import torch
    import yaml

    config = accelerate_config(p, torch.cuda.is_available())
    with tempfile.TemporaryDirectory(prefix="nightshift-accelerate-") as tmp:
        config_file = Path(tmp) / "accelerate.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=True))
        command = launch_command(config_file, argv)
        print(f"train: {p.distributed.processes} processes ({p.distributed.strategy} on "
              f"{'the CPU' if config['use_cpu'] else 'GPUs'}, {p.per_device_batch_size} "
              "examples per process per step) through\n  "
              f"{' '.join(command)}\nwith {config_file}:\n{config_file.read_text()}", flush=True)
        returncode = subprocess.call(command, preexec_fn=_die_with_parent)
    if returncode != 0:
        raise SystemExit(f"train: `accelerate launch` exited with {returncode}; the processes' "
                         "errors are above. Set train.distributed.processes: 1 to train in one process.")


def _die_with_parent() -> None:
    """In the launcher's child: be sent SIGTERM when this stage dies, even by SIGKILL, so no
    orphaned training processes keep writing checkpoints next to the run that resumes them."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m pipelines.model.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parent", type=Path, help="the adapter to continue from (empty: start fresh)")
    parser.add_argument("train_file", type=Path, help="the training records (JSONL, chat format)")
    parser.add_argument("out_dir", type=Path, help="where the candidate adapter is written")
    parser.add_argument("--metrics", type=Path, default=Path("reports/train.json"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINTS,
                        help=f"folder of the checkpoints a killed run resumes from (default {CHECKPOINTS})")
    args = parser.parse_args(argv)
    params = params_mod.load(args.params)
    if params.train.distributed.processes > 1 and not in_distributed_launch():
        launch_distributed(params.train, argv)  # the launched processes write adapter and metrics
        return
    metrics = run(params.train, params.base_model.model, params.seed, args.parent, args.train_file,
                  args.out_dir, checkpoints=args.checkpoints)
    if not is_main_process():
        return
    write_json(args.metrics, metrics)
    resumed = f", resumed from step {metrics['resumed_from_step']}" if metrics["resumed_from_step"] else ""
    print(f"train: {metrics['steps']} steps{resumed}, loss {metrics['first_loss']:.3f} -> "
          f"{metrics['final_loss']:.3f}, {metrics['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
