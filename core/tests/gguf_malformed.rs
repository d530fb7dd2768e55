//! Malformed GGUF files: every one must be rejected with an error that names the
//! problem — never a panic, never an allocation sized by the bad field.
//!
//! The corpus is generated in code (`gguf_support::malformed_cases`) and also committed
//! as files under `core/tests/malformed/` (regenerate with
//! `cargo run -p antigravity-core --example make_malformed`), which are loaded through
//! the memory-mapped path.

mod gguf_support;

use std::path::Path;

use antigravity_core::error::ErrorKind;
use antigravity_core::gguf::GgufFile;
use gguf_support::{malformed_cases, Raw};

#[test]
fn the_valid_base_file_parses() {
    let f = GgufFile::from_bytes(Raw::valid().build(), "valid.gguf").unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.get_str("general.architecture").unwrap(), Some("llama"));
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    assert_eq!(tokens.iter().collect::<Vec<_>>(), ["<s>", "a", "é"]);
}

#[test]
fn every_malformed_case_is_a_clean_error() {
    let cases = malformed_cases();
    let mut failures = Vec::new();
    for c in &cases {
        match GgufFile::from_bytes(c.bytes.clone(), &format!("{}.gguf", c.name)) {
            Ok(_) => failures.push(format!("{}: parsed OK", c.name)),
            Err(e) => {
                let msg = e.to_string();
                eprintln!("{msg}");
                // The file and the byte offset are fields of the error, and in its text.
                let name = format!("{}.gguf", c.name);
                let fields_ok =
                    e.kind() == ErrorKind::Format && e.file() == Some(name.as_str()) && e.offset().is_some();
                if !fields_ok || !msg.contains(c.expect) || !msg.contains(&name) || !msg.contains("byte ") {
                    failures.push(format!("{}: expected '{}' in: {msg}", c.name, c.expect));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every prefix of a valid file that stops before the end of the last tensor's data is
/// an error; from there on (trailing padding) it parses.
#[test]
fn every_truncation_is_an_error() {
    let (bytes, m) = Raw::valid().build_marked();
    let data_end = m.data_offset + 64 + 68;
    for n in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..n].to_vec(), "t.gguf");
        assert_eq!(r.is_err(), n < data_end, "prefix of {n} bytes: {:?}", r.err());
    }
}

#[test]
fn the_committed_corpus_matches_the_generator_and_every_file_fails_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let expected = std::fs::read_to_string(dir.join("EXPECTED.tsv")).expect("tests/malformed/EXPECTED.tsv");
    let cases = malformed_cases();
    let mut n = 0;
    for line in expected.lines().filter(|l| !l.is_empty()) {
        let (name, expect) = line.split_once('\t').expect("name<TAB>substring");
        let path = dir.join(format!("{name}.gguf"));
        let bytes = std::fs::read(&path).unwrap();
        let case = cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} is not generated any more"));
        assert_eq!(
            bytes, case.bytes,
            "{name}.gguf is stale: rerun the make_malformed example"
        );
        let e = GgufFile::open(&path).expect_err(name).to_string();
        assert!(e.contains(expect), "{name}: expected '{expect}' in: {e}");
        n += 1;
    }
    assert_eq!(n, cases.len(), "EXPECTED.tsv lists every case");
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "gguf"))
        .count();
    assert_eq!(files, n, "no stray .gguf files in tests/malformed");
}
