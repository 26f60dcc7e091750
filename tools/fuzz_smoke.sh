#!/usr/bin/env bash
# Fuzz smoke test: builds each libFuzzer target in fuzz/ with ASan/UBSan and
# runs it for a few seconds over its seed corpus fuzz/corpus/<name>/.
# Fails if a target does not build or finds a crash, leak or timeout.
#
#   tools/fuzz_smoke.sh [seconds per target, default 20]
#
# New inputs the fuzzer finds go to build-fuzz/corpus-<name>/ (not committed);
# crash reproducers to build-fuzz/<name>-crash-*.
set -u
cd "$(dirname "$0")/.."

secs=${1:-20}
case $secs in ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac
CC=${FUZZ_CC:-clang}
FLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
LIBS="-lcjson -lpcre2-8 -lutf8proc -lm -pthread"
out=build-fuzz
mkdir -p "$out"
mapfile -t lib_src < <(find src -name '*.c' | sort)

targets=(safetensors)
[ -f fuzz/fuzz_config.c ] && targets+=(config)

fail=0
for name in "${targets[@]}"; do
    bin=$out/fuzz_$name
    echo "== $name: building $bin from fuzz/fuzz_$name.c + ${#lib_src[@]} files under src/"
    if ! $CC $FLAGS -o "$bin" "fuzz/fuzz_$name.c" "${lib_src[@]}" $LIBS; then
        echo "== $name: BUILD FAILED"
        fail=1
        continue
    fi
    seeds=fuzz/corpus/$name
    scratch=$out/corpus-$name
    mkdir -p "$scratch"
    [ -d "$seeds" ] || { echo "== $name: no seed corpus at $seeds, starting empty"; seeds=; }
    log=$out/$name.log
    echo "== $name: fuzzing for ${secs}s over ${seeds:-(no seeds)} (log: $log)"
    # -timeout: one input taking over 10 s counts as a hang; -rss_limit_mb: a
    # header that makes us allocate without bound counts as a failure.
    if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/$name-" "$scratch" $seeds >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "== $name: ok, ${runs:-?} inputs, no crash"
    else
        echo "== $name: FAILED; last lines of $log:"
        tail -40 "$log" | sed 's/^/    /'
        fail=1
    fi
done

if [ $fail -ne 0 ]; then
    echo "fuzz smoke: FAILED"
    exit 1
fi
echo "fuzz smoke: all ${#targets[@]} target(s) ok"
