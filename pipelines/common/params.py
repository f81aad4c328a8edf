"""params.yaml, typed and strict: one pydantic dataclass per section (stage = module = section).

Unknown, missing or mistyped keys are errors that name the key and say what is allowed; the why of
every default lives as a comment in params.yaml, this module only gives the values types and
bounds. Sections are pydantic dataclasses, so `dataclasses.replace` and `asdict` work on them and
every construction, replace included, is validated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

import annotated_types
import pydantic
import yaml
from pydantic import Field

# transformers' SchedulerType values that need no extra arguments (written out, so that reading
# params does not import transformers; tests/test_train.py checks them against transformers).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                 "constant_with_warmup", "inverse_sqrt")

# Strict: "yes" is not true and 2.5 is not an integer; YAML's values are checked as they are.
_CONFIG = pydantic.ConfigDict(extra="forbid", strict=True)


class ParamsError(ValueError):
    """params.yaml does not match what nightshift expects."""


def section(cls):
    """A frozen pydantic dataclass whose failed validation raises ParamsError, worded like
    the errors of params.yaml (`train.epochs must be at least 1, not 0`)."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=_CONFIG)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except pydantic.ValidationError as exc:
            raise ParamsError(describe(exc, cls, where=f"{cls.__name__}.")) from None

    cls.__init__ = checked_init
    return cls


AtLeast1 = Annotated[int, Field(ge=1)]
Share = Annotated[float, Field(ge=0, lt=1)]


@section
class BaseModelParams:
    model: str
    vocab_size: AtLeast1
    hidden_size: AtLeast1
    intermediate_size: AtLeast1
    num_layers: AtLeast1
    num_heads: AtLeast1
    num_kv_heads: AtLeast1
    max_length: AtLeast1
    corpus_records: AtLeast1
    pretrain_steps: AtLeast1
    pretrain_batch_size: AtLeast1
    pretrain_learning_rate: float
    copy_share: Share
    copy_chat_share: Share

    def __post_init__(self):
        if self.copy_share + self.copy_chat_share >= 1:
            raise ParamsError(f"base_model.copy_share + base_model.copy_chat_share is "
                              f"{self.copy_share + self.copy_chat_share}: it must stay below 1, so "
                              "each batch keeps rows of plain text")


@section
class IngestParams:
    url: str
    table: str
    chunk_rows: AtLeast1
    retries: Annotated[int, Field(ge=0, le=50)]  # Prefect takes at most 50 retry delays
    retry_backoff_seconds: Annotated[float, Field(ge=0)]


@section
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


@section
class RedactParams:
    language: str
    entities: list[str]
    ner_model: str | None
    score_threshold: float
    workers: AtLeast1
    chunk_records: AtLeast1
    text_cache_size: AtLeast1
    runner: Literal["processes", "dask"]
    dask_address: str | None
    # What reads ner_model: a spaCy pipeline, or a transformers token-classification model run
    # through Presidio's TransformersNlpEngine.
    ner_engine: Literal["spacy", "transformers"] = "spacy"

    def __post_init__(self):
        if self.ner_engine == "transformers" and not self.ner_model:
            raise ParamsError("redact.ner_engine is 'transformers' but redact.ner_model is null: name "
                              "the token-classification model (a hub id or a local folder)")
        if self.dask_address and self.runner != "dask":
            raise ParamsError("redact.dask_address is set but redact.runner is not 'dask': set "
                              "runner: dask to use that cluster, or dask_address: null")


@section
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


@section
class DatasetParams:
    eval_fraction: float
    near_duplicate_threshold: float
    shingle_words: AtLeast1
    minhash_num_perm: int
    exclude_feedback: list[str]


@section
class RetrievalParams:
    vector_store: str | None


@section
class NightlyParams:
    min_new_examples: AtLeast1



