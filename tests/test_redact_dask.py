"""The redact stage on Prefect's Dask task runner (redact.runner: dask) writes the same bytes as
on its own process pool: the runner is configuration, not a different redaction."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from pipelines import params as params_mod
from pipelines import redact, sample_logs
from tests.conftest import ROOT, write_tiny_params

# The stage starts a temporary Prefect API server for the Dask workers to report to; on a loaded
# test machine it can take longer than Prefect's default 20 s to answer.
SLOW_MACHINE = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def test_the_dask_runner_writes_byte_identical_records_and_the_same_report(tmp_path, params, replace):
    raw = tmp_path / "raw.jsonl"
    lines = sample_logs.generate_day(3, dt.date(2026, 1, 5), 0, 40, 0.5)
    raw.write_text("\n".join(lines) + "\n")
    # 20 records a chunk: several chunks, each its own Dask task, written back in order. One
    # worker each keeps the test cheap (identity across worker counts: tests/test_redact.py).
    pool = redact.run(replace(params.redact, chunk_records=20, workers=1), raw, tmp_path / "pool")

    settings = write_tiny_params(tmp_path / "params.yaml", **{
        "redact.runner": "dask", "redact.chunk_records": 20, "redact.workers": 1})
    done = subprocess.run([sys.executable, "-m", "pipelines.redact", str(raw), str(tmp_path / "dask"),
                           "--params", str(settings)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env={**os.environ, **SLOW_MACHINE})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "dask/records.jsonl").read_bytes() == (tmp_path / "pool/records.jsonl").read_bytes()
    on_dask = json.loads((tmp_path / "dask/report.json").read_text())
    assert on_dask["runner"] == "dask" and pool["runner"] == "processes"
    same = {k: v for k, v in pool.items() if k not in ("seconds", "runner")}
    assert {k: on_dask[k] for k in same} == same
    assert on_dask["records"] == len(lines) and sum(on_dask["replaced"].values()) > 0


def test_a_dask_address_without_the_dask_runner_is_a_clear_error(params, replace):
    with pytest.raises(params_mod.ParamsError, match="runner: dask"):
        replace(params.redact, dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(params_mod.ParamsError, match="'processes' or 'dask'"):
        replace(params.redact, runner="ray")
