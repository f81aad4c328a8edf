"""The registry against a real `mlflow server` on loopback: promote, rollback, history, and an
alias moved through the server's REST API (as the MLflow UI does).

Every test runs twice, once per backend store of the server (tests/conftest.py `mlflow_server`):
SQLite, the default, and PostgreSQL, a private server started for the test session.
"""

import json
import subprocess
import sys
import urllib.request
from contextlib import chdir
from pathlib import Path

import pytest
import yaml

from flows import pinning
from pipelines.common import params as params_mod
from registry import history
from registry import mlflow_registry as reg
from tests.conftest import write_tiny_params


@pytest.fixture
def workspace(tmp_path, mlflow_server, request):
    """A workspace whose registry is the server, under a model name of its own."""
    write_tiny_params(tmp_path / "params.yaml", **{
        "registry.tracking_uri": mlflow_server,
        "registry.model_name": f"adapter-{request.node.name[:40]}"})
    with chdir(tmp_path):
        yield tmp_path, params_mod.load("params.yaml").registry


def register_version(p, tmp: Path, cycle: str, passed: bool = True) -> str:
    """A registered version from the pipeline's own register + gate path (a stand-in adapter)."""
    adapter = tmp / f"adapter-{cycle}"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"cycle": cycle}))
    (adapter / "adapter_model.safetensors").write_bytes(cycle.encode())
    verdict = {"passed": passed, "reasons": ["all checks passed" if passed else "eval loss too high"]}
    result = reg.register(p, adapter, f"cycle-{cycle}", {"cycle": cycle}, {"eval_loss": 1.0},
                          {"seed": 1}, [], verdict)
    history.apply_verdict(p, result["version"], verdict, by="nightly flow run test")
    return result["version"]


def champion(p) -> str:
    return reg.resolve_alias(p).version


def test_rollback_returns_to_the_champion_before_and_again_one_further(workspace):
    ws, p = workspace
    for day in ("01", "02", "03"):
        register_version(p, ws, f"2026-01-{day}")
    assert champion(p) == "3"
    history.rollback(p, "answers about billing got worse")
    assert champion(p) == "2"
    history.rollback(p, "still worse")
    assert champion(p) == "1"
    with pytest.raises(history.RegistryError, match="no earlier champion"):
        history.rollback(p, "nothing left")
    rolled = reg.client(p).get_model_version(p.model_name, "3").tags
    assert rolled["nightshift.rolled_back"] == "answers about billing got worse"


def test_history_records_every_move_with_when_from_to_who_and_why(workspace):
    ws, p = workspace
    register_version(p, ws, "2026-01-01")
    register_version(p, ws, "2026-01-02")
    register_version(p, ws, "2026-01-03", passed=False)  # rejected: no alias moves
    history.promote(p, "1", "customer escalation", by="alice")
    moves = history.sync(p)
    assert [(m.from_version, m.to_version, m.kind) for m in moves] == [
        (None, "1", "pipeline"), ("1", "2", "pipeline"), ("2", "1", "promote")]
    assert moves[-1].by == "alice" and moves[-1].why == "customer escalation"
    assert all(m.time for m in moves)


def test_a_rejected_version_is_only_promoted_with_force(workspace):
    ws, p = workspace
    register_version(p, ws, "2026-01-01")
    register_version(p, ws, "2026-01-02", passed=False)
    with pytest.raises(history.RegistryError, match="rejected by the gate"):
        history.promote(p, "2", "try it")
    history.promote(p, "2", "try it anyway", force=True)
    assert champion(p) == "2"


def test_an_alias_moved_through_the_rest_api_shows_in_history_and_is_trained_from(
        workspace, mlflow_server):
    ws, p = workspace
    register_version(p, ws, "2026-01-01")
    register_version(p, ws, "2026-01-02")
    request = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/registered-models/alias", method="POST",
        data=json.dumps({"name": p.model_name, "alias": "champion", "version": "1"}).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10)

    parent = pinning.pin_parent_adapter(p, ws / "models/parent")  # what the next cycle does
    assert parent == "1"
    assert json.loads((ws / "models/parent/adapter_config.json").read_text()) == {"cycle": "2026-01-01"}
    last = history.sync(p)[-1]
    assert (last.from_version, last.to_version, last.kind) == ("2", "1", "outside")
    history.rollback(p, "back to before the manual move")
    assert champion(p) == "2"


