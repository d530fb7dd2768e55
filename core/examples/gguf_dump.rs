//! Prints what a GGUF file holds: version, metadata (long arrays abbreviated), tensors
//! (name, ggml-order dims, dtype, offset, bytes) and how long parsing took.
//!
//! `cargo run -p antigravity-core --example gguf_dump -- FILE [--all-tensors]`

use std::path::PathBuf;
use std::time::Instant;

use antigravity_core::gguf::{Array, GgufFile, Value};

fn show(v: &Value) -> String {
    const SHOWN: usize = 6;
    match v {
        Value::Str(s) if s.len() > 80 => format!("{:?}… ({} bytes)", s.chars().take(80).collect::<String>(), s.len()),
        Value::Array(Array::Str(a)) => {
            let head: Vec<&str> = a.iter().take(SHOWN).collect();
            format!(
                "[{} strings] {head:?}{}",
                a.len(),
                if a.len() > SHOWN { " …" } else { "" }
            )
        }
        Value::Array(a) if a.len() > SHOWN => format!("{} (first {SHOWN}: {:?} …)", a.describe(), truncated(a, SHOWN)),
        Value::Array(a) => format!("{a:?}"),
        v => format!("{v:?}"),
    }
}

fn truncated(a: &Array, n: usize) -> Vec<String> {
    (0..n.min(a.len()))
        .map(|i| match a {
            Array::F32(v) => v[i].to_string(),
            Array::F64(v) => v[i].to_string(),
            Array::Bool(v) => v[i].to_string(),
            _ => a.integer_at(i).map_or_else(|| "…".to_string(), |x| x.to_string()),
        })
        .collect()
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: gguf_dump FILE [--all-tensors]");
        std::process::exit(2);
    };
    let all = args.any(|a| a == "--all-tensors");
    let t0 = Instant::now();
    let f = match GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "{}: GGUF v{}, {} bytes, {} metadata keys, {} tensors, alignment {}, data at byte {}; opened in {open_ms:.2} ms",
        f.path(),
        f.version(),
        f.region().len(),
        f.metadata().len(),
        f.tensors().len(),
        f.alignment(),
        f.data_offset()
    );
    for (k, v) in f.metadata() {
        println!("  {k} = {}", show(v));
    }
    let n = if all {
        f.tensors().len()
    } else {
        f.tensors().len().min(20)
    };
    for t in &f.tensors()[..n] {
        println!(
            "  tensor {:<32} {:<6} {:?} at {} ({} bytes)",
            t.name,
            t.dtype.name(),
            t.dims,
            t.offset,
            t.nbytes
        );
    }
    if n < f.tensors().len() {
        println!("  … {} more tensors (--all-tensors)", f.tensors().len() - n);
    }
}
