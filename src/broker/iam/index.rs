//! Per-user and per-group index records in [`Table::Meta`], so that creating an access key,
//! deleting a user and deleting a group read only the rows of that user or group (as
//! transaction preconditions) instead of every key or every user.
//!
//! - `iam/user-access-keys/<user name_key>` → the user's access key ids;
//! - `iam/group-members/<group name_key>` → the group's member user names.
//!
//! Each list is one record, so two requests adding to the same list conflict and one of
//! them retries (a count over a prefix could miss the other's new row). A store written
//! by a version without indexes has no `iam/indexes` marker: the first change that needs
//! an index builds both from the tables in its own batch and sets the marker. Every writer
//! goes through [`user_key_ids`] or [`group_members`] first, so an index row never exists
//! without the marker.

use std::collections::BTreeMap;

use crate::core::model::{AccessKey, User, name_key};
use crate::store::{Table, Tx};

use super::super::BrokerError;

const MARKER: &str = "iam/indexes";
const VERSION: u32 = 1;

fn access_keys_key(user_name: &str) -> String {
    format!("iam/user-access-keys/{}", name_key(user_name))
}

fn members_key(group_name: &str) -> String {
    format!("iam/group-members/{}", name_key(group_name))
}

/// Whether the indexes exist (read through `tx`, so it is a precondition).
pub(super) fn indexed(tx: &mut Tx<'_>) -> Result<bool, BrokerError> {
    Ok(tx
        .get::<u32>(Table::Meta, MARKER)?
        .is_some_and(|v| v >= VERSION))
}

