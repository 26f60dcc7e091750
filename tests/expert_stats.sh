#!/usr/bin/env bash
# `lightmoe report` and the --expert-stats outputs through the CLI: the
# heat map of real runs and of model sizes up to 94 layers x 128 experts is
# well-formed SVG (xmllint) with one cell per expert and layer; every bad
# input fails with exit status 1 (2 for usage) and a message naming the file
# and the problem, never a crash. (The counts themselves are checked against
# the model in tests/unit/test_expert_stats.c.)
set -u
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/lightmoe
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# expect NAME WANT_RC PHRASE -- command...   (as in bad_input.sh)
expect() {
    local name=$1 want=$2 phrase=$3
    shift 4
    timeout 60 "$@" >"$T/out" 2>"$T/err" </dev/null
    local rc=$?
    if [ $rc -eq 124 ]; then fail "$name: still running after 60 s (hang)"
    elif [ $rc -ge 128 ]; then fail "$name: killed by signal $((rc - 128))"
    elif [ $rc -ne "$want" ]; then fail "$name: exit $rc, want $want"; sed 's/^/    /' "$T/err"
    elif [ -n "$phrase" ] && ! grep -qF -- "$phrase" "$T/err"; then fail "$name: stderr lacks '$phrase':"; sed 's/^/    /' "$T/err"
    else echo "ok   $name: $(head -c 160 "$T/err" | head -1)"
    fi
}

# Well-formed XML: xmllint (libxml2-utils, tools/setup.sh installs it), else Python.
if command -v xmllint >/dev/null; then wellformed() { xmllint --noout "$1"; }
elif command -v python3 >/dev/null; then wellformed() { python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$1"; }
else wellformed() { echo "SKIP: SVG well-formedness (neither xmllint nor python3 found)"; }
fi
# svg_ok NAME FILE CELLS: well-formed, and CELLS heat-map cells with a tooltip
svg_ok() {
    if ! wellformed "$2" 2>"$T/xml"; then fail "$1: not well-formed XML:"; head -5 "$T/xml" | sed 's/^/    /'; return; fi
    local n; n=$(grep -c '<title>layer [0-9]*, expert' "$2")
    [ "$n" -eq "$3" ] && echo "ok   $1: well-formed, $n cells" || fail "$1: $n cells, want $3"
}

# ---- real runs
expect "generate --expert-stats" 0 "" -- $BIN generate -p "The old man" -n 8 -t 2 --expert-stats $T/gen.json
expect "report of a generate run" 0 "wrote $T/gen.svg" -- $BIN report $T/gen.json --svg $T/gen.svg
svg_ok "generate heat map (6 x 8)" $T/gen.svg 48
grep -q "^hottest experts:" $T/out && grep -q "layer   5: max" $T/out || fail "report summary lacks per-layer lines or the hottest experts"
expect "perplexity --expert-stats" 0 "" -- $BIN perplexity --file models/sotu-moe/heldout.txt --max-windows 1 --ctx 128 -t 2 --expert-stats $T/ppl.json
grep -q "^expert routing share" $T/out || fail "perplexity --expert-stats no longer prints the shares"
expect "report of a perplexity run" 0 "" -- $BIN report $T/ppl.json --svg $T/ppl.svg
svg_ok "perplexity heat map" $T/ppl.svg 48
grep -q ">128 tokens" $T/ppl.svg || fail "the title does not give the token count"
grep -qi "share of .* routed tokens" $T/ppl.svg || fail "the legend does not say what the colour is"

# ---- sizes: stats files made here, 2 x 4 up to 94 x 128 (Qwen3-235B), with dense layers
# make_stats LAYERS EXPERTS TOP_K TOKENS DENSE_EVERY: a valid file, counts skewed to low expert ids
make_stats() {
    awk -v L=$1 -v E=$2 -v K=$3 -v T=$4 -v D=$5 'BEGIN {
        srand(7)
        printf "{\"format\": \"lightmoe-expert-stats\", \"version\": 1, \"model\": {\"architecture\": \"Qwen3MoeForCausalLM\", \"path\": \"/m/q\"}, "
        printf "\"n_layers\": %d, \"n_experts\": %d, \"top_k\": %d, \"tokens\": %d, \"moe_layers\": [", L, E, K, T
        s = ""; for (l = 0; l < L; l++) if (!(D && l % D == 1)) { printf "%s%d", s, l; s = ", " }
        printf "], \"counts\": ["
        for (l = 0; l < L; l++) {
            for (e = 0; e < E; e++) c[e] = 0
            if (!(D && l % D == 1))
                for (t = 0; t < T; t++) for (n = 0; n < K;) { e = int(E * rand() * rand()); if (u[e] != t + 1) { u[e] = t + 1; c[e]++; n++ } }
            delete u
            printf "%s[", l ? ", " : ""
            for (e = 0; e < E; e++) printf "%s%d", e ? ", " : "", c[e]
            printf "]"
        }
        print "]}"
    }'
}
for shape in "2 4 1 30 0" "8 64 6 50 0" "48 128 8 40 4" "94 128 8 20 0"; do
    set -- $shape
    make_stats "$@" > $T/s.json
    expect "report $1 x $2" 0 "" -- $BIN report $T/s.json --svg $T/s.svg
    dense=0; [ "$5" -gt 0 ] && dense=$(( ($1 + $5 - 2) / $5 ))
    svg_ok "heat map $1 x $2" $T/s.svg $(( ($1 - dense) * $2 ))
    [ "$dense" -eq 0 ] || grep -q 'fill="url(#hatch)"><title>layer 1: dense' $T/s.svg || fail "dense layer 1 is not drawn hatched"
    # labels stay apart: at most ~30 expert labels across, ~45 layer labels down
    nx=$(grep -c '<text x="[0-9.]*" y="[0-9]*">[0-9]*</text>' $T/s.svg)
    ny=$(grep -c 'dy="0.35em">[0-9]*</text>' $T/s.svg)
    [ "$nx" -ge 4 ] && [ "$nx" -le 30 ] && [ "$ny" -ge 2 ] && [ "$ny" -le 45 ] || fail "heat map $1 x $2: $nx expert and $ny layer labels"
