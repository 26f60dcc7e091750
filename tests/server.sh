#!/usr/bin/env bash
# lightmoe serve, end to end over loopback: the official OpenAI client
# (tests/server/client.mjs), raw HTTP error cases, a full queue, hang-ups and
# slow clients (tests/server/raw.mjs), shutdown on SIGTERM with a stream in
# flight: finished, or cancelled by a second SIGTERM (tests/server/shutdown.mjs).
# Builds nothing: uses $LIGHTMOE_BIN, else $BUILD/lightmoe. The openai package
# comes from data/npm (make testdata); without it the client tests are skipped
# and the others run.
set -u
cd "$(dirname "$0")/.."
export LIGHTMOE_BIN=${LIGHTMOE_BIN:-${BUILD:-build}/lightmoe}
export MODEL=${LIGHTMOE_MODEL:-models/sotu-moe}
export API_KEY=test-key-$$ TIMEOUT=2
command -v node >/dev/null || { echo "SKIP: node is not installed"; exit 77; }
if ! "$LIGHTMOE_BIN" serve --help >/dev/null 2>&1; then
    echo "FAIL: $LIGHTMOE_BIN has no 'serve' command"; exit 1
fi
T=$(mktemp -d)
cleanup() {  # the servers still running, if a case failed early
    local p; for p in $(jobs -p); do kill -9 "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
fails=0

# start NAME ARGS...: a server on a free port; sets PORT_NAME and PID_NAME
start() {
    local name=$1; shift
    "$LIGHTMOE_BIN" serve -m "$MODEL" --port 0 --port-file "$T/$name.port" "$@" >"$T/$name.log" 2>&1 &
    local pid=$!
    printf -v "PID_$name" %s "$pid"
    for _ in $(seq 300); do  # up to 30 s
        if [ -s "$T/$name.port" ]; then
            local port; port=$(cat "$T/$name.port")
            if node -e "fetch('http://127.0.0.1:$port/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"; then
                printf -v "PORT_$name" %s "$port"
                return 0
            fi
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL: server $name did not come up:"; sed 's/^/    /' "$T/$name.log"; exit 1
}

# exited PID: whether it ends within 10 s
exited() {
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}

# run NAME node SCRIPT: its output, counted as one failure if it fails
run() {
    local name=$1; shift
    echo "== $name"
    "$@"
    local rc=$?
    [ $rc -eq 0 ] || { fails=$((fails + 1)); echo "FAIL: $name exited $rc"; }
}

start A --api-key "$API_KEY" --max-body 64K --max-seqs 16
start B --max-seqs 1 --max-queue 0 --timeout "$TIMEOUT"
export PORT=$PORT_A PORT_B

# Chat needs the model's chat template. Once the Jinja interpreter is in the
# tree the shipped model must have one; before that, chat answers 400.
CHAT=absent
if [ -f src/template/jinja.c ] || [ -f "$MODEL/chat_template.jinja" ] ||
        grep -qs '"chat_template"' "$MODEL/tokenizer_config.json"; then
    CHAT=require
fi
export CHAT

if [ -f data/npm/node_modules/openai/package.json ]; then
    run "OpenAI client" timeout 60 node tests/server/client.mjs
else
    echo "SKIP: OpenAI client tests (the openai npm package is not in data/npm: run 'make testdata')"
fi
run "raw HTTP" timeout 60 node tests/server/raw.mjs
# stopped NAME: server NAME exits 0 by itself, saying "stopped"
stopped() {
    local pid; pid=PID_$1; pid=${!pid}
    if ! exited "$pid"; then
        echo "FAIL: server $1 still runs 10 s after SIGTERM"; fails=$((fails + 1)); return
    fi
    wait "$pid"
    local rc=$?
    if [ $rc -ne 0 ]; then echo "FAIL: server $1 exited $rc after SIGTERM"; fails=$((fails + 1))
    elif ! tail -1 "$T/$1.log" | grep -q "stopped"; then echo "FAIL: server $1's last line is not 'stopped'"; fails=$((fails + 1))
    else echo "ok   server $1: exit 0, 'stopped'"; fi
}
SERVER_PID=$PID_A run "shutdown: SIGTERM finishes the requests in flight" timeout 60 node tests/server/shutdown.mjs
stopped A
SERVER_PID=$PID_B PORT=$PORT_B API_KEY= SIGNALS=2 run "shutdown: a second SIGTERM cancels them" \
    timeout 60 node tests/server/shutdown.mjs
stopped B

if [ $fails -gt 0 ]; then
    for n in A B; do echo "server $n's log:"; tail -10 "$T/$n.log" | sed 's/^/    /'; done
    exit 1
fi
