//! The hybrid driver (`model::hybrid`): moving a sequence between backends at token
//! boundaries is invisible in the output.
//!
//! * A forced switch at every token position `k` of a 64-token greedy generation, in
//!   both directions, gives the ids of either backend alone up to near-ties (the first
//!   differing id must sit where the reference's top-1/top-2 log-prob margin is < 0.1,
//!   as the oracle's greedy check allows) — on two CPU models with different cache
//!   dtypes (f16 ⇄ f32 converted at hand-over) always, and CPU ⇄ OpenCL where a device
//!   exists (PoCL in CI; skips, saying why, otherwise) — there with f32 weights, since
//!   with Q8_0 ones the CPU's Q8 activations move the margins by more than the rule
//!   allows (measured and bounded in `opencl_logits_track_cpu_teacher_forced`);
//! * the oracle's logits with the prompt's second half run on the other backend pass the
//!   manifest's limits;
//! * the hand-over copies exactly the used slots, with their positions (and converts
//!   f16 ⇄ f32 exactly where the caches differ);
//! * decoding with switches allocates nothing once warm: `hybrid_zero_alloc.rs` (its own
//!   test binary, so no other test's allocations are counted);
//! * the background path (build, bind and warm-up on another thread, taken over at the
//!   first boundary after it finished, the policy moving the sequence there) gives the
//!   ids of a backend alone, and the warm-up leaves no trace in the model it warmed;
//! * under an eviction policy (`sinks`, and `h2o`, whose attention mass travels with the
//!   slots) switches anywhere in a generation four times the cache's length give the ids
//!   of a backend alone evicting the same way.

use std::path::{Path, PathBuf};

use antigravity_core::backend::Backend;
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::dtype::DType;
use antigravity_core::kv_evict::{EvictConfig, KvPolicy};
use antigravity_core::model::hybrid::{Crossover, GpuBind, GpuParts, Hybrid, HybridOptions, Speeds};
use antigravity_core::model::{self, Llama, RunOptions};

const GEN: usize = 64;
/// The oracle's near-tie rule (`oracle/manifest.json`, `greedy_ids`: `min_margin`).
const NEAR_TIE: f32 = 0.1;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny<B: Backend>(be: B, name: &str, kv: DType, all_logits: bool) -> Llama<B> {
    let parts = tiny_parts(be, name, all_logits);
    Llama::new(parts.cfg, parts.weights, parts.backend, tiny_opts(400, kv, all_logits)).unwrap()
}

/// [`tiny`] with f32 weights, last-position logits: both sides of a CPU ⇄ OpenCL switch
/// then compute in f32 (no Q8 activations on either), so the two backends' logits differ
/// by ~1e-6 and the near-tie rule is strict. With Q8_0 weights the CPU rounds its
/// activations to Q8 and OpenCL does not (or, on NVIDIA, rounds different f32 inputs):
/// their margins then differ by up to ~0.4 (`opencl_logits_track_cpu_teacher_forced`),
/// more than the rule allows, so a switch test there passes or fails by where the
/// model's near-ties happen to fall. (Only the OpenCL tests use it.)
#[cfg(feature = "opencl")]
fn tiny_f32<B: Backend>(be: B, name: &str, kv: DType) -> Llama<B> {
    // (`tiny_parts` loads f32 weights for the all-logits case)
    let parts = tiny_parts(be, name, true);
    Llama::new(parts.cfg, parts.weights, parts.backend, tiny_opts(400, kv, false)).unwrap()
}

fn tiny_opts(ctx: usize, kv: DType, all_logits: bool) -> RunOptions {
    RunOptions {
        ctx,
        max_batch: 16,
        all_logits,
        kv_type: Some(kv),
    }
}

/// A tiny oracle model's weights on `be`, not yet bound (what a background build makes).
fn tiny_parts<B: Backend>(be: B, name: &str, all_logits: bool) -> GpuParts<B> {
    // The oracle's weights (f32) for its logits; Q8_0 otherwise (the CPU's Q8_0
    // activations then differ from OpenCL's f32 ones, as in real use).
    let wtype = if all_logits { DType::F32 } else { DType::Q8_0 };
    let dir = root().join("oracle/models").join(name);
    let (cfg, weights) = model::hf::load(&dir, &be, wtype).unwrap();
    GpuParts {
        cfg,
        weights,
        backend: be,
        init_ms: 0.0,
    }
}

/// Greedy ids of `prompt` then `GEN - 1` more tokens on one model alone, and at each
/// step the top-1/top-2 log-prob margin (teacher-forced on its own ids).
fn alone<B: Backend>(m: &mut Llama<B>, prompt: &[u32]) -> (Vec<u32>, Vec<f32>) {
    m.reset();
    greedy_margins(|ids| m.forward(ids).unwrap().to_vec(), prompt)
}

