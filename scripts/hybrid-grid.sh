#!/usr/bin/env bash
# The hybrid's measurements (docs/hybrid.md): cold/warm OpenCL start with the
# program-binary cache, the crossover table, and the grid {prompt 8,128,512} x
# {generate 16,256} for cpu, opencl and hybrid (wall time, time to first token).
#   scripts/hybrid-grid.sh HARNESS MODEL OUTDIR     (REPS=2 PROMPTS="8 128 512" GENS="16 256")
# Writes one JSON object per run into OUTDIR/*.json (the `generate --json` line plus
# "wall_us"), the verbose logs into *.err, and the table via `bench --crossover`.
set -u
B=$1; M=$2; OUT=$3
REPS=${REPS:-2}; PROMPTS=${PROMPTS:-"8 128 512"}; GENS=${GENS:-"16 256"}
BACKENDS=${BACKENDS:-"cpu opencl hybrid"}
mkdir -p "$OUT"
ids() { seq -s, 1 "$1"; }
# One run: its JSON line with the wall time (process start to exit) added.
one() { # name args...
    local name=$1; shift
    local t0=${EPOCHREALTIME/./}
    "$B" generate --model "$M" --ignore-eos --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
    local t1=${EPOCHREALTIME/./}
    echo "{\"name\":\"$name\",\"wall_us\":$((t1 - t0))}" >> "$OUT/walls.jsonl"
}
uptime > "$OUT/uptime-start.txt"
if [ "${START:-1}" = 1 ]; then
    # OpenCL start: with an empty binary cache, then warm, then with the cache off.
    one start-cold --backend opencl --prompt-ids "$(ids 8)" --max-tokens 16
    one start-warm --backend opencl --prompt-ids "$(ids 8)" --max-tokens 16
    one start-warm2 --backend opencl --prompt-ids "$(ids 8)" --max-tokens 16
    ANTIGRAVITY_OPENCL_BINARY_CACHE=0 one start-nocache --backend opencl --prompt-ids "$(ids 8)" --max-tokens 16
fi
if [ "${CROSSOVER:-1}" = 1 ]; then
    "$B" bench --crossover --model "$M" --out-dir "$OUT/results" > "$OUT/crossover.txt" 2>&1
fi
for rep in $(seq 1 "$REPS"); do
    for p in $PROMPTS; do
        for g in $GENS; do
            for be in $BACKENDS; do
                extra=""; [ "$be" = hybrid ] && extra="--verbose"
                one "grid-$be-p$p-g$g-r$rep" --backend "$be" --prompt-ids "$(ids "$p")" --max-tokens "$g" $extra
            done
        done
    done
done
if [ "${COLDHYB:-0}" = 1 ]; then
    # Warm-up serving with a cold device (our binary cache and the NVIDIA driver's off): the CPU serves while the
    # device compiles; the hybrid moves only if the device is ready in time to pay.
    CUDA_CACHE_DISABLE=1 ANTIGRAVITY_OPENCL_BINARY_CACHE=0 one coldhyb-p128-g256 --backend hybrid --verbose --prompt-ids "$(ids 128)" --max-tokens 256
    CUDA_CACHE_DISABLE=1 ANTIGRAVITY_OPENCL_BINARY_CACHE=0 one coldhyb-p8-g1024 --backend hybrid --verbose --prompt-ids "$(ids 8)" --max-tokens 1024
fi
uptime > "$OUT/uptime-end.txt"
