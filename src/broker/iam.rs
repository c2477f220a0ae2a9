//! IAM administration with AWS's names, limits and conflict rules.
//!
//! Every call is authorized first (`iam:<Action>` on the entity's ARN, from the caller's
//! effective policies) and audited whatever the outcome. Documents are validated by the
//! policy engine when written, so a stored policy always compiles.

use std::collections::{BTreeMap, HashMap};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::audit::event::Outcome;
use crate::core::authn::{password, totp};
use crate::core::model::{
    self, AccessKey, AccessKeyStatus, Group, ManagedPolicy, MfaDevice, NameKind, PasswordPolicy,
    PolicyVersion, RECORD_VERSION, Role, Tag, User, name_key, path_or_root, validate_name,
    validate_path, validate_tags,
};
use crate::core::policy::{self, PolicyKind};
use crate::core::secret::{SecretBytes, SecretString};
use crate::store::{self, Table, Tx};

use super::caller::{Caller, RequestMeta, builtin_name};
use super::sts::{access_key_hash, mfa_aad, mfa_key, mfa_prefix};
use super::{Broker, BrokerError, unix_ms};

const MAX_GROUPS_PER_USER: usize = 10;
const MAX_ATTACHED_POLICIES: usize = 10;
const MAX_POLICY_VERSIONS: usize = 5;
const MAX_ACCESS_KEYS: usize = 2;
/// How far (in 30 s steps, each way) ResyncMfaDevice searches for the device's codes.
const RESYNC_WINDOW_STEPS: u64 = 40;
const PASSWORD_POLICY_KEY: &str = "account/password_policy";

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
    fn table(self) -> Table {
        match self {
            Holder::User => Table::Users,
            Holder::Group => Table::Groups,
            Holder::Role => Table::Roles,
        }
    }
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

/// The policy-holding parts shared by users, groups and roles.
trait HolderRecord: Serialize + DeserializeOwned {
    fn attached(&mut self) -> &mut Vec<String>;
    fn inline(&mut self) -> &mut BTreeMap<String, String>;
    fn boundary(&mut self) -> Option<&mut Option<String>>;
}

