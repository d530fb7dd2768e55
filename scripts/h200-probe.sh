#!/usr/bin/env bash
# Device-side probes that go with h200-final.sh (run after it, same $OUT): the 1B
# prefill profile (per-kernel device times) and, from the binary cache h200-final.sh's
# runs filled, each program's PTX stack use (`.local` depots: spilled registers or
# arrays indexed at run time) per kernel entry.
set -u
G=$PWD/gpu-bin
export ANTIGRAVITY_OPENCL_REQUIRED=1 ANTIGRAVITY_OPENCL_DEVICE=nvidia ANTIGRAVITY_HOME=/tmp/aghome
[ -x $G/opencl_profiles ] && ANTIGRAVITY_PROFILE_SHAPE=llama3.2-1b timeout 150 $G/opencl_profiles prefill_profile > $OUT/prefill-1b.txt 2>&1
for f in /tmp/aghome/cl-cache/*; do
  [ -f "$f" ] || continue
  echo "== $f $(stat -c %s "$f") bytes"
  grep -a -E "^\.(visible )?\.entry|__local_depot|\.local \.align" "$f" | head -40
done > $OUT/ptx-stack.txt 2>&1
