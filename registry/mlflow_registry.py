"""The MLflow model registry: one registered model per adapter line, `@champion` is production.

Each cycle's adapter is logged as the artifacts of an MLflow run and registered as a model version
whose tags carry its lineage. The gate's verdict decides the alias move (registry/history.py
records it): `@champion` when it passed and auto-promotion is on, `@challenger` when a person
should decide, none when it failed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.common import params as params_mod

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG = "nightshift."  # prefix of every tag nightshift writes
# A version is created with this tag "pending" and set to "done" once the gate's verdict has
# been applied to the aliases (history.apply_verdict): a run killed in between leaves "pending",
# which the next run finishes (history.finish_pending). Versions without the tag predate it.
FINALISED = TAG + "finalised"
PENDING, DONE = "pending", "done"


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    source: str
    tags: dict


def tracking_uri(p: params_mod.RegistryParams) -> str:
    """The store's URI, a relative sqlite path made absolute against the current workspace.

    MLflow caches stores by URI, so two workspaces' `sqlite:///mlflow.db` in one process would
    otherwise share the first one's database.
    """
    prefix = "sqlite:///"
    if p.tracking_uri.startswith(prefix) and not p.tracking_uri.startswith(prefix + "/"):
        return prefix + str(Path(p.tracking_uri[len(prefix):]).resolve())
    return p.tracking_uri


def in_workspace(p: params_mod.RegistryParams, ws: Path) -> params_mod.RegistryParams:
    """`p` with a relative sqlite store (sqlite:///mlflow.db) made absolute against the workspace
    `ws`, so that registry calls give the same answer from any working directory."""
    import dataclasses

    prefix = "sqlite:///"
    if p.tracking_uri.startswith(prefix) and not p.tracking_uri.startswith(prefix + "/"):
        return dataclasses.replace(p, tracking_uri=prefix + str((ws / p.tracking_uri[len(prefix):]).resolve()))
    return p


def artifact_root(p: params_mod.RegistryParams) -> Path:
    """Where a new experiment keeps its artifacts: beside a sqlite store, in its workspace; for a
    tracking server, in the folder the client runs in (at scale the server's bucket is named by
    `mlflow server --artifacts-destination`)."""
    uri = tracking_uri(p)
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    return Path("mlartifacts").resolve()


def configure_retries(p: params_mod.RegistryParams) -> None:
    """How MLflow's HTTP client retries a request to a tracking server that fails to connect,
    times out or answers 408/429/5xx: `registry.retries` times, first at once, then after
    2x, 4x, 8x ... `registry.retry_backoff_seconds` (urllib3's exponential backoff). Set for
    this process; read by MLflow on every request."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(p.retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(p.retry_backoff_seconds)


def client(p: params_mod.RegistryParams):
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(p)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _ensure_model(c, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="LoRA adapter kept current by nightshift; "
                                  "@champion is production, @challenger awaits review.")


def resolve_alias(p: params_mod.RegistryParams, alias: str = CHAMPION) -> Champion | None:
    """The version an alias points to now, or None (no model, or no such alias yet)."""
    from mlflow.exceptions import MlflowException

    c = client(p)
    try:
        mv = c.get_model_version_by_alias(p.model_name, alias)
    except MlflowException as exc:
        # No such model or alias: None. A server that stayed unreachable through every retry
        # (retries.mlflow) is an error, never "no champion" (a cycle would start a new adapter).
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return Champion(version=str(mv.version), run_id=mv.run_id, source=mv.source, tags=dict(mv.tags))


def download_adapter(p: params_mod.RegistryParams, source: str, dest: Path) -> Path:
    """Put the adapter files at a version's `source` URI into `dest` (replacing what was there)."""
    import mlflow

    client(p)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(local, dest)
    return dest


def find_version_for_cycle(p: params_mod.RegistryParams, cycle: str) -> str | None:
    """The version already registered for a cycle, so a re-run never registers it twice."""
    from mlflow.exceptions import MlflowException

    c = client(p)
    try:
        versions = c.search_model_versions(f"name = '{p.model_name}' and tag.`{TAG}cycle` = '{cycle}'")
    except MlflowException:
        return None
    return str(max(int(v.version) for v in versions)) if versions else None


def pending_versions(p: params_mod.RegistryParams) -> list[dict]:
    """Versions registered but whose verdict has not reached the aliases yet, oldest first:
    each {"version", "cycle", "passed", "reasons"} from the tags it was registered with."""
    from mlflow.exceptions import MlflowException

    c = client(p)
    try:
        versions = c.search_model_versions(f"name = '{p.model_name}' and tag.`{FINALISED}` = '{PENDING}'")
    except MlflowException:
        return []
    return [{"version": str(v.version), "cycle": v.tags.get(f"{TAG}cycle"),
             "passed": v.tags.get(f"{TAG}gate") == "passed",
             "reasons": json.loads(v.tags.get(f"{TAG}gate_reasons") or "[]")}
            for v in sorted(versions, key=lambda v: int(v.version))]


def mark_finalised(p: params_mod.RegistryParams, version: str, decision: str) -> None:
    """Record that the verdict of `version` has been applied, and what was decided."""
    c = client(p)
    c.set_model_version_tag(p.model_name, str(version), f"{TAG}alias_decision", decision)
    c.set_model_version_tag(p.model_name, str(version), FINALISED, DONE)


def _delete_orphan_runs(c, p: params_mod.RegistryParams, experiment_id: str, cycle: str | None) -> list[str]:
    """Delete (MLflow's soft delete: the UI can restore them) the runs of `cycle` that no
    version was made from: a register killed between logging its run and creating the version
    leaves one. Returns their ids."""
    from mlflow.exceptions import MlflowException

    if not cycle:
        return []
    runs = c.search_runs([experiment_id], filter_string=f"tags.`{TAG}cycle` = '{cycle}'")
    try:  # the cycle's versions only, as find_version_for_cycle asks: bounded however many there are
        versions = c.search_model_versions(f"name = '{p.model_name}' and tag.`{TAG}cycle` = '{cycle}'")
    except MlflowException:
        versions = []
    used = {v.run_id for v in versions}
    orphans = [r.info.run_id for r in runs if r.info.run_id not in used]
    for run_id in orphans:
        c.delete_run(run_id)
    return orphans


def register(p: params_mod.RegistryParams, adapter_dir: Path, run_name: str, lineage: dict,
             metrics: dict, params_flat: dict, artifacts: list[Path], verdict: dict) -> dict:
    """Log the adapter as a run and register it as a version with lineage and verdict tags.

    The alias move is history.apply_verdict's, so that it is recorded. Returns {"version",
    "run_id", "deleted_orphan_runs"}: the last are runs of the same cycle left by a register that
    was killed before it created their version.
    """
    import mlflow

    c = client(p)
    if c.get_experiment_by_name(p.experiment) is None:
        # Artifacts beside the store, in the workspace (at scale: an S3 bucket on the server).
        c.create_experiment(p.experiment, artifact_location=artifact_root(p).as_uri())
    experiment = mlflow.set_experiment(p.experiment)
    lineage_tags = {f"{TAG}{k}": str(v) for k, v in lineage.items()}
    orphans = _delete_orphan_runs(c, p, experiment.experiment_id, lineage.get("cycle"))
    # Tagged from the start: a run killed before its version exists is found by the next one.
    with mlflow.start_run(run_name=run_name, tags=lineage_tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params_flat.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        mlflow.log_artifacts(str(adapter_dir), artifact_path="adapter")
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path="reports")
        run_id = run.info.run_id
        source = f"{run.info.artifact_uri}/adapter"

    _ensure_model(c, p.model_name)
    tags = dict(lineage_tags)
    tags[f"{TAG}gate"] = "passed" if verdict["passed"] else "rejected"
    tags[f"{TAG}gate_reasons"] = json.dumps(verdict["reasons"])
    tags[FINALISED] = PENDING  # in the same call that creates it: no version without the mark
    mv = c.create_model_version(p.model_name, source=source, run_id=run_id, tags=tags,
                                description=f"cycle {lineage.get('cycle')}: " + "; ".join(verdict["reasons"]))
    return {"version": str(mv.version), "run_id": run_id, "deleted_orphan_runs": orphans}


def status(p: params_mod.RegistryParams, last: int = 5) -> dict:
    """Champion, challenger and the latest versions with their gate verdicts."""
    from mlflow.exceptions import MlflowException

    c = client(p)
    try:
        model = c.get_registered_model(p.model_name)
    except MlflowException:
        return {"model": p.model_name, "registered": False, "aliases": {}, "versions": []}
    versions = sorted(c.search_model_versions(f"name = '{p.model_name}'"),
                      key=lambda v: int(v.version), reverse=True)[:last]
    return {
        "model": p.model_name, "registered": True,
        "aliases": {alias: str(v) for alias, v in (model.aliases or {}).items()},
        "versions": [{"version": str(v.version), "cycle": v.tags.get(f"{TAG}cycle"),
                      "parent": v.tags.get(f"{TAG}parent_version"),
                      "gate": v.tags.get(f"{TAG}gate"), "eval_loss": v.tags.get(f"{TAG}eval_loss"),
                      "erased_data": v.tags.get(f"{TAG}erased_data"),  # set by `nightshift forget`
                      "base_model": v.tags.get(f"{TAG}base_model"),  # what `rebase` changes
                      "created": v.creation_timestamp} for v in versions],
    }


def metric_history(p: params_mod.RegistryParams, passed_limit: int) -> list[dict]:
    """Every version, oldest first, with its gate verdict, and the run metrics of the newest
    `passed_limit` versions that passed the gate (for trends; {} for the others). One search for
    the versions, then one request per version read: bounded, however long the history."""
    from mlflow.exceptions import MlflowException

    c = client(p)
    try:
        versions = sorted(c.search_model_versions(f"name = '{p.model_name}'"), key=lambda v: int(v.version))
    except MlflowException:
        return []
    passed = [v for v in versions if v.tags.get(f"{TAG}gate") == "passed" and v.run_id]
    read = {v.version for v in passed[-passed_limit:]} if passed_limit > 0 else set()
    return [{"version": str(v.version), "cycle": v.tags.get(f"{TAG}cycle"), "gate": v.tags.get(f"{TAG}gate"),
             "metrics": dict(c.get_run(v.run_id).data.metrics) if v.version in read else {}}
            for v in versions]


def log_reports(p: params_mod.RegistryParams, run_id: str, paths: list[Path]) -> None:
    """Attach reports written after registration to the version's run."""
    c = client(p)
    for path in paths:
        if path.exists():
            c.log_artifact(run_id, str(path), artifact_path="reports")
