"""The data and the workspace: `redact`, `golden add`, `forget`, `reproduce`, `purge-raw`, `init`."""

import json
from pathlib import Path
from typing import Annotated

import typer

from flows import workspace as wsp
from flows.cli.base import (
    Workspace,
    add_group,
    app,
    command,
    group,
    option,
    require_workspace,
    workspace_params,
)
from pipelines.common import params as params_mod


@command(app, "redact", "redact a JSONL file exactly as the pipeline does")
def redact(
    input: Annotated[str, typer.Argument(metavar="IN.jsonl", help="the records to redact")],
    output: Annotated[str, typer.Argument(metavar="OUT.jsonl", help="where the redacted records go")],
    report: Annotated[str | None, option(metavar="FILE", help=(
        "write per-entity-type counts as JSON"))] = None,
    params: Annotated[str, option(metavar="FILE", help=(
        "params.yaml whose `redact` section to use (default: ./params.yaml, else the project's "
        "defaults)"))] = "params.yaml",
) -> None:
    """Replace personal data and secrets in IN.jsonl with typed placeholders; one record in, one
    record out, same order."""
    from pipelines.privacy.redact import RedactionSetupError, redact_file

    p = params_mod.load(Path(params) if Path(params).exists() else wsp.PROJECT_ROOT / "params.yaml")
    if not Path(input).exists():
        raise SystemExit(f"nightshift redact: {input} does not exist")
    try:
        counts = redact_file(p.redact, Path(input), Path(output))
    except RedactionSetupError as exc:
        raise SystemExit(f"nightshift redact: {exc}")
    if report:
        Path(report).write_text(json.dumps(counts, indent=2) + "\n")
    print(f"{counts['records']} records redacted into {output}")
    for entity, count in counts["replaced"].items():
        print(f"  {entity:<16} {count}")
    if counts["entities_not_looked_for"]:
        print(f"  not looked for (no NER model): {', '.join(counts['entities_not_looked_for'])}")


golden = group(help="The golden set changes only through this command: records are redacted and "
               "checked exactly as the pipeline does, appended, versioned with DVC and committed "
               "with the reason.")
add_group(app, golden, "golden", "grow the frozen golden evaluation set, deliberately")


@command(golden, "add", "add the conversations in a JSONL file")
def golden_add(
    file: Annotated[str, typer.Argument(metavar="FILE.jsonl", help=(
        "the conversations to add, one per line"))],
    reason: Annotated[str, option(metavar="WHY", help=(
        "why these belong in the golden set (the commit message)"))],
    workspace: Workspace = ".",
) -> None:
    """Add the conversations in FILE (chat format, one per line) to data/golden/golden.jsonl. A
    `metadata.expect` regex on a record is the format the model's own answer must match."""
    import tempfile

    from pipelines.privacy import subjects
    from pipelines.samples import eval_sets

    ws, p = workspace_params(workspace)
    golden_file = ws / wsp.EVAL_SETS[0]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            added = eval_sets.add_to_golden(p, Path(file).resolve(), golden_file, Path(tmp),
                                            salt=subjects.load_salt(ws / subjects.SALT_FILE))
        except eval_sets.GoldenRejected as exc:
            raise SystemExit(f"nightshift golden add: {exc}\nFix the records and try again.")
    if not added["added"]:
        print(f"nothing added: all {added['already_there']} record(s) are already in the golden set")
        return
    wsp.dvc(ws, "add", "-q", str(golden_file.relative_to(ws)))
    wsp.git(ws, "add", "-A", str(golden_file.parent))
    wsp.git(ws, "commit", "-q", "-m", f"golden set: add {added['added']} record(s): {reason}")
    print(f"golden set: added {added['added']} record(s) ({added['golden_records']} in all); "
          f"recorded with DVC and committed: {reason}")


@command(app, "forget", "erase a person's records and tag the versions that learned them")
def forget(
    ctx: typer.Context,
    user_id: Annotated[str | None, option(metavar="ID", help="a record's metadata.user_id")] = None,
    match: Annotated[str | None, option(metavar="TEXT", help=(
        "a value as it appeared in the source"))] = None,
    reason: Annotated[str, option(metavar="WHY", help=(
        "why, for the commit and the tombstone (redacted before it is stored)"))] = ...,
    workspace: Workspace = ".",
) -> None:
    """Remove every record about a user id, or holding a text as it appeared in the source (an
    email address, a phone number), from every data file DVC tracks in the workspace; delete the
    DVC objects that held them, in this and earlier cycles, from the cache and the remote; tag the
    registered versions trained on them; leave a tombstone of salted hashes so ingest drops their
    records if pulled again; commit with the reason. Give exactly one of --user-id and --match."""
    from dvc.exceptions import DvcException  # the cache or remote could not be read or written

    from flows import cycle_lock
    from flows import forget as forgetting
    from pipelines.privacy import subjects

    if (user_id is None) == (match is None):
        ctx.fail("give exactly one of --user-id ID and --match TEXT")
    ws = require_workspace(workspace)
    who = "the user id given" if user_id else "the text given"
    try:
        done = forgetting.forget(ws, reason, user_id=user_id, match=match,
                                 log=lambda line: print(line, flush=True))
    except (forgetting.ForgetError, cycle_lock.CycleRunning, wsp.CommandError, DvcException) as exc:
        raise SystemExit(f"nightshift forget: {exc}\nNothing was committed; run the same command "
                         "again once the cause is fixed.")
    remote = params_mod.load(ws / "params.yaml").version.remote
    print(f"forgot the records about {who} ({len(done['tombstone']['subjects'])} subject hashes)")
    print(f"records removed: {done['records_removed']}")
    print(f"exchanges serve-model logged about them, removed from the source: {done['served_removed']}")
    if done["embedding_cache_cleared"]:
        print("the stages' embedding cache (.cache/embeddings) deleted; they re-embed what they need")
    if done["vector_store"]:
        print(f"the retrieval index's pgvector table synced to the erased index "
              f"({done['vector_store']['deleted']} rows deleted) and rewritten (VACUUM FULL)")
    for path, n in done["removed"].items():
        print(f"  {path:<44} {n}")
    if done["dvc_files"] or done["stages"]:
        print("recorded again with DVC: " + ", ".join(
            [f"dvc add {f.removesuffix('.dvc')}" for f in done["dvc_files"]]
            + [f"dvc commit {s}" for s in done["stages"]]) + f"; pushed to the remote {remote!r}")
    print(f"objects deleted: {len(done['deleted']['cache'])} from the DVC cache, "
          f"{len(done['deleted']['remote'])} from the remote {remote!r} "
          f"({len(done['objects'])} held their records, in this and earlier cycles; their md5s are "
          "in the tombstone)")
    if done["tagged"]:
        print("versions tagged nightshift.erased_data (they learned from the erased records):")
        for t in done["tagged"]:
            print(f"  version {t['version']} (cycle {t['cycle'] or '-'}): {t['why']}")
    else:
        print("versions tagged: none (no registered version trained on these records)")
    print(f"tombstone: {subjects.TOMBSTONES_FILE} (salted hashes only; ingest drops their "
          f"records if they are pulled again)\ncommitted: {done['commit'][:10]} "
          f"({done['tombstone']['reason']})")
    print("Next: the tagged versions still hold what they learned; retraining without the erased "
          "data is `nightshift rebase --base <the current base>`. A past cycle whose data was "
          "erased can no longer be rebuilt: `nightshift reproduce --cycle DATE --check` says so.")


