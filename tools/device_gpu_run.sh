#!/usr/bin/env bash
# One GPU-machine session: any of the stages below, in order, each under its
# own time limit, logs under $OUT, a summary at the end. Built here (nvcc);
# carry `.devbin` or `.devpack` (lightmoe, test_ops, test_golden, moe_cuda, attn_cuda, gemm_sm90_lab,
# p200.jsonl, the shared configs) and `.deps` (libcjson1, libpcre2-8-0,
# libutf8proc2, libmicrohttpd12 .debs: the machine has none of our Debian
# libraries). LIGHTMOE_KERNELS picks the kernels the executor runs (fast by
# default; stages ops-simple and golden-simple run the v0 kernels).
#   bash tools/device_gpu_run.sh moe attn ops golden memcheck model bench profile
set -uo pipefail
OUT=${OUT:-/tmp/out}
# .devpack/devbin.tar.xz (optional): .devbin packed, when it would not fit the transfer limit
[ -f .devpack/devbin.tar.xz ] && mkdir -p .devbin && tar xJf .devpack/devbin.tar.xz -C .devbin
mkdir -p /tmp/lmdeps "$OUT" build && cp .devbin/lightmoe build/
for f in .deps/*.deb; do dpkg -x "$f" /tmp/lmdeps; done
export LD_LIBRARY_PATH=/tmp/lmdeps/usr/lib/x86_64-linux-gnu:/tmp/lmdeps/lib/x86_64-linux-gnu
B=./.devbin/lightmoe
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
stage() { echo; echo "### $1 ($(date +%T))"; }
for s in "$@"; do
    case $s in
    moe) stage "MoE layer lab"; timeout 240 ./.devbin/moe_cuda ${MOE_ARGS:-} 2>&1 | tee "$OUT/moe.log" ;;
    moe-var) stage "MoE lab variants"
        timeout 100 ./.devbin/moe_cuda -s mixtral -m 64,128,256 -B -v new -v new:nb=8 -v new:gemm=large -v new:stages=4 2>&1 | tee "$OUT/moe_var1.log" | tail -25
        timeout 60 ./.devbin/moe_cuda -s qwen3 -m 1,16 -B -v new -v new:ra=0 -v new:comb=0 -v new:dpdl=1 -v new:stages=5 2>&1 | tee "$OUT/moe_var2.log" | tail -20 ;;
    racecheck) stage "compute-sanitizer racecheck + memcheck, MoE lab (qwen3 M=1,16)"
        timeout 120 compute-sanitizer --tool racecheck ./.devbin/moe_cuda -s qwen3 -m 1,16 -r 1 -B -v new > "$OUT/racecheck.log" 2>&1; echo "racecheck rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$OUT/racecheck.log" | head -5
        timeout 120 compute-sanitizer --tool memcheck ./.devbin/moe_cuda -s qwen3 -m 1,16 -r 1 -B -v new > "$OUT/memcheck_moe.log" 2>&1; echo "memcheck rc=$?"; grep -E "ERROR SUMMARY" "$OUT/memcheck_moe.log" | head -3 ;;
    sm90) stage "Hopper GEMM lab"
        timeout 150 ./.devbin/gemm_sm90_lab ${SM90_ARGS:-} 2>&1 | tee "$OUT/sm90.log" | tail -45
        cuobjdump -sass ./.devbin/gemm_sm90_lab 2>/dev/null | grep -cE "HGMMA" | sed 's/^/HGMMA instructions in the lab binary: /'
        cuobjdump -sass ./.devbin/moe_cuda 2>/dev/null | grep -cE "LDL|STL" | sed 's/^/LDL|STL in moe_cuda: /' ;;
    sm90-retry) stage "Hopper large-M GEMM lab (variants; a hung one is dropped and the run repeated)"
        vars=${SM90_VARS:-1,4,5,6,7,8,9,10}
        for attempt in 1 2 3; do
            timeout 200 ./.devbin/gemm_sm90_lab -v "$vars" ${SM90_ARGS:-} > "$OUT/sm90.log" 2>&1; rc=$?
            echo "sm90 lab rc=$rc (variants $vars)"
            [ "$rc" -ne 3 ] && break
            hung=$(grep '^WATCHDOG:' "$OUT/sm90.log" | grep -o 'sm90-v[0-9]*' | tail -1 | sed 's/sm90-v//')
            [ -z "$hung" ] && break
            echo "variant $hung hung"; echo "$hung" >> "$OUT/sm90_hung.txt"
            vars=$(echo ",$vars," | sed "s/,$hung,/,/; s/^,//; s/,\$//")
        done
        tail -40 "$OUT/sm90.log" ;;
    sm90s) stage "Hopper streaming GEMM lab (small M)"
        vars=${SM90S_VARS:-auto;kc=2;kc=4;mode=whole;f32nt=64}
        for attempt in 1 2 3; do
            args=(); IFS=';' read -ra vs <<< "$vars"; for v in "${vs[@]}"; do args+=(-v "$v"); done
            timeout 240 ./.devbin/gemm_sm90s_lab "${args[@]}" ${SM90S_ARGS:-} > "$OUT/sm90s.log" 2>&1; rc=$?
            echo "sm90s lab rc=$rc (variants $vars)"
            [ "$rc" -ne 3 ] && break
            hung=$(grep '^WATCHDOG: variant ' "$OUT/sm90s.log" | tail -1 | sed 's/^WATCHDOG: variant \([^:]*\):.*/\1/')
            [ -z "$hung" ] && break
            echo "variant $hung hung"; echo "$hung" >> "$OUT/sm90s_hung.txt"
            vars=$(echo ";$vars;" | sed "s/;$hung;/;/; s/^;//; s/;\$//")
        done
        tail -45 "$OUT/sm90s.log" ;;
    sample) stage "GPU sampler lab"
        timeout 150 ./.devbin/sample_cuda > "$OUT/sample.log" 2>&1; echo "rc=$?"; tail -30 "$OUT/sample.log" ;;
    attn-quick2) stage "attention lab --quick (checks, graph replays)"
        timeout 150 ./.devbin/attn_cuda --quick > "$OUT/attn_quick.log" 2>&1; echo "rc=$?"; tail -15 "$OUT/attn_quick.log" ;;
    moe-small) stage "MoE lab, small kernel forced"; timeout 120 ./.devbin/moe_cuda -f small -m 1,16,64,128,256 -q 2>&1 | tee "$OUT/moe_small.log" ;;
    attn-quick) stage "attention lab --quick under memcheck"
        timeout 200 compute-sanitizer --tool memcheck --error-exitcode 3 ./.devbin/attn_cuda --quick > "$OUT/attn_memcheck.log" 2>&1
        echo "rc=$?"; tail -5 "$OUT/attn_memcheck.log" ;;
    attn) stage "attention lab"; timeout 200 ./.devbin/attn_cuda 2>&1 | tee "$OUT/attn.log" ;;
    ops) stage "op tests, cuda against ref"
        LM_OPS_EXECS=cuda timeout 200 ./.devbin/test_ops >"$OUT/ops.log" 2>&1; echo "rc=$?"
        tail -28 "$OUT/ops.log"; grep -m8 FAIL "$OUT/ops.log" ;;
    ops-simple) stage "op tests, cuda (LIGHTMOE_KERNELS=simple) against ref"
        LIGHTMOE_KERNELS=simple LM_OPS_EXECS=cuda timeout 200 ./.devbin/test_ops >"$OUT/ops_simple.log" 2>&1; echo "rc=$?"
        tail -28 "$OUT/ops_simple.log"; grep -m8 FAIL "$OUT/ops_simple.log" ;;
    golden-simple) stage "golden models, cuda simple kernels"
        LIGHTMOE_KERNELS=simple LM_GOLDEN_EXECS=cuda timeout 200 ./.devbin/test_golden >"$OUT/golden_simple.log" 2>&1; echo "rc=$?"
        grep -E "cuda|checks|FAIL" "$OUT/golden_simple.log" | head -14 ;;
    golden-portable) stage "golden models, cuda portable kernels"
        LIGHTMOE_KERNELS=portable LM_GOLDEN_EXECS=cuda timeout 200 ./.devbin/test_golden >"$OUT/golden_portable.log" 2>&1; echo "rc=$?"
        grep -E "cuda|checks|FAIL" "$OUT/golden_portable.log" | head -14 ;;
    profile) stage "per-op GPU time (LIGHTMOE_PROFILE=1), mixtral-8x7b:8"
        for b in ${PROFILE_BATCHES:-1 256}; do
            LIGHTMOE_PROFILE=1 timeout 200 $B bench --synthetic .devbin/mixtral-8x7b.json:8 --batch $b --prompt-len 128 \
                --gen-len 16 --device cuda 2>&1 | tee -a "$OUT/profile.log" | grep -vE "^\s*$|^(measuring|building|lightmoe)"
        done ;;
    golden) stage "golden models through the cuda executor"
        LM_GOLDEN_EXECS=cuda timeout 200 ./.devbin/test_golden >"$OUT/golden.log" 2>&1; echo "rc=$?"
        grep -E "cuda|checks|FAIL" "$OUT/golden.log" | head -14 ;;
    memcheck) stage "compute-sanitizer memcheck, op tests"
        LM_OPS_EXECS=cuda timeout 400 compute-sanitizer --tool memcheck --error-exitcode 3 ./.devbin/test_ops >"$OUT/memcheck.log" 2>&1
        echo "rc=$?"; grep -E "ERROR SUMMARY|Invalid|checks" "$OUT/memcheck.log" | head -8 ;;
    model) stage "shipped model, cpu vs cuda"; timeout 200 bash tools/device_cuda_model.sh ;;
    bench) stage "bench synthetic mixtral-8x7b:8"
        for g in ${GRAPHS:-on}; do
            ga=; [ "$g" = off ] && ga=--no-graphs
            timeout 400 $B bench --synthetic .devbin/mixtral-8x7b.json:8 --batch "${BENCH_BATCHES:-1,16,64,256}" --prompt-len 128 \
                --gen-len ${GEN:-128} --device cuda $ga ${BENCH_ARGS:-} --json "$OUT/bench_$g.json" 2>&1 | tee -a "$OUT/bench.log" \
                | grep -E "^(machine|setup|prefill|decode|memory)"
        done ;;
    bench-qwen3) stage "bench synthetic qwen3-30b-a3b (48 layers)"
        timeout 500 $B bench --synthetic .devbin/qwen3-30b-a3b.json --batch "${QWEN_BATCHES:-1,64,256}" --prompt-len 128 \
            --gen-len ${GEN:-128} --device cuda ${BENCH_ARGS:-} --json "$OUT/bench_qwen3.json" 2>&1 | tee -a "$OUT/bench_qwen3.log" \
            | grep -E "^(model|machine|setup|prefill|decode|memory)" ;;
    generate) stage "generate: 2000 prompts of the shipped model through the scheduler on the GPU"
        bash bench/make_prompts.sh 2000 40 > /tmp/p2k.jsonl
        timeout 120 $B generate --prompts /tmp/p2k.jsonl -n 64 --parallel 256 --out "$OUT/gen2k.jsonl" 2>&1 | tail -3
        python3 -c "import json,sys; r=[json.loads(l) for l in open('$OUT/gen2k.jsonl')]; print(len(r), 'answers,', sum(1 for x in r if not x.get('text')), 'empty,', sum(1 for x in r if 'error' in x), 'errors')" ;;
    *) echo "unknown stage $s" ;;
    esac
done
