//! What a user, group or role holds: attached managed policies, inline policies and (users
//! and roles) a permissions boundary.

use serde_json::{Value, json};

use crate::core::model::{Group, NameKind, Role, User, path_or_root};
use crate::store::Tx;

use super::super::{Broker, BrokerError, Caller, RequestMeta};
use super::{
    Gate, Holder, HolderAccess, IamRecord, MAX_ATTACHED_POLICIES, Page, RequestKeys, boundary_key,
    check_arn, check_name, non_whitespace_len, not_found, parse_policy, policy_arn_key, slice_page,
    update_in,
};

/// A holder as read for a request: the record (if any), its ARN and condition keys.
type HolderEntity = (Option<Box<dyn HolderAccess + Send>>, String, RequestKeys);

/// Reads, authorizes, changes and stages the holder's record.
fn change_holder<R>(
    tx: &mut Tx<'_>,
    gate: &Gate<'_>,
    holder: Holder,
    name: &str,
    extra: RequestKeys,
    change: impl FnOnce(&mut dyn HolderAccess) -> Result<R, BrokerError>,
) -> Result<R, BrokerError> {
    match holder {
        Holder::User => update_in::<User, R>(tx, gate, name, extra, |r| change(r)),
        Holder::Group => update_in::<Group, R>(tx, gate, name, extra, |r| change(r)),
        Holder::Role => update_in::<Role, R>(tx, gate, name, extra, |r| change(r)),
    }
}

impl Broker {
    /// A read of what `holder` `name` holds, authorized on the holder (its ARN and tags);
    /// NotFound only once the caller was allowed to know.
    #[allow(clippy::too_many_arguments)] // the frame the holder reads share
    async fn read_holder<R>(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        action: &str,
        params: Value,
        answer: impl FnOnce(&mut dyn HolderAccess) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        check_name(holder.name_kind(), name)?;
        let (record, arn, keys) = self.holder_entity(holder, action, name)?;
        self.iam_read(caller, meta, action, &arn, &keys, params, || {
            let mut record =
                record.ok_or_else(|| not_found(&holder.noun().to_lowercase(), name))?;
            answer(record.as_mut())
        })
        .await
    }