/// The greedy loop of [`alone`] over any forward pass: `prompt`, then each chosen id.
fn greedy_margins(mut forward: impl FnMut(&[u32]) -> Vec<f32>, prompt: &[u32]) -> (Vec<u32>, Vec<f32>) {
    let mut ids = Vec::new();
    let mut margins = Vec::new();
    let mut logits = forward(prompt);
    for step in 0..GEN {
        let (t, margin) = top2_margin(&logits);
        ids.push(t);
        margins.push(margin);
        if step + 1 < GEN {
            logits = forward(&[t]);
        }
    }
    (ids, margins)
}

/// The argmax and its log-prob margin over the runner-up.
fn top2_margin(logits: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    // Log-probs share the normalizer: their difference is the logits' difference.
    (best.0 as u32, best.1 - second)
}

/// `got` equals `want` up to the first difference, which must be a near-tie of `want`.
fn same_up_to_near_tie(got: &[u32], want: &[u32], margins: &[f32]) -> Result<(), String> {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None if got.len() == want.len() => Ok(()),
        None => Err(format!("{} ids, {} expected", got.len(), want.len())),
        Some(i) if margins[i] < NEAR_TIE => Ok(()),
        Some(i) => Err(format!(
            "id {i} differs ({} vs {}) where the margin is {:.3} ≥ {NEAR_TIE}",
            got[i], want[i], margins[i]
        )),
    }
}

/// Greedy generation through the hybrid: the prompt's pass, then `decode_greedy`.
fn hybrid_ids<C: Backend, G: Backend>(h: &mut Hybrid<C, G>, prompt: &[u32]) -> Vec<u32> {
    h.reset();
    let first = h.forward_argmax(prompt).unwrap();
    let mut ids = vec![first];
    h.decode_greedy(first, GEN - 1, |t| {
        ids.push(t);
        Ok(true)
    })
    .unwrap();
    ids
}

/// [`alone`] on one of the hybrid's models, through the hybrid: no switch (the first),
/// or the prompt's pass moved to the second (a switch before token 0, with an empty
/// cache). The hybrid hands its models out only read-only (with a zero-copy cache the
/// device's buffers wrap the host model's memory), so this is how a test runs one.
fn alone_in<C: Backend, G: Backend>(
    h: Hybrid<C, G>,
    second: bool,
    prompt: &[u32],
) -> (Hybrid<C, G>, (Vec<u32>, Vec<f32>)) {
    let mut h = set_switches(h, if second { vec![0] } else { vec![] });
    h.reset();
    let run = greedy_margins(|ids| h.forward(ids).unwrap().to_vec(), prompt);
    assert_eq!(h.on_gpu(), second, "alone_in: the wrong side ran");
    (h, run)
}

/// Every switch of the last run moved no cache bytes where the hybrid shares one cache
/// (`mass_per_slot`: bytes a slot of the attention mass still travels with, h2o/tova).
fn check_zero_copy_bytes<C: Backend, G: Backend>(h: &Hybrid<C, G>, label: &str) {
    if !h.zero_copy() {
        return;
    }
    for s in h.switches() {
        assert_eq!(s.bytes, 0, "{label}: a zero-copy switch moved cache bytes: {s:?}");
    }
}

fn set_switches<C: Backend, G: Backend>(h: Hybrid<C, G>, at: Vec<usize>) -> Hybrid<C, G> {
    // Rebuild the options in place: the hybrid keeps its models.
    h.with_options(HybridOptions {
        switch_at: at,
        ..HybridOptions::default()
    })
}

