//! OpenCL C sources for Antigravity's GPU backend, one kernel family per `.cl` file,
//! embedded with `include_str!` so the binary needs no files at run time.
//! (The OpenCL backend that compiles them lives in `antigravity-core`.)

/// `(file name, source)` of every kernel family.
pub const SOURCES: &[(&str, &str)] = &[];
