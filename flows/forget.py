"""`nightshift forget`: erase a person from a workspace, and say what can no longer be rebuilt.

A person is found by the salted hashes ingest keeps with every record (pipelines/privacy/subjects.py):
of its `metadata.user_id` and of each value redaction replaced. Forgetting them

1. finds every record that has one of their hashes in every JSONL file DVC tracks in the
   workspace (the outs of the .dvc files and of dvc.lock's stages: snapshots, validated clean and
   quarantine, the dataset and its grown buffer, the replay buffer, golden and anchor sets) and in
   every version of those files that any git commit recorded (files inside directory outs
   included, through their `.dir` manifests), reading each object from the cache or the remote;
2. rewrites the workspace's files without those records and records them again with DVC
   (`dvc add` for .dvc files, `dvc commit -f` for the stages whose outs or deps changed), then
   pushes;
3. tags the registered versions that trained on erased data (a version's `git_commit` tag ->
   that commit's dvc.lock -> the train stage's data; a version continuing from a tagged one
   learned it too);
4. appends a tombstone to data/forgotten.jsonl (the hashes, the date, the redacted reason, the
   counts and the md5s of the objects it deletes: never a value), so ingest drops a record of
   theirs pulled again;
5. deletes the objects that held their records from the DVC cache and the remote (through DVC's
   own object databases, so an S3 remote works as a local one), keeping the `.dir` manifests,
   which list hashes only;
6. removes the exchanges `nightshift serve-model` logged about them from the source (and the
   feedback on them): the server wrote those, so nightshift erases them; lines other loggers
   wrote into the source are the team's to erase;
7. deletes the stages' embedding cache (`.cache/embeddings`: vectors of the night's and the
   golden set's user turns, by text hash), which would otherwise keep vectors of their messages;
   the stages re-embed what they need;
8. with `retrieval.vector_store` set, syncs its pgvector table to the erased retrieval index and
   rewrites the table (`VACUUM FULL`), so their rows leave it too;
9. commits the change with its (redacted) reason.

A past cycle whose objects were deleted cannot be rebuilt: `check_reproducible` says which of its
files were erased, when and why.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from flows import cycle_lock
from flows import workspace as wsp
from pipelines.common import embedding, vector_store
from pipelines.common import params as params_mod
from pipelines.common.paths import RETRIEVAL_INDEX
from pipelines.privacy import subjects

DIR_SUFFIX = ".dir"
RECORD_SUFFIX = ".jsonl"  # the files that hold records; models and reports hold none
UNRECORDED = "(an object no commit records)"


class ForgetError(RuntimeError):
    """The erasure cannot go ahead; the message says what to do."""


@dataclass(frozen=True)
class Entry:
    """One path a .dvc file or a dvc.lock stage records, with its md5 (`.dir` for a folder)."""

    path: str      # relative to the workspace, POSIX
    md5: str
    owner: str     # the .dvc file, or "dvc.lock:<stage>"
    role: str      # "out" or "dep"


# --- What a commit (or the working tree) records ---------------------------------------------

def _entries_of(name: str, text: str) -> list[Entry]:
    """The paths and md5s in one .dvc file or dvc.lock, read from its text."""
    data = yaml.safe_load(text) or {}
    base = PurePosixPath(name).parent

    def entry(item: dict, owner: str, role: str) -> Entry | None:
        md5 = item.get("md5")
        if not md5 or not item.get("path"):
            return None
        return Entry(os.path.normpath(str(base / item["path"])).replace(os.sep, "/"), md5, owner, role)

    found = []
    if PurePosixPath(name).name == "dvc.lock":
        for stage, lock in (data.get("stages") or {}).items():
            owner = f"{name}:{stage}"
            found += [entry(i, owner, "dep") for i in lock.get("deps") or []]
            found += [entry(i, owner, "out") for i in lock.get("outs") or []]
    else:
        found += [entry(i, name, "out") for i in data.get("outs") or []]
    return [e for e in found if e is not None]


def _is_dvc_file(name: str) -> bool:
    return name.endswith(".dvc") or PurePosixPath(name).name == "dvc.lock"


def commit_entries(ws: Path, commit: str | None, blobs: dict | None = None) -> list[Entry]:
    """Every entry of the .dvc files and dvc.lock files of `commit` (None: the working tree).
    `blobs` (blob id -> entries) carries what was read across calls: a .dvc file that many
    commits share is read once."""
    if commit is None:
        names = wsp.git(ws, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
        return [e for name in names if _is_dvc_file(name) and (ws / name).exists()
                for e in _entries_of(name, (ws / name).read_text())]
    blobs = {} if blobs is None else blobs
    entries = []
    for line in wsp.git(ws, "ls-tree", "-r", commit).splitlines():
        meta, name = line.split("\t", 1)
        _, kind, blob = meta.split()
        if kind == "blob" and _is_dvc_file(name):
            if (blob, name) not in blobs:
                blobs[blob, name] = _entries_of(name, wsp.git(ws, "cat-file", "-p", blob))
            entries += blobs[blob, name]
    return entries


class Store:
    """The workspace's DVC cache and remote, through DVC's object databases (any remote type)."""

    def __init__(self, ws: Path, remote: str):
        from dvc.repo import Repo

        self.repo = Repo(str(ws))
        self.cache = self.repo.cache.local
        self.remote_name = remote
        self._remote = None
        self._manifests: dict[str, list[dict]] = {}

    @property
    def remote(self):
        if self._remote is None:
            self._remote = self.repo.cloud.get_remote_odb(self.remote_name, "forget")
        return self._remote

    def close(self) -> None:
        self.repo.close()

    def read(self, md5: str) -> bytes | None:
        """An object's bytes from the cache, else the remote; None when neither holds it."""
        for odb in (self.cache, self.remote):
            path = odb.oid_to_path(md5)
            if odb.fs.exists(path):
                with odb.fs.open(path, "rb") as f:
                    return f.read()
        return None

    def files(self, entry: Entry) -> dict[str, str]:
        """path -> md5 of the files an entry stands for: itself, or the files its `.dir` lists."""
        if not entry.md5.endswith(DIR_SUFFIX):
            return {entry.path: entry.md5}
        if entry.md5 not in self._manifests:
            content = self.read(entry.md5)
            self._manifests[entry.md5] = json.loads(content) if content else []
        return {f"{entry.path}/{item['relpath']}": item["md5"] for item in self._manifests[entry.md5]}

    def objects(self, entries: Iterable[Entry]) -> dict[str, set[str]]:
        """md5 -> the paths it was recorded under, for every file the entries stand for."""
        found: dict[str, set[str]] = {}
        for entry in entries:
            for path, md5 in self.files(entry).items():
                found.setdefault(md5, set()).add(path)
        return found

    def unrecorded_json(self, known: set[str]):
        """(md5, bytes) of each object in the cache or the remote, not in `known` and not a
        `.dir` manifest, whose content starts like JSON (models and other binaries do not)."""
        seen = set(known)
        for odb in (self.cache, self.remote):
            for md5 in odb.all():
                if md5 in seen or md5.endswith(DIR_SUFFIX):
                    continue
                seen.add(md5)
                with odb.fs.open(odb.oid_to_path(md5), "rb") as f:
                    if f.read(1) != b"{":
                        continue
                    yield md5, b"{" + f.read()

    def delete(self, md5s: Iterable[str]) -> dict[str, list[str]]:
        """Delete objects from the cache and the remote; returns which each held."""
        from dvc_data.hashfile.db import get_index

        deleted = {"cache": [], "remote": []}
        for where, odb in (("cache", self.cache), ("remote", self.remote)):
            paths = []
            for md5 in sorted(md5s):
                path = odb.oid_to_path(md5)
                if odb.fs.exists(path):
                    paths.append(path)
                    deleted[where].append(md5)
            if paths:
                odb.fs.remove(paths)
        if deleted["remote"]:
            get_index(self.remote).clear()  # DVC's memo of what the remote holds
        return deleted


