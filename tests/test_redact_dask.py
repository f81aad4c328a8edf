"""Redaction on a Dask cluster (redact.runner: dask) writes the same bytes as on the process pool:
the runner is configuration, not a different redaction."""

import datetime as dt

import pytest

from pipelines.common import params as params_mod
from pipelines.privacy import redact
from pipelines.samples import sample_logs


def test_the_dask_runner_writes_byte_identical_records_and_the_same_report(tmp_path, params, replace):
    raw = tmp_path / "raw.jsonl"
    lines = sample_logs.generate_day(3, dt.date(2026, 1, 5), 0, 40, 0.5)
    raw.write_text("\n".join(lines) + "\n")
    # 20 records a chunk: several chunks, each its own Dask task, written back in order, on a
    # local cluster of two worker processes.
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
