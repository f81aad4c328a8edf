"""validate: a Great Expectations suite over redacted records; bad rows go to quarantine with a reason.

Each record is described by a row of features (parse error, roles, turn counts, lengths,
timestamp). Row-level expectations mark the rows that fail, each with a reason code from the
expectation's `meta`; those rows are quarantined, the rest are clean. Batch-level expectations
(volume, quarantine rate) then decide whether the cycle may go on: if not, the stage writes its
outputs and report, and exits non-zero so nothing trains on a broken batch.

    python -m pipelines.validate data/redacted data/validated
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pipelines import params as params_mod
from pipelines.ingest import parse_timestamp
from pipelines.records import ROLES, is_invalid, read_jsonl, write_json, write_jsonl


class BatchRejected(RuntimeError):
    """The batch as a whole failed its expectations; the cycle must not train on it."""


def features(record: dict) -> dict:
    """The columns the expectations look at, for one record."""
    if is_invalid(record):
        return {"parse_error": record["_error"].split(":")[0], "id": None, "timestamp_ok": False,
                "n_messages": 0, "n_unknown_roles": 0, "n_user": 0, "n_assistant": 0,
                "n_empty": 0, "max_chars": 0}
    messages = record.get("messages")
    messages = messages if isinstance(messages, list) else []
    turns = [m for m in messages if isinstance(m, dict)]
    contents = [m.get("content") for m in turns]
    return {
        "parse_error": None,
        "id": record.get("id") if isinstance(record.get("id"), (str, int)) else None,
        "timestamp_ok": parse_timestamp(record.get("timestamp")) is not None,
        "n_messages": len(turns) if len(turns) == len(messages) else 0,
        "n_unknown_roles": sum(1 for m in turns if m.get("role") not in ROLES),
        "n_user": sum(1 for m in turns if m.get("role") == "user"),
        "n_assistant": sum(1 for m in turns if m.get("role") == "assistant"),
        "n_empty": sum(1 for c in contents if not isinstance(c, str) or not c.strip()),
        "max_chars": max((len(c) for c in contents if isinstance(c, str)), default=0),
    }


def row_suite(p: params_mod.ValidateParams):
    """Row-level expectations; each `meta.reason` is the quarantine reason code."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="records_row_level")
    for expectation in [
        gxe.ExpectColumnValuesToBeNull(column="parse_error", meta={"reason": "unparseable"}),
        gxe.ExpectColumnValuesToNotBeNull(column="id", meta={"reason": "missing_id"}),
        gxe.ExpectColumnValuesToBeInSet(column="timestamp_ok", value_set=[True],
                                        meta={"reason": "bad_timestamp"}),
        gxe.ExpectColumnValuesToBeBetween(column="n_messages", min_value=1,
                                          meta={"reason": "missing_messages"}),
        gxe.ExpectColumnValuesToBeBetween(column="n_unknown_roles", max_value=0,
                                          meta={"reason": "unknown_role"}),
        gxe.ExpectColumnValuesToBeBetween(column="n_user", min_value=1,
                                          meta={"reason": "no_user_turn"}),
        gxe.ExpectColumnValuesToBeBetween(column="n_assistant", min_value=1,
                                          meta={"reason": "no_assistant_turn"}),
        gxe.ExpectColumnValuesToBeBetween(column="n_empty", max_value=0,
                                          meta={"reason": "empty_message"}),
        gxe.ExpectColumnValuesToBeBetween(column="max_chars", max_value=p.max_message_chars,
                                          meta={"reason": "message_too_long"}),
    ]:
        suite.add_expectation(expectation)
    return suite


def batch_suite(p: params_mod.ValidateParams):
    """Batch-level expectations: enough records, and not too many of them quarantined."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="records_batch_level")
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(
        min_value=p.min_records, meta={"reason": "too_few_records"}))
    suite.add_expectation(gxe.ExpectColumnMeanToBeBetween(
        column="quarantined", max_value=p.max_quarantine_rate,
        meta={"reason": "quarantine_rate_too_high"}))
    return suite


def _validate(context, frame: pd.DataFrame, suite, name: str):
    batch = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe(name).get_batch(batch_parameters={"dataframe": frame}))
    return batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                "unexpected_index_column_names": ["row"]})


def run(p: params_mod.ValidateParams, redacted: Path, out_dir: Path) -> dict:
    """Split redacted records into clean and quarantined, and check the batch.

    Args:
        p: the `validate` section of params.yaml.
        redacted: records.jsonl from redact.
        out_dir: gets clean.jsonl, quarantine.jsonl (each record with `_reasons`), report.json.
    Returns:
        the report; raises BatchRejected after writing it if a batch expectation failed.
    """
    records = list(read_jsonl(redacted))
    frame = pd.DataFrame([{"row": i, **features(r)} for i, r in enumerate(records)],
                         columns=["row", "parse_error", "id", "timestamp_ok", "n_messages",
                                  "n_unknown_roles", "n_user", "n_assistant", "n_empty", "max_chars"])
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")  # in memory: the suites live in this module
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one line per stage
    reasons: dict[int, list[str]] = {}
    if records:
        for result in _validate(context, frame, row_suite(p), "rows").results:
            for index in result.result.get("unexpected_index_list") or []:
                reasons.setdefault(index["row"], []).append(result.expectation_config.meta["reason"])
    # Without a parse, the other checks only repeat the one real reason.
    reasons = {i: ["unparseable"] if "unparseable" in r else r for i, r in reasons.items()}

    clean = [r for i, r in enumerate(records) if i not in reasons]
    quarantine = [{**r, "_reasons": reasons[i]} for i, r in enumerate(records) if i in reasons]
    write_jsonl(out_dir / "clean.jsonl", clean)
    write_jsonl(out_dir / "quarantine.jsonl", quarantine)

    frame["quarantined"] = frame["row"].isin(list(reasons)).astype(float)
    batch = _validate(context, frame, batch_suite(p), "batch")
    failed = [r.expectation_config.meta["reason"] for r in batch.results if not r.success]
    reason_counts: dict[str, int] = {}
    for rs in reasons.values():
        for reason in rs:
            reason_counts[reason] = reason_counts.get(reason, 0) + 1
    report = {"records": len(records), "clean": len(clean), "quarantined": len(quarantine),
              "quarantine_reasons": dict(sorted(reason_counts.items())),
              "batch_passed": not failed, "batch_failures": failed}
    write_json(out_dir / "report.json", report)
    if failed:
        raise BatchRejected(
            f"batch rejected ({', '.join(failed)}): {len(quarantine)} of {len(records)} records "
            f"quarantined, see {out_dir / 'quarantine.jsonl'} for reasons; fix the source or "
            "adjust validate.* in params.yaml")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("redacted_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        report = run(params_mod.load(args.params).validate, args.redacted_dir / "records.jsonl",
                     args.out_dir)
    except BatchRejected as exc:
        sys.exit(f"validate: {exc}")
    print(f"validate: {report['clean']} clean, {report['quarantined']} quarantined "
          f"{report['quarantine_reasons']}")


if __name__ == "__main__":
    main()
