"""The `demo` flow: bundled sample logs, then the next nightly cycles over them.

Each call continues where the last stopped: the first runs the first days of the sample, the next
call the days after, until the sample's days are used up.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import flow, get_run_logger

from flows import workspace as wsp
from flows.nightly import nightly
from pipelines.common import params as params_mod
from pipelines.samples import sample_logs
from registry import mlflow_registry as reg


def sample_days(p: params_mod.DemoParams) -> list[dt.date]:
    start = dt.date.fromisoformat(p.start_date)
    return [start + dt.timedelta(days=d) for d in range(p.days)]


@flow(name="demo", log_prints=True)
def demo(workspace: str = "demo", cycles: int | None = None) -> list[dict]:
    """Write the sample logs into <workspace>/logs and run the next `cycles` cycles on them."""
    log = get_run_logger()
    ws = Path(workspace).resolve()
    p = wsp.load_params(ws)
    logs = ws / p.ingest.url
    sample_logs.generate(logs, dt.date.fromisoformat(p.demo.start_date), p.demo.days,
                         p.demo.records_per_day, p.seed, p.demo.topic_shift)
    pending = [d for d in sample_days(p.demo)
               if not reg.find_version_for_cycle(p.registry, d.isoformat())]
    todo = pending[: cycles if cycles is not None else p.demo.cycles]
    if not todo:
        log.info("all %d sample days have been run; `nightshift demo --fresh` starts over", p.demo.days)
        return []
    log.info("running %d cycle(s): %s", len(todo), ", ".join(d.isoformat() for d in todo))
    return [nightly(date=d.isoformat(), workspace=str(ws)) for d in todo]