# --- Records --------------------------------------------------------------------------------

def holds(content: bytes, hashes: set[str]) -> bool:
    """Whether a JSONL file's bytes hold a record about one of `hashes`."""
    if not any(h.encode() in content for h in hashes):  # fast: most objects are about others
        return False
    return any(matches(line, hashes) for line in content.splitlines())


def matches(line: bytes | str, hashes: set[str]) -> bool:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and bool(subjects.subjects_of(record) & hashes)


def remove_records(path: Path, hashes: set[str]) -> int:
    """Rewrite a JSONL file without the records about `hashes` (a new file replaces it, so a
    cache linked to the old one is never written through); returns how many were removed."""
    content = path.read_bytes()
    if not holds(content, hashes):
        return 0
    lines = content.splitlines(keepends=True)
    kept = [line for line in lines if not matches(line, hashes)]
    tmp = path.with_name(path.name + ".forget")
    tmp.write_bytes(b"".join(kept))
    os.chmod(tmp, 0o644)
    tmp.replace(path)
    return len(lines) - len(kept)


def workspace_record_files(ws: Path, entries: list[Entry]) -> dict[str, Entry]:
    """The JSONL files in the working tree that DVC tracks (as outs), with the entry of each."""
    found = {}
    for entry in entries:
        if entry.role != "out":
            continue
        root = ws / entry.path
        if root.is_dir():
            for file in sorted(root.rglob("*" + RECORD_SUFFIX)):
                found[file.relative_to(ws).as_posix()] = entry
        elif root.suffix == RECORD_SUFFIX and root.exists():
            found[entry.path] = entry
    return found


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def stages_to_commit(entries: list[Entry], changed: set[str]) -> list[str]:
    """The dvc.lock stages whose outs or deps overlap the changed paths, and the stages that
    depend on their outs in turn."""
    by_stage: dict[str, list[Entry]] = {}
    for e in entries:
        if ":" in e.owner:
            by_stage.setdefault(e.owner.split(":", 1)[1], []).append(e)
    changed, chosen = set(changed), []
    grew = True
    while grew:
        grew = False
        for stage, items in by_stage.items():
            if stage not in chosen and any(_overlaps(e.path, c) for e in items for c in changed):
                chosen.append(stage)
                changed |= {e.path for e in items if e.role == "out"}
                grew = True
    return chosen


