"""Workspace paths are named once (pipelines/common/paths.py) and dvc.yaml, which cannot import
them, spells the same ones: each stage's outputs there are the paths the flow reads."""

import yaml

from pipelines.common import paths
from tests.conftest import ROOT

# The outputs of the DAG's stages as the flow and the summary know them.
STAGE_OUTPUTS = {
    "validate": {paths.VALIDATED, paths.DATA_DOCS},
    "dataset": {paths.DATASET},
    "drift": {paths.DRIFT_REPORT, paths.DRIFT_HTML, paths.DRIFT_LENGTHS},
    "train": {paths.CANDIDATE_DIR, paths.TRAIN_REPORT},
    "evaluate": {paths.EVAL_REPORT},
    "gate": {paths.GATE_REPORT},
}


def declared_outputs(stage: dict) -> set[str]:
    out = set()
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            out.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


def test_every_stage_output_the_flow_reads_is_declared_in_dvc_yaml():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, expected in STAGE_OUTPUTS.items():
        assert {str(p) for p in expected} == declared_outputs(stages[name]), name


def test_the_reports_each_stage_reads_from_a_folder_lie_in_its_outputs():
    assert paths.VALIDATED_REPORT.parent == paths.VALIDATED
    assert paths.DATASET_REPORT.parent == paths.DATASET
    assert paths.NEXT_BUFFER.parent == paths.DATASET
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    for dep in (paths.BUFFER, paths.PARENT_DIR, paths.SNAPSHOTS):
        assert str(dep) in dvc_yaml  # the pinned inputs the stages read