@section
class ReplayParams:
    capacity: Annotated[int, Field(ge=0)]
    ratio: Share
    anchor_ratio: Share

    def __post_init__(self):
        if self.ratio + self.anchor_ratio >= 1:
            raise ParamsError(f"replay.ratio + replay.anchor_ratio is {self.ratio + self.anchor_ratio}: "
                              "they are shares of the training mix, so they must leave room for "
                              "the new examples (sum below 1)")


@section
class DriftParams:
    alpha: float
    permutations: AtLeast1
    max_samples: AtLeast1
    min_records: int
    max_length_psi: float
    max_oov_rate: float
    max_topic_tvd: float


@section
class ModelDriftParams:
    max_output_kl: float
    trend_metrics: list[str]
    trend_window: AtLeast1
    max_trend_increase: float
    trend_history: int

    def __post_init__(self):
        if self.trend_history < self.trend_window:
            raise ParamsError(f"model_drift.trend_history ({self.trend_history}) must be at least "
                              f"model_drift.trend_window ({self.trend_window}), which must be at least 1: "
                              "the trend compares with the passed version trend_window back")


@section
class DistributedParams:
    processes: AtLeast1
    strategy: Literal["ddp", "fsdp"]
    fsdp_offload_params: bool


@section
class TrainParams:
    quantization: Literal["4bit", "none"]
    lora_r: AtLeast1
    lora_alpha: AtLeast1
    lora_dropout: Share
    target_modules: list[str]
    learning_rate: float
    lr_scheduler: Literal[LR_SCHEDULERS]
    warmup_ratio: Share
    epochs: AtLeast1
    max_steps: Annotated[int, Field(ge=1)] | None
    batch_size: AtLeast1
    max_length: AtLeast1
    checkpoint_steps: AtLeast1
    checkpoints_kept: AtLeast1
    distributed: DistributedParams
    packing: bool
    gradient_checkpointing: bool

    def __post_init__(self):
        if self.batch_size % self.distributed.processes:
            raise ParamsError(f"train.batch_size ({self.batch_size}) must be a multiple of "
                              f"train.distributed.processes ({self.distributed.processes}): each "
                              "process takes an equal share of every batch")

    @property
    def per_device_batch_size(self) -> int:
        """Each process's share of the global batch."""
        return self.batch_size // self.distributed.processes


@section
class EvaluateParams:
    batch_size: AtLeast1
    replay_examples: int
    generation_examples: int
    max_new_tokens: AtLeast1
    retrieved_examples: int
    max_context_tokens: AtLeast1
    prompt: str | None


@section
class WorthParams:
    verdict_set: Literal["new", "golden"]
    confidence: Annotated[float, Field(gt=0, lt=1)]
    bootstrap_samples: AtLeast1
    min_gain: Annotated[float, Field(ge=0)]
    closes_most: Annotated[float, Field(gt=0, le=1)]
    format_tolerance: Annotated[float, Field(ge=0, le=1)]
    alert_after_nights: AtLeast1
    cpu_hour_usd: Annotated[float, Field(ge=0)]
    gpu_hour_usd: Annotated[float, Field(ge=0)]
    input_token_usd_per_1k: Annotated[float, Field(ge=0)]


@section
class MetricThreshold:
    """TFX-style bounds on one metric: a value threshold (min/max) and a change threshold against
    the champion (max_increase/max_decrease, relative). Unset bounds are not checked."""
    min: float | None = None
    max: float | None = None
    max_increase: float | None = None
    max_decrease: float | None = None

    def __post_init__(self):
        if all(getattr(self, f.name) is None for f in dataclasses.fields(self)):
            raise ParamsError("a gate threshold needs at least one of min, max, max_increase, "
                              "max_decrease")


@section
class GateParams:
    thresholds: Annotated[dict[str, MetricThreshold], Field(min_length=1)]


