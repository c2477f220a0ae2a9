//! Self-service password changes and the access-review use cases: the credential report,
//! policy simulation for a principal, and "who can do this?".

use std::time::SystemTime;

use serde_json::json;

use crate::audit::event::Outcome;
use crate::core::model::{AccessKey, AccessKeyStatus, Role, User, name_key};
use crate::core::policy::{self, Decision, NamedPolicy, PolicyKind, Request};
use crate::core::secret::SecretString;
use crate::store::{self, Table};

use super::caller::{Caller, RequestMeta, base_context};
use super::{Broker, BrokerError, unix_ms};
use crate::core::time::iso8601_ms as iso_ms;

/// One decision of [`Broker::simulate_principal_policy`].
#[derive(Debug, Clone)]
pub struct SimulationResult {
    pub action: String,
    pub resource: String,
    pub decision: Decision,
    pub matched: Vec<String>,
    pub reason: String,
}

/// Most action × resource pairs one simulation evaluates (AWS pages its results at
/// `MaxItems` ≤ 1,000; Stint answers at most that many in one call).
pub const MAX_SIMULATION_PAIRS: usize = 1_000;
/// AWS `ActionNameType`: 3 to 128 characters.
pub const MAX_ACTION_NAME: usize = 128;
/// AWS `ResourceNameType`: 1 to 2,048 characters.
pub const MAX_RESOURCE_ARN: usize = 2_048;
/// AWS `policyDocumentType` in `PolicyInputList`: at most 131,072 characters each.
pub const MAX_INPUT_POLICY: usize = 131_072;
/// Extra policies one simulation may add.
pub const MAX_INPUT_POLICIES: usize = 10;
/// AWS `ContextKeyNameType`: 5 to 256 characters.
pub const MAX_CONTEXT_KEY: usize = 256;
/// Context entries, and values per entry, one simulation may give.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
pub const MAX_CONTEXT_VALUES: usize = 64;
/// Characters of one context value.
pub const MAX_CONTEXT_VALUE: usize = 2_048;

/// Bounds every part of a simulation before anything is parsed, matched or allocated for
/// its results: the fan-out (actions × resources) is what a read-only caller could
/// otherwise turn into gigabytes.
fn check_simulation_bounds(input: &SimulationInput) -> Result<(), BrokerError> {
    fn each(field: &str, items: &[String], max_len: usize) -> Result<(), BrokerError> {
        match items.iter().position(|item| item.chars().count() > max_len) {
            Some(i) => Err(BrokerError::invalid(
                &format!("{field}[{i}]"),
                format!("must be at most {max_len} characters"),
            )),
            None => Ok(()),
        }
    }
    let SimulationInput {
        policy_source_arn,
        actions,
        resources,
        context,
        extra_policies,
    } = input;
    if policy_source_arn.len() > MAX_RESOURCE_ARN {
        return Err(BrokerError::invalid(
            "policy_source_arn",
            format!("must be at most {MAX_RESOURCE_ARN} characters"),
        ));
    }
    if actions.is_empty() {
        return Err(BrokerError::invalid(
            "action_names",
            "give at least one action",
        ));
    }
    if actions.len() > MAX_SIMULATION_PAIRS {
        return Err(BrokerError::invalid(
            "action_names",
            format!("at most {MAX_SIMULATION_PAIRS} actions per call"),
        ));
    }
    if resources.len() > MAX_SIMULATION_PAIRS {
        return Err(BrokerError::invalid(
            "resource_arns",
            format!("at most {MAX_SIMULATION_PAIRS} resources per call"),
        ));
    }
    let pairs = actions.len().saturating_mul(resources.len().max(1));
    if pairs > MAX_SIMULATION_PAIRS {
        return Err(BrokerError::invalid(
            "resource_arns",
            format!(
                "{} action_names × {} resource_arns = {pairs} evaluations; at most {MAX_SIMULATION_PAIRS} per call (split the request)",
                actions.len(),
                resources.len()
            ),
        ));
    }
    each("action_names", actions, MAX_ACTION_NAME)?;
    each("resource_arns", resources, MAX_RESOURCE_ARN)?;
    if extra_policies.len() > MAX_INPUT_POLICIES {
        return Err(BrokerError::invalid(
            "policy_input_list",
            format!("at most {MAX_INPUT_POLICIES} documents"),
        ));
    }
    each("policy_input_list", extra_policies, MAX_INPUT_POLICY)?;
    if context.len() > MAX_CONTEXT_ENTRIES {
        return Err(BrokerError::invalid(
            "context_entries",
            format!("at most {MAX_CONTEXT_ENTRIES} entries"),
        ));
    }
    for (i, (key, values)) in context.iter().enumerate() {
        let field = format!("context_entries[{i}]");
        if key.is_empty() || key.chars().count() > MAX_CONTEXT_KEY {
            return Err(BrokerError::invalid(
                &field,
                format!("key must be 1 to {MAX_CONTEXT_KEY} characters"),
            ));
        }
        if values.len() > MAX_CONTEXT_VALUES {
            return Err(BrokerError::invalid(
                &field,
                format!("at most {MAX_CONTEXT_VALUES} values"),
            ));
        }
        each(&format!("{field}.values"), values, MAX_CONTEXT_VALUE)?;
    }
    Ok(())
}

