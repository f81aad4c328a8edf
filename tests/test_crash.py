"""Crash safety of the nightly cycle: real `nightshift run` processes, each in its own process
group, killed with SIGKILL (the whole group, as when a machine goes down), then run again, in one
tiny workspace with its real git repository, DVC cache and remote, and MLflow store.

Night one is killed while it trains; night two is killed right after `version` (data pushed,
cycle committed, nothing registered) and then right after `register` (version registered, alias
not moved) through the NIGHTSHIFT_CRASH_AFTER test hook (flows/nightly.py), which SIGKILLs the
flow's own process at that point. Night three is killed after `version` and never run again:
night four registers it before learning its own.
"""

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.model import train as train_stage
from pipelines.samples import sample_logs
from registry import history
from registry import mlflow_registry as reg
from tests.conftest import write_tiny_params

pytestmark = pytest.mark.slow

NIGHT_ONE, NIGHT_TWO, NIGHT_THREE, NIGHT_FOUR = "2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"
CYCLE_TIMEOUT = 600


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    ws = wsp.init(tmp_path_factory.mktemp("crash") / "workspace")
    # A checkpoint every 2 steps, so that the kill in training comes after one was saved.
    write_tiny_params(ws / "params.yaml", **{"drift.min_records": 20, "train.checkpoint_steps": 2})
    sample_logs.generate(ws / "logs", dt.date.fromisoformat(NIGHT_ONE), 4, 40, seed=7, topic_shift=0.8)
    return ws


