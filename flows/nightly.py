"""The `nightly` Prefect flow: one cycle, from yesterday's log to a registered, gated adapter.

The flow only orchestrates. Stages live in pipelines/ and run through `dvc repro <stage>`, so DVC
decides what is up to date and records dvc.lock; Prefect adds the schedule, retries on I/O, logs
and the UI. Ingest and register are the two side effects outside the DVC DAG; ingest redacts as
it pulls, so the first thing any stage or store sees is the redacted snapshot.

Crash safety: a cycle killed at any point (SIGKILL, the machine going down) is finished by the
next run. Ingest commits its snapshot and watermark together, so the same date re-run reuses
the snapshot; DVC re-runs only the stages whose outputs were not recorded; the version step makes
no second commit; a version registered but killed before its alias move is marked `pending` in
the registry and its verdict is applied by the next run, whatever its date (recover_interrupted).

Test hook: NIGHTSHIFT_CRASH_AFTER=<step> (a step name of `nightly`, e.g. `version` or
`register`) makes the flow SIGKILL its own process right after that step, so tests can leave
the exact state a crash there leaves. Production never sets it; nightshift never does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import time
from contextlib import chdir
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows import cycle_lock, pinning
from flows import workspace as wsp
from pipelines.data import ingest as ingest_stage
from pipelines.model import model_drift as model_drift_stage
from flows import notify as notify_stage
from pipelines.common import params as params_mod
from pipelines.common.metrics import SETS, metric
from pipelines.common.records import read_json, write_json
from registry import erasure, history
from registry import mlflow_registry as reg

CRASH_AFTER_ENV = "NIGHTSHIFT_CRASH_AFTER"  # test hook only: see the module docstring
# The DAG in two parts: the data stages run for every night with records; the model stages only
# when the night brings at least nightly.min_new_examples learnable examples.
DATA_STAGES = ["validate", "dataset"]
MODEL_STAGES = ["base_model", "drift", "train", "evaluate", "gate"]
DAG_STAGES = DATA_STAGES + MODEL_STAGES
PARENT_DIR = Path("models/parent")
BUFFER = Path("data/replay/buffer.jsonl")
NEXT_BUFFER = Path("data/dataset/buffer.jsonl")


class AccountingError(AssertionError):
    """pulled != clean + quarantined + duplicates: a record went missing."""


class RemoteError(RuntimeError):
    """`dvc push` to the remote failed: a network share or bucket that a retry may reach."""


def _retry_only(*retryable: type[BaseException]):
    """A Prefect retry condition: retry only what a retry can fix (a source that could not be
    read, a remote that did not answer), never a bad params.yaml or a failed stage."""
    def condition(task, task_run, state) -> bool:
        try:
            state.result()
        except retryable:
            return True
        except Exception:
            return False
        return False
    return condition


_retry_source_errors = _retry_only(ingest_stage.SourceError)


@task(name="ingest", retry_condition_fn=_retry_source_errors)
def ingest(ws: Path, date: dt.date, source_url: str | None) -> dict:
    """Pull records newer than the watermark, redacted as they are pulled, into
    data/snapshots/<date>.jsonl, and pin it with DVC. Nothing unredacted is written.

    Retried (ingest.retries, exponential backoff from ingest.retry_backoff_seconds; the flow sets
    both from params.yaml) while the source cannot be read; the watermark moves only on success.
    """
    from prefect.runtime import task_run

    log = get_run_logger()
    p = params_mod.load(ws / "params.yaml")
    source = p.source if source_url is None else dataclasses.replace(p.source, url=source_url)
    if not ingest_stage.is_sql_url(source.url):
        source = dataclasses.replace(source, url=str((ws / source.url).resolve()))
    attempt, attempts = task_run.run_count or 1, p.ingest.retries + 1
    try:
        with chdir(ws):
            metrics = ingest_stage.run(source, p.redact, date, log=log.info,
                                       timezone=p.schedule.timezone)
    except ingest_stage.SourceError as exc:
        if attempt < attempts:
            log.warning("ingest attempt %d of %d failed, retrying: %s", attempt, attempts, exc)
        raise ingest_stage.SourceError(f"{exc} (attempt {attempt} of {attempts})") from exc
    wsp.dvc(ws, "add", "-q", metrics["snapshot"])
    if metrics["reused_snapshot"]:
        log.info("ingest: %s was pulled by an earlier run (%d records): reused, nothing pulled "
                 "again (watermark %s)", metrics["snapshot"], metrics["pulled"], metrics["watermark"])
    else:
        replaced = metrics["redaction"]["replaced"]
        log.info("ingest: %d records pulled and redacted for %s (%d values replaced: %s; "
                 "watermark %s)", metrics["pulled"], date, sum(replaced.values()),
                 ", ".join(f"{k} {v}" for k, v in replaced.items()) or "none", metrics["watermark"])
    if metrics["forgotten"]:
        log.info("ingest: %d record(s) dropped: about people `nightshift forget` erased",
                 metrics["forgotten"])
    if metrics.get("future_records"):
        log.warning("ingest: %d records in the source are stamped in the future; they stay there "
                    "until their night (check the logging clock upstream)", metrics["future_records"])
    return metrics


@task(name="pin-inputs")
def pin_inputs(ws: Path, date: dt.date) -> dict:
    """Put the parent adapter (@champion now) and the replay buffer in place, pinned by DVC."""
    p = params_mod.load(ws / "params.yaml")
    with chdir(ws):
        parent_version = pinning.pin_parent_adapter(p.registry, PARENT_DIR)
        pinning.pin_replay_buffer(date, NEXT_BUFFER, BUFFER)
    wsp.dvc(ws, "add", "-q", str(PARENT_DIR), str(BUFFER))
    get_run_logger().info("training continues from @champion = version %s", parent_version
                          if parent_version else "none: a new adapter starts")
    return {"parent_version": parent_version}


@task(name="dvc-stage")
def dvc_stage(ws: Path, stage: str) -> None:
    """`dvc repro --single-item <stage>`: runs it if its deps or params changed, else DVC skips
    it. The flow runs the stages in DAG order, so each finds its upstream stages up to date."""
    log = get_run_logger()
    wsp.dvc(ws, "repro", "--single-item", stage, log=lambda line: log.info("%s", line))


@task(name="version", retry_condition_fn=_retry_only(RemoteError))
def version(ws: Path, date: dt.date) -> dict:
    """Push the cycle's data and models to the DVC remote; record dvc.lock in git.

    A failed push is retried (retries.dvc_remote, exponential backoff from
    retries.dvc_remote_backoff_seconds; the flow sets both): it uploads only what is missing.
    """
    from prefect.runtime import task_run

    p = params_mod.load(ws / "params.yaml")
    attempt, attempts = task_run.run_count or 1, p.retries.dvc_remote + 1
    wsp.configure_remote(ws, p.version)
    try:
        wsp.dvc(ws, "push", "-r", p.version.remote)  # not -q: its ERROR line says what failed
    except wsp.CommandError as exc:
        if attempt < attempts:
            get_run_logger().warning("dvc push attempt %d of %d failed, retrying: %s", attempt, attempts, exc)
        raise RemoteError(f"dvc push to the remote {p.version.remote!r} failed (attempt {attempt} of "
                          f"{attempts}); check that the remote is reachable and writable "
                          f"(`dvc push -r {p.version.remote}` in {ws}): {exc}") from exc
    commit = None
    if p.version.git_commit and (ws / ".git").exists():
        wsp.git(ws, "add", "-A")
        if wsp.git(ws, "status", "--porcelain").strip():
            wsp.git(ws, "commit", "-q", "-m", f"nightshift cycle {date.isoformat()}")
        commit = wsp.git(ws, "rev-parse", "HEAD").strip()
    return {"git_commit": commit, "data_version": _dvc_md5(ws / snapshot_dvc_file(date.isoformat()))}


@task(name="register")
def register(ws: Path, date: dt.date, parent_version: str | None, versioned: dict) -> dict:
    """Register the candidate with its lineage; the gate's verdict decides the alias move.

    Not retried as a task (a second attempt could register the candidate twice): each request
    to a tracking server is retried by MLflow's HTTP client instead (retries.mlflow).
    """
    p = params_mod.load(ws / "params.yaml")
    evaluation = read_json(ws / "reports/eval.json")
    verdict = read_json(ws / "reports/gate.json")
    train = read_json(ws / "reports/train.json")
    candidate, champion = evaluation["candidate"], evaluation.get("champion")
    lineage = {
        "cycle": date.isoformat(), "parent_version": parent_version or "none",
        "data_version": versioned["data_version"], "git_commit": versioned["git_commit"] or "none",
        "params_hash": p.digest(), "base_model": p.base.model,
        "flow_run_id": _flow_run_id(), "eval_loss": metric(candidate, "new.eval_loss"),
        "champion_eval_loss": metric(champion, "new.eval_loss"),
    }
    with chdir(ws):
        erased = erasure.inherited(p.registry, parent_version)
    if erased:  # trained from an adapter that learned from data `nightshift forget` erased
        lineage["erased_data"] = erased
    # Every set's scores as run metrics, so the MLflow UI charts them across versions.
    scores = {f"{s}.{k}": metric(candidate, f"{s}.{k}") for s in SETS
              for k in ("eval_loss", "perplexity", "token_accuracy", "pairing_margin")}
    scores.update({f"generations.{k}": metric(candidate, f"generations.{k}")
                   for k in ("pii_rate", "format_pass_rate")})
    divergence = evaluation.get("divergence") or {}
    metrics = {"train_loss": train.get("train_loss"), "final_train_loss": train.get("final_loss"),
               "eval_loss": lineage["eval_loss"], "base_eval_loss": metric(evaluation["base"], "new.eval_loss"),
               "champion_eval_loss": lineage["champion_eval_loss"],
               "tokens_per_second": train.get("tokens_per_second"),
               "kl_champion_to_candidate": divergence.get("kl_champion_to_candidate"),
               "generation_agreement": divergence.get("generation_agreement"), **scores}
    with chdir(ws):
        result = reg.register(
            p.registry, Path("models/candidate"), f"cycle-{date.isoformat()}", lineage, metrics,
            _flatten(dataclasses.asdict(p)) | {"source.url": _without_password(p.source.url)},
            [Path("reports/eval.json"), Path("reports/gate.json"), Path("reports/train.json"),
             Path("reports/drift.json"), Path("reports/drift.html"),
             Path("data/validated/report.json"),
             ingest_stage.SNAPSHOT_DIR / f"{date.isoformat()}.report.json"], verdict)
    log = get_run_logger()
    for run_id in result["deleted_orphan_runs"]:
        log.warning("run %s of cycle %s was logged by a register killed before it created the "
                    "version; deleted it (restorable among the MLflow UI's deleted runs)", run_id, date)
    log.info("registered version %s (gate %s)", result["version"],
             "passed" if verdict["passed"] else "rejected")
    return result


@task(name="apply-verdict")
def apply_verdict(ws: Path, registered: dict) -> dict:
    """Move the alias the gate's verdict says (recorded in the history) and mark the version
    finalised; until then it is `pending`, and a run killed here is finished by the next one."""
    p = params_mod.load(ws / "params.yaml")
    verdict = read_json(ws / "reports/gate.json")
    with chdir(ws):
        result = history.apply_verdict(p.registry, registered["version"], verdict,
                                       by=f"nightly flow run {_flow_run_id()}")
    get_run_logger().info("version %s: %s", registered["version"], result["reason"])
    return {**registered, **result}


@task(name="model-drift")
def model_drift(ws: Path, date: dt.date, registered: dict) -> dict:
    """The candidate against the champion and against the metric history; logged to its run."""
    p = params_mod.load(ws / "params.yaml")
    with chdir(ws):
        report = model_drift_stage.run(
            p.drift, date.isoformat(), read_json(Path("reports/eval.json")), registered["version"],
            reg.metric_history(p.registry, p.drift.trend_history), Path("reports/model_drift.json"),
            Path("reports/model_drift.html"))
        reg.log_reports(p.registry, registered["run_id"],
                        [Path("reports/model_drift.json"), Path("reports/model_drift.html")])
    if report["alarm"]:
        get_run_logger().warning("model drift: %s", ", ".join(report["alarms"]))
    return report


@task(name="notify", retries=2, retry_delay_seconds=10)
def notify(summary: dict, p: params_mod.Params) -> bool:
    """Alert through Apprise when the cycle failed or the gate rejected its candidate."""
    sent = notify_stage.send(summary, p, _flow_run_id())
    if sent:
        get_run_logger().info("alert sent to %d channel(s)", len(notify_stage.alert_urls()))
    return sent


def recover_interrupted(ws: Path, p: params_mod.Params) -> dict:
    """Clean up after a run of any date that was killed: DVC's stale locks, and versions
    registered whose alias move never happened (their verdict is applied now, recorded once)."""
    log = get_run_logger()
    stale = wsp.clear_stale_dvc_locks(ws)
    for entry in stale:
        log.warning("a killed run left a DVC lock: %s; removed it (its process is gone)", entry)
    git_lock = wsp.clear_stale_git_lock(ws)
    if git_lock:
        log.warning("a killed run left git's %s and no git process is running here; removed it",
                    git_lock)
    with chdir(ws):
        finished = history.finish_pending(
            p.registry, by=f"nightly flow run {_flow_run_id()}, finishing an interrupted run")
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
    import yaml

    cycle_file = ws / ingest_stage.CYCLE_FILE
    last = str(yaml.safe_load(cycle_file.read_text())["cycle"]["date"]) if cycle_file.exists() else "none"
    if last in ("none", day.isoformat()) or not (ws / ".git").exists():
        return None
    if read_json(ws / f"reports/cycles/{last}.json").get("status") in ("succeeded", "skipped"):
        return None
    if wsp.git(ws, "log", "-1", "--format=%s").strip() != f"nightshift cycle {last}":
        return None  # not versioned (it failed earlier), or the workspace moved on since
    if wsp.git(ws, "status", "--porcelain").strip():
        return None
    with chdir(ws):
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
    log = get_run_logger()
    log.warning("cycle %s was versioned (commit made, data pushed) but never registered: the run "
                "was killed or register failed; registering it now, before cycle %s", last, day)
    versioned = {"git_commit": wsp.git(ws, "rev-parse", "HEAD").strip(),
                 "data_version": _dvc_md5(ws / snapshot_dvc_file(last))}
    parent = read_json(ws / PARENT_DIR / "PARENT.json").get("version")
    registered = register(ws, dt.date.fromisoformat(last), parent, versioned)
    return {"cycle": last, **apply_verdict(ws, registered)}


def accounting(ws: Path, pulled: dict) -> dict:
    """Every record pulled is clean, quarantined, a duplicate or forgotten (dropped by ingest: its
    person was erased by `nightshift forget`); raises AccountingError if not."""
    validated = read_json(ws / "data/validated/report.json")
    dataset = read_json(ws / "data/dataset/report.json")
    counts = {"pulled": pulled["pulled"], "clean": dataset.get("unique"),
              "quarantined": validated.get("quarantined"), "duplicates": dataset.get("duplicates"),
              "forgotten": pulled["forgotten"]}
    # The parts, for the summary: clean includes the records kept out of training by their
    # feedback; duplicates are exact ones plus near ones within the batch and to the replay buffer.
    parts = {k: dataset.get(k) for k in ("filtered_feedback", "exact_duplicates",
                                         "near_duplicates_in_batch", "near_duplicates_of_replay")}
    if None in counts.values():
        return {**counts, **parts, "balanced": None}
    balanced = counts["pulled"] == (counts["clean"] + counts["quarantined"] + counts["duplicates"]
                                    + counts["forgotten"])
    if not balanced:
        raise AccountingError(f"records unaccounted for: {counts}")
    return {**counts, **parts, "balanced": True}


def new_examples(ws: Path) -> int:
    """The night's learnable new examples (for training and held out), after dedup and filters."""
    dataset = read_json(ws / "data/dataset/report.json")
    return dataset["train_new"] + dataset["eval"]


