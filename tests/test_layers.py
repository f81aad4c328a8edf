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


def lint_with_import(tmp_path, module: str, late_import: str) -> subprocess.CompletedProcess:
    """`lint-imports` on a copy of the tree where `module` (a path) gained `late_import` inside a
    function: contracts count imports anywhere in a module, not only at its top."""
    root = copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n\ndef _late():\n    {late_import}  # noqa\n")
    return lint_imports(root)


def test_a_stage_importing_a_flow_breaks_the_layers(tmp_path):
    result = lint_with_import(tmp_path, "pipelines/model/gate.py", "from flows import nightly")

    assert result.returncode != 0
    assert "pipelines.model.gate -> flows.nightly" in result.stdout


def test_a_stage_importing_another_stage_breaks_their_independence(tmp_path):
    result = lint_with_import(tmp_path, "pipelines/data/drift.py", "from pipelines.data import dataset")

    assert result.returncode != 0
    assert "A stage never reaches into another stage BROKEN" in " ".join(result.stdout.split())


def test_an_import_circle_between_modules_is_reported(tmp_path):
    redact = ROOT / "pipelines/privacy/redact.py"
    assert "from pipelines.privacy import residual, subjects" in redact.read_text()  # redact uses the residual scan

    result = lint_with_import(tmp_path, "pipelines/privacy/residual.py", "from pipelines.privacy import redact")

    assert result.returncode != 0
    assert "No cycles are allowed in pipelines.privacy" in result.stdout


def test_a_helper_importing_a_stage_breaks_the_helpers_contracts(tmp_path):
    result = lint_with_import(tmp_path, "pipelines/common/records.py", "from pipelines.data import ingest")

    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "Helpers serve the stages and never import them BROKEN" in out
    assert "The common helpers are the bottom layer: they import no other part of the project BROKEN" in out
