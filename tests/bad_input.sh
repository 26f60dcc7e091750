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

# expect NAME WANT_RC PHRASE -- command...   (a case that runs over 60 s is a hang)
expect() {
    local name=$1 want=$2 phrase=$3
    shift 4
    timeout 60 "$@" >"$T/out" 2>"$T/err" </dev/null
    local rc=$?
    if [ $rc -eq 124 ]; then
        echo "FAIL $name: still running after 60 s (hang)"; fails=$((fails + 1))
    elif [ $rc -ge 128 ]; then
        echo "FAIL $name: killed by signal $((rc - 128))"; fails=$((fails + 1))
    elif [ $rc -ne "$want" ]; then
        echo "FAIL $name: exit $rc, want $want"; sed 's/^/    /' "$T/err"; fails=$((fails + 1))
    elif [ -n "$phrase" ] && ! grep -qF -- "$phrase" "$T/err"; then
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
expect "perplexity: missing text file" 1 "nope.txt: no such file" -- $BIN perplexity --file $T/nope.txt
printf 'x' > $T/one.txt
expect "perplexity: text too short" 1 "fewer than 2 tokens" -- $BIN perplexity --file $T/one.txt
expect "perplexity: --ctx beyond the model" 1 "exceeds the model" -- $BIN perplexity --file models/sotu-moe/heldout.txt --ctx 100000
expect "perplexity: no --file" 2 "--file is required" -- $BIN perplexity
expect "bad synthetic layer count" 2 "layer count" -- $BIN bench --synthetic $FIX/config.json:0

# ---- non-regular files: never block in open(), never read without end
mkdir -p $T/fifo_cfg && cp $FIX/model.safetensors $T/fifo_cfg/ && mkfifo $T/fifo_cfg/config.json
expect "FIFO as config.json" 1 "config.json: is a FIFO" -- $BIN logits -m $T/fifo_cfg --ids $ids --out $T/l.bin
mkdir -p $T/fifo_st && cp $FIX/config.json $T/fifo_st/ && mkfifo $T/fifo_st/model.safetensors
expect "FIFO as model.safetensors" 1 "model.safetensors: is a FIFO" -- $BIN logits -m $T/fifo_st --ids $ids --out $T/l.bin
mkfifo $T/fifo.json
expect "FIFO as tokenizer.json" 1 "fifo.json: is a FIFO" -- $BIN tokenize --tokenizer $T/fifo.json hello
expect "FIFO as --synthetic config" 1 "fifo.json: is a FIFO" -- $BIN info --synthetic $T/fifo.json
expect "FIFO as --synthetic config (bench)" 1 "fifo.json: is a FIFO" -- $BIN bench --synthetic $T/fifo.json
expect "/dev/zero as tokenizer" 1 "/dev/zero: is a character device" -- $BIN tokenize --tokenizer /dev/zero hello
expect "/dev/zero as perplexity text" 1 "/dev/zero: is a character device" -- $BIN perplexity --file /dev/zero
expect "/dev/zero as prompts (a stream: bounded)" 1 "line longer than" -- $BIN generate --prompts /dev/zero -n 1
expect "directory as perplexity text" 1 "is a directory" -- $BIN perplexity --file $T
expect "directory as prompts" 1 "is a directory" -- $BIN generate --prompts $T
mkdir -p $T/dir_tok
expect "directory as tokenizer.json" 1 "dir_tok: is a directory" -- $BIN tokenize --tokenizer $T/dir_tok hello
mkdir -p $T/dir_cfg/config.json && cp $FIX/model.safetensors $T/dir_cfg/
expect "config.json is a directory" 1 "config.json: is a directory" -- $BIN logits -m $T/dir_cfg --ids $ids --out $T/l.bin
mkdir -p $T/loop && cp $FIX/model.safetensors $T/loop/ && ln -s config.json $T/loop/config.json
expect "config.json is a symlink loop" 1 "symbolic links" -- $BIN logits -m $T/loop --ids $ids --out $T/l.bin
mkdir -p $T/dir_idx/model.safetensors.index.json && cp $FIX/config.json $T/dir_idx/
expect "index.json is a directory" 1 "index.json: is a directory" -- $BIN logits -m $T/dir_idx --ids $ids --out $T/l.bin
mkdir -p $T/tokcfg && cp models/sotu-moe/tokenizer.json $T/tokcfg/ && mkfifo $T/tokcfg/tokenizer_config.json
expect "FIFO as tokenizer_config.json" 1 "tokenizer_config.json: is a FIFO" -- $BIN tokenize --tokenizer $T/tokcfg/tokenizer.json hi
if [ "$(id -u)" -ne 0 ]; then  # root reads anything
    mkdir -p $T/noperm && cp $FIX/* $T/noperm/ 2>/dev/null; chmod 000 $T/noperm
    expect "model directory without permission" 1 "permission denied" -- $BIN logits -m $T/noperm --ids $ids --out $T/l.bin
    chmod 755 $T/noperm
fi
long=$T/$(printf 'd%.0s' $(seq 1 250))/$(printf 'e%.0s' $(seq 1 250))/$(printf 'f%.0s' $(seq 1 250))/$(printf 'g%.0s' $(seq 1 250))/$(printf 'h%.0s' $(seq 1 250))
expect "long path keeps the reason" 1 "no such directory" -- $BIN logits -m "$long" --ids $ids --out $T/l.bin

# ---- memory asked for is checked first
t0=$(date +%s)
expect "info --synthetic builds no weights" 0 "" -- $BIN info --synthetic configs/mixtral-8x22b.json
grep -q "281 GB" $T/out || { echo "FAIL info --synthetic: no weight size in the output"; fails=$((fails + 1)); }
[ $(( $(date +%s) - t0 )) -le 5 ] || { echo "FAIL info --synthetic took more than 5 s"; fails=$((fails + 1)); }
yes '{"prompt": "x"}' | head -n 65536 > $T/many.jsonl
expect "KV cache larger than memory" 1 "of memory but" -- $BIN generate --prompts $T/many.jsonl -n 2000 --parallel 65536 --max-batch-tokens 65536 --kv-mem 100T

# ---- silently wrong output
greedy=$($BIN generate -p "The old man" -n 12 2>/dev/null)
tiny=$($BIN generate -p "The old man" -n 12 --temp 1e-39 2>/dev/null)
if [ -n "$greedy" ] && [ "$greedy" = "$tiny" ]; then echo "ok   --temp 1e-39 equals greedy"
else echo "FAIL --temp 1e-39 is not the greedy limit: '$tiny' vs '$greedy'"; fails=$((fails + 1)); fi
expect "stop + sampling + partial first character" 0 "" -- $BIN generate -p "The old man" -n 2 --temp 100 --stop x --seed 48
# A byte-level vocabulary has a token for byte 0: the model's greedy first token
# becomes it when its id is swapped with "Ġand". The text must keep the NUL
# (as \u0000 in JSON) and stop strings after it must still match.
mkdir -p $T/nulvocab && cp models/sotu-moe/* $T/nulvocab/ &&
    sed -i 's/"Ā": 189,/"Ā": 284,/; s/"Ġand": 284,/"Ġand": 189,/' $T/nulvocab/tokenizer.json
printf '{"prompt": "The old man"}\n' > $T/old.jsonl
expect "generated NUL byte in JSONL" 0 "" -- $BIN generate -m $T/nulvocab --prompts $T/old.jsonl -n 12
grep -qF '"text":"\u0000 women, we have' $T/out || { echo "FAIL generated NUL: text cut or not escaped: $(cat $T/out)"; fails=$((fails + 1)); }
$BIN generate -m $T/nulvocab -p "The old man" -n 12 --stop women 2>/dev/null | od -An -c | tr -d ' ' > $T/od
[ "$(cat $T/od)" = '\0\n' ] && echo "ok   stop string after a generated NUL" ||
    { echo "FAIL stop after a generated NUL: output $(cat $T/od)"; fails=$((fails + 1)); }
printf '{"prompt": "a\\u0000b"}\n' > $T/nul.jsonl
expect "JSONL: \\u0000 in a prompt" 1 "nul.jsonl:1: a string contains the NUL character" -- $BIN generate --prompts $T/nul.jsonl -n 1
printf '{"prompt": "a"}\n{"prompt": "a\0b"}\n' > $T/nulbyte.jsonl
expect "JSONL: raw NUL byte" 1 "nulbyte.jsonl:2: the line contains a NUL byte" -- $BIN generate --prompts $T/nulbyte.jsonl -n 1
printf '{"prompt": "a"} {"prompt": "b"}\n' > $T/two.jsonl
expect "JSONL: two objects on a line" 1 "two.jsonl:1: more than one JSON value" -- $BIN generate --prompts $T/two.jsonl -n 1
printf '{"prompt": "a"} xyz\n' > $T/trail.jsonl
expect "JSONL: trailing garbage" 1 "trail.jsonl:1: more than one JSON value" -- $BIN generate --prompts $T/trail.jsonl -n 1
printf '\n{"prompt": "a\xff"}\n' > $T/utf.jsonl
expect "JSONL: not UTF-8" 1 "utf.jsonl:2: not valid UTF-8" -- $BIN generate --prompts $T/utf.jsonl -n 1
printf '{"prompt": "a", "prompt": "b"}\n' > $T/dup.jsonl
expect "JSONL: prompt twice" 1 "dup.jsonl:1: key \"prompt\" appears twice" -- $BIN generate --prompts $T/dup.jsonl -n 1
printf '{"prompt": "a", "x": %s1%s}\n' "$(printf '[%.0s' $(seq 1100))" "$(printf ']%.0s' $(seq 1100))" > $T/deep.jsonl
expect "JSONL: nested too deep" 1 "deep.jsonl:1: JSON nested 1101 levels deep (at most 64)" -- $BIN generate --prompts $T/deep.jsonl -n 1
printf '{"prompt": ""}\n' > $T/empty.jsonl
expect "JSONL: empty prompt without BOS" 1 "empty.jsonl:1: the prompt gives no tokens" -- $BIN generate --prompts $T/empty.jsonl -n 1
printf '{"prompt": "hi"}\n' > $T/ok.jsonl
expect "--out /dev/full" 1 "No space left on device" -- $BIN generate --prompts $T/ok.jsonl -n 2 --out /dev/full
expect "generate to a full stdout" 1 "No space left on device" -- sh -c "$BIN generate -p hi -n 4 > /dev/full"
expect "tokenize to a full stdout" 1 "No space left on device" -- sh -c "$BIN tokenize hello > /dev/full"
expect "info to a full stdout" 1 "No space left on device" -- sh -c "$BIN info > /dev/full"
expect "logits to /dev/full" 1 "No space left on device" -- $BIN logits -m $FIX --ids $ids --out /dev/full
mkdir -p $T/extra && cp $FIX/model.safetensors $T/extra/ && sed 's/"num_hidden_layers": 3/"num_hidden_layers": 2/' $FIX/config.json > $T/extra/config.json
expect "checkpoint tensors the config does not use" 0 "tensors of the checkpoint are not used by config.json (e.g. 'model.layers.2." -- $BIN logits -m $T/extra --ids $ids --out $T/l.bin

# ---- second round (a tester's findings): growth, regex limits, duplicate keys, outputs
tokvariant() {  # name, sed expression applied to the shipped tokenizer.json
    mkdir -p $T/$1 && cp models/sotu-moe/* $T/$1/ && sed -i "$2" $T/$1/tokenizer.json && echo $T/$1
}
rep='{"type": "Replace", "pattern": {"String": "a"}, "content": "aaaaaaaaaa"}'
d=$(tokvariant grow "s/\"normalizer\": null/\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [$rep, $rep, $rep, $rep, $rep, $rep, $rep, $rep, $rep, $rep]}/")
expect "normalizers that multiply the text" 1 "the normalizers make the text more than 256 times longer" -- $BIN tokenize -m $d banana
expect "tokenizer.json with a duplicate key" 1 "appears twice in one object" -- sh -c "sed 's/\"normalizer\": null/\"normalizer\": null, \"normalizer\": null/' models/sotu-moe/tokenizer.json > $T/duptok.json && $BIN tokenize --tokenizer $T/duptok.json hi"
mkdir -p $T/dupcfg && cp $FIX/model.safetensors $T/dupcfg/ && sed 's/"rms_norm_eps": 1e-05,/"rms_norm_eps": 1e-05, "rms_norm_eps": 0.5,/' $FIX/config.json > $T/dupcfg/config.json
expect "config.json with a duplicate key" 1 "config.json: key \"rms_norm_eps\" appears twice" -- $BIN logits -m $T/dupcfg --ids $ids --out $T/l.bin
expect "closed stderr does not capture the output file" 0 "" -- sh -c "$BIN generate --prompts $T/ok.jsonl -n 2 --out $T/closed.jsonl 2>&-"
head -c 9 $T/closed.jsonl | grep -q '^{"index"' && echo "ok   output file starts with the results" || { echo "FAIL the output file got other text: $(head -1 $T/closed.jsonl)"; fails=$((fails + 1)); }
echo important > $T/keep.jsonl
expect "a failed run leaves --out untouched" 1 "no such directory" -- $BIN generate -m $T/nonexistent --prompts $T/ok.jsonl --out $T/keep.jsonl
[ "$(cat $T/keep.jsonl)" = important ] && echo "ok   --out kept" || { echo "FAIL --out was modified by a failed run"; fails=$((fails + 1)); }
ls $T/keep.jsonl.tmp-* >/dev/null 2>&1 && { echo "FAIL a temporary output file was left behind"; fails=$((fails + 1)); }
mkdir -p $T/victim && cp $FIX/* $T/victim/ 2>/dev/null
expect "--out naming a checkpoint file" 1 "is one of the inputs" -- $BIN logits -m $T/victim --ids $ids --out $T/victim/model.safetensors
expect "--out naming the prompts file" 1 "is one of the inputs" -- $BIN generate --prompts $T/ok.jsonl -n 1 --out $T/ok.jsonl
expect "--out a directory" 1 "is a directory" -- $BIN generate --prompts $T/ok.jsonl -n 1 --out $T
expect "too many prompts on stdin" 1 "more than 65536 prompts" -- sh -c "yes '{\"prompt\": \"x\"}' | $BIN generate --prompts - -n 1"
expect "leading space in a number" 2 "is not a non-negative integer" -- $BIN generate -p hi --seed " -1"
expect "missing model directory named first" 1 "nonexistent: no such directory" -- $BIN generate -m $T/nonexistent -p hi
expect "perplexity of a /proc file reads it" 0 "" -- $BIN perplexity --file /proc/self/status --max-windows 1
mkdir -p $T/gencfg && cp models/sotu-moe/* $T/gencfg/ && printf '{"eos_token_id": [284]}\n' > $T/gencfg/generation_config.json
expect "generation_config.json eos ids are used" 0 "" -- $BIN generate -m $T/gencfg -p "The old man" -n 12
grep -q ' and' $T/out && { echo "FAIL generation_config.json eos (' and' = 284) did not stop generation: $(cat $T/out)"; fails=$((fails + 1)); }
mkdir -p $T/ropescale && cp $FIX/model.safetensors $T/ropescale/ && sed 's/"rope_parameters": {/"rope_scaling": {"factor": 8.0}, "rope_parameters": {/' $FIX/config.json > $T/ropescale/config.json
expect "rope_scaling without a type" 1 "rope_scaling" -- $BIN logits -m $T/ropescale --ids $ids --out $T/l.bin
expect "bench: prompt too long fails before probing" 1 "exceeds the model's 2048 positions" -- $BIN bench --prompt-len 2048 --gen-len 1
grep -q measuring $T/err && { echo "FAIL bench probed the machine before checking its arguments"; fails=$((fails + 1)); }

# ---- third round (a tester's findings)
expect "closed stdout is a write error" 1 "Bad file descriptor" -- sh -c "$BIN tokenize hello >&-"
expect "closed stdout for logits -" 1 "Bad file descriptor" -- sh -c "$BIN logits -m $FIX --ids 1 --out - >&-"
mkdir -p $T/stray && cp tests/fixtures/mixtral_f16_sharded/* $T/stray/ && head -c 100 $FIX/model.safetensors > $T/stray/model.safetensors
expect "model.safetensors wins over an index (transformers' order)" 1 "stray/model.safetensors: truncated" -- $BIN logits -m $T/stray --ids $ids --out $T/l.bin
expect "unknown option after the text" 2 "unknown option '--add-specal'" -- $BIN tokenize hello --add-specal
expect "TEXT starting with - after --" 0 "" -- $BIN tokenize -- -hello
echo old > $T/target.jsonl && ln -sf target.jsonl $T/link.jsonl
expect "--out through a symbolic link" 0 "" -- $BIN generate --prompts $T/ok.jsonl -n 1 --out $T/link.jsonl
[ -L $T/link.jsonl ] && grep -q '"index":0' $T/target.jsonl && echo "ok   the link stays and its target got the results" ||
    { echo "FAIL --out through a link: link replaced or target not written"; fails=$((fails + 1)); }
mkfifo $T/ofifo
expect "--out a FIFO nobody reads" 1 "a FIFO that nobody reads" -- $BIN generate --prompts $T/ok.jsonl -n 1 --out $T/ofifo
expect "seed out of range" 2 "out of range" -- $BIN generate -p hi --seed 18446744073709551616

# ---- fourth round (a tester's findings)
mkdir -p $T/many_added && cp models/sotu-moe/* $T/many_added/
{ printf '{"added_tokens": ['; for i in $(seq 0 19999); do printf '%s{"id": %d, "content": "<t%05d>", "normalized": false}' "$([ $i -gt 0 ] && echo ,)" $((1 + i % 4000)) $i; done
  printf '], '; tail -c +2 models/sotu-moe/tokenizer.json | sed 's/"added_tokens":/"shipped_added_tokens":/'; } > $T/many_added/tokenizer.json
head -c 1000000 /dev/zero | tr '\0' '<' > $T/lt.txt
t0=$(date +%s)
expect "20k added tokens sharing a first byte, 1 MB of text" 0 "" -- $BIN perplexity -m $T/many_added --file $T/lt.txt --max-windows 1
[ $(( $(date +%s) - t0 )) -le 10 ] || { echo "FAIL added-token matching took more than 10 s"; fails=$((fails + 1)); }
{ echo header; $BIN generate --prompts $T/ok.jsonl -n 2 --out /dev/stdout 2>/dev/null; echo footer; } > $T/grp.txt
[ "$(head -1 $T/grp.txt)" = header ] && [ "$(tail -1 $T/grp.txt)" = footer ] && grep -q '"index":0' $T/grp.txt &&
    echo "ok   --out /dev/stdout writes to standard output" || { echo "FAIL --out /dev/stdout replaced the file behind it"; fails=$((fails + 1)); }
yes '{"prompt": "The old man"}' | head -50 > $T/p50.jsonl; echo old > $T/keep2.jsonl
expect "file size limit on --out" 1 "File too large" -- sh -c "ulimit -f 1; $BIN generate --prompts $T/p50.jsonl -n 20 --out $T/keep2.jsonl"
[ "$(cat $T/keep2.jsonl)" = old ] && ! ls -a $T | grep -q lightmoe-out && echo "ok   the old --out stays, no temporary file left" ||
    { echo "FAIL file size limit: output changed or a temporary file left"; fails=$((fails + 1)); }
if [ "$(id -u)" -ne 0 ]; then
    echo precious > $T/ro.jsonl && chmod 444 $T/ro.jsonl
    expect "read-only --out is not replaced" 1 "cannot write to it" -- $BIN generate --prompts $T/ok.jsonl -n 1 --out $T/ro.jsonl
fi
expect "--stop that is not UTF-8" 2 "--stop: not valid UTF-8" -- $BIN generate -p hi --stop "$(printf '\xa9')"
printf '{"prompt": "lone \\ud800 x"}\n' > $T/sur.jsonl
expect "JSONL: unpaired surrogate escape" 1 "sur.jsonl:1: the escape \\ud800 is half of a UTF-16 surrogate pair" -- $BIN generate --prompts $T/sur.jsonl -n 1
cp configs/mixtral-8x7b.json "$T/x:2"
expect "--synthetic path with a ':'" 0 "" -- $BIN info --synthetic "$T/x:2"
expect "out-of-memory message names the parts" 1 "logits of" -- $BIN generate --prompts $T/many.jsonl -n 2000 --parallel 65536 --max-batch-tokens 65536 --kv-mem 100T
case $BIN in *san*) ;; *)  # the sanitizers need more address space than this limit
expect "weights that cannot be copied are mmap'ed (auto)" 0 "" -- sh -c "ulimit -v 300000; $BIN generate -p 'The old man' -n 4" ;;
esac
mkdir -p $T/short && cp models/sotu-moe/* $T/short/ && sed -i 's/"max_position_embeddings": 2048/"max_position_embeddings": 256/' $T/short/config.json
expect "perplexity window defaults to the model's positions" 0 "" -- $BIN perplexity -m $T/short --file models/sotu-moe/heldout.txt --max-windows 1
expect "info --ctx beyond the model" 1 "exceeds the model's 2048 positions" -- $BIN info --ctx 2049
mkdir -p $T/shd && cp tests/fixtures/mixtral_f16_sharded/* $T/shd/
expect "--out a new checkpoint file of the model directory" 1 "would be a file of the checkpoint directory" -- $BIN logits -m $T/shd --ids $ids --out $T/shd/model.safetensors
expect "--prompts - reading the --out file" 1 "is one of the inputs (standard input)" -- sh -c "$BIN generate --prompts - --out $T/ok.jsonl -n 1 < $T/ok.jsonl"
expect "--ids with a blank" 2 "--ids" -- $BIN logits --ids " 1" --out $T/l.bin
{ printf '{"x": '; printf '[%.0s' $(seq 999); printf '1'; printf ']%.0s' $(seq 999); printf ', '; tail -c +2 models/sotu-moe/tokenizer.json; } > $T/deep.json
expect "deeply nested tokenizer.json" 1 "nested 1000 levels deep (at most 64)" -- $BIN tokenize --tokenizer $T/deep.json hi

# ---- late failures: outputs are opened before the work
t0=$(date +%s)
expect "unwritable --out fails first" 1 "/nonexistent/out.jsonl: cannot open for writing: No such file or directory" -- $BIN generate --prompts $T/ok.jsonl -n 2 --out /nonexistent/out.jsonl
grep -q "generating" $T/err && { echo "FAIL unwritable --out: generation ran before the output was opened"; fails=$((fails + 1)); }
expect "unwritable logits --out fails first" 1 "cannot open for writing" -- $BIN logits -m $FIX --ids $ids --out /nonexistent/l.bin

# ---- first contact
expect "--version" 0 "" -- $BIN --version
grep -q "^lightmoe [0-9]" $T/out || { echo "FAIL --version prints no version"; fails=$((fails + 1)); }
expect "--prompt=TEXT" 0 "" -- $BIN generate --prompt=hi -n 2
expect "bare positional prompt gets a hint" 2 "give the prompt with -p" -- $BIN generate hello
expect "generate --batch is renamed" 2 "--max-batch-tokens" -- $BIN generate -p hi --batch 4
expect "info defaults to the shipped model" 0 "" -- $BIN info
grep -q "MixtralForCausalLM" $T/out || { echo "FAIL info without -m"; fails=$((fails + 1)); }
expect "tokenize defaults to the shipped tokenizer" 0 "" -- $BIN tokenize hello
expect "logits defaults to the shipped model" 0 "" -- $BIN logits --ids 1,2,3 --out $T/l.bin
expect "flag with a value it does not take" 2 "takes no value" -- $BIN generate -p hi --ignore-eos=1
expect "more threads than CPUs" 1 "threads asked for but this process may use" -- $BIN generate -p hi -t 4096

# The checkpoint must not be modified by any of this.
sha_before=$(sha256sum $FIX/model.safetensors | cut -d' ' -f1)
$BIN logits -m $FIX --ids $ids --out $T/l.bin >/dev/null 2>&1
[ "$(sha256sum $FIX/model.safetensors | cut -d' ' -f1)" = "$sha_before" ] || { echo "FAIL fixture modified"; fails=$((fails + 1)); }

echo "bad-input cases failed: $fails"
[ $fails -eq 0 ]
