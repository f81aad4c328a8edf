"""`nightshift serve-model`: the OpenAI-compatible API on @champion, following the registry, and
the exchanges it logs for tonight's cycle."""

import dataclasses
import datetime as dt
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from flows import workspace as wsp
from flows.serving import exchange_log, server
from pipelines.common.records import read_jsonl
from tests.conftest import write_tiny_params
from tests.test_forget import SHORT, write_day

MODEL_NAME = "nightshift-adapter"


# --- binding and the log, without a model -----------------------------------------------------

def test_an_open_address_needs_an_api_key_and_loopback_does_not():
    server.check_exposure("127.0.0.1", None)
    server.check_exposure("::1", None)
    server.check_exposure("localhost", None)
    server.check_exposure("0.0.0.0", "a-key")
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):
        with pytest.raises(server.ServeModelError, match="NIGHTSHIFT_API_KEY"):
            server.check_exposure(host, None)


def test_with_an_api_key_every_v1_request_needs_it_and_no_champion_is_a_503(tmp_path, params):
    from fastapi.testclient import TestClient

    from flows.serving.api import create_app
    from flows.serving.follower import Follower

    follower = Follower(tmp_path, params, tmp_path / "scratch")   # nothing loaded yet
    client = TestClient(create_app(params, follower, None, api_key="s3cret-key"))
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = client.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"})
    assert answer.status_code == 503 and "nightshift run" in answer.json()["detail"]
    chat = client.post("/v1/chat/completions", headers={"Authorization": "Bearer s3cret-key"},
                       json={"messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 503
    assert client.get("/health").json()["version"] is None   # open: it names no data


def wait_for(condition, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.3)
    return condition()


def record(i: int, ts: dt.datetime) -> dict:
    return {"id": f"chatcmpl-{i}", "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "messages": [{"role": "user", "content": f"question {i}"},
                         {"role": "assistant", "content": "answer"}], "feedback": None,
            "metadata": {"adapter_version": "3"}}


def test_exchanges_go_to_the_days_jsonl_file_as_whole_lines_that_ingest_reads(tmp_path, params):
    from pipelines.data import ingest

    log = exchange_log.ExchangeLog(tmp_path, params.ingest)   # ingest.url: logs
    day1 = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.timezone.utc)
    day2 = day1 + dt.timedelta(seconds=2)
    threads = [threading.Thread(target=log.write, args=(record(i, day1), day1)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.write(record(99, day2), day2)
    lines = list(ingest.read_jsonl_source(tmp_path / "logs"))
    assert len(lines) == 21 and all(json.loads(line.raw)["messages"] for line in lines)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["2026-03-01.jsonl", "2026-03-02.jsonl"]
    assert oct((tmp_path / "logs/2026-03-01.jsonl").stat().st_mode & 0o777) == "0o600"


def test_exchanges_go_to_the_sql_table_ingest_reads(tmp_path, params, replace):
    from pipelines.data import ingest

    url = f"sqlite:///{tmp_path / 'interactions.db'}"
    log = exchange_log.ExchangeLog(tmp_path, replace(params.ingest, url=url))
    ts = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
    log.write(record(1, ts), ts)
    log.write(record(2, ts), ts)
    log.close()
    rows = list(ingest.read_sql_source(url, "interactions", ts - dt.timedelta(hours=1),
                                       ts + dt.timedelta(hours=1), 100))
    assert [json.loads(r.raw)["id"] for r in rows] == ["chatcmpl-1", "chatcmpl-2"]
    # `nightshift status` counts only what the server logged, per version.
    assert exchange_log.served_counts(tmp_path, replace(params.ingest, url=url)) == {}
    log.write({**record(3, ts), "metadata": {"adapter_version": "4", "source": exchange_log.SOURCE}}, ts)
    log.close()
    assert exchange_log.served_counts(tmp_path, replace(params.ingest, url=url)) == {"4": 1}


def served_record(i: int, ts: dt.datetime, user: str, text: str = "question") -> dict:
    return {**record(i, ts), "messages": [{"role": "user", "content": f"{text} {i}"},
                                          {"role": "assistant", "content": "answer"}],
            "metadata": {"adapter_version": "3", "source": exchange_log.SOURCE, "user_id": user}}


def test_forget_takes_a_person_out_of_the_log_while_the_server_keeps_writing(tmp_path, params):
    """By user id or by a value in the text (an email, a phone number by its digits), with the
    feedback on their answers; lines the server did not write stay, and no concurrent write is
    lost to the rewrite."""
    log = exchange_log.ExchangeLog(tmp_path, params.ingest)
    ts = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
    log.write(served_record(1, ts, "u-ann"), ts)
    log.write(served_record(2, ts, "u-ben", "call me on +1 (415) 555-0142 about order"), ts)
    log.write({**served_record(3, ts, "u-cat"), "metadata": {"user_id": "u-ann"}}, ts)   # not the server's
    log.write({"id": "fb-1", "timestamp": "2026-03-01T12:00:01Z", "event": "feedback",
               "response_id": "chatcmpl-1", "feedback": "down", "metadata": {"source": exchange_log.SOURCE}}, ts)
    writers = [threading.Thread(target=log.write, args=(served_record(100 + i, ts, "u-dan"), ts))
               for i in range(40)]
    for w in writers:
        w.start()
    removed = exchange_log.forget_in_log(tmp_path, params.ingest, "u-ann", None)
    removed += exchange_log.forget_in_log(tmp_path, params.ingest, None, "4155550142")
    for w in writers:
        w.join()
    left = list(read_jsonl(tmp_path / "logs/2026-03-01.jsonl"))
    assert removed == 3
    assert sorted(r["id"] for r in left) == sorted(["chatcmpl-3"] + [f"chatcmpl-{100 + i}" for i in range(40)])

    url = f"sqlite:///{tmp_path / 'interactions.db'}"
    sql = dataclasses.replace(params.ingest, url=url)
    log = exchange_log.ExchangeLog(tmp_path, sql)
    for i, user in enumerate(("u-ann", "u-ben")):
        log.write(served_record(i, ts, user), ts)
    log.close()
    assert exchange_log.forget_in_log(tmp_path, sql, "u-ann", None) == 1
    assert [r["metadata"]["user_id"] for r in exchange_log.served_records(tmp_path, sql)] == ["u-ben"]


def test_a_webhook_delivery_is_taken_only_when_signed_and_fresh():
    from flows.serving import webhook

    body, secret = b'{"data": {"name": "m", "alias": "champion", "version": "3"}}', "s3cret"
    now = 1_800_000_000
    headers = {"x-mlflow-delivery-id": "d-1", "x-mlflow-timestamp": str(now),
               "x-mlflow-signature": webhook.signature(secret, "d-1", str(now), body)}
    assert webhook.verified(secret, headers, body, now=now + 5) is None
    assert "does not match" in webhook.verified("other", headers, body, now=now)
    assert "does not match" in webhook.verified(secret, headers, body.replace(b"3", b"1"), now=now)
    assert "stale" in webhook.verified(secret, headers, body, now=now + 3600)
    assert "unsigned" in webhook.verified(secret, {}, body, now=now)


def register_two_versions(p, tmp_path: Path) -> None:
    """Versions 1 and 2 (@champion) of fresh LoRA adapters on `p`'s base, through the pipeline's
    own register and verdict path."""
    from peft import get_peft_model

    from pipelines.common import modeling
    from pipelines.model.train import lora_config
    from registry import history
    from registry import mlflow_registry as reg

    for i in (1, 2):
        adapter = tmp_path / f"adapter-{i}"
        get_peft_model(modeling.load_base(p.base_model.model, "none"), lora_config(p.train)).save_pretrained(adapter)
        verdict = {"passed": True, "reasons": ["all checks passed"]}
        version = reg.register(p.registry, adapter, f"cycle-{i}", {"cycle": f"2026-01-0{i}"},
                               {"eval_loss": 1.0}, {"seed": 1}, [], verdict)["version"]
        history.apply_verdict(p.registry, version, verdict, by="test")


# What an MLflow server needs to deliver to serve-model on loopback over plain http (its defaults
# allow https to public addresses only), and to see a new webhook within a second rather than its
# default 60 s cache.
WEBHOOK_SERVER_ENV = {"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                      "MLFLOW_WEBHOOK_CACHE_TTL": "1"}


@pytest.mark.slow
@pytest.mark.server
def test_an_alias_moved_on_an_mlflow_server_reaches_the_server_by_webhook_not_by_polling(
        tmp_path, params, tiny_base, replace):
    """A real `mlflow server` (SQLite backend) sends its signed webhook on an alias set through its
    REST API, as the MLflow UI sets it; with polling an hour apart, the new version answers
    within seconds. A forged call moves nothing."""
    import uvicorn

    from flows.serving import webhook
    from flows.serving.api import create_app
    from flows.serving.follower import Follower
    from registry import mlflow_registry as reg
    from tests.conftest import running_mlflow_server

    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/webhooks/mlflow"
    (tmp_path / "mlflow").mkdir()
    with running_mlflow_server(tmp_path / "mlflow", f"sqlite:///{tmp_path}/mlflow.db",
                               env=WEBHOOK_SERVER_ENV) as tracking:
        p = replace(params, registry=replace(params.registry, tracking_uri=tracking),
                    base_model=replace(params.base_model, model=tiny_base),
                    serving=replace(params.serving, poll_seconds=3600, webhook_url=hook_url))
        register_two_versions(p, tmp_path)
        follower = Follower(tmp_path, p, tmp_path / "scratch")
        follower.check()
        assert follower.current.version == "2"
        secret = webhook.new_secret()
        hook = webhook.register(p, hook_url, secret)
        assert hook is not None
        app_server = uvicorn.Server(uvicorn.Config(create_app(p, follower, None, None, None, secret),
                                                   host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=app_server.run, daemon=True)
        thread.start()
        try:
            assert wait_for(lambda: app_server.started, 30)
            forged = httpx.post(hook_url, json={"data": {"name": MODEL_NAME, "alias": "champion"}},
                                headers={"x-mlflow-delivery-id": "x", "x-mlflow-timestamp": str(int(time.time())),
                                         "x-mlflow-signature": "v1,AAAA"})
            assert forged.status_code == 401
            time.sleep(2)   # past the MLflow server's webhook cache (1 s here), which knew no webhook
            moved = time.time()
            reg.client(p.registry).set_registered_model_alias(MODEL_NAME, "champion", "1")
            assert wait_for(lambda: follower.current.version == "1", 10), "not followed within 10 s"
            print(f"followed {time.time() - moved:.1f} s after the alias moved (polling: 3600 s)")
        finally:
            webhook.unregister(p, hook)
            app_server.should_exit = True
            thread.join(timeout=30)
        assert not list(reg.client(p.registry).list_webhooks())


# --- a served workspace after real cycles -------------------------------------------------------

def nightshift(*args, ws: Path):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args, "--workspace", str(ws)],
                          capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two real cycles (versions 1 and 2, @champion on 2), then `nightshift serve-model`
    following the registry every second."""
    from registry import mlflow_registry as reg

    ws = wsp.init(tmp_path_factory.mktemp("serve") / "ws")
    write_tiny_params(ws / "params.yaml", **{**SHORT, "base_model.corpus_records": 200,
                                             "base_model.pretrain_steps": 60,
                                             "serving.poll_seconds": 1.0,
                                             "serving.canary_fraction": 0.5})
    wsp.git(ws, "commit", "-q", "-am", "tiny params")
    for day in ("2026-01-05", "2026-01-06"):
        write_day(ws, dt.date.fromisoformat(day), [])
        out = nightshift("run", "--date", day, ws=ws)
        assert out.returncode == 0, out.stdout + out.stderr
    p = wsp.load_params(ws)
    if reg.resolve_alias(p.registry).version != "2":
        out = nightshift("promote", "2", "--force", "--reason", "two versions to follow", ws=ws)
        assert out.returncode == 0, out.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve-model", "--port", str(port),
                             "--workspace", str(ws)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).json()["version"]:
                break
        except httpx.HTTPError:
            assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("serve-model did not answer within 120 s:\n" + proc.stdout.read())
    yield ws, url
    proc.terminate()
    proc.wait(timeout=30)


def chat(url: str, text: str, headers: dict | None = None, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 8, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60, headers=headers)


def logged(ws: Path) -> list[dict]:
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    file = ws / "logs" / f"{today}.jsonl"
    return list(read_jsonl(file)) if file.exists() else []


@pytest.mark.slow
def test_an_answer_names_the_champions_version(served):
    ws, url = served
    answer = chat(url, "Where is my order?", user="u-1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == f"{MODEL_NAME}/2" and answer.headers["x-nightshift-version"] == "2"
    assert body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] <= 8
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == f"{MODEL_NAME}/2"


@pytest.mark.slow
def test_a_streamed_answer_comes_as_openai_chunks_and_is_the_same_greedy_answer(served):
    ws, url = served
    whole = chat(url, "Can I return the desk lamp?", user="u-9").json()["choices"][0]["message"]["content"]
    streamed = chat(url, "Can I return the desk lamp?", user="u-9", stream=True)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-nightshift-version"] == "2"
    events = [line[len("data: "):] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and {c["model"] for c in chunks} == {f"{MODEL_NAME}/2"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and len(chunks) >= 3
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == whole
    # Logged once complete, with the whole answer.
    [record] = [r for r in logged(ws) if r["id"] == chunks[0]["id"]]
    assert record["messages"][-1]["content"] == whole and record["metadata"]["adapter_version"] == "2"


@pytest.mark.slow
def test_exchanges_are_logged_with_their_version_and_an_opted_out_one_nowhere(served):
    ws, url = served
    assert chat(url, "logged question 7f3a", user="u-42", metadata={"conversation_id": "c-1"}).status_code == 200
    assert chat(url, "private question 9c1e", store=False).status_code == 200
    assert chat(url, "private question 5d2b", headers={"X-Nightshift-Opt-Out": "1"}).status_code == 200
    records = logged(ws)
    [mine] = [r for r in records if "7f3a" in r["messages"][0]["content"]]
    assert mine["metadata"]["adapter_version"] == "2" and mine["metadata"]["user_id"] == "u-42"
    assert mine["metadata"]["conversation_id"] == "c-1" and mine["metadata"]["latency_ms"] > 0
    assert mine["messages"][-1]["role"] == "assistant"
    # `nightshift status` counts the logged answers per version.
    status = nightshift("status", "--json", ws=ws)
    assert json.loads(status.stdout)["served"]["2"] == len(logged(ws)) >= 1, status.stdout
    assert "version 2:" in nightshift("status", ws=ws).stdout
    # Opted out: in no file of the workspace, and not in the server's own output either.
    for private in ("9c1e", "5d2b"):
        found = subprocess.run(["grep", "-rl", f"private question {private}", str(ws)],
                               capture_output=True, text=True)
        assert found.stdout == "", found.stdout


def feedback(url: str, response_id: str, rating: str, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/feedback", json={"response_id": response_id, "rating": rating, **extra},
                      timeout=30)


@pytest.mark.slow
def test_feedback_is_logged_as_an_event_on_the_answer_and_never_for_an_opted_out_one(served):
    ws, url = served
    rated = chat(url, "rate this answer 4e1d", user="u-7").json()["id"]
    given = feedback(url, rated, "up", comment="great, write to kim.lee@mailbox.org")
    assert given.status_code == 200 and given.json()["stored"], given.text
    [event] = [r for r in logged(ws) if r.get("response_id") == rated]
    assert (event["event"], event["feedback"], event["metadata"]["source"]) == (
        "feedback", "up", exchange_log.SOURCE)
    private = chat(url, "private question 31ce", store=False).json()["id"]
    assert private.startswith("chatcmpl-nolog-")
    assert feedback(url, private, "down").json()["stored"] is False
    assert not any(private in json.dumps(r) for r in logged(ws))
    assert feedback(url, "my order never came", "down").status_code == 400
    assert feedback(url, rated, "meh").status_code == 422
    # A rating is not an answer: `status` counts answers only.
    assert sum(exchange_log.served_counts(ws, wsp.load_params(ws).ingest).values()) == len(
        [r for r in logged(ws) if "messages" in r])


@pytest.mark.slow
def test_a_rollback_is_followed_within_seconds_and_no_request_fails_during_the_swap(served):
    ws, url = served
    results, stop = [], threading.Event()

    def keep_asking():
        while not stop.is_set():
            # Not logged: hundreds of one question would be a looping client to validate.
            answer = chat(url, "Can I return the lamp?", store=False)
            results.append((answer.status_code, answer.headers.get("x-nightshift-version")))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        time.sleep(1)
        started = time.time()   # the alias moves while the command runs (it loads params, syncs history)
        out = nightshift("rollback", "--reason", "answers got worse", ws=ws)
        assert out.returncode == 0, out.stderr
        deadline = time.time() + 10
        while time.time() < deadline and not (results and results[-1][1] == "1"):
            time.sleep(0.2)
        followed = time.time() - started
    finally:
        stop.set()
        asker.join()
    assert results[-1][1] == "1", results[-5:]
    print(f"rollback command started {followed:.1f} s before the first answer from version 1; "
          f"{len(results)} requests during the swap")
    assert all(status == 200 for status, _ in results), results
    assert {v for _, v in results} == {"1", "2"}


@pytest.mark.slow
def test_an_alias_moved_outside_nightshift_is_followed_too(served):
    """As the MLflow UI does it: the registry's own API sets the alias."""
    from registry import mlflow_registry as reg

    ws, url = served
    p = wsp.load_params(ws)
    reg.client(p.registry).set_registered_model_alias(MODEL_NAME, "champion", "2")
    deadline = time.time() + 10
    while time.time() < deadline and chat(url, "hello").json()["model"] != f"{MODEL_NAME}/2":
        time.sleep(0.2)
    assert chat(url, "hello").json()["model"] == f"{MODEL_NAME}/2"


@pytest.mark.slow
def test_the_canary_gives_a_sticky_share_of_users_to_the_challenger(served):
    """@challenger set: serving.canary_fraction (0.5 here) of users get it, each user always the
    same version, and every exchange says which alias answered it. Removed: all go to @champion."""
    ws, url = served
    out = nightshift("promote", "1", "--alias", "challenger", "--force", "--reason", "canary trial", ws=ws)
    assert out.returncode == 0, out.stderr
    health = lambda: httpx.get(f"{url}/health").json()  # noqa: E731
    assert wait_for(lambda: (health()["canary"] or {}).get("version") == "1"), health()
    assert {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]} == {f"{MODEL_NAME}/1", f"{MODEL_NAME}/2"}
    first = {f"cu-{i}": chat(url, f"canary question {i} about order {7100 + i}", user=f"cu-{i}")
             .headers["x-nightshift-version"] for i in range(12)}
    assert set(first.values()) == {"1", "2"}, first
    for user in ("cu-0", "cu-5", "cu-11"):
        again = chat(url, f"and a follow-up from {user}", user=user)
        assert again.headers["x-nightshift-version"] == first[user]
    for r in logged(ws):
        if str(r["metadata"].get("user_id", "")).startswith("cu-"):
            assert r["metadata"]["served_as"] == {"1": "challenger", "2": "champion"}[r["metadata"]["adapter_version"]]
    out = nightshift("promote", "2", "--alias", "challenger", "--force", "--reason",
                     "same as champion: canary off", ws=ws)
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: health()["canary"] is None), health()


def write_canary_log(ws: Path, champion: tuple, challenger: tuple) -> None:
    from tests.test_canary import served as simulated

    from pipelines.common.records import write_jsonl

    write_jsonl(ws / "canary-logs" / "2026-03-01.jsonl",
                simulated("2", "champion", 60, *champion) + simulated("1", "challenger", 50, *challenger, late=True))


@pytest.mark.slow
def test_nightshift_canary_says_promote_wait_and_acts_through_the_registry(served):
    """Simulated traffic (a log of its own, named by ingest.url for the time of the test): a
    challenger rated clearly better is promoted, equal ratings wait; --act moves @champion, removes
    @challenger, and the history says why. The server follows."""
    ws, url = served
    params_file = ws / "params.yaml"
    original = params_file.read_text()
    assert nightshift("promote", "1", "--alias", "challenger", "--force", "--reason", "trial",
                      ws=ws).returncode == 0
    params_file.write_text(original.replace("  url: logs\n", "  url: canary-logs\n"))
    try:
        write_canary_log(ws, champion=(30, 10), challenger=(30, 10))
        out = nightshift("canary", "--json", ws=ws)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["decision"] == "wait"
        write_canary_log(ws, champion=(20, 20), challenger=(36, 4))
        out = nightshift("canary", ws=ws)
        assert "verdict: promote: rated better" in out.stdout, out.stdout + out.stderr
        out = nightshift("canary", "--act", ws=ws)
        assert out.returncode == 0 and "@champion: version 2 -> 1 (canary)" in out.stdout, out.stdout + out.stderr
    finally:
        params_file.write_text(original)
        import shutil

        shutil.rmtree(ws / "canary-logs")
    history = json.loads(nightshift("history", "--json", ws=ws).stdout)
    assert [(m["alias"], m["to_version"], m["kind"]) for m in history[-2:]] == [
        ("champion", "1", "canary"), ("challenger", None, "canary")]
    assert "thumbs-up 90.0%" in history[-1]["why"]
    assert wait_for(lambda: chat(url, "hello again").headers["x-nightshift-version"] == "1")


@pytest.mark.slow
def test_the_next_cycle_pulls_what_the_server_answered(served):
    """Last: a cycle for today's exchanges snapshots them, redacted, with their versions, and
    applies the feedback: today's on today's answers, and a late one on an answer an earlier
    night pulled into the replay buffer."""
    ws, url = served
    assert chat(url, "My email is dana.example@mail.com, where is order 5521?").status_code == 200
    [buffered, *_] = list(read_jsonl(ws / "data/dataset/buffer.jsonl"))
    late = {"id": "fb-late00000001", "timestamp": "2026-01-07T09:00:00Z", "event": "feedback",
            "response_id": buffered["id"], "feedback": "down", "comment": "this was wrong",
            "metadata": {}}
    with open(ws / "logs" / "2026-01-07.jsonl", "a") as f:
        f.write(json.dumps(late) + "\n")
    today = dt.datetime.now(dt.timezone.utc).date()
    out = nightshift("run", "--date", today.isoformat(), ws=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    snapshot = list(read_jsonl(ws / "data/snapshots" / f"{today}.jsonl"))
    served_records = [r for r in snapshot if r.get("metadata", {}).get("source") == "nightshift serve-model"]
    assert len(served_records) == len(logged(ws)) >= 3
    answers = [r for r in served_records if r.get("event") != "feedback"]
    assert {r["metadata"]["adapter_version"] for r in answers} <= {"1", "2"}
    assert not any("dana.example@mail.com" in json.dumps(r) or "kim.lee@mailbox.org" in json.dumps(r)
                   for r in snapshot)
    summary = json.loads((ws / "reports/summary.json").read_text())
    accounting = summary["accounting"]
    assert accounting["balanced"] and accounting["feedback_events"] >= 2, accounting
    assert accounting["feedback_removed_from_buffer"] == 1, accounting
    assert buffered["id"] not in {r["id"] for r in read_jsonl(ws / "data/dataset/buffer.jsonl")}
    assert accounting["feedback_applied_new"] >= 1, accounting
