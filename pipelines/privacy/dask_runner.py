"""Redaction on a Dask cluster (redact.runner: dask): chunks of records as Dask tasks on worker
processes, on this machine (`redact.workers` of them) or on the running cluster whose scheduler
is at `redact.dask_address` (tcp://host:8786), to spread a big night over machines.

The same Redactor does the work, one per worker process, and the chunks come back in order, so
the output is byte-identical to the process pool's. Raw text travels to the workers in memory
only: the local cluster is started with memory management off, so a worker never spills a chunk
to its disk (give a remote cluster the same setting: `distributed.worker.memory.spill: false`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

from pipelines.common import params as params_mod
from pipelines.privacy import redact


# The redactor of this worker process, built by its first chunk and kept for the next ones.
_REDACTOR: redact.Redactor | None = None


def _redactor(p: params_mod.RedactParams) -> redact.Redactor:
    global _REDACTOR
    if _REDACTOR is None or _REDACTOR.params != p:
        _REDACTOR = redact.Redactor(p)
    return _REDACTOR


def _redact_on_worker(p: params_mod.RedactParams, lines: list[bytes], salt: bytes | None) -> redact.Chunk:
    return _redactor(p).redact_lines(lines, salt)


def redact_chunks(p: params_mod.RedactParams, chunks: Iterable[list[bytes]],
                  salt: bytes | None) -> Iterator[redact.Chunk]:
    """Each chunk redacted on the cluster, yielded in order, at most two per worker in flight."""
    from distributed import Client, LocalCluster

    if p.dask_address:
        client, cluster = Client(p.dask_address), None
    else:
        cluster = LocalCluster(n_workers=p.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit=0)
        client = Client(cluster)
    try:
        ahead = 2 * max(len(client.scheduler_info()["workers"]), 1)
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append(client.submit(_redact_on_worker, p, chunk, salt, pure=False))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
