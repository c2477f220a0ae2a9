//! Attacks on the policy engine through the real server (issue 9: #11, #17): an adversarial
//! glob against a huge resource, a policy document with a duplicate key, tags with invisible
//! control characters. Each is refused (or answered cheaply) and the server stays healthy.

use tonic::Code;

use stint::proto::{self, Decision};

use crate::common::*;

const USER: &str = "mallory";
const PASSWORD: &str = "Correct-Horse-9-battery";

/// A user whose inline policy allows `s3:GetObject` on `arn:aws:s3:::*a…ab*` (1,000 `a`s: the
/// shape that made the old backtracking matcher quadratic), logged in.
async fn user_with_adversarial_policy(server: &TestServer) -> String {
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, USER, PASSWORD)
        .await;
    let pattern = format!("arn:aws:s3:::*{}b*", "a".repeat(1000));
    server
        .put_user_policy(&admin, USER, "glob", &allow(&["s3:GetObject"], &[&pattern]))
        .await;
    server.session(USER, PASSWORD).await
}

async fn authorize(
    server: &TestServer,
    token: &str,
    resource: &str,
) -> Result<proto::AuthorizeResponse, tonic::Status> {
    server
        .tokens_as(token)
        .authorize(proto::AuthorizeRequest {
            session_token: token.into(),
            action: "s3:GetObject".into(),
            resource: resource.into(),
            context: vec![],
        })
        .await
        .map(tonic::Response::into_inner)
}

/// #11: `*aaaa…b*` against a 1,000,000-character resource took 16 s of CPU. AWS caps ARNs at
/// 2,048 characters; the engine denies longer requests without matching (the edge may refuse
/// them first with INVALID_ARGUMENT). No timing assertion: the point is that it answers, the
/// answer is not Allow, and the server still serves the same caller afterwards.
#[tokio::test]
async fn adversarial_glob_on_a_huge_resource_is_refused_and_server_stays_healthy() {
    let server = TestServer::start().await;
    let token = user_with_adversarial_policy(&server).await;

    // The policy is in force: a matching resource under the cap is allowed.
    let fitting = format!("arn:aws:s3:::x{}by", "a".repeat(1000));
    let allowed = authorize(&server, &token, &fitting)
        .await
        .expect("Authorize");
    assert_eq!(allowed.decision(), Decision::Allow, "{}", allowed.reason);

    let huge = format!("arn:aws:s3:::{}", "a".repeat(1_000_000));
    match authorize(&server, &token, &huge).await {
        Ok(answer) => {
            assert_ne!(answer.decision(), Decision::Allow);
            assert!(answer.reason.contains("2048"), "{}", answer.reason);
            assert!(
                answer.reason.len() < 1_000,
                "the reason echoes the resource"
            );
        }
        // Refused by the field bound, or before decoding by Authorize's message limit.
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::ResourceExhausted
                ),
                "{status:?}"
            );
            assert!(
                status.message().contains("resource") || status.message().contains("limit"),
                "{}",
                status.message()
            );
        }
    }
    // Even with a `b` at the end (a match for an uncapped matcher): never Allow.
    let huge_match = format!("{huge}b");
    if let Ok(answer) = authorize(&server, &token, &huge_match).await {
        assert_ne!(answer.decision(), Decision::Allow);
    }

    let me = server
        .sts_as(&token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("GetCallerIdentity after the attack")
        .into_inner();
    assert_eq!(me.arn, arn("user", USER));
}

/// #17: serde_json keeps the last of duplicate keys, so `"Effect": "Deny", "Effect": "Allow"`
/// was stored as an Allow. AWS refuses such a document (MalformedPolicyDocument).
#[tokio::test]
async fn policy_with_duplicate_keys_is_refused() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, USER).await;
    let mut iam = server.iam_as(&admin);
    let document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let refused = iam
        .put_user_policy(proto::PutUserPolicyRequest {
            user_name: USER.into(),
            policy_name: "sneaky".into(),
            policy_document: document.into(),
        })
        .await;
    assert_status(
        refused,
        Code::InvalidArgument,
        &["duplicate key \"Effect\"", "Statement[0]"],
    );
    let listed = iam
        .list_user_policies(proto::ListUserPoliciesRequest {
            user_name: USER.into(),
            ..Default::default()
        })
        .await
        .expect("ListUserPolicies")
        .into_inner();
    assert!(listed.policy_names.is_empty(), "{listed:?}");
}

/// #17: tag keys and values follow IAM's alphabet (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`, IAM API
/// Reference "Tag"): NUL and the bidi override U+202E (which makes `red` display as `der`)
/// are refused.
#[tokio::test]
async fn tags_with_nul_or_bidi_controls_are_refused() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, USER).await;
    let mut iam = server.iam_as(&admin);
    for (key, value, shown) in [
        ("team\0", "red", "U+0000"),
        ("team", "red\0admin", "U+0000"),
        ("team", "\u{202E}der", "U+202E"),
        ("\u{2066}team", "red", "U+2066"),
    ] {
        let refused = iam
            .tag_user(proto::TagUserRequest {
                user_name: USER.into(),
                tags: vec![tag(key, value)],
            })
            .await;
        assert_status(refused, Code::InvalidArgument, &["tags", shown]);
    }
    // IAM's own alphabet still works.
    iam.tag_user(proto::TagUserRequest {
        user_name: USER.into(),
        tags: vec![tag("cost-center", "Human Resources: 42/a@b")],
    })
    .await
    .expect("TagUser with IAM's characters");
}
