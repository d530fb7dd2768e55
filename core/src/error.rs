//! The crate's error type: an [`Error`] struct with a [`ErrorKind`] and the structured
//! facts a user needs to fix the input — which file, which tensor, which byte offset,
//! expected vs got, given vs limit — readable one by one ([`Error::file`],
//! [`Error::offset`], …) and rendered together by `Display` (written against
//! `core::fmt`, so it works without `std`).
//!
//! Call sites build one with a constructor named after the kind ([`Error::format`],
//! [`Error::shape`], [`Error::range`], …) and add facts with the builder methods
//! ([`Error::tensor`], [`Error::at`], [`Error::expected_got`], [`Error::given_limit`]):
//!
//! ```
//! # use antigravity_core::error::{Error, ErrorKind};
//! let e = Error::format("model.gguf", "wrong ggml dims").tensor("blk.0.attn_q.weight").expected_got("[64, 64]", "[64, 32]");
//! assert_eq!(e.kind(), ErrorKind::Format);
//! assert_eq!(e.tensor_name(), Some("blk.0.attn_q.weight"));
//! assert_eq!(e.to_string(), "model.gguf: tensor `blk.0.attn_q.weight`: wrong ggml dims: expected [64, 64], got [64, 32]");
//! ```

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use core::fmt;

use crate::dtype::DType;

/// Result alias used across the crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What kind of thing went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An op was called with tensors whose shapes do not fit together (`expected`/`got`).
    Shape,
    /// An op was called with a dtype it does not accept (`got`).
    DType,
    /// A view does not fit in its buffer (`offset`, `given` = bytes needed, `limit` =
    /// the buffer's length).
    OutOfBounds,
    /// A read-only buffer (a weight mapped from the model file) was written.
    ReadOnly,
    /// A value is outside what is allowed (`given`, `limit`): a token id past the
    /// vocabulary, a position past the context, …
    Range,
    /// A model or data file is malformed (`file`, often `offset` or `tensor`).
    Format,
    /// The backend failed (driver error, device lost, …).
    Backend,
    /// Anything else that is wrong with the user's request.
    Invalid,
    /// I/O failed (`file` is the path; the `std::io::Error` is the source).
    Io,
}

/// Everything that can go wrong in Antigravity; see the module doc.
pub struct Error(Box<Inner>);

struct Inner {
    kind: ErrorKind,
    /// Who reports it: the op (`matmul`) or the backend (`opencl`).
    who: Option<String>,
    /// Which operand or value (`weight`, `token id at position 3`).
    what: Option<String>,
    file: Option<String>,
    tensor: Option<String>,
    offset: Option<u64>,
    expected: Option<String>,
    got: Option<String>,
    given: Option<u64>,
    limit: Option<u64>,
    msg: String,
    #[cfg(feature = "std")]
    source: Option<std::io::Error>,
}

impl Error {
    fn new(kind: ErrorKind, msg: String) -> Error {
        Error(Box::new(Inner {
            kind,
            who: None,
            what: None,
            file: None,
            tensor: None,
            offset: None,
            expected: None,
            got: None,
            given: None,
            limit: None,
            msg,
            #[cfg(feature = "std")]
            source: None,
        }))
    }

