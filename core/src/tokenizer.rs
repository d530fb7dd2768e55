//! Text ⇄ token ids, on top of the `tokenizers` crate.
//!
//! A [`Tokenizer`] comes from one of two places:
//!
//! * a Hugging Face `tokenizer.json` ([`Tokenizer::from_file`]), with the BOS/EOS facts
//!   read from a `tokenizer_config.json` (and `config.json` / `generation_config.json`
//!   for extra end-of-generation ids) next to it when present;
//! * the vocabulary embedded in a GGUF file ([`Tokenizer::from_gguf_vocab`], fed a
//!   [`GgufVocab`] of plain values so this module does not depend on the GGUF reader).
//!   A `gpt2` vocabulary becomes a byte-level BPE `tokenizer.json` (built as a
//!   `serde_json::Value`) the same way Hugging Face `transformers` converts it
//!   (`integrations/gguf/gguf_tokenizer_mapping.py`): vocab = tokens by index, merges as
//!   given, CONTROL (type 3) tokens registered as special added tokens and USER_DEFINED
//!   (type 4) ones as plain added tokens, so `<|im_start|>` in text is one id. The
//!   pre-tokenizer follows `tokenizer.ggml.pre` the way llama.cpp does (see
//!   [`pre_tokenizer_for`]).
//!   A `llama` (sentencepiece) vocabulary becomes a BPE with byte fallback whose merges
//!   come from the token scores (see the `spm` module).
//!
//! Invariants: ids are `< vocab_size()`; [`Tokenizer::encode`] recognizes special tokens
//! written in the text (llama.cpp's `parse_special = true`) and adds BOS iff the model says
//! so (`add_bos`); [`Tokenizer::decode`] renders special tokens as their text.
//!
//! Streaming: every token's raw bytes are precomputed at load ([`Tokenizer::token_to_piece`]),
//! so a [`StreamDecoder`] turns ids into text without allocating once warm, holding back
//! an incomplete UTF-8 sequence (an emoji split over two byte tokens) until it completes.
//! The decoder holds no borrow of the tokenizer: `dec.step(&tok, id)`.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

mod spm;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control token (`<|im_start|>`, `<|eot_id|>`): special, matched whole in text.
    pub const CONTROL: i32 = 3;
    /// A user-defined token: matched whole in text, not special.
    pub const USER_DEFINED: i32 = 4;
    /// Unused slot.
    pub const UNUSED: i32 = 5;
    /// A byte token (`<0x0A>`) of a sentencepiece vocabulary.
    pub const BYTE: i32 = 6;
}

/// The tokenizer facts a GGUF file holds, as plain values (the GGUF reader fills this).
#[derive(Debug, Clone, Default)]
pub struct GgufVocab<'a> {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (sentencepiece,
    /// see [`spm`]).
    pub model: &'a str,
    /// `tokenizer.ggml.pre`, e.g. `"smollm"`, `"llama-bpe"`; `None` = GPT-2's default.
    pub pre: Option<&'a str>,
    /// `tokenizer.ggml.tokens`; the id of a token is its index.
    pub tokens: Vec<&'a str>,
    /// `tokenizer.ggml.token_type` (same length as `tokens`), see [`token_type`].
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`, each `"left right"`, best first.
    pub merges: Vec<&'a str>,
    /// `tokenizer.ggml.scores` (same length as `tokens`): a sentencepiece vocabulary's
    /// merge priorities, higher first.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.add_space_prefix` (sentencepiece: prepend `▁` to the text;
    /// llama.cpp's default is true).
    pub add_space_prefix: bool,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (llama.cpp defaults it to true for `"llama"`
    /// vocabularies and false for `"gpt2"` when the key is absent).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: bool,
}

/// Token texts that end a generation when the vocabulary has them as special tokens
/// (the same list llama.cpp uses to find end-of-generation tokens).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<EOT>",
    "<|return|>",
];

/// Llama 3's split regex (also `transformers`' `_LLAMA3_SPLIT`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex (`transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX`).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer (as `tokenizer.json` JSON) and the BPE `ignore_merges` flag for a
/// GGUF `tokenizer.ggml.pre` value, following llama.cpp's `llama_vocab` pre-types:
///
/// * `None`, `"default"`, `"gpt-2"`, `"gpt2"`: GPT-2's byte-level regex.
/// * `"smollm"`, `"starcoder"`, `"refact"`: every digit split alone, then GPT-2's regex —
///   SmolLM2's own `tokenizer.json` (`Digits(individual_digits) + ByteLevel`). The
///   SmolLM2 vocabulary has no multi-digit token, so this equals what `transformers`
///   builds from the GGUF (plain `ByteLevel`).
/// * `"llama-bpe"`, `"llama3"`, `"llama-v3"`, `"smaug-bpe"`, `"dbrx"`, `"falcon3"`: Llama 3's
///   split regex (isolated), then `ByteLevel(use_regex = false)`; `ignore_merges = true`
///   as in Meta's `tokenizer.json` and llama.cpp.
/// * `"qwen2"`, `"deepseek-r1-qwen"`: Qwen2's split regex, then `ByteLevel(use_regex = false)`.
///
/// Anything else is an error: tokenizing with the wrong split gives silently wrong ids.
pub fn pre_tokenizer_for(pre: Option<&str>) -> Result<(Value, bool)> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]})
    };
    Ok(match pre {
        None | Some("default") | Some("gpt-2") | Some("gpt2") => (byte_level(true), false),
        Some("smollm") | Some("starcoder") | Some("refact") => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        ),
        Some("llama-bpe") | Some("llama3") | Some("llama-v3") | Some("smaug-bpe") | Some("dbrx") | Some("falcon3") => {
            (split(LLAMA3_SPLIT), true)
        }
        Some("qwen2") | Some("deepseek-r1-qwen") => (split(QWEN2_SPLIT), false),
        Some(other) => {
            return Err(Error::format(
                "GGUF tokenizer.ggml.pre",
                format!(
                    "unsupported pre-tokenizer {other:?} (supported: default, gpt-2, smollm, starcoder, refact, \
                     llama-bpe, llama3, llama-v3, smaug-bpe, dbrx, falcon3, qwen2, deepseek-r1-qwen)"
                ),
            ))
        }
    })
}

