"""The `nightshift` command line. Every command has --help; errors say what to do next."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from contextlib import chdir
from pathlib import Path

import pipelines  # noqa: F401  (sets the offline and telemetry defaults first)
from flows import workspace as wsp
from pipelines.common import params as params_mod

DEMO_WORKSPACE = Path("demo")


def _workspace(path: str) -> Path:
    ws = Path(path).resolve()
    if not wsp.is_workspace(ws):
        raise SystemExit(f"nightshift: {ws} is not a nightshift workspace (no params.yaml and "
                         "dvc.yaml). Pass --workspace DIR, or create one with `nightshift init DIR`.")
    return ws


def _workspace_params(path: str) -> tuple[Path, params_mod.Params]:
    from registry import mlflow_registry as reg

    ws = _workspace(path)
    p = params_mod.load(ws / "params.yaml")
    reg.configure_retries(p.registry)  # promote, rollback, status, history ride out a restarting server too
    return ws, p


def cmd_init(args) -> None:
    path = wsp.init(Path(args.directory))
    print(f"Created the workspace {path}\nNext: put logs in {path / 'logs'} (or set ingest.url in "
          f"params.yaml), then `nightshift run --workspace {path}`")


def cmd_run(args) -> None:
    from flows import cycle_lock
    from flows.nightly import nightly

    ws = _workspace(args.workspace)
    p = params_mod.load(ws / "params.yaml")  # a broken params.yaml is reported before anything starts
    day = args.date or p.schedule.yesterday().isoformat()
    started = time.time()
    try:
        # Taken here, before Prefect starts, so a second cycle is refused at once; the flow re-enters it.
        with cycle_lock.hold(ws, day):
            summary = nightly(date=day, workspace=str(ws), source=args.source)
    except cycle_lock.CycleRunning as exc:
        raise SystemExit(f"nightshift run: {exc}")
    except Exception as exc:
        fail(ws, exc, started)
    print_summary(summary)


def cmd_serve(args) -> None:
    from flows import serve

    ws, p = _workspace_params(args.workspace)
    try:
        serve.serve(ws, p)
    except serve.ServeError as exc:
        raise SystemExit(f"nightshift serve: {exc}")
    except KeyboardInterrupt:
        pass
    print(f"nightshift serve: stopped. The deployment nightly/{p.schedule.deployment} stays on the "
          "Prefect server with its schedule paused; `nightshift serve` resumes it.")


def fail(ws: Path, exc: Exception, started: float) -> None:
    """A failed cycle: its summary (if it got far enough to write one), what broke; exit 1."""
    summary_file = ws / "reports/summary.json"
    wrote_summary = summary_file.exists() and summary_file.stat().st_mtime >= started
    if wrote_summary:
        print_summary(json.loads(summary_file.read_text()))
    raise SystemExit(f"\nnightshift: the cycle failed: {exc}\n"
                     "Nothing was registered; production (@champion) is unchanged. "
                     + (f"The summary is in {summary_file}, the " if wrote_summary else "The ")
                     + "full log is above (and in the Prefect UI when a server is configured). Fix "
                     "the cause and run the same --date again: records already pulled are reused, "
                     "never pulled twice.")


def cmd_demo(args) -> None:
    """Bundled sample logs, then the next cycles of them, in a workspace of their own."""
    from flows.demo import demo

    ws = Path(args.workspace).resolve()
    if args.fresh and ws.exists():
        shutil.rmtree(ws)
    if not wsp.is_workspace(ws):
        print(f"Creating the demo workspace {ws} ...", flush=True)
        wsp.init(ws)
    params_mod.load(ws / "params.yaml")
    started = time.time()
    from flows import cycle_lock

    try:
        summaries = demo(workspace=str(ws), cycles=args.cycles)
    except cycle_lock.CycleRunning as exc:
        raise SystemExit(f"nightshift demo: {exc}")
    except Exception as exc:
        fail(ws, exc, started)
    for summary in summaries:
        print_summary(summary)
    print()
    print_status(ws)
    print(f"\nThe demo workspace is {ws}. Look around:\n"
          f"  cd {ws} && dvc status && git log --oneline      # each cycle is a commit\n"
          f"  mlflow ui --backend-store-uri sqlite:///{ws / 'mlflow.db'}   # the registry, in a browser\n"
          f"  nightshift demo                                    # the next cycles")


def cmd_status(args) -> None:
    print_status(_workspace(args.workspace), as_json=args.json)


def cmd_history(args) -> None:
    from registry import history

    ws, p = _workspace_params(args.workspace)
    with chdir(ws):
        moves = history.sync(p.registry)
    if args.alias:
        moves = [m for m in moves if m.alias == args.alias]
    if args.json:
        print(json.dumps([m.as_dict() for m in moves], indent=2))
        return
    if not moves:
        print("No alias has moved yet.")
        return
    print(f"{'#':>3}  {'when (UTC)':<25}  {'alias':<11}  {'from':>4} -> {'to':<4}  {'kind':<8}  by / why")
    for m in moves:
        print(f"{m.seq:>3}  {m.time:<25}  @{m.alias:<10}  {m.from_version or '-':>4} -> "
              f"{m.to_version or '-':<4}  {m.kind:<8}  {m.by}: {m.why}")


def cmd_promote(args) -> None:
    from registry import history

    ws, p = _workspace_params(args.workspace)
    with chdir(ws):
        try:
            move = history.promote(p.registry, args.version, args.reason, alias=args.alias,
                                   force=args.force)
        except history.RegistryError as exc:
            raise SystemExit(f"nightshift promote: {exc}")
    if move is None:
        print(f"@{args.alias} already points to version {args.version}; nothing changed")
    else:
        print(f"@{args.alias}: version {move.from_version or '-'} -> {move.to_version} ({args.reason})")


def cmd_rollback(args) -> None:
    from registry import history

    ws, p = _workspace_params(args.workspace)
    with chdir(ws):
        try:
            move = history.rollback(p.registry, args.reason)
        except history.RegistryError as exc:
            raise SystemExit(f"nightshift rollback: {exc}")
    print(f"@champion rolled back: version {move.from_version} -> {move.to_version} ({args.reason}). "
          "The next cycle trains from version " + move.to_version + ".")


def cmd_generate(args) -> None:
    import tempfile

    from pipelines.common import modeling
    from pipelines.samples.sample_logs import SYSTEM_PROMPT
    from registry import mlflow_registry as reg

    ws, p = _workspace_params(args.workspace)
    with chdir(ws), tempfile.TemporaryDirectory() as tmp:
        if args.version:
            mv = reg.client(p.registry).get_model_version(p.registry.model_name, args.version)
            version, source = args.version, mv.source
        else:
            champion = reg.resolve_alias(p.registry, reg.CHAMPION)
            if champion is None:
                raise SystemExit("nightshift generate: no @champion yet; run a cycle first "
                                 "(`nightshift run` or `nightshift demo`)")
            version, source = champion.version, champion.source
        adapter = reg.download_adapter(p.registry, source, Path(tmp) / "adapter")
        model = modeling.load_with_adapter(p.base_model.model, p.train.quantization, adapter, trainable=False)
        tokenizer = modeling.load_tokenizer(p.base_model.model)
        system = None if args.no_system else SYSTEM_PROMPT
        answer = modeling.generate(model, tokenizer, args.prompt, args.max_new_tokens, system)
    print(f"[{p.base_model.model} + {p.registry.model_name} version {version}]\n{answer}")


def cmd_redact(args) -> None:
    from pipelines.privacy.redact import RedactionSetupError, redact_file

    p = params_mod.load(args.params).redact if Path(args.params).exists() else _default_params().redact
    if not Path(args.input).exists():
        raise SystemExit(f"nightshift redact: {args.input} does not exist")
    try:
        report = redact_file(p, Path(args.input), Path(args.output))
    except RedactionSetupError as exc:
        raise SystemExit(f"nightshift redact: {exc}")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['records']} records redacted into {args.output}")
    for entity, count in report["replaced"].items():
        print(f"  {entity:<16} {count}")
    if report["entities_not_looked_for"]:
        print(f"  not looked for (no NER model): {', '.join(report['entities_not_looked_for'])}")


def cmd_golden_add(args) -> None:
    import tempfile

    from pipelines.samples import eval_sets

    from pipelines.privacy import subjects

    ws, p = _workspace_params(args.workspace)
    golden = ws / wsp.EVAL_SETS[0]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            added = eval_sets.add_to_golden(p, Path(args.file).resolve(), golden, Path(tmp),
                                            salt=subjects.load_salt(ws / subjects.SALT_FILE))
        except eval_sets.GoldenRejected as exc:
            raise SystemExit(f"nightshift golden add: {exc}\nFix the records and try again.")
    if not added["added"]:
        print(f"nothing added: all {added['already_there']} record(s) are already in the golden set")
        return
    wsp.dvc(ws, "add", "-q", str(golden.relative_to(ws)))
    wsp.git(ws, "add", "-A", str(golden.parent))
    wsp.git(ws, "commit", "-q", "-m", f"golden set: add {added['added']} record(s): {args.reason}")
    print(f"golden set: added {added['added']} record(s) ({added['golden_records']} in all); "
          f"recorded with DVC and committed: {args.reason}")


def cmd_forget(args) -> None:
    from dvc.exceptions import DvcException  # the cache or remote could not be read or written

    from flows import cycle_lock, forget
    from pipelines.privacy import subjects

    ws = _workspace(args.workspace)
    who = "the user id given" if args.user_id else "the text given"
    try:
        done = forget.forget(ws, args.reason, user_id=args.user_id, match=args.match,
                             log=lambda line: print(line, flush=True))
    except (forget.ForgetError, cycle_lock.CycleRunning, wsp.CommandError, DvcException) as exc:
        raise SystemExit(f"nightshift forget: {exc}\nNothing was committed; run the same command "
                         "again once the cause is fixed.")
    remote = params_mod.load(ws / "params.yaml").version.remote
    print(f"forgot the records about {who} ({len(done['tombstone']['subjects'])} subject hashes)")
    print(f"records removed: {done['records_removed']}")
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
        print(f"versions tagged nightshift.erased_data (they learned from the erased records):")
        for t in done["tagged"]:
            print(f"  version {t['version']} (cycle {t['cycle'] or '-'}): {t['why']}")
    else:
        print("versions tagged: none (no registered version trained on these records)")
    print(f"tombstone: {subjects.TOMBSTONES_FILE} (salted hashes only; ingest drops their "
          f"records if they are pulled again)\ncommitted: {done['commit'][:10]} "
          f"({done['tombstone']['reason']})")
    print("Next: the tagged versions still hold what they learned; retraining without the erased "
          "data comes with `nightshift rebase` (a later feature). A past cycle whose data was "
          "erased can no longer be rebuilt: `nightshift reproduce --cycle DATE --check` says so.")


def cmd_reproduce(args) -> None:
    from flows import forget

    ws = _workspace(args.workspace)
    commit = forget.cycle_commit(ws, args.cycle)
    if commit is None:
        raise SystemExit(f"nightshift reproduce: no commit 'nightshift cycle {args.cycle}' in {ws} "
                         "(`git log --oneline` lists the cycles)")
    erased = forget.check_reproducible(ws, commit)
    if erased:
        lines = "\n".join(f"  {e['path']} (md5 {e['md5'][:12]}): erased {e['date']}: {e['reason']}"
                          for e in erased)
        raise SystemExit(f"nightshift reproduce: cycle {args.cycle} (commit {commit[:10]}) can no "
                         f"longer be rebuilt: `nightshift forget` deleted data it read or wrote:"
                         f"\n{lines}\n`dvc pull` and `dvc repro` at that commit would miss these "
                         "objects. Retraining without the erased data comes with `nightshift rebase`.")
    if args.check:
        print(f"cycle {args.cycle} (commit {commit[:10]}) can be rebuilt: none of its data was erased")
        return
    if wsp.git(ws, "status", "--porcelain", "--untracked-files=no").strip():
        raise SystemExit("nightshift reproduce: the workspace has uncommitted changes; commit or "
                         "stash them first (the cycle's commit is checked out)")
    wsp.git(ws, "checkout", "-q", commit)
    wsp.dvc(ws, "pull", log=print)
    wsp.dvc(ws, "repro", "--force", "--single-item", "train", log=print)
    print(f"cycle {args.cycle} rebuilt at commit {commit[:10]}: `git diff HEAD dvc.lock` shows "
          "what moved; back to the present: git reset -q --hard && git checkout main && dvc checkout")


def cmd_purge_raw(args) -> None:
    from flows import cycle_lock
    from flows.purge_raw import purge_raw

    ws = _workspace(args.workspace)
    print(f"Looking for raw snapshots (data/raw/) in {ws}, its git history, DVC cache and remote ...")
    try:
        done = purge_raw(ws)
    except cycle_lock.CycleRunning as exc:
        raise SystemExit(f"nightshift purge-raw: {exc}")
    if not done["objects"] and not done["files"]:
        print("nothing to purge: this workspace keeps no raw snapshots")
        return
    print(f"removed {len(done['files'])} raw snapshot file(s) from the workspace and "
          f"{len(done['objects'])} DVC object(s) of unredacted records ({len(done['deleted_from_cache'])} "
          f"from the cache, {len(done['deleted_from_remote'])} from the remote)"
          + (f"; committed as {done['commit'][:10]}" if done["commit"] else ""))


def _default_params() -> params_mod.Params:
    return params_mod.load(wsp.PROJECT_ROOT / "params.yaml")


def print_summary(s: dict) -> None:
    if s.get("status") == "already_done":
        print(f"cycle {s['cycle']}: already done (version {s['version']}); nothing changed")
        return
    if s.get("status") == "finished_interrupted":
        print(f"cycle {s['cycle']}: version {s['version']} was registered by a run that was "
              f"interrupted before its alias move; finished now: "
              f"{('@' + s['alias']) if s.get('alias') else 'no alias'} ({s['reason']})")
        return
    acc = s.get("accounting") or {}
    ev = s.get("eval") or {}
    tr = s.get("train") or {}
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    print(f"\n== nightshift cycle {s['cycle']}: {s['status']} in {s.get('seconds', 0):.0f} s ==")
    print(f"records   pulled {acc.get('pulled')} = clean {acc.get('clean')} + quarantined "
          f"{acc.get('quarantined')} + duplicates {acc.get('duplicates')}"
          + (f" + forgotten {acc['forgotten']}" if acc.get("forgotten") else ""))
    if s.get("quarantine_reasons"):
        print(f"          checks failed by quarantined records (one record can fail several): "
              f"{s['quarantine_reasons']}")
    redaction = s.get("redaction") or {}
    if redaction.get("replaced") is not None:
        replaced = redaction["replaced"]
        print(f"redacted  {sum(replaced.values())} values as pulled ("
              + (", ".join(f"{k} {v}" for k, v in replaced.items()) or "none") + ")"
              + (f"; not looked for: {', '.join(redaction['entities_not_looked_for'])}"
                 if redaction.get("entities_not_looked_for") else ""))
    if s.get("status") == "skipped":
        print(f"skipped   no training tonight: {s['reason']}\n"
              f"          the data is versioned (git {str(s.get('git_commit'))[:10]}); production "
              "(@champion) is unchanged")
        return
    print(f"train     {tr.get('examples')} examples, {tr.get('steps')} steps, loss "
          f"{fmt(tr.get('first_loss'))} -> {fmt(tr.get('final_loss'))}, parent version "
          f"{s.get('parent_version') or 'none (new adapter)'}")
    print(f"eval loss candidate {fmt(ev.get('candidate'))}, champion {fmt(ev.get('champion'))}, "
          f"base {fmt(ev.get('base'))} (new data)")
    for name, losses in (s.get("eval_sets") or {}).items():
        if name != "new" and losses.get("candidate") is not None:
            print(f"          {name:<6} candidate {fmt(losses.get('candidate'))}, champion "
                  f"{fmt(losses.get('champion'))}, base {fmt(losses.get('base'))}")
    drift = s.get("drift") or {}
    if drift:
        state = ("ALARM: " + ", ".join(drift["alarms"])) if drift.get("alarm") else (
            drift.get("note") or "no drift")
        print(f"drift     {state} ({drift.get('report')})")
    model_drift = s.get("model_drift") or {}
    if model_drift:
        kl = (model_drift.get("divergence") or {}).get("kl_champion_to_candidate")
        state = ("ALARM: " + ", ".join(model_drift["alarms"])) if model_drift.get("alarm") else "no model drift"
        print(f"model     {state}; KL from champion {fmt(kl)} ({model_drift.get('report')})")
    if s.get("status") == "succeeded":
        print(f"registry  version {s['version']} -> {('@' + s['alias']) if s.get('alias') else 'no alias'}"
              f": {s['reason']}")
    else:
        print(f"error     in {s.get('failed_stage')}: {s.get('error')}")


def print_status(ws: Path, as_json: bool = False) -> None:
    from registry import mlflow_registry as reg

    p = params_mod.load(ws / "params.yaml")
    with chdir(ws):
        st = reg.status(p.registry)
    if as_json:
        print(json.dumps(st, indent=2))
        return
    if not st["registered"]:
        print(f"No model registered yet under {st['model']!r}. Run `nightshift run` or `nightshift demo`.")
        return
    print(f"model {st['model']}: " + ", ".join(f"@{a} = version {v}" for a, v in st["aliases"].items()))
    print(f"{'version':>7}  {'cycle':<10}  {'parent':>6}  {'gate':<8}  eval loss")
    for v in st["versions"]:
        print(f"{v['version']:>7}  {v['cycle'] or '-':<10}  {v['parent'] or '-':>6}  "
              f"{v['gate'] or '-':<8}  {v['eval_loss'] or '-'}"
              + (f"  ERASED DATA ({v['erased_data']})" if v.get("erased_data") else ""))
    if any(v.get("erased_data") for v in st["versions"]):
        print("ERASED DATA: the version learned from records `nightshift forget` erased since; "
              "retraining without them comes with `nightshift rebase`.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightshift",
        description="Turn yesterday's assistant log into tonight's better LoRA adapter, safely.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the bundled sample through nightly cycles",
                       description="Generate the bundled sample logs in a demo workspace and run "
                       "the next cycles on them (continues where the last demo stopped).")
    p.add_argument("--workspace", default=str(DEMO_WORKSPACE), help="demo workspace (default: demo)")
    p.add_argument("--cycles", type=int, default=None, help="cycles to run (default: demo.cycles)")
    p.add_argument("--fresh", action="store_true", help="delete the demo workspace and start over")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run one nightly cycle now",
                       description="Run one cycle: ingest (redacting as it pulls), validate, "
                       "dataset, train, evaluate, gate, version, register.")
    p.add_argument("--date", help="the day whose interactions to learn (YYYY-MM-DD; default: yesterday)")
    p.add_argument("--source", help="override ingest.url: a JSONL folder/file or a database URL")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("serve", help="run the nightly cycle on its schedule (a Prefect deployment)",
                       description="Create or update the Prefect deployment nightly/<schedule."
                       "deployment> on the server in PREFECT_API_URL, with the cron schedule and "
                       "time zone of params.yaml's `schedule` section and this workspace as its "
                       "parameter, then run its flow runs (scheduled, or started from the Prefect "
                       "UI) one at a time until Ctrl-C. Each run learns the day before it, in the "
                       "schedule's time zone. Start a server first: `prefect server start`, then "
                       "`export PREFECT_API_URL=http://127.0.0.1:4200/api`.")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", help="champion, challenger and recent versions",
                       description="Show the registered model's aliases and latest versions.")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="every move of @champion and @challenger",
                       description="Every alias move: when, from, to, by whom, why; moves made in "
                       "the MLflow UI or through its API are included once nightshift notices them.")
    p.add_argument("--alias", choices=["champion", "challenger"], help="only this alias")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("promote", help="point @champion (or @challenger) at a version",
                       description="Promote a registered version by hand; recorded in the history.")
    p.add_argument("version")
    p.add_argument("--reason", required=True, help="why, for the history")
    p.add_argument("--alias", choices=["champion", "challenger"], default="champion")
    p.add_argument("--force", action="store_true", help="promote even a version the gate rejected")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="return @champion to the version before it",
                       description="Return @champion to the champion before it (again: one further "
                       "back). The next cycle trains from it.")
    p.add_argument("--reason", required=True, help="why, for the history and the rolled-back version")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("generate", help="answer a prompt with base + @champion",
                       description="Load the base model and the @champion adapter (or --version) "
                       "from the registry and answer PROMPT, greedily.")
    p.add_argument("prompt")
    p.add_argument("--version", help="a registered version instead of @champion")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--no-system", action="store_true", help="omit the default system prompt")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("redact", help="redact a JSONL file exactly as the pipeline does",
                       description="Replace personal data and secrets in IN.jsonl with typed "
                       "placeholders; one record in, one record out, same order.")
    p.add_argument("input", metavar="IN.jsonl")
    p.add_argument("output", metavar="OUT.jsonl")
    p.add_argument("--report", metavar="FILE", help="write per-entity-type counts as JSON")
    p.add_argument("--params", default="params.yaml",
                   help="params.yaml whose `redact` section to use (default: ./params.yaml, "
                   "else the project's defaults)")
    p.set_defaults(func=cmd_redact)

    p = sub.add_parser("golden", help="grow the frozen golden evaluation set, deliberately",
                       description="The golden set changes only through this command: records are "
                       "redacted and checked exactly as the pipeline does, appended, versioned with "
                       "DVC and committed with the reason.")
    golden = p.add_subparsers(dest="golden_command", required=True)
    g = golden.add_parser("add", help="add the conversations in a JSONL file",
                          description="Add the conversations in FILE (chat format, one per line) to "
                          "data/golden/golden.jsonl. A `metadata.expect` regex on a record is the "
                          "format the model's own answer must match.")
    g.add_argument("file", metavar="FILE.jsonl")
    g.add_argument("--reason", required=True, help="why these belong in the golden set (the commit message)")
    g.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    g.set_defaults(func=cmd_golden_add)

    p = sub.add_parser("forget", help="erase a person's records and tag the versions that learned them",
                       description="Remove every record about a user id, or holding a text as it "
                       "appeared in the source (an email address, a phone number), from every "
                       "data file DVC tracks in the workspace; delete the DVC objects that held "
                       "them, in this and earlier cycles, from the cache and the remote; tag the "
                       "registered versions trained on them; leave a tombstone of salted hashes "
                       "so ingest drops their records if pulled again; commit with the reason.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", metavar="ID", help="a record's metadata.user_id")
    who.add_argument("--match", metavar="TEXT", help="a value as it appeared in the source")
    p.add_argument("--reason", required=True,
                   help="why, for the commit and the tombstone (redacted before it is stored)")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("reproduce", help="rebuild a past cycle's adapter, or say why it cannot be",
                       description="Check out the commit of cycle DATE, `dvc pull` its data and "
                       "`dvc repro --force --single-item train` its adapter; refused, with the "
                       "files, dates and reasons, when `nightshift forget` erased data it read.")
    p.add_argument("--cycle", required=True, metavar="DATE", help="the cycle (YYYY-MM-DD)")
    p.add_argument("--check", action="store_true", help="only say whether it can be rebuilt")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("purge-raw", help="remove the raw snapshots an earlier nightshift kept",
                       description="Workspaces made by an earlier nightshift kept each night's "
                       "records as pulled, unredacted, in data/raw/ and in DVC. Remove them from "
                       "the workspace, every object they had in the DVC cache and on the remote "
                       "(found through the git history), and commit; say what was removed.")
    p.add_argument("--workspace", default=".", help="workspace directory (default: .)")
    p.set_defaults(func=cmd_purge_raw)

    p = sub.add_parser("init", help="create a new workspace (git + DVC + params)",
                       description="Create a nightshift workspace: params.yaml, dvc.yaml, the "
                       "stages, git, DVC and a local DVC remote.")
    p.add_argument("directory")
    p.set_defaults(func=cmd_init)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except params_mod.ParamsError as exc:
        raise SystemExit(f"nightshift: {exc}")
    except FileExistsError as exc:
        raise SystemExit(f"nightshift: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
