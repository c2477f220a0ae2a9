//! `stint audit verify|export` without a daemon: straight on the data directory.

use std::io::Write;
use std::path::Path;

use crate::audit::chain::{self, VerifyReport};
use crate::audit::event::EventFilter;
use crate::audit::writer::list_records;
use crate::audit::AuditError;
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
