//! IAM administration with AWS's names, limits and conflict rules.
//!
//! Every change runs in one frame (`Broker::iam_change`): its body reads through a
//! [`Tx`], authorizes (`iam:<Action>` on the entity's ARN, with the condition keys AWS sets
//! for that action, from the record it read) and stages its writes; the writes commit in
//! the same atomic batch as the audit event, so a change without its record (or a record
//! of a change that did not happen) cannot exist. Allowed reads are not audited; denied or
//! failed ones are. Documents are validated by the policy engine when written, so a stored
//! policy always compiles.
//!
//! One file per entity: users, groups, roles, managed policies, attachments (managed,
//! inline and boundary), MFA devices, access keys, passwords, the first administrator, and
//! the per-user key and per-group member indexes (`index.rs`).

mod access_keys;
mod attachments;
mod bootstrap;
mod groups;
mod index;
mod mfa;
mod oidc;
mod passwords;
mod policies;
mod roles;
mod users;

pub use oidc::{OidcProvider, OidcProviderInput, is_loopback_host};

use std::collections::BTreeMap;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::audit::event::{Event, Outcome};
use crate::core::model::{
    self, Group, NameKind, Role, Tag, User, name_key, path_or_root, validate_name, validate_path,
};
use crate::core::policy::{self, PolicyKind};
use crate::store::{self, Table, Tx};

use super::caller::{Caller, RequestMeta};
use super::{Broker, BrokerError};

const MAX_GROUPS_PER_USER: usize = 10;
const MAX_ATTACHED_POLICIES: usize = 10;
const MAX_POLICY_VERSIONS: usize = 5;
const MAX_ACCESS_KEYS: usize = 2;

/// Request condition keys: `(key, values)` pairs added to the caller's context.
pub(super) type RequestKeys = Vec<(String, Vec<String>)>;

/// AWS-style pagination: `marker` is where the previous page stopped.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub marker: String,
    pub max_items: i32,
}

impl Page {
    fn limit(&self) -> Result<usize, BrokerError> {
        match self.max_items {
            0 => Ok(100),
            1..=1000 => Ok(self.max_items as usize),
            _ => Err(BrokerError::invalid("max_items", "must be 1 to 1000")),
        }
    }
    fn after(&self) -> Option<&str> {
        (!self.marker.is_empty()).then_some(self.marker.as_str())
    }
}

/// Which kind of identity holds a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    User,
    Group,
    Role,
}

impl Holder {
    fn noun(self) -> &'static str {
        match self {
            Holder::User => "User",
            Holder::Group => "Group",
            Holder::Role => "Role",
        }
    }
    fn name_kind(self) -> NameKind {
        match self {
            Holder::User => NameKind::User,
            Holder::Group => NameKind::Group,
            Holder::Role => NameKind::Role,
        }
    }
    fn inline_kind(self) -> PolicyKind {
        match self {
            Holder::User => PolicyKind::UserInline,
            Holder::Group => PolicyKind::GroupInline,
            Holder::Role => PolicyKind::RoleInline,
        }
    }
    /// AWS's aggregate inline-policy size per identity (non-whitespace characters).
    fn inline_quota(self) -> usize {
        match self {
            Holder::User => 2048,
            Holder::Group => 5120,
            Holder::Role => 10240,
        }
    }
}

/// What users, groups and roles share: a stored record with an ARN, tags (groups have
/// none), attached and inline policies, and (users and roles) a permissions boundary.
trait IamRecord: Serialize + DeserializeOwned {
    const TABLE: Table;
    /// Lower-case noun, as in ARNs and messages.
    const NOUN: &'static str;
    fn arn(&self) -> &str;
    fn path(&self) -> &str;
    fn tags(&self) -> &[Tag];
    fn attached(&mut self) -> &mut Vec<String>;
    fn inline(&mut self) -> &mut BTreeMap<String, String>;
    fn boundary(&mut self) -> Option<&mut Option<String>>;
}

