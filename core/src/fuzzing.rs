//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the
//! stable replay test (`core/tests/fuzz_corpus.rs`), so a corpus file or crash
//! reproducer runs through exactly the code the fuzzer ran.
//!
//! Each entry point takes arbitrary bytes, turns them into the input of one user-facing
//! parser (a file, a directory, a parameter set) and drives it as the harness would. It
//! must return normally for every input: library code answers bad input with an error,
//! so a panic or an abort here is a bug. The `assert!`s below state properties of an
//! `Ok` result (an id inside the vocabulary, …), which the fuzzer checks too.
//!
//! The byte layouts (what part of the input becomes which file or field) are described
//! on each function; `0xFF` separates text parts because it never occurs in UTF-8.
//! Not a stable API: `#[doc(hidden)]` in the crate root.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::chat::{ChatTemplate, Message};
use crate::cpu::{CpuBackend, Kernels};
use crate::dtype::DType;
use crate::gguf::GgufFile;
use crate::model::{self, Llama, LlamaConfig, RunOptions, Weights};
use crate::sampling::{Sampler, SamplerConfig};
use crate::tokenizer::{GgufVocab, Tokenizer};

/// The fuzz targets, by name (the file names under `fuzz/fuzz_targets/`, the folders
/// under `fuzz/corpus/` and `fuzz/regressions/`).
pub const TARGETS: &[&str] = &[
    "gguf",
    "hf_dir",
    "gguf_vocab",
    "tokenizer_json",
    "chat_template",
    "sampling",
];

/// Runs target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "gguf" => gguf(data),
        "hf_dir" => hf_dir(data),
        "gguf_vocab" => gguf_vocab(data),
        "tokenizer_json" => tokenizer_json(data),
        "chat_template" => chat_template(data),
        "sampling" => sampling(data),
        _ => return false,
    }
    true
}

/// A one-thread CPU backend with the best ISA of this machine (what `harness` runs).
fn backend() -> CpuBackend {
    CpuBackend::with_threads(Kernels::detect().isa, 1).unwrap_or_default()
}

/// Builds a model with a small context and runs two tokens through it.
fn run_model(cfg: LlamaConfig, w: Weights<CpuBackend>, be: CpuBackend) {
    let vocab = cfg.vocab as u32;
    let opts = RunOptions {
        ctx: 8,
        max_batch: 4,
        all_logits: false,
        kv_type: None,
    };
    let Ok(mut m) = Llama::new(cfg, w, be, opts) else {
        return;
    };
    if let Ok(logits) = m.forward(&[0, vocab.saturating_sub(1)]) {
        assert_eq!(logits.len(), vocab as usize);
    }
    // An id past the vocabulary is an error, not a read past the embedding.
    assert!(m.forward(&[vocab]).is_err());
}

/// Splits `data` at its `0xFF` bytes into at most `n` parts (the last one keeps any
/// further `0xFF`s).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == 0xFF).collect()
}

