//! The tamper-evident audit log.
//!
//! Why a layer of its own: every decision the broker takes must be on disk, in a chain
//! that shows any later edit, *before* the caller hears the answer — and that guarantee
//! has to hold under concurrency without one fsync per request. So:
//!
//! - [`event`]: what an event says ([`event::Event`]), its canonical bytes, and the
//!   last-line redaction of secrets in request parameters.
//! - [`chain`]: `hash = SHA-256(prev_hash ‖ canonical event)`, signed checkpoints and
//!   retention anchors, offline-capable verification that names the first broken seq and
//!   why, and pruning.
//! - [`writer`]: [`writer::AuditLog`], the appender: queues callers, commits each group
//!   of them (one store round trip) with their changes, then waits for durability (a
//!   PostgreSQL commit, or a background group-commit flush on sled); if the record is
//!   not durable within the timeout the append fails ([`AuditError::Unavailable`]) and
//!   the log reports itself unhealthy until a flush succeeds again.
//!
//! Everything goes through the [`crate::store::Store`] trait (tables `Audit` and `Meta`).

pub mod chain;
pub mod event;
pub mod writer;

pub use chain::{CheckpointPolicy, CheckpointSigner, Record, VerifyReport};
pub use event::{CredentialInfo, Event, EventFilter, Outcome};
pub use writer::{AuditConfig, AuditLog, AuditStats};

use crate::store::StoreError;

/// Every way the audit layer fails.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event could not be made durable (commit failed, flush failed or timed out):
    /// the request that caused it must fail.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A precondition of the change committed with the event no longer held; nothing was
    /// written. The caller re-reads and retries.
    #[error("concurrent update, retry")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit record {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// Pruning needs a signing key for its anchor.
    #[error("no signing key for the audit anchor")]
    NoSigningKey,
    /// Pruning refused: the part it would delete does not verify.
    #[error("audit chain is not intact: {}", .0.reason)]
    Broken(Box<VerifyReport>),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared by the layer's tests: a fixed Ed25519 signer, a store copier, a faulty store.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::chain::CheckpointSigner;
    use crate::store::memory::MemoryStore;
    use crate::store::{Batch, Entries, Store, StoreError, Table};

    pub struct TestSigner {
        pub kid: String,
        key: Ed25519KeyPair,
    }

    impl TestSigner {
        pub fn new(kid: &str, seed: u8) -> Self {
            Self {
                kid: kid.into(),
                key: Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap(),
            }
        }
    }

    impl CheckpointSigner for TestSigner {
        fn sign(&self, message: &[u8]) -> Option<(String, Vec<u8>)> {
            Some((self.kid.clone(), self.key.sign(message).as_ref().to_vec()))
        }
        fn public_key(&self, kid: &str) -> Option<[u8; 32]> {
            (kid == self.kid).then(|| self.key.public_key().as_ref().try_into().unwrap())
        }
    }

    /// A signer with no key yet.
    pub struct NoKey;
    impl CheckpointSigner for NoKey {
        fn sign(&self, _: &[u8]) -> Option<(String, Vec<u8>)> {
            None
        }
        fn public_key(&self, _: &str) -> Option<[u8; 32]> {
            None
        }
    }

    pub fn copy_store(from: &dyn Store) -> MemoryStore {
        let to = MemoryStore::new();
        for table in Table::ALL {
            let writes = from
                .scan(table, &[], None, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (table, k, Some(v)))
                .collect();
            to.commit(&Batch {
                expects: vec![],
                writes,
            })
            .unwrap();
        }
        to
    }

    /// A [`MemoryStore`] whose flush can be slowed, failed, or held at a gate, and which
    /// counts how commits reach it.
    #[derive(Default)]
    pub struct FaultyStore {
        pub inner: MemoryStore,
        pub flush_delay: Mutex<Duration>,
        pub fail_flush: AtomicBool,
        /// Calls of `commit` and of `commit_group`.
        pub commits: AtomicUsize,
        pub groups: AtomicUsize,
        gate_closed: Mutex<bool>,
        gate: Condvar,
    }

    impl FaultyStore {
        /// While closed, every flush blocks.
        pub fn close_gate(&self, closed: bool) {
            *self.gate_closed.lock().unwrap() = closed;
            self.gate.notify_all();
        }
    }

    impl Store for FaultyStore {
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
            self.inner.scan(table, prefix, after, limit)
        }
        fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
            self.inner.last(table)
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.inner.commit(batch)
        }
        fn commit_group(&self, batches: &[Batch]) -> (usize, Result<(), StoreError>) {
            self.groups.fetch_add(1, Ordering::SeqCst);
            self.inner.commit_group(batches)
        }
        fn flush(&self) -> Result<(), StoreError> {
            let mut closed = self.gate_closed.lock().unwrap();
            while *closed {
                closed = self.gate.wait(closed).unwrap();
            }
            drop(closed);
            std::thread::sleep(*self.flush_delay.lock().unwrap());
            if self.fail_flush.load(Ordering::SeqCst) {
                return Err(StoreError::Io("flush failed (test fault)".into()));
            }
            self.inner.flush()
        }
    }
}