macro_rules! iam_record {
    ($ty:ty, $table:expr, $noun:literal, tags: $($tags:ident)?, boundary: $($boundary:ident)?) => {
        impl IamRecord for $ty {
            const TABLE: Table = $table;
            const NOUN: &'static str = $noun;
            fn arn(&self) -> &str {
                &self.arn
            }
            fn path(&self) -> &str {
                &self.path
            }
            fn tags(&self) -> &[Tag] {
                $(return &self.$tags;)?
                #[allow(unreachable_code)]
                &[]
            }
            fn attached(&mut self) -> &mut Vec<String> {
                &mut self.attached_policies
            }
            fn inline(&mut self) -> &mut BTreeMap<String, String> {
                &mut self.inline_policies
            }
            fn boundary(&mut self) -> Option<&mut Option<String>> {
                $(return Some(&mut self.$boundary);)?
                #[allow(unreachable_code)]
                None
            }
        }
    };
}
iam_record!(User, Table::Users, "user", tags: tags, boundary: permissions_boundary);
iam_record!(Role, Table::Roles, "role", tags: tags, boundary: permissions_boundary);
iam_record!(Group, Table::Groups, "group", tags:, boundary:);

/// Object-safe access to the policy-holding fields of users, groups and roles.
trait HolderAccess {
    fn attached_list(&mut self) -> &mut Vec<String>;
    fn inline_map(&mut self) -> &mut BTreeMap<String, String>;
    fn boundary_slot(&mut self) -> Option<&mut Option<String>>;
}

impl<T: IamRecord> HolderAccess for T {
    fn attached_list(&mut self) -> &mut Vec<String> {
        self.attached()
    }
    fn inline_map(&mut self) -> &mut BTreeMap<String, String> {
        self.inline()
    }
    fn boundary_slot(&mut self) -> Option<&mut Option<String>> {
        self.boundary()
    }
}

// ---- condition keys (AWS Service Authorization Reference, IAM) ------------------------

/// `aws:ResourceTag/<key>`: the tags of the user or role acted on.
fn resource_tag_keys(tags: &[Tag]) -> RequestKeys {
    tags.iter()
        .map(|t| (format!("aws:ResourceTag/{}", t.key), vec![t.value.clone()]))
        .collect()
}

/// `aws:RequestTag/<key>` for each tag sent, and `aws:TagKeys` = their keys.
fn request_tag_keys(tags: &[Tag]) -> RequestKeys {
    let mut keys: RequestKeys = tags
        .iter()
        .map(|t| (format!("aws:RequestTag/{}", t.key), vec![t.value.clone()]))
        .collect();
    if !tags.is_empty() {
        keys.push(tag_keys_key(tags.iter().map(|t| t.key.clone()).collect()));
    }
    keys
}

fn tag_keys_key(keys: Vec<String>) -> (String, Vec<String>) {
    ("aws:TagKeys".into(), keys)
}

fn boundary_key(arn: &str) -> (String, Vec<String>) {
    ("iam:PermissionsBoundary".into(), vec![arn.to_string()])
}

fn policy_arn_key(arn: &str) -> (String, Vec<String>) {
    ("iam:PolicyARN".into(), vec![arn.to_string()])
}

/// Actions on an existing user or role for which AWS sets `iam:PermissionsBoundary` to
/// the boundary the entity has now (the Put/Create forms pass the requested one).
fn sets_current_boundary(action: &str) -> bool {
    matches!(
        action,
        "iam:AttachUserPolicy"
            | "iam:DetachUserPolicy"
            | "iam:PutUserPolicy"
            | "iam:DeleteUserPolicy"
            | "iam:DeleteUserPermissionsBoundary"
            | "iam:AttachRolePolicy"
            | "iam:DetachRolePolicy"
            | "iam:PutRolePolicy"
            | "iam:DeleteRolePolicy"
            | "iam:DeleteRolePermissionsBoundary"
    )
}

/// The keys for an action on an existing record: its tags, and its current boundary
/// where AWS sets that.
fn entity_keys<T: IamRecord>(action: &str, record: &mut T) -> RequestKeys {
    let mut keys = resource_tag_keys(record.tags());
    if sets_current_boundary(action)
        && let Some(Some(boundary)) = record.boundary()
    {
        keys.push(boundary_key(boundary));
    }
    keys
}