# --- Forget ---------------------------------------------------------------------------------

def cycle_commits(ws: Path) -> list[str]:
    """Every commit reachable from any ref, newest first."""
    return wsp.git(ws, "rev-list", "--all").split()


def erased_objects(store: Store, ws: Path, hashes: set[str], log=None) -> dict[str, set[str]]:
    """md5 -> paths of every JSONL object, in the working tree's records and any commit's,
    that holds a record about `hashes`."""
    candidates: dict[str, set[str]] = {}
    blobs: dict = {}
    for commit in [None, *cycle_commits(ws)]:
        for md5, paths in store.objects(commit_entries(ws, commit, blobs)).items():
            if any(p.endswith(RECORD_SUFFIX) for p in paths):
                candidates.setdefault(md5, set()).update(paths)
    if log:
        log(f"checking {len(candidates)} versioned JSONL object(s) across the workspace's history, "
            "and the objects no commit records (a run stopped before its commit leaves some)")
    erased = {}
    for md5, paths in candidates.items():
        content = store.read(md5)
        if content is not None and holds(content, hashes):
            erased[md5] = paths
    for md5, content in store.unrecorded_json(set(candidates)):
        if holds(content, hashes):
            erased[md5] = {UNRECORDED}
    return erased


def learned_from(ws: Path, store: Store, commit: str, erased: set[str]) -> list[str]:
    """The files of `commit`'s training data (the train stage's deps in its dvc.lock, files of a
    folder included) whose objects are erased."""
    try:
        entries = commit_entries(ws, commit)
    except wsp.CommandError:
        return []  # a commit this workspace does not have
    train = [e for e in entries if e.owner.endswith(":train") and e.role == "dep"]
    return sorted(path for md5, paths in store.objects(train).items() if md5 in erased for path in paths)


