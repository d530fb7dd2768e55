//! Byte-exactness of our quantizers against vectors made by an independent
//! implementation: the Python `gguf` package's quantizers (see `oracle/quant/`).
//! Q8_1 is not in `gguf`; its vectors are Q8_0's `d`/`qs` plus `s = f16(d·Σq)`.

use antigravity_core::dtype::DType;
use antigravity_core::quant;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> serde_json::Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../oracle/quant/vectors.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("oracle/quant/vectors.json is committed")).unwrap()
}

#[test]
fn quantizers_match_gguf_vectors_byte_for_byte() {
    let v = vectors();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "expected the full vector set");
    let mut checked = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let input: Vec<f32> = c["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
            .collect();
        for (key, dtype) in [
            ("q4_0", DType::Q4_0),
            ("q4_1", DType::Q4_1),
            ("q8_0", DType::Q8_0),
            ("q8_1", DType::Q8_1),
        ] {
            let Some(want) = c[key].as_str() else { continue };
            let want = hex(want);
            let mut got = vec![0u8; dtype.row_bytes(input.len()).unwrap()];
            quant::quantize_row(dtype, &input, &mut got).unwrap();
            if got != want {
                let bb = dtype.block_bytes();
                let blk = got.chunks(bb).zip(want.chunks(bb)).position(|(a, b)| a != b).unwrap();
                panic!(
                    "{name} {key}: block {blk} differs\n  ours: {:02x?}\n  gguf: {:02x?}",
                    &got[blk * bb..(blk + 1) * bb],
                    &want[blk * bb..(blk + 1) * bb]
                );
            }
            // Dequantization of those bytes matches too (bit for bit, NaN-aware).
            if let Some(deq) = c["dequant"][key].as_array() {
                let mut out = vec![0f32; input.len()];
                quant::dequantize_row(dtype, &got, &mut out).unwrap();
                for (i, (o, h)) in out.iter().zip(deq).enumerate() {
                    let w = f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap());
                    assert!(
                        o.to_bits() == w.to_bits() || (o.is_nan() && w.is_nan()),
                        "{name} {key} dequant[{i}]: {o} vs {w}"
                    );
                }
            }
            checked += 1;
        }
    }
    eprintln!("{checked} (case, type) pairs byte-identical to gguf");
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
        .collect()
}

fn vectors_more() -> serde_json::Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../oracle/quant/vectors_more.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("oracle/quant/vectors_more.json is committed")).unwrap()
}

/// Asserts `got` equals the gguf floats bit for bit (NaN-aware).
fn same_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (o, w)) in got.iter().zip(want).enumerate() {
        assert!(
            o.to_bits() == w.to_bits() || (o.is_nan() && w.is_nan()),
            "{what}[{i}]: ours {o} ({:08x}) vs gguf {w} ({:08x})",
            o.to_bits(),
            w.to_bits()
        );
    }
}

/// Q5_0 / Q5_1 quantization byte-identical with the `gguf` package on every input row of
/// `vectors.json` (ggml's bytes where gguf is known to differ: see make_vectors_more.py),
/// and their dequantization bit-identical.
#[test]
fn q5_quantizers_match_gguf_byte_for_byte() {
    let v = vectors_more();
    let cases = v["quantize"].as_array().unwrap();
    assert!(cases.len() >= 30, "expected the full vector set");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let input = f32s(&c["input"]);
        for (key, dtype) in [("q5_0", DType::Q5_0), ("q5_1", DType::Q5_1)] {
            let want = hex(c[key].as_str().unwrap());
            let mut got = vec![0u8; dtype.row_bytes(input.len()).unwrap()];
            quant::quantize_row(dtype, &input, &mut got).unwrap();
            let bb = dtype.block_bytes();
            if let Some(blk) = got.chunks(bb).zip(want.chunks(bb)).position(|(a, b)| a != b) {
                panic!(
                    "{name} {key}: block {blk} differs\n  ours: {:02x?}\n  gguf: {:02x?}",
                    &got[blk * bb..(blk + 1) * bb],
                    &want[blk * bb..(blk + 1) * bb]
                );
            }
            let mut out = vec![0f32; input.len()];
            quant::dequantize_row(dtype, &got, &mut out).unwrap();
            same_bits(
                &format!("{name} {key} dequant"),
                &out,
                &f32s(&c[format!("{key}_dequant")]),
            );
        }
    }
}

/// Dequantization of random Q5_0, Q5_1, Q4_K, Q5_K and Q6_K blocks (every quant and
/// packed-scale bit random; extreme f16 scales included) is bit-identical with `gguf`.
#[test]
fn dequantizers_match_gguf_bit_for_bit() {
    let v = vectors_more();
    let sets = v["dequantize"].as_array().unwrap();
    let mut seen = Vec::new();
    for s in sets {
        let key = s["type"].as_str().unwrap();
        let dtype = DType::parse(key).unwrap();
        let bytes = hex(s["bytes"].as_str().unwrap());
        let want = f32s(&s["expected"]);
        let mut got = vec![0f32; want.len()];
        quant::dequantize_row(dtype, &bytes, &mut got).unwrap();
        same_bits(&format!("{key} dequant"), &got, &want);
        seen.push(dtype);
    }
    for t in [DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        assert!(seen.contains(&t), "no {t} dequantize set");
    }
}

/// Q4_K / Q5_K / Q6_K quantization byte-identical with `llama-quantize` (ggml's
/// importance-free `quantize_row_q*_K_ref`) on every row of `kquant_vectors.json`.
#[test]
fn k_quantizers_match_llama_quantize_byte_for_byte() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../oracle/quant/kquant_vectors.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p).expect("oracle/quant/kquant_vectors.json is committed"))
            .unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "expected the full vector set");
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let input = f32s(&c["input"]);
        for (key, dtype) in [("q4_k", DType::Q4_K), ("q5_k", DType::Q5_K), ("q6_k", DType::Q6_K)] {
            let want = hex(c[key].as_str().unwrap());
            let mut got = vec![0u8; dtype.row_bytes(input.len()).unwrap()];
            quant::quantize_row(dtype, &input, &mut got).unwrap();
            if got != want {
                failures.push(format!("{name} {key}\n  ours: {:02x?}\n  llama: {:02x?}", got, want));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        3 * cases.len(),
        failures.join("\n")
    );
}