@command(app, "reproduce", "rebuild a past cycle's adapter, or say why it cannot be")
def reproduce(
    cycle: Annotated[str, option(metavar="DATE", help="the cycle (YYYY-MM-DD)")],
    check: Annotated[bool, option("--check", help="only say whether it can be rebuilt")] = False,
    workspace: Workspace = ".",
) -> None:
    """Check out the commit of cycle DATE, `dvc pull` its data and `dvc repro --force --single-item
    train` its adapter; refused, with the files, dates and reasons, when `nightshift forget` erased
    data it read."""
    from flows import forget as forgetting

    ws = require_workspace(workspace)
    commit = forgetting.cycle_commit(ws, cycle)
    if commit is None:
        raise SystemExit(f"nightshift reproduce: no commit 'nightshift cycle {cycle}' in {ws} "
                         "(`git log --oneline` lists the cycles)")
    erased = forgetting.check_reproducible(ws, commit)
    if erased:
        lines = "\n".join(f"  {e['path']} (md5 {e['md5'][:12]}): erased {e['date']}: {e['reason']}"
                          for e in erased)
        raise SystemExit(f"nightshift reproduce: cycle {cycle} (commit {commit[:10]}) can no "
                         f"longer be rebuilt: `nightshift forget` deleted data it read or wrote:"
                         f"\n{lines}\n`dvc pull` and `dvc repro` at that commit would miss these "
                         "objects. Retraining without the erased data: `nightshift rebase --base <the current base>`.")
    if check:
        print(f"cycle {cycle} (commit {commit[:10]}) can be rebuilt: none of its data was erased")
        return
    if wsp.git(ws, "status", "--porcelain", "--untracked-files=no").strip():
        raise SystemExit("nightshift reproduce: the workspace has uncommitted changes; commit or "
                         "stash them first (the cycle's commit is checked out)")
    wsp.git(ws, "checkout", "-q", commit)
    wsp.dvc(ws, "pull", log=print)
    wsp.dvc(ws, "repro", "--force", "--single-item", "train", log=print)
    print(f"cycle {cycle} rebuilt at commit {commit[:10]}: `git diff HEAD dvc.lock` shows "
          "what moved; back to the present: git reset -q --hard && git checkout main && dvc checkout")


@command(app, "purge-raw", "remove the raw snapshots an earlier nightshift kept")
def purge_raw(workspace: Workspace = ".") -> None:
    """Workspaces made by an earlier nightshift kept each night's records as pulled, unredacted, in
    data/raw/ and in DVC. Remove them from the workspace, every object they had in the DVC cache
    and on the remote (found through the git history), and commit; say what was removed."""
    from flows import cycle_lock
    from flows.purge_raw import purge_raw as purge

    ws = require_workspace(workspace)
    print(f"Looking for raw snapshots (data/raw/) in {ws}, its git history, DVC cache and remote ...")
    try:
        done = purge(ws)
    except cycle_lock.CycleRunning as exc:
        raise SystemExit(f"nightshift purge-raw: {exc}")
    if not done["objects"] and not done["files"]:
        print("nothing to purge: this workspace keeps no raw snapshots")
        return
    print(f"removed {len(done['files'])} raw snapshot file(s) from the workspace and "
          f"{len(done['objects'])} DVC object(s) of unredacted records ({len(done['deleted_from_cache'])} "
          f"from the cache, {len(done['deleted_from_remote'])} from the remote)"
          + (f"; committed as {done['commit'][:10]}" if done["commit"] else ""))


@command(app, "init", "create a new workspace (git + DVC + params)")
def init(directory: Annotated[str, typer.Argument(metavar="DIR", help="the new workspace")]) -> None:
    """Create a nightshift workspace: params.yaml, dvc.yaml, the stages, git, DVC and a local DVC
    remote."""
    path = wsp.init(Path(directory))
    print(f"Created the workspace {path}\nNext: put logs in {path / 'logs'} (or set ingest.url in "
          f"params.yaml), then `nightshift run --workspace {path}`")