// ---- small checks ---------------------------------------------------------------------

fn non_whitespace_len(doc: &str) -> usize {
    doc.chars().filter(|c| !c.is_whitespace()).count()
}

fn not_found(what: &str, name: &str) -> BrokerError {
    BrokerError::NotFound(format!("{what} {name}"))
}

fn check_name(kind: NameKind, name: &str) -> Result<(), BrokerError> {
    validate_name(kind, name).map_err(|m| BrokerError::invalid(kind.field(), m))
}

fn check_path(path: &str) -> Result<String, BrokerError> {
    validate_path(path).map_err(|m| BrokerError::invalid("path", m))?;
    Ok(path_or_root(path))
}

fn parse_policy(field: &str, doc: &str, kind: PolicyKind) -> Result<(), BrokerError> {
    if doc.trim().is_empty() {
        return Err(BrokerError::invalid(field, "is required"));
    }
    policy::Policy::parse(doc, kind)
        .map(|_| ())
        .map_err(|error| BrokerError::MalformedPolicy {
            field: field.into(),
            error,
        })
}

/// AWS's bound on an ARN (2,048 characters), checked before the ARN is matched or logged.
fn check_arn(field: &str, arn: &str) -> Result<(), BrokerError> {
    if arn.len() > 2048 {
        return Err(BrokerError::invalid(
            field,
            format!("must be at most 2048 characters, got {}", arn.len()),
        ));
    }
    Ok(())
}

fn check_max_session(value: i32) -> Result<i32, BrokerError> {
    match value {
        0 => Ok(3600),
        3600..=43200 => Ok(value),
        _ => Err(BrokerError::invalid(
            "max_session_duration",
            format!("must be 3600 to 43200 seconds, got {value}"),
        )),
    }
}

fn check_description(description: &str) -> Result<(), BrokerError> {
    if description.chars().count() > 1000 {
        return Err(BrokerError::invalid(
            "description",
            "must be at most 1000 characters",
        ));
    }
    Ok(())
}

fn is_rotation(action: &str) -> bool {
    matches!(
        action,
        "iam:CreateLoginProfile"
            | "iam:UpdateLoginProfile"
            | "iam:DeleteLoginProfile"
            | "iam:ChangePassword"
            | "iam:EnableMfaDevice"
            | "iam:DeactivateMfaDevice"
            | "iam:ResyncMfaDevice"
            | "iam:CreateAccessKey"
            | "iam:UpdateAccessKey"
            | "iam:DeleteAccessKey"
    )
}

// ---- pages ----------------------------------------------------------------------------

/// A list page from the store: items after the marker, and the next marker.
fn page_of<T: DeserializeOwned>(
    broker: &Broker,
    table: Table,
    page: &Page,
    keep: impl Fn(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), BrokerError> {
    let limit = page.limit()?;
    let mut out = Vec::new();
    let mut after = page.after().map(str::to_owned);
    loop {
        let batch = store::read_page::<T>(broker.store.as_ref(), table, "", after.as_deref(), 256)?;
        let done = batch.len() < 256;
        for (key, item) in batch {
            after = Some(key.clone());
            if keep(&item) {
                if out.len() == limit {
                    // There is at least one more: stop before it.
                    let marker = out.last().map(|(k, _): &(String, T)| k.clone());
                    return Ok((out.into_iter().map(|(_, i)| i).collect(), marker));
                }
                out.push((key, item));
            }
        }
        if done {
            return Ok((out.into_iter().map(|(_, i)| i).collect(), None));
        }
    }
}

fn slice_page<T: Clone>(
    items: &[T],
    key: impl Fn(&T) -> String,
    page: &Page,
) -> Result<(Vec<T>, Option<String>), BrokerError> {
    let limit = page.limit()?;
    let rest: Vec<&T> = items
        .iter()
        .filter(|i| page.after().is_none_or(|after| key(i).as_str() > after))
        .collect();
    let truncated = rest.len() > limit;
    let taken: Vec<T> = rest.into_iter().take(limit).cloned().collect();
    let marker = truncated.then(|| taken.last().map(&key)).flatten();
    Ok((taken, marker))
}

// ---- the frame ------------------------------------------------------------------------

/// Authorization from inside a change, after the body has read (through its `Tx`) the
/// record whose ARN and tags the decision depends on.
struct Gate<'a> {
    broker: &'a Broker,
    caller: &'a Caller,
    meta: &'a RequestMeta,
    action: &'a str,
}