done

# ---- text that needs escaping, bytes that are not UTF-8: still well-formed
valid='{"format": "lightmoe-expert-stats", "version": 1, "command": "generate", "model": {"architecture": "MixtralForCausalLM", "path": "/m/x"}, "n_layers": 2, "n_experts": 4, "top_k": 2, "moe_layers": [0, 1], "tokens": 5, "counts": [[5, 3, 2, 0], [1, 2, 3, 4]]}'
printf '{"format": "lightmoe-expert-stats", "version": 1, "command": "a\\u0000b", "model": {"architecture": "Mix<tral>", '\
'"path": "/m/<b>&\\"x'"'"'\\u0001\\uffff\\ud83d\\ude00\xff]]>--"}, "n_layers": 2, "n_experts": 4, "top_k": 2, '\
'"moe_layers": [0, 1], "tokens": 5, "counts": [[5, 3, 2, 0], [1, 2, 3, 4]]}' > $T/esc.json
expect "report of hostile strings" 0 "" -- $BIN report $T/esc.json --svg $T/esc.svg
svg_ok "escaped heat map" $T/esc.svg 8

# ---- bad stats files: exit 1, the file and the problem named
bad() {  # NAME PHRASE SED-EXPRESSION
    echo "$valid" | sed "$3" > "$T/bad.json"
    expect "report: $1" 1 "$2" -- $BIN report $T/bad.json --svg $T/bad.svg
    [ -e $T/bad.svg ] && { fail "report: $1 left an SVG"; rm -f $T/bad.svg; }
}
echo "$valid" > $T/ok.json
expect "report: valid base case" 0 "" -- $BIN report $T/ok.json
expect "report: missing file" 1 "nope.json: no such file" -- $BIN report $T/nope.json --svg $T/x.svg
: > $T/empty.json
expect "report: empty file" 1 "empty.json: the file is empty" -- $BIN report $T/empty.json
expect "report: a directory" 1 "is a directory" -- $BIN report $T
bad "malformed JSON" "bad.json: malformed JSON" 's/}$//'
bad "trailing garbage" "bad.json: malformed JSON" 's/}$/} x/'
bad "not an object" "not an object" 's/.*/[1, 2]/'
bad "another format" 'not a "lightmoe-expert-stats" file' 's/lightmoe-expert-stats/lightmoe-bench/'
bad "no format" 'not a "lightmoe-expert-stats" file' 's/"format": "lightmoe-expert-stats", //'
bad "newer version" "format version 2; this lightmoe reads version 1" 's/"version": 1/"version": 2/'
bad "duplicate key" 'key "tokens" appears twice' 's/"tokens": 5/"tokens": 5, "tokens": 6/'
bad "missing counts" '"counts" is missing, not an array' 's/, "counts": .*/}/'
bad "counts rows != n_layers" '"counts" has 2 rows but "n_layers" is 3' 's/"n_layers": 2/"n_layers": 3/; s/"moe_layers": \[0, 1\]/"moe_layers": [0, 1, 2]/'
bad "row length != n_experts" '"counts"[0] has 4 entries but "n_experts" is 5' 's/"n_experts": 4/"n_experts": 5/'
bad "row not an array" '"counts"[1] is a number' 's/\[1, 2, 3, 4\]/7/'
bad "negative count" '"counts"[1][0] is -1: it is negative' 's/\[1, 2, 3, 4\]/[-1, 4, 3, 4]/'
bad "fractional count" '"counts"[1][0] is 1.5: it is not an integer' 's/\[1, 2, 3, 4\]/[1.5, 1.5, 3, 4]/'
bad "string count" '"counts"[1][3] is a string' 's/\[1, 2, 3, 4\]/[1, 2, 3, "4"]/'
bad "count beyond tokens" '"counts"[0][0] is 9, more than the 5 tokens' 's/\[5, 3, 2, 0\]/[9, 1, 0, 0]/'
bad "sum != tokens x top_k" "layer 1's counts add up to 9, not tokens x top_k = 5 x 2 = 10" 's/\[1, 2, 3, 4\]/[1, 2, 3, 3]/'
bad "dense layer with counts" 'layer 1 is not in "moe_layers" but has 10 routed tokens' 's/"moe_layers": \[0, 1\]/"moe_layers": [0]/'
bad "moe layer out of range" '"moe_layers" holds 2, not a layer index in [0, 2)' 's/"moe_layers": \[0, 1\]/"moe_layers": [0, 1, 2]/'
bad "moe layer twice" '"moe_layers" lists layer 1 twice' 's/"moe_layers": \[0, 1\]/"moe_layers": [0, 1, 1]/'
bad "no MoE layers" '"moe_layers" is empty' 's/"moe_layers": \[0, 1\]/"moe_layers": []/'
bad "huge n_layers" '"n_layers" is 1000000000, out of range [1, 1024]' 's/"n_layers": 2/"n_layers": 1000000000/'
bad "huge n_experts" '"n_experts" is 1e+300, out of range [1, 1024]' 's/"n_experts": 4/"n_experts": 1e300/'
bad "too many cells" "1024 layers x 1024 experts is more than" 's/"n_layers": 2/"n_layers": 1024/; s/"n_experts": 4/"n_experts": 1024/'
bad "n_experts not an integer" '"n_experts" is 4.5, not an integer' 's/"n_experts": 4/"n_experts": 4.5/'
bad "top_k > n_experts" '"top_k" is 5, out of range [1, 4]' 's/"top_k": 2/"top_k": 5/'
bad "tokens negative" '"tokens" is negative' 's/"tokens": 5/"tokens": -5/'
bad "architecture missing" '"architecture" is missing, not a string' 's/"architecture": "MixtralForCausalLM", //'
printf '{"a": %s1%s}' "$(printf '[%.0s' $(seq 200))" "$(printf ']%.0s' $(seq 200))" > $T/deep.json
expect "report: nested too deep" 1 "deep.json: JSON nested 201 levels deep (at most 64)" -- $BIN report $T/deep.json
printf '{"format": "lightmoe-expert-stats"}\0{}' > $T/nul.json
expect "report: NUL byte" 1 "nul.json: the file contains a NUL byte" -- $BIN report $T/nul.json

