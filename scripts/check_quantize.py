"""Checks `harness quantize` against an independent implementation, block for block.

For an HF directory and the GGUF that `harness quantize` made from it, recompute every
tensor with the Python `gguf` package: read the safetensors weights, permute Q/K rows
into adjacent-pair RoPE order exactly as llama.cpp's `convert_hf_to_gguf.py` does,
quantize with `gguf.quants.quantize`, and compare bytes with what the GGUF holds. Also
checks that `gguf.GGUFReader` reads our file and that the metadata carries the config.

Usage: python3 scripts/check_quantize.py HF_DIR OUT.gguf TYPE [--pure]
"""
import json
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            raise SystemExit(f"unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"]).astype(np.float32)
    return out


def permute(w, n_head):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    hf_dir, out, qtype = sys.argv[1], sys.argv[2], sys.argv[3]
    pure = "--pure" in sys.argv
    main_t = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q8_0": T.Q8_0, "f16": T.F16}[qtype]
    cfg = json.load(open(f"{hf_dir}/config.json"))
    st = load_safetensors(f"{hf_dir}/model.safetensors")
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    r = gguf.GGUFReader(out)
    fields = {f.name: f for f in r.fields.values()}
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == cfg["num_hidden_layers"]
    assert fields["llama.attention.head_count_kv"].contents() == nkv

    def expect(name, arr):
        is_vec = arr.ndim == 1 or name == "rope_freqs.weight"
        embd = name in ("token_embd.weight", "output.weight")
        if is_vec:
            t = T.F32
        elif embd and not pure and main_t in (T.Q4_0, T.Q4_1):
            t = T.Q8_0
        else:
            t = main_t
        if t == T.F32:
            return t, arr.astype(np.float32).tobytes()
        if t == T.F16:
            return t, arr.astype(np.float16).tobytes()
        return t, gguf.quants.quantize(arr.astype(np.float32), t).tobytes()

    want = {"token_embd.weight": st["model.embed_tokens.weight"], "output_norm.weight": st["model.norm.weight"]}
    if not cfg.get("tie_word_embeddings", False):
        want["output.weight"] = st["lm_head.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        want[f"blk.{i}.attn_norm.weight"] = st[f"{p}.input_layernorm.weight"]
        want[f"blk.{i}.attn_q.weight"] = permute(st[f"{p}.self_attn.q_proj.weight"], nh)
        want[f"blk.{i}.attn_k.weight"] = permute(st[f"{p}.self_attn.k_proj.weight"], nkv)
        want[f"blk.{i}.attn_v.weight"] = st[f"{p}.self_attn.v_proj.weight"]
        want[f"blk.{i}.attn_output.weight"] = st[f"{p}.self_attn.o_proj.weight"]
        want[f"blk.{i}.ffn_norm.weight"] = st[f"{p}.post_attention_layernorm.weight"]
        want[f"blk.{i}.ffn_gate.weight"] = st[f"{p}.mlp.gate_proj.weight"]
        want[f"blk.{i}.ffn_up.weight"] = st[f"{p}.mlp.up_proj.weight"]
        want[f"blk.{i}.ffn_down.weight"] = st[f"{p}.mlp.down_proj.weight"]
    got = {t.name: t for t in r.tensors}
    checked = 0
    for name, arr in want.items():
        t, exp = expect(name, arr)
        g = got.get(name)
        assert g is not None, f"{out}: tensor {name} missing"
        assert g.tensor_type == t, f"{name}: type {g.tensor_type.name}, expected {t.name}"
        have = bytes(np.asarray(g.data).tobytes())
        if have != exp:
            bs, bb = gguf.GGML_QUANT_SIZES[t]
            k = next(i for i in range(0, len(exp), bb) if have[i:i + bb] != exp[i:i + bb])
            raise SystemExit(f"{name}: block {k // bb} differs: ours {have[k:k+bb].hex()} gguf {exp[k:k+bb].hex()}")
        checked += 1
    if "rope_scaling" in cfg and (cfg["rope_scaling"] or {}).get("rope_type") == "llama3":
        assert "rope_freqs.weight" in got, "llama3 scaling needs rope_freqs.weight"
    print(f"{out}: {checked} tensors byte-identical to gguf {qtype}{' (pure)' if pure else ''}; GGUFReader reads it")


main()