impl Gate<'_> {
    fn check(&self, resource: &str, keys: &[(String, Vec<String>)]) -> Result<(), BrokerError> {
        self.broker
            .require_with(self.caller, self.meta, self.action, resource, keys)
    }

    /// An authorization for another action on behalf of the same request.
    fn check_action(
        &self,
        action: &str,
        resource: &str,
        keys: &[(String, Vec<String>)],
    ) -> Result<(), BrokerError> {
        self.broker
            .require_with(self.caller, self.meta, action, resource, keys)
    }

    /// Reads `name`'s record through the transaction, authorizes the action on it (its
    /// ARN, tags and, where AWS sets it, boundary, plus `extra` keys), then answers
    /// NotFound if it does not exist — never before the caller was allowed to know.
    fn load<T: IamRecord>(
        &self,
        tx: &mut Tx<'_>,
        name: &str,
        extra: RequestKeys,
    ) -> Result<T, BrokerError> {
        let mut record: Option<T> = tx.get(T::TABLE, &name_key(name))?;
        let (arn, mut keys) = match record.as_mut() {
            Some(r) => (r.arn().to_string(), entity_keys(self.action, r)),
            None => (self.broker.account().iam_arn(T::NOUN, "/", name), vec![]),
        };
        keys.extend(extra);
        self.check(&arn, &keys)?;
        record.ok_or_else(|| not_found(T::NOUN, name))
    }
}

