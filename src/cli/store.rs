//! `stint store migrate`: move a sled data dir into PostgreSQL, to grow from one node to
//! several replicas without losing anything.
//!
//! Every table is copied in key order, page by page, into an empty database (refused
//! otherwise, so a mistaken target is never merged into), and the audit chain is verified
//! on the copy. The sled dir must not be in use (its lock makes sure). The replicas then
//! read the same master key file the data dir used: the copied secrets are sealed with it.

use std::path::Path;

use serde::Serialize;

use crate::audit::chain;
use crate::store::postgres::{PostgresStore, redact_url};
use crate::store::sled::SledStore;
use crate::store::{Batch, Store, Table};

use super::CliError;

/// Records per copied batch.
const PAGE: usize = 512;

/// What was copied, per table, and the chain check of the copy.
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    pub tables: Vec<(String, u64)>,
    pub records: u64,
    pub audit_intact: bool,
    pub audit_events_checked: u64,
}

/// Copies the sled store in `from` into the (empty) PostgreSQL database at `to`.
pub fn migrate(from: &Path, to: &str, cache_bytes: u64) -> Result<MigrateReport, CliError> {
    if !from.join("db").exists() {
        return Err(CliError::new(format!(
            "{} is not a Stint data dir (no db inside)",
            from.display()
        )));
    }
    let source = SledStore::open(from, cache_bytes).map_err(|e| CliError::new(e.to_string()))?;
    let target = PostgresStore::open(to, 2)
        .map_err(|e| CliError::new(format!("store {}: {e}", redact_url(to))))?;
    copy(&source, &target)
}

/// Copies every table of `source` into `target`, which must be empty; then verifies the
/// audit chain on `target`.
pub fn copy(source: &dyn Store, target: &dyn Store) -> Result<MigrateReport, CliError> {
    let err = |e: crate::store::StoreError| CliError::new(e.to_string());
    for table in Table::ALL {
        if target.last(table).map_err(err)?.is_some() {
            return Err(CliError::new(format!(
                "the target database is not empty (table {} has records): migrate into a new database",
                table.name()
            )));
        }
    }
    let mut tables = Vec::new();
    let mut records = 0;
    for table in Table::ALL {
        let mut after: Option<Vec<u8>> = None;
        let mut copied = 0u64;
        loop {
            let page = source
                .scan(table, &[], after.as_deref(), PAGE)
                .map_err(err)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            copied += page.len() as u64;
            target
                .commit(&Batch {
                    expects: Vec::new(),
                    writes: page
                        .into_iter()
                        .map(|(key, value)| (table, key, Some(value)))
                        .collect(),
                })
                .map_err(err)?;
        }
        records += copied;
        tables.push((table.name().to_string(), copied));
    }
    target.flush().map_err(err)?;
    let report = chain::verify(target, None).map_err(|e| CliError::new(e.to_string()))?;
    if !report.intact {
        return Err(CliError::new(format!(
            "the copied audit chain does not verify: {}",
            report.reason
        )));
    }
    Ok(MigrateReport {
        tables,
        records,
        audit_intact: report.intact,
        audit_events_checked: report.events_checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn copies_every_table_in_order_and_refuses_a_non_empty_target() {
        let source = MemoryStore::new();
        let mut writes = Vec::new();
        for table in Table::ALL {
            if table == Table::Audit {
                continue;
            }
            for i in 0..(PAGE + 3) {
                writes.push((table, format!("k{i:05}").into_bytes(), Some(b"v".to_vec())));
            }
        }
        source
            .commit(&Batch {
                expects: vec![],
                writes,
            })
            .unwrap();
        let target = MemoryStore::new();
        let report = copy(&source, &target).unwrap();
        let tables = Table::ALL.len() as u64 - 1;
        assert_eq!(report.records, tables * (PAGE as u64 + 3));
        for table in Table::ALL {
            assert_eq!(
                source.scan(table, &[], None, usize::MAX).unwrap(),
                target.scan(table, &[], None, usize::MAX).unwrap()
            );
        }
        let err = copy(&source, &target).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
