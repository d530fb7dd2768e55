//! `Llama::decode_greedy` (the next pass queued before the host sees the token, the
//! embedding read from the device's argmax) gives exactly the tokens of the plain
//! `forward_argmax` loop, stops where the caller says, and leaves the cache as that loop
//! would (a later step continues identically). On the CPU always; on OpenCL when a
//! device exists (skips, saying why, otherwise).

use std::path::Path;

use antigravity_core::backend::Backend;
use antigravity_core::cpu::CpuBackend;
use antigravity_core::dtype::DType;
use antigravity_core::model::{self, Llama, RunOptions};

const PROMPT: [u32; 3] = [1, 2, 3];
const STEPS: usize = 20;

fn tiny<B: Backend>(be: B) -> Llama<B> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/models/tiny-untied");
    let (cfg, w) = model::hf::load(&dir, &be, DType::Q4_0).unwrap();
    Llama::new(
        cfg,
        w,
        be,
        RunOptions {
            ctx: 64,
            max_batch: 16,
            all_logits: false,
            ..RunOptions::default()
        },
    )
    .unwrap()
}

fn check<B: Backend>(m: &mut Llama<B>) {
    // Reference: one forward_argmax per token, the host feeding each.
    m.reset();
    let mut want = vec![m.forward_argmax(&PROMPT).unwrap()];
    for _ in 0..=STEPS {
        let t = *want.last().unwrap();
        want.push(m.forward_argmax(&[t]).unwrap());
    }
    let distinct = {
        let mut v = want.clone();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    assert!(distinct > 1, "the tiny model should not repeat one token: {want:?}");

    // All steps.
    m.reset();
    let t0 = m.forward_argmax(&PROMPT).unwrap();
    assert_eq!(t0, want[0]);
    let mut got = vec![t0];
    let kept = m
        .decode_greedy(t0, STEPS, |t| {
            got.push(t);
            Ok(true)
        })
        .unwrap();
    assert_eq!(kept, STEPS);
    assert_eq!(got, want[..=STEPS], "decode_greedy vs forward_argmax loop");
    assert_eq!(m.kv.len(), PROMPT.len() + STEPS);

    // Stop at the 6th token: six passes kept (fed want[0..6]), the one run ahead on the
    // rejected want[6] dropped; the next step continues as the loop would.
    m.reset();
    let t0 = m.forward_argmax(&PROMPT).unwrap();
    let mut seen = Vec::new();
    let kept = m
        .decode_greedy(t0, STEPS, |t| {
            seen.push(t);
            Ok(seen.len() < 6)
        })
        .unwrap();
    assert_eq!(kept, 6);
    assert_eq!(seen, want[1..=6]);
    assert_eq!(m.kv.len(), PROMPT.len() + 6, "the pass run ahead leaves no slot behind");
    assert_eq!(
        m.forward_argmax(&[want[6]]).unwrap(),
        want[7],
        "continuing after a stop"
    );

    // A single step queues nothing ahead; an error from the callback stops and reports.
    m.reset();
    let t0 = m.forward_argmax(&PROMPT).unwrap();
    let mut one = Vec::new();
    assert_eq!(
        m.decode_greedy(t0, 1, |t| {
            one.push(t);
            Ok(true)
        })
        .unwrap(),
        1
    );
    assert_eq!(one, want[1..=1]);
    let err = m
        .decode_greedy(want[1], 5, |_| {
            Err(antigravity_core::error::Error::invalid("stop here"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("stop here"), "{err}");
    assert_eq!(
        m.kv.len(),
        PROMPT.len() + 1,
        "a failed call leaves the cache as it found it"
    );

    // More steps than the context holds: refused up front.
    m.reset();
    let t0 = m.forward_argmax(&PROMPT).unwrap();
    let err = m.decode_greedy(t0, 64, |_| Ok(true)).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn decode_greedy_matches_the_loop_cpu() {
    check(&mut tiny(CpuBackend::new()));
}

#[cfg(feature = "opencl")]
#[test]
fn decode_greedy_matches_the_loop_opencl() {
    use antigravity_core::opencl::OpenClOptions;
    opencl_case(OpenClOptions::from_env());
}

/// The same with the persistent block kernel forced on (2 work-groups), so a device
/// where it is off by default (PoCL in CI) runs the block path's status reads through
/// the started downloads too.
#[cfg(feature = "opencl")]
#[test]
fn decode_greedy_matches_the_loop_opencl_block() {
    use antigravity_core::opencl::OpenClOptions;
    let mut o = OpenClOptions::from_env();
    if o.persistent_groups.is_none() {
        o.persistent_groups = Some(2);
    }
    opencl_case(o);
}

#[cfg(feature = "opencl")]
fn opencl_case(opts: antigravity_core::opencl::OpenClOptions) {
    use antigravity_core::opencl::OpenClBackend;
    let be = match OpenClBackend::new(opts) {
        Ok(b) => b,
        Err(e) => {
            assert!(
                std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_err(),
                "OpenCL required but unavailable: {e}"
            );
            eprintln!("SKIP: no OpenCL device ({e})");
            return;
        }
    };
    let mut m = tiny(be);
    check(&mut m);
    // Per token: nothing up, the 4-byte index (and the block status word) down.
    m.reset();
    let t0 = m.forward_argmax(&PROMPT).unwrap();
    let c0 = Backend::copied_bytes(&m.backend);
    m.decode_greedy(t0, STEPS, |_| Ok(true)).unwrap();
    let c1 = Backend::copied_bytes(&m.backend);
    let status = if m.backend.persistent_block().is_some() { 4 } else { 0 };
    let steps = STEPS as u64;
    assert_eq!(c1.to_device - c0.to_device, 0, "no bytes up per token");
    assert_eq!(
        (c1.to_host - c0.to_host) / steps,
        4 + status,
        "per token only the index comes back"
    );
}
