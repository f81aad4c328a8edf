"""Checkpoints: a training run killed with SIGKILL resumes where it stopped, ends with the adapter an
uninterrupted run writes, and never resumes a checkpoint of other inputs."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flows import workspace
from pipelines.model import train
from tests.conftest import ROOT, write_tiny_params, write_training_records

pytestmark = pytest.mark.slow  # trains models: `make test` runs it, `make test-fast` does not

# 48 examples, 8 per step, 2 epochs: 12 steps, a checkpoint every 2: the first one appears
# after a sixth of the run, leaving the kill ten steps to land in; the resumed run crosses an
# epoch boundary, where the sampler is reseeded.
EPOCHS, CHECKPOINT_STEPS = 2, 2


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_training_records(tmp_path_factory.mktemp("data") / "train.jsonl", 1, "2026-01-06")


@pytest.fixture(scope="module")
def resume_params(params):
    return dataclasses.replace(params.train, epochs=EPOCHS, checkpoint_steps=CHECKPOINT_STEPS)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_base, params, resume_params, train_file):
    """The adapter of a run that was never killed, and its checkpoint folder (emptied on success)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    metrics = train.run(resume_params, tiny_base, params.seed, root / "no-parent", train_file,
                        root / "candidate", checkpoints=root / "checkpoints")
    return metrics, root


def stage_command(tmp_path, tiny_base, train_file, out, checkpoints):
    params_file = write_tiny_params(tmp_path / "params.yaml", **{
        "base_model.model": tiny_base, "train.epochs": EPOCHS, "train.checkpoint_steps": CHECKPOINT_STEPS})
    return [sys.executable, "-m", "pipelines.model.train", str(tmp_path / "no-parent"), str(train_file),
            str(out), "--metrics", str(tmp_path / "train.json"), "--params", str(params_file),
            "--checkpoints", str(checkpoints)]


def test_an_uninterrupted_run_deletes_its_checkpoints_and_did_not_resume(uninterrupted):
    metrics, root = uninterrupted
    assert metrics["resumed_from_step"] is None
    assert metrics["steps"] == 48 // 8 * EPOCHS
    assert (root / "checkpoints").is_dir() and not any((root / "checkpoints").iterdir())


def test_a_run_killed_after_a_checkpoint_resumes_and_ends_with_the_same_adapter(
        tmp_path, tiny_base, train_file, uninterrupted):
    out, checkpoints = tmp_path / "candidate", tmp_path / "checkpoints"
    command = stage_command(tmp_path, tiny_base, train_file, out, checkpoints)
    env = dict(os.environ, PYTHONHASHSEED="0")
    killed = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob(f"*/checkpoint-*/{train.CHECKPOINT_COMPLETE}")):
        assert killed.poll() is None, "the stage ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (out / "adapter_model.safetensors").exists(), "the kill came after training ended"
    left = [train.checkpoint_step(c) for c in checkpoints.glob("*/checkpoint-*")]
    assert left and max(left) < 48 // 8 * EPOCHS

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert metrics["resumed_from_step"] is not None and metrics["resumed_from_step"] % CHECKPOINT_STEPS == 0
    assert metrics["steps"] == 48 // 8 * EPOCHS
    assert not any(checkpoints.iterdir()), "checkpoints are deleted when the run succeeds"
    # Same data order (the seeded sampler, skipping the batches already trained on), same
    # optimizer, scheduler and RNG state: the resumed run writes the very same bytes.
    _, reference = uninterrupted
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (out / name).read_bytes() == (reference / "candidate" / name).read_bytes(), name
    assert metrics["losses"] == uninterrupted[0]["losses"]


def test_a_checkpoint_of_other_inputs_is_never_resumed(tmp_path, tiny_base, params, resume_params,
                                                       train_file):
    def fingerprint(p=resume_params, seed=params.seed, parent=tmp_path / "no-parent", data=train_file):
        return train.run_fingerprint(p, tiny_base, seed, parent, data)

    same = fingerprint()
    other_data = tmp_path / "other.jsonl"
    other_data.write_text(train_file.read_text() + train_file.read_text().splitlines()[0] + "\n")
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "adapter_config.json").write_text("{}")
    assert fingerprint() == same
    assert fingerprint(data=other_data) != same
    assert fingerprint(seed=params.seed + 1) != same
    assert fingerprint(p=dataclasses.replace(resume_params, learning_rate=0.001)) != same
    assert fingerprint(parent=parent) != same
    # How often checkpoints are written does not change the result, so it may change in between.
    assert fingerprint(p=dataclasses.replace(resume_params, checkpoint_steps=7)) == same


def test_a_half_written_checkpoint_is_removed_and_the_newest_complete_one_resumed(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "optimizer.pt").write_bytes(b"partial")
        if complete:
            (folder / train.CHECKPOINT_COMPLETE).write_text("{}")
    assert train.prepare_checkpoint_dir(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert train.prepare_checkpoint_dir(tmp_path / "none-yet") is None


def test_a_workspace_never_commits_checkpoints(tmp_path):
    (tmp_path / ".gitignore").write_text(workspace.WORKSPACE_GITIGNORE)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    ignored = subprocess.run(["git", "check-ignore", "-q",
                              f"{train.CHECKPOINTS}/0123abcd/checkpoint-10/optimizer.pt"], cwd=tmp_path)
    assert ignored.returncode == 0
