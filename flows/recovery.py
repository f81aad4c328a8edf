"""Finishing what a killed cycle left, before a new one starts.

A cycle killed at any point (SIGKILL, the machine going down) is finished by the next run:
ingest commits its snapshot and watermark together, so the same date re-run reuses the snapshot;
DVC re-runs only the stages whose outputs were not recorded; the version step makes no second
commit. What is left to do here: DVC's and git's stale locks, versions registered but killed
before their alias move (marked `pending` in the registry: their verdict is applied now,
recorded once), and a night versioned but never registered (registered now, before this night's
stages replace its candidate).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml
from prefect import get_run_logger

from flows import tasks
from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.common import paths
from pipelines.common.records import read_json
from registry import history
from registry import mlflow_registry as reg


def recover_interrupted(ws: Path, p: params_mod.Params) -> dict:
    """Clean up after a run of any date that was killed: DVC's stale locks, git's index lock, and
    versions registered whose alias move never happened."""
    log = get_run_logger()
    stale = wsp.clear_stale_dvc_locks(ws)
    for entry in stale:
        log.warning("a killed run left a DVC lock: %s; removed it (its process is gone)", entry)
    git_lock = wsp.clear_stale_git_lock(ws)
    if git_lock:
        log.warning("a killed run left git's %s and no git process is running here; removed it",
                    git_lock)
    finished = history.finish_pending(
        p.registry,
        by=f"nightly flow run {tasks.flow_run_id()}, finishing an interrupted run")
    for f in finished:
        log.warning("version %s (cycle %s) was registered by a run killed before its alias move; "
                    "verdict applied now: %s", f["version"], f["cycle"], f["reason"])
    return {"stale_locks": stale + ([git_lock] if git_lock else []), "finished_versions": finished}


def unregistered_night(ws: Path, day: dt.date, p: params_mod.Params) -> str | None:
    """The last night of this workspace, when it is not `day` and was versioned but never
    registered: its cycle was killed between `version` and `register` (or register failed) and
    the schedule moved on. Its trained candidate and reports are still what the workspace holds,
    as the version commit recorded them, so they can be registered now, before this night's
    stages replace them. None when there is nothing to finish.
    """
    cycle_file = ws / paths.CYCLE_FILE
    last = str(yaml.safe_load(cycle_file.read_text())["cycle"]["date"]) if cycle_file.exists() else "none"
    if last in ("none", day.isoformat()) or not (ws / ".git").exists():
        return None
    if read_json(ws / paths.CYCLES / f"{last}.json").get("status") in ("succeeded", "skipped"):
        return None
    if wsp.git(ws, "log", "-1", "--format=%s").strip() != f"nightshift cycle {last}":
        return None  # not versioned (it failed earlier), or the workspace moved on since
    if wsp.git(ws, "status", "--porcelain").strip():
        return None
    if reg.find_version_for_cycle(p.registry, last):
        return None
    # The model stages ran and are recorded for exactly these files (a skipped night's are not).
    if json.loads(wsp.dvc(ws, "status", "--json", "--with-deps", "gate") or "{}"):
        return None
    return last


def finish_unregistered_night(ws: Path, day: dt.date, p: params_mod.Params) -> dict | None:
    """Register (and apply the verdict of) the last night, if unregistered_night says it was
    left versioned but unregistered; its lineage is the one its commit recorded."""
    last = unregistered_night(ws, day, p)
    if last is None:
        return None
    get_run_logger().warning(
        "cycle %s was versioned (commit made, data pushed) but never registered: the run was "
        "killed or register failed; registering it now, before cycle %s", last, day)
    versioned = {"git_commit": wsp.git(ws, "rev-parse", "HEAD").strip(),
                 "data_version": tasks.data_version(ws, last)}
    parent = read_json(ws / paths.PARENT_DIR / "PARENT.json").get("version")
    registered = tasks.register(ws, dt.date.fromisoformat(last), p, parent, versioned)
    return {"cycle": last, **tasks.apply_verdict(ws, p, registered)}
