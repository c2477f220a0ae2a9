//! IAM administration over gRPC: the developers group, a second admin, and the refusals.

use tonic::Code;

use stint::proto::{self, Decision};

use crate::common::*;

const EC2_POLICY_RESOURCES: &str = "arn:aws:ec2:*:*:instance/*";

fn ec2_developer_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Describe", "Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
            {"Sid": "StartStop", "Effect": "Allow",
             "Action": ["ec2:StartInstances", "ec2:StopInstances"],
             "Resource": EC2_POLICY_RESOURCES}
        ]
    })
    .to_string()
}

async fn authorize(
    server: &TestServer,
    token: &str,
    action: &str,
    resource: &str,
) -> proto::AuthorizeResponse {
    server
        .tokens_as(token)
        .authorize(proto::AuthorizeRequest {
            session_token: token.into(),
            action: action.into(),
            resource: resource.into(),
            context: vec![],
        })
        .await
        .unwrap_or_else(|s| panic!("Authorize {action} {resource}: {s}"))
        .into_inner()
}

#[tokio::test]
async fn developers_group_gets_ec2_but_no_iam() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    iam.create_group(proto::CreateGroupRequest {
        group_name: "developers".into(),
        path: String::new(),
    })
    .await
    .expect("CreateGroup");
    iam.put_group_policy(proto::PutGroupPolicyRequest {
        group_name: "developers".into(),
        policy_name: "ec2-dev".into(),
        policy_document: ec2_developer_policy(),
    })
    .await
    .expect("PutGroupPolicy");
    server
        .create_user_with_password(&admin, "dana", "dana-password-1")
        .await;
    iam.add_user_to_group(proto::AddUserToGroupRequest {
        group_name: "developers".into(),
        user_name: "dana".into(),
    })
    .await
    .expect("AddUserToGroup");

    let dev = server
        .login("dana", "dana-password-1", None)
        .await
        .expect("developer login without MFA")
        .session_token;
    assert_eq!(jwt_claims(&dev)["amr"], serde_json::json!(["pwd"]));

    let instance = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc";
    let describe = authorize(&server, &dev, "ec2:DescribeInstances", "*").await;
    assert_eq!(describe.decision(), Decision::Allow, "{}", describe.reason);
    assert_eq!(describe.principal_arn, arn("user", "dana"));
    assert!(
        describe
            .matched_statements
            .iter()
            .any(|s| s.contains("Describe")),
        "{:?}",
        describe.matched_statements
    );
    for action in ["ec2:StartInstances", "ec2:StopInstances"] {
        let start = authorize(&server, &dev, action, instance).await;
        assert_eq!(
            start.decision(),
            Decision::Allow,
            "{action}: {}",
            start.reason
        );
    }
    // Not covered by the group policy.
    let terminate = authorize(&server, &dev, "ec2:TerminateInstances", instance).await;
    assert_eq!(terminate.decision(), Decision::ImplicitDeny);
    let volume = authorize(
        &server,
        &dev,
        "ec2:StartInstances",
        "arn:aws:ec2:eu-west-1:123456789012:volume/vol-1",
    )
    .await;
    assert_eq!(volume.decision(), Decision::ImplicitDeny);
    let create_user = authorize(&server, &dev, "iam:CreateUser", &arn("user", "mallory")).await;
    assert_eq!(create_user.decision(), Decision::ImplicitDeny);
    assert!(create_user.matched_statements.is_empty());

    // And the real IAM call is refused, naming the action and the resource.
    let denied = server
        .iam_as(&dev)
        .create_user(proto::CreateUserRequest {
            user_name: "mallory".into(),
            ..Default::default()
        })
        .await;
    assert_status(
        denied,
        Code::PermissionDenied,
        &["iam:CreateUser", &arn("user", "mallory")],
    );
    // Nothing was created.
    assert_status(
        iam.get_user(proto::GetUserRequest {
            user_name: "mallory".into(),
        })
        .await,
        Code::NotFound,
        &["mallory"],
    );
    // The developer may not read other users either.
    assert_status(
        server
            .iam_as(&dev)
            .get_user(proto::GetUserRequest {
                user_name: ADMIN.into(),
            })
            .await,
        Code::PermissionDenied,
        &["iam:GetUser", &arn("user", ADMIN)],
    );
}