/// Every single-switch position in both directions, and a switch at every token,
/// against both backends alone.
fn every_position<C: Backend, G: Backend>(h: Hybrid<C, G>, prompt: &[u32], label: &str) -> Hybrid<C, G> {
    let (h, (want_c, margin_c)) = alone_in(h, false, prompt);
    let (mut h, (want_g, margin_g)) = alone_in(h, true, prompt);
    let distinct = {
        let mut v = want_c.clone();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    assert!(
        distinct > 4,
        "{label}: the model should not repeat one token: {want_c:?}"
    );
    let check = |got: &[u32], what: &str| {
        let c = same_up_to_near_tie(got, &want_c, &margin_c);
        let g = same_up_to_near_tie(got, &want_g, &margin_g);
        assert!(
            c.is_ok() || g.is_ok(),
            "{label}, {what}: vs {} alone: {}; vs {} alone: {}",
            "first",
            c.unwrap_err(),
            "second",
            g.unwrap_err()
        );
    };
    let mut exact = 0;
    let mut runs = 0;
    for k in 0..GEN {
        // first → second at k; and second → first at k (the prompt's pass moved at 0).
        for (at, dir) in [(vec![k], "first→second"), (vec![0, k], "second→first")] {
            if dir == "second→first" && k == 0 {
                continue;
            }
            h = set_switches(h, at.clone());
            let got = hybrid_ids(&mut h, prompt);
            let n_sw = h.switches().len();
            assert_eq!(n_sw, at.len(), "{label}: switches at {at:?}: {:?}", h.switches());
            for (s, &k) in h.switches().iter().zip(&at) {
                assert_eq!(s.token, k);
            }
            check(&got, &format!("{dir} at {k}"));
            check_zero_copy_bytes(&h, label);
            exact += (got == want_c || got == want_g) as usize;
            runs += 1;
        }
    }
    // Alternating at every token.
    h = set_switches(h, (1..GEN).collect());
    let got = hybrid_ids(&mut h, prompt);
    assert_eq!(h.switches().len(), GEN - 1);
    check(&got, "switch at every token");
    check_zero_copy_bytes(&h, label);
    eprintln!("{label}: {runs} single-switch runs, {exact} identical to a backend alone, the rest differ only past a near-tie");
    h
}

#[test]
fn forced_switches_cpu_to_cpu_scalar() {
    // Two CPU models, the best ISA and the scalar one, over one cache dtype (what
    // `--backend hybrid` runs when it builds the second backend: the first dtype both
    // read). Mixed caches (f16 here, f32 there) are converted by the hand-over (tested
    // below), but the tiny random models magnify f16's rounding into logit shifts past
    // the 0.1 near-tie margin, so "equal up to near-ties" is not a property of a mix.
    let prompt = [1u32, 5, 9, 42, 7];
    for name in ["tiny-untied", "tiny-tied"] {
        for kv in [DType::F32, DType::F16] {
            let a = tiny(CpuBackend::new(), name, kv, false);
            let b = tiny(CpuBackend::with_isa(Isa::Scalar).unwrap(), name, kv, false);
            let h = Hybrid::with_both(a, b, HybridOptions::default()).unwrap();
            every_position(h, &prompt, &format!("{name} cpu ⇄ cpu-scalar, {kv} cache"));
        }
    }
}

#[test]
fn handover_copies_exactly_the_used_slots() {
    let mut a = tiny(CpuBackend::new(), "tiny-untied", DType::F16, false);
    let mut b = tiny(CpuBackend::new(), "tiny-untied", DType::F32, false);
    a.forward(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    let shape = a.kv_shape();
    let mut stage = vec![0u8; shape.capacity * shape.kv_dim * 4];
    let mut conv = stage.clone();
    let bytes = model::hybrid::handover(&mut a, &mut b, &mut stage, &mut conv).unwrap();
    assert_eq!(b.kv.len(), 7);
    assert_eq!(b.kv.positions(), a.kv.positions());
    // f32 destination: 2 (K, V) × layers × slots × kv_dim × 4 bytes.
    assert_eq!(bytes as usize, 2 * shape.n_layer * 7 * shape.kv_dim * 4);
    // The copied keys equal the source's, widened.
    for l in 0..shape.n_layer {
        let (ka, _) = a.kv.views(l);
        let (kb, _) = b.kv.views(l);
        let mut ha = vec![0u8; 7 * shape.kv_dim * 2];
        let mut hb = vec![0u8; 7 * shape.kv_dim * 4];
        a.backend.download(ka.buf, 0, &mut ha).unwrap();
        b.backend.download(kb.buf, 0, &mut hb).unwrap();
        let wa: &[half::f16] = bytemuck::cast_slice(&ha);
        let wb: &[f32] = bytemuck::cast_slice(&hb);
        assert!(wa.iter().zip(wb).all(|(x, &y)| x.to_f32() == y), "layer {l}");
        assert!(wb.iter().any(|&v| v != 0.0));
    }
    // Both continue identically from there.
    let la = a.forward(&[8]).unwrap().to_vec();
    let lb = b.forward(&[8]).unwrap().to_vec();
    assert_eq!(top2_margin(&la).0, top2_margin(&lb).0);
    // Too small a destination: refused, nothing changed.
    let mut small = Llama::new(
        a.cfg.clone(),
        model::hf::load(
            &root().join("oracle/models/tiny-untied"),
            &CpuBackend::new(),
            DType::Q8_0,
        )
        .unwrap()
        .1,
        CpuBackend::new(),
        RunOptions {
            ctx: 4,
            max_batch: 4,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let e = model::hybrid::handover(&mut a, &mut small, &mut stage, &mut conv).unwrap_err();
    assert!(e.to_string().contains("--ctx"), "{e}");
    assert_eq!(small.kv.len(), 0);
    // One cache type that is not a float (q8_0: 34 bytes per 32 values) goes over as its
    // bytes, straight between two host caches (no staging buffer at all) ...
    let mut q = tiny(CpuBackend::new(), "tiny-untied", DType::Q8_0, false);
    let mut q2 = tiny(CpuBackend::new(), "tiny-untied", DType::Q8_0, false);
    q.forward(&[1, 2, 3, 4, 5]).unwrap();
    let bytes = model::hybrid::handover(&mut q, &mut q2, &mut [], &mut []).unwrap();
    let row = DType::Q8_0.row_bytes(shape.kv_dim).unwrap();
    assert_eq!(bytes as usize, 2 * shape.n_layer * 5 * row);
    for l in 0..shape.n_layer {
        let (kq, vq) = q.kv.views(l);
        let (kq2, vq2) = q2.kv.views(l);
        for (x, y) in [(kq.buf, kq2.buf), (vq.buf, vq2.buf)] {
            let (mut hx, mut hy) = (vec![0u8; 5 * row], vec![0u8; 5 * row]);
            q.backend.download(x, 0, &mut hx).unwrap();
            q2.backend.download(y, 0, &mut hy).unwrap();
            assert_eq!(hx, hy, "layer {l}");
        }
    }
    assert_eq!(q.forward(&[6]).unwrap(), q2.forward(&[6]).unwrap());
    // ... and a pair that would need converting to or from it is refused before anything
    // is written.
    let e = model::hybrid::handover(&mut a, &mut q2, &mut stage, &mut conv).unwrap_err();
    assert_eq!(e.kind(), antigravity_core::ErrorKind::DType, "{e}");
    assert_eq!(q2.kv.len(), 6);
}

#[test]
fn oracle_logits_with_a_switch_mid_prompt_cpu() {
    let a = |n| tiny(CpuBackend::new(), n, DType::F32, true);
    let b = |n| tiny(CpuBackend::with_isa(Isa::Scalar).unwrap(), n, DType::F32, true);
    for name in ["tiny-untied", "tiny-tied"] {
        oracle_switch(
            Hybrid::with_both(a(name), b(name), HybridOptions::default()).unwrap(),
            name,
        );
    }
}

/// The manifest's `logits` limit (`max_rel`) for `case`.
fn logits_limit(case: &str) -> f64 {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("oracle/manifest.json")).unwrap()).unwrap();
    m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["case"] == case && e["tensor"] == "logits")
        .and_then(|e| e["tolerance"]["max_rel"].as_f64())
        .unwrap()
}

fn refs(case: &str) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(root().join(format!("oracle/refs/{case}.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("ids").unwrap();
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let lg = st.tensor("logits").unwrap();
    let lg = bytemuck::pod_collect_to_vec::<u8, f32>(lg.data());
    (ids, lg)
}

/// The oracle's long prompt: the first half on one backend, the rest on the other after
/// a hand-over, and the other way round; every position's logits within the
/// manifest's `max_rel` (the limit the GPU passes on its own).
fn oracle_switch<C: Backend, G: Backend>(mut h: Hybrid<C, G>, model_name: &str) {
    let case = format!("{model_name}.long");
    let (ids, want) = refs(&case);
    let limit = logits_limit(&case);
    let half = ids.len() / 2;
    for at in [vec![1], vec![0, 1]] {
        h = set_switches(h, at.clone());
        h.reset();
        let mut got = h.forward(&ids[..half]).unwrap().to_vec();
        got.extend_from_slice(h.forward(&ids[half..]).unwrap());
        assert_eq!(h.switches().len(), at.len());
        let v = antigravity_core::oracle::max_rel(&got, &want).unwrap();
        eprintln!("{case}, switches before token {at:?} (the second half): logits max_rel {v:.3e} (limit {limit:.3e})");
        assert!(
            v <= limit,
            "{case}: max_rel {v:.3e} > {limit:.3e} with a switch mid-prompt"
        );
    }
}

/// The OpenCL device, or why there is none (the test then skips, saying so;
/// `ANTIGRAVITY_OPENCL_REQUIRED=1` makes that a failure).
#[cfg(feature = "opencl")]
fn opencl() -> Option<antigravity_core::opencl::OpenClBackend> {
    use antigravity_core::opencl::{OpenClBackend, OpenClOptions};
    match OpenClBackend::new(OpenClOptions::from_env()) {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_err(),
                "OpenCL required but unavailable: {e}"
            );
            eprintln!("SKIP: no OpenCL device ({e})");
            None
        }
    }
}

#[cfg(feature = "opencl")]
#[test]
fn forced_switches_cpu_to_opencl() {
    let prompt = [1u32, 5, 9, 42, 7];
    let Some(g) = opencl() else { return };
    // One cache dtype on both sides (f32: what OpenCL reads), as `--backend hybrid` runs.
    let a = tiny_f32(CpuBackend::new(), "tiny-untied", DType::F32);
    let unified = g.device_info().unified_memory;
    let b = tiny_f32(g, "tiny-untied", DType::F32);
    let h = Hybrid::with_both(a, b, HybridOptions::default()).unwrap();
    // Where the device shares host memory (PoCL) the caches are one: every switch
    // moves 0 bytes (checked in `every_position`); a discrete device copies.
    assert_eq!(
        h.zero_copy(),
        unified,
        "zero-copy exactly where the device shares host memory"
    );
    if !unified {
        eprintln!("note: the device does not share host memory: the copy path ran, not zero-copy");
    }
    every_position(h, &prompt, "tiny-untied cpu ⇄ opencl, f32 cache");
}

/// Teacher-forced on `a`'s greedy ids from `prompt`: per step, the largest |Δ logit|
/// between `a` and `b` and the logits' NMSE; and the change of `a`'s top-1/top-2
/// margin. Returns (max |Δ|, its step, max NMSE, mean NMSE, max |Δ margin|).
#[cfg(feature = "opencl")]
fn track<A: Backend, B: Backend>(a: &mut Llama<A>, b: &mut Llama<B>, prompt: &[u32]) -> (f32, usize, f64, f64, f32) {
    a.reset();
    b.reset();
    let (mut la, mut lb) = (a.forward(prompt).unwrap().to_vec(), b.forward(prompt).unwrap().to_vec());
    let (mut worst, mut at, mut max_nmse, mut sum_nmse, mut worst_gap) = (0.0f32, 0, 0.0f64, 0.0f64, 0.0f32);
    for step in 0..GEN {
        let (t, gap_a) = top2_margin(&la);
        let second = (0..la.len())
            .filter(|&i| i != t as usize)
            .max_by(|&x, &y| la[x].total_cmp(&la[y]))
            .unwrap_or(0);
        worst_gap = worst_gap.max((gap_a - (lb[t as usize] - lb[second])).abs());
        let d = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        if d > worst {
            (worst, at) = (d, step);
        }
        let err: f64 = la
            .iter()
            .zip(&lb)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum();
        let nmse = err / la.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>();
        max_nmse = max_nmse.max(nmse);
        sum_nmse += nmse;
        if step + 1 < GEN {
            la = a.forward(&[t]).unwrap().to_vec();
            lb = b.forward(&[t]).unwrap().to_vec();
        }
    }
    (worst, at, max_nmse, sum_nmse / GEN as f64, worst_gap)
}

/// How far OpenCL's logits stand from the CPU's on the switch tests' model (f32 cache),
/// teacher-forced over 64 steps (69 slots: several attention chunks; on NVIDIA with
/// `ANTIGRAVITY_OPENCL_BLOCK_WIDE_FROM=1` the wide stage B, several units a KV head):
/// * f32 weights: both sides compute in f32, so only summation order differs — NMSE
///   ≤ 1e-9 (a wrong attention slot, head or merge weight gives ≥ 1e-4);
/// * Q8_0 weights: the CPU rounds activations to Q8, OpenCL does not (NVIDIA rounds its
///   own f32 values): the noise the switch tests with these weights would face,
///   printed, and bounded loosely (mean NMSE ≤ 1e-2; measured 2e-3 on PoCL, with the
///   top-1/top-2 margin moving by up to 0.42 — why those tests use f32 weights).
#[cfg(feature = "opencl")]
#[test]
fn opencl_logits_track_cpu_teacher_forced() {
    let prompt = [1u32, 5, 9, 42, 7];
    let Some(g) = opencl() else { return };
    let desc = g.block_description().unwrap_or_else(|| "per-op kernels".into());
    let mut a = tiny_f32(CpuBackend::new(), "tiny-untied", DType::F32);
    let mut b = tiny_f32(g, "tiny-untied", DType::F32);
    let (worst, at, max_nmse, mean_nmse, gap) = track(&mut a, &mut b, &prompt);
    eprintln!(
        "tiny-untied f32 weights, OpenCL ({desc}) vs CPU, {GEN} steps: max |Δ logit| {worst:.2e} (step {at}), \
         NMSE max {max_nmse:.2e} mean {mean_nmse:.2e}, max |Δ margin| {gap:.2e}"
    );
    assert!(
        max_nmse <= 1e-9,
        "f32: OpenCL's logits stray from the CPU's: NMSE {max_nmse:.2e}"
    );
    let mut a = tiny(CpuBackend::new(), "tiny-untied", DType::F32, false);
    drop(b);
    let mut b = tiny(opencl().expect("it opened above"), "tiny-untied", DType::F32, false);
    let (worst, at, max_nmse, mean_nmse, gap) = track(&mut a, &mut b, &prompt);
    eprintln!(
        "tiny-untied Q8_0 weights, OpenCL vs CPU (Q8 activations), {GEN} steps: max |Δ logit| {worst:.3} (step {at}), \
         NMSE max {max_nmse:.2e} mean {mean_nmse:.2e}, max |Δ margin| {gap:.3}"
    );
    assert!(
        mean_nmse <= 1e-2,
        "Q8_0: OpenCL's logits stray from the CPU's: mean NMSE {mean_nmse:.2e}"
    );
}

/// The counted copy hand-over on a device that could share (zero-copy turned off):
/// switches in both directions give a backend's ids alone and move exactly the used
/// slots (`len` slots of K and V per layer).
#[cfg(feature = "opencl")]
#[test]
fn forced_switches_cpu_to_opencl_copy_path() {
    let prompt = [1u32, 5, 9, 42, 7];
    let Some(g) = opencl() else { return };
    let a = tiny_f32(CpuBackend::new(), "tiny-untied", DType::F32);
    let b = tiny_f32(g, "tiny-untied", DType::F32);
    let opts = HybridOptions {
        no_zero_copy: true,
        ..HybridOptions::default()
    };
    let h = Hybrid::with_both(a, b, opts).unwrap();
    assert!(!h.zero_copy(), "no_zero_copy must keep the copy path");
    let per_token = h.cpu_kv_bytes_per_token() as u64;
    let (h, (want_c, margin_c)) = alone_in(h, false, &prompt);
    let (mut h, (want_g, margin_g)) = alone_in(h, true, &prompt);
    for at in [vec![9], vec![0, 20], vec![3, 11, 17, 25, 40, 41, 50]] {
        h = set_switches(h, at.clone());
        let got = hybrid_ids(&mut h, &prompt);
        assert_eq!(h.switches().len(), at.len());
        for s in h.switches() {
            // Before token k the cache holds the prompt and k - 1 generated tokens.
            let cached = if s.token == 0 { 0 } else { prompt.len() + s.token - 1 };
            assert_eq!(s.bytes, cached as u64 * per_token, "copy path at {at:?}: {s:?}");
        }
        let c = same_up_to_near_tie(&got, &want_c, &margin_c);
        let gg = same_up_to_near_tie(&got, &want_g, &margin_g);
        assert!(c.is_ok() || gg.is_ok(), "copy path, switches at {at:?}: {c:?} / {gg:?}");
    }
}

#[cfg(feature = "opencl")]
#[test]
fn oracle_logits_with_a_switch_mid_prompt_opencl() {
    let Some(g) = opencl() else { return };
    let a = tiny(CpuBackend::new(), "tiny-untied", DType::F32, true);
    let b = tiny(g, "tiny-untied", DType::F32, true);
    oracle_switch(
        Hybrid::with_both(a, b, HybridOptions::default()).unwrap(),
        "tiny-untied",
    );
}

/// SmolLM2 (the real model, when fetched): one switch CPU → OpenCL mid-generation,
/// and one back, against both alone — with each side's default cache (f16 on the CPU,
/// f32 on OpenCL), so the hand-overs convert: on a trained model the mix stays within
/// the near-tie rule.
#[cfg(feature = "opencl")]
#[test]
fn smollm2_switch_mid_generation_opencl() {
    let home = std::env::var_os("ANTIGRAVITY_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/antigravity"));
    let path = home.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SKIP: {} not found (`cargo run -p harness -- fetch`)", path.display());
        return;
    }
    let Some(g) = opencl() else { return };
    let f = antigravity_core::gguf::GgufFile::open(&path).unwrap();
    let opts = RunOptions {
        ctx: 256,
        max_batch: 32,
        ..RunOptions::default()
    };
    let cpu = CpuBackend::new();
    let (cfg, w) = model::gguf::load(&f, &cpu).unwrap();
    let a = Llama::new(cfg, w, cpu, opts).unwrap();
    let (cfg, w) = model::gguf::load(&f, &g).unwrap();
    let b = Llama::new(cfg, w, g, opts).unwrap();
    let h = Hybrid::with_both(a, b, HybridOptions::default()).unwrap();
    let tok = antigravity_core::tokenizer::Tokenizer::from_gguf(&f).unwrap().unwrap();
    let prompt = tok.encode("The capital of France is").unwrap();
    let (h, (want_c, margin_c)) = alone_in(h, false, &prompt);
    let (mut h, (want_g, margin_g)) = alone_in(h, true, &prompt);
    for at in [vec![GEN / 2], vec![0, GEN / 2]] {
        h = set_switches(h, at.clone());
        let got = hybrid_ids(&mut h, &prompt);
        let c = same_up_to_near_tie(&got, &want_c, &margin_c);
        let gg = same_up_to_near_tie(&got, &want_g, &margin_g);
        assert!(c.is_ok() || gg.is_ok(), "SmolLM2 switches at {at:?}: {c:?} / {gg:?}");
        eprintln!("SmolLM2, switches at {at:?}: {:?}", h.switches());
    }
}

