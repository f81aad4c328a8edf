"""benchmarks/forgetting.py end to end at the smallest size: two cycles, three arms, the JSON and
the plot it writes (the figures themselves come from the full run in docs/BENCHMARKS.md)."""

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from tests.conftest import write_tiny_params

pytestmark = pytest.mark.slow  # trains models: `make test` runs it, `make test-fast` does not

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark():
    spec = importlib.util.spec_from_file_location("forgetting", ROOT / "benchmarks/forgetting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_cycles_write_the_three_arms_figures_and_a_plot(tmp_path, tiny_base):
    # The session's tiny base model, plain LoRA and two optimizer steps a cycle keep six trainings
    # within seconds; the code path (dataset mix, train, loss) is the benchmark's own.
    params = write_tiny_params(tmp_path / "params.yaml", **{"train.quantization": "none",
                                                            "train.epochs": 1, "train.max_steps": 2})
    out, plot = tmp_path / "forgetting.json", tmp_path / "forgetting.png"
    load_benchmark().main(["--cycles", "2", "--records-per-cycle", "24", "--eval-fraction", "0.25",
                           "--params", str(params), "--base-model", tiny_base, "--out", str(out),
                           "--plot", str(plot)])
    results = json.loads(out.read_text())
    for arm in ("replay", "no_replay", "full_retrain"):
        figures = results[arm]
        for key in ("old_loss_increase_pct", "new_loss_gain_pct", "train_seconds"):
            assert math.isfinite(figures[key]), (arm, key)
        assert figures["train_seconds"] > 0, arm
        assert all(n > 0 for n in figures["train_examples_per_cycle"]), arm  # each cycle trained
        assert len(figures["train_seconds_cumulative_per_cycle"]) == 2
        assert len(figures["loss_matrix"]) == 3 and len(figures["loss_matrix"][0]) == 2
        assert len(figures["anchor_loss_per_cycle"]) == 3
        assert figures["loss_matrix"][1] != figures["loss_matrix"][0], arm  # the adapter changed the model
    assert results["replay"]["dataset_reports"][1]["train_replay"] > 0  # cycle 2 replayed cycle 1
    assert results["full_retrain"]["train_examples_per_cycle"][1] > results["no_replay"]["train_examples_per_cycle"][1]
    assert results["setup"]["topics"] == ["products", "devices"]
    assert set(results["verdict"]) >= {"replay_old_loss_increase_at_most_5_pct", "replay_gain_vs_no_replay"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_cycle_is_one_counter_with_keys_no_other_cycle_names_and_a_fixed_code_per_key():
    benchmark = load_benchmark()
    keys = [set(items) for items, _ in benchmark.DEPARTMENTS.values()]
    assert all(not (a & b) for i, a in enumerate(keys) for b in keys[i + 1:])
    for k in (0, 1):
        counter = benchmark.cycle_topic(k)
        codes = benchmark.item_codes(42, counter)
        for record in benchmark.cycle_records(42, k, 20):
            assert record["metadata"]["topic"] == counter
            question, answer = record["messages"][1]["content"], record["messages"][2]["content"]
            item = next(i for i in codes if i in question)
            assert item in answer and re.search(rf"\b{codes[item]}\b", answer), (question, answer)
