//! `stint.v1.Iam`: AWS IAM's actions over gRPC. Each handler converts, calls the broker
//! use case, and converts back; the rules live in `broker::iam`.
//!
//! Every handler destructures its request naming every field (no `..`), so a field added
//! to the proto fails to compile until it is handled, instead of being silently ignored.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::broker::{
    Broker, BrokerError, Caller, Holder, OidcProviderInput, RequestMeta, SimulationInput,
};
use crate::core::model::AccessKeyStatus;
use crate::core::secret::SecretString;
use crate::proto::{self, iam_server};

use super::{auth, convert};

pub struct IamService {
    pub broker: Arc<Broker>,
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Reply<T> {
    Ok(Response::new(value))
}

impl IamService {
    fn ctx<T>(&self, request: &Request<T>) -> Result<(Caller, RequestMeta), Status> {
        auth::context(&self.broker, request)
    }

    async fn attach(
        &self,
        holder: Holder,
        caller: &Caller,
        meta: &RequestMeta,
        name: &str,
        arn: &str,
        attach: bool,
    ) -> Result<(), Status> {
        Ok(self
            .broker
            .attach_policy(caller, meta, holder, name, arn, attach)
            .await?)
    }

    #[allow(clippy::too_many_arguments)] // the three ListAttached*Policies share it
    async fn list_attached(
        &self,
        holder: Holder,
        caller: &Caller,
        meta: &RequestMeta,
        name: &str,
        path_prefix: &str,
        marker: String,
        max_items: i32,
    ) -> Result<(Vec<proto::AttachedPolicy>, bool, String), Status> {
        let (rows, marker) = self
            .broker
            .list_attached_policies(
                caller,
                meta,
                holder,
                name,
                path_prefix,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        let rows = rows
            .into_iter()
            .map(|(policy_name, policy_arn)| proto::AttachedPolicy {
                policy_name,
                policy_arn,
            })
            .collect();
        Ok((rows, is_truncated, marker))
    }

    async fn list_inline(
        &self,
        holder: Holder,
        caller: &Caller,
        meta: &RequestMeta,
        name: &str,
        marker: String,
        max_items: i32,
    ) -> Result<(Vec<String>, bool, String), Status> {
        let (names, marker) = self
            .broker
            .list_inline_policies(
                caller,
                meta,
                holder,
                name,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        Ok((names, is_truncated, marker))
    }
}

fn status_in(status: &str) -> Result<AccessKeyStatus, Status> {
    match status {
        "Active" => Ok(AccessKeyStatus::Active),
        "Inactive" => Ok(AccessKeyStatus::Inactive),
        other => Err(BrokerError::invalid(
            "status",
            format!("must be Active or Inactive, got {other:?}"),
        )
        .into()),
    }
}

fn access_key_meta(k: &crate::core::model::AccessKey) -> proto::AccessKeyMetadata {
    proto::AccessKeyMetadata {
        user_name: k.user_name.clone(),
        access_key_id: k.access_key_id.clone(),
        status: k.status.as_str().into(),
        create_date: Some(convert::timestamp_ms(k.create_date)),
    }
}

#[tonic::async_trait]
impl iam_server::Iam for IamService {
    // ---- users
    async fn create_user(
        &self,
        request: Request<proto::CreateUserRequest>,
    ) -> Reply<proto::CreateUserResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateUserRequest {
            user_name,
            path,
            tags,
            permissions_boundary,
        } = request.into_inner();
        let user = self
            .broker
            .create_user(
                &caller,
                &meta,
                &user_name,
                &path,
                convert::tags_in(tags),
                &permissions_boundary,
            )
            .await?;
        ok(proto::CreateUserResponse {
            user: Some(convert::user(&user)),
        })
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Reply<proto::GetUserResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetUserRequest { user_name } = request.into_inner();
        let user = self.broker.get_user(&caller, &meta, &user_name).await?;
        ok(proto::GetUserResponse {
            user: Some(convert::user(&user)),
        })
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Reply<proto::ListUsersResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListUsersRequest {
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (users, marker) = self
            .broker
            .list_users(
                &caller,
                &meta,
                &path_prefix,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
            is_truncated,
            marker,
        })
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Reply<proto::DeleteUserResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteUserRequest { user_name } = request.into_inner();
        self.broker.delete_user(&caller, &meta, &user_name).await?;
        ok(proto::DeleteUserResponse {})
    }

    async fn tag_user(
        &self,
        request: Request<proto::TagUserRequest>,
    ) -> Reply<proto::TagUserResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::TagUserRequest { user_name, tags } = request.into_inner();
        self.broker
            .tag_user(&caller, &meta, &user_name, convert::tags_in(tags), vec![])
            .await?;
        ok(proto::TagUserResponse {})
    }

    async fn untag_user(
        &self,
        request: Request<proto::UntagUserRequest>,
    ) -> Reply<proto::UntagUserResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UntagUserRequest {
            user_name,
            tag_keys,
        } = request.into_inner();
        if tag_keys.is_empty() {
            return Err(BrokerError::invalid("tag_keys", "is required").into());
        }
        self.broker
            .tag_user(&caller, &meta, &user_name, vec![], tag_keys)
            .await?;
        ok(proto::UntagUserResponse {})
    }

