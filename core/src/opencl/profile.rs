//! Kernel profiling ([`OpenClOptions::profiling`](super::OpenClOptions::profiling)): the
//! queue records an event per launch; [`Profiler`] folds them into device time and
//! launch counts per kernel name, and the device's idle time before each kernel (the
//! gap after the previous one ends: launch latency and host round trips, what kernel
//! times leave unexplained). The block kernel's own stage timers are in `block.rs`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use opencl3::event::Event;

use super::launch::cl_err;
use super::OpenClBackend;
use crate::error::Result;

/// Per kernel name: device ns, launches, idle ns before its launches.
#[derive(Default)]
pub(super) struct Profiler {
    /// Events not yet folded.
    pending: RefCell<Vec<(&'static str, Event)>>,
    totals: RefCell<Vec<(&'static str, u64, u32, u64)>>,
    /// End of the last folded kernel (device ns; 0: none yet).
    last_end: Cell<u64>,
}

impl Profiler {
    pub(super) fn push(&self, name: &'static str, ev: Event) {
        self.pending.borrow_mut().push((name, ev));
    }

    /// Folds the pending events (complete: the caller finished the queue).
    pub(super) fn fold(&self) -> Result<()> {
        let mut totals = self.totals.borrow_mut();
        for (name, ev) in self.pending.borrow_mut().drain(..) {
            let start = ev.profiling_command_start().map_err(cl_err("event profiling start"))?;
            let end = ev.profiling_command_end().map_err(cl_err("event profiling end"))?;
            let i = match totals.iter().position(|t| t.0 == name) {
                Some(i) => i,
                None => {
                    totals.push((name, 0, 0, 0));
                    totals.len() - 1
                }
            };
            let t = &mut totals[i];
            t.1 += end.saturating_sub(start);
            t.2 += 1;
            // In-order queue: kernels run in enqueue order; the device idled between the
            // previous kernel's end and this one's start.
            let last = self.last_end.get();
            if last != 0 {
                t.3 += start.saturating_sub(last);
            }
            self.last_end.set(end);
        }
        Ok(())
    }

    fn reset(&self) {
        self.pending.borrow_mut().clear();
        self.totals.borrow_mut().clear();
        self.last_end.set(0);
    }
}

impl OpenClBackend {
    /// Device time per kernel since the last reset: `(kernel name, total ns, launches)`
    /// for every kernel launched at least once, longest first. Waits for the queue.
    /// Empty unless built with [`OpenClOptions::profiling`](super::OpenClOptions::profiling).
    pub fn kernel_times(&self) -> Result<Vec<(String, u64, u32)>> {
        self.q.finish()?;
        let Some(p) = &self.q.prof else { return Ok(Vec::new()) };
        p.fold()?;
        let mut v: Vec<_> = p
            .totals
            .borrow()
            .iter()
            .filter(|t| t.2 > 0)
            .map(|t| (t.0.to_string(), t.1, t.2))
            .collect();
        v.sort_by_key(|t| core::cmp::Reverse(t.1));
        Ok(v)
    }

    /// Zeroes the kernel times (pending events are dropped after the queue finishes).
    pub fn reset_kernel_times(&self) -> Result<()> {
        self.q.finish()?;
        if let Some(p) = &self.q.prof {
            p.reset();
        }
        Ok(())
    }

    /// Device idle time before each kernel since the last reset (profiling only): the gap
    /// between the previous kernel's end and this kernel's start, summed per kernel name —
    /// what the kernel times leave unexplained (launch latency, host round trips).
    pub fn kernel_gaps(&self) -> Result<Vec<(String, u64)>> {
        self.q.finish()?;
        let Some(p) = &self.q.prof else { return Ok(Vec::new()) };
        p.fold()?;
        Ok(p.totals
            .borrow()
            .iter()
            .filter(|t| t.3 > 0)
            .map(|t| (t.0.to_string(), t.3))
            .collect())
    }
}
