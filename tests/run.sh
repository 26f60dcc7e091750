#!/usr/bin/env bash
# Runs every test binary and every shell test, then prints the closing
# "N passed, N failed" line. Exit status is non-zero if anything failed.
set -u
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0; failed=()
# A test exits 77 when none of its checks could run (reference data not
# fetched); "SKIP:" lines in its output name checks it had to leave out.
run() {  # name, command...
    local name=$1; shift
    local log; log=$(mktemp)
    "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 77 ]; then
        skip=$((skip+1)); printf '  SKIP  %s\n' "$name"; grep '^SKIP:' "$log" | sort -u | sed 's/^/        /'
    elif [ $rc -eq 0 ]; then
        pass=$((pass+1)); printf '  PASS  %s\n' "$name"
        grep '^SKIP:' "$log" | sort -u | sed 's/^SKIP:/        partly skipped:/'
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
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
