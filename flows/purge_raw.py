"""`nightshift purge-raw`: remove the raw snapshots that workspaces made by an earlier nightshift
kept.

Earlier versions wrote each night's records as pulled to data/raw/<date>.jsonl and `dvc add`ed
them, so every raw value of every night sat in the DVC cache and on the remote. Ingest now
redacts as it pulls (data/snapshots/); this removes what the old layout left:

- every object any commit recorded under data/raw/ (its .dvc files, and the old redact stage's
  deps in dvc.lock), from the DVC cache and from the remote, through DVC's own object databases
  (flows/forget.py `Store`), so an S3 remote is purged like a local folder;
- the files under data/raw/ and their .dvc files, in a commit that says what was removed.

The redacted data derived from those snapshots (data/redacted/, data/validated/, ...) stays.
The git history keeps the old .dvc files: md5s and sizes, no values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from flows import cycle_lock
from flows import forget as forget_mod
from flows import workspace as wsp

RAW_DIR = "data/raw"


def raw_objects(ws: Path, store: forget_mod.Store) -> dict[str, set[str]]:
    """md5 -> the data/raw/ paths it was recorded under, in any commit or the working tree."""
    blobs: dict = {}
    entries = forget_mod.commit_entries(ws, None)
    for commit in wsp.git(ws, "rev-list", "--all").split():
        entries += forget_mod.commit_entries(ws, commit, blobs)
    raw = [e for e in set(entries) if e.path == RAW_DIR or e.path.startswith(RAW_DIR + "/")]
    return store.objects(raw)


def remote_name(ws: Path) -> str | None:
    """The remote the cycles pushed to: params.yaml's `version.remote`, read without the checks
    of today's params (an old workspace's params.yaml may lack newer keys), else DVC's default."""
    params = yaml.safe_load((ws / "params.yaml").read_text()) or {}
    name = (params.get("version") or {}).get("remote")
    return name or wsp.dvc(ws, "remote", "default").strip() or None


def purge_raw(ws: Path, log=print) -> dict:
    """Remove the raw snapshots from the workspace, the DVC cache and the remote; commit."""
    with cycle_lock.hold(ws, "purge-raw"):
        store = forget_mod.Store(ws, remote_name(ws))
        try:
            objects = raw_objects(ws, store)
            deleted = store.delete(objects)
        finally:
            store.close()
        files = sorted(str(p.relative_to(ws)) for p in (ws / RAW_DIR).rglob("*") if p.is_file())
        if (ws / RAW_DIR).exists():
            shutil.rmtree(ws / RAW_DIR)
        gone = sorted(set(deleted["cache"]) | set(deleted["remote"]))
        commit = None
        if wsp.git(ws, "status", "--porcelain", "--", RAW_DIR).strip():
            wsp.git(ws, "add", "-A", "--", RAW_DIR)
            wsp.git(ws, "commit", "-q", "-m", f"purge-raw: remove {len(files)} raw snapshot "
                    f"file(s) and {len(gone)} DVC object(s) of unredacted records")
            commit = wsp.git(ws, "rev-parse", "HEAD").strip()
    for md5 in gone:
        where = [w for w in ("cache", "remote") if md5 in deleted[w]]
        log(f"  {md5}  {', '.join(sorted(objects[md5]))}: deleted from the {' and the '.join(where)}")
    return {"files": files, "objects": gone, "deleted_from_cache": deleted["cache"],
            "deleted_from_remote": deleted["remote"], "commit": commit}
