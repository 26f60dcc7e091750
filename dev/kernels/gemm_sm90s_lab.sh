#!/usr/bin/env bash
# Builds the small-M Hopper GEMM lab (make -C dev/kernels sm90s) and runs it
# on the GPU: gemm_sm90s_lab.sh [lab options, e.g. -s qwen3 -m 1,16]. VARS
# (';'-separated knob sets, default: the lab's) picks the sm90s variants,
# LOG=file keeps the output (default /tmp/gemm_sm90s_lab.log). If a kernel
# hangs, the lab's watchdog exits with 3 naming the variant, and the run is
# repeated without it (up to 3 times; gg or sm90 hanging: with -x).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
make -C "$root/dev/kernels" sm90s >&2 || exit 1
lab=$root/build/dev/gemm_sm90s_lab
vars=${VARS:-auto;kc=2;kc=4;mode=whole;f32nt=64}
log=${LOG:-/tmp/gemm_sm90s_lab.log}
extra=()
for attempt in 1 2 3 4; do
    args=()
    IFS=';' read -ra vs <<< "$vars"
    for v in "${vs[@]}"; do args+=(-v "$v"); done
    "$lab" "${args[@]}" "${extra[@]}" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 3 ] && exit "$rc"
    hung=$(grep '^WATCHDOG: variant ' "$log" | tail -1 | sed 's/^WATCHDOG: variant \([^:]*\):.*/\1/')
    if [ -z "$hung" ] || [ "$attempt" -eq 4 ]; then exit 3; fi
    if [ "$hung" = gg ] || [ "$hung" = sm90 ] || [ "$hung" = ref ]; then
        extra=(-x)
    else
        vars=$(echo ";$vars;" | sed "s/;$hung;/;/; s/^;//; s/;\$//")
    fi
    [ -z "$vars" ] && exit 3
    echo "=== variant $hung hung: running again with variants '$vars' ${extra[*]} ==="
done