/// What [`Broker::simulate_principal_policy`] evaluates.
#[derive(Debug, Clone, Default)]
pub struct SimulationInput {
    pub policy_source_arn: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub context: Vec<(String, Vec<String>)>,
    /// Extra identity policies to add for this simulation only.
    pub extra_policies: Vec<String>,
}

/// One principal that [`Broker::who_can`] found allowed, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Grant {
    pub principal_arn: String,
    pub kind: &'static str,
    pub matched: Vec<String>,
    pub via: String,
}

impl Broker {
    /// The caller changes their own password, proving the old one.
    pub async fn change_password(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        old_password: &SecretString,
        new_password: &SecretString,
    ) -> Result<(), BrokerError> {
        let now = self.now();
        let user_name = caller
            .user_name()
            .ok_or_else(|| BrokerError::invalid("caller", "only IAM users have a password"))?
            .to_string();
        let prepared = self
            .change_password_inner(caller, meta, &user_name, old_password, new_password, now)
            .await;
        // The new hash is made outside the transaction (argon2 is slow); the profile update
        // and its event then commit together. A refusal commits its event alone.
        let (new_phc, mut refusal) = match prepared {
            Ok(phc) => (Some(phc), None),
            Err(err) => (None, Some(err)),
        };
        let key = name_key(&user_name);
        let now_ms = unix_ms(now);
        self.audited(
            |tx| {
                if let Some(err) = refusal.take() {
                    return Err(err);
                }
                let new_phc = new_phc.clone().ok_or_else(|| {
                    BrokerError::Internal("password change retried after a refusal".into())
                })?;
                let mut user: User = tx
                    .get(Table::Users, &key)?
                    .ok_or_else(|| BrokerError::NotFound(format!("user {user_name}")))?;
                let profile = user.login_profile.as_mut().ok_or_else(|| {
                    BrokerError::NotFound(format!("login profile for user {user_name}"))
                })?;
                let mut history = vec![profile.phc.clone()];
                history.append(&mut profile.history);
                history.truncate(24);
                profile.history = history;
                profile.phc = new_phc;
                profile.last_changed = now_ms;
                profile.password_reset_required = false;
                tx.put(Table::Users, &key, &user);
                Ok(())
            },
            |result| {
                let mut event = self.event(
                    meta,
                    "iam:ChangePassword",
                    caller.arn(),
                    Outcome::Allow,
                    now,
                );
                event.rotation = true;
                event.params = json!({ "user_name": user_name });
                if let Err(err) = result {
                    event.outcome = if matches!(
                        err,
                        BrokerError::AccessDenied { .. } | BrokerError::InvalidCredentials
                    ) {
                        Outcome::Deny
                    } else {
                        Outcome::Error
                    };
                    event.reason = err.to_string();
                }
                Some(event)
            },
        )
        .await
    }

