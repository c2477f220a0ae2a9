//! Issue 9, IAM: guardrails that only work when IAM's condition keys are set (#4), every
//! IAM change committed with its audit event or not at all (#14), and per-user/per-group
//! indexes that keep working on a store written before they existed (#15). Each attack
//! runs against the real server over gRPC.

use std::future::Future;
use std::sync::Arc;

use ring::rand::SystemRandom;
use serde_json::json;
use tonic::{Code, Status};

use stint::audit::chain::Record;
use stint::broker::{BrokerError, ManualClock};
use stint::core::secret::SecretString;
use stint::proto;
use stint::proto::iam_client::IamClient;
use stint::store::seal::MasterKey;
use stint::store::{self, Batch, Store, Table};

use crate::common::*;

/// A policy document from statements.
fn document(statements: serde_json::Value) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// Creates `name` with a password, AdministratorAccess, and `guardrail` as an inline
/// policy; returns its session token. An "admin-like" user fenced by a deny.
async fn fenced_admin(server: &TestServer, root: &str, name: &str, guardrail: &str) -> String {
    server
        .create_user_with_password(root, name, "fenced-password-1")
        .await;
    server
        .attach_builtin(root, name, &["AdministratorAccess"])
        .await;
    server
        .put_user_policy(root, name, "guardrail", guardrail)
        .await;
    server.session(name, "fenced-password-1").await
}

async fn create_user(iam: &mut IamClient<Authed>, name: &str, tags: Vec<proto::Tag>) {
    iam.create_user(proto::CreateUserRequest {
        user_name: name.into(),
        tags,
        ..Default::default()
    })
    .await
    .expect("CreateUser");
}

// ---- #4: IAM condition keys ------------------------------------------------------------

/// AWS sets `iam:PolicyARN` for Attach/Detach{User,Group,Role}Policy (Service Authorization
/// Reference, IAM), so "may attach anything but AdministratorAccess" is enforceable.
#[tokio::test]
async fn a_deny_on_attaching_administrator_access_by_policy_arn_holds() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let guardrail = document(json!([{
        "Effect": "Deny",
        "Action": ["iam:AttachUserPolicy", "iam:AttachGroupPolicy", "iam:AttachRolePolicy"],
        "Resource": "*",
        "Condition": {"ArnEquals": {"iam:PolicyARN": builtin("AdministratorAccess")}}
    }]));
    let ops = fenced_admin(&server, &root, "ops", &guardrail).await;
    let mut iam = server.iam_as(&ops);
    create_user(&mut iam, "dev", vec![]).await;

    let escalate = iam
        .attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "dev".into(),
            policy_arn: builtin("AdministratorAccess"),
        })
        .await;
    assert_status(escalate, Code::PermissionDenied, &["iam:AttachUserPolicy"]);
    // Not even to itself.
    let to_self = iam
        .attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "ops".into(),
            policy_arn: builtin("AdministratorAccess"),
        })
        .await;
    assert_status(to_self, Code::PermissionDenied, &["iam:AttachUserPolicy"]);
    // Any other policy is fine: the deny is about that ARN only.
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "dev".into(),
        policy_arn: builtin("ReadOnlyAccess"),
    })
    .await
    .expect("attaching another policy");
    let attached = server
        .iam_as(&root)
        .list_attached_user_policies(proto::ListAttachedUserPoliciesRequest {
            user_name: "dev".into(),
            ..Default::default()
        })
        .await
        .expect("ListAttachedUserPolicies")
        .into_inner()
        .attached_policies;
    let arns: Vec<&str> = attached.iter().map(|p| p.policy_arn.as_str()).collect();
    assert_eq!(arns, [builtin("ReadOnlyAccess")]);
}

