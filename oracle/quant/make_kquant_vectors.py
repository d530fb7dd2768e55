#!/usr/bin/env python3
"""K-quant quantization vectors made by llama.cpp's `llama-quantize` (the reference for
Q4_K, Q5_K and Q6_K; the Python `gguf` package cannot quantize them).

The input rows (256-element super-blocks: zeros, constants, one-signed rows, ramps,
integer rows full of rounding ties, sparse spikes, heavy tails, tiny and f16-subnormal
scales, a zero sub-block among normal ones, Gaussian rows at several scales, and rows of
SmolLM2's real weights when the GGUF is available) are written as one F32 tensor
`blk.0.ffn_gate.weight` of a one-layer llama-arch GGUF. `llama-quantize --pure` turns it
into Q4_K (ftype Q4_K_M), Q5_K (Q5_K_M) and Q6_K; without an importance matrix it uses
ggml's `quantize_row_q*_K_ref`. The output tensors' bytes are stored per row.

Run: /work/pyref/bin/python oracle/quant/make_kquant_vectors.py [LLAMA_QUANTIZE]
(default: $LLAMA_QUANTIZE or /work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-quantize;
deterministic: numpy seeded). Output: oracle/quant/kquant_vectors.json.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32
QK = 256
DEFAULT_QUANTIZE = "/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-quantize"


def rows():
    rng = np.random.default_rng(20261204)
    out = []

    def add(name, x):
        x = np.asarray(x, dtype=F32).reshape(-1)
        assert x.size == QK, name
        out.append((name, x))

    add("zeros", np.zeros(QK))
    add("neg_zeros", -np.zeros(QK))
    add("const_pos", np.full(QK, 0.37))
    add("const_neg", np.full(QK, -1.25))
    add("ramp", np.linspace(-1, 1, QK))
    add("ramp_pos", np.linspace(0.5, 3.0, QK))  # min > 0: the minimum is clamped to 0
    add("all_neg_uniform", -rng.uniform(0.1, 2.0, QK))
    add("integers_small", rng.integers(-8, 8, QK))  # ties in the rounding
    add("integers_wide", rng.integers(-100, 100, QK))
    add("halves", rng.integers(-20, 20, QK) + 0.5)
    sp = np.zeros(QK)
    sp[rng.choice(QK, 5, replace=False)] = rng.standard_normal(5) * 3
    add("sparse_spikes", sp)
    z = rng.standard_normal(QK) * 0.05
    z[64:96] = 0.0
    add("zero_subblock", z)
    z = rng.standard_normal(QK) * 0.05
    z[16:32] = 0.0
    z[200:216] = 1e-17
    add("zero_q6_subblock", z)
    z = rng.standard_normal(QK) * 0.02
    z[0] = 2.0
    add("one_outlier", z)
    add("cauchy", np.clip(rng.standard_cauchy(QK), -50, 50) * 0.01)
    add("student_t3", rng.standard_t(3, QK) * 0.03)
    add("tiny_1e-20", rng.standard_normal(QK) * 1e-20)
    add("f16_subnormal_scale", rng.standard_normal(QK) * 2e-6)
    add("small_1e-3", rng.standard_normal(QK) * 1e-3)
    add("large_1e3", rng.standard_normal(QK) * 1e3)
    add("mixed_magnitudes", rng.standard_normal(QK) * np.repeat(10.0 ** rng.uniform(-3, 1, 16), 16))
    add("positive_skew", np.abs(rng.standard_normal(QK)) * 0.1 - 0.01)
    add("negative_skew", -np.abs(rng.standard_normal(QK)) * 0.1 + 0.01)
    for s in (0.01, 0.02, 0.05, 0.1, 1.0):
        for k in range(4):
            add(f"gauss_{s}_{k}", rng.standard_normal(QK) * s)
    for k in range(6):
        add(f"uniform_{k}", rng.uniform(-1, 1, QK) * 10.0 ** rng.uniform(-2, 0))
    # Real weights, if the SmolLM2 GGUF is around (dequantized Q4_1: the distribution of a trained model).
    smol = os.environ.get("ANTIGRAVITY_SMOLLM2_GGUF", "/work/models/smol-q4_1.gguf")
    if os.path.exists(smol):
        r = gguf.GGUFReader(smol)
        for t in r.tensors:
            if t.name in ("blk.3.ffn_down.weight", "blk.17.ffn_down.weight", "blk.0.ffn_up.weight"):
                d = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(-1)
                for k in range(4):
                    i = int(rng.integers(0, d.size // QK))
                    add(f"smollm2_{t.name}_{i}", d[i * QK:(i + 1) * QK])
    return out


def write_model(path, mat):
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(QK)
    w.add_feed_forward_length(mat.shape[0])
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(64)
    w.add_file_type(0)
    w.add_tokenizer_model("no_vocab")
    w.add_tensor("blk.0.ffn_gate.weight", mat)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LLAMA_QUANTIZE", DEFAULT_QUANTIZE)
    cases = rows()
    mat = np.stack([x for _, x in cases]).astype(F32)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "rows.gguf")
        write_model(src, mat)
        for key, ftype, qt in (("q4_k", "Q4_K_M", T.Q4_K), ("q5_k", "Q5_K_M", T.Q5_K), ("q6_k", "Q6_K", T.Q6_K)):
            dst = os.path.join(tmp, f"{key}.gguf")
            subprocess.run([exe, "--pure", src, dst, ftype, "1"], check=True, capture_output=True)
            t = next(t for t in gguf.GGUFReader(dst).tensors if t.name == "blk.0.ffn_gate.weight")
            assert t.tensor_type == qt, (key, t.tensor_type)
            b = np.asarray(t.data).reshape(len(cases), -1)
            result[key] = [bytes(r.tobytes()).hex() for r in b]
    doc = {
        "generator": "oracle/quant/make_kquant_vectors.py",
        "made_by": "llama-quantize --pure (llama.cpp vendored in llama-cpp-python 0.3.36, ggml 0.25.3)",
        "block_bytes": {"q4_k": 144, "q5_k": 176, "q6_k": 210},
        "cases": [
            {
                "name": name,
                "input": [format(int(u), "08x") for u in x.view(np.uint32)],
                "q4_k": result["q4_k"][i],
                "q5_k": result["q5_k"][i],
                "q6_k": result["q6_k"][i],
            }
            for i, (name, x) in enumerate(cases)
        ],
    }
    out = os.path.join(HERE, "kquant_vectors.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} rows")


main()
