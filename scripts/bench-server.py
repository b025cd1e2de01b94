#!/usr/bin/env python3
"""Aggregate decode throughput of an OpenAI-compatible server under 1, 2, 4 and 8 concurrent
streams, for `deepseek serve` and llama.cpp's `llama-server` on the same GGUF file.

Usage: bench-server.py MODEL.gguf [--deepseek BIN] [--llama-bin DIR] [-n 32] [-t 2]
       [--streams 1,2,4,8] [--engines deepseek,llama]

Each engine is started with 8 parallel slots on a free loopback port. For each concurrency level
N, N clients send different prompts at the same moment (streamed /v1/completions, temperature 0,
max_tokens n, EOS ignored) after one warm-up request (and, for deepseek, once `/health` no longer
reports its weights `repacking`). Reported per level: aggregate generated
tokens per second (all tokens of all streams / wall time from the first request to the last
token), and the median and worst time to first token. Prints a Markdown table.
"""
import argparse, json, os, statistics, subprocess, threading, time, urllib.request
from localserver import free_port, wait_ready

PROMPTS = [
    "The history of the printing press begins", "In the middle of the ocean there is",
    "A recipe for bread needs flour, water and", "The theory of relativity says that",
    "Once upon a time, in a village by the sea,", "The most important rule of programming is",
    "Mountains are formed when tectonic plates", "The first computers were built with",
]

def stream(port, prompt, n, out):
    body = {"model": "m", "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True,
            "ignore_eos": True}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.time(); first = None; chunks = 0
    with urllib.request.urlopen(req, timeout=3600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            d = json.loads(line[5:])
            if d.get("choices") and d["choices"][0].get("text"):
                chunks += 1
                if first is None:
                    first = time.time()
    out.append({"ttft": (first or time.time()) - t0, "end": time.time(), "start": t0})

def wait_repacked(port, timeout=300):
    """Wait until /health no longer says `repacking` (deepseek repacks its weights in the
    background after the load; the speeds measured are those after it)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            if not json.loads(r.read()).get("repacking", False):
                return
        time.sleep(0.2)
    raise SystemExit("the weights were still repacking after the timeout")

def run_level(port, n_streams, n):
    results = []
    threads = [threading.Thread(target=stream, args=(port, PROMPTS[i % len(PROMPTS)], n, results))
               for i in range(n_streams)]
    t0 = time.time()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = max(r["end"] for r in results) - t0
    ttfts = [r["ttft"] for r in results]
    return n_streams * n / wall, statistics.median(ttfts), max(ttfts)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--deepseek", default="target/release/deepseek")
    ap.add_argument("--llama-bin", default=os.path.expanduser("~/.cache/deepseek-bench/llama.cpp/bin"))
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--engines", default="deepseek,llama")
    a = ap.parse_args()
    levels = [int(x) for x in a.streams.split(",")]
    table = {}
    for engine in a.engines.split(","):
        port = free_port()
        if engine == "deepseek":
            cmd = [a.deepseek, "serve", "--model", a.model, "--port", str(port), "--parallel", "8",
                   "-t", str(a.t), "--ctx-size", "512"]
        else:
            cmd = [os.path.join(a.llama_bin, "llama-server"), "-m", a.model, "--port", str(port),
                   "--parallel", "8", "-t", str(a.t), "-c", str(512 * 8), "--no-warmup"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, proc)
            wait_repacked(port)
            run_level(port, 1, 4)  # warm-up
            for lv in levels:
                table[(engine, lv)] = run_level(port, lv, a.n)
                tps, med, worst = table[(engine, lv)]
                print(f"{engine} x{lv}: {tps:.2f} tok/s aggregate, TTFT median {med:.2f} s, worst {worst:.2f} s", flush=True)
        finally:
            proc.terminate(); proc.wait()
    engines = a.engines.split(",")
    print()
    print("| streams | " + " | ".join(f"{e} tok/s | {e} TTFT med/worst (s)" for e in engines) + " |")
    print("|---|" + "---|---|" * len(engines))
    for lv in levels:
        cells = []
        for e in engines:
            tps, med, worst = table[(e, lv)]
            cells += [f"{tps:.2f}", f"{med:.1f} / {worst:.1f}"]
        print(f"| {lv} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
