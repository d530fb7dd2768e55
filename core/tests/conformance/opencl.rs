//! What only the OpenCL backend has, on every device present: the persistent block
//! kernel (whole layers per launch, forced on here with 1, 2 and too many work-groups),
//! zero-copy import and the copy counters, device discovery, kernel profiling, and the
//! Q4_0 image weight path — each against the scalar CPU or the backend's own per-op
//! path.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use antigravity_core::backend::{HostRegion, Reservation};
use antigravity_core::opencl::{ClMemKind, OpenClBackend};
use antigravity_core::{ops, Backend, BufferKind, DType, Shape, TensorMut, TensorRef};

use super::support::*;
use super::{block, blocks, inputs, Entry, Import, Op, ROWS};

/// A backend on device `p:d` with the persistent block kernel forced to `groups`
/// work-groups, reserved for `max_ctx` positions.
/// `block.cl` is built with int8 activations (`AG_INT8`) or without, as asked, and
/// with the default stage B or, with `wide`, the wide one (`AG_ATTN_WIDE`); `repack`:
/// Q4_0 weights imported through `import_weight` get the block kernel's repacked copy.
#[allow(clippy::too_many_arguments)]
fn persistent(
    p: usize,
    d: usize,
    groups: usize,
    max_ctx: usize,
    n_head: usize,
    ffn: usize,
    int8: bool,
    wide: bool,
    repack: bool,
) -> OpenClBackend {
    let mut o = cl_options(p, d);
    o.persistent_groups = Some(groups);
    o.block_int8 = Some(int8);
    o.block_repack = Some(repack);
    // (off unless asked for here or by ANTIGRAVITY_OPENCL_BLOCK_WIDE=1: the device's
    // default would make every row wide on NVIDIA)
    o.block_wide = Some(wide || o.block_wide == Some(true));
    // (every context takes it here, the one-slot one included)
    o.block_wide_from = Some(1);
    let mut g = OpenClBackend::new(o).unwrap();
    g.reserve(Reservation {
        max_tokens: 1,
        max_row: ffn,
        max_ctx,
        n_head,
    })
    .unwrap();
    g
}

/// Whether device `p:d` is a CPU (PoCL): the wide stage B runs there only when asked for.
fn is_cpu_device(p: usize, d: usize) -> bool {
    antigravity_core::opencl::list_devices()
        .ok()
        .and_then(|all| all.into_iter().find(|x| x.platform_index == p && x.device_index == d))
        .is_some_and(|x| x.is_cpu)
}

/// The block kernel with int8 activations against the per-op kernels (f32 activations).
const INT8_VS_F32: Limit = nmse(
    5e-4,
    "AG_INT8 rounds each staged vector to Q8_0 blocks as the CPU does (relative noise \
     ≈ (amax/127)²/12 / E[x²] ≈ 3e-5 per matmul input, the Q8_ACT argument); a wrong nibble or \
     word order gives ~1",
);
/// The same over five layers (each layer's error feeds the next layer's input).
const INT8_VS_F32_LAYERS: Limit = nmse(
    2e-3,
    "INT8_VS_F32's rounding in 5 layers × 5 matmul inputs, compounding through the residual \
     stream; a wrong layout gives ~1",
);

