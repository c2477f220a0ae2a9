//! Persistence behind a small trait.
//!
//! The trait is deliberately narrow — get, ordered scan, and an atomic conditional batch —
//! so that sled and the in-memory store implement the same semantics with little code.
//! Use cases run as optimistic transactions ([`transact`]): every record read through a
//! [`Tx`] becomes a precondition of the commit, so a multi-record change either lands
//! whole against the state it read, or is retried. Nothing is ever half-written.

pub mod lease;
pub mod memory;
pub mod postgres;
pub mod postgres_tls;
pub mod seal;
pub mod sled;

use serde::{Serialize, de::DeserializeOwned};

/// Every keyspace Stint keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Users,
    Groups,
    Roles,
    Policies,
    MfaDevices,
    AccessKeys,
    SigningKeys,
    Sessions,
    Revocations,
    Lockouts,
    Meta,
    Audit,
    /// OpenID Connect providers by host/path (the ARN's resource after `oidc-provider/`).
    OidcProviders,
}

impl Table {
    pub const ALL: [Table; 13] = [
        Table::Users,
        Table::Groups,
        Table::Roles,
        Table::Policies,
        Table::MfaDevices,
        Table::AccessKeys,
        Table::SigningKeys,
        Table::Sessions,
        Table::Revocations,
        Table::Lockouts,
        Table::Meta,
        Table::Audit,
        Table::OidcProviders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Groups => "groups",
            Table::Roles => "roles",
            Table::Policies => "policies",
            Table::MfaDevices => "mfa_devices",
            Table::AccessKeys => "access_keys",
            Table::SigningKeys => "signing_keys",
            Table::Sessions => "sessions",
            Table::Revocations => "revocations",
            Table::Lockouts => "lockouts",
            Table::Meta => "meta",
            Table::Audit => "audit",
            Table::OidcProviders => "oidc_providers",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record read by the transaction changed before it committed.
    #[error("concurrent update, retry")]
    Conflict,
    #[error("data directory {0} is in use by another stint process")]
    Locked(String),
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("record {table}/{key} is unreadable: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Seal(#[from] seal::SealError),
}

/// One raw key/value pair.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Raw key/value pairs, in key order.
pub type Entries = Vec<Entry>;

/// One atomic change: every `expect` must still hold, then every `write` is applied.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// `(table, key, value it must have; None = must be absent)`
    pub expects: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    /// `(table, key, new value; None = delete)`
    pub writes: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

pub trait Store: Send + Sync + 'static {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries whose key starts with `prefix` and sorts after `after`, at most `limit`.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// The entry with the greatest key.
    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError>;
    /// Applies the batch atomically, or fails with [`StoreError::Conflict`].
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    /// Group commit: applies `batches` in order, each one's preconditions checked against
    /// the state the earlier ones left, and stops at the first that fails. Returns how many
    /// were applied (always a prefix) and why it stopped (`Ok` when all were applied; a
    /// [`StoreError::Conflict`] means batch number `applied` failed its preconditions and
    /// the ones after it were not tried). A prefix, never a subset: the audit writer links
    /// each batch's record to the one before, so a hole would break the chain.
    ///
    /// This default commits batch by batch (each atomic on its own), which suits the
    /// memory store. sled overrides it with one transaction for the group (a sled
    /// transaction rolls its log buffer), PostgreSQL with one transaction in one round trip;
    /// a wrapping store must forward it (see `MeteredStore`).
    fn commit_group(&self, batches: &[Batch]) -> (usize, Result<(), StoreError>) {
        for (applied, batch) in batches.iter().enumerate() {
            if let Err(err) = self.commit(batch) {
                return (applied, Err(err));
            }
        }
        (batches.len(), Ok(()))
    }
    /// Makes every committed change durable (survives power loss) before returning.
    fn flush(&self) -> Result<(), StoreError>;
    /// True when other processes commit to this store too and every commit is durable
    /// once it returns (PostgreSQL): readers then see the whole store, not only what
    /// this process flushed.
    fn shared(&self) -> bool {
        false
    }
}

/// A typed view of one optimistic transaction.
pub struct Tx<'s> {
    store: &'s dyn Store,
    batch: Batch,
}

impl<'s> Tx<'s> {
    pub fn new(store: &'s dyn Store) -> Self {
        Self {
            store,
            batch: Batch::default(),
        }
    }

    fn pending(&self, table: Table, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.batch
            .writes
            .iter()
            .rev()
            .find(|(t, k, _)| *t == table && k == key)
            .map(|(_, _, v)| v)
    }

    fn expect(&mut self, table: Table, key: &[u8], value: Option<Vec<u8>>) {
        if !self
            .batch
            .expects
            .iter()
            .any(|(t, k, _)| *t == table && k == key)
        {
            self.batch.expects.push((table, key.to_vec(), value));
        }
    }

