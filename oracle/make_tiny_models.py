#!/usr/bin/env python3
"""Small random-weight Llama-3.2-shaped models for oracle tests.

Writes (classic Hugging Face layout, no tokenizer):
  oracle/models/tiny-tied/{config.json, model.safetensors}    F32 weights, tied embeddings
  oracle/models/tiny-untied/{config.json, model.safetensors}  BF16 weights, separate lm_head

Both use GQA, RoPE with `rope_scaling.rope_type = "llama3"` (factor 8, low 1, high 4,
original_max_position_embeddings 64, rope_theta 10000) so that sequences of ~300
tokens cross the scaling regime, RMSNorm weights randomized around 1, SwiGLU MLP.
Weights come from numpy's seeded generator (independent of torch's RNG), so the
files are reproducible byte for byte.

After writing, the script loads each model with transformers and checks
 * the rotary inverse frequencies equal an independent numpy llama3 computation,
 * predictions are neither one-hot nor uniform,
 * llama3 scaling changes the logits on a 300-token sequence (vs rope_scaling=None),
and prints those numbers (also recorded in oracle/models/stats.json).
Run: python3 oracle/make_tiny_models.py
"""
import json
import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")

ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}

SPECS = {
    "tiny-tied": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=256, tie_word_embeddings=True,
                      dtype="float32", seed=1),
    "tiny-untied": dict(hidden_size=128, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=32, vocab_size=384, tie_word_embeddings=False,
                        dtype="bfloat16", seed=2),
}
INIT_STD = 0.15
EMBED_STD = 0.3  # tied: logits = norm(h) . E_v, std ~ EMBED_STD*sqrt(hidden); keep predictions non-trivial


def config_dict(s):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": s["head_dim"],
        "hidden_act": "silu",
        "hidden_size": s["hidden_size"],
        "initializer_range": INIT_STD,
        "intermediate_size": s["intermediate_size"],
        "max_position_embeddings": 512,
        "mlp_bias": False,
        "num_attention_heads": s["num_attention_heads"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_key_value_heads": s["num_key_value_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": dict(ROPE_SCALING),
        "rope_theta": 10000.0,
        "tie_word_embeddings": s["tie_word_embeddings"],
        "torch_dtype": s["dtype"],
        "use_cache": True,
        "vocab_size": s["vocab_size"],
    }


def make_weights(s):
    rng = np.random.default_rng(s["seed"])
    H, I, V = s["hidden_size"], s["intermediate_size"], s["vocab_size"]
    nh, nkv, hd = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]

    def lin(out_f, in_f):
        return (rng.standard_normal((out_f, in_f)) * INIT_STD).astype(np.float32)

    def norm(n):
        return rng.uniform(0.6, 1.4, n).astype(np.float32)

    w = {"model.embed_tokens.weight": (rng.standard_normal((V, H)) * EMBED_STD).astype(np.float32)}
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(H)
        w[p + "self_attn.q_proj.weight"] = lin(nh * hd, H)
        w[p + "self_attn.k_proj.weight"] = lin(nkv * hd, H)
        w[p + "self_attn.v_proj.weight"] = lin(nkv * hd, H)
        w[p + "self_attn.o_proj.weight"] = lin(H, nh * hd)
        w[p + "post_attention_layernorm.weight"] = norm(H)
        w[p + "mlp.gate_proj.weight"] = lin(I, H)
        w[p + "mlp.up_proj.weight"] = lin(I, H)
        w[p + "mlp.down_proj.weight"] = lin(H, I)
    w["model.norm.weight"] = norm(H)
    if not s["tie_word_embeddings"]:
        w["lm_head.weight"] = lin(V, H)
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[s["dtype"]]
    return {k: torch.from_numpy(v).to(dt).contiguous() for k, v in w.items()}


def llama3_inv_freq_numpy(head_dim, theta, factor, low, high, orig):
    """Independent implementation of Meta's llama3 rope frequency scaling (float64 -> f32)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wl = orig / low
    high_wl = orig / high
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
        elif wl > low_wl:
            out.append(f / factor)
        else:
            smooth = (orig / wl - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out, dtype=np.float32)


def load(dirpath, **over):
    from transformers import AutoConfig, LlamaForCausalLM
    cfg = AutoConfig.from_pretrained(dirpath)
    for k, v in over.items():
        setattr(cfg, k, v)
    m = LlamaForCausalLM.from_pretrained(dirpath, config=cfg, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def main():
    torch.manual_seed(0)
    stats = {}
    for name, s in SPECS.items():
        d = os.path.join(MODELS, name)
        os.makedirs(d, exist_ok=True)
        cfg = config_dict(s)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        save_file(make_weights(s), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        size = os.path.getsize(os.path.join(d, "model.safetensors"))

        m = load(d)
        inv = m.model.rotary_emb.inv_freq.detach().float().numpy()
        mine = llama3_inv_freq_numpy(s["head_dim"], 10000.0, 8.0, 1.0, 4.0, 64)
        inv_diff = float(np.max(np.abs(inv - mine) / mine))
        ids = torch.from_numpy(np.random.default_rng(100 + s["seed"]).integers(0, s["vocab_size"], 300)).long()[None]
        with torch.no_grad():
            lg = m(ids).logits[0].float()
        p = torch.softmax(lg, -1)
        top1 = p.max(-1).values
        # no-scaling variant (plain RoPE), same weights
        from transformers import LlamaForCausalLM, LlamaConfig
        cfg2 = LlamaConfig(**{k: v for k, v in cfg.items() if k != "rope_scaling"})
        m2 = LlamaForCausalLM.from_pretrained(d, config=cfg2, dtype=torch.float32, attn_implementation="eager").eval()
        inv2 = m2.model.rotary_emb.inv_freq.detach().float().numpy()
        with torch.no_grad():
            lg2 = m2(ids).logits[0].float()
        diff = (lg - lg2).abs()
        st = {
            "safetensors_bytes": size,
            "weights_dtype": s["dtype"],
            "inv_freq_transformers": inv.tolist(),
            "inv_freq_max_rel_diff_vs_numpy_llama3": inv_diff,
            "inv_freq_unscaled": inv2.tolist(),
            "top1_prob_mean": float(top1.mean()), "top1_prob_min": float(top1.min()),
            "top1_prob_max": float(top1.max()), "uniform_prob": 1.0 / s["vocab_size"],
            "logit_std": float(lg.std()),
            "llama3_vs_no_scaling_max_abs_logit_diff_300": float(diff.max()),
            "llama3_vs_no_scaling_max_abs_logit_diff_first64": float(diff[:64].max()),
            "llama3_vs_no_scaling_argmax_agree_300": float((lg.argmax(-1) == lg2.argmax(-1)).float().mean()),
        }
        stats[name] = st
        print(name, {k: v for k, v in st.items() if not k.startswith("inv_freq_") or k.endswith("diff_vs_numpy_llama3")})
        assert inv_diff < 1e-6, "transformers llama3 inv_freq differs from the numpy implementation"
        assert not np.allclose(inv, inv2), "rope_scaling had no effect on inv_freq"
        assert st["top1_prob_max"] < 0.999 and st["top1_prob_mean"] > 5.0 / s["vocab_size"]
        assert st["llama3_vs_no_scaling_max_abs_logit_diff_300"] > 1e-2
    with open(os.path.join(MODELS, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
