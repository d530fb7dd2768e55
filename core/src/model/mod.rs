//! Llama-architecture models: configuration, weights, loaders and the forward pass.
//!
//! * [`config`] — [`LlamaConfig`] from HF `config.json` or GGUF metadata;
//! * [`weights`] — weight buffers and the Q/K row permutation between RoPE conventions;
//! * [`hf`] — Hugging Face directories (safetensors), converted at load;
//! * [`llama`] — the forward pass and its run state;
//! * [`hybrid`] — one sequence moved between two backends at token boundaries.

pub mod config;
#[cfg(feature = "std")]
pub mod gguf;
#[cfg(feature = "std")]
pub mod hf;
#[cfg(feature = "std")]
pub mod hybrid;
pub mod llama;
pub mod weights;

pub use config::LlamaConfig;
pub use llama::{Llama, OpKind, Profiler, RunOptions};
pub use weights::{LayerWeights, Weight, Weights};
