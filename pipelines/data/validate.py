"""validate: Great Expectations suites over redacted records; bad rows go to quarantine with reasons.

The suites are kept in the repository as GX suite JSON (validation/expectations/): one row level,
one batch level. Each expectation's `meta.reason` is a reason code; its thresholds are GX suite
parameters (`{"$PARAMETER": "max_message_chars"}`) filled in from the `validate` section of
params.yaml at validation time. A suite that names a parameter params.yaml lacks, or a validate
param no suite uses, is an error: the suite files hold no thresholds of their own.

Each record is described by a row of features (parse error, JSON types of its fields, turn
counts, lengths, how far its timestamp lies in the future, residual PII found after redaction).
Rows failing a row-level expectation are quarantined with its reason; the rest are clean. Clean
feedback events (ratings of earlier answers, see pipelines/common/records.py) go to feedback.jsonl
for the dataset stage, and are counted apart from the records: the batch is judged on
interactions. The batch-level suite (volume, quarantine and duplicate rates, user-message length distribution)
then decides whether the cycle may go on: if not, the stage writes its outputs, its report and
the Data Docs, and exits non-zero, so nothing trains on a broken batch. A batch of fewer than
validate.min_records records is too small for batch statistics: it is not judged (the report says
`batch_judged: false`) and the nightly flow skips training on it. GX Data Docs (HTML) of
both validations are written every cycle.

    python -m pipelines.data.validate data/snapshots/2026-01-05.jsonl data/validated --cycle 2026-01-05 \\
        --suites validation/expectations --data-docs reports/data_docs
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

import pandas as pd

from pipelines.common import params as params_mod
from pipelines.common.records import (
    ROLES,
    content_hash,
    is_feedback_event,
    is_invalid,
    parse_timestamp,
    read_jsonl,
    write_json,
    write_jsonl,
)

SUITE_DIR = Path(__file__).resolve().parents[2] / "validation" / "expectations"
ROW_SUITE = "records_row_level"
BATCH_SUITE = "records_batch_level"
PARSE_ERRORS = {"invalid_utf8": "utf8_ok", "invalid_json": "json_ok", "not_an_object": "object_ok"}
FEATURES = ["row", "utf8_ok", "json_ok", "object_ok", "other_parse_error", "id_type", "timestamp_ok", "minutes_in_future", "n_messages",
            "n_malformed_messages", "n_unknown_roles", "n_user", "n_assistant", "n_empty",
            "max_chars", "feedback_type", "metadata_type", "n_residual", "response_id_type", "user_chars"]


class BatchRejected(RuntimeError):
    """The batch as a whole failed its expectations; the cycle must not train on it."""


class SuiteError(ValueError):
    """A suite file is missing, malformed, or does not match params.yaml's validate section."""


def json_type(value) -> str:
    """The JSON type of a parsed value: null, boolean, integer, number, string, array, object."""
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def residual_count(record: dict) -> int:
    """How many PII/secret types redact's residual scan still found (`_residual`); a malformed
    `_residual` counts as a finding, since it cannot prove the record clean."""
    residual = record.get("_residual")
    if residual is None:
        return 0
    return len(residual) if isinstance(residual, list) else 1


def features(record: dict, reference: dt.datetime) -> dict:
    """The columns the row expectations look at, for one record.

    A value that does not apply is None: GX skips nulls in column-value expectations, so a record
    fails only the rules that describe what is wrong with it (a missing `messages` is
    `missing_messages`, not also `no_user_turn`).
    """
    row = dict.fromkeys(FEATURES)
    row["n_residual"] = residual_count(record)
    if is_invalid(record):
        # records.parse_line's codes, in the order it tries: utf-8, then JSON, then an object.
        code = record["_error"].split(":")[0]
        for known, column in PARSE_ERRORS.items():
            row[column] = code != known
            if code == known:
                return row
        row["other_parse_error"] = code
        return row
    record_id = record.get("id")
    row["id_type"] = "missing" if record_id is None or record_id == "" else json_type(record_id)
    ts = parse_timestamp(record.get("timestamp"))
    row["timestamp_ok"] = ts is not None
    if ts is not None:
        row["minutes_in_future"] = (ts - reference).total_seconds() / 60
    row["feedback_type"] = json_type(record.get("feedback"))
    row["metadata_type"] = json_type(record.get("metadata"))
    if is_feedback_event(record):  # a rating of an earlier answer: it holds no messages
        response_id = record.get("response_id")
        row["response_id_type"] = "missing" if response_id in (None, "") else json_type(response_id)
        return row

    messages = record.get("messages")
    if messages is None:
        row["n_messages"] = 0
        return row
    if not isinstance(messages, list):
        row["n_malformed_messages"] = 1  # the whole field has the wrong type
        return row
    turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("role"), str)
             and isinstance(m.get("content"), str)]
    row["n_messages"] = len(messages)
    row["n_malformed_messages"] = len(messages) - len(turns)
    if len(turns) < len(messages):
        return row  # turn-level rules would only restate the schema error
    row["n_unknown_roles"] = sum(1 for m in turns if m["role"] not in ROLES)
    row["n_empty"] = sum(1 for m in turns if not m["content"].strip())
    row["max_chars"] = max((len(m["content"]) for m in turns), default=0)
    if messages:
        row["n_user"] = sum(1 for m in turns if m["role"] == "user")
        row["n_assistant"] = sum(1 for m in turns if m["role"] == "assistant")
    row["user_chars"] = sum(len(m["content"]) for m in turns if m["role"] == "user")
    return row