# ---- usage and outputs
expect "report: no file" 2 "give the FILE.json" -- $BIN report
expect "report: two files" 2 "one FILE.json at a time" -- $BIN report $T/ok.json $T/ok.json
expect "report: unknown option" 2 "unknown option '--png'" -- $BIN report $T/ok.json --png x
expect "report: --svg without a value" 2 "--svg needs a value" -- $BIN report $T/ok.json --svg
expect "report: --svg -" 2 "--svg needs a file name" -- $BIN report $T/ok.json --svg -
expect "report: --svg in a missing directory" 1 "--svg /nonexistent/x.svg: cannot open for writing" -- $BIN report $T/ok.json --svg /nonexistent/x.svg
expect "report: --svg over its input" 1 "--svg $T/ok.json is one of the inputs" -- $BIN report $T/ok.json --svg $T/ok.json
expect "report: --svg to a full disk" 1 "No space left on device" -- $BIN report $T/ok.json --svg /dev/full
echo keep > $T/keep.svg
echo "$valid" | sed 's/}$//' > $T/malformed.json
expect "report: a bad file leaves --svg as it was" 1 "malformed JSON" -- $BIN report $T/malformed.json --svg $T/keep.svg
[ "$(cat $T/keep.svg)" = keep ] || fail "a failed report replaced the existing SVG"
expect "report --help" 0 "" -- $BIN report --help
grep -q "usage: lightmoe report" $T/out || fail "report --help prints no usage"
$BIN --help | grep -q "^  report " || fail "report is not in the top-level help"