/// Builds both indexes from the tables (once per store, in the caller's batch).
fn ensure(tx: &mut Tx<'_>) -> Result<(), BrokerError> {
    if indexed(tx)? {
        return Ok(());
    }
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in tx.scan::<AccessKey>(Table::AccessKeys, "")? {
        keys.entry(access_keys_key(&key.user_name))
            .or_default()
            .push(key.access_key_id);
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for user in tx.scan::<User>(Table::Users, "")? {
        for group in &user.groups {
            members
                .entry(members_key(group))
                .or_default()
                .push(user.name.clone());
        }
    }
    for (key, list) in keys.iter().chain(&members) {
        tx.put(Table::Meta, key, list);
    }
    tx.put(Table::Meta, MARKER, &VERSION);
    Ok(())
}

fn read_list(tx: &mut Tx<'_>, key: &str) -> Result<Vec<String>, BrokerError> {
    ensure(tx)?;
    Ok(tx.get::<Vec<String>>(Table::Meta, key)?.unwrap_or_default())
}

fn write_list(tx: &mut Tx<'_>, key: &str, list: &[String]) {
    if list.is_empty() {
        tx.delete(Table::Meta, key);
    } else {
        tx.put(Table::Meta, key, &list);
    }
}

/// The ids of a user's access keys.
pub(super) fn user_key_ids(tx: &mut Tx<'_>, user_name: &str) -> Result<Vec<String>, BrokerError> {
    read_list(tx, &access_keys_key(user_name))
}

pub(super) fn set_user_key_ids(tx: &mut Tx<'_>, user_name: &str, ids: &[String]) {
    write_list(tx, &access_keys_key(user_name), ids);
}

/// The names of a group's members.
pub(super) fn group_members(tx: &mut Tx<'_>, group_name: &str) -> Result<Vec<String>, BrokerError> {
    read_list(tx, &members_key(group_name))
}

pub(super) fn set_group_members(tx: &mut Tx<'_>, group_name: &str, members: &[String]) {
    write_list(tx, &members_key(group_name), members);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::core::model::{AccessKeyStatus, RECORD_VERSION};
    use crate::store::memory::MemoryStore;
    use crate::store::{Batch, Store};

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            v: RECORD_VERSION,
            name: name.into(),
            id: format!("AIDA{name}"),
            path: "/".into(),
            arn: format!("arn:stint:iam::1:user/{name}"),
            create_date: 0,
            tags: vec![],
            login_profile: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attached_policies: vec![],
            inline_policies: BTreeMap::new(),
            permissions_boundary: None,
        }
    }

    fn key(id: &str, user_name: &str) -> AccessKey {
        AccessKey {
            v: RECORD_VERSION,
            access_key_id: id.into(),
            user_name: user_name.into(),
            secret_hash: String::new(),
            status: AccessKeyStatus::Active,
            create_date: 0,
            last_used: None,
        }
    }

    /// A store as the version before the indexes wrote it: keys and memberships only in
    /// the access-key and user records.
    fn legacy_store() -> MemoryStore {
        let store = MemoryStore::new();
        let mut tx = Tx::new(&store);
        tx.put(Table::Users, "alice", &user("Alice", &["Devs"]));
        tx.put(Table::Users, "bob", &user("bob", &["devs", "ops"]));
        tx.put(Table::Users, "carol", &user("carol", &[]));
        tx.put(Table::AccessKeys, "AKIA1", &key("AKIA1", "Alice"));
        tx.put(Table::AccessKeys, "AKIA2", &key("AKIA2", "bob"));
        tx.put(Table::AccessKeys, "AKIA3", &key("AKIA3", "alice"));
        tx.commit().expect("seed");
        store
    }

    fn commit(store: &MemoryStore, batch: Batch) {
        store.commit(&batch).expect("commit");
    }

    #[test]
    fn a_legacy_store_is_indexed_by_the_first_change_that_needs_it() {
        let store = legacy_store();
        let mut tx = Tx::new(&store);
        assert_eq!(
            user_key_ids(&mut tx, "ALICE").expect("ids"),
            ["AKIA1", "AKIA3"]
        );
        assert_eq!(
            group_members(&mut tx, "DEVS").expect("members"),
            ["Alice", "bob"]
        );
        assert_eq!(group_members(&mut tx, "ops").expect("members"), ["bob"]);
        assert!(user_key_ids(&mut tx, "carol").expect("ids").is_empty());
        commit(&store, tx.into_batch());

        let mut tx = Tx::new(&store);
        assert!(indexed(&mut tx).expect("marker"));
        assert_eq!(user_key_ids(&mut tx, "bob").expect("ids"), ["AKIA2"]);
    }

    #[test]
    fn an_indexed_store_reads_only_the_rows_of_that_user_or_group() {
        let store = legacy_store();
        let mut tx = Tx::new(&store);
        ensure(&mut tx).expect("backfill");
        commit(&store, tx.into_batch());

        for (read, row) in [
            (
                user_key_ids as fn(&mut Tx<'_>, &str) -> Result<Vec<String>, BrokerError>,
                "iam/user-access-keys/alice",
            ),
            (group_members, "iam/group-members/alice"),
        ] {
            let mut tx = Tx::new(&store);
            read(&mut tx, "alice").expect("read");
            let mut read_keys: Vec<(Table, String)> = tx
                .into_batch()
                .expects
                .into_iter()
                .map(|(t, k, _)| (t, String::from_utf8(k).expect("utf8")))
                .collect();
            read_keys.sort_by(|a, b| a.1.cmp(&b.1));
            let mut want = vec![
                (Table::Meta, row.to_string()),
                (Table::Meta, MARKER.to_string()),
            ];
            want.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(read_keys, want);
        }
    }

    #[test]
    fn emptied_lists_are_deleted() {
        let store = legacy_store();
        let mut tx = Tx::new(&store);
        assert_eq!(user_key_ids(&mut tx, "bob").expect("ids").len(), 1);
        set_user_key_ids(&mut tx, "bob", &[]);
        commit(&store, tx.into_batch());
        let raw = store
            .get(Table::Meta, b"iam/user-access-keys/bob")
            .expect("get");
        assert_eq!(raw, None);
        let mut tx = Tx::new(&store);
        assert!(user_key_ids(&mut tx, "bob").expect("ids").is_empty());
    }
}