/// The whole-block decode kernel (`llama_blocks_f32` with one layer, persistent grid)
/// against the composition of per-op kernels on the same device (tight: only f32
/// summation order and the merge of attention chunks differ) and against the scalar CPU
/// (its Q8 activations). The `LlamaBlock` row's mixed dtypes, both RoPE conventions,
/// GQA groups of 2 and 3, MHA, 8 heads on one KV head; contexts of 1, 6 and 301 slots
/// (one and ten 32-slot chunks); 1 and 2 work-groups (a barrier with one group is
/// trivial; with two, work-groups wait for each other, on PoCL's threads too), then a
/// grid of 16 groups per compute unit, which cannot all run at once: a clean error,
/// then the per-op result. Each head configuration also runs with the wide stage B (a
/// KV head's GQA group per unit, online softmax over tiles, the last unit merging).
#[test]
fn block_kernel_matches_composition() {
    // Every LlamaBlock row's dtype mix: Q4_0/Q4_1/Q8_0/F16/BF16/F32, then the types of a
    // Q4_K_M file (Q4_K, Q5_K, Q6_K, Q5_0, Q5_1).
    let rows: Vec<_> = ROWS.iter().filter(|r| r.op == Op::LlamaBlock).collect();
    let (_, _, ffn, cap) = super::BLOCK;
    let mut c = scalar_cpu();
    for (p, d, dev) in cl_devices() {
        let name = format!("opencl[{p}:{d}]+block");
        // On a CPU device (PoCL) the wide stage B's build takes LLVM over half an hour
        // on one core (measured here), longer than the whole CI run may: it runs there
        // only when asked for, with ANTIGRAVITY_OPENCL_BLOCK_WIDE=1 (then for every row).
        let cpu_device = is_cpu_device(p, d);
        if cpu_device {
            println!(
                "SKIP {name}+wide: the wide stage B on a CPU device only with ANTIGRAVITY_OPENCL_BLOCK_WIDE=1 \
                 (PoCL compiles it for over 30 minutes; then every row runs it)"
            );
        }
        // f32 activations (every grid), then int8 ones (AG_INT8, 2 work-groups: its
        // grid handling is the same code), then the wide stage B with f32 and with int8
        // activations, on 2 work-groups and on one a compute unit (the grid a GPU runs:
        // there a KV head's slots are split over several units and the last one merges
        // them — with 2 groups every KV head but MHA's is one unit).
        let cus = persistent(p, d, 2, cap, 4, ffn, false, false, false)
            .device_info()
            .compute_units
            .max(1) as usize;
        // Then, for 4/2 and 3/3 heads, every matrix Q4_0 imported as a model loader does,
        // with the block kernel's repacked copy (`block_repack`; with 3 heads Wo's rows
        // are 192 wide, 108 bytes, padded to 112 in the copy), f32 and int8 activations.
        for (ci, (n_head, n_kv), int8, wide_b, repack) in [(4usize, 2usize), (6, 2), (3, 3), (8, 1)]
            .into_iter()
            .enumerate()
            .flat_map(|(ci, h)| {
                let mut v = vec![
                    (ci, h, false, false, false),
                    (ci, h, true, false, false),
                    (ci, h, false, true, false),
                    (ci, h, true, true, false),
                ];
                if ci == 0 || ci == 2 {
                    v.extend([(ci, h, false, false, true), (ci, h, true, false, true)]);
                }
                v
            })
            .filter(|&(_, _, _, wide_b, _)| !(wide_b && cpu_device))
        {
            // Every grid for the first configuration, 2 work-groups for the others; 0
            // stands for 16 per compute unit (more than any device runs at once).
            let grids: Vec<usize> = match (ci, int8, wide_b, repack) {
                (0, false, false, false) => vec![1, 2, 0],
                (_, _, true, _) if cus > 2 => vec![2, cus],
                _ => vec![2],
            };
            let name = format!(
                "{name}{}{}{}",
                if int8 { "+int8" } else { "" },
                if wide_b { "+wide" } else { "" },
                if repack { "+repack" } else { "" }
            );
            // (dtypes, limit against the scalar CPU)
            const ALL_Q4_0: [DType; 7] = [DType::Q4_0; 7];
            let cases: Vec<(&[DType], Limit)> = if repack {
                vec![(&ALL_Q4_0, rows[0].vs_scalar[1])]
            } else {
                rows.iter().map(|r| (r.dtypes, r.vs_scalar[1])).collect()
            };
            for groups in grids {
                let oversubscribed = groups == 0;
                let mut g = persistent(p, d, groups.max(1), cap, n_head, ffn, int8, wide_b, repack);
                if oversubscribed {
                    g = persistent(p, d, 16 * cus, cap, n_head, ffn, int8, wide_b, repack);
                }
                assert!(g.persistent_block().is_some(), "{dev}: the forced block path is off");
                if wide_b {
                    // (a GQA group whose tiles do not fit the local memory left takes the
                    // other stage B: 8 heads a KV head on a 48 KiB device)
                    let took = g.block_attn_wide(n_head, n_kv, super::BLOCK.1, 1);
                    eprintln!(
                        "{name:<22} {n_head}/{n_kv} heads, {groups} groups: {} stage B",
                        if took {
                            "the wide"
                        } else {
                            "the default (no room for the wide)"
                        }
                    );
                    assert!(
                        took || n_head / n_kv > 4,
                        "{name}: the wide stage B should take {n_head}/{n_kv} heads"
                    );
                }
                for ((style, n_past), ri) in [(0, 0), (1, 5), (0, 300)]
                    .into_iter()
                    .flat_map(|c| (0..cases.len()).map(move |r| (c, r)))
                {
                    let (dtypes, scalar_lim) = cases[ri];
                    let mut inp = inputs(Op::LlamaBlock, DType::F32, dtypes, &[n_head, n_kv, n_past, style], 720);
                    if repack {
                        inp.import = Import::Loader;
                    }
                    let cpu = block(&mut c, &inp, Entry::Composition).unwrap();
                    let repacked = g.repack_stats().row_tensors;
                    let comp = block(&mut g, &inp, Entry::Composition).unwrap();
                    if repack {
                        assert_eq!(
                            g.repack_stats().row_tensors - repacked,
                            7,
                            "{name}: the seven Q4_0 matrices should have been repacked"
                        );
                    }
                    if oversubscribed && n_past == 0 && ri == 0 {
                        let t = std::time::Instant::now();
                        let e = block(&mut g, &inp, Entry::Op).expect_err("an unrunnable grid must fail");
                        eprintln!("{name:<16} oversubscribed grid: error after {:.2?}: {e}", t.elapsed());
                        assert!(e.to_string().contains("grid barrier"), "{e}");
                    }
                    let launched = g.block_launches(DType::F32);
                    let fused = block(&mut g, &inp, Entry::Op).unwrap();
                    // (the op falls back to the composition where the kernel does not
                    // apply: it must have run here, except on the unrunnable grid)
                    assert_eq!(
                        g.block_launches(DType::F32) - launched,
                        u64::from(!oversubscribed),
                        "{name} {n_head}/{n_kv} heads: the block kernel did not run"
                    );
                    let mix = format!("{}", dtypes[0]);
                    let case = if oversubscribed {
                        format!("{mix}.. 16/CU (fell back) style {style} n_past {n_past}")
                    } else {
                        format!("{mix}.. {n_head}/{n_kv} heads, {groups} groups, style {style} n_past {n_past}")
                    };
                    for i in 0..3 {
                        let what = fused[i].0;
                        let lim = if int8 {
                            INT8_VS_F32
                        } else {
                            nmse(
                                1e-10,
                                "the merge of attention chunks and the staged-vector sums reorder f32 additions; \
                                 rsqrt vs 1/sqrt in the norm (≤ 2 ulp): NMSE ~1e-13",
                            )
                        };
                        check(
                            &name,
                            "llama_block",
                            &format!("{case} {what} vs per-op"),
                            &fused[i].1,
                            &wide(&comp[i].1),
                            &lim,
                        );
                        let lim = scalar_lim;
                        check(
                            &name,
                            "llama_block",
                            &format!("{case} {what} vs scalar"),
                            &fused[i].1,
                            &wide(&cpu[i].1),
                            &lim,
                        );
                    }
                }
            }
        }
    }
}

