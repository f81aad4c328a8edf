"""The executor that redaction maps its chunks over, chosen by params.yaml `redact.runner`.

- `processes`: a `concurrent.futures.ProcessPoolExecutor` of `redact.workers` processes on this
  machine. Forked where that is safe (a process with no other threads: a thread holding a lock
  at the fork would leave it locked for ever in the child), so the workers start with the
  redactor the parent built; spawned otherwise (inside a Prefect task), each worker building its
  own through the initializer.
- `dask`: the executor of a Dask `distributed` client (`Client.get_executor()`), on a local
  cluster of `redact.workers` single-threaded worker processes started for the run, or on the
  running cluster whose scheduler is at `redact.dask_address` (tcp://host:8786), to spread a big
  night over machines.

Either way the raw text travels to the workers in memory only: the local Dask cluster runs with
memory management off (`memory_limit=0`), so a worker never spills a chunk to its disk (give a
remote cluster the same setting: `distributed.worker.memory.spill: false`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import multiprocessing
import threading
from collections.abc import Callable, Iterator

from pipelines.common import params as params_mod


@contextlib.contextmanager
def chunk_executor(p: params_mod.RedactParams, initializer: Callable[..., None],
                   initargs: tuple = ()) -> Iterator[tuple[concurrent.futures.Executor, int]]:
    """The executor of `p.runner` and its number of workers, shut down (cluster and all) on exit.

    `initializer(*initargs)` runs once in each process-pool worker; Dask workers have no
    initializer, so what is mapped must set itself up on first use.
    """
    if p.runner == "dask":
        with _dask_executor(p) as (executor, workers):
            yield executor, workers
        return
    method = "fork" if threading.active_count() == 1 else "spawn"
    executor = concurrent.futures.ProcessPoolExecutor(
        max_workers=p.workers, mp_context=multiprocessing.get_context(method),
        initializer=initializer, initargs=initargs)
    try:
        yield executor, p.workers
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _dask_executor(p: params_mod.RedactParams) -> Iterator[tuple[concurrent.futures.Executor, int]]:
    from distributed import Client, LocalCluster

    if p.dask_address:
        client, cluster = Client(p.dask_address), None
    else:
        cluster = LocalCluster(n_workers=p.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit=0)
        client = Client(cluster)
    try:
        # pure=False: two equal chunks are two tasks, never one result shared under one key.
        executor = client.get_executor(pure=False)
        try:
            yield executor, max(len(client.scheduler_info()["workers"]), 1)
        finally:
            executor.shutdown(wait=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_in_order(executor: concurrent.futures.Executor, fn: Callable, items, ahead: int) -> Iterator:
    """`fn(item)` for each item, computed on `executor` and yielded in the items' order, with at
    most `ahead` items submitted and not yet yielded: `items` is read as the work goes."""
    pending: collections.deque[concurrent.futures.Future] = collections.deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
