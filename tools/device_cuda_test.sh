#!/usr/bin/env bash
# CUDA executor on the GPU machine: op tests against the reference executor,
# the golden models through the CUDA executor, and compute-sanitizer's
# memcheck over the op tests. Built here (nvcc 13, CUDA_ARCHS default);
# carry `.devbin` (build/tests/test_ops, test_golden, lightmoe copied there) and `.deps` (apt-get download libcjson1 libpcre2-8-0
# libutf8proc2 into .deps/): the machine has none of our Debian libraries.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/lmdeps "$OUT" build && cp .devbin/lightmoe build/  # test_golden also runs the CLI
for f in .deps/*.deb; do dpkg -x "$f" /tmp/lmdeps; done
export LD_LIBRARY_PATH=/tmp/lmdeps/usr/lib/x86_64-linux-gnu:/tmp/lmdeps/lib/x86_64-linux-gnu
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "### op tests, cuda against ref"
LM_OPS_EXECS=cuda ./.devbin/test_ops >"$OUT/ops.log" 2>&1; echo "rc=$?"
tail -22 "$OUT/ops.log"
grep -m5 FAIL "$OUT/ops.log"
echo "### golden models through the cuda executor"
LM_GOLDEN_EXECS=cuda ./.devbin/test_golden >"$OUT/golden.log" 2>&1; echo "rc=$?"
grep -E "cuda executor|checks|FAIL" "$OUT/golden.log" | head -12
echo "### compute-sanitizer memcheck, op tests"
LM_OPS_EXECS=cuda timeout 400 compute-sanitizer --tool memcheck --error-exitcode 3 ./.devbin/test_ops >"$OUT/memcheck.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|Invalid|checks" "$OUT/memcheck.log" | head -8
