//! The sled-backed [`Store`].
//!
//! One sled tree per [`Table`]; a [`Batch`] is one multi-tree sled transaction that checks
//! its preconditions and writes, so a change lands whole or not at all. A group of batches
//! ([`Store::commit_group`]) is one transaction too (see `transact_group`).
//!
//! Durability: sled 0.34's `flush()` ends in `sync_file_range`, which survives a process
//! crash but not a power loss (sled issue 1452). [`SledStore::flush`] therefore follows it
//! with an `fdatasync` of sled's data file.
//!
//! Recovery from I/O errors (a full disk): once one write of sled's log fails, sled keeps
//! that error and fails every later write and flush for the life of the `sled::Db`, so a
//! daemon whose disk filled up would stay unavailable after space returned. The store
//! therefore marks itself failed on any sled I/O error, and the next [`Store::flush`]
//! (the audit flusher retries one every 500 ms while unhealthy) re-opens the database:
//! sled's recovery keeps what reached the disk, whole batches only, and the store then
//! replays every batch committed since the last flush that succeeded, in commit order,
//! and flushes. Replaying set-or-delete writes in order ends in the same state from any
//! prefix sled kept, so nothing committed in this process is lost (the audit writer
//! relies on that: its head may point at a record whose flush failed) and nothing is
//! half-written. Until a reopen succeeds, commits and flushes fail with
//! [`StoreError::Io`]. Commits are serialised (they already are behind the audit
//! writer's head lock) so the replay log's order is the commit order.
//!
//! Permissions: the data directory and everything sled creates in it are made private
//! (directories 0700, files 0600) whatever the process umask, since the store holds
//! sealed secrets, password hashes and the audit log. Files sled creates later (snapshots)
//! land inside the 0700 `db` directory.
//!
//! A `LOCK` file in the data directory, held with an exclusive advisory lock for the life
//! of the store, makes a second daemon on the same directory fail at once with a clear
//! message instead of sled's opaque one.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sled::Transactional;
use sled::transaction::TransactionError;

use super::{Batch, Entries, Store, StoreError, Table};

/// Unflushed replay-log size past which a commit flushes first, so the log stays bounded
/// even when nothing else flushes for a while.
const REPLAY_LOG_MAX_BYTES: usize = 16 << 20;
/// Least time between two reopen attempts.
const REOPEN_INTERVAL: Duration = Duration::from_millis(200);

/// What the space probe writes: about what sled needs to reopen and replay a little.
const PROBE_BYTES: usize = 1 << 20;

/// `(table, key, value)` rows of a batch: a precondition, or a write (`None` = delete).
type Row = (Table, Vec<u8>, Option<Vec<u8>>);

/// The writes of one batch, kept for replay after a reopen.
type Writes = Vec<Row>;

/// One opened `sled::Db` with its trees.
struct Opened {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    data_file: File,
}

impl Opened {
    fn tree(&self, table: Table) -> &sled::Tree {
        // `trees` is opened in `Table::ALL` order, which is declaration order.
        &self.trees[table as usize]
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        self.data_file.sync_data().map_err(io)
    }
}

/// Batches committed since the last flush that succeeded.
#[derive(Default)]
struct ReplayLog {
    batches: Vec<Writes>,
    bytes: usize,
    /// How many batches ever left the front of the log (flushed, or replayed by a
    /// reopen): concurrent flushes each trim only what they covered, never twice.
    trimmed: u64,
}

impl ReplayLog {
    /// The position just past the last batch committed so far.
    fn end(&self) -> u64 {
        self.trimmed + self.batches.len() as u64
    }

    /// Drops the batches before position `end` (those a flush made durable).
    fn trim_to(&mut self, end: u64) {
        let n = usize::try_from(end.saturating_sub(self.trimmed))
            .unwrap_or(usize::MAX)
            .min(self.batches.len());
        let bytes: usize = self.batches.drain(..n).map(|w| writes_bytes(&w)).sum();
        self.bytes = self.bytes.saturating_sub(bytes);
        self.trimmed += n as u64;
    }
}