macro_rules! holder_record {
    ($ty:ty $(, $boundary:ident)?) => {
        impl HolderRecord for $ty {
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
holder_record!(User, permissions_boundary);
holder_record!(Role, permissions_boundary);
holder_record!(Group);

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

impl Broker {
    /// Authorizes, runs `body`, and audits the outcome — the frame of every IAM call.
    #[allow(clippy::too_many_arguments)] // the frame every IAM call shares
    async fn iam_call<R>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        resource: &str,
        params: Value,
        mutates: bool,
        body: impl FnOnce() -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        let now = self.now();
        let result = self
            .require(caller, meta, action, resource)
            .and_then(|()| body());
        // Reads are audited only when denied; every change attempt is audited.
        if mutates || result.is_err() {
            let outcome = match &result {
                Ok(_) => Outcome::Allow,
                Err(BrokerError::AccessDenied { .. }) => Outcome::Deny,
                Err(_) => Outcome::Error,
            };
            let mut event = self.event(meta, action, caller.arn(), outcome, now);
            event.params = params;
            event.rotation = is_rotation(action);
            if let Err(err) = &result {
                event.reason = err.to_string();
            }
            self.audit.append(event).await?;
        }
        result
    }

    fn user_arn_for(&self, name: &str) -> Result<String, BrokerError> {
        Ok(match self.load_user(name)? {
            Some(user) => user.arn,
            None => self.account().user_arn("/", name),
        })
    }

    fn holder_arn(&self, holder: Holder, name: &str) -> Result<String, BrokerError> {
        let key = name_key(name);
        let arn = match holder {
            Holder::User => {
                store::read::<User>(self.store.as_ref(), Table::Users, &key)?.map(|r| r.arn)
            }
            Holder::Group => {
                store::read::<Group>(self.store.as_ref(), Table::Groups, &key)?.map(|r| r.arn)
            }
            Holder::Role => {
                store::read::<Role>(self.store.as_ref(), Table::Roles, &key)?.map(|r| r.arn)
            }
        };
        Ok(arn.unwrap_or_else(|| {
            self.account()
                .iam_arn(&holder.noun().to_lowercase(), "/", name)
        }))
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

    // ---- users -------------------------------------------------------------------------

    pub async fn create_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        path: &str,
        tags: Vec<Tag>,
        permissions_boundary: &str,
    ) -> Result<User, BrokerError> {
        check_name(NameKind::User, user_name)?;
        let path = check_path(path)?;
        validate_tags(&tags).map_err(|m| BrokerError::invalid("tags", m))?;
        let arn = self.account().user_arn(&path, user_name);
        let params = json!({"user_name": user_name, "path": path, "tags": tags, "permissions_boundary": permissions_boundary});
        let now = self.now();
        self.iam_call(caller, meta, "iam:CreateUser", &arn, params, true, || {
            self.check_boundary(permissions_boundary)?;
            let user = User {
                v: RECORD_VERSION,
                name: user_name.into(),
                id: self.ids("AIDA")?,
                path: path.clone(),
                arn: arn.clone(),
                create_date: unix_ms(now),
                tags: tags.clone(),
                login_profile: None,
                groups: vec![],
                attached_policies: vec![],
                inline_policies: BTreeMap::new(),
                permissions_boundary: (!permissions_boundary.is_empty())
                    .then(|| permissions_boundary.to_string()),
            };
            self.insert_new(Table::Users, &name_key(user_name), &user, "user", user_name)?;
            Ok(user)
        })
        .await
    }

    fn insert_new<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        record: &T,
        what: &str,
        name: &str,
    ) -> Result<(), BrokerError> {
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            if tx.get_raw(table, key.as_bytes())?.is_some() {
                return Err(BrokerError::AlreadyExists(format!("{what} {name}")));
            }
            tx.put(table, key, record);
            Ok(())
        })
    }

    fn check_boundary(&self, arn: &str) -> Result<(), BrokerError> {
        if !arn.is_empty() && self.managed_document(arn)?.is_none() {
            return Err(BrokerError::invalid(
                "permissions_boundary",
                format!("policy {arn} does not exist"),
            ));
        }
        Ok(())
    }

    pub async fn get_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<User, BrokerError> {
        let name = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&name)?;
        self.iam_call(
            caller,
            meta,
            "iam:GetUser",
            &arn,
            json!({"user_name": name}),
            false,
            || {
                self.load_user(&name)?
                    .ok_or_else(|| not_found("user", &name))
            },
        )
        .await
    }

    pub async fn list_users(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<User>, Option<String>), BrokerError> {
        let resource = self.account().user_arn("/", "*");
        self.iam_call(
            caller,
            meta,
            "iam:ListUsers",
            &resource,
            json!({"path_prefix": path_prefix}),
            false,
            || {
                page_of::<User>(self, Table::Users, page, |u| {
                    u.path.starts_with(path_or_root(path_prefix).as_str())
                })
            },
        )
        .await
    }

    pub async fn delete_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let arn = self.user_arn_for(user_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:DeleteUser",
            &arn,
            json!({"user_name": user_name}),
            true,
            || {
                let key = name_key(user_name);
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let user: User = tx
                        .get(Table::Users, &key)?
                        .ok_or_else(|| not_found("user", user_name))?;
                    let mut blockers = Vec::new();
                    if user.login_profile.is_some() {
                        blockers.push("a login profile");
                    }
                    if !user.groups.is_empty() {
                        blockers.push("group memberships");
                    }
                    if !user.attached_policies.is_empty() {
                        blockers.push("attached policies");
                    }
                    if !user.inline_policies.is_empty() {
                        blockers.push("inline policies");
                    }
                    if !tx
                        .scan::<MfaDevice>(Table::MfaDevices, &mfa_prefix(user_name))?
                        .is_empty()
                    {
                        blockers.push("MFA devices");
                    }
                    let keys: Vec<AccessKey> = tx.scan(Table::AccessKeys, "")?;
                    if keys.iter().any(|k| name_key(&k.user_name) == key) {
                        blockers.push("access keys");
                    }
                    if !blockers.is_empty() {
                        return Err(BrokerError::DeleteConflict(format!(
                            "user {user_name}: it still has {}",
                            blockers.join(", ")
                        )));
                    }
                    tx.delete(Table::Users, &key);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn tag_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        tags: Vec<Tag>,
        remove: Vec<String>,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let arn = self.user_arn_for(user_name)?;
        let action = if remove.is_empty() {
            "iam:TagUser"
        } else {
            "iam:UntagUser"
        };
        self.iam_call(
            caller,
            meta,
            action,
            &arn,
            json!({"user_name": user_name, "tags": tags, "tag_keys": remove}),
            true,
            || {
                self.update_record::<User>(Table::Users, user_name, "user", |user| {
                    user.tags.retain(|t| {
                        !remove.iter().any(|k| k == &t.key) && !tags.iter().any(|n| n.key == t.key)
                    });
                    user.tags.extend(tags.iter().cloned());
                    validate_tags(&user.tags).map_err(|m| BrokerError::invalid("tags", m))
                })
            },
        )
        .await
    }

    fn update_record<T: Serialize + DeserializeOwned>(
        &self,
        table: Table,
        name: &str,
        what: &str,
        mut change: impl FnMut(&mut T) -> Result<(), BrokerError>,
    ) -> Result<(), BrokerError> {
        let key = name_key(name);
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let mut record: T = tx.get(table, &key)?.ok_or_else(|| not_found(what, name))?;
            change(&mut record)?;
            tx.put(table, &key, &record);
            Ok(())
        })
    }

    // ---- passwords ---------------------------------------------------------------------

    pub fn password_policy(&self) -> Result<PasswordPolicy, BrokerError> {
        Ok(store::read(self.store.as_ref(), Table::Meta, PASSWORD_POLICY_KEY)?.unwrap_or_default())
    }

    async fn hash_new_password(&self, password: &SecretString) -> Result<String, BrokerError> {
        self.password_policy()?
            .check(password.expose())
            .map_err(|m| BrokerError::invalid("password", m))?;
        let salt: [u8; 16] = self.random()?;
        let params = self.settings.argon2;
        let password = password.clone();
        Ok(self
            .hash_job(move || password::hash_password(&password, &salt, &params))
            .await??)
    }

    /// CreateLoginProfile (`create = true`) or UpdateLoginProfile: an admin sets a password.
    pub async fn set_login_profile(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        password: &SecretString,
        password_reset_required: bool,
        create: bool,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let arn = self.user_arn_for(user_name)?;
        let action = if create {
            "iam:CreateLoginProfile"
        } else {
            "iam:UpdateLoginProfile"
        };
        // Authorize before paying for a hash.
        if let Err(err) = self.require(caller, meta, action, &arn) {
            return self
                .iam_call(
                    caller,
                    meta,
                    action,
                    &arn,
                    json!({"user_name": user_name}),
                    true,
                    || Err::<(), _>(err),
                )
                .await;
        }
        let phc = if password.expose().is_empty() && !create {
            None
        } else {
            Some(self.hash_new_password(password).await?)
        };
        let now = unix_ms(self.now());
        let params =
            json!({"user_name": user_name, "password_reset_required": password_reset_required});
        self.iam_call(caller, meta, action, &arn, params, true, || {
            self.update_record::<User>(Table::Users, user_name, "user", |user| {
                match (&mut user.login_profile, create) {
                    (Some(_), true) => Err(BrokerError::AlreadyExists(format!(
                        "login profile for user {user_name}"
                    ))),
                    (None, false) => Err(not_found("login profile for user", user_name)),
                    (profile, _) => {
                        let mut history = profile
                            .as_ref()
                            .map(|p| {
                                let mut h = vec![p.phc.clone()];
                                h.extend(p.history.iter().cloned());
                                h.truncate(24);
                                h
                            })
                            .unwrap_or_default();
                        let (phc, last_changed) = match (&phc, profile.as_ref()) {
                            (Some(new), _) => (new.clone(), now),
                            (None, Some(old)) => {
                                history = old.history.clone();
                                (old.phc.clone(), old.last_changed)
                            }
                            (None, None) => {
                                return Err(BrokerError::invalid("password", "is required"));
                            }
                        };
                        *profile = Some(model::LoginProfile {
                            phc,
                            create_date: profile.as_ref().map_or(now, |p| p.create_date),
                            password_reset_required,
                            last_changed,
                            last_used: profile.as_ref().and_then(|p| p.last_used),
                            history,
                        });
                        Ok(())
                    }
                }
            })
        })
        .await
    }

    pub async fn delete_login_profile(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let arn = self.user_arn_for(user_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:DeleteLoginProfile",
            &arn,
            json!({"user_name": user_name}),
            true,
            || {
                self.update_record::<User>(Table::Users, user_name, "user", |user| {
                    user.login_profile
                        .take()
                        .map(|_| ())
                        .ok_or_else(|| not_found("login profile for user", user_name))
                })
            },
        )
        .await
    }

    pub async fn get_login_profile(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(String, i64, bool), BrokerError> {
        let name = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&name)?;
        self.iam_call(
            caller,
            meta,
            "iam:GetLoginProfile",
            &arn,
            json!({"user_name": name}),
            false,
            || {
                let user = self
                    .load_user(&name)?
                    .ok_or_else(|| not_found("user", &name))?;
                let profile = user
                    .login_profile
                    .ok_or_else(|| not_found("login profile for user", &name))?;
                Ok((
                    user.name,
                    profile.create_date,
                    profile.password_reset_required,
                ))
            },
        )
        .await
    }

    pub async fn update_password_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        policy: PasswordPolicy,
    ) -> Result<(), BrokerError> {
        policy.validate().map_err(|m| {
            let field = m
                .split_whitespace()
                .next()
                .unwrap_or("password_policy")
                .to_string();
            BrokerError::InvalidInput { field, message: m }
        })?;
        let resource = "*";
        self.iam_call(
            caller,
            meta,
            "iam:UpdateAccountPasswordPolicy",
            resource,
            json!(policy),
            true,
            || {
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    tx.put(Table::Meta, PASSWORD_POLICY_KEY, &policy);
                    Ok::<_, BrokerError>(())
                })
            },
        )
        .await
    }

    pub async fn get_password_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<PasswordPolicy, BrokerError> {
        self.iam_call(
            caller,
            meta,
            "iam:GetAccountPasswordPolicy",
            "*",
            json!({}),
            false,
            || self.password_policy(),
        )
        .await
    }

    // ---- groups ------------------------------------------------------------------------

    pub async fn create_group(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        group_name: &str,
        path: &str,
    ) -> Result<Group, BrokerError> {
        check_name(NameKind::Group, group_name)?;
        let path = check_path(path)?;
        let arn = self.account().group_arn(&path, group_name);
        let now = unix_ms(self.now());
        self.iam_call(
            caller,
            meta,
            "iam:CreateGroup",
            &arn,
            json!({"group_name": group_name, "path": path}),
            true,
            || {
                let group = Group {
                    v: RECORD_VERSION,
                    name: group_name.into(),
                    id: self.ids("AGPA")?,
                    path: path.clone(),
                    arn: arn.clone(),
                    create_date: now,
                    attached_policies: vec![],
                    inline_policies: BTreeMap::new(),
                };
                self.insert_new(
                    Table::Groups,
                    &name_key(group_name),
                    &group,
                    "group",
                    group_name,
                )?;
                Ok(group)
            },
        )
        .await
    }

    pub async fn get_group(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        group_name: &str,
        page: &Page,
    ) -> Result<(Group, Vec<User>, Option<String>), BrokerError> {
        check_name(NameKind::Group, group_name)?;
        let arn = self.holder_arn(Holder::Group, group_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:GetGroup",
            &arn,
            json!({"group_name": group_name}),
            false,
            || {
                let group: Group =
                    store::read(self.store.as_ref(), Table::Groups, &name_key(group_name))?
                        .ok_or_else(|| not_found("group", group_name))?;
                let (users, marker) = page_of::<User>(self, Table::Users, page, |u| {
                    u.groups.iter().any(|g| g.eq_ignore_ascii_case(group_name))
                })?;
                Ok((group, users, marker))
            },
        )
        .await
    }

    pub async fn list_groups(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<Group>, Option<String>), BrokerError> {
        let resource = self.account().group_arn("/", "*");
        self.iam_call(
            caller,
            meta,
            "iam:ListGroups",
            &resource,
            json!({"path_prefix": path_prefix}),
            false,
            || {
                page_of::<Group>(self, Table::Groups, page, |g| {
                    g.path.starts_with(path_or_root(path_prefix).as_str())
                })
            },
        )
        .await
    }

    pub async fn delete_group(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        group_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Group, group_name)?;
        let arn = self.holder_arn(Holder::Group, group_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:DeleteGroup",
            &arn,
            json!({"group_name": group_name}),
            true,
            || {
                let key = name_key(group_name);
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let group: Group = tx
                        .get(Table::Groups, &key)?
                        .ok_or_else(|| not_found("group", group_name))?;
                    let users: Vec<User> = tx.scan(Table::Users, "")?;
                    let mut blockers = Vec::new();
                    if users
                        .iter()
                        .any(|u| u.groups.iter().any(|g| name_key(g) == key))
                    {
                        blockers.push("members");
                    }
                    if !group.attached_policies.is_empty() {
                        blockers.push("attached policies");
                    }
                    if !group.inline_policies.is_empty() {
                        blockers.push("inline policies");
                    }
                    if !blockers.is_empty() {
                        return Err(BrokerError::DeleteConflict(format!(
                            "group {group_name}: it still has {}",
                            blockers.join(", ")
                        )));
                    }
                    tx.delete(Table::Groups, &key);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn set_group_membership(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        group_name: &str,
        user_name: &str,
        add: bool,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Group, group_name)?;
        check_name(NameKind::User, user_name)?;
        let arn = self.holder_arn(Holder::Group, group_name)?;
        let action = if add {
            "iam:AddUserToGroup"
        } else {
            "iam:RemoveUserFromGroup"
        };
        self.iam_call(
            caller,
            meta,
            action,
            &arn,
            json!({"group_name": group_name, "user_name": user_name}),
            true,
            || {
                let user_key = name_key(user_name);
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let group: Group = tx
                        .get(Table::Groups, &name_key(group_name))?
                        .ok_or_else(|| not_found("group", group_name))?;
                    let mut user: User = tx
                        .get(Table::Users, &user_key)?
                        .ok_or_else(|| not_found("user", user_name))?;
                    let member = user
                        .groups
                        .iter()
                        .position(|g| g.eq_ignore_ascii_case(&group.name));
                    match (add, member) {
                        (true, Some(_)) => return Ok(()),
                        (true, None) => {
                            if user.groups.len() >= MAX_GROUPS_PER_USER {
                                return Err(BrokerError::LimitExceeded(format!(
                                    "user {user_name} is already in {MAX_GROUPS_PER_USER} groups"
                                )));
                            }
                            user.groups.push(group.name.clone());
                        }
                        (false, Some(i)) => {
                            user.groups.remove(i);
                        }
                        (false, None) => {
                            return Err(not_found(
                                &format!("membership of user {user_name} in group"),
                                group_name,
                            ));
                        }
                    }
                    tx.put(Table::Users, &user_key, &user);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn list_groups_for_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        page: &Page,
    ) -> Result<(Vec<Group>, Option<String>), BrokerError> {
        let name = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&name)?;
        self.iam_call(
            caller,
            meta,
            "iam:ListGroupsForUser",
            &arn,
            json!({"user_name": name}),
            false,
            || {
                let user = self
                    .load_user(&name)?
                    .ok_or_else(|| not_found("user", &name))?;
                let mut groups = Vec::new();
                for g in &user.groups {
                    if let Some(group) =
                        store::read::<Group>(self.store.as_ref(), Table::Groups, &name_key(g))?
                    {
                        groups.push(group);
                    }
                }
                slice_page(&groups, |g| name_key(&g.name), page)
            },
        )
        .await
    }

    // ---- roles -------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub async fn create_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
        path: &str,
        trust_policy: &str,
        description: &str,
        max_session_duration: i32,
        tags: Vec<Tag>,
        permissions_boundary: &str,
    ) -> Result<Role, BrokerError> {
        check_name(NameKind::Role, role_name)?;
        let path = check_path(path)?;
        validate_tags(&tags).map_err(|m| BrokerError::invalid("tags", m))?;
        let max = check_max_session(max_session_duration)?;
        check_description(description)?;
        parse_policy(
            "assume_role_policy_document",
            trust_policy,
            PolicyKind::Trust,
        )?;
        let arn = self.account().role_arn(&path, role_name);
        let now = unix_ms(self.now());
        let params = json!({"role_name": role_name, "path": path, "assume_role_policy_document": trust_policy,
            "description": description, "max_session_duration": max, "tags": tags, "permissions_boundary": permissions_boundary});
        self.iam_call(caller, meta, "iam:CreateRole", &arn, params, true, || {
            self.check_boundary(permissions_boundary)?;
            let role = Role {
                v: RECORD_VERSION,
                name: role_name.into(),
                id: self.ids("AROA")?,
                path: path.clone(),
                arn: arn.clone(),
                create_date: now,
                assume_role_policy_document: trust_policy.into(),
                description: description.into(),
                max_session_duration: max,
                tags: tags.clone(),
                attached_policies: vec![],
                inline_policies: BTreeMap::new(),
                permissions_boundary: (!permissions_boundary.is_empty())
                    .then(|| permissions_boundary.to_string()),
            };
            self.insert_new(Table::Roles, &name_key(role_name), &role, "role", role_name)?;
            Ok(role)
        })
        .await
    }

    pub async fn get_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
    ) -> Result<Role, BrokerError> {
        check_name(NameKind::Role, role_name)?;
        let arn = self.holder_arn(Holder::Role, role_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:GetRole",
            &arn,
            json!({"role_name": role_name}),
            false,
            || {
                self.load_role(role_name)?
                    .ok_or_else(|| not_found("role", role_name))
            },
        )
        .await
    }

    pub async fn list_roles(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<Role>, Option<String>), BrokerError> {
        let resource = self.account().role_arn("/", "*");
        self.iam_call(
            caller,
            meta,
            "iam:ListRoles",
            &resource,
            json!({"path_prefix": path_prefix}),
            false,
            || {
                page_of::<Role>(self, Table::Roles, page, |r| {
                    r.path.starts_with(path_or_root(path_prefix).as_str())
                })
            },
        )
        .await
    }

    pub async fn delete_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Role, role_name)?;
        let arn = self.holder_arn(Holder::Role, role_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:DeleteRole",
            &arn,
            json!({"role_name": role_name}),
            true,
            || {
                let key = name_key(role_name);
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let role: Role = tx
                        .get(Table::Roles, &key)?
                        .ok_or_else(|| not_found("role", role_name))?;
                    let mut blockers = Vec::new();
                    if !role.attached_policies.is_empty() {
                        blockers.push("attached policies");
                    }
                    if !role.inline_policies.is_empty() {
                        blockers.push("inline policies");
                    }
                    if !blockers.is_empty() {
                        return Err(BrokerError::DeleteConflict(format!(
                            "role {role_name}: it still has {}",
                            blockers.join(", ")
                        )));
                    }
                    tx.delete(Table::Roles, &key);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn update_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
        description: Option<&str>,
        max_session_duration: i32,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Role, role_name)?;
        if let Some(d) = description {
            check_description(d)?;
        }
        let max = (max_session_duration != 0)
            .then(|| check_max_session(max_session_duration))
            .transpose()?;
        let arn = self.holder_arn(Holder::Role, role_name)?;
        self.iam_call(caller, meta, "iam:UpdateRole", &arn, json!({"role_name": role_name, "description": description, "max_session_duration": max}), true, || {
            self.update_record::<Role>(Table::Roles, role_name, "role", |role| {
                if let Some(d) = description { role.description = d.into(); }
                if let Some(m) = max { role.max_session_duration = m; }
                Ok(())
            })
        })
        .await
    }

    pub async fn update_assume_role_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
        document: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Role, role_name)?;
        parse_policy("policy_document", document, PolicyKind::Trust)?;
        let arn = self.holder_arn(Holder::Role, role_name)?;
        self.iam_call(
            caller,
            meta,
            "iam:UpdateAssumeRolePolicy",
            &arn,
            json!({"role_name": role_name, "policy_document": document}),
            true,
            || {
                self.update_record::<Role>(Table::Roles, role_name, "role", |role| {
                    role.assume_role_policy_document = document.into();
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn tag_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
        tags: Vec<Tag>,
        remove: Vec<String>,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Role, role_name)?;
        let arn = self.holder_arn(Holder::Role, role_name)?;
        let action = if remove.is_empty() {
            "iam:TagRole"
        } else {
            "iam:UntagRole"
        };
        self.iam_call(
            caller,
            meta,
            action,
            &arn,
            json!({"role_name": role_name, "tags": tags, "tag_keys": remove}),
            true,
            || {
                self.update_record::<Role>(Table::Roles, role_name, "role", |role| {
                    role.tags.retain(|t| {
                        !remove.iter().any(|k| k == &t.key) && !tags.iter().any(|n| n.key == t.key)
                    });
                    role.tags.extend(tags.iter().cloned());
                    validate_tags(&role.tags).map_err(|m| BrokerError::invalid("tags", m))
                })
            },
        )
        .await
    }

    // ---- managed policies --------------------------------------------------------------

    pub async fn create_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        policy_name: &str,
        path: &str,
        document: &str,
        description: &str,
    ) -> Result<ManagedPolicy, BrokerError> {
        check_name(NameKind::Policy, policy_name)?;
        let path = check_path(path)?;
        check_description(description)?;
        parse_policy("policy_document", document, PolicyKind::Managed)?;
        let arn = self.account().policy_arn(&path, policy_name);
        let now = unix_ms(self.now());
        self.iam_call(caller, meta, "iam:CreatePolicy", &arn, json!({"policy_name": policy_name, "path": path, "policy_document": document, "description": description}), true, || {
            // Names are unique per account regardless of path.
            let existing = page_of::<ManagedPolicy>(self, Table::Policies, &Page { marker: String::new(), max_items: 1000 }, |p| p.name.eq_ignore_ascii_case(policy_name))?;
            if !existing.0.is_empty() {
                return Err(BrokerError::AlreadyExists(format!("policy {policy_name}")));
            }
            let policy = ManagedPolicy {
                v: RECORD_VERSION,
                name: policy_name.into(),
                id: self.ids("ANPA")?,
                path: path.clone(),
                arn: arn.clone(),
                create_date: now,
                update_date: now,
                description: description.into(),
                default_version_id: "v1".into(),
                versions: vec![PolicyVersion { version_id: "v1".into(), document: document.into(), create_date: now }],
                next_version: 2,
            };
            self.insert_new(Table::Policies, &arn, &policy, "policy", policy_name)?;
            Ok(policy)
        })
        .await
    }

    /// A customer policy, or a built-in one presented as a managed policy.
    pub fn lookup_policy(&self, arn: &str) -> Result<ManagedPolicy, BrokerError> {
        if let Some(name) = builtin_name(arn) {
            let builtin = policy::builtin::get(name).ok_or_else(|| not_found("policy", arn))?;
            return Ok(ManagedPolicy {
                v: RECORD_VERSION,
                name: builtin.name.into(),
                id: format!(
                    "ANPA{}",
                    builtin
                        .name
                        .to_ascii_uppercase()
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .take(17)
                        .collect::<String>()
                ),
                path: "/".into(),
                arn: self.account().builtin_policy_arn(builtin.name),
                create_date: 0,
                update_date: 0,
                description: builtin.description.into(),
                default_version_id: "v1".into(),
                versions: vec![PolicyVersion {
                    version_id: "v1".into(),
                    document: builtin.document.into(),
                    create_date: 0,
                }],
                next_version: 2,
            });
        }
        store::read(self.store.as_ref(), Table::Policies, arn)?
            .ok_or_else(|| not_found("policy", arn))
    }

    /// How many users, groups and roles have the policy attached.
    pub fn attachment_count(&self, arn: &str) -> Result<usize, BrokerError> {
        Ok(self.attachment_counts()?.get(arn).copied().unwrap_or(0))
    }

    /// Attachments (and boundary uses) of every policy, from one pass over the identities.
    fn attachment_counts(&self) -> Result<HashMap<String, usize>, BrokerError> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut count = |arns: &mut dyn Iterator<Item = &String>| {
            for arn in arns {
                *counts.entry(arn.clone()).or_default() += 1;
            }
        };
        let store = self.store.as_ref();
        for (_, u) in store::read_page::<User>(store, Table::Users, "", None, usize::MAX)? {
            count(&mut u.attached_policies.iter().chain(&u.permissions_boundary));
        }
        for (_, g) in store::read_page::<Group>(store, Table::Groups, "", None, usize::MAX)? {
            count(&mut g.attached_policies.iter());
        }
        for (_, r) in store::read_page::<Role>(store, Table::Roles, "", None, usize::MAX)? {
            count(&mut r.attached_policies.iter().chain(&r.permissions_boundary));
        }
        Ok(counts)
    }

    pub async fn get_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
    ) -> Result<(ManagedPolicy, usize), BrokerError> {
        self.iam_call(
            caller,
            meta,
            "iam:GetPolicy",
            arn,
            json!({"policy_arn": arn}),
            false,
            || {
                let policy = self.lookup_policy(arn)?;
                Ok((policy, self.attachment_count(arn)?))
            },
        )
        .await
    }

    pub async fn list_policies(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        scope: &str,
        only_attached: bool,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<(ManagedPolicy, usize)>, Option<String>), BrokerError> {
        let scope = match scope {
            "" | "All" => "All",
            "AWS" | "Local" => scope,
            other => {
                return Err(BrokerError::invalid(
                    "scope",
                    format!("must be All, AWS or Local, got {other:?}"),
                ));
            }
        };
        let resource = self.account().policy_arn("/", "*");
        self.iam_call(
            caller,
            meta,
            "iam:ListPolicies",
            &resource,
            json!({"scope": scope, "only_attached": only_attached}),
            false,
            || {
                let mut all = Vec::new();
                if scope != "Local" {
                    for builtin in policy::builtin::all() {
                        all.push(
                            self.lookup_policy(&self.account().builtin_policy_arn(builtin.name))?,
                        );
                    }
                }
                if scope != "AWS" {
                    all.extend(
                        store::read_page::<ManagedPolicy>(
                            self.store.as_ref(),
                            Table::Policies,
                            "",
                            None,
                            usize::MAX,
                        )?
                        .into_iter()
                        .map(|(_, p)| p),
                    );
                }
                let prefix = path_or_root(path_prefix);
                let counts = self.attachment_counts()?;
                let mut rows = Vec::new();
                for p in all
                    .into_iter()
                    .filter(|p| p.path.starts_with(prefix.as_str()))
                {
                    let count = counts.get(&p.arn).copied().unwrap_or(0);
                    if !only_attached || count > 0 {
                        rows.push((p, count));
                    }
                }
                slice_page(&rows, |(p, _)| p.arn.clone(), page)
            },
        )
        .await
    }

    pub async fn delete_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
    ) -> Result<(), BrokerError> {
        self.iam_call(
            caller,
            meta,
            "iam:DeletePolicy",
            arn,
            json!({"policy_arn": arn}),
            true,
            || {
                if builtin_name(arn).is_some() {
                    return Err(BrokerError::invalid(
                        "policy_arn",
                        "built-in policies cannot be deleted",
                    ));
                }
                let policy: ManagedPolicy = store::read(self.store.as_ref(), Table::Policies, arn)?
                    .ok_or_else(|| not_found("policy", arn))?;
                let attached = self.attachment_count(arn)?;
                if attached > 0 {
                    return Err(BrokerError::DeleteConflict(format!(
                        "policy {arn}: it is attached to {attached} entities"
                    )));
                }
                if policy.versions.len() > 1 {
                    return Err(BrokerError::DeleteConflict(format!(
                        "policy {arn}: delete its non-default versions first"
                    )));
                }
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    tx.get_raw(Table::Policies, arn.as_bytes())?
                        .ok_or_else(|| not_found("policy", arn))?;
                    tx.delete(Table::Policies, arn);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn create_policy_version(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        document: &str,
        set_as_default: bool,
    ) -> Result<PolicyVersion, BrokerError> {
        parse_policy("policy_document", document, PolicyKind::Managed)?;
        let now = unix_ms(self.now());
        self.iam_call(caller, meta, "iam:CreatePolicyVersion", arn, json!({"policy_arn": arn, "policy_document": document, "set_as_default": set_as_default}), true, || {
            self.update_policy(arn, |policy| {
                if policy.versions.len() >= MAX_POLICY_VERSIONS {
                    return Err(BrokerError::LimitExceeded(format!("policy {arn} already has {MAX_POLICY_VERSIONS} versions; delete one first")));
                }
                let version = PolicyVersion { version_id: format!("v{}", policy.next_version), document: document.into(), create_date: now };
                policy.next_version += 1;
                policy.update_date = now;
                if set_as_default { policy.default_version_id = version.version_id.clone(); }
                policy.versions.push(version.clone());
                Ok(version)
            })
        })
        .await
    }

    fn update_policy<R>(
        &self,
        arn: &str,
        mut change: impl FnMut(&mut ManagedPolicy) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        if builtin_name(arn).is_some() {
            return Err(BrokerError::invalid(
                "policy_arn",
                "built-in policies cannot be changed",
            ));
        }
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let mut policy: ManagedPolicy = tx
                .get(Table::Policies, arn)?
                .ok_or_else(|| not_found("policy", arn))?;
            let out = change(&mut policy)?;
            tx.put(Table::Policies, arn, &policy);
            Ok(out)
        })
    }

    pub async fn get_policy_version(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        version_id: &str,
    ) -> Result<(PolicyVersion, bool), BrokerError> {
        self.iam_call(
            caller,
            meta,
            "iam:GetPolicyVersion",
            arn,
            json!({"policy_arn": arn, "version_id": version_id}),
            false,
            || {
                let policy = self.lookup_policy(arn)?;
                let version = policy
                    .versions
                    .iter()
                    .find(|v| v.version_id == version_id)
                    .cloned()
                    .ok_or_else(|| not_found(&format!("version of policy {arn}:"), version_id))?;
                Ok((version, policy.default_version_id == version_id))
            },
        )
        .await
    }

    pub async fn list_policy_versions(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
    ) -> Result<(Vec<PolicyVersion>, String), BrokerError> {
        self.iam_call(
            caller,
            meta,
            "iam:ListPolicyVersions",
            arn,
            json!({"policy_arn": arn}),
            false,
            || {
                let policy = self.lookup_policy(arn)?;
                Ok((policy.versions, policy.default_version_id))
            },
        )
        .await
    }

    pub async fn delete_policy_version(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        version_id: &str,
    ) -> Result<(), BrokerError> {
        self.iam_call(
            caller,
            meta,
            "iam:DeletePolicyVersion",
            arn,
            json!({"policy_arn": arn, "version_id": version_id}),
            true,
            || {
                self.update_policy(arn, |policy| {
                    if policy.default_version_id == version_id {
                        return Err(BrokerError::DeleteConflict(format!(
                            "version {version_id} is the default version of {arn}"
                        )));
                    }
                    let before = policy.versions.len();
                    policy.versions.retain(|v| v.version_id != version_id);
                    if policy.versions.len() == before {
                        return Err(not_found(&format!("version of policy {arn}:"), version_id));
                    }
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn set_default_policy_version(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        version_id: &str,
    ) -> Result<(), BrokerError> {
        let now = unix_ms(self.now());
        self.iam_call(
            caller,
            meta,
            "iam:SetDefaultPolicyVersion",
            arn,
            json!({"policy_arn": arn, "version_id": version_id}),
            true,
            || {
                self.update_policy(arn, |policy| {
                    if !policy.versions.iter().any(|v| v.version_id == version_id) {
                        return Err(not_found(&format!("version of policy {arn}:"), version_id));
                    }
                    policy.default_version_id = version_id.into();
                    policy.update_date = now;
                    Ok(())
                })
            },
        )
        .await
    }

    // ---- attachments, inline policies, boundaries --------------------------------------

    fn change_holder<R>(
        &self,
        holder: Holder,
        name: &str,
        change: impl FnMut(&mut dyn HolderAccess) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        match holder {
            Holder::User => self.change_holder_typed::<User, R>(holder, name, change),
            Holder::Group => self.change_holder_typed::<Group, R>(holder, name, change),
            Holder::Role => self.change_holder_typed::<Role, R>(holder, name, change),
        }
    }

    fn change_holder_typed<T: HolderRecord, R>(
        &self,
        holder: Holder,
        name: &str,
        mut change: impl FnMut(&mut dyn HolderAccess) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        let key = name_key(name);
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let mut record: T = tx
                .get(holder.table(), &key)?
                .ok_or_else(|| not_found(&holder.noun().to_lowercase(), name))?;
            let out = change(&mut record)?;
            tx.put(holder.table(), &key, &record);
            Ok(out)
        })
    }

    pub async fn attach_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        policy_arn: &str,
        attach: bool,
    ) -> Result<(), BrokerError> {
        check_name(holder.name_kind(), name)?;
        let arn = self.holder_arn(holder, name)?;
        let action = format!(
            "iam:{}{}Policy",
            if attach { "Attach" } else { "Detach" },
            holder.noun()
        );
        let params = json!({format!("{}_name", holder.noun().to_lowercase()): name, "policy_arn": policy_arn});
        self.iam_call(caller, meta, &action, &arn, params, true, || {
            if attach {
                self.lookup_policy(policy_arn).map_err(|_| BrokerError::invalid("policy_arn", format!("policy {policy_arn} does not exist")))?;
            }
            self.change_holder(holder, name, |record| {
                let attached = record.attached_list();
                let position = attached.iter().position(|a| a == policy_arn);
                match (attach, position) {
                    (true, Some(_)) => Ok(()),
                    (true, None) if attached.len() >= MAX_ATTACHED_POLICIES => Err(BrokerError::LimitExceeded(format!(
                        "{} {name} already has {MAX_ATTACHED_POLICIES} managed policies attached", holder.noun().to_lowercase()))),
                    (true, None) => { attached.push(policy_arn.to_string()); Ok(()) }
                    (false, Some(i)) => { attached.remove(i); Ok(()) }
                    (false, None) => Err(not_found(&format!("attachment of {policy_arn} to"), name)),
                }
            })
        })
        .await
    }

    pub async fn list_attached_policies(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        page: &Page,
    ) -> Result<(Vec<(String, String)>, Option<String>), BrokerError> {
        check_name(holder.name_kind(), name)?;
        let arn = self.holder_arn(holder, name)?;
        let action = format!("iam:ListAttached{}Policies", holder.noun());
        self.iam_call(
            caller,
            meta,
            &action,
            &arn,
            json!({"name": name}),
            false,
            || {
                let arns = self.read_holder(holder, name, |r| r.attached_list().clone())?;
                let rows: Vec<(String, String)> = arns
                    .into_iter()
                    .map(|a| (a.rsplit('/').next().unwrap_or_default().to_string(), a))
                    .collect();
                slice_page(&rows, |(_, a)| a.clone(), page)
            },
        )
        .await
    }

    fn read_holder<R>(
        &self,
        holder: Holder,
        name: &str,
        read: impl FnOnce(&mut dyn HolderAccess) -> R,
    ) -> Result<R, BrokerError> {
        let key = name_key(name);
        let store = self.store.as_ref();
        let missing = || not_found(&holder.noun().to_lowercase(), name);
        Ok(match holder {
            Holder::User => {
                read(&mut store::read::<User>(store, Table::Users, &key)?.ok_or_else(missing)?)
            }
            Holder::Group => {
                read(&mut store::read::<Group>(store, Table::Groups, &key)?.ok_or_else(missing)?)
            }
            Holder::Role => {
                read(&mut store::read::<Role>(store, Table::Roles, &key)?.ok_or_else(missing)?)
            }
        })
    }

    pub async fn put_inline_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        policy_name: &str,
        document: &str,
    ) -> Result<(), BrokerError> {
        check_name(holder.name_kind(), name)?;
        check_name(NameKind::InlinePolicy, policy_name)?;
        parse_policy("policy_document", document, holder.inline_kind())?;
        let arn = self.holder_arn(holder, name)?;
        let action = format!("iam:Put{}Policy", holder.noun());
        let params = json!({"name": name, "policy_name": policy_name, "policy_document": document});
        self.iam_call(caller, meta, &action, &arn, params, true, || {
            self.change_holder(holder, name, |record| {
                let inline = record.inline_map();
                let mut total: usize = inline.iter().filter(|(k, _)| *k != policy_name).map(|(_, d)| non_whitespace_len(d)).sum();
                total += non_whitespace_len(document);
                if total > holder.inline_quota() {
                    return Err(BrokerError::LimitExceeded(format!(
                        "inline policies of {} {name} would total {total} characters; the quota is {}",
                        holder.noun().to_lowercase(), holder.inline_quota())));
                }
                inline.insert(policy_name.to_string(), document.to_string());
                Ok(())
            })
        })
        .await
    }

    pub async fn get_inline_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        policy_name: &str,
    ) -> Result<String, BrokerError> {
        check_name(holder.name_kind(), name)?;
        let arn = self.holder_arn(holder, name)?;
        let action = format!("iam:Get{}Policy", holder.noun());
        self.iam_call(
            caller,
            meta,
            &action,
            &arn,
            json!({"name": name, "policy_name": policy_name}),
            false,
            || {
                self.read_holder(holder, name, |r| r.inline_map().get(policy_name).cloned())?
                    .ok_or_else(|| not_found(&format!("inline policy of {name}:"), policy_name))
            },
        )
        .await
    }

    pub async fn delete_inline_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        policy_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(holder.name_kind(), name)?;
        let arn = self.holder_arn(holder, name)?;
        let action = format!("iam:Delete{}Policy", holder.noun());
        self.iam_call(
            caller,
            meta,
            &action,
            &arn,
            json!({"name": name, "policy_name": policy_name}),
            true,
            || {
                self.change_holder(holder, name, |record| {
                    record
                        .inline_map()
                        .remove(policy_name)
                        .map(|_| ())
                        .ok_or_else(|| not_found(&format!("inline policy of {name}:"), policy_name))
                })
            },
        )
        .await
    }

    pub async fn list_inline_policies(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        page: &Page,
    ) -> Result<(Vec<String>, Option<String>), BrokerError> {
        check_name(holder.name_kind(), name)?;
        let arn = self.holder_arn(holder, name)?;
        let action = format!("iam:List{}Policies", holder.noun());
        self.iam_call(
            caller,
            meta,
            &action,
            &arn,
            json!({"name": name}),
            false,
            || {
                let names: Vec<String> =
                    self.read_holder(holder, name, |r| r.inline_map().keys().cloned().collect())?;
                slice_page(&names, |n| n.clone(), page)
            },
        )
        .await
    }

    pub async fn set_permissions_boundary(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        boundary_arn: Option<&str>,
    ) -> Result<(), BrokerError> {
        check_name(holder.name_kind(), name)?;
        if holder == Holder::Group {
            return Err(BrokerError::invalid(
                "holder",
                "groups have no permissions boundary",
            ));
        }
        let arn = self.holder_arn(holder, name)?;
        let action = format!(
            "iam:{}{}PermissionsBoundary",
            if boundary_arn.is_some() {
                "Put"
            } else {
                "Delete"
            },
            holder.noun()
        );
        self.iam_call(
            caller,
            meta,
            &action,
            &arn,
            json!({"name": name, "permissions_boundary": boundary_arn}),
            true,
            || {
                if let Some(b) = boundary_arn {
                    if b.is_empty() {
                        return Err(BrokerError::invalid("permissions_boundary", "is required"));
                    }
                    self.check_boundary(b)?;
                }
                self.change_holder(holder, name, |record| {
                    if let Some(slot) = record.boundary_slot() {
                        *slot = boundary_arn.map(str::to_owned);
                    }
                    Ok(())
                })
            },
        )
        .await
    }

    // ---- MFA ---------------------------------------------------------------------------

    /// Creates an unenabled virtual device; returns (serial, seed). The seed is shown once.
    pub async fn create_virtual_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        device_name: &str,
    ) -> Result<(String, SecretBytes), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let device_name = if device_name.is_empty() {
            user.clone()
        } else {
            device_name.to_string()
        };
        check_name(NameKind::MfaDevice, &device_name)?;
        let serial = self.account().mfa_arn(&device_name);
        self.iam_call(
            caller,
            meta,
            "iam:CreateVirtualMfaDevice",
            &serial,
            json!({"user_name": user, "virtual_mfa_device_name": device_name}),
            true,
            || {
                let target = self
                    .load_user(&user)?
                    .ok_or_else(|| not_found("user", &user))?;
                // A device bound to someone else needs the right to bind devices to them
                // (AWS ties a device to a user with EnableMFADevice on that user).
                let own = caller
                    .user_name()
                    .is_some_and(|me| me.eq_ignore_ascii_case(&user));
                if !own {
                    self.require(caller, meta, "iam:EnableMfaDevice", &target.arn)?;
                }
                let seed = totp::new_seed(self.random::<20>()?);
                let sealed_seed = self
                    .master
                    .seal(seed.expose(), &mfa_aad(&serial), &self.rng)?;
                let device = MfaDevice {
                    v: RECORD_VERSION,
                    serial_number: serial.clone(),
                    user_name: user.clone(),
                    sealed_seed,
                    enable_date: None,
                    last_used_step: None,
                    drift_steps: 0,
                };
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let all: Vec<MfaDevice> = tx.scan(Table::MfaDevices, "")?;
                    if all.iter().any(|d| d.serial_number == serial) {
                        return Err(BrokerError::AlreadyExists(format!("MFA device {serial}")));
                    }
                    tx.put(Table::MfaDevices, &mfa_key(&user, &serial), &device);
                    Ok(())
                })?;
                Ok((serial.clone(), seed))
            },
        )
        .await
    }

    /// EnableMfaDevice (or ResyncMfaDevice): two consecutive codes prove the device works.
    #[allow(clippy::too_many_arguments)]
    pub async fn enable_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        serial: &str,
        code1: &SecretString,
        code2: &SecretString,
        resync: bool,
    ) -> Result<(), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&user)?;
        let action = if resync {
            "iam:ResyncMfaDevice"
        } else {
            "iam:EnableMfaDevice"
        };
        let now = self.now();
        self.iam_call(
            caller,
            meta,
            action,
            &arn,
            json!({"user_name": user, "serial_number": serial}),
            true,
            || {
                for (field, code) in [
                    ("authentication_code_1", code1),
                    ("authentication_code_2", code2),
                ] {
                    let c = code.expose();
                    if c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(BrokerError::invalid(field, "must be 6 digits"));
                    }
                }
                let key = mfa_key(&user, serial);
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let mut device: MfaDevice = tx
                        .get(Table::MfaDevices, &key)?
                        .ok_or_else(|| not_found("MFA device", serial))?;
                    match (resync, device.enable_date.is_some()) {
                        (false, true) => {
                            return Err(BrokerError::AlreadyExists(format!(
                                "enabled MFA device {serial}"
                            )));
                        }
                        (true, false) => {
                            return Err(BrokerError::FailedPrecondition(format!(
                                "MFA device {serial} is not enabled"
                            )));
                        }
                        _ => {}
                    }
                    let seed = self.master.open(&device.sealed_seed, &mfa_aad(serial))?;
                    // Enable looks back 10 steps; resync looks 40 steps either way.
                    let (centre, window) = if resync {
                        (
                            totp::shifted(now, RESYNC_WINDOW_STEPS as i64),
                            2 * RESYNC_WINDOW_STEPS,
                        )
                    } else {
                        (now, 10)
                    };
                    let step = totp::verify_consecutive(
                        seed.expose(),
                        code1.expose(),
                        code2.expose(),
                        centre,
                        window,
                    )
                    .map_err(|_| {
                        BrokerError::invalid(
                            "authentication_code_2",
                            "the two codes are not consecutive valid codes for this device",
                        )
                    })?;
                    if device.last_used_step.is_some_and(|last| step <= last) {
                        return Err(BrokerError::invalid(
                            "authentication_code_2",
                            "codes were already used",
                        ));
                    }
                    // Remember how far the device's clock is off, beyond the ±1 step skew.
                    let offset = step as i64 - totp::step_at(now) as i64;
                    device.drift_steps = if offset.abs() > 1 { offset } else { 0 };
                    device.last_used_step = Some(step);
                    if !resync {
                        device.enable_date = Some(unix_ms(now));
                    }
                    tx.put(Table::MfaDevices, &key, &device);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn deactivate_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        serial: &str,
    ) -> Result<(), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&user)?;
        self.iam_call(
            caller,
            meta,
            "iam:DeactivateMfaDevice",
            &arn,
            json!({"user_name": user, "serial_number": serial}),
            true,
            || {
                let key = mfa_key(&user, serial);
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    tx.get::<MfaDevice>(Table::MfaDevices, &key)?
                        .ok_or_else(|| not_found("MFA device", serial))?;
                    // A deactivated virtual device is gone: re-enrolment makes a new seed.
                    tx.delete(Table::MfaDevices, &key);
                    Ok(())
                })
            },
        )
        .await
    }

    pub async fn list_mfa_devices(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<Vec<MfaDevice>, BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&user)?;
        self.iam_call(
            caller,
            meta,
            "iam:ListMfaDevices",
            &arn,
            json!({"user_name": user}),
            false,
            || self.enabled_mfa_devices(&user),
        )
        .await
    }

    // ---- access keys -------------------------------------------------------------------

    pub async fn create_access_key(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(AccessKey, SecretString), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&user)?;
        let now = unix_ms(self.now());
        // Drawn up front so the audit event names the key it created.
        let id = model::access_key_id("AKIA", &self.random::<16>()?);
        self.iam_call(
            caller,
            meta,
            "iam:CreateAccessKey",
            &arn,
            json!({"user_name": user, "access_key_id": id}),
            true,
            || {
                let secret = SecretString::new(data_encoding::BASE64.encode(&self.random::<30>()?));
                let record = AccessKey {
                    v: RECORD_VERSION,
                    access_key_id: id.clone(),
                    user_name: user.clone(),
                    secret_hash: access_key_hash(&id, secret.expose()),
                    status: AccessKeyStatus::Active,
                    create_date: now,
                    last_used: None,
                };
                store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let owner: Option<User> = tx.get(Table::Users, &name_key(&user))?;
                    owner.ok_or_else(|| not_found("user", &user))?;
                    let keys: Vec<AccessKey> = tx.scan(Table::AccessKeys, "")?;
                    if keys
                        .iter()
                        .filter(|k| k.user_name.eq_ignore_ascii_case(&user))
                        .count()
                        >= MAX_ACCESS_KEYS
                    {
                        return Err(BrokerError::LimitExceeded(format!(
                            "user {user} already has {MAX_ACCESS_KEYS} access keys"
                        )));
                    }
                    tx.put(Table::AccessKeys, &id, &record);
                    Ok(())
                })?;
                Ok((record.clone(), secret))
            },
        )
        .await
    }

    pub async fn update_access_key(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        access_key_id: &str,
        status: Option<AccessKeyStatus>,
    ) -> Result<(), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&user)?;
        let action = if status.is_some() {
            "iam:UpdateAccessKey"
        } else {
            "iam:DeleteAccessKey"
        };
        self.iam_call(caller, meta, action, &arn, json!({"user_name": user, "access_key_id": access_key_id, "status": status.map(|s| s.as_str())}), true, || {
            store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                let mut key: AccessKey = tx.get::<AccessKey>(Table::AccessKeys, access_key_id)?
                    .filter(|k: &AccessKey| k.user_name.eq_ignore_ascii_case(&user))
                    .ok_or_else(|| not_found("access key", access_key_id))?;
                match status {
                    Some(status) => { key.status = status; tx.put(Table::AccessKeys, access_key_id, &key); }
                    None => tx.delete(Table::AccessKeys, access_key_id),
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn list_access_keys(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<Vec<AccessKey>, BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let arn = self.user_arn_for(&user)?;
        self.iam_call(
            caller,
            meta,
            "iam:ListAccessKeys",
            &arn,
            json!({"user_name": user}),
            false,
            || {
                Ok(store::read_page::<AccessKey>(
                    self.store.as_ref(),
                    Table::AccessKeys,
                    "",
                    None,
                    usize::MAX,
                )?
                .into_iter()
                .map(|(_, k)| k)
                .filter(|k: &AccessKey| k.user_name.eq_ignore_ascii_case(&user))
                .collect())
            },
        )
        .await
    }

    pub async fn get_access_key_last_used(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        access_key_id: &str,
    ) -> Result<AccessKey, BrokerError> {
        let key: Option<AccessKey> =
            store::read(self.store.as_ref(), Table::AccessKeys, access_key_id)?;
        let arn = match &key {
            Some(k) => self.user_arn_for(&k.user_name)?,
            None => self.account().user_arn("/", "*"),
        };
        self.iam_call(
            caller,
            meta,
            "iam:GetAccessKeyLastUsed",
            &arn,
            json!({"access_key_id": access_key_id}),
            false,
            || {
                key.clone()
                    .ok_or_else(|| not_found("access key", access_key_id))
            },
        )
        .await
    }

    // ---- bootstrap ---------------------------------------------------------------------

    /// Creates the first administrator (used by `stint init` and `serve --dev`): a user
    /// with AdministratorAccess, a password and an enabled virtual MFA device. Returns the
    /// user and the device seed, which is shown once.
    pub async fn bootstrap_admin(
        &self,
        user_name: &str,
        password: &SecretString,
    ) -> Result<(User, String, SecretBytes), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let now = self.now();
        let phc = self.hash_new_password(password).await?;
        let serial = self.account().mfa_arn(user_name);
        let seed = totp::new_seed(self.random::<20>()?);
        let sealed_seed = self
            .master
            .seal(seed.expose(), &mfa_aad(&serial), &self.rng)?;
        let user = User {
            v: RECORD_VERSION,
            name: user_name.into(),
            id: self.ids("AIDA")?,
            path: "/".into(),
            arn: self.account().user_arn("/", user_name),
            create_date: unix_ms(now),
            tags: vec![],
            login_profile: Some(model::LoginProfile {
                phc,
                create_date: unix_ms(now),
                password_reset_required: false,
                last_changed: unix_ms(now),
                last_used: None,
                history: vec![],
            }),
            groups: vec![],
            attached_policies: vec![self.account().builtin_policy_arn("AdministratorAccess")],
            inline_policies: BTreeMap::new(),
            permissions_boundary: None,
        };
        let device = MfaDevice {
            v: RECORD_VERSION,
            serial_number: serial.clone(),
            user_name: user_name.into(),
            sealed_seed,
            enable_date: Some(unix_ms(now)),
            last_used_step: None,
            drift_steps: 0,
        };
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            if tx
                .get_raw(Table::Users, name_key(user_name).as_bytes())?
                .is_some()
            {
                return Err(BrokerError::AlreadyExists(format!("user {user_name}")));
            }
            tx.put(Table::Users, &name_key(user_name), &user);
            tx.put(Table::MfaDevices, &mfa_key(user_name, &serial), &device);
            Ok(())
        })?;
        let mut event = self.event(
            &RequestMeta::default(),
            "stint:Init",
            &user.arn,
            Outcome::Allow,
            now,
        );
        event.params = json!({"user_name": user_name, "serial_number": serial});
        self.audit.append(event).await?;
        // The first signing keys were made when the store opened; they open the rotation log.
        let keys: Vec<serde_json::Value> = super::keys::all_keys(self.store.as_ref())?
            .iter()
            .map(|k| json!({"kid": k.kid, "state": k.state.as_str()}))
            .collect();
        let mut keys_event = self.event(
            &RequestMeta::default(),
            "stint:CreateSigningKey",
            "stint",
            Outcome::Allow,
            now,
        );
        keys_event.rotation = true;
        keys_event.params = json!({ "keys": keys });
        self.audit.append(keys_event).await?;
        Ok((user, serial, seed))
    }

    pub fn has_users(&self) -> Result<bool, BrokerError> {
        Ok(!self.store.scan(Table::Users, b"", None, 1)?.is_empty())
    }
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

/// Object-safe access to the policy-holding fields of users, groups and roles.
trait HolderAccess {
    fn attached_list(&mut self) -> &mut Vec<String>;
    fn inline_map(&mut self) -> &mut BTreeMap<String, String>;
    fn boundary_slot(&mut self) -> Option<&mut Option<String>>;
}

impl<T: HolderRecord> HolderAccess for T {
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
