#!/usr/bin/env bash
# CPU engine on the GPU machine's host CPU (16 Xeon cores): runs the golden
# and demo-model tests built here, then bench on synthetic Mixtral/Qwen3
# layers. The machine has none of our Debian libraries: carry `build` and
# `.deps` (apt-get download libcjson1 libpcre2-8-0 libutf8proc2 into .deps/).
set -euo pipefail
mkdir -p /tmp/lmdeps
for f in .deps/*.deb; do dpkg -x "$f" /tmp/lmdeps; done
export LD_LIBRARY_PATH=/tmp/lmdeps/usr/lib/x86_64-linux-gnu:/tmp/lmdeps/lib/x86_64-linux-gnu
lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core|NUMA node\(s\)|L3"
free -g | head -2
./build/tests/test_golden | tail -1
./build/tests/test_demo_model | tail -1
./build/tests/test_kernels | tail -1
for b in 1 16; do
    echo "### --synthetic mixtral-8x7b.json:8 --batch $b --prompt-len 64 --gen-len 32"
    ./build/lightmoe bench --synthetic fuzz/corpus/config/mixtral-8x7b.json:8 --batch "$b" --prompt-len 64 --gen-len 32 2>&1 | grep -v '^building\|^measuring'
done
echo "### --synthetic qwen3-30b-a3b.json:8 --batch 1 --prompt-len 64 --gen-len 32"
./build/lightmoe bench --synthetic fuzz/corpus/config/qwen3-30b-a3b.json:8 --batch 1 --prompt-len 64 --gen-len 32 2>&1 | grep -v '^building\|^measuring'