pub struct SledStore {
    db_dir: PathBuf,
    cache_bytes: u64,
    /// `None` only while a reopen is under way.
    opened: RwLock<Option<Arc<Opened>>>,
    /// A sled I/O error was seen: the next flush reopens.
    failed: AtomicBool,
    replay: Mutex<ReplayLog>,
    last_reopen: Mutex<Option<Instant>>,
    reopens: AtomicU64,
    _lock: File,
}

fn io(err: impl std::fmt::Display) -> StoreError {
    StoreError::Io(err.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn writes_bytes(writes: &Writes) -> usize {
    writes
        .iter()
        .map(|(_, k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 16)
        .sum()
}

/// Opens sled in `db_dir`, waiting briefly for an earlier `Db` of this process on the same
/// directory to finish closing (sled holds its own file lock until its threads exit).
fn open_db(db_dir: &Path, cache_bytes: u64) -> Result<Opened, StoreError> {
    let config = sled::Config::new().path(db_dir).cache_capacity(cache_bytes);
    let mut attempts = 0;
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(sled::Error::Io(err)) if attempts < 100 && err.to_string().contains("lock") => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(io(err)),
        }
    };
    let trees = Table::ALL
        .iter()
        .map(|table| db.open_tree(table.name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    make_private(db_dir)?;
    let data_file = File::open(db_dir.join("db")).map_err(io)?;
    Ok(Opened {
        db,
        trees,
        data_file,
    })
}

/// Applies a leading run of `batches` in one sled transaction: each batch's preconditions
/// are checked against what the earlier ones wrote, and the first that fails stops the
/// group. Returns how many were applied.
///
/// One transaction per group, not per batch: every sled transaction (and `apply_batch`)
/// seals the current log buffer and hands its write to sled's I/O threads (`pin_log`
/// rolls the buffer), which cost more than everything else a mint does. A group of 30
/// pays that once.
fn transact_group(
    opened: &Opened,
    batches: &[(&[Row], &[Row])],
) -> Result<usize, TransactionError<()>> {
    let mut tables: Vec<Table> = batches
        .iter()
        .flat_map(|(expects, writes)| expects.iter().chain(writes.iter()))
        .map(|(t, _, _)| *t)
        .collect();
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        // sled panics on a transaction over no trees; nothing to check or write.
        return Ok(batches.len());
    }
    let trees: Vec<sled::Tree> = tables.iter().map(|t| opened.tree(*t).clone()).collect();
    #[allow(clippy::expect_used)] // every table of the group was collected above
    let index = |table: Table| tables.binary_search(&table).expect("table collected above");
    trees.as_slice().transaction(|view| {
        for (applied, (expects, writes)) in batches.iter().enumerate() {
            for (table, key, expected) in expects.iter() {
                let current = view[index(*table)].get(key)?;
                if current.as_deref() != expected.as_deref() {
                    return Ok(applied);
                }
            }
            for (table, key, value) in writes.iter() {
                let tree = &view[index(*table)];
                match value {
                    Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                    None => tree.remove(key.as_slice())?,
                };
            }
        }
        Ok(batches.len())
    })
}

impl SledStore {
    /// Opens (creating if needed) the store under `data_dir/db` with a page cache of
    /// `cache_bytes`.
    pub fn open(data_dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options.open(data_dir.join("LOCK")).map_err(io)?;
        make_private(&data_dir.join("LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked(data_dir.display().to_string()));
        }
        let db_dir: PathBuf = data_dir.join("db");
        let opened = open_db(&db_dir, cache_bytes)?;
        Ok(Self {
            db_dir,
            cache_bytes,
            opened: RwLock::new(Some(Arc::new(opened))),
            failed: AtomicBool::new(false),
            replay: Mutex::new(ReplayLog::default()),
            last_reopen: Mutex::new(None),
            reopens: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// How often the database was re-opened after an I/O error.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn mark_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    fn opened(&self) -> Result<Arc<Opened>, StoreError> {
        self.opened
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Io("store is re-opening after an I/O error".into()))
    }

    /// Notes a sled error: an I/O error makes the next flush reopen the database.
    fn sled_error(&self, err: sled::Error) -> StoreError {
        if matches!(err, sled::Error::Io(_)) && !self.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %err, "storage I/O failed; the store re-opens once a flush succeeds");
        }
        io(err)
    }

    /// Re-opens the database after an I/O error and replays the batches committed since
    /// the last successful flush; on success the store is whole and durable again.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut replay = lock(&self.replay);
        if !self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        {
            let mut last = lock(&self.last_reopen);
            if last.is_some_and(|at| at.elapsed() < REOPEN_INTERVAL) {
                return Err(StoreError::Io("store is waiting to re-open".into()));
            }
            *last = Some(Instant::now());
        }
        // Until the disk takes writes again, keep the failed handle: it still serves reads.
        self.probe_space()?;
        let mut slot = self.opened.write().unwrap_or_else(PoisonError::into_inner);
        // Drop this handle first: sled's file lock goes with its last one.
        drop(slot.take());
        let opened = open_db(&self.db_dir, self.cache_bytes)?;
        let group: Vec<(&[Row], &[Row])> = replay
            .batches
            .iter()
            .map(|writes| (&[][..], writes.as_slice()))
            .collect();
        transact_group(&opened, &group).map_err(|err| match err {
            TransactionError::Abort(()) => StoreError::Conflict,
            TransactionError::Storage(err) => io(err),
        })?;
        opened.flush()?;
        *slot = Some(Arc::new(opened));
        let end = replay.end();
        replay.trim_to(end);
        self.failed.store(false, Ordering::SeqCst);
        self.reopens.fetch_add(1, Ordering::Relaxed);
        tracing::info!("store re-opened after an I/O error; nothing committed was lost");
        Ok(())
    }

    /// Writes, syncs and removes a small file beside the database: can the disk take
    /// writes again?
    fn probe_space(&self) -> Result<(), StoreError> {
        use std::io::Write;
        let path = self.db_dir.with_file_name(".space-probe");
        let result = File::create(&path).and_then(|mut file| {
            file.write_all(&[0u8; PROBE_BYTES])?;
            file.sync_data()
        });
        let _ = std::fs::remove_file(&path);
        result.map_err(|err| StoreError::Io(format!("the disk takes no writes yet: {err}")))
    }

    /// Flushes `opened` and trims the replay log up to `covered` (its end when the flush
    /// started). Takes the handle by value and lets go of it before locking the log, so
    /// a reopen holding the log never waits on this thread for sled's file lock.
    fn flush_through(&self, opened: Arc<Opened>, covered: u64) -> Result<(), StoreError> {
        if let Err(err) = opened.db.flush() {
            return Err(self.sled_error(err));
        }
        if let Err(err) = opened.data_file.sync_data() {
            self.failed.store(true, Ordering::SeqCst);
            return Err(io(err));
        }
        drop(opened);
        lock(&self.replay).trim_to(covered);
        Ok(())
    }
}

/// Creates `dir` (and missing parents) and makes it 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)?;
    set_mode(dir, 0o700)
}

