#!/usr/bin/env python3
"""Greedy tokens of this engine against llama.cpp on the same GGUF files and the same prompt ids.

Usage: llamacpp-compare.py [--llama-bin DIR] [--deepseek BIN] [-n N] MODEL.gguf [MODEL.gguf ...]

For each model, starts llama.cpp's llama-server on a free loopback port, and for each prompt gets
the prompt ids and greedy continuation from `deepseek run --temperature 0 --json`, then asks
llama-server for its greedy continuation of the same ids. Prints one line per (model, prompt)
with the number of matching leading tokens; where they part, it prints llama.cpp's top-2
log-probability margin at that step (a near-tie explains a difference that is not a bug: the
two engines round activations differently inside quantised products). Exits 1 if a continuation
differs at a step where llama.cpp's own margin exceeds --margin.
Builds nothing: run ../shared/bench/llamacpp-build.sh (or point --llama-bin at a llama.cpp build).
"""
import argparse, json, os, subprocess, sys, time, urllib.request
from localserver import free_port, wait_ready

PROMPTS = [
    ("raw", ["The capital of France is"]),
    ("chat", ["--chat", "What is the capital of France?"]),
    ("ids", ["--prompt-ids", None]),  # filled per model with the first prompt's ids
]

def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bin", default=os.path.expanduser("~/.cache/deepseek-bench/llama.cpp/bin"))
    ap.add_argument("--deepseek", default="target/release/deepseek")
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--margin", type=float, default=0.3,
                    help="top-2 log-probability margin (nats) below which a difference is a near-tie")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    failed = False
    for model in a.models:
        port = free_port()
        proc = subprocess.Popen([os.path.join(a.llama_bin, "llama-server"), "-m", model, "--port", str(port),
                                 "--host", "127.0.0.1", "-c", "2048", "-np", "1", "-t", "2", "--no-warmup"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, proc, "llama-server", timeout=300)
            first_ids = None
            for name, extra in PROMPTS:
                if extra[-1] is None:
                    extra = extra[:-1] + [",".join(map(str, first_ids))]
                out = subprocess.run([a.deepseek, "run", "--model", model, *extra, "--temperature", "0",
                                      "-n", str(a.n), "--json"], capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"deepseek failed: {out.stderr.strip()}")
                ours = json.loads(out.stdout)
                first_ids = first_ids or ours["prompt_ids"]
                r = post(port, "/completion", {"prompt": ours["prompt_ids"], "n_predict": a.n, "temperature": 0,
                                               "return_tokens": True, "cache_prompt": False})
                theirs = r["tokens"]
                mine = ours["ids"]
                same = 0
                while same < min(len(theirs), len(mine)) and theirs[same] == mine[same]:
                    same += 1
                line = f"{os.path.basename(model)} {name}: {same}/{max(len(theirs), len(mine))} tokens identical"
                if same < max(len(theirs), len(mine)):
                    # llama.cpp's own two best log-probabilities at the step where the two part.
                    p = post(port, "/completion", {"prompt": ours["prompt_ids"] + theirs[:same], "n_predict": 1,
                                                   "temperature": 0, "cache_prompt": False, "n_probs": 2})
                    top = p["completion_probabilities"][0]["top_logprobs"]
                    margin = top[0]["logprob"] - top[1]["logprob"] if len(top) >= 2 else None
                    line += f"; first difference at step {same} (llama.cpp top-2 log-probability margin {margin if margin is None else round(margin, 4)})"
                    if margin is None or margin > a.margin:
                        failed = True
                        line += "  <-- NOT a near-tie"
                print(line, flush=True)
        finally:
            proc.terminate(); proc.wait()
    sys.exit(1 if failed else 0)

if __name__ == "__main__":
    main()
