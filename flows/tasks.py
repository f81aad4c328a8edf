"""The nightly flow's steps as Prefect tasks, one per step and named like it (ingest, pin_inputs,
the DAG stages, version, register, apply_verdict, model_drift, notify).

Each task is a thin wrapper: the work is a function of pipelines/ (a stage), registry/ or the
workspace's dvc and git; the task adds the retry policy and the log lines a person reads in the
Prefect UI. Paths come from pipelines/common/paths.py, relative to the workspace `ws`; the
params are the flow's, loaded once with the registry's store made absolute against the workspace
(flows.workspace.load_params), so no task depends on the working directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import yaml
from prefect import get_run_logger, task

from flows import notify as notify_step
from flows import pinning
from flows import workspace as wsp
from pipelines.common import params as params_mod
from pipelines.common import paths
from pipelines.common.records import read_json
from pipelines.data import ingest as ingest_stage
from pipelines.model import model_drift as model_drift_stage
from pipelines.model import worth as worth_stage
from pipelines.privacy import subjects
from registry import erasure, history, lineage
from registry import mlflow_registry as reg


class RemoteError(RuntimeError):
    """`dvc push` to the remote failed: a network share or bucket that a retry may reach."""


def retry_only(*retryable: type[BaseException]):
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


retry_source_errors = retry_only(ingest_stage.SourceError)


def flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else "none"


def _attempts(retries: int) -> tuple[int, int]:
    from prefect.runtime import task_run

    return task_run.run_count or 1, retries + 1


@task(name="ingest", retry_condition_fn=retry_source_errors)
def ingest(ws: Path, date: dt.date, p: params_mod.Params, source_url: str | None) -> dict:
    """Pull records newer than the watermark, redacted as they are pulled, into
    data/snapshots/<date>.jsonl, and pin it with DVC. Nothing unredacted is written.

    Retried (ingest.retries, with Prefect's exponential backoff from ingest.retry_backoff_seconds:
    the flow sets both) while the source cannot be read; the watermark moves only on success.
    """
    log = get_run_logger()
    source = p.ingest if source_url is None else dataclasses.replace(p.ingest, url=source_url)
    if not ingest_stage.is_sql_url(source.url):
        source = dataclasses.replace(source, url=str((ws / source.url).resolve()))
    attempt, attempts = _attempts(p.ingest.retries)
    try:
        metrics = ingest_stage.run(
            source, p.redact, date, snapshot_dir=ws / paths.SNAPSHOTS, watermark_file=ws / paths.WATERMARK,
            cycle_file=ws / paths.CYCLE_FILE, salt_file=ws / subjects.SALT_FILE,
            tombstones_file=ws / subjects.TOMBSTONES_FILE, log=log.info,
            timezone=p.schedule.timezone)
    except ingest_stage.SourceError as exc:
        if attempt < attempts:
            log.warning("ingest attempt %d of %d failed, retrying: %s", attempt, attempts, exc)
        raise ingest_stage.SourceError(f"{exc} (attempt {attempt} of {attempts})") from exc
    metrics["snapshot"] = str(Path(metrics["snapshot"]).relative_to(ws))
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


@task(name="pin_inputs")
def pin_inputs(ws: Path, date: dt.date, p: params_mod.Params) -> dict:
    """Put the parent adapter (@champion now), the replay buffer and the retrieval index in place,
    pinned by DVC."""
    parent_version = pinning.pin_parent_adapter(p.registry, ws / paths.PARENT_DIR)
    pinning.pin_grown(date, ws / paths.NEXT_BUFFER, ws / paths.DATASET_REPORT, ws / paths.BUFFER)
    pinning.pin_grown(date, ws / paths.RETRIEVAL_INDEX, ws / paths.RETRIEVAL_REPORT, ws / paths.PAST_INDEX)
    wsp.dvc(ws, "add", "-q", str(paths.PARENT_DIR), str(paths.BUFFER), str(paths.PAST_INDEX))
    get_run_logger().info("training continues from @champion = version %s", parent_version
                          if parent_version else "none: a new adapter starts")
    return {"parent_version": parent_version}


@task(name="dvc_stage")
def dvc_stage(ws: Path, stage: str) -> None:
    """`dvc repro --single-item <stage>`: runs it if its deps or params changed, else DVC skips
    it. The flow runs the stages in DAG order, so each finds its upstream stages up to date."""
    log = get_run_logger()
    wsp.dvc(ws, "repro", "--single-item", stage, log=lambda line: log.info("%s", line))


@task(name="version", retry_condition_fn=retry_only(RemoteError))
def version(ws: Path, date: dt.date, p: params_mod.Params | None = None) -> dict:
    """Push the cycle's data and models to the DVC remote; record dvc.lock in git.

    A failed push is retried (version.retries, with Prefect's exponential backoff from
    version.retry_backoff_seconds: the flow sets both): it uploads only what is missing.
    """
    p = p or wsp.load_params(ws)
    attempt, attempts = _attempts(p.version.retries)
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
    return {"git_commit": commit, "data_version": data_version(ws, date.isoformat())}


def data_version(ws: Path, cycle: str) -> str:
    """The md5 of the night's redacted snapshot, as its .dvc file pins it ("none" if it has none)."""
    dvc_file = ws / paths.snapshot_dvc_file(cycle)
    if not dvc_file.exists():
        return "none"
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


