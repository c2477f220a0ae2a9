//! The appender: durable before the answer, with group commit at both ends.
//!
//! **Commit.** [`AuditLog::commit`] (and [`AuditLog::append`]) queue the caller's event and
//! change; a committer task takes everything that queued while the previous group was in
//! the store (capped at [`GROUP_MAX_RECORDS`], [`GROUP_MAX_BYTES`] and [`GROUP_MAX_KEYS`]),
//! links the events in arrival order after the head, and hands the group to
//! [`Store::commit_group`]: on PostgreSQL one function call, so one round trip and one
//! transaction for the whole group; on sled one transaction (each sled transaction rolls
//! sled's log buffer, a write on its I/O threads, so one per group, not per record); on
//! memory a loop of commits. The group size therefore follows the load: a lone request goes
//! alone at once, and under load one round trip carries many records, so a replica is no
//! longer capped at 1/RTT commits a second. On a local store the committer takes the next
//! group only once the previous group's flush has ended, so a group forms during a flush
//! and its commit overlaps the next one. Each record still lands in the same atomic batch as its own change, and every
//! change's preconditions are checked in order against the state the earlier ones left.
//!
//! The store applies a *prefix* of the group (never a subset: each record links to the one
//! before it). Where it stops, the writer asks why. If the stopping entry's audit key is
//! taken, another replica appended: the writer re-reads the head and re-links the rest of
//! the group after it. Otherwise the entry's own preconditions failed: that caller alone
//! gets [`AuditError::Conflict`] (and re-reads and retries), and the rest are re-linked
//! without it. Either way the rest go in the next round trip; nobody else fails. Sizes and
//! store times of each group are in [`AuditStats`] (`commit_batches`,
//! `committed_records`) and reach the hook of [`AuditLog::on_commit_batch`].
//!
//! **Durability.** On PostgreSQL ([`Store::shared`]) a commit is durable when it returns,
//! so the committer publishes the group durable at once. On sled the commit is in memory;
//! the background flusher runs `Store::flush` (fsync) on the blocking pool, and every
//! record committed before a flush starts is covered by it, so concurrent appends share
//! one fsync. Either way a caller returns only once its record is durable, waiting at most
//! `flush_timeout`, and is woken once for it: on sled the committer hands the callers of
//! a committed group to the flusher, which answers them when their flush ends (not a
//! reply at the commit and then a broadcast at every flush that each caller re-checks).
//! Checkpoints are signed and stored by the flusher right after a flush, off the request
//! path. Time-based checkpoints are timed and stamped by the log's
//! [`Clock`] (the daemon's), so tests drive them with a manual clock.
//!
//! Failure: a failed commit, a failed flush, or a flush that outlasts the timeout fails the
//! append with [`AuditError::Unavailable`] and turns [`AuditLog::healthy`] false until a
//! flush succeeds (the flusher retries on its own while unhealthy, so health recovers even
//! with no traffic; the retry is a flush, so a store whose commits fail while its flushes
//! succeed flaps between the two states). On a shared store the flusher also probes the
//! database every [`PROBE_INTERVAL`] while healthy, so health (gRPC NOT_SERVING) follows a
//! database outage even without writes. A record whose flush failed stays in the chain
//! (later records link to it) and is flushed with the next batch: the log may hold events
//! of requests that then failed, never the other way round. (So may a PostgreSQL group
//! whose connection broke during the commit: its outcome is unknown, its callers fail,
//! and if it did land the next group conflicts on the audit key and re-links after it.)
//!
//! Several writers, one chain: each replica keeps the head in memory and commits each
//! record with its key expected absent, so when another replica on the same (PostgreSQL)
//! store took that seq first, the group stops there and is re-linked as above: the events
//! of every replica form one chain in one order, each in the same transaction as its
//! change. A replica's readers see the store up to its own durable head.
//!
//! Readers ([`AuditLog::list`], [`AuditLog::records_after`], [`AuditLog::subscribe`],
//! [`AuditLog::watch`]) only ever see durable records.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use data_encoding::HEXLOWER;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::AuditError;
use super::chain::{
    self, Checkpoint, CheckpointPolicy, CheckpointSigner, GENESIS, Hash, Record, Seal,
};
use super::event::{Event, EventFilter};
use crate::core::time::{Clock, SystemClock, unix_ms};
use crate::store::{self, Batch, Store, StoreError, Table};

/// How often a group re-links after other writers took its seq before giving up.
const RELINK_ATTEMPTS: usize = 64;
/// Records one group commit carries at most.
pub const GROUP_MAX_RECORDS: usize = 256;
/// Bytes (keys and values written) one group commit carries at most, beyond its first.
pub const GROUP_MAX_BYTES: usize = 4 << 20;
/// Keys one group commit touches at most, beyond its first (each is a PostgreSQL advisory
/// lock, and the server's lock table is shared and finite).
pub const GROUP_MAX_KEYS: usize = 2048;
/// How often a watch on a shared store looks for other replicas' records.
const SHARED_POLL: Duration = Duration::from_millis(500);
/// How often the flusher retries while unhealthy.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How often the flusher probes a shared store (PostgreSQL) while healthy, so health turns
/// NOT_SERVING when the database goes away even if no request writes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Records a filtered [`AuditLog::list`] reads at most per call before returning a page
/// (possibly short, even empty) with a `next` cursor.
pub const LIST_SCAN_BUDGET: usize = 10_000;
const LIVE_CAPACITY: usize = 1024;
const PAGE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// How long an append waits for its record to be durable before failing.
    pub flush_timeout: Duration,
    pub checkpoint: CheckpointPolicy,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            flush_timeout: Duration::from_secs(2),
            checkpoint: CheckpointPolicy::default(),
        }
    }
}

/// Group-commit figures, for the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AuditStats {
    /// Records committed by this process.
    pub appended: u64,
    /// Successful flushes that made at least one record durable.
    pub flushes: u64,
    /// Most records one flush made durable.
    pub max_batch: u64,
    pub mean_batch: f64,
    /// Store group commits (round trips on PostgreSQL) that committed at least one record.
    pub commit_batches: u64,
    /// Records those group commits committed (`committed_records / commit_batches` is the
    /// mean group size).
    pub committed_records: u64,
    /// Most records one group commit committed.
    pub max_commit_batch: u64,
    /// Time spent in those group commits, in all.
    pub commit_time: Duration,
    /// Time spent in those flushes, in all.
    pub flush_time: Duration,
}

/// One group commit, as reported to the hook of [`AuditLog::on_commit_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitBatch {
    /// Records the group committed.
    pub records: usize,
    /// How long the store took (the round trip on PostgreSQL), relinks included.
    pub elapsed: Duration,
}

type CommitHook = Box<dyn Fn(CommitBatch) + Send + Sync>;
type AppliedHook = Box<dyn Fn(&Batch) + Send + Sync>;

/// A caller waiting in the group-commit queue.
struct Queued {
    event: Event,
    change: Batch,
    reply: oneshot::Sender<Result<Record, AuditError>>,
}

/// A caller whose record is committed and waits for the flush that makes it durable.
struct Waiter {
    record: Record,
    reply: oneshot::Sender<Result<Record, AuditError>>,
}

struct Head {
    seq: u64,
    hash: Hash,
}

