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