def load_suite(name: str, suite_dir: Path, p: params_mod.ValidateParams):
    """A GX ExpectationSuite from `suite_dir/<name>.json`, checked against params.yaml.

    Returns (suite, suite parameters): the parameters are the validate params the suite names.
    """
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    path = suite_dir / f"{name}.json"
    if not path.exists():
        raise SuiteError(f"expectation suite {path} not found: run from a nightshift workspace "
                         "or pass --suites DIR (the project keeps them in validation/expectations/)")
    try:
        spec = json.loads(path.read_text())
        configs = [ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e.get("meta"))
                   for e in spec["expectations"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SuiteError(f"{path} is not a GX expectation suite: {exc}") from exc
    reasons = [(c.meta or {}).get("reason") for c in configs]
    if None in reasons or len(set(reasons)) != len(reasons):
        raise SuiteError(f"{path}: every expectation needs its own meta.reason, got {reasons}")
    thresholds = dataclasses.asdict(p)
    named = suite_parameter_names(spec)
    unknown = sorted(named - set(thresholds))
    if unknown:
        raise SuiteError(f"{path} uses suite parameter(s) {', '.join(unknown)} that params.yaml's "
                         "validate section does not define: add them there (with a why-comment) "
                         "and to ValidateParams")
    suite = gx.ExpectationSuite(name=spec.get("name", name), meta=spec.get("meta"))
    for config in configs:
        suite.add_expectation_configuration(config)
    if len(suite.expectations) != len(configs):  # GX replaces a second one on the same column
        raise SuiteError(f"{path}: two expectations of one type on one column; GX keeps only "
                         "one of them. Give each rule a feature column of its own")
    return suite, {k: v for k, v in thresholds.items() if k in named}


def suite_parameter_names(spec: dict) -> set[str]:
    """The `$PARAMETER` names a suite file's expectations use."""
    return {v["$PARAMETER"] for e in spec["expectations"] for v in e["kwargs"].values()
            if isinstance(v, dict) and "$PARAMETER" in v}


def check_params_are_all_used(suite_dir: Path, p: params_mod.ValidateParams) -> None:
    """Every validate param must be a threshold of some suite: a param no suite reads would be a
    number that silently does nothing."""
    used = set()
    for name in (ROW_SUITE, BATCH_SUITE):
        path = suite_dir / f"{name}.json"
        if path.exists():
            used |= suite_parameter_names(json.loads(path.read_text()))
    unused = sorted(set(dataclasses.asdict(p)) - used)
    if unused:
        raise SuiteError(f"params.yaml validate.{', validate.'.join(unused)} is used by no suite "
                         f"in {suite_dir}: reference it as {{\"$PARAMETER\": \"{unused[0]}\"}} "
                         "in an expectation or remove it")


class Validator:
    """One ephemeral GX context: the two suites, a Data Docs site, one checkpoint per suite."""

    def __init__(self, p: params_mod.ValidateParams, suite_dir: Path, data_docs: Path | None,
                 run_name: str):
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")  # nothing written but the Data Docs
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.sites = []
        if data_docs is not None:
            self.context.add_data_docs_site("cycle", {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(data_docs.resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
            self.sites = ["cycle"]
        self.run_id = RunIdentifier(run_name=run_name)
        self.suites = {name: load_suite(name, suite_dir, p) for name in (ROW_SUITE, BATCH_SUITE)}
        check_params_are_all_used(suite_dir, p)

    def validate(self, name: str, frame: pd.DataFrame):
        """Validate `frame` against suite `name`; returns the GX ExpectationSuiteValidationResult."""
        import great_expectations as gx

        suite, parameters = self.suites[name]
        suite = self.context.suites.add(suite)
        batch_definition = (self.context.data_sources.add_pandas(name).add_dataframe_asset(name)
                            .add_batch_definition_whole_dataframe(name))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch_definition, suite=suite))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=self.sites)
                   ] if self.sites else []
        checkpoint = self.context.checkpoints.add(gx.Checkpoint(
            name=name, validation_definitions=[definition], actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]}))
        result = checkpoint.run(batch_parameters={"dataframe": frame},
                                expectation_parameters=parameters, run_id=self.run_id)
        [validation] = result.run_results.values()
        return validation


