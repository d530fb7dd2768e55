#!/usr/bin/env bash
# Accuracy against transformers fp32, ours beside llama.cpp, on the same positions:
#   scripts/accuracy/run.sh MODEL.gguf LLAMA_CPP_DIR [harness logits flags...]
# 12 chunks of 256 tokens spread over GPL-3 + Apache-2.0 (Debian's common-licenses; 3 072
# positions), tokenized by `harness tokenize`. Needs: a Python with torch, transformers,
# gguf, accelerate, numpy (PY=...; transformers dequantizes the GGUF itself, so the
# reference has the file's exact weights and f32 activations), a llama.cpp build
# (LLAMA_CPP_DIR/build/bin/libllama.so; llama_logits.cpp is compiled against it), and
# target/release/harness. Prints mean KL(P_ref ‖ P) ± its standard error and top-1
# agreement for llama.cpp and for ours (with the given flags, e.g. --kv-type f32).
set -euo pipefail
M=$1; L=$2; shift 2
PY=${PY:-python3}
H=${HARNESS:-target/release/harness}
D=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d)
g++ -O2 -std=c++17 "$D/llama_logits.cpp" -I"$L/include" -I"$L/ggml/include" -L"$L/build/bin" \
    -lllama -lggml -lggml-base -Wl,-rpath,"$L/build/bin" -o "$W/llama_logits"
cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 > "$W/text"
"$H" tokenize --model "$M" --prompt "$(cat "$W/text")" | python3 -c "
import sys; ids = [int(x) for x in sys.stdin.read().strip().strip('[]').split(',')]
C = 256; step = len(ids) // 12
print('\n'.join(','.join(map(str, ids[i:i + C])) for i in range(0, 12 * step, step)))" > "$W/ids"
i=0
while read -r ids; do
    "$H" logits --model "$M" --prompt-ids "$ids" --threads 1 "$@" --out "$W/ours_$i.safetensors" 2>/dev/null
    "$W/llama_logits" "$M" "$W/llama_$i.bin" 1 "$ids" 2>/dev/null
    i=$((i + 1))
done < "$W/ids"
"$PY" "$D/ref_logits.py" "$M" "$W/ids" "$W/ref.npy" 2>/dev/null
python3 - "$W" "$i" <<'PY'
import json, struct, sys
import numpy as np
w, n = sys.argv[1], int(sys.argv[2])
def st(p):
    raw = open(p, 'rb').read(); h = struct.unpack('<Q', raw[:8])[0]; d = json.loads(raw[8:8 + h])['logits']
    a, b = d['data_offsets']; return np.frombuffer(raw[8 + h + a:8 + h + b], dtype=np.float32).reshape(d['shape'])
np.save(f'{w}/ours.npy', np.stack([st(f'{w}/ours_{i}.safetensors') for i in range(n)]))
np.save(f'{w}/llama.npy', np.stack([np.fromfile(f'{w}/llama_{i}.bin', dtype=np.float32).reshape(256, -1) for i in range(n)]))
PY
python3 "$D/compare.py" "$W/ref.npy" "$W/llama.npy" "$W/ours.npy"
rm -rf "$W"
