"""Several training processes: the accelerate config the stage generates (DDP, FSDP with QLoRA),
a real 2-process CPU run (gloo) through `accelerate launch`, and the 2-GPU FSDP+QLoRA run where
GPUs exist."""

import dataclasses
import datetime as dt
import json
import random
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from pipelines.common import params as params_mod
from pipelines.common.records import write_jsonl
from pipelines.model import train
from pipelines.samples import sample_logs
from tests.conftest import ROOT, write_tiny_params

pytestmark = pytest.mark.slow  # trains models: `make test` runs it, `make test-fast` does not

EXAMPLES, EPOCHS = 32, 3  # 4 steps an epoch at the global batch of 8: 12 steps


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    rng = random.Random(2)
    records = [sample_logs.make_record(rng, dt.date(2026, 1, 7), i, sample_logs.TOPICS[i % 6])
               for i in range(EXAMPLES)]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, records)
    return path


def distributed(params, **values) -> params_mod.TrainParams:
    return dataclasses.replace(params.train, distributed=dataclasses.replace(
        params.train.distributed, **values))


def written_config(tmp_path, config: dict):
    """The config as the launcher writes it, read back by accelerate's own config loader."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=True))
    return load_config_from_file(str(path))


def test_fsdp_qlora_config_follows_the_peft_recipe(tmp_path, params):
    p = distributed(params, processes=4, strategy="fsdp")
    loaded = written_config(tmp_path, train.accelerate_config(p, cuda=True))
    assert loaded.distributed_type == "FSDP" and loaded.num_processes == 4
    assert loaded.main_process_port == 0 and loaded.mixed_precision == "bf16"
    fsdp = loaded.fsdp_config
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_use_orig_params"] is False
    assert fsdp["fsdp_cpu_ram_efficient_loading"] is True and fsdp["fsdp_sync_module_states"] is True
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["fsdp_offload_params"] is False


def test_fsdp_qlora_stores_the_4bit_weights_in_the_compute_dtype():
    import torch

    from pipelines.common.modeling import quantization_config

    config = quantization_config("4bit", quant_storage="bfloat16")
    assert config.bnb_4bit_quant_storage == config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("4bit").bnb_4bit_quant_storage == torch.uint8  # the default elsewhere


def test_ddp_config_on_gpus_and_gloo_processes_without_cuda(tmp_path, params):
    p = distributed(params, processes=2, strategy="ddp")
    gpu = written_config(tmp_path, train.accelerate_config(p, cuda=True))
    assert gpu.distributed_type == "MULTI_GPU" and gpu.num_processes == 2 and not gpu.use_cpu
    cpu = written_config(tmp_path, train.accelerate_config(p, cuda=False))
    # torchrun's launcher with use_cpu: the processes run as MULTI_CPU over gloo (tested below)
    assert cpu.distributed_type == "MULTI_GPU" and cpu.num_processes == 2 and cpu.use_cpu
    with pytest.raises(RuntimeError, match="needs CUDA GPUs"):
        train.accelerate_config(distributed(params, processes=2, strategy="fsdp"), cuda=False)


def test_the_global_batch_is_split_evenly_across_processes(params):
    assert distributed(params, processes=2).per_device_batch_size == params.train.batch_size // 2
    with pytest.raises(params_mod.ParamsError, match="multiple of train.distributed.processes"):
        distributed(params, processes=3)


def run_stage(tmp_path, tiny_base, train_file, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    params_file = write_tiny_params(tmp_path / "params.yaml", **{
        "base_model.model": tiny_base, "train.epochs": EPOCHS, **overrides})
    out = tmp_path / "candidate"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.model.train", str(tmp_path / "no-parent"), str(train_file),
         str(out), "--metrics", str(tmp_path / "train.json"), "--params", str(params_file),
         "--checkpoints", str(tmp_path / "checkpoints")],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result, out, json.loads((tmp_path / "train.json").read_text())


def test_two_cpu_processes_over_gloo_train_one_adapter_like_one_process(tmp_path, tiny_base, params,
                                                                         train_file):
    # No dropout: each process draws its own dropout masks, which no single process reproduces.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["distributed"]
    result, out, metrics = run_stage(tmp_path / "two", tiny_base, train_file, **{
        "train.lora_dropout": 0.0, "train.distributed": {**raw, "processes": 2}})
    assert "accelerate.commands.launch" in result.stdout
    assert "2 processes, MULTI_CPU over gloo" in result.stdout
    assert metrics["processes"] == 2 and metrics["steps"] == EXAMPLES // 8 * EPOCHS
    assert metrics["final_loss"] < metrics["first_loss"]
    assert (out / "adapter_model.safetensors").exists() and (out / train.ADAPTER_INFO).exists()
    assert result.stdout.count(f"train: {metrics['steps']} steps") == 1, "only the main process reports"

    single = train.run(dataclasses.replace(params.train, lora_dropout=0.0, epochs=EPOCHS), tiny_base,
                       params.seed, tmp_path / "no-parent", train_file, tmp_path / "single")
    # Same examples in each global step (the seeded sampler; process r takes the r-th half of
    # each global batch) and the loss averaged over the tokens of the whole global batch, as in
    # one process: the per-step losses agree to the third decimal. Not bit for bit: the
    # gradients are summed across processes in another order and the bf16 compute rounds the
    # difference up, so the adapters differ by well under 2% of each weight's norm (measured
    # 0.3% for the lora_B weights, which start at zero: a fraction of what training moved them).
    assert len(metrics["losses"]) == len(single["losses"])
    assert all(abs(a - b) < 2e-3 for a, b in zip(metrics["losses"], single["losses"]))
    two = load_file(out / "adapter_model.safetensors")
    one = load_file(tmp_path / "single" / "adapter_model.safetensors")
    assert two.keys() == one.keys()
    for name in one:
        difference = (two[name].float() - one[name].float()).norm() / one[name].float().norm()
        assert difference < 0.02, (name, float(difference))


@pytest.mark.gpu
def test_fsdp_qlora_on_two_gpus(tmp_path, tiny_base, train_file):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"FSDP with QLoRA needs 2 CUDA GPUs; {torch.cuda.device_count()} visible")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["distributed"]
    result, out, metrics = run_stage(tmp_path, tiny_base, train_file, **{
        "train.distributed": {**raw, "processes": 2, "strategy": "fsdp"}})
    assert "FSDP" in result.stdout
    assert metrics["processes"] == 2 and metrics["final_loss"] < metrics["first_loss"]
    assert load_file(out / "adapter_model.safetensors")