def reference_time(cycle: str | None) -> dt.datetime:
    """What "in the future" is measured from: the end of the cycle's day (deterministic, so `dvc
    repro` of a past cycle quarantines the same records), or now when no cycle is given."""
    if cycle is None:
        return dt.datetime.now(dt.timezone.utc)
    day = dt.date.fromisoformat(cycle)
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


def repeat_key(record: dict) -> tuple:
    """What makes two records the same exchange logged twice: the same conversation about the
    same people. Redaction leaves one text for "I can't log in, my email is <EMAIL_ADDRESS_1>"
    from a hundred users, which is a common question, not a client or a log shipper looping; the
    salted hashes of who a record is about (`metadata.subjects`, kept by ingest) tell them apart.
    Records about no one compare by their text alone."""
    metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    subjects = metadata.get("subjects") if isinstance(metadata.get("subjects"), list) else []
    return content_hash(record), tuple(sorted(map(str, subjects)))


def exact_duplicates(records: list[dict], clean_rows: list[int]) -> set[int]:
    """Rows of clean records that repeat an earlier clean record's id, or its conversation about
    the same people (`repeat_key`)."""
    seen_ids, seen_content, duplicates = set(), set(), set()
    for i in clean_rows:
        record_id, key = json.dumps(records[i]["id"]), repeat_key(records[i])
        if record_id in seen_ids or key in seen_content:
            duplicates.add(i)
        seen_ids.add(record_id)
        seen_content.add(key)
    return duplicates


