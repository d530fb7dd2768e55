//! The harness's error: a message plus, where there is one, the file or command it
//! concerns. The harness is a binary, so the error only has to tell a person what went
//! wrong and where; library errors (`antigravity_core::Error`) keep their own text.

use std::fmt;

/// What went wrong in `bench` or `report`.
#[derive(Debug)]
pub struct Error {
    /// The file, directory or command involved, when there is one.
    pub what: Option<String>,
    pub msg: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(msg: impl Into<String>) -> Error {
        Error {
            what: None,
            msg: msg.into(),
        }
    }
    pub fn at(what: impl Into<String>, msg: impl fmt::Display) -> Error {
        Error {
            what: Some(what.into()),
            msg: msg.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            Some(w) => write!(f, "{w}: {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for Error {}

impl From<antigravity_core::Error> for Error {
    fn from(e: antigravity_core::Error) -> Error {
        Error::msg(e.to_string())
    }
}

/// Attaches a path to an I/O error.
pub trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::at(path.display().to_string(), e))
    }
}
