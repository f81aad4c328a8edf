"""A night with too little new data skips training through the real flow (Prefect, DVC, GX,
MLflow): it says so, records its accounting, versions the data and registers nothing."""

import datetime as dt
import json
import subprocess
from contextlib import chdir

import pytest
from prefect.testing.utilities import prefect_test_harness

from flows import notify as notify_stage
from flows import workspace as wsp
from flows.summary import CycleSummary
from pipelines.common import params as params_mod
from pipelines.samples import sample_logs
from registry import mlflow_registry as reg
from tests.conftest import write_tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quiet_nights(tmp_path_factory):
    """Night one finds an empty log folder; night two finds 8 records (one of them malformed)."""
    from flows.nightly import nightly

    ws = wsp.init(tmp_path_factory.mktemp("ws") / "workspace")
    write_tiny_params(ws / "params.yaml", **{"nightly.min_new_examples": 10})
    (ws / "logs").mkdir()
    with prefect_test_harness(server_startup_timeout=120):
        empty = nightly(date="2026-01-05", workspace=str(ws))
        day = dt.date(2026, 1, 6)
        good = [line for line in sample_logs.generate_day(7, day, 1, 20, shift=0.0)
                if _is_chat(line)][:7]
        (ws / "logs/2026-01-06.jsonl").write_text("\n".join(good + ['{"id": "broken", "mess']) + "\n")
        few = nightly(date="2026-01-06", workspace=str(ws))
    return ws, empty, few


def _is_chat(line: str) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and isinstance(record.get("messages"), list) and "id" in record


def test_a_night_with_no_records_is_skipped_with_its_accounting_and_no_model(quiet_nights):
    ws, empty, _ = quiet_nights
    assert empty["status"] == "skipped" and "no new records" in empty["reason"]
    assert empty["accounting"] == {"pulled": 0, "clean": 0, "quarantined": 0, "duplicates": 0,
                                   "forgotten": 0, "balanced": True}
    # No DVC stage ran: straight from ingest to versioning the empty snapshot.
    assert list(empty["timings"]) == ["ingest", "version"]
    recorded = json.loads((ws / "reports/cycles/2026-01-05.json").read_text())
    assert recorded["status"] == "skipped" and recorded["accounting"]["pulled"] == 0
    p = params_mod.load(ws / "params.yaml")
    with chdir(ws):
        assert reg.find_version_for_cycle(p.registry, "2026-01-05") is None
    assert not notify_stage.should_alert(CycleSummary.model_validate(empty), p.notify)


def test_a_night_below_the_threshold_is_skipped_with_its_records_accounted_and_versioned(quiet_nights):
    ws, _, few = quiet_nights
    assert few["status"] == "skipped" and "nightly.min_new_examples (10)" in few["reason"]
    acc = few["accounting"]
    assert acc["pulled"] == 8 and acc["balanced"]
    assert acc["pulled"] == acc["clean"] + acc["quarantined"] + acc["duplicates"]
    assert acc["quarantined"] == 1 and few["new_examples"] < 10
    # Too few to judge as a batch (validate.min_records 5 counts records; 8 is enough here), and
    # nothing past the data stages ran: no base model, no training, no registration.
    assert "train" not in few["timings"] and "register" not in few["timings"]
    assert few["validation"]["batch_passed"] is True
    p = params_mod.load(ws / "params.yaml")
    with chdir(ws):
        assert reg.find_version_for_cycle(p.registry, "2026-01-06") is None
    assert not notify_stage.should_alert(CycleSummary.model_validate(few), p.notify)
    # The cycle is a commit holding the snapshot; its learnable records wait in the replay buffer.
    log = subprocess.run(["git", "log", "--format=%s"], cwd=ws, capture_output=True, text=True).stdout
    assert log.splitlines()[:2] == ["nightshift cycle 2026-01-06", "nightshift cycle 2026-01-05"]
    assert (ws / "data/snapshots/2026-01-06.jsonl.dvc").exists()
    buffer = (ws / "data/dataset/buffer.jsonl").read_text().splitlines()
    assert len(buffer) > 0 and all(json.loads(r)["_cycle"] == "2026-01-06" for r in buffer)
