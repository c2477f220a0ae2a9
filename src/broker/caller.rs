//! Who is calling, and what their policies say.
//!
//! A [`Caller`] is a verified session token. From it the broker derives the condition
//! context AWS documents (`aws:username`, `aws:MultiFactorAuthPresent`, …) and the
//! caller's effective policy set (identity policies, boundary, session policies).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::core::model::{Account, Group, ManagedPolicy, Role, Session, User, name_key};
use crate::core::policy::{self, Context, NamedPolicy, Policy, PolicyKind, PolicySet};
use crate::core::token::{Claims, TokenKind};
use crate::store::{self, Table};

use super::{Broker, BrokerError, unix_secs};

/// Facts about the request itself, for the audit log and condition keys.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: Option<IpAddr>,
    pub user_agent: String,
    /// The request came over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
}

/// A verified session.
#[derive(Clone, Debug)]
pub struct Caller {
    pub claims: Claims,
    /// The session record (read once, when the token is verified): session policies,
    /// ancestors, the password-change restriction.
    pub session: Session,
}

impl Caller {
    pub fn arn(&self) -> &str {
        &self.claims.sub
    }

    pub fn jti(&self) -> &str {
        &self.claims.jti
    }

    /// The user name, for sessions of IAM users.
    pub fn user_name(&self) -> Option<&str> {
        match self.claims.stint.kind {
            TokenKind::Session => self.claims.sub.rsplit('/').next(),
            TokenKind::AssumedRole => None,
        }
    }

    pub fn role_arn(&self) -> Option<&str> {
        self.claims.stint.role_arn.as_deref()
    }

    /// A session that may only change its password (see [`RESTRICTED_ACTIONS`]).
    pub fn is_restricted(&self) -> bool {
        self.session.restricted
    }

    /// The role's unique id (`AROA…`) of an assumed-role session.
    fn role_id(&self) -> &str {
        let id = &self.claims.stint.user_id;
        id.split_once(':')
            .map_or(id.as_str(), |(role_id, _)| role_id)
    }
}

/// All a restricted (must-change-password) session may call, whatever its policies say.
pub(crate) const RESTRICTED_ACTIONS: &[&str] = &[
    "iam:ChangePassword",
    "iam:GetAccountPasswordPolicy",
    "sts:GetCallerIdentity",
];

/// A compiled policy with the name decisions cite it by.
type Named = (String, Arc<Policy>);

/// The loaded, compiled policies that govern one principal.
pub(crate) struct EffectivePolicies {
    identity: Vec<(String, Arc<Policy>)>,
    boundary: Option<(String, Arc<Policy>)>,
    pub(crate) session: Option<Vec<(String, Arc<Policy>)>>,
}

impl EffectivePolicies {
    pub fn push_identity(&mut self, name: String, policy: Arc<Policy>) {
        self.identity.push((name, policy));
    }

    /// Borrows the compiled policies as the engine's view; `f` runs the evaluation.
    pub fn with_set<R>(&self, f: impl FnOnce(&PolicySet<'_>) -> R) -> R {
        let identity: Vec<NamedPolicy<'_>> = self
            .identity
            .iter()
            .map(|(name, policy)| NamedPolicy { name, policy })
            .collect();
        let session: Option<Vec<NamedPolicy<'_>>> = self.session.as_ref().map(|list| {
            list.iter()
                .map(|(name, policy)| NamedPolicy { name, policy })
                .collect()
        });
        let set = PolicySet {
            identity: &identity,
            boundary: self
                .boundary
                .as_ref()
                .map(|(name, policy)| NamedPolicy { name, policy }),
            session: session.as_deref(),
        };
        f(&set)
    }
}

impl Broker {
    /// The managed policy document behind an ARN: a built-in or a customer policy.
    pub(crate) fn managed_document(&self, arn: &str) -> Result<Option<String>, BrokerError> {
        if let Some(name) = builtin_name(arn) {
            return Ok(policy::builtin::get(name).map(|b| b.document.to_string()));
        }
        let record: Option<ManagedPolicy> = store::read(self.store.as_ref(), Table::Policies, arn)?;
        Ok(record.and_then(|p| p.default_document().map(str::to_owned)))
    }

    fn push_managed(
        &self,
        arns: &[String],
        out: &mut Vec<(String, Arc<Policy>)>,
    ) -> Result<(), BrokerError> {
        for arn in arns {
            if let Some(doc) = self.managed_document(arn)? {
                out.push((arn.clone(), self.compiled(PolicyKind::Managed, &doc)?));
            }
        }
        Ok(())
    }