    async fn change_password_inner(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        old_password: &SecretString,
        new_password: &SecretString,
        now: SystemTime,
    ) -> Result<String, BrokerError> {
        let policy = self.password_policy()?;
        // As in AWS: the account setting lets every user change their own password;
        // otherwise an identity policy must allow iam:ChangePassword.
        if !policy.allow_users_to_change_password {
            let user = self
                .load_user(user_name)?
                .ok_or_else(|| BrokerError::NotFound(format!("user {user_name}")))?;
            self.require(caller, meta, "iam:ChangePassword", &user.arn)?;
        }
        policy
            .check(new_password.expose())
            .map_err(|m| BrokerError::invalid("new_password", m))?;
        let user = self
            .load_user(user_name)?
            .ok_or_else(|| BrokerError::NotFound(format!("user {user_name}")))?;
        let profile = user
            .login_profile
            .clone()
            .ok_or_else(|| BrokerError::NotFound(format!("login profile for user {user_name}")))?;
        // Guessing the old password through a stolen session meets the login lockout.
        let keys = super::login::lockout_keys(user_name, meta);
        if let Err(retry_after) = self.lockout_check(meta, &keys, now).await? {
            return Err(BrokerError::LockedOut { retry_after });
        }
        let (old, phc) = (old_password.clone(), profile.phc.clone());
        if !self.verify_password_job(old, phc).await?? {
            self.lockout_fail(meta, &keys, user_name, now).await?;
            return Err(BrokerError::InvalidCredentials);
        }
        // Reuse prevention: the current password counts as the most recent one.
        let remembered: Vec<String> = std::iter::once(profile.phc.clone())
            .chain(profile.history.iter().cloned())
            .take(policy.password_reuse_prevention as usize)
            .collect();
        for previous in remembered {
            let candidate = new_password.clone();
            if self.verify_password_job(candidate, previous).await?? {
                return Err(BrokerError::invalid(
                    "new_password",
                    format!(
                        "must differ from the last {} passwords",
                        policy.password_reuse_prevention
                    ),
                ));
            }
        }
        let salt: [u8; 16] = self.random()?;
        let new = new_password.clone();
        self.hash_password_job(new, salt)
            .await?
            .map_err(BrokerError::from)
    }