    /// A malformed model or data file.
    pub fn format(file: impl Into<String>, msg: impl Into<String>) -> Error {
        let mut e = Error::new(ErrorKind::Format, msg.into());
        e.0.file = Some(file.into());
        e
    }
    /// Anything wrong with the user's request that has no kind of its own.
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, msg.into())
    }
    /// Op `op` got operand `what` in shape `got` where `expected` fits.
    pub fn shape(op: &str, what: &str, expected: impl Into<String>, got: impl Into<String>) -> Error {
        let mut e = Error::new(ErrorKind::Shape, String::new());
        e.0.who = Some(op.into());
        e.0.what = Some(what.into());
        e.expected_got(expected, got)
    }
    /// Op `op` does not accept `dtype` for operand `what`.
    pub fn dtype(op: &str, what: &str, dtype: DType) -> Error {
        let mut e = Error::new(ErrorKind::DType, String::new());
        e.0.who = Some(op.into());
        e.0.what = Some(what.into());
        e.0.got = Some(dtype.name().into());
        e
    }
    /// A view of op `op` needing `needed` bytes at `offset` does not fit in a buffer of
    /// `len` bytes.
    pub fn out_of_bounds(op: &str, what: &str, offset: usize, needed: usize, len: usize) -> Error {
        let mut e = Error::new(ErrorKind::OutOfBounds, String::new());
        e.0.who = Some(op.into());
        e.0.what = Some(what.into());
        e.at(offset as u64).given_limit(needed as u64, len as u64)
    }
    /// Buffer `what` is read-only but was written.
    pub fn read_only(what: &str) -> Error {
        let mut e = Error::new(ErrorKind::ReadOnly, String::new());
        e.0.what = Some(what.into());
        e
    }
    /// `what` is `given`, which is not below `limit`.
    pub fn range(what: impl Into<String>, given: u64, limit: u64) -> Error {
        let mut e = Error::new(ErrorKind::Range, String::new());
        e.0.what = Some(what.into());
        e.given_limit(given, limit)
    }
    /// Backend `backend` failed.
    pub fn backend(backend: &str, msg: impl Into<String>) -> Error {
        let mut e = Error::new(ErrorKind::Backend, msg.into());
        e.0.who = Some(backend.into());
        e
    }
    /// I/O on `path` failed.
    #[cfg(feature = "std")]
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Error {
        let mut e = Error::new(ErrorKind::Io, String::new());
        e.0.file = Some(path.into());
        e.0.source = Some(source);
        e
    }

    /// Names the tensor involved.
    pub fn tensor(mut self, name: impl Into<String>) -> Error {
        self.0.tensor = Some(name.into());
        self
    }
    /// Names the file involved (for kinds whose constructor takes none).
    pub fn in_file(mut self, file: impl Into<String>) -> Error {
        self.0.file = Some(file.into());
        self
    }
    /// The byte offset (in the file, or in the buffer) where the problem is.
    pub fn at(mut self, offset: u64) -> Error {
        self.0.offset = Some(offset);
        self
    }
    /// What was expected and what was found.
    pub fn expected_got(mut self, expected: impl Into<String>, got: impl Into<String>) -> Error {
        self.0.expected = Some(expected.into());
        self.0.got = Some(got.into());
        self
    }
    /// A number that was given and the limit it breaks.
    pub fn given_limit(mut self, given: u64, limit: u64) -> Error {
        self.0.given = Some(given);
        self.0.limit = Some(limit);
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    /// The file (or path) involved.
    pub fn file(&self) -> Option<&str> {
        self.0.file.as_deref()
    }
    /// The tensor involved.
    pub fn tensor_name(&self) -> Option<&str> {
        self.0.tensor.as_deref()
    }
    /// The byte offset involved.
    pub fn offset(&self) -> Option<u64> {
        self.0.offset
    }
    /// What was expected.
    pub fn expected(&self) -> Option<&str> {
        self.0.expected.as_deref()
    }
    /// What was found instead.
    pub fn got(&self) -> Option<&str> {
        self.0.got.as_deref()
    }
    /// The number given.
    pub fn given(&self) -> Option<u64> {
        self.0.given
    }
    /// The limit it breaks.
    pub fn limit(&self) -> Option<u64> {
        self.0.limit
    }
    /// The op or backend that reports the error.
    pub fn reporter(&self) -> Option<&str> {
        self.0.who.as_deref()
    }
    /// The free-text part of the message (without the structured facts).
    pub fn message(&self) -> &str {
        &self.0.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.0;
        let who = i.who.as_deref().unwrap_or("");
        let what = i.what.as_deref().unwrap_or("");
        let (exp, got) = (i.expected.as_deref(), i.got.as_deref());
        match i.kind {
            ErrorKind::Shape => write!(f, "{who}: shape mismatch for {what}")?,
            ErrorKind::DType => {
                return write!(f, "{who}: unsupported dtype {} for {what}", got.unwrap_or("?"));
            }
            ErrorKind::OutOfBounds => {
                return write!(
                    f,
                    "{who}: view of {} bytes at offset {} exceeds buffer of {} bytes ({what})",
                    i.given.unwrap_or(0),
                    i.offset.unwrap_or(0),
                    i.limit.unwrap_or(0)
                );
            }
            ErrorKind::ReadOnly => return write!(f, "{what}: buffer is read-only"),
            ErrorKind::Range if i.msg.is_empty() => {
                return write!(
                    f,
                    "{what}: {} is out of range (limit {})",
                    i.given.unwrap_or(0),
                    i.limit.unwrap_or(0)
                );
            }
            ErrorKind::Backend => write!(f, "backend {who}: ")?,
            #[cfg(feature = "std")]
            ErrorKind::Io => {
                write!(f, "{}: ", i.file.as_deref().unwrap_or("?"))?;
                if let Some(s) = &i.source {
                    write!(f, "{s}")?;
                }
                return Ok(());
            }
            _ => {}
        }
        // Shape's head ("op: shape mismatch for what") is written above.
        let mut sep = if i.kind == ErrorKind::Shape { ": " } else { "" };
        if i.kind != ErrorKind::Shape {
            if let Some(file) = &i.file {
                write!(f, "{file}: ")?;
            }
            if let Some(o) = i.offset {
                write!(f, "byte {o}: ")?;
            }
            if let Some(t) = &i.tensor {
                write!(f, "tensor `{t}`: ")?;
            }
            if !what.is_empty() {
                write!(f, "{what}: ")?;
            }
            f.write_str(&i.msg)?;
            sep = if i.msg.is_empty() { "" } else { ": " };
        }
        if let (Some(e), Some(g)) = (exp, got) {
            write!(f, "{sep}expected {e}, got {g}")?;
            sep = "; ";
        }
        if i.kind != ErrorKind::Range || !i.msg.is_empty() {
            if let (Some(g), Some(l)) = (i.given, i.limit) {
                write!(f, "{sep}{g} is past the limit of {l}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.0;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind);
        for (name, v) in [
            ("reporter", &i.who),
            ("what", &i.what),
            ("file", &i.file),
            ("tensor", &i.tensor),
            ("expected", &i.expected),
            ("got", &i.got),
        ] {
            if let Some(v) = v {
                d.field(name, v);
            }
        }
        if let Some(o) = i.offset {
            d.field("offset", &o);
        }
        if let (Some(g), Some(l)) = (i.given, i.limit) {
            d.field("given", &g).field("limit", &l);
        }
        if !i.msg.is_empty() {
            d.field("message", &i.msg);
        }
        #[cfg(feature = "std")]
        if let Some(s) = &i.source {
            d.field("source", s);
        }
        d.finish_non_exhaustive()?;
        // The rendered text too, so a `{:?}` in a test failure reads like the CLI.
        write!(f, " \"{}\"", self.to_string().escape_debug())
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        #[cfg(feature = "std")]
        if let Some(s) = &self.0.source {
            return Some(s);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_kept_and_rendered() {
        let e = Error::format("m.gguf", "tensor_count: needs 8 bytes, 3 remain").at(16);
        assert_eq!(
            (e.kind(), e.file(), e.offset()),
            (ErrorKind::Format, Some("m.gguf"), Some(16))
        );
        assert_eq!(e.to_string(), "m.gguf: byte 16: tensor_count: needs 8 bytes, 3 remain");
        let e = Error::range("token id at position 2", 70000, 49152);
        assert_eq!((e.given(), e.limit()), (Some(70000), Some(49152)));
        assert_eq!(
            e.to_string(),
            "token id at position 2: 70000 is out of range (limit 49152)"
        );
        let e = Error::shape("matmul", "x", "[2, 64]", "[2, 32]");
        assert_eq!((e.expected(), e.got()), (Some("[2, 64]"), Some("[2, 32]")));
        assert_eq!(
            e.to_string(),
            "matmul: shape mismatch for x: expected [2, 64], got [2, 32]"
        );
        let e = Error::out_of_bounds("get_rows", "src", 64, 128, 100);
        assert_eq!(
            e.to_string(),
            "get_rows: view of 128 bytes at offset 64 exceeds buffer of 100 bytes (src)"
        );
        assert_eq!((e.offset(), e.given(), e.limit()), (Some(64), Some(128), Some(100)));
        let e = Error::dtype("rms_norm", "weight", DType::Q4_0);
        assert_eq!((e.kind(), e.got()), (ErrorKind::DType, Some("q4_0")));
        assert_eq!(Error::read_only("weight").to_string(), "weight: buffer is read-only");
        assert_eq!(
            Error::backend("opencl", "device lost").to_string(),
            "backend opencl: device lost"
        );
        assert_eq!(Error::invalid("no such ISA").to_string(), "no such ISA");
        let e = Error::format("t.json", "too many ids").given_limit(5, 4);
        assert_eq!(e.to_string(), "t.json: too many ids: 5 is past the limit of 4");
        let dbg = alloc::format!("{e:?}");
        assert!(
            dbg.contains("Format") && dbg.contains("given: 5") && dbg.contains("too many ids"),
            "{dbg}"
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn io_keeps_its_source() {
        use std::error::Error as _;
        let e = Error::io("x.gguf", std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        assert_eq!(e.to_string(), "x.gguf: gone");
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.source().is_some());
    }
}
