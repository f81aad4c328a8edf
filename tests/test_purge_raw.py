import pytest
"""`nightshift purge-raw` on a workspace laid out as earlier versions left it: raw snapshots in
data/raw/, `dvc add`ed, committed night after night and pushed to the DVC remote."""

import json
import subprocess
import sys
from pathlib import Path

from flows import workspace as wsp
from tests.conftest import ROOT

RAW_VALUES = [b"ana.silva@example.com", b"4111 1111 1111 1111", b"+44 20 7946 0958",
              b"AKIAQWERTYUIOPASDFGH"]


def old_workspace(root: Path) -> Path:
    """Two nights of raw snapshots as an earlier ingest wrote them, versioned and pushed, and the
    first night's file changed once (so an object only the history knows is purged too)."""
    ws = wsp.init(root / "ws")
    raw = ws / "data/raw"
    raw.mkdir(parents=True)
    nights = {
        "2026-01-05": [{"id": "a", "messages": [{"role": "user", "content": "I'm ana.silva@example.com"}]}],
        "2026-01-06": [{"id": "b", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]},
                       {"id": "c", "messages": [{"role": "user", "content": "call +44 20 7946 0958"}]}],
    }
    for night, records in nights.items():
        (raw / f"{night}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        wsp.dvc(ws, "add", "-q", f"data/raw/{night}.jsonl")
        wsp.git(ws, "add", "-A")
        wsp.git(ws, "commit", "-q", "-m", f"nightshift cycle {night}")
    with open(raw / "2026-01-05.jsonl", "a") as f:
        f.write(json.dumps({"id": "d", "messages": [{"role": "user", "content": "key AKIAQWERTYUIOPASDFGH"}]}) + "\n")
    wsp.dvc(ws, "add", "-q", "data/raw/2026-01-05.jsonl")
    wsp.git(ws, "add", "-A")
    wsp.git(ws, "commit", "-q", "-m", "nightshift cycle 2026-01-05 again")
    wsp.dvc(ws, "push", "-q")
    return ws


def files_holding(ws: Path, value: bytes) -> list[str]:
    return [str(f.relative_to(ws)) for f in ws.rglob("*")
            if f.is_file() and ".git" not in f.relative_to(ws).parts and value in f.read_bytes()]


@pytest.mark.slow
def test_purge_raw_removes_every_raw_snapshot_from_the_workspace_cache_and_remote(tmp_path):
    ws = old_workspace(tmp_path)
    assert all(files_holding(ws, v) for v in RAW_VALUES)
    before = {store: {p.name for p in (ws / path).rglob("*") if p.is_file()}
              for store, path in (("remote", "dvc-remote"), ("cache", ".dvc/cache"))}

    done = subprocess.run([sys.executable, "-m", "flows.cli", "purge-raw", "--workspace", str(ws)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    for value in RAW_VALUES:
        assert files_holding(ws, value) == [], value
    assert not (ws / "data/raw").exists()
    # Three raw objects in the cache (night 1 twice, night 2 once), the two pushed ones on the
    # remote; the golden and anchor sets' objects stay.
    after = {store: {p.name for p in (ws / path).rglob("*") if p.is_file()}
             for store, path in (("remote", "dvc-remote"), ("cache", ".dvc/cache"))}
    assert len(before["cache"] - after["cache"]) == 3 and len(before["remote"] - after["remote"]) == 2
    assert after["remote"] and after["cache"]
    assert "3 DVC object(s) of unredacted records (3 from the cache, 2 from the remote)" in done.stdout
    assert "deleted from the cache and the remote" in done.stdout
    assert "purge-raw: remove" in wsp.git(ws, "log", "-1", "--format=%s")
    assert wsp.git(ws, "status", "--porcelain").strip() == ""

    again = subprocess.run([sys.executable, "-m", "flows.cli", "purge-raw", "--workspace", str(ws)],
                           capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "nothing to purge" in again.stdout
