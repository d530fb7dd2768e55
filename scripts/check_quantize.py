"""Checks `harness quantize` against an independent implementation, block for block.

For an HF directory and the GGUF that `harness quantize` made from it, recompute every
tensor with the Python `gguf` package: read the safetensors weights, permute Q/K rows
into adjacent-pair RoPE order exactly as llama.cpp's `convert_hf_to_gguf.py` does,
quantize with `gguf.quants.quantize`, and compare bytes with what the GGUF holds. Also
checks that `gguf.GGUFReader` reads our file and that the metadata carries the config.

Usage: python3 scripts/check_quantize.py HF_DIR OUT.gguf TYPE [--pure]

Second mode, for the K-quants (which `gguf` cannot quantize): compare two GGUF files
tensor for tensor (same names in the same order, same types, same bytes), e.g. ours and
`llama-quantize`'s from the same F16/F32 input:

       python3 scripts/check_quantize.py --same OURS.gguf REFERENCE.gguf
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


def same(ours, ref):
    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(ref).tensors}
    assert sorted(a) == sorted(b), f"tensor names differ: {sorted(set(a) ^ set(b))}"
    counts = {}
    for name in a:
        x, y = a[name], b[name]
        assert x.tensor_type == y.tensor_type, f"{x.name}: ours {x.tensor_type.name}, reference {y.tensor_type.name}"
        assert list(x.shape) == list(y.shape), f"{x.name}: shape {list(x.shape)} vs {list(y.shape)}"
        hx, hy = bytes(np.asarray(x.data).tobytes()), bytes(np.asarray(y.data).tobytes())
        if hx != hy:
            bs, bb = gguf.GGML_QUANT_SIZES[x.tensor_type]
            k = next(i for i in range(0, len(hx), bb) if hx[i:i + bb] != hy[i:i + bb])
            raise SystemExit(f"{x.name} ({x.tensor_type.name}): block {k // bb} differs:\n ours {hx[k:k+bb].hex()}\n ref  {hy[k:k+bb].hex()}")
        counts[x.tensor_type.name] = counts.get(x.tensor_type.name, 0) + 1
    mix = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"{ours}: {len(a)} tensors byte-identical to {ref} ({mix})")


def main():
    if sys.argv[1] == "--same":
        return same(sys.argv[2], sys.argv[3])
    hf_dir, out, qtype = sys.argv[1], sys.argv[2], sys.argv[3]
    pure = "--pure" in sys.argv
    kquant = {"q4_k": T.Q4_K, "q5_k": T.Q5_K, "q6_k": T.Q6_K, "q4_k_m": T.Q4_K, "q5_k_m": T.Q5_K}
    main_t = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q8_0": T.Q8_0, "f16": T.F16, **kquant}[qtype]
    cfg = json.load(open(f"{hf_dir}/config.json"))
    st = load_safetensors(f"{hf_dir}/model.safetensors")
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    r = gguf.GGUFReader(out)
    fields = {f.name: f for f in r.fields.values()}
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].contents() == cfg["num_hidden_layers"]
    assert fields["llama.attention.head_count_kv"].contents() == nkv

    tied = cfg.get("tie_word_embeddings", False)
    n_layer = cfg["num_hidden_layers"]

    def more_bits(i, n):
        return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2

    def k_type(name, cols):
        # llama.cpp's llama_tensor_get_type for a llama model without an imatrix
        # (src/llama-quant.cpp): the _m mixes, then the fallback for rows not a multiple of 256.
        t = main_t
        if qtype.endswith("_m") and not pure:
            layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
            if name == "output.weight" or (tied and name == "token_embd.weight"):
                t = T.Q8_0 if cols % 256 else T.Q6_K
            elif "attn_v.weight" in name and more_bits(layer, n_layer):
                t = T.Q6_K
            elif "ffn_down" in name and more_bits(layer, n_layer):
                t = T.Q6_K
        if cols % gguf.GGML_QUANT_SIZES[t][0]:
            t = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}.get(t, t)
            if cols % gguf.GGML_QUANT_SIZES[t][0]:
                t = T.F16
        return t

    def expect(name, arr):
        is_vec = arr.ndim == 1 or name == "rope_freqs.weight"
        embd = name in ("token_embd.weight", "output.weight")
        if is_vec:
            t = T.F32
        elif qtype in kquant:
            t = k_type(name, arr.shape[-1])
        elif embd and not pure and main_t in (T.Q4_0, T.Q4_1):
            t = T.Q8_0
        else:
            t = main_t
        if t == T.F32:
            return t, arr.astype(np.float32).tobytes()
        if t == T.F16:
            return t, arr.astype(np.float16).tobytes()
        if t in (T.Q4_K, T.Q5_K, T.Q6_K):
            return t, None  # gguf cannot quantize K-quants: type only (bytes: core/tests/quant_vectors.rs)
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
        if exp is None:
            continue
        if have != exp:
            bs, bb = gguf.GGML_QUANT_SIZES[t]
            k = next(i for i in range(0, len(exp), bb) if have[i:i + bb] != exp[i:i + bb])
            raise SystemExit(f"{name}: block {k // bb} differs: ours {have[k:k+bb].hex()} gguf {exp[k:k+bb].hex()}")
        checked += 1
    if "rope_scaling" in cfg and (cfg["rope_scaling"] or {}).get("rope_type") == "llama3":
        assert "rope_freqs.weight" in got, "llama3 scaling needs rope_freqs.weight"
    print(f"{out}: {checked} tensors byte-identical to gguf {qtype}{' (pure)' if pure else ''}; GGUFReader reads it")


main()
