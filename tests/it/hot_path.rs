//! The hot path's cache of verified tokens and compiled policies (broker/session_cache.rs)
//! must not answer from stale memory: each test first uses a token so that it is cached,
//! then changes what it depends on — a revocation, a deleted and recreated principal, a
//! detached or deleted policy, the passing of time on the manual clock, another replica's
//! revocation — and checks that the next call sees the change.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tonic::Code;

use stint::broker::SHARED_REFRESH;
use stint::proto::{self, Decision};
use stint::store::Store;
use stint::store::postgres::{PostgresStore, testing};

use crate::common::*;

const WHOAMI: proto::GetCallerIdentityRequest = proto::GetCallerIdentityRequest {};
const DEV_PASSWORD: &str = "dev-password-1";
const S3_READ: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;

fn jti(token: &str) -> String {
    jwt_claims(token)["jti"].as_str().unwrap().to_string()
}

fn revoke(session_id: &str, principal_arn: &str) -> proto::RevokeSessionRequest {
    proto::RevokeSessionRequest {
        session_id: session_id.into(),
        principal_arn: principal_arn.into(),
        role_arn: String::new(),
        issued_before: None,
    }
}

fn ask(token: &str) -> proto::AuthorizeRequest {
    proto::AuthorizeRequest {
        session_token: token.into(),
        action: "s3:GetObject".into(),
        resource: "arn:aws:s3:::reports/q3.csv".into(),
        context: vec![],
    }
}

/// `Authorize` of `subject` asked by `app`: the decision, or the error's code.
async fn decision(server: &TestServer, app: &str, subject: &str) -> Result<Decision, Code> {
    server
        .tokens_as(app)
        .authorize(ask(subject))
        .await
        .map(|r| r.into_inner().decision())
        .map_err(|s| s.code())
}

async fn is_alive(server: &TestServer, token: &str) -> bool {
    match server.sts_as(token).get_caller_identity(WHOAMI).await {
        Ok(_) => true,
        Err(status) => {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            false
        }
    }
}

/// Uses `token` as a bearer and as an `Authorize` subject, twice: cached from the second.
async fn warm(server: &TestServer, app: &str, token: &str) {
    for _ in 0..2 {
        assert!(is_alive(server, token).await);
        assert_eq!(decision(server, app, token).await, Ok(Decision::Allow));
    }
}

fn trust(principal: &str) -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"
    }]})
    .to_string()
}

async fn assume(server: &TestServer, token: &str, role: &str, session: &str) -> String {
    server
        .sts_as(token)
        .assume_role(proto::AssumeRoleRequest {
            role_arn: arn("role", role),
            role_session_name: session.into(),
            ..Default::default()
        })
        .await
        .expect("AssumeRole")
        .into_inner()
        .credentials
        .unwrap()
        .session_token
}

/// A server, its admin, and `dev` (password, inline policy `read` allowing s3:GetObject).
async fn server_with_dev() -> (TestServer, String) {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    server.put_user_policy(&admin, "dev", "read", S3_READ).await;
    (server, admin)
}