/// GPT-2's `bytes_to_unicode`: the printable character each byte is spelled as in a
/// byte-level vocabulary.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    table
}

/// How a token's raw bytes are recovered from its vocabulary string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte-level: each char is one byte via the inverse `bytes_to_unicode`.
    ByteLevel,
    /// Sentencepiece: `▁` is a space, `<0xXX>` is one byte.
    SentencePiece,
    /// Unknown decoder: ask the `tokenizers` decoder for each token alone.
    Decoder,
}

/// A loaded tokenizer: the `tokenizers` model (the encoder) plus BOS/EOS facts and
/// per-token bytes.
///
/// The encoder is by far the largest part: its BPE tables, vocabulary maps and
/// pre-tokenizer regexes take ~16 MB for a 49k vocabulary (SmolLM2, measured as peak RSS
/// with and without it), a tenth of what the whole SmolLM2 Q4_1 run holds. Decoding needs
/// none of it (the per-token bytes are kept here), so a caller that has encoded all its
/// text — a generation from one prompt — can [`release_encoder`](Self::release_encoder).
pub struct Tokenizer {
    /// `None` once released.
    encoder: Option<tokenizers::Tokenizer>,
    /// Where it came from, for error messages.
    source: String,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// `eos` first, then every other end-of-generation id.
    eos_ids: Vec<u32>,
    /// Concatenated raw bytes of every token; token `i` is `pieces[offsets[i]..offsets[i+1]]`.
    pieces: Vec<u8>,
    /// (vocab_size + 1)
    offsets: Vec<u32>,
    /// (vocab_size) true for special (control) tokens.
    special: Vec<bool>,
    /// The decoder drops one leading space of the whole text (sentencepiece `Strip`).
    strip_leading_space: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. BOS/EOS come from a `tokenizer_config.json`
    /// in the same folder (`bos_token`, `eos_token`, `add_bos_token`, `add_eos_token`,
    /// `chat_template`); where it says nothing about `add_bos_token`, BOS is added iff the
    /// file's post-processor adds it (Llama 3's does). Extra end-of-generation ids come
    /// from `generation_config.json` / `config.json` (`eos_token_id`, a number or a list).
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::io(file.clone(), source))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&file, format!("not valid JSON: {e}")))?;
        let style = piece_style_of(json.get("decoder"));
        let strip = strips_leading_space(json.get("decoder"));
        if let Some(model) = json.get("model") {
            check_bpe_merges(model).map_err(|msg| Error::format(&file, msg))?;
        }
        let inner: tokenizers::Tokenizer = serde_json::from_value(json)
            .map_err(|e| Error::format(&file, format!("not a tokenizer.json this version reads: {e}")))?;

        let dir = path.parent().unwrap_or(Path::new("."));
        let config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let token_field = |key: &str| -> Option<u32> {
            let v = config.as_ref()?.get(key)?;
            let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(s)
        };
        let bos = token_field("bos_token");
        let eos = token_field("eos_token");
        let flag = |key: &str| config.as_ref()?.get(key)?.as_bool();
        // What the post-processor adds around a text, to learn add_bos/add_eos when the
        // config is silent.
        let probe = inner
            .encode("a", true)
            .map_err(|e| Error::format(&file, format!("cannot encode a probe text: {e}")))?;
        let probe = probe.get_ids();
        let add_bos = flag("add_bos_token").unwrap_or_else(|| bos.is_some() && probe.first() == bos.as_ref());
        let add_eos = flag("add_eos_token").unwrap_or_else(|| eos.is_some() && probe.last() == eos.as_ref());
        let chat_template = config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
            .and_then(|t| t.as_str())
            .map(str::to_owned);

        let mut extra_eos = Vec::new();
        for name in ["generation_config.json", "config.json"] {
            if let Some(cfg) = read_json_if_present(&dir.join(name))? {
                match cfg.get("eos_token_id") {
                    Some(Value::Number(n)) => extra_eos.extend(n.as_u64().map(|x| x as u32)),
                    Some(Value::Array(a)) => extra_eos.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32)),
                    _ => {}
                }
            }
        }
        let mut tok = Tokenizer::assemble(
            inner,
            file,
            style,
            strip,
            bos,
            eos,
            add_bos,
            add_eos,
            chat_template,
            None,
        )?;
        for id in extra_eos {
            if (id as usize) < tok.vocab_size() && !tok.eos_ids.contains(&id) {
                tok.eos_ids.push(id);
            }
        }
        Ok(tok)
    }

    /// The tokenizer embedded in an opened GGUF file (`tokenizer.ggml.*`), or `None` when
    /// the file has no vocabulary (e.g. `tokenizer.ggml.model = "no_vocab"`).
    pub fn from_gguf(f: &crate::gguf::GgufFile) -> Result<Option<Tokenizer>> {
        let Some(tokens) = f.get_str_array("tokenizer.ggml.tokens")? else {
            return Ok(None);
        };
        let merges = f.get_str_array("tokenizer.ggml.merges")?;
        let model = f.get_str("tokenizer.ggml.model")?.unwrap_or("gpt2");
        let v = GgufVocab {
            model,
            pre: f.get_str("tokenizer.ggml.pre")?,
            tokens: tokens.iter().collect(),
            token_types: f.get_i32_array("tokenizer.ggml.token_type")?,
            merges: merges.map(|m| m.iter().collect()).unwrap_or_default(),
            scores: f.get_f32_array("tokenizer.ggml.scores")?,
            add_space_prefix: f.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true),
            bos: f.get_u32("tokenizer.ggml.bos_token_id")?,
            eos: f.get_u32("tokenizer.ggml.eos_token_id")?,
            // llama.cpp's defaults when the key is absent: true for sentencepiece.
            add_bos: f.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama"),
            add_eos: f.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        };
        Tokenizer::from_gguf_vocab(&v)
            .map(Some)
            .map_err(|e| Error::format(f.path(), format!("tokenizer: {e}")))
    }

    /// Builds the tokenizer a GGUF file describes (see the module doc). Fails on an
    /// unsupported `model` or `pre`, a `token_types` of the wrong length, a malformed merge,
    /// or BOS/EOS ids past the vocabulary.
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Tokenizer> {
        const FILE: &str = "GGUF tokenizer";
        let sentencepiece = match v.model {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(Error::format(
                    FILE,
                    format!(
                        "unsupported tokenizer.ggml.model {other:?}; supported: \"gpt2\" (byte-level BPE), \
                         \"llama\" (sentencepiece)"
                    ),
                ))
            }
        };
        let n = v.tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(Error::format(FILE, format!("tokenizer.ggml.tokens has {n} entries")));
        }
        if let Some(tt) = &v.token_types {
            if tt.len() != n {
                return Err(Error::format(
                    FILE,
                    format!(
                        "tokenizer.ggml.token_type has {} entries, tokenizer.ggml.tokens has {n}",
                        tt.len()
                    ),
                ));
            }
        }
        for (what, id) in [("bos_token_id", v.bos), ("eos_token_id", v.eos)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(Error::range(
                        format!("{FILE}: tokenizer.ggml.{what}"),
                        id as u64,
                        n as u64,
                    ));
                }
            }
        }
        if sentencepiece {
            let inner: tokenizers::Tokenizer = serde_json::from_value(spm::tokenizer_json(v)?)
                .map_err(|e| Error::format(FILE, format!("cannot build the sentencepiece tokenizer: {e}")))?;
            return Tokenizer::assemble(
                inner,
                FILE.into(),
                PieceStyle::SentencePiece,
                v.add_space_prefix,
                v.bos,
                v.eos,
                v.add_bos,
                v.add_eos,
                None,
                Some(&v.tokens),
            );
        }
        let (pre_tokenizer, ignore_merges) = pre_tokenizer_for(v.pre)?;

        // Vocabulary: ids by index. A normal token spelled outside the byte alphabet is
        // re-spelled byte by byte (as transformers does); control / user-defined tokens keep
        // their text so the added-token matcher finds them under their own id.
        let spelling = bytes_to_unicode();
        let mut in_alphabet = [false; 0x144];
        for &c in &spelling {
            in_alphabet[c as usize] = true;
        }
        let is_spelled = |t: &str| {
            t.chars()
                .all(|c| (c as usize) < in_alphabet.len() && in_alphabet[c as usize])
        };
        let ttype = |i: usize| v.token_types.as_ref().map_or(token_type::NORMAL, |tt| tt[i]);
        let mut vocab = Map::with_capacity(n);
        let mut added = Vec::new();
        for (i, &t) in v.tokens.iter().enumerate() {
            let ty = ttype(i);
            let is_added = ty == token_type::CONTROL || ty == token_type::USER_DEFINED;
            let key = if is_added || is_spelled(t) {
                t.to_owned()
            } else {
                t.bytes().map(|b| spelling[b as usize]).collect()
            };
            vocab.insert(key, json!(i));
            if is_added && !t.is_empty() {
                added.push(json!({
                    "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": ty == token_type::CONTROL,
                }));
            }
        }
        let mut merges = Vec::with_capacity(v.merges.len());
        for (i, m) in v.merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| {
                Error::format(
                    FILE,
                    format!("tokenizer.ggml.merges[{i}] = {m:?} is not \"left right\""),
                )
            })?;
            merges.push(json!([a, b]));
        }
        let json = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
            },
        });
        check_bpe_merges(&json["model"])
            .map_err(|msg| Error::format(FILE, msg.replace("model.merges", "tokenizer.ggml.merges")))?;
        let inner: tokenizers::Tokenizer = serde_json::from_value(json)
            .map_err(|e| Error::format(FILE, format!("cannot build the BPE tokenizer: {e}")))?;
        Tokenizer::assemble(
            inner,
            FILE.into(),
            PieceStyle::ByteLevel,
            false,
            v.bos,
            v.eos,
            v.add_bos,
            v.add_eos,
            None,
            Some(&v.tokens),
        )
    }

    /// Common tail of the constructors: per-token bytes, special flags, EOS set.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        inner: tokenizers::Tokenizer,
        source: String,
        style: PieceStyle,
        strip_leading_space: bool,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        add_eos: bool,
        chat_template: Option<String>,
        names: Option<&[&str]>,
    ) -> Result<Tokenizer> {
        let added = inner.get_added_tokens_decoder();
        // Ids may exceed the `tokenizers` count when a GGUF vocabulary repeats a string
        // (its map keeps one id); the GGUF's own list is authoritative.
        let vocab = inner.get_vocab(true);
        let largest = vocab.values().chain(added.keys()).max().map_or(0, |&m| m as usize + 1);
        let n = vocab.len().max(names.map_or(0, <[&str]>::len)).max(largest);
        check_id_span(&source, n, vocab.len().max(added.len()))?;
        let mut inverse = [0u8; 0x144];
        for (b, c) in bytes_to_unicode().iter().enumerate() {
            inverse[*c as usize] = b as u8;
        }
        let mut pieces = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut special = vec![false; n];
        offsets.push(0u32);
        for id in 0..n as u32 {
            if let Some(a) = added.get(&id) {
                pieces.extend_from_slice(a.content.as_bytes());
                special[id as usize] = a.special;
            } else if let Some(t) = names
                .and_then(|n| n.get(id as usize).map(|s| s.to_string()))
                .or_else(|| inner.id_to_token(id))
            {
                match style {
                    PieceStyle::ByteLevel => {
                        for c in t.chars() {
                            let u = c as usize;
                            if u < inverse.len() && (inverse[u] != 0 || u == 0x100) {
                                pieces.push(inverse[u]);
                            } else {
                                let mut buf = [0u8; 4];
                                pieces.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                    PieceStyle::SentencePiece => {
                        let byte = t
                            .strip_prefix("<0x")
                            .and_then(|h| h.strip_suffix('>'))
                            .filter(|h| h.len() == 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok());
                        match byte {
                            Some(b) => pieces.push(b),
                            None => pieces.extend_from_slice(t.replace('\u{2581}', " ").as_bytes()),
                        }
                    }
                    PieceStyle::Decoder => {
                        let s = inner.decode(&[id], false).unwrap_or_default();
                        pieces.extend_from_slice(s.as_bytes());
                    }
                }
            }
            let end =
                u32::try_from(pieces.len()).map_err(|_| Error::format(&source, "token texts exceed 4 GiB in total"))?;
            offsets.push(end);
        }
        let mut eos_ids: Vec<u32> = eos.into_iter().collect();
        for t in END_OF_GENERATION {
            if let Some(id) = inner.token_to_id(t) {
                if special.get(id as usize) == Some(&true) && !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Ok(Tokenizer {
            encoder: Some(inner),
            source,
            bos,
            eos,
            add_bos: add_bos && bos.is_some(),
            add_eos: add_eos && eos.is_some(),
            eos_ids,
            pieces,
            offsets,
            special,
            strip_leading_space,
            chat_template,
        })
    }

    /// Overrides BOS and whether [`encode`](Self::encode) adds it.
    pub fn with_bos(mut self, bos: Option<u32>, add_bos: bool) -> Self {
        self.bos = bos;
        self.add_bos = add_bos && bos.is_some();
        self
    }

    /// Overrides EOS (kept first in [`eos_ids`](Self::eos_ids)) and whether
    /// [`encode`](Self::encode) appends it.
    pub fn with_eos(mut self, eos: Option<u32>, add_eos: bool) -> Self {
        if let Some(old) = self.eos {
            self.eos_ids.retain(|&x| x != old);
        }
        if let Some(e) = eos {
            self.eos_ids.retain(|&x| x != e);
            self.eos_ids.insert(0, e);
        }
        self.eos = eos;
        self.add_eos = add_eos && eos.is_some();
        self
    }

    /// Text → ids. Special tokens written in the text (`<|im_start|>`) become their id;
    /// BOS is prepended iff `add_bos` and the text does not already start with it (and EOS
    /// appended iff `add_eos`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// Like [`encode`](Self::encode), but `add_special = false` adds neither BOS nor EOS.
    pub fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .encoder()?
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("tokenizer ({}): cannot encode text: {e}", self.source)))?;
        let body = enc.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        // A text that already starts with BOS (a rendered Llama 3 chat prompt) does not
        // get a second one.
        if add_special && self.add_bos && body.first() != self.bos.as_ref() {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(body);
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Ids → text, special tokens included as their text. Fails on an id past the
    /// vocabulary. Byte sequences that are not UTF-8 become U+FFFD. Once the encoder is
    /// released, the text is the tokens' bytes joined (what [`StreamDecoder`] yields):
    /// the same text for byte-level and sentencepiece vocabularies.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        match &self.encoder {
            Some(enc) => enc
                .decode(ids, false)
                .map_err(|e| Error::invalid(format!("tokenizer ({}): cannot decode: {e}", self.source))),
            None => {
                let mut d = self.decoder();
                let mut text = String::new();
                for &id in ids {
                    text.push_str(d.step(self, id)?);
                }
                text.push_str(d.finish());
                Ok(text)
            }
        }
    }

    /// Frees the encoder (the `tokenizers` model: ~16 MB for a 49k vocabulary). Decoding,
    /// the per-token bytes and the BOS/EOS facts keep working; [`encode`](Self::encode)
    /// then fails saying so, and [`token_id`](Self::token_id) / [`inner`](Self::inner)
    /// answer `None`.
    pub fn release_encoder(&mut self) {
        self.encoder = None;
    }

    /// Whether [`release_encoder`](Self::release_encoder) has run.
    pub fn encoder_released(&self) -> bool {
        self.encoder.is_none()
    }

    fn encoder(&self) -> Result<&tokenizers::Tokenizer> {
        self.encoder.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "tokenizer ({}): the encoder was released (Tokenizer::release_encoder); only decoding is available",
                self.source
            ))
        })
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let n = self.vocab_size();
        match ids.iter().position(|&id| id as usize >= n) {
            Some(i) => Err(Error::range(
                format!("token id at position {i}"),
                ids[i] as u64,
                n as u64,
            )),
            None => Ok(()),
        }
    }

    /// The raw bytes token `id` stands for (a byte-level token may be part of a UTF-8
    /// character); `None` past the vocabulary.
    pub fn token_to_piece(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        Some(&self.pieces[a as usize..b as usize])
    }

    /// A streaming decoder for this tokenizer's ids (see [`StreamDecoder`]).
    pub fn decoder(&self) -> StreamDecoder {
        StreamDecoder {
            pending: Vec::with_capacity(16),
            out: String::with_capacity(64),
            skip_special: false,
            at_start: true,
        }
    }

    /// The BOS id, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// The EOS id, if the model has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// Whether [`encode`](Self::encode) prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether [`encode`](Self::encode) appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Every id that ends a generation: EOS first, then special tokens such as
    /// `<|im_end|>`, `<|eot_id|>`, `<|end_of_text|>`, `<|endoftext|>`, and for
    /// [`from_file`](Self::from_file) the `eos_token_id`s of `generation_config.json` /
    /// `config.json`.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }
    /// Whether `id` ends a generation (is in [`eos_ids`](Self::eos_ids)).
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }
    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }
    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.offsets.len() - 1
    }
    /// The id of a token given its vocabulary string (`"<|im_end|>"`, `"Ġthe"`); `None`
    /// for every string once the encoder (which holds the strings) is released.
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.encoder.as_ref()?.token_to_id(s)
    }
    /// The chat template of `tokenizer_config.json`, when loaded with
    /// [`from_file`](Self::from_file) (GGUF callers have it in `tokenizer.chat_template`).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    /// The wrapped `tokenizers` tokenizer; `None` once released.
    pub fn inner(&self) -> Option<&tokenizers::Tokenizer> {
        self.encoder.as_ref()
    }
}

