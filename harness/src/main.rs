//! `harness`: Antigravity's command line.
fn main() {}
