//! Password hashing on threads of its own, behind a bounded queue.
//!
//! argon2id is tens of milliseconds of CPU and memory per call. Run on tokio's workers it
//! would stall every other RPC; run on tokio's blocking pool it would compete with the
//! store's blocking work (sled flushes, PostgreSQL calls) and that pool grows to 512
//! threads under a flood. So hashes run on a fixed set of OS threads fed by a queue with
//! a bound: when the queue is full a login is refused at once ([`PoolBusy`], answered as
//! `RESOURCE_EXHAUSTED` with a retry hint), before any hash is computed, whoever the user
//! is — a known user and an unknown one are refused alike. A job whose caller has gone
//! (request cancelled or past its deadline) is skipped rather than hashed, or stopped at
//! its next pause (~0.1 ms) if it had started.
//!
//! The threads take turns with the async workers in slices of ~0.1 ms: a hash pauses and
//! yields its core every few hundred blocks (`stint-argon2`), and a worker serving
//! requests while hashes run hands its core over at most every [`SHARE_INTERVAL`]
//! ([`share_core`]). A kernel that switches threads only at its tick (4 ms at HZ=250, as
//! here) would otherwise make every request behind a worker wait for that tick whenever a
//! hash took the worker's core; see BENCHMARKS.md for the figures. An idle server still
//! gives logins every core.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// What a job calls between slices of its work (see [`HashPool::run`]).
pub(crate) type Pause<'a> = dyn FnMut() -> ControlFlow<()> + 'a;

/// How long an async worker runs, while hashes run, between the turns it hands its core
/// to a hashing thread.
pub const SHARE_INTERVAL: Duration = Duration::from_micros(350);

/// Hashing threads of any pool in this process that are computing a hash right now.
static HASHING: AtomicUsize = AtomicUsize::new(0);

/// Called by the async workers for each request: while hashes run, hands this core to a
/// hashing thread at most every [`SHARE_INTERVAL`]. The hash gives it back at its next
/// pause (~0.1 ms), so logins get their share of the cores in small turns instead of
/// whole scheduler ticks that stall every request behind the worker they took.
pub fn share_core() {
    if HASHING.load(Ordering::Relaxed) == 0 {
        return;
    }
    thread_local! {
        static LAST_TURN: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    LAST_TURN.with(|last| {
        if last
            .get()
            .is_none_or(|at| now.duration_since(at) >= SHARE_INTERVAL)
        {
            std::thread::yield_now();
            last.set(Some(Instant::now()));
        }
    });
}

/// The queue is full: nothing was hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolBusy {
    /// Jobs waiting when this one was refused (the queue bound).
    pub queued: usize,
    /// A guess at when a slot frees up: the queue's work at the recent pace.
    pub retry_after: Duration,
}

/// Why a job gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum PoolError {
    Busy(PoolBusy),
    /// The job panicked, or the pool shut down under it.
    Lost,
}

/// Counters for operators (and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashPoolStats {
    pub threads: usize,
    pub queue_bound: usize,
    pub queued: usize,
    pub running: usize,
    /// Jobs refused because the queue was full, since start.
    pub refused: u64,
    /// Jobs skipped because their caller had gone before they started, since start.
    pub skipped: u64,
    /// Jobs stopped part way because their caller had gone, since start.
    pub stopped: u64,
}

