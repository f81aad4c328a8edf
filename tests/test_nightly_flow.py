"""The whole cycle through the real Prefect, DVC, GX, transformers/peft/bitsandbytes and MLflow,
in a fresh workspace on tiny data: two nights, the second training from the first's champion."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from flows import workspace as wsp
from pipelines.samples import sample_logs
from registry import mlflow_registry as reg
from tests.conftest import write_tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory, prefect_api):
    """A workspace that has run two nightly cycles on the sample logs."""
    import datetime as dt

    from flows.nightly import nightly

    ws = wsp.init(tmp_path_factory.mktemp("ws") / "workspace")
    # 40 records a night leave under 30 in the replay buffer once thumbs-down answers and
    # near-duplicates are not learned: drift compares from 20 so the second night is compared.
    write_tiny_params(ws / "params.yaml", **{"drift.min_records": 20})
    sample_logs.generate(ws / "logs", dt.date(2026, 1, 5), 2, 40, seed=7, topic_shift=0.8)
    first = nightly(date="2026-01-05", workspace=str(ws))
    second = nightly(date="2026-01-06", workspace=str(ws))
    return ws, first, second


def registry_params(ws):
    from pipelines.common import params as params_mod

    return params_mod.load(ws / "params.yaml").registry


def test_every_record_pulled_is_accounted_for(two_cycles):
    ws, first, second = two_cycles
    for summary in (first, second):
        acc = summary["accounting"]
        assert acc["balanced"] and acc["pulled"] == 46
        assert acc["pulled"] == acc["clean"] + acc["quarantined"] + acc["duplicates"]
        assert acc["quarantined"] >= 4 and acc["duplicates"] >= 1
    written = json.loads((ws / "reports/summary.json").read_text())
    assert written["cycle"] == "2026-01-06" and written["status"] == "succeeded"


def test_no_personal_value_of_the_source_logs_rests_anywhere_but_the_source(two_cycles):
    """Files, DVC cache and remote, the MLflow store and artifacts, every git object and Prefect's
    database, after two real cycles: none holds a name, email, phone, card, IBAN, key, address or
    user id of the logs. Single name parts ("Priya") are looked for everywhere but in code (the
    project's sample generator lists them): data, quarantine, reports, DVC objects, the model
    files (the base model is pre-trained on redacted dialogues), the stores."""
    import datetime as dt
    import re

    from prefect.settings import get_current_settings

    ws, _, _ = two_cycles
    values = sample_logs.personal_values(dt.date(2026, 1, 5), 2, 40, 7, 0.8)
    words = {v for v in values if v.isalpha()}
    whole = values - words
    assert len(words) > 10 and len(whole) > 50

    prefect_db = Path(get_current_settings().server.database.connection_url.get_secret_value()
                      .split("///")[-1])
    stores = [f for f in ws.rglob("*") if f.is_file() and f.relative_to(ws).parts[0] not in
              ("logs", ".git", "pipelines")]
    stores += [f for f in prefect_db.parent.glob(prefect_db.name + "*")]
    assert any(f.name == "mlflow.db" for f in stores) and any("dvc-remote" in f.parts for f in stores)
    git_objects = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=ws,
                                 capture_output=True, check=True).stdout
    # Base64 of binary data (the reports' PNG figures, the retrieval index's float16 embeddings)
    # is no text: a name part like "Ali" turns up in it by chance, between digits.
    binary = re.compile(rb'data:image/png;base64,[A-Za-z0-9+/=]+|"embedding": "[A-Za-z0-9+/=]+"')
    found = []
    for f in stores:
        data = binary.sub(b"", f.read_bytes())
        found += [(str(f), v) for v in values
                  if re.search(rb"(?<![A-Za-z])" + re.escape(v.encode()) + rb"(?![A-Za-z])", data)]
    found += [("git", v) for v in whole if v.encode() in git_objects]
    assert found == []


def test_malformed_records_land_in_quarantine_with_reasons_and_the_cycle_goes_on(two_cycles):
    ws, first, _ = two_cycles
    assert first["status"] == "succeeded"
    quarantined = [json.loads(l) for l in (ws / "data/validated/quarantine.jsonl").read_text().splitlines()]
    reasons = {r for q in quarantined for r in q["_reasons"]}
    assert {"invalid_json", "unknown_role", "empty_message", "missing_messages"} <= reasons


def test_first_cycle_registers_a_champion_with_lineage_tags(two_cycles):
    ws, first, _ = two_cycles
    assert first["version"] == "1" and first["promoted"]

    p = registry_params(ws)
    with __import__("contextlib").chdir(ws):
        mv = reg.client(p).get_model_version(p.model_name, "1")
    tags = mv.tags
    for key in ("cycle", "parent_version", "data_version", "git_commit", "params_hash",
                "base_model", "flow_run_id", "eval_loss", "gate", "gate_reasons"):
        assert tags.get(f"nightshift.{key}") not in (None, "", "none") or key == "parent_version", key
    assert tags["nightshift.parent_version"] == "none"
    assert tags["nightshift.gate"] == "passed"


def test_second_cycle_compares_its_batch_with_the_first_for_drift(two_cycles):
    ws, first, second = two_cycles
    assert "not compared" in first["drift"]["note"]  # no history on the first night
    report = json.loads((ws / "reports/drift.json").read_text())
    assert report["cycle"] == "2026-01-06" and "embedding" in report
    # The retrieval stage embedded the night's records already: drift loaded no encoder.
    assert report["newly_embedded"] == 0
    assert second["drift"]["alarm"] == report["alarm"]
    assert "Input drift, cycle 2026-01-06" in (ws / "reports/drift.html").read_text()


def test_second_cycle_is_judged_on_every_set_and_reports_model_drift(two_cycles):
    ws, first, second = two_cycles
    evaluation = json.loads((ws / "reports/eval.json").read_text())
    assert evaluation["examples"]["golden"] == 36 and evaluation["examples"]["anchor"] == 36
    assert evaluation["examples"]["replay"] > 0  # the first night's records, not replayed tonight
    assert evaluation["champion"]["golden"]["eval_loss"] > 0
    assert evaluation["divergence"]["kl_champion_to_candidate"] > 0
    gate = json.loads((ws / "reports/gate.json").read_text())
    checked = {c["check"].split()[0] for c in gate["checks"] if c["passed"] is not None}
    assert {"golden.eval_loss", "replay.eval_loss", "anchor.eval_loss", "generations.pii_rate"} <= checked

    assert first["model_drift"]["divergence"] is None  # no champion on the first night
    drift = json.loads((ws / "reports/model_drift.json").read_text())
    assert drift["version"] == second["version"] and drift["divergence"] == evaluation["divergence"]
    assert [p["version"] for p in drift["trends"]["golden.eval_loss"]["points"]] == ["1"]
    assert "Model drift, cycle 2026-01-06" in (ws / "reports/model_drift.html").read_text()
    p = registry_params(ws)
    with __import__("contextlib").chdir(ws):
        c = reg.client(p)
        run_id = c.get_model_version(p.model_name, second["version"]).run_id
        logged = {a.path for a in c.list_artifacts(run_id, "reports")}
        metrics = c.get_run(run_id).data.metrics
    assert {"reports/model_drift.json", "reports/model_drift.html", "reports/eval.json"} <= logged
    assert {"golden.eval_loss", "anchor.eval_loss", "replay.eval_loss", "generations.pii_rate"} <= set(metrics)


def test_second_cycle_trains_from_the_first_champion(two_cycles):
    ws, _, second = two_cycles
    assert second["parent_version"] == "1" and second["train"]["continued_from_parent"]
    with __import__("contextlib").chdir(ws):
        champion = reg.resolve_alias(registry_params(ws))
        status = reg.status(registry_params(ws))
    v2 = next(v for v in status["versions"] if v["version"] == "2")
    assert v2["parent"] == "1"
    if second["promoted"]:
        assert champion.version == "2"
    else:  # a rejected candidate leaves production where it was
        assert champion.version == "1"


def test_after_a_cycle_dvc_is_clean_and_each_cycle_is_a_git_commit(two_cycles):
    ws, _, _ = two_cycles
    assert "up to date" in wsp.dvc(ws, "status")
    log = wsp.git(ws, "log", "--oneline")
    assert "nightshift cycle 2026-01-05" in log and "nightshift cycle 2026-01-06" in log
    assert wsp.git(ws, "status", "--porcelain").strip() == ""
    pushed = list((ws / "dvc-remote").rglob("*"))
    assert pushed, "dvc push sent nothing to the remote"


def test_dvc_repro_force_of_train_rebuilds_identical_weights(two_cycles):
    ws, _, _ = two_cycles
    weights = ws / "models/candidate/adapter_model.safetensors"
    before = weights.read_bytes()
    wsp.dvc(ws, "repro", "--force", "--single-item", "train")
    assert weights.read_bytes() == before
    assert "up to date" in wsp.dvc(ws, "status")


def test_running_a_registered_night_again_changes_nothing(two_cycles):
    from flows.nightly import nightly

    ws, _, _ = two_cycles
    head = wsp.git(ws, "rev-parse", "HEAD")
    again = nightly(date="2026-01-06", workspace=str(ws))
    assert again["status"] == "already_done" and again["version"] == "2"
    assert wsp.git(ws, "rev-parse", "HEAD") == head
    with __import__("contextlib").chdir(ws):
        assert len(reg.status(registry_params(ws))["versions"]) == 2


def test_status_command_shows_the_champion(two_cycles):
    ws, _, _ = two_cycles
    out = subprocess.run([sys.executable, "-m", "flows.cli", "status", "--workspace", str(ws), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["aliases"]["champion"] in ("1", "2")


def test_a_batch_failing_its_expectations_stops_before_training_registers_nothing_and_alerts(
        tmp_path, prefect_api, monkeypatch):
    from flows.nightly import nightly
    from tests.test_notify import Receiver

    receiver = Receiver()
    monkeypatch.setenv("NIGHTSHIFT_ALERT_URLS", receiver.url)

    ws = wsp.init(tmp_path / "workspace")
    write_tiny_params(ws / "params.yaml")
    good = [json.dumps({"id": f"g{i}", "timestamp": f"2026-01-05T10:{i:02d}:00Z",
                        "messages": [{"role": "user", "content": f"question {i}"},
                                     {"role": "assistant", "content": f"answer {i}"}]})
            for i in range(10)]
    broken = [json.dumps({"id": f"b{i}", "timestamp": f"2026-01-05T11:{i:02d}:00Z",
                          "messages": [{"role": "robot", "content": "beep"}]}) for i in range(20)]
    (ws / "logs").mkdir()
    (ws / "logs/2026-01-05.jsonl").write_text("\n".join(good + broken) + "\n")

    with pytest.raises(Exception, match="quarantine_rate_too_high"):
        nightly(date="2026-01-05", workspace=str(ws))
    summary = json.loads((ws / "reports/summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_stage"] == "validate"
    assert summary["pulled"] == 30 and summary["quarantined"] == 20
    assert summary["validation"]["batch_failures"] == ["quarantine_rate_too_high"]
    assert summary["validation"]["data_docs"] == str(ws / "reports/data_docs/index.html")
    assert (ws / "reports/data_docs/index.html").exists()  # written although the batch failed
    assert "train" not in summary and "train" not in summary["timings"]
    assert not (ws / "models/candidate").exists()
    with __import__("contextlib").chdir(ws):
        assert not reg.status(registry_params(ws))["registered"]
    [alert] = receiver.received
    assert "FAILED in validate" in alert["title"] and "quarantine_rate_too_high" in alert["message"]
    receiver.server.shutdown()


def test_generate_answers_with_the_base_model_and_the_champion_adapter(two_cycles):
    ws, _, _ = two_cycles
    out = subprocess.run([sys.executable, "-m", "flows.cli", "generate", "Where is my order #123456?",
                          "--max-new-tokens", "20", "--workspace", str(ws)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    header, _, answer = out.stdout.strip().partition("\n")
    assert "nightshift-adapter version" in header and answer.strip()


def test_a_database_password_in_source_url_is_masked_in_the_params_logged_to_mlflow():
    from registry.lineage import without_password as _without_password

    assert _without_password("postgresql+psycopg2://bob:s3cret@db:5432/logs") == \
        "postgresql+psycopg2://bob:***@db:5432/logs"
    assert _without_password("logs") == "logs"


def test_second_nights_worth_report_has_five_contenders_a_verdict_cost_and_break_even_and_opens_in_a_browser(
        two_cycles, browser, tmp_path):
    import csv

    from selenium.webdriver.common.by import By

    from pipelines.model import worth

    ws, first, second = two_cycles
    report = json.loads((ws / "reports/worth.json").read_text())
    assert report["cycle"] == "2026-01-06"
    for name in worth.CONTENDERS:
        for s in ("new", "golden"):
            assert report["contenders"][name][s]["eval_loss"] > 0, (name, s)
    evaluation = json.loads((ws / "reports/eval.json").read_text())
    assert evaluation["contenders"]["indexed"] > 0 and evaluation["contenders"]["context_tokens"]["new"] > 0
    assert evaluation["contenders"]["searched"] == "faiss"  # retrieval.vector_store null: the file, in memory
    gain = report["gains"]["new"]["retrieval"]
    assert gain["low"] <= gain["gain"] <= gain["high"] and gain["records"] == evaluation["examples"]["new"]
    assert report["over_retrieval"] in ("adds", "matches", "undecided") and report["diagnosis"]
    assert report["cost"]["usd"] > 0 and {"train", "evaluate", "retrieval"} <= set(report["cost"]["steps"])
    assert report["cost"]["tokens_trained"] > 0 and report["cost"]["peak_memory_mb"] > 0
    assert report["break_even"]["break_even_requests_per_day"] > 0
    assert report["break_even"]["requests_per_day"] == second["accounting"]["pulled"]  # no feedback events here
    assert second["worth"]["headline"] == report["headline"] and first["worth"]["headline"]
    with open(ws / "reports/worth.csv", newline="") as f:
        assert [row["cycle"] for row in csv.DictReader(f)] == ["2026-01-05", "2026-01-06"]
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=ws,
                           capture_output=True, text=True, check=True).stdout
    assert "reports/worth.json" in shown
    p = registry_params(ws)
    with __import__("contextlib").chdir(ws):
        c = reg.client(p)
        run_id = c.get_model_version(p.model_name, second["version"]).run_id
        metrics = c.get_run(run_id).data.metrics
        logged = {a.path for a in c.list_artifacts(run_id, "reports")}
    assert {"worth.new.gain_over_retrieval", "contenders.new.retrieval.eval_loss", "worth.cycle_cost_usd"} <= set(metrics)
    assert "reports/worth.html" in logged

    browser.get((ws / "reports/worth.html").as_uri())
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Does the adapter earn its keep? Cycle 2026-01-06" in text and report["headline"] in text
    assert "few-shot retrieval" in text and "candidate + retrieval" in text and "requests a day" in text
    images = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 100)")
    assert images == [True] * 4
    browser.save_screenshot(str(tmp_path / "worth.png"))
    assert (tmp_path / "worth.png").stat().st_size > 20_000
