#!/usr/bin/env python3
"""Quantization test vectors for Q4_0 / Q4_1 / Q8_0 / Q8_1 (ggml block formats).

Expected bytes come from the `gguf` Python package's quantizers
(`gguf.quants.quantize`), which mirror ggml's reference quantizers
(`quantize_row_q4_0_ref` etc. in ggml-quants.c). As an independent check, every
case is ALSO quantized by a scalar float32 port of the C reference written here
(`ref_*` below); the script aborts if the two disagree on any byte.

Q8_1 is not in gguf: its d and qs equal Q8_0's (same formula), and
s = f16(float32(sum(qs)) * d_f32) where d_f32 is the *unrounded* f32 scale, as in
ggml's `quantize_row_q8_1_ref` (`y[i].s = GGML_FP32_TO_FP16(sum*d)`).

Output: oracle/quant/vectors.json (schema in oracle/README.md).
Run: python3 oracle/quant/make_vectors.py  (deterministic; numpy seeded)
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

F32 = np.float32
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")


def f32hex(a):
    return [format(int(u), "08x") for u in np.asarray(a, dtype=F32).view(np.uint32)]


def f16bytes(x):
    return np.array([x], dtype=F32).astype(np.float16).tobytes()


# ---------------------------------------------------------------- scalar C ports
def c_roundf(x):
    # roundf: half away from zero
    import math
    x = F32(x)
    a = abs(float(x))  # exact in double
    r = math.floor(a) + (1 if (a - math.floor(a)) >= 0.5 else 0)
    return -r if x < 0 else r


def ref_q4_0(x):
    out = bytearray()
    for b in range(len(x) // 32):
        blk = x[b * 32:(b + 1) * 32]
        amax = F32(0); mx = F32(0)
        for v in blk:
            if amax < abs(v):
                amax = abs(v); mx = v
        d = F32(mx / F32(-8))
        idv = F32(F32(1) / d) if d != 0 else F32(0)
        out += f16bytes(d)
        for j in range(16):
            x0 = F32(blk[j] * idv); x1 = F32(blk[16 + j] * idv)
            xi0 = min(15, int(F32(x0 + F32(8.5))))  # (int8_t) truncation toward zero
            xi1 = min(15, int(F32(x1 + F32(8.5))))
            out.append(xi0 | (xi1 << 4))
    return bytes(out)


def ref_q4_1(x):
    out = bytearray()
    for b in range(len(x) // 32):
        blk = x[b * 32:(b + 1) * 32]
        mn = F32(np.finfo(F32).max); mx = F32(-np.finfo(F32).max)
        for v in blk:
            if v < mn: mn = v
            if v > mx: mx = v
        d = F32(F32(mx - mn) / F32(15))
        idv = F32(F32(1) / d) if d != 0 else F32(0)
        out += f16bytes(d) + f16bytes(mn)
        for j in range(16):
            x0 = F32(F32(blk[j] - mn) * idv); x1 = F32(F32(blk[16 + j] - mn) * idv)
            xi0 = min(15, int(F32(x0 + F32(0.5))))
            xi1 = min(15, int(F32(x1 + F32(0.5))))
            out.append(xi0 | (xi1 << 4))
    return bytes(out)


def ref_q8_x(x):
    """Returns (q8_0 bytes, q8_1 bytes, per-block s as u16)."""
    o0 = bytearray(); o1 = bytearray(); ss = []
    for b in range(len(x) // 32):
        blk = x[b * 32:(b + 1) * 32]
        amax = F32(0)
        for v in blk:
            amax = max(amax, abs(v))
        d = F32(amax / F32(127))
        idv = F32(F32(1) / d) if d != 0 else F32(0)
        qs = [c_roundf(F32(v * idv)) for v in blk]
        s = F32(F32(sum(qs)) * d)
        qb = np.array(qs, dtype=np.int8).tobytes()
        o0 += f16bytes(d) + qb
        sb = f16bytes(s)
        o1 += f16bytes(d) + sb + qb
        ss.append(format(int(np.frombuffer(sb, dtype=np.uint16)[0]), "04x"))
    return bytes(o0), bytes(o1), ss


# Cases where gguf's numpy quantizer is known to differ from ggml's C reference.
# neg_zero_32/q4_0: C keeps max=+0.0 (strict '<' never fires) -> d = +0.0/-8 = -0.0
# (f16 0x8000); gguf's argmax picks the first -0.0 -> d = -0.0/-8 = +0.0 (0x0000).
KNOWN_GGUF_DIFFS = {("neg_zero_32", "q4_0")}

# ---------------------------------------------------------------- cases
def cases():
    rng = np.random.default_rng(20261126)
    c = []

    def add(name, vals, note=""):
        a = np.asarray(vals, dtype=F32)
        assert a.ndim == 1 and a.size % 32 == 0 and 32 <= a.size <= 256, (name, a.size)
        assert np.all(np.isfinite(a)), name
        c.append((name, a, note))

    add("zeros_64", np.zeros(64))
    add("neg_zero_32", np.full(32, -0.0))
    add("equal_pos_64", np.full(64, 1.5))
    add("equal_neg_64", np.full(64, -2.25))
    add("equal_pos_small_32", np.full(32, 0.1))
    # one nonzero value per block
    v = np.zeros(64); v[5] = 3.0; v[40] = -7.0
    add("single_nonzero_64", v)
    # large but finite; max-min must stay finite for Q4_1
    add("large_1e30_64", rng.standard_normal(64) * 1e30)
    add("large_pm_1e37_32", np.linspace(-1e37, 1e37, 32))
    add("near_f16_max_q4_0_scale_64", np.concatenate([np.linspace(-65504 * 8, 65504 * 8, 32),
                                                     np.linspace(-65519.0 * 8, 100, 32)]),
        "Q4_0 d=max/-8 lands on / just under f16 max")
    add("f16_inf_scale_q4_0_64", np.concatenate([np.full(32, 65520.0 * 8), np.linspace(-65536.0 * 8, 1, 32)]),
        "d rounds to f16 inf (>= 65520)")
    add("near_f16_max_values_64", np.concatenate([np.linspace(-65504, 65504, 32), np.full(32, 70000.0)]),
        "values near/above f16 max")
    add("f16_inf_scale_q8_0_32", np.linspace(-1e7, 1e7, 32), "Q8_0 d = amax/127 > 65504 -> inf")
    # tiny: f16 scale underflows to 0 (or subnormal); include f32 subnormals as non-max members
    t = rng.standard_normal(64) * 1e-30
    add("tiny_1e-30_64", t)
    t2 = rng.standard_normal(32) * 1e-36
    add("tiny_1e-36_32", t2, "scales are f32-normal, f16 zero")
    sub = np.array([1e-40, -2e-41, 1e-45, 0.0] * 8, dtype=F32); sub[0] = 1.0; sub[17] = -0.75
    add("f32_subnormal_members_32", sub)
    add("f16_subnormal_scale_64", rng.standard_normal(64) * 1e-4, "d in f16 subnormal range")
    add("f16_subnormal_scale_tiny_32", rng.uniform(-1, 1, 32) * 3e-7)
    # ties in max magnitude: first occurrence wins for Q4_0
    t = np.tile(np.array([1, -1, 0.5, 2, -0.25, 0.0, 1.75, -1.5], dtype=F32), 4); t[3] = 3; t[9] = -3; t[20] = 3
    t2 = np.tile(np.array([0.5, 1, -0.5, 0.1], dtype=F32), 8); t2[2] = -3; t2[7] = 3; t2[31] = -3
    add("ties_pos_first_then_neg_first_64", np.concatenate([t, t2]), "block0: +3 first; block1: -3 first")
    t3 = np.full(32, 0.0, dtype=F32); t3[::2] = -4; t3[1::2] = 4
    add("ties_alternating_32", t3)
    # rounding boundaries: Q4_0 with max=-8 -> d=1, id=1 -> x+8.5 integer for half-integers
    b = np.concatenate([[-8.0], np.arange(-7.5, 8.0, 0.5)])[:32]
    add("q4_0_half_boundaries_32", b, "d=1: x*id+8.5 lands on integers")
    b2 = np.concatenate([[8.0], -np.arange(-7.5, 8.0, 0.5)])[:32]
    add("q4_0_half_boundaries_negscale_32", b2, "max=+8 -> d=-1")
    # Q8_0: amax=127 -> d=1 -> roundf half cases
    h = np.array([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -126.5, 0.49999997, -0.49999997,
                  0.50000006, 63.5, -63.5, 100.5] + list(np.arange(16) + 0.5), dtype=F32)
    add("q8_0_roundf_halves_32", h, "amax=127 -> d=1, id=1; roundf half away from zero")
    # Q4_1: min=0, max=15 -> d=1 -> (x-min)*id + 0.5 on integers
    q = np.concatenate([[0.0, 15.0], np.arange(0.5, 15.0, 1.0), np.arange(0.0, 15.0, 1.0)])[:32]
    add("q4_1_half_boundaries_32", q, "min=0,max=15 -> d=1")
    q2 = np.concatenate([[-8.0, 7.0], np.arange(-7.5, 7.0, 1.0), np.arange(-8.0, 7.0, 1.0)])[:32]
    add("q4_1_half_boundaries_negmin_32", q2)
    # random rows
    for s in range(4):
        r = np.random.default_rng(1000 + s)
        add(f"normal_seed{1000 + s}_256", r.standard_normal(256))
    add("normal_scaled_0.02_128", np.random.default_rng(7).standard_normal(128) * 0.02)
    add("uniform_-1_1_256", np.random.default_rng(11).uniform(-1, 1, 256))
    add("uniform_0_1_128", np.random.default_rng(12).uniform(0, 1, 128), "all positive: Q4_0 max>0 => d<0")
    add("uniform_-5_-1_64", np.random.default_rng(13).uniform(-5, -1, 64), "all negative")
    add("heavy_tail_outlier_128", np.where(np.arange(128) % 37 == 0, 50.0, 1.0) * np.random.default_rng(14).standard_normal(128))
    return c


def main():
    cs = cases()
    out = {
        "generator": "oracle/quant/make_vectors.py",
        "gguf_version": getattr(gguf, "__version__", None) or __import__("importlib.metadata").metadata.version("gguf"),
        "numpy_version": np.__version__,
        "block_size": 32,
        "block_bytes": {"q4_0": 18, "q4_1": 20, "q8_0": 34, "q8_1": 36},
        "cases": [],
    }
    for name, a, note in cs:
        e = {"name": name, "note": note, "n": int(a.size), "input": f32hex(a)}
        deq = {}
        for key, qt in (("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q8_0", T.Q8_0)):
            with np.errstate(all="ignore"):
                qb = quantize(a.reshape(1, -1), qt)
                dq = dequantize(qb, qt).reshape(-1)
            e[key] = qb.tobytes().hex()
            deq[key] = f32hex(dq)
        # independent scalar cross-check
        with np.errstate(all="ignore"):
            r40 = ref_q4_0(a); r41 = ref_q4_1(a); r80, r81, ss = ref_q8_x(a)
        for key, r in (("q4_0", r40), ("q4_1", r41), ("q8_0", r80)):
            if r.hex() != e[key]:
                # ggml's C reference is the authority; gguf's numpy port differs on
                # signed zeros (see README). Anything else is a bug here: abort.
                if (name, key) not in KNOWN_GGUF_DIFFS:
                    sys.exit(f"MISMATCH gguf vs scalar C port: case {name} type {key}\n gguf {e[key]}\n port {r.hex()}")
                e.setdefault("gguf_differs", {})[key] = e[key]
                e[key] = r.hex()
                with np.errstate(all="ignore"):
                    deq[key] = f32hex(dequantize(np.frombuffer(r, dtype=np.uint8).reshape(1, -1), {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0}[key]).reshape(-1))
        e["q8_1"] = r81.hex()
        e["q8_1_s"] = ss
        # dequant of q8_1 equals dequant of q8_0 (same d, qs)
        deq["q8_1"] = deq["q8_0"]
        e["dequant"] = deq
        out["cases"].append(e)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(out['cases'])} cases")


if __name__ == "__main__":
    main()
