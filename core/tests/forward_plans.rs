//! The forward pass's three plans — fused (nobody watching), traced (the oracle's
//! hidden states) and profiled (per-stage marks) — run the same math: on the CPU, whose
//! fused and whole-block ops are the trait's default compositions, their logits are
//! bit-identical, on every ISA this machine has, over a prefill chunk and decode steps.
//! The tracer sees every stage in order; the profiler gets a balanced mark for every
//! stage of every layer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::dtype::DType;
use antigravity_core::model::{self, Llama, OpKind, Profiler, RunOptions};

const PROMPT: [u32; 5] = [1, 2, 3, 40, 7];
const DECODE: [u32; 3] = [11, 5, 90];

fn tiny(be: CpuBackend, kv_type: Option<DType>) -> Llama<CpuBackend> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/models/tiny-untied");
    let (cfg, w) = model::hf::load(&dir, &be, DType::Q4_0).unwrap();
    let opts = RunOptions {
        ctx: 32,
        max_batch: 4, // the prompt takes two chunks
        all_logits: true,
        kv_type, // None: the default cache (f16 on the CPU)
    };
    Llama::new(cfg, w, be, opts).unwrap()
}

/// Marks as they came: `(op, begin)`.
#[derive(Clone, Default)]
struct Marks(Arc<Mutex<Vec<(OpKind, bool)>>>);

impl Profiler<CpuBackend> for Marks {
    fn begin(&mut self, _: &mut CpuBackend, op: OpKind) {
        self.0.lock().unwrap().push((op, true));
    }
    fn end(&mut self, _: &mut CpuBackend, op: OpKind) {
        self.0.lock().unwrap().push((op, false));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Run {
    Plain,
    Traced,
    Profiled,
}

/// Logits of the prompt (every position) and of each decode step, under `run`; the
/// stage names a tracer saw.
fn logits(isa: Isa, run: Run, marks: &Marks) -> (Vec<Vec<f32>>, Vec<String>) {
    logits_kv(isa, run, marks, None)
}

fn logits_kv(isa: Isa, run: Run, marks: &Marks, kv: Option<DType>) -> (Vec<Vec<f32>>, Vec<String>) {
    let mut m = tiny(CpuBackend::with_isa(isa).unwrap(), kv);
    if run == Run::Profiled {
        m.set_profiler(Some(Box::new(marks.clone())));
    }
    let mut stages = Vec::new();
    let mut out = Vec::new();
    for ids in std::iter::once(&PROMPT[..]).chain(DECODE.chunks(1)) {
        let l = if run == Run::Traced {
            let mut t = |stage: &str, data: &[f32]| {
                assert!(data.iter().all(|v| v.is_finite()), "{stage}");
                stages.push(stage.to_string());
            };
            m.forward_traced(ids, Some(&mut t)).unwrap().to_vec()
        } else {
            m.forward(ids).unwrap().to_vec()
        };
        out.push(l);
    }
    (out, stages)
}

#[test]
fn fused_traced_and_profiled_give_the_same_logits() {
    for isa in Isa::ALL {
        if CpuBackend::with_isa(isa).is_none() {
            eprintln!(
                "note: ISA {} not available on this CPU/build; not tested here",
                isa.name()
            );
            continue;
        }
        let marks = Marks::default();
        let (plain, _) = logits(isa, Run::Plain, &marks);
        let (traced, stages) = logits(isa, Run::Traced, &marks);
        let (profiled, _) = logits(isa, Run::Profiled, &marks);
        assert_eq!(plain, traced, "{}: traced vs fused plan", isa.name());
        assert_eq!(plain, profiled, "{}: profiled vs fused plan", isa.name());
        assert_eq!(plain[0].len() % 5, 0, "all_logits: one row per prompt position");

        // The tracer: embed, every block, the final norm — per chunk (2 prompt chunks,
        // then one per decode step).
        let n_layer = stages.iter().filter(|s| s.starts_with("block.")).count() / (2 + DECODE.len());
        assert!(n_layer > 0);
        let mut want = Vec::new();
        for _ in 0..2 + DECODE.len() {
            want.push("embed".to_string());
            want.extend((0..n_layer).map(|l| format!("block.{l}")));
            want.push("final_norm".to_string());
        }
        assert_eq!(stages, want, "{}: traced stages", isa.name());

        // The profiler: balanced marks, each block stage once per layer and chunk.
        let marks = marks.0.lock().unwrap();
        let mut open = None;
        for &(op, begin) in marks.iter() {
            if begin {
                assert_eq!(open, None, "{op:?} begins inside {open:?}");
                open = Some(op);
            } else {
                assert_eq!(open, Some(op), "{op:?} ends without its begin");
                open = None;
            }
        }
        let chunks = 2 + DECODE.len();
        for op in [
            OpKind::MatmulQkv,
            OpKind::Rope,
            OpKind::Attention,
            OpKind::MatmulOut,
            OpKind::MatmulFfn,
        ] {
            let n = marks.iter().filter(|&&(o, b)| o == op && b).count();
            assert_eq!(n, chunks * n_layer, "{}: marks of {op:?}", isa.name());
        }
        for op in [OpKind::Embed, OpKind::Norm, OpKind::Output] {
            let n = marks.iter().filter(|&&(o, b)| o == op && b).count();
            assert_eq!(n, chunks, "{}: marks of {op:?}", isa.name());
        }
    }
}

/// A Q8_0 cache takes another composition (keys rotated in f32 scratch, then stored by
/// `store_rows`): the three plans still give bit-identical logits on every ISA.
#[test]
fn q8_0_cache_plans_give_the_same_logits() {
    for isa in Isa::ALL {
        if CpuBackend::with_isa(isa).is_none() {
            eprintln!(
                "note: ISA {} not available on this CPU/build; not tested here",
                isa.name()
            );
            continue;
        }
        let marks = Marks::default();
        let kv = Some(DType::Q8_0);
        let (plain, _) = logits_kv(isa, Run::Plain, &marks, kv);
        let (traced, _) = logits_kv(isa, Run::Traced, &marks, kv);
        let (profiled, _) = logits_kv(isa, Run::Profiled, &marks, kv);
        assert!(plain.iter().flatten().all(|v| v.is_finite()), "{}", isa.name());
        assert_eq!(plain, traced, "{}: traced vs fused plan (q8_0 cache)", isa.name());
        assert_eq!(plain, profiled, "{}: profiled vs fused plan (q8_0 cache)", isa.name());
    }
}
