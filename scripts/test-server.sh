#!/usr/bin/env bash
# The server's HTTP test suite: builds `deepseek`, installs the `openai` client in a virtual
# environment under target/, and runs tests/server against real servers on free ports of
# 127.0.0.1 (the tests start and stop them).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin deepseek
venv=target/server-test-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check openai requests pytest

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
DEEPSEEK_BIN="$PWD/target/debug/deepseek" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/server "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$( (grep -Eo '[0-9]+ passed' "$log" || true) | tail -n1 | awk '{print $1+0}')
failed=$( (grep -Eo '[0-9]+ (failed|errors?)' "$log" || true) | awk '{s+=$1} END {print s+0}')
echo "${passed:-0} passed, ${failed:-0} failed"
exit "$status"
