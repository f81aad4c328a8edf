"""A nightshift workspace: a git + DVC repository holding params.yaml, dvc.yaml, the stages' code,
data/, models/, reports/, the MLflow store and a DVC remote. This repository is one; `nightshift
init DIR` makes another (the demo runs in one, so it never commits into the code's own history).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pipelines

PROJECT_ROOT = Path(pipelines.__file__).resolve().parent.parent
# What a new workspace gets from the project: the stages' code and the validate stage's GX
# suites (which dvc.yaml tracks as deps), the DAG, the parameters, the bundled pre-training text
# and the frozen evaluation sets.
SCAFFOLD = ["pipelines", "validation", "dvc.yaml", "params.yaml", "data/corpus", "data/cycle.yaml",
            ".dvcignore", "data/golden/golden.jsonl", "data/anchor/anchor.jsonl",
            "data/anchor/anchor_train.jsonl"]
# Versioned with DVC in a workspace: each cycle's commit records exactly which sets it was judged on.
EVAL_SETS = ["data/golden/golden.jsonl", "data/anchor/anchor.jsonl"]
# The fixed anchor training set mixed into every cycle (replay.anchor_ratio), versioned the same way.
ANCHOR_TRAIN = "data/anchor/anchor_train.jsonl"
WORKSPACE_GITIGNORE = """\
# Local stores of this workspace (at scale these are servers: see README)
/mlflow.db
/mlartifacts/
/dvc-remote/
/logs/
/reports/summary.json
/reports/cycles/
/reports/model_drift.*
/.cache/
# The salt of the subject hashes that `nightshift forget` matches by: a secret, never versioned
/.nightshift/
# Checkpoints of a training run that has not finished (deleted when it does; never versioned)
/models/checkpoints/
# `nightshift rebase`'s adapters, training mix and report (the version it registers keeps them)
/models/rebase/
/reports/rebase.json
/reports/rebase.html
__pycache__/
"""


class CommandError(RuntimeError):
    """A dvc or git command failed; the message holds the end of its output."""


def subprocess_env() -> dict:
    """The environment for stage commands: this interpreter's `python` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_command(args: list[str], cwd: Path, log=None) -> str:
    """Run a command in the workspace; stream its lines to `log`; raise CommandError on failure."""
    proc = subprocess.Popen(args, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    lines = []
    for line in proc.stdout:
        line = line.rstrip()
        lines.append(line)
        if log and line.strip():
            log(line)
    if proc.wait() != 0:
        tail = "\n".join(lines[-25:])
        raise CommandError(f"`{' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return "\n".join(lines)


def dvc(ws: Path, *args: str, log=None) -> str:
    return run_command([sys.executable, "-m", "dvc", *args], ws, log)


def git(ws: Path, *args: str, log=None) -> str:
    return run_command(["git", *args], ws, log)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clear_stale_dvc_locks(ws: Path) -> list[str]:
    """Drop the entries of DVC's .dvc/tmp/rwlock whose process is gone: a killed `dvc repro`
    leaves the paths it read and wrote locked under its pid. DVC 3.x drops such an entry itself
    (with a warning) when a later command wants an overlapping path; doing it for every path at
    the start of a cycle says it once in the cycle's log and leaves none behind for paths the
    rerun does not touch. Entries of live processes stay. Returns what was removed, as
    "PATH (pid N: CMD)".
    """
    path = ws / ".dvc/tmp/rwlock"
    try:
        info = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return []
    removed: list[str] = []
    write = {}
    for out, holder in info.get("write", {}).items():
        if _alive(holder["pid"]):
            write[out] = holder
        else:
            removed.append(f"{out} (pid {holder['pid']}: {holder['cmd']})")
    read = {}
    for out, holders in info.get("read", {}).items():
        kept = [h for h in holders if _alive(h["pid"])]
        removed += [f"{out} (pid {h['pid']}: {h['cmd']})" for h in holders if h not in kept]
        if kept:
            read[out] = kept
    if removed:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"write": write, "read": read}))
        tmp.replace(path)
    return removed


def clear_stale_git_lock(ws: Path) -> str | None:
    """Remove the workspace's .git/index.lock when no git process is running in the workspace:
    a cycle killed during its `git add`/`git commit` leaves it, and every later git command (the
    next cycle's commit included) then fails with "Another git process seems to be running".
    Called while the cycle lock is held, so no other nightshift cycle is committing. Returns
    what was removed, or None.
    """
    import psutil

    lock = ws / ".git/index.lock"
    if not lock.exists():
        return None
    root = ws.resolve()
    for proc in psutil.process_iter(["name", "cwd"]):
        cwd = proc.info.get("cwd")
        if proc.info.get("name") == "git" and cwd and Path(cwd).is_relative_to(root):
            return None  # a git command (perhaps a person's) is still at work here
    lock.unlink(missing_ok=True)
    return str(lock)


def load_params(ws: Path):
    """The workspace's params.yaml, checked, with its registry store made absolute against the
    workspace (`registry.tracking_uri: sqlite:///mlflow.db`), so that what reads the registry
    gives the same answer from any working directory. Loaded once per command or flow."""
    import dataclasses

    from pipelines.common import params as params_mod
    from registry import mlflow_registry as reg

    p = params_mod.load(ws / "params.yaml")
    return dataclasses.replace(p, registry=reg.in_workspace(p.registry, ws))


def model_path(ws: Path, model: str) -> str:
    """`base_model.model` as a process outside the workspace loads it: a local folder (the tiny
    default, models/base) made absolute against the workspace; a hub id as it is."""
    local = ws / model
    return str(local.resolve()) if local.exists() else model


def is_workspace(path: Path) -> bool:
    return (path / "params.yaml").exists() and (path / "dvc.yaml").exists()


def init(path: Path, source: Path = PROJECT_ROOT) -> Path:
    """Create a workspace at `path`: the scaffold, git, DVC and a local DVC remote."""
    path = path.resolve()
    if is_workspace(path):
        raise FileExistsError(f"{path} is already a nightshift workspace")
    path.mkdir(parents=True, exist_ok=True)
    for item in SCAFFOLD:
        src, dst = source / item, path / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (path / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    git(path, "init", "-q", "-b", "main")
    # A workspace may live where no git identity is configured (CI, a service account).
    git(path, "config", "user.name", "nightshift")
    git(path, "config", "user.email", "nightshift@localhost")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.autostage", "true")
    dvc(path, "remote", "add", "-d", "local", "dvc-remote")  # the workspace's own folder
    dvc(path, "add", "-q", *EVAL_SETS, ANCHOR_TRAIN)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "nightshift workspace")
    return path


def configure_remote(ws: Path, p) -> None:
    """Point the DVC remote `p.remote` (params.yaml `version`) at `p.remote_url`, with the S3
    endpoint `p.endpoint_url` for an S3-compatible server; nothing to do when remote_url is null.
    The change lands in .dvc/config, so the cycle's commit records where its data went."""
    if not p.remote_url:
        return
    dvc(ws, "remote", "add", "--force", "--default", p.remote, p.remote_url)
    if p.endpoint_url:
        dvc(ws, "remote", "modify", p.remote, "endpointurl", p.endpoint_url)

