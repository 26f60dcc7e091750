#!/usr/bin/env bash
# Writes N JSONL prompts of W words each, cut from the shipped model's
# held-out text (wrapping around), for throughput and memory runs of
# `lightmoe generate --prompts`:
#   bash bench/make_prompts.sh 4000 100 > /tmp/p4k.jsonl
set -euo pipefail
n=${1:?usage: make_prompts.sh N WORDS}; w=${2:?usage: make_prompts.sh N WORDS}
cd "$(dirname "$0")/.."
tr -s ' \n\t' '   ' < models/sotu-moe/heldout.txt | awk -v n="$n" -v w="$w" '
{ m = split($0, words, " ") }
END {
    k = 1
    for (i = 0; i < n; i++) {
        s = ""
        for (j = 0; j < w; j++) { s = s (j ? " " : "") words[k]; k = k % m + 1 }
        gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s)
        printf "{\"prompt\": \"%s\"}\n", s
    }
}'