/// `aws:ResourceTag/<key>` is the tags of the user or role acted on (AWS: "Controlling
/// access to IAM users and roles using tags"): a deny of `iam:*` on protected principals
/// stops deletes, attachments and re-tagging of those, and only those.
#[tokio::test]
async fn a_deny_on_resources_tagged_protected_guards_those_users_only() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let guardrail = document(json!([{
        "Effect": "Deny",
        "Action": "iam:*",
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/protected": "true"}}
    }]));
    let ops = fenced_admin(&server, &root, "ops", &guardrail).await;
    let mut root_iam = server.iam_as(&root);
    create_user(&mut root_iam, "vip", vec![tag("protected", "true")]).await;
    create_user(&mut root_iam, "temp", vec![tag("protected", "false")]).await;
    root_iam
        .create_role(proto::CreateRoleRequest {
            role_name: "vault".into(),
            assume_role_policy_document: trust(&arn("user", "admin"), None),
            tags: vec![tag("protected", "true")],
            ..Default::default()
        })
        .await
        .expect("CreateRole");

    let mut iam = server.iam_as(&ops);
    assert_status(
        iam.delete_user(proto::DeleteUserRequest {
            user_name: "vip".into(),
        })
        .await,
        Code::PermissionDenied,
        &["iam:DeleteUser"],
    );
    assert_status(
        iam.attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "vip".into(),
            policy_arn: builtin("ReadOnlyAccess"),
        })
        .await,
        Code::PermissionDenied,
        &["iam:AttachUserPolicy"],
    );
    // Untagging itself is denied: the protection cannot be peeled off first.
    assert_status(
        iam.untag_user(proto::UntagUserRequest {
            user_name: "vip".into(),
            tag_keys: vec!["protected".into()],
        })
        .await,
        Code::PermissionDenied,
        &["iam:UntagUser"],
    );
    assert_status(
        iam.tag_user(proto::TagUserRequest {
            user_name: "vip".into(),
            tags: vec![tag("team", "red")],
        })
        .await,
        Code::PermissionDenied,
        &["iam:TagUser"],
    );
    assert_status(
        iam.get_user(proto::GetUserRequest {
            user_name: "vip".into(),
        })
        .await,
        Code::PermissionDenied,
        &["iam:GetUser"],
    );
    assert_status(
        iam.delete_role(proto::DeleteRoleRequest {
            role_name: "vault".into(),
        })
        .await,
        Code::PermissionDenied,
        &["iam:DeleteRole"],
    );
    // The protected user is untouched.
    let vip = root_iam
        .get_user(proto::GetUserRequest {
            user_name: "vip".into(),
        })
        .await
        .expect("GetUser vip")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(vip.tags, vec![tag("protected", "true")]);

    // Others are not protected.
    iam.tag_user(proto::TagUserRequest {
        user_name: "temp".into(),
        tags: vec![tag("team", "red")],
    })
    .await
    .expect("TagUser on an unprotected user");
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "temp".into(),
        policy_arn: builtin("ReadOnlyAccess"),
    })
    .await
    .expect("AttachUserPolicy on an unprotected user");
    iam.detach_user_policy(proto::DetachUserPolicyRequest {
        user_name: "temp".into(),
        policy_arn: builtin("ReadOnlyAccess"),
    })
    .await
    .expect("DetachUserPolicy");
    iam.delete_user(proto::DeleteUserRequest {
        user_name: "temp".into(),
    })
    .await
    .expect("DeleteUser on an unprotected user");
}

