"""dvc.yaml's code deps are complete: every project module a stage's command imports, directly or
through other modules, at the top or inside a function, lies inside a dep of that stage. A stage
whose deps missed an import would be called up to date by DVC after that module changed."""

import ast
import shutil
from pathlib import Path

import yaml

from tests.conftest import ROOT

PACKAGES = ("pipelines", "flows", "registry")


def module_file(root: Path, dotted: str) -> Path | None:
    """The file of a project module (or package) by dotted name, None if not the project's."""
    if dotted.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(root: Path, path: Path) -> set[str]:
    """Dotted names of the project modules `path` imports anywhere in its body, with the
    packages above each (importing a.b.c runs a/__init__.py and a/b/__init__.py)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c`: c is a module of a.b or a name in it; both count.
            found = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in found:
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in names if module_file(root, n)}


def import_closure(root: Path, module: str) -> set[Path]:
    """Every project file that running `python -m module` may import."""
    seen: set[str] = set()
    todo = [p for p in _with_packages(module)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(root, module_file(root, name)) - seen)
    return {module_file(root, n) for n in seen}


def _with_packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def undeclared_imports(root: Path) -> dict[str, list[str]]:
    """Per dvc.yaml stage: the non-empty project files its command imports that none of its
    deps (a file, or a folder holding it) covers. Empty __init__.py files cannot change what a
    stage computes; one that gains code must be declared like any module."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    missing: dict[str, list[str]] = {}
    for name, stage in stages.items():
        command = " ".join(stage["cmd"].split())
        assert command.startswith("python -m "), f"stage {name}: not a `python -m` command"
        module = command.split()[2]
        deps = [Path(d) for d in stage.get("deps", []) if "${" not in d]
        for file in sorted(import_closure(root, module)):
            rel = file.relative_to(root)
            if not file.read_text().strip():
                continue
            if not any(rel == dep or dep in rel.parents for dep in deps):
                missing.setdefault(name, []).append(str(rel))
    return missing


def test_every_module_a_stage_imports_is_inside_its_deps():
    assert undeclared_imports(ROOT) == {}


def test_a_stage_missing_an_imported_folder_is_reported(tmp_path):
    """The check can fail: drop pipelines/privacy from evaluate's deps (evaluate scans its
    generations with the residual scan) and the files it imports from there are named."""
    for part in ("pipelines", "dvc.yaml"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    dvc_yaml = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    dvc_yaml["stages"]["evaluate"]["deps"].remove("pipelines/privacy")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))

    missing = undeclared_imports(tmp_path)

    assert list(missing) == ["evaluate"]
    assert "pipelines/privacy/residual.py" in missing["evaluate"]


def test_an_import_added_inside_a_function_is_reported(tmp_path):
    """The check reads imports anywhere in a module, not only at its top: a gate that starts to
    import the training module inside a function is flagged for gate's deps."""
    for part in ("pipelines", "dvc.yaml"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    gate = tmp_path / "pipelines/model/gate.py"
    gate.write_text(gate.read_text() + "\n\ndef _late():\n    from pipelines.model import train\n")

    missing = undeclared_imports(tmp_path)

    assert missing == {"gate": ["pipelines/model/train.py"]}
