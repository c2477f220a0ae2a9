//! Roles: create (with a trust policy), read, list, update, delete, tag and untag.

use std::collections::BTreeMap;

use serde_json::json;

use crate::core::model::{NameKind, RECORD_VERSION, Role, Tag, name_key, validate_tags};
use crate::core::policy::PolicyKind;
use crate::store::Table;

use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::users::{check_tag_change, retag, tagging_keys};
use super::{
    Page, boundary_key, check_arn, check_description, check_max_session, check_name, check_path,
    insert_new, parse_policy, policy_blockers, request_tag_keys, update_in,
};

impl Broker {
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
        check_arn("permissions_boundary", permissions_boundary)?;
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
        let id = self.ids("AROA")?;
        let params = json!({"role_name": role_name, "path": path, "assume_role_policy_document": trust_policy,
            "description": description, "max_session_duration": max, "tags": tags, "permissions_boundary": permissions_boundary});
        let mut keys = request_tag_keys(&tags);
        if !permissions_boundary.is_empty() {
            keys.push(boundary_key(permissions_boundary));
        }
        self.iam_change(caller, meta, "iam:CreateRole", params, |tx, gate| {
            gate.check(&arn, &keys)?;
            self.check_boundary(permissions_boundary)?;
            let role = Role {
                v: RECORD_VERSION,
                name: role_name.into(),
                id: id.clone(),
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
            insert_new(
                tx,
                Table::Roles,
                &name_key(role_name),
                &role,
                "role",
                role_name,
            )?;
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
        self.get_entity::<Role, _>(caller, meta, "iam:GetRole", role_name, Ok)
            .await
    }

    pub async fn list_roles(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<Role>, Option<String>), BrokerError> {
        self.list_entities(caller, meta, "iam:ListRoles", path_prefix, page)
            .await
    }

    pub async fn delete_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Role, role_name)?;
        self.delete_entity(
            caller,
            meta,
            "iam:DeleteRole",
            role_name,
            |_, role: &mut Role| Ok(policy_blockers(role)),
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
        let params = json!({"role_name": role_name, "description": description, "max_session_duration": max});
        self.iam_change(caller, meta, "iam:UpdateRole", params, |tx, gate| {
            update_in::<Role, _>(tx, gate, role_name, vec![], |role| {
                if let Some(d) = description {
                    role.description = d.into();
                }
                if let Some(m) = max {
                    role.max_session_duration = m;
                }
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
        let params = json!({"role_name": role_name, "policy_document": document});
        self.iam_change(
            caller,
            meta,
            "iam:UpdateAssumeRolePolicy",
            params,
            |tx, gate| {
                update_in::<Role, _>(tx, gate, role_name, vec![], |role| {
                    role.assume_role_policy_document = document.into();
                    Ok(())
                })
            },
        )
        .await
    }

    /// TagRole (`remove` empty) or UntagRole.
    pub async fn tag_role(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        role_name: &str,
        tags: Vec<Tag>,
        remove: Vec<String>,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Role, role_name)?;
        check_tag_change(&tags, &remove)?;
        let action = if remove.is_empty() {
            "iam:TagRole"
        } else {
            "iam:UntagRole"
        };
        let params = json!({"role_name": role_name, "tags": tags, "tag_keys": remove});
        let keys = tagging_keys(&tags, &remove);
        self.iam_change(caller, meta, action, params, |tx, gate| {
            update_in::<Role, _>(tx, gate, role_name, keys.clone(), |role| {
                retag(&mut role.tags, &tags, &remove)
            })
        })
        .await
    }
}
