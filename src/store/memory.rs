//! An in-memory [`Store`] for tests: same semantics as sled, nothing on disk.
//!
//! It can be told to refuse writes, so tests can show what happens when storage fails.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Batch, Entries, Store, StoreError, Table};

type Data = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    refuse_writes: AtomicBool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// While set, every commit and flush fails with an I/O error.
    pub fn refuse_writes(&self, refuse: bool) {
        self.refuse_writes.store(refuse, Ordering::SeqCst);
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Io("writes refused (test fault)".into()));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let data = self.lock();
        Ok(data
            .range((table, prefix.to_vec())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|after| k.as_slice() > after))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last(&self, table: Table) -> Result<Option<super::Entry>, StoreError> {
        let data = self.lock();
        Ok(data
            .range((table, Vec::new())..)
            .take_while(|((t, _), _)| *t == table)
            .last()
            .map(|((_, k), v)| (k.clone(), v.clone())))
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut data = self.lock();
        for (table, key, expected) in &batch.expects {
            if data.get(&(*table, key.clone())) != expected.as_ref() {
                return Err(StoreError::Conflict);
            }
        }
        for (table, key, value) in &batch.writes {
            match value {
                Some(value) => data.insert((*table, key.clone()), value.clone()),
                None => data.remove(&(*table, key.clone())),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.check_writable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;

    #[test]
    fn contract_holds() {
        contract::conditional_batches_are_atomic(&MemoryStore::new());
        contract::scans_are_ordered_and_paged(&MemoryStore::new());
        contract::transact_retries_conflicts(&MemoryStore::new());
        contract::group_commits_apply_a_prefix(&MemoryStore::new());
    }

    #[test]
    fn refused_writes_fail_and_change_nothing() {
        let store = MemoryStore::new();
        store.refuse_writes(true);
        let batch = Batch {
            expects: vec![],
            writes: vec![(Table::Users, b"a".to_vec(), Some(b"1".to_vec()))],
        };
        assert!(matches!(store.commit(&batch), Err(StoreError::Io(_))));
        assert!(store.flush().is_err());
        store.refuse_writes(false);
        assert_eq!(store.get(Table::Users, b"a").unwrap(), None);
        store.commit(&batch).unwrap();
    }
}
