//! Writes the malformed-GGUF corpus to `core/tests/malformed/` (one `.gguf` per case and
//! `EXPECTED.tsv`: name, TAB, a substring the error must contain). The cases come from
//! `core/tests/gguf_support`, shared with the tests, which check the committed files
//! still match.
//!
//! `cargo run -p antigravity-core --example make_malformed [DIR]`

#[path = "../tests/gguf_support/mod.rs"]
mod gguf_support;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/malformed"));
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(&dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "gguf") {
            std::fs::remove_file(p)?;
        }
    }
    let cases = gguf_support::malformed_cases();
    let mut tsv = String::new();
    for c in &cases {
        std::fs::write(dir.join(format!("{}.gguf", c.name)), &c.bytes)?;
        tsv.push_str(&format!("{}\t{}\n", c.name, c.expect));
    }
    std::fs::write(dir.join("EXPECTED.tsv"), tsv)?;
    println!("wrote {} malformed GGUF files to {}", cases.len(), dir.display());
    Ok(())
}