/// All layers through `llama_blocks` with the persistent kernel (5 layers: one full
/// launch and a partial one when 4 fit, more launches when fewer do), run after a first
/// token that sets every argument of the per-group kernels, against one composed block
/// per layer on the same device. Each layer has its own weights (dtypes rotating through
/// every weight type) and cache.
#[test]
fn block_kernel_all_layers_match_per_layer() {
    let dtypes = ROWS.iter().find(|r| r.op == Op::LlamaBlocks).unwrap().dtypes;
    let (_, n_head, n_kv, hd, ffn, cap) = super::BLOCKS;
    let runs = cl_devices().into_iter().flat_map(|(p, d, dev)| {
        // (the wide stage B not on a CPU device: see block_kernel_matches_composition)
        let cpu_device = is_cpu_device(p, d);
        let cus = if cpu_device {
            2
        } else {
            persistent(p, d, 2, cap, n_head, ffn, false, false, false)
                .device_info()
                .compute_units
                .max(1) as usize
        };
        // 2 work-groups; with the wide stage B also one a compute unit (its 71 slots
        // then split into 3 units a KV head, merged by the last)
        let mut v = vec![
            (p, d, dev.clone(), 2, false, false),
            (p, d, dev.clone(), 2, true, false),
        ];
        if !cpu_device {
            for groups in [2, cus] {
                v.push((p, d, dev.clone(), groups, false, true));
                v.push((p, d, dev.clone(), groups, true, true));
            }
        }
        v
    });
    for (p, d, dev, groups, int8, wide_b) in runs {
        let mut g = persistent(p, d, groups, cap, n_head, ffn, int8, wide_b, false);
        let Some((groups, lpl)) = g.persistent_block() else {
            panic!("the persistent block path is off on {dev}");
        };
        let name = format!(
            "opencl[{p}:{d}]+block{}{}",
            if int8 { "+int8" } else { "" },
            if wide_b { "+wide" } else { "" }
        );
        if wide_b {
            assert!(
                g.block_attn_wide(n_head, n_kv, hd, 1),
                "{name}: the wide stage B should take these shapes"
            );
        }
        eprintln!("{name:<16} all layers: {groups} work-groups, {lpl} layers per launch");
        let inp = inputs(Op::LlamaBlocks, DType::F32, dtypes, &[5, 70], 900);
        let fused = blocks(&mut g, &inp, Entry::OpAfterWarmup).unwrap();
        let comp = blocks(&mut g, &inp, Entry::Composition).unwrap();
        for (i, (f, c)) in fused.iter().zip(&comp).enumerate() {
            let what = if i == 0 {
                "x".to_string()
            } else {
                format!("layer {} {}", (i - 1) / 2, f.0)
            };
            let lim = if int8 {
                INT8_VS_F32_LAYERS
            } else {
                nmse(1e-9, "as block_kernel_matches_composition, compounded over 5 layers")
            };
            check(
                &name,
                "llama_blocks",
                &format!("5 layers {what} vs per-op"),
                &f.1,
                &wide(&c.1),
                &lim,
            );
        }
    }
}

