#!/usr/bin/env python3
"""Reference tensors for SmolLM2-135M-Instruct in llama.cpp's Q4_K_M mix (the most common
GGUF flavour: here 166 Q5_0, 16 Q4_K, 14 Q6_K, 15 Q8_0 tensors), added to
oracle/manifest.json next to the Q4_1 cases.

The Q4_K_M file is the shipped Q4_1 GGUF requantized: `llama-quantize --allow-requantize
SmolLM2-135M-Instruct.Q4_1.gguf OUT Q4_K_M`, or `harness quantize --allow-requantize
--type q4_k_m` (whose tensor bytes are identical to llama-quantize's — checked by
scripts/check_quantize.py --same; metadata and tensor order differ). Expected at
$ANTIGRAVITY_HOME/SmolLM2-135M-Instruct.Q4_K_M.gguf (scripts/test.sh makes it there).

transformers loads it (dequantizing every tensor with `gguf`), fp32 eager, and the same
three prompts as the Q4_1 cases give: `smollm2-q4_k_m.france` (all 30 blocks, top-64
log-probs, greedy 16 with margins), `.code` and `.chat` (blocks 0, 15, 29 and top-64).
Full logits are not stored (they would double refs/); the top-64 + rest buckets carry
top-1 agreement and mean KL. Tolerances: per-tensor nmse is set from our measurements by
oracle/set_tolerances.py like the Q4_1 case's; the logits limits are the Q4_1 case's.

Run: /work/pyref/bin/python oracle/generate_q4_k_m.py   (~30 s)
"""
import hashlib
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate as g  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

NAME = "SmolLM2-135M-Instruct.Q4_K_M.gguf"
MODEL = "smollm2-q4_k_m"
PROMPTS = [(c.replace("smollm2", MODEL), k, t) for c, k, t in g.SMOL_PROMPTS]
VARIANT = "gguf (Q4_K_M mix: Q5_0/Q4_K/Q6_K/Q8_0) dequantized to f32 by transformers"


def path():
    p = os.environ.get("ANTIGRAVITY_SMOLLM2_Q4_K_M_GGUF")
    if not p:
        home = os.path.expanduser(os.environ.get("ANTIGRAVITY_HOME", "~/.cache/antigravity"))
        p = os.path.join(home, NAME)
    if not os.path.exists(p):
        sys.exit(f"{p} missing: harness quantize --allow-requantize --model <the Q4_1 GGUF> --out {p} --type q4_k_m")
    return p


def main():
    p = path()
    sha = hashlib.sha256(open(p, "rb").read()).hexdigest()
    gdir, gname = os.path.dirname(p), os.path.basename(p)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    g.VARIANT[MODEL] = VARIANT
    for case, kind, text in PROMPTS:
        rendered = text
        if kind == "chat":
            rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=False)
        ids = tok.encode(rendered, add_special_tokens=False)
        out = os.path.join(g.REFS, f"{case}.safetensors")
        acts, logits = g.run(model, ids)
        t = {"ids": torch.tensor(ids, dtype=torch.long)}
        g.add_entry(case, MODEL, out, "ids", t["ids"], None, g.WHY["ids"], VARIANT)
        full = case.endswith(".france")
        g.store_activations(case, MODEL, out, acts, t, blocks=None if full else g.SMOL_PARTIAL_BLOCKS)
        v, i, r = g.topk_pack(logits)
        t["logits_topk_logp"], t["logits_topk_idx"], t["logits_rest_logp"] = v, i, r
        for nm, tt in (("logits_topk_logp", v), ("logits_topk_idx", i), ("logits_rest_logp", r)):
            g.add_entry(case, MODEL, out, nm, tt,
                        ["top1_agree", "kl_mean_topk_plus_rest"] if nm == "logits_topk_logp" else None,
                        g.WHY["topk"], VARIANT, group="logits_topk")
        info = {"case": case, "model": MODEL, "file": g.rel(out), "n_tokens": len(ids), "text": text, "kind": kind,
                "rendered_text": rendered, "blocks_stored": "all" if full else g.SMOL_PARTIAL_BLOCKS,
                "top1_prob_last": float(torch.exp(v[-1, 0]))}
        if full:
            gi, m = g.greedy(model, ids, g.GREEDY_STEPS)
            t["greedy_ids"], t["greedy_margin"] = gi, m
            g.add_entry(case, MODEL, out, "greedy_ids", gi, "greedy_exact_where_margin", g.WHY["greedy"], VARIANT,
                        margin_tensor="greedy_margin")
            g.add_entry(case, MODEL, out, "greedy_margin", m, None, g.WHY["margin"], VARIANT)
            info["greedy_text"] = tok.decode(gi.tolist())
            info["greedy_min_margin"] = float(m.min())
        g.save(out, t)
        g.cases.append(info)

    man_path = os.path.join(HERE, "manifest.json")
    man = json.load(open(man_path))
    man["entries"] = [e for e in man["entries"] if e["model"] != MODEL] + g.entries
    man["cases"] = [c for c in man["cases"] if c.get("model") != MODEL] + g.cases
    # The logits limits are the Q4_1 case's (same prompts, same metric).
    q41 = {(e["case"].split(".")[1], e["tensor"]): e for e in man["entries"] if e["model"] == "smollm2"}
    for e in man["entries"]:
        if e["model"] == MODEL and e["tensor"] in ("logits_topk_logp", "greedy_ids"):
            src = q41[(e["case"].split(".")[1], e["tensor"])]
            e["tolerance"], e["why"] = src["tolerance"], src["why"] + " (the Q4_1 case's limit)"
    man["models"][MODEL] = {"gguf": NAME, "sha256": sha,
                            "made_by": "harness quantize --allow-requantize --type q4_k_m from the Q4_1 GGUF "
                                       "(tensor bytes identical to llama-quantize --allow-requantize ... Q4_K_M)"}
    with open(man_path, "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")
    print(f"{len(g.entries)} entries, {len(g.cases)} cases for {MODEL}")
    print(json.dumps(g.cases, indent=1)[:3000])


if __name__ == "__main__":
    main()
