"""The redaction map through Prefect's Dask task runner: chunks of records as tasks on Dask
worker processes (on one machine here; a Dask cluster's address spreads them over machines).

The same Redactor as the redact stage does the work, chunk by chunk, and the chunks are written
back in order, so the output is byte-identical to `python -m pipelines.redact`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from pipelines import params as params_mod
from pipelines import redact


@functools.lru_cache(maxsize=1)
def _redactor(p: params_mod.RedactParams) -> redact.Redactor:
    return redact.Redactor(p)


@task(name="redact-chunk", cache_policy=NO_CACHE)
def redact_chunk(p: dict, lines: list[bytes]) -> tuple[list[str], Counter, Counter, int]:
    params = params_mod.RedactParams(**{**p, "entities": tuple(p["entities"])})
    return _redactor(params).redact_lines(lines)


@flow(name="redact-dask")
def redact_map(in_path: str, out_path: str, p: dict) -> dict:
    """Redact IN to OUT with one task per chunk of `chunk_records` records."""
    with open(in_path, "rb") as f:
        lines = [line.rstrip(b"\r\n") for line in f if line.strip()]
    size = p["chunk_records"]
    futures = redact_chunk.map(unmapped(p), [lines[i:i + size] for i in range(0, len(lines), size)])
    replaced, residual = Counter(), Counter()
    n = flagged = 0
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as out:
        for future in futures:
            json_lines, chunk_replaced, chunk_residual, chunk_flagged = future.result()
            out.writelines(line + "\n" for line in json_lines)
            n += len(json_lines)
            replaced += chunk_replaced
            residual += chunk_residual
            flagged += chunk_flagged
    # The same report as the stage's own runner (entity types looked for and not, ...).
    report = _redactor(params_mod.RedactParams(**{**p, "entities": tuple(p["entities"])})).report(n)
    report.update(replaced=dict(sorted(replaced.items())), residual=dict(sorted(residual.items())),
                  records_with_residual=flagged)
    return report


def redact_with_dask(p: params_mod.RedactParams, in_path: Path, out_path: Path, workers: int,
                     address: str | None = None) -> dict:
    """Run `redact_map` on a local Dask cluster of `workers` single-threaded processes, or on the
    running Dask cluster whose scheduler is at `address` (tcp://host:8786).

    Dask's worker processes report their task runs to the Prefect API of PREFECT_API_URL. Without
    one configured, a temporary API server is started for the run (Prefect's ephemeral mode would
    start one per worker process) and stopped after it.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect_dask import DaskTaskRunner

    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = SubprocessASGIServer()
        server.start()
        os.environ["PREFECT_API_URL"] = server.api_url
    try:
        runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(
            cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None})
        return redact_map.with_options(task_runner=runner)(str(in_path), str(out_path),
                                                           dataclasses.asdict(p))
    finally:
        if server is not None:
            # Send the queued logs and events while their server is up: left for interpreter exit,
            # the workers would wait on a server that is gone (as prefect_test_harness does).
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all()
            EventsWorker.drain_all()
            del os.environ["PREFECT_API_URL"]
            server.stop()
