"""The Typer app of the `nightshift` command line, the options its commands share, and the
workspace checks they start with.

Help is click's plain layout (no rich panels), with argparse's lowercase `usage:` line; options
state their defaults in their help, so none is appended."""

from pathlib import Path
from typing import Annotated, Literal

import typer
from typer.core import TyperCommand, TyperGroup

from flows import workspace as wsp
from pipelines.common import params as params_mod


class _Usage:
    """The usage line as `usage: nightshift COMMAND ...`, as the command line always printed it."""

    def format_usage(self, ctx, formatter) -> None:
        formatter.write_usage(ctx.command_path, " ".join(self.collect_usage_pieces(ctx)),
                              prefix="usage: ")


class Group(_Usage, TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        """`nightshift --help` lists the commands and groups in the order they were added (Typer
        would list the groups last)."""
        return sorted(super().list_commands(ctx), key=lambda name: _ORDER.get(name, 0))


class Command(_Usage, TyperCommand):
    pass


def group(**kwargs) -> typer.Typer:
    """A command group: `nightshift` itself and its sub-groups (`nightshift golden`)."""
    return typer.Typer(cls=Group, rich_markup_mode=None, add_completion=False,
                       pretty_exceptions_enable=False, no_args_is_help=False,
                       context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)


app = group(help="Turn yesterday's assistant log into tonight's better LoRA adapter, safely.")
_ORDER: dict[str, int] = {}  # command or group name -> when it was added


def command(app: typer.Typer, name: str, short_help: str):
    """Add the decorated function as the command `name` of `app`: its docstring is what `--help`
    says the command does, `short_help` its line in the group's list of commands."""
    _ORDER.setdefault(name, len(_ORDER))
    return app.command(name, short_help=short_help, cls=Command)


def add_group(app: typer.Typer, sub: typer.Typer, name: str, short_help: str) -> None:
    """Add the group `sub` (its help: what it is for) as `name` to `app`."""
    _ORDER.setdefault(name, len(_ORDER))
    app.add_typer(sub, name=name, short_help=short_help)


def option(*decls: str, **kwargs):
    """An option whose help states its own default (if any)."""
    return typer.Option(*decls, show_default=False, **kwargs)


# The options several commands take, declared once.
Workspace = Annotated[str, option(metavar="DIR", help="workspace directory (default: .)")]
Json = Annotated[bool, option("--json", help="print JSON")]
Alias = Literal["champion", "challenger"]


def require_workspace(path: str) -> Path:
    ws = Path(path).resolve()
    if not wsp.is_workspace(ws):
        raise SystemExit(f"nightshift: {ws} is not a nightshift workspace (no params.yaml and "
                         "dvc.yaml). Pass --workspace DIR, or create one with `nightshift init DIR`.")
    return ws


def workspace_params(path: str) -> tuple[Path, params_mod.Params]:
    from registry import mlflow_registry as reg

    ws = require_workspace(path)
    p = wsp.load_params(ws)
    reg.configure_retries(p.registry)  # promote, rollback, status, history ride out a restarting server too
    return ws, p