    /// AWS's credential report, as CSV or JSON.
    pub async fn credential_report(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        format: &str,
    ) -> Result<(Vec<u8>, String), BrokerError> {
        let format = match format {
            "" | "csv" | "text/csv" => "text/csv",
            "json" | "application/json" => "application/json",
            other => {
                return Err(BrokerError::invalid(
                    "format",
                    format!("must be csv or json, got {other:?}"),
                ));
            }
        };
        if let Err(err) = self.require(caller, meta, "iam:GetCredentialReport", "*") {
            let mut event = self.event(
                meta,
                "iam:GetCredentialReport",
                caller.arn(),
                Outcome::Deny,
                self.now(),
            );
            event.reason = err.to_string();
            self.audit.append(event).await?;
            return Err(err);
        }
        let now = self.now();
        let store = self.store.as_ref();
        let users: Vec<User> = store::read_page(store, Table::Users, "", None, usize::MAX)?
            .into_iter()
            .map(|(_, u)| u)
            .collect();
        let keys: Vec<AccessKey> =
            store::read_page(store, Table::AccessKeys, "", None, usize::MAX)?
                .into_iter()
                .map(|(_, k)| k)
                .collect();
        let mut rows = Vec::new();
        for user in &users {
            let mfa_active = !self.enabled_mfa_devices(&user.name)?.is_empty();
            let mut user_keys: Vec<&AccessKey> = keys
                .iter()
                .filter(|k| k.user_name.eq_ignore_ascii_case(&user.name))
                .collect();
            user_keys.sort_by_key(|k| k.create_date);
            let key_fields = |i: usize| -> serde_json::Value {
                match user_keys.get(i) {
                    Some(k) => json!({
                        "active": k.status == AccessKeyStatus::Active,
                        "last_rotated": iso_ms(Some(k.create_date)),
                        "last_used_date": iso_ms(k.last_used),
                        "age_days": (unix_ms(now) - k.create_date) / 86_400_000,
                    }),
                    None => {
                        json!({"active": false, "last_rotated": "N/A", "last_used_date": "N/A", "age_days": serde_json::Value::Null})
                    }
                }
            };
            let profile = user.login_profile.as_ref();
            rows.push(json!({
                "user": user.name,
                "arn": user.arn,
                "user_creation_time": iso_ms(Some(user.create_date)),
                "password_enabled": profile.is_some(),
                "password_last_used": iso_ms(profile.and_then(|p| p.last_used)),
                "password_last_changed": iso_ms(profile.map(|p| p.last_changed)),
                "mfa_active": mfa_active,
                "access_key_1": key_fields(0),
                "access_key_2": key_fields(1),
            }));
        }
        let mut event = self.event(
            meta,
            "iam:GetCredentialReport",
            caller.arn(),
            Outcome::Allow,
            now,
        );
        event.params = json!({"format": format, "users": rows.len()});
        self.audit.append(event).await?;
        if format == "application/json" {
            return Ok((
                serde_json::to_vec_pretty(&rows).unwrap_or_default(),
                format.into(),
            ));
        }
        let mut csv = String::from(
            "user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,access_key_2_active,access_key_2_last_rotated,access_key_2_last_used_date\n",
        );
        for row in &rows {
            // RFC 4180: user names (and so ARNs) may contain commas.
            let field = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) if s.contains([',', '"', '\n', '\r']) => {
                    format!("\"{}\"", s.replace('"', "\"\""))
                }
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let cells = [
                field(&row["user"]),
                field(&row["arn"]),
                field(&row["user_creation_time"]),
                field(&row["password_enabled"]),
                field(&row["password_last_used"]),
                field(&row["password_last_changed"]),
                field(&row["mfa_active"]),
                field(&row["access_key_1"]["active"]),
                field(&row["access_key_1"]["last_rotated"]),
                field(&row["access_key_1"]["last_used_date"]),
                field(&row["access_key_2"]["active"]),
                field(&row["access_key_2"]["last_rotated"]),
                field(&row["access_key_2"]["last_used_date"]),
            ];
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
        Ok((csv.into_bytes(), format.into()))
    }

