"""params.yaml, typed and strict: one dataclass per section, unknown or missing keys are errors.

The why of every default lives as a comment in params.yaml; this module only gives it types.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """params.yaml does not match what nightshift expects."""


@dataclass(frozen=True)
class BaseParams:
    model: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_length: int
    corpus_records: int
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_learning_rate: float


@dataclass(frozen=True)
class SourceParams:
    url: str
    table: str
    chunk_rows: int

    def __post_init__(self):
        if self.chunk_rows < 1:
            raise ParamsError(f"source.chunk_rows must be at least 1, not {self.chunk_rows}")


@dataclass(frozen=True)
class IngestParams:
    retries: int
    retry_backoff_seconds: float

    def __post_init__(self):
        if not 0 <= self.retries <= 50:  # Prefect takes at most 50 retry delays
            raise ParamsError(f"ingest.retries must be between 0 and 50, not {self.retries}")
        if self.retry_backoff_seconds < 0:
            raise ParamsError("ingest.retry_backoff_seconds must not be negative")

    def retry_delays(self) -> list[float]:
        """Exponential backoff: the first wait, then twice as long before each next attempt."""
        return exponential_backoff(self.retry_backoff_seconds, self.retries)


def exponential_backoff(first_wait: float, retries: int) -> list[float]:
    """The waits before each retry: `first_wait`, then twice as long before each next one."""
    return [first_wait * 2 ** i for i in range(retries)]


@dataclass(frozen=True)
class ScheduleParams:
    deployment: str
    cron: str
    timezone: str

    def __post_init__(self):
        import zoneinfo

        if not self.deployment or "/" in self.deployment:
            raise ParamsError(f"schedule.deployment must be a name without '/', not {self.deployment!r}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ParamsError(f"schedule.timezone: {self.timezone!r} is not an IANA time zone name; "
                              "use one like UTC, Europe/Berlin or America/New_York "
                              "(`python -c 'import zoneinfo; print(sorted(zoneinfo.available_timezones()))'` "
                              "lists them)") from None
        from cronsim import CronSim, CronSimError

        try:
            CronSim(self.cron, dt.datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ParamsError(f"schedule.cron: {self.cron!r} is not a cron expression ({exc}); "
                              'five fields: minute hour day-of-month month day-of-week, e.g. "30 2 * * *"') from None

    def yesterday(self, now: dt.datetime | None = None) -> dt.date:
        """The day before today on the schedule's clock: the night a scheduled run learns."""
        import zoneinfo

        now = now or dt.datetime.now(dt.timezone.utc)
        return now.astimezone(zoneinfo.ZoneInfo(self.timezone)).date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class RetryParams:
    mlflow: int
    mlflow_backoff_seconds: int
    dvc_remote: int
    dvc_remote_backoff_seconds: float

    def __post_init__(self):
        if not 0 <= self.mlflow <= 10:  # MLflow's HTTP client refuses more than 10
            raise ParamsError(f"retries.mlflow must be between 0 and 10, not {self.mlflow}")
        if not 0 <= self.mlflow_backoff_seconds <= 120:  # MLflow's limit on its backoff factor
            raise ParamsError("retries.mlflow_backoff_seconds must be between 0 and 120, "
                              f"not {self.mlflow_backoff_seconds}")
        if not 0 <= self.dvc_remote <= 50:  # Prefect takes at most 50 retry delays
            raise ParamsError(f"retries.dvc_remote must be between 0 and 50, not {self.dvc_remote}")
        if self.dvc_remote_backoff_seconds < 0:
            raise ParamsError("retries.dvc_remote_backoff_seconds must not be negative")

    def dvc_remote_delays(self) -> list[float]:
        return exponential_backoff(self.dvc_remote_backoff_seconds, self.dvc_remote)


@dataclass(frozen=True)
class RedactParams:
    language: str
    entities: list[str]
    ner_model: str | None
    score_threshold: float
    workers: int
    chunk_records: int
    text_cache_size: int
    runner: str
    dask_address: str | None
    # What reads ner_model: a spaCy pipeline, or a transformers token-classification model run
    # through Presidio's TransformersNlpEngine.
    ner_engine: str = "spacy"

    def __post_init__(self):
        if self.ner_engine not in ("spacy", "transformers"):
            raise ParamsError(f"redact.ner_engine must be 'spacy' or 'transformers', not {self.ner_engine!r}")
        if self.ner_engine == "transformers" and not self.ner_model:
            raise ParamsError("redact.ner_engine is 'transformers' but redact.ner_model is null: name "
                              "the token-classification model (a hub id or a local folder)")
        for name in ("workers", "chunk_records", "text_cache_size"):
            if getattr(self, name) < 1:
                raise ParamsError(f"redact.{name} must be at least 1, not {getattr(self, name)}")
        if self.runner not in ("processes", "dask"):
            raise ParamsError(f"redact.runner must be 'processes' or 'dask', not {self.runner!r}")
        if self.dask_address and self.runner != "dask":
            raise ParamsError("redact.dask_address is set but redact.runner is not 'dask': set "
                              "runner: dask to use that cluster, or dask_address: null")


