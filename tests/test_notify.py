"""Alerts reach a real HTTP receiver on loopback through Apprise's json:// notifier."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from flows import notify
from flows.summary import CycleSummary


class Receiver:
    def __init__(self):
        self.received = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


FAILED = {"cycle": "2026-01-05", "status": "failed", "failed_stage": "validate",
          "error": "BatchRejected: quarantine_rate_too_high", "accounting": {}}
REJECTED = {"cycle": "2026-01-06", "status": "succeeded", "version": "7",
            "gate": {"passed": False, "reasons": ["eval loss 4.1 vs champion 3.2"]},
            "accounting": {"pulled": 10, "clean": 8, "quarantined": 1, "duplicates": 1}}
PROMOTED = {"cycle": "2026-01-07", "status": "succeeded", "version": "8",
            "gate": {"passed": True, "reasons": ["all checks passed"]}, "reason": "gate passed"}


def test_a_failed_stage_alerts_with_the_error_and_the_flow_run(receiver, params, monkeypatch):
    monkeypatch.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200")
    assert notify.send(CycleSummary.model_validate(FAILED), params, flow_run_id="abc-123", urls=[receiver.url])
    [message] = receiver.received
    assert "FAILED in validate" in message["title"]
    assert "quarantine_rate_too_high" in message["message"]
    assert "http://127.0.0.1:4200/runs/flow-run/abc-123" in message["message"]
    assert message["type"] == "failure"


def test_a_rejected_candidate_alerts_with_the_reasons_and_the_version(receiver, params):
    assert notify.send(CycleSummary.model_validate(REJECTED), params, urls=[receiver.url])
    [message] = receiver.received
    assert "version 7 REJECTED" in message["title"]
    assert "eval loss 4.1 vs champion 3.2" in message["message"]
    assert "version 7" in message["message"]


def test_a_good_night_is_quiet_unless_asked(receiver, params, replace):
    assert not notify.send(CycleSummary.model_validate(PROMOTED), params, urls=[receiver.url])
    loud = replace(params, notify=replace(params.notify, on_success=True))
    assert notify.send(CycleSummary.model_validate(PROMOTED), loud, urls=[receiver.url])
    assert len(receiver.received) == 1


def test_urls_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(notify.URLS_ENV, "json://a.example/x, mailto://u:p@b.example  slack://T/B/C")
    assert notify.alert_urls() == ["json://a.example/x", "mailto://u:p@b.example", "slack://T/B/C"]