    // ---- passwords
    async fn create_login_profile(
        &self,
        request: Request<proto::CreateLoginProfileRequest>,
    ) -> Reply<proto::CreateLoginProfileResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateLoginProfileRequest {
            user_name,
            password,
            password_reset_required,
        } = request.into_inner();
        let password = SecretString::new(password);
        self.broker
            .set_login_profile(
                &caller,
                &meta,
                &user_name,
                &password,
                password_reset_required,
                true,
            )
            .await?;
        let (user_name, create_date, password_reset_required) = self
            .broker
            .get_login_profile(&caller, &meta, &user_name)
            .await?;
        ok(proto::CreateLoginProfileResponse {
            login_profile: Some(proto::LoginProfile {
                user_name,
                create_date: Some(convert::timestamp_ms(create_date)),
                password_reset_required,
            }),
        })
    }

    async fn update_login_profile(
        &self,
        request: Request<proto::UpdateLoginProfileRequest>,
    ) -> Reply<proto::UpdateLoginProfileResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UpdateLoginProfileRequest {
            user_name,
            password,
            password_reset_required,
        } = request.into_inner();
        let password = SecretString::new(password);
        self.broker
            .set_login_profile(
                &caller,
                &meta,
                &user_name,
                &password,
                password_reset_required,
                false,
            )
            .await?;
        ok(proto::UpdateLoginProfileResponse {})
    }

    async fn delete_login_profile(
        &self,
        request: Request<proto::DeleteLoginProfileRequest>,
    ) -> Reply<proto::DeleteLoginProfileResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteLoginProfileRequest { user_name } = request.into_inner();
        self.broker
            .delete_login_profile(&caller, &meta, &user_name)
            .await?;
        ok(proto::DeleteLoginProfileResponse {})
    }

    async fn get_login_profile(
        &self,
        request: Request<proto::GetLoginProfileRequest>,
    ) -> Reply<proto::GetLoginProfileResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetLoginProfileRequest { user_name } = request.into_inner();
        let (user_name, create_date, password_reset_required) = self
            .broker
            .get_login_profile(&caller, &meta, &user_name)
            .await?;
        ok(proto::GetLoginProfileResponse {
            login_profile: Some(proto::LoginProfile {
                user_name,
                create_date: Some(convert::timestamp_ms(create_date)),
                password_reset_required,
            }),
        })
    }

    async fn update_account_password_policy(
        &self,
        request: Request<proto::UpdateAccountPasswordPolicyRequest>,
    ) -> Reply<proto::UpdateAccountPasswordPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UpdateAccountPasswordPolicyRequest { password_policy } = request.into_inner();
        let policy = password_policy
            .ok_or_else(|| BrokerError::invalid("password_policy", "is required"))?;
        self.broker
            .update_password_policy(&caller, &meta, convert::password_policy_in(policy)?)
            .await?;
        ok(proto::UpdateAccountPasswordPolicyResponse {})
    }

    async fn get_account_password_policy(
        &self,
        request: Request<proto::GetAccountPasswordPolicyRequest>,
    ) -> Reply<proto::GetAccountPasswordPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetAccountPasswordPolicyRequest {} = request.into_inner();
        let policy = self.broker.get_password_policy(&caller, &meta).await?;
        ok(proto::GetAccountPasswordPolicyResponse {
            password_policy: Some(convert::password_policy_out(&policy)),
        })
    }

    // ---- groups
    async fn create_group(
        &self,
        request: Request<proto::CreateGroupRequest>,
    ) -> Reply<proto::CreateGroupResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateGroupRequest { group_name, path } = request.into_inner();
        let group = self
            .broker
            .create_group(&caller, &meta, &group_name, &path)
            .await?;
        ok(proto::CreateGroupResponse {
            group: Some(convert::group(&group)),
        })
    }

    async fn get_group(
        &self,
        request: Request<proto::GetGroupRequest>,
    ) -> Reply<proto::GetGroupResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetGroupRequest {
            group_name,
            marker,
            max_items,
        } = request.into_inner();
        let (group, users, marker) = self
            .broker
            .get_group(
                &caller,
                &meta,
                &group_name,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::GetGroupResponse {
            group: Some(convert::group(&group)),
            users: users.iter().map(convert::user).collect(),
            is_truncated,
            marker,
        })
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Reply<proto::ListGroupsResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListGroupsRequest {
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (groups, marker) = self
            .broker
            .list_groups(
                &caller,
                &meta,
                &path_prefix,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::ListGroupsResponse {
            groups: groups.iter().map(convert::group).collect(),
            is_truncated,
            marker,
        })
    }

    async fn delete_group(
        &self,
        request: Request<proto::DeleteGroupRequest>,
    ) -> Reply<proto::DeleteGroupResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteGroupRequest { group_name } = request.into_inner();
        self.broker
            .delete_group(&caller, &meta, &group_name)
            .await?;
        ok(proto::DeleteGroupResponse {})
    }

    async fn add_user_to_group(
        &self,
        request: Request<proto::AddUserToGroupRequest>,
    ) -> Reply<proto::AddUserToGroupResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::AddUserToGroupRequest {
            group_name,
            user_name,
        } = request.into_inner();
        self.broker
            .set_group_membership(&caller, &meta, &group_name, &user_name, true)
            .await?;
        ok(proto::AddUserToGroupResponse {})
    }

    async fn remove_user_from_group(
        &self,
        request: Request<proto::RemoveUserFromGroupRequest>,
    ) -> Reply<proto::RemoveUserFromGroupResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::RemoveUserFromGroupRequest {
            group_name,
            user_name,
        } = request.into_inner();
        self.broker
            .set_group_membership(&caller, &meta, &group_name, &user_name, false)
            .await?;
        ok(proto::RemoveUserFromGroupResponse {})
    }

    async fn list_groups_for_user(
        &self,
        request: Request<proto::ListGroupsForUserRequest>,
    ) -> Reply<proto::ListGroupsForUserResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListGroupsForUserRequest {
            user_name,
            marker,
            max_items,
        } = request.into_inner();
        let (groups, marker) = self
            .broker
            .list_groups_for_user(
                &caller,
                &meta,
                &user_name,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::ListGroupsForUserResponse {
            groups: groups.iter().map(convert::group).collect(),
            is_truncated,
            marker,
        })
    }

    // ---- roles
    async fn create_role(
        &self,
        request: Request<proto::CreateRoleRequest>,
    ) -> Reply<proto::CreateRoleResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateRoleRequest {
            role_name,
            assume_role_policy_document,
            max_session_duration,
            description,
            tags,
            path,
            permissions_boundary,
        } = request.into_inner();
        let role = self
            .broker
            .create_role(
                &caller,
                &meta,
                &role_name,
                &path,
                &assume_role_policy_document,
                &description,
                max_session_duration,
                convert::tags_in(tags),
                &permissions_boundary,
            )
            .await?;
        ok(proto::CreateRoleResponse {
            role: Some(convert::role(&role)),
        })
    }

    async fn get_role(
        &self,
        request: Request<proto::GetRoleRequest>,
    ) -> Reply<proto::GetRoleResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetRoleRequest { role_name } = request.into_inner();
        let role = self.broker.get_role(&caller, &meta, &role_name).await?;
        ok(proto::GetRoleResponse {
            role: Some(convert::role(&role)),
        })
    }

    async fn list_roles(
        &self,
        request: Request<proto::ListRolesRequest>,
    ) -> Reply<proto::ListRolesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListRolesRequest {
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (roles, marker) = self
            .broker
            .list_roles(
                &caller,
                &meta,
                &path_prefix,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::ListRolesResponse {
            roles: roles.iter().map(convert::role).collect(),
            is_truncated,
            marker,
        })
    }

    async fn delete_role(
        &self,
        request: Request<proto::DeleteRoleRequest>,
    ) -> Reply<proto::DeleteRoleResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteRoleRequest { role_name } = request.into_inner();
        self.broker.delete_role(&caller, &meta, &role_name).await?;
        ok(proto::DeleteRoleResponse {})
    }

    async fn update_role(
        &self,
        request: Request<proto::UpdateRoleRequest>,
    ) -> Reply<proto::UpdateRoleResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UpdateRoleRequest {
            role_name,
            description,
            max_session_duration,
        } = request.into_inner();
        let description = (!description.is_empty()).then_some(description.as_str());
        self.broker
            .update_role(
                &caller,
                &meta,
                &role_name,
                description,
                max_session_duration,
            )
            .await?;
        ok(proto::UpdateRoleResponse {})
    }

    async fn update_assume_role_policy(
        &self,
        request: Request<proto::UpdateAssumeRolePolicyRequest>,
    ) -> Reply<proto::UpdateAssumeRolePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UpdateAssumeRolePolicyRequest {
            role_name,
            policy_document,
        } = request.into_inner();
        self.broker
            .update_assume_role_policy(&caller, &meta, &role_name, &policy_document)
            .await?;
        ok(proto::UpdateAssumeRolePolicyResponse {})
    }

    async fn tag_role(
        &self,
        request: Request<proto::TagRoleRequest>,
    ) -> Reply<proto::TagRoleResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::TagRoleRequest { role_name, tags } = request.into_inner();
        self.broker
            .tag_role(&caller, &meta, &role_name, convert::tags_in(tags), vec![])
            .await?;
        ok(proto::TagRoleResponse {})
    }

    async fn untag_role(
        &self,
        request: Request<proto::UntagRoleRequest>,
    ) -> Reply<proto::UntagRoleResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UntagRoleRequest {
            role_name,
            tag_keys,
        } = request.into_inner();
        if tag_keys.is_empty() {
            return Err(BrokerError::invalid("tag_keys", "is required").into());
        }
        self.broker
            .tag_role(&caller, &meta, &role_name, vec![], tag_keys)
            .await?;
        ok(proto::UntagRoleResponse {})
    }

    // ---- managed policies
    async fn create_policy(
        &self,
        request: Request<proto::CreatePolicyRequest>,
    ) -> Reply<proto::CreatePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreatePolicyRequest {
            policy_name,
            policy_document,
            description,
            path,
            tags: _,
        } = request.into_inner();
        let policy = self
            .broker
            .create_policy(
                &caller,
                &meta,
                &policy_name,
                &path,
                &policy_document,
                &description,
            )
            .await?;
        ok(proto::CreatePolicyResponse {
            policy: Some(convert::policy(&policy, 0)),
        })
    }

    async fn get_policy(
        &self,
        request: Request<proto::GetPolicyRequest>,
    ) -> Reply<proto::GetPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetPolicyRequest { policy_arn } = request.into_inner();
        let (policy, count) = self.broker.get_policy(&caller, &meta, &policy_arn).await?;
        ok(proto::GetPolicyResponse {
            policy: Some(convert::policy(&policy, count)),
        })
    }

    async fn list_policies(
        &self,
        request: Request<proto::ListPoliciesRequest>,
    ) -> Reply<proto::ListPoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListPoliciesRequest {
            scope,
            only_attached,
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (rows, marker) = self
            .broker
            .list_policies(
                &caller,
                &meta,
                &scope,
                only_attached,
                &path_prefix,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::ListPoliciesResponse {
            policies: rows.iter().map(|(p, n)| convert::policy(p, *n)).collect(),
            is_truncated,
            marker,
        })
    }

    async fn delete_policy(
        &self,
        request: Request<proto::DeletePolicyRequest>,
    ) -> Reply<proto::DeletePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeletePolicyRequest { policy_arn } = request.into_inner();
        self.broker
            .delete_policy(&caller, &meta, &policy_arn)
            .await?;
        ok(proto::DeletePolicyResponse {})
    }

    async fn create_policy_version(
        &self,
        request: Request<proto::CreatePolicyVersionRequest>,
    ) -> Reply<proto::CreatePolicyVersionResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreatePolicyVersionRequest {
            policy_arn,
            policy_document,
            set_as_default,
        } = request.into_inner();
        let version = self
            .broker
            .create_policy_version(
                &caller,
                &meta,
                &policy_arn,
                &policy_document,
                set_as_default,
            )
            .await?;
        ok(proto::CreatePolicyVersionResponse {
            policy_version: Some(convert::policy_version(&version, set_as_default)),
        })
    }

    async fn get_policy_version(
        &self,
        request: Request<proto::GetPolicyVersionRequest>,
    ) -> Reply<proto::GetPolicyVersionResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetPolicyVersionRequest {
            policy_arn,
            version_id,
        } = request.into_inner();
        let (version, is_default) = self
            .broker
            .get_policy_version(&caller, &meta, &policy_arn, &version_id)
            .await?;
        ok(proto::GetPolicyVersionResponse {
            policy_version: Some(convert::policy_version(&version, is_default)),
        })
    }

    async fn list_policy_versions(
        &self,
        request: Request<proto::ListPolicyVersionsRequest>,
    ) -> Reply<proto::ListPolicyVersionsResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListPolicyVersionsRequest {
            policy_arn,
            marker: _,
            max_items: _,
        } = request.into_inner();
        let (versions, default) = self
            .broker
            .list_policy_versions(&caller, &meta, &policy_arn)
            .await?;
        ok(proto::ListPolicyVersionsResponse {
            versions: versions
                .iter()
                .map(|v| convert::policy_version(v, v.version_id == default))
                .collect(),
            is_truncated: false,
            marker: String::new(),
        })
    }

    async fn delete_policy_version(
        &self,
        request: Request<proto::DeletePolicyVersionRequest>,
    ) -> Reply<proto::DeletePolicyVersionResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeletePolicyVersionRequest {
            policy_arn,
            version_id,
        } = request.into_inner();
        self.broker
            .delete_policy_version(&caller, &meta, &policy_arn, &version_id)
            .await?;
        ok(proto::DeletePolicyVersionResponse {})
    }

    async fn set_default_policy_version(
        &self,
        request: Request<proto::SetDefaultPolicyVersionRequest>,
    ) -> Reply<proto::SetDefaultPolicyVersionResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::SetDefaultPolicyVersionRequest {
            policy_arn,
            version_id,
        } = request.into_inner();
        self.broker
            .set_default_policy_version(&caller, &meta, &policy_arn, &version_id)
            .await?;
        ok(proto::SetDefaultPolicyVersionResponse {})
    }

    // ---- attachments
    async fn attach_user_policy(
        &self,
        request: Request<proto::AttachUserPolicyRequest>,
    ) -> Reply<proto::AttachUserPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::AttachUserPolicyRequest {
            user_name,
            policy_arn,
        } = request.into_inner();
        self.attach(Holder::User, &caller, &meta, &user_name, &policy_arn, true)
            .await?;
        ok(proto::AttachUserPolicyResponse {})
    }
    async fn detach_user_policy(
        &self,
        request: Request<proto::DetachUserPolicyRequest>,
    ) -> Reply<proto::DetachUserPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DetachUserPolicyRequest {
            user_name,
            policy_arn,
        } = request.into_inner();
        self.attach(Holder::User, &caller, &meta, &user_name, &policy_arn, false)
            .await?;
        ok(proto::DetachUserPolicyResponse {})
    }
    async fn list_attached_user_policies(
        &self,
        request: Request<proto::ListAttachedUserPoliciesRequest>,
    ) -> Reply<proto::ListAttachedUserPoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListAttachedUserPoliciesRequest {
            user_name,
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (attached_policies, is_truncated, marker) = self
            .list_attached(
                Holder::User,
                &caller,
                &meta,
                &user_name,
                &path_prefix,
                marker,
                max_items,
            )
            .await?;
        ok(proto::ListAttachedUserPoliciesResponse {
            attached_policies,
            is_truncated,
            marker,
        })
    }
    async fn attach_group_policy(
        &self,
        request: Request<proto::AttachGroupPolicyRequest>,
    ) -> Reply<proto::AttachGroupPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::AttachGroupPolicyRequest {
            group_name,
            policy_arn,
        } = request.into_inner();
        self.attach(
            Holder::Group,
            &caller,
            &meta,
            &group_name,
            &policy_arn,
            true,
        )
        .await?;
        ok(proto::AttachGroupPolicyResponse {})
    }
    async fn detach_group_policy(
        &self,
        request: Request<proto::DetachGroupPolicyRequest>,
    ) -> Reply<proto::DetachGroupPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DetachGroupPolicyRequest {
            group_name,
            policy_arn,
        } = request.into_inner();
        self.attach(
            Holder::Group,
            &caller,
            &meta,
            &group_name,
            &policy_arn,
            false,
        )
        .await?;
        ok(proto::DetachGroupPolicyResponse {})
    }
    async fn list_attached_group_policies(
        &self,
        request: Request<proto::ListAttachedGroupPoliciesRequest>,
    ) -> Reply<proto::ListAttachedGroupPoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListAttachedGroupPoliciesRequest {
            group_name,
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (attached_policies, is_truncated, marker) = self
            .list_attached(
                Holder::Group,
                &caller,
                &meta,
                &group_name,
                &path_prefix,
                marker,
                max_items,
            )
            .await?;
        ok(proto::ListAttachedGroupPoliciesResponse {
            attached_policies,
            is_truncated,
            marker,
        })
    }
    async fn attach_role_policy(
        &self,
        request: Request<proto::AttachRolePolicyRequest>,
    ) -> Reply<proto::AttachRolePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::AttachRolePolicyRequest {
            role_name,
            policy_arn,
        } = request.into_inner();
        self.attach(Holder::Role, &caller, &meta, &role_name, &policy_arn, true)
            .await?;
        ok(proto::AttachRolePolicyResponse {})
    }
    async fn detach_role_policy(
        &self,
        request: Request<proto::DetachRolePolicyRequest>,
    ) -> Reply<proto::DetachRolePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DetachRolePolicyRequest {
            role_name,
            policy_arn,
        } = request.into_inner();
        self.attach(Holder::Role, &caller, &meta, &role_name, &policy_arn, false)
            .await?;
        ok(proto::DetachRolePolicyResponse {})
    }
    async fn list_attached_role_policies(
        &self,
        request: Request<proto::ListAttachedRolePoliciesRequest>,
    ) -> Reply<proto::ListAttachedRolePoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListAttachedRolePoliciesRequest {
            role_name,
            path_prefix,
            marker,
            max_items,
        } = request.into_inner();
        let (attached_policies, is_truncated, marker) = self
            .list_attached(
                Holder::Role,
                &caller,
                &meta,
                &role_name,
                &path_prefix,
                marker,
                max_items,
            )
            .await?;
        ok(proto::ListAttachedRolePoliciesResponse {
            attached_policies,
            is_truncated,
            marker,
        })
    }

    // ---- inline policies
    async fn put_user_policy(
        &self,
        request: Request<proto::PutUserPolicyRequest>,
    ) -> Reply<proto::PutUserPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::PutUserPolicyRequest {
            user_name,
            policy_name,
            policy_document,
        } = request.into_inner();
        self.broker
            .put_inline_policy(
                &caller,
                &meta,
                Holder::User,
                &user_name,
                &policy_name,
                &policy_document,
            )
            .await?;
        ok(proto::PutUserPolicyResponse {})
    }
    async fn get_user_policy(
        &self,
        request: Request<proto::GetUserPolicyRequest>,
    ) -> Reply<proto::GetUserPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetUserPolicyRequest {
            user_name,
            policy_name,
        } = request.into_inner();
        let policy_document = self
            .broker
            .get_inline_policy(&caller, &meta, Holder::User, &user_name, &policy_name)
            .await?;
        ok(proto::GetUserPolicyResponse {
            user_name,
            policy_name,
            policy_document,
        })
    }
    async fn delete_user_policy(
        &self,
        request: Request<proto::DeleteUserPolicyRequest>,
    ) -> Reply<proto::DeleteUserPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteUserPolicyRequest {
            user_name,
            policy_name,
        } = request.into_inner();
        self.broker
            .delete_inline_policy(&caller, &meta, Holder::User, &user_name, &policy_name)
            .await?;
        ok(proto::DeleteUserPolicyResponse {})
    }
    async fn list_user_policies(
        &self,
        request: Request<proto::ListUserPoliciesRequest>,
    ) -> Reply<proto::ListUserPoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListUserPoliciesRequest {
            user_name,
            marker,
            max_items,
        } = request.into_inner();
        let (policy_names, is_truncated, marker) = self
            .list_inline(Holder::User, &caller, &meta, &user_name, marker, max_items)
            .await?;
        ok(proto::ListUserPoliciesResponse {
            policy_names,
            is_truncated,
            marker,
        })
    }
    async fn put_group_policy(
        &self,
        request: Request<proto::PutGroupPolicyRequest>,
    ) -> Reply<proto::PutGroupPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::PutGroupPolicyRequest {
            group_name,
            policy_name,
            policy_document,
        } = request.into_inner();
        self.broker
            .put_inline_policy(
                &caller,
                &meta,
                Holder::Group,
                &group_name,
                &policy_name,
                &policy_document,
            )
            .await?;
        ok(proto::PutGroupPolicyResponse {})
    }
    async fn get_group_policy(
        &self,
        request: Request<proto::GetGroupPolicyRequest>,
    ) -> Reply<proto::GetGroupPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetGroupPolicyRequest {
            group_name,
            policy_name,
        } = request.into_inner();
        let policy_document = self
            .broker
            .get_inline_policy(&caller, &meta, Holder::Group, &group_name, &policy_name)
            .await?;
        ok(proto::GetGroupPolicyResponse {
            group_name,
            policy_name,
            policy_document,
        })
    }
    async fn delete_group_policy(
        &self,
        request: Request<proto::DeleteGroupPolicyRequest>,
    ) -> Reply<proto::DeleteGroupPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteGroupPolicyRequest {
            group_name,
            policy_name,
        } = request.into_inner();
        self.broker
            .delete_inline_policy(&caller, &meta, Holder::Group, &group_name, &policy_name)
            .await?;
        ok(proto::DeleteGroupPolicyResponse {})
    }
    async fn list_group_policies(
        &self,
        request: Request<proto::ListGroupPoliciesRequest>,
    ) -> Reply<proto::ListGroupPoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListGroupPoliciesRequest {
            group_name,
            marker,
            max_items,
        } = request.into_inner();
        let (policy_names, is_truncated, marker) = self
            .list_inline(
                Holder::Group,
                &caller,
                &meta,
                &group_name,
                marker,
                max_items,
            )
            .await?;
        ok(proto::ListGroupPoliciesResponse {
            policy_names,
            is_truncated,
            marker,
        })
    }
    async fn put_role_policy(
        &self,
        request: Request<proto::PutRolePolicyRequest>,
    ) -> Reply<proto::PutRolePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::PutRolePolicyRequest {
            role_name,
            policy_name,
            policy_document,
        } = request.into_inner();
        self.broker
            .put_inline_policy(
                &caller,
                &meta,
                Holder::Role,
                &role_name,
                &policy_name,
                &policy_document,
            )
            .await?;
        ok(proto::PutRolePolicyResponse {})
    }
    async fn get_role_policy(
        &self,
        request: Request<proto::GetRolePolicyRequest>,
    ) -> Reply<proto::GetRolePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetRolePolicyRequest {
            role_name,
            policy_name,
        } = request.into_inner();
        let policy_document = self
            .broker
            .get_inline_policy(&caller, &meta, Holder::Role, &role_name, &policy_name)
            .await?;
        ok(proto::GetRolePolicyResponse {
            role_name,
            policy_name,
            policy_document,
        })
    }
    async fn delete_role_policy(
        &self,
        request: Request<proto::DeleteRolePolicyRequest>,
    ) -> Reply<proto::DeleteRolePolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteRolePolicyRequest {
            role_name,
            policy_name,
        } = request.into_inner();
        self.broker
            .delete_inline_policy(&caller, &meta, Holder::Role, &role_name, &policy_name)
            .await?;
        ok(proto::DeleteRolePolicyResponse {})
    }
    async fn list_role_policies(
        &self,
        request: Request<proto::ListRolePoliciesRequest>,
    ) -> Reply<proto::ListRolePoliciesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListRolePoliciesRequest {
            role_name,
            marker,
            max_items,
        } = request.into_inner();
        let (policy_names, is_truncated, marker) = self
            .list_inline(Holder::Role, &caller, &meta, &role_name, marker, max_items)
            .await?;
        ok(proto::ListRolePoliciesResponse {
            policy_names,
            is_truncated,
            marker,
        })
    }

    // ---- boundaries
    async fn put_user_permissions_boundary(
        &self,
        request: Request<proto::PutUserPermissionsBoundaryRequest>,
    ) -> Reply<proto::PutUserPermissionsBoundaryResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::PutUserPermissionsBoundaryRequest {
            user_name,
            permissions_boundary,
        } = request.into_inner();
        self.broker
            .set_permissions_boundary(
                &caller,
                &meta,
                Holder::User,
                &user_name,
                Some(&permissions_boundary),
            )
            .await?;
        ok(proto::PutUserPermissionsBoundaryResponse {})
    }
    async fn delete_user_permissions_boundary(
        &self,
        request: Request<proto::DeleteUserPermissionsBoundaryRequest>,
    ) -> Reply<proto::DeleteUserPermissionsBoundaryResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteUserPermissionsBoundaryRequest { user_name } = request.into_inner();
        self.broker
            .set_permissions_boundary(&caller, &meta, Holder::User, &user_name, None)
            .await?;
        ok(proto::DeleteUserPermissionsBoundaryResponse {})
    }
    async fn put_role_permissions_boundary(
        &self,
        request: Request<proto::PutRolePermissionsBoundaryRequest>,
    ) -> Reply<proto::PutRolePermissionsBoundaryResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::PutRolePermissionsBoundaryRequest {
            role_name,
            permissions_boundary,
        } = request.into_inner();
        self.broker
            .set_permissions_boundary(
                &caller,
                &meta,
                Holder::Role,
                &role_name,
                Some(&permissions_boundary),
            )
            .await?;
        ok(proto::PutRolePermissionsBoundaryResponse {})
    }
    async fn delete_role_permissions_boundary(
        &self,
        request: Request<proto::DeleteRolePermissionsBoundaryRequest>,
    ) -> Reply<proto::DeleteRolePermissionsBoundaryResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteRolePermissionsBoundaryRequest { role_name } = request.into_inner();
        self.broker
            .set_permissions_boundary(&caller, &meta, Holder::Role, &role_name, None)
            .await?;
        ok(proto::DeleteRolePermissionsBoundaryResponse {})
    }

    // ---- MFA
    async fn create_virtual_mfa_device(
        &self,
        request: Request<proto::CreateVirtualMfaDeviceRequest>,
    ) -> Reply<proto::CreateVirtualMfaDeviceResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateVirtualMfaDeviceRequest {
            user_name,
            virtual_mfa_device_name,
        } = request.into_inner();
        let (serial_number, seed) = self
            .broker
            .create_virtual_mfa_device(&caller, &meta, &user_name, &virtual_mfa_device_name)
            .await?;
        // Labelled with the device's owner at the account, as AWS labels it
        // (`Stint:carol@000000000000`), not with the caller who created it.
        let owner = if user_name.is_empty() {
            caller.user_name().unwrap_or_default().to_owned()
        } else {
            user_name
        };
        let label = format!("{owner}@{}", self.broker.account().id);
        let base32 = crate::core::authn::totp::seed_base32(seed.expose());
        let uri = crate::core::authn::totp::otpauth_uri("Stint", &label, seed.expose())
            .map_err(BrokerError::from)?;
        ok(proto::CreateVirtualMfaDeviceResponse {
            serial_number,
            base32_string_seed: base32.expose().to_string(),
            otpauth_uri: uri.expose().to_string(),
            qr_code_png: crate::core::authn::qr::png(uri.expose()).unwrap_or_default(),
        })
    }

    async fn enable_mfa_device(
        &self,
        request: Request<proto::EnableMfaDeviceRequest>,
    ) -> Reply<proto::EnableMfaDeviceResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::EnableMfaDeviceRequest {
            user_name,
            serial_number,
            authentication_code_1,
            authentication_code_2,
        } = request.into_inner();
        let (c1, c2) = (
            SecretString::new(authentication_code_1),
            SecretString::new(authentication_code_2),
        );
        self.broker
            .enable_mfa_device(&caller, &meta, &user_name, &serial_number, &c1, &c2, false)
            .await?;
        ok(proto::EnableMfaDeviceResponse {})
    }

    async fn resync_mfa_device(
        &self,
        request: Request<proto::ResyncMfaDeviceRequest>,
    ) -> Reply<proto::ResyncMfaDeviceResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ResyncMfaDeviceRequest {
            user_name,
            serial_number,
            authentication_code_1,
            authentication_code_2,
        } = request.into_inner();
        let (c1, c2) = (
            SecretString::new(authentication_code_1),
            SecretString::new(authentication_code_2),
        );
        self.broker
            .enable_mfa_device(&caller, &meta, &user_name, &serial_number, &c1, &c2, true)
            .await?;
        ok(proto::ResyncMfaDeviceResponse {})
    }

    async fn deactivate_mfa_device(
        &self,
        request: Request<proto::DeactivateMfaDeviceRequest>,
    ) -> Reply<proto::DeactivateMfaDeviceResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeactivateMfaDeviceRequest {
            user_name,
            serial_number,
        } = request.into_inner();
        self.broker
            .deactivate_mfa_device(&caller, &meta, &user_name, &serial_number)
            .await?;
        ok(proto::DeactivateMfaDeviceResponse {})
    }

    async fn delete_virtual_mfa_device(
        &self,
        request: Request<proto::DeleteVirtualMfaDeviceRequest>,
    ) -> Reply<proto::DeleteVirtualMfaDeviceResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteVirtualMfaDeviceRequest { serial_number } = request.into_inner();
        self.broker
            .delete_virtual_mfa_device(&caller, &meta, &serial_number)
            .await?;
        ok(proto::DeleteVirtualMfaDeviceResponse {})
    }

    async fn list_mfa_devices(
        &self,
        request: Request<proto::ListMfaDevicesRequest>,
    ) -> Reply<proto::ListMfaDevicesResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListMfaDevicesRequest {
            user_name,
            marker: _,
            max_items: _,
        } = request.into_inner();
        let devices = self
            .broker
            .list_mfa_devices(&caller, &meta, &user_name)
            .await?;
        ok(proto::ListMfaDevicesResponse {
            mfa_devices: devices
                .iter()
                .map(|d| proto::MfaDevice {
                    user_name: d.user_name.clone(),
                    serial_number: d.serial_number.clone(),
                    enable_date: convert::optional_timestamp_ms(d.enable_date),
                })
                .collect(),
            is_truncated: false,
            marker: String::new(),
        })
    }

    // ---- access keys
    async fn create_access_key(
        &self,
        request: Request<proto::CreateAccessKeyRequest>,
    ) -> Reply<proto::CreateAccessKeyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateAccessKeyRequest { user_name } = request.into_inner();
        let (key, secret) = self
            .broker
            .create_access_key(&caller, &meta, &user_name)
            .await?;
        ok(proto::CreateAccessKeyResponse {
            access_key: Some(proto::AccessKey {
                user_name: key.user_name,
                access_key_id: key.access_key_id,
                status: key.status.as_str().into(),
                secret_access_key: secret.expose().to_string(),
                create_date: Some(convert::timestamp_ms(key.create_date)),
            }),
        })
    }

    async fn update_access_key(
        &self,
        request: Request<proto::UpdateAccessKeyRequest>,
    ) -> Reply<proto::UpdateAccessKeyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UpdateAccessKeyRequest {
            user_name,
            access_key_id,
            status,
        } = request.into_inner();
        self.broker
            .update_access_key(
                &caller,
                &meta,
                &user_name,
                &access_key_id,
                Some(status_in(&status)?),
            )
            .await?;
        ok(proto::UpdateAccessKeyResponse {})
    }

    async fn delete_access_key(
        &self,
        request: Request<proto::DeleteAccessKeyRequest>,
    ) -> Reply<proto::DeleteAccessKeyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteAccessKeyRequest {
            user_name,
            access_key_id,
        } = request.into_inner();
        self.broker
            .update_access_key(&caller, &meta, &user_name, &access_key_id, None)
            .await?;
        ok(proto::DeleteAccessKeyResponse {})
    }

    async fn list_access_keys(
        &self,
        request: Request<proto::ListAccessKeysRequest>,
    ) -> Reply<proto::ListAccessKeysResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListAccessKeysRequest {
            user_name,
            marker,
            max_items,
        } = request.into_inner();
        let (keys, marker) = self
            .broker
            .list_access_keys(
                &caller,
                &meta,
                &user_name,
                &convert::page(marker, max_items),
            )
            .await?;
        let (is_truncated, marker) = convert::next(marker);
        ok(proto::ListAccessKeysResponse {
            access_key_metadata: keys.iter().map(access_key_meta).collect(),
            is_truncated,
            marker,
        })
    }

    async fn get_access_key_last_used(
        &self,
        request: Request<proto::GetAccessKeyLastUsedRequest>,
    ) -> Reply<proto::GetAccessKeyLastUsedResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetAccessKeyLastUsedRequest { access_key_id } = request.into_inner();
        let key = self
            .broker
            .get_access_key_last_used(&caller, &meta, &access_key_id)
            .await?;
        ok(proto::GetAccessKeyLastUsedResponse {
            user_name: key.user_name,
            access_key_last_used: Some(proto::AccessKeyLastUsed {
                last_used_date: convert::optional_timestamp_ms(key.last_used),
                service_name: if key.last_used.is_some() {
                    "sts".into()
                } else {
                    "N/A".into()
                },
            }),
        })
    }

    // ---- self-service and review
    async fn change_password(
        &self,
        request: Request<proto::ChangePasswordRequest>,
    ) -> Reply<proto::ChangePasswordResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ChangePasswordRequest {
            old_password,
            new_password,
        } = request.into_inner();
        let (old, new) = (
            SecretString::new(old_password),
            SecretString::new(new_password),
        );
        self.broker
            .change_password(&caller, &meta, &old, &new)
            .await?;
        ok(proto::ChangePasswordResponse {})
    }

    async fn get_credential_report(
        &self,
        request: Request<proto::GetCredentialReportRequest>,
    ) -> Reply<proto::GetCredentialReportResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetCredentialReportRequest { format } = request.into_inner();
        let (content, report_format) = self
            .broker
            .credential_report(&caller, &meta, &format)
            .await?;
        ok(proto::GetCredentialReportResponse {
            content,
            report_format,
            generated_time: Some(convert::timestamp(self.broker.now())),
        })
    }

    async fn simulate_principal_policy(
        &self,
        request: Request<proto::SimulatePrincipalPolicyRequest>,
    ) -> Reply<proto::SimulatePrincipalPolicyResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::SimulatePrincipalPolicyRequest {
            policy_source_arn,
            action_names,
            resource_arns,
            context_entries,
            policy_input_list,
        } = request.into_inner();
        let context: Vec<(String, Vec<String>)> = context_entries
            .into_iter()
            .map(|proto::ContextEntry { key, values }| (key, values))
            .collect();
        let results = self
            .broker
            .simulate_principal_policy(
                &caller,
                &meta,
                &SimulationInput {
                    policy_source_arn,
                    actions: action_names,
                    resources: resource_arns,
                    context,
                    extra_policies: policy_input_list,
                },
            )
            .await?;
        ok(proto::SimulatePrincipalPolicyResponse {
            evaluation_results: results
                .into_iter()
                .map(|r| proto::EvaluationResult {
                    eval_action_name: r.action,
                    eval_resource_name: r.resource,
                    eval_decision: convert::decision(r.decision) as i32,
                    matched_statements: r.matched,
                    reason: r.reason,
                })
                .collect(),
        })
    }

    async fn who_can(
        &self,
        request: Request<proto::WhoCanRequest>,
    ) -> Reply<proto::WhoCanResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::WhoCanRequest {
            action_name,
            resource_arn,
        } = request.into_inner();
        let grants = self
            .broker
            .review_who_can(&caller, &meta, &action_name, &resource_arn)
            .await?;
        ok(proto::WhoCanResponse {
            grants: grants
                .into_iter()
                .map(|g| proto::AccessGrant {
                    principal_arn: g.principal_arn,
                    principal_type: g.kind.into(),
                    matched_statements: g.matched,
                    via: g.via,
                })
                .collect(),
        })
    }

    // ---- OpenID Connect providers (see broker::iam::oidc)
    async fn create_open_id_connect_provider(
        &self,
        request: Request<proto::CreateOpenIdConnectProviderRequest>,
    ) -> Reply<proto::CreateOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::CreateOpenIdConnectProviderRequest {
            url,
            client_id_list,
            thumbprint_list,
            tags,
            jwks_json,
        } = request.into_inner();
        let provider = self
            .broker
            .create_oidc_provider(
                &caller,
                &meta,
                OidcProviderInput {
                    url,
                    client_ids: client_id_list,
                    thumbprints: thumbprint_list,
                    tags: convert::tags_in(tags),
                    jwks_json,
                },
            )
            .await?;
        ok(proto::CreateOpenIdConnectProviderResponse {
            open_id_connect_provider_arn: provider.arn,
            tags: convert::tags_out(&provider.tags),
        })
    }

    async fn get_open_id_connect_provider(
        &self,
        request: Request<proto::GetOpenIdConnectProviderRequest>,
    ) -> Reply<proto::GetOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::GetOpenIdConnectProviderRequest {
            open_id_connect_provider_arn,
        } = request.into_inner();
        let p = self
            .broker
            .get_oidc_provider(&caller, &meta, &open_id_connect_provider_arn)
            .await?;
        ok(proto::GetOpenIdConnectProviderResponse {
            provider: Some(proto::OpenIdConnectProvider {
                arn: p.arn,
                url: p.url,
                client_id_list: p.client_ids,
                thumbprint_list: p.thumbprints,
                create_date: Some(convert::timestamp_ms(p.create_date)),
                tags: convert::tags_out(&p.tags),
                jwks_json: p.jwks_json.unwrap_or_default(),
            }),
        })
    }

    async fn list_open_id_connect_providers(
        &self,
        request: Request<proto::ListOpenIdConnectProvidersRequest>,
    ) -> Reply<proto::ListOpenIdConnectProvidersResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::ListOpenIdConnectProvidersRequest {} = request.into_inner();
        let arns = self.broker.list_oidc_providers(&caller, &meta).await?;
        ok(proto::ListOpenIdConnectProvidersResponse {
            open_id_connect_provider_arns: arns,
        })
    }

    async fn delete_open_id_connect_provider(
        &self,
        request: Request<proto::DeleteOpenIdConnectProviderRequest>,
    ) -> Reply<proto::DeleteOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::DeleteOpenIdConnectProviderRequest {
            open_id_connect_provider_arn,
        } = request.into_inner();
        self.broker
            .delete_oidc_provider(&caller, &meta, &open_id_connect_provider_arn)
            .await?;
        ok(proto::DeleteOpenIdConnectProviderResponse {})
    }

    async fn add_client_id_to_open_id_connect_provider(
        &self,
        request: Request<proto::AddClientIdToOpenIdConnectProviderRequest>,
    ) -> Reply<proto::AddClientIdToOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::AddClientIdToOpenIdConnectProviderRequest {
            open_id_connect_provider_arn,
            client_id,
        } = request.into_inner();
        self.broker
            .change_oidc_client_id(
                &caller,
                &meta,
                &open_id_connect_provider_arn,
                &client_id,
                true,
            )
            .await?;
        ok(proto::AddClientIdToOpenIdConnectProviderResponse {})
    }

    async fn remove_client_id_from_open_id_connect_provider(
        &self,
        request: Request<proto::RemoveClientIdFromOpenIdConnectProviderRequest>,
    ) -> Reply<proto::RemoveClientIdFromOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::RemoveClientIdFromOpenIdConnectProviderRequest {
            open_id_connect_provider_arn,
            client_id,
        } = request.into_inner();
        self.broker
            .change_oidc_client_id(
                &caller,
                &meta,
                &open_id_connect_provider_arn,
                &client_id,
                false,
            )
            .await?;
        ok(proto::RemoveClientIdFromOpenIdConnectProviderResponse {})
    }

    async fn update_open_id_connect_provider_thumbprint(
        &self,
        request: Request<proto::UpdateOpenIdConnectProviderThumbprintRequest>,
    ) -> Reply<proto::UpdateOpenIdConnectProviderThumbprintResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UpdateOpenIdConnectProviderThumbprintRequest {
            open_id_connect_provider_arn,
            thumbprint_list,
        } = request.into_inner();
        self.broker
            .update_oidc_thumbprints(
                &caller,
                &meta,
                &open_id_connect_provider_arn,
                &thumbprint_list,
            )
            .await?;
        ok(proto::UpdateOpenIdConnectProviderThumbprintResponse {})
    }

    async fn tag_open_id_connect_provider(
        &self,
        request: Request<proto::TagOpenIdConnectProviderRequest>,
    ) -> Reply<proto::TagOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::TagOpenIdConnectProviderRequest {
            open_id_connect_provider_arn,
            tags,
        } = request.into_inner();
        self.broker
            .tag_oidc_provider(
                &caller,
                &meta,
                &open_id_connect_provider_arn,
                convert::tags_in(tags),
                vec![],
            )
            .await?;
        ok(proto::TagOpenIdConnectProviderResponse {})
    }

    async fn untag_open_id_connect_provider(
        &self,
        request: Request<proto::UntagOpenIdConnectProviderRequest>,
    ) -> Reply<proto::UntagOpenIdConnectProviderResponse> {
        let (caller, meta) = self.ctx(&request)?;
        let proto::UntagOpenIdConnectProviderRequest {
            open_id_connect_provider_arn,
            tag_keys,
        } = request.into_inner();
        if tag_keys.is_empty() {
            return Err(BrokerError::invalid("tag_keys", "is required").into());
        }
        self.broker
            .tag_oidc_provider(
                &caller,
                &meta,
                &open_id_connect_provider_arn,
                vec![],
                tag_keys,
            )
            .await?;
        ok(proto::UntagOpenIdConnectProviderResponse {})
    }
}