@dataclass(frozen=True)
class ValidateParams:
    """Every field is a suite parameter of the GX suites in validation/expectations/."""
    max_message_chars: int
    future_tolerance_minutes: float
    min_records: int
    max_records: int
    max_quarantine_rate: float
    max_duplicate_rate: float
    min_median_user_chars: float
    max_median_user_chars: float
    max_p95_user_chars: float


@dataclass(frozen=True)
class DatasetParams:
    eval_fraction: float
    near_duplicate_threshold: float
    shingle_words: int
    minhash_num_perm: int
    exclude_feedback: list[str]

    def __post_init__(self):
        if self.shingle_words < 1:
            raise ParamsError(f"dataset.shingle_words must be at least 1, not {self.shingle_words}")


@dataclass(frozen=True)
class NightlyParams:
    min_new_examples: int

    def __post_init__(self):
        if self.min_new_examples < 1:
            raise ParamsError(f"nightly.min_new_examples must be at least 1, not {self.min_new_examples}")


@dataclass(frozen=True)
class ReplayParams:
    capacity: int
    ratio: float
    anchor_ratio: float

    def __post_init__(self):
        if self.capacity < 0:
            raise ParamsError(f"replay.capacity must not be negative, not {self.capacity}")
        for name in ("ratio", "anchor_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ParamsError(f"replay.{name} must be at least 0 and below 1, not "
                                  f"{getattr(self, name)}")
        if self.ratio + self.anchor_ratio >= 1:
            raise ParamsError(f"replay.ratio + replay.anchor_ratio is {self.ratio + self.anchor_ratio}: "
                              "they are shares of the training mix, so they must leave room for "
                              "the new examples (sum below 1)")


@dataclass(frozen=True)
class DriftParams:
    alpha: float
    permutations: int
    max_samples: int
    min_records: int
    max_length_psi: float
    max_oov_rate: float
    max_topic_tvd: float
    max_output_kl: float
    trend_metrics: list[str]
    trend_window: int
    max_trend_increase: float
    trend_history: int

    def __post_init__(self):
        if self.trend_window < 1 or self.trend_history < self.trend_window:
            raise ParamsError(f"drift.trend_history ({self.trend_history}) must be at least "
                              f"drift.trend_window ({self.trend_window}), which must be at least 1: "
                              "the trend compares with the passed version trend_window back")


# transformers' SchedulerType values that need no extra arguments (written out, so that reading
# params does not import transformers; tests/test_train.py checks them against transformers).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                 "constant_with_warmup", "inverse_sqrt")