expect "generate: --expert-stats takes a file" 2 "--expert-stats needs a file name (FILE.json), not '-n'" -- $BIN generate -p hi --expert-stats -n 2
expect "perplexity: old flag form" 2 "--expert-stats needs a value" -- $BIN perplexity --file models/sotu-moe/heldout.txt --expert-stats
expect "perplexity: old flag form before another option" 2 "not '--max-windows'" -- $BIN perplexity --file models/sotu-moe/heldout.txt --expert-stats --max-windows 1
expect "generate: --expert-stats -" 1 "--expert-stats needs a file name" -- $BIN generate -p hi -n 2 --expert-stats -
expect "generate: --expert-stats in a missing directory fails first" 1 "--expert-stats /nonexistent/s.json: cannot open for writing" -- $BIN generate -p hi -n 2 --expert-stats /nonexistent/s.json
[ -s $T/out ] && fail "generate ran although --expert-stats could not be written"
expect "perplexity: --expert-stats over the text" 1 "is one of the inputs" -- $BIN perplexity --file $T/ok.json --expert-stats $T/ok.json
expect "generate: --expert-stats and --out the same" 2 "name the same file" -- $BIN generate --prompts $T/p.jsonl --out $T/x.json --expert-stats $T/x.json
expect "generate: --expert-stats to a full disk" 1 "No space left on device" -- $BIN generate -p hi -n 2 --expert-stats /dev/full

# A model without MoE layers: the Qwen3-MoE fixture cut to its dense layer
# (layers 0 and 1 swapped by name, same-length edits of the header).
mkdir -p $T/dense
LC_ALL=C sed 's/model\.layers\.0\./model.layers.X./g; s/model\.layers\.1\./model.layers.0./g; s/model\.layers\.X\./model.layers.1./g' \
    tests/fixtures/qwen3_moe/model.safetensors > $T/dense/model.safetensors
sed 's/"num_hidden_layers": 3/"num_hidden_layers": 1/; s/^    1$/    0/' tests/fixtures/qwen3_moe/config.json > $T/dense/config.json
printf '{"model": {"type": "BPE", "merges": [], "vocab": {"a": 0, "b": 1, "c": 2}}}' > $T/dense/tokenizer.json
expect "generate: a model without MoE layers" 1 "has no MoE layers, so there is no expert routing to record" -- $BIN generate -m $T/dense -p abc -n 2 --expert-stats $T/dense.json
[ -e $T/dense.json ] && fail "a stats file was written for a model without experts"
ls -a $T | grep -q lightmoe-out && fail "a temporary output file was left behind"

echo "expert-stats cases failed: $fails"
[ $fails -eq 0 ]
