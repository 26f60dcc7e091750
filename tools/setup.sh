#!/usr/bin/env bash
# Installs what lightmoe needs to build and test on Debian/Ubuntu:
# a C compiler, cJSON, PCRE2, utf8proc, npm (fetches the real tokenizer files
# the tests compare against) and clang (libFuzzer smoke tests).
set -euo pipefail
pkgs=(build-essential libcjson-dev libpcre2-dev libutf8proc-dev npm clang libclang-rt-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then echo "setup: all packages present"; exit 0; fi
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"
