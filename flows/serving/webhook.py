"""MLflow registry webhooks: an alias move reaches `serve-model` at once instead of at the next poll.

An `mlflow server` with a SQL backend store (SQLite, PostgreSQL, ...) sends a webhook for each
alias set or deleted (`model_version_alias.created` / `.deleted`), whoever moved it: a cycle, the
CLI, the MLflow UI or its REST API. With `serving.webhook_url` set (the address at which the
MLflow server reaches this server's `POST /webhooks/mlflow`) and an http(s) tracking URI,
`serve-model` registers such a webhook at start with a secret of its own, and deletes it when it
stops. Each delivery is verified as MLflow signs it: HMAC-SHA256 over
`<delivery id>.<timestamp>.<body>` in the header X-MLflow-Signature (`v1,<base64>`), with the
timestamp at most `MAX_AGE_SECONDS` old, so a replayed or forged call moves nothing. A verified
call makes the follower of that alias check the registry now. Polling goes on beside it: a
webhook lost on the way costs one polling interval, not the move.

MLflow refuses to deliver to private and loopback addresses unless the MLflow server runs with
MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true (docs/OPERATIONS.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time

from pipelines.common import params as params_mod

log = logging.getLogger("nightshift.serving")

EVENTS = ["model_version_alias.created", "model_version_alias.deleted"]
MAX_AGE_SECONDS = 300
SIGNATURE, TIMESTAMP, DELIVERY = "x-mlflow-signature", "x-mlflow-timestamp", "x-mlflow-delivery-id"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """What MLflow sends in X-MLflow-Signature for this delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def verified(secret: str, headers, body: bytes, now: float | None = None) -> str | None:
    """None when the delivery is MLflow's, signed with `secret` and fresh; else why not."""
    delivery, stamp, given = headers.get(DELIVERY), headers.get(TIMESTAMP), headers.get(SIGNATURE)
    if not (delivery and stamp and given):
        return "unsigned: X-MLflow-Delivery-Id, X-MLflow-Timestamp and X-MLflow-Signature are needed"
    try:
        age = (time.time() if now is None else now) - int(stamp)
    except ValueError:
        return "X-MLflow-Timestamp is not a Unix time"
    if abs(age) > MAX_AGE_SECONDS:
        return f"stale: signed {age:.0f} s ago (at most {MAX_AGE_SECONDS})"
    if not hmac.compare_digest(given.encode(), signature(secret, delivery, stamp, body).encode()):
        return "the signature does not match"
    return None


def register(p: params_mod.Params, url: str, secret: str) -> str | None:
    """Ask the tracking server to call `url` on every alias move; the webhook's id, or None when
    it cannot (a local store, or a server without webhooks): then polling alone follows."""
    from registry import mlflow_registry as reg

    if not reg.tracking_uri(p.registry).startswith(("http://", "https://")):
        log.info("no webhooks: the registry is a local store (%s); polling every %s s",
                 reg.tracking_uri(p.registry), p.serving.poll_seconds)
        return None
    try:
        hook = reg.client(p.registry).create_webhook(
            name=f"nightshift-serve-model-{secrets.token_hex(4)}", url=url, events=EVENTS,
            description=f"serve-model follows the aliases of {p.registry.model_name}", secret=secret)
    except Exception as exc:
        log.warning("the tracking server took no webhook (%s: %s); polling every %s s",
                    type(exc).__name__, exc, p.serving.poll_seconds)
        return None
    log.info("webhook %s: alias moves are sent to %s", hook.webhook_id, url)
    return hook.webhook_id


def unregister(p: params_mod.Params, webhook_id: str) -> None:
    from registry import mlflow_registry as reg

    try:
        reg.client(p.registry).delete_webhook(webhook_id)
    except Exception as exc:   # the server may be gone first; the webhook then fails quietly
        log.warning("webhook %s not deleted: %s", webhook_id, exc)
