#!/usr/bin/env python3
"""Test vectors for the types added after the first four: Q5_0, Q5_1 (quantize and
dequantize) and the K-quants Q4_K, Q5_K, Q6_K (dequantize), from the Python `gguf`
package (0.19.0), an independent implementation of ggml's block formats.

* `quantize`: every input row of `vectors.json` (make_vectors.py's cases) quantized by
  `gguf.quants.quantize` to Q5_0 and Q5_1, with the dequantization of those bytes.
  Known difference: for an all-`-0.0` block gguf's argmax picks the first `-0.0` as the
  maximum (d = -0.0/-16 = +0.0) where ggml's C loop keeps `max = +0.0` (d = -0.0, f16
  0x8000); as in vectors.json, ggml's bytes are stored for that case (`gguf_differs`).
* `dequantize`: blocks of random bytes (scales drawn as finite f16 values so that no
  NaN or infinity hides a difference; every quant and packed-scale bit random) and
  their `gguf.quants.dequantize` output.

Output: oracle/quant/vectors_more.json. Run: python3 oracle/quant/make_vectors_more.py
(deterministic; numpy seeded).
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32


def f32hex(a):
    return [format(int(u), "08x") for u in np.asarray(a, dtype=F32).view(np.uint32)]


def f16(rng, n, scale):
    return (rng.standard_normal(n) * scale).astype(np.float16).view(np.uint8).reshape(n, 2)


def random_blocks(rng, qt, n):
    size = gguf.GGML_QUANT_SIZES[qt][1]
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    if qt in (T.Q5_0,):
        b[:, 0:2] = f16(rng, n, 0.05)
    elif qt in (T.Q5_1,):
        b[:, 0:2] = f16(rng, n, 0.05)
        b[:, 2:4] = f16(rng, n, 0.5)
    elif qt in (T.Q4_K, T.Q5_K):
        b[:, 0:2] = f16(rng, n, 0.01)
        b[:, 2:4] = f16(rng, n, 0.01)
    elif qt == T.Q6_K:
        b[:, 208:210] = f16(rng, n, 0.01)
    # A few blocks with extreme scales (largest finite f16, subnormal, zero).
    special = [0x7BFF, 0xFBFF, 0x0001, 0x0000]
    for i, bits in enumerate(special[: max(0, n - 4)]):
        v = np.array([bits], dtype=np.uint16).view(np.uint8)
        if qt == T.Q6_K:
            b[i, 208:210] = v
        else:
            b[i, 0:2] = v
            if qt in (T.Q4_K, T.Q5_K, T.Q5_1):
                b[i, 2:4] = np.array([special[(i + 1) % 4]], dtype=np.uint16).view(np.uint8)
    return b


def main():
    with open(os.path.join(HERE, "vectors.json")) as f:
        base = json.load(f)
    out = {
        "generator": "oracle/quant/make_vectors_more.py",
        "gguf_version": __import__("importlib.metadata").metadata.version("gguf"),
        "numpy_version": np.__version__,
        "quantize": [],
        "dequantize": [],
    }
    for c in base["cases"]:
        a = np.array([int(h, 16) for h in c["input"]], dtype=np.uint32).view(F32)
        e = {"name": c["name"], "input": c["input"]}
        for key, qt in (("q5_0", T.Q5_0), ("q5_1", T.Q5_1)):
            with np.errstate(all="ignore"):
                qb = quantize(a.reshape(1, -1), qt).reshape(-1)
            if key == "q5_0":
                blocks = qb.reshape(-1, 22).copy()
                for i, blk in enumerate(a.reshape(-1, 32)):
                    if np.all(blk == 0) and np.all(np.signbit(blk)):
                        e.setdefault("gguf_differs", {})[key] = qb.tobytes().hex()
                        blocks[i, 0:2] = [0x00, 0x80]  # ggml C: d = +0.0 / -16 = -0.0
                qb = blocks.reshape(-1)
            with np.errstate(all="ignore"):
                dq = dequantize(qb.reshape(1, -1), qt).reshape(-1)
            e[key] = qb.tobytes().hex()
            e[key + "_dequant"] = f32hex(dq)
        out["quantize"].append(e)
    rng = np.random.default_rng(20261204)
    for key, qt in (("q5_0", T.Q5_0), ("q5_1", T.Q5_1), ("q4_k", T.Q4_K), ("q5_k", T.Q5_K), ("q6_k", T.Q6_K)):
        b = random_blocks(rng, qt, 12)
        with np.errstate(all="ignore"):
            dq = dequantize(b.reshape(1, -1), qt).reshape(-1)
        assert np.all(np.isfinite(dq)), key
        out["dequantize"].append({"type": key, "blocks": b.shape[0], "bytes": b.tobytes().hex(), "expected": f32hex(dq)})
    path = os.path.join(HERE, "vectors_more.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}: {len(out['quantize'])} quantize cases, {len(out['dequantize'])} dequantize sets")


if __name__ == "__main__":
    main()