// --- memory ----------------------------------------------------------------------------

/// Host bytes that can change after import (atomics: shared mutation without UB).
struct Cells(Vec<AtomicU8>);
impl AsRef<[u8]> for Cells {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: AtomicU8 has u8's size and alignment; the slice is only read while no
        // store happens (the test stores between uses, single-threaded).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len()) }
    }
}

/// A unified-memory device imports host bytes without copying (kernels then see later
/// changes of those bytes); a discrete one copies once, counted. An imported weight is
/// read-only.
#[test]
fn import_is_zero_copy_on_unified_memory() {
    for (name, mut g) in opencl_targets() {
        let g = &mut *g;
        let unified = g.device_info().unified_memory;
        let vals = randn(64 * 576, 81, 1.0);
        let mut raw = vec![0u8; 32];
        raw.extend_from_slice(bytemuck::cast_slice(&vals));
        let cells = Arc::new(Cells(raw.iter().map(|&b| AtomicU8::new(b)).collect()));
        let before = g.copied_bytes();
        let w = g.import_host(HostRegion::new(cells.clone())).unwrap();
        let copied = g.copied_bytes().import - before.import;
        eprintln!(
            "{name:<16} import {} bytes (unified memory {unified}): {copied} bytes copied, kind {:?}",
            raw.len(),
            w.kind()
        );
        if unified {
            assert_eq!(copied, 0, "a unified-memory device must import without copying");
            assert_eq!(w.kind(), ClMemKind::HostZeroCopy);
        } else {
            assert_eq!(copied, raw.len() as u64, "a discrete device copies once, counted");
            assert_eq!(w.kind(), ClMemKind::HostCopied);
        }

        // The kernels read the host bytes in place: change row 3 after the import and
        // get_rows sees the new values (only on the zero-copy path).
        let (row, new_val) = (3, 42.5f32);
        for (i, b) in new_val.to_le_bytes().iter().cycle().take(576 * 4).enumerate() {
            cells.0[32 + row * 576 * 4 + i].store(*b, Ordering::SeqCst);
        }
        let mut o = Act::zeros(g, Shape::d2(1, 576));
        let table = TensorRef::new(&w, 32, DType::F32, Shape::d2(64, 576));
        ops::get_rows(g, table, &[row as u32], o.m()).unwrap();
        let got = o.read(g);
        let expect = if w.kind() == ClMemKind::HostZeroCopy {
            new_val
        } else {
            vals[row * 576]
        };
        assert!(got.iter().all(|&v| v == got[0]) || !unified);
        assert_eq!(got[0], expect, "get_rows read {} (zero-copy: {unified})", got[0]);

        // Writing into an imported (read-only) weight is refused.
        let mut w = w;
        let y = TensorMut::new(&mut w, 32, DType::F32, Shape::d2(1, 576));
        assert!(ops::add(g, y, o.r()).is_err());
    }
}

#[test]
fn copy_counters_count_uploads_and_downloads() {
    for (_, g) in opencl_targets() {
        let before = g.copied_bytes();
        let mut b = g.alloc(1000, BufferKind::Shared).unwrap();
        g.upload(&mut b, 8, &[1u8; 100]).unwrap();
        let mut back = [0u8; 110];
        g.download(&b, 0, &mut back).unwrap();
        assert_eq!(&back[..8], &[0u8; 8], "alloc zero-fills");
        assert_eq!(&back[8..108], &[1u8; 100]);
        let after = g.copied_bytes();
        assert_eq!(after.upload - before.upload, 100);
        assert_eq!(after.download - before.download, 110);
        assert!(
            g.upload(&mut b, 950, &[0u8; 100]).is_err(),
            "out-of-bounds upload is refused"
        );
    }
}

#[test]
fn concurrent_first_discovery_sees_every_device() {
    // PoCL returns empty device lists to concurrent first-time callers; our discovery
    // lock serializes them, so every thread must see the same devices.
    let lists: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| antigravity_core::opencl::list_devices().map(|l| l.len()).unwrap_or(0)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if lists.iter().all(|&n| n == 0) {
        skip("no OpenCL device to discover");
        return;
    }
    assert!(lists.iter().all(|&n| n == lists[0]), "device counts differ: {lists:?}");
}

