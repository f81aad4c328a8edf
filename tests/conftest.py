"""Shared fixtures: offline settings, tiny params, a tiny pre-trained base model."""

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
import pipelines  # noqa: E402,F401  (telemetry off, tldextract offline)
from pipelines import params as params_mod  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Smaller than params.yaml's defaults so each test trains in seconds; same code paths.
TINY = {
    "base": {"corpus_records": 300, "pretrain_steps": 100, "pretrain_batch_size": 8},
    "demo": {"records_per_day": 40, "days": 3},
    "validate": {"min_records": 5},
    "notify": {"on_success": False},
}


def tiny_params_dict() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    return raw


def write_tiny_params(path: Path, **overrides) -> Path:
    raw = tiny_params_dict()
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def params() -> params_mod.Params:
    return params_mod._build(params_mod.Params, tiny_params_dict(), "")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, params) -> str:
    """A tiny Llama and tokenizer, built and briefly pre-trained by the base_model stage."""
    from pipelines import base_model

    out = tmp_path_factory.mktemp("base") / "base"
    base_model.run(params.base, params.seed, out, ROOT / "data/corpus")
    return str(out)


@pytest.fixture
def replace():
    return dataclasses.replace
