//! The `harness` command line, end to end: the CLI contract, quantize → load round trips,
//! and clean errors (non-zero exit, a message naming the problem, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .env("ANTIGRAVITY_HOME", home())
        .output()
        .unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The user's cache, so tests find the fetched SmolLM2 (never downloads: tests that need
/// it skip when it is absent).
fn home() -> PathBuf {
    std::env::var_os("ANTIGRAVITY_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/antigravity"))
}

fn smollm2() -> Option<PathBuf> {
    let p = home().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ag-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn read_logits(p: &Path) -> Vec<f32> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A clean failure: exit code 1 (not a panic's 101) and a message containing `needle`.
fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a clean error, got {:?}: {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

#[test]
fn quantized_gguf_runs_like_the_hf_directory() {
    // harness quantize permutes Q/K rows for adjacent-pair RoPE and writes rope_freqs for
    // llama3 scaling; the GGUF path (adjacent RoPE + divisors) must then give the logits the
    // HF path (half-split RoPE + scaling from config.json) gives on the same F16 weights.
    // F16, not a block type: with quantized weights the activations are quantized to Q8 too,
    // and a 1-ulp difference (the divisors round once more) can flip a Q8 rounding step,
    // which these deliberately chaotic random models amplify (measured: max_rel 0.038 on
    // tiny-untied at Q8_0 vs 6e-6 at F16). Quantized bytes are checked separately, block
    // for block, against the `gguf` package (scripts/check_quantize.py).
    for model in ["tiny-tied", "tiny-untied"] {
        let dir = root().join("oracle/models").join(model);
        let gguf = tmp(&format!("{model}-f16.gguf"));
        ok(&harness(&[
            "quantize",
            "--model",
            dir.to_str().unwrap(),
            "--out",
            gguf.to_str().unwrap(),
            "--type",
            "f16",
        ]));
        let ids = (0..200)
            .map(|i| ((i * 37 + 11) % 250).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (a, b) = (tmp(&format!("{model}-a.st")), tmp(&format!("{model}-b.st")));
        ok(&harness(&[
            "logits",
            "--model",
            gguf.to_str().unwrap(),
            "--prompt-ids",
            &ids,
            "--out",
            a.to_str().unwrap(),
        ]));
        ok(&harness(&[
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--weights",
            "f16",
            "--prompt-ids",
            &ids,
            "--out",
            b.to_str().unwrap(),
        ]));
        let (la, lb) = (read_logits(&a), read_logits(&b));
        assert_eq!(la.len(), lb.len());
        let num = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let den = lb.iter().map(|y| y.abs()).fold(0f32, f32::max);
        // Same weights and math; only the rope_freqs divisors round once more (measured
        // ≤ 6.3e-6).
        assert!(num / den < 1e-4, "{model}: max_rel {}", num / den);
    }
}

#[test]
fn generate_json_contract() {
    let dir = root().join("oracle/models/tiny-tied");
    let out = ok(&harness(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1,2,3",
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    for k in [
        "model",
        "backend",
        "isa",
        "threads",
        "prompt_ids",
        "generated_ids",
        "text",
        "load_ms",
        "prefill_tok_s",
        "decode_tok_s",
    ] {
        assert!(j.get(k).is_some(), "missing {k} in {j}");
    }
    assert_eq!(j["generated_ids"].as_array().unwrap().len(), 5);
    assert_eq!(j["prompt_ids"], serde_json::json!([1, 2, 3]));
}

#[test]
fn bad_input_is_a_clean_error() {
    fails_with(
        &harness(&["generate", "--model", "/nonexistent.gguf", "--prompt-ids", "1"]),
        "/nonexistent.gguf",
    );
    let dir = root().join("oracle/models/tiny-tied");
    let d = dir.to_str().unwrap();
    fails_with(
        &harness(&["generate", "--model", d, "--prompt-ids", "1,2,999999"]),
        "token id",
    );
    let long = (0..40).map(|i| (i % 200).to_string()).collect::<Vec<_>>().join(",");
    fails_with(
        &harness(&["generate", "--model", d, "--prompt-ids", &long, "--ctx", "16"]),
        "context",
    );
    // A truncated GGUF and a file that is not a GGUF at all.
    let good = tmp("good.gguf");
    ok(&harness(&[
        "quantize",
        "--model",
        d,
        "--out",
        good.to_str().unwrap(),
        "--type",
        "q4_0",
    ]));
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &harness(&["generate", "--model", cut.to_str().unwrap(), "--prompt-ids", "1"]),
        "cut.gguf",
    );
    let junk = tmp("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    fails_with(
        &harness(&["generate", "--model", junk.to_str().unwrap(), "--prompt-ids", "1"]),
        "junk.gguf",
    );
    fails_with(
        &harness(&["generate", "--model", d, "--prompt-ids", "1", "--isa", "sse9"]),
        "--isa",
    );
}

#[test]
fn smollm2_tokenize_and_greedy_paris() {
    let Some(m) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not in {} (run `harness fetch`)", home().display());
        return;
    };
    let m = m.to_str().unwrap();
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("oracle/tokenizer/smollm2_ids.json")).unwrap())
            .unwrap();
    let mut n = 0;
    for c in refs["cases"].as_array().unwrap() {
        let (args, text): (Vec<&str>, &str) = if c["kind"] == "chat" {
            (vec!["--chat"], c["user_message"].as_str().unwrap())
        } else {
            (vec![], c["text"].as_str().unwrap())
        };
        let mut a = vec!["tokenize", "--model", m, "--prompt", text];
        a.extend(args);
        let got: serde_json::Value = serde_json::from_str(ok(&harness(&a)).trim()).unwrap();
        assert_eq!(got, c["ids"], "{text:?}");
        n += 1;
    }
    assert!(n >= 15, "expected the full tokenizer reference set, got {n}");
    let out = ok(&harness(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "3",
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(j["text"].as_str().unwrap().starts_with(" Paris."), "{j}");
}