    /// Reads raw bytes; the value read becomes a precondition of the commit.
    pub fn get_raw(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.pending(table, key) {
            return Ok(value.clone());
        }
        let value = self.store.get(table, key)?;
        self.expect(table, key, value.clone());
        Ok(value)
    }

    pub fn get<T: DeserializeOwned>(
        &mut self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_raw(table, key.as_bytes())?
            .map(|bytes| decode(table, key.as_bytes(), &bytes))
            .transpose()
    }

    /// Reads every record under `prefix` (each becomes a precondition).
    pub fn scan<T: DeserializeOwned>(
        &mut self,
        table: Table,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        let entries = self
            .store
            .scan(table, prefix.as_bytes(), None, usize::MAX)?;
        let mut out = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let current = match self.pending(table, &key) {
                Some(pending) => pending.clone(),
                None => {
                    self.expect(table, &key, Some(value.clone()));
                    Some(value)
                }
            };
            if let Some(bytes) = current {
                out.push(decode(table, &key, &bytes)?);
            }
        }
        Ok(out)
    }

    pub fn put_raw(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.batch.writes.push((table, key.to_vec(), Some(value)));
    }

    pub fn put<T: Serialize>(&mut self, table: Table, key: &str, value: &T) {
        self.put_raw(table, key.as_bytes(), encode(value));
    }

    pub fn delete(&mut self, table: Table, key: &str) {
        self.batch
            .writes
            .push((table, key.as_bytes().to_vec(), None));
    }

    /// The preconditions and writes gathered so far, for a caller that commits them
    /// together with something else (the audit record of the change).
    pub fn into_batch(self) -> Batch {
        self.batch
    }

    pub fn commit(self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.commit(&self.batch)
    }
}

/// Errors a transaction body may return: either the store's own, or the caller's.
pub trait TxError: From<StoreError> {
    fn is_conflict(&self) -> bool;
}

impl TxError for StoreError {
    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict)
    }
}

/// How often an optimistic transaction is retried before the conflict is reported.
pub const TX_ATTEMPTS: usize = 32;