    /// The holder (when it exists), its ARN and the condition keys of `action` on it.
    fn holder_entity(
        &self,
        holder: Holder,
        action: &str,
        name: &str,
    ) -> Result<HolderEntity, BrokerError> {
        fn boxed<T: IamRecord + Send + 'static>(
            (record, arn, keys): (Option<T>, String, RequestKeys),
        ) -> HolderEntity {
            (
                record.map(|r| Box::new(r) as Box<dyn HolderAccess + Send>),
                arn,
                keys,
            )
        }
        Ok(match holder {
            Holder::User => boxed(self.entity::<User>(action, name)?),
            Holder::Group => boxed(self.entity::<Group>(action, name)?),
            Holder::Role => boxed(self.entity::<Role>(action, name)?),
        })
    }

    /// Attach{User,Group,Role}Policy (`attach`) or Detach…Policy.
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
        check_arn("policy_arn", policy_arn)?;
        let action = format!(
            "iam:{}{}Policy",
            if attach { "Attach" } else { "Detach" },
            holder.noun()
        );
        let params = json!({format!("{}_name", holder.noun().to_lowercase()): name, "policy_arn": policy_arn});
        // AWS sets iam:PolicyARN for Attach/Detach{User,Group,Role}Policy.
        let keys = vec![policy_arn_key(policy_arn)];
        self.iam_change(caller, meta, &action, params, |tx, gate| {
            change_holder(tx, gate, holder, name, keys.clone(), |record| {
                if attach {
                    self.lookup_policy(policy_arn).map_err(|_| {
                        BrokerError::invalid(
                            "policy_arn",
                            format!("policy {policy_arn} does not exist"),
                        )
                    })?;
                }
                let attached = record.attached_list();
                let position = attached.iter().position(|a| a == policy_arn);
                match (attach, position) {
                    (true, Some(_)) => Ok(()),
                    (true, None) if attached.len() >= MAX_ATTACHED_POLICIES => {
                        Err(BrokerError::LimitExceeded(format!(
                            "{} {name} already has {MAX_ATTACHED_POLICIES} managed policies attached",
                            holder.noun().to_lowercase()
                        )))
                    }
                    (true, None) => {
                        attached.push(policy_arn.to_string());
                        Ok(())
                    }
                    (false, Some(i)) => {
                        attached.remove(i);
                        Ok(())
                    }
                    (false, None) => {
                        Err(not_found(&format!("attachment of {policy_arn} to"), name))
                    }
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
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<(String, String)>, Option<String>), BrokerError> {
        let path_prefix = path_or_root(path_prefix);
        let action = format!("iam:ListAttached{}Policies", holder.noun());
        let params = json!({"name": name});
        self.read_holder(caller, meta, holder, name, &action, params, |record| {
            let rows: Vec<(String, String)> = record
                .attached_list()
                .iter()
                .filter(|a| policy_path(a).starts_with(path_prefix.as_str()))
                .map(|a| {
                    (
                        a.rsplit('/').next().unwrap_or_default().to_string(),
                        a.clone(),
                    )
                })
                .collect();
            slice_page(&rows, |(_, a)| a.clone(), page)
        })
        .await
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
        let action = format!("iam:Put{}Policy", holder.noun());
        let params = json!({"name": name, "policy_name": policy_name, "policy_document": document});
        self.iam_change(caller, meta, &action, params, |tx, gate| {
            change_holder(tx, gate, holder, name, vec![], |record| {
                let inline = record.inline_map();
                let total: usize = inline
                    .iter()
                    .filter(|(k, _)| *k != policy_name)
                    .map(|(_, d)| non_whitespace_len(d))
                    .sum::<usize>()
                    + non_whitespace_len(document);
                if total > holder.inline_quota() {
                    return Err(BrokerError::LimitExceeded(format!(
                        "inline policies of {} {name} would total {total} characters; the quota is {}",
                        holder.noun().to_lowercase(),
                        holder.inline_quota()
                    )));
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
        let action = format!("iam:Get{}Policy", holder.noun());
        let params = json!({"name": name, "policy_name": policy_name});
        self.read_holder(caller, meta, holder, name, &action, params, |record| {
            record
                .inline_map()
                .get(policy_name)
                .cloned()
                .ok_or_else(|| not_found(&format!("inline policy of {name}:"), policy_name))
        })
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
        let action = format!("iam:Delete{}Policy", holder.noun());
        let params = json!({"name": name, "policy_name": policy_name});
        self.iam_change(caller, meta, &action, params, |tx, gate| {
            change_holder(tx, gate, holder, name, vec![], |record| {
                record
                    .inline_map()
                    .remove(policy_name)
                    .map(|_| ())
                    .ok_or_else(|| not_found(&format!("inline policy of {name}:"), policy_name))
            })
        })
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
        let action = format!("iam:List{}Policies", holder.noun());
        let params = json!({"name": name});
        self.read_holder(caller, meta, holder, name, &action, params, |record| {
            let names: Vec<String> = record.inline_map().keys().cloned().collect();
            slice_page(&names, |n| n.clone(), page)
        })
        .await
    }

    /// Put{User,Role}PermissionsBoundary (`Some`) or Delete…PermissionsBoundary.
    pub async fn set_permissions_boundary(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        holder: Holder,
        name: &str,
        boundary_arn: Option<&str>,
    ) -> Result<(), BrokerError> {
        check_name(holder.name_kind(), name)?;
        check_arn("permissions_boundary", boundary_arn.unwrap_or_default())?;
        if holder == Holder::Group {
            return Err(BrokerError::invalid(
                "holder",
                "groups have no permissions boundary",
            ));
        }
        let action = format!(
            "iam:{}{}PermissionsBoundary",
            if boundary_arn.is_some() {
                "Put"
            } else {
                "Delete"
            },
            holder.noun()
        );
        // Put sets iam:PermissionsBoundary to the requested boundary; Delete to the
        // current one (added by the gate).
        let keys: RequestKeys = boundary_arn.map(boundary_key).into_iter().collect();
        let params = json!({"name": name, "permissions_boundary": boundary_arn});
        self.iam_change(caller, meta, &action, params, |tx, gate| {
            change_holder(tx, gate, holder, name, keys.clone(), |record| {
                if let Some(b) = boundary_arn {
                    if b.is_empty() {
                        return Err(BrokerError::invalid("permissions_boundary", "is required"));
                    }
                    self.check_boundary(b)?;
                }
                if let Some(slot) = record.boundary_slot() {
                    *slot = boundary_arn.map(str::to_owned);
                }
                Ok(())
            })
        })
        .await
    }
}

/// The path of a managed policy ARN (`arn:…:policy/a/b/Name` → `/a/b/`).
fn policy_path(arn: &str) -> &str {
    let Some(start) = arn.find(":policy/") else {
        return "/";
    };
    let rest = &arn[start + ":policy".len()..];
    rest.rfind('/').map_or("/", |end| &rest[..=end])
}

#[cfg(test)]
mod tests {
    use super::policy_path;

    #[test]
    fn policy_paths_come_from_the_arn() {
        for (arn, path) in [
            ("arn:stint:iam::1:policy/Name", "/"),
            ("arn:stint:iam::1:policy/team/ops/Name", "/team/ops/"),
            ("arn:stint:iam::aws:policy/AdministratorAccess", "/"),
            ("not-an-arn", "/"),
        ] {
            assert_eq!(policy_path(arn), path, "{arn}");
        }
    }
}