/// Makes `path` private: a directory (recursively) 0700 with files 0600, or a file 0600.
pub fn make_private(path: &Path) -> Result<(), StoreError> {
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if meta.is_dir() {
        set_mode(path, 0o700)?;
        for entry in std::fs::read_dir(path).map_err(io)? {
            make_private(&entry.map_err(io)?.path())?;
        }
        Ok(())
    } else if meta.is_file() {
        set_mode(path, 0o600)
    } else {
        Ok(())
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), StoreError> {
    Ok(())
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let opened = self.opened()?;
        match opened.tree(table).get(key) {
            Ok(value) => Ok(value.map(|v| v.to_vec())),
            Err(err) => Err(self.sled_error(err)),
        }
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let opened = self.opened()?;
        let tree = opened.tree(table);
        let iter = match after {
            Some(after) if after >= prefix => {
                let mut start = after.to_vec();
                start.push(0);
                tree.range(start..)
            }
            _ => tree.range(prefix.to_vec()..),
        };
        let mut out = Vec::new();
        for entry in iter {
            let (key, value) = entry.map_err(|err| self.sled_error(err))?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<super::Entry>, StoreError> {
        let opened = self.opened()?;
        match opened.tree(table).last() {
            Ok(entry) => Ok(entry.map(|(k, v)| (k.to_vec(), v.to_vec()))),
            Err(err) => Err(self.sled_error(err)),
        }
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        match self.commit_group(std::slice::from_ref(batch)) {
            (_, Err(err)) => Err(err),
            (1, Ok(())) => Ok(()),
            (_, Ok(())) => Err(StoreError::Conflict),
        }
    }

    fn commit_group(&self, batches: &[Batch]) -> (usize, Result<(), StoreError>) {
        // Held across the transaction, so the replay log's order is the commit order; taken
        // before the handle, as `reopen` does.
        let mut replay = lock(&self.replay);
        let opened = match self.opened() {
            Ok(opened) => opened,
            Err(err) => return (0, Err(err)),
        };
        let group: Vec<(&[Row], &[Row])> = batches
            .iter()
            .map(|b| (b.expects.as_slice(), b.writes.as_slice()))
            .collect();
        let applied = match transact_group(&opened, &group) {
            Ok(applied) => applied,
            Err(TransactionError::Abort(())) => 0,
            Err(TransactionError::Storage(err)) => return (0, Err(self.sled_error(err))),
        };
        for batch in &batches[..applied] {
            replay.bytes += writes_bytes(&batch.writes);
            replay.batches.push(batch.writes.clone());
        }
        let over = replay.bytes > REPLAY_LOG_MAX_BYTES;
        let covered = replay.end();
        drop(replay);
        if over {
            // The batches are committed; a failed flush here only leaves the log long.
            let _ = self.flush_through(opened, covered);
        }
        if applied == batches.len() {
            (applied, Ok(()))
        } else {
            (applied, Err(StoreError::Conflict))
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return self.reopen();
        }
        let covered = lock(&self.replay).end();
        let opened = self.opened()?;
        self.flush_through(opened, covered)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;

    fn open_temp() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn contract_holds() {
        contract::conditional_batches_are_atomic(&open_temp().1);
        contract::scans_are_ordered_and_paged(&open_temp().1);
        contract::transact_retries_conflicts(&open_temp().1);
        contract::group_commits_apply_a_prefix(&open_temp().1);
        crate::store::lease::tests::one_holder_at_a_time(&open_temp().1);
    }

    #[test]
    fn second_open_of_same_dir_is_refused() {
        let (dir, store) = open_temp();
        match SledStore::open(dir.path(), 4 << 20) {
            Err(StoreError::Locked(path)) => assert!(path.contains(&*dir.path().to_string_lossy())),
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("second open succeeded"),
        }
        drop(store);
        SledStore::open(dir.path(), 4 << 20).expect("lock released on drop");
    }

    #[cfg(unix)]
    #[test]
    fn data_dir_and_files_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let data_dir = parent.path().join("new").join("data");
        // As an operator's shell with umask 022 would leave it.
        std::fs::create_dir_all(data_dir.join("db")).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SledStore::open(&data_dir, 4 << 20).unwrap();
        let mut tx = crate::store::Tx::new(&store);
        tx.put(Table::Users, "alice", &"record".to_string());
        tx.commit().unwrap();
        store.flush().unwrap();
        let mut seen = 0;
        let mut stack = vec![data_dir.clone()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(mode, 0o700, "{}", path.display());
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                assert_eq!(mode, 0o600, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 3, "LOCK, sled's conf and db at least");
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 4 << 20).unwrap();
            let mut tx = crate::store::Tx::new(&store);
            tx.put(Table::Users, "alice", &"record".to_string());
            tx.commit().unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        assert_eq!(
            crate::store::read::<String>(&store, Table::Users, "alice").unwrap(),
            Some("record".into())
        );
    }

    fn put(store: &SledStore, writes: &[(&str, Option<&str>)]) -> Result<(), StoreError> {
        store.commit(&Batch {
            expects: vec![],
            writes: writes
                .iter()
                .map(|(k, v)| {
                    (
                        Table::Meta,
                        k.as_bytes().to_vec(),
                        v.map(|v| v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        })
    }

    fn meta(store: &SledStore, key: &str) -> Option<String> {
        store
            .get(Table::Meta, key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn concurrent_flushes_trim_the_replay_log_once() {
        let (_dir, store) = open_temp();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..50 {
                        put(store, &[(&format!("t{t}-{i}"), Some("v"))]).unwrap();
                        store.flush().unwrap();
                    }
                });
            }
        });
        let replay = lock(&store.replay);
        assert!(replay.batches.is_empty() && replay.bytes == 0);
        assert_eq!(replay.trimmed, 200);
    }

    #[test]
    fn a_failed_store_reopens_on_flush_and_replays_in_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        put(&store, &[("flushed", Some("yes"))]).unwrap();
        store.flush().unwrap();
        // Unflushed: an overwrite, a put then delete, two writes of one batch.
        put(&store, &[("k", Some("1"))]).unwrap();
        put(&store, &[("k", Some("2"))]).unwrap();
        put(&store, &[("gone", Some("x"))]).unwrap();
        put(
            &store,
            &[("gone", None), ("pair-a", Some("a")), ("pair-b", Some("b"))],
        )
        .unwrap();
        store.mark_failed();
        store.flush().expect("reopen and replay");
        assert_eq!(store.reopens(), 1);
        let read_all = |store: &SledStore| {
            ["flushed", "k", "gone", "pair-a", "pair-b"].map(|k| meta(store, k))
        };
        let want =
            [Some("yes"), Some("2"), None, Some("a"), Some("b")].map(|v| v.map(String::from));
        assert_eq!(read_all(&store), want);
        // The reopened store takes writes, and all of it survives a restart.
        put(&store, &[("after", Some("1"))]).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = SledStore::open(dir.path(), 4 << 20).unwrap();
        assert_eq!(read_all(&store), want);
        assert_eq!(meta(&store, "after").as_deref(), Some("1"));
    }

    /// A real ENOSPC on a small tmpfs (needs root; skipped loudly otherwise).
    #[cfg(target_os = "linux")]
    #[test]
    fn recovers_from_a_full_disk_with_whole_batches_only() {
        use std::io::Write;
        let parent = tempfile::tempdir().unwrap();
        let mnt = parent.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!(
                "SKIPPED recovers_from_a_full_disk_with_whole_batches_only: cannot mount a tmpfs here"
            );
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
        let _unmount = Unmount(mnt.clone());
        let store = SledStore::open(&mnt.join("data"), 1 << 20).unwrap();
        let ballast = mnt.join("ballast");
        let mut file = File::create(&ballast).unwrap();
        let chunk = vec![7u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        drop(file);
        // Batches of two keys, flushed one by one, until the disk refuses.
        let value = "v".repeat(4096);
        let mut acknowledged = 0;
        let mut failed = false;
        for i in 0..10_000 {
            let (a, b) = (format!("a{i:05}"), format!("b{i:05}"));
            if put(&store, &[(&a, Some(&value)), (&b, Some(&value))]).is_err()
                || store.flush().is_err()
            {
                failed = true;
                break;
            }
            acknowledged = i + 1;
        }
        assert!(failed, "the full disk never refused a write");
        assert!(store.flush().is_err(), "still failing while full");
        std::fs::remove_file(&ballast).unwrap();
        let mut recovered = false;
        for _ in 0..100 {
            if store.flush().is_ok() {
                recovered = true;
                break;
            }
            std::thread::sleep(REOPEN_INTERVAL);
        }
        assert!(recovered, "the store never recovered once space returned");
        assert_eq!(store.reopens(), 1);
        put(&store, &[("z-after", Some("1"))]).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = SledStore::open(&mnt.join("data"), 1 << 20).unwrap();
        let keys = store.scan(Table::Meta, b"", None, usize::MAX).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (key, _) in &keys {
            match key.first() {
                Some(b'a') => a.push(key[1..].to_vec()),
                Some(b'b') => b.push(key[1..].to_vec()),
                _ => {}
            }
        }
        assert_eq!(a, b, "a batch is present whole or not at all");
        assert!(
            a.len() >= acknowledged,
            "{} of {acknowledged} acknowledged batches",
            a.len()
        );
        assert_eq!(meta(&store, "z-after").as_deref(), Some("1"));
    }
}
