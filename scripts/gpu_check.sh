#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step functions run through `bash -c NAME` under `timeout`
# Every GPU check in one call, each step with its own time budget, results under $OUT.
#
#   scripts/gpu_check.sh                  on a GPU machine (one H100 or H200): the real checks
#   scripts/gpu_check.sh --dry-run        on a CPU: the same steps with tiny shapes, in minutes
#   scripts/gpu_check.sh --steps cycle    only the named steps (comma-separated), e.g. to rerun one
#
# Steps, in order (docs/TRAINING.md says what each figure means):
#   install    the wheels in .whl/ (scripts/gpu_wheels.sh fetches them) into $GPU_CHECK_SITE
#   bench-1b   benchmarks/train_bench.py, Llama-3.2-1B shape: project path vs the Hugging Face default
#   bench-8b   the same on the Llama-3.1-8B shape, with gradient checkpointing in both paths
#   cycle      one nightly cycle through the flow (ingest to register) on a random ~0.5B Llama
#   pytest     pytest -m gpu
#
# Each step runs under `timeout` with its budget (GPU_CHECK_BUDGET_<STEP>, seconds, e.g.
# GPU_CHECK_BUDGET_BENCH_8B=200), cut to what is left of GPU_CHECK_TOTAL so that the whole run
# ends in time. A step that fails or runs out of time does not stop the others.
#
# Files under $OUT (default: a new temporary folder), at most 8, none in a subfolder:
#   gpu_check.json      per step: status (ok, failed, timeout, skipped), seconds, budget, reason;
#                       the device, the versions of the libraries that matter
#   gpu_check.log       every step's output
#   bench_1b.json       train_bench's result (in a dry run, of the tiny shape)
#   bench_8b.json       likewise
#   cycle_summary.json  the cycle's reports/summary.json: status, stage timings
#   cycle_params.yaml   the parameters the cycle ran with
#   pytest_gpu.xml      the JUnit report of pytest -m gpu
#
# Exit status: 0 when no step failed or ran out of time (skipped steps are not failures), else 1.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

ALL_STEPS="install bench-1b bench-8b cycle pytest"
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
STEPS=$ALL_STEPS
usage() { sed -n '3,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --steps) [ $# -ge 2 ] || { echo "--steps needs a value" >&2; exit 2; }; STEPS=${2//,/ }; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for s in $STEPS; do
    case " $ALL_STEPS " in *" $s "*) ;; *) echo "gpu_check: unknown step $s (steps: $ALL_STEPS)" >&2; exit 2 ;; esac
done

PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
RESULTS=$OUT/.steps.jsonl   # one line per step; folded into gpu_check.json at the end
: >"$LOG"
: >"$RESULTS"
WORK=$(mktemp -d -t gpu_check_work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# A randomly initialised 8B checkpoint is 16 GB: write it to memory where there is room for it.
if [ "$DRY_RUN" != 1 ] && [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -gt 41943040 ]; then
    export TMPDIR=/dev/shm
fi

if [ "$DRY_RUN" = 1 ]; then
    TOTAL=${GPU_CHECK_TOTAL:-600}
    declare -A BUDGET=([install]=60 [bench-1b]=120 [bench-8b]=120 [cycle]=420 [pytest]=120)
else
    # One device call runs at most 600 s, and a lease is 15 minutes with the machine's start:
    # 480 s leaves room to rerun a step or two (--steps) in a second call.
    TOTAL=${GPU_CHECK_TOTAL:-480}
    declare -A BUDGET=([install]=45 [bench-1b]=90 [bench-8b]=150 [cycle]=120 [pytest]=75)
fi
for s in $ALL_STEPS; do
    var=GPU_CHECK_BUDGET_$(echo "$s" | tr 'a-z-' 'A-Z_')
    [ -n "${!var:-}" ] && BUDGET[$s]=${!var}
done
START=$(date +%s)

log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$LOG"; }

# record STEP STATUS SECONDS BUDGET REASON
record() {
    "$PYTHON" - "$@" >>"$RESULTS" <<'EOF'
import json, sys
step, status, seconds, budget, reason = sys.argv[1:6]
print(json.dumps({"step": step, "status": status, "seconds": int(seconds), "budget": int(budget),
                  "reason": reason or None}))
EOF
}

# run_step STEP FUNCTION: the function under `timeout` with the step's budget (cut to what is left
# of TOTAL); its output goes to the log. Status: ok, failed (exit status), timeout, or skipped (the
# function exits 3 after printing the reason as its last line).
run_step() {
    local step=$1 fn=$2 left budget started rc status reason elapsed
    case " $STEPS " in *" $step "*) ;; *) return 0 ;; esac
    left=$((TOTAL - ($(date +%s) - START)))
    budget=${BUDGET[$step]}
    [ "$left" -lt "$budget" ] && budget=$left
    if [ "$budget" -lt 5 ]; then
        log "$step: skipped, the run's total budget (${TOTAL}s) is spent"
        record "$step" skipped 0 0 "the run's total budget (${TOTAL}s) was spent before this step"
        return 0
    fi
    log "$step: starting, budget ${budget}s"
    started=$(date +%s)
    # The step's function runs in a child bash (exported), so `timeout` can end it and its children.
    timeout --kill-after=15 "$budget" bash -c "$fn" >"$WORK/$step.log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - started))
    cat "$WORK/$step.log" >>"$LOG"
    reason=""
    case $rc in
        0) status=ok ;;
        3) status=skipped; reason=$(grep -v '^\s*$' "$WORK/$step.log" | tail -n 1) ;;
        124|137) status=timeout; reason="ran out of its ${budget}s budget" ;;
        *) status=failed; reason="exit status $rc: $(grep -v '^\s*$' "$WORK/$step.log" | tail -n 1 | cut -c1-300)" ;;
    esac
    log "$step: $status in ${elapsed}s${reason:+ ($reason)}"
    record "$step" "$status" "$elapsed" "$budget" "$reason"
}