/// Turns ids into text as they arrive. Each [`step`](Self::step) returns the text that is
/// complete so far; bytes of a UTF-8 character split over tokens wait for the rest. No
/// allocation once its buffers have grown to the longest token. It holds no reference to
/// the tokenizer (pass the same one to every `step`), so it can live next to it.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    /// Bytes not yet emitted: at most an incomplete UTF-8 sequence between calls.
    pending: Vec<u8>,
    out: String,
    skip_special: bool,
    at_start: bool,
}

impl StreamDecoder {
    /// Whether special tokens (`<|im_end|>`) are left out of the text (default: shown).
    pub fn skip_special(mut self, yes: bool) -> Self {
        self.skip_special = yes;
        self
    }

    /// Adds one id decoded with `tok`; returns the newly completed text (often empty). Invalid UTF-8
    /// becomes U+FFFD, as in [`Tokenizer::decode`]. Fails on an id past the vocabulary.
    pub fn step(&mut self, tok: &Tokenizer, id: u32) -> Result<&str> {
        let piece = tok
            .token_to_piece(id)
            .ok_or_else(|| Error::range("token id", id as u64, tok.vocab_size() as u64))?;
        self.out.clear();
        if self.skip_special && tok.is_special(id) {
            return Ok(&self.out);
        }
        let mut piece = piece;
        if self.at_start && !piece.is_empty() {
            self.at_start = false;
            if tok.strip_leading_space && piece[0] == b' ' {
                piece = &piece[1..];
            }
        }
        self.pending.extend_from_slice(piece);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    self.out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // `from_utf8` validated exactly this range, so this never fails.
                    self.out
                        .push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            self.out.push('\u{FFFD}');
                            start = valid + bad;
                        }
                        None => {
                            start = valid; // incomplete tail: wait for more bytes
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(&self.out)
    }