/// Kernel profiling names and counts launches: softmax, the split-context attention
/// (attention + combine), and the tiled prefill vs the decode matmul kernels.
#[test]
fn profiling_accumulates_kernel_times() {
    for (p, d, _) in cl_devices() {
        let mut o = cl_options(p, d);
        o.profiling = true;
        let mut g = OpenClBackend::new(o).unwrap();
        let mut x = Act::new(&g, &randn(4 * 300, 91, 1.0), Shape::d2(4, 300));
        for _ in 0..3 {
            ops::softmax(&mut g, x.m()).unwrap();
        }
        g.synchronize().unwrap();
        let t = g.kernel_times().unwrap();
        eprintln!("profile    {t:?}");
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].0.as_str(), t[0].2), ("softmax_f32", 3));
        g.reset_kernel_times().unwrap();

        // A long-context decode step takes the split-context path (attention + combine).
        // (Scratch for one token: the 64-token matmul below then runs without split-K.)
        g.reserve(Reservation {
            max_tokens: 1,
            max_row: 576,
            max_ctx: 1024,
            n_head: 9,
        })
        .unwrap();
        let (cap, hd) = (1024, 64);
        let q = Act::new(&g, &randn(9 * hd, 92, 1.0), Shape::d3(1, 9, hd));
        let k = Act::new(&g, &randn(cap * 3 * hd, 93, 1.0), Shape::d3(cap, 3, hd));
        let v = Act::new(&g, &randn(cap * 3 * hd, 94, 1.0), Shape::d3(cap, 3, hd));
        let mut out = Act::zeros(&g, Shape::d3(1, 9, hd));
        let ap = super::attn_params(9, 3, hd, 999);
        ops::attention(&mut g, q.r(), k.r(), v.r(), ap, out.m()).unwrap();
        let names: Vec<String> = g.kernel_times().unwrap().into_iter().map(|t| t.0).collect();
        eprintln!("profile    split attention: {names:?}");
        assert!(names.iter().any(|n| n == "attention_combine_f32"), "{names:?}");

        // Prefill batches take the tiled mul_mm kernel, decode the mul_mv one.
        g.reset_kernel_times().unwrap();
        let w = host_weight(DType::Q4_1, 1536, 576, 95, 0.5).import(&g, Import::Host);
        for n_tok in [1, 64] {
            let x = Act::new(&g, &randn(n_tok * 576, 96, 1.0), Shape::d2(n_tok, 576));
            let mut y = Act::zeros(&g, Shape::d2(n_tok, 1536));
            ops::matmul(&mut g, w.r(), x.r(), y.m()).unwrap();
        }
        let t = g.kernel_times().unwrap();
        eprintln!("profile    matmul 1536x576 q4_1, 1 and 64 tokens: {t:?}");
        let mut names: Vec<&str> = t.iter().map(|t| t.0.as_str()).collect();
        names.sort();
        assert_eq!(names, ["mul_mm_q4_1_f32", "mul_mv_q4_1_f32"]);
        g.reset_kernel_times().unwrap();
        assert!(g.kernel_times().unwrap().is_empty());
    }
}

// --- the image weight path (Q4_0 repacked into image1d_buffer planes) -------------------

/// Device bytes the image path's layout implies for a `[rows, cols]` Q4_0 matrix: a
/// 16-byte texel of nibbles per block, plus the f16 scales four to an 8-byte texel.
fn image_plane_bytes(rows: usize, cols: usize) -> usize {
    let blocks = rows * (cols / 32);
    blocks * 16 + blocks.div_ceil(4) * 8
}

/// Backends on every device with the image path forced on (and profiling, to see which
/// kernel ran). A device without `image1d_buffer` support is skipped, saying so; a
/// device that has it must run the path (a failure here, not a skip).
fn image_backends(max_texels: Option<u64>) -> Vec<(String, OpenClBackend)> {
    let mut v = Vec::new();
    for (p, d, dev) in cl_devices() {
        let mut o = cl_options(p, d);
        o.images = Some(true);
        o.image_max_texels = max_texels;
        // (the image path's bytes alone: no block-kernel copy beside them, which NVIDIA
        // makes by default)
        o.block_repack = Some(false);
        o.profiling = true;
        let mut g = OpenClBackend::new(o).unwrap();
        if !g.device_info().image1d_buffer {
            skip(&format!(
                "{dev} has no image1d_buffer support: image path not tested there"
            ));
            continue;
        }
        assert!(
            g.image_path_on(),
            "image1d_buffer device refused the forced image path (see the log line)"
        );
        g.reserve(RESERVATION).unwrap();
        v.push((format!("opencl[{p}:{d}]+img"), g));
    }
    v
}

