//! The crate's error type: one struct-like enum whose variants carry the facts a user
//! needs to fix the input (what, where, expected vs got). `Display` is written against
//! `core::fmt`, so it works without `std`.

use alloc::string::String;

use crate::dtype::DType;

/// Result alias used across the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong in Antigravity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An op was called with tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: String,
        got: String,
    },
    /// An op was called with a dtype it does not accept.
    #[error("{op}: unsupported dtype {dtype} for {what}")]
    DType {
        op: &'static str,
        what: &'static str,
        dtype: DType,
    },
    /// A buffer is too small for the view placed on it.
    #[error("{op}: view of {needed} bytes at offset {offset} exceeds buffer of {len} bytes ({what})")]
    OutOfBounds {
        op: &'static str,
        what: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    /// A buffer is read-only (e.g. a weight mapped from the model file) but was written.
    #[error("{what}: buffer is read-only")]
    ReadOnly { what: &'static str },
    /// A value is outside what is allowed (a token id past the vocabulary, a position past
    /// the context, …).
    #[error("{what}: {given} is out of range (limit {limit})")]
    Range { what: String, given: u64, limit: u64 },
    /// A model or data file is malformed.
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    /// The backend failed (driver error, device lost, …).
    #[error("backend {backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
    /// Anything that is wrong with the user's request and is not one of the above.
    #[error("{0}")]
    Invalid(String),
    /// I/O failure, with the path involved.
    #[cfg(feature = "std")]
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl Error {
    /// Shorthand for [`Error::Format`].
    pub fn format(file: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Format {
            file: file.into(),
            msg: msg.into(),
        }
    }
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
}