/// A crossover table in which the second backend is ten times faster at everything and
/// ready at once: the policy moves the sequence there at the first boundary it can.
fn second_is_faster() -> Crossover {
    let speeds = |name: &str, r: f64| Speeds {
        name: name.to_string(),
        init_ms: 0.0,
        prefill: vec![(1, r), (512, r)],
        decode: vec![(1, r), (512, r)],
        first_ms: 0.0,
    };
    Crossover {
        cpu: speeds("cpu", 100.0),
        gpu: speeds("second", 1000.0),
        handover_bytes_per_s: 1e12,
        kv_bytes_per_token: 0,
        cpu_init_during_build_ms: 0.0,
    }
}

/// The background path: `build` runs on another thread (weights, then bind and warm-up);
/// once it finished, a generation through the policy moves to the second model before
/// the prompt's pass. Returns the hybrid's ids and the hybrid (its second model bound).
fn through_background<C: Backend, G: Backend>(
    cpu: Llama<C>,
    build: impl FnOnce() -> antigravity_core::Result<GpuParts<G>> + Send + 'static,
    bind: GpuBind,
    prompt: &[u32],
) -> (Vec<u32>, Hybrid<C, G>)
where
    Llama<G>: Send + 'static,
{
    let opts = HybridOptions {
        crossover: Some(second_is_faster()),
        ..HybridOptions::default()
    };
    let mut h = Hybrid::with_background(cpu, build, bind, opts).unwrap();
    assert!(h.gpu_loading());
    let t = std::time::Instant::now();
    while !h.gpu_build_finished() {
        assert!(
            t.elapsed().as_secs() < 600,
            "the background build did not finish in 10 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.plan(GEN);
    let ids = hybrid_ids(&mut h, prompt);
    assert!(
        h.gpu().is_some(),
        "the finished build was not taken over: {:?}",
        h.note()
    );
    let sw = h.switches();
    assert_eq!(sw.len(), 1, "one move to the faster side: {sw:?}");
    assert_eq!(
        (sw[0].token, sw[0].bytes),
        (0, 0),
        "before the prompt's pass, nothing cached: {sw:?}"
    );
    assert!(h.on_gpu());
    (ids, h)
}

#[test]
fn background_build_warmed_and_taken_over_cpu() {
    // CPU ⇄ CPU-scalar: runs everywhere; every forced-switch run of these models is
    // identical to both alone (`forced_switches_cpu_to_cpu_scalar`), so ids must be equal.
    let prompt = [1u32, 5, 9, 42, 7];
    let bind = GpuBind {
        opts: tiny_opts(400, DType::F32, false),
        policy: EvictConfig::default(),
        warm_tokens: prompt.len(),
    };
    let cpu = tiny(CpuBackend::new(), "tiny-untied", DType::F32, false);
    let build = || {
        Ok(tiny_parts(
            CpuBackend::with_isa(Isa::Scalar).unwrap(),
            "tiny-untied",
            false,
        ))
    };
    let (got, h) = through_background(cpu, build, bind, &prompt);
    let (_h, (want_c, _)) = alone_in(h, false, &prompt);
    // A fresh, never warmed scalar model: the warmed one must give the same ids.
    let mut fresh = tiny(
        CpuBackend::with_isa(Isa::Scalar).unwrap(),
        "tiny-untied",
        DType::F32,
        false,
    );
    let (want_fresh, _) = alone(&mut fresh, &prompt);
    assert_eq!(
        got, want_fresh,
        "hybrid (moved to the warmed model) vs a fresh model alone"
    );
    assert_eq!(got, want_c, "hybrid vs the CPU alone");
}

#[cfg(feature = "opencl")]
#[test]
fn background_build_warmed_and_taken_over_opencl() {
    let prompt = [1u32, 5, 9, 42, 7];
    let Some(probe) = opencl() else { return };
    drop(probe);
    let bind = GpuBind {
        opts: tiny_opts(400, DType::F32, false),
        policy: EvictConfig::default(),
        warm_tokens: prompt.len(),
    };
    let cpu = tiny(CpuBackend::new(), "tiny-untied", DType::F32, false);
    let build = || {
        let be = antigravity_core::opencl::OpenClBackend::new(antigravity_core::opencl::OpenClOptions::from_env())?;
        Ok(tiny_parts(be, "tiny-untied", false))
    };
    let (got, h) = through_background(cpu, build, bind, &prompt);
    let switches = h.switches().to_vec();
    let (h, (want_c, margin_c)) = alone_in(h, false, &prompt);
    // The warmed device model alone, and a fresh one: the warm-up leaves no trace.
    let (_h, (want_g, margin_g)) = alone_in(h, true, &prompt);
    let mut fresh = tiny(opencl().unwrap(), "tiny-untied", DType::F32, false);
    let (want_fresh, _) = alone(&mut fresh, &prompt);
    assert_eq!(want_g, want_fresh, "the warmed device model alone vs a fresh one");
    let c = same_up_to_near_tie(&got, &want_c, &margin_c);
    let g = same_up_to_near_tie(&got, &want_g, &margin_g);
    assert!(
        c.is_ok() || g.is_ok(),
        "background hybrid: vs cpu alone {c:?}; vs opencl alone {g:?}"
    );
    eprintln!(
        "background hybrid cpu → opencl: {} (ids {} the CPU's alone)",
        switches
            .iter()
            .map(|s| format!("{}→{} at {}", s.from, s.to, s.token))
            .collect::<Vec<_>>()
            .join(", "),
        if got == want_c {
            "equal to"
        } else {
            "up to a near-tie of"
        }
    );
}

#[test]
fn switches_under_eviction_cpu_to_cpu_scalar() {
    switches_under_eviction(
        CpuBackend::new,
        || CpuBackend::with_isa(Isa::Scalar).unwrap(),
        "cpu ⇄ cpu-scalar",
    );
}

/// The same on CPU ⇄ OpenCL: where the device shares host memory (PoCL) through the
/// zero-copy cache, so eviction on either side works on the one memory and a switch
/// carries only the positions (and h2o's mass: 4 bytes a slot).
#[cfg(feature = "opencl")]
#[test]
fn switches_under_eviction_cpu_to_opencl() {
    let Some(probe) = opencl() else { return };
    drop(probe);
    switches_under_eviction(CpuBackend::new, || opencl().unwrap(), "cpu ⇄ opencl");
}

fn switches_under_eviction<C: Backend, G: Backend>(first: impl Fn() -> C, second: impl Fn() -> G, label: &str) {
    // A 16-slot cache and 64 generated tokens: the policy evicts at every step from the
    // 12th on; the hand-over carries the slots' positions (after eviction) and, for
    // h2o, their accumulated attention mass.
    let prompt = [1u32, 5, 9, 42, 7];
    let ctx = 16;
    for policy in [KvPolicy::Sinks, KvPolicy::H2o, KvPolicy::Shift] {
        let cfg = EvictConfig {
            policy,
            sinks: 4,
            keep: 2,
            ..EvictConfig::default()
        };
        fn model<B: Backend>(be: B, ctx: usize, cfg: EvictConfig) -> Llama<B> {
            let p = tiny_parts(be, "tiny-untied", false);
            let mut m = Llama::new(p.cfg, p.weights, p.backend, tiny_opts(ctx, DType::F32, false)).unwrap();
            m.set_kv_policy(cfg).unwrap();
            m
        }
        let a = model(first(), ctx, cfg);
        let b = model(second(), ctx, cfg);
        let mut h = Hybrid::with_both(a, b, HybridOptions::default()).unwrap();
        h.set_kv_policy(cfg).unwrap();
        let zero_copy = h.zero_copy();
        // `alone_in` runs one pass at a time, as the hybrid does under a policy.
        let (h2, (want_c, margin_c)) = alone_in(h, false, &prompt);
        let evicted = h2.kv_evicted();
        assert!(evicted > 0, "{label} {policy:?}: the cache should have evicted");
        let (mut h, (want_g, margin_g)) = alone_in(h2, true, &prompt);
        assert!(
            h.kv_evicted() > evicted,
            "{label} {policy:?}: the second side should have evicted"
        );
        for at in [
            vec![8],
            vec![20],
            vec![0, 30],
            vec![3, 11, 17, 25, 40, 41, 50],
            (1..GEN).collect(),
        ] {
            h = set_switches(h, at.clone());
            let got = hybrid_ids(&mut h, &prompt);
            assert_eq!(h.switches().len(), at.len());
            if zero_copy {
                // Only the attention mass travels (h2o), 4 bytes a cached slot.
                for s in h.switches() {
                    let mass_max = if policy == KvPolicy::H2o { ctx as u64 * 4 } else { 0 };
                    assert!(s.bytes <= mass_max, "{label} {policy:?} zero-copy: {s:?}");
                }
            }
            let c = same_up_to_near_tie(&got, &want_c, &margin_c);
            let g = same_up_to_near_tie(&got, &want_g, &margin_g);
            assert!(
                c.is_ok() || g.is_ok(),
                "{label} {policy:?}, switches at {at:?}: vs first alone {c:?}; vs second alone {g:?}"
            );
        }
        eprintln!("{label} {policy:?}: zero-copy {zero_copy}, every switch pattern up to near-ties");
    }
}
