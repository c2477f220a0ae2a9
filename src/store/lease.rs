//! A lease: which one of several replicas on one store runs a job that must run once.
//!
//! A lease is one `Meta` record (`lease/<name>`: holder id and expiry) changed only by
//! compare-and-swap ([`crate::store::transact`]), so it works on every store. The holder
//! renews it each round; when the holder dies, the lease expires and the next replica to
//! ask takes it over. Time is a parameter (the daemon's clock). Lease records are
//! coordination, not security state, so they carry no audit event (the jobs they guard
//! audit what they change).

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, Table, transact};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub expires_ms: i64,
}

pub fn lease_key(name: &str) -> String {
    format!("lease/{name}")
}

/// Takes or renews lease `name` for `holder` until `now_ms + ttl_ms`; false while
/// another holder's lease is unexpired.
pub fn try_acquire(
    store: &dyn Store,
    name: &str,
    holder: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<bool, StoreError> {
    let key = lease_key(name);
    transact(store, |tx| {
        let current: Option<LeaseRecord> = tx.get(Table::Meta, &key)?;
        if let Some(lease) = &current
            && lease.holder != holder
            && lease.expires_ms > now_ms
        {
            return Ok(false);
        }
        tx.put(
            Table::Meta,
            &key,
            &LeaseRecord {
                holder: holder.to_string(),
                expires_ms: now_ms.saturating_add(ttl_ms),
            },
        );
        Ok(true)
    })
}

/// Gives the lease up (only if `holder` still has it), so another replica need not wait
/// for it to expire.
pub fn release(store: &dyn Store, name: &str, holder: &str) -> Result<(), StoreError> {
    let key = lease_key(name);
    transact(store, |tx| {
        let current: Option<LeaseRecord> = tx.get(Table::Meta, &key)?;
        if current.is_some_and(|lease| lease.holder == holder) {
            tx.delete(Table::Meta, &key);
        }
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// Run on every store by the store tests.
    pub(crate) fn one_holder_at_a_time(store: &dyn Store) {
        let ttl = 30_000;
        assert!(try_acquire(store, "jobs", "a", 1_000, ttl).unwrap());
        assert!(
            !try_acquire(store, "jobs", "b", 2_000, ttl).unwrap(),
            "a holds it"
        );
        assert!(
            try_acquire(store, "jobs", "a", 20_000, ttl).unwrap(),
            "a renews"
        );
        assert!(
            !try_acquire(store, "jobs", "b", 49_999, ttl).unwrap(),
            "renewed"
        );
        assert!(
            try_acquire(store, "jobs", "b", 50_000, ttl).unwrap(),
            "expired: b takes over"
        );
        assert!(!try_acquire(store, "jobs", "a", 50_001, ttl).unwrap());
        release(store, "jobs", "a").unwrap();
        assert!(
            !try_acquire(store, "jobs", "a", 50_002, ttl).unwrap(),
            "a cannot release b's"
        );
        release(store, "jobs", "b").unwrap();
        assert!(try_acquire(store, "jobs", "a", 50_003, ttl).unwrap());
        // Concurrent contenders: exactly one wins.
        let winners: usize = std::thread::scope(|scope| {
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    scope.spawn(move || {
                        try_acquire(store, "race", &format!("r{i}"), 0, ttl).unwrap()
                    })
                })
                .collect();
            tasks
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn one_holder_at_a_time_on_memory() {
        one_holder_at_a_time(&MemoryStore::new());
    }
}