/// A Q4_0 weight as a model loader imports it (`import_weight` of a region holding
/// exactly the tensor) and the same bytes imported plainly (the buffer kernel's copy).
struct ImgWeight {
    host: HostWeight,
    img: DevWeight<OpenClBackend>,
    plain: DevWeight<OpenClBackend>,
}

fn image_weight(g: &OpenClBackend, rows: usize, cols: usize, seed: u64) -> ImgWeight {
    let host = host_weight(DType::Q4_0, rows, cols, seed, 0.5);
    ImgWeight {
        img: host.import(g, Import::Loader),
        plain: host.import(g, Import::Host),
        host,
    }
}

/// Runs `y = x·wᵀ` (or `y += x·wᵀ` on a random y) with the image kernel and checks it
/// against the scalar CPU, against f64 of the dequantized weights, and against the
/// buffer kernel on the same device; each kernel must run once.
fn run_image_matmul(
    name: &str,
    c: &mut antigravity_core::cpu::CpuBackend,
    g: &mut OpenClBackend,
    iw: &ImgWeight,
    n_tok: usize,
    acc: bool,
    seed: u64,
) {
    let (n_out, n_in) = (iw.host.shape.dims()[0], iw.host.shape.dims()[1]);
    let xv = randn(n_tok * n_in, 3000 + seed, 1.0);
    let y0 = if acc {
        randn(n_tok * n_out, 4000 + seed, 1.0)
    } else {
        vec![0.0; n_tok * n_out]
    };
    let sh = Shape::d2(n_tok, n_out);
    let before = g.kernel_times().unwrap();
    let launches = |t: &[(String, u64, u32)], k: &str| t.iter().find(|e| e.0 == k).map_or(0, |e| e.2);
    let mut outs = Vec::new();
    for w in [iw.img.r(), iw.plain.r()] {
        let x = Act::new(g, &xv, Shape::d2(n_tok, n_in));
        let mut y = Act::new(g, &y0, sh);
        let mut tmp = Act::zeros(g, sh);
        if acc {
            ops::matmul_add(g, w, x.r(), tmp.m(), y.m()).unwrap();
        } else {
            ops::matmul(g, w, x.r(), y.m()).unwrap();
        }
        outs.push(y.read(g));
    }
    let after = g.kernel_times().unwrap();
    for k in ["mul_mv_q4_0_img_f32", "mul_mv_q4_0_f32"] {
        assert_eq!(
            launches(&after, k) - launches(&before, k),
            1,
            "{k} must run once (the image weight, then the plain one)"
        );
    }
    let cw = iw.host.import(c, Import::Host);
    let x = Act::new(c, &xv, Shape::d2(n_tok, n_in));
    let mut y = Act::new(c, &y0, sh);
    let mut tmp = Act::zeros(c, sh);
    if acc {
        ops::matmul_add(c, cw.r(), x.r(), tmp.m(), y.m()).unwrap();
    } else {
        ops::matmul(c, cw.r(), x.r(), y.m()).unwrap();
    }
    let want_cpu = y.read(c);
    let mut exact: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
    for t in 0..n_tok {
        for o in 0..n_out {
            let wr = &iw.host.deq[o * n_in..(o + 1) * n_in];
            exact[t * n_out + o] += wr
                .iter()
                .zip(&xv[t * n_in..])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>();
        }
    }
    let row = |op| ROWS.iter().find(|r| r.op == op).unwrap();
    let case = format!("Q4_0 img {n_out}x{n_in} tok {n_tok}{}", if acc { " +=" } else { "" });
    let q = row(Op::Matmul(Import::Loader));
    check(
        name,
        "matmul",
        &format!("{case} vs scalar"),
        &outs[0],
        &wide(&want_cpu),
        &q.vs_scalar[1],
    );
    check(
        name,
        "matmul",
        &format!("{case} vs f64"),
        &outs[0],
        &exact,
        &q.vs_f64.unwrap()[1],
    );
    let lim = nmse(
        1e-10,
        "the image and buffer kernels: the same f32 arithmetic, summation order only",
    );
    check(
        name,
        "matmul",
        &format!("{case} vs buffer kernel"),
        &outs[0],
        &wide(&outs[1]),
        &lim,
    );
}

