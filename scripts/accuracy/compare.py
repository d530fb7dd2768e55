# compare.py REF.npy X.npy... : mean KL(P_ref ‖ P_x) in nats over all positions (± standard
# error), median, and top-1 agreement with the reference.
import sys, numpy as np
def logsm(x):
    x = x.astype(np.float64); m = x.max(-1, keepdims=True); return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
ref = np.load(sys.argv[1]); R = ref.reshape(-1, ref.shape[-1])
lp = logsm(R); p = np.exp(lp); top = R.argmax(-1)
for f in sys.argv[2:]:
    X = np.load(f).reshape(-1, ref.shape[-1]); lq = logsm(X)
    kl = (p * (lp - lq)).sum(-1)
    print(f"{f}: n={len(kl)} meanKL={kl.mean():.5f} ± {kl.std()/np.sqrt(len(kl)):.5f}  median={np.median(kl):.5f}  top1={(X.argmax(-1)==top).mean():.4f}")
