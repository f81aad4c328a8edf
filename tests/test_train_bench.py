"""benchmarks/train_bench.py: the project's training path and the plain default, side by side."""

import json
import math

import pytest

from benchmarks import train_bench

FIELDS = {"shape", "config", "matmul_parameters", "device", "batch_size", "max_length",
          "quantization", "peak_tflops", "project", "default", "speedup", "memory_ratio"}
PATH_FIELDS = {"tokens", "seconds", "tokens_per_second", "peak_memory_bytes", "mfu", "losses"}


def _check_both_paths_trained(result, steps):
    assert FIELDS <= set(result)
    for path in ("project", "default"):
        r = result[path]
        assert PATH_FIELDS <= set(r), path
        assert r["timed_steps"] == steps and r["tokens"] > 0 and r["tokens_per_second"] > 0
        assert r["peak_memory_bytes"] > 0 and 0 < r["mfu"] < 1
        assert all(math.isfinite(l) for l in r["losses"])
        half = len(r["losses"]) // 2
        assert sum(r["losses"][half:]) / (len(r["losses"]) - half) < sum(r["losses"][:half]) / half, path
    # Same examples in the same order: both paths trained on the same real tokens.
    assert result["project"]["tokens"] == result["default"]["tokens"]
    assert result["speedup"] == pytest.approx(
        result["project"]["tokens_per_second"] / result["default"]["tokens_per_second"], rel=1e-2)


def test_tiny_shape_runs_both_paths_on_the_cpu_and_writes_the_json(tmp_path):
    out = tmp_path / "train_bench_tiny.json"
    result = train_bench.run("tiny", batch_size=8, max_length=128, warmup_steps=1, steps=5,
                             quantization="4bit", gradient_checkpointing=False, peak_tflops=989.0,
                             out=out)
    assert json.loads(out.read_text()) == result
    assert result["shape"] == "tiny" and result["quantization"] == "4bit"
    _check_both_paths_trained(result, steps=5)


def test_synthetic_chats_have_long_tailed_lengths_and_masked_prompts():
    chats = train_bench.synthetic_chats(400, 2048, 128256, seed=0)
    lengths = sorted(len(c["input_ids"]) for c in chats)
    assert 16 <= lengths[0] and lengths[-1] <= 2048
    assert 250 < lengths[len(lengths) // 2] < 600  # median about a fifth of the window
    assert lengths[-1] > 3 * lengths[len(lengths) // 2]
    for c in chats:
        assert c["labels"][0] == -100 and any(l != -100 for l in c["labels"])
        assert max(c["input_ids"]) < 128256 and min(c["input_ids"]) >= 1  # 0 is the pad id


@pytest.mark.gpu
def test_llama_1b_shape_trains_on_the_gpu_faster_and_in_less_memory(tmp_path):
    result = train_bench.run("llama-3.2-1b", batch_size=8, max_length=2048, warmup_steps=2,
                             steps=5, quantization="4bit", gradient_checkpointing=False,
                             peak_tflops=989.0, out=tmp_path / "bench.json")
    assert result["gpu"]
    _check_both_paths_trained(result, steps=5)
    # Padding-free batches do strictly less work than padded ones of the same examples.
    assert result["project"]["peak_memory_bytes"] <= result["default"]["peak_memory_bytes"]