/// `aws:TagKeys` (the keys sent, or removed for Untag) and `aws:RequestTag/<key>` are set
/// for CreateUser/CreateRole/TagUser/TagRole/Untag* (Service Authorization Reference).
#[tokio::test]
async fn denies_on_tag_keys_and_request_tags_stop_tagging() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let guardrail = document(json!([
        {
            "Effect": "Deny",
            "Action": ["iam:TagUser", "iam:UntagUser", "iam:CreateUser", "iam:TagRole", "iam:CreateRole"],
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": "protected"}}
        },
        {
            "Effect": "Deny",
            "Action": ["iam:TagUser", "iam:CreateUser"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/team": "admins"}}
        }
    ]));
    let ops = fenced_admin(&server, &root, "ops", &guardrail).await;
    let mut root_iam = server.iam_as(&root);
    create_user(&mut root_iam, "vip", vec![tag("protected", "true")]).await;
    let mut iam = server.iam_as(&ops);
    create_user(&mut iam, "temp", vec![tag("team", "blue")]).await;

    assert_status(
        iam.tag_user(proto::TagUserRequest {
            user_name: "temp".into(),
            tags: vec![tag("protected", "true")],
        })
        .await,
        Code::PermissionDenied,
        &["iam:TagUser"],
    );
    assert_status(
        iam.untag_user(proto::UntagUserRequest {
            user_name: "vip".into(),
            tag_keys: vec!["protected".into()],
        })
        .await,
        Code::PermissionDenied,
        &["iam:UntagUser"],
    );
    assert_status(
        iam.tag_user(proto::TagUserRequest {
            user_name: "temp".into(),
            tags: vec![tag("team", "admins")],
        })
        .await,
        Code::PermissionDenied,
        &["iam:TagUser"],
    );
    assert_status(
        iam.create_user(proto::CreateUserRequest {
            user_name: "sneaky".into(),
            tags: vec![tag("protected", "true")],
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        &["iam:CreateUser"],
    );
    assert_status(
        iam.create_role(proto::CreateRoleRequest {
            role_name: "sneaky".into(),
            assume_role_policy_document: trust(&arn("user", "ops"), None),
            tags: vec![tag("protected", "true")],
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        &["iam:CreateRole"],
    );
    // Other keys and values pass.
    iam.tag_user(proto::TagUserRequest {
        user_name: "temp".into(),
        tags: vec![tag("team", "red")],
    })
    .await
    .expect("TagUser with an allowed tag");
    iam.untag_user(proto::UntagUserRequest {
        user_name: "temp".into(),
        tag_keys: vec!["team".into()],
    })
    .await
    .expect("UntagUser of another key");
}

/// The permissions-boundary guardrail (AWS User Guide, "Delegating responsibility to others
/// by using permissions boundaries"): create principals only with boundary X, and never
/// remove or change it.
#[tokio::test]
async fn the_boundary_guardrail_forces_the_boundary() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let boundary = builtin("PowerUserAccess");
    let guardrail = document(json!([
        {
            "Effect": "Deny",
            "Action": ["iam:CreateUser", "iam:CreateRole", "iam:PutUserPermissionsBoundary", "iam:PutRolePermissionsBoundary"],
            "Resource": "*",
            "Condition": {"StringNotEquals": {"iam:PermissionsBoundary": boundary}}
        },
        {
            "Effect": "Deny",
            "Action": ["iam:DeleteUserPermissionsBoundary", "iam:DeleteRolePermissionsBoundary"],
            "Resource": "*"
        },
        {
            "Effect": "Deny",
            "Action": ["iam:AttachUserPolicy", "iam:PutUserPolicy"],
            "Resource": "*",
            "Condition": {"StringNotEquals": {"iam:PermissionsBoundary": boundary}}
        }
    ]));
    let ops = fenced_admin(&server, &root, "ops", &guardrail).await;
    let mut iam = server.iam_as(&ops);

    assert_status(
        iam.create_user(proto::CreateUserRequest {
            user_name: "free".into(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        &["iam:CreateUser"],
    );
    assert_status(
        iam.create_user(proto::CreateUserRequest {
            user_name: "free".into(),
            permissions_boundary: builtin("AdministratorAccess"),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        &["iam:CreateUser"],
    );
    assert_status(
        iam.create_role(proto::CreateRoleRequest {
            role_name: "free".into(),
            assume_role_policy_document: trust(&arn("user", "ops"), None),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        &["iam:CreateRole"],
    );
    iam.create_user(proto::CreateUserRequest {
        user_name: "bounded".into(),
        permissions_boundary: boundary.clone(),
        ..Default::default()
    })
    .await
    .expect("CreateUser with the required boundary");
    assert_status(
        iam.delete_user_permissions_boundary(proto::DeleteUserPermissionsBoundaryRequest {
            user_name: "bounded".into(),
        })
        .await,
        Code::PermissionDenied,
        &["iam:DeleteUserPermissionsBoundary"],
    );
    assert_status(
        iam.put_user_permissions_boundary(proto::PutUserPermissionsBoundaryRequest {
            user_name: "bounded".into(),
            permissions_boundary: builtin("AdministratorAccess"),
        })
        .await,
        Code::PermissionDenied,
        &["iam:PutUserPermissionsBoundary"],
    );
    // Attaching to a bounded user is allowed (the key is its current boundary); to an
    // unbounded one it is not.
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "bounded".into(),
        policy_arn: builtin("ReadOnlyAccess"),
    })
    .await
    .expect("AttachUserPolicy on a bounded user");
    create_user(&mut server.iam_as(&root), "loose", vec![]).await;
    assert_status(
        iam.attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "loose".into(),
            policy_arn: builtin("ReadOnlyAccess"),
        })
        .await,
        Code::PermissionDenied,
        &["iam:AttachUserPolicy"],
    );
    let user = server
        .iam_as(&root)
        .get_user(proto::GetUserRequest {
            user_name: "bounded".into(),
        })
        .await
        .expect("GetUser")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.permissions_boundary, boundary);
}

// ---- #14: a change and its audit event commit together or not at all -----------------

/// The newest audit record in `store`.
fn last_event(store: &FaultStore) -> Record {
    let (key, value) = store
        .last(Table::Audit)
        .expect("audit table")
        .expect("an event");
    store::decode(Table::Audit, &key, &value).expect("record")
}

/// Runs `change` while the store refuses audit writes (and every flush): UNAVAILABLE, and
/// not one byte of any table changed (no change without its event). Then runs it again
/// with writes allowed: it succeeds, something changed, and the newest event is its own
/// Allow record.
async fn refused_then_committed<T: std::fmt::Debug, F: Future<Output = Result<T, Status>>>(
    store: &FaultStore,
    action: &str,
    mut change: impl FnMut() -> F,
) {
    let before = store.snapshot();
    store.refuse_audit(true);
    store.refuse_flush(true);
    let refused = change().await;
    store.refuse_audit(false);
    store.refuse_flush(false);
    assert_status(refused, Code::Unavailable, &[]);
    assert!(
        before == store.snapshot(),
        "{action}: the store changed although the change was refused"
    );
    change()
        .await
        .unwrap_or_else(|status| panic!("{action} once writes are accepted: {status:?}"));
    assert!(before != store.snapshot(), "{action}: nothing was written");
    let record = last_event(store);
    assert_eq!(record.event.event_name, action);
    assert_eq!(
        serde_json::to_value(record.event.outcome).expect("outcome"),
        json!("Allow")
    );
}

/// Every kind of IAM change, tried while the store refuses audit writes: the caller hears
/// UNAVAILABLE and nothing at all was written (before, the change could land without its
/// audit event). With writes accepted, the change and its event are both there.
#[tokio::test]
async fn every_iam_change_commits_with_its_audit_event_or_not_at_all() {
    // No chain checkpoints: the newest audit record is always the last change's own.
    let (server, store) = TestServer::over_faults(100_000_000, 604_800).await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    let policy_arn = arn("policy", "ec2-read");
    let key_id = std::sync::Mutex::new(String::new());

    macro_rules! step {
        ($action:literal, $method:ident, $request:expr) => {
            refused_then_committed(&store, $action, || {
                let mut iam = iam.clone();
                let request = $request;
                async move { iam.$method(request).await }
            })
            .await;
        };
    }

    step!(
        "iam:CreateUser",
        create_user,
        proto::CreateUserRequest {
            user_name: "dev".into(),
            tags: vec![tag("team", "blue")],
            ..Default::default()
        }
    );
    step!(
        "iam:TagUser",
        tag_user,
        proto::TagUserRequest {
            user_name: "dev".into(),
            tags: vec![tag("team", "red")],
        }
    );
    step!(
        "iam:UntagUser",
        untag_user,
        proto::UntagUserRequest {
            user_name: "dev".into(),
            tag_keys: vec!["team".into()],
        }
    );
    step!(
        "iam:CreateLoginProfile",
        create_login_profile,
        proto::CreateLoginProfileRequest {
            user_name: "dev".into(),
            password: "dev-password-1".into(),
            password_reset_required: true,
        }
    );
    step!(
        "iam:DeleteLoginProfile",
        delete_login_profile,
        proto::DeleteLoginProfileRequest {
            user_name: "dev".into(),
        }
    );
    step!(
        "iam:CreateGroup",
        create_group,
        proto::CreateGroupRequest {
            group_name: "devs".into(),
            path: String::new(),
        }
    );
    step!(
        "iam:AddUserToGroup",
        add_user_to_group,
        proto::AddUserToGroupRequest {
            group_name: "devs".into(),
            user_name: "dev".into(),
        }
    );
    step!(
        "iam:RemoveUserFromGroup",
        remove_user_from_group,
        proto::RemoveUserFromGroupRequest {
            group_name: "devs".into(),
            user_name: "dev".into(),
        }
    );
    step!(
        "iam:DeleteGroup",
        delete_group,
        proto::DeleteGroupRequest {
            group_name: "devs".into(),
        }
    );
    step!(
        "iam:CreatePolicy",
        create_policy,
        proto::CreatePolicyRequest {
            policy_name: "ec2-read".into(),
            policy_document: allow(&["ec2:Describe*"], &["*"]),
            ..Default::default()
        }
    );
    step!(
        "iam:CreatePolicyVersion",
        create_policy_version,
        proto::CreatePolicyVersionRequest {
            policy_arn: policy_arn.clone(),
            policy_document: allow(&["ec2:DescribeInstances"], &["*"]),
            set_as_default: true,
        }
    );
    step!(
        "iam:DeletePolicyVersion",
        delete_policy_version,
        proto::DeletePolicyVersionRequest {
            policy_arn: policy_arn.clone(),
            version_id: "v1".into(),
        }
    );
    step!(
        "iam:AttachUserPolicy",
        attach_user_policy,
        proto::AttachUserPolicyRequest {
            user_name: "dev".into(),
            policy_arn: policy_arn.clone(),
        }
    );
    step!(
        "iam:DetachUserPolicy",
        detach_user_policy,
        proto::DetachUserPolicyRequest {
            user_name: "dev".into(),
            policy_arn: policy_arn.clone(),
        }
    );
    step!(
        "iam:DeletePolicy",
        delete_policy,
        proto::DeletePolicyRequest {
            policy_arn: policy_arn.clone(),
        }
    );
    step!(
        "iam:PutUserPolicy",
        put_user_policy,
        proto::PutUserPolicyRequest {
            user_name: "dev".into(),
            policy_name: "inline".into(),
            policy_document: allow(&["s3:GetObject"], &["*"]),
        }
    );
    step!(
        "iam:DeleteUserPolicy",
        delete_user_policy,
        proto::DeleteUserPolicyRequest {
            user_name: "dev".into(),
            policy_name: "inline".into(),
        }
    );
    step!(
        "iam:PutUserPermissionsBoundary",
        put_user_permissions_boundary,
        proto::PutUserPermissionsBoundaryRequest {
            user_name: "dev".into(),
            permissions_boundary: builtin("PowerUserAccess"),
        }
    );
    step!(
        "iam:DeleteUserPermissionsBoundary",
        delete_user_permissions_boundary,
        proto::DeleteUserPermissionsBoundaryRequest {
            user_name: "dev".into(),
        }
    );
    // Access keys: the refused create must leave neither the key nor its index row.
    refused_then_committed(&store, "iam:CreateAccessKey", || {
        let mut iam = iam.clone();
        let key_id = &key_id;
        async move {
            let key = iam
                .create_access_key(proto::CreateAccessKeyRequest {
                    user_name: "dev".into(),
                })
                .await?
                .into_inner()
                .access_key
                .expect("key");
            *key_id.lock().expect("lock") = key.access_key_id;
            Ok(())
        }
    })
    .await;
    let id = key_id.lock().expect("lock").clone();
    step!(
        "iam:UpdateAccessKey",
        update_access_key,
        proto::UpdateAccessKeyRequest {
            user_name: "dev".into(),
            access_key_id: id.clone(),
            status: "Inactive".into(),
        }
    );
    step!(
        "iam:DeleteAccessKey",
        delete_access_key,
        proto::DeleteAccessKeyRequest {
            user_name: "dev".into(),
            access_key_id: id.clone(),
        }
    );
    step!(
        "iam:CreateVirtualMfaDevice",
        create_virtual_mfa_device,
        proto::CreateVirtualMfaDeviceRequest {
            user_name: "dev".into(),
            virtual_mfa_device_name: String::new(),
        }
    );
    step!(
        "iam:DeactivateMfaDevice",
        deactivate_mfa_device,
        proto::DeactivateMfaDeviceRequest {
            user_name: "dev".into(),
            serial_number: arn("mfa", "dev"),
        }
    );
    step!(
        "iam:UpdateAccountPasswordPolicy",
        update_account_password_policy,
        proto::UpdateAccountPasswordPolicyRequest {
            password_policy: Some(proto::PasswordPolicy {
                minimum_password_length: 12,
                allow_users_to_change_password: true,
                ..Default::default()
            }),
        }
    );
    step!(
        "iam:CreateRole",
        create_role,
        proto::CreateRoleRequest {
            role_name: "worker".into(),
            assume_role_policy_document: trust(&arn("user", "dev"), None),
            tags: vec![tag("team", "blue")],
            ..Default::default()
        }
    );
    step!(
        "iam:UpdateRole",
        update_role,
        proto::UpdateRoleRequest {
            role_name: "worker".into(),
            description: "builds".into(),
            max_session_duration: 7200,
        }
    );
    step!(
        "iam:UpdateAssumeRolePolicy",
        update_assume_role_policy,
        proto::UpdateAssumeRolePolicyRequest {
            role_name: "worker".into(),
            policy_document: trust(&arn("user", "admin"), None),
        }
    );
    step!(
        "iam:TagRole",
        tag_role,
        proto::TagRoleRequest {
            role_name: "worker".into(),
            tags: vec![tag("team", "red")],
        }
    );
    step!(
        "iam:DeleteRole",
        delete_role,
        proto::DeleteRoleRequest {
            role_name: "worker".into(),
        }
    );
    step!(
        "iam:DeleteUser",
        delete_user,
        proto::DeleteUserRequest {
            user_name: "dev".into(),
        }
    );
    // After all that the user is gone for good, and the chain still verifies.
    assert_status(
        iam.get_user(proto::GetUserRequest {
            user_name: "dev".into(),
        })
        .await,
        Code::NotFound,
        &["user dev"],
    );
    let report = stint::audit::chain::verify(store.as_ref(), None).expect("verify");
    assert!(report.intact, "{}", report.reason);
}

/// `bootstrap_admin` commits the admin, its MFA device and the `stint:Init` event in one
/// batch: with audit writes refused there is no admin afterwards (and no event).
#[tokio::test]
async fn bootstrap_commits_the_admin_with_its_event_or_not_at_all() {
    let store = Arc::new(FaultStore::default());
    let master = MasterKey::generate(&SystemRandom::new()).expect("master key");
    let clock = Arc::new(ManualClock::new(start_time()));
    let broker = unstarted_daemon(store.clone(), &master, &clock)
        .expect("daemon")
        .broker;
    let before = store
        .scan(Table::Audit, b"", None, usize::MAX)
        .expect("scan");
    store.refuse_audit(true);
    store.refuse_flush(true);
    let refused = broker
        .bootstrap_admin(ADMIN, &SecretString::new(ADMIN_PASSWORD.into()))
        .await;
    store.refuse_audit(false);
    store.refuse_flush(false);
    assert!(
        matches!(refused, Err(BrokerError::AuditUnavailable)),
        "{refused:?}"
    );
    assert!(
        !broker.has_users().expect("has_users"),
        "an admin without its event"
    );
    assert!(
        store
            .scan(Table::MfaDevices, b"", None, usize::MAX)
            .expect("scan")
            .is_empty()
    );
    assert_eq!(
        store
            .scan(Table::Audit, b"", None, usize::MAX)
            .expect("scan"),
        before
    );

    let (user, _, _) = broker
        .bootstrap_admin(ADMIN, &SecretString::new(ADMIN_PASSWORD.into()))
        .await
        .expect("bootstrap once writes are accepted");
    let events: Vec<Record> = store
        .scan(Table::Audit, b"", None, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, v)| store::decode(Table::Audit, &k, &v).expect("record"))
        .collect();
    assert!(
        events
            .iter()
            .any(|r| r.event.event_name == "stint:Init" && r.event.principal_arn == user.arn),
        "no stint:Init event"
    );
}

// ---- #15: per-user and per-group indexes -------------------------------------------------

/// Makes the store look as the version before the indexes left it: no index rows, no
/// marker (the access keys and memberships are only in their own records).
fn drop_iam_indexes(store: &dyn Store) {
    let mut batch = Batch::default();
    for (key, _) in store
        .scan(Table::Meta, b"iam/", None, usize::MAX)
        .expect("scan meta")
    {
        batch.writes.push((Table::Meta, key, None));
    }
    assert!(!batch.writes.is_empty(), "the server wrote no index rows");
    store.commit(&batch).expect("drop indexes");
}

/// A store written before the indexes existed keeps AWS's rules: two keys per user,
/// DeleteConflict for a user with keys or a group with members; the first change that
/// needs an index rebuilds it, and the listings agree with the records.
#[tokio::test]
async fn limits_and_delete_conflicts_hold_on_a_store_without_indexes() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let mut iam = server.iam_as(&root);
    for name in ["dev", "ops"] {
        create_user(&mut iam, name, vec![]).await;
    }
    iam.create_group(proto::CreateGroupRequest {
        group_name: "devs".into(),
        path: String::new(),
    })
    .await
    .expect("CreateGroup");
    iam.add_user_to_group(proto::AddUserToGroupRequest {
        group_name: "devs".into(),
        user_name: "dev".into(),
    })
    .await
    .expect("AddUserToGroup");
    let first = iam
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "dev".into(),
        })
        .await
        .expect("CreateAccessKey")
        .into_inner()
        .access_key
        .expect("key")
        .access_key_id;
    iam.create_access_key(proto::CreateAccessKeyRequest {
        user_name: "ops".into(),
    })
    .await
    .expect("CreateAccessKey for ops");

    drop_iam_indexes(server.broker().store().as_ref());

    // Reads fall back to the records.
    let listed = iam
        .list_access_keys(proto::ListAccessKeysRequest {
            user_name: "dev".into(),
            ..Default::default()
        })
        .await
        .expect("ListAccessKeys")
        .into_inner()
        .access_key_metadata;
    assert_eq!(listed.len(), 1);
    let members = iam
        .get_group(proto::GetGroupRequest {
            group_name: "devs".into(),
            ..Default::default()
        })
        .await
        .expect("GetGroup")
        .into_inner()
        .users;
    assert_eq!(members.len(), 1);

    // AWS: DeleteConflict while the group has members or the user has keys.
    assert_status(
        iam.delete_group(proto::DeleteGroupRequest {
            group_name: "devs".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["members"],
    );
    assert_status(
        iam.delete_user(proto::DeleteUserRequest {
            user_name: "dev".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["access keys"],
    );
    // AWS: at most two access keys per user — the key made before the index counts.
    iam.create_access_key(proto::CreateAccessKeyRequest {
        user_name: "dev".into(),
    })
    .await
    .expect("second key");
    assert_status(
        iam.create_access_key(proto::CreateAccessKeyRequest {
            user_name: "DEV".into(),
        })
        .await,
        Code::ResourceExhausted,
        &["2 access keys"],
    );
    // Emptying user and group through the API clears the indexes too.
    iam.remove_user_from_group(proto::RemoveUserFromGroupRequest {
        group_name: "devs".into(),
        user_name: "dev".into(),
    })
    .await
    .expect("RemoveUserFromGroup");
    let keys = iam
        .list_access_keys(proto::ListAccessKeysRequest {
            user_name: "dev".into(),
            ..Default::default()
        })
        .await
        .expect("ListAccessKeys")
        .into_inner()
        .access_key_metadata;
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().any(|k| k.access_key_id == first));
    for key in keys {
        iam.delete_access_key(proto::DeleteAccessKeyRequest {
            user_name: "dev".into(),
            access_key_id: key.access_key_id,
        })
        .await
        .expect("DeleteAccessKey");
    }
    iam.delete_group(proto::DeleteGroupRequest {
        group_name: "devs".into(),
    })
    .await
    .expect("DeleteGroup once empty");
    iam.delete_user(proto::DeleteUserRequest {
        user_name: "dev".into(),
    })
    .await
    .expect("DeleteUser once it has no keys");
    // The other user's key was indexed by the rebuild and still counts.
    assert_status(
        iam.delete_user(proto::DeleteUserRequest {
            user_name: "ops".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["access keys"],
    );
}

/// ListAccessKeys pages (its marker and max_items were ignored before), and
/// ListAttachedUserPolicies filters by path_prefix.
#[tokio::test]
async fn access_keys_page_and_attached_policies_filter_by_path() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let mut iam = server.iam_as(&root);
    create_user(&mut iam, "dev", vec![]).await;
    for _ in 0..2 {
        iam.create_access_key(proto::CreateAccessKeyRequest {
            user_name: "dev".into(),
        })
        .await
        .expect("CreateAccessKey");
    }
    let first = iam
        .list_access_keys(proto::ListAccessKeysRequest {
            user_name: "dev".into(),
            marker: String::new(),
            max_items: 1,
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.access_key_metadata.len(), 1);
    assert!(first.is_truncated);
    let second = iam
        .list_access_keys(proto::ListAccessKeysRequest {
            user_name: "dev".into(),
            marker: first.marker,
            max_items: 1,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.access_key_metadata.len(), 1);
    assert!(!second.is_truncated);
    assert_ne!(
        first.access_key_metadata[0].access_key_id,
        second.access_key_metadata[0].access_key_id
    );

    iam.create_policy(proto::CreatePolicyRequest {
        policy_name: "ops-read".into(),
        path: "/ops/".into(),
        policy_document: allow(&["ec2:Describe*"], &["*"]),
        ..Default::default()
    })
    .await
    .expect("CreatePolicy");
    for policy_arn in [builtin("ReadOnlyAccess"), arn("policy", "ops/ops-read")] {
        iam.attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "dev".into(),
            policy_arn,
        })
        .await
        .expect("AttachUserPolicy");
    }
    let under_ops = iam
        .list_attached_user_policies(proto::ListAttachedUserPoliciesRequest {
            user_name: "dev".into(),
            path_prefix: "/ops/".into(),
            ..Default::default()
        })
        .await
        .expect("ListAttachedUserPolicies")
        .into_inner()
        .attached_policies;
    let names: Vec<&str> = under_ops.iter().map(|p| p.policy_name.as_str()).collect();
    assert_eq!(names, ["ops-read"]);
}

/// Request values that become condition keys or audit parameters are bounded first
/// (AWS: ARNs up to 2,048 characters, at most 50 tag keys of 1 to 128 characters).
#[tokio::test]
async fn oversized_arns_and_tag_keys_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    let mut iam = server.iam_as(&root);
    create_user(&mut iam, "dev", vec![]).await;
    let long_arn = format!("{}{}", arn("policy", ""), "a".repeat(5000));
    assert_status(
        iam.attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "dev".into(),
            policy_arn: long_arn.clone(),
        })
        .await,
        Code::InvalidArgument,
        &["policy_arn", "2048"],
    );
    assert_status(
        iam.put_user_permissions_boundary(proto::PutUserPermissionsBoundaryRequest {
            user_name: "dev".into(),
            permissions_boundary: long_arn.clone(),
        })
        .await,
        Code::InvalidArgument,
        &["permissions_boundary"],
    );
    assert_status(
        iam.get_policy(proto::GetPolicyRequest {
            policy_arn: long_arn,
        })
        .await,
        Code::InvalidArgument,
        &["policy_arn"],
    );
    assert_status(
        iam.untag_user(proto::UntagUserRequest {
            user_name: "dev".into(),
            tag_keys: vec!["k".repeat(200)],
        })
        .await,
        Code::InvalidArgument,
        &["tag_keys"],
    );
    assert_status(
        iam.untag_user(proto::UntagUserRequest {
            user_name: "dev".into(),
            tag_keys: (0..51).map(|i| format!("k{i}")).collect(),
        })
        .await,
        Code::InvalidArgument,
        &["tag_keys", "at most 50"],
    );
    assert_status(
        iam.tag_user(proto::TagUserRequest {
            user_name: "dev".into(),
            tags: vec![tag(&"k".repeat(200), "v")],
        })
        .await,
        Code::InvalidArgument,
        &["tags"],
    );
}
