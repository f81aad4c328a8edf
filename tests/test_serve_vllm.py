"""`serve-model` with `serving.engine: vllm`: a real vLLM OpenAI server generates, and the
follower moves it from adapter to adapter through vLLM's runtime LoRA API. Needs a GPU and vLLM
(`pip install vllm`): behind the `gpu` marker, skipped with the reason otherwise."""

import os
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture
def vllm_server(tiny_base, tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm, on a GPU machine)")
    from tests.test_serve_model import free_port

    port = free_port()
    log = open(tmp_path / "vllm.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_base,
         "--enable-lora", "--max-lora-rank", "64", "--max-loras", "4", "--port", str(port),
         "--gpu-memory-utilization", "0.3", "--max-model-len", "512"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            assert proc.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
        time.sleep(2)
    else:
        proc.kill()
        pytest.fail("vLLM did not start in 600 s:\n" + (tmp_path / "vllm.log").read_text()[-3000:])
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def test_vllm_answers_with_the_champion_and_follows_a_move_under_a_new_adapter_name(
        vllm_server, tiny_base, tmp_path, params, replace):
    from fastapi.testclient import TestClient

    from flows.serving.api import create_app
    from flows.serving.follower import Follower
    from registry import mlflow_registry as reg
    from tests.test_serve_model import register_two_versions

    p = replace(params, base_model=replace(params.base_model, model=tiny_base),
                registry=replace(params.registry, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
                serving=replace(params.serving, engine="vllm", vllm_url=vllm_server))
    register_two_versions(p, tmp_path)
    follower = Follower(tmp_path, p, tmp_path / "scratch")
    follower.check()
    first = follower.current.engine_name
    client = TestClient(create_app(p, follower, None, None))
    answer = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                        "max_tokens": 8})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-nightshift-version"] == "2" and answer.json()["usage"]["completion_tokens"] >= 1

    reg.client(p.registry).set_registered_model_alias(p.registry.model_name, "champion", "1")
    follower.check()
    second = follower.current.engine_name
    assert follower.current.version == "1" and second != first
    answer = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                        "max_tokens": 8})
    assert answer.headers["x-nightshift-version"] == "1"
    deadline = time.time() + 30
    names = lambda: {m["id"] for m in httpx.get(f"{vllm_server}/v1/models").json()["data"]}  # noqa: E731
    while time.time() < deadline and first in names():
        time.sleep(0.5)
    assert first not in names() and second in names()
