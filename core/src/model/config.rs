//! The Llama configuration, read from a Hugging Face `config.json` or from GGUF metadata.
//!
//! Both sources describe the same model; this struct is the one place the forward pass
//! reads sizes from. RoPE needs care:
//! * HF checkpoints give `rope_theta` and `rope_scaling` (`rope_type`/`type: "llama3"`,
//!   `factor`, `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`),
//!   or the newer `rope_parameters` object with the same fields;
//! * llama.cpp's converter stores the llama3 scaling as a `rope_freqs.weight` tensor of
//!   per-pair divisors instead (read by the GGUF loader into `rope_freq_divisors`).
//!
//! The RoPE *convention* follows the weights: HF weights rotate half-split pairs, GGUF
//! files from llama.cpp have Q/K rows permuted for adjacent pairs.

use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::RopeStyle;
use crate::error::{Error, Result};
use crate::rope::{self, Llama3Scaling};

/// The most token ids a vocabulary may have (model configs and tokenizers alike): the
/// largest real vocabularies have about 2^18 tokens; tables sized by a vocabulary stay
/// below a few hundred MiB at this limit.
pub const MAX_VOCAB: usize = 1 << 24;

/// Everything the forward pass needs to know about the architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    /// Hidden size (`hidden_size`, `llama.embedding_length`).
    pub dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// FFN width (`intermediate_size`, `llama.feed_forward_length`).
    pub ffn_dim: usize,
    pub vocab: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3Scaling>,
    /// Per-pair divisors from a GGUF `rope_freqs.weight` tensor.
    pub rope_freq_divisors: Option<Vec<f32>>,
    pub rope_style: RopeStyle,
    /// Output projection shares the embedding matrix.
    pub tie_embeddings: bool,
    /// The context the model was trained for (`max_position_embeddings`).
    pub max_ctx: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

