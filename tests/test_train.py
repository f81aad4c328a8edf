"""Training really trains: a tiny base model, QLoRA on the CPU, checked on the saved adapters."""

import dataclasses
import datetime as dt
import json
import random

import pytest
from safetensors.torch import load_file

from pipelines import sample_logs, train
from pipelines.records import write_jsonl


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    rng = random.Random(0)
    records = [sample_logs.make_record(rng, dt.date(2026, 1, 5), i, sample_logs.TOPICS[i % 6])
               for i in range(48)]
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, records)
    return path


@pytest.fixture(scope="module")
def fresh_adapter(tmp_path_factory, tiny_base, params):
    """A newly initialised adapter saved to disk, to train from and compare against."""
    from peft import get_peft_model

    from pipelines.modeling import load_base

    model = get_peft_model(load_base(tiny_base, "none"), train.lora_config(params.train))
    out = tmp_path_factory.mktemp("parent") / "adapter"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qlora_params(params):
    """The project's QLoRA settings, with epochs enough for 48 examples to show a clear drop."""
    return dataclasses.replace(params.train, epochs=6)


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_base, params, qlora_params, train_file, fresh_adapter):
    out = tmp_path_factory.mktemp("cand") / "candidate"
    metrics = train.run(qlora_params, tiny_base, params.seed, fresh_adapter, train_file, out)
    return metrics, out


def test_qlora_training_lowers_the_loss(qlora_run, qlora_params):
    metrics, _ = qlora_run
    assert qlora_params.quantization == "4bit"
    assert metrics["final_loss"] < metrics["first_loss"] * 0.95
    assert metrics["continued_from_parent"]


def test_every_lora_weight_changed_from_the_parent(qlora_run, fresh_adapter):
    _, out = qlora_run
    before = load_file(fresh_adapter / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys() and len(after) > 0
    unchanged = [k for k in after if (after[k].float() == before[k].float()).all()]
    assert not unchanged


def test_training_continues_from_the_parent_adapter(tmp_path, tiny_base, params, train_file,
                                                    fresh_adapter, replace):
    # With a zero learning rate, continuing must return the parent's weights exactly.
    out = tmp_path / "candidate"
    train.run(replace(params.train, learning_rate=0.0), tiny_base, params.seed, fresh_adapter,
              train_file, out)
    before = load_file(fresh_adapter / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert all((after[k].float() == before[k].float()).all() for k in before)


def test_same_seed_gives_identical_adapter_bytes(tmp_path, qlora_run, tiny_base, params,
                                                 qlora_params, train_file, fresh_adapter):
    _, first = qlora_run
    again = tmp_path / "again"
    train.run(qlora_params, tiny_base, params.seed, fresh_adapter, train_file, again)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name


def test_plain_lora_without_quantization_trains_a_new_adapter(tmp_path, tiny_base, params,
                                                              train_file, replace):
    metrics = train.run(replace(params.train, quantization="none"), tiny_base, params.seed,
                        tmp_path / "no-parent", train_file, tmp_path / "out")
    assert metrics["final_loss"] < metrics["first_loss"]
    assert not metrics["continued_from_parent"]
    info = json.loads((tmp_path / "out" / train.ADAPTER_INFO).read_text())
    assert info["parent"] is None and info["quantization"] == "none"


def test_base_model_is_an_ordinary_transformers_model_with_a_chat_template(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert model.config.model_type == "llama"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|assistant|>\n")
