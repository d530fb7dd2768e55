//! Mutation fuzzing of the GGUF reader under a measuring allocator.
//!
//! The input is the metadata region of the real SmolLM2 GGUF (its first 2 MiB: header,
//! 33 keys incl. the 49152-token vocabulary and 48900 merges, 272 tensor infos, the start
//! of the data), or a small synthetic file when the model is absent. Each case overwrites
//! a few bytes or u64 fields at random places (biased towards the header and the tensor
//! infos, where the counts and sizes live) and parses. The parse must return `Ok` or
//! `Err` — never panic — and its largest single allocation must stay below 4× the input
//! size (and 64 MiB): no allocation may be sized by an unchecked field.
//!
//! The allocator counts only on the fuzzing thread while a parse runs, so other tests
//! and proptest's own bookkeeping do not disturb the measurement.

mod gguf_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use antigravity_core::backend::HostRegion;
use antigravity_core::gguf::GgufFile;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, recording the largest single request made while `TRACKING`.
struct Measuring;

impl Measuring {
    fn note(size: usize) {
        let _ = TRACKING.try_with(|t| {
            if t.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            }
        });
    }
}

// SAFETY: every method forwards to `System` unchanged; the bookkeeping touches only
// const-initialised thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Measuring::note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Measuring::note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Measuring::note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Measuring = Measuring;

/// Parses `bytes` and returns (parsed OK, largest single allocation during the parse).
/// The buffer is handed in and back so that no per-case copy of 2 MiB is needed.
fn parse_measured(buf: Vec<u8>) -> (Vec<u8>, bool, usize) {
    let arc = Arc::new(buf);
    let region = HostRegion::new(arc.clone());
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = GgufFile::from_region(region, "fuzz.gguf");
    TRACKING.with(|t| t.set(false));
    let ok = r.is_ok();
    if let Err(e) = &r {
        // Every error names the file and a byte offset.
        let m = e.to_string();
        assert!(m.starts_with("fuzz.gguf: byte "), "{m}");
    }
    drop(r);
    let largest = LARGEST.with(|l| l.get());
    (Arc::try_unwrap(arc).expect("the parse kept no reference"), ok, largest)
}

#[derive(Clone, Debug)]
enum Mutation {
    Byte(usize, u8),
    U64(usize, u64),
}

fn mutations(len: usize, infos: (usize, usize)) -> impl Strategy<Value = Vec<Mutation>> {
    let (lo, hi) = infos;
    // Where: anywhere, the first 4 KiB (header and first keys), or the tensor infos.
    let pos = prop_oneof![0..len, 0..len.min(4096), lo..hi.max(lo + 1)];
    let val64 = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(1 << 40),
        Just(1 << 32),
        Just(1 << 63),
        0u64..4096,
        any::<u64>()
    ];
    let m = prop_oneof![
        3 => (pos.clone(), any::<u8>()).prop_map(|(p, v)| Mutation::Byte(p, v)),
        1 => (pos, val64).prop_map(|(p, v)| Mutation::U64(p, v)),
    ];
    prop::collection::vec(m, 1..4)
}