    /// Ends the stream: whatever is left (an incomplete character) as U+FFFD.
    pub fn finish(&mut self) -> &str {
        self.out.clear();
        if !self.pending.is_empty() {
            self.out.push('\u{FFFD}');
            self.pending.clear();
        }
        &self.out
    }
}

/// The tables below are sized by the largest id, which a file states: a vocabulary of
/// `defined` tokens may span at most `2 · defined + 256` ids (real ones are dense: a few
/// unused slots at most) and never more than [`MAX_VOCAB`](crate::model::config::MAX_VOCAB).
/// Without this one token with id 3 000 000 000 took 74 s and 11.7 GB to load.
fn check_id_span(source: &str, span: usize, defined: usize) -> Result<()> {
    let limit = defined
        .saturating_mul(2)
        .saturating_add(256)
        .min(crate::model::config::MAX_VOCAB);
    if span > limit {
        return Err(Error::format(
            source,
            format!(
                "largest token id + 1 is too large (a vocabulary of {defined} tokens may span at most 2 × {defined} + 256 ids, and never more than {})",
                crate::model::config::MAX_VOCAB
            ),
        )
        .given_limit(span as u64, limit as u64));
    }
    Ok(())
}

/// Refuses a BPE merge whose joined result is not in the vocabulary, before `tokenizers`
/// builds the model: `tokenizers` 0.23 copies the joined text into a buffer as long as the
/// longest vocabulary entry *before* looking it up, so such a merge panicked (index out of
/// range; found by the `tokenizer_json` fuzz target), and a right part shorter than
/// `continuing_subword_prefix` underflowed. Merges whose parts are not in the vocabulary
/// are left to `tokenizers`, which reports them.
fn check_bpe_merges(model: &Value) -> std::result::Result<(), String> {
    let (Some(vocab), Some(merges)) = (
        model.get("vocab").and_then(Value::as_object),
        model.get("merges").and_then(Value::as_array),
    ) else {
        return Ok(());
    };
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .unwrap_or("");
    let legacy = merges
        .iter()
        .filter(|m| !m.as_str().is_some_and(|l| l.starts_with("#version")));
    for (i, m) in legacy.enumerate() {
        let (a, b) = match m {
            Value::String(line) => match line.split_once(' ') {
                Some((a, b)) if !b.contains(' ') => (a, b),
                _ => continue,
            },
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => (a, b),
                _ => continue,
            },
            _ => continue,
        };
        if !vocab.contains_key(a) || !vocab.contains_key(b) {
            continue;
        }
        let joined = b
            .get(prefix.len()..)
            .map(|rest| format!("{a}{rest}"))
            .filter(|j| vocab.contains_key(j.as_str()));
        if joined.is_none() {
            return Err(format!(
                "model.merges[{i}] = ({a:?}, {b:?}) does not join to a vocabulary entry{}",
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" (continuing_subword_prefix {prefix:?} removed from the right part)")
                }
            ));
        }
    }
    Ok(())
}

