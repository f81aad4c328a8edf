"""The OpenAI-compatible chat API of `nightshift serve-model`, on FastAPI.

- `POST /v1/chat/completions`: `messages`, optional `max_tokens` (or `max_completion_tokens`),
  `user` (the end user's id, logged with the exchange), `metadata.conversation_id` (or the header
  X-Conversation-Id), `store` (false: the exchange is logged nowhere), `stream` (true: the answer
  comes as server-sent events, `chat.completion.chunk` objects and `data: [DONE]`, as OpenAI
  streams; the exchange is logged once it is complete). The answer is greedy.
- `POST /v1/feedback`: `response_id` (an answer's `id`), `rating` ("up" or "down"), optional
  `comment`. Written to the log as a feedback event (pipelines/common/records.py), which the
  cycle that pulls it applies, however many nights after the answer that is.
- `GET /v1/models`: the models being served, named `<registered model>/<version>`.
- `GET /health`: the versions answering, their bases, and the followers' last errors.
- `POST /webhooks/mlflow`: the registry's alias-move webhook (flows/serving/webhook.py), verified
  by its HMAC signature instead of the API key; only there when serve-model registered one.

With `serving.canary_fraction` above 0 and an @challenger in the registry, that share of
conversations is answered by @challenger: chosen by a hash of the user id, else of the
conversation id, so a conversation (and a user) stays with one version. Exchanges logged while
both answer say which one did (`metadata.served_as`), for `nightshift canary` to compare.

Every answer names the version that produced it: the `model` field and the header
X-Nightshift-Version. With NIGHTSHIFT_API_KEY set, every /v1 request needs
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from flows.serving.exchange_log import SOURCE, ExchangeLog
from flows.serving.follower import Follower, Loaded
from pipelines.common import params as params_mod
from pipelines.common.records import FEEDBACK_EVENT

VERSION_HEADER = "X-Nightshift-Version"
OPT_OUT_HEADER = "X-Nightshift-Opt-Out"
# An answer's id: "chatcmpl-" and 32 hex digits; "chatcmpl-nolog-" for one that opted out of
# the log, so feedback on it is not logged either (the server remembers no answers).
RESPONSE_ID = re.compile(r"chatcmpl-(nolog-)?[0-9a-f]{32}")


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


class FeedbackRequest(BaseModel):
    response_id: str
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


def model_id(p: params_mod.Params, loaded: Loaded) -> str:
    return f"{p.registry.model_name}/{loaded.version}"


def answer(p: params_mod.Params, loaded: Loaded, messages: list[dict], max_new_tokens: int) -> tuple[str, int, int]:
    """The greedy answer, with the prompt's and the answer's token counts: from the model in this
    process (one at a time per model), or from vLLM (which batches)."""
    with loaded.in_flight:
        if loaded.engine_name is not None:
            from flows.serving import vllm_engine

            return vllm_engine.reply_counted(p, loaded.engine_name, messages, max_new_tokens)
        from pipelines.common.modeling import reply_counted

        with loaded.lock:
            return reply_counted(loaded.model, loaded.tokenizer, messages, max_new_tokens)


def answer_pieces(p: params_mod.Params, loaded: Loaded, messages: list[dict], max_new_tokens: int,
                  counts: dict):
    """The answer as it is generated (vLLM's comes whole, as one piece); the token counts go into
    `counts` at the end."""
    with loaded.in_flight:
        if loaded.engine_name is not None:
            text, prompt_tokens, answer_tokens = answer(p, loaded, messages, max_new_tokens)
            counts.update(prompt_tokens=prompt_tokens, answer_tokens=answer_tokens)
            yield text
            return
        from pipelines.common.modeling import reply_streamed

        with loaded.lock:
            yield from reply_streamed(loaded.model, loaded.tokenizer, messages, max_new_tokens, counts)


def opts_out(request: Request) -> bool:
    """Whether the request's header X-Nightshift-Opt-Out asks not to be logged."""
    return request.headers.get(OPT_OUT_HEADER.lower(), "").lower() in ("1", "true", "yes")


def canary_share(key: str, seed: int) -> float:
    """Where a user or conversation falls in [0, 1): the same key, the same side every time."""
    return int(hashlib.sha256(f"{seed}:canary:{key}".encode()).hexdigest()[:8], 16) / 0x100000000


def create_app(p: params_mod.Params, follower: Follower, exchanges: ExchangeLog | None,
               api_key: str | None, challenger: Follower | None = None,
               webhook_secret: str | None = None) -> FastAPI:
    """The app; `challenger` follows @challenger for the canary (None: no canary);
    `webhook_secret` signs the registry's webhook calls (None: no webhook endpoint)."""
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

    def canary() -> Loaded | None:
        """@challenger while the canary runs: loaded, and another version than @champion's."""
        loaded, champion = challenger.current if challenger else None, follower.current
        if loaded is None or champion is None or loaded.version == champion.version:
            return None
        return loaded

    def route(user: str | None, conversation: str) -> tuple[Loaded, str | None]:
        """The version that answers, and which alias it is while a canary runs."""
        champion, trial = serving(), canary()
        if trial is None or p.serving.canary_fraction == 0:
            return champion, None
        if canary_share(user or conversation, p.seed) < p.serving.canary_fraction:
            return trial, "challenger"
        return champion, "champion"

    @app.get("/health")
    def health() -> dict:
        loaded = follower.current
        return {"status": "ok" if loaded else "waiting for a model",
                "version": loaded.version if loaded else None,
                "base_model": loaded.base_model if loaded else None, "alias": follower.alias,
                "last_error": follower.last_error,
                "canary": None if canary() is None else {
                    "version": canary().version, "fraction": p.serving.canary_fraction,
                    "last_error": challenger.last_error}}

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    def models() -> dict:
        served = [serving()] + ([canary()] if canary() else [])
        return {"object": "list", "data": [{"id": model_id(p, loaded), "object": "model",
                                            "created": int(loaded.loaded_at), "owned_by": "nightshift"}
                                           for loaded in served]}

    if webhook_secret is not None:
        @app.post("/webhooks/mlflow")
        async def alias_moved(request: Request) -> dict:
            from flows.serving import webhook

            body = await request.body()
            refused = webhook.verified(webhook_secret, request.headers, body)
            if refused:
                raise HTTPException(401, f"not a webhook of this server's registry: {refused}")
            data = json.loads(body).get("data") or {}
            followers = {f.alias: f for f in (follower, challenger) if f is not None}
            if data.get("name") != p.registry.model_name or data.get("alias") not in followers:
                return {"followed": False}
            # Checked beside the request: loading an adapter takes longer than MLflow waits.
            threading.Thread(target=followers[data["alias"]].check, daemon=True,
                             name=f"webhook-{data['alias']}").start()
            return {"followed": True}

    @app.post("/v1/feedback", dependencies=[Depends(authorised)])
    async def feedback(body: FeedbackRequest, request: Request) -> dict:
        if not RESPONSE_ID.fullmatch(body.response_id):
            raise HTTPException(400, f"{body.response_id!r} is not an answer's id: send the `id` "
                                     "of a /v1/chat/completions response")
        if body.response_id.startswith("chatcmpl-nolog-") or exchanges is None or opts_out(request):
            return {"stored": False, "why": "the answer or this request opted out of the log, "
                                            "or the server logs nothing"}
        now = dt.datetime.now(dt.timezone.utc)
        event = {"id": f"fb-{uuid.uuid4().hex[:16]}", "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "event": FEEDBACK_EVENT, "response_id": body.response_id, "feedback": body.rating,
                 "comment": body.comment, "metadata": {"source": SOURCE}}
        await run_in_threadpool(exchanges.write, event, now)
        return {"stored": True, "id": event["id"]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat(body: ChatRequest, request: Request):
        # A new id is 16 hex digits behind "conv-": 32 bare ones look like a key to the residual
        # scan at ingest, which would quarantine every exchange that carries one.
        conversation = ((body.metadata or {}).get("conversation_id")
                        or request.headers.get("x-conversation-id") or f"conv-{uuid.uuid4().hex[:16]}")
        opted_out = not body.store or opts_out(request)
        # Held to the end: a swap meanwhile does not change this answer.
        loaded, served_as = route(body.user, conversation)
        messages = [m.model_dump() for m in body.messages]
        limit = min(body.max_completion_tokens or body.max_tokens or p.serving.max_new_tokens,
                    p.serving.max_new_tokens)
        logged = exchanges is not None and not opted_out
        response_id = f"chatcmpl-{'' if logged else 'nolog-'}{uuid.uuid4().hex}"
        headers = {VERSION_HEADER: loaded.version, "X-Conversation-Id": conversation}

        def log_exchange(text: str, latency_ms: float) -> None:
            if not logged:
                return
            now = dt.datetime.now(dt.timezone.utc)
            metadata = {"adapter_version": loaded.version, "base_model": loaded.base_model,
                        "latency_ms": latency_ms, "conversation_id": conversation, "source": SOURCE}
            if body.user:
                metadata["user_id"] = body.user
            if served_as:
                metadata["served_as"] = served_as
            exchanges.write({"id": response_id, "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                             "messages": messages + [{"role": "assistant", "content": text}],
                             "feedback": None, "metadata": metadata}, now)

        created = int(time.time())
        if body.stream:
            def events():
                def chunk(delta: dict, finish: str | None = None) -> str:
                    return "data: " + json.dumps({
                        "id": response_id, "object": "chat.completion.chunk", "created": created,
                        "model": model_id(p, loaded),
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

                started, counts, pieces = time.perf_counter(), {}, []
                yield chunk({"role": "assistant", "content": ""})
                for piece in answer_pieces(p, loaded, messages, limit, counts):
                    if piece:
                        pieces.append(piece)
                        yield chunk({"content": piece})
                log_exchange("".join(pieces).strip(), round((time.perf_counter() - started) * 1000, 1))
                yield chunk({}, "length" if counts["answer_tokens"] >= limit else "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

        started = time.perf_counter()
        text, prompt_tokens, answer_tokens = await run_in_threadpool(answer, p, loaded, messages, limit)
        await run_in_threadpool(log_exchange, text, round((time.perf_counter() - started) * 1000, 1))
        content = {"id": response_id, "object": "chat.completion", "created": created,
                   "model": model_id(p, loaded),
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "length" if answer_tokens >= limit else "stop"}],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": answer_tokens,
                             "total_tokens": prompt_tokens + answer_tokens}}
        return JSONResponse(content, headers=headers)

    return app
