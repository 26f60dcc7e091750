#!/usr/bin/env bash
# Fuzz smoke test: builds each libFuzzer target in fuzz/ with ASan/UBSan and
# runs it for a few seconds over its seed corpus fuzz/corpus/<name>/.
# Fails if a target does not build or finds a crash, leak or timeout.
#
#   tools/fuzz_smoke.sh [seconds per target, default 20] [target ...]
#
# New inputs the fuzzer finds go to build-fuzz/corpus-<name>/ (not committed);
# crash reproducers to build-fuzz/<name>-crash-*.
set -u
cd "$(dirname "$0")/.."

secs=${1:-20}
case $secs in ''|*[!0-9]*) echo "usage: $0 [seconds] [target ...]" >&2; exit 2 ;; esac
shift $(( $# > 0 ? 1 : 0 ))
CC=${FUZZ_CC:-clang}
FLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
LIBS="-lcjson -lpcre2-8 -lutf8proc -lm -pthread"
out=build-fuzz
mkdir -p "$out"
mapfile -t lib_src < <(find src -name '*.c' | sort)

# Every fuzz/fuzz_NAME.c is a target; the prompt reader lives in the CLI.
targets=(safetensors config tokenizer prompts)
[ $# -gt 0 ] && targets=("$@")

# The library is compiled once (instrumented for coverage, not linked with
# libFuzzer's main) and linked into every target.
obj=$out/obj
mkdir -p "$obj"
echo "== building the library with -fsanitize=fuzzer-no-link,address,undefined"
printf '%s\n' "${lib_src[@]}" cli/prompts.c | xargs -P "$(nproc)" -I{} sh -c \
    'o="$1/$(echo "$2" | tr / _).o"; '"$CC $FLAGS"' -fsanitize=fuzzer-no-link -Icli -c "$2" -o "$o"' _ "$obj" {} ||
    { echo "fuzz smoke: the library does not build"; exit 1; }
lib_obj=()
for f in "${lib_src[@]}"; do lib_obj+=("$obj/$(echo "$f" | tr / _).o"); done

fail=0
for name in "${targets[@]}"; do
    bin=$out/fuzz_$name
    extra=()
    [ "$name" = prompts ] && extra=("$obj/cli_prompts.c.o")
    echo "== $name: linking $bin"
    if ! $CC $FLAGS -Icli -o "$bin" "fuzz/fuzz_$name.c" "${extra[@]}" "${lib_obj[@]}" $LIBS; then
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
