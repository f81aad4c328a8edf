"""Retries on I/O only, with backoff from params.yaml: MLflow requests ride out a tracking server
that comes up late (a real `mlflow server`); with no retries they fail at once; the flow's retry
conditions retry a source or remote failure and nothing else. (The DVC remote that refuses a push
and then comes back is exercised through a served cycle in test_serve.py.)"""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from prefect.states import Failed

from flows import tasks
from pipelines.common import params as params_mod
from pipelines.data import ingest as ingest_stage
from registry import mlflow_registry as reg
from tests.conftest import free_port


def _params(tmp_path, uri, **retries):
    from tests.conftest import write_tiny_params

    overrides = {"registry.tracking_uri": uri, **{f"registry.{k}": v for k, v in retries.items()}}
    return params_mod.load(write_tiny_params(tmp_path / "params.yaml", **overrides))


def test_without_retries_an_unreachable_tracking_server_fails_at_once(tmp_path):
    from mlflow.exceptions import MlflowException

    p = _params(tmp_path, f"http://127.0.0.1:{free_port()}", retries=0)
    reg.configure_retries(p.registry)
    started = time.time()
    with pytest.raises(MlflowException, match="Connection refused|Max retries exceeded"):
        reg.client(p.registry).search_experiments()
    # Not "no champion": a cycle must not start a new adapter because the registry was down.
    with pytest.raises(MlflowException, match="Connection refused|Max retries exceeded"):
        reg.resolve_alias(p.registry)
    assert time.time() - started < 10


def test_mlflow_requests_wait_for_a_tracking_server_that_comes_up_late(tmp_path, caplog):
    port = free_port()
    # 7 retries, waits 0, 2, 4, 8, 16, 32, 64 s: about two minutes for the server to start.
    p = _params(tmp_path, f"http://127.0.0.1:{port}", retries=7, retry_backoff_seconds=1)
    reg.configure_retries(p.registry)
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    # Started now, the server listens only seconds later (MLflow's start-up): the first
    # requests find nothing there.
    late = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        experiments = reg.client(p.registry).search_experiments()
    finally:
        os.killpg(late.pid, signal.SIGTERM)
        late.wait(timeout=60)
    assert [e.name for e in experiments] == ["Default"]
    retried = [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage()]
    assert retried and "NewConnectionError" in retried[0]  # the first attempts found no server


@pytest.mark.parametrize("error,retried", [
    (ingest_stage.SourceError("database restarting"), True),
    (ValueError("a bad value in params.yaml"), False),
])
def test_ingest_retries_only_source_errors(error, retried):
    assert tasks.retry_source_errors(None, None, Failed(data=error)) is retried


@pytest.mark.parametrize("error,retried", [
    (tasks.RemoteError("dvc push failed"), True),
    (RuntimeError("git commit failed"), False),
    (AssertionError("accounting"), False),
])
def test_version_retries_only_a_failed_push(error, retried):
    condition = tasks.version.retry_condition_fn
    assert condition(None, None, Failed(data=error)) is retried