#[tokio::test]
async fn second_admin_with_mfa_administers() {
    let server = TestServer::start().await;
    let root = server.admin_login().await;
    server
        .create_user_with_password(&root, "alice", "alice-password-1")
        .await;
    server
        .iam_as(&root)
        .attach_user_policy(proto::AttachUserPolicyRequest {
            user_name: "alice".into(),
            policy_arn: builtin("AdministratorAccess"),
        })
        .await
        .expect("AttachUserPolicy");
    let seed = server.enroll_mfa(&root, "alice").await;

    // With MFA enrolled, the password alone is not enough.
    assert_status(
        server.login("alice", "alice-password-1", None).await,
        Code::Unauthenticated,
        &["invalid credentials"],
    );
    server.after_failure();
    let code = server.fresh_code(&seed);
    let alice = server
        .login("alice", "alice-password-1", Some(&code))
        .await
        .expect("alice login")
        .session_token;
    let claims = jwt_claims(&alice);
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(claims["sub"], arn("user", "alice"));

    let mut iam = server.iam_as(&alice);
    let user = iam
        .create_user(proto::CreateUserRequest {
            user_name: "bob".into(),
            path: "/eng/".into(),
            ..Default::default()
        })
        .await
        .expect("CreateUser")
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.arn, format!("arn:stint:iam::{ACCOUNT}:user/eng/bob"));
    assert_eq!(user.user_name, "bob");
    assert!(user.user_id.starts_with("AIDA"), "{}", user.user_id);
    assert_eq!(timestamp_secs(&user.create_date), server.now_secs());

    let group = iam
        .create_group(proto::CreateGroupRequest {
            group_name: "ops".into(),
            path: String::new(),
        })
        .await
        .expect("CreateGroup")
        .into_inner()
        .group
        .unwrap();
    assert_eq!(group.arn, arn("group", "ops"));

    let policy = iam
        .create_policy(proto::CreatePolicyRequest {
            policy_name: "read-reports".into(),
            policy_document: allow(&["s3:GetObject"], &["arn:aws:s3:::reports/*"]),
            ..Default::default()
        })
        .await
        .expect("CreatePolicy")
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(policy.arn, arn("policy", "read-reports"));
    assert_eq!(policy.default_version_id, "v1");

    let role = iam
        .create_role(proto::CreateRoleRequest {
            role_name: "reader".into(),
            assume_role_policy_document: trust(&arn("user", "bob"), None),
            ..Default::default()
        })
        .await
        .expect("CreateRole")
        .into_inner()
        .role
        .unwrap();
    assert_eq!(role.arn, arn("role", "reader"));
    assert_eq!(role.max_session_duration, 3600);
    assert!(role.role_id.starts_with("AROA"), "{}", role.role_id);

    // Creating the same user twice is a conflict.
    assert_status(
        iam.create_user(proto::CreateUserRequest {
            user_name: "bob".into(),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        &["bob"],
    );
}

#[tokio::test]
async fn invalid_names_and_documents_name_the_field() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);

    for bad in ["", "has space", "semi;colon", &"x".repeat(65)] {
        assert_status(
            iam.create_user(proto::CreateUserRequest {
                user_name: bad.to_string(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            &["user_name"],
        );
    }
    assert_status(
        iam.create_group(proto::CreateGroupRequest {
            group_name: "bad/name".into(),
            path: String::new(),
        })
        .await,
        Code::InvalidArgument,
        &["group_name"],
    );

    let bad_effect = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            {"Sid": "Broken", "Effect": "Permit", "Action": "s3:PutObject", "Resource": "*"}
        ]
    })
    .to_string();
    assert_status(
        iam.create_policy(proto::CreatePolicyRequest {
            policy_name: "broken".into(),
            policy_document: bad_effect,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["policy_document", "Statement[1]", "Broken", "Effect"],
    );
    let no_resource = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject"}]
    })
    .to_string();
    server
        .create_user_with_password(&admin, "carol", "carol-password-1")
        .await;
    assert_status(
        iam.put_user_policy(proto::PutUserPolicyRequest {
            user_name: "carol".into(),
            policy_name: "inline".into(),
            policy_document: no_resource,
        })
        .await,
        Code::InvalidArgument,
        &["policy_document", "Statement[0].Resource"],
    );
    assert_status(
        iam.put_user_policy(proto::PutUserPolicyRequest {
            user_name: "carol".into(),
            policy_name: "inline".into(),
            policy_document: "{not json".into(),
        })
        .await,
        Code::InvalidArgument,
        &["policy_document"],
    );
    // Refused documents were not stored.
    let names = iam
        .list_user_policies(proto::ListUserPoliciesRequest {
            user_name: "carol".into(),
            ..Default::default()
        })
        .await
        .expect("ListUserPolicies")
        .into_inner()
        .policy_names;
    assert!(names.is_empty(), "{names:?}");
    assert_status(
        iam.get_policy(proto::GetPolicyRequest {
            policy_arn: arn("policy", "broken"),
        })
        .await,
        Code::NotFound,
        &[],
    );
}

