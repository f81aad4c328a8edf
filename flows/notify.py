"""notify: tell people when a cycle needs them, through Apprise (Slack, e-mail, webhooks, ...).

Alerts go to the Apprise URLs in the environment variable NIGHTSHIFT_ALERT_URLS (space- or
comma-separated, e.g. "slack://T/B/C mailto://user:pass@example.com json://hooks.example.com/x").
A cycle alerts when any stage failed, the gate rejected the candidate, or the input or the model
drifted; with `notify.on_success`
it also reports every successful cycle. Each alert says what happened and links to the Prefect
flow run and the MLflow model version when their UIs are known (PREFECT_UI_URL, an http
`registry.tracking_uri`).
"""

from __future__ import annotations

import os
import re

from flows.summary import CycleSummary
from pipelines.common import params as params_mod

URLS_ENV = "NIGHTSHIFT_ALERT_URLS"


def alert_urls() -> list[str]:
    return [u for u in re.split(r"[\s,]+", os.environ.get(URLS_ENV, "")) if u]


def should_alert(summary: CycleSummary, p: params_mod.NotifyParams) -> bool:
    if summary.status == "failed" or summary.rejected:
        return True
    if (summary.drift and summary.drift.alarm) or (summary.model_drift and summary.model_drift.alarm):
        return True
    if summary.worth and summary.worth.get("not_paying"):
        return True
    return p.on_success and summary.status == "succeeded"


def compose(summary: CycleSummary, registry: params_mod.RegistryParams,
            flow_run_id: str | None) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of the alert for one cycle's summary."""
    cycle, drift, model_drift = summary.cycle, summary.drift, summary.model_drift
    lines = []
    if summary.status == "failed":
        title = f"nightshift cycle {cycle} FAILED in {summary.failed_stage}"
        kind = "failure"
        lines.append(f"Error: {summary.error}")
        lines.append("Nothing was registered; @champion is unchanged.")
    elif summary.rejected:
        title = f"nightshift cycle {cycle}: candidate version {summary.version} REJECTED by the gate"
        kind = "warning"
        lines.extend(f"- {r}" for r in summary.gate.reasons or [])
        lines.append("@champion is unchanged.")
    elif drift and drift.alarm:
        title = f"nightshift cycle {cycle}: input drift ({', '.join(drift.alarms)})"
        kind = "warning"
        lines.append(f"The new interactions differ from earlier cycles; see {drift.report}.")
        if model_drift and model_drift.alarm:
            lines.append(f"The model drifted too ({', '.join(model_drift.alarms)}); "
                         f"see {model_drift.report}.")
        lines.append(f"Version {summary.version}: {summary.reason or ''}")
    elif model_drift and model_drift.alarm:
        title = f"nightshift cycle {cycle}: model drift ({', '.join(model_drift.alarms)})"
        kind = "warning"
        lines.append(f"Version {summary.version} moved away from production or from its own "
                     f"history; see {model_drift.report}.")
        lines.append(f"Version {summary.version}: {summary.reason or ''}")
    elif summary.worth and summary.worth.get("not_paying"):
        title = f"nightshift cycle {cycle}: fine-tuning is not paying for itself on this data"
        kind = "warning"
        lines.append(f"{summary.worth['headline']}.")
        lines.append(f"The gap: {summary.worth['diagnosis']}. Serving the base model with retrieval "
                     f"would do as well; see {summary.worth['report']}.")
        lines.append(f"Version {summary.version}: {summary.reason or ''}")
    else:
        title = f"nightshift cycle {cycle}: version {summary.version} registered"
        kind = "success"
        lines.append(str(summary.reason or ""))
    acc = summary.accounting
    if acc and acc.pulled is not None:
        lines.append(f"Records: pulled {acc.pulled} = clean {acc.clean} + quarantined "
                     f"{acc.quarantined} + duplicates {acc.duplicates}")
    ev = summary.eval or {}
    if ev:
        lines.append(f"Eval loss: candidate {ev.get('candidate')}, champion {ev.get('champion')}, "
                     f"base {ev.get('base')}")
    prefect_ui = os.environ.get("PREFECT_UI_URL")
    if flow_run_id and flow_run_id != "none":
        lines.append(f"Flow run: {prefect_ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if prefect_ui
                     else f"Flow run id: {flow_run_id}")
    if summary.version:
        if registry.tracking_uri.startswith("http"):
            lines.append(f"Model version: {registry.tracking_uri.rstrip('/')}/#/models/"
                         f"{registry.model_name}/versions/{summary.version}")
        else:
            lines.append(f"Model version: {registry.model_name} version {summary.version} "
                         "(`nightshift status`, or `mlflow ui` in the workspace)")
    return title, "\n".join(lines), kind


def send(summary: CycleSummary, p: params_mod.Params, flow_run_id: str | None = None,
         urls: list[str] | None = None) -> bool:
    """Send the cycle's alert if it calls for one. Returns True if one was delivered."""
    import apprise

    urls = alert_urls() if urls is None else urls
    if not urls or not should_alert(summary, p.notify):
        return False
    title, body, kind = compose(summary, p.registry, flow_run_id)
    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            raise ValueError(f"{URLS_ENV} holds an URL Apprise does not understand: {url!r}")
    return bool(notifier.notify(title=title, body=body, notify_type=kind))