def run(p: params_mod.ValidateParams, redacted: Path, out_dir: Path, cycle: str | None = None,
        suite_dir: Path = SUITE_DIR, data_docs: Path | None = None) -> dict:
    """Split redacted records into clean and quarantined, and check the batch.

    Args:
        p: the `validate` section of params.yaml (the suites' thresholds).
        redacted: the cycle's snapshot, redacted by ingest as it pulled (one line per record).
        out_dir: gets clean.jsonl, feedback.jsonl (clean feedback events), quarantine.jsonl and
            report.json. Each quarantined record
            carries `_reasons` (reason codes) and `_line` (its line in the snapshot). Like every
            record, it is redacted: what the residual scan flagged was replaced too.
        cycle: the cycle's date (YYYY-MM-DD); timestamps after its end by more than
            `future_tolerance_minutes` are quarantined. None: measured from now.
        suite_dir: the folder of the GX suite files.
        data_docs: where to write the GX Data Docs site (index.html), or None for none.
    Returns:
        the report; raises BatchRejected after writing everything if a batch expectation failed.
    """
    records = list(read_jsonl(redacted))
    reference = reference_time(cycle)
    frame = pd.DataFrame([{**features(r, reference), "row": i} for i, r in enumerate(records)],
                         columns=FEATURES)
    validator = Validator(p, suite_dir, data_docs, run_name=cycle or "validate")

    reasons: dict[int, list[str]] = {}
    row_result = validator.validate(ROW_SUITE, frame.drop(columns=["user_chars"]))
    for result in row_result.results:
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise RuntimeError(f"expectation {result.expectation_config.type} on "
                               f"{result.expectation_config.kwargs.get('column')} could not run: "
                               f"{result.exception_info.get('exception_message')}")
        for index in result.result.get("unexpected_index_list") or []:
            reasons.setdefault(int(index["row"]), []).append(result.expectation_config.meta["reason"])

    events = {i for i, r in enumerate(records) if not is_invalid(r) and is_feedback_event(r)}
    clean_rows = [i for i in range(len(records)) if i not in reasons and i not in events]
    clean = [records[i] for i in clean_rows]
    feedback = [records[i] for i in sorted(events) if i not in reasons]
    quarantine = [{**records[i], "_reasons": reasons[i], "_line": i + 1} for i in sorted(reasons)]
    write_jsonl(out_dir / "clean.jsonl", clean)
    write_jsonl(out_dir / "feedback.jsonl", feedback)
    write_jsonl(out_dir / "quarantine.jsonl", quarantine)

    duplicates = exact_duplicates(records, clean_rows)
    frame["quarantined"] = frame["row"].isin(list(reasons)).astype(float)
    frame["duplicate"] = frame["row"].isin(list(duplicates)).astype(float)
    frame.loc[frame["quarantined"] > 0, "user_chars"] = None  # lengths of clean records only
    frame["user_chars"] = frame["user_chars"].astype(float)
    interactions = frame[~frame["row"].isin(list(events))]
    batch_result = validator.validate(BATCH_SUITE, interactions[["row", "quarantined", "duplicate",
                                                                 "user_chars"]])
    checks = {}
    for result in batch_result.results:
        observed = result.result.get("observed_value")
        if observed is None and result.result.get("unexpected_percent") is not None:
            observed = f"{result.result['unexpected_percent']:.1f}% of clean records above"
        checks[result.expectation_config.meta["reason"]] = {
            "passed": bool(result.success), "observed": _plain(observed)}
    failed = [reason for reason, check in checks.items() if not check["passed"]]
    # Fewer records than min_records: the batch's rates and medians are noise (one bad record of
    # three is 33%), so the batch is not judged. Its rows were checked above; the flow skips
    # training on it (nightly.min_new_examples >= validate.min_records), quietly, as a quiet night.
    judged = len(interactions) >= p.min_records

    reason_counts: dict[str, int] = {}
    for rs in reasons.values():
        for reason in rs:
            reason_counts[reason] = reason_counts.get(reason, 0) + 1
    user_chars = frame["user_chars"].dropna()
    report = {"records": len(records), "clean": len(clean), "feedback_events": len(feedback),
              "quarantined": len(quarantine),
              "quarantine_reasons": dict(sorted(reason_counts.items())),
              "exact_duplicates": len(duplicates),
              "user_chars_median": _plain(user_chars.median()) if len(user_chars) else None,
              "user_chars_p95": _plain(user_chars.quantile(0.95)) if len(user_chars) else None,
              "batch_judged": judged, "batch_passed": not failed if judged else None,
              "batch_failures": failed, "batch_checks": checks,
              "data_docs": str(data_docs / "index.html") if data_docs is not None else None}
    write_json(out_dir / "report.json", report)
    if failed and judged:
        details = "; ".join(f"{r} (observed {checks[r]['observed']})" for r in failed)
        raise BatchRejected(
            f"batch rejected: {details}. {len(quarantine)} of {len(records)} records quarantined "
            f"(see {out_dir / 'quarantine.jsonl'} for reasons"
            + (f", {data_docs / 'index.html'} for the validation report" if data_docs else "")
            + "); fix the source or adjust validate.* in params.yaml")
    return report


def _plain(value):
    """A JSON-friendly number (GX and pandas hand back numpy scalars)."""
    if hasattr(value, "item"):
        value = value.item()
    return round(value, 4) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.data.validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshot", type=Path, help="the cycle's redacted snapshot (from ingest)")
    parser.add_argument("out_dir", type=Path, help="gets clean.jsonl, quarantine.jsonl, report.json")
    parser.add_argument("--cycle", help="the cycle's date, YYYY-MM-DD: future timestamps are "
                        "measured from the end of that day (default: from now)")
    parser.add_argument("--suites", type=Path, default=SUITE_DIR,
                        help="folder of the GX suite files (default: %(default)s)")
    parser.add_argument("--data-docs", type=Path, help="write the GX Data Docs site here")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        report = run(params_mod.load(args.params).validate, args.snapshot,
                     args.out_dir, args.cycle, args.suites, args.data_docs)
    except (BatchRejected, SuiteError) as exc:
        sys.exit(f"validate: {exc}")
    print(f"validate: {report['clean']} clean, {report['quarantined']} quarantined "
          f"{report['quarantine_reasons']}"
          + ("" if report["batch_judged"] else f"; {report['records']} records are too few to "
             "judge as a batch (validate.min_records): not judged, no training on them")
          + (f"; Data Docs: {report['data_docs']}" if report["data_docs"] else ""))


if __name__ == "__main__":
    main()
