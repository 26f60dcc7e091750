#!/usr/bin/env bash
# Runs every test binary and every shell test, then prints the closing
# "N passed, N failed" line. Exit status is non-zero if anything failed.
set -u
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
pass=0; fail=0; failed=()
run() {  # name, command...
    local name=$1; shift
    local log; log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        pass=$((pass+1)); printf '  PASS  %s\n' "$name"
    else
        fail=$((fail+1)); failed+=("$name"); printf '  FAIL  %s\n' "$name"; sed 's/^/        /' "$log" | tail -40
    fi
    rm -f "$log"
}
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] && run "$(basename "$t")" "$t"
done
for t in tests/*.sh; do
    [ "$(basename "$t")" = run.sh ] && continue
    run "$(basename "$t" .sh)" env BUILD="$BUILD" bash "$t"
done
echo
[ $fail -gt 0 ] && printf 'failed: %s\n' "${failed[*]}"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
