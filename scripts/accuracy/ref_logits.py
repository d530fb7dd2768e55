# transformers fp32 logits of a GGUF (dequantized by transformers itself), for run.sh:
#   ref_logits.py MODEL.gguf IDS_FILE OUT.npy   (IDS_FILE: one comma-separated chunk per line)
import sys, numpy as np, torch, os
from transformers import AutoModelForCausalLM
g = sys.argv[1]
m = AutoModelForCausalLM.from_pretrained(os.path.dirname(g), gguf_file=os.path.basename(g), torch_dtype=torch.float32)
m.eval()
out = []
for line in open(sys.argv[2]):
    ids = [int(x) for x in line.split(',')]
    with torch.no_grad():
        out.append(m(torch.tensor([ids])).logits[0].float().numpy())
np.save(sys.argv[3], np.stack(out))
print("ref", np.stack(out).shape)
