"""What one nightly cycle did, as a typed record: the flow fills it step by step, writes it to
reports/summary.json (and reports/cycles/<date>.json), and the CLI and the alerts read it back.

Every part but `cycle` and `status` is optional: a cycle that failed or skipped early has only
what it reached. The numbers are read from the stages' own reports (paths in pipelines/common/
paths.py), never recomputed here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.common import paths
from pipelines.common.metrics import SETS, metric
from pipelines.common.records import read_json, write_json


class Part(BaseModel):
    # Summaries written by earlier versions may hold keys this one does not name: kept, not lost.
    model_config = ConfigDict(extra="allow")


class AccountingError(AssertionError):
    """pulled != clean + quarantined + duplicates + forgotten + feedback events: a record went missing."""


class Accounting(Part):
    """Every record pulled is clean, quarantined, a duplicate, forgotten (dropped by ingest: its
    person was erased by `nightshift forget`) or a clean feedback event (a rating of an earlier
    answer, applied by the dataset stage). Clean includes the records kept out of training by
    their feedback; duplicates are exact ones plus near ones within the batch and to the buffer."""
    pulled: int | None = None
    clean: int | None = None
    quarantined: int | None = None
    duplicates: int | None = None
    forgotten: int = 0
    feedback_events: int = 0
    feedback_applied_new: int | None = None
    feedback_applied_buffer: int | None = None
    feedback_removed_from_buffer: int | None = None
    feedback_unmatched: int | None = None
    filtered_feedback: int | None = None
    exact_duplicates: int | None = None
    near_duplicates_in_batch: int | None = None
    near_duplicates_of_replay: int | None = None
    balanced: bool | None = None


class Alarms(Part):
    """A drift check's outcome: data drift (the drift stage) or model drift (after register)."""
    alarm: bool | None = None
    alarms: list[str] = Field(default_factory=list)
    note: str | None = None
    divergence: dict | None = None
    report: str | None = None


class Validation(Part):
    batch_passed: bool | None = None
    batch_failures: list | None = None
    data_docs: str | None = None


class Verdict(Part):
    passed: bool | None = None
    reasons: list[str] | None = None


class CycleSummary(Part):
    cycle: str
    status: str = "running"       # running, succeeded, skipped, failed, already_done, finished_interrupted
    started: str | None = None
    stage: str | None = None      # the step running now; kept as failed_stage if it fails
    timings: dict[str, float] = Field(default_factory=dict)
    seconds: float | None = None
    pulled: int | None = None
    reused_snapshot: bool | None = None
    redaction: dict | None = None
    accounting: Accounting | None = None
    accounting_error: str | None = None
    parent_version: str | None = None
    new_examples: int | None = None
    reason: str | None = None
    version: str | None = None
    promoted: bool | None = None
    alias: str | None = None
    git_commit: str | None = None
    data_version: str | None = None
    failed_stage: str | None = None
    error: str | None = None
    finished_earlier_night: dict | None = None
    quarantined: int | None = None
    quarantine_reasons: dict | None = None
    validation: Validation | None = None
    drift: Alarms | None = None
    model_drift: Alarms | None = None
    train: dict | None = None
    eval: dict[str, float | None] | None = None
    eval_sets: dict[str, dict[str, float | None]] | None = None
    gate: Verdict | None = None
    worth: dict | None = None     # the adapter against prompting and retrieval, cost, break-even

    @classmethod
    def start(cls, day: dt.date) -> CycleSummary:
        return cls(cycle=day.isoformat(), status="running", timings={},
                   started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def load(cls, path: Path) -> CycleSummary | None:
        """A summary file as written by a cycle, or None when there is none."""
        data = read_json(path)
        return cls.model_validate(data) if data else None

    def to_dict(self) -> dict:
        """The summary as JSON: what the cycle set (a value it set to null included)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"stage"})

    def write(self, ws: Path) -> None:
        write_json(ws / paths.SUMMARY, self.to_dict())
        write_json(ws / paths.CYCLES / f"{self.cycle}.json", self.to_dict())

    @property
    def rejected(self) -> bool:
        return self.gate is not None and self.gate.passed is False

    def add_reports(self, ws: Path, ran: set[str]) -> None:
        """Quarantine reasons, training and evaluation numbers and the verdict, from the reports
        of the stages in `ran` (a stage that did not run left last cycle's files)."""
        if "validate" in ran:
            validated = read_json(ws / paths.VALIDATED_REPORT)
            self.quarantine_reasons = validated.get("quarantine_reasons")
            self.quarantined = validated.get("quarantined")
            docs = ws / paths.DATA_DOCS / "index.html"
            self.validation = Validation(batch_passed=validated.get("batch_passed"),
                                         batch_failures=validated.get("batch_failures"),
                                         data_docs=str(docs) if docs.exists() else None)
        if "drift" in ran:
            drift = read_json(ws / paths.DRIFT_REPORT)
            self.drift = Alarms(alarm=drift.get("alarm"), alarms=drift.get("alarms") or [],
                                note=drift.get("note"), report=str(ws / paths.DRIFT_HTML))
        if "train" in ran:
            train = read_json(ws / paths.TRAIN_REPORT)
            self.train = {k: train.get(k) for k in ("examples", "steps", "first_loss", "final_loss",
                                                    "tokens_per_second", "continued_from_parent")}
        if "evaluate" in ran:
            evaluation = read_json(ws / paths.EVAL_REPORT)
            models = ("candidate", "champion", "base")
            self.eval = {k: metric(evaluation.get(k), "new.eval_loss") for k in models}
            self.eval_sets = {s: {k: metric(evaluation.get(k), f"{s}.eval_loss") for k in models}
                              for s in SETS}
        if "gate" in ran:
            gate = read_json(ws / paths.GATE_REPORT)
            self.gate = Verdict(passed=gate.get("passed"), reasons=gate.get("reasons"))


def accounting(ws: Path, pulled: dict) -> Accounting:
    """The night's records by fate, from ingest's counts and the validate and dataset reports;
    raises AccountingError when they do not add up."""
    validated = read_json(ws / paths.VALIDATED_REPORT)
    dataset = read_json(ws / paths.DATASET_REPORT)
    counts = Accounting(
        pulled=pulled["pulled"], clean=dataset.get("unique"), quarantined=validated.get("quarantined"),
        duplicates=dataset.get("duplicates"), forgotten=pulled["forgotten"],
        feedback_events=validated.get("feedback_events", 0),
        **{k: dataset.get(k) for k in ("filtered_feedback", "feedback_applied_new",
                                       "feedback_applied_buffer", "feedback_removed_from_buffer",
                                       "feedback_unmatched", "exact_duplicates",
                                       "near_duplicates_in_batch", "near_duplicates_of_replay")})
    if None in (counts.clean, counts.quarantined, counts.duplicates):
        return counts
    counts.balanced = counts.pulled == (counts.clean + counts.quarantined + counts.duplicates
                                        + counts.forgotten + counts.feedback_events)
    if not counts.balanced:
        raise AccountingError(f"records unaccounted for: {counts.model_dump(exclude_none=True)}")
    return counts


def new_examples(ws: Path) -> int:
    """The night's learnable new examples (for training and held out), after dedup and filters."""
    dataset = read_json(ws / paths.DATASET_REPORT)
    return dataset["train_new"] + dataset["eval"]
