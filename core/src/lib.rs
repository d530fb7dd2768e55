//! # antigravity-core
//!
//! The heart of Antigravity: everything that turns a model file into logits.
//!
//! * [`dtype`] and [`quant`] — the GGML/GGUF element types and quantized block layouts,
//!   bit-exact with ggml's reference quantizers, plus the scalar dot products every SIMD
//!   kernel is checked against.
//! * [`tensor`] — shapes and tensor views over backend buffers.
//! * [`backend`] — the [`backend::Backend`] trait (memory + the ops a Llama forward needs)
//!   and [`ops`], the single checking layer every op call goes through.
//! * [`cpu`] — the portable CPU backend.
//! * [`kv_cache`] — the preallocated per-layer KV cache.
//!
//! Behind the default `std` feature: file formats ([`gguf`]), model loading and the
//! Llama forward pass ([`model`]), tokenizer and sampling.
//!
//! Behind the `opencl` feature: [`opencl`], the OpenCL backend (libOpenCL is loaded at
//! run time; building needs no SDK).
//!
//! Without `std` the crate is `#![no_std]` + `alloc`: the kernel and quantization layers
//! build for bare-metal targets (`cargo build -p antigravity-core --no-default-features
//! --target aarch64-unknown-none`).
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod backend;
#[cfg(feature = "std")]
pub mod chat;
pub mod cpu;
pub mod dtype;
pub mod error;
#[cfg(feature = "std")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "std")]
pub mod gguf;
pub mod kv_cache;
pub mod kv_evict;
pub mod math;
pub mod model;
#[cfg(feature = "opencl")]
pub mod opencl;
pub mod ops;
#[cfg(feature = "std")]
pub mod oracle;
mod os;
pub mod quant;
pub mod rope;
pub mod sampling;
pub mod tensor;
#[cfg(feature = "std")]
pub mod tokenizer;

pub use backend::{Backend, BufferKind, Capabilities};
pub use dtype::DType;
pub use error::{Error, ErrorKind, Result};
pub use tensor::{Shape, TensorMut, TensorRef};