    pub(crate) fn user_policies(&self, user: &User) -> Result<EffectivePolicies, BrokerError> {
        let mut identity = Vec::new();
        for (name, doc) in &user.inline_policies {
            identity.push((
                format!("user/{}/{name}", user.name),
                self.compiled(PolicyKind::UserInline, doc)?,
            ));
        }
        self.push_managed(&user.attached_policies, &mut identity)?;
        for group_name in &user.groups {
            let group: Option<Group> =
                store::read(self.store.as_ref(), Table::Groups, &name_key(group_name))?;
            let Some(group) = group else { continue };
            for (name, doc) in &group.inline_policies {
                identity.push((
                    format!("group/{}/{name}", group.name),
                    self.compiled(PolicyKind::GroupInline, doc)?,
                ));
            }
            self.push_managed(&group.attached_policies, &mut identity)?;
        }
        let boundary = self.boundary(user.permissions_boundary.as_deref())?;
        Ok(EffectivePolicies {
            identity,
            boundary,
            session: None,
        })
    }

    pub(crate) fn role_policies(
        &self,
        role: &Role,
        session_policies: &[String],
    ) -> Result<EffectivePolicies, BrokerError> {
        let mut identity = Vec::new();
        for (name, doc) in &role.inline_policies {
            identity.push((
                format!("role/{}/{name}", role.name),
                self.compiled(PolicyKind::RoleInline, doc)?,
            ));
        }
        self.push_managed(&role.attached_policies, &mut identity)?;
        let boundary = self.boundary(role.permissions_boundary.as_deref())?;
        Ok(EffectivePolicies {
            identity,
            boundary,
            session: self.session_set(session_policies)?,
        })
    }

    /// Compiled session policies, or `None` when the session has none (no intersection).
    fn session_set(&self, documents: &[String]) -> Result<Option<Vec<Named>>, BrokerError> {
        if documents.is_empty() {
            return Ok(None);
        }
        documents
            .iter()
            .enumerate()
            .map(|(i, doc)| {
                Ok((
                    format!("session_policy[{i}]"),
                    self.compiled(PolicyKind::Session, doc)?,
                ))
            })
            .collect::<Result<Vec<_>, BrokerError>>()
            .map(Some)
    }

