//! Customer managed policies and their versions; built-in policies are presented as
//! managed policies but cannot be changed.

use std::collections::HashMap;

use serde_json::json;

use crate::core::model::{
    Group, ManagedPolicy, NameKind, PolicyVersion, RECORD_VERSION, Role, User, path_or_root,
};
use crate::core::policy::{self, PolicyKind};
use crate::store::{self, Table, Tx};

use super::super::caller::builtin_name;
use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::{
    MAX_POLICY_VERSIONS, Page, check_arn, check_description, check_name, check_path, insert_new,
    not_found, parse_policy, slice_page,
};

impl Broker {
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
        let id = self.ids("ANPA")?;
        let params = json!({"policy_name": policy_name, "path": path, "policy_document": document, "description": description});
        self.iam_change(caller, meta, "iam:CreatePolicy", params, |tx, gate| {
            gate.check(&arn, &[])?;
            // Names are unique per account regardless of path.
            let existing: Vec<ManagedPolicy> = tx.scan(Table::Policies, "")?;
            if existing
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(policy_name))
            {
                return Err(BrokerError::AlreadyExists(format!("policy {policy_name}")));
            }
            let policy = ManagedPolicy {
                v: RECORD_VERSION,
                name: policy_name.into(),
                id: id.clone(),
                path: path.clone(),
                arn: arn.clone(),
                create_date: now,
                update_date: now,
                description: description.into(),
                default_version_id: "v1".into(),
                versions: vec![PolicyVersion {
                    version_id: "v1".into(),
                    document: document.into(),
                    create_date: now,
                }],
                next_version: 2,
            };
            insert_new(tx, Table::Policies, &arn, &policy, "policy", policy_name)?;
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
        check_arn("policy_arn", arn)?;
        self.iam_read(
            caller,
            meta,
            "iam:GetPolicy",
            arn,
            &[],
            json!({"policy_arn": arn}),
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
        self.iam_read(
            caller,
            meta,
            "iam:ListPolicies",
            &resource,
            &[],
            json!({"scope": scope, "only_attached": only_attached}),
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
        check_arn("policy_arn", arn)?;
        let params = json!({"policy_arn": arn});
        self.iam_change(caller, meta, "iam:DeletePolicy", params, |tx, gate| {
            gate.check(arn, &[])?;
            if builtin_name(arn).is_some() {
                return Err(BrokerError::invalid(
                    "policy_arn",
                    "built-in policies cannot be deleted",
                ));
            }
            let policy: ManagedPolicy = tx
                .get(Table::Policies, arn)?
                .ok_or_else(|| not_found("policy", arn))?;
            let attached = attachments_in(tx, arn)?;
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
            tx.delete(Table::Policies, arn);
            Ok(())
        })
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
        check_arn("policy_arn", arn)?;
        parse_policy("policy_document", document, PolicyKind::Managed)?;
        let now = unix_ms(self.now());
        let params = json!({"policy_arn": arn, "policy_document": document, "set_as_default": set_as_default});
        self.iam_change(caller, meta, "iam:CreatePolicyVersion", params, |tx, gate| {
            gate.check(arn, &[])?;
            update_policy(tx, arn, |policy| {
                if policy.versions.len() >= MAX_POLICY_VERSIONS {
                    return Err(BrokerError::LimitExceeded(format!(
                        "policy {arn} already has {MAX_POLICY_VERSIONS} versions; delete one first"
                    )));
                }
                let version = PolicyVersion {
                    version_id: format!("v{}", policy.next_version),
                    document: document.into(),
                    create_date: now,
                };
                policy.next_version += 1;
                policy.update_date = now;
                if set_as_default {
                    policy.default_version_id = version.version_id.clone();
                }
                policy.versions.push(version.clone());
                Ok(version)
            })
        })
        .await
    }

    pub async fn get_policy_version(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        version_id: &str,
    ) -> Result<(PolicyVersion, bool), BrokerError> {
        check_arn("policy_arn", arn)?;
        self.iam_read(
            caller,
            meta,
            "iam:GetPolicyVersion",
            arn,
            &[],
            json!({"policy_arn": arn, "version_id": version_id}),
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
        check_arn("policy_arn", arn)?;
        self.iam_read(
            caller,
            meta,
            "iam:ListPolicyVersions",
            arn,
            &[],
            json!({"policy_arn": arn}),
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
        check_arn("policy_arn", arn)?;
        let params = json!({"policy_arn": arn, "version_id": version_id});
        self.iam_change(
            caller,
            meta,
            "iam:DeletePolicyVersion",
            params,
            |tx, gate| {
                gate.check(arn, &[])?;
                update_policy(tx, arn, |policy| {
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
        check_arn("policy_arn", arn)?;
        let now = unix_ms(self.now());
        let params = json!({"policy_arn": arn, "version_id": version_id});
        self.iam_change(
            caller,
            meta,
            "iam:SetDefaultPolicyVersion",
            params,
            |tx, gate| {
                gate.check(arn, &[])?;
                update_policy(tx, arn, |policy| {
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
}

/// Reads, changes and stages one customer policy.
fn update_policy<R>(
    tx: &mut Tx<'_>,
    arn: &str,
    change: impl FnOnce(&mut ManagedPolicy) -> Result<R, BrokerError>,
) -> Result<R, BrokerError> {
    if builtin_name(arn).is_some() {
        return Err(BrokerError::invalid(
            "policy_arn",
            "built-in policies cannot be changed",
        ));
    }
    let mut policy: ManagedPolicy = tx
        .get(Table::Policies, arn)?
        .ok_or_else(|| not_found("policy", arn))?;
    let out = change(&mut policy)?;
    tx.put(Table::Policies, arn, &policy);
    Ok(out)
}

/// Attachments and boundary uses of `arn`, read through the transaction so that an
/// attachment made meanwhile makes the delete retry and see it.
fn attachments_in(tx: &mut Tx<'_>, arn: &str) -> Result<usize, BrokerError> {
    let uses = |attached: &[String], boundary: &Option<String>| {
        attached.iter().filter(|a| *a == arn).count()
            + usize::from(boundary.as_deref() == Some(arn))
    };
    let mut total = 0;
    for u in tx.scan::<User>(Table::Users, "")? {
        total += uses(&u.attached_policies, &u.permissions_boundary);
    }
    for g in tx.scan::<Group>(Table::Groups, "")? {
        total += uses(&g.attached_policies, &None);
    }
    for r in tx.scan::<Role>(Table::Roles, "")? {
        total += uses(&r.attached_policies, &r.permissions_boundary);
    }
    Ok(total)
}
