"""`nightshift serve-model`: the chat API on the workspace's @champion, following the registry.

Loads @champion first (a workspace with none yet answers 503 until a cycle registers one), then
serves with uvicorn while a thread follows the alias (`flows.serving.follower`). Loopback by
default; binding any other address needs NIGHTSHIFT_API_KEY, which every request must then
carry as a bearer token.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from flows.serving import webhook
from flows.serving.api import create_app
from flows.serving.exchange_log import ExchangeLog
from flows.serving.follower import Follower
from pipelines.common import params as params_mod

API_KEY_ENV = "NIGHTSHIFT_API_KEY"


class ServeModelError(RuntimeError):
    """The server cannot start as asked (an open address without a key)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a host name other than localhost: treat as reachable from outside
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    if not api_key and not is_loopback(host):
        raise ServeModelError(
            f"refusing to serve on {host} without an API key: anyone who reaches it could use the "
            f"model and write into tonight's training log. Set {API_KEY_ENV} (clients then send "
            f"`Authorization: Bearer $" + API_KEY_ENV + "`), or serve on 127.0.0.1.")


def serve(ws: Path, p: params_mod.Params, host: str, port: int, log=print) -> None:
    import uvicorn

    api_key = os.environ.get(API_KEY_ENV) or None
    check_exposure(host, api_key)
    logger = logging.getLogger("nightshift.serving")
    if not logger.handlers:   # the follower's swaps and load errors, timestamped, on stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    scratch = Path(tempfile.mkdtemp(prefix="nightshift-serving-"))
    follower = Follower(ws, p, scratch)
    # The canary: @challenger, followed the same way, answers serving.canary_fraction of chats.
    challenger = Follower(ws, p, scratch, alias="challenger") if p.serving.canary_fraction > 0 else None
    exchanges = ExchangeLog(ws, p.ingest) if p.serving.log_exchanges else None
    stop = threading.Event()
    secret = webhook.new_secret() if p.serving.webhook_url else None
    hook = webhook.register(p, p.serving.webhook_url, secret) if secret else None
    try:
        for each in filter(None, (follower, challenger)):
            try:
                each.check()
            except Exception as exc:   # a registry down at start: serve 503 and keep asking
                each.last_error = f"the registry did not answer: {type(exc).__name__}: {exc}"
        if follower.current:
            log(f"serving {p.registry.model_name} version {follower.current.version} "
                f"(@champion, on {follower.current.base_model})")
        else:
            log(f"no @champion yet: answering 503 until a cycle registers one "
                f"({follower.last_error or 'nothing registered'})")
        log(f"following @champion every {p.serving.poll_seconds} s; exchanges "
            + (f"logged to {exchanges.where()}" if exchanges else "not logged (serving.log_exchanges: false)"))
        if challenger:
            log(f"canary: @challenger answers {p.serving.canary_fraction:.0%} of conversations while "
                "there is one" + (f" (now version {challenger.current.version})" if challenger.current else ""))
        log(f"OpenAI-compatible API at http://{host}:{port}/v1 (Ctrl-C stops)")
        for each in filter(None, (follower, challenger)):
            threading.Thread(target=each.follow, args=(stop,), daemon=True,
                             name=f"follower-{each.alias}").start()
        if hook:
            log(f"webhook: the registry calls {p.serving.webhook_url} on every alias move")
        uvicorn.run(create_app(p, follower, exchanges, api_key, challenger, secret if hook else None),
                    host=host, port=port, log_level="warning", access_log=False)
    finally:
        stop.set()
        if hook:
            webhook.unregister(p, hook)
        if exchanges:
            exchanges.close()
        shutil.rmtree(scratch, ignore_errors=True)