/// The image path forced on, over SmolLM2's matrices (and its 49152 × 576 output as if
/// it were Q4_0) and odd sizes — 13 rows (not a multiple of any rows-per-group), 1 row,
/// K = 32 (one block a row) — with 1 to 7 tokens and the accumulating form; each weight
/// reports exactly the extra bytes its layout implies, counted as imported bytes.
#[test]
fn image_q4_0_matmul_matches_cpu() {
    let mut c = scalar_cpu();
    for (name, mut g) in image_backends(None) {
        let g = &mut g;
        let unified = g.device_info().unified_memory;
        let shapes: [(usize, usize, &[usize]); 9] = [
            (576, 576, &[1, 5]),  // q / o projections
            (192, 576, &[1, 3]),  // k / v
            (1536, 576, &[1, 4]), // gate / up
            (576, 1536, &[1, 7]), // down
            (49152, 576, &[1]),   // the output projection, were it Q4_0
            (13, 224, &[1, 5]),   // rows not a multiple of the group's rows
            (1, 576, &[1, 2]),    // one row
            (7, 32, &[1, 6]),     // K = 32: one block a row
            (1, 32, &[1]),
        ];
        let mut extra = 0u64;
        for (si, &(n_out, n_in, toks)) in shapes.iter().enumerate() {
            let before = (g.copied_bytes().import, g.repack_stats());
            let iw = image_weight(g, n_out, n_in, 700 + si as u64);
            let bytes = image_plane_bytes(n_out, n_in);
            let st = g.repack_stats();
            eprintln!(
                "{name:<16} repack Q4_0 {n_out}x{n_in}: {} extra bytes (tensor {}), {:.3} ms so far",
                iw.img.buf.repacked_bytes(),
                n_out * DType::Q4_0.row_bytes(n_in).unwrap(),
                st.repack_ns as f64 / 1e6
            );
            assert_eq!(
                iw.img.buf.repacked_bytes(),
                bytes,
                "{n_out}x{n_in}: extra bytes of the layout"
            );
            assert_eq!(iw.plain.buf.repacked_bytes(), 0);
            assert_eq!(st.tensors, before.1.tensors + 1);
            assert_eq!(st.extra_bytes, before.1.extra_bytes + bytes as u64);
            assert!(st.repack_ns > before.1.repack_ns, "repack time is measured");
            // Imported bytes: the planes, plus (discrete devices) the tensor copied for
            // each of the two imports.
            let tensor = (n_out * DType::Q4_0.row_bytes(n_in).unwrap()) as u64;
            let copied = g.copied_bytes().import - before.0;
            let discrete = if unified { 0 } else { tensor + (2 + tensor) };
            assert_eq!(copied, bytes as u64 + discrete, "{n_out}x{n_in}: counted import bytes");
            extra += bytes as u64;
            for (ti, &n_tok) in toks.iter().enumerate() {
                run_image_matmul(&name, &mut c, g, &iw, n_tok, false, (si * 10 + ti) as u64);
            }
            run_image_matmul(&name, &mut c, g, &iw, toks[toks.len() - 1], true, si as u64 + 90);
        }
        assert_eq!(g.repack_stats().extra_bytes, extra);
        assert_eq!(g.repack_stats().kept_on_buffer, 0);
        assert!(g.isa().starts_with("cl1.2+img"), "{}", g.isa());
    }
}