#[tokio::test]
async fn refused_create_role_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    // A trust policy without a Principal is not a trust policy.
    let no_principal = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]
    })
    .to_string();
    assert_status(
        iam.create_role(proto::CreateRoleRequest {
            role_name: "half".into(),
            assume_role_policy_document: no_principal,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["assume_role_policy_document", "Statement[0]"],
    );
    assert_status(
        iam.get_role(proto::GetRoleRequest {
            role_name: "half".into(),
        })
        .await,
        Code::NotFound,
        &["half"],
    );
    // A bad max_session_duration is refused the same way.
    assert_status(
        iam.create_role(proto::CreateRoleRequest {
            role_name: "half".into(),
            assume_role_policy_document: trust(&arn("user", ADMIN), None),
            max_session_duration: 50_000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["max_session_duration"],
    );
    assert_status(
        iam.get_role(proto::GetRoleRequest {
            role_name: "half".into(),
        })
        .await,
        Code::NotFound,
        &["half"],
    );
    let roles = iam
        .list_roles(proto::ListRolesRequest::default())
        .await
        .expect("ListRoles")
        .into_inner()
        .roles;
    assert!(roles.is_empty(), "{roles:?}");
}

#[tokio::test]
async fn delete_user_with_attached_policy_is_a_conflict() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "temp").await;
    let mut iam = server.iam_as(&admin);
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "temp".into(),
        policy_arn: builtin("ReadOnlyAccess"),
    })
    .await
    .expect("AttachUserPolicy");
    assert_status(
        iam.delete_user(proto::DeleteUserRequest {
            user_name: "temp".into(),
        })
        .await,
        Code::FailedPrecondition,
        &["temp", "attached policies"],
    );
    // Still there; after detaching it can go.
    iam.get_user(proto::GetUserRequest {
        user_name: "temp".into(),
    })
    .await
    .expect("user still exists");
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
    .expect("DeleteUser");
    assert_status(
        iam.get_user(proto::GetUserRequest {
            user_name: "temp".into(),
        })
        .await,
        Code::NotFound,
        &["temp"],
    );
    assert_status(
        iam.delete_user(proto::DeleteUserRequest {
            user_name: "temp".into(),
        })
        .await,
        Code::NotFound,
        &["temp"],
    );
}

#[tokio::test]
async fn an_eleventh_group_exceeds_the_limit() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "joiner").await;
    let mut iam = server.iam_as(&admin);
    for i in 0..11 {
        iam.create_group(proto::CreateGroupRequest {
            group_name: format!("g{i}"),
            path: String::new(),
        })
        .await
        .expect("CreateGroup");
    }
    for i in 0..10 {
        iam.add_user_to_group(proto::AddUserToGroupRequest {
            group_name: format!("g{i}"),
            user_name: "joiner".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("group {i}: {s}"));
    }
    assert_status(
        iam.add_user_to_group(proto::AddUserToGroupRequest {
            group_name: "g10".into(),
            user_name: "joiner".into(),
        })
        .await,
        Code::ResourceExhausted,
        &["joiner", "10"],
    );
    let groups = iam
        .list_groups_for_user(proto::ListGroupsForUserRequest {
            user_name: "joiner".into(),
            ..Default::default()
        })
        .await
        .expect("ListGroupsForUser")
        .into_inner()
        .groups;
    assert_eq!(groups.len(), 10);
    assert!(groups.iter().all(|g| g.group_name != "g10"));
    // Re-adding an existing membership is not a new membership.
    iam.add_user_to_group(proto::AddUserToGroupRequest {
        group_name: "g0".into(),
        user_name: "joiner".into(),
    })
    .await
    .expect("idempotent add");
}
