"""What the commands print: a cycle's summary, the registry's status, a failed cycle."""

import json
from pathlib import Path

from flows import workspace as wsp
from flows.summary import Accounting, CycleSummary
from pipelines.common import paths


def fail(ws: Path, exc: Exception, started: float) -> None:
    """A failed cycle: its summary (if it got far enough to write one), what broke; exit 1."""
    summary_file = ws / paths.SUMMARY
    wrote_summary = summary_file.exists() and summary_file.stat().st_mtime >= started
    if wrote_summary:
        print_summary(CycleSummary.load(summary_file))
    raise SystemExit(f"\nnightshift: the cycle failed: {exc}\n"
                     "Nothing was registered; production (@champion) is unchanged. "
                     + (f"The summary is in {summary_file}, the " if wrote_summary else "The ")
                     + "full log is above (and in the Prefect UI when a server is configured). Fix "
                     "the cause and run the same --date again: records already pulled are reused, "
                     "never pulled twice.")


def print_summary(summary: dict | CycleSummary) -> None:
    s = summary if isinstance(summary, CycleSummary) else CycleSummary.model_validate(summary)
    if s.status == "already_done":
        print(f"cycle {s.cycle}: already done (version {s.version}); nothing changed")
        return
    if s.status == "finished_interrupted":
        print(f"cycle {s.cycle}: version {s.version} was registered by a run that was "
              f"interrupted before its alias move; finished now: "
              f"{('@' + s.alias) if s.alias else 'no alias'} ({s.reason})")
        return
    acc = s.accounting or Accounting()
    ev, tr = s.eval or {}, s.train or {}
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    print(f"\n== nightshift cycle {s.cycle}: {s.status} in {s.seconds or 0:.0f} s ==")
    print(f"records   pulled {acc.pulled} = clean {acc.clean} + quarantined "
          f"{acc.quarantined} + duplicates {acc.duplicates}"
          + (f" + forgotten {acc.forgotten}" if acc.forgotten else "")
          + (f" + feedback events {acc.feedback_events}" if acc.feedback_events else ""))
    if s.quarantine_reasons:
        print(f"          checks failed by quarantined records (one record can fail several): "
              f"{s.quarantine_reasons}")
    redaction = s.redaction or {}
    if redaction.get("replaced") is not None:
        replaced = redaction["replaced"]
        print(f"redacted  {sum(replaced.values())} values as pulled ("
              + (", ".join(f"{k} {v}" for k, v in replaced.items()) or "none") + ")"
              + (f"; not looked for: {', '.join(redaction['entities_not_looked_for'])}"
                 if redaction.get("entities_not_looked_for") else ""))
    if s.status == "skipped":
        print(f"skipped   no training tonight: {s.reason}\n"
              f"          the data is versioned (git {str(s.git_commit)[:10]}); production "
              "(@champion) is unchanged")
        return
    print(f"train     {tr.get('examples')} examples, {tr.get('steps')} steps, loss "
          f"{fmt(tr.get('first_loss'))} -> {fmt(tr.get('final_loss'))}, parent version "
          f"{s.parent_version or 'none (new adapter)'}")
    print(f"eval loss candidate {fmt(ev.get('candidate'))}, champion {fmt(ev.get('champion'))}, "
          f"base {fmt(ev.get('base'))} (new data)")
    for name, losses in (s.eval_sets or {}).items():
        if name != "new" and losses.get("candidate") is not None:
            print(f"          {name:<6} candidate {fmt(losses.get('candidate'))}, champion "
                  f"{fmt(losses.get('champion'))}, base {fmt(losses.get('base'))}")
    if s.worth:
        w = s.worth
        be = w.get("break_even_requests_per_day")
        print(f"worth     {'NOT PAYING: ' if w.get('not_paying') else ''}{w.get('headline')}\n"
              f"          gap: {w.get('diagnosis')}; cycle cost {w.get('cycle_cost_usd')} USD, "
              f"fine-tuning pays from {be if be is not None else '-'} requests a day ({w.get('report')})"
              + (f"\n          caveat: {w['caveat']}" if w.get("caveat") else ""))
    if s.drift:
        state = ("ALARM: " + ", ".join(s.drift.alarms)) if s.drift.alarm else (s.drift.note or "no drift")
        print(f"drift     {state} ({s.drift.report})")
    if s.model_drift:
        kl = (s.model_drift.divergence or {}).get("kl_champion_to_candidate")
        state = ("ALARM: " + ", ".join(s.model_drift.alarms)) if s.model_drift.alarm else "no model drift"
        print(f"model     {state}; KL from champion {fmt(kl)} ({s.model_drift.report})")
    if s.status == "succeeded":
        print(f"registry  version {s.version} -> {('@' + s.alias) if s.alias else 'no alias'}: {s.reason}")
    else:
        print(f"error     in {s.failed_stage}: {s.error}")


def print_status(ws: Path, as_json: bool = False) -> None:
    from flows.serving.exchange_log import served_counts
    from registry import mlflow_registry as reg

    p = wsp.load_params(ws)
    st = reg.status(p.registry)
    # What `nightshift serve-model` answered with each version, as logged in the source.
    st["served"] = served_counts(ws, p.ingest)
    if as_json:
        print(json.dumps(st, indent=2))
        return
    if not st["registered"]:
        print(f"No model registered yet under {st['model']!r}. Run `nightshift run` or `nightshift demo`.")
        return
    print(f"model {st['model']}: " + ", ".join(f"@{a} = version {v}" for a, v in st["aliases"].items()))
    # A rebase's cycle is named rebase-<UTC time>: 22 characters; nightly cycles are dates.
    width = max([10] + [len(v["cycle"] or "") for v in st["versions"]])
    print(f"{'version':>7}  {'cycle':<{width}}  {'parent':>6}  {'gate':<8}  {'eval loss':<9}  base")
    for v in st["versions"]:
        print(f"{v['version']:>7}  {v['cycle'] or '-':<{width}}  {v['parent'] or '-':>6}  "
              f"{v['gate'] or '-':<8}  {v['eval_loss'] or '-':<9}  {v.get('base_model') or '-'}"
              + (f"  ERASED DATA ({v['erased_data']})" if v.get("erased_data") else ""))
    if st["served"]:
        newest_first = sorted(st["served"].items(), key=lambda kv: kv[0].zfill(12), reverse=True)
        print("served    " + ", ".join(f"version {v}: {n} answer{'' if n == 1 else 's'}" for v, n in newest_first)
              + f" (logged by serve-model in {p.ingest.url})")
    if len({v.get("base_model") for v in st["versions"]} - {None}) > 1:
        print("eval loss is per token of each version's base: compare versions on different bases "
              "by bits per byte (reports/rebase.html, the MLflow run metrics *.bits_per_byte).")
    if any(v.get("erased_data") for v in st["versions"]):
        print("ERASED DATA: the version learned from records `nightshift forget` erased since; "
              "retraining without them: `nightshift rebase --base <the current base>`.")
