#!/usr/bin/env bash
# Builds the Hopper GEMM lab (make -C dev/kernels sm90) and runs it on the
# GPU: gemm_sm90_lab.sh [lab options, e.g. -m 4096 -L 4096]. VARS=1,4,5,...
# picks the variants (default: the lab's), LOG=file keeps the output
# (default /tmp/gemm_sm90_lab.log). The lab's smoke section runs every
# variant first; if one hangs, the lab's watchdog exits with 3 naming it,
# and the run is repeated without that variant (up to 3 times).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
make -C "$root/dev/kernels" sm90 >&2 || exit 1
lab=$root/build/dev/gemm_sm90_lab
vars=${VARS:-1,4,5,6,7,8,9,10}
log=${LOG:-/tmp/gemm_sm90_lab.log}
for attempt in 1 2 3 4; do
    "$lab" -v "$vars" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 3 ] && exit "$rc"
    hung=$(grep '^WATCHDOG:' "$log" | grep -o 'sm90-v[0-9]*' | tail -1 | sed 's/sm90-v//')
    if [ -z "$hung" ] || [ "$attempt" -eq 4 ]; then exit 3; fi
    vars=$(echo ",$vars," | sed "s/,$hung,/,/; s/^,//; s/,\$//")
    [ -z "$vars" ] && exit 3
    echo "=== sm90-v$hung hung: running again with variants $vars ==="
done