@section
class RegistryParams:
    model_name: str
    tracking_uri: str
    experiment: str
    auto_promote: bool
    retries: Annotated[int, Field(ge=0, le=10)]  # MLflow's HTTP client refuses more than 10
    retry_backoff_seconds: Annotated[int, Field(ge=0, le=120)]  # MLflow: an integer, at most 120


@section
class VersionParams:
    remote: str
    remote_url: str | None
    endpoint_url: str | None
    git_commit: bool
    retries: Annotated[int, Field(ge=0, le=50)]  # Prefect takes at most 50 retry delays
    retry_backoff_seconds: Annotated[float, Field(ge=0)]

    def __post_init__(self):
        if self.endpoint_url and not self.remote_url:
            raise ParamsError("version.endpoint_url is set but version.remote_url is not: name the "
                              "bucket too (remote_url: s3://BUCKET/PATH)")


@section
class NotifyParams:
    on_success: bool


@section
class DemoParams:
    start_date: str
    days: AtLeast1
    cycles: AtLeast1
    records_per_day: AtLeast1
    topic_shift: float


@section
class RebaseParams:
    max_bpb_increase: Annotated[float, Field(ge=0)]
    recent_nights: Annotated[int, Field(ge=0)]
    epochs: AtLeast1
    max_examples: AtLeast1


@section
class ServingParams:
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    poll_seconds: Annotated[float, Field(gt=0)]
    max_new_tokens: AtLeast1
    log_exchanges: bool
    canary_fraction: Annotated[float, Field(ge=0, le=1)]
    webhook_url: str | None
    engine: Literal["embedded", "vllm"]
    vllm_url: str
    vllm_adapter_dir: str | None


@section
class CanaryParams:
    min_rated: AtLeast1
    alpha: Annotated[float, Field(gt=0, lt=1)]
    max_pii_rate_increase: Annotated[float, Field(ge=0, le=1)]
    act: bool


@section
class Params:
    seed: int
    base_model: BaseModelParams
    ingest: IngestParams
    schedule: ScheduleParams
    redact: RedactParams
    validate: ValidateParams
    dataset: DatasetParams
    retrieval: RetrievalParams
    nightly: NightlyParams
    replay: ReplayParams
    drift: DriftParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    worth: WorthParams
    registry: RegistryParams
    version: VersionParams
    model_drift: ModelDriftParams
    notify: NotifyParams
    demo: DemoParams
    rebase: RebaseParams
    serving: ServingParams
    canary: CanaryParams

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


# Sections renamed when each stage got one name everywhere: a params.yaml of an older workspace
# gets told where its keys went instead of a bare "unknown key".
RENAMED = {"base": "base_model", "source": "ingest (url, table, chunk_rows)",
           "retries": "registry.retries / registry.retry_backoff_seconds (MLflow) and "
                      "version.retries / version.retry_backoff_seconds (dvc push)"}


MODEL_DRIFT_KEYS = ("max_output_kl", "trend_metrics", "trend_window", "max_trend_increase", "trend_history")


