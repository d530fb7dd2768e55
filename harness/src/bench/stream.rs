//! A STREAM-like memory bandwidth probe: the ceiling every memory-bound kernel (a
//! matvec over weights, attention over the cache) is judged against.
//!
//! * `read`: sum of a buffer of `u64` (8 independent accumulators, so the loop is bound
//!   by loads, not by an add chain); bytes = buffer size.
//! * `copy`: `dst.copy_from_slice(src)`; bytes = 2 × size (read + write, as STREAM
//!   counts; write-allocate traffic is not counted, as in STREAM).
//!
//! Each is run on 1 thread and on N threads (the buffer split in N contiguous parts,
//! one per scoped thread). Time is the median of several passes after a warm-up pass.

use std::hint::black_box;
use std::time::Instant;

/// Buffer size for the full probe (far beyond any last-level cache).
pub const FULL_BYTES: usize = 256 << 20;
/// Buffer size for `--quick`.
pub const QUICK_BYTES: usize = 64 << 20;

/// One probe result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamResult {
    /// `read` or `copy`.
    pub kind: &'static str,
    pub threads: usize,
    pub bytes: usize,
    pub gb_s: f64,
    pub reps: u32,
}

fn sum_u64(v: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*x);
        }
    }
    acc.iter().chain(tail).fold(0u64, |s, x| s.wrapping_add(*x))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `read` and `copy` with `threads` threads over buffers of `bytes` bytes.
pub fn probe(bytes: usize, threads: usize, reps: u32) -> Vec<StreamResult> {
    let threads = threads.max(1);
    let n = (bytes / 8).max(threads);
    let src: Vec<u64> = (0..n as u64).collect();
    let mut dst = vec![0u64; n];
    let part = n.div_ceil(threads);

    let read_once = |src: &[u64]| {
        std::thread::scope(|s| {
            let hs: Vec<_> = src
                .chunks(part)
                .map(|c| s.spawn(move || sum_u64(black_box(c))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        })
    };
    let copy_once = |src: &[u64], dst: &mut [u64]| {
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(part).zip(src.chunks(part)) {
                s.spawn(move || d.copy_from_slice(black_box(c)));
            }
        });
        black_box(&dst[0]);
    };

    let mut out = Vec::new();
    let reps = reps.max(1);
    let real_bytes = n * 8;
    // read
    black_box(read_once(&src));
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        black_box(read_once(&src));
        times.push(t.elapsed().as_secs_f64());
    }
    out.push(StreamResult {
        kind: "read",
        threads,
        bytes: real_bytes,
        gb_s: real_bytes as f64 / median(times) / 1e9,
        reps,
    });
    // copy
    copy_once(&src, &mut dst);
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        copy_once(&src, &mut dst);
        times.push(t.elapsed().as_secs_f64());
    }
    out.push(StreamResult {
        kind: "copy",
        threads,
        bytes: real_bytes,
        gb_s: 2.0 * real_bytes as f64 / median(times) / 1e9,
        reps,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_is_exact_with_tails() {
        for n in [0usize, 1, 7, 8, 9, 100] {
            let v: Vec<u64> = (0..n as u64).collect();
            assert_eq!(sum_u64(&v), v.iter().sum::<u64>());
        }
    }

    #[test]
    fn small_probe_gives_positive_figures() {
        let r = probe(1 << 20, 2, 2);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| x.gb_s > 0.0 && x.gb_s.is_finite() && x.threads == 2));
    }
}
