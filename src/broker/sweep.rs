//! The sweeper: removes what can no longer matter — expired sessions, revocations older
//! than any token they could match, and lockout records that have reset.
//!
//! It reads each table a page at a time ([`SWEEP_PAGE`] rows) so its memory does not grow
//! with the store, and it is synchronous: the daemon runs it on the blocking pool, never
//! on an async worker. Each delete is conditional on the exact bytes the sweep scanned, so
//! a record changed since (a login failure recorded in between, a session refreshed) is
//! left alone and looked at again by the next sweep.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use crate::core::authn::lockout::{LockoutPolicy, LockoutState};
use crate::core::model::Session;
use crate::store::{self, Batch, Store, StoreError, Table};

use super::{Broker, BrokerError, unix_ms};

/// Rows read per page.
pub const SWEEP_PAGE: usize = 256;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions: usize,
    pub revocations: usize,
    pub lockouts: usize,
}

/// The part of a revocation the sweeper reads (see `tokens.rs`).
#[derive(Deserialize)]
struct RevocationExpiry {
    keep_until_ms: i64,
}

impl Broker {
    /// One sweep over sessions, revocations and lockouts. Blocking: call it from the
    /// blocking pool (see [`Self::sweep_in_background`]).
    pub fn sweep(&self) -> Result<SweepReport, BrokerError> {
        let now = self.now();
        let now_ms = unix_ms(now);
        let skew_ms = i64::try_from(self.settings.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let store = self.store.as_ref();
        let policy = self.settings.lockout;
        Ok(SweepReport {
            sessions: sweep_table(store, Table::Sessions, |key, bytes| {
                let session: Session = store::decode(Table::Sessions, key, bytes)?;
                Ok(session.expires_at.saturating_add(skew_ms) < now_ms)
            })?,
            revocations: sweep_table(store, Table::Revocations, |key, bytes| {
                let revocation: RevocationExpiry = store::decode(Table::Revocations, key, bytes)?;
                Ok(revocation.keep_until_ms < now_ms)
            })?,
            lockouts: sweep_table(store, Table::Lockouts, |key, bytes| {
                let state: LockoutState = store::decode(Table::Lockouts, key, bytes)?;
                Ok(lockout_has_reset(&state, now, &policy))
            })?,
        })
    }

    /// [`Self::sweep`] on the blocking pool, off the async workers.
    pub async fn sweep_in_background(self: &Arc<Self>) -> Result<SweepReport, BrokerError> {
        let broker = self.clone();
        tokio::task::spawn_blocking(move || broker.sweep())
            .await
            .map_err(|err| BrokerError::Internal(format!("sweep task failed: {err}")))?
    }
}

fn lockout_has_reset(state: &LockoutState, now: SystemTime, policy: &LockoutPolicy) -> bool {
    state.forgettable(now, policy)
}

/// Deletes every row of `table` that `expired` says may go, a page at a time; returns how
/// many were deleted.
fn sweep_table(
    store: &dyn Store,
    table: Table,
    mut expired: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<usize, BrokerError> {
    let mut deleted = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(table, b"", after.as_deref(), SWEEP_PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(deleted);
        };
        after = Some(last.clone());
        for (key, bytes) in page {
            if expired(&key, &bytes)? && delete_if_still(store, table, key, bytes)? {
                deleted += 1;
            }
        }
    }
}

/// Deletes `key` only if it still holds exactly `seen` (the bytes the sweep judged);
/// false when it changed meanwhile.
fn delete_if_still(
    store: &dyn Store,
    table: Table,
    key: Vec<u8>,
    seen: Vec<u8>,
) -> Result<bool, BrokerError> {
    let batch = Batch {
        expects: vec![(table, key.clone(), Some(seen))],
        writes: vec![(table, key, None)],
    };
    match store.commit(&batch) {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Entries, Entry};

    type Change = (Table, Vec<u8>, Vec<u8>);

    /// A store that records the largest page asked for, and can change a row right after
    /// it was scanned (a login failure landing between the sweep's read and its delete).
    #[derive(Default)]
    struct Watched {
        inner: MemoryStore,
        largest_page: Mutex<usize>,
        change_after_scan: Mutex<Option<Change>>,
    }

    impl Store for Watched {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(table, key)
        }
        fn scan(
            &self,
            table: Table,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Entries, StoreError> {
            let mut largest = self.largest_page.lock().unwrap();
            *largest = (*largest).max(limit);
            let page = self.inner.scan(table, prefix, after, limit)?;
            if let Some((t, key, value)) = self.change_after_scan.lock().unwrap().take() {
                self.inner.commit(&Batch {
                    expects: vec![],
                    writes: vec![(t, key, Some(value))],
                })?;
            }
            Ok(page)
        }
        fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
            self.inner.last(table)
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            self.inner.commit(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn put(store: &dyn Store, table: Table, key: &str, value: &[u8]) {
        store
            .commit(&Batch {
                expects: vec![],
                writes: vec![(table, key.as_bytes().to_vec(), Some(value.to_vec()))],
            })
            .unwrap();
    }

    #[test]
    fn pages_through_a_large_table() {
        let store = Watched::default();
        for i in 0..(SWEEP_PAGE * 2 + 7) {
            put(&store, Table::Revocations, &format!("r{i:05}"), b"old");
        }
        put(&store, Table::Revocations, "zzz", b"keep");
        let deleted =
            sweep_table(&store, Table::Revocations, |_, bytes| Ok(bytes == b"old")).unwrap();
        assert_eq!(deleted, SWEEP_PAGE * 2 + 7);
        assert_eq!(*store.largest_page.lock().unwrap(), SWEEP_PAGE);
        let left = store
            .scan(Table::Revocations, b"", None, usize::MAX)
            .unwrap();
        assert_eq!(left, vec![(b"zzz".to_vec(), b"keep".to_vec())]);
    }

    #[test]
    fn a_row_changed_after_the_scan_is_not_deleted() {
        let store = Watched::default();
        put(&store, Table::Lockouts, "alice", b"reset");
        put(&store, Table::Lockouts, "bob", b"reset");
        // A failure for alice lands after the sweep read her reset record.
        *store.change_after_scan.lock().unwrap() =
            Some((Table::Lockouts, b"alice".to_vec(), b"one failure".to_vec()));
        let deleted =
            sweep_table(&store, Table::Lockouts, |_, bytes| Ok(bytes == b"reset")).unwrap();
        assert_eq!(deleted, 1);
        let left = store.scan(Table::Lockouts, b"", None, usize::MAX).unwrap();
        assert_eq!(left, vec![(b"alice".to_vec(), b"one failure".to_vec())]);
    }
}
