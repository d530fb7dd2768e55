#!/usr/bin/env bash
# Side-by-side race with llama.cpp: same file, same threads, same machine, one run.
#   scripts/race.sh LLAMA_BENCH_BIN MODEL.gguf [THREADS...]
# For each thread count: llama-bench -p 128 -n 128 -r 3 (empty-context decode, as it
# measures), then ours the same way through `harness generate --json`: pp128 = a
# 128-token prompt (median of 3), tg128 = 128 tokens decoded from an empty context, and
# tg128 after a 128-token prompt. Peak RSS of both from /usr/bin/time. Prints one
# markdown row per thread count.
set -euo pipefail
LB=$1; M=$2; shift 2
THREADS=${*:-1 2}
H=${HARNESS:-target/release/harness}
ids=$(seq -s, 1 128)
med() { sort -g | sed -n 2p; }
for t in $THREADS; do
    lj=$(/usr/bin/time -f "%M" -o /tmp/race-lrss "$LB" -m "$M" -t "$t" -p 128 -n 128 -r 3 -o json 2>/dev/null)
    lpp=$(echo "$lj" | python3 -c "import json,sys; d=json.load(sys.stdin); print([r['avg_ts'] for r in d if r['n_prompt']>0][0])")
    ltg=$(echo "$lj" | python3 -c "import json,sys; d=json.load(sys.stdin); print([r['avg_ts'] for r in d if r['n_gen']>0][0])")
    lrss=$(cat /tmp/race-lrss)
    opp=$(for r in 1 2 3; do "$H" generate --model "$M" --ctx 384 --threads "$t" --prompt-ids "$ids" --max-tokens 1 --json 2>/dev/null | tail -1 \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['prefill_tok_s'])"; done | med)
    otg=$(/usr/bin/time -f "%M" -o /tmp/race-orss "$H" generate --model "$M" --ctx 384 --threads "$t" --prompt-ids 1 --max-tokens 129 --ignore-eos --json 2>/dev/null | tail -1 \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tok_s'])")
    orss=$(cat /tmp/race-orss)
    otg2=$("$H" generate --model "$M" --ctx 384 --threads "$t" --prompt-ids "$ids" --max-tokens 129 --ignore-eos --json 2>/dev/null | tail -1 \
        | python3 -c "import json,sys; print(json.load(sys.stdin)['decode_tok_s'])")
    python3 - "$M" "$t" "$lpp" "$ltg" "$lrss" "$opp" "$otg" "$otg2" "$orss" <<'PY'
import os, sys
m, t, lpp, ltg, lrss, opp, otg, otg2, orss = sys.argv[1:]
f = lambda x: float(x)
print(f"| {os.path.basename(m)} | {t} | {f(lpp):.0f} | {f(opp):.0f} | {f(opp)/f(lpp):.2f}x | {f(ltg):.1f} | {f(otg):.1f} | {f(otg)/f(ltg):.2f}x | {f(otg2):.1f} | {int(lrss)/1024:.0f} | {int(orss)/1024:.0f} |")
PY
done
