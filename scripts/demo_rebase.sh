#!/usr/bin/env bash
# `make demo-rebase`, after `make demo`: move the demo's adapter line onto a second tiny base, run
# a night on it, then roll back across the rebase and run a night on the first base again.
# Each step is the command a person would type; `nightshift COMMAND --help` explains each.
set -euo pipefail
NIGHTSHIFT=${NIGHTSHIFT:-.venv/bin/nightshift}
WS=${1:-demo}
step() {  # a heading, with the seconds the step before it took
    [ -z "${started:-}" ] || echo "($((SECONDS - started)) s)"
    started=$SECONDS
    printf '\n== %s ==\n' "$*"
}
champion_base() {  # the base the @champion version was trained on, from `nightshift status --json`
    "$NIGHTSHIFT" status --workspace "$WS" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
champion = s["aliases"].get("champion")
print(next((v["base_model"] or "" for v in s["versions"] if v["version"] == champion), ""))'
}

if [ ! -f "$WS/params.yaml" ]; then
    echo "No demo workspace at $WS: run \`make demo\` first." >&2
    exit 1
fi
first_base=$(champion_base)

step "A second tiny base: 3 layers instead of 2, another seed, 500 pre-training steps (about a minute on 2 idle cores)"
if [ -d "$WS/models/base2" ]; then
    echo "$WS/models/base2 is there already"
else
    "$NIGHTSHIFT" base build "$WS/models/base2" --workspace "$WS" --num-layers 3 --pretrain-steps 500 --seed 7
fi

step "Rebase: a fresh adapter on it from the versioned data, gated against @champion in bits per byte"
"$NIGHTSHIFT" rebase --workspace "$WS" --base "$WS/models/base2" --reason "demo: a deeper base"
echo "The report: $WS/reports/rebase.html"
if [ "$(champion_base)" != "models/base2" ]; then
    echo "The rebase did not become @champion (see $WS/reports/rebase.html): the line stays on $first_base." >&2
    exit 1
fi
"$NIGHTSHIFT" status --workspace "$WS"

step "The next night continues the rebased version on the new base"
"$NIGHTSHIFT" demo --workspace "$WS" --cycles 1

step "Roll back across the rebase: the first base and its adapter return together"
while [ "$(champion_base)" = "models/base2" ]; do
    "$NIGHTSHIFT" rollback --workspace "$WS" --reason "demo: back to the first base"
done
"$NIGHTSHIFT" status --workspace "$WS"

step "The next night trains on the first base again"
"$NIGHTSHIFT" demo --workspace "$WS" --cycles 1
echo "($((SECONDS - started)) s)"
