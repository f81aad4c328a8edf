"""Training really trains: a tiny base model, QLoRA on the CPU, checked on the saved adapters."""

import dataclasses
import json

import pytest
from safetensors.torch import load_file

from pipelines.model import train
from tests.conftest import write_training_records

pytestmark = pytest.mark.slow  # trains models: `make test` runs it, `make test-fast` does not


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_training_records(tmp_path_factory.mktemp("data") / "train.jsonl", 0, "2026-01-05")


@pytest.fixture(scope="module")
def fresh_adapter(tmp_path_factory, tiny_base, params):
    """A newly initialised adapter saved to disk, to train from and compare against."""
    from peft import get_peft_model

    from pipelines.common.modeling import load_base

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


# --- Packing, gradient checkpointing, schedule ----------------------------------------------------

@pytest.fixture(scope="module")
def chat_examples(tiny_base, params, train_file):
    """Five of the training records through the chat template, of different lengths."""
    from pipelines.common.modeling import encode_chat, load_tokenizer
    from pipelines.common.records import read_jsonl

    tokenizer = load_tokenizer(tiny_base)
    examples = [encode_chat(tokenizer, r["messages"], params.train.max_length)
                for r in read_jsonl(train_file)][:5]
    assert len({len(e["input_ids"]) for e in examples}) > 1
    return examples


def _summed_loss_alone(model, example) -> tuple[float, int, "torch.Tensor"]:
    """Cross-entropy summed over one example's labelled tokens, run on its own (no padding)."""
    import torch

    ids = torch.tensor([example["input_ids"]])
    labels = torch.tensor([example["labels"]])
    logits = model(input_ids=ids).logits[0]
    loss = torch.nn.functional.cross_entropy(logits[:-1].float(), labels[0, 1:], ignore_index=-100,
                                             reduction="sum")
    return loss.item(), int((labels[0, 1:] != -100).sum()), logits


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_loss_equals_the_mean_loss_of_the_examples_unpacked(tiny_base, chat_examples,
                                                                         attention):
    import torch

    from pipelines.common.modeling import collate_packed, load_base

    model = load_base(tiny_base, "none").eval()
    model.set_attn_implementation(attention)
    with torch.no_grad():
        alone = [_summed_loss_alone(model, e) for e in chat_examples]
        packed = collate_packed(chat_examples)
        assert packed["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in chat_examples))
        out = model(**packed)
        # Token-weighted mean over every example's assistant tokens, as in a padded batch.
        expected = sum(s for s, _, _ in alone) / sum(n for _, n, _ in alone)
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)
        # Attention is blocked between examples: each one's logits are those it has alone.
        start = 0
        for e, (_, _, logits) in zip(chat_examples, alone):
            end = start + len(e["input_ids"])
            torch.testing.assert_close(out.logits[0, start:end], logits, rtol=1e-4, atol=1e-4)
            start = end
        # Without position ids restarting, the examples would see each other: the check can fail.
        leaked = model(input_ids=packed["input_ids"], labels=packed["labels"])
        assert abs(leaked.loss.item() - expected) > 1e-3


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory, tiny_base, params, train_file):
    """Plain LoRA (fp32, no dropout: the same random draws whatever the batch's shape) for 8 steps:
    packed, packed with gradient checkpointing, and padded."""
    p = dataclasses.replace(params.train, quantization="none", lora_dropout=0.0, max_steps=8)
    runs = {}
    for name, changes in {"packed": {}, "checkpointed": {"gradient_checkpointing": True},
                          "padded": {"packing": False}}.items():
        out = tmp_path_factory.mktemp(name) / "adapter"
        runs[name] = train.run(dataclasses.replace(p, **changes), tiny_base, params.seed,
                               out / "no-parent", train_file, out)
    return runs


def test_packed_training_follows_the_padded_training_step_for_step(short_runs):
    packed, padded = short_runs["packed"], short_runs["padded"]
    assert packed["steps"] == padded["steps"] == 8  # max_steps caps the epochs
    assert packed["tokens"] == padded["tokens"] > 0  # real tokens only: the pads are not counted
    assert packed["losses"] == pytest.approx(padded["losses"], rel=1e-3)


def test_gradient_checkpointing_trains_to_the_same_losses(short_runs):
    # Recomputing activations changes memory, not arithmetic.
    assert short_runs["checkpointed"]["losses"] == pytest.approx(short_runs["packed"]["losses"],
                                                                 rel=1e-5)


def test_gradient_checkpointing_is_switched_on_by_the_param(tiny_base, params, replace, tmp_path):
    from pipelines.common.modeling import load_base

    for quantization in ("4bit", "none"):
        p = replace(params.train, quantization=quantization, gradient_checkpointing=True)
        model = train.add_adapter(load_base(tiny_base, quantization), p, tmp_path / "no-parent")
        assert model.base_model.model.is_activation_checkpointing, quantization
        assert not model.base_model.model.config.use_cache


def test_schedule_rewarms_then_decays_over_the_cycles_steps(tmp_path, params, replace):
    import torch
    from transformers import SchedulerType, TrainingArguments, get_scheduler

    from pipelines.common.params import LR_SCHEDULERS

    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}
    p = replace(params.train, lr_scheduler="cosine", warmup_ratio=0.1)
    args = TrainingArguments(output_dir=str(tmp_path), **train.schedule_arguments(p))
    assert args.get_warmup_steps(40) == 4
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=p.learning_rate)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=4,
                              num_training_steps=40)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0 and rates[4] == pytest.approx(p.learning_rate)
    assert rates[:5] == sorted(rates[:5]) and rates[4:] == sorted(rates[4:], reverse=True)
    assert rates[-1] < 0.01 * p.learning_rate