@dataclass(frozen=True)
class DistributedParams:
    processes: int
    strategy: str
    fsdp_offload_params: bool

    def __post_init__(self):
        if self.processes < 1:
            raise ParamsError(f"train.distributed.processes must be at least 1, not {self.processes}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ParamsError(f"train.distributed.strategy must be 'ddp' or 'fsdp', not {self.strategy!r}")


@dataclass(frozen=True)
class TrainParams:
    quantization: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    epochs: int
    max_steps: int | None
    batch_size: int
    max_length: int
    checkpoint_steps: int
    checkpoints_kept: int
    distributed: DistributedParams
    packing: bool
    gradient_checkpointing: bool

    def __post_init__(self):
        if self.quantization not in ("4bit", "none"):
            raise ParamsError(f"train.quantization must be '4bit' or 'none', not {self.quantization!r}")
        if self.checkpoint_steps < 1:
            raise ParamsError(f"train.checkpoint_steps must be at least 1, not {self.checkpoint_steps}")
        if self.checkpoints_kept < 1:
            raise ParamsError(f"train.checkpoints_kept must be at least 1, not {self.checkpoints_kept}")
        if self.batch_size % self.distributed.processes:
            raise ParamsError(f"train.batch_size ({self.batch_size}) must be a multiple of "
                              f"train.distributed.processes ({self.distributed.processes}): each "
                              "process takes an equal share of every batch")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ParamsError(f"train.lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, "
                              f"not {self.lr_scheduler!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ParamsError(f"train.warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ParamsError(f"train.max_steps must be at least 1 or null, not {self.max_steps}")
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ParamsError(f"train.{name} must be at least 1, not {getattr(self, name)}")

    @property
    def per_device_batch_size(self) -> int:
        """Each process's share of the global batch."""
        return self.batch_size // self.distributed.processes


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    replay_examples: int
    generation_examples: int
    max_new_tokens: int


@dataclass(frozen=True)
class MetricThreshold:
    """TFX-style bounds on one metric: a value threshold (min/max) and a change threshold against
    the champion (max_increase/max_decrease, relative). Unset bounds are not checked."""
    min: float | None = None
    max: float | None = None
    max_increase: float | None = None
    max_decrease: float | None = None

    def __post_init__(self):
        if all(getattr(self, f.name) is None for f in fields(self)):
            raise ParamsError("a gate threshold needs at least one of min, max, max_increase, "
                              "max_decrease")


@dataclass(frozen=True)
class GateParams:
    thresholds: dict[str, MetricThreshold]


@dataclass(frozen=True)
class RegistryParams:
    model_name: str
    tracking_uri: str
    experiment: str
    auto_promote: bool


@dataclass(frozen=True)
class VersionParams:
    remote: str
    remote_url: str | None
    endpoint_url: str | None
    git_commit: bool

    def __post_init__(self):
        if self.endpoint_url and not self.remote_url:
            raise ParamsError("version.endpoint_url is set but version.remote_url is not: name the "
                              "bucket too (remote_url: s3://BUCKET/PATH)")


@dataclass(frozen=True)
class NotifyParams:
    on_success: bool


@dataclass(frozen=True)
class DemoParams:
    start_date: str
    days: int
    cycles: int
    records_per_day: int
    topic_shift: float


@dataclass(frozen=True)
class Params:
    seed: int
    base: BaseParams
    source: SourceParams
    ingest: IngestParams
    schedule: ScheduleParams
    retries: RetryParams
    redact: RedactParams
    validate: ValidateParams
    dataset: DatasetParams
    nightly: NightlyParams
    replay: ReplayParams
    drift: DriftParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    registry: RegistryParams
    version: VersionParams
    notify: NotifyParams
    demo: DemoParams

    def __post_init__(self):
        if self.nightly.min_new_examples < self.validate.min_records:
            raise ParamsError(
                f"nightly.min_new_examples ({self.nightly.min_new_examples}) must be at least "
                f"validate.min_records ({self.validate.min_records}): a batch too small to be "
                "judged by validate's batch checks must not be trained on")

    def digest(self) -> str:
        """A short hash of every value, recorded with each model version."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "float | None": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _build(cls: type, raw: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return raw
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params.yaml'} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    optional = {f.name for f in fields(cls) if f.default is not dataclasses.MISSING}
    missing = sorted(set(known) - set(raw) - optional)
    if unknown:
        raise ParamsError(f"unknown key(s) in params.yaml: {', '.join(where + k for k in unknown)}")
    if missing:
        raise ParamsError(f"missing key(s) in params.yaml: {', '.join(where + k for k in missing)}")
    hints = {f.name: f.type for f in fields(cls)}
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        sub = globals().get(hint)
        if dataclasses.is_dataclass(sub):
            values[name] = _build(sub, value, f"{where}{name}.")
            continue
        if hint.startswith("dict[str, "):  # a mapping of named sub-sections, e.g. gate.thresholds
            sub = globals()[hint[len("dict[str, "):-1]]
            if not isinstance(value, dict) or not value:
                raise ParamsError(f"params.yaml: {where}{name} must be a non-empty mapping")
            values[name] = {}
            for key, item in value.items():
                try:
                    values[name][key] = _build(sub, item, f"{where}{name}.{key}.")
                except ParamsError as exc:
                    raise ParamsError(f"params.yaml: {where}{name}.{key}: {exc}") from None
            continue
        if not _TYPE_CHECKS[hint](value):
            raise ParamsError(f"params.yaml: {where}{name} must be {hint}, not {value!r}")
        values[name] = value
    return cls(**values)


def load(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml. Raises ParamsError with the offending keys."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from a nightshift workspace "
                          "(or create one with `nightshift init DIR`)")
    return _build(Params, yaml.safe_load(path.read_text()) or {}, "")
