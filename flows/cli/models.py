"""The registered versions: `status`, `history`, `promote`, `rollback`, `canary`, `generate`;
`base build` and `rebase` move the line onto another base model."""

import json
from pathlib import Path
from typing import Annotated

import typer

from flows import workspace as wsp
from flows.cli.base import (
    Alias,
    Json,
    Workspace,
    add_group,
    app,
    command,
    group,
    option,
    require_workspace,
    workspace_params,
)
from flows.cli.report import print_status


@command(app, "status", "champion, challenger and recent versions")
def status(workspace: Workspace = ".", json_: Json = False) -> None:
    """Show the registered model's aliases and latest versions."""
    print_status(require_workspace(workspace), as_json=json_)


@command(app, "history", "every move of @champion and @challenger")
def history(
    alias: Annotated[Alias | None, option(help="only this alias")] = None,
    workspace: Workspace = ".",
    json_: Json = False,
) -> None:
    """Every alias move: when, from, to, by whom, why; moves made in the MLflow UI or through its
    API are included once nightshift notices them."""
    from registry import history as hist

    ws, p = workspace_params(workspace)
    moves = hist.sync(p.registry)
    if alias:
        moves = [m for m in moves if m.alias == alias]
    if json_:
        print(json.dumps([m.as_dict() for m in moves], indent=2))
        return
    if not moves:
        print("No alias has moved yet.")
        return
    print(f"{'#':>3}  {'when (UTC)':<25}  {'alias':<11}  {'from':>4} -> {'to':<4}  {'kind':<8}  by / why")
    for m in moves:
        print(f"{m.seq:>3}  {m.time:<25}  @{m.alias:<10}  {m.from_version or '-':>4} -> "
              f"{m.to_version or '-':<4}  {m.kind:<8}  {m.by}: {m.why}")


@command(app, "promote", "point @champion (or @challenger) at a version")
def promote(
    version: Annotated[str, typer.Argument(metavar="VERSION", help="a registered version")],
    reason: Annotated[str, option(metavar="WHY", help="why, for the history")],
    alias: Annotated[Alias, option(help="the alias to move (default: champion)")]
        = "champion",
    force: Annotated[bool, option("--force", help="promote even a version the gate rejected")] = False,
    workspace: Workspace = ".",
) -> None:
    """Promote a registered version by hand; recorded in the history (the reason redacted)."""
    from registry import history as hist

    ws, p = workspace_params(workspace)
    reason = redacted_reason(p, reason)
    try:
        move = hist.promote(p.registry, version, reason, alias=alias, force=force)
    except hist.RegistryError as exc:
        raise SystemExit(f"nightshift promote: {exc}")
    if move is None:
        print(f"@{alias} already points to version {version}; nothing changed")
    else:
        print(f"@{alias}: version {move.from_version or '-'} -> {move.to_version} ({reason})")
    _follow_champion_base(ws, p)


@command(app, "rollback", "return @champion to the version before it")
def rollback(
    reason: Annotated[str, option(metavar="WHY", help=(
        "why, for the history and the rolled-back version"))],
    workspace: Workspace = ".",
) -> None:
    """Return @champion to the champion before it (again: one further back). The next cycle trains
    from it."""
    from registry import history as hist

    ws, p = workspace_params(workspace)
    reason = redacted_reason(p, reason)
    try:
        move = hist.rollback(p.registry, reason)
    except hist.RegistryError as exc:
        raise SystemExit(f"nightshift rollback: {exc}")
    print(f"@champion rolled back: version {move.from_version} -> {move.to_version} ({reason}). "
          "The next cycle trains from version " + move.to_version + ".")
    _follow_champion_base(ws, p)


def redacted_reason(p, reason: str) -> str:
    """A person's reason, redacted like forget's and rebase's before the history stores it:
    "Maria Garcia says it leaked her address" is a natural reason for a rollback."""
    from pipelines.privacy.redact import redact_reason

    return redact_reason(p.redact, reason)


def _follow_champion_base(ws, p) -> None:
    """After an alias move: params.yaml's base_model.model follows @champion's base."""
    from flows import rebase as rb

    base = rb.follow_champion(ws, p)
    if base:
        print(f"params.yaml: base_model.model is now {base}, the base @champion was trained on; "
              "the next cycle trains on it")


@command(app, "canary", "@challenger against @champion on served traffic: promote, reject or wait")
def canary(
    act: Annotated[bool, option("--act", help=(
        "carry out a promote or reject verdict (also done when canary.act is true)"))] = False,
    workspace: Workspace = ".",
    json_: Json = False,
) -> None:
    """Compare @challenger with @champion on the exchanges each answered while `serve-model` ran
    the canary (serving.canary_fraction): thumbs-up share of rated answers (Fisher's exact test),
    latency, answers the PII scan flags. Says promote, reject or wait (too little traffic, or no
    significant difference yet), by the canary section of params.yaml."""
    from flows.serving import canary as canary_mod

    ws, p = workspace_params(workspace)
    result = canary_mod.compare(ws, p)
    moves = canary_mod.act(p, result) if act or p.canary.act else []
    result["moves"] = [m.as_dict() for m in moves]
    if json_:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'':<11} {'version':>7} {'answered':>8} {'rated':>5} {'up':>6} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'PII':>6}")
        for alias in ("champion", "challenger"):
            side = result[alias]
            pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
            print(f"@{alias:<10} {side['version'] or '-':>7} {side['answered']:>8} {side['rated']:>5} "
                  f"{pct(side['up_rate']):>6} {side['latency_p50_ms'] or '-':>7} "
                  f"{side['latency_p95_ms'] or '-':>7} {pct(side['pii_rate']):>6}")
        print(f"verdict: {result['decision']}: " + "; ".join(result["reasons"]))
        for m in moves:
            print(f"@{m.alias}: version {m.from_version or '-'} -> {m.to_version or '-'} (canary)")
    if any(m.alias == "champion" for m in moves):
        _follow_champion_base(ws, p)