    /// SimulatePrincipalPolicy: decisions for a user or role over actions × resources,
    /// with the context keys given (nothing derived from a live session).
    pub async fn simulate_principal_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        input: &SimulationInput,
    ) -> Result<Vec<SimulationResult>, BrokerError> {
        let SimulationInput {
            policy_source_arn,
            actions,
            resources,
            context,
            extra_policies,
        } = input;
        let policy_source_arn = policy_source_arn.as_str();
        check_simulation_bounds(input)?;
        self.require(
            caller,
            meta,
            "iam:SimulatePrincipalPolicy",
            policy_source_arn,
        )?;
        let parsed = crate::core::model::Arn::parse(policy_source_arn)
            .and_then(|a| {
                a.kind_and_name()
                    .map(|(k, n)| (k.to_string(), n.to_string()))
            })
            .ok_or_else(|| {
                BrokerError::invalid("policy_source_arn", "must be a user or role ARN")
            })?;
        let mut effective = match parsed.0.as_str() {
            "user" => {
                let user = self
                    .load_user(&parsed.1)?
                    .filter(|u| u.arn == policy_source_arn)
                    .ok_or_else(|| BrokerError::NotFound(format!("user {policy_source_arn}")))?;
                self.user_policies(&user)?
            }
            "role" => {
                let role = self
                    .load_role(&parsed.1)?
                    .filter(|r| r.arn == policy_source_arn)
                    .ok_or_else(|| BrokerError::NotFound(format!("role {policy_source_arn}")))?;
                self.role_policies(&role, &[])?
            }
            _ => {
                return Err(BrokerError::invalid(
                    "policy_source_arn",
                    "must be a user or role ARN",
                ));
            }
        };
        for (i, doc) in extra_policies.iter().enumerate() {
            let compiled = policy::Policy::parse(doc, PolicyKind::Managed).map_err(|error| {
                BrokerError::MalformedPolicy {
                    field: format!("policy_input_list[{i}]"),
                    error,
                }
            })?;
            effective.push_identity(
                format!("policy_input_list[{i}]"),
                std::sync::Arc::new(compiled),
            );
        }
        let mut ctx = base_context(self.account(), meta, self.now());
        if parsed.0 == "user" {
            ctx.insert("aws:username", parsed.1.clone());
        }
        ctx.insert("aws:PrincipalArn", policy_source_arn);
        for (key, values) in context {
            ctx.insert_multi(key, values.clone());
        }
        let resources: Vec<String> = if resources.is_empty() {
            vec!["*".into()]
        } else {
            resources.to_vec()
        };
        let mut out = Vec::with_capacity(actions.len() * resources.len());
        for action in actions {
            for resource in &resources {
                let request = Request {
                    principal: Some(policy_source_arn),
                    action,
                    resource,
                    context: &ctx,
                };
                let evaluation = effective.with_set(|set| policy::evaluate(&request, set));
                out.push(SimulationResult {
                    action: action.clone(),
                    resource: resource.clone(),
                    decision: evaluation.decision,
                    matched: evaluation.matched.iter().map(|m| m.to_string()).collect(),
                    reason: evaluation.reason,
                });
            }
        }
        Ok(out)
    }

    /// [`Self::who_can`], authorized (`iam:SimulatePrincipalPolicy` on `*`) and audited.
    pub async fn review_who_can(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        resource: &str,
    ) -> Result<Vec<Grant>, BrokerError> {
        if !action.contains(':') {
            return Err(BrokerError::invalid(
                "action_name",
                "must look like service:Action",
            ));
        }
        if resource.is_empty() {
            return Err(BrokerError::invalid("resource_arn", "is required"));
        }
        let decision = self.require(caller, meta, "iam:SimulatePrincipalPolicy", "*");
        let mut event = self.event(
            meta,
            "stint:WhoCan",
            caller.arn(),
            Outcome::Allow,
            self.now(),
        );
        event.params = json!({"action_name": action, "resource_arn": resource});
        if let Err(err) = &decision {
            event.outcome = Outcome::Deny;
            event.reason = err.to_string();
        }
        self.audit.append(event).await?;
        decision?;
        self.who_can(action, resource)
    }

    /// Every user and role allowed `action` on `resource` (roles also list who may assume
    /// them), with the statements that allow it.
    pub fn who_can(&self, action: &str, resource: &str) -> Result<Vec<Grant>, BrokerError> {
        let store = self.store.as_ref();
        let now = self.now();
        // Each principal as it would be right after an MFA login (conditions that need a
        // live request, like MFA age, are taken at their most favourable).
        let context = |user_name: Option<&str>| {
            let mut ctx = base_context(self.account(), &RequestMeta::default(), now);
            if let Some(name) = user_name {
                ctx.insert("aws:username", name);
            }
            ctx.insert("aws:MultiFactorAuthPresent", "true");
            ctx.insert("aws:MultiFactorAuthAge", "0");
            ctx
        };
        // Loaded once: every user is checked against the action and against every role.
        let users = store::read_page::<User>(store, Table::Users, "", None, usize::MAX)?
            .into_iter()
            .map(|(_, user)| {
                let policies = self.user_policies(&user)?;
                let ctx = context(Some(&user.name));
                Ok((user, policies, ctx))
            })
            .collect::<Result<Vec<_>, BrokerError>>()?;
        let roles: Vec<Role> = store::read_page(store, Table::Roles, "", None, usize::MAX)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let mut grants = Vec::new();
        for (user, policies, ctx) in &users {
            let request = Request {
                principal: Some(&user.arn),
                action,
                resource,
                context: ctx,
            };
            let evaluation = policies.with_set(|set| policy::evaluate(&request, set));
            if evaluation.decision == Decision::Allow {
                let groups = if user.groups.is_empty() {
                    String::new()
                } else {
                    format!(" (groups: {})", user.groups.join(", "))
                };
                grants.push(Grant {
                    principal_arn: user.arn.clone(),
                    kind: "user",
                    matched: evaluation.matched.iter().map(|m| m.to_string()).collect(),
                    via: format!("identity policies{groups}"),
                });
            }
        }
        let role_ctx = context(None);
        for role in &roles {
            let request = Request {
                principal: Some(&role.arn),
                action,
                resource,
                context: &role_ctx,
            };
            let evaluation = self
                .role_policies(role, &[])?
                .with_set(|set| policy::evaluate(&request, set));
            if evaluation.decision != Decision::Allow {
                continue;
            }
            let trust = self.compiled(PolicyKind::Trust, &role.assume_role_policy_document)?;
            let trust = NamedPolicy {
                name: "trust_policy",
                policy: &trust,
            };
            let assumers: Vec<&str> = users
                .iter()
                .filter(|(user, policies, ctx)| {
                    let request = Request {
                        principal: Some(&user.arn),
                        action: "sts:AssumeRole",
                        resource: &role.arn,
                        context: ctx,
                    };
                    policies
                        .with_set(|set| policy::evaluate_assume_role(&request, trust, set))
                        .decision
                        == Decision::Allow
                })
                .map(|(user, _, _)| user.name.as_str())
                .collect();
            let via = if assumers.is_empty() {
                "role policies; no user can assume it".to_string()
            } else {
                format!("role policies; assumable by {}", assumers.join(", "))
            };
            grants.push(Grant {
                principal_arn: role.arn.clone(),
                kind: "role",
                matched: evaluation.matched.iter().map(|m| m.to_string()).collect(),
                via,
            });
        }
        Ok(grants)
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    fn input(actions: usize, resources: usize) -> SimulationInput {
        SimulationInput {
            policy_source_arn: "arn:stint:iam::000000000000:user/a".into(),
            actions: vec!["s3:GetObject".into(); actions],
            resources: vec!["*".into(); resources],
            context: vec![],
            extra_policies: vec![],
        }
    }

    #[test]
    fn simulation_fan_out_and_sizes_are_bounded() {
        let long = |n: usize| "x".repeat(n);
        let cases: Vec<(&str, SimulationInput, Option<&str>)> = vec![
            ("one pair", input(1, 0), None),
            ("1000 actions on *", input(1000, 0), None),
            ("40 x 25", input(40, 25), None),
            ("no action", input(0, 1), Some("action_names")),
            ("1001 actions", input(1001, 0), Some("action_names")),
            ("1001 resources", input(1, 1001), Some("resource_arns")),
            ("2000 x 2000", input(2000, 2000), Some("action_names")),
            ("100 x 11", input(100, 11), Some("resource_arns")),
            (
                "long action",
                SimulationInput {
                    actions: vec![long(MAX_ACTION_NAME + 1)],
                    ..input(1, 0)
                },
                Some("action_names[0]"),
            ),
            (
                "long resource",
                SimulationInput {
                    resources: vec!["*".into(), long(MAX_RESOURCE_ARN + 1)],
                    ..input(1, 0)
                },
                Some("resource_arns[1]"),
            ),
            (
                "too many documents",
                SimulationInput {
                    extra_policies: vec!["{}".into(); MAX_INPUT_POLICIES + 1],
                    ..input(1, 0)
                },
                Some("policy_input_list"),
            ),
            (
                "long context value",
                SimulationInput {
                    context: vec![("aws:x".into(), vec![long(MAX_CONTEXT_VALUE + 1)])],
                    ..input(1, 0)
                },
                Some("context_entries[0].values[0]"),
            ),
        ];
        for (name, input, refused) in cases {
            match (check_simulation_bounds(&input), refused) {
                (Ok(()), None) => {}
                (Err(BrokerError::InvalidInput { field, .. }), Some(want)) => {
                    assert_eq!(field, want, "{name}")
                }
                (other, want) => panic!("{name}: got {other:?}, want {want:?}"),
            }
        }
    }
}
