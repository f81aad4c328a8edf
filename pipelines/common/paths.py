"""Where a workspace keeps each stage's inputs and outputs, relative to its root, named once.

dvc.yaml spells the same paths for DVC (it cannot import them); tests/test_paths.py checks that
every path named here as a stage's output is the one dvc.yaml declares.
"""

from pathlib import Path

# ingest: the redacted snapshot of each night, the source's watermark and dvc.yaml's `cycle` var
SNAPSHOTS = Path("data/snapshots")
WATERMARK = Path("data/watermark.json")
CYCLE_FILE = Path("data/cycle.yaml")
# pinned inputs, put in place before the stages run
PARENT_DIR = Path("models/parent")              # the adapter @champion pointed to
BUFFER = Path("data/replay/buffer.jsonl")       # the replay buffer this cycle replays from
PAST_INDEX = Path("data/replay/index.jsonl")    # the retrieval index earlier cycles grew
# validate
VALIDATED = Path("data/validated")
VALIDATED_REPORT = VALIDATED / "report.json"
DATA_DOCS = Path("reports/data_docs")
# dataset
DATASET = Path("data/dataset")
DATASET_REPORT = DATASET / "report.json"
NEXT_BUFFER = DATASET / "buffer.jsonl"          # the buffer grown by this cycle, for the next one
# retrieval
RETRIEVAL_INDEX = Path("data/retrieval/index.jsonl")  # grown by this cycle: what evaluate retrieves from
RETRIEVAL_REPORT = Path("reports/retrieval.json")
# drift
DRIFT_REPORT = Path("reports/drift.json")
DRIFT_HTML = Path("reports/drift.html")
DRIFT_LENGTHS = Path("reports/drift_lengths.csv")  # for `dvc plots`
# train, evaluate, gate
CANDIDATE_DIR = Path("models/candidate")
TRAIN_REPORT = Path("reports/train.json")
EVAL_REPORT = Path("reports/eval.json")
GATE_REPORT = Path("reports/gate.json")
# worth (after the gate): the adapter against prompting and retrieval, the cycle's cost
WORTH_REPORT = Path("reports/worth.json")
WORTH_HTML = Path("reports/worth.html")
WORTH_CSV = Path("reports/worth.csv")           # one row per cycle, for `dvc plots`
# model_drift (after register)
MODEL_DRIFT_REPORT = Path("reports/model_drift.json")
MODEL_DRIFT_HTML = Path("reports/model_drift.html")
MODEL_DRIFT_CSV = Path("reports/model_drift.csv")  # for `dvc plots`
# the nightly flow's summary of each cycle
SUMMARY = Path("reports/summary.json")
CYCLES = Path("reports/cycles")


def snapshot_report(cycle: str) -> Path:
    """Ingest's counts for one night (versioned in git beside the snapshot)."""
    return SNAPSHOTS / f"{cycle}.report.json"


def snapshot_dvc_file(cycle: str) -> Path:
    """The .dvc file that pins a night's redacted snapshot: its md5 is the cycle's data version."""
    return SNAPSHOTS / f"{cycle}.jsonl.dvc"