def parse(raw: dict) -> Params:
    """Check a params.yaml already read into a dict. Raises ParamsError naming the keys."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml must be a mapping, got {type(raw).__name__}")
    moved = [f"{old} is now {new}" for old, new in RENAMED.items() if old in raw]
    moved += [f"drift.{key} is now model_drift.{key}" for key in MODEL_DRIFT_KEYS
              if isinstance(raw.get("drift"), dict) and key in raw["drift"]]
    if moved:
        raise ParamsError("params.yaml has sections of an older nightshift: " + "; ".join(moved)
                          + " (see the project's params.yaml)")
    try:
        # JSON mode: nested sections come as mappings; YAML's scalars are JSON's.
        return pydantic.TypeAdapter(Params).validate_json(json.dumps(raw, default=str))
    except pydantic.ValidationError as exc:
        raise ParamsError(describe(exc, Params)) from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml. Raises ParamsError with the offending keys."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from a nightshift workspace "
                          "(or create one with `nightshift init DIR`)")
    return parse(yaml.safe_load(path.read_text()) or {})


# What a value of each kind must be, for the error messages.
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a list", "dict": "a mapping", "dataclass": "a mapping", "none": "null"}


def describe(exc: pydantic.ValidationError, root: type, where: str = "") -> str:
    """pydantic's errors as params.yaml errors: each names its key and what is allowed. `where`
    prefixes the keys of a section built in code (`TrainParams.`)."""
    messages = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        key, kind, value = where + ".".join(loc), error["type"], error.get("input")
        if kind == "missing":
            messages.append(f"missing key(s) in params.yaml: {key}")
        elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
            messages.append(f"unknown key(s) in params.yaml: {key}")
        elif kind == "value_error":  # a check of the section's own (__post_init__): its words
            messages.append(str(error["ctx"]["error"]))
        elif kind == "too_short":
            messages.append(f"params.yaml: {key} must be a non-empty mapping")
        elif kind == "literal_error":
            allowed = typing.get_args(_field_type(root, loc))
            choice = (" or ".join(repr(a) for a in allowed) if len(allowed) == 2
                      else "one of " + ", ".join(allowed))
            messages.append(f"params.yaml: {key} must be {choice}, not {value!r}")
        elif kind in ("greater_than_equal", "less_than_equal", "less_than", "greater_than"):
            messages.append(f"params.yaml: {key} must be {_bounds(root, loc)}, not {value!r}")
        else:
            what = next((v for k, v in _KINDS.items() if kind.startswith(k)), error["msg"])
            messages.append(f"params.yaml: {key} must be {what}, not {value!r}")
    if any(m.startswith("missing key") for m in messages):
        # Most often a workspace made before a release added a section or a key.
        messages.append("a key a newer nightshift added is copied, with its comment, from the "
                        "project's params.yaml")
    return "; ".join(dict.fromkeys(messages))


def _field_info(root: type, loc: list[str]):
    """The pydantic FieldInfo of the key at `loc` (None inside a mapping of sub-sections)."""
    cls, info = root, None
    for part in loc:
        fields = getattr(cls, "__pydantic_fields__", None)
        if fields is None or part not in fields:
            continue  # a key of a mapping (gate.thresholds.<metric>) or a union branch
        info = fields[part]
        cls = next((t for t in _flatten_type(info.annotation)
                    if dataclasses.is_dataclass(t) or typing.get_origin(t) is dict), None)
        if typing.get_origin(cls) is dict:
            cls = typing.get_args(cls)[1]
    return info


def _flatten_type(annotation) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _flatten_type(arg)]
    if typing.get_origin(annotation) is Annotated:
        return _flatten_type(typing.get_args(annotation)[0])
    return [annotation]


def _field_type(root: type, loc: list[str]):
    info = _field_info(root, loc)
    return next(t for t in _flatten_type(info.annotation) if typing.get_origin(t) is Literal)


def _bounds(root: type, loc: list[str]) -> str:
    """A field's bounds in words: "between 0 and 10", "in [0, 1)", "at least 1 or null"."""
    info = _field_info(root, loc)
    metadata = list(info.metadata)
    for t in typing.get_args(info.annotation):  # bounds inside `Annotated[int, ...] | None`
        metadata += getattr(t, "__metadata__", ())
        for arg in typing.get_args(t)[1:]:
            metadata += getattr(arg, "metadata", [])
    b = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in metadata
         if isinstance(m, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt))}
    nullable = type(None) in _flatten_type(info.annotation)
    if "ge" in b and "le" in b:
        words = f"between {b['ge']} and {b['le']}"
    elif "ge" in b and "lt" in b:
        words = f"in [{b['ge']}, {b['lt']})"
    elif "ge" in b:
        words = f"at least {b['ge']}"
    elif "le" in b:
        words = f"at most {b['le']}"
    else:
        words = "within its bounds"
    return words + (" or null" if nullable else "")