def write_summary(ws: Path, summary: dict) -> None:
    write_json(ws / "reports/summary.json", summary)
    write_json(ws / f"reports/cycles/{summary['cycle']}.json", summary)


@flow(name="nightly", log_prints=True)
def nightly(date: str | None = None, workspace: str = ".", source: str | None = None) -> dict:
    """One nightly cycle: ingest (redacting as it pulls) -> validate -> dataset -> train -> evaluate -> gate
    -> version -> register (drift runs after dataset). `date` is the day whose interactions are
    learned (default: yesterday on the clock of schedule.timezone). One cycle at a time per
    workspace: a second start while one runs fails at once with cycle_lock.CycleRunning.
    """
    ws = Path(workspace).resolve()
    p = params_mod.load(ws / "params.yaml")
    reg.configure_retries(p.retries)
    day = dt.date.fromisoformat(date) if date else p.schedule.yesterday()
    with cycle_lock.hold(ws, day.isoformat()):
        return _cycle(ws, day, source, p)


def _cycle(ws: Path, day: dt.date, source: str | None, p: params_mod.Params) -> dict:
    """The body of one cycle, run while the workspace's lock is held."""
    log = get_run_logger()
    recovered = recover_interrupted(ws, p)
    finished_night = finish_unregistered_night(ws, day, p)
    with chdir(ws):
        existing = reg.find_version_for_cycle(p.registry, day.isoformat())
    if existing:
        finished = [f for f in recovered["finished_versions"] if f["version"] == existing]
        if finished:
            log.info("cycle %s was registered as version %s by a run that was interrupted; its "
                     "verdict is applied now: %s", day, existing, finished[0]["reason"])
            return {"cycle": day.isoformat(), "status": "finished_interrupted",
                    "version": existing, **{k: finished[0][k] for k in ("alias", "promoted", "reason")}}
        log.info("cycle %s is already registered as version %s: nothing to do, nothing changed",
                 day, existing)
        return {"cycle": day.isoformat(), "status": "already_done", "version": existing}

    summary: dict = {"cycle": day.isoformat(), "status": "running", "timings": {},
                     "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if finished_night:
        summary["finished_earlier_night"] = {k: finished_night[k] for k in
                                             ("cycle", "version", "alias", "promoted", "reason")}

    def step(name: str, fn, *args):
        summary["stage"] = name
        started = time.time()
        result = fn(*args)
        summary["timings"][name] = round(time.time() - started, 1)
        if os.environ.get(CRASH_AFTER_ENV) == name:
            log.warning("%s=%s: killing this process (SIGKILL), as a crash would", CRASH_AFTER_ENV, name)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    version_with_retries = version.with_options(
        retries=p.retries.dvc_remote, retry_delay_seconds=p.retries.dvc_remote_delays() or 0)

    def skip(reason: str) -> dict:
        """Too little new data: no training, but the data is versioned and the summary written."""
        log.info("cycle %s skipped: %s", day, reason)
        versioned = step("version", version_with_retries, ws, day)
        summary.update(status="skipped", reason=reason, git_commit=versioned["git_commit"],
                       data_version=versioned["data_version"])
        return summary

    try:
        ingest_with_retries = ingest.with_options(retries=p.ingest.retries,
                                                  retry_delay_seconds=p.ingest.retry_delays() or 0)
        pulled = step("ingest", ingest_with_retries, ws, day, source)
        summary["pulled"] = pulled["pulled"]
        summary["reused_snapshot"] = pulled["reused_snapshot"]
        summary["redaction"] = {k: pulled["redaction"].get(k) for k in (
            "replaced", "records_with_residual", "entities_not_looked_for", "ner_model")}
        if pulled["in_snapshot"] == 0:
            # Nothing new: no stage has anything to do. The empty snapshot is still versioned.
            summary["accounting"] = {"pulled": pulled["pulled"], "clean": 0, "quarantined": 0,
                                     "duplicates": 0, "forgotten": pulled["forgotten"],
                                     "balanced": True}
            return skip(f"no new records in the source for {day} (if some were expected, check "
                        "the logging upstream)")
        pinned = step("pin_inputs", pin_inputs, ws, day)
        summary["parent_version"] = pinned["parent_version"]
        for stage in DATA_STAGES:
            step(stage, dvc_stage.with_options(name=f"dvc-{stage}"), ws, stage)
        summary["accounting"] = accounting(ws, pulled)
        summary["new_examples"] = new_examples(ws)
        if summary["new_examples"] < p.nightly.min_new_examples:
            return skip(f"{summary['new_examples']} learnable new examples, fewer than "
                        f"nightly.min_new_examples ({p.nightly.min_new_examples}); they join the "
                        "replay buffer that later nights replay from")
        for stage in MODEL_STAGES:
            step(stage, dvc_stage.with_options(name=f"dvc-{stage}"), ws, stage)
        versioned = step("version", version_with_retries, ws, day)
        registered = step("register", register, ws, day, pinned["parent_version"], versioned)
        registered = step("apply_verdict", apply_verdict, ws, registered)
        summary.update(status="succeeded", version=registered["version"],
                       promoted=registered["promoted"], alias=registered["alias"],
                       reason=registered["reason"], git_commit=versioned["git_commit"],
                       data_version=versioned["data_version"])
        drifted = step("model_drift", model_drift, ws, day, registered)
        summary["model_drift"] = {"alarm": drifted["alarm"], "alarms": drifted["alarms"],
                                  "divergence": drifted["divergence"],
                                  "report": str(ws / "reports/model_drift.html")}
    except Exception as exc:
        summary.update(status="failed", failed_stage=summary["stage"],
                       error=f"{type(exc).__name__}: {exc}")
        if "dataset" in summary["timings"] and "accounting" not in summary:
            try:
                summary["accounting"] = accounting(ws, pulled)
            except AccountingError as acc:
                summary["accounting_error"] = str(acc)
        raise
    finally:
        summary.pop("stage")
        # Only reports this cycle wrote: a stage that did not run left last cycle's files.
        ran = set(summary["timings"]) | {summary.get("failed_stage")}
        summary.update(_report_numbers(ws, ran))
        summary["seconds"] = round(sum(summary["timings"].values()), 1)
        write_summary(ws, summary)
        log.info("summary written to %s", ws / "reports/summary.json")
        try:
            notify(summary, p)
        except Exception as exc:  # a broken alert channel must not hide what the cycle did
            log.error("alert not sent: %s", exc)
    return summary


def _report_numbers(ws: Path, ran: set[str]) -> dict:
    """Quarantine reasons, training and evaluation numbers and the verdict, of the stages in `ran`."""
    out: dict = {}
    if "validate" in ran:
        validated = read_json(ws / "data/validated/report.json")
        out["quarantine_reasons"] = validated.get("quarantine_reasons")
        out["quarantined"] = validated.get("quarantined")
        out["validation"] = {"batch_passed": validated.get("batch_passed"),
                             "batch_failures": validated.get("batch_failures"),
                             "data_docs": str(ws / "reports/data_docs/index.html")
                             if (ws / "reports/data_docs/index.html").exists() else None}
    if "drift" in ran:
        drift = read_json(ws / "reports/drift.json")
        out["drift"] = {"alarm": drift.get("alarm"), "alarms": drift.get("alarms"),
                        "note": drift.get("note"), "report": str(ws / "reports/drift.html")}
    if "train" in ran:
        train = read_json(ws / "reports/train.json")
        out["train"] = {k: train.get(k) for k in ("examples", "steps", "first_loss", "final_loss",
                                                   "tokens_per_second", "continued_from_parent")}
    if "evaluate" in ran:
        evaluation = read_json(ws / "reports/eval.json")
        out["eval"] = {k: metric(evaluation.get(k), "new.eval_loss")
                       for k in ("candidate", "champion", "base")}
        out["eval_sets"] = {s: {k: metric(evaluation.get(k), f"{s}.eval_loss")
                                for k in ("candidate", "champion", "base")} for s in SETS}
    if "gate" in ran:
        gate = read_json(ws / "reports/gate.json")
        out["gate"] = {"passed": gate.get("passed"), "reasons": gate.get("reasons")}
    return out


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else "none"


def snapshot_dvc_file(cycle: str) -> Path:
    """The .dvc file that pins a cycle's redacted snapshot: its md5 is the cycle's data version."""
    return ingest_stage.SNAPSHOT_DIR / f"{cycle}.jsonl.dvc"


def _dvc_md5(dvc_file: Path) -> str:
    import yaml

    if not dvc_file.exists():
        return "none"
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


def _without_password(url: str) -> str:
    """A database URL as logged to MLflow: its password masked (a credential never rests there)."""
    if not ingest_stage.is_sql_url(url):
        return url
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(unparseable URL, not logged)"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
