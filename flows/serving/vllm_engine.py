"""Serving at scale: vLLM's OpenAI server answers, `serve-model` follows the registry for it.

With `serving.engine: vllm`, `serve-model` keeps everything of its own (the API, the log, the
feedback, the canary, the followers) and hands generation to a vLLM server at
`serving.vllm_url`, started on the same base model with LoRA enabled and runtime adapter loading
allowed:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora --max-lora-rank 16 \\
        --max-loras 4 --port 8001

When an alias moves, the follower downloads the new version's adapter (into
`serving.vllm_adapter_dir`, a folder the vLLM server can read) and loads it through vLLM's runtime
adapter API (`POST /v1/load_lora_adapter`) under a new name, `<model>-v<version>-<8 hex>`: a name
is never loaded twice, even when a rollback brings a version back, since vLLM may reuse cached
prefix blocks computed by an earlier adapter of the same name (vllm-project/vllm#42125). Only
once vLLM has loaded it do answers go to it; the old name is unloaded
(`POST /v1/unload_lora_adapter`) when the requests that started on it have finished.

A version trained on another base than the one vLLM serves cannot be loaded there: it is
refused, and the version answering stays (a rebase needs a vLLM server on the new base).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from pathlib import Path

import httpx

from pipelines.common import params as params_mod

log = logging.getLogger("nightshift.serving")


class VLLMError(RuntimeError):
    """vLLM refused or did not answer."""


def adapter_name(p: params_mod.Params, version: str) -> str:
    return f"{p.registry.model_name}-v{version}-{secrets.token_hex(4)}"


def _post(p: params_mod.Params, path: str, body: dict, timeout: float = 300) -> httpx.Response:
    answer = httpx.post(p.serving.vllm_url.rstrip("/") + path, json=body, timeout=timeout)
    if answer.status_code >= 400:
        raise VLLMError(f"vLLM at {p.serving.vllm_url} answered {answer.status_code} to {path}: "
                        f"{answer.text[:300]}")
    return answer


def served_base(p: params_mod.Params) -> str:
    """The model vLLM serves (the first of its /v1/models that is no adapter)."""
    answer = httpx.get(p.serving.vllm_url.rstrip("/") + "/v1/models", timeout=30)
    answer.raise_for_status()
    models = answer.json()["data"]
    bases = [m for m in models if not m.get("parent")] or models
    return bases[0]["id"]


def load(p: params_mod.Params, version: str, adapter: Path, base_model: str) -> str:
    """Load one version's adapter into vLLM under a new name; returns the name."""
    base = served_base(p)
    if Path(base).name != Path(base_model).name and base != base_model:
        raise VLLMError(f"version {version} was trained on {base_model}, and vLLM serves {base}: "
                        "start a vLLM server on that base to serve it")
    name = adapter_name(p, version)
    _post(p, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(adapter.resolve())})
    return name


def unload_when_idle(p: params_mod.Params, name: str, busy, then=None,
                     patience_seconds: float = 600) -> threading.Thread:
    """Unload `name` from vLLM once `busy()` is false (its requests in flight finished), then call
    `then`, in a thread; gives up waiting after `patience_seconds` and unloads."""
    def run() -> None:
        deadline = time.time() + patience_seconds
        while busy() and time.time() < deadline:
            time.sleep(0.5)
        try:
            _post(p, "/v1/unload_lora_adapter", {"lora_name": name}, timeout=60)
            log.info("vLLM: adapter %s unloaded", name)
        except (VLLMError, httpx.HTTPError) as exc:
            log.warning("vLLM: adapter %s not unloaded: %s", name, exc)
        if then is not None:
            then()

    thread = threading.Thread(target=run, daemon=True, name=f"unload-{name}")
    thread.start()
    return thread


def reply_counted(p: params_mod.Params, name: str, messages: list[dict], max_new_tokens: int) -> tuple[str, int, int]:
    """vLLM's greedy answer with the adapter `name`, with the prompt's and the answer's token counts."""
    answer = _post(p, "/v1/chat/completions", {"model": name, "messages": messages,
                                               "max_tokens": max_new_tokens, "temperature": 0})
    body = answer.json()
    usage = body.get("usage") or {}
    return (body["choices"][0]["message"]["content"].strip(), int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)))
