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

from pipelines.common import params as params_mod

URLS_ENV = "NIGHTSHIFT_ALERT_URLS"


def alert_urls() -> list[str]:
    return [u for u in re.split(r"[\s,]+", os.environ.get(URLS_ENV, "")) if u]


def should_alert(summary: dict, p: params_mod.NotifyParams) -> bool:
    if summary.get("status") == "failed":
        return True
    if (summary.get("gate") or {}).get("passed") is False:
        return True
    if (summary.get("drift") or {}).get("alarm") or (summary.get("model_drift") or {}).get("alarm"):
        return True
    return p.on_success and summary.get("status") == "succeeded"


def compose(summary: dict, registry: params_mod.RegistryParams, flow_run_id: str | None) -> tuple[str, str, str]:
    """(title, body, apprise notify type) of the alert for one cycle's summary."""
    cycle = summary["cycle"]
    lines = []
    if summary.get("status") == "failed":
        title = f"nightshift cycle {cycle} FAILED in {summary.get('failed_stage')}"
        kind = "failure"
        lines.append(f"Error: {summary.get('error')}")
        lines.append("Nothing was registered; @champion is unchanged.")
    elif (summary.get("gate") or {}).get("passed") is False:
        title = f"nightshift cycle {cycle}: candidate version {summary.get('version')} REJECTED by the gate"
        kind = "warning"
        lines.extend(f"- {r}" for r in summary["gate"].get("reasons") or [])
        lines.append("@champion is unchanged.")
    elif (summary.get("drift") or {}).get("alarm"):
        title = f"nightshift cycle {cycle}: input drift ({', '.join(summary['drift']['alarms'])})"
        kind = "warning"
        lines.append(f"The new interactions differ from earlier cycles; see {summary['drift']['report']}.")
        if (summary.get("model_drift") or {}).get("alarm"):
            lines.append(f"The model drifted too ({', '.join(summary['model_drift']['alarms'])}); "
                         f"see {summary['model_drift']['report']}.")
        lines.append(f"Version {summary.get('version')}: {summary.get('reason', '')}")
    elif (summary.get("model_drift") or {}).get("alarm"):
        title = f"nightshift cycle {cycle}: model drift ({', '.join(summary['model_drift']['alarms'])})"
        kind = "warning"
        lines.append(f"Version {summary.get('version')} moved away from production or from its own "
                     f"history; see {summary['model_drift']['report']}.")
        lines.append(f"Version {summary.get('version')}: {summary.get('reason', '')}")
    else:
        title = f"nightshift cycle {cycle}: version {summary.get('version')} registered"
        kind = "success"
        lines.append(str(summary.get("reason", "")))
    acc = summary.get("accounting") or {}
    if acc:
        lines.append(f"Records: pulled {acc.get('pulled')} = clean {acc.get('clean')} + quarantined "
                     f"{acc.get('quarantined')} + duplicates {acc.get('duplicates')}")
    ev = summary.get("eval") or {}
    if ev:
        lines.append(f"Eval loss: candidate {ev.get('candidate')}, champion {ev.get('champion')}, "
                     f"base {ev.get('base')}")
    prefect_ui = os.environ.get("PREFECT_UI_URL")
    if flow_run_id and flow_run_id != "none":
        lines.append(f"Flow run: {prefect_ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if prefect_ui
                     else f"Flow run id: {flow_run_id}")
    if summary.get("version"):
        if registry.tracking_uri.startswith("http"):
            lines.append(f"Model version: {registry.tracking_uri.rstrip('/')}/#/models/"
                         f"{registry.model_name}/versions/{summary['version']}")
        else:
            lines.append(f"Model version: {registry.model_name} version {summary['version']} "
                         "(`nightshift status`, or `mlflow ui` in the workspace)")
    return title, "\n".join(lines), kind


def send(summary: dict, p: params_mod.Params, flow_run_id: str | None = None,
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
