"""Redaction maps its chunks over an executor (pipelines/privacy/executor.py): on a Dask cluster
(redact.runner: dask) it writes the same bytes as on the process pool: the runner is configuration,
not a different redaction."""

import concurrent.futures
import datetime as dt
import time

import pytest

from pipelines.common import params as params_mod
from pipelines.privacy import executor, redact
from pipelines.samples import sample_logs


@pytest.mark.slow
def test_the_dask_runner_writes_byte_identical_records_and_the_same_report(tmp_path, params, replace):
    raw = tmp_path / "raw.jsonl"
    lines = sample_logs.generate_day(3, dt.date(2026, 1, 5), 0, 40, 0.5)
    raw.write_text("\n".join(lines) + "\n")
    # 20 records a chunk: several chunks, each its own task on the Dask client's executor,
    # written back in order, on a local cluster of two worker processes.
    pool = redact.redact_file(replace(params.redact, chunk_records=20, workers=1), raw,
                              tmp_path / "pool.jsonl")
    on_dask = redact.redact_file(replace(params.redact, chunk_records=20, workers=2, runner="dask"),
                                 raw, tmp_path / "dask.jsonl")
    assert (tmp_path / "dask.jsonl").read_bytes() == (tmp_path / "pool.jsonl").read_bytes()
    assert on_dask["runner"] == "dask" and pool["runner"] == "processes"
    same = {k: v for k, v in pool.items() if k not in ("seconds", "runner", "workers")}
    assert {k: on_dask[k] for k in same} == same
    assert on_dask["records"] == len(lines) and sum(on_dask["replaced"].values()) > 0


def test_a_dask_address_without_the_dask_runner_is_a_clear_error(params, replace):
    with pytest.raises(params_mod.ParamsError, match="runner: dask"):
        replace(params.redact, dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(params_mod.ParamsError, match="'processes' or 'dask'"):
        replace(params.redact, runner="ray")


def test_chunks_come_back_in_order_with_at_most_the_look_ahead_in_flight():
    results, in_flight = [], []

    def items():
        for i in range(12):
            in_flight.append(i + 1 - len(results))  # submitted and not yet yielded, with item i
            yield i

    def work(i):
        time.sleep((12 - i) * 0.005)  # later items finish first
        return i * i

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for r in executor.map_in_order(pool, work, items(), ahead=3):
            results.append(r)
    assert results == [i * i for i in range(12)]
    assert max(in_flight) == 3
