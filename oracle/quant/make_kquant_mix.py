#!/usr/bin/env python3
"""The per-tensor types `llama-quantize` picks for the K-quant presets, on model shapes
that exercise every rule: SmolLM2-135M's shapes (576-wide rows: the Q5_0/Q5_1/Q8_0
fallbacks, tied embeddings), a 16-layer model with 256-wide rows and tied embeddings
(Q6_K token_embd, the attn_v / ffn_down bumps), and an 8-layer untied one (Q6_K output,
K-quant token_embd). The tensors are F16 random values; the choice depends only on
names, shapes and the preset.

Run: /work/pyref/bin/python oracle/quant/make_kquant_mix.py [LLAMA_QUANTIZE]
Output: oracle/quant/kquant_mix.json: {shape: {"n_layer", "tensors": [[name, [dims]]...],
"types": {preset: {name: type}}}}, presets as `harness quantize --type` names.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_QUANTIZE = "/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-quantize"
SHAPES = {
    "smollm2": dict(n_layer=30, dim=576, ffn=1536, heads=9, kv=3, vocab=49152, tied=True),
    "tied256": dict(n_layer=16, dim=256, ffn=512, heads=4, kv=1, vocab=512, tied=True),
    "untied256": dict(n_layer=8, dim=256, ffn=768, heads=4, kv=2, vocab=512, tied=False),
}
# harness --type: llama-quantize arguments
PRESETS = {
    "q4_k_m": ["Q4_K_M"],
    "q5_k_m": ["Q5_K_M"],
    "q6_k": ["Q6_K"],
    "q4_k": ["--pure", "Q4_K_M"],
    "q5_k": ["--pure", "Q5_K_M"],
}


def tensors(s):
    hd = s["dim"] // s["heads"]
    out = [("token_embd.weight", [s["dim"], s["vocab"]])]
    for i in range(s["n_layer"]):
        out += [
            (f"blk.{i}.attn_norm.weight", [s["dim"]]),
            (f"blk.{i}.attn_q.weight", [s["dim"], s["dim"]]),
            (f"blk.{i}.attn_k.weight", [s["dim"], hd * s["kv"]]),
            (f"blk.{i}.attn_v.weight", [s["dim"], hd * s["kv"]]),
            (f"blk.{i}.attn_output.weight", [s["dim"], s["dim"]]),
            (f"blk.{i}.ffn_norm.weight", [s["dim"]]),
            (f"blk.{i}.ffn_gate.weight", [s["dim"], s["ffn"]]),
            (f"blk.{i}.ffn_up.weight", [s["dim"], s["ffn"]]),
            (f"blk.{i}.ffn_down.weight", [s["ffn"], s["dim"]]),
        ]
    out.append(("output_norm.weight", [s["dim"]]))
    if not s["tied"]:
        out.append(("output.weight", [s["dim"], s["vocab"]]))
    return out


def write(path, s, ts):
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(s["n_layer"])
    w.add_context_length(256)
    w.add_embedding_length(s["dim"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(s["dim"] // s["heads"])
    w.add_vocab_size(s["vocab"])
    w.add_file_type(1)
    w.add_tokenizer_model("no_vocab")
    for name, dims in ts:
        a = rng.standard_normal(list(reversed(dims))).astype(np.float32)
        w.add_tensor(name, a if len(dims) == 1 else a.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LLAMA_QUANTIZE", DEFAULT_QUANTIZE)
    doc = {"generator": "oracle/quant/make_kquant_mix.py",
           "made_by": "llama-quantize (llama.cpp vendored in llama-cpp-python 0.3.36)", "shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for shape, s in SHAPES.items():
            ts = tensors(s)
            src = os.path.join(tmp, f"{shape}.gguf")
            write(src, s, ts)
            types = {}
            for preset, args in PRESETS.items():
                dst = os.path.join(tmp, f"{shape}-{preset}.gguf")
                subprocess.run([exe, *args[:-1], src, dst, args[-1], "2"], check=True, capture_output=True)
                types[preset] = {t.name: t.tensor_type.name for t in gguf.GGUFReader(dst).tensors}
                os.remove(dst)
            doc["shapes"][shape] = {"n_layer": s["n_layer"], "tensors": [[n, d] for n, d in ts], "types": types}
    out = os.path.join(HERE, "kquant_mix.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {out}")


main()