/// Role `ops`, trusting `dev`, allowed to read S3.
async fn ops_role_for_dev(server: &TestServer, admin: &str) {
    server
        .create_role(admin, "ops", trust(&arn("user", "dev")))
        .await;
    server.put_role_policy(admin, "ops", "read", S3_READ).await;
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_or_its_parent_is_revoked() {
    let (server, admin) = server_with_dev().await;
    ops_role_for_dev(&server, &admin).await;

    // By session id.
    let dev = server.session("dev", DEV_PASSWORD).await;
    warm(&server, &admin, &dev).await;
    server
        .tokens_as(&admin)
        .revoke_session(revoke(&jti(&dev), ""))
        .await
        .expect("RevokeSession");
    assert!(!is_alive(&server, &dev).await);
    assert_eq!(
        decision(&server, &admin, &dev).await,
        Err(Code::InvalidArgument)
    );

    // A role session assumed from a session revoked later, both cached.
    server.advance(Duration::from_secs(1));
    let parent = server.session("dev", DEV_PASSWORD).await;
    let child = assume(&server, &parent, "ops", "s1").await;
    warm(&server, &admin, &parent).await;
    warm(&server, &admin, &child).await;
    server
        .tokens_as(&parent)
        .revoke_session(revoke(&jti(&parent), ""))
        .await
        .expect("logout");
    assert!(!is_alive(&server, &child).await);
    assert_eq!(
        decision(&server, &admin, &child).await,
        Err(Code::InvalidArgument)
    );

    // By principal: everything issued to dev before now, not what is issued after.
    server.advance(Duration::from_secs(1));
    let before = server.session("dev", DEV_PASSWORD).await;
    warm(&server, &admin, &before).await;
    server
        .tokens_as(&admin)
        .revoke_session(revoke("", &arn("user", "dev")))
        .await
        .expect("RevokeSession by principal");
    assert!(!is_alive(&server, &before).await);
    server.advance(Duration::from_secs(1));
    let after = server.session("dev", DEV_PASSWORD).await;
    warm(&server, &admin, &after).await;
}

#[tokio::test]
async fn detaching_or_deleting_a_policy_denies_the_next_authorize() {
    let (server, admin) = server_with_dev().await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let mut iam = server.iam_as(&admin);

    // An inline policy deleted.
    warm(&server, &admin, &dev).await;
    iam.delete_user_policy(proto::DeleteUserPolicyRequest {
        user_name: "dev".into(),
        policy_name: "read".into(),
    })
    .await
    .expect("DeleteUserPolicy");
    assert_eq!(
        decision(&server, &admin, &dev).await,
        Ok(Decision::ImplicitDeny)
    );

    // A managed policy attached, then detached.
    let policy_arn = iam
        .create_policy(proto::CreatePolicyRequest {
            policy_name: "s3-read".into(),
            policy_document: S3_READ.into(),
            ..Default::default()
        })
        .await
        .expect("CreatePolicy")
        .into_inner()
        .policy
        .unwrap()
        .arn;
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "dev".into(),
        policy_arn: policy_arn.clone(),
    })
    .await
    .expect("AttachUserPolicy");
    warm(&server, &admin, &dev).await;
    iam.detach_user_policy(proto::DetachUserPolicyRequest {
        user_name: "dev".into(),
        policy_arn,
    })
    .await
    .expect("DetachUserPolicy");
    assert_eq!(
        decision(&server, &admin, &dev).await,
        Ok(Decision::ImplicitDeny)
    );

    // A group's policy: membership removed.
    iam.create_group(proto::CreateGroupRequest {
        group_name: "readers".into(),
        ..Default::default()
    })
    .await
    .expect("CreateGroup");
    iam.put_group_policy(proto::PutGroupPolicyRequest {
        group_name: "readers".into(),
        policy_name: "read".into(),
        policy_document: S3_READ.into(),
    })
    .await
    .expect("PutGroupPolicy");
    iam.add_user_to_group(proto::AddUserToGroupRequest {
        group_name: "readers".into(),
        user_name: "dev".into(),
    })
    .await
    .expect("AddUserToGroup");
    warm(&server, &admin, &dev).await;
    iam.remove_user_from_group(proto::RemoveUserFromGroupRequest {
        group_name: "readers".into(),
        user_name: "dev".into(),
    })
    .await
    .expect("RemoveUserFromGroup");
    assert_eq!(
        decision(&server, &admin, &dev).await,
        Ok(Decision::ImplicitDeny)
    );
    assert!(is_alive(&server, &dev).await);
}