@task(name="register")
def register(ws: Path, date: dt.date, p: params_mod.Params, parent_version: str | None,
             versioned: dict) -> dict:
    """Register the candidate with its lineage; the gate's verdict decides the alias move.

    Not retried as a task (a second attempt could register the candidate twice): each request
    to a tracking server is retried by MLflow's HTTP client instead (registry.retries).
    """
    evaluation, verdict = read_json(ws / paths.EVAL_REPORT), read_json(ws / paths.GATE_REPORT)
    tags = lineage.lineage(date.isoformat(), parent_version, versioned, p, flow_run_id(), evaluation,
                           erasure.inherited(p.registry, parent_version))
    reports = [paths.EVAL_REPORT, paths.GATE_REPORT, paths.TRAIN_REPORT, paths.DRIFT_REPORT,
               paths.DRIFT_HTML, paths.VALIDATED_REPORT, paths.snapshot_report(date.isoformat())]
    worth = read_json(ws / paths.WORTH_REPORT)
    if worth.get("cycle") == date.isoformat():
        reports += [paths.WORTH_REPORT, paths.WORTH_HTML]
    metrics = lineage.run_metrics(evaluation, read_json(ws / paths.TRAIN_REPORT))
    metrics |= worth_stage.metrics(worth) if worth.get("cycle") == date.isoformat() else {}
    result = reg.register(p.registry, ws / paths.CANDIDATE_DIR, f"cycle-{date.isoformat()}", tags, metrics,
                          lineage.logged_params(p), [ws / r for r in reports], verdict)
    log = get_run_logger()
    for run_id in result["deleted_orphan_runs"]:
        log.warning("run %s of cycle %s was logged by a register killed before it created the "
                    "version; deleted it (restorable among the MLflow UI's deleted runs)", run_id, date)
    log.info("registered version %s (gate %s)", result["version"],
             "passed" if verdict["passed"] else "rejected")
    return result


@task(name="apply_verdict")
def apply_verdict(ws: Path, p: params_mod.Params, registered: dict) -> dict:
    """Move the alias the gate's verdict says (recorded in the history) and mark the version
    finalised; until then it is `pending`, and a run killed here is finished by the next one."""
    result = history.apply_verdict(p.registry, registered["version"],
                                   read_json(ws / paths.GATE_REPORT), by=f"nightly flow run {flow_run_id()}")
    get_run_logger().info("version %s: %s", registered["version"], result["reason"])
    return {**registered, **result}


@task(name="worth")
def worth(ws: Path, date: dt.date, p: params_mod.Params, timings: dict[str, float]) -> dict:
    """The candidate against prompting and few-shot retrieval, the cycle's cost so far
    (`timings`: seconds per step) and the break-even at the volume the source logged that day.

    A re-run of a night over the same evaluation (a run killed after this step, run again: DVC
    finds its stages done) keeps the report of the run that did the work: its costs are the
    night's, the re-run's would be DVC's checks, and the night's commit stays the only one."""
    evaluation = read_json(ws / paths.EVAL_REPORT)
    kept = read_json(ws / paths.WORTH_REPORT)
    if kept.get("cycle") == date.isoformat() and kept.get("evaluation") == worth_stage.evaluation_hash(evaluation):
        get_run_logger().info("worth: this night's report is kept (the run that did its work wrote it)")
        return kept
    logged = read_json(ws / paths.snapshot_report(date.isoformat())).get("records", 0)
    feedback_events = read_json(ws / paths.DATASET_REPORT).get("feedback_events", 0)
    report = worth_stage.write(p.worth, p.seed, date.isoformat(), evaluation,
                               read_json(ws / paths.TRAIN_REPORT), timings,
                               max(logged - feedback_events, 0), ws / paths.WORTH_REPORT)
    log = get_run_logger()
    (log.warning if report["not_paying"] else log.info)("worth: %s", report["headline"])
    return report


@task(name="model_drift")
def model_drift(ws: Path, date: dt.date, p: params_mod.Params, registered: dict) -> dict:
    """The candidate against the champion and against the metric history; logged to its run."""
    outputs = [ws / paths.MODEL_DRIFT_REPORT, ws / paths.MODEL_DRIFT_HTML]
    report = model_drift_stage.run(
        p.model_drift, date.isoformat(), read_json(ws / paths.EVAL_REPORT), registered["version"],
        reg.metric_history(p.registry, p.model_drift.trend_history), *outputs)
    reg.log_reports(p.registry, registered["run_id"], outputs)
    if report["alarm"]:
        get_run_logger().warning("model drift: %s", ", ".join(report["alarms"]))
    return report


@task(name="notify", retries=2, retry_delay_seconds=10)
def notify(summary, p: params_mod.Params) -> bool:
    """Alert through Apprise when the cycle failed, the gate rejected its candidate or drift
    raised an alarm."""
    sent = notify_step.send(summary, p, flow_run_id())
    if sent:
        get_run_logger().info("alert sent to %d channel(s)", len(notify_step.alert_urls()))
    return sent
