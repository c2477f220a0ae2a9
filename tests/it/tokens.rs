//! `Tokens` (Authorize, Introspect, RevokeSession) and `Keys` (rotation).

use std::time::Duration;

use serde_json::json;
use tonic::Code;

use stint::proto::{self, ContextEntry, Decision};

use crate::common::*;

async fn dev_with_policy(server: &TestServer, admin: &str, policy: String) -> String {
    server
        .create_user_with_password(admin, "dev", "dev-password-1")
        .await;
    server
        .iam_as(admin)
        .put_user_policy(proto::PutUserPolicyRequest {
            user_name: "dev".into(),
            policy_name: "p".into(),
            policy_document: policy,
        })
        .await
        .expect("PutUserPolicy");
    server
        .login("dev", "dev-password-1", None)
        .await
        .expect("dev login")
        .session_token
}

fn request(
    token: &str,
    action: &str,
    resource: &str,
    ctx: &[(&str, &str)],
) -> proto::AuthorizeRequest {
    proto::AuthorizeRequest {
        session_token: token.into(),
        action: action.into(),
        resource: resource.into(),
        context: ctx
            .iter()
            .map(|(k, v)| ContextEntry {
                key: (*k).into(),
                values: vec![(*v).into()],
            })
            .collect(),
    }
}