@command(app, "generate", "answer a prompt with base + @champion")
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="what the user says")],
    version: Annotated[str | None, option(metavar="V", help=(
        "a registered version instead of @champion"))] = None,
    max_new_tokens: Annotated[int, option(metavar="N", help=(
        "the most tokens the answer may have (default: 60)"))] = 60,
    no_system: Annotated[bool, option("--no-system", help="omit the default system prompt")] = False,
    workspace: Workspace = ".",
) -> None:
    """Load the base model and the @champion adapter (or --version) from the registry and answer
    PROMPT, greedily."""
    import tempfile

    from flows import rebase as rb
    from pipelines.common import modeling
    from pipelines.samples.sample_logs import SYSTEM_PROMPT
    from registry import mlflow_registry as reg

    ws, p = workspace_params(workspace)
    with tempfile.TemporaryDirectory() as tmp:
        if version:
            mv = reg.client(p.registry).get_model_version(p.registry.model_name, version)
            source, tags = mv.source, dict(mv.tags)
        else:
            champion = reg.resolve_alias(p.registry, reg.CHAMPION)
            if champion is None:
                raise SystemExit("nightshift generate: no @champion yet; run a cycle first "
                                 "(`nightshift run` or `nightshift demo`)")
            version, source, tags = champion.version, champion.source, champion.tags
        adapter = reg.download_adapter(p.registry, source, Path(tmp) / "adapter")
        named = rb.version_base(p, tags)  # the base the version was trained on
        base = wsp.model_path(ws, named)
        model = modeling.load_with_adapter(base, p.train.quantization, adapter, trainable=False)
        tokenizer = modeling.load_tokenizer(base)
        system = None if no_system else SYSTEM_PROMPT
        answer = modeling.generate(model, tokenizer, prompt, max_new_tokens, system)
    print(f"[{named} + {p.registry.model_name} version {version}]\n{answer}")


base = group(help="Tiny base models built like the workspace's own (the base_model stage), to "
                  "rebase onto.")
add_group(app, base, "base", "build another tiny base model")


@command(base, "build", "build a tiny base model into DIR")
def base_build(
    out_dir: Annotated[Path, typer.Argument(metavar="DIR", help="where the model and tokenizer go")],
    num_layers: Annotated[int | None, option(metavar="N", help="layers (default: base_model.num_layers)")] = None,
    vocab_size: Annotated[int | None, option(metavar="N", help="tokenizer vocabulary (default: base_model.vocab_size)")] = None,
    hidden_size: Annotated[int | None, option(metavar="N", help="width (default: base_model.hidden_size)")] = None,
    pretrain_steps: Annotated[int | None, option(metavar="N", help="pre-training steps (default: base_model.pretrain_steps)")] = None,
    seed: Annotated[int | None, option(metavar="N", help="seed (default: the workspace's seed)")] = None,
    workspace: Workspace = ".",
    json_: Json = False,
) -> None:
    """Build and pre-train a tiny Llama with the workspace's `base_model` params, some replaced,
    into DIR: an ordinary transformers folder `nightshift rebase --base DIR` can move onto."""
    import contextlib
    import sys

    from flows import rebase as rb

    ws = require_workspace(workspace)
    # Pre-training's progress lines go to stderr when stdout is for the JSON.
    with contextlib.redirect_stdout(sys.stderr if json_ else sys.stdout):
        result = rb.build_base(ws, out_dir.resolve(), num_layers=num_layers, vocab_size=vocab_size,
                               hidden_size=hidden_size, pretrain_steps=pretrain_steps,
                               seed=seed)
    if json_:
        print(json.dumps(result, indent=2))
        return
    shape = result["base_model"]
    print(f"built {result['out_dir']}: {shape['num_layers']} layers of width {shape['hidden_size']}, "
          f"vocabulary {shape['vocab_size']}, {result['parameters']} parameters, pre-training loss "
          f"{result['first_loss']} -> {result['final_loss']:.3f}")


@command(app, "rebase", "train a fresh adapter on another base model")
def rebase(
    base_model: Annotated[str, option("--base", metavar="MODEL", help="a hub id or a local folder")],
    reason: Annotated[str, option(metavar="WHY", help="why, for the lineage and the history")],
    workspace: Workspace = ".",
    json_: Json = False,
) -> None:
    """Train a fresh adapter on MODEL from the versioned data (replay buffer, the current night's
    training data, the anchor set), score it and @champion, each on its own base, in bits per byte
    and on the generation checks, gate and register it. A passing rebase becomes @champion and
    params.yaml's base_model.model follows it; a rejected one changes nothing else."""
    from flows import rebase as rb
    from registry import history as hist

    import contextlib
    import sys

    ws, _ = workspace_params(workspace)
    try:
        # Training's and evaluation's progress lines go to stderr when stdout is for the JSON.
        with contextlib.redirect_stdout(sys.stderr if json_ else sys.stdout):
            report = rb.rebase(ws, base_model, reason)
    except hist.RegistryError as exc:
        raise SystemExit(f"nightshift rebase: {exc}")
    if json_:
        print(json.dumps({k: v for k, v in report.items() if k != "evaluation"}, indent=2))
        return
    bpb = report["bits_per_byte"]
    print(f"version {report['version']} on {report['base_model']} (rebased from version "
          f"{report['rebased_from']}): held-out bits per byte {bpb['candidate']['new']} vs champion "
          f"{bpb['champion']['new']}; {report['outcome']}")
