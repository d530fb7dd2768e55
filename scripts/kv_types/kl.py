"""Mean KL(P_f32 ‖ P_type) of next-token distributions between two `harness logits`
files of the same ids: the reference run (an f32 KV cache) and a run with another cache
dtype. Prints one JSON line: positions, mean KL over every position, KL of the last
position, the top-1 agreement.

    python kl.py REF.safetensors OTHER.safetensors [--from N]

`--from N` scores positions N.. only (a long context's later half, where the cache
holds most of what attention reads).
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main():
    ref, other = load_file(sys.argv[1]), load_file(sys.argv[2])
    start = int(sys.argv[sys.argv.index("--from") + 1]) if "--from" in sys.argv else 0
    if not np.array_equal(ref["ids"], other["ids"]):
        sys.exit("the two files hold different ids")
    lp, lq = log_softmax(ref["logits"][start:]), log_softmax(other["logits"][start:])
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    top1 = (lp.argmax(-1) == lq.argmax(-1)).mean()
    print(json.dumps({
        "positions": int(kl.shape[0]),
        "mean_kl": float(kl.mean()),
        "kl_stderr": float(kl.std(ddof=1) / np.sqrt(len(kl))) if len(kl) > 1 else 0.0,
        "last_kl": float(kl[-1]),
        "top1_agree": float(top1),
    }))


if __name__ == "__main__":
    main()
