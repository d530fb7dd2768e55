//! Timing discipline: warm up, then time N repetitions with `std::time::Instant` and
//! report the median (robust to the occasional preemption on a shared machine). N is
//! chosen from a time budget so that slow and fast kernels both get a steady figure.

use std::time::{Duration, Instant};

/// How long to spend per measured case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Wall time to spend warming up (at least one call).
    pub warmup: Duration,
    /// Wall time to spend on timed repetitions.
    pub measure: Duration,
    pub min_reps: u32,
    pub max_reps: u32,
}

impl Budget {
    pub const FULL: Budget = Budget {
        warmup: Duration::from_millis(50),
        measure: Duration::from_millis(300),
        min_reps: 5,
        max_reps: 1000,
    };
    pub const QUICK: Budget = Budget {
        warmup: Duration::from_millis(10),
        measure: Duration::from_millis(60),
        min_reps: 3,
        max_reps: 200,
    };
}

/// A timed case: the median time of `reps` repetitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub median: Duration,
    pub reps: u32,
}

impl Timing {
    pub fn secs(&self) -> f64 {
        self.median.as_secs_f64()
    }
}

/// Warms `f` up, then times it `reps` times (chosen from the budget) and returns the
/// median. `f` must do the whole unit of work, including any device synchronisation.
pub fn measure<E>(budget: Budget, mut f: impl FnMut() -> Result<(), E>) -> Result<Timing, E> {
    let start = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || start.elapsed() < budget.warmup {
        f()?;
        calls += 1;
    }
    let per_call = start.elapsed() / calls;
    let want = if per_call.is_zero() {
        budget.max_reps
    } else {
        (budget.measure.as_secs_f64() / per_call.as_secs_f64()) as u32
    };
    let reps = want.clamp(budget.min_reps, budget.max_reps);
    let mut times = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(Timing {
        median: median_sorted(&times),
        reps,
    })
}

fn median_sorted(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

/// The `p`-th percentile (0..=100) of `values` by linear interpolation between closest
/// ranks (numpy's default). `None` for an empty slice.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 50.0), Some(5.5));
        assert!((percentile(&v, 90.0).unwrap() - 9.1).abs() < 1e-12);
        assert!((percentile(&v, 99.0).unwrap() - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn measure_counts_reps_within_bounds() {
        let mut n = 0u32;
        let t = measure::<()>(Budget::QUICK, || {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert!(t.reps >= Budget::QUICK.min_reps && t.reps <= Budget::QUICK.max_reps);
        assert!(n > t.reps);
    }
}
