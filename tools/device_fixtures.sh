#!/usr/bin/env bash
# Runs on the GPU machine (which has torch/transformers/tokenizers): makes the
# golden fixtures and the tokenizer reference ids, and
# packs them into $OUT/fixtures.tgz.
set -euxo pipefail
python3 -c "import torch, transformers, tokenizers, safetensors; print(torch.__version__, transformers.__version__, tokenizers.__version__)"
mkdir -p "$OUT/gen"
python3 tools/make_fixtures.py "$OUT/gen/fixtures" 2>&1 | tee "$OUT/fixtures.log"
python3 tools/make_tokenizer_refs.py testdata "$OUT/gen/tokenizer_refs.json"
tar czf "$OUT/fixtures.tgz" -C "$OUT/gen" .
rm -rf "$OUT/gen"
ls -la "$OUT"
