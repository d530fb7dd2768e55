#!/usr/bin/env bash
# Side-by-side race with llama.cpp: same file, same threads, same machine, one run.
#   scripts/race.sh LLAMA_BENCH_BIN MODEL.gguf [THREADS...]
# For each thread count: llama-bench -p 128,512 -n 128 -r 3 (empty-context decode, as it
# measures), then ours the same way through `harness generate --json`: pp128 / pp512 = a
# 128- / 512-token prompt (median of 3), tg128 = 128 tokens decoded from an empty context
# (median of 3), and tg128 after a 128-token prompt. Each of our runs gets the context
# llama-bench gives the same test (prompt + generated tokens, +1). Peak RSS of both from
# /usr/bin/time: llama-bench's whole run; ours the largest over all our runs (the pp512
# runs hold the largest cache, as llama-bench's pp512 test does). Prints the machine, its load
# average before each thread count, and one markdown row per thread count:
# | model | threads | pp128 llama | ours | ratio | pp512 llama | ours | ratio | tg128 llama | ours | ratio | ours tg after 128 | RSS llama MiB | ours |
set -euo pipefail
LB=$1; M=$2; shift 2
THREADS=${*:-1 2}
H=${HARNESS:-target/release/harness}
ids128=$(seq -s, 1 128)
ids512=$(seq -s, 1 512)
med() { sort -g | sed -n 2p; }
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $(basename "$M")"
for t in $THREADS; do
    echo "# threads $t: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    lj=$(/usr/bin/time -f "%M" -o /tmp/race-lrss "$LB" -m "$M" -t "$t" -p 128,512 -n 128 -r 3 -o json 2>/dev/null)
    lv() { echo "$lj" | python3 -c "import json,sys; d=json.load(sys.stdin); print([r['avg_ts'] for r in d if $1][0])"; }
    lpp=$(lv "r['n_prompt']==128"); lpp5=$(lv "r['n_prompt']==512"); ltg=$(lv "r['n_gen']>0")
    lrss=$(cat /tmp/race-lrss)
    # ours: one run; its peak RSS (KiB) is kept in /tmp/race-orss-all
    gen() { /usr/bin/time -f "%M" -o /tmp/race-orss "$H" generate --model "$M" --threads "$t" "$@" --json 2>/dev/null
        cat /tmp/race-orss >> /tmp/race-orss-all; }
    : > /tmp/race-orss-all
    opp=$(for r in 1 2 3; do gen --ctx 129 --prompt-ids "$ids128" --max-tokens 1 | field prefill_tok_s; done | med)
    opp5=$(for r in 1 2 3; do gen --ctx 513 --prompt-ids "$ids512" --max-tokens 1 | field prefill_tok_s; done | med)
    otg=$(for r in 1 2 3; do gen --ctx 130 --prompt-ids 1 --max-tokens 129 --ignore-eos | field decode_tok_s; done | med)
    otg2=$(gen --ctx 258 --prompt-ids "$ids128" --max-tokens 129 --ignore-eos | field decode_tok_s)
    orss=$(grep -v '[^0-9]' /tmp/race-orss-all | sort -n | tail -1)
    python3 - "$M" "$t" "$lpp" "$opp" "$lpp5" "$opp5" "$ltg" "$otg" "$otg2" "$lrss" "$orss" <<'PY'
import os, sys
m, t, lpp, opp, lpp5, opp5, ltg, otg, otg2, lrss, orss = sys.argv[1:]
f = lambda x: float(x)
print(f"| {os.path.basename(m)} | {t} | {f(lpp):.0f} | {f(opp):.0f} | {f(opp)/f(lpp):.2f}x | {f(lpp5):.0f} | {f(opp5):.0f} | {f(opp5)/f(lpp5):.2f}x"
      f" | {f(ltg):.1f} | {f(otg):.1f} | {f(otg)/f(ltg):.2f}x | {f(otg2):.1f} | {int(lrss)/1024:.0f} | {int(orss)/1024:.0f} |")
PY
done
