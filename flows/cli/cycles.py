"""Cycles: `demo`, `run`, `serve`."""

import shutil
import time
from pathlib import Path
from typing import Annotated

from flows import workspace as wsp
from flows.cli.base import Workspace, app, command, option, require_workspace, workspace_params
from flows.cli.report import fail, print_status, print_summary
from pipelines.common import params as params_mod

DEMO_WORKSPACE = Path("demo")


@command(app, "demo", "run the bundled sample through nightly cycles")
def demo(
    workspace: Annotated[str, option(metavar="DIR", help="demo workspace (default: demo)")]
        = str(DEMO_WORKSPACE),
    cycles: Annotated[int | None, option(metavar="N", help="cycles to run (default: demo.cycles)")]
        = None,
    fresh: Annotated[bool, option("--fresh", help="delete the demo workspace and start over")] = False,
) -> None:
    """Generate the bundled sample logs in a demo workspace and run the next cycles on them
    (continues where the last demo stopped)."""
    from flows import cycle_lock
    from flows.demo import demo as run_demo

    ws = Path(workspace).resolve()
    if fresh and ws.exists():
        shutil.rmtree(ws)
    if not wsp.is_workspace(ws):
        print(f"Creating the demo workspace {ws} ...", flush=True)
        wsp.init(ws)
    params_mod.load(ws / "params.yaml")
    started = time.time()
    try:
        summaries = run_demo(workspace=str(ws), cycles=cycles)
    except cycle_lock.CycleRunning as exc:
        raise SystemExit(f"nightshift demo: {exc}")
    except Exception as exc:
        fail(ws, exc, started)
    for summary in summaries:
        print_summary(summary)
    print()
    print_status(ws)
    print(f"\nThe demo workspace is {ws}. Look around:\n"
          f"  cd {ws} && dvc status && git log --oneline      # each cycle is a commit\n"
          f"  mlflow ui --backend-store-uri sqlite:///{ws / 'mlflow.db'}   # the registry, in a browser\n"
          f"  nightshift demo                                    # the next cycles")


@command(app, "run", "run one nightly cycle now")
def run(
    date: Annotated[str | None, option(metavar="YYYY-MM-DD", help=(
        "the day whose interactions to learn (YYYY-MM-DD; default: yesterday)"))] = None,
    source: Annotated[str | None, option(metavar="URL", help=(
        "override ingest.url: a JSONL folder/file or a database URL"))] = None,
    workspace: Workspace = ".",
) -> None:
    """Run one cycle: ingest (redacting as it pulls), validate, dataset, train, evaluate, gate,
    version, register."""
    from flows import cycle_lock
    from flows.nightly import nightly

    ws = require_workspace(workspace)
    p = params_mod.load(ws / "params.yaml")  # a broken params.yaml is reported before anything starts
    day = date or p.schedule.yesterday().isoformat()
    started = time.time()
    try:
        # Taken here, before Prefect starts, so a second cycle is refused at once; the flow re-enters it.
        with cycle_lock.hold(ws, day):
            summary = nightly(date=day, workspace=str(ws), source=source)
    except cycle_lock.CycleRunning as exc:
        raise SystemExit(f"nightshift run: {exc}")
    except Exception as exc:
        fail(ws, exc, started)
    print_summary(summary)


@command(app, "serve", "run the nightly cycle on its schedule (a Prefect deployment)")
def serve(workspace: Workspace = ".") -> None:
    """Create or update the Prefect deployment nightly/<schedule.deployment> on the server in
    PREFECT_API_URL, with the cron schedule and time zone of params.yaml's `schedule` section and
    this workspace as its parameter, then run its flow runs (scheduled, or started from the Prefect
    UI) one at a time until Ctrl-C. Each run learns the day before it, in the schedule's time zone.
    Start a server first: `prefect server start`, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`."""
    from flows import serve as serving

    ws, p = workspace_params(workspace)
    try:
        serving.serve(ws, p)
    except serving.ServeError as exc:
        raise SystemExit(f"nightshift serve: {exc}")
    except KeyboardInterrupt:
        pass
    print(f"nightshift serve: stopped. The deployment nightly/{p.schedule.deployment} stays on the "
          "Prefect server with its schedule paused; `nightshift serve` resumes it.")


@command(app, "serve-model", "answer chats with @champion (OpenAI API); follows the registry")
def serve_model(
    host: Annotated[str | None, option(metavar="HOST", help="address to bind (default: serving.host)")] = None,
    port: Annotated[int | None, option(metavar="PORT", help="port (default: serving.port)")] = None,
    workspace: Workspace = ".",
) -> None:
    """Serve an OpenAI-compatible chat API (POST /v1/chat/completions, streamed or not; POST
    /v1/feedback; GET /v1/models; GET /health names the version answering) with the workspace's
    base model and the @champion adapter, and @challenger for serving.canary_fraction of users
    while there is one. An alias move (a cycle, `nightshift rollback`, the MLflow UI) is
    followed within serving.poll_seconds, or at once by webhook (serving.webhook_url); every
    answer names its version. Exchanges and feedback are logged to ingest.url for tonight's cycle
    unless a request opts out ("store": false). serving.engine: vllm hands generation to a vLLM
    server. Loopback by default; another address needs NIGHTSHIFT_API_KEY."""
    from flows.serving import server

    ws, p = workspace_params(workspace)
    try:
        server.serve(ws, p, host or p.serving.host, port or p.serving.port)
    except server.ServeModelError as exc:
        raise SystemExit(f"nightshift serve-model: {exc}")
    except KeyboardInterrupt:
        pass
