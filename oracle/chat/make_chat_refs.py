"""Reference chat prompts from Hugging Face `transformers` (the independent reference for
`core/tests/chat_templates.rs`).

For each case a `transformers` tokenizer (`PreTrainedTokenizerFast`) is made with the
BOS/EOS texts and chat template of a GGUF file (read with the `gguf` package:
SmolLM2-135M-Instruct's own file, llama.cpp's vocabulary-only `ggml-vocab-*.gguf` test
files; loading the whole vocabulary through `transformers`' GGUF path would need torch,
and rendering only uses these texts), given the case's chat template where the file has
none, and asked for `apply_chat_template(messages, tokenize=False,
add_generation_prompt=...)`; the rendered string (or the exception a template raised) is
stored with the template, the BOS/EOS texts and the time `strftime_now` saw (the render
runs with `datetime.now` pinned to that time, so the Rust side can reproduce dates).

Runs without torch:  pip install "transformers==5.25.0" jinja2 "gguf==0.19.0" numpy
    python oracle/chat/make_chat_refs.py SMOLLM2.gguf VOCAB_DIR > core/tests/data/chat_templates.json
where VOCAB_DIR holds llama.cpp's ggml-vocab-*.gguf (scripts/fetch-vocab-vectors.sh) and
its sibling `templates/` folder is read when present (llama.cpp's models/templates), else
the templates written below are used.
"""
import datetime
import json
import os
import sys

import gguf
import tokenizers
import transformers
import transformers.utils.chat_template_utils as ctu
from transformers import PreTrainedTokenizerFast

# Meta's Llama-2-chat template (meta-llama/Llama-2-7b-chat-hf tokenizer_config.json).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi there \n"}],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a joke about 🦀 crabs."},
    ],
]
BAD = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]


def main():
    smollm2, vocab_dir = sys.argv[1], sys.argv[2]
    tdir = os.path.join(vocab_dir, "templates")

    def template_file(name):
        with open(os.path.join(tdir, name)) as f:
            return f.read()

    now = datetime.datetime.now().replace(microsecond=0)

    class Pinned(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return now

    ctu.datetime = Pinned  # strftime_now calls datetime.now()

    def tok(path):
        r = gguf.GGUFReader(path)

        def field(key):
            f = r.fields.get(key)
            return None if f is None else f.contents()

        tokens = field("tokenizer.ggml.tokens")
        bos, eos = field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")
        bos_t = tokens[bos] if bos is not None else None
        eos_t = tokens[eos] if eos is not None else None
        # A stand-in vocabulary of the two texts: only they reach the template.
        inner = tokenizers.Tokenizer(tokenizers.models.WordLevel({bos_t: 0, eos_t: 1}, unk_token=bos_t))
        return PreTrainedTokenizerFast(
            tokenizer_object=inner, bos_token=bos_t, eos_token=eos_t, chat_template=field("tokenizer.chat_template")
        )

    spm = os.path.join(vocab_dir, "ggml-vocab-llama-spm.gguf")
    bpe = os.path.join(vocab_dir, "ggml-vocab-llama-bpe.gguf")
    phi3 = os.path.join(vocab_dir, "ggml-vocab-phi-3.gguf")
    cases = [("smollm2", smollm2, None), ("llama-2-chat", spm, LLAMA2_TEMPLATE), ("phi-3", phi3, None)]
    for name, fname in [
        ("llama-3.2", "meta-llama-Llama-3.2-3B-Instruct.jinja"),
        ("llama-3.1", "meta-llama-Llama-3.1-8B-Instruct.jinja"),
    ]:
        if os.path.exists(os.path.join(tdir, fname)):
            cases.append((name, bpe, template_file(fname)))
        else:
            print(f"note: {fname} not found; {name} left out", file=sys.stderr)
    out = []
    for name, path, template in cases:
        t = tok(path)
        if template is not None:
            t.chat_template = template
        for conv in CONVERSATIONS + [BAD]:
            for gen in (True, False):
                rec = {
                    "name": name,
                    "template": t.chat_template,
                    "bos_token": t.bos_token or "",
                    "eos_token": t.eos_token or "",
                    "now": int(now.replace(tzinfo=datetime.timezone.utc).timestamp()),
                    "messages": conv,
                    "add_generation_prompt": gen,
                }
                try:
                    rec["expected"] = t.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
                except Exception as e:  # a template's raise_exception
                    if conv is not BAD:
                        raise
                    rec["error"] = str(e)
                out.append(rec)
    json.dump(
        {"made_by": f"transformers {transformers.__version__} apply_chat_template (oracle/chat/make_chat_refs.py)",
         "cases": out},
        sys.stdout, ensure_ascii=False, indent=1,
    )
    print()


if __name__ == "__main__":
    main()
