"""The `nightly` Prefect flow: one cycle, from yesterday's log to a registered, gated adapter.

The flow only wires the steps (flows/tasks.py) in the order of the cycle. The stages of the DVC
DAG run through `dvc repro <stage>`, so DVC decides what is up to date and records dvc.lock;
Prefect adds the schedule, retries on I/O, logs and the UI. Ingest (which redacts as it pulls),
version, register and model_drift are the steps outside the DAG. A killed cycle is finished by
the next run (flows/recovery.py); what the cycle did is a CycleSummary (flows/summary.py).

Test hook: NIGHTSHIFT_CRASH_AFTER=<step> (a step name of `nightly`, e.g. `version` or
`register`) makes the flow SIGKILL its own process right after that step, so tests can leave
the exact state a crash there leaves. Production never sets it; nightshift never does.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.tasks import exponential_backoff

from flows import cycle_lock, rebase, recovery, tasks
from flows import workspace as wsp
from flows.summary import Accounting, AccountingError, Alarms, CycleSummary, accounting, new_examples
from pipelines.common import params as params_mod
from pipelines.common import paths
from registry import mlflow_registry as reg

CRASH_AFTER_ENV = "NIGHTSHIFT_CRASH_AFTER"  # test hook only: see the module docstring
# The DAG in two parts: the data stages run for every night with records; the model stages only
# when the night brings at least nightly.min_new_examples learnable examples.
DATA_STAGES = ["validate", "dataset", "retrieval"]
MODEL_STAGES = ["base_model", "drift", "train", "evaluate", "gate"]
DAG_STAGES = DATA_STAGES + MODEL_STAGES


@flow(name="nightly", log_prints=True)
def nightly(date: str | None = None, workspace: str = ".", source: str | None = None) -> dict:
    """One nightly cycle: ingest (redacting as it pulls) -> validate -> dataset -> retrieval -> base_model ->
    drift -> train -> evaluate -> gate -> worth -> version -> register -> model_drift. `date` is the day
    whose interactions are learned (default: yesterday on the clock of schedule.timezone). One
    cycle at a time per workspace: a second start while one runs fails at once with
    cycle_lock.CycleRunning. Returns the cycle's summary (reports/summary.json).
    """
    ws = Path(workspace).resolve()
    p = wsp.load_params(ws)
    reg.configure_retries(p.registry)
    day = dt.date.fromisoformat(date) if date else p.schedule.yesterday()
    with cycle_lock.hold(ws, day.isoformat()):
        if rebase.follow_champion(ws, p):  # @champion moved across a rebase since the last cycle
            p = wsp.load_params(ws)
            get_run_logger().info("base_model.model follows @champion: %s", p.base_model.model)
        return _cycle(ws, day, source, p).to_dict()


def _cycle(ws: Path, day: dt.date, source: str | None, p: params_mod.Params) -> CycleSummary:
    """The body of one cycle, run while the workspace's lock is held."""
    log = get_run_logger()
    recovered = recovery.recover_interrupted(ws, p)
    finished_night = recovery.finish_unregistered_night(ws, day, p)
    done = _already_registered(ws, day, p, recovered)
    if done:
        return done

    summary = CycleSummary.start(day)
    if finished_night:
        summary.finished_earlier_night = {k: finished_night[k] for k in
                                          ("cycle", "version", "alias", "promoted", "reason")}

    def step(name: str, fn, *args):
        summary.stage = name
        started = time.time()
        result = fn(*args)
        summary.timings[name] = round(time.time() - started, 1)
        if os.environ.get(CRASH_AFTER_ENV) == name:
            log.warning("%s=%s: killing this process (SIGKILL), as a crash would", CRASH_AFTER_ENV, name)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    ingest = tasks.ingest.with_options(retries=p.ingest.retries,
                                       retry_delay_seconds=exponential_backoff(p.ingest.retry_backoff_seconds))
    version = tasks.version.with_options(retries=p.version.retries,
                                         retry_delay_seconds=exponential_backoff(p.version.retry_backoff_seconds))

    def skip(reason: str) -> CycleSummary:
        """Too little new data: no training, but the data is versioned and the summary written."""
        log.info("cycle %s skipped: %s", day, reason)
        versioned = step("version", version, ws, day, p)
        summary.status, summary.reason = "skipped", reason
        summary.git_commit, summary.data_version = versioned["git_commit"], versioned["data_version"]
        return summary  # completed by the `finally` below before the caller reads it

    pulled = None
    try:
        pulled = step("ingest", ingest, ws, day, p, source)
        summary.pulled, summary.reused_snapshot = pulled["pulled"], pulled["reused_snapshot"]
        summary.redaction = {k: pulled["redaction"].get(k) for k in (
            "replaced", "records_with_residual", "entities_not_looked_for", "ner_model")}
        if pulled["in_snapshot"] == 0:
            # Nothing new: no stage has anything to do. The empty snapshot is still versioned.
            summary.accounting = Accounting(pulled=pulled["pulled"], clean=0, quarantined=0, duplicates=0,
                                            forgotten=pulled["forgotten"], balanced=True)
            return skip(f"no new records in the source for {day} (if some were expected, check "
                        "the logging upstream)")
        pinned = step("pin_inputs", tasks.pin_inputs, ws, day, p)
        summary.parent_version = pinned["parent_version"]
        for stage in DATA_STAGES:
            step(stage, tasks.dvc_stage.with_options(name=stage), ws, stage)
        summary.accounting = accounting(ws, pulled)
        summary.new_examples = new_examples(ws)
        if summary.new_examples < p.nightly.min_new_examples:
            return skip(f"{summary.new_examples} learnable new examples, fewer than "
                        f"nightly.min_new_examples ({p.nightly.min_new_examples}); they join the "
                        "replay buffer that later nights replay from")
        for stage in MODEL_STAGES:
            step(stage, tasks.dvc_stage.with_options(name=stage), ws, stage)
        worth = step("worth", tasks.worth, ws, day, p, dict(summary.timings))
        summary.worth = {k: worth[k] for k in ("headline", "over_retrieval", "over_prompting", "diagnosis",
                                               "caveat", "nights_retrieval_matched", "not_paying")}
        summary.worth.update(cycle_cost_usd=worth["cost"]["usd"],
                             break_even_requests_per_day=worth["break_even"]["break_even_requests_per_day"],
                             report=str(ws / paths.WORTH_HTML))
        versioned = step("version", version, ws, day, p)
        registered = step("register", tasks.register, ws, day, p, pinned["parent_version"], versioned)
        registered = step("apply_verdict", tasks.apply_verdict, ws, p, registered)
        summary.status = "succeeded"
        summary.version, summary.promoted = registered["version"], registered["promoted"]
        summary.alias, summary.reason = registered["alias"], registered["reason"]
        summary.git_commit, summary.data_version = versioned["git_commit"], versioned["data_version"]
        drifted = step("model_drift", tasks.model_drift, ws, day, p, registered)
        summary.model_drift = Alarms(alarm=drifted["alarm"], alarms=drifted["alarms"],
                                     divergence=drifted["divergence"],
                                     report=str(ws / paths.MODEL_DRIFT_HTML))
    except Exception as exc:
        summary.status, summary.failed_stage = "failed", summary.stage
        summary.error = f"{type(exc).__name__}: {exc}"
        if "dataset" in summary.timings and summary.accounting is None:
            try:
                summary.accounting = accounting(ws, pulled)
            except AccountingError as acc:
                summary.accounting_error = str(acc)
        raise
    finally:
        summary.stage = None
        summary.add_reports(ws, set(summary.timings) | {summary.failed_stage})
        summary.seconds = round(sum(summary.timings.values()), 1)
        summary.write(ws)
        log.info("summary written to %s", ws / paths.SUMMARY)
        try:
            tasks.notify(summary, p)
        except Exception as exc:  # a broken alert channel must not hide what the cycle did
            log.error("alert not sent: %s", exc)
    return summary


def _already_registered(ws: Path, day: dt.date, p: params_mod.Params,
                        recovered: dict) -> CycleSummary | None:
    """The summary of a night the registry already holds (nothing is done again), else None."""
    existing = reg.find_version_for_cycle(p.registry, day.isoformat())
    if not existing:
        return None
    log = get_run_logger()
    finished = [f for f in recovered["finished_versions"] if f["version"] == existing]
    if finished:
        log.info("cycle %s was registered as version %s by a run that was interrupted; its "
                 "verdict is applied now: %s", day, existing, finished[0]["reason"])
        return CycleSummary(cycle=day.isoformat(), status="finished_interrupted", version=existing,
                            **{k: finished[0][k] for k in ("alias", "promoted", "reason")})
    log.info("cycle %s is already registered as version %s: nothing to do, nothing changed",
             day, existing)
    return CycleSummary(cycle=day.isoformat(), status="already_done", version=existing)