/// Published by the flusher.
#[derive(Clone, Copy, Debug, Default)]
struct Flushed {
    /// Every seq up to here is durable.
    durable: u64,
    /// The highest seq a failed flush was meant to cover.
    failed: u64,
}

#[derive(Default)]
struct Counters {
    flushes: u64,
    flushed_records: u64,
    max_batch: u64,
    commit_batches: u64,
    committed_records: u64,
    max_commit_batch: u64,
    commit_time: Duration,
    flush_time: Duration,
}

/// The process's single audit appender (one per store).
pub struct AuditLog {
    store: Arc<dyn Store>,
    config: AuditConfig,
    /// Times records' checkpoints and decides when a time-based checkpoint is due.
    clock: Arc<dyn Clock>,
    head: Mutex<Head>,
    /// Held across a whole group commit (store round trips included), so one group at a
    /// time links after the head; `head` itself is only held for a moment.
    committing: Mutex<()>,
    /// Callers waiting for the next group commit, in arrival order.
    queue: Mutex<VecDeque<Queued>>,
    /// Wakes the committer task.
    queued: Arc<Notify>,
    commit_hook: RwLock<Option<CommitHook>>,
    applied_hook: RwLock<Option<AppliedHook>>,
    /// Committed records not yet broadcast (broadcast once durable), in seq order.
    pending: Mutex<VecDeque<Record>>,
    /// Callers of committed records not yet durable (local stores), in seq order: each is
    /// answered once, by whoever publishes the flush that covers it.
    waiters: Mutex<VecDeque<Waiter>>,
    wake: Arc<Notify>,
    flushed: watch::Sender<Flushed>,
    healthy: watch::Sender<bool>,
    /// Bumped by every failure, so a flush that began before a failure cannot report the
    /// log healthy again over it.
    failures: AtomicU64,
    live: broadcast::Sender<Record>,
    signer: RwLock<Option<Arc<dyn CheckpointSigner>>>,
    appended: AtomicU64,
    counters: Mutex<Counters>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn corrupt(seq: u64, reason: &str) -> AuditError {
    AuditError::Corrupt {
        seq,
        reason: reason.into(),
    }
}

/// The chain head in the store: the last record, else the retention anchor, else genesis.
fn read_head(store: &dyn Store) -> Result<Head, AuditError> {
    let last = match store.last(Table::Audit)? {
        Some((key, value)) => {
            let seq = chain::seq_of_key(&key).ok_or_else(|| corrupt(0, "bad key"))?;
            let record = Record::decode(seq, &value)?;
            if record.seq() != seq {
                return Err(corrupt(seq, "seq differs from its key"));
            }
            let hash = record
                .hash_bytes()
                .ok_or_else(|| corrupt(seq, "bad hash"))?;
            Some(Head { seq, hash })
        }
        None => None,
    };
    let anchor = match chain::read_anchor(store)? {
        Some(anchor) => Some(Head {
            seq: anchor.seq,
            hash: chain::decode_hash(&anchor.hash)
                .ok_or_else(|| corrupt(anchor.seq, "bad anchor hash"))?,
        }),
        None => None,
    };
    // The anchor wins over records it covers (leftovers of an interrupted prune).
    Ok(match (last, anchor) {
        (Some(last), Some(anchor)) if anchor.seq >= last.seq => anchor,
        (Some(last), _) => last,
        (None, Some(anchor)) => anchor,
        (None, None) => Head {
            seq: 0,
            hash: GENESIS,
        },
    })
}

impl AuditLog {
    /// [`Self::open_with_clock`] on the system clock.
    pub fn open(store: Arc<dyn Store>, config: AuditConfig) -> Result<Arc<Self>, AuditError> {
        Self::open_with_clock(store, config, Arc::new(SystemClock))
    }

    /// Reads the chain head (last record, else the retention anchor, else genesis) and
    /// starts the flusher. Must be called inside a tokio runtime. Time-based checkpoints
    /// follow `clock` (a manual clock moves them only when advanced; see [`Self::tick`]).
    pub fn open_with_clock(
        store: Arc<dyn Store>,
        config: AuditConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, AuditError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| AuditError::Unavailable("AuditLog::open needs a tokio runtime".into()))?;
        let head = read_head(&*store)?;
        let last_checkpoint = chain::read_checkpoints(&*store, 0)?
            .last()
            .map_or(0, |c| c.seq);
        let durable = head.seq;
        let wake = Arc::new(Notify::new());
        let queued = Arc::new(Notify::new());
        let started = clock.now();
        let log = Arc::new(Self {
            store,
            config,
            clock,
            head: Mutex::new(head),
            committing: Mutex::new(()),
            queue: Mutex::new(VecDeque::new()),
            queued: queued.clone(),
            commit_hook: RwLock::new(None),
            applied_hook: RwLock::new(None),
            pending: Mutex::new(VecDeque::new()),
            waiters: Mutex::new(VecDeque::new()),
            wake: wake.clone(),
            flushed: watch::Sender::new(Flushed { durable, failed: 0 }),
            healthy: watch::Sender::new(true),
            failures: AtomicU64::new(0),
            live: broadcast::Sender::new(LIVE_CAPACITY),
            signer: RwLock::new(None),
            appended: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
        });
        let flusher = Flusher {
            log: Arc::downgrade(&log),
            wake,
            last_checkpoint: (last_checkpoint, started),
            last_probe: tokio::time::Instant::now(),
        };
        runtime.spawn(flusher.run());
        runtime.spawn(committer(Arc::downgrade(&log), queued));
        Ok(log)
    }

    /// Wakes the flusher to check what is due now (after a manual clock moved).
    pub fn tick(&self) {
        self.wake.notify_one();
    }

    /// Sets (or clears) the key that signs checkpoints.
    pub fn set_signer(&self, signer: Option<Arc<dyn CheckpointSigner>>) {
        *self.signer.write().unwrap_or_else(PoisonError::into_inner) = signer;
        self.wake.notify_one();
    }

    /// Appends `event` (its `seq` is assigned here) and returns once it is durable.
    pub async fn append(&self, event: Event) -> Result<Record, AuditError> {
        self.append_with(event, Vec::new()).await
    }

