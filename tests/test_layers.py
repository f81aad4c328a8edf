"""The layers hold: import-linter's contracts (pyproject.toml [tool.importlinter]) are kept, and a
module that breaks one is reported, so the contracts cannot pass by checking nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the project tree at `root` (its pyproject.toml's contracts)."""
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def copy_tree(dst: Path) -> Path:
    for part in ("flows", "pipelines", "registry", "pyproject.toml"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst / part)
    return dst


def test_the_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_stage_importing_a_flow_breaks_the_layers(tmp_path):
    root = copy_tree(tmp_path)
    gate = root / "pipelines/model/gate.py"
    gate.write_text(gate.read_text() + "\n\ndef _late():\n    from flows import nightly  # noqa\n")

    result = lint_imports(root)

    assert result.returncode != 0
    assert "pipelines.model.gate -> flows.nightly" in result.stdout


def test_a_stage_importing_another_stage_breaks_their_independence(tmp_path):
    root = copy_tree(tmp_path)
    drift = root / "pipelines/data/drift.py"
    drift.write_text(drift.read_text() + "\nfrom pipelines.data import dataset  # noqa\n")

    result = lint_imports(root)

    assert result.returncode != 0
    assert "A stage never reaches into another stage BROKEN" in " ".join(result.stdout.split())


def test_an_import_circle_between_modules_is_reported(tmp_path):
    root = copy_tree(tmp_path)
    redact = root / "pipelines/privacy/redact.py"
    assert "from pipelines.privacy import residual, subjects" in redact.read_text()  # redact uses the residual scan
    residual = root / "pipelines/privacy/residual.py"
    residual.write_text(residual.read_text() + "\n\ndef _late():\n    from pipelines.privacy import redact  # noqa\n")

    result = lint_imports(root)

    assert result.returncode != 0
    assert "No cycles are allowed in pipelines.privacy" in result.stdout


def test_a_helper_importing_a_stage_breaks_the_helpers_contracts(tmp_path):
    root = copy_tree(tmp_path)
    records = root / "pipelines/common/records.py"
    records.write_text(records.read_text() + "\n\ndef _late():\n    from pipelines.data import ingest  # noqa\n")

    result = lint_imports(root)

    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "Helpers serve the stages and never import them BROKEN" in out
    assert "The common helpers are the bottom layer: they import no other part of the project BROKEN" in out
