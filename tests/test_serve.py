"""`nightshift serve` against a real `prefect server start` on loopback, its database on the
private PostgreSQL server (as docs/SCALING.md sets Prefect up past one machine; every other flow
test runs on Prefect's own SQLite): the deployment appears with the configured cron and time
zone, a run triggered through the Prefect API is a real cycle on a tiny workspace and completes,
riding out a DVC remote that refuses the first push; Ctrl-C stops serving cleanly. Without a
reachable server, serve says how to start one."""

import asyncio
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import workspace as wsp
from pipelines.samples import sample_logs
from tests.conftest import ROOT, free_port, write_tiny_params

pytestmark = pytest.mark.slow

NIGHTSHIFT = str(Path(sys.executable).parent / "nightshift")
PREFECT = str(Path(sys.executable).parent / "prefect")
DEPLOYMENT = "tiny-night"
CRON, TIMEZONE = "45 3 * * *", "Europe/Berlin"
NIGHT = "2026-01-05"


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM, wait: float = 30) -> None:
    """Stop a process started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its process group
    except ProcessLookupError:
        pass
    proc.wait()


def _prefect_env(home: Path, api_url: str | None, database_url: str | None = None) -> dict:
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO")
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


@pytest.fixture(scope="module")
def prefect_database(postgres_server) -> str:
    """A fresh database on the private PostgreSQL server for the Prefect server; its
    psycopg2 URL (the server is given the asyncpg one, as Prefect's docs set it)."""
    return postgres_server.create_database(f"prefect_serve_{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory, prefect_database):
    """`prefect server start` on a free loopback port, its database on PostgreSQL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    log = home / "server.log"
    database_url = prefect_database.replace("postgresql+psycopg2://", "postgresql+asyncpg://")
    with open(log, "w") as out:
        proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=_prefect_env(home, None, database_url), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 240
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
                assert time.time() < deadline, f"prefect server not up in 240 s:\n{log.read_text()[-3000:]}"
                time.sleep(1)
        yield home, url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """A tiny workspace served by `nightshift serve`, its DVC remote blocked until the first
    push has failed, and one run triggered through the API: (workspace, deployment, flow run,
    its task runs, serve's exit code and output after Ctrl-C, the deployment after that)."""
    home, url = prefect_server
    ws = wsp.init(tmp_path_factory.mktemp("served") / "ws")
    write_tiny_params(ws / "params.yaml", **{
        "schedule.deployment": DEPLOYMENT, "schedule.cron": CRON, "schedule.timezone": TIMEZONE,
        "version.retries": 3, "version.retry_backoff_seconds": 2,
        # Smaller still than the other flow tests: this cycle proves the service runs one, not
        # what it learns (the gate's verdict does not matter here, the version is registered).
        "base_model.corpus_records": 100, "base_model.pretrain_steps": 10, "train.epochs": 1,
        "evaluate.generation_examples": 2, "evaluate.max_new_tokens": 8, "evaluate.replay_examples": 8})
    sample_logs.generate(ws / "logs", dt.date.fromisoformat(NIGHT), 1, 40, seed=7, topic_shift=0.8)
    blocker = ws / "dvc-remote"
    blocker.write_text("not a folder: dvc push fails until this file is gone\n")

    serve_log = home / "serve.log"
    with open(serve_log, "w") as out:
        serve = subprocess.Popen([NIGHTSHIFT, "serve", "--workspace", str(ws)], cwd=ROOT,
                                 env=_prefect_env(home, url), stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deployment, flow_run, task_runs, after_stop = asyncio.run(
            _trigger_and_watch(url, serve, serve_log, blocker))
    finally:
        _stop(serve)
    yield ws, deployment, flow_run, task_runs, serve.returncode, serve_log.read_text(), after_stop


async def _trigger_and_watch(url: str, serve, serve_log: Path, blocker: Path):
    """Wait for the deployment, trigger a run, unblock the remote once `version` awaits its
    retry, wait for the run to end, then Ctrl-C the server process and read the deployment."""
    with temporary_settings({PREFECT_API_URL: url}):  # this process talks to the same server
        async with get_client() as client:
            return await _watch(client, serve, serve_log, blocker)


async def _watch(client, serve, serve_log: Path, blocker: Path):
    def alive():
        assert serve.poll() is None, f"nightshift serve exited:\n{serve_log.read_text()[-4000:]}"

    deadline = time.time() + 180
    while True:
        try:
            deployment = await client.read_deployment_by_name(f"nightly/{DEPLOYMENT}")
            break
        except ObjectNotFound:
            alive()
            assert time.time() < deadline, f"no deployment after 180 s:\n{serve_log.read_text()[-4000:]}"
            await asyncio.sleep(1)
    run = await run_deployment(f"nightly/{DEPLOYMENT}", parameters={"date": NIGHT}, timeout=0)
    deadline = time.time() + 1500
    while True:
        run = await client.read_flow_run(run.id)
        if run.state and run.state.is_final():
            break
        alive()
        assert time.time() < deadline, f"run not done in 1500 s:\n{serve_log.read_text()[-4000:]}"
        if blocker.is_file():
            retrying = [t for t in await _task_runs(client, run.id)
                        if t.name.startswith("version") and t.state_name in ("AwaitingRetry", "Retrying")]
            if retrying:
                blocker.unlink()  # the remote comes back before the next attempt
        await asyncio.sleep(0.5)
    task_runs = await _task_runs(client, run.id)
    os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C
    await asyncio.to_thread(serve.wait, 60)
    after_stop = await client.read_deployment_by_name(f"nightly/{DEPLOYMENT}")
    return deployment, run, task_runs, after_stop


async def _task_runs(client, flow_run_id):
    # sort and limit given: this server rejects the client's defaults (None) with a 422.
    return await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)


def test_serve_creates_the_deployment_with_the_configured_cron_and_time_zone(served):
    ws, deployment, *_ = served
    assert deployment.name == DEPLOYMENT and deployment.parameters == {"workspace": str(ws)}
    assert len(deployment.schedules) == 1
    schedule = deployment.schedules[0]
    assert schedule.active
    assert schedule.schedule.cron == CRON and schedule.schedule.timezone == TIMEZONE


def test_a_run_triggered_through_the_api_is_a_real_cycle_that_completes(served):
    ws, _, flow_run, task_runs, *_ = served
    assert flow_run.state.is_completed(), flow_run.state
    summary = __import__("json").loads((ws / "reports/summary.json").read_text())
    assert summary["cycle"] == NIGHT and summary["status"] == "succeeded"
    assert summary["accounting"]["balanced"] and summary["version"] == "1"
    assert {t.name.rsplit("-", 1)[0] for t in task_runs} >= {"ingest", "pin_inputs", "validate", "dataset",
                                                             "train", "version", "register"}


def test_the_prefect_server_keeps_the_deployment_and_the_run_in_postgresql(served, prefect_database):
    import sqlalchemy as sa

    _, deployment, flow_run, *_ = served
    engine = sa.create_engine(prefect_database)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM deployment WHERE id = :id"),
                                 {"id": str(deployment.id)}).scalars().all()
            states = conn.execute(sa.text("SELECT state_type FROM flow_run WHERE id = :id"),
                                  {"id": str(flow_run.id)}).scalars().all()
    finally:
        engine.dispose()
    assert names == [DEPLOYMENT]
    assert [str(getattr(s, "value", s)) for s in states] == ["COMPLETED"]


def test_a_failed_push_to_the_dvc_remote_is_retried_and_then_goes_through(served):
    ws, _, _, task_runs, *_ = served
    version = [t for t in task_runs if t.name.startswith("version")]
    assert len(version) == 1 and version[0].state.is_completed()
    assert version[0].run_count >= 2  # failed at least once on the blocked remote, then pushed
    assert (ws / "dvc-remote").is_dir() and any((ws / "dvc-remote").rglob("*"))
    assert "are in sync" in wsp.dvc(ws, "status", "-c")  # everything the cycle made is on the remote


def test_ctrl_c_stops_serving_cleanly_and_pauses_the_schedule(served):
    *_, returncode, output, after_stop = served
    assert returncode == 0, output[-3000:]
    assert f"stopped. The deployment nightly/{DEPLOYMENT} stays" in output
    assert after_stop.paused  # no late runs pile up while nothing serves them


def test_serve_without_a_prefect_server_says_how_to_start_one(tmp_path):
    ws = wsp.init(tmp_path / "ws")
    done = subprocess.run([NIGHTSHIFT, "serve", "--workspace", str(ws)], cwd=ROOT, capture_output=True,
                          text=True, env=_prefect_env(tmp_path / "home", None), timeout=300)
    assert done.returncode == 1 and "PREFECT_API_URL is not set" in done.stderr
    assert "prefect server start" in done.stderr

    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    done = subprocess.run([NIGHTSHIFT, "serve", "--workspace", str(ws)], cwd=ROOT, capture_output=True,
                          text=True, env=_prefect_env(tmp_path / "home", url), timeout=300)
    assert done.returncode == 1 and f"the Prefect server at PREFECT_API_URL={url} does not answer" in done.stderr
    assert "prefect server start" in done.stderr