# ---- the steps (each runs in its own bash: everything it uses is exported) ----
export ROOT OUT WORK PYTHON DRY_RUN
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
export SITE
if [ -d "$SITE" ]; then  # installed by an earlier call on the same machine
    export PYTHONPATH="$PYTHONPATH:$SITE" PATH="$SITE/bin:$PATH"
fi

step_install() {
    shopt -s nullglob
    local wheels=("$ROOT"/.whl/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "no wheels in .whl/ (scripts/gpu_wheels.sh fetches them): the environment is used as it is"
        exit 3
    fi
    echo "installing ${#wheels[@]} wheels into $SITE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}"
}
export -f step_install

# bench SHAPE OUTFILE [train_bench options]
bench() {
    local shape=$1 out=$2
    shift 2
    "$PYTHON" benchmarks/train_bench.py --shape "$shape" --out "$OUT/$out" "$@"
}
export -f bench

step_bench_1b() {
    if [ "$DRY_RUN" = 1 ]; then
        bench tiny bench_1b.json --batch-size 4 --max-length 128 --warmup-steps 1 --steps 3
    else
        bench llama-3.2-1b bench_1b.json --peak-tflops "${GPU_CHECK_PEAK_TFLOPS:-989}"
    fi
}
export -f step_bench_1b

step_bench_8b() {
    # 8B with 4 x 2048-token padded batches does not fit 80 GB without activation checkpointing.
    if [ "$DRY_RUN" = 1 ]; then
        bench tiny bench_8b.json --batch-size 4 --max-length 128 --warmup-steps 1 --steps 3 \
            --gradient-checkpointing
    else
        bench llama-3.1-8b bench_8b.json --gradient-checkpointing --peak-tflops "${GPU_CHECK_PEAK_TFLOPS:-989}"
    fi
}
export -f step_bench_8b

# The cycle needs the orchestration and data libraries too; what is missing is named, and the
# step is skipped rather than failed (they may not fit in what can travel to the GPU machine).
CYCLE_MODULES="prefect dvc mlflow great_expectations presidio_analyzer presidio_anonymizer spacy datasketch detect_secrets faker apprise sqlalchemy pydantic bitsandbytes"
export CYCLE_MODULES

step_cycle() {
    local missing
    missing=$("$PYTHON" - <<'EOF'
import importlib.util, os
print(" ".join(m for m in os.environ["CYCLE_MODULES"].split() if importlib.util.find_spec(m) is None))
EOF
)
    if [ -n "$missing" ]; then
        echo "the cycle's dependencies are missing here: $missing (scripts/gpu_wheels.sh says what fits in .whl/)"
        exit 3
    fi
    local ws=$WORK/workspace
    "$PYTHON" -m flows.cli init "$ws" || exit 1
    # Overrides of the workspace's params.yaml: the base is a random Llama of the size wanted,
    # pre-trained only a few steps (the cycle's path is measured, not its quality).
    "$PYTHON" - "$ws/params.yaml" <<'EOF' || exit 1
import os, sys, yaml
path = sys.argv[1]
raw = yaml.safe_load(open(path))
if os.environ["DRY_RUN"] == "1":  # the tiny default shape, trained briefly: a CPU does it in a minute
    over = {"base_model": {"corpus_records": 200, "pretrain_steps": 20, "pretrain_batch_size": 8},
            "demo": {"days": 1, "records_per_day": 40},
            "nightly": {"min_new_examples": 10},
            "evaluate": {"generation_examples": 4, "max_new_tokens": 16, "replay_examples": 16}}
else:  # ~0.5B parameters: 20 layers of width 1536 (12 heads, 4 KV heads), SwiGLU 4096
    over = {"base_model": {"hidden_size": 1536, "intermediate_size": 4096, "num_layers": 20,
                           "num_heads": 12, "num_kv_heads": 4, "vocab_size": 8192,
                           "corpus_records": 1000, "pretrain_steps": 30, "pretrain_batch_size": 16,
                           "pretrain_learning_rate": 0.0003},
            "demo": {"days": 1, "records_per_day": 150},
            "train": {"learning_rate": 0.0002, "max_steps": 40},
            "evaluate": {"generation_examples": 8}}
over.setdefault("notify", {})["on_success"] = False
over.setdefault("version", {})["git_commit"] = True
for section, values in over.items():
    raw[section].update(values)
with open(path, "w") as f:
    yaml.safe_dump(raw, f, sort_keys=False)
EOF
    cp "$ws/params.yaml" "$OUT/cycle_params.yaml"
    local rc=0
    "$PYTHON" -m flows.cli demo --workspace "$ws" --cycles 1 || rc=$?
    if [ -f "$ws/reports/summary.json" ]; then
        cp "$ws/reports/summary.json" "$OUT/cycle_summary.json"
    fi
    exit "$rc"
}
export -f step_cycle

step_pytest() {
    local files
    # The modules that hold gpu tests (collecting the whole suite would import every library).
    files=$(grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')
    # shellcheck disable=SC2086  # one word per file
    "$PYTHON" -m pytest -m gpu -p no:cacheprovider -rs --junitxml="$OUT/pytest_gpu.xml" $files
}
export -f step_pytest

# ---- run ----
log "mode: $([ "$DRY_RUN" = 1 ] && echo dry run || echo GPU), steps: $STEPS, total budget ${TOTAL}s, OUT=$OUT"
run_step install step_install
if [ -d "$SITE" ]; then
    export PYTHONPATH="$PYTHONPATH:$SITE" PATH="$SITE/bin:$PATH"
fi
run_step bench-1b step_bench_1b
run_step bench-8b step_bench_8b
run_step cycle step_cycle
run_step pytest step_pytest

"$PYTHON" - "$RESULTS" "$OUT/gpu_check.json" "$DRY_RUN" "$TOTAL" "$(($(date +%s) - START))" <<'EOF'
import importlib.metadata as md, json, platform, sys
results, out, dry_run, total, seconds = sys.argv[1:6]
steps = [json.loads(line) for line in open(results) if line.strip()]
versions = {}
for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "prefect", "dvc", "mlflow"):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
device = None
try:
    import torch
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = {"name": props.name, "memory_bytes": props.total_memory, "cuda": torch.version.cuda}
except Exception as exc:  # the summary is written whatever happened
    device = {"error": repr(exc)}
summary = {"dry_run": dry_run == "1", "total_budget": int(total), "seconds": int(seconds),
           "python": platform.python_version(), "device": device, "versions": versions,
           "ok": all(s["status"] in ("ok", "skipped") for s in steps), "steps": steps}
with open(out, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
for s in steps:
    print(f"  {s['step']:9s} {s['status']:8s} {s['seconds']:4d}s / {s['budget']}s  {s['reason'] or ''}")
sys.exit(0 if summary["ok"] else 1)
EOF
rc=$?
rm -f "$RESULTS"
log "done in $(($(date +%s) - START))s; results in $OUT"
exit $rc