/// Reads `path` as JSON if it exists; `Ok(None)` if it does not.
fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| Error::format(file, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::io(file, source)),
    }
}

/// Every decoder object in a `tokenizer.json` decoder (flattening `Sequence`).
fn decoder_parts(d: Option<&Value>) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Some(d) = d {
        if d.get("type").and_then(Value::as_str) == Some("Sequence") {
            if let Some(Value::Array(ds)) = d.get("decoders") {
                for x in ds {
                    out.extend(decoder_parts(Some(x)));
                }
            }
        } else {
            out.push(d);
        }
    }
    out
}

fn piece_style_of(d: Option<&Value>) -> PieceStyle {
    let types: Vec<&str> = decoder_parts(d)
        .iter()
        .filter_map(|p| p.get("type").and_then(Value::as_str))
        .collect();
    if types.contains(&"ByteLevel") {
        PieceStyle::ByteLevel
    } else if types.contains(&"ByteFallback") || types.contains(&"Metaspace") {
        PieceStyle::SentencePiece
    } else {
        PieceStyle::Decoder
    }
}

fn strips_leading_space(d: Option<&Value>) -> bool {
    decoder_parts(d)
        .iter()
        .any(|p| match p.get("type").and_then(Value::as_str) {
            Some("Strip") => p.get("start").and_then(Value::as_u64) == Some(1),
            Some("Metaspace") => {
                p.get("prepend_scheme")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s != "never")
                    || p.get("add_prefix_space").and_then(Value::as_bool) == Some(true)
            }
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy byte-level vocabulary: all 256 byte tokens, a few merges, two specials.
    fn toy() -> Tokenizer {
        let sp = bytes_to_unicode();
        let mut owned: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
        owned.extend(sp.iter().map(|c| c.to_string()));
        owned.extend(["he", "ll", "hell", "hello", "or", "ld", "Ġw", "Ġwor", "Ġworld"].map(String::from));
        let merges = vec!["h e", "l l", "he ll", "hell o", "o r", "l d", "Ġ w", "Ġw or", "Ġwor ld"];
        let tokens: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        let mut types = vec![token_type::NORMAL; tokens.len()];
        types[..3].fill(token_type::CONTROL);
        Tokenizer::from_gguf_vocab(&GgufVocab {
            model: "gpt2",
            pre: Some("smollm"),
            tokens,
            token_types: Some(types),
            merges,
            scores: None,
            add_space_prefix: false,
            bos: Some(1),
            eos: Some(2),
            add_bos: false,
            add_eos: false,
        })
        .unwrap()
    }

    #[test]
    fn toy_roundtrip_and_specials() {
        let t = toy();
        let ids = t.encode("hello world<|im_end|>").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), "hello world<|im_end|>");
        assert_eq!(*ids.last().unwrap(), 2);
        assert_eq!(ids[0], t.token_id("hello").unwrap());
        assert_eq!(t.eos_ids(), &[2, 0]);
        let t = t.with_bos(Some(1), true);
        assert_eq!(t.encode("hi").unwrap()[0], 1);
        // No second BOS when the text starts with it.
        assert_eq!(
            t.encode("<|im_start|>hi").unwrap().iter().filter(|&&x| x == 1).count(),
            1
        );
        assert_eq!(t.encode_with("hi", false).unwrap()[0], t.token_id("h").unwrap());
    }

    #[test]
    fn released_encoder_still_decodes_the_same_text() {
        let mut t = toy();
        let texts = ["hello world<|im_end|>", "é🦀 hello", " world  hell\n", "<|im_start|>x"];
        let ids: Vec<Vec<u32>> = texts.iter().map(|x| t.encode(x).unwrap()).collect();
        let before: Vec<String> = ids.iter().map(|i| t.decode(i).unwrap()).collect();
        assert!(!t.encoder_released());
        t.release_encoder();
        assert!(t.encoder_released());
        for (i, text) in ids.iter().zip(&before) {
            assert_eq!(&t.decode(i).unwrap(), text);
        }
        let err = t.encode("hello").unwrap_err().to_string();
        assert!(err.contains("encoder was released"), "{err}");
        assert_eq!(t.token_id("hello"), None);
        assert!(t.inner().is_none());
        // Decoding facts survive.
        assert_eq!(t.eos_ids(), &[2, 0]);
        assert!(t.is_special(1));
        assert!(t.decode(&[t.vocab_size() as u32]).is_err());
    }

    #[test]
    fn stream_holds_split_utf8() {
        let t = toy();
        let text = "é🦀 hello";
        let ids = t.encode(text).unwrap();
        let mut d = t.decoder();
        let mut got = String::new();
        for &id in &ids {
            let s = d.step(&t, id).unwrap();
            assert!(!s.contains('\u{FFFD}'));
            got.push_str(s);
        }
        got.push_str(d.finish());
        assert_eq!(got, text);
        // A lone continuation byte is invalid → U+FFFD, like `decode`.
        let b = t.token_id(&bytes_to_unicode()[0x80].to_string()).unwrap();
        assert_eq!(t.decoder().step(&t, b).unwrap(), "\u{FFFD}");
        assert_eq!(t.decode(&[b]).unwrap(), "\u{FFFD}");
    }

    /// `llama-bpe` wires Llama 3's split regex (which needs fancy-regex for `(?i:…)` and
    /// `\s+(?!\S)`): digits go in groups of three, so with merges that would otherwise
    /// pair `3 4`, "12345" becomes `123` + `45`.
    #[test]
    fn llama_bpe_splits_digits_in_threes() {
        let sp = bytes_to_unicode();
        let mut owned: Vec<String> = vec!["<|begin_of_text|>".into(), "<|eot_id|>".into()];
        owned.extend(sp.iter().map(|c| c.to_string()));
        owned.extend(["12", "34", "123", "45", "Ġhello", "hello"].map(String::from));
        let tokens: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        let mut types = vec![token_type::NORMAL; tokens.len()];
        types[..2].fill(token_type::CONTROL);
        let v = |pre| GgufVocab {
            model: "gpt2",
            pre: Some(pre),
            tokens: tokens.clone(),
            token_types: Some(types.clone()),
            merges: vec!["1 2", "3 4", "12 3", "4 5"],
            scores: None,
            add_space_prefix: false,
            bos: Some(0),
            eos: Some(1),
            add_bos: true,
            add_eos: false,
        };
        let id = |t: &Tokenizer, s: &str| t.token_id(s).unwrap();
        let llama = Tokenizer::from_gguf_vocab(&v("llama-bpe")).unwrap();
        assert_eq!(llama.encode("12345").unwrap(), [0, id(&llama, "123"), id(&llama, "45")]);
        assert_eq!(llama.eos_ids(), &[1]);
        // GPT-2's regex keeps the digits together: 12 34 5.
        let gpt2 = Tokenizer::from_gguf_vocab(&v("gpt-2")).unwrap();
        assert_eq!(
            gpt2.encode_with("12345", false).unwrap(),
            [id(&gpt2, "12"), id(&gpt2, "34"), id(&gpt2, "5")]
        );
        // A rendered Llama 3 prompt already holds BOS: not added twice.
        let ids = llama.encode("<|begin_of_text|>12345<|eot_id|>").unwrap();
        assert_eq!(ids, [0, id(&llama, "123"), id(&llama, "45"), 1]);
        // ignore_merges: a whole word in the vocabulary is taken as is, merges or not.
        assert_eq!(llama.encode_with(" hello", false).unwrap(), [id(&llama, "Ġhello")]);
    }

    /// A toy sentencepiece vocabulary: merges follow the scores of the joined pieces,
    /// `▁` marks spaces (one prepended), characters without a token fall back to bytes.
    #[test]
    fn sentencepiece_scores_spaces_and_byte_fallback() {
        let mut tokens = vec!["<unk>", "<s>", "</s>"];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(String::as_str));
        // "ab" scores above "bc", so "abc" is "ab" + "c"; "▁abc" is best of all.
        let words = [
            "\u{2581}",
            "a",
            "b",
            "c",
            "ab",
            "bc",
            "\u{2581}a",
            "\u{2581}ab",
            "\u{2581}abc",
        ];
        tokens.extend(words);
        let n = tokens.len();
        let mut scores = vec![0.0f32; n];
        for (i, s) in [-10.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -0.5]
            .iter()
            .enumerate()
        {
            scores[n - words.len() + i] = *s;
        }
        let mut types = vec![token_type::NORMAL; n];
        types[0] = token_type::UNKNOWN;
        types[1..3].fill(token_type::CONTROL);
        types[3..259].fill(token_type::BYTE);
        let t = Tokenizer::from_gguf_vocab(&GgufVocab {
            model: "llama",
            tokens: tokens.clone(),
            token_types: Some(types),
            scores: Some(scores),
            add_space_prefix: true,
            bos: Some(1),
            eos: Some(2),
            add_bos: true,
            ..Default::default()
        })
        .unwrap();
        let id = |s: &str| tokens.iter().position(|&t| t == s).unwrap() as u32;
        assert_eq!(t.encode("abc").unwrap(), [1, id("\u{2581}abc")]);
        // " abc" → "▁▁abc": the first ▁ alone. "cab" → ▁ c ab. "é" has no token → bytes.
        assert_eq!(
            t.encode_with(" abc", false).unwrap(),
            [id("\u{2581}"), id("\u{2581}abc")]
        );
        assert_eq!(
            t.encode_with("cab", false).unwrap(),
            [id("\u{2581}"), id("c"), id("ab")]
        );
        assert_eq!(
            t.encode_with("é", false).unwrap(),
            [id("\u{2581}"), id("<0xC3>"), id("<0xA9>")]
        );
        for text in ["abc", " abc", "cab é"] {
            let ids = t.encode_with(text, false).unwrap();
            assert_eq!(t.decode(&ids).unwrap(), text);
        }
        // Text after a special token gets its own space prefix (HF's legacy Llama
        // tokenizer and llama.cpp alike).
        assert_eq!(
            t.encode_with("a</s>b", false).unwrap(),
            [id("\u{2581}a"), 2, id("\u{2581}"), id("b")]
        );
        assert!(t.add_bos());
        // Scores are required, and must match the tokens.
        let mut bad = GgufVocab {
            model: "llama",
            tokens: vec!["a"],
            ..Default::default()
        };
        assert!(Tokenizer::from_gguf_vocab(&bad).is_err());
        bad.scores = Some(vec![0.0, 1.0]);
        assert!(Tokenizer::from_gguf_vocab(&bad).is_err());
    }

    /// A GGUF vocabulary may repeat a string; every id still has its bytes and counts.
    #[test]
    fn duplicate_token_strings_keep_their_ids() {
        let v = GgufVocab {
            model: "gpt2",
            tokens: vec!["a", "b", "a", "<|x|>"],
            token_types: Some(vec![1, 1, 1, token_type::CONTROL]),
            ..Default::default()
        };
        let t = Tokenizer::from_gguf_vocab(&v).unwrap();
        assert_eq!(t.vocab_size(), 4);
        assert_eq!(t.token_to_piece(0), Some(&b"a"[..]));
        assert_eq!(t.token_to_piece(2), Some(&b"a"[..]));
        assert_eq!(t.token_to_piece(3), Some(&b"<|x|>"[..]));
        assert!(t.is_special(3));
        assert_eq!(t.token_to_piece(4), None);
    }

    #[test]
    fn rejects_bad_input() {
        let t = toy();
        assert!(t.decode(&[1_000_000]).is_err());
        assert!(t.decoder().step(&t, 1_000_000).is_err());
        let v = GgufVocab {
            model: "gpt2",
            tokens: vec!["a", "b"],
            merges: vec!["ab"],
            ..Default::default()
        };
        assert!(Tokenizer::from_gguf_vocab(&v).is_err());
        let v = GgufVocab {
            model: "gpt2",
            tokens: vec!["a"],
            bos: Some(5),
            ..Default::default()
        };
        assert!(Tokenizer::from_gguf_vocab(&v).is_err());
        let v = GgufVocab {
            model: "gpt2",
            pre: Some("nonesuch"),
            tokens: vec!["a"],
            ..Default::default()
        };
        assert!(Tokenizer::from_gguf_vocab(&v).is_err());
        assert!(Tokenizer::from_gguf_vocab(&GgufVocab {
            model: "llama",
            tokens: vec!["a"],
            ..Default::default()
        })
        .is_err());
    }

    /// A `tokenizer.json` whose vocabulary holds one far id: refused with the figures,
    /// before any table is sized by it. (An added token's stated id is not trusted by
    /// `tokenizers`, which numbers added tokens itself.)
    #[test]
    fn a_far_token_id_is_refused_not_allocated() {
        let dir = std::env::temp_dir().join(format!("ag-tok-far-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        let file = |vocab: Value, added: Value| {
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
                "model": {"type": "BPE", "vocab": vocab, "merges": []},
            })
            .to_string()
        };
        std::fs::write(&path, file(json!({"a": 0, "b": 1, "c": 3_000_000_000u32}), json!([]))).unwrap();
        let e = Tokenizer::from_file(&path).unwrap_err();
        assert_eq!((e.given(), e.limit()), (Some(3_000_000_001), Some(262)), "{e}");
        assert_eq!(e.file(), Some(path.display().to_string().as_str()));
        assert!(e.to_string().contains("3000000001 is past the limit of 262"), "{e}");
        // Dense ids with a few holes load as before.
        std::fs::write(&path, file(json!({"a": 0, "b": 1, "c": 9}), json!([]))).unwrap();
        let t = Tokenizer::from_file(&path).unwrap();
        assert_eq!(t.vocab_size(), 10);
        assert_eq!(t.encode("c").unwrap(), [9]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A merge whose joined text is not a vocabulary entry is an error (it made
    /// `tokenizers` panic: fuzz/regressions/{gguf_vocab,tokenizer_json}/).
    #[test]
    fn a_merge_outside_the_vocabulary_is_an_error() {
        let v = |merges| GgufVocab {
            model: "gpt2",
            tokens: vec!["a", "b", "ab"],
            merges,
            ..Default::default()
        };
        assert!(Tokenizer::from_gguf_vocab(&v(vec!["a b"])).is_ok());
        let e = Tokenizer::from_gguf_vocab(&v(vec!["a b", "b a"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer.ggml.merges[1]") && e.contains("\"b\", \"a\""),
            "{e}"
        );
    }
}
