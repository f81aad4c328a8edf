"""One cycle at a time per workspace: an exclusive flock on a lock file inside the workspace.

The kernel releases a flock when its process ends, however it ends (SIGKILL, the OOM killer, a
crash), so a dead cycle never leaves a stale lock behind. The holder writes who it is (pid,
host, cycle, start time) into the file, so a refused start can say what is running.
The file lives in `.dvc/tmp/`, which DVC keeps out of git in every workspace (its own locks live
there too).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_FILE = Path(".dvc/tmp/nightshift-cycle.lock")


class CycleRunning(RuntimeError):
    """Another cycle holds the workspace's lock."""


def lock_path(ws: Path) -> Path:
    return ws / LOCK_FILE


def _describe(holder: dict) -> str:
    if not holder:
        return "a cycle that is just starting"
    return (f"cycle {holder.get('cycle')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"started {holder.get('started')})")


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace")
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}


def _refusal(ws: Path, holder: dict) -> CycleRunning:
    return CycleRunning(
        f"another nightshift cycle is running in {ws}: {_describe(holder)}. Only one cycle runs "
        "at a time; wait for it to finish (its progress is in its log and the Prefect UI), then "
        "start again. The lock goes away by itself when that process ends, even if it is killed.")


_held: dict[Path, dict] = {}  # the locks this process holds, so an inner `hold` re-enters


@contextlib.contextmanager
def hold(ws: Path, cycle: str):
    """Hold the workspace's cycle lock for the `with` block; raise CycleRunning at once if
    another process holds it. Re-entrant within one process: `nightshift run` takes it before
    the flow starts (so a refusal is immediate), and the flow's own `hold` then passes through."""
    path = lock_path(ws).resolve()
    if path in _held:
        yield _held[path]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(ws, _read_holder(fd)) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "cycle": cycle,
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _held[path] = holder
        try:
            yield holder
        finally:
            del _held[path]
            os.ftruncate(fd, 0)  # nobody holds it now; the empty file stays for the next cycle
    finally:
        os.close(fd)  # closing the last descriptor releases the flock