@pytest.fixture(scope="module")
def cli_env() -> dict:
    """The environment of each `nightshift run`: the module's Prefect API server (outside the
    runs' process groups, so it outlives their kills, like a real Prefect server)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        env = wsp.subprocess_env()
        env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONUNBUFFERED="1")
        env.pop("NIGHTSHIFT_CRASH_AFTER", None)
        yield env


def start_cycle(ws: Path, date: str, env: dict, crash_after: str | None = None) -> subprocess.Popen:
    if crash_after:
        env = {**env, "NIGHTSHIFT_CRASH_AFTER": crash_after}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--workspace", str(ws),
                             "--date", date], env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, errors="replace")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group (flow, dvc, the stage, Prefect's server)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def run_cycle(ws: Path, date: str, env: dict, crash_after: str | None = None) -> tuple[int, str]:
    proc = start_cycle(ws, date, env, crash_after)
    try:
        out, _ = proc.communicate(timeout=CYCLE_TIMEOUT)
    finally:
        kill_group(proc)  # what a crashed process left running dies with it
    return proc.returncode, out


def registry(ws: Path) -> params_mod.RegistryParams:
    return params_mod.load(ws / "params.yaml").registry


def versions_of(ws: Path, cycle: str) -> list:
    p = registry(ws)
    with contextlib.chdir(ws):
        return reg.client(p).search_model_versions(
            f"name = '{p.model_name}' and tag.`nightshift.cycle` = '{cycle}'")


def recorded_moves(ws: Path) -> list:
    """The alias history as recorded, read without recording anything."""
    p = registry(ws)
    with contextlib.chdir(ws):
        return history._recorded(p, reg.client(p))


def aliases(ws: Path) -> dict:
    with contextlib.chdir(ws):
        return reg.status(registry(ws))["aliases"]


def objects(store: Path) -> set[str]:
    """The content hashes a DVC cache or remote holds (3.x layout: files/md5/ab/cdef...)."""
    return {f"{f.parent.name}{f.name}" for f in (store / "files/md5").rglob("*") if f.is_file()}


def uncached_outputs(ws: Path) -> set[str]:
    """Outputs dvc.yaml marks `cache: false` (metrics, reports)."""
    return {next(iter(out)) for stage in yaml.safe_load((ws / "dvc.yaml").read_text())["stages"].values()
            for out in stage.get("outs", []) + stage.get("metrics", [])
            if isinstance(out, dict) and next(iter(out.values())).get("cache") is False}


def referenced_objects(ws: Path) -> set[str]:
    """Every hash the committed .dvc files and dvc.lock point to, with the files of directories."""
    outs = []
    for dvc_file in ws.rglob("*.dvc"):
        if dvc_file.is_file() and ".dvc" not in dvc_file.relative_to(ws).parts[:-1]:
            outs += yaml.safe_load(dvc_file.read_text())["outs"]
    uncached = uncached_outputs(ws)
    for stage in yaml.safe_load((ws / "dvc.lock").read_text())["stages"].values():
        outs += [out for out in stage.get("outs", []) if out["path"] not in uncached]
    hashes = set()
    for out in outs:
        if "md5" not in out:
            continue
        hashes.add(out["md5"])
        if out["md5"].endswith(".dir"):
            manifest = ws / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]
            hashes |= {entry["md5"] for entry in json.loads(manifest.read_text())}
    return hashes


def state_of(ws: Path) -> dict:
    """Everything a cycle may change, to compare before and after a run."""
    p = registry(ws)
    with contextlib.chdir(ws):
        c = reg.client(p)
        runs = sorted(r.info.run_id for e in c.search_experiments() for r in
                      c.search_runs([e.experiment_id], max_results=50000))
        model_versions = sorted((v.version, tuple(sorted(v.tags.items())))
                                for v in c.search_model_versions(f"name = '{p.model_name}'"))
    return {"head": wsp.git(ws, "rev-parse", "HEAD"), "git_status": wsp.git(ws, "status", "--porcelain"),
            "watermark": (ws / "data/watermark.json").read_text(), "dvc_lock": (ws / "dvc.lock").read_text(),
            "cache": objects(ws / ".dvc/cache"), "remote": objects(ws / "dvc-remote"),
            "versions": model_versions, "aliases": aliases(ws), "moves": recorded_moves(ws),
            "runs": runs}


@pytest.fixture(scope="module")
def night_one_killed_in_training(ws, cli_env) -> dict:
    """Night one, SIGKILLed in training once a complete checkpoint is saved, then run again."""
    proc = start_cycle(ws, NIGHT_ONE, cli_env)
    seen: list[str] = []
    checkpoints = ws / "models/checkpoints"
    try:
        for line in proc.stdout:
            seen.append(line)
            if list(checkpoints.glob(f"*/checkpoint-*/{train_stage.CHECKPOINT_COMPLETE}")):
                break
    finally:
        kill_group(proc)
    output = "".join(seen)
    assert "train: step" in output, f"the cycle never got to train:\n{output[-3000:]}"
    assert list(checkpoints.glob("*/checkpoint-*")), "killed before training saved a checkpoint"
    left = {
        "dvc_lock_stages": set(yaml.safe_load((ws / "dvc.lock").read_text())["stages"]),
        "snapshot": (ws / f"data/snapshots/{NIGHT_ONE}.jsonl").read_bytes(),
        "watermark": (ws / "data/watermark.json").read_text(),
        "rwlock": json.loads((ws / ".dvc/tmp/rwlock").read_text() or "{}"),
        "versions": len(versions_of(ws, NIGHT_ONE)),
    }
    rc, rerun = run_cycle(ws, NIGHT_ONE, cli_env)
    assert rc == 0, rerun[-5000:]
    return {"left": left, "rerun": rerun,
            "summary": json.loads((ws / f"reports/cycles/{NIGHT_ONE}.json").read_text())}


def test_a_cycle_killed_in_training_is_finished_by_the_next_run_with_nothing_twice(
        ws, night_one_killed_in_training):
    left, summary = night_one_killed_in_training["left"], night_one_killed_in_training["summary"]
    # The kill really came mid-training: the stages before train were recorded, train was not,
    # and nothing was registered; DVC's lock file still named the killed process.
    assert {"validate", "dataset"} <= left["dvc_lock_stages"]
    assert "train" not in left["dvc_lock_stages"] and left["versions"] == 0
    assert left["rwlock"].get("write") or left["rwlock"].get("read")
    assert "a killed run left a DVC lock" in night_one_killed_in_training["rerun"]
    assert json.loads((ws / ".dvc/tmp/rwlock").read_text() or "{}") in ({}, {"read": {}, "write": {}})

    # Pulled once: the rerun reused the snapshot (same bytes, same watermark), skipping nothing.
    assert summary["status"] == "succeeded" and summary["reused_snapshot"] is True
    assert (ws / f"data/snapshots/{NIGHT_ONE}.jsonl").read_bytes() == left["snapshot"]
    assert (ws / "data/watermark.json").read_text() == left["watermark"]
    in_source = [l for l in (ws / f"logs/{NIGHT_ONE}.jsonl").read_text().splitlines() if l.strip()]
    acc = summary["accounting"]
    assert acc["balanced"] and acc["pulled"] == len(in_source)

    # One version, one commit, DVC clean, and no object in the cache or the remote that the
    # cycle's commit does not reference (nothing half-written or stored twice).
    [version] = versions_of(ws, NIGHT_ONE)
    assert version.tags["nightshift.finalised"] == "done"
    log = wsp.git(ws, "log", "--format=%s")
    assert log.splitlines().count(f"nightshift cycle {NIGHT_ONE}") == 1
    assert "up to date" in wsp.dvc(ws, "status")
    assert wsp.git(ws, "status", "--porcelain").strip() == ""
    referenced = referenced_objects(ws)
    assert objects(ws / "dvc-remote") == referenced
    # DVC's run cache also keeps the stages' uncached outputs (metrics): today's, not the killed run's.
    run_cached = {hashlib.md5((ws / path).read_bytes()).hexdigest() for path in uncached_outputs(ws)
                  if (ws / path).is_file()}
    assert referenced <= objects(ws / ".dvc/cache") <= referenced | run_cached
    # Training resumed from the killed run's checkpoint rather than starting over, and finished.
    train = json.loads((ws / "reports/train.json").read_text())
    assert train["resumed_from_step"] > 0
    assert "train: resuming from" in night_one_killed_in_training["rerun"]
    assert not list((ws / "models/checkpoints").glob("*/checkpoint-*"))  # deleted once finished
    assert (ws / "models/candidate/adapter_model.safetensors").exists()


def test_a_cycle_killed_after_register_before_the_alias_move_is_finished_once(
        ws, cli_env, night_one_killed_in_training):
    champion_before = aliases(ws)["champion"]

    # Killed after `version`: data pushed and the cycle committed, nothing registered.
    rc, out = run_cycle(ws, NIGHT_TWO, cli_env, crash_after="version")
    assert rc == -signal.SIGKILL, out[-3000:]
    committed = wsp.git(ws, "rev-parse", "HEAD")
    assert f"nightshift cycle {NIGHT_TWO}" in wsp.git(ws, "log", "-1", "--format=%s")
    assert versions_of(ws, NIGHT_TWO) == []
    remote = objects(ws / "dvc-remote")

    # Run again, killed after `register`: one version with its lineage and verdict, no alias move.
    rc, out = run_cycle(ws, NIGHT_TWO, cli_env, crash_after="register")
    assert rc == -signal.SIGKILL, out[-3000:]
    [half] = versions_of(ws, NIGHT_TWO)
    version = str(half.version)
    assert half.tags["nightshift.finalised"] == "pending"
    assert half.tags["nightshift.git_commit"] == committed  # no second commit for the night
    assert half.tags["nightshift.gate"] in ("passed", "rejected")
    assert wsp.git(ws, "rev-parse", "HEAD") == committed
    assert objects(ws / "dvc-remote") == remote
    moves_before = recorded_moves(ws)
    # The move itself happened or not: a crash right after it is also finished below.
    passed = half.tags["nightshift.gate"] == "passed"

    # The next run applies the verdict, once, and says so.
    rc, out = run_cycle(ws, NIGHT_TWO, cli_env)
    assert rc == 0, out[-5000:]
    assert f"version {version} was registered by a run that was interrupted" in out
    [done] = versions_of(ws, NIGHT_TWO)
    assert str(done.version) == version and done.tags["nightshift.finalised"] == "done"
    moves = recorded_moves(ws)
    to_new = [m for m in moves if m.to_version == version]
    if passed:
        assert aliases(ws)["champion"] == version
        assert [(m.alias, m.from_version, m.kind) for m in to_new] == [
            ("champion", champion_before, "pipeline")]
    else:
        assert aliases(ws)["champion"] == champion_before and to_new == []
    assert len(moves) == len(moves_before) + len(to_new)
    assert wsp.git(ws, "rev-parse", "HEAD") == committed and "up to date" in wsp.dvc(ws, "status")

    # And once finished, it stays finished.
    rc, out = run_cycle(ws, NIGHT_TWO, cli_env)
    assert rc == 0 and "already done" in out, out[-3000:]
    assert recorded_moves(ws) == moves


def test_the_same_date_run_twice_changes_nothing_the_second_time(ws, cli_env, night_one_killed_in_training):
    before = state_of(ws)
    rc, out = run_cycle(ws, NIGHT_ONE, cli_env)
    assert rc == 0, out[-3000:]
    assert f"cycle {NIGHT_ONE}: already done" in out and "nothing changed" in out
    after = state_of(ws)
    for key in before:
        assert after[key] == before[key], key


def test_a_night_killed_after_version_and_never_rerun_is_registered_by_the_next_night(
        ws, cli_env, night_one_killed_in_training):
    rc, out = run_cycle(ws, NIGHT_THREE, cli_env, crash_after="version")
    assert rc == -signal.SIGKILL, out[-3000:]
    committed = wsp.git(ws, "rev-parse", "HEAD")
    candidate = (ws / "models/candidate/adapter_model.safetensors").read_bytes()
    assert versions_of(ws, NIGHT_THREE) == []

    # The schedule moves on to the next night; night three is not run again.
    rc, out = run_cycle(ws, NIGHT_FOUR, cli_env)
    assert rc == 0, out[-5000:]
    assert f"cycle {NIGHT_THREE} was versioned (commit made, data pushed) but never registered" in out
    [three] = versions_of(ws, NIGHT_THREE)
    assert three.tags["nightshift.git_commit"] == committed  # the lineage its commit recorded
    assert three.tags["nightshift.finalised"] == "done"
    with contextlib.chdir(ws):
        registered = reg.download_adapter(registry(ws), three.source, ws.parent / "night-three-adapter")
    assert (registered / "adapter_model.safetensors").read_bytes() == candidate
    summary = json.loads((ws / f"reports/cycles/{NIGHT_FOUR}.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["finished_earlier_night"]["version"] == str(three.version)
    [four] = versions_of(ws, NIGHT_FOUR)
    assert int(four.version) == int(three.version) + 1
    if three.tags["nightshift.gate"] == "passed":  # then night four learned on top of it
        assert four.tags["nightshift.parent_version"] == str(three.version)
    log = wsp.git(ws, "log", "--format=%s").splitlines()
    assert log.count(f"nightshift cycle {NIGHT_THREE}") == 1 and log[0] == f"nightshift cycle {NIGHT_FOUR}"