impl LlamaConfig {
    /// Query width `n_head * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    /// Key/value width `n_kv_head * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// RoPE inverse frequencies (`head_dim / 2` of them) with any scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let mut f = rope::base_inv_freq(self.rope_theta, self.head_dim);
        if let Some(d) = &self.rope_freq_divisors {
            rope::apply_freq_divisors(&mut f, d);
        } else if let Some(s) = &self.rope_scaling {
            rope::apply_llama3(&mut f, s);
        }
        f
    }

    /// Checks that the sizes are consistent; `src` names the file for the error.
    pub fn validate(&self, src: &str) -> Result<()> {
        let bad = |m: String| Err(Error::format(src, m));
        if self.n_layer == 0 || self.dim == 0 || self.n_head == 0 || self.n_kv_head == 0 || self.vocab == 0 {
            return bad(alloc::format!("config has a zero size: {self:?}"));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad(alloc::format!(
                "n_head {} is not a multiple of n_kv_head {}",
                self.n_head,
                self.n_kv_head
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(alloc::format!("head_dim {} must be even and non-zero", self.head_dim));
        }
        if !self.dim.is_multiple_of(32) || !self.ffn_dim.is_multiple_of(32) {
            return bad(alloc::format!(
                "hidden size {} and FFN width {} must be multiples of 32 (the quantization block)",
                self.dim,
                self.ffn_dim
            ));
        }
        if let Some(d) = &self.rope_freq_divisors {
            if d.len() != self.head_dim / 2 {
                return bad(alloc::format!(
                    "rope_freqs has {} entries, expected head_dim/2 = {}",
                    d.len(),
                    self.head_dim / 2
                ));
            }
        }
        // Guard against absurd sizes from a hostile file before anything is allocated.
        let limit = 1usize << 20;
        for (what, v) in [
            ("n_layer", self.n_layer),
            ("dim", self.dim),
            ("ffn_dim", self.ffn_dim),
            ("n_head", self.n_head),
        ] {
            if v > limit {
                return bad(alloc::format!("{what} = {v} is implausibly large"));
            }
        }
        if self.vocab > MAX_VOCAB {
            return bad(alloc::format!("vocab = {} is implausibly large", self.vocab));
        }
        Ok(())
    }
}

#[cfg(feature = "std")]
mod hf {
    use super::*;
    use serde_json::Value;

    fn get_usize(v: &Value, key: &str, src: &str) -> Result<Option<usize>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| Error::format(src, alloc::format!("`{key}` must be a non-negative integer, got {x}"))),
        }
    }
    fn need_usize(v: &Value, key: &str, src: &str) -> Result<usize> {
        get_usize(v, key, src)?.ok_or_else(|| Error::format(src, alloc::format!("missing `{key}`")))
    }
    fn get_f32(v: &Value, key: &str, src: &str) -> Result<Option<f32>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(|n| Some(n as f32))
                .ok_or_else(|| Error::format(src, alloc::format!("`{key}` must be a number, got {x}"))),
        }
    }

    fn scaling(obj: &Value, src: &str) -> Result<Option<Llama3Scaling>> {
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        match kind {
            "default" => Ok(None),
            "llama3" => Ok(Some(Llama3Scaling {
                factor: get_f32(obj, "factor", src)?
                    .ok_or_else(|| Error::format(src, "llama3 rope scaling without `factor`"))?,
                low_freq_factor: get_f32(obj, "low_freq_factor", src)?.unwrap_or(1.0),
                high_freq_factor: get_f32(obj, "high_freq_factor", src)?.unwrap_or(4.0),
                original_max_position_embeddings: get_usize(obj, "original_max_position_embeddings", src)?
                    .unwrap_or(8192),
            })),
            other => Err(Error::format(
                src,
                alloc::format!("rope scaling type `{other}` is not supported (llama3 is)"),
            )),
        }
    }

    impl LlamaConfig {
        /// Parses a Hugging Face `config.json` (classic keys or `rope_parameters`).
        pub fn from_hf_json(text: &str, src: &str) -> Result<LlamaConfig> {
            let v: Value =
                serde_json::from_str(text).map_err(|e| Error::format(src, alloc::format!("invalid JSON: {e}")))?;
            if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
                if mt != "llama" {
                    return Err(Error::format(
                        src,
                        alloc::format!("model_type `{mt}` is not supported (llama is)"),
                    ));
                }
            }
            let dim = need_usize(&v, "hidden_size", src)?;
            let n_head = need_usize(&v, "num_attention_heads", src)?;
            let n_kv_head = get_usize(&v, "num_key_value_heads", src)?.unwrap_or(n_head);
            if n_head == 0 {
                return Err(Error::format(src, "num_attention_heads is 0"));
            }
            let head_dim = get_usize(&v, "head_dim", src)?.unwrap_or(dim / n_head);
            // Newer configs nest theta and scaling in `rope_parameters`.
            let params = v.get("rope_parameters").filter(|p| p.is_object());
            let rope_theta = params
                .map(|p| get_f32(p, "rope_theta", src))
                .transpose()?
                .flatten()
                .or(get_f32(&v, "rope_theta", src)?)
                .unwrap_or(10000.0);
            let rope_scaling = match (params, v.get("rope_scaling")) {
                (Some(p), _) => scaling(p, src)?,
                (None, Some(s)) if s.is_object() => scaling(s, src)?,
                _ => None,
            };
            let first_id = |key: &str| -> Option<u32> {
                match v.get(key) {
                    Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
                    Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|x| x as u32),
                    _ => None,
                }
            };
            let cfg = LlamaConfig {
                n_layer: need_usize(&v, "num_hidden_layers", src)?,
                dim,
                n_head,
                n_kv_head,
                head_dim,
                ffn_dim: need_usize(&v, "intermediate_size", src)?,
                vocab: need_usize(&v, "vocab_size", src)?,
                norm_eps: get_f32(&v, "rms_norm_eps", src)?.unwrap_or(1e-5),
                rope_theta,
                rope_scaling,
                rope_freq_divisors: None,
                rope_style: RopeStyle::HalfSplit,
                tie_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
                max_ctx: get_usize(&v, "max_position_embeddings", src)?.unwrap_or(2048),
                bos: first_id("bos_token_id"),
                eos: first_id("eos_token_id"),
            };
            cfg.validate(src)?;
            Ok(cfg)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const CLASSIC: &str = r#"{"model_type":"llama","hidden_size":2048,"num_attention_heads":32,
            "num_key_value_heads":8,"num_hidden_layers":16,"intermediate_size":8192,"vocab_size":128256,
            "rms_norm_eps":1e-5,"rope_theta":500000.0,"tie_word_embeddings":true,"head_dim":64,
            "max_position_embeddings":131072,"bos_token_id":128000,"eos_token_id":[128001,128008,128009],
            "rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,
            "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;

        #[test]
        fn llama_3_2_1b_classic_config() {
            let c = LlamaConfig::from_hf_json(CLASSIC, "config.json").unwrap();
            assert_eq!(
                (c.n_layer, c.dim, c.n_head, c.n_kv_head, c.head_dim),
                (16, 2048, 32, 8, 64)
            );
            assert!(c.tie_embeddings);
            assert_eq!(c.eos, Some(128001));
            let s = c.rope_scaling.unwrap();
            assert_eq!((s.factor, s.original_max_position_embeddings), (32.0, 8192));
            assert_eq!(c.rope_style, RopeStyle::HalfSplit);
        }

        #[test]
        fn rope_parameters_form_is_accepted() {
            let t = CLASSIC.replace("\"rope_theta\":500000.0,", "").replace(
                "\"rope_scaling\"",
                "\"rope_parameters\":{\"rope_theta\":500000.0,\"rope_type\":\"llama3\",\"factor\":32.0},\"unused\"",
            );
            let c = LlamaConfig::from_hf_json(&t, "config.json").unwrap();
            assert_eq!(c.rope_theta, 500000.0);
            assert_eq!(c.rope_scaling.unwrap().factor, 32.0);
        }

        #[test]
        fn bad_configs_are_clear_errors() {
            let e = LlamaConfig::from_hf_json("{", "x/config.json").unwrap_err().to_string();
            assert!(e.contains("x/config.json") && e.contains("invalid JSON"), "{e}");
            let e = LlamaConfig::from_hf_json(
                &CLASSIC.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":5"),
                "c",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("not a multiple"), "{e}");
            let e = LlamaConfig::from_hf_json(
                &CLASSIC.replace("\"rope_type\":\"llama3\"", "\"rope_type\":\"yarn\""),
                "c",
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("yarn"), "{e}");
        }
    }
}
