"""The `nightshift` command line. Every command has --help; errors say what to do next.

The app and the options its commands share are in flows/cli/base.py; the commands, in the order
`nightshift --help` lists them, in cycles.py, models.py and data.py; what they print in report.py."""

import typer
from typer.main import get_command

import pipelines  # noqa: F401  (sets the offline and telemetry defaults first)
from flows.cli import (
    cycles,  # noqa: F401, I001  (adds the commands, in the order --help lists them)
    data,  # noqa: F401
    models,  # noqa: F401
)
from flows.cli.base import app
from pipelines.common import params as params_mod

PROG = "nightshift"


def main(argv: list[str] | None = None) -> None:
    """Run `nightshift ARGS` (ARGS: argv, else the process's arguments). Returns when the command
    succeeds; raises SystemExit otherwise: 2 for a usage error, 1 with the message for a failure,
    0 after --help."""
    try:
        code = get_command(app).main(args=argv, prog_name=PROG, standalone_mode=False)
    except typer.TyperException as exc:  # a usage error (exit code 2): the `usage:` line, the error
        exc.show()
        raise SystemExit(exc.exit_code)
    except typer.Abort:
        raise SystemExit("Aborted!")
    except (params_mod.ParamsError, FileExistsError) as exc:
        raise SystemExit(f"nightshift: {exc}")
    if code is not None:  # --help (0) or Ctrl-C (130) ended it early
        raise SystemExit(code)
