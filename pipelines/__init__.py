"""nightshift's stages: one module each, a plain `run(...)` plus a thin `main()` for dvc.yaml."""

import os

# Offline by default: no telemetry, no hub, no public-suffix-list download. Each can be
# overridden from the environment by a user who has network.
for _name, _value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",  # empty: use tldextract's bundled snapshot
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

import logging  # noqa: E402

# bitsandbytes tries an optional kernel from the Hugging Face hub on CPUs with AVX512-BF16 and
# warns when it cannot have it; offline it always cannot, and its built-in CPU kernels are used.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
