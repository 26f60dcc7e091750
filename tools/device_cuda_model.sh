#!/usr/bin/env bash
# The shipped model on the GPU against the CPU: perplexity over the held-out
# text, greedy continuations of 200 prompts, and the logits of one prompt
# (relative L2). Carry `.devbin` (lightmoe, p200.jsonl) and `.deps`.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/lmdeps "$OUT"
for f in .deps/*.deb; do dpkg -x "$f" /tmp/lmdeps; done
export LD_LIBRARY_PATH=/tmp/lmdeps/usr/lib/x86_64-linux-gnu:/tmp/lmdeps/lib/x86_64-linux-gnu
B=./.devbin/lightmoe
for d in cpu cuda; do
    echo "### perplexity, $d"
    /usr/bin/time -f "%e s" $B perplexity --file models/sotu-moe/heldout.txt --device $d 2>&1 | grep -E "^perplexity|^[0-9.]+ s$"
    /usr/bin/time -f "%e s" $B generate --prompts .devbin/p200.jsonl -n 32 --device $d --out "$OUT/gen_$d.jsonl" 2>&1 | tail -2
    $B logits --ids 52,3187,1123,268,260,4004,328,1255,12,284,333,1240,1071,83,672,442,14 --device $d --out "$OUT/logits_$d.f32" 2>&1 | tail -1
done
python3 - "$OUT" <<'PY'
import json, sys, numpy as np
o = sys.argv[1]
a = [json.loads(l) for l in open(o + "/gen_cpu.jsonl")]
b = [json.loads(l) for l in open(o + "/gen_cuda.jsonl")]
same = sum(x["text"] == y["text"] for x, y in zip(a, b))
print(f"greedy continuations identical: {same} of {len(a)}")
la = np.fromfile(o + "/logits_cpu.f32", dtype=np.float32); lb = np.fromfile(o + "/logits_cuda.f32", dtype=np.float32)
print(f"logits rel L2 cuda vs cpu: {np.linalg.norm(la - lb) / np.linalg.norm(la):.3g} over {la.size} values")
PY
echo "### where the CPU and CUDA greedy texts part: transformers' top-2 margin there"
python3 tools/greedy_margins.py .devbin/p200.jsonl "$OUT/gen_cpu.jsonl" "$OUT/gen_cuda.jsonl" -n 32 2>&1 | grep -v Warning | tail -40
