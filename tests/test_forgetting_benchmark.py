"""benchmarks/forgetting.py end to end at the smallest size: two cycles, three arms, the JSON and
the plot it writes (the figures themselves come from the full run in docs/BENCHMARKS.md)."""

import importlib.util
import json
import math
from pathlib import Path

from tests.conftest import write_tiny_params

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark():
    spec = importlib.util.spec_from_file_location("forgetting", ROOT / "benchmarks/forgetting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_cycles_write_the_three_arms_figures_and_a_plot(tmp_path, tiny_base):
    # Plain LoRA and one epoch keep six trainings within seconds; the code path is the same.
    params = write_tiny_params(tmp_path / "params.yaml", **{"train.quantization": "none",
                                                            "train.epochs": 1})
    out, plot = tmp_path / "forgetting.json", tmp_path / "forgetting.png"
    load_benchmark().main(["--cycles", "2", "--records-per-cycle", "24", "--params", str(params),
                           "--base-model", tiny_base, "--out", str(out), "--plot", str(plot)])
    results = json.loads(out.read_text())
    for arm in ("replay", "no_replay", "full_retrain"):
        figures = results[arm]
        for key in ("old_loss_increase_pct", "new_loss_gain_pct", "train_seconds"):
            assert math.isfinite(figures[key]), (arm, key)
        assert len(figures["loss_matrix"]) == 3 and len(figures["loss_matrix"][0]) == 2
        assert len(figures["anchor_loss_per_cycle"]) == 3
    assert results["replay"]["dataset_reports"][1]["train_replay"] > 0  # cycle 2 replayed cycle 1
    assert results["full_retrain"]["train_examples_per_cycle"][1] > results["no_replay"]["train_examples_per_cycle"][1]
    assert results["setup"]["topics"] == ["billing", "shipping"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
