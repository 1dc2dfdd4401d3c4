//! A small CPU thread pool for parallel loops: `parallel_for(n, f)` runs `f(start, end)` on
//! contiguous chunks of `0..n`, on the calling thread and the pool's workers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Task = dyn Fn(i64, i64) + Sync;

struct Job {
    /// Erased-lifetime pointer to the caller's closure; valid until `parallel_for` returns,
    /// which waits for every chunk to finish.
    task: *const Task,
    n: i64,
    chunks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

// SAFETY: `task` points to a `Sync` closure that outlives the job (see `Job::task`).
unsafe impl Send for Job {}
// SAFETY: as above; the atomics are the only mutable state.
unsafe impl Sync for Job {}

/// Spin iterations (≈ tens of microseconds) a thread polls before it sleeps on a condvar:
/// consecutive kernels then start without a wake-up's latency.
const SPIN: u32 = 20_000;

struct Shared {
    /// `State::generation`, readable without the lock (for spinning).
    published: std::sync::atomic::AtomicU64,
    /// Workers asleep on `wake` (counted under the lock): a job published while every
    /// worker spins needs no wake-up call (a futex system call each, per kernel).
    sleepers: AtomicUsize,
    /// Whether the caller sleeps on `finished` (set under the lock): a worker finishing while
    /// the caller spins needs no wake-up call either.
    caller_waiting: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
    finished: Condvar,
}

struct State {
    job: Option<Arc<Job>>,
    generation: u64,
    shutdown: bool,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serialises callers: one parallel loop at a time.
    busy: Mutex<()>,
}

impl ThreadPool {
    /// A pool using `threads` threads in total (the caller counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            published: std::sync::atomic::AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            caller_waiting: AtomicBool::new(false),
            state: Mutex::new(State {
                job: None,
                generation: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            finished: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("tessera-worker-{i}"))
                    .spawn(move || worker(s))
                    .expect("spawn worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
            busy: Mutex::new(()),
        }
    }

    /// Threads available to the machine (`std::thread::available_parallelism`).
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` over `0..n` split into at most `threads` contiguous chunks; returns when all
    /// chunks are done.
    pub fn parallel_for(&self, n: i64, f: &(dyn Fn(i64, i64) + Sync)) {
        if n <= 0 {
            return;
        }
        if self.threads == 1 || n == 1 {
            f(0, n);
            return;
        }
        let _guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let chunks = (self.threads as i64).min(n) as usize;
        // SAFETY: we erase the closure's lifetime; this function does not return before every
        // chunk has finished (`done == chunks`), so no worker uses it after it dies.
        let task: *const Task =
            unsafe { std::mem::transmute::<&(dyn Fn(i64, i64) + Sync), &'static Task>(f) };
        let job = Arc::new(Job {
            task,
            n,
            chunks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        });
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.job = Some(job.clone());
            st.generation += 1;
            self.shared
                .published
                .store(st.generation, Ordering::Release);
        }
        // A worker that found no new generation under the lock counted itself a sleeper
        // before waiting; one that looks after the unlock above sees the new generation.
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            self.shared.wake.notify_all();
        }
        run_chunks(&job);
        for _ in 0..SPIN {
            if job.done.load(Ordering::Acquire) >= chunks {
                break;
            }
            std::hint::spin_loop();
        }
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.caller_waiting.store(true, Ordering::SeqCst);
        // A worker whose last chunk ends after this load sees `caller_waiting` (it counts
        // the chunk done first), takes the lock — free only once this thread waits — and
        // wakes it.
        while job.done.load(Ordering::SeqCst) < chunks {
            st = self
                .shared
                .finished
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.shared.caller_waiting.store(false, Ordering::SeqCst);
        st.job = None;
    }
}

fn run_chunks(job: &Job) {
    loop {
        let c = job.next.fetch_add(1, Ordering::AcqRel);
        if c >= job.chunks {
            return;
        }
        let per = job.n / job.chunks as i64;
        let extra = job.n % job.chunks as i64;
        let c64 = c as i64;
        let start = c64 * per + c64.min(extra);
        let end = start + per + if c64 < extra { 1 } else { 0 };
        // SAFETY: see `Job::task`.
        unsafe { (*job.task)(start, end) };
        job.done.fetch_add(1, Ordering::SeqCst);
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        for _ in 0..SPIN {
            if shared.published.load(Ordering::Acquire) != seen {
                break;
            }
            std::hint::spin_loop();
        }
        let job = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.generation == seen && !st.shutdown {
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job.clone()
        };
        if let Some(job) = job {
            run_chunks(&job);
            if shared.caller_waiting.load(Ordering::SeqCst) {
                let _st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                shared.finished.notify_all();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_exactly_once() {
        let pool = ThreadPool::new(3);
        for n in [1i64, 2, 3, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.parallel_for(n, &|s, e| {
                for i in s..e {
                    hits[i as usize].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    /// Back-to-back loops, some with a slow chunk (so the caller stops spinning and sleeps,
    /// and workers fall asleep between loops): every loop completes, none is lost or run
    /// twice — the wake-ups skipped while threads spin must never be needed.
    #[test]
    fn back_to_back_loops_with_sleeping_threads_all_finish() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        for round in 0..20_000usize {
            let slow = round % 997 == 0;
            pool.parallel_for(3, &|s, e| {
                if slow && s == 2 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                total.fetch_add((e - s) as usize, Ordering::Relaxed);
            });
            if round % 4999 == 0 {
                // Long enough for the workers' spin to run out: they sleep on the condvar.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 3 * 20_000);
    }
}