/// Runs `body` as an optimistic transaction, retrying when a record it read changed.
pub fn transact<R, E: TxError>(
    store: &dyn Store,
    mut body: impl FnMut(&mut Tx<'_>) -> Result<R, E>,
) -> Result<R, E> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = Tx::new(store);
        let out = body(&mut tx)?;
        match tx.commit() {
            Ok(()) => return Ok(out),
            Err(StoreError::Conflict) if attempt < TX_ATTEMPTS => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Reads one record outside a transaction.
pub fn read<T: DeserializeOwned>(
    store: &dyn Store,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    store
        .get(table, key.as_bytes())?
        .map(|bytes| decode(table, key.as_bytes(), &bytes))
        .transpose()
}

/// Reads a page of records outside a transaction: keys after `after`, at most `limit`.
pub fn read_page<T: DeserializeOwned>(
    store: &dyn Store,
    table: Table,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, T)>, StoreError> {
    store
        .scan(table, prefix.as_bytes(), after.map(str::as_bytes), limit)?
        .into_iter()
        .map(|(key, value)| {
            let record = decode(table, &key, &value)?;
            Ok((String::from_utf8_lossy(&key).into_owned(), record))
        })
        .collect()
}

#[allow(clippy::expect_used)] // records are plain structs of strings, numbers and maps
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise to JSON")
}

pub fn decode<T: DeserializeOwned>(
    table: Table,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt {
        table: table.name(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason: err.to_string(),
    })
}

/// Shared behaviour tests, run against every implementation.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub fn conditional_batches_are_atomic(store: &dyn Store) {
        let mut tx = Tx::new(store);
        assert_eq!(tx.get::<u32>(Table::Users, "a").unwrap(), None);
        tx.put(Table::Users, "a", &1u32);
        tx.put(Table::Groups, "g", &2u32);
        tx.commit().unwrap();
        assert_eq!(read::<u32>(store, Table::Users, "a").unwrap(), Some(1));

        // Two transactions read the same record; the second to commit must conflict and
        // leave nothing behind.
        let mut first = Tx::new(store);
        let mut second = Tx::new(store);
        first.get::<u32>(Table::Users, "a").unwrap();
        second.get::<u32>(Table::Users, "a").unwrap();
        first.put(Table::Users, "a", &10u32);
        second.put(Table::Users, "a", &20u32);
        second.put(Table::Roles, "r", &3u32);
        first.commit().unwrap();
        assert!(matches!(second.commit(), Err(StoreError::Conflict)));
        assert_eq!(read::<u32>(store, Table::Users, "a").unwrap(), Some(10));
        assert_eq!(read::<u32>(store, Table::Roles, "r").unwrap(), None);

        // A record expected absent that appeared is a conflict too.
        let mut tx = Tx::new(store);
        assert_eq!(tx.get::<u32>(Table::Roles, "new").unwrap(), None);
        store
            .commit(&Batch {
                expects: vec![],
                writes: vec![(Table::Roles, b"new".to_vec(), Some(b"1".to_vec()))],
            })
            .unwrap();
        tx.put(Table::Roles, "new", &5u32);
        assert!(matches!(tx.commit(), Err(StoreError::Conflict)));
    }

    pub fn scans_are_ordered_and_paged(store: &dyn Store) {
        let mut tx = Tx::new(store);
        for name in ["b", "a", "c", "x:1"] {
            tx.put(Table::Policies, name, &name.to_string());
        }
        tx.delete(Table::Policies, "c");
        tx.commit().unwrap();
        let all = read_page::<String>(store, Table::Policies, "", None, 10).unwrap();
        let keys: Vec<_> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "x:1"]);
        let page = read_page::<String>(store, Table::Policies, "", Some("a"), 1).unwrap();
        assert_eq!(page[0].0, "b");
        let prefixed = read_page::<String>(store, Table::Policies, "x:", None, 10).unwrap();
        assert_eq!(prefixed.len(), 1);
        assert_eq!(
            store.last(Table::Policies).unwrap().map(|(k, _)| k),
            Some(b"x:1".to_vec())
        );
        assert_eq!(store.last(Table::Audit).unwrap(), None);
    }

    /// `commit_group` applies a prefix: each batch sees the earlier ones' writes, the first
    /// that fails stops the group, and nothing after it is applied.
    pub fn group_commits_apply_a_prefix(store: &dyn Store) {
        let put = |key: &str, value: &str| {
            (
                Table::Sessions,
                key.as_bytes().to_vec(),
                Some(value.as_bytes().to_vec()),
            )
        };
        let expect = |key: &str, value: Option<&str>| {
            (
                Table::Sessions,
                key.as_bytes().to_vec(),
                value.map(|v| v.as_bytes().to_vec()),
            )
        };
        assert_eq!(store.commit_group(&[]).0, 0);
        // Empty batches are no-ops, alone or in a group (sled itself panics on an empty
        // transaction).
        store.commit(&Batch::default()).unwrap();
        let (applied, result) = store.commit_group(&[Batch::default(), Batch::default()]);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(applied, 2);
        // A group spans tables: one batch's write is another's precondition.
        let group = [
            Batch {
                expects: vec![],
                writes: vec![(Table::Users, b"u".to_vec(), Some(b"1".to_vec()))],
            },
            Batch::default(),
            Batch {
                expects: vec![(Table::Users, b"u".to_vec(), Some(b"1".to_vec()))],
                writes: vec![put("g0", "after u")],
            },
        ];
        let (applied, result) = store.commit_group(&group);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(applied, 3);
        assert_eq!(
            store.get(Table::Sessions, b"g0").unwrap().as_deref(),
            Some(&b"after u"[..])
        );
        let group = [
            Batch {
                expects: vec![expect("g1", None)],
                writes: vec![put("g1", "a")],
            },
            // Sees the write of the batch before it.
            Batch {
                expects: vec![expect("g1", Some("a"))],
                writes: vec![put("g1", "b"), put("g2", "x")],
            },
        ];
        let (applied, result) = store.commit_group(&group);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(applied, 2);
        assert_eq!(
            store.get(Table::Sessions, b"g1").unwrap().as_deref(),
            Some(&b"b"[..])
        );

        let group = [
            Batch {
                expects: vec![expect("g3", None)],
                writes: vec![put("g3", "1")],
            },
            // Stale: g1 is "b" by now.
            Batch {
                expects: vec![expect("g1", Some("a"))],
                writes: vec![put("g4", "never")],
            },
            Batch {
                expects: vec![],
                writes: vec![put("g5", "never")],
            },
        ];
        let (applied, result) = store.commit_group(&group);
        assert_eq!(applied, 1);
        assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
        assert_eq!(
            store.get(Table::Sessions, b"g3").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(store.get(Table::Sessions, b"g4").unwrap(), None);
        assert_eq!(store.get(Table::Sessions, b"g5").unwrap(), None);

        // A failing first batch applies nothing.
        let group = [
            Batch {
                expects: vec![expect("g3", None)],
                writes: vec![put("g6", "never")],
            },
            Batch {
                expects: vec![],
                writes: vec![put("g7", "never")],
            },
        ];
        let (applied, result) = store.commit_group(&group);
        assert_eq!(applied, 0);
        assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
        assert_eq!(store.get(Table::Sessions, b"g7").unwrap(), None);
    }

    pub fn transact_retries_conflicts(store: &dyn Store) {
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        transact(store, |tx| {
                            let n = tx.get::<u32>(Table::Meta, "counter")?.unwrap_or(0);
                            tx.put(Table::Meta, "counter", &(n + 1));
                            Ok::<_, StoreError>(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        assert_eq!(
            read::<u32>(store, Table::Meta, "counter").unwrap(),
            Some(100)
        );
    }
}