/// A fresh, empty directory for one input's files; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "antigravity-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzzing: cannot create a scratch directory");
        Scratch(dir)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("fuzzing: cannot write a scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A whole GGUF file: parse, read every metadata value and tensor, then what
/// `harness generate` does with it — the embedded tokenizer, the chat template, the
/// config and weights, a model with a small context and two tokens through it.
pub fn gguf(data: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else {
        return;
    };
    for (k, v) in f.metadata() {
        let _ = v.describe();
        let _ = (f.get_u32(k), f.get_f32(k), f.get_bool(k), f.get_str(k));
        let _ = (f.get_i32_array(k), f.get_f32_array(k), f.get_str_array(k));
    }
    for t in f.tensors() {
        let b = f.tensor_bytes(t).expect("a parsed tensor's bytes are inside the file");
        assert_eq!(Some(b.len()), t.dtype.row_bytes(t.row_len()).map(|r| r * t.n_rows()));
    }
    if let Ok(Some(tok)) = Tokenizer::from_gguf(&f) {
        exercise_tokenizer(&tok, "Hello, world! 12345 <|im_start|>");
    }
    let _ = ChatTemplate::detect(f.get_str("tokenizer.chat_template").ok().flatten());
    let be = backend();
    if let Ok((cfg, w)) = model::gguf::load(&f, &be) {
        run_model(cfg, w, be);
    }
}

/// A Hugging Face directory. Byte 0 chooses the layout: bit 0 = with a
/// `model.safetensors.index.json`, bits 1–2 = the weight type converted to (Q4_0, Q8_0,
/// F16, F32). The rest is `config.json` `0xFF` [index JSON `0xFF`] `model.safetensors`.
pub fn hf_dir(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let with_index = mode & 1 == 1;
    let p = parts(rest, if with_index { 3 } else { 2 });
    let dir = Scratch::new();
    dir.write("config.json", p[0]);
    if with_index {
        dir.write("model.safetensors.index.json", p.get(1).copied().unwrap_or_default());
    }
    dir.write(
        "model.safetensors",
        p.get(1 + with_index as usize).copied().unwrap_or_default(),
    );
    if let Ok(text) = std::str::from_utf8(p[0]) {
        let _ = LlamaConfig::from_hf_json(text, "config.json");
    }
    let wtype = [DType::Q4_0, DType::Q8_0, DType::F16, DType::F32][(mode as usize >> 1) & 3];
    let be = backend();
    if let Ok((cfg, w)) = model::hf::load(&dir.0, &be, wtype) {
        run_model(cfg, w, be);
    }
}

/// A GGUF vocabulary (`tokenizer.ggml.*`) as plain values, then encoding and decoding.
/// Byte 0: flags (bit 0 `add_bos`, bit 1 `add_eos`, bit 2 token types given, bit 3 BOS
/// given, bit 4 EOS given, bit 5 sentencepiece scores given (descending by position),
/// bit 6 `add_space_prefix`); bytes 1 and 2: the BOS and EOS ids. The rest is text in
/// sections separated by an empty line: `model` and `pre` (one line each, an empty `pre`
/// = none), the tokens one per line (with token types, the first character of a line is
/// its type digit), the merges one per line, and a text to encode.
pub fn gguf_vocab(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let (flags, bos, eos) = (data[0], data[1] as u32, data[2] as u32);
    let text = String::from_utf8_lossy(&data[3..]);
    let mut sections = text.splitn(4, "\n\n");
    let head = sections.next().unwrap_or_default();
    let (model, pre) = head.split_once('\n').unwrap_or((head, ""));
    let typed = flags & 4 != 0;
    let (mut tokens, mut types) = (Vec::new(), Vec::new());
    for line in sections.next().unwrap_or_default().lines() {
        if typed {
            let mut chars = line.chars();
            let ty = chars.next().and_then(|c| c.to_digit(10)).unwrap_or(1);
            types.push(ty as i32);
            tokens.push(chars.as_str());
        } else {
            tokens.push(line);
        }
    }
    let merges: Vec<&str> = sections.next().unwrap_or_default().lines().collect();
    let sample = sections.next().unwrap_or_default();
    let tokens_len = tokens.len();
    let v = GgufVocab {
        model,
        pre: (!pre.is_empty()).then_some(pre),
        tokens,
        token_types: typed.then_some(types),
        merges,
        bos: (flags & 8 != 0).then_some(bos),
        eos: (flags & 16 != 0).then_some(eos),
        add_bos: flags & 1 != 0,
        add_eos: flags & 2 != 0,
        // Sentencepiece vocabularies (`model = "llama"`) take scores: one per token,
        // from the token's position, when flag 32 is set.
        scores: (flags & 32 != 0).then(|| (0..tokens_len).map(|i| -(i as f32)).collect()),
        add_space_prefix: flags & 64 != 0,
    };
    if let Ok(tok) = Tokenizer::from_gguf_vocab(&v) {
        assert_eq!(tok.vocab_size(), v.tokens.len());
        exercise_tokenizer(&tok, sample);
    }
}

/// A `tokenizer.json` loaded as `harness` loads one from an HF directory: the input is
/// `tokenizer.json` `0xFF` `tokenizer_config.json` (absent when empty) `0xFF` a text.
pub fn tokenizer_json(data: &[u8]) {
    let p = parts(data, 3);
    let dir = Scratch::new();
    let path = dir.write("tokenizer.json", p[0]);
    if p.get(1).is_some_and(|c| !c.is_empty()) {
        dir.write("tokenizer_config.json", p[1]);
    }
    let sample = String::from_utf8_lossy(p.get(2).copied().unwrap_or_default());
    if let Ok(tok) = Tokenizer::from_file(&path) {
        exercise_tokenizer(&tok, &sample);
        if let Some(t) = tok.chat_template() {
            let _ = ChatTemplate::detect_with_tokens(Some(t), |s| tok.token_id(s).is_some());
        }
    }
}

/// What `harness generate` and `tokenize` do with a tokenizer and a prompt: encode,
/// decode, stream-decode, and ids past the vocabulary (errors).
fn exercise_tokenizer(tok: &Tokenizer, text: &str) {
    let n = tok.vocab_size();
    for add_special in [true, false] {
        if let Ok(ids) = tok.encode_with(text, add_special) {
            assert!(ids.iter().all(|&id| (id as usize) < n), "encode gave an id past {n}");
            let _ = tok.decode(&ids);
            let mut dec = tok.decoder();
            for &id in &ids {
                dec.step(tok, id).expect("an id from encode decodes");
            }
            let _ = dec.finish();
        }
    }
    let last = (n as u32).saturating_sub(1);
    let _ = (tok.decode(&[0, last]), tok.token_to_piece(last));
    assert!(tok.decode(&[n as u32]).is_err());
    assert!(tok.decoder().step(tok, n as u32).is_err());
    for id in tok.eos_ids() {
        assert!((*id as usize) < n);
    }
}

/// A chat template source and a conversation: `template` `0xFF` then alternating role and
/// content parts separated by `0xFF`. Detection (with and without the vocabulary
/// fallback) and rendering with and without the generation prompt.
pub fn chat_template(data: &[u8]) {
    let p: Vec<String> = data
        .split(|&b| b == 0xFF)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let template = p[0].as_str();
    let messages: Vec<Message> = p[1..]
        .chunks(2)
        .map(|c| Message {
            role: &c[0],
            content: c.get(1).map_or("", String::as_str),
        })
        .collect();
    let found = [
        ChatTemplate::detect(Some(template)),
        ChatTemplate::detect(None),
        ChatTemplate::detect_with_tokens(None, |t| template.contains(t)),
        ChatTemplate::detect_with_tokens(Some(template), |_| true),
    ];
    for t in found.into_iter().flatten() {
        for gen in [true, false] {
            // Built-in families render any conversation.
            let s = t.render(&messages, gen).expect("a built-in template renders");
            assert!(!gen || s.ends_with("\n"), "a generation prompt ends with a newline");
        }
        let _ = t.render_user(template);
        let _ = (t.bos_in_text(), t.end_of_turn());
    }
    // The same text as the file's own Jinja template: it may fail to compile or to render
    // (`raise_exception`, type errors), never panic.
    if let Ok(Some(t)) = ChatTemplate::for_model(Some(template), Some("<s>"), Some("</s>"), |_| false) {
        for gen in [true, false] {
            let _ = t.render(&messages, gen);
        }
        let _ = t.render_user(template);
    }
}

/// Sampling parameters and logits, as `--temperature`, `--top-k`, … and a model give
/// them. Bytes 0–27: temperature, top_p, min_p, repeat_penalty (f32 each), top_k and
/// repeat_last_n (u16 each), the seed (u64 from 8 bytes); then the logits (f32 each,
/// at most 4096) and, after a `0xFF 0xFF 0xFF 0xFF` marker, the history (u32 each).
pub fn sampling(data: &[u8]) {
    if data.len() < 28 {
        return;
    }
    let f = |i: usize| f32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]) as usize;
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&data[20..28]);
    let cfg = SamplerConfig {
        temperature: f(0),
        top_p: f(4),
        min_p: f(8),
        repeat_penalty: f(12),
        top_k: u16_at(16),
        repeat_last_n: u16_at(18),
        seed: u64::from_le_bytes(seed),
    };
    let body = &data[28..];
    let marker = body.windows(4).position(|w| w == [0xFF; 4]).unwrap_or(body.len());
    let words = |b: &[u8]| -> Vec<[u8; 4]> { b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect() };
    let logits: Vec<f32> = words(&body[..marker])
        .into_iter()
        .take(4096)
        .map(f32::from_le_bytes)
        .collect();
    let history: Vec<u32> = words(body.get(marker + 4..).unwrap_or_default())
        .into_iter()
        .map(u32::from_le_bytes)
        .collect();
    let valid = cfg.validate().is_ok();
    let Ok(mut s) = Sampler::new(cfg, logits.len()) else {
        return;
    };
    assert!(valid, "Sampler::new accepted a config validate() rejects");
    for _ in 0..3 {
        if let Ok(id) = s.sample(&logits, &history) {
            assert!((id as usize) < logits.len(), "sampled id {id} past {}", logits.len());
        }
    }
    assert!(s.sample(&logits[1..], &history).is_err());
}
