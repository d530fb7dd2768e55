//! Bad input to the model layer gives clear errors naming what and where — never a panic.

use std::borrow::Cow;
use std::path::Path;

use antigravity_core::cpu::CpuBackend;
use antigravity_core::dtype::DType;
use antigravity_core::error::ErrorKind;
use antigravity_core::gguf::{GgufFile, GgufWriter, Value};
use antigravity_core::model::{self, Llama, RunOptions};

/// A minimal valid llama GGUF (1 layer, dim 32) built in memory; `skip` omits a tensor,
/// `bad_dims` gives one tensor the wrong shape.
fn tiny_gguf(skip: Option<&str>, bad_dims: Option<&str>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in [
        ("llama.block_count", 1u32),
        ("llama.embedding_length", 32),
        ("llama.feed_forward_length", 64),
        ("llama.attention.head_count", 2),
        ("llama.attention.head_count_kv", 1),
        ("llama.context_length", 64),
    ] {
        w.add(k, Value::U32(v)).unwrap();
    }
    w.add("general.architecture", Value::Str("llama".into())).unwrap();
    let f32s = |n: usize| -> Vec<u8> { (0..n).flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes()).collect() };
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![32, 50]),
        ("output_norm.weight".into(), vec![32]),
    ];
    for (n, d) in [
        ("attn_norm", vec![32]),
        ("attn_q", vec![32, 32]),
        ("attn_k", vec![32, 16]),
        ("attn_v", vec![32, 16]),
        ("attn_output", vec![32, 32]),
        ("ffn_norm", vec![32]),
        ("ffn_gate", vec![32, 64]),
        ("ffn_up", vec![32, 64]),
        ("ffn_down", vec![64, 32]),
    ] {
        t.push((format!("blk.0.{n}.weight"), d));
    }
    for (name, mut dims) in t {
        if skip == Some(name.as_str()) {
            continue;
        }
        if bad_dims == Some(name.as_str()) {
            dims[0] *= 2;
        }
        let n: usize = dims.iter().product();
        w.add_tensor(&name, &dims, DType::F32, Cow::Owned(f32s(n))).unwrap();
    }
    w.to_bytes()
}

fn load(bytes: Vec<u8>) -> antigravity_core::Result<Llama<CpuBackend>> {
    let f = GgufFile::from_bytes(bytes, "test.gguf")?;
    let be = CpuBackend::new();
    let (cfg, w) = model::gguf::load(&f, &be)?;
    Llama::new(
        cfg,
        w,
        be,
        RunOptions {
            ctx: 16,
            max_batch: 8,
            all_logits: false,
            ..RunOptions::default()
        },
    )
}

#[test]
fn valid_tiny_gguf_runs() {
    let mut m = load(tiny_gguf(None, None)).unwrap();
    assert_eq!(m.forward(&[1, 2, 3]).unwrap().len(), 50);
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let e = load(tiny_gguf(Some("blk.0.ffn_up.weight"), None)).err().unwrap();
    assert_eq!(
        (e.kind(), e.file(), e.tensor_name()),
        (ErrorKind::Format, Some("test.gguf"), Some("blk.0.ffn_up.weight"))
    );
    assert_eq!(e.to_string(), "test.gguf: tensor `blk.0.ffn_up.weight`: missing");
    let e = load(tiny_gguf(None, Some("blk.0.attn_k.weight"))).err().unwrap();
    assert_eq!(e.tensor_name(), Some("blk.0.attn_k.weight"));
    // ggml dims are [cols, rows]: the test doubles dims[0].
    assert_eq!((e.expected(), e.got()), (Some("[32, 16]"), Some("[64, 16]")));
    assert_eq!(
        e.to_string(),
        "test.gguf: tensor `blk.0.attn_k.weight`: wrong ggml dims: expected [32, 16], got [64, 16]"
    );
}

#[test]
fn token_ids_past_vocab_and_context_overflow_are_errors() {
    let mut m = load(tiny_gguf(None, None)).unwrap();
    let e = m.forward(&[50]).unwrap_err().to_string();
    assert!(e.contains("token id") && e.contains("50"), "{e}");
    let long: Vec<u32> = (0..17).collect();
    let e = m.forward(&long).unwrap_err().to_string();
    assert!(e.contains("context") && e.contains("16"), "{e}");
    // The model is still usable afterwards: nothing was committed by the failed calls.
    assert_eq!(m.kv.len(), 0);
    m.forward(&[1]).unwrap();
}

#[test]
fn hf_directory_errors_name_the_file() {
    let be = CpuBackend::new();
    let e = model::hf::load(Path::new("/nonexistent/dir"), &be, DType::Q4_0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/dir/config.json"), "{e}");
}

/// A Q8_0 cache stores heads as whole 32-value blocks, at most 256 values a head: other
/// heads are refused with an error naming the flag, not sized wrong or indexed past.
#[test]
fn q8_0_cache_refuses_heads_it_cannot_hold() {
    use antigravity_core::kv_cache::KvCache;
    use antigravity_core::BufferKind;
    let be = CpuBackend::new();
    for hd in [32, 64, 256] {
        let kv = KvCache::new(&be, 2, 8, 3, hd, DType::Q8_0, BufferKind::Device).unwrap();
        assert_eq!(kv.bytes_per_token(), 2 * 2 * 3 * (hd / 32) * 34, "head_dim {hd}");
    }
    for hd in [48, 288, 10] {
        let e = KvCache::new(&be, 2, 8, 3, hd, DType::Q8_0, BufferKind::Device)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--kv-type"), "head_dim {hd}: {e}");
    }
}
