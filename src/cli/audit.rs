//! `stint audit verify|export` without a daemon: straight on the data directory.

use std::io::Write;
use std::path::Path;

use crate::audit::AuditError;
use crate::audit::chain::{self, VerifyReport};
use crate::audit::event::EventFilter;
use crate::audit::writer::list_records;
use crate::store::Store;
use crate::store::sled::SledStore;

/// Verifies the chain in `data_dir` against the public keys stored with its checkpoints
/// (see [`chain`] for what that does and does not prove). Fails with
/// `StoreError::Locked` while a daemon holds the directory: use the `VerifyChain` RPC then.
pub fn verify_offline(data_dir: &Path, cache_bytes: u64) -> Result<VerifyReport, AuditError> {
    let store = SledStore::open(data_dir, cache_bytes)?;
    chain::verify(&store, None)
}

/// Writes every record matching `filter` as one JSON line (the stored record: event,
/// `prev_hash`, `hash`), in seq order. Returns how many were written.
pub fn export_jsonl(
    store: &dyn Store,
    out: &mut dyn Write,
    filter: &EventFilter,
) -> Result<u64, AuditError> {
    let mut after = 0;
    let mut written = 0;
    loop {
        let (records, next) = list_records(store, filter, after, 1024, u64::MAX)?;
        for record in &records {
            serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        match next {
            Some(next) => after = next,
            None => break,
        }
    }
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::chain::{Breach, Record};
    use crate::audit::event::{Event, Outcome};
    use crate::audit::testing::TestSigner;
    use crate::audit::writer::{AuditConfig, AuditLog};
    use crate::store::memory::MemoryStore;
    use crate::store::{Batch, StoreError, Table};

    async fn write_events(store: Arc<dyn Store>, n: u64) {
        let log = AuditLog::open(store, AuditConfig::default()).unwrap();
        log.set_signer(Some(Arc::new(TestSigner::new("k1", 1))));
        for i in 1..=n {
            let outcome = if i % 2 == 0 {
                Outcome::Deny
            } else {
                Outcome::Allow
            };
            log.append(Event::new(i as i64, "sts:GetSessionToken", outcome))
                .await
                .unwrap();
        }
    }

    #[test]
    fn verify_offline_on_a_sled_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(SledStore::open(dir.path(), 4 << 20).unwrap());
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(write_events(store.clone(), 12));
            // While the "daemon" holds the directory, offline verify is refused.
            assert!(matches!(
                verify_offline(dir.path(), 1 << 20),
                Err(AuditError::Store(StoreError::Locked(_)))
            ));
        }
        let report = verify_offline(dir.path(), 1 << 20).unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!(report.events_checked, 12);

        {
            let store = SledStore::open(dir.path(), 4 << 20).unwrap();
            store
                .commit(&Batch {
                    expects: vec![],
                    writes: vec![(Table::Audit, chain::record_key(4).to_vec(), None)],
                })
                .unwrap();
            store.flush().unwrap();
        }
        let report = verify_offline(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            (report.first_broken_seq, report.breach),
            (Some(4), Some(Breach::Deleted))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn export_writes_json_lines() {
        let store = Arc::new(MemoryStore::new());
        write_events(store.clone(), 7).await;
        let mut out = Vec::new();
        assert_eq!(
            export_jsonl(&*store, &mut out, &EventFilter::default()).unwrap(),
            7
        );
        let records: Vec<Record> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            records.iter().map(Record::seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(records[1].prev_hash, records[0].hash);

        let denied = EventFilter {
            outcome: Some(Outcome::Deny),
            ..EventFilter::default()
        };
        let mut out = Vec::new();
        assert_eq!(export_jsonl(&*store, &mut out, &denied).unwrap(), 3);
    }
}
