"""scripts/gpu_check.sh, rehearsed: its dry run on the CPU goes through every step with tiny shapes
and writes the files a GPU run writes, so the script cannot rot between GPU leases."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["install", "bench-1b", "bench-8b", "cycle", "pytest"]
FILES = {"gpu_check.json", "gpu_check.log", "bench_1b.json", "bench_8b.json", "cycle_summary.json",
         "cycle_params.yaml", "pytest_gpu.xml"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "GPU_CHECK_SITE": str(out.parent / "no-site")}
    env.pop("PYTHONPATH", None)  # the script puts the project first itself
    result = subprocess.run([str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True,
                            timeout=900)
    return result, out


def test_the_dry_run_passes_every_step_and_writes_the_files(dry_run):
    result, out = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert names == FILES  # at most 8 files come back from a GPU machine, none in a subfolder
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry_run"] and summary["ok"]
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == STEPS
    # No wheels travel in a dry run: install says so and skips; everything else runs.
    assert steps["install"]["status"] == "skipped" and "no wheels" in steps["install"]["reason"]
    for step in STEPS[1:]:
        assert steps[step]["status"] == "ok", steps[step]
    for s in summary["steps"]:  # each step inside its own budget, the run inside the total
        assert s["seconds"] <= s["budget"] + 15, s
    assert summary["seconds"] <= summary["total_budget"] + 60
    assert summary["versions"]["torch"] and summary["versions"]["bitsandbytes"]


def test_the_benchmarks_ran_both_paths(dry_run):
    _, out = dry_run
    for name, checkpointing in (("bench_1b.json", False), ("bench_8b.json", True)):
        bench = json.loads((out / name).read_text())
        assert bench["shape"] == "tiny" and bench["gradient_checkpointing"] is checkpointing
        for path in ("project", "default"):
            assert bench[path]["tokens_per_second"] > 0 and bench[path]["peak_memory_bytes"] > 0
            assert 0 < bench[path]["mfu"] < 1
        assert bench["speedup"] > 0 and bench["memory_ratio"] > 0


def test_the_cycle_went_from_ingest_to_register(dry_run):
    _, out = dry_run
    summary = json.loads((out / "cycle_summary.json").read_text())
    assert summary["status"] == "succeeded", summary
    for stage in ("ingest", "validate", "dataset", "base_model", "train", "evaluate", "gate",
                  "version", "register"):
        assert summary["timings"][stage] >= 0, stage
    assert summary["version"]
    params = yaml.safe_load((out / "cycle_params.yaml").read_text())
    assert params["demo"]["days"] == 1


def test_pytest_gpu_collected_the_gpu_tests_and_skipped_them_without_cuda(dry_run):
    _, out = dry_run
    suite = ET.parse(out / "pytest_gpu.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) >= 2 and int(suite.get("failures")) == int(suite.get("errors")) == 0
    assert int(suite.get("skipped")) == int(suite.get("tests"))  # no CUDA here


def test_a_step_that_runs_out_of_its_budget_is_cut_and_the_others_still_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable,
           "GPU_CHECK_SITE": str(tmp_path / "no-site"), "GPU_CHECK_BUDGET_BENCH_1B": "5"}
    result = subprocess.run([str(SCRIPT), "--dry-run", "--steps", "install,bench-1b"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1  # a step timed out
    steps = {s["step"]: s for s in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert list(steps) == ["install", "bench-1b"]
    assert steps["bench-1b"]["status"] == "timeout" and steps["bench-1b"]["seconds"] <= 5 + 15


def test_unknown_steps_are_refused():
    result = subprocess.run([str(SCRIPT), "--steps", "bench-70b"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown step bench-70b" in result.stderr