#[tokio::test]
async fn cached_sessions_of_a_deleted_and_recreated_principal_are_refused() {
    let (server, admin) = server_with_dev().await;
    ops_role_for_dev(&server, &admin).await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let in_ops = assume(&server, &dev, "ops", "s1").await;
    warm(&server, &admin, &dev).await;
    warm(&server, &admin, &in_ops).await;

    // The role deleted and created again (same name, new unique id).
    let mut iam = server.iam_as(&admin);
    iam.delete_role_policy(proto::DeleteRolePolicyRequest {
        role_name: "ops".into(),
        policy_name: "read".into(),
    })
    .await
    .expect("DeleteRolePolicy");
    iam.delete_role(proto::DeleteRoleRequest {
        role_name: "ops".into(),
    })
    .await
    .expect("DeleteRole");
    server
        .create_role(&admin, "ops", trust(&arn("user", "dev")))
        .await;
    assert!(!is_alive(&server, &in_ops).await);
    assert_eq!(
        decision(&server, &admin, &in_ops).await,
        Err(Code::InvalidArgument)
    );
    assert!(is_alive(&server, &dev).await);

    // The user deleted and created again.
    warm(&server, &admin, &dev).await;
    iam.delete_user_policy(proto::DeleteUserPolicyRequest {
        user_name: "dev".into(),
        policy_name: "read".into(),
    })
    .await
    .expect("DeleteUserPolicy");
    iam.delete_login_profile(proto::DeleteLoginProfileRequest {
        user_name: "dev".into(),
    })
    .await
    .expect("DeleteLoginProfile");
    iam.delete_user(proto::DeleteUserRequest {
        user_name: "dev".into(),
    })
    .await
    .expect("DeleteUser");
    server
        .create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    server.put_user_policy(&admin, "dev", "read", S3_READ).await;
    assert!(!is_alive(&server, &dev).await);
    assert_eq!(
        decision(&server, &admin, &dev).await,
        Err(Code::InvalidArgument)
    );
    let namesake = server.session("dev", DEV_PASSWORD).await;
    warm(&server, &admin, &namesake).await;
}

#[tokio::test]
async fn cached_tokens_expire_on_the_manual_clock() {
    let (server, admin) = server_with_dev().await;
    let dev = server
        .get_session_token(
            proto::get_session_token_request::Credential::Password(proto::PasswordCredential {
                user_name: "dev".into(),
                password: DEV_PASSWORD.into(),
            }),
            None,
            900,
        )
        .await
        .expect("login")
        .session_token;
    warm(&server, &admin, &dev).await;
    // Accepted up to the expiry plus the clock skew allowed (60 s), not a second more.
    server.advance(Duration::from_secs(900 + 59));
    assert!(is_alive(&server, &dev).await);
    assert_eq!(decision(&server, &admin, &dev).await, Ok(Decision::Allow));
    server.advance(Duration::from_secs(1));
    assert!(!is_alive(&server, &dev).await);
    let admin = server.admin_login().await;
    assert_eq!(
        decision(&server, &admin, &dev).await,
        Err(Code::InvalidArgument)
    );
}

// ---- several replicas on one PostgreSQL database --------------------------------------

/// Two replicas (A bootstraps, B joins) over one fresh database; `None` when skipped.
async fn two_replicas(test: &str) -> Option<(TestServer, TestServer)> {
    let base = testing::url(test)?;
    let url = testing::fresh_database(&base, test).expect("test database");
    let store_a: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 4).expect("store A"));
    let store_b: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 4).expect("store B"));
    let a = TestServer::builder().store(store_a).start().await;
    let b = TestServer::builder()
        .store(store_b)
        .replica_of(&a)
        .start()
        .await;
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_revocation_and_iam_change_reach_cached_tokens_within_the_bound() {
    let Some((a, b)) = two_replicas("hot_path_replicas").await else {
        return;
    };
    let admin = a.admin_login().await;
    a.create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    a.put_user_policy(&admin, "dev", "read", S3_READ).await;
    let b_admin = b.admin_login().await;
    let revoked = b.session("dev", DEV_PASSWORD).await;
    let detached = b.session("dev", DEV_PASSWORD).await;
    warm(&b, &b_admin, &revoked).await;
    warm(&b, &b_admin, &detached).await;

    a.tokens_as(&admin)
        .revoke_session(revoke(&jti(&revoked), ""))
        .await
        .expect("A revokes");
    a.iam_as(&admin)
        .delete_user_policy(proto::DeleteUserPolicyRequest {
            user_name: "dev".into(),
            policy_name: "read".into(),
        })
        .await
        .expect("A deletes dev's policy");
    // B may answer from memory until the bound has passed, and must not after it.
    a.advance(SHARED_REFRESH);
    assert!(!is_alive(&b, &revoked).await, "B honours A's revocation");
    let b_admin = b.admin_login().await;
    assert_eq!(
        decision(&b, &b_admin, &detached).await,
        Ok(Decision::ImplicitDeny),
        "B sees A's IAM change"
    );
    assert!(is_alive(&b, &detached).await);
}