    /// Appends `event` and commits `writes` (unconditional puts/deletes) in the same
    /// atomic batch: the state change and its record land together or not at all.
    pub async fn append_with(
        &self,
        event: Event,
        writes: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Record, AuditError> {
        self.commit(
            event,
            Batch {
                expects: Vec::new(),
                writes,
            },
        )
        .await
    }

    /// Commits `change` (its preconditions and writes) and `event` as one atomic batch,
    /// then waits until the record is durable. A precondition that no longer holds fails
    /// with [`AuditError::Conflict`] and changes nothing: the caller re-reads and retries.
    ///
    /// The commit is a group commit: the caller queues, and the committer task carries
    /// everything queued while the previous group was in the store in one
    /// [`Store::commit_group`] (see the module doc).
    pub async fn commit(&self, event: Event, change: Batch) -> Result<Record, AuditError> {
        let (reply, answer) = oneshot::channel();
        lock(&self.queue).push_back(Queued {
            event,
            change,
            reply,
        });
        self.queued.notify_one();
        // One answer, once the record is durable (or its commit or flush failed). A store
        // that stops answering must not hold requests forever: the caller fails (its record
        // may still land later, which the log allows; see above).
        match tokio::time::timeout(self.config.flush_timeout, answer).await {
            Ok(answer) => {
                answer.map_err(|_| AuditError::Unavailable("audit writer stopped".into()))?
            }
            Err(_) => {
                tracing::error!(timeout = ?self.config.flush_timeout, "audit commit timed out");
                self.set_healthy(false);
                Err(AuditError::Unavailable(format!(
                    "record not durable within {:?}",
                    self.config.flush_timeout
                )))
            }
        }
    }

    /// The atomic commit of [`Self::commit`] without the queue and without the wait for
    /// durability: the record is in the store (and flushed by the next round, or by the
    /// caller's own `Store::flush`). For assembling a server outside any request.
    pub fn commit_now(&self, event: Event, change: Batch) -> Result<Record, AuditError> {
        let mut results = self.commit_group(vec![(event, change)]);
        results
            .pop()
            .unwrap_or_else(|| Err(AuditError::Unavailable("empty group".into())))
    }

    /// Sets the hook told about every group commit (size and store time), e.g. to feed a
    /// metric: `log.on_commit_batch(move |batch| metrics.observe(batch))`.
    pub fn on_commit_batch(&self, hook: impl Fn(CommitBatch) + Send + Sync + 'static) {
        *self
            .commit_hook
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// Sets the hook told about each change the store applied, in commit order, before its
    /// caller is answered, and whether or not that caller still waits: a request dropped
    /// at its deadline, or one whose flush failed, has its change in the store all the
    /// same. What is derived from the store in memory (the broker's caches) follows here.
    pub fn on_applied(&self, hook: impl Fn(&Batch) + Send + Sync + 'static) {
        *self
            .applied_hook
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// Links `entries` after the head, in order, and commits them with
    /// [`Store::commit_group`]: one result per entry, in order. Blocking (store calls).
    ///
    /// The store applies a prefix of the group. When it stops at an entry, the writer asks
    /// why: if that entry's audit key is taken, another replica appended, so the writer
    /// re-reads the head and re-links the rest of the group after it; otherwise the entry's
    /// own preconditions failed, so that caller alone gets [`AuditError::Conflict`] and the
    /// rest are re-linked without it. Either way the rest go again in the next round trip.
    fn commit_group(&self, entries: Vec<(Event, Batch)>) -> Vec<Result<Record, AuditError>> {
        let started = std::time::Instant::now();
        let _serial = lock(&self.committing);
        let mut results: Vec<Option<Result<Record, AuditError>>> =
            entries.iter().map(|_| None).collect();
        // Still to commit: (index in `entries`, event, change).
        let mut rest: VecDeque<(usize, Event, Batch)> = entries
            .into_iter()
            .enumerate()
            .map(|(n, (event, change))| (n, event, change))
            .collect();
        let (mut seq, mut hash) = {
            let head = lock(&self.head);
            (head.seq, head.hash)
        };
        let mut committed = 0usize;
        let mut relinks = 0;
        while !rest.is_empty() {
            let mut records = Vec::with_capacity(rest.len());
            let mut batches = Vec::with_capacity(rest.len());
            let (mut link_seq, mut link_hash) = (seq, hash);
            for (_, event, change) in &rest {
                let (record, next_hash) = link(link_seq, &link_hash, event);
                link_seq += 1;
                link_hash = next_hash;
                let key = chain::record_key(link_seq).to_vec();
                let mut batch = Batch {
                    // Absent: another writer that took this seq makes the commit conflict.
                    expects: vec![(Table::Audit, key.clone(), None)],
                    writes: vec![(Table::Audit, key, Some(store::encode(&record)))],
                };
                batch.expects.extend(change.expects.iter().cloned());
                batch.writes.extend(change.writes.iter().cloned());
                records.push((record, next_hash));
                batches.push(batch);
            }
            let (applied, outcome) = self.store.commit_group(&batches);
            let applied = applied.min(rest.len());
            if applied > 0 {
                let mut pending = lock(&self.pending);
                let mut changes = Vec::with_capacity(applied);
                for ((record, next_hash), (n, _, change)) in
                    records.drain(..applied).zip(rest.drain(..applied))
                {
                    seq = record.seq();
                    hash = next_hash;
                    pending.push_back(record.clone());
                    results[n] = Some(Ok(record));
                    changes.push(change);
                }
                drop(pending);
                committed += applied;
                *lock(&self.head) = Head { seq, hash };
                if let Some(hook) = &*self
                    .applied_hook
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                {
                    changes.iter().for_each(hook);
                }
            }
            let err = match outcome {
                Ok(()) => break,
                Err(err) => err,
            };
            let Some((n, has_preconditions)) = rest
                .front()
                .map(|(n, _, change)| (*n, !change.expects.is_empty()))
            else {
                break;
            };
            if matches!(err, StoreError::Conflict) {
                let key = chain::record_key(seq + 1);
                match self.store.get(Table::Audit, &key) {
                    // Another replica appended: re-read the head, re-link, retry.
                    Ok(Some(_)) if relinks < RELINK_ATTEMPTS => {
                        relinks += 1;
                        match read_head(&*self.store) {
                            Ok(latest) if latest.seq > seq => {
                                (seq, hash) = (latest.seq, latest.hash);
                                *lock(&self.head) = latest;
                                continue;
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, "audit head unreadable");
                            }
                        }
                    }
                    // The change's own preconditions failing is a normal race: fail only
                    // this caller, re-link the others without it.
                    Ok(None) if has_preconditions => {
                        results[n] = Some(Err(AuditError::Conflict));
                        rest.pop_front();
                        continue;
                    }
                    _ => {}
                }
            }
            tracing::error!(seq = seq + 1, error = %err, "audit commit failed");
            self.set_healthy(false);
            for (n, _, _) in rest.drain(..) {
                results[n] = Some(Err(AuditError::Unavailable(format!(
                    "commit failed: {err}"
                ))));
            }
        }
        drop(_serial);
        if committed > 0 {
            self.appended.fetch_add(committed as u64, Ordering::Relaxed);
            {
                let mut counters = lock(&self.counters);
                counters.commit_batches += 1;
                counters.committed_records += committed as u64;
                counters.max_commit_batch = counters.max_commit_batch.max(committed as u64);
                counters.commit_time += started.elapsed();
            }
            if let Some(hook) = &*self
                .commit_hook
                .read()
                .unwrap_or_else(PoisonError::into_inner)
            {
                hook(CommitBatch {
                    records: committed,
                    elapsed: started.elapsed(),
                });
            }
            if self.store.shared() {
                // The store's commit is durable (PostgreSQL): no flush to wait for, and
                // every seq up to ours is committed (the chain has no holes).
                self.publish_durable(seq);
            }
            self.wake.notify_one();
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(AuditError::Unavailable("not committed".into()))))
            .collect()
    }

    /// Marks every seq up to `target` durable, then broadcasts the records now durable.
    fn publish_durable(&self, target: u64) {
        // Durable first, then broadcast: see `AuditLog::subscribe`.
        self.flushed
            .send_modify(|f| f.durable = f.durable.max(target));
        self.answer_flushed();
        let ready: Vec<Record> = {
            let mut pending = lock(&self.pending);
            let n = pending.partition_point(|r| r.seq() <= target);
            pending.drain(..n).collect()
        };
        for record in ready {
            let _ = self.live.send(record);
        }
    }

    /// Queues the callers of committed records until the flush that covers them.
    fn await_flush(&self, committed: impl IntoIterator<Item = Waiter>) {
        lock(&self.waiters).extend(committed);
        // A flush may have covered them before they queued.
        self.answer_flushed();
    }

    /// Answers every waiter the flushes so far decided: durable, or its flush failed.
    fn answer_flushed(&self) {
        let (decided, flushed): (Vec<Waiter>, Flushed) = {
            let mut waiters = lock(&self.waiters);
            let flushed = *self.flushed.borrow();
            let upto = flushed.durable.max(flushed.failed);
            let n = waiters.partition_point(|w| w.record.seq() <= upto);
            (waiters.drain(..n).collect(), flushed)
        };
        for waiter in decided {
            let seq = waiter.record.seq();
            let answer = if seq <= flushed.durable {
                Ok(waiter.record)
            } else {
                Err(AuditError::Unavailable(format!("flush of {seq} failed")))
            };
            let _ = waiter.reply.send(answer);
        }
    }

    /// False after a failed or late write, until a flush succeeds.
    pub fn healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Changes of [`Self::healthy`], e.g. to flip gRPC health SERVING / NOT_SERVING.
    pub fn healthy_watch(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    fn set_healthy(&self, healthy: bool) {
        if !healthy {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        let changed = self.healthy.send_if_modified(|current| {
            let changed = *current != healthy;
            *current = healthy;
            changed
        });
        if changed && !healthy {
            self.wake.notify_one();
        }
    }

    /// The last seq readers may see: this process's durable head, or on a shared store
    /// (whose commits are durable, some made by other replicas) everything committed.
    fn readable_upto(&self) -> u64 {
        if self.store.shared() {
            u64::MAX
        } else {
            self.durable_seq()
        }
    }

    /// The last durable seq.
    pub fn durable_seq(&self) -> u64 {
        self.flushed.borrow().durable
    }

    pub fn stats(&self) -> AuditStats {
        let counters = lock(&self.counters);
        AuditStats {
            appended: self.appended.load(Ordering::Relaxed),
            flushes: counters.flushes,
            max_batch: counters.max_batch,
            mean_batch: if counters.flushes == 0 {
                0.0
            } else {
                counters.flushed_records as f64 / counters.flushes as f64
            },
            commit_batches: counters.commit_batches,
            committed_records: counters.committed_records,
            max_commit_batch: counters.max_commit_batch,
            commit_time: counters.commit_time,
            flush_time: counters.flush_time,
        }
    }

    /// Durable records matching `filter`, after `after_seq`, at most `max` (≥ 1). The second
    /// value is the `after_seq` of the next page, `None` at the end. A page may be short
    /// (even empty) with a cursor when [`LIST_SCAN_BUDGET`] records were read without
    /// filling it: there is no index, filters scan.
    pub fn list(
        &self,
        filter: &EventFilter,
        after_seq: Option<u64>,
        max: usize,
    ) -> Result<(Vec<Record>, Option<u64>), AuditError> {
        list_records(
            &*self.store,
            filter,
            after_seq.unwrap_or(0),
            max,
            self.readable_upto(),
        )
    }

    /// Up to `max` durable records with seq > `seq`, in order.
    pub fn records_after(&self, seq: u64, max: usize) -> Result<Vec<Record>, AuditError> {
        let durable = self.readable_upto();
        let mut out = Vec::new();
        for (key, value) in self.store.scan(
            Table::Audit,
            &[],
            Some(&chain::record_key(seq)),
            max.min(PAGE * 16),
        )? {
            let seq = chain::seq_of_key(&key).ok_or_else(|| corrupt(seq, "bad key"))?;
            if seq > durable {
                break;
            }
            out.push(Record::decode(seq, &value)?);
        }
        Ok(out)
    }

    /// Records as they become durable. Subscribing misses what came before and may lag
    /// (`RecvError::Lagged`); to follow the log without gaps, subscribe *first*, then read
    /// the backlog with [`Self::records_after`] from the last seq you have, then take live
    /// records dropping any seq you already have, and on a lag or a jump in seq go back to
    /// the backlog. [`Self::watch`] does exactly that.
    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.live.subscribe()
    }

    /// Every durable record after `after_seq`, then new ones as they land, without gaps or
    /// duplicates; ends when the receiver is dropped.
    pub fn watch(self: &Arc<Self>, after_seq: u64) -> ReceiverStream<Result<Record, AuditError>> {
        let (tx, rx) = mpsc::channel(PAGE);
        let log = self.clone();
        tokio::spawn(async move {
            let mut live = log.subscribe();
            let mut last = after_seq;
            loop {
                // Backlog from the store.
                loop {
                    let batch = match log.records_after(last, PAGE) {
                        Ok(batch) => batch,
                        Err(err) => {
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for record in batch {
                        last = record.seq();
                        if tx.send(Ok(record)).await.is_err() {
                            return;
                        }
                    }
                }
                // Live, until a gap or a lag sends us back to the store; on a shared
                // store also every poll interval, for other replicas' records.
                let shared = log.store.shared();
                loop {
                    let received = tokio::select! {
                        received = live.recv() => received,
                        () = tx.closed() => return,
                        () = tokio::time::sleep(SHARED_POLL), if shared => break,
                    };
                    match received {
                        Ok(record) if record.seq() <= last => continue,
                        Ok(record) if record.seq() == last + 1 => {
                            last = record.seq();
                            if tx.send(Ok(record)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Lets the flusher and the committer notice they are alone and stop.
        self.wake.notify_one();
        self.queued.notify_one();
    }
}

/// One page of [`AuditLog::list`], over any store (also used by export); records after
/// `upto` are not returned.
pub fn list_records(
    store: &dyn Store,
    filter: &EventFilter,
    after_seq: u64,
    max: usize,
    upto: u64,
) -> Result<(Vec<Record>, Option<u64>), AuditError> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut cursor = after_seq;
    let mut scanned = 0;
    loop {
        let page = store.scan(Table::Audit, &[], Some(&chain::record_key(cursor)), PAGE)?;
        if page.is_empty() {
            return Ok((out, None));
        }
        for (key, value) in page {
            let seq = chain::seq_of_key(&key).ok_or_else(|| corrupt(cursor, "bad key"))?;
            if seq > upto {
                return Ok((out, None));
            }
            cursor = seq;
            scanned += 1;
            let record = Record::decode(seq, &value)?;
            if filter.matches(&record.event) {
                out.push(record);
                if out.len() >= max {
                    return Ok((out, Some(seq)));
                }
            }
            if scanned >= LIST_SCAN_BUDGET {
                return Ok((out, Some(seq)));
            }
        }
    }
}

/// The record of `event` as seq `prev_seq + 1` after `prev_hash`, and its hash.
fn link(prev_seq: u64, prev_hash: &Hash, event: &Event) -> (Record, Hash) {
    let mut event = event.clone();
    event.seq = prev_seq + 1;
    event.cap_size();
    let hash = chain::chain_hash(prev_hash, &event);
    let record = Record {
        event,
        prev_hash: HEXLOWER.encode(prev_hash),
        hash: HEXLOWER.encode(&hash),
    };
    (record, hash)
}

/// What one queued entry adds to a group: (keys, bytes).
fn weight(change: &Batch) -> (usize, usize) {
    let keys = 1 + change.expects.len() + change.writes.len();
    let bytes = change
        .writes
        .iter()
        .chain(&change.expects)
        .map(|(_, key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
        .sum();
    (keys, bytes)
}

/// Takes the next group off the queue: everything waiting, up to the caps (the first
/// entry always goes, whatever its size).
fn next_group(queue: &Mutex<VecDeque<Queued>>) -> Vec<Queued> {
    let mut queue = lock(queue);
    let (mut keys, mut bytes) = (0, 0);
    let mut group = Vec::new();
    while let Some(next) = queue.front() {
        let (k, b) = weight(&next.change);
        if !group.is_empty()
            && (group.len() >= GROUP_MAX_RECORDS
                || keys + k > GROUP_MAX_KEYS
                || bytes + b > GROUP_MAX_BYTES)
        {
            break;
        }
        keys += k;
        bytes += b;
        if let Some(entry) = queue.pop_front() {
            group.push(entry);
        }
    }
    group
}

/// The committer task: takes whatever queued while the previous group was in the store and
/// commits it as the next group. On a shared store (PostgreSQL: a network round trip) the
/// group runs on the blocking pool; sled and memory commit in memory, so inline.
async fn committer(log: Weak<AuditLog>, queued: Arc<Notify>) {
    // The last seq of the group committed before the current one (local stores).
    let mut unflushed: Option<u64> = None;
    loop {
        queued.notified().await;
        loop {
            let Some(log) = log.upgrade() else {
                return;
            };
            let group = next_group(&log.queue);
            if group.is_empty() {
                break;
            }
            let (entries, replies): (Vec<_>, Vec<_>) = group
                .into_iter()
                .map(|q| ((q.event, q.change), q.reply))
                .unzip();
            let results = if log.store.shared() {
                let worker = log.clone();
                tokio::task::spawn_blocking(move || worker.commit_group(entries))
                    .await
                    .unwrap_or_else(|join| {
                        let reason = format!("commit task failed: {join}");
                        replies
                            .iter()
                            .map(|_| Err(AuditError::Unavailable(reason.clone())))
                            .collect()
                    })
            } else {
                log.commit_group(entries)
            };
            let last_seq = results
                .iter()
                .filter_map(|result| result.as_ref().ok().map(Record::seq))
                .max();
            // A shared store's commit is durable; a local one's waits for its flush.
            let mut committed = Vec::new();
            for (reply, result) in replies.into_iter().zip(results) {
                match result {
                    Ok(record) if !log.store.shared() => committed.push(Waiter { record, reply }),
                    result => {
                        let _ = reply.send(result);
                    }
                }
            }
            log.await_flush(committed);
            // A local store (sled): commit the next group once the previous group's flush
            // has ended, so the next one forms meanwhile and one transaction covers it,
            // while this group's flush (the next round) overlaps that wait and the next
            // commit. A lone caller waits for nothing it would not wait for anyway.
            if log.store.shared() {
                continue;
            }
            let previous = unflushed;
            unflushed = last_seq.or(unflushed);
            if let Some(seq) = previous {
                let mut flushed = log.flushed.subscribe();
                let timeout = log.config.flush_timeout;
                drop(log);
                let _ = tokio::time::timeout(
                    timeout,
                    flushed.wait_for(|f| f.durable >= seq || f.failed >= seq),
                )
                .await;
            }
        }
    }
}

struct Flusher {
    log: Weak<AuditLog>,
    wake: Arc<Notify>,
    /// Seq and time (by the log's clock) of the last checkpoint written (or of start-up).
    last_checkpoint: (u64, SystemTime),
    /// When a shared store was last probed (monotonic: the probe is about liveness, not
    /// the log's time).
    last_probe: tokio::time::Instant,
}

/// Group commit: while appends keep arriving, let them land before flushing, so one
/// fsync covers the batch. A lone request passes straight through (no new append, no wait).
async fn gather(log: &AuditLog) {
    const MAX_YIELDS: usize = 16;
    let mut seen = log.appended.load(Ordering::Relaxed);
    for _ in 0..MAX_YIELDS {
        tokio::task::yield_now().await;
        let now = log.appended.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

impl Flusher {
    async fn run(mut self) {
        loop {
            let timer = match self.log.upgrade() {
                Some(log) => self.next_timer(&log),
                None => return,
            };
            match timer {
                Some(after) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(after) => {}
                    }
                }
                None => self.wake.notified().await,
            }
            let Some(log) = self.log.upgrade() else {
                return;
            };
            gather(&log).await;
            self.round(&log).await;
        }
    }

    /// When to wake without being notified: to retry while unhealthy, or for a
    /// time-based checkpoint.
    fn next_timer(&self, log: &AuditLog) -> Option<Duration> {
        let retry = if !log.healthy() {
            Some(RETRY_INTERVAL)
        } else if log.store.shared() {
            Some(PROBE_INTERVAL.saturating_sub(self.last_probe.elapsed()))
        } else {
            None
        };
        let every = log.config.checkpoint.every_seconds;
        let has_signer = log
            .signer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let checkpoint = (every > 0 && has_signer && lock(&log.head).seq > self.last_checkpoint.0)
            .then(|| {
                let due = self
                    .last_checkpoint
                    .1
                    .checked_add(Duration::from_secs(every))
                    .unwrap_or(self.last_checkpoint.1);
                due.duration_since(log.clock.now()).unwrap_or_default()
            });
        match (retry, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn checkpoint_due(&self, policy: &CheckpointPolicy, target: u64, now: SystemTime) -> bool {
        let (seq, at) = self.last_checkpoint;
        let elapsed = now.duration_since(at).unwrap_or_default();
        target > seq
            && ((policy.every_events > 0 && target - seq >= policy.every_events)
                || (policy.every_seconds > 0
                    && elapsed >= Duration::from_secs(policy.every_seconds)))
    }

    async fn round(&mut self, log: &Arc<AuditLog>) {
        let (target, hash) = {
            let head = lock(&log.head);
            (head.seq, head.hash)
        };
        let durable = log.durable_seq();
        let healthy = log.healthy();
        let now = log.clock.now();
        let signer = log
            .signer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|_| self.checkpoint_due(&log.config.checkpoint, target, now));
        let probe = log.store.shared() && self.last_probe.elapsed() >= PROBE_INTERVAL;
        let needs_flush = target > durable || !healthy || probe;
        if needs_flush {
            self.last_probe = tokio::time::Instant::now();
        }
        if !needs_flush && signer.is_none() {
            return;
        }
        let store = log.store.clone();
        let failures_before = log.failures.load(Ordering::SeqCst);
        let attempted_checkpoint = signer.is_some();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            if needs_flush {
                store.flush()?;
            }
            let Some(signer) = signer else {
                return Ok(false);
            };
            let hash = HEXLOWER.encode(&hash);
            let Some(checkpoint) =
                Checkpoint::sign(Seal::Checkpoint, &*signer, target, &hash, unix_ms(now))
            else {
                return Ok(false);
            };
            match chain::write_checkpoint(&*store, &checkpoint) {
                Ok(()) => Ok(true),
                Err(err) => {
                    tracing::warn!(seq = target, error = %err, "audit checkpoint not stored");
                    Ok(false)
                }
            }
        })
        .await
        .unwrap_or_else(|join| Err(StoreError::Io(format!("flush task failed: {join}"))));
        if attempted_checkpoint {
            // Retry a failed checkpoint at the next trigger, not in a loop.
            self.last_checkpoint.1 = now;
        }
        match result {
            Ok(checkpointed) => {
                if checkpointed {
                    self.last_checkpoint.0 = target;
                }
                if target > durable {
                    let batch = target - durable;
                    let mut counters = lock(&log.counters);
                    counters.flushes += 1;
                    counters.flushed_records += batch;
                    counters.max_batch = counters.max_batch.max(batch);
                    counters.flush_time += started.elapsed();
                    crate::metrics::audit_flushed(batch, started.elapsed());
                }
                // Only a flush that began after the last failure proves the store well.
                if needs_flush && log.failures.load(Ordering::SeqCst) == failures_before {
                    log.set_healthy(true);
                }
                log.publish_durable(target);
            }
            Err(err) => {
                tracing::error!(seq = target, error = %err, "audit flush failed");
                log.set_healthy(false);
                log.flushed.send_modify(|f| f.failed = f.failed.max(target));
                log.answer_flushed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use tokio_stream::StreamExt;

    use super::*;
    use crate::audit::chain::{PruneCutoff, prune_before, verify};
    use crate::audit::event::Outcome;
    use crate::audit::testing::{FaultyStore, TestSigner};
    use crate::store::memory::MemoryStore;

    const LONG: Duration = Duration::from_secs(10);

    fn config(every_events: u64) -> AuditConfig {
        AuditConfig {
            flush_timeout: Duration::from_secs(5),
            checkpoint: CheckpointPolicy {
                every_events,
                every_seconds: 0,
            },
        }
    }

    fn event(i: u64) -> Event {
        let outcome = if i.is_multiple_of(3) {
            Outcome::Deny
        } else {
            Outcome::Allow
        };
        let event = Event::new(i as i64, "sts:AssumeRole", outcome)
            .with_principal(format!("user/{}", i % 2));
        if i.is_multiple_of(5) {
            event.rotation()
        } else {
            event
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_chain_and_checkpoint() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::open(store.clone(), config(10)).unwrap();
        let signer = Arc::new(TestSigner::new("k1", 1));
        log.set_signer(Some(signer.clone()));
        for i in 1..=25 {
            let record = log.append(event(i)).await.unwrap();
            assert_eq!(record.seq(), i);
        }
        let report = verify(&*store, Some(&*signer)).unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!((report.events_checked, report.checkpoints_checked), (25, 2));
        assert!(log.healthy());
        assert_eq!(log.durable_seq(), 25);

        // Re-opening continues the chain.
        drop(log);
        let log = AuditLog::open(store.clone(), config(10)).unwrap();
        assert_eq!(log.append(event(26)).await.unwrap().seq(), 26);
        assert!(verify(&*store, None).unwrap().intact);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_store_commits_what_queued_during_a_flush_as_one_group() {
        let store = Arc::new(FaultyStore::default());
        *store.flush_delay.lock().unwrap() = Duration::from_millis(2);
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        // 8 callers, 25 appends each, every one waiting for its own flush: without group
        // forming each arrival is its own transaction (about 200).
        let callers: Vec<_> = (0..8u64)
            .map(|caller| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        log.append(event(caller * 100 + i)).await.unwrap();
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.committed_records, 200, "{stats:?}");
        assert!(stats.commit_batches <= 120, "{stats:?}");
        assert!(stats.max_commit_batch > 1, "{stats:?}");
        assert!(verify(&*store, None).unwrap().intact);
    }

    #[tokio::test]
    async fn concurrent_appends_share_flushes() {
        let store = Arc::new(FaultyStore::default());
        // Each flush costs a millisecond, like a real fsync, so appends pile up behind it.
        *store.flush_delay.lock().unwrap() = Duration::from_millis(1);
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(event(i)).await.unwrap().seq() })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let report = verify(&*store, None).unwrap();
        assert!(report.intact && report.events_checked == 200, "{report:?}");
        let stats = log.stats();
        assert_eq!(stats.appended, 200);
        assert!(stats.flushes < 200, "{stats:?}");
        assert!(stats.max_batch > 1, "{stats:?}");
        assert!((stats.mean_batch * stats.flushes as f64 - 200.0).abs() < 1e-6);
    }

    /// Two writers on one store (two replicas on one database) form one chain: each
    /// re-links after the other's appends instead of failing or forking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_store_form_one_chain() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = AuditLog::open(store.clone(), config(0)).unwrap();
        let second = AuditLog::open(store.clone(), config(0)).unwrap();
        let mut tasks = Vec::new();
        for i in 0..60u64 {
            let log = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(async move {
                log.append_with(
                    event(i),
                    vec![(
                        Table::Sessions,
                        format!("s{i}").into_bytes(),
                        Some(b"1".to_vec()),
                    )],
                )
                .await
                .unwrap()
                .seq()
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
        let report = verify(&*store, None).unwrap();
        assert!(report.intact && report.events_checked == 60, "{report:?}");
        assert!(first.healthy() && second.healthy());
        // Every change landed with its record.
        assert_eq!(
            store.scan(Table::Sessions, b"s", None, 100).unwrap().len(),
            60
        );

        // A stale change's own precondition still fails as a conflict (not unavailable),
        // even when the other writer moved the head meanwhile.
        second.append(event(100)).await.unwrap();
        let stale = Batch {
            expects: vec![(Table::Sessions, b"s0".to_vec(), Some(b"stale".to_vec()))],
            writes: vec![(Table::Sessions, b"s0".to_vec(), None)],
        };
        let err = first.commit(event(101), stale).await.unwrap_err();
        assert!(matches!(err, AuditError::Conflict), "{err}");
        assert!(first.healthy());
        assert_eq!(first.append(event(102)).await.unwrap().seq(), 62);
        assert!(verify(&*store, None).unwrap().intact);
    }

    /// A store shared by several writers whose group commit takes a while (a network
    /// round trip), so callers queue behind it.
    #[derive(Default)]
    struct SlowShared {
        inner: MemoryStore,
        groups: AtomicU64,
    }

    impl Store for SlowShared {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(table, key)
        }
        fn scan(
            &self,
            table: Table,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<store::Entries, StoreError> {
            self.inner.scan(table, prefix, after, limit)
        }
        fn last(&self, table: Table) -> Result<Option<store::Entry>, StoreError> {
            self.inner.last(table)
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            self.commit_group(std::slice::from_ref(batch)).1
        }
        fn commit_group(&self, batches: &[Batch]) -> (usize, Result<(), StoreError>) {
            self.groups.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
            for (applied, batch) in batches.iter().enumerate() {
                if let Err(err) = self.inner.commit(batch) {
                    return (applied, Err(err));
                }
            }
            (batches.len(), Ok(()))
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn shared(&self) -> bool {
            true
        }
    }

    /// Callers that arrive while a group is in the store go together in the next one: far
    /// fewer store round trips than records, one chain, and the hook sees every group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_round_trips() {
        let store = Arc::new(SlowShared::default());
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        let hooked = Arc::new(AtomicU64::new(0));
        let seen = hooked.clone();
        log.on_commit_batch(move |batch| {
            seen.fetch_add(batch.records as u64, Ordering::Relaxed);
        });
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(event(i)).await.unwrap().seq() })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let report = verify(&*store, None).unwrap();
        assert!(report.intact && report.events_checked == 200, "{report:?}");
        let stats = log.stats();
        assert_eq!((stats.appended, stats.committed_records), (200, 200));
        assert!(stats.commit_batches < 200, "{stats:?}");
        assert!(stats.max_commit_batch > 1, "{stats:?}");
        assert_eq!(store.groups.load(Ordering::Relaxed), stats.commit_batches);
        assert_eq!(hooked.load(Ordering::Relaxed), 200);
        assert_eq!(log.durable_seq(), 200, "a shared store's commit is durable");
    }

    /// In one group, a change whose own precondition fails fails only its caller; the
    /// others commit, re-linked without it, in their order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_change_fails_alone_and_the_group_relinks() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        let put = |key: &str| Batch {
            expects: vec![(Table::Sessions, key.as_bytes().to_vec(), None)],
            writes: vec![(
                Table::Sessions,
                key.as_bytes().to_vec(),
                Some(b"1".to_vec()),
            )],
        };
        let stale = Batch {
            expects: vec![(Table::Sessions, b"a".to_vec(), Some(b"stale".to_vec()))],
            writes: vec![(Table::Sessions, b"never".to_vec(), Some(b"1".to_vec()))],
        };
        let results = log.commit_group(vec![
            (event(1), put("a")),
            (event(2), stale),
            // Also stale, but only because the first of the group wrote "a".
            (event(3), put("a")),
            (event(4), put("b")),
        ]);
        let outcome: Vec<_> = results
            .iter()
            .map(|r| match r {
                Ok(record) => Some(record.seq()),
                Err(AuditError::Conflict) => None,
                Err(err) => panic!("{err}"),
            })
            .collect();
        assert_eq!(outcome, [Some(1), None, None, Some(2)]);
        assert_eq!(store.get(Table::Sessions, b"never").unwrap(), None);
        let report = verify(&*store, None).unwrap();
        assert!(report.intact && report.events_checked == 2, "{report:?}");
        assert_eq!(log.append(event(5)).await.unwrap().seq(), 3);
    }

    /// Two writers on one slow shared store: both form groups, each re-links its whole
    /// group after the other's, and the chain has every record once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_relink_whole_groups() {
        let store = Arc::new(SlowShared::default());
        let first = AuditLog::open(store.clone(), config(0)).unwrap();
        let second = AuditLog::open(store.clone(), config(0)).unwrap();
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let log = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    log.append_with(
                        event(i),
                        vec![(
                            Table::Sessions,
                            format!("s{i}").into_bytes(),
                            Some(b"1".to_vec()),
                        )],
                    )
                    .await
                    .unwrap()
                    .seq()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let report = verify(&*store, None).unwrap();
        assert!(report.intact && report.events_checked == 200, "{report:?}");
        assert_eq!(
            store
                .inner
                .scan(Table::Sessions, b"s", None, 1000)
                .unwrap()
                .len(),
            200
        );
        let (a, b) = (first.stats(), second.stats());
        assert_eq!(a.committed_records + b.committed_records, 200);
        assert!(a.commit_batches + b.commit_batches < 200, "{a:?} {b:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_writes_make_it_unavailable_then_it_recovers() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        log.append(event(1)).await.unwrap();
        store.refuse_writes(true);
        let err = log.append(event(2)).await.unwrap_err();
        assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
        assert!(!log.healthy());
        store.refuse_writes(false);
        // The failed append left no trace: the next one takes seq 2.
        assert_eq!(log.append(event(3)).await.unwrap().seq(), 2);
        assert!(log.healthy());
        assert!(verify(&*store, None).unwrap().intact);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_flush_times_out_and_health_follows() {
        let store = Arc::new(FaultyStore::default());
        let log = AuditLog::open(
            store.clone(),
            AuditConfig {
                flush_timeout: Duration::from_millis(100),
                ..config(0)
            },
        )
        .unwrap();
        let mut health = log.healthy_watch();
        store.close_gate(true);
        let started = Instant::now();
        let result = tokio::time::timeout(LONG, log.append(event(1)))
            .await
            .expect("append must not hang");
        assert!(matches!(result, Err(AuditError::Unavailable(_))));
        assert!(started.elapsed() < LONG);
        assert!(!log.healthy());
        store.close_gate(false);
        tokio::time::timeout(LONG, health.wait_for(|healthy| *healthy))
            .await
            .expect("health recovers once the flush completes")
            .unwrap();
        assert_eq!(log.append(event(2)).await.unwrap().seq(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_flush_fails_the_append_and_is_retried() {
        let store = Arc::new(FaultyStore::default());
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        store.fail_flush.store(true, Ordering::SeqCst);
        assert!(matches!(
            log.append(event(1)).await,
            Err(AuditError::Unavailable(_))
        ));
        assert!(!log.healthy());
        assert_eq!(log.durable_seq(), 0);
        store.fail_flush.store(false, Ordering::SeqCst);
        // No traffic needed: the flusher retries on its own.
        tokio::time::timeout(LONG, log.healthy_watch().wait_for(|healthy| *healthy))
            .await
            .expect("flusher retries")
            .unwrap();
        // (Health is published just before the durable seq, so read the latter after.)
        assert_eq!(log.append(event(2)).await.unwrap().seq(), 2);
        assert_eq!(log.durable_seq(), 2);
        assert!(verify(&*store, None).unwrap().intact);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_filters_and_pages() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        for i in 1..=30 {
            log.append(event(i)).await.unwrap();
        }
        let all = EventFilter::default();
        let (page, next) = log.list(&all, None, 10).unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(next, Some(10));
        let (page, next) = log.list(&all, Some(25), 10).unwrap();
        assert_eq!(
            page.iter().map(Record::seq).collect::<Vec<_>>(),
            [26, 27, 28, 29, 30]
        );
        assert_eq!(next, None);

        let denied = EventFilter {
            outcome: Some(Outcome::Deny),
            principal_arn: Some("user/1".into()),
            ..EventFilter::default()
        };
        let (page, _) = log.list(&denied, None, 100).unwrap();
        assert_eq!(
            page.iter().map(Record::seq).collect::<Vec<_>>(),
            [3, 9, 15, 21, 27]
        );
        let rotations = EventFilter {
            rotation_only: true,
            start_ms: Some(10),
            end_ms: Some(25),
            ..EventFilter::default()
        };
        let (page, _) = log.list(&rotations, None, 100).unwrap();
        assert_eq!(
            page.iter().map(Record::seq).collect::<Vec<_>>(),
            [10, 15, 20]
        );
        let seqs: Vec<u64> = log
            .records_after(28, 10)
            .unwrap()
            .iter()
            .map(Record::seq)
            .collect();
        assert_eq!(seqs, [29, 30]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_resumes_without_gaps_or_duplicates() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        for i in 1..=5 {
            log.append(event(i)).await.unwrap();
        }
        let mut stream = log.watch(2);
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 6..=40 {
                    log.append(event(i)).await.unwrap();
                }
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 38 {
            let record = tokio::time::timeout(LONG, stream.next())
                .await
                .expect("watch delivers")
                .unwrap()
                .unwrap();
            seen.push(record.seq());
        }
        writer.await.unwrap();
        assert_eq!(seen, (3..=40).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn time_based_checkpoint_and_reopen_after_full_prune() {
        let store = Arc::new(MemoryStore::new());
        let signer = Arc::new(TestSigner::new("k1", 1));
        let cfg = AuditConfig {
            flush_timeout: Duration::from_secs(5),
            checkpoint: CheckpointPolicy {
                every_events: 0,
                every_seconds: 1,
            },
        };
        let clock = Arc::new(crate::core::time::ManualClock::new(
            crate::core::time::from_unix_secs(1_700_000_000),
        ));
        let log = AuditLog::open_with_clock(store.clone(), cfg, clock.clone()).unwrap();
        log.set_signer(Some(signer.clone()));
        for i in 1..=3 {
            log.append(event(i)).await.unwrap();
        }
        clock.advance(Duration::from_secs(1));
        log.tick();
        let mut waited = 0;
        while chain::read_checkpoints(&*store, 0).unwrap().is_empty() {
            assert!(waited < 1000, "no time-based checkpoint");
            waited += 1;
            // Lets the flusher's round (on the blocking pool) finish; not a timed wait.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let checkpoint = &chain::read_checkpoints(&*store, 0).unwrap()[0];
        assert_eq!(checkpoint.seq, 3);
        assert_eq!(
            checkpoint.time_ms, 1_700_000_001_000,
            "stamped by the log's clock"
        );
        drop(log);

        let leftover = store.get(Table::Audit, &chain::record_key(2)).unwrap();
        prune_before(&*store, PruneCutoff::BeforeSeq(u64::MAX), &*signer, 5).unwrap();
        assert!(store.last(Table::Audit).unwrap().is_none());
        // As if the prune had been interrupted: a record under the anchor is left behind.
        store
            .commit(&Batch {
                expects: vec![],
                writes: vec![(Table::Audit, chain::record_key(2).to_vec(), leftover)],
            })
            .unwrap();
        let log = AuditLog::open(store.clone(), config(0)).unwrap();
        assert_eq!(log.append(event(4)).await.unwrap().seq(), 4);
        let report = verify(&*store, Some(&*signer)).unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!((report.anchor_seq, report.events_checked), (Some(3), 1));
    }

    /// Not a test: prints group-commit figures on sled next to the raw cost of one flush.
    /// `cargo test --release --lib measure_group_commit -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement, run by hand"]
    async fn measure_group_commit_on_sled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::sled::SledStore::open(dir.path(), 16 << 20).unwrap());
        let rounds = 50;
        let started = Instant::now();
        for i in 0..rounds {
            let key = format!("probe/{i}");
            store
                .commit(&Batch {
                    expects: vec![],
                    writes: vec![(Table::Meta, key.into_bytes(), Some(vec![0; 300]))],
                })
                .unwrap();
            store.flush().unwrap();
        }
        let raw = started.elapsed() / rounds;
        let log = AuditLog::open(store.clone(), config(1000)).unwrap();
        log.set_signer(Some(Arc::new(TestSigner::new("k1", 1))));
        let started = Instant::now();
        for i in 0..rounds {
            log.append(event(u64::from(i))).await.unwrap();
        }
        let sequential = started.elapsed() / rounds;
        let (tasks, per_task) = (200, 10);
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        log.append(event(t * per_task + i)).await.unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        let elapsed = started.elapsed();
        let per_append = elapsed / (tasks * per_task) as u32;
        println!("raw commit+flush (fsync): {raw:?}");
        println!(
            "sequential append: {sequential:?} ({:.2}x raw)",
            sequential.as_secs_f64() / raw.as_secs_f64()
        );
        println!(
            "{tasks} tasks x {per_task}: {elapsed:?}, {per_append:?}/append ({:.3}x raw), {:?}",
            per_append.as_secs_f64() / raw.as_secs_f64(),
            log.stats()
        );
        assert!(verify(&*store, None).unwrap().intact);
    }

    /// Appends per second on PostgreSQL with one and with two writers (replicas) on one
    /// database. Run: `scripts/with-postgres.sh cargo test --lib measure_appends_on_postgres
    /// -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement"]
    async fn measure_appends_on_postgres() {
        use crate::store::postgres::{PostgresStore, testing};
        let Some(base) = testing::url("measure_appends") else {
            return;
        };
        // The primitive beneath: one `stint_commit` round trip per record, one at a time
        // (what the writer did before group commit), against 64 records per group.
        {
            let url = testing::fresh_database(&base, "measure_primitive").unwrap();
            let store = PostgresStore::open(&url, 1).unwrap();
            let record = |n: u64| Batch {
                expects: vec![(Table::Audit, n.to_be_bytes().to_vec(), None)],
                writes: vec![
                    (Table::Audit, n.to_be_bytes().to_vec(), Some(vec![0; 400])),
                    (
                        Table::Sessions,
                        n.to_be_bytes().to_vec(),
                        Some(vec![0; 300]),
                    ),
                ],
            };
            let n = 640u64;
            let started = Instant::now();
            for i in 0..n {
                store.commit(&record(i)).unwrap();
            }
            let single = n as f64 / started.elapsed().as_secs_f64();
            let started = Instant::now();
            for g in 0..n / 64 {
                let group: Vec<Batch> = (0..64).map(|i| record(n + g * 64 + i)).collect();
                assert_eq!(store.commit_group(&group).0, 64);
            }
            let grouped = n as f64 / started.elapsed().as_secs_f64();
            println!(
                "primitive: one record per round trip {single:.0} records/s; 64 per group {grouped:.0} records/s ({:.1}x)",
                grouped / single
            );
        }
        for writers in [1usize, 2] {
            let url = testing::fresh_database(&base, "measure_appends").unwrap();
            let logs: Vec<_> = (0..writers)
                .map(|_| {
                    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 8).unwrap());
                    AuditLog::open(store, config(0)).unwrap()
                })
                .collect();
            let (tasks, per_task) = (64u64, 20u64);
            let started = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let log = logs[t as usize % writers].clone();
                    tokio::spawn(async move {
                        for i in 0..per_task {
                            log.append_with(
                                event(t * per_task + i),
                                vec![(
                                    Table::Sessions,
                                    format!("s{t}-{i}").into_bytes(),
                                    Some(vec![0; 300]),
                                )],
                            )
                            .await
                            .unwrap();
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
            let elapsed = started.elapsed();
            let n = tasks * per_task;
            println!(
                "{writers} writer(s), {tasks} tasks x {per_task}: {elapsed:?}, {:.0} appends/s",
                n as f64 / elapsed.as_secs_f64()
            );
            for log in &logs {
                let stats = log.stats();
                println!(
                    "  groups {} records {} mean {:.1} max {}",
                    stats.commit_batches,
                    stats.committed_records,
                    stats.committed_records as f64 / stats.commit_batches.max(1) as f64,
                    stats.max_commit_batch
                );
            }
            let store = PostgresStore::open(&url, 1).unwrap();
            let report = verify(&store, None).unwrap();
            assert!(report.intact && report.events_checked == n, "{report:?}");
        }
    }

    #[test]
    fn open_needs_a_runtime() {
        assert!(matches!(
            AuditLog::open(Arc::new(MemoryStore::new()), AuditConfig::default()),
            Err(AuditError::Unavailable(_))
        ));
    }
}
