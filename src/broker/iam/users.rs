//! Users: create, read, list, delete (refused while anything still hangs off the user,
//! as AWS's DeleteConflict), tag and untag.

use std::collections::BTreeMap;

use serde_json::json;

use crate::core::model::{MfaDevice, NameKind, RECORD_VERSION, Tag, User, name_key, validate_tags};
use crate::store::Table;

use super::super::sts::mfa_prefix;
use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::index::user_key_ids;
use super::{
    Page, RequestKeys, boundary_key, check_arn, check_name, check_path, insert_new,
    policy_blockers, request_tag_keys, tag_keys_key, update_in,
};

impl Broker {
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
        check_arn("permissions_boundary", permissions_boundary)?;
        let path = check_path(path)?;
        validate_tags(&tags).map_err(|m| BrokerError::invalid("tags", m))?;
        let arn = self.account().user_arn(&path, user_name);
        let params = json!({"user_name": user_name, "path": path, "tags": tags, "permissions_boundary": permissions_boundary});
        let mut keys = request_tag_keys(&tags);
        if !permissions_boundary.is_empty() {
            keys.push(boundary_key(permissions_boundary));
        }
        let now = unix_ms(self.now());
        let id = self.ids("AIDA")?;
        self.iam_change(caller, meta, "iam:CreateUser", params, |tx, gate| {
            gate.check(&arn, &keys)?;
            self.check_boundary(permissions_boundary)?;
            let user = User {
                v: RECORD_VERSION,
                name: user_name.into(),
                id: id.clone(),
                path: path.clone(),
                arn: arn.clone(),
                create_date: now,
                tags: tags.clone(),
                login_profile: None,
                groups: vec![],
                attached_policies: vec![],
                inline_policies: BTreeMap::new(),
                permissions_boundary: (!permissions_boundary.is_empty())
                    .then(|| permissions_boundary.to_string()),
            };
            insert_new(
                tx,
                Table::Users,
                &name_key(user_name),
                &user,
                "user",
                user_name,
            )?;
            Ok(user)
        })
        .await
    }

    pub async fn get_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<User, BrokerError> {
        let name = self.target_user(caller, user_name)?;
        self.get_entity::<User, _>(caller, meta, "iam:GetUser", &name, Ok)
            .await
    }

    pub async fn list_users(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<User>, Option<String>), BrokerError> {
        self.list_entities(caller, meta, "iam:ListUsers", path_prefix, page)
            .await
    }

    pub async fn delete_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        self.delete_entity(
            caller,
            meta,
            "iam:DeleteUser",
            user_name,
            |tx, user: &mut User| {
                let mut blockers = Vec::new();
                if user.login_profile.is_some() {
                    blockers.push("a login profile");
                }
                if !user.groups.is_empty() {
                    blockers.push("group memberships");
                }
                blockers.extend(policy_blockers(user));
                if !tx
                    .scan::<MfaDevice>(Table::MfaDevices, &mfa_prefix(user_name))?
                    .is_empty()
                {
                    blockers.push("MFA devices");
                }
                // The user's own key index, not every key of every user.
                if !user_key_ids(tx, user_name)?.is_empty() {
                    blockers.push("access keys");
                }
                Ok(blockers)
            },
        )
        .await
    }

    /// TagUser (`remove` empty) or UntagUser.
    pub async fn tag_user(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        tags: Vec<Tag>,
        remove: Vec<String>,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        check_tag_change(&tags, &remove)?;
        let action = if remove.is_empty() {
            "iam:TagUser"
        } else {
            "iam:UntagUser"
        };
        let params = json!({"user_name": user_name, "tags": tags, "tag_keys": remove});
        let keys = tagging_keys(&tags, &remove);
        self.iam_change(caller, meta, action, params, |tx, gate| {
            update_in::<User, _>(tx, gate, user_name, keys.clone(), |user| {
                retag(&mut user.tags, &tags, &remove)
            })
        })
        .await
    }
}

/// Bounds a Tag/Untag request before it is matched or logged (AWS: at most 50 tags or
/// keys, keys 1 to 128 characters).
pub(super) fn check_tag_change(tags: &[Tag], remove: &[String]) -> Result<(), BrokerError> {
    validate_tags(tags).map_err(|m| BrokerError::invalid("tags", m))?;
    if remove.len() > 50 {
        return Err(BrokerError::invalid(
            "tag_keys",
            format!("at most 50, got {}", remove.len()),
        ));
    }
    if let Some(bad) = remove
        .iter()
        .find(|k| k.is_empty() || k.chars().count() > 128)
    {
        let shown: String = bad.chars().take(32).collect();
        return Err(BrokerError::invalid(
            "tag_keys",
            format!("key {shown:?}… must be 1 to 128 characters"),
        ));
    }
    Ok(())
}

/// TagX sets `aws:RequestTag/*` and `aws:TagKeys` (the keys sent); UntagX sets
/// `aws:TagKeys` to the keys removed.
pub(super) fn tagging_keys(tags: &[Tag], remove: &[String]) -> RequestKeys {
    let mut keys = request_tag_keys(tags);
    if !remove.is_empty() {
        keys.retain(|(k, _)| k != "aws:TagKeys");
        let mut all: Vec<String> = tags.iter().map(|t| t.key.clone()).collect();
        all.extend(remove.iter().cloned());
        keys.push(tag_keys_key(all));
    }
    keys
}

/// Replaces tags with the same key, adds the new ones, drops the removed keys.
pub(super) fn retag(
    current: &mut Vec<Tag>,
    tags: &[Tag],
    remove: &[String],
) -> Result<(), BrokerError> {
    current.retain(|t| !remove.iter().any(|k| k == &t.key) && !tags.iter().any(|n| n.key == t.key));
    current.extend(tags.iter().cloned());
    validate_tags(current).map_err(|m| BrokerError::invalid("tags", m))
}
