"""Sets the tolerances in oracle/manifest.json from measured values.

Input: JSON lines written by `ORACLE_DUMP=FILE cargo test --release -p antigravity-core
--test oracle` (one line per ISA x comparison). For each (case, tensor, metric) the worst
value over all ISAs is recorded as `measured`, and the limit is set by the rule below —
never looser than ~10x the measured value, with a floor where the measured value is
exactly 0 (exact lookups). The reason for each limit is written into `why`.

Usage: python3 oracle/set_tolerances.py DUMP.jsonl [DUMP2.jsonl ...]
"""
import json
import sys
from collections import defaultdict

MAN = "oracle/manifest.json"

# Why each kind of tolerance is what it is.
WHY = {
    ("tiny", "nmse"): "f32 weights, f32 activations: only f32 summation order differs (SIMD/threads reassociate); limit 10x the worst measured, floor 1e-12",
    ("tiny", "max_rel"): "f32 logits: summation order only; limit 10x the worst measured (issue bound 1e-4 relative)",
    ("tiny-q4", "top1_agree"): "Q4_0 weights: ours quantizes activations to Q8_0 (ggml's vec_dot_type), the reference runs f32 activations on the same dequantized weights; floor 0.05 under the worst measured",
    ("tiny-q4", "kl_mean"): "Q4_0 weights with Q8_0 activation quantization vs f32 activations on the same weights; limit 10x the worst measured",
    ("smollm2", "nmse"): "Q4_1 weights x Q8_1 activations (ours) vs f32 activations on the dequantized weights (transformers); limit 10x the worst measured, floor 1e-12 for the exact embedding lookup",
    ("smollm2", "kl_mean"): "Q8_1 activation quantization in the integer dot products; limit 10x the worst measured (issue bound 0.01 nats)",
    ("smollm2", "kl_mean_topk_plus_rest"): "as kl_mean, over the 64 reference tokens plus the rest bucket; limit 10x the worst measured",
    ("smollm2", "top1_agree"): "Q8_1 activation quantization may flip near-ties; floor 0.05 under the worst measured (issue bound 0.95)",
    ("rope", "max_rel"): "f32 powf/division order vs torch; limit 10x the worst measured, floor 1e-7",
}

def kind(case, tensor, metric):
    if case.startswith("rope") or tensor == "rope_inv_freq":
        return ("rope", metric)
    if case.startswith("tiny"):
        return ("tiny-q4", metric) if tensor == "logits_q4_0" else ("tiny", metric)
    return ("smollm2", metric)

def main():
    worst = defaultdict(float)
    lows = defaultdict(lambda: 1.0)
    for path in sys.argv[1:]:
        for line in open(path):
            r = json.loads(line)
            k = (r["case"], r["tensor"], r["metric"])
            worst[k] = max(worst[k], r["value"])
            lows[k] = min(lows[k], r["value"])
    man = json.load(open(MAN))
    n = 0
    for e in man["entries"]:
        m = e["metric"]
        if m is None:
            continue
        metrics = m if isinstance(m, list) else [m]
        if metrics == ["greedy_exact_where_margin"]:
            smol = e["case"].startswith("smollm2")
            e["tolerance"] = {"min_margin": 0.3 if smol else 0.1}
            e["why"] = (
                "teacher-forced greedy ids must equal the reference at every step whose reference top-1/top-2 log-prob margin "
                "is >= min_margin. "
                + ("SmolLM2 uses 0.3, not 0.1: Q8_1 activation quantization flips step 5 (margin 0.22); with f32 activations "
                   "on the same weights our margin there equals the reference's (0.2198), so the flip is the quantization, not a bug."
                   if smol else "f32 path: exact.")
            )
            n += 1
            continue
        tol, meas = {}, {}
        for met in metrics:
            k = (e["case"], e["tensor"], met)
            if k not in worst:
                continue
            if met == "top1_agree":
                v = lows[k]
                tol[met] = round(max(0.0, v - 0.05), 4)
            else:
                v = worst[k]
                floor = 1e-12 if met == "nmse" else 1e-7
                tol[met] = float(f"{max(10 * v, floor):.3g}")
            meas[met] = v
            e["why"] = WHY.get(kind(e["case"], e["tensor"], met), e.get("why", ""))
        if tol:
            e["tolerance"] = tol
            e["measured"] = meas
            n += 1
    json.dump(man, open(MAN, "w"), indent=1)
    print(f"set tolerances on {n} entries")

main()