impl Broker {
    /// The frame of every IAM change: `body` reads through the transaction, authorizes
    /// with [`Gate`] and stages writes; they commit with the audit event (whatever the
    /// outcome) in one batch, or not at all.
    async fn iam_change<R>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        params: Value,
        mut body: impl FnMut(&mut Tx<'_>, &Gate<'_>) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        let now = self.now();
        let gate = Gate {
            broker: self,
            caller,
            meta,
            action,
        };
        self.audited(
            |tx| body(tx, &gate),
            |result| {
                Some(self.iam_event(meta, action, caller, &params, result.as_ref().err(), now))
            },
        )
        .await
    }

    /// The frame of every IAM read: authorized with the request's keys; audited only when
    /// refused or failed.
    #[allow(clippy::too_many_arguments)] // the frame every IAM read shares
    async fn iam_read<R>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        resource: &str,
        keys: &[(String, Vec<String>)],
        params: Value,
        body: impl FnOnce() -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        let now = self.now();
        let result = self
            .require_with(caller, meta, action, resource, keys)
            .and_then(|()| body());
        if let Err(err) = &result {
            let event = self.iam_event(meta, action, caller, &params, Some(err), now);
            self.audit.append(event).await?;
        }
        result
    }

    /// Audits a change refused before its frame ran (nothing to commit but the event).
    async fn iam_refused<R>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        params: &Value,
        err: BrokerError,
    ) -> Result<R, BrokerError> {
        let event = self.iam_event(meta, action, caller, params, Some(&err), self.now());
        self.audit.append(event).await?;
        Err(err)
    }

    fn iam_event(
        &self,
        meta: &RequestMeta,
        action: &str,
        caller: &Caller,
        params: &Value,
        error: Option<&BrokerError>,
        now: std::time::SystemTime,
    ) -> Event {
        let outcome = match error {
            None => Outcome::Allow,
            Some(BrokerError::AccessDenied { .. }) => Outcome::Deny,
            Some(_) => Outcome::Error,
        };
        let mut event = self.event(meta, action, caller.arn(), outcome, now);
        event.params = params.clone();
        event.rotation = is_rotation(action);
        if let Some(err) = error {
            event.reason = err.to_string();
        }
        event
    }

    /// A stored user, group or role, its ARN (a default one when it does not exist) and
    /// the condition keys of `action` on it — for reads, outside a transaction.
    fn entity<T: IamRecord>(
        &self,
        action: &str,
        name: &str,
    ) -> Result<(Option<T>, String, RequestKeys), BrokerError> {
        let mut record: Option<T> = store::read(self.store.as_ref(), T::TABLE, &name_key(name))?;
        Ok(match record.as_mut() {
            Some(r) => {
                let keys = entity_keys(action, r);
                let arn = r.arn().to_string();
                (record, arn, keys)
            }
            None => (None, self.account().iam_arn(T::NOUN, "/", name), vec![]),
        })
    }

    /// Get{User,Group,Role}: `name`'s record, authorized on its ARN and tags, handed to
    /// `answer`; NotFound only once the caller was allowed to know.
    async fn get_entity<T: IamRecord, R>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        name: &str,
        answer: impl FnOnce(T) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        let (record, arn, keys) = self.entity::<T>(action, name)?;
        let params = name_param::<T>(name);
        self.iam_read(caller, meta, action, &arn, &keys, params, || {
            answer(record.ok_or_else(|| not_found(T::NOUN, name))?)
        })
        .await
    }

    /// Delete{User,Group,Role}: refused with DeleteConflict naming everything `blockers`
    /// finds still hanging off the record, else deleted.
    async fn delete_entity<T: IamRecord>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        name: &str,
        mut blockers: impl FnMut(&mut Tx<'_>, &mut T) -> Result<Vec<&'static str>, BrokerError>,
    ) -> Result<(), BrokerError> {
        self.iam_change(caller, meta, action, name_param::<T>(name), |tx, gate| {
            let mut record: T = gate.load(tx, name, vec![])?;
            let blockers = blockers(tx, &mut record)?;
            if !blockers.is_empty() {
                return Err(BrokerError::DeleteConflict(format!(
                    "{} {name}: it still has {}",
                    T::NOUN,
                    blockers.join(", ")
                )));
            }
            tx.delete(T::TABLE, &name_key(name));
            Ok(())
        })
        .await
    }

    /// List{Users,Groups,Roles}: a page of the records whose path starts with
    /// `path_prefix`.
    async fn list_entities<T: IamRecord>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<T>, Option<String>), BrokerError> {
        let resource = self.account().iam_arn(T::NOUN, "/", "*");
        let prefix = path_or_root(path_prefix);
        self.iam_read(
            caller,
            meta,
            action,
            &resource,
            &[],
            serde_json::json!({"path_prefix": path_prefix}),
            || page_of::<T>(self, T::TABLE, page, |r| r.path().starts_with(&prefix)),
        )
        .await
    }

    /// Resolves an empty user name to the calling user.
    fn target_user(&self, caller: &Caller, user_name: &str) -> Result<String, BrokerError> {
        if !user_name.is_empty() {
            check_name(NameKind::User, user_name)?;
            return Ok(user_name.to_string());
        }
        caller.user_name().map(str::to_owned).ok_or_else(|| {
            BrokerError::invalid(
                "user_name",
                "is required when the caller is not an IAM user",
            )
        })
    }

    fn ids(&self, prefix: &str) -> Result<String, BrokerError> {
        Ok(model::unique_id(prefix, &self.random::<16>()?))
    }

    /// The boundary named by a request must be an existing managed policy.
    fn check_boundary(&self, arn: &str) -> Result<(), BrokerError> {
        if !arn.is_empty() && self.managed_document(arn)?.is_none() {
            return Err(BrokerError::invalid(
                "permissions_boundary",
                format!("policy {arn} does not exist"),
            ));
        }
        Ok(())
    }

    pub fn has_users(&self) -> Result<bool, BrokerError> {
        Ok(!self.store.scan(Table::Users, b"", None, 1)?.is_empty())
    }
}