    fn boundary(&self, arn: Option<&str>) -> Result<Option<(String, Arc<Policy>)>, BrokerError> {
        let Some(arn) = arn else { return Ok(None) };
        // A boundary whose policy was deleted allows nothing, as in AWS.
        let doc = self
            .managed_document(arn)?
            .unwrap_or_else(|| r#"{"Version":"2012-10-17","Statement":[]}"#.to_string());
        Ok(Some((
            arn.to_string(),
            self.compiled(PolicyKind::Managed, &doc)?,
        )))
    }

    pub(crate) fn load_user(&self, name: &str) -> Result<Option<User>, BrokerError> {
        Ok(store::read(
            self.store.as_ref(),
            Table::Users,
            &name_key(name),
        )?)
    }

    pub(crate) fn load_role(&self, name: &str) -> Result<Option<Role>, BrokerError> {
        Ok(store::read(
            self.store.as_ref(),
            Table::Roles,
            &name_key(name),
        )?)
    }

    /// The caller's effective policies: a user's, or the assumed role's ∩ session policy.
    /// Compiled once per session and kept until IAM changes (see `session_cache`).
    pub(crate) fn caller_policies(
        &self,
        caller: &Caller,
    ) -> Result<Arc<EffectivePolicies>, BrokerError> {
        let now = self.now();
        let shared = self.store.shared();
        if let Some(policies) = self.cache.policies(caller.jti(), now, shared) {
            return Ok(policies);
        }
        // Read before the policies are: a change committed meanwhile makes them stale.
        let generation = self.cache.iam_generation();
        let policies = Arc::new(self.load_caller_policies(caller)?);
        self.cache
            .insert_policies(caller.jti(), policies.clone(), generation, now);
        Ok(policies)
    }

    fn load_caller_policies(&self, caller: &Caller) -> Result<EffectivePolicies, BrokerError> {
        match caller.claims.stint.kind {
            TokenKind::Session => {
                let user = self.session_user(caller)?;
                let mut policies = self.user_policies(&user)?;
                policies.session = self.session_set(&caller.session.session_policies)?;
                Ok(policies)
            }
            TokenKind::AssumedRole => {
                let role = self.session_role(caller)?;
                self.role_policies(&role, &caller.session.session_policies)
            }
        }
    }

    /// The user of a user session: the one it was minted for, not a namesake created
    /// after a delete (unique ids differ, as AWS's `AIDA…` ids do).
    pub(crate) fn session_user(&self, caller: &Caller) -> Result<User, BrokerError> {
        let name = caller.user_name().unwrap_or_default();
        self.load_user(name)?
            .filter(|u| u.id == caller.claims.stint.user_id)
            .ok_or_else(|| {
                BrokerError::Unauthenticated("the session's user no longer exists".into())
            })
    }

    /// The role of an assumed-role session, matched by unique id (`AROA…`).
    pub(crate) fn session_role(&self, caller: &Caller) -> Result<Role, BrokerError> {
        let role_arn = caller.role_arn().unwrap_or_default();
        let role_name = role_arn.rsplit('/').next().unwrap_or_default();
        self.load_role(role_name)?
            .filter(|r| r.arn == role_arn && r.id == caller.role_id())
            .ok_or_else(|| {
                BrokerError::Unauthenticated("the session's role no longer exists".into())
            })
    }

    /// Refuses a session whose principal was deleted and created again under the same
    /// name: the user (for user sessions), the role and, when it still exists, the user
    /// who assumed it (for role sessions). A source user that is gone leaves the role
    /// session alive, as in AWS; a namesake does not inherit it.
    pub(crate) fn check_principal_ids(&self, caller: &Caller) -> Result<(), BrokerError> {
        match caller.claims.stint.kind {
            TokenKind::Session => self.session_user(caller).map(drop),
            TokenKind::AssumedRole => {
                self.session_role(caller)?;
                let source_id = &caller.session.principal_id;
                let source_arn = &caller.claims.stint.principal_arn;
                if source_id.is_empty() {
                    return Ok(());
                }
                let source_name = crate::core::model::Arn::parse(source_arn)
                    .and_then(|a| {
                        a.kind_and_name()
                            .filter(|(kind, _)| *kind == "user")
                            .map(|(_, name)| name.to_string())
                    })
                    .unwrap_or_default();
                match self.load_user(&source_name)? {
                    Some(user) if user.arn == *source_arn && user.id != *source_id => {
                        Err(BrokerError::Unauthenticated(
                            "the user who assumed this role was deleted and created again".into(),
                        ))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The condition keys Stint fills for a caller at `now`.
    pub(crate) fn caller_context(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        now: SystemTime,
    ) -> Context {
        let claims = &caller.claims;
        let mut ctx = base_context(&self.settings.account, meta, now);
        if let Some(user) = caller.user_name() {
            ctx.insert("aws:username", user);
            ctx.insert("aws:PrincipalType", "User");
        } else {
            ctx.insert("aws:PrincipalType", "AssumedRole");
        }
        ctx.insert("aws:userid", claims.stint.user_id.clone());
        let principal_arn = claims.stint.role_arn.as_deref().unwrap_or(&claims.sub);
        ctx.insert("aws:PrincipalArn", principal_arn);
        ctx.insert("aws:TokenIssueTime", iso8601(claims.iat));
        // Long-term access-key sessions without MFA carry no MFA keys at all (as in AWS).
        let by_key = claims.amr.iter().any(|m| m == "key");
        if claims.stint.mfa_present || !by_key {
            ctx.insert(
                "aws:MultiFactorAuthPresent",
                if claims.stint.mfa_present {
                    "true"
                } else {
                    "false"
                },
            );
        }
        if let Some(mfa_time) = claims.stint.mfa_auth_time {
            ctx.insert(
                "aws:MultiFactorAuthAge",
                (unix_secs(now) - mfa_time).max(0).to_string(),
            );
        }
        for (key, value) in &claims.stint.tags {
            ctx.insert(&format!("aws:PrincipalTag/{key}"), value.clone());
        }
        if let Some(source_identity) = &claims.stint.source_identity {
            ctx.insert("aws:SourceIdentity", source_identity.clone());
        }
        ctx
    }
}

/// Keys every request has, whoever calls.
pub(crate) fn base_context(account: &Account, meta: &RequestMeta, now: SystemTime) -> Context {
    let mut ctx = Context::new();
    let secs = unix_secs(now);
    ctx.insert("aws:CurrentTime", iso8601(secs));
    ctx.insert("aws:EpochTime", secs.to_string());
    ctx.insert("aws:PrincipalAccount", account.id.clone());
    ctx.insert(
        "aws:SecureTransport",
        if meta.secure_transport {
            "true"
        } else {
            "false"
        },
    );
    if let Some(ip) = meta.source_ip {
        ctx.insert("aws:SourceIp", ip.to_string());
    }
    if !meta.user_agent.is_empty() {
        ctx.insert("aws:UserAgent", meta.user_agent.clone());
    }
    ctx
}

pub(crate) fn iso8601(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `arn:<p>:iam::aws:policy/<name>` → `<name>`.
pub(crate) fn builtin_name(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("iam::aws:policy/")?;
    Some(rest.rsplit('/').next().unwrap_or(rest))
}