def test_cli_rollback_and_history(workspace):
    ws, p = workspace
    register_version(p, ws, "2026-01-01")
    register_version(p, ws, "2026-01-02")
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {}}))
    run = lambda *a: subprocess.run([sys.executable, "-m", "flows.cli", *a, "--workspace", str(ws)],  # noqa: E731
                                    capture_output=True, text=True)
    out = run("rollback", "--reason", "bad release, reported by maria.garcia@example.com")
    assert out.returncode == 0, out.stderr
    assert "version 2 -> 1" in out.stdout
    moves = json.loads(run("history", "--json").stdout)
    # A person's reason rests in the history redacted, like forget's and rebase's.
    assert moves[-1]["kind"] == "rollback" and moves[-1]["why"] == "bad release, reported by <EMAIL_ADDRESS_1>"
    out = run("promote", "2", "--reason", "Maria Garcia checked it again")
    assert out.returncode == 0, out.stderr
    moves = json.loads(run("history", "--json").stdout)
    assert moves[-1]["kind"] == "promote" and "Maria" not in moves[-1]["why"], moves[-1]
    assert run("rollback").returncode != 0  # a reason is required


def test_the_server_keeps_the_registry_in_its_backend_store(workspace, mlflow_backend_store):
    """The versions and aliases live in the store the server was started with (SQLite or PostgreSQL)."""
    import sqlalchemy as sa

    ws, p = workspace
    register_version(p, ws, "2026-01-01")
    register_version(p, ws, "2026-01-02")
    history.rollback(p, "checking the store")
    engine = sa.create_engine(mlflow_backend_store)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version FROM model_versions WHERE name = :n ORDER BY version"),
                                    {"n": p.model_name}).scalars().all()
            alias = conn.execute(sa.text("SELECT version FROM registered_model_aliases "
                                         "WHERE name = :n AND alias = 'champion'"),
                                 {"n": p.model_name}).scalar_one()
    finally:
        engine.dispose()
    assert engine.dialect.name == mlflow_backend_store.split(":")[0].split("+")[0]
    assert versions == [1, 2] and alias == 1


def test_a_run_left_by_a_killed_register_is_deleted_when_the_cycle_registers(workspace):
    tmp, p = workspace
    register_version(p, tmp, "2026-01-05")
    c = reg.client(p)
    experiment_id = c.get_experiment_by_name(p.experiment).experiment_id
    # What a register killed after logging its run leaves: a RUNNING run tagged with the cycle.
    orphan = c.create_run(experiment_id, run_name="cycle-2026-01-06",
                          tags={f"{reg.TAG}cycle": "2026-01-06"}).info.run_id

    version = register_version(p, tmp, "2026-01-06")

    assert c.get_run(orphan).info.lifecycle_stage == "deleted"
    live = c.search_runs([experiment_id], filter_string=f"tags.`{reg.TAG}cycle` = '2026-01-06'")
    assert [r.info.run_id for r in live] == [c.get_model_version(p.model_name, version).run_id]
    kept = c.search_runs([experiment_id], filter_string=f"tags.`{reg.TAG}cycle` = '2026-01-05'")
    assert len(kept) == 1  # another cycle's run, which has its version, is left alone


def test_metric_history_reads_the_metrics_of_only_the_newest_passed_versions(workspace):
    tmp, p = workspace
    versions = [register_version(p, tmp, f"2026-02-0{day}", passed=day != 3) for day in range(1, 6)]
    history_ = reg.metric_history(p, passed_limit=2)
    assert [h["version"] for h in history_] == versions  # every version, oldest first
    read = [h["version"] for h in history_ if h["metrics"]]
    assert read == [versions[3], versions[4]]  # the two newest that passed (the third was rejected)
    assert history_[3]["metrics"]["eval_loss"] == 1.0
