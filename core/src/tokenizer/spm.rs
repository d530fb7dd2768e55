//! Sentencepiece (`tokenizer.ggml.model = "llama"`) vocabularies as a `tokenizers` BPE.
//!
//! A GGUF sentencepiece vocabulary holds tokens, scores and token types but no merges.
//! Sentencepiece's BPE encoder repeatedly joins the adjacent pair whose joined piece is in
//! the vocabulary with the highest score; a `tokenizers` BPE whose merges are listed by
//! the score of the piece they make behaves the same. The merges are derived the way
//! Hugging Face `transformers` does for a GGUF file without merges
//! (`integrations/ggml.py`, `GGUFTokenizerSkeleton`): for every token, every split into
//! two tokens of the vocabulary, the splits of one token ordered by the scores of their
//! halves (best first), then all merges stably ordered by the score of the joined piece
//! (best first).
//!
//! The rest mirrors Meta's Llama / Llama 2 `tokenizer.json` (the "legacy" form, which is
//! also what llama.cpp implements):
//!
//! * normalizer: `Prepend("▁")` (when `tokenizer.ggml.add_space_prefix`, default true)
//!   then `Replace(" ", "▁")`; it runs on each stretch of text between special tokens, as
//!   llama.cpp adds the space prefix after a special token;
//! * no pre-tokenizer (sentencepiece sees the whole stretch);
//! * model: BPE with `byte_fallback` (a character with no token becomes its UTF-8 bytes,
//!   the `<0xXX>` tokens) and `fuse_unk`;
//! * decoder: `▁` → space, byte tokens → bytes, fuse, strip one leading space.
//!
//! CONTROL and UNKNOWN tokens (`<s>`, `</s>`, `<unk>`, Phi-3's `<|end|>`) are special
//! added tokens, matched whole in text; USER_DEFINED ones are plain added tokens.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{token_type, GgufVocab};
use crate::error::{Error, Result};

const FILE: &str = "GGUF tokenizer";
/// Sentencepiece's word-boundary mark, U+2581.
const SPACE: &str = "\u{2581}";

/// The `tokenizer.json` (as JSON) for a sentencepiece vocabulary; the caller has checked
/// the lengths of `tokens` and `token_types`.
pub(super) fn tokenizer_json(v: &GgufVocab) -> Result<Value> {
    let n = v.tokens.len();
    let scores = v
        .scores
        .as_deref()
        .ok_or_else(|| Error::format(FILE, "a sentencepiece vocabulary needs tokenizer.ggml.scores"))?;
    if scores.len() != n {
        return Err(Error::format(
            FILE,
            format!(
                "tokenizer.ggml.scores has {} entries, tokenizer.ggml.tokens has {n}",
                scores.len()
            ),
        ));
    }
    let ttype = |i: usize| v.token_types.as_ref().map_or(token_type::NORMAL, |tt| tt[i]);

    // First id of each string (a repeated string keeps its first id, as sentencepiece).
    let mut id_of: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, &t) in v.tokens.iter().enumerate() {
        id_of.entry(t).or_insert(i);
    }
    let mut vocab = Map::with_capacity(n);
    let mut added = Vec::new();
    let mut unk = None;
    for (i, &t) in v.tokens.iter().enumerate() {
        if id_of.get(t) == Some(&i) {
            vocab.insert(t.to_owned(), json!(i));
        }
        let ty = ttype(i);
        if ty == token_type::UNKNOWN && unk.is_none() {
            unk = Some(t);
        }
        let special = matches!(ty, token_type::CONTROL | token_type::UNKNOWN);
        if (special || ty == token_type::USER_DEFINED) && !t.is_empty() {
            added.push(json!({
                "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": special,
            }));
        }
    }

    // Merges: (left, right, score of the joined piece), for every normal token.
    let score_of = |s: &str| id_of.get(s).map(|&i| scores[i]);
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    let mut local = Vec::new();
    for (i, &t) in v.tokens.iter().enumerate() {
        if id_of.get(t) != Some(&i) || ttype(i) != token_type::NORMAL {
            continue;
        }
        local.clear();
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(cut);
            if let (Some(sl), Some(sr)) = (score_of(l), score_of(r)) {
                local.push((l, r, sl, sr));
            }
        }
        // Best halves first; `sort_by` is stable, as Python's `sorted`.
        local.sort_by(|a, b| (b.2, b.3).partial_cmp(&(a.2, a.3)).unwrap_or(std::cmp::Ordering::Equal));
        merges.extend(local.iter().map(|&(l, r, _, _)| (l, r, scores[i])));
    }
    merges.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
    let merges: Vec<Value> = merges.iter().map(|&(l, r, _)| json!([l, r])).collect();

    let replace_space = json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE});
    let normalizer = if v.add_space_prefix {
        json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace_space]})
    } else {
        replace_space
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if v.add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}
