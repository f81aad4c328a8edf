"""One cycle at a time per workspace: a real second process holding the lock makes `nightshift
run` refuse at once, naming the running cycle; killing the holder (SIGKILL) frees the lock."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import cycle_lock
from flows import workspace as wsp
from tests.conftest import ROOT, write_tiny_params

NIGHTSHIFT = str(Path(sys.executable).parent / "nightshift")

HOLD = """
import sys, time
from pathlib import Path
from flows import cycle_lock
with cycle_lock.hold(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = wsp.init(tmp_path_factory.mktemp("lock") / "ws")
    write_tiny_params(ws / "params.yaml")
    return ws


@pytest.fixture
def holder(workspace):
    """Another process holding the workspace's cycle lock for cycle 2026-01-05."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workspace), "2026-01-05"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_nightshift_run_is_refused_at_once_naming_the_running_cycle(workspace, holder):
    started = time.time()
    done = subprocess.run([NIGHTSHIFT, "run", "--workspace", str(workspace),
                           "--date", "2026-01-06"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "another nightshift cycle is running" in done.stderr
    assert f"cycle 2026-01-05 (pid {holder.pid} on " in done.stderr and "started 20" in done.stderr
    assert "Prefect" not in done.stdout  # refused before any flow started
    assert not (workspace / "data/snapshots/2026-01-06.jsonl").exists()
    # What the refusal read is what the holder wrote into the lock file.
    written = json.loads(cycle_lock.lock_path(workspace).read_text())
    assert written["pid"] == holder.pid and written["cycle"] == "2026-01-05"
    assert time.time() - started < 60  # at once: no waiting for the other cycle (CLI start-up only)


def test_a_killed_cycle_leaves_no_stale_lock(workspace, holder):
    with pytest.raises(cycle_lock.CycleRunning, match=f"pid {holder.pid}"):
        with cycle_lock.hold(workspace, "2026-01-06"):
            pass
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    with cycle_lock.hold(workspace, "2026-01-06") as me:
        assert me["pid"] == os.getpid()
        # Re-entrant in the holding process: the flow inside `nightshift run` passes through.
        with cycle_lock.hold(workspace, "2026-01-06") as inner:
            assert inner is me
    assert cycle_lock.lock_path(workspace).read_text() == ""  # released and emptied


def test_the_lock_file_is_ignored_by_git(workspace):
    with cycle_lock.hold(workspace, "2026-01-07"):
        wsp.git(workspace, "check-ignore", "-q", str(cycle_lock.LOCK_FILE))  # raises if not ignored
        assert "nightshift-cycle.lock" not in wsp.git(workspace, "status", "--porcelain", "-uall")
