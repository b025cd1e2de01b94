#!/usr/bin/env bash
# How far llama.cpp's own logits move with its settings and the CPU it runs on.
#
# Builds scripts/llamacpp-top5.cpp against the llama.cpp that ../shared/bench/llamacpp-build.sh
# built, runs greedy decoding of the SmolLM2 raw prompt under several llama.cpp configurations
# (flash attention on/off, 1/2 threads, f16/f32 KV cache), and prints each one's largest top-5
# logit difference from the reference in fixtures/smollm2/ over the first 14 steps. This is the
# noise floor of the logit comparison in tests/smollm2.rs.
#
# usage: scripts/llamacpp-logit-spread.sh [BENCH_DIR]   (default ~/.cache/deepseek-bench)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bench=${1:-$HOME/.cache/deepseek-bench}
[ -d "$bench/src/include" ] && [ -d "$bench/build" ] || {
  echo "no llama.cpp source and build under $bench: run ../shared/bench/llamacpp-build.sh" >&2; exit 1; }
libs=$(find "$bench/build" -name 'libllama.a' -o -name 'libggml*.a' | tr '\n' ' ')
[ -n "$libs" ] || { echo "no static llama.cpp libraries under $bench/build" >&2; exit 1; }
bin=$root/target/llamacpp-top5
# The libraries twice: static archives that refer to each other.
g++ -O2 -std=c++17 -I "$bench/src/include" -I "$bench/src/ggml/include" \
  "$here/llamacpp-top5.cpp" $libs $libs -fopenmp -lpthread -ldl -o "$bin"
model=$("$here/fetch-smollm2.sh")
ref=$root/fixtures/smollm2/llamacpp-greedy-raw-prompt.txt
ids=$(sed -n 's/^prompt_ids[^[]*\[\(.*\)\]/\1/p' "$ref" | tr -d ',')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for cfg in "1 2 f16" "1 1 f16" "1 2 f32" "0 2 f16" "0 2 f32"; do
  set -- $cfg
  "$bin" "$model" "$1" "$2" "$3" 14 $ids 2>/dev/null > "$out/fa$1-t$2-$3.txt"
done
python3 - "$ref" "$out"/*.txt <<'PY'
import re, sys
def steps(path):
    out = []
    for line in open(path):
        m = re.match(r'step\s+\d+ id\s+(\d+).*top5:(.*)', line)
        if m:
            out.append((int(m.group(1)), {int(a): float(b) for a, b in
                                          (t.split(':') for t in m.group(2).split())}))
    return out[:14]
ref = steps(sys.argv[1])
print("llama.cpp configuration      worst |top-5 logit - reference| over 14 steps")
for p in sys.argv[2:]:
    worst, note = 0.0, ""
    for i, ((rid, rtop), (oid, otop)) in enumerate(zip(ref, steps(p))):
        if rid != oid:
            note = f"  (picks token {oid} instead of {rid} at step {i})"
            break
        worst = max([worst] + [abs(rtop[t] - otop[t]) for t in rtop if t in otop])
    name = p.rsplit('/', 1)[1][:-4]
    print(f"{name:28s} {worst:.3f}{note}")
PY
