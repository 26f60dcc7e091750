#!/usr/bin/env bash
# Bad input through the CLI: each case must exit non-zero (not by a signal)
# with a message on stderr naming the problem. Corrupt checkpoints are made
# from a fixture by byte-exact edits of the safetensors header.
set -u
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/lightmoe
FIX=tests/fixtures/mixtral
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0

# expect NAME WANT_RC PHRASE -- command...
expect() {
    local name=$1 want=$2 phrase=$3
    shift 4
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ $rc -ge 128 ]; then
        echo "FAIL $name: killed by signal $((rc - 128))"; fails=$((fails + 1))
    elif [ $rc -ne "$want" ]; then
        echo "FAIL $name: exit $rc, want $want"; sed 's/^/    /' "$T/err"; fails=$((fails + 1))
    elif ! grep -qF -- "$phrase" "$T/err"; then
        echo "FAIL $name: stderr lacks '$phrase':"; sed 's/^/    /' "$T/err"; fails=$((fails + 1))
    else
        echo "ok   $name: $(head -c 160 "$T/err" | head -1)"
    fi
}

# copy of the fixture with model.safetensors passed through a filter
variant() {  # name, command applied as: cmd < in > out
    local d=$T/$1
    mkdir -p "$d"
    cp $FIX/config.json "$d/"
    shift
    "$@" < $FIX/model.safetensors > "$d/model.safetensors"
    echo "$d"
}
ids=1,2,3

d=$(variant truncated head -c 100000)
expect "truncated safetensors" 1 "model.safetensors" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin
d=$(variant header-cut head -c 200)
expect "safetensors cut inside its header" 1 "model.safetensors" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin
d=$(variant empty head -c 0)
expect "empty safetensors" 1 "model.safetensors" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin
# data_offsets pushed past the end of the file (same length edit keeps the header valid JSON)
first_end=$(LC_ALL=C grep -ao '"data_offsets":\[[0-9]*,[0-9]*\]' $FIX/model.safetensors | head -1 | sed 's/.*,\([0-9]*\)\]/\1/')
big=$(printf '9%.0s' $(seq ${#first_end}))
d=$(variant offsets env LC_ALL=C sed "0,/,${first_end}\]/s//,${big}]/")
expect "header offsets out of range" 1 "model.safetensors" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin
d=$(variant missing env LC_ALL=C sed 's/"model\.norm\.weight"/"model.norX.weight"/')
expect "missing tensor" 1 "missing tensor 'model.norm.weight'" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin
d=$(variant shape env LC_ALL=C sed 's/\("model\.layers\.0\.self_attn\.k_proj\.weight":{"dtype":"BF16","shape":\)\[14,70\]/\1[70,14]/')
expect "wrong shape" 1 "has shape [70, 14], expected [14, 70]" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin
# "BF16" -> " U16" keeps the header length; U16 is a valid safetensors dtype of the same size
d=$(variant dtype env LC_ALL=C sed 's/\("model\.norm\.weight":{"dtype":\)"BF16"/\1 "U16"/')
expect "unsupported dtype" 1 "dtype U16 (supported: BF16, F16, F32)" -- $BIN logits -m "$d" --ids $ids --out $T/l.bin

mkdir -p $T/badjson && cp $FIX/model.safetensors $T/badjson/ && printf '{"architectures": ["MixtralForCausalLM"], "hidden_size": ' > $T/badjson/config.json
expect "malformed config.json" 1 "config.json: malformed JSON" -- $BIN logits -m $T/badjson --ids $ids --out $T/l.bin
mkdir -p $T/arch && cp $FIX/model.safetensors $T/arch/ && sed 's/MixtralForCausalLM/GPT2LMHeadModel/' $FIX/config.json > $T/arch/config.json
expect "unknown architecture" 1 "GPT2LMHeadModel\" is not supported (supported: MixtralForCausalLM" -- $BIN logits -m $T/arch --ids $ids --out $T/l.bin
mkdir -p $T/noweights && cp $FIX/config.json $T/noweights/
expect "no weights" 1 "no model.safetensors" -- $BIN logits -m $T/noweights --ids $ids --out $T/l.bin
expect "nonexistent model directory" 1 "nonexistent: no such directory" -- $BIN logits -m $T/nonexistent --ids $ids --out $T/l.bin
mkdir -p $T/shard && cp tests/fixtures/mixtral_f16_sharded/* $T/shard/ && rm $T/shard/model-00002-of-00002.safetensors
expect "missing shard" 1 "model-00002-of-00002.safetensors" -- $BIN logits -m $T/shard --ids $ids --out $T/l.bin

expect "id >= vocab" 1 "token id 263" -- $BIN logits -m $FIX --ids 1,263 --out $T/l.bin
expect "negative id" 2 "--ids" -- $BIN logits -m $FIX --ids 1,-5 --out $T/l.bin
expect "garbage ids" 2 "--ids" -- $BIN logits -m $FIX --ids 1,,2 --out $T/l.bin
expect "too many ids for the context" 1 "context length" -- $BIN logits -m $FIX --ids "$(seq -s, 1 300)" --out $T/l.bin
expect "-n -1" 2 "out of range" -- $BIN generate -p hi -n -1
expect "-n not a number" 2 "not an integer" -- $BIN generate -p hi -n 12x
expect "--top-p 0" 2 "--top-p" -- $BIN generate -p hi --top-p 0
expect "--temp negative" 2 "--temp" -- $BIN generate -p hi --temp -1
expect "unknown option" 2 "unknown option" -- $BIN generate -p hi --frobnicate
expect "unknown command" 2 "unknown command" -- $BIN frobnicate
expect "missing tokenizer" 1 "tokenizer.json" -- $BIN generate -m $FIX -p hi
printf '{"prompt": "a"}\n{"prompt": 5}\n' > $T/p.jsonl
expect "bad prompts file" 1 "p.jsonl:2" -- $BIN generate --prompts $T/p.jsonl
printf 'not json\n' > $T/q.jsonl
expect "prompts not JSON" 1 "q.jsonl:1" -- $BIN generate --prompts $T/q.jsonl
expect "missing tokenizer file" 1 "nope.json" -- $BIN tokenize --tokenizer $T/nope.json hello
printf '{"model": {"type": "WordPiece", "vocab": {}}}' > $T/wp.json
expect "unsupported tokenizer model" 1 "WordPiece" -- $BIN tokenize --tokenizer $T/wp.json hello
expect "perplexity: missing text file" 1 "nope.txt: cannot open" -- $BIN perplexity --file $T/nope.txt
printf 'x' > $T/one.txt
expect "perplexity: text too short" 1 "fewer than 2 tokens" -- $BIN perplexity --file $T/one.txt
expect "perplexity: --ctx beyond the model" 1 "exceeds the model" -- $BIN perplexity --file models/sotu-moe/heldout.txt --ctx 100000
expect "perplexity: no --file" 2 "--file is required" -- $BIN perplexity
expect "bad synthetic layer count" 2 "layer count" -- $BIN bench --synthetic $FIX/config.json:0

# The checkpoint must not be modified by any of this.
sha_before=$(sha256sum $FIX/model.safetensors | cut -d' ' -f1)
$BIN logits -m $FIX --ids $ids --out $T/l.bin >/dev/null 2>&1
[ "$(sha256sum $FIX/model.safetensors | cut -d' ' -f1)" = "$sha_before" ] || { echo "FAIL fixture modified"; fails=$((fails + 1)); }

echo "bad-input cases failed: $fails"
[ $fails -eq 0 ]