/// A server over a store whose flushes a test can make fail, with user dev; and the
/// admin's token.
async fn dev_over_faults() -> (TestServer, Arc<FaultStore>, String) {
    let (server, faults) = TestServer::over_faults(100_000_000, 604_800).await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    (server, faults, admin)
}

/// A change whose request fails after the store applied it still reaches the cache. Here
/// the audit flush fails, so DeleteUserPolicy and RevokeSession answer UNAVAILABLE; a
/// passed deadline or a client that hangs up drops the request at the same point. The
/// store has the change all the same, and the cache must follow: the policy no longer
/// allows, and the revoked session is refused, on this server, at once.
#[tokio::test]
async fn a_change_whose_request_failed_after_it_was_applied_still_reaches_the_cache() {
    let (server, faults, admin) = dev_over_faults().await;
    server.put_user_policy(&admin, "dev", "read", S3_READ).await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let other = server.session("dev", DEV_PASSWORD).await;
    warm(&server, &admin, &dev).await;
    warm(&server, &admin, &other).await;

    faults.refuse_flush(true);
    let detached = server
        .iam_as(&admin)
        .delete_user_policy(proto::DeleteUserPolicyRequest {
            user_name: "dev".into(),
            policy_name: "read".into(),
        })
        .await;
    assert_eq!(detached.unwrap_err().code(), Code::Unavailable);
    let revoked = server
        .tokens_as(&admin)
        .revoke_session(revoke(&jti(&other), ""))
        .await;
    assert_eq!(revoked.unwrap_err().code(), Code::Unavailable);
    faults.refuse_flush(false);
    server
        .health_becomes(tonic_health::pb::health_check_response::ServingStatus::Serving)
        .await;

    assert_eq!(
        decision(&server, &admin, &dev).await,
        Ok(Decision::ImplicitDeny),
        "the deleted policy no longer allows"
    );
    assert!(
        !is_alive(&server, &other).await,
        "the revoked session is refused"
    );
    assert!(is_alive(&server, &dev).await);
}

/// `WatchRevocations` streams (apps verifying tokens offline) learn of a revocation whose
/// request failed after the store applied it, as the cache does: nothing waits for the
/// next unrelated revocation.
#[tokio::test]
async fn a_watcher_sees_a_revocation_whose_request_failed_after_it_was_applied() {
    let (server, faults, admin) = dev_over_faults().await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let mut stream = server
        .tokens_as(&admin)
        .watch_revocations(proto::WatchRevocationsRequest {})
        .await
        .expect("WatchRevocations")
        .into_inner();
    loop {
        let entry = stream.message().await.unwrap().expect("snapshot");
        if entry.end_of_snapshot {
            break;
        }
    }

    faults.refuse_flush(true);
    let revoked = server
        .tokens_as(&admin)
        .revoke_session(revoke(&jti(&dev), ""))
        .await;
    assert_eq!(revoked.unwrap_err().code(), Code::Unavailable);
    faults.refuse_flush(false);

    // Well before the streams' 5 s safety rescan, which would find it eventually.
    let entry = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("the watcher was told at once")
        .unwrap()
        .expect("an entry");
    assert_eq!(entry.session_id, jti(&dev));
}
