#!/usr/bin/env bash
# `make demo-serve`, after `make demo`: close the loop. serve-model answers a scripted user's
# questions with @champion and logs them with the user's feedback; tonight's cycle pulls them
# (with the sample days not pulled yet), the server follows the new @champion by itself, and
# `nightshift status` shows which version served how many answers.
set -euo pipefail
NIGHTSHIFT=${NIGHTSHIFT:-.venv/bin/nightshift}
PYTHON=${PYTHON:-.venv/bin/python}
WS=${1:-demo}
PORT=${PORT:-8765}
URL="http://127.0.0.1:$PORT"
step() {  # a heading, with the seconds the step before it took
    [ -z "${started:-}" ] || echo "($((SECONDS - started)) s)"
    started=$SECONDS
    printf '\n== %s ==\n' "$*"
}
version() {  # the version answering now, from GET /health
    "$PYTHON" -c 'import sys, httpx; print(httpx.get(sys.argv[1] + "/health").json()["version"] or "")' "$URL"
}

if [ ! -f "$WS/params.yaml" ]; then
    echo "No demo workspace at $WS: run \`make demo\` first." >&2
    exit 1
fi

step "serve-model on $URL: the base model with @champion, following the registry"
"$NIGHTSHIFT" serve-model --workspace "$WS" --port "$PORT" > "$WS/serve-model.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    [ -n "$(version 2>/dev/null)" ] && break
    kill -0 $server 2>/dev/null || { cat "$WS/serve-model.log"; exit 1; }
    sleep 1
done
before=$(version)
echo "answering with version $before (server log: $WS/serve-model.log)"

step "A scripted user asks 30 questions and rates each answer"
"$PYTHON" scripts/demo_client.py --url "$URL" --questions 30

step "Tonight's cycle pulls what the server answered today, with the feedback, redacted"
"$NIGHTSHIFT" run --workspace "$WS" --date "$(date -u +%F)"

step "The server follows the new @champion within serving.poll_seconds"
for _ in $(seq 30); do
    [ "$(version)" != "$before" ] && break
    sleep 1
done
echo "answering with version $(version) (before the cycle: $before)"
"$PYTHON" scripts/demo_client.py --url "$URL" --questions 1 --no-feedback

step "Which version served how many answers"
"$NIGHTSHIFT" status --workspace "$WS"
echo "($((SECONDS - started)) s)"
