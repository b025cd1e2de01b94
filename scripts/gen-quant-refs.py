#!/usr/bin/env python3
"""Generate reference data for deepseek-tensor's (de)quantisation tests with gguf-py.

Usage: pip install gguf numpy && python3 scripts/gen-quant-refs.py

Writes into crates/tensor/tests/data/:
  deq_<T>.bin   random valid blocks of type T (raw ggml block bytes)
  deq_<T>.f32   gguf.quants.dequantize of those blocks (little-endian f32)
  q_<T>.f32     random f32 input rows (little-endian)
  q_<T>.bin     gguf.quants.quantize of that input (only for types gguf-py can quantise)
  manifest.json what was written and by which gguf version
The output is deterministic (fixed seed).
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "tensor", "tests", "data")

# name: (block elements, block bytes)
TYPES = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}
# byte offsets of f16 fields inside a block (given reasonable random values, never NaN/inf)
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
QUANTIZABLE = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def random_blocks(rng, name, nblocks):
    _, bb = TYPES[name]
    raw = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        vals = (rng.standard_normal(nblocks) * 0.02).astype(np.float16)
        if name in ("Q4_1", "Q5_1") and off == 2:
            vals = (-np.abs(rng.standard_normal(nblocks)) * 0.1).astype(np.float16)
        vals[0] = np.float16(0.0) if nblocks > 3 else vals[0]   # a zero scale
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(nblocks, 2)
    return raw


def quant_inputs(rng, name):
    be, _ = TYPES[name]
    nblocks = 24
    x = rng.standard_normal((nblocks, be)).astype(np.float32)
    x[1] *= 1e-3
    x[2] = 0.0                      # all zero block
    x[3] = 0.5                      # constant block
    x[4] = np.abs(x[4])             # all positive
    x[5] = -np.abs(x[5])            # all negative
    x[6] = np.round(x[6] * 4) / 4   # many ties
    x[7] *= 100.0
    return x.reshape(-1)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261129)
    try:
        from importlib.metadata import version
        gv = version("gguf")
    except Exception:
        gv = "unknown"
    manifest = {"gguf_version": gv, "numpy_version": np.__version__, "types": {}}
    for name, (be, bb) in TYPES.items():
        qt = getattr(T, name)
        nblocks = 16 if be == 32 else 8
        raw = random_blocks(rng, name, nblocks)
        deq = dequantize(raw.reshape(-1), qt).astype(np.float32).reshape(-1)
        assert deq.shape[0] == nblocks * be
        raw.tofile(os.path.join(OUT, f"deq_{name}.bin"))
        deq.astype("<f4").tofile(os.path.join(OUT, f"deq_{name}.f32"))
        entry = {"deq_blocks": nblocks}
        x = quant_inputs(rng, name)
        x.astype("<f4").tofile(os.path.join(OUT, f"q_{name}.f32"))
        entry["q_values"] = int(x.shape[0])
        if name in QUANTIZABLE:
            q = quantize(x.reshape(-1, be), qt).reshape(-1)
            assert q.shape[0] == x.shape[0] // be * bb
            q.astype(np.uint8).tofile(os.path.join(OUT, f"q_{name}.bin"))
            entry["q_ref"] = True
        else:
            entry["q_ref"] = False
        manifest["types"][name] = entry
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"wrote {OUT} ({total} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
