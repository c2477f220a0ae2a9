//! Groups and their members. Membership is stored on the user (`User::groups`, which is
//! what policy evaluation reads) and indexed by group (see `index.rs`), kept in one batch.

use std::collections::BTreeMap;

use serde_json::json;

use crate::core::model::{Group, NameKind, RECORD_VERSION, User, name_key};
use crate::store::{self, Table};

use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::index::{group_members, indexed, set_group_members};
use super::{
    MAX_GROUPS_PER_USER, Page, check_name, check_path, insert_new, not_found, page_of,
    policy_blockers, slice_page,
};

impl Broker {
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
        let id = self.ids("AGPA")?;
        let params = json!({"group_name": group_name, "path": path});
        self.iam_change(caller, meta, "iam:CreateGroup", params, |tx, gate| {
            gate.check(&arn, &[])?;
            let group = Group {
                v: RECORD_VERSION,
                name: group_name.into(),
                id: id.clone(),
                path: path.clone(),
                arn: arn.clone(),
                create_date: now,
                attached_policies: vec![],
                inline_policies: BTreeMap::new(),
            };
            insert_new(
                tx,
                Table::Groups,
                &name_key(group_name),
                &group,
                "group",
                group_name,
            )?;
            Ok(group)
        })
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
        self.get_entity(caller, meta, "iam:GetGroup", group_name, |group: Group| {
            let (users, marker) = self.members_page(group_name, page)?;
            Ok((group, users, marker))
        })
        .await
    }

    /// A page of a group's members: from the group's index when the store has one.
    fn members_page(
        &self,
        group_name: &str,
        page: &Page,
    ) -> Result<(Vec<User>, Option<String>), BrokerError> {
        let mut tx = store::Tx::new(self.store.as_ref());
        if !indexed(&mut tx)? {
            return page_of::<User>(self, Table::Users, page, |u| {
                u.groups.iter().any(|g| g.eq_ignore_ascii_case(group_name))
            });
        }
        let mut names = group_members(&mut tx, group_name)?;
        names.sort_by_key(|n| name_key(n));
        let (names, marker) = slice_page(&names, |n| name_key(n), page)?;
        let mut users = Vec::with_capacity(names.len());
        for name in names {
            if let Some(user) = self.load_user(&name)? {
                users.push(user);
            }
        }
        Ok((users, marker))
    }

    pub async fn list_groups(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        path_prefix: &str,
        page: &Page,
    ) -> Result<(Vec<Group>, Option<String>), BrokerError> {
        self.list_entities(caller, meta, "iam:ListGroups", path_prefix, page)
            .await
    }

    pub async fn delete_group(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        group_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::Group, group_name)?;
        let action = "iam:DeleteGroup";
        self.delete_entity(caller, meta, action, group_name, |tx, group: &mut Group| {
            let mut blockers = Vec::new();
            // The group's own member list, not every user.
            if !group_members(tx, group_name)?.is_empty() {
                blockers.push("members");
            }
            blockers.extend(policy_blockers(group));
            Ok(blockers)
        })
        .await
    }

    /// AddUserToGroup (`add`) or RemoveUserFromGroup.
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
        let action = if add {
            "iam:AddUserToGroup"
        } else {
            "iam:RemoveUserFromGroup"
        };
        let params = json!({"group_name": group_name, "user_name": user_name});
        self.iam_change(caller, meta, action, params, |tx, gate| {
            let group: Group = gate.load(tx, group_name, vec![])?;
            let user_key = name_key(user_name);
            let mut user: User = tx
                .get(Table::Users, &user_key)?
                .ok_or_else(|| not_found("user", user_name))?;
            let mut members = group_members(tx, group_name)?;
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
                    members.retain(|m| name_key(m) != user_key);
                    members.push(user.name.clone());
                }
                (false, Some(i)) => {
                    user.groups.remove(i);
                    members.retain(|m| name_key(m) != user_key);
                }
                (false, None) => {
                    return Err(not_found(
                        &format!("membership of user {user_name} in group"),
                        group_name,
                    ));
                }
            }
            tx.put(Table::Users, &user_key, &user);
            set_group_members(tx, group_name, &members);
            Ok(())
        })
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
        let action = "iam:ListGroupsForUser";
        self.get_entity(caller, meta, action, &name, |user: User| {
            let mut groups = Vec::new();
            for g in &user.groups {
                if let Some(group) =
                    store::read::<Group>(self.store.as_ref(), Table::Groups, &name_key(g))?
                {
                    groups.push(group);
                }
            }
            slice_page(&groups, |g| name_key(&g.name), page)
        })
        .await
    }
}
