//! llama.cpp's tokenizer test vectors: for each vocabulary-only GGUF
//! `ggml-vocab-NAME.gguf`, the texts of `.inp` (separated by `\n__ggml_vocab_test__\n`)
//! must encode (no BOS/EOS) to the ids on the matching line of `.out`, which were made
//! with Hugging Face tokenizers — an independent reference — and decode back to the text
//! (whole, and streamed id by id).
//!
//! The files come from the PyPI sdist of llama-cpp-python 0.3.36
//! (`scripts/fetch-vocab-vectors.sh`, which `scripts/test.sh` runs) and are read from
//! `$ANTIGRAVITY_VOCAB_DIR`, else `$ANTIGRAVITY_HOME/ggml-vocab`, else
//! `~/.cache/antigravity/ggml-vocab`; without them the test prints why and passes (skip).
//!
//! [`SUPPORTED`] must load and match every case; any other vocabulary in the folder is
//! tried too, and one we refuse (an unsupported pre-tokenizer) is reported as skipped.
#![cfg(feature = "std")]

use std::path::{Path, PathBuf};

use antigravity_core::gguf::GgufFile;
use antigravity_core::tokenizer::Tokenizer;

/// Vocabularies that must match every case.
const SUPPORTED: &[&str] = &[
    "llama-spm",
    "phi-3",
    "llama-bpe",
    "gpt-2",
    "qwen2",
    "starcoder",
    "refact",
];

fn vocab_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("ANTIGRAVITY_VOCAB_DIR") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("ANTIGRAVITY_HOME") {
            Some(h) => PathBuf::from(h).join("ggml-vocab"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/antigravity/ggml-vocab"),
        },
    };
    if dir.join("ggml-vocab-llama-spm.gguf.out").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: llama.cpp tokenizer vectors not found in {} (run scripts/fetch-vocab-vectors.sh or set \
             ANTIGRAVITY_VOCAB_DIR)",
            dir.display()
        );
        None
    }
}

/// `(text, expected ids)` of one vocabulary's `.inp` / `.out` pair.
fn cases(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let read = |ext: &str| {
        let p = PathBuf::from(format!("{}.{ext}", gguf.display()));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let inp = read("inp");
    let out = read("out");
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        texts.len(),
        lines.len(),
        "{}: .inp and .out disagree on the number of cases",
        gguf.display()
    );
    texts
        .iter()
        .zip(&lines)
        .map(|(t, l)| {
            let ids = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            ((*t).to_owned(), ids)
        })
        .collect()
}

/// Runs one vocabulary; `Err(reason)` if we refuse to load it, else the failures.
fn run(gguf: &Path) -> Result<(usize, Vec<String>), String> {
    let f = GgufFile::open(gguf).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&f)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no vocabulary".to_string())?;
    let cases = cases(gguf);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode_with(text, false).map_err(|e| e.to_string())?;
        if &got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
            continue;
        }
        // The ids decode to the text again, whole and streamed.
        let back = tok.decode(&got).map_err(|e| e.to_string())?;
        let mut d = tok.decoder();
        let mut streamed = String::new();
        for &id in &got {
            streamed.push_str(d.step(&tok, id).map_err(|e| e.to_string())?);
        }
        streamed.push_str(d.finish());
        if &back != text || &streamed != text {
            failures.push(format!("  {text:?}\n    decodes to {back:?}, streamed {streamed:?}"));
        }
    }
    Ok((cases.len(), failures))
}

#[test]
fn llama_cpp_vocab_vectors() {
    let Some(dir) = vocab_dir() else { return };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            let stem = n.strip_prefix("ggml-vocab-")?.strip_suffix(".gguf.out")?;
            Some(stem.to_owned())
        })
        .collect();
    names.sort();
    for s in SUPPORTED {
        assert!(
            names.iter().any(|n| n == s),
            "{}: ggml-vocab-{s}.gguf.out missing",
            dir.display()
        );
    }
    let mut bad = Vec::new();
    for name in &names {
        let path = dir.join(format!("ggml-vocab-{name}.gguf"));
        let must = SUPPORTED.contains(&name.as_str());
        match run(&path) {
            Ok((n, failures)) if failures.is_empty() => eprintln!("{name}: {n}/{n} cases match"),
            Ok((n, failures)) if must => {
                bad.push(format!(
                    "{name}: {}/{n} cases differ:\n{}",
                    failures.len(),
                    failures.join("\n")
                ));
            }
            Ok((n, failures)) => {
                eprintln!(
                    "{name}: {}/{n} cases differ (not a supported vocabulary)",
                    failures.len()
                )
            }
            Err(e) if must => bad.push(format!("{name}: cannot load: {e}")),
            Err(e) => eprintln!("SKIP {name}: {e}"),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
