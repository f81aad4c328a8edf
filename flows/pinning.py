"""The cycle's pinned inputs besides the raw snapshot: the parent adapter, the replay buffer and
the retrieval index earlier cycles grew.

All are put in place before the DVC stages run and then tracked with `dvc add`, so the cycle's
git commit records exactly which adapter it continued from and which buffer it replayed.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from pipelines.common import params as params_mod
from pipelines.common.records import read_json, write_json
from registry import history
from registry import mlflow_registry as reg


def pin_parent_adapter(p: params_mod.RegistryParams, parent_dir: Path) -> str | None:
    """Copy the adapter @champion points to *now* into parent_dir; empty it when there is none.

    Moves made in the MLflow UI since the last look are recorded first, so the history shows why
    this cycle trains from the version it does. Returns the parent version (None: start fresh).
    """
    history.sync(p)
    champion = reg.resolve_alias(p, reg.CHAMPION)
    marker = parent_dir / "PARENT.json"
    pinned = read_json(marker).get("version")
    if champion is None:
        if parent_dir.exists():
            shutil.rmtree(parent_dir)
        parent_dir.mkdir(parents=True)
    elif pinned != champion.version or not (parent_dir / "adapter_config.json").exists():
        reg.download_adapter(p, champion.source, parent_dir)
    write_json(marker, {"version": champion.version if champion else None,
                        "run_id": champion.run_id if champion else None,
                        "source": champion.source if champion else None})
    return champion.version if champion else None


def pin_grown(date: dt.date, grown: Path, grown_report: Path, pinned: Path) -> None:
    """What an earlier cycle's stage grew (the dataset stage's next replay buffer, the retrieval
    stage's index) becomes this cycle's input; `grown_report`'s `cycle` says which night grew it.

    A re-run of the same date (or of an earlier one) keeps the input it had, so nothing is
    replayed or retrieved from the night being learned as if it were an earlier one.
    """
    grown_for = read_json(grown_report).get("cycle")
    pinned.parent.mkdir(parents=True, exist_ok=True)
    if grown_for and grown_for < date.isoformat() and grown.exists():
        shutil.copyfile(grown, pinned)
    elif not pinned.exists():
        pinned.touch()
