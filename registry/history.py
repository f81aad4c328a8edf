"""Every move of `@champion` and `@challenger`, in one history, and the rollback that reads it.

MLflow keeps only where an alias points now. nightshift records each move it makes as a run of
the experiment `<registry.experiment>-alias-history` (tags say alias, from, to, by whom, why), so
the history lives in the same tracking server and shows in its UI. A move made elsewhere (the
MLflow UI, its REST API) is noticed the next time nightshift looks, by comparing the live alias
with the last recorded move, and recorded as made "outside nightshift".

Rollback walks the champion's history as a stack: each promotion pushes a version, each rollback
pops one, so a second rollback goes one further back.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import asdict, dataclass

from pipelines.common import params as params_mod
from registry import mlflow_registry as reg

EVENT = "nightshift.event."
OUTSIDE = "outside nightshift (MLflow UI or API)"


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class AliasMove:
    seq: int
    time: str
    alias: str
    from_version: str | None
    to_version: str | None
    kind: str  # pipeline | promote | rollback | canary | outside
    by: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def _experiment_id(p: params_mod.RegistryParams, c) -> str:
    name = f"{p.experiment}-alias-history"
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return c.create_experiment(name, tags={"nightshift.purpose": "history of registry alias moves"})


def _recorded(p: params_mod.RegistryParams, c) -> list[AliasMove]:
    runs = c.search_runs([_experiment_id(p, c)], filter_string=f"tags.`{EVENT}model` = '{p.model_name}'",
                         max_results=50000)
    moves = []
    for run in runs:
        t = run.data.tags
        moves.append(AliasMove(
            seq=int(t[f"{EVENT}seq"]), time=t[f"{EVENT}time"], alias=t[f"{EVENT}alias"],
            from_version=t.get(f"{EVENT}from") or None, to_version=t.get(f"{EVENT}to") or None,
            kind=t[f"{EVENT}kind"], by=t[f"{EVENT}by"], why=t.get(f"{EVENT}why", "")))
    return sorted(moves, key=lambda m: m.seq)


def _record(p, c, moves: list[AliasMove], alias: str, from_version, to_version, kind: str,
            by: str, why: str) -> AliasMove:
    move = AliasMove(seq=(moves[-1].seq + 1) if moves else 1,
                     time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     alias=alias, from_version=from_version, to_version=to_version, kind=kind,
                     by=by, why=why)
    tags = {f"{EVENT}{k}": "" if v is None else str(v) for k, v in {
        "model": p.model_name, "seq": move.seq, "time": move.time, "alias": alias,
        "from": from_version, "to": to_version, "kind": kind, "by": by, "why": why}.items()}
    run = c.create_run(_experiment_id(p, c), tags=tags,
                       run_name=f"@{alias}: {from_version or '-'} -> {to_version or '-'}")
    c.set_terminated(run.info.run_id)
    moves.append(move)
    return move


def _live_aliases(p: params_mod.RegistryParams, c) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return {a: str(v) for a, v in (c.get_registered_model(p.model_name).aliases or {}).items()}
    except MlflowException:
        return {}


def _sync(p: params_mod.RegistryParams, c) -> tuple[list[AliasMove], dict[str, str]]:
    moves = _recorded(p, c)
    live = _live_aliases(p, c)
    for alias in (reg.CHAMPION, reg.CHALLENGER):
        last = next((m.to_version for m in reversed(moves) if m.alias == alias), None)
        if live.get(alias) != last:
            _record(p, c, moves, alias, last, live.get(alias), "outside", OUTSIDE,
                    "alias found moved; noticed by nightshift")
    return moves, live


def sync(p: params_mod.RegistryParams) -> list[AliasMove]:
    """The full history, after recording any move made outside nightshift since it last looked."""
    return _sync(p, reg.client(p))[0]


def move_alias(p: params_mod.RegistryParams, alias: str, version: str, kind: str, by: str,
               why: str) -> AliasMove | None:
    """Point `alias` at `version` and record the move (None when it already points there)."""
    c = reg.client(p)
    moves, live = _sync(p, c)
    current = live.get(alias)
    if current == str(version):
        return None
    c.set_registered_model_alias(p.model_name, alias, str(version))
    return _record(p, c, moves, alias, current, str(version), kind, by, why)


def remove_alias(p: params_mod.RegistryParams, alias: str, kind: str, by: str, why: str) -> AliasMove | None:
    """Delete `alias` and record it (None when there is no such alias)."""
    c = reg.client(p)
    moves, live = _sync(p, c)
    current = live.get(alias)
    if current is None:
        return None
    c.delete_registered_model_alias(p.model_name, alias)
    return _record(p, c, moves, alias, current, None, kind, by, why)


def promote(p: params_mod.RegistryParams, version: str, why: str, by: str | None = None,
            alias: str = reg.CHAMPION, force: bool = False) -> AliasMove | None:
    """Point `alias` (default @champion) at an existing version, by a person, with a reason.

    A version the gate rejected is refused unless `force`: promotion normally goes through the gate.
    """
    from mlflow.exceptions import MlflowException

    c = reg.client(p)
    try:
        mv = c.get_model_version(p.model_name, str(version))
    except MlflowException:
        raise RegistryError(f"{p.model_name} has no version {version}; `nightshift status` lists them")
    if mv.tags.get(f"{reg.TAG}gate") == "rejected" and not force:
        raise RegistryError(
            f"version {version} was rejected by the gate ({mv.tags.get(f'{reg.TAG}gate_reasons')}); "
            "pass --force to promote it anyway")
    return move_alias(p, alias, str(version), "promote", by or getpass.getuser(), why)


def apply_verdict(p: params_mod.RegistryParams, version: str, verdict: dict, by: str) -> dict:
    """The gate's verdict as an alias move: @champion if it passed and auto-promotion is on,
    @challenger if a person should decide, none if it failed. Returns alias, promoted, reason.

    Then the version is marked finalised (registry FINALISED tag). Applying it again moves
    nothing and records nothing twice, so a run killed between the move and the mark is
    finished by the next one (finish_pending).
    """
    if not verdict["passed"]:
        result = {"alias": None, "promoted": False,
                  "reason": "gate rejected: " + "; ".join(verdict["reasons"])}
    else:
        if p.auto_promote:
            alias, reason = reg.CHAMPION, "gate passed, auto-promotion on"
        else:
            alias, reason = reg.CHALLENGER, "gate passed, waiting for a person (registry.auto_promote: false)"
        c = reg.client(p)
        _, live = _sync(p, c)
        current = live.get(alias)
        if current is not None and int(current) > int(version):
            # A later version already holds the alias (a later cycle, or a person): moving it
            # back to this one would undo newer work.
            result = {"alias": None, "promoted": False,
                      "reason": f"gate passed, but @{alias} already points to the newer version "
                                f"{current}; left there"}
        else:
            move_alias(p, alias, version, "pipeline", by, reason)
            result = {"alias": alias, "promoted": alias == reg.CHAMPION, "reason": reason}
    reg.mark_finalised(p, version, result["reason"])
    return result


def finish_pending(p: params_mod.RegistryParams, by: str) -> list[dict]:
    """Apply the verdict of every version registered by a run that stopped before its alias
    move (killed, or the machine went down), oldest first. Returns what was done per version."""
    finished = []
    for pending in reg.pending_versions(p):
        verdict = {"passed": pending["passed"], "reasons": pending["reasons"]}
        result = apply_verdict(p, pending["version"], verdict, by)
        finished.append({"version": pending["version"], "cycle": pending["cycle"], **result})
    return finished


def champion_stack(moves: list[AliasMove]) -> list[str]:
    """Champions in the order they were put in place, rollbacks popped: the last is current."""
    stack: list[str] = []
    for m in moves:
        if m.alias != reg.CHAMPION or m.to_version is None:
            continue
        if m.kind == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != m.to_version:
                stack.append(m.to_version)
        else:
            stack.append(m.to_version)
    return stack


def rollback(p: params_mod.RegistryParams, why: str, by: str | None = None) -> AliasMove:
    """Return @champion to the version before it; the rolled-back version is tagged with why."""
    moves = sync(p)
    stack = champion_stack(moves)
    if len(stack) < 2:
        raise RegistryError("there is no earlier champion to roll back to "
                            f"(champion history: {stack or 'empty'})")
    current, target = stack[-1], stack[-2]
    move = move_alias(p, reg.CHAMPION, target, "rollback", by or getpass.getuser(), why)
    reg.client(p).set_model_version_tag(p.model_name, current, f"{reg.TAG}rolled_back", why)
    return move
