//! A persistent thread pool for the CPU backend, and the tiling that lets tasks write
//! disjoint parts of one output without `unsafe` at the call site.
//!
//! [`ThreadPool::run`]`(n_tasks, f)` calls `f(i)` once for every `i in 0..n_tasks`,
//! spread over the pool's threads (the caller is one of them), and returns when all have
//! finished. Tasks are claimed from a shared atomic counter, so uneven tasks balance.
//!
//! Cost model: decode ops last 10–50 µs, so waking workers must be cheaper than a
//! futex round trip. Workers spin on an epoch counter for a while after each job
//! (`SPIN`), then park on a condvar; `run` only takes the lock to notify when some
//! worker is actually parked. A run allocates nothing: the job is a borrowed
//! `&dyn Fn(usize)` published through an atomic pointer pair.
//!
//! Oversubscribed machines (more runnable threads than cores) are the norm on phones and
//! on shared hosts, so the caller never waits for a worker that has not started: a
//! worker *joins* a job by incrementing `active` while the job's `OPEN` bit is set; the
//! caller, once every task is claimed, clears `OPEN` and waits only for the workers that
//! joined. A worker that wakes late sees `OPEN` clear and goes back to waiting without
//! touching the closure.
//!
//! [`ThreadPool::run_tiles`] cuts a row-major `[rows, cols]` output into a grid of tiles
//! and gives each task its own [`TileMut`] (plus its own chunk of a scratch slice): the
//! only `unsafe` that splitting one `&mut [T]` across threads needs lives here.
//!
//! Without `std` (no threads) the pool is a serial loop with the same API.

use core::marker::PhantomData;
use core::ops::Range;

#[cfg(not(feature = "std"))]
pub use serial::ThreadPool;
#[cfg(feature = "std")]
pub use threaded::ThreadPool;

/// How [`ThreadPool::run_tiles`] cuts a `[rows, cols]` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub rows: usize,
    pub cols: usize,
    /// Rows per tile (≥ 1).
    pub row_tile: usize,
    /// Columns per tile (≥ 1).
    pub col_tile: usize,
}

impl Grid {
    fn row_tiles(&self) -> usize {
        self.rows.div_ceil(self.row_tile)
    }
    fn col_tiles(&self) -> usize {
        self.cols.div_ceil(self.col_tile)
    }
    /// Number of tiles (tasks).
    pub fn n_tiles(&self) -> usize {
        self.row_tiles() * self.col_tiles()
    }
    /// Rows and columns of tile `i` (column tiles vary fastest).
    pub fn tile(&self, i: usize) -> (Range<usize>, Range<usize>) {
        let (rt, ct) = (i / self.col_tiles(), i % self.col_tiles());
        let r0 = rt * self.row_tile;
        let c0 = ct * self.col_tile;
        (
            r0..(r0 + self.row_tile).min(self.rows),
            c0..(c0 + self.col_tile).min(self.cols),
        )
    }
}

/// Exclusive access to one tile of a row-major `[rows, cols]` slice: the rows `rows` ×
/// columns `cols` of it. Created only by [`ThreadPool::run_tiles`], once per tile, so
/// no two `TileMut`s overlap.
pub struct TileMut<'a, T> {
    base: *mut T,
    stride: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    _m: PhantomData<&'a mut [T]>,
}

// SAFETY: a TileMut is an exclusive borrow of disjoint elements (like `&mut [T]`), so it
// may move to another thread when `T` may.
unsafe impl<T: Send> Send for TileMut<'_, T> {}

impl<T> TileMut<'_, T> {
    /// The absolute rows this tile covers.
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }
    /// The absolute columns this tile covers.
    pub fn cols(&self) -> Range<usize> {
        self.cols.clone()
    }
    /// The tile's part of absolute row `r` (columns `self.cols()`).
    pub fn row(&mut self, r: usize) -> &mut [T] {
        assert!(self.rows.contains(&r), "row {r} outside tile {:?}", self.rows);
        // SAFETY: `run_tiles` checked that the whole `[rows, cols]` grid lies inside the
        // slice `base` came from; row `r` of this tile is in range (asserted) and this
        // tile's columns belong to no other tile. The `&mut self` borrow keeps the
        // returned slice unique within this tile.
        unsafe { core::slice::from_raw_parts_mut(self.base.add(r * self.stride + self.cols.start), self.cols.len()) }
    }
}

