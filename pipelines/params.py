"""params.yaml, typed and strict: one dataclass per section, unknown or missing keys are errors.

The why of every default lives as a comment in params.yaml; this module only gives it types.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class IngestParams:
    retries: int
    retry_delay_seconds: float


@dataclass(frozen=True)
class RedactParams:
    language: str
    entities: list[str]
    ner_model: str | None
    score_threshold: float
    workers: int
    chunk_records: int
    text_cache_size: int

    def __post_init__(self):
        for name in ("workers", "chunk_records", "text_cache_size"):
            if getattr(self, name) < 1:
                raise ParamsError(f"redact.{name} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True)
class ValidateParams:
    max_message_chars: int
    min_records: int
    max_quarantine_rate: float


@dataclass(frozen=True)
class DatasetParams:
    eval_fraction: float


@dataclass(frozen=True)
class ReplayParams:
    capacity: int
    ratio: float


@dataclass(frozen=True)
class DriftParams:
    alpha: float
    permutations: int
    max_samples: int
    min_records: int
    max_length_psi: float
    max_oov_rate: float
    max_topic_tvd: float


@dataclass(frozen=True)
class TrainParams:
    quantization: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    learning_rate: float
    epochs: int
    batch_size: int
    max_length: int

    def __post_init__(self):
        if self.quantization not in ("4bit", "none"):
            raise ParamsError(f"train.quantization must be '4bit' or 'none', not {self.quantization!r}")


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int


@dataclass(frozen=True)
class GateParams:
    max_eval_loss: float
    max_regression: float
    max_pairing_margin_drop: float


@dataclass(frozen=True)
class RegistryParams:
    model_name: str
    tracking_uri: str
    experiment: str
    auto_promote: bool


@dataclass(frozen=True)
class VersionParams:
    remote: str
    git_commit: bool


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
    redact: RedactParams
    validate: ValidateParams
    dataset: DatasetParams
    replay: ReplayParams
    drift: DriftParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    registry: RegistryParams
    version: VersionParams
    notify: NotifyParams
    demo: DemoParams

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
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _build(cls: type, raw: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return raw
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params.yaml'} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    missing = sorted(set(known) - set(raw))
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
