#!/usr/bin/env python3
"""Reference token ids for SmolLM2-135M-Instruct, from the tokenizer that HF
transformers builds out of the GGUF's embedded vocabulary/merges
(`AutoTokenizer.from_pretrained(dir, gguf_file=...)`).

Outputs:
  oracle/tokenizer/smollm2_ids.json        list of cases (schema in oracle/README.md)
  oracle/tokenizer/smollm2-tokenizer.json  that tokenizer's tokenizer.json (tokenizers format)

Ids are produced with add_special_tokens=False (SmolLM2's GGUF says add_bos_token=false;
the script asserts that encoding with add_special_tokens=True gives the same ids for plain
text, i.e. no BOS is prepended, and records the result in the JSON header).
Run: python3 oracle/tokenizer/make_ids.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import smollm2_gguf_path  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

PLAIN = [
    "The capital of France is",
    "Hello, world! This is a simple English sentence, with punctuation; and more.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{:?}\", v);\n}\n",
    "12345 3.14159 2026-11-26 1,000,000 0x7fff 42nd",
    "café naïve Zürich façade résumé São Paulo Ελληνικά Русский",
    "你好，世界。日本語のテキスト 한국어 텍스트",
    "Emoji: 😀🚀👍🏽 ❤️ 👨‍👩‍👧‍👦 done",
    "multiple   spaces\tand\ttabs\n\n\nnewlines  \n  trailing   ",
    " leading space",
    "",
    "<|im_start|>user\nraw special tokens in text<|im_end|>",
    "I'm sure you'll say it's fine, isn't it? We've DONE it'd.",
    "a" * 50 + " " + "ab" * 20,
]

CHAT_USER = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Explain gravity in one sentence. 🙂",
]


def main():
    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    cases = []
    bos_added = False
    for text in PLAIN:
        ids = tok.encode(text, add_special_tokens=False)
        ids_sp = tok.encode(text, add_special_tokens=True)
        if ids_sp != ids:
            bos_added = True
        # round-trip check (decode) recorded for information
        cases.append({"kind": "plain", "text": text, "ids": ids,
                      "decoded": tok.decode(ids, skip_special_tokens=False)})
    for msg in CHAT_USER:
        rendered = tok.apply_chat_template([{"role": "user", "content": msg}], add_generation_prompt=True,
                                           tokenize=False)
        ids = tok.encode(rendered, add_special_tokens=False)
        cases.append({"kind": "chat", "user_message": msg, "text": rendered, "ids": ids,
                      "decoded": tok.decode(ids, skip_special_tokens=False)})
    out = {
        "generator": "oracle/tokenizer/make_ids.py",
        "source": f"transformers {transformers.__version__} AutoTokenizer.from_pretrained(gguf_file=...)",
        "gguf_file": os.path.basename(gguf),
        "add_special_tokens": False,
        "add_special_tokens_true_changes_ids": bos_added,
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "chat_template": tok.chat_template,
        "cases": cases,
    }
    with open(os.path.join(HERE, "smollm2_ids.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    tjson = os.path.join(HERE, "smollm2-tokenizer.json")
    tok.backend_tokenizer.save(tjson, pretty=False)  # compact: ~1.6 MB instead of ~3.5 MB
    print(f"{len(cases)} cases; tokenizer.json {os.path.getsize(tjson)} bytes; bos_added={bos_added}")


if __name__ == "__main__":
    main()