#[tokio::test]
async fn authorize_explains_allow_explicit_and_implicit_deny() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "RegionalStart", "Effect": "Allow", "Action": "ec2:StartInstances", "Resource": "*",
             "Condition": {"StringEquals": {"ec2:Region": "eu-west-1"}}},
            {"Sid": "AllS3", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "NoPayroll", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::payroll/*"},
            {"Sid": "OwnPrefix", "Effect": "Allow", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::home/${aws:username}/*"}
        ]
    })
    .to_string();
    let dev = dev_with_policy(&server, &admin, policy).await;
    // Any valid bearer may ask; here an app holding the admin's session asks about dev.
    let mut tokens = server.tokens_as(&admin);
    let mut ask = async |action: &str, resource: &str, ctx: &[(&str, &str)]| {
        tokens
            .authorize(request(&dev, action, resource, ctx))
            .await
            .unwrap_or_else(|s| panic!("{action} {resource}: {s}"))
            .into_inner()
    };

    let allowed = ask("s3:GetObject", "arn:aws:s3:::reports/x", &[]).await;
    assert_eq!(allowed.decision(), Decision::Allow);
    assert_eq!(allowed.principal_arn, arn("user", "dev"));
    assert!(
        allowed
            .matched_statements
            .iter()
            .any(|m| m.contains("AllS3")),
        "{:?}",
        allowed.matched_statements
    );
    let denied = ask("s3:GetObject", "arn:aws:s3:::payroll/x", &[]).await;
    assert_eq!(denied.decision(), Decision::ExplicitDeny);
    assert!(
        denied
            .matched_statements
            .iter()
            .any(|m| m.contains("NoPayroll")),
        "{:?}",
        denied.matched_statements
    );
    assert!(!denied.reason.is_empty());
    assert_eq!(
        ask("ec2:StartInstances", "*", &[("ec2:Region", "eu-west-1")])
            .await
            .decision(),
        Decision::Allow
    );
    assert_eq!(
        ask("ec2:StartInstances", "*", &[("ec2:Region", "us-east-1")])
            .await
            .decision(),
        Decision::ImplicitDeny
    );
    assert_eq!(
        ask("ec2:StartInstances", "*", &[]).await.decision(),
        Decision::ImplicitDeny
    );
    // Policy variables resolve from the session, not from the request.
    assert_eq!(
        ask("s3:PutObject", "arn:aws:s3:::home/dev/notes.txt", &[])
            .await
            .decision(),
        Decision::Allow
    );
    assert_eq!(
        ask("s3:PutObject", "arn:aws:s3:::home/admin/notes.txt", &[])
            .await
            .decision(),
        Decision::Allow,
        "AllS3 allows it regardless"
    );

    // Input errors name the field.
    for (action, resource, field) in [
        ("GetObject", "*", "action"),
        ("", "*", "action"),
        ("s3:GetObject", "", "resource"),
    ] {
        assert_status(
            tokens.authorize(request(&dev, action, resource, &[])).await,
            Code::InvalidArgument,
            &[field],
        );
    }
    assert_status(
        tokens
            .authorize(request("not.a.jwt", "s3:GetObject", "*", &[]))
            .await,
        Code::InvalidArgument,
        &["session_token"],
    );
    // Without a bearer token the question is not answered.
    let mut anonymous = proto::tokens_client::TokensClient::new(server.channel());
    assert_status(
        anonymous
            .authorize(request(&dev, "s3:GetObject", "*", &[]))
            .await,
        Code::Unauthenticated,
        &["authorization"],
    );
}

#[tokio::test]
async fn request_context_cannot_forge_session_facts() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]
    })
    .to_string();
    let dev = dev_with_policy(&server, &admin, policy).await;
    let mut tokens = server.tokens_as(&dev);
    let plain = tokens
        .authorize(request(&dev, "s3:GetObject", "*", &[]))
        .await
        .expect("Authorize")
        .into_inner();
    assert_eq!(plain.decision(), Decision::ImplicitDeny);
    // A request context claiming MFA, another identity or tags is refused: those facts
    // come from the token only.
    for (key, value) in [
        ("aws:MultiFactorAuthPresent", "true"),
        ("AWS:multifactorauthpresent", "true"),
        ("aws:username", "admin"),
        ("aws:PrincipalArn", &arn("user", ADMIN)),
        ("aws:PrincipalTag/team", "security"),
    ] {
        let forged = tokens
            .authorize(request(&dev, "s3:GetObject", "*", &[(key, value)]))
            .await;
        assert_status(forged, Code::InvalidArgument, &["context", key]);
    }
}

#[tokio::test]
async fn introspect_reports_active_and_inactive_tokens() {
    let server = TestServer::start_with(|c| c.tokens.clock_skew_seconds = 0).await;
    let admin = server.admin_login().await;
    let short = server
        .get_session_token(
            proto::get_session_token_request::Credential::Password(proto::PasswordCredential {
                user_name: ADMIN.into(),
                password: ADMIN_PASSWORD.into(),
            }),
            Some(&server.fresh_code(&server.admin_seed.clone())),
            900,
        )
        .await
        .expect("short session")
        .session_token;
    let mut tokens = server.tokens_as(&admin);
    let active = tokens
        .introspect(proto::IntrospectRequest {
            token: short.clone(),
        })
        .await
        .expect("Introspect")
        .into_inner();
    assert!(active.active);
    assert_eq!(active.sub, arn("user", ADMIN));
    let claims = jwt_claims(&short);
    assert_eq!(active.jti, claims["jti"].as_str().unwrap());
    assert_eq!(Some(active.exp), claims["exp"].as_i64());
    let full: serde_json::Value = serde_json::from_str(&active.claims_json).unwrap();
    assert_eq!(full, claims);

    for garbage in ["", "x.y.z", &format!("{short}x")] {
        let inactive = tokens
            .introspect(proto::IntrospectRequest {
                token: garbage.to_string(),
            })
            .await
            .expect("Introspect")
            .into_inner();
        assert_eq!(
            inactive,
            proto::IntrospectResponse::default(),
            "{garbage:?}"
        );
    }
    server.advance(Duration::from_secs(900));
    let expired = tokens
        .introspect(proto::IntrospectRequest { token: short })
        .await
        .expect("Introspect")
        .into_inner();
    assert!(!expired.active);
    assert!(expired.sub.is_empty());
}

#[tokio::test]
async fn revoke_one_session_or_everything_before_a_time() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let dev = dev_with_policy(&server, &admin, allow(&["s3:GetObject"], &["*"])).await;
    let dev2 = server
        .login("dev", "dev-password-1", None)
        .await
        .unwrap()
        .session_token;
    let jti = jwt_claims(&dev)["jti"].as_str().unwrap().to_string();

    // A user without the right cannot revoke.
    assert_status(
        server
            .tokens_as(&dev)
            .revoke_session(proto::RevokeSessionRequest {
                principal_arn: arn("user", ADMIN),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        &["stint:RevokeSession", &arn("user", ADMIN)],
    );
    assert_status(
        server
            .tokens_as(&admin)
            .revoke_session(proto::RevokeSessionRequest::default())
            .await,
        Code::InvalidArgument,
        &["session_id"],
    );

    let revoked = server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            session_id: jti,
            ..Default::default()
        })
        .await
        .expect("RevokeSession by jti")
        .into_inner();
    assert_eq!(revoked.revoked, 1);
    let whoami = proto::GetCallerIdentityRequest {};
    assert_status(
        server.sts_as(&dev).get_caller_identity(whoami).await,
        Code::Unauthenticated,
        &["revoked"],
    );
    assert_status(
        server
            .tokens_as(&admin)
            .authorize(request(&dev, "s3:GetObject", "*", &[]))
            .await,
        Code::InvalidArgument,
        &["session_token"],
    );
    // The user's other session is untouched.
    server
        .sts_as(&dev2)
        .get_caller_identity(whoami)
        .await
        .expect("other session still valid");

    // Everything issued to dev until now.
    server.advance(Duration::from_secs(5));
    server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            principal_arn: arn("user", "dev"),
            ..Default::default()
        })
        .await
        .expect("RevokeSession by principal");
    assert_status(
        server.sts_as(&dev2).get_caller_identity(whoami).await,
        Code::Unauthenticated,
        &["revoked"],
    );
    // Sessions issued afterwards are fine (iat has whole-second resolution).
    server.advance(Duration::from_secs(1));
    let fresh = server
        .login("dev", "dev-password-1", None)
        .await
        .unwrap()
        .session_token;
    server
        .sts_as(&fresh)
        .get_caller_identity(whoami)
        .await
        .expect("session issued after the revocation");
    // The admin was not affected.
    server
        .sts_as(&admin)
        .get_caller_identity(whoami)
        .await
        .expect("admin unaffected");
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let old_kid = jwt_header(&admin)["kid"].as_str().unwrap().to_string();
    let mut keys = server.keys_as(&admin);
    let before = keys
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("ListSigningKeys")
        .into_inner()
        .keys;
    let state_of = |keys: &[proto::SigningKey], kid: &str| {
        keys.iter()
            .find(|k| k.kid == kid)
            .map(|k| k.state.clone())
            .unwrap_or_default()
    };
    assert_eq!(state_of(&before, &old_kid), "active");
    let pending: Vec<_> = before.iter().filter(|k| k.state == "pending").collect();
    assert_eq!(pending.len(), 1, "{before:?}");
    let published_kid = pending[0].kid.clone();
    // The pending key is already in the JWKS before it signs anything.
    let jwks_kids = |json: &str| -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, body) = http_get(server.addr, "/.well-known/jwks.json").await;
    assert!(jwks_kids(&body).contains(&published_kid), "{body}");

    server.advance(Duration::from_secs(60));
    let rotated = keys
        .rotate_signing_key(proto::RotateSigningKeyRequest {})
        .await
        .expect("RotateSigningKey")
        .into_inner()
        .key
        .unwrap();
    assert_eq!(
        rotated.kid, published_kid,
        "the published key becomes active"
    );
    assert_eq!(rotated.state, "active");
    assert_ne!(rotated.kid, old_kid);

    // A token minted before still works...
    let me = server
        .sts_as(&admin)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("old token after rotation")
        .into_inner();
    assert_eq!(me.arn, arn("user", ADMIN));
    // ...new tokens carry the new kid...
    let fresh = server.admin_login().await;
    assert_eq!(jwt_header(&fresh)["kid"], rotated.kid.as_str());
    // ...and the JWKS holds the retired, the active and the next key.
    let after = keys
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(state_of(&after, &old_kid), "retired");
    assert_eq!(state_of(&after, &rotated.kid), "active");
    let next: Vec<_> = after.iter().filter(|k| k.state == "pending").collect();
    assert_eq!(next.len(), 1, "{after:?}");
    let retired = after.iter().find(|k| k.kid == old_kid).unwrap();
    assert!(timestamp_secs(&retired.purge_after) > server.now_secs() + 43_200);
    let (_, body) = http_get(server.addr, "/.well-known/jwks.json").await;
    let kids = jwks_kids(&body);
    for kid in [&old_kid, &rotated.kid, &next[0].kid] {
        assert!(kids.contains(kid), "{kid} missing from {body}");
    }
    assert_eq!(kids.len(), 3, "{body}");

    // Rotation needs the right.
    let dev = dev_with_policy(&server, &fresh, allow(&["s3:*"], &["*"])).await;
    assert_status(
        server
            .keys_as(&dev)
            .rotate_signing_key(proto::RotateSigningKeyRequest {})
            .await,
        Code::PermissionDenied,
        &["stint:RotateSigningKey"],
    );
}