/// The audit parameters naming a user, group or role: `{"user_name": name}` and so on.
fn name_param<T: IamRecord>(name: &str) -> Value {
    let mut params = serde_json::Map::new();
    params.insert(format!("{}_name", T::NOUN), name.into());
    params.into()
}

/// What blocks deleting a user, group or role in any case: its policies.
fn policy_blockers<T: IamRecord>(record: &mut T) -> Vec<&'static str> {
    let mut blockers = Vec::new();
    if !record.attached().is_empty() {
        blockers.push("attached policies");
    }
    if !record.inline().is_empty() {
        blockers.push("inline policies");
    }
    blockers
}

/// Stages a new record, refusing a name already taken.
fn insert_new<T: Serialize>(
    tx: &mut Tx<'_>,
    table: Table,
    key: &str,
    record: &T,
    what: &str,
    name: &str,
) -> Result<(), BrokerError> {
    if tx.get_raw(table, key.as_bytes())?.is_some() {
        return Err(BrokerError::AlreadyExists(format!("{what} {name}")));
    }
    tx.put(table, key, record);
    Ok(())
}

/// Reads, changes and stages one user, group or role (already authorized by the caller).
fn update_in<T: IamRecord, R>(
    tx: &mut Tx<'_>,
    gate: &Gate<'_>,
    name: &str,
    extra: RequestKeys,
    change: impl FnOnce(&mut T) -> Result<R, BrokerError>,
) -> Result<R, BrokerError> {
    let mut record: T = gate.load(tx, name, extra)?;
    let out = change(&mut record)?;
    tx.put(T::TABLE, &name_key(name), &record);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, value: &str) -> Tag {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }

    fn keys(pairs: &[(&str, &[&str])]) -> RequestKeys {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn tagging_sets_request_tags_and_tag_keys() {
        let cases: [(&[Tag], &[&str], RequestKeys); 3] = [
            (&[], &[], vec![]),
            (
                &[tag("team", "red"), tag("cost", "1")],
                &[],
                keys(&[
                    ("aws:RequestTag/team", &["red"]),
                    ("aws:RequestTag/cost", &["1"]),
                    ("aws:TagKeys", &["team", "cost"]),
                ]),
            ),
            // Untag: the keys removed.
            (
                &[],
                &["protected", "team"],
                keys(&[("aws:TagKeys", &["protected", "team"])]),
            ),
        ];
        for (tags, remove, want) in cases {
            let remove: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                users::tagging_keys(tags, &remove),
                want,
                "{tags:?} {remove:?}"
            );
        }
    }

    #[test]
    fn entity_keys_carry_resource_tags_and_the_current_boundary_where_aws_sets_it() {
        let mut user = User {
            v: model::RECORD_VERSION,
            name: "u".into(),
            id: "AIDAU".into(),
            path: "/".into(),
            arn: "arn:stint:iam::1:user/u".into(),
            create_date: 0,
            tags: vec![tag("protected", "true")],
            login_profile: None,
            groups: vec![],
            attached_policies: vec![],
            inline_policies: BTreeMap::new(),
            permissions_boundary: Some("arn:b".into()),
        };
        let tag_only = keys(&[("aws:ResourceTag/protected", &["true"])]);
        let with_boundary = keys(&[
            ("aws:ResourceTag/protected", &["true"]),
            ("iam:PermissionsBoundary", &["arn:b"]),
        ]);
        for (action, want) in [
            ("iam:DeleteUser", &tag_only),
            ("iam:TagUser", &tag_only),
            ("iam:GetUser", &tag_only),
            ("iam:AttachUserPolicy", &with_boundary),
            ("iam:PutUserPolicy", &with_boundary),
            ("iam:DeleteUserPermissionsBoundary", &with_boundary),
            // Put names the new boundary itself; the old one is not the request's.
            ("iam:PutUserPermissionsBoundary", &tag_only),
        ] {
            assert_eq!(&entity_keys(action, &mut user), want, "{action}");
        }
    }
}
