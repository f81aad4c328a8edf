"""`nightshift serve`: the `nightly` deployment on its cron schedule, served from this process.

The deployment `nightly/<schedule.deployment>` is created (or updated) on the Prefect server in
PREFECT_API_URL with the workspace as its parameter and `schedule.cron` read in
`schedule.timezone`; this process then polls the server and runs each scheduled (or manually
triggered) flow run, one at a time. The server keeps the schedule, the runs and their logs; the
Prefect UI shows them. Ctrl-C stops serving and pauses the schedule (so no late runs pile up);
the deployment stays, and the next `nightshift serve` resumes it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from pipelines.common import params as params_mod

START_A_SERVER = ("Start one in another terminal with `prefect server start` (its UI and API are "
                  "at http://127.0.0.1:4200), then `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
                  "and run `nightshift serve` again.")


class ServeError(RuntimeError):
    """The deployment cannot be served: no Prefect server configured, or it does not answer."""


def prefect_api_url() -> str:
    """PREFECT_API_URL (from the environment or the active Prefect profile), checked to answer."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ServeError("PREFECT_API_URL is not set: `nightshift serve` needs a Prefect server to "
                         "keep the schedule and the runs. " + START_A_SERVER)
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as answer:
            answer.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ServeError(f"the Prefect server at PREFECT_API_URL={url} does not answer ({exc}). "
                         "Is it running? " + START_A_SERVER) from None
    return url


def deployment(ws: Path, p: params_mod.Params):
    """The `nightly` flow as a deployment: cron and time zone from params, the workspace as parameter."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.nightly import nightly

    return nightly.to_deployment(
        name=p.schedule.deployment,
        schedules=[Cron(p.schedule.cron, timezone=p.schedule.timezone)],
        parameters={"workspace": str(ws)},
        description=f"nightshift: one nightly cycle of the workspace {ws}, learning the day before "
                    f"the run (in {p.schedule.timezone}).",
        tags=["nightshift"],
        paused=False,  # resumes the schedule an earlier serve paused when it stopped
        # By module, not by file: a run imports the installed `flows.nightly`, wherever serve started.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve(ws: Path, p: params_mod.Params, log=print) -> None:
    """Create or update the deployment, then run its flow runs until interrupted."""
    from prefect import serve as prefect_serve

    url = prefect_api_url()
    runner_deployment = deployment(ws, p)
    log(f"serving nightly/{p.schedule.deployment} for {ws}: cron {p.schedule.cron!r} in "
        f"{p.schedule.timezone}, on the Prefect server at {url}. One cycle at a time; Ctrl-C stops.")
    # limit=1: this process starts one flow run at a time; the workspace lock refuses any other
    # cycle (a `nightshift run` by hand, a second `serve`) while one runs.
    prefect_serve(runner_deployment, limit=1, pause_on_shutdown=True)