/// Runs `cases` mutation cases on `input`; returns (ok count, largest allocation).
fn fuzz(input: Vec<u8>, infos: (usize, usize), cases: u32) -> (u32, usize) {
    let len = input.len();
    let limit = (4 * len).clamp(64 << 10, 64 << 20);
    let buf = RefCell::new(input);
    let oks = Cell::new(0u32);
    let worst = Cell::new(0usize);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&mutations(len, infos), |muts| {
        let mut b = buf.take();
        // Apply, remembering the original bytes to restore afterwards.
        let mut undo = Vec::new();
        for m in &muts {
            let (p, bytes) = match *m {
                Mutation::Byte(p, v) => (p, vec![v]),
                Mutation::U64(p, v) => (p, v.to_le_bytes().to_vec()),
            };
            let end = (p + bytes.len()).min(b.len());
            undo.push((p, b[p..end].to_vec()));
            b[p..end].copy_from_slice(&bytes[..end - p]);
        }
        let (mut b, ok, largest) = parse_measured(b);
        for (p, orig) in undo.into_iter().rev() {
            b[p..p + orig.len()].copy_from_slice(&orig);
        }
        buf.replace(b);
        oks.set(oks.get() + u32::from(ok));
        worst.set(worst.get().max(largest));
        prop_assert!(
            largest <= limit,
            "{muts:?}: one allocation of {largest} bytes (limit {limit})"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    (oks.get(), worst.get())
}

fn model_prefix(n: usize) -> Option<(Vec<u8>, (usize, usize))> {
    let dirs = [
        std::env::var_os("ANTIGRAVITY_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/antigravity")),
    ];
    let path = dirs
        .into_iter()
        .flatten()
        .map(|d| d.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .find(|p| p.is_file())?;
    let full = GgufFile::open(&path).ok()?;
    // Tensor infos end where the (aligned) data section starts; they begin ~60 bytes per
    // tensor before that.
    let infos_end = full.data_offset();
    let infos = (infos_end.saturating_sub(full.tensors().len() * 64), infos_end);
    let mut buf = Vec::new();
    std::fs::File::open(&path)
        .ok()?
        .take(n as u64)
        .read_to_end(&mut buf)
        .ok()?;
    Some((buf, infos))
}

#[test]
fn mutated_real_metadata_never_panics_or_overallocates() {
    const CASES: u32 = 10_000;
    let t0 = Instant::now();
    let (input, infos, what) = match model_prefix(2 << 20) {
        Some((b, infos)) => (b, infos, "the first 2 MiB of SmolLM2-135M-Instruct.Q4_1.gguf"),
        None => {
            eprintln!("NOTE: SmolLM2 GGUF not found; fuzzing the synthetic file instead");
            let (b, m) = gguf_support::Raw::valid().build_marked();
            (b, (m.tensor_starts[0], m.infos_end), "the synthetic file")
        }
    };
    // The unmutated input parses, or fails only because its data lie past the prefix.
    let (input, ok, base_alloc) = parse_measured(input);
    eprintln!("unmutated input: ok = {ok}, largest allocation {base_alloc} bytes");
    let len = input.len();
    let (oks, worst) = fuzz(input, infos, CASES);
    eprintln!(
        "{CASES} mutations of {what} ({len} bytes): {oks} parsed OK, largest single allocation {worst} bytes \
         ({:.2}× the input), {:.1} s",
        worst as f64 / len as f64,
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn mutated_synthetic_file_never_panics_or_overallocates() {
    let t0 = Instant::now();
    let (b, m) = gguf_support::Raw::valid().build_marked();
    let len = b.len();
    let (oks, worst) = fuzz(b, (m.tensor_starts[0], m.infos_end), 20_000);
    eprintln!(
        "20000 mutations of the {len}-byte synthetic file: {oks} parsed OK, largest allocation {worst} bytes, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        oks > 0,
        "some mutations (e.g. of tensor data or string contents) still parse"
    );
}

/// The real metadata (vocabulary, merges, all 33 keys) rebuilt with only the model's
/// F32 tensors (the norms, ~140 KB), so the file is whole and mutations that leave it
/// valid parse `Ok` — exercising the success path at real size too.
#[test]
fn mutated_real_metadata_with_whole_data_never_panics_or_overallocates() {
    const CASES: u32 = 2_000;
    let Some((prefix, _)) = model_prefix(usize::MAX) else {
        eprintln!("SKIP: SmolLM2 GGUF not found (the synthetic file is fuzzed by another test)");
        return;
    };
    let real = GgufFile::from_bytes(prefix, "real").unwrap();
    let mut w = antigravity_core::gguf::GgufWriter::new();
    for (k, v) in real.metadata() {
        w.add(k, v.clone()).unwrap();
    }
    for t in real
        .tensors()
        .iter()
        .filter(|t| t.dtype == antigravity_core::DType::F32)
    {
        w.add_tensor(&t.name, &t.dims, t.dtype, real.tensor_bytes(t).unwrap())
            .unwrap();
    }
    let bytes = w.to_bytes();
    let len = bytes.len();
    let rebuilt = GgufFile::from_bytes(bytes.clone(), "rebuilt").unwrap();
    let infos = (
        rebuilt.data_offset().saturating_sub(rebuilt.tensors().len() * 64),
        rebuilt.data_offset(),
    );
    drop(rebuilt);
    let t0 = Instant::now();
    let (oks, worst) = fuzz(bytes, infos, CASES);
    eprintln!(
        "{CASES} mutations of the rebuilt real-metadata file ({len} bytes): {oks} parsed OK, largest allocation \
         {worst} bytes ({:.2}× the input), {:.1} s",
        worst as f64 / len as f64,
        t0.elapsed().as_secs_f64()
    );
    assert!(oks > 0);
}