def forget(ws: Path, reason: str, user_id: str | None = None, match: str | None = None,
           log: Callable[[str], None] = print, today: dt.date | None = None) -> dict:
    """Erase the records about a user id or a text (see the module docstring); returns what was
    done: records removed per file, objects deleted from cache and remote, versions tagged, the
    tombstone and the commit."""
    from registry import erasure

    if not (user_id or match):
        raise ForgetError("name who to forget: --user-id ID or --match TEXT")
    p = wsp.load_params(ws)
    hashes = subjects.match_subjects(subjects.load_salt(ws / subjects.SALT_FILE), user_id=user_id,
                                     text=match)
    if not hashes:
        raise ForgetError("nothing to match: the user id or text is empty")
    if p.retrieval.vector_store:  # reachable before anything is erased, not half way through
        try:
            vector_store.mirrored_digest(p.retrieval.vector_store)
        except vector_store.VectorStoreError as e:
            raise ForgetError(f"the retrieval index's vector store must be erased from too: {e}") from e
    today = today or dt.datetime.now(dt.timezone.utc).date()
    with cycle_lock.hold(ws, "forget"):
        from pipelines.privacy.redact import redact_reason

        redacted = redact_reason(p.redact, reason)
        note = f"{today.isoformat()}: {redacted}"
        wsp.configure_remote(ws, p.version)  # as the cycle's push does: params.yaml names the remote
        store = Store(ws, p.version.remote)
        try:
            erased = erased_objects(store, ws, hashes, log)

            entries = commit_entries(ws, None)
            # A stage already out of date (a skipped night leaves the model stages recording an
            # earlier dataset) is not committed: that would record outs it never produced.
            status = wsp.dvc(ws, "status", "--json").strip().splitlines() or ["{}"]
            stale = {k for k in json.loads(status[-1]) if not k.endswith(".dvc")}  # last: after any warning
            removed = {}
            for path, entry in workspace_record_files(ws, entries).items():
                n = remove_records(ws / path, hashes)
                if n:
                    removed[path] = (n, entry)
            dvc_files = sorted({e.owner for _, e in removed.values() if ":" not in e.owner})
            stages = [s for s in stages_to_commit(entries, set(removed)) if s not in stale]
            if dvc_files:
                outs = [e.path for e in entries if e.owner in dvc_files]
                wsp.dvc(ws, "add", "-q", *outs)
            if stages:
                wsp.dvc(ws, "commit", "-f", "-q", *stages)
            if removed:
                wsp.dvc(ws, "push", "-q", "-r", p.version.remote)

            tagged = erasure.tag_erased_versions(
                p.registry, lambda commit: learned_from(ws, store, commit, set(erased)), note)

            tombstone = {"subjects": sorted(hashes), "date": today.isoformat(),
                         "reason": redacted,
                         "records_removed": sum(n for n, _ in removed.values()),
                         "objects_deleted": sorted(erased),
                         "versions_tagged": [t["version"] for t in tagged]}
            # Written before the objects go: a run stopped in between leaves them accounted for.
            tomb_file = ws / subjects.TOMBSTONES_FILE
            tomb_file.parent.mkdir(parents=True, exist_ok=True)
            with open(tomb_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(tombstone) + "\n")
            deleted = store.delete(erased)
        finally:
            store.close()
        from flows.serving import exchange_log

        served_removed = exchange_log.forget_in_log(ws, p.ingest, user_id, match)
        index_file = ws / RETRIEVAL_INDEX
        vector_store_synced = (vector_store.sync(p.retrieval.vector_store, index_file, vacuum=True)
                               if p.retrieval.vector_store and index_file.exists() else None)
        embedding_cache = ws / embedding.CACHE_DIR
        cache_cleared = embedding_cache.exists()
        shutil.rmtree(embedding_cache, ignore_errors=True)

        paths = [subjects.TOMBSTONES_FILE.as_posix(), ".dvc/config", *dvc_files]
        if stages:
            paths.append("dvc.lock")
        wsp.git(ws, "add", "--", *paths)
        wsp.git(ws, "commit", "-q", "-m", f"forget a person ({len(hashes)} subject hashes): {note}",
                "--", *paths)
        commit = wsp.git(ws, "rev-parse", "HEAD").strip()
    return {"removed": {path: n for path, (n, _) in sorted(removed.items())},
            "records_removed": tombstone["records_removed"], "objects": erased, "deleted": deleted,
            "dvc_files": dvc_files, "stages": stages, "tagged": tagged, "tombstone": tombstone,
            "served_removed": served_removed, "embedding_cache_cleared": cache_cleared,
            "vector_store": vector_store_synced, "commit": commit}


# --- Reproducing a past cycle -----------------------------------------------------------------

def erasures(ws: Path) -> list[dict]:
    """The tombstones of data/forgotten.jsonl, oldest first."""
    path = ws / subjects.TOMBSTONES_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_reproducible(ws: Path, commit: str) -> list[dict]:
    """The files `commit` recorded (outs and deps of its .dvc files and dvc.lock, files of a
    folder included) whose objects an erasure deleted, each {"path", "md5", "date", "reason"};
    empty when the commit can be rebuilt as recorded."""
    deleted = {md5: t for t in erasures(ws) for md5 in t.get("objects_deleted", [])}
    if not deleted:
        return []
    p = params_mod.load(ws / "params.yaml")
    store = Store(ws, p.version.remote)
    try:
        objects = store.objects(commit_entries(ws, commit))
    finally:
        store.close()
    return [{"path": path, "md5": md5, "date": deleted[md5]["date"], "reason": deleted[md5]["reason"]}
            for md5, paths in sorted(objects.items()) if md5 in deleted for path in sorted(paths)]


def cycle_commit(ws: Path, cycle: str) -> str | None:
    """The commit that versioned a cycle (the newest, if it was run more than once)."""
    found = wsp.git(ws, "log", "--all", "--format=%H", "--fixed-strings",
                    f"--grep=nightshift cycle {cycle}").split()
    for commit in found:
        if wsp.git(ws, "log", "-1", "--format=%s", commit).strip() == f"nightshift cycle {cycle}":
            return commit
    return None
