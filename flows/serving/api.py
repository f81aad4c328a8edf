"""The OpenAI-compatible chat API of `nightshift serve-model`, on FastAPI.

- `POST /v1/chat/completions`: `messages`, optional `max_tokens` (or `max_completion_tokens`),
  `user` (the end user's id, logged with the exchange), `metadata.conversation_id` (or the header
  X-Conversation-Id), `store` (false: the exchange is logged nowhere). The answer is greedy.
  `stream: true` is refused with 400 (not supported yet).
- `GET /v1/models`: the one model being served, named `<registered model>/<version>`.
- `GET /health`: the version answering, its base, and the follower's last error.

Every answer names the version that produced it: the `model` field and the header
X-Nightshift-Version. With NIGHTSHIFT_API_KEY set, every /v1 request needs
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
import uuid
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from flows.serving.exchange_log import SOURCE, ExchangeLog
from flows.serving.follower import Follower, Loaded
from pipelines.common import params as params_mod

VERSION_HEADER = "X-Nightshift-Version"
OPT_OUT_HEADER = "X-Nightshift-Opt-Out"


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str | None = None            # accepted and ignored: the server answers with its alias
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool = True
    stream: bool = False


def model_id(p: params_mod.Params, loaded: Loaded) -> str:
    return f"{p.registry.model_name}/{loaded.version}"


def answer(loaded: Loaded, messages: list[dict], max_new_tokens: int) -> tuple[str, int, int]:
    """The greedy answer, with the prompt's and the answer's token counts; one at a time per model."""
    from pipelines.common.modeling import reply_counted

    with loaded.lock:
        return reply_counted(loaded.model, loaded.tokenizer, messages, max_new_tokens)


def create_app(p: params_mod.Params, follower: Follower, exchanges: ExchangeLog | None,
               api_key: str | None) -> FastAPI:
    app = FastAPI(title="nightshift serve-model", description=__doc__)

    def authorised(authorization: str | None = Header(default=None)) -> None:
        if api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer "
                                     "$NIGHTSHIFT_API_KEY`", headers={"WWW-Authenticate": "Bearer"})

    def serving() -> Loaded:
        loaded = follower.current
        if loaded is None:
            raise HTTPException(503, f"no @{follower.alias} to answer with yet: run a cycle "
                                     "(`nightshift run`); the server picks it up by itself")
        return loaded

    @app.get("/health")
    def health() -> dict:
        loaded = follower.current
        return {"status": "ok" if loaded else "waiting for a model",
                "version": loaded.version if loaded else None,
                "base_model": loaded.base_model if loaded else None, "alias": follower.alias,
                "last_error": follower.last_error}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def models() -> dict:
        loaded = serving()
        return {"object": "list", "data": [{"id": model_id(p, loaded), "object": "model",
                                            "created": int(loaded.loaded_at), "owned_by": "nightshift"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat(body: ChatRequest, request: Request) -> JSONResponse:
        if body.stream:
            raise HTTPException(400, "stream: true is not supported yet; send stream: false")
        loaded = serving()   # held to the end: a swap meanwhile does not change this answer
        messages = [m.model_dump() for m in body.messages]
        limit = min(body.max_completion_tokens or body.max_tokens or p.serving.max_new_tokens,
                    p.serving.max_new_tokens)
        started = time.perf_counter()
        text, prompt_tokens, answer_tokens = await run_in_threadpool(answer, loaded, messages, limit)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        now = dt.datetime.now(dt.timezone.utc)
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        # A new id is 16 hex digits behind "conv-": 32 bare ones look like a key to the residual
        # scan at ingest, which would quarantine every exchange that carries one.
        conversation = ((body.metadata or {}).get("conversation_id")
                        or request.headers.get("x-conversation-id") or f"conv-{uuid.uuid4().hex[:16]}")
        opted_out = not body.store or request.headers.get(OPT_OUT_HEADER.lower(), "").lower() in (
            "1", "true", "yes")
        if exchanges is not None and not opted_out:
            metadata = {"adapter_version": loaded.version, "base_model": loaded.base_model,
                        "latency_ms": latency_ms, "conversation_id": conversation,
                        "source": SOURCE}
            if body.user:
                metadata["user_id"] = body.user
            record = {"id": response_id, "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                      "messages": messages + [{"role": "assistant", "content": text}],
                      "feedback": None, "metadata": metadata}
            await run_in_threadpool(exchanges.write, record, now)
        content = {"id": response_id, "object": "chat.completion", "created": int(now.timestamp()),
                   "model": model_id(p, loaded),
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "length" if answer_tokens >= limit else "stop"}],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": answer_tokens,
                             "total_tokens": prompt_tokens + answer_tokens}}
        return JSONResponse(content, headers={VERSION_HEADER: loaded.version,
                                              "X-Conversation-Id": conversation})

    return app