/// Raw parts of the slices `run_tiles` splits, shared by reference with the workers.
struct Split<T, S> {
    y: *mut T,
    scratch: *mut S,
    per_task: usize,
}
// SAFETY: only used to rebuild disjoint `&mut` views (one per task, see `run_tiles`),
// which is sound to do from any thread when the element types are `Send`.
unsafe impl<T: Send, S: Send> Sync for Split<T, S> {}

/// The tiling step shared by the threaded and serial pools: builds task `i`'s tile and
/// scratch chunk and calls `f` with them.
fn call_tile<T: Send, S: Send>(
    split: &Split<T, S>,
    grid: &Grid,
    i: usize,
    f: &(dyn Fn(TileMut<'_, T>, &mut [S]) + Sync),
) {
    let (rows, cols) = grid.tile(i);
    let tile = TileMut {
        base: split.y,
        stride: grid.cols,
        rows,
        cols,
        _m: PhantomData,
    };
    // SAFETY: `run_tiles` checked `scratch.len() >= n_tiles * per_task`; chunk `i` is
    // given to task `i` only, and every task index is run exactly once.
    let chunk = unsafe { core::slice::from_raw_parts_mut(split.scratch.add(i * split.per_task), split.per_task) };
    f(tile, chunk);
}

/// Shared `run_tiles` body: validates, then runs one task per tile through `run`.
fn run_tiles_with<T: Send, S: Send>(
    run: impl FnOnce(usize, &(dyn Fn(usize) + Sync)),
    y: &mut [T],
    grid: Grid,
    scratch: &mut [S],
    per_task: usize,
    f: &(dyn Fn(TileMut<'_, T>, &mut [S]) + Sync),
) {
    assert!(grid.row_tile > 0 && grid.col_tile > 0, "empty tile in {grid:?}");
    assert!(
        grid.rows.checked_mul(grid.cols).is_some_and(|n| n <= y.len()),
        "grid {grid:?} exceeds output of {} elements",
        y.len()
    );
    let n = grid.n_tiles();
    assert!(
        n.checked_mul(per_task).is_some_and(|s| s <= scratch.len()),
        "scratch of {} < {n} tiles × {per_task}",
        scratch.len()
    );
    let split = Split {
        y: y.as_mut_ptr(),
        scratch: scratch.as_mut_ptr(),
        per_task,
    };
    // `y` and `scratch` stay mutably borrowed until `run` returns, so nothing else
    // touches them while tasks hold their tiles.
    run(n, &|i| call_tile(&split, &grid, i, f));
}

#[cfg(feature = "std")]
mod threaded {
    use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;

    use super::{Grid, TileMut};

    /// Spin iterations a waiting thread makes before it parks / yields (a few tens of
    /// µs: longer than the gaps between a decode step's matmuls, short enough not to
    /// burn a core that another process could use).
    const SPIN: u32 = 1 << 12;
    /// Set in `active` while the current job may be joined.
    const OPEN: usize = 1 << (usize::BITS - 1);

    /// A type-erased `&dyn Fn(usize) + Sync` (a fat pointer, stored as two words).
    type Job = *const (dyn Fn(usize) + Sync);

    struct Shared {
        /// The current job; written by `run` before `OPEN` is set, read by workers only
        /// after joining (see `active`); valid until `run` returns.
        job_data: AtomicPtr<()>,
        job_meta: AtomicPtr<()>,
        n_tasks: AtomicUsize,
        next: AtomicUsize,
        /// Bumped once per job; workers wait for it to change.
        epoch: AtomicUsize,
        /// `OPEN` bit + number of workers that joined the current job and have not left.
        active: AtomicUsize,
        /// Workers parked (or about to park) on `cv`.
        sleepers: AtomicUsize,
        panicked: AtomicBool,
        shutdown: AtomicBool,
        /// Workers that have started running (see `ThreadPool::new`).
        started: AtomicUsize,
        lock: Mutex<()>,
        cv: Condvar,
    }

    /// Persistent worker threads; see the module docs.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
    }

    impl core::fmt::Debug for ThreadPool {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "ThreadPool({} threads)", self.threads())
        }
    }

    fn split_job(f: &(dyn Fn(usize) + Sync)) -> (*mut (), *mut ()) {
        let p: *const (dyn Fn(usize) + Sync + '_) = f;
        // SAFETY: a `*const dyn Trait` is two pointer-sized words (data, vtable); we only
        // reassemble it with `join_job` into the same type. The lifetime is erased here
        // and re-established by `run` (see `worker`).
        unsafe { core::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), (*mut (), *mut ())>(p) }
    }

    fn join_job(d: *mut (), m: *mut ()) -> Job {
        // SAFETY: inverse of `split_job` on the words it produced.
        unsafe { core::mem::transmute::<(*mut (), *mut ()), Job>((d, m)) }
    }

    impl ThreadPool {
        /// A pool of `threads` threads in all (the caller counts as one, so `threads - 1`
        /// workers are spawned; 0 is treated as 1).
        pub fn new(threads: usize) -> ThreadPool {
            let shared = Arc::new(Shared {
                job_data: AtomicPtr::new(core::ptr::null_mut()),
                job_meta: AtomicPtr::new(core::ptr::null_mut()),
                n_tasks: AtomicUsize::new(0),
                next: AtomicUsize::new(0),
                epoch: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                sleepers: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
                shutdown: AtomicBool::new(false),
                started: AtomicUsize::new(0),
                lock: Mutex::new(()),
                cv: Condvar::new(),
            });
            let workers = (1..threads.max(1))
                .map(|i| {
                    let s = shared.clone();
                    std::thread::Builder::new()
                        .name(format!("ag-cpu-{i}"))
                        .spawn(move || worker(&s))
                        .expect("spawn CPU worker thread")
                })
                .collect::<Vec<_>>();
            // Wait until every worker runs: the OS may start a thread late, and std's
            // thread start-up allocates (stack-overflow handler info). That must happen
            // here, at setup, not during a later op (the zero-allocation promise).
            while shared.started.load(Acquire) < workers.len() {
                std::thread::yield_now();
            }
            ThreadPool { shared, workers }
        }

        /// Threads that run tasks (workers + the caller).
        pub fn threads(&self) -> usize {
            self.workers.len() + 1
        }

        /// Runs `f(i)` for every `i in 0..n_tasks` and returns when all calls are done.
        /// A panic in a task is re-raised here after every thread has stopped using `f`.
        pub fn run(&mut self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
            if self.workers.is_empty() || n_tasks <= 1 {
                (0..n_tasks).for_each(f);
                return;
            }
            let s = &*self.shared;
            let (d, m) = split_job(f);
            s.job_data.store(d, Relaxed);
            s.job_meta.store(m, Relaxed);
            s.n_tasks.store(n_tasks, Relaxed);
            s.next.store(0, Relaxed);
            // Opens the job (Release: workers that join see the fields above), then
            // wakes workers waiting on the epoch.
            s.active.fetch_or(OPEN, Release);
            s.epoch.fetch_add(1, SeqCst);
            if s.sleepers.load(SeqCst) > 0 {
                let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.cv.notify_all();
            }
            let caller = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(s, f)));
            // Every task is claimed. Close the job, then wait for the workers that joined
            // it; after that no thread can touch `f`, and it may be dropped.
            s.active.fetch_and(!OPEN, AcqRel);
            let mut spins = 0u32;
            while s.active.load(Acquire) != 0 {
                if spins < SPIN {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if let Err(p) = caller {
                std::panic::resume_unwind(p);
            }
            if s.panicked.swap(false, Relaxed) {
                panic!("a CPU worker task panicked");
            }
        }

        /// Splits `y` (row-major `[grid.rows, grid.cols]`) into `grid`'s tiles and runs
        /// `f(tile, scratch_chunk)` once per tile, in parallel; task `i` gets
        /// `scratch[i * per_task..][..per_task]`. Panics when the grid does not fit `y`
        /// or the scratch is too short.
        pub fn run_tiles<T: Send, S: Send>(
            &mut self,
            y: &mut [T],
            grid: Grid,
            scratch: &mut [S],
            per_task: usize,
            f: &(dyn Fn(TileMut<'_, T>, &mut [S]) + Sync),
        ) {
            super::run_tiles_with(|n, g| self.run(n, g), y, grid, scratch, per_task, f)
        }
    }

    /// Claims and runs tasks of the current job until none are left.
    fn work(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
        let n = s.n_tasks.load(Relaxed);
        loop {
            let i = s.next.fetch_add(1, Relaxed);
            if i >= n {
                break;
            }
            f(i);
        }
    }

    fn worker(s: &Shared) {
        s.started.fetch_add(1, Release);
        let mut seen = 0usize;
        loop {
            // Wait for a new epoch: spin first, then park.
            let mut spins = 0u32;
            loop {
                if s.shutdown.load(Acquire) {
                    return;
                }
                let e = s.epoch.load(Acquire);
                if e != seen {
                    seen = e;
                    break;
                }
                if spins < SPIN {
                    spins += 1;
                    core::hint::spin_loop();
                    continue;
                }
                let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, SeqCst);
                let mut g = g;
                while s.epoch.load(SeqCst) == seen && !s.shutdown.load(SeqCst) {
                    g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleepers.fetch_sub(1, SeqCst);
                drop(g);
                spins = 0;
            }
            // Join the job if it is still open; otherwise leave without touching it.
            if s.active.fetch_add(1, AcqRel) & OPEN != 0 {
                let f = join_job(s.job_data.load(Relaxed), s.job_meta.load(Relaxed));
                // SAFETY: `run` stored this pointer from a live `&dyn Fn` before setting
                // `OPEN` (Release; our fetch_add acquired it), and it does not return —
                // so the closure stays alive — until `active` drops to 0, which cannot
                // happen before the decrement below, after our last use of `f`.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(s, unsafe { &*f })));
                if r.is_err() {
                    s.panicked.store(true, Relaxed);
                }
            }
            s.active.fetch_sub(1, Release);
        }
    }

    impl Drop for ThreadPool {
        fn drop(&mut self) {
            self.shared.shutdown.store(true, SeqCst);
            {
                let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.shared.cv.notify_all();
            }
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

#[cfg(not(feature = "std"))]
mod serial {
    use super::{Grid, TileMut};

    /// Without `std` there are no threads: tasks run in order on the caller.
    #[derive(Debug)]
    pub struct ThreadPool;

    impl ThreadPool {
        pub fn new(_threads: usize) -> ThreadPool {
            ThreadPool
        }
        pub fn threads(&self) -> usize {
            1
        }
        pub fn run(&mut self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
            (0..n_tasks).for_each(f);
        }
        pub fn run_tiles<T: Send, S: Send>(
            &mut self,
            y: &mut [T],
            grid: Grid,
            scratch: &mut [S],
            per_task: usize,
            f: &(dyn Fn(TileMut<'_, T>, &mut [S]) + Sync),
        ) {
            super::run_tiles_with(|n, g| self.run(n, g), y, grid, scratch, per_task, f)
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_task_runs_once() {
        for threads in 1..=3 {
            let mut p = ThreadPool::new(threads);
            for n in [0usize, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for _ in 0..50 {
                    p.run(n, &|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
            }
        }
    }

    #[test]
    fn tiles_cover_the_output_once() {
        let mut p = ThreadPool::new(2);
        for (rows, cols, rt, ct) in [(1, 10, 1, 3), (5, 7, 2, 2), (4, 4, 4, 4), (3, 9, 1, 9)] {
            let mut y = vec![0u32; rows * cols + 3];
            let grid = Grid {
                rows,
                cols,
                row_tile: rt,
                col_tile: ct,
            };
            let mut scratch = vec![0u8; grid.n_tiles() * 2];
            p.run_tiles(&mut y, grid, &mut scratch, 2, &|mut t, s| {
                s[0] = 1;
                for r in t.rows() {
                    let c0 = t.cols().start;
                    for (j, v) in t.row(r).iter_mut().enumerate() {
                        *v += (r * cols + c0 + j) as u32 + 1;
                    }
                }
            });
            let want: Vec<u32> = (0..rows * cols).map(|i| i as u32 + 1).chain([0, 0, 0]).collect();
            assert_eq!(y, want);
            assert!(scratch.chunks(2).all(|c| c == [1, 0]));
        }
    }

    #[test]
    fn task_panic_propagates_and_pool_survives() {
        let mut p = ThreadPool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.run(8, &|i| assert!(i != 5, "boom"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        p.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
