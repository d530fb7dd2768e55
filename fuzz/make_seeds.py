#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/ (standard
library only). The byte layouts are those of `antigravity_core::fuzzing` (core/src/fuzzing.rs).

Seeds are small valid inputs (a 1-layer Llama of width 32 as GGUF in several weight types
and as an HF directory, byte-level BPE vocabularies, tokenizer.json files of three
decoder styles, both chat template families, sampling settings) so the fuzzer starts
inside every parser instead of at its first check. The campaign's corpus grows from
these; `cargo fuzz cmin` then keeps what adds coverage into fuzz/corpus/<target>/.

    python3 fuzz/make_seeds.py
"""
import json
import os
import random
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
rng = random.Random(17)


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- the micro model: dim 32, 2 heads of 16, 1 KV head, FFN 32, 1 layer, vocab 16 ----
DIM, NH, NKV, HD, FF, NL = 32, 2, 1, 16, 32, 1
SPECIALS = ["<|im_start|>", "<|im_end|>"]
TOKENS = SPECIALS + ["a", "b", "c", "d", "e", "h", "l", "o", "\u0120", "he", "ll", "hell", "hello", "\u0120w"]
MERGES = ["h e", "l l", "he ll", "hell o", "\u0120 w"]
VOCAB = len(TOKENS)
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA32_TEMPLATE = (
    '{{- bos_token }}{%- set date_string = "26 Jul 2024" %}'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Cutting Knowledge Date: December 2023\\n" }}'
    '{{- "Today Date: " + date_string + "\\n\\n" }}{{- "<|eot_id|>" }}'
)
LLAMA30_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}"
)

# (name, rows, cols); rows = 1 for vectors
def layer_shapes():
    out = []
    for i in range(NL):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", 1, DIM),
            (p + "attn_q.weight", NH * HD, DIM),
            (p + "attn_k.weight", NKV * HD, DIM),
            (p + "attn_v.weight", NKV * HD, DIM),
            (p + "attn_output.weight", DIM, NH * HD),
            (p + "ffn_norm.weight", 1, DIM),
            (p + "ffn_gate.weight", FF, DIM),
            (p + "ffn_up.weight", FF, DIM),
            (p + "ffn_down.weight", DIM, FF),
        ]
    return out


F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30


def tensor_bytes(t, n):
    """Bytes of n values of ggml type t (small values, sane scales)."""
    if t == F32:
        return b"".join(struct.pack("<f", rng.uniform(-0.5, 0.5)) for _ in range(n))
    if t == F16:
        return b"".join(struct.pack("<e", rng.uniform(-0.5, 0.5)) for _ in range(n))
    if t == BF16:
        return b"".join(struct.pack("<f", rng.uniform(-0.5, 0.5))[2:] for _ in range(n))
    out = b""
    for _ in range(n // 32):
        if t == Q4_0:
            out += struct.pack("<e", 0.02) + bytes(rng.randrange(256) for _ in range(16))
        elif t == Q4_1:
            out += struct.pack("<ee", 0.02, -0.15) + bytes(rng.randrange(256) for _ in range(16))
        elif t == Q8_0:
            out += struct.pack("<e", 0.004) + bytes(rng.randrange(256) for _ in range(32))
    return out


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(kvs, tensors, version=3, align=32):
    """kvs: list of (key, type, value); tensors: list of (name, dims, type, bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, ty, v in kvs:
        out += gstr(k) + struct.pack("<I", ty)
        if ty == 4:  # u32
            out += struct.pack("<I", v)
        elif ty == 5:  # i32
            out += struct.pack("<i", v)
        elif ty == 6:  # f32
            out += struct.pack("<f", v)
        elif ty == 7:  # bool
            out += struct.pack("<B", v)
        elif ty == 8:  # string
            out += gstr(v)
        elif ty == 9:  # array: (elem type, values)
            et, vals = v
            out += struct.pack("<IQ", et, len(vals))
            for x in vals:
                out += gstr(x) if et == 8 else struct.pack("<i", x)
    offset, data = 0, b""
    for name, dims, ty, b in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        pad = (-len(b)) % align
        data += b + bytes(pad)
        offset += len(b) + pad
    out += bytes((-len(out)) % align)
    return out + data


def micro_gguf(mat_type, tied=True, rope_freqs=False, vocab=True):
    kvs = [
        ("general.architecture", 8, "llama"),
        ("general.name", 8, "micro"),
        ("llama.block_count", 4, NL),
        ("llama.embedding_length", 4, DIM),
        ("llama.feed_forward_length", 4, FF),
        ("llama.attention.head_count", 4, NH),
        ("llama.attention.head_count_kv", 4, NKV),
        ("llama.context_length", 4, 64),
        ("llama.rope.freq_base", 6, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
    ]
    if vocab:
        kvs += [
            ("tokenizer.ggml.model", 8, "gpt2"),
            ("tokenizer.ggml.pre", 8, "smollm"),
            ("tokenizer.ggml.tokens", 9, (8, TOKENS)),
            ("tokenizer.ggml.token_type", 9, (5, [3, 3] + [1] * (VOCAB - 2))),
            ("tokenizer.ggml.merges", 9, (8, MERGES)),
            ("tokenizer.ggml.bos_token_id", 4, 0),
            ("tokenizer.ggml.eos_token_id", 4, 1),
            ("tokenizer.ggml.add_bos_token", 7, 0),
            ("tokenizer.chat_template", 8, SMOLLM2_TEMPLATE),
        ]
    tensors = [("token_embd.weight", [DIM, VOCAB], Q8_0, tensor_bytes(Q8_0, DIM * VOCAB))]
    for name, rows, cols in layer_shapes():
        t = F32 if rows == 1 else mat_type
        dims = [cols] if rows == 1 else [cols, rows]
        tensors.append((name, dims, t, tensor_bytes(t, rows * cols)))
    tensors.append(("output_norm.weight", [DIM], F32, tensor_bytes(F32, DIM)))
    if not tied:
        tensors.append(("output.weight", [DIM, VOCAB], mat_type, tensor_bytes(mat_type, DIM * VOCAB)))
    if rope_freqs:
        tensors.append(("rope_freqs.weight", [HD // 2], F32, struct.pack(f"<{HD // 2}f", *([1.0] * (HD // 2)))))
    return gguf(kvs, tensors)


# ---- gguf ----
put("gguf", "micro_q4_0", micro_gguf(Q4_0))
put("gguf", "micro_q4_1_untied", micro_gguf(Q4_1, tied=False))
put("gguf", "micro_q8_0_rope_freqs", micro_gguf(Q8_0, rope_freqs=True))
put("gguf", "micro_f16", micro_gguf(F16))
put("gguf", "micro_f32_no_vocab", micro_gguf(F32, vocab=False))
put("gguf", "micro_bf16", micro_gguf(BF16))
put("gguf", "header_only", gguf([("general.architecture", 8, "llama")], []))


# ---- hf_dir ----
def safetensors(tensors, dtype):
    """tensors: list of (name, shape); random data of `dtype` (F32, F16, BF16)."""
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    code = {"F32": F32, "F16": F16, "BF16": BF16}[dtype]
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        b = tensor_bytes(code, n)
        assert len(b) == n * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


HF_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_tensors(tied=True):
    out = [("model.embed_tokens.weight", [VOCAB, DIM]), ("model.norm.weight", [DIM])]
    for name, rows, cols in layer_shapes():
        i, part = name.split(".")[1], name.split(".")[2]
        shape = [cols] if rows == 1 else [rows, cols]
        out.append((f"model.layers.{i}.{HF_NAMES[part]}.weight", shape))
    if not tied:
        out.append(("lm_head.weight", [VOCAB, DIM]))
    return out


def hf_config(tied=True, scaling=True):
    c = {
        "model_type": "llama",
        "hidden_size": DIM,
        "num_attention_heads": NH,
        "num_key_value_heads": NKV,
        "head_dim": HD,
        "num_hidden_layers": NL,
        "intermediate_size": FF,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
        "max_position_embeddings": 64,
        "bos_token_id": 0,
        "eos_token_id": [1],
    }
    if scaling:
        c["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        }
    return json.dumps(c).encode()


SEP = b"\xff"
put("hf_dir", "f32_q4_0", bytes([0]) + hf_config() + SEP + safetensors(hf_tensors(), "F32"))
put("hf_dir", "f16_q8_0_untied", bytes([2]) + hf_config(tied=False) + SEP + safetensors(hf_tensors(False), "F16"))
put("hf_dir", "bf16_f32_noscaling", bytes([6]) + hf_config(scaling=False) + SEP + safetensors(hf_tensors(), "BF16"))
index = json.dumps({"weight_map": {n: "model.safetensors" for n, _ in hf_tensors()}}).encode()
put("hf_dir", "indexed_f16", bytes([5]) + hf_config() + SEP + index + SEP + safetensors(hf_tensors(), "F16"))
put("hf_dir", "config_only", bytes([0]) + hf_config() + SEP)


# ---- gguf_vocab ----
def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TOKENS = [bytes_to_unicode()[b] for b in range(256)]
WORDS = ["he", "ll", "hell", "hello", "or", "ld", "\u0120w", "\u0120wor", "\u0120world", "12", "34", "123", "45"]
WORD_MERGES = ["h e", "l l", "he ll", "hell o", "o r", "l d", "\u0120 w", "\u0120w or", "\u0120wor ld", "1 2", "3 4", "12 3", "4 5"]
SAMPLE = "Hello, world! hello world 12345 <|im_start|>user\nhi<|im_end|> é🦀"


def vocab_seed(model, pre, specials, typed=True, flags=0b11000, bos=0, eos=1):
    toks = specials + BYTE_TOKENS + WORDS
    lines = [(("3" if i < len(specials) else "1") + t) if typed else t for i, t in enumerate(toks)]
    head = bytes([flags | (4 if typed else 0), bos, eos])
    text = f"{model}\n{pre}\n\n" + "\n".join(lines) + "\n\n" + "\n".join(WORD_MERGES) + "\n\n" + SAMPLE
    return head + text.encode()


put("gguf_vocab", "smollm", vocab_seed("gpt2", "smollm", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
put("gguf_vocab", "llama_bpe_add_bos", vocab_seed("gpt2", "llama-bpe", ["<|begin_of_text|>", "<|eot_id|>"], flags=0b11001))
put("gguf_vocab", "qwen2_untyped", vocab_seed("gpt2", "qwen2", ["<|endoftext|>"], typed=False, flags=0))
put("gguf_vocab", "default_pre", vocab_seed("gpt2", "", ["<s>", "</s>"], flags=0b11011))
put("gguf_vocab", "sentencepiece", vocab_seed("llama", "", ["<unk>", "<s>", "</s>"]))


# ---- tokenizer_json ----
def byte_level_json():
    vocab = {t: i for i, t in enumerate(BYTE_TOKENS + WORDS)}
    added = [
        {"id": len(vocab) + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, c in enumerate(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    ]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [m.split(" ") for m in WORD_MERGES]},
    }


def spm_json():
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "\u2581he", "llo", "\u2581hello", "h", "e", "l", "o"]
    vocab = {t: i for i, t in enumerate(pieces)}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, c in enumerate(pieces[:3])],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [["\u2581", "he"], ["l", "l"], ["\u2581he", "llo"]]},
    }


def wordlevel_json():
    vocab = {w: i for i, w in enumerate(["[UNK]", "hello", "world", "!", ","])}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }


tok_config = json.dumps({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": False,
                         "chat_template": SMOLLM2_TEMPLATE}).encode()
put("tokenizer_json", "byte_level", json.dumps(byte_level_json()).encode() + SEP + tok_config + SEP + SAMPLE.encode())
put("tokenizer_json", "byte_level_no_config", json.dumps(byte_level_json()).encode() + SEP + SEP + SAMPLE.encode())
spm_config = json.dumps({"bos_token": "<s>", "eos_token": "</s>", "chat_template": LLAMA32_TEMPLATE}).encode()
put("tokenizer_json", "sentencepiece", json.dumps(spm_json()).encode() + SEP + spm_config + SEP + SAMPLE.encode())
put("tokenizer_json", "wordlevel", json.dumps(wordlevel_json()).encode() + SEP + SEP + b"Hello, world!")

# ---- chat_template ----
conv = SEP.join(x.encode() for x in ["system", " Be brief. ", "user", "hi\n", "assistant", "hello", "user", "é🦀"])
put("chat_template", "smollm2", SMOLLM2_TEMPLATE.encode() + SEP + conv)
put("chat_template", "llama32", LLAMA32_TEMPLATE.encode() + SEP + conv)
put("chat_template", "llama30", LLAMA30_TEMPLATE.encode() + SEP + b"user" + SEP + b"hi")
put("chat_template", "chatml_plain", b"<|im_start|>system\\nYou are kind.<|im_end|>" + SEP + b"user")
put("chat_template", "none", b"{{ messages }}" + SEP + b"user" + SEP + b"x")


# ---- sampling ----
def sampling_seed(temp, top_p, min_p, penalty, top_k, last_n, seed, logits, history):
    b = struct.pack("<ffffHHQ", temp, top_p, min_p, penalty, top_k, last_n, seed)
    b += b"".join(struct.pack("<f", x) for x in logits)
    if history is not None:
        b += b"\xff\xff\xff\xff" + b"".join(struct.pack("<I", h) for h in history)
    return b


logits = [rng.uniform(-5, 5) for _ in range(64)]
put("sampling", "default", sampling_seed(0.8, 0.95, 0.05, 1.0, 40, 64, 1, logits, None))
put("sampling", "greedy", sampling_seed(0.0, 1.0, 0.0, 1.0, 0, 0, 0, logits, None))
put("sampling", "penalty_history", sampling_seed(0.7, 0.9, 0.0, 1.3, 10, 8, 7, logits, [1, 2, 3, 63, 64, 1000]))
put("sampling", "greedy_penalty", sampling_seed(0.0, 1.0, 0.0, 1.1, 0, 4, 0, logits, [5, 5, 9]))
put("sampling", "special_values", sampling_seed(1.0, 0.5, 0.9, 0.5, 1, 1, 3,
                                                [float("nan"), float("inf"), -float("inf"), 0.0, 1e38, -1e38], [0]))