/// Where the image path must not apply: a matrix over the image size limit stays on the
/// buffer kernel (no planes, counted in `kept_on_buffer`, still correct); other dtypes,
/// views that are not the whole imported tensor, and the default options on a non-Adreno
/// device take the buffer kernels and copy nothing extra.
#[test]
fn image_path_limits_and_fallbacks() {
    let mut c = scalar_cpu();
    // 100 texels: a 13 × 224 matrix (91 blocks) fits, 576 × 576 (10 368) does not.
    for (name, mut g) in image_backends(Some(100)) {
        let g = &mut g;
        let small = image_weight(g, 13, 224, 801);
        assert_eq!(small.img.buf.repacked_bytes(), image_plane_bytes(13, 224));
        run_image_matmul(&name, &mut c, g, &small, 3, false, 1);

        let big = host_weight(DType::Q4_0, 576, 576, 802, 0.5);
        let big_cl = big.import(g, Import::Loader);
        assert_eq!(big_cl.buf.repacked_bytes(), 0, "over the texel limit: no planes");
        let st = g.repack_stats();
        assert_eq!((st.tensors, st.kept_on_buffer), (1, 1));
        assert_eq!(st.extra_bytes, image_plane_bytes(13, 224) as u64);
        g.reset_kernel_times().unwrap();
        let xv = randn(576, 803, 1.0);
        let x = Act::new(g, &xv, Shape::d2(1, 576));
        let mut y = Act::zeros(g, Shape::d2(1, 576));
        ops::matmul(g, big_cl.r(), x.r(), y.m()).unwrap();
        let t = g.kernel_times().unwrap();
        assert!(t.iter().all(|e| e.0 != "mul_mv_q4_0_img_f32"), "{t:?}");
        let exact = super::mm(&big.deq, &wide(&xv), 576, 576, 1);
        let lim = ROWS
            .iter()
            .find(|r| r.op == Op::Matmul(Import::Loader))
            .unwrap()
            .vs_f64
            .unwrap()[1];
        check(
            &name,
            "matmul",
            "Q4_0 576x576 over the texel limit (buffer kernel) vs f64",
            &y.read(g),
            &exact,
            &lim,
        );

        // Another dtype through import_weight: nothing repacked.
        let before = g.copied_bytes().import;
        let region = HostRegion::new(Arc::new(vec![0u8; 64 * DType::Q8_0.row_bytes(576).unwrap()]));
        let q8_cl = g.import_weight(region, DType::Q8_0, Shape::d2(64, 576)).unwrap();
        assert_eq!(q8_cl.repacked_bytes(), 0);
        assert_eq!(g.repack_stats().tensors, 1);
        if g.device_info().unified_memory {
            assert_eq!(
                g.copied_bytes().import,
                before,
                "unified memory: no copy for a non-Q4_0 import"
            );
        }

        // A view of part of a repacked weight (its first 5 rows) takes the buffer kernel.
        g.reset_kernel_times().unwrap();
        let xv = randn(224, 805, 1.0);
        let x = Act::new(g, &xv, Shape::d2(1, 224));
        let mut y = Act::zeros(g, Shape::d2(1, 5));
        let part = TensorRef::new(&small.img.buf, 0, DType::Q4_0, Shape::d2(5, 224));
        ops::matmul(g, part, x.r(), y.m()).unwrap();
        let t = g.kernel_times().unwrap();
        assert!(t.iter().all(|e| e.0 != "mul_mv_q4_0_img_f32"), "{t:?}");
        let exact = super::mm(&small.host.deq[..5 * 224], &wide(&xv), 5, 224, 1);
        check(
            &name,
            "matmul",
            "Q4_0 img weight, 5-row view (buffer kernel) vs f64",
            &y.read(g),
            &exact,
            &lim,
        );
    }

    // Default options: on only for Qualcomm/Adreno GPUs.
    if std::env::var_os("ANTIGRAVITY_OPENCL_IMAGES").is_some() {
        skip("ANTIGRAVITY_OPENCL_IMAGES is set: the default image-path choice is not checked");
        return;
    }
    for (name, d) in opencl_targets() {
        let info = d.device_info();
        let dev = format!("{} {}", info.vendor, info.name).to_lowercase();
        let adreno = !info.is_cpu && (dev.contains("qualcomm") || dev.contains("adreno"));
        assert_eq!(
            d.image_path_on(),
            adreno && info.image1d_buffer,
            "{name}: default image path on {dev}"
        );
        if !adreno {
            let before = d.copied_bytes().import;
            let rb = DType::Q4_0.row_bytes(576).unwrap();
            let region = HostRegion::new(Arc::new(vec![0u8; 64 * rb]));
            let w = d.import_weight(region, DType::Q4_0, Shape::d2(64, 576)).unwrap();
            assert_eq!(w.repacked_bytes(), 0, "default path: no image planes");
            let st = d.repack_stats();
            assert_eq!((st.tensors, st.extra_bytes, st.kept_on_buffer), (0, 0, 0));
            // The block kernel's copy (rowsoa.rs), 64 rows of 18 blocks, 324 bytes a row
            // rounded up to 336, where it is on: by default only on a discrete NVIDIA GPU
            // whose persistent block kernel is on.
            assert_eq!(
                w.block_rows_bytes(),
                if d.block_repack_on() { 64 * 336 } else { 0 },
                "{name}: the block kernel's copy"
            );
            if std::env::var_os("ANTIGRAVITY_OPENCL_BLOCK_REPACK").is_none() {
                let nvidia_discrete = dev.contains("nvidia") && !info.unified_memory;
                if !nvidia_discrete {
                    assert!(
                        !d.block_repack_on(),
                        "{name}: the block kernel's copy is off by default on {dev}"
                    );
                } else if d.persistent_block().is_some() || d.isa().contains("+mm") {
                    assert!(
                        d.block_repack_on(),
                        "{name}: the repacked copy (block kernel, int8 prefill) is on by default on {dev}"
                    );
                }
            }
            let rows = w.block_rows_bytes() as u64;
            if info.unified_memory {
                assert_eq!(
                    d.copied_bytes().import,
                    before + rows,
                    "default path on unified memory: zero copies (but a forced block-kernel copy)"
                );
            } else {
                assert_eq!(
                    d.copied_bytes().import,
                    before + (64 * rb) as u64 + rows,
                    "default path on a discrete device: the tensor once, and the block kernel's copy"
                );
            }
        }
    }
}
