//! The sled-backed [`Store`].
//!
//! One sled tree per [`Table`]; a [`Batch`] is one multi-tree sled transaction that checks
//! its preconditions and writes, so a change lands whole or not at all.
//!
//! Durability: sled 0.34's `flush()` ends in `sync_file_range`, which survives a process
//! crash but not a power loss (sled issue 1452). [`SledStore::flush`] therefore follows it
//! with an `fdatasync` of sled's data file.
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

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Batch, Entries, Store, StoreError, Table};

pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    data_file: File,
    _lock: File,
}

fn io(err: impl std::fmt::Display) -> StoreError {
    StoreError::Io(err.to_string())
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
        let config = sled::Config::new()
            .path(&db_dir)
            .cache_capacity(cache_bytes);
        // We hold LOCK, so no other process has the dir; if sled still reports its own
        // file lock, an earlier store in this process is finishing its background flush
        // (sled releases the lock when its threads exit). Wait for that, briefly.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(err)) if attempts < 100 && err.to_string().contains("lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(err) => return Err(io(err)),
            }
        };
        let trees = Table::ALL
            .iter()
            .map(|table| db.open_tree(table.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        make_private(&db_dir)?;
        let data_file = File::open(db_dir.join("db")).map_err(io)?;
        Ok(Self {
            db,
            trees,
            data_file,
            _lock: lock,
        })
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        // `trees` is opened in `Table::ALL` order, which is declaration order.
        &self.trees[table as usize]
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
        Ok(self.tree(table).get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let tree = self.tree(table);
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
            let (key, value) = entry.map_err(io)?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<super::Entry>, StoreError> {
        Ok(self
            .tree(table)
            .last()
            .map_err(io)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut tables: Vec<Table> = batch
            .expects
            .iter()
            .chain(&batch.writes)
            .map(|(t, _, _)| *t)
            .collect();
        tables.sort();
        tables.dedup();
        let trees: Vec<sled::Tree> = tables.iter().map(|t| self.tree(*t).clone()).collect();
        #[allow(clippy::expect_used)] // every table of the batch was collected above
        let index = |table: Table| tables.binary_search(&table).expect("table collected above");
        let result = trees.as_slice().transaction(|view| {
            for (table, key, expected) in &batch.expects {
                let current = view[index(*table)].get(key)?;
                if current.as_deref() != expected.as_deref() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            for (table, key, value) in &batch.writes {
                let tree = &view[index(*table)];
                match value {
                    Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                    None => tree.remove(key.as_slice())?,
                };
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(StoreError::Conflict),
            Err(TransactionError::Storage(err)) => Err(io(err)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        self.data_file.sync_data().map_err(io)
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
}