struct State {
    jobs: VecDeque<Job>,
    running: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    /// Moving average of one job's duration, in µs (for the retry hint).
    average_us: AtomicU64,
    refused: AtomicU64,
    skipped: AtomicU64,
    stopped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `threads` hashing threads and a queue of at most `queue_bound` waiting jobs.
pub struct HashPool {
    shared: Arc<Shared>,
    threads: usize,
    queue_bound: usize,
}

impl HashPool {
    /// Starts the threads (at least one; a queue of at least one).
    pub fn new(threads: usize, queue_bound: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                running: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            // A first guess (an OWASP-cost argon2id hash) until jobs have been timed.
            average_us: AtomicU64::new(20_000),
            refused: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
        });
        for i in 0..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("stint-hash-{i}"))
                .spawn(move || work(&shared))?;
        }
        Ok(Self {
            shared,
            threads,
            queue_bound: queue_bound.max(1),
        })
    }

    /// Runs `job` on a pool thread, or refuses at once when the queue is full. The job
    /// gets a `pause` to call between slices of its work (see the `stint-argon2` crate):
    /// it yields the core, so a runnable async worker on it gets it now rather than at
    /// the scheduler's next tick, and it answers `Break` once the caller has gone.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Pause) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let wrapped: Job = Box::new(move || {
            // The caller gave up (deadline, cancelled request): don't pay for the hash.
            if tx.is_closed() {
                shared.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let started = Instant::now();
            let mut stopped = false;
            let out = job(&mut || {
                if tx.is_closed() {
                    stopped = true;
                    return ControlFlow::Break(());
                }
                std::thread::yield_now();
                ControlFlow::Continue(())
            });
            if stopped {
                shared.stopped.fetch_add(1, Ordering::Relaxed);
            }
            if tx.is_closed() {
                // Stopped part way, or done for nobody: not a job's duration.
                return;
            }
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let old = shared.average_us.load(Ordering::Relaxed);
            shared
                .average_us
                .store(old - old / 8 + took / 8, Ordering::Relaxed);
            let _ = tx.send(out);
        });
        {
            let mut state = self.shared.lock();
            if state.jobs.len() >= self.queue_bound {
                drop(state);
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::Busy(self.busy()));
            }
            state.jobs.push_back(wrapped);
        }
        self.shared.ready.notify_one();
        rx.await.map_err(|_| PoolError::Lost)
    }

    fn busy(&self) -> PoolBusy {
        let average = self.shared.average_us.load(Ordering::Relaxed);
        // The queue ahead plus the jobs running, shared among the threads.
        let ahead = (self.queue_bound + self.threads) as u64;
        let wait_us = average.saturating_mul(ahead) / self.threads as u64;
        PoolBusy {
            queued: self.queue_bound,
            retry_after: Duration::from_micros(wait_us).max(Duration::from_millis(1)),
        }
    }

    pub fn stats(&self) -> HashPoolStats {
        let state = self.shared.lock();
        HashPoolStats {
            threads: self.threads,
            queue_bound: self.queue_bound,
            queued: state.jobs.len(),
            running: state.running,
            refused: self.shared.refused.load(Ordering::Relaxed),
            skipped: self.shared.skipped.load(Ordering::Relaxed),
            stopped: self.shared.stopped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for HashPool {
    /// The threads finish the queued jobs, then exit.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    state.running += 1;
                    break job;
                }
                if state.closed {
                    return;
                }
                state = shared.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A panicking job drops its sender (the caller sees `Lost`); the thread lives on.
        HASHING.fetch_add(1, Ordering::Relaxed);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        HASHING.fetch_sub(1, Ordering::Relaxed);
        shared.lock().running -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A job that blocks its thread until the test lets it go.
    fn gate() -> (
        mpsc::Sender<()>,
        impl FnOnce(&mut Pause) -> u32 + Send + 'static,
    ) {
        let (open, wait) = mpsc::channel::<()>();
        (open, move |_| {
            let _ = wait.recv();
            7
        })
    }

    async fn until(pool: &HashPool, f: impl Fn(HashPoolStats) -> bool) {
        for _ in 0..10_000 {
            if f(pool.stats()) {
                return;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_micros(100));
        }
        panic!("pool never reached the state: {:?}", pool.stats());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_pool_recovers() {
        let pool = Arc::new(HashPool::new(1, 1).unwrap());
        let (open_first, first) = gate();
        let running = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(first).await }
        });
        until(&pool, |s| s.running == 1).await;
        let (open_second, second) = gate();
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(second).await }
        });
        until(&pool, |s| s.queued == 1).await;

        // Thread busy, queue full: refused without running (the closure would panic).
        let refused = pool.run(|_| -> u32 { panic!("must not run") }).await;
        match refused {
            Err(PoolError::Busy(busy)) => {
                assert_eq!(busy.queued, 1);
                assert!(busy.retry_after >= Duration::from_millis(1));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(pool.stats().refused, 1);

        open_first.send(()).unwrap();
        open_second.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(7));
        assert_eq!(queued.await.unwrap(), Ok(7));
        assert_eq!(pool.run(|_| 8).await, Ok(8));
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_skipped_and_a_panic_is_lost_not_fatal() {
        let pool = Arc::new(HashPool::new(1, 4).unwrap());
        let (open, first) = gate();
        let running = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(first).await }
        });
        until(&pool, |s| s.running == 1).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = tokio::spawn({
            let (pool, ran) = (pool.clone(), ran.clone());
            async move { pool.run(move |_| ran.store(true, Ordering::SeqCst)).await }
        });
        until(&pool, |s| s.queued == 1).await;
        abandoned.abort();
        let _ = abandoned.await;
        open.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(7));
        until(&pool, |s| s.skipped == 1).await;
        assert!(!ran.load(Ordering::SeqCst));

        assert_eq!(
            pool.run(|_| -> u32 { panic!("boom") }).await,
            Err(PoolError::Lost)
        );
        assert_eq!(pool.run(|_| 9).await, Ok(9));
    }

    /// A hash whose caller leaves (deadline, disconnect) stops at its next pause instead
    /// of running to the end for nobody.
    #[tokio::test]
    async fn a_job_whose_caller_leaves_stops_at_its_next_pause() {
        let pool = Arc::new(HashPool::new(1, 1).unwrap());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let caller = tokio::spawn({
            let (pool, stopped) = (pool.clone(), stopped.clone());
            async move {
                pool.run(move |pause| {
                    while pause().is_continue() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    stopped.store(true, Ordering::SeqCst);
                })
                .await
            }
        });
        until(&pool, |s| s.running == 1).await;
        caller.abort();
        let _ = caller.await;
        until(&pool, |s| s.running == 0 && s.stopped == 1).await;
        assert!(stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn threads_exit_when_the_pool_is_dropped() {
        let pool = HashPool::new(2, 2).unwrap();
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        for _ in 0..10_000 {
            if shared.upgrade().is_none() {
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        panic!("hash threads still hold the pool");
    }
}
