//! Attacks on STS and the token service, each performed against the real server and
//! refused (issue 9, items 1–7 and 11): revocation with several targets or an older
//! cutoff, session tags and source identity without permission, a must-change-password
//! session escaping through AssumeRole, sessions of a deleted-and-recreated principal,
//! role sessions outliving the revoked session they came from, oversized requests, and
//! `aws:SecureTransport` claimed over plain TCP.

use std::time::Duration;

use serde_json::json;
use tonic::Code;

use stint::proto::{self, ContextEntry, Decision};

use crate::common::*;

const WHOAMI: proto::GetCallerIdentityRequest = proto::GetCallerIdentityRequest {};

fn jti(token: &str) -> String {
    jwt_claims(token)["jti"].as_str().unwrap().to_string()
}

fn revoke(session_id: &str, principal_arn: &str, role_arn: &str) -> proto::RevokeSessionRequest {
    proto::RevokeSessionRequest {
        session_id: session_id.into(),
        principal_arn: principal_arn.into(),
        role_arn: role_arn.into(),
        issued_before: None,
    }
}

const DEV_PASSWORD: &str = "dev-password-1";

/// A server and its admin's token, with the user `dev` (password [`DEV_PASSWORD`], no
/// policies).
async fn server_with_dev() -> (TestServer, String) {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    (server, admin)
}

/// A trust policy statement list letting `principal` do `actions` on the role.
fn trust_actions(principal: &str, actions: &[&str]) -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions
    }]})
    .to_string()
}

async fn assume_ok(server: &TestServer, token: &str, request: proto::AssumeRoleRequest) -> String {
    server
        .sts_as(token)
        .assume_role(request)
        .await
        .expect("AssumeRole")
        .into_inner()
        .credentials
        .unwrap()
        .session_token
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

// ---- #1 RevokeSession: one target, each authorized; one's own needs no policy -------

#[tokio::test]
async fn revoke_session_takes_exactly_one_target() {
    let (server, admin) = server_with_dev().await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let mut tokens = server.tokens_as(&dev);

    // The attack: its own principal (allowed) smuggling in the admin's session and a role.
    for (session_id, principal_arn, role_arn, named) in [
        (
            jti(&admin),
            arn("user", "dev"),
            String::new(),
            "session_id and principal_arn",
        ),
        (
            String::new(),
            arn("user", "dev"),
            arn("role", "ops"),
            "principal_arn and role_arn",
        ),
        (
            jti(&admin),
            String::new(),
            arn("role", "ops"),
            "session_id and role_arn",
        ),
    ] {
        assert_status(
            tokens
                .revoke_session(revoke(&session_id, &principal_arn, &role_arn))
                .await,
            Code::InvalidArgument,
            &[
                "exactly one of session_id, principal_arn or role_arn",
                named,
            ],
        );
    }
    assert!(
        is_alive(&server, &admin).await,
        "the admin's session survives"
    );
    assert!(is_alive(&server, &dev).await, "nothing was revoked");

    // Someone else's session, alone, is authorized on that session's principal.
    assert_status(
        tokens.revoke_session(revoke(&jti(&admin), "", "")).await,
        Code::PermissionDenied,
        &["stint:RevokeSession", &arn("user", ADMIN)],
    );
    assert!(is_alive(&server, &admin).await);

    // Its own session and its own principal need no policy (`stint logout`).
    let other = server.session("dev", DEV_PASSWORD).await;
    tokens
        .revoke_session(revoke(&jti(&dev), "", ""))
        .await
        .expect("a session revokes itself");
    assert!(!is_alive(&server, &dev).await);
    assert!(is_alive(&server, &other).await);
    server
        .tokens_as(&other)
        .revoke_session(revoke("", &arn("user", "dev"), ""))
        .await
        .expect("a user revokes everything issued to itself");
    assert!(!is_alive(&server, &other).await);
    assert!(is_alive(&server, &admin).await);
}

// ---- #2 a cutoff never goes down; #14 revocation and its event commit together -------

#[tokio::test]
async fn a_later_revocation_cannot_lower_the_cutoff() {
    let (server, admin) = server_with_dev().await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    server.advance(Duration::from_secs(5));
    let mut tokens = server.tokens_as(&admin);
    tokens
        .revoke_session(revoke("", &arn("user", "dev"), ""))
        .await
        .expect("revoke everything issued to dev until now");
    assert!(!is_alive(&server, &dev).await);

    // The attack: the same target with a cutoff an hour back would un-revoke dev's session.
    let mut older = revoke("", &arn("user", "dev"), "");
    older.issued_before = Some(prost_types::Timestamp {
        seconds: server.now_secs() - 3600,
        nanos: 0,
    });
    tokens
        .revoke_session(older)
        .await
        .expect("accepted, but kept at the later cutoff");
    assert!(!is_alive(&server, &dev).await, "the cutoff did not go back");

    // Both revocations are in the audit log (committed with their writes).
    let events = server
        .audit_as(&admin)
        .list_events(proto::ListEventsRequest {
            event_name: "stint:RevokeSession".into(),
            max_results: 50,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events;
    let allowed = events.iter().filter(|e| e.outcome == "Allow").count();
    assert_eq!(allowed, 2, "{events:?}");
}

// ---- #3 session tags and source identity need their own permission -------------------

#[tokio::test]
async fn session_tags_and_source_identity_need_permission_in_the_trust_policy() {
    let (server, admin) = server_with_dev().await;
    server
        .create_role(
            &admin,
            "abac",
            trust_actions(&arn("user", "dev"), &["sts:AssumeRole"]),
        )
        .await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let tagged = proto::AssumeRoleRequest {
        tags: vec![tag("team", "red")],
        ..assume("abac", "s1")
    };
    let sourced = proto::AssumeRoleRequest {
        source_identity: "alice".into(),
        ..assume("abac", "s2")
    };

    // AWS User Guide, "Passing session tags in AWS STS": the trust policy must allow
    // sts:TagSession. "Monitor and control actions taken with assumed roles": setting a
    // source identity needs sts:SetSourceIdentity.
    assert_status(
        server.sts_as(&dev).assume_role(tagged.clone()).await,
        Code::PermissionDenied,
        &["sts:TagSession"],
    );
    assert_status(
        server.sts_as(&dev).assume_role(sourced.clone()).await,
        Code::PermissionDenied,
        &["sts:SetSourceIdentity"],
    );
    // Plain AssumeRole still works.
    assume_ok(&server, &dev, assume("abac", "s0")).await;

    // A TagSession allowed only for team=blue: team=red is still refused.
    let blue_only = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": arn("user", "dev")}, "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"AWS": arn("user", "dev")}, "Action": "sts:TagSession",
         "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"},
                       "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}}}
    ]})
    .to_string();
    let mut iam = server.iam_as(&admin);
    iam.update_assume_role_policy(proto::UpdateAssumeRolePolicyRequest {
        role_name: "abac".into(),
        policy_document: blue_only,
    })
    .await
    .expect("UpdateAssumeRolePolicy");
    assert_status(
        server.sts_as(&dev).assume_role(tagged.clone()).await,
        Code::PermissionDenied,
        &["sts:TagSession"],
    );

    iam.update_assume_role_policy(proto::UpdateAssumeRolePolicyRequest {
        role_name: "abac".into(),
        policy_document: trust_actions(
            &arn("user", "dev"),
            &["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        ),
    })
    .await
    .expect("UpdateAssumeRolePolicy");
    let token = assume_ok(&server, &dev, tagged).await;
    assert_eq!(jwt_claims(&token)["stint"]["tags"]["team"], "red");
    let token = assume_ok(&server, &dev, sourced).await;
    assert_eq!(jwt_claims(&token)["stint"]["source_identity"], "alice");
}

#[tokio::test]
async fn an_account_trust_also_needs_the_callers_tag_session_allow() {
    let (server, admin) = server_with_dev().await;
    // The trust names the account only: the caller's own policies must allow too.
    let root = format!("arn:stint:iam::{ACCOUNT}:root");
    server
        .create_role(
            &admin,
            "acct",
            trust_actions(&root, &["sts:AssumeRole", "sts:TagSession"]),
        )
        .await;
    let assume_acct = allow(&["sts:AssumeRole"], &[&arn("role", "acct")]);
    server
        .put_user_policy(&admin, "dev", "assume", &assume_acct)
        .await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let tagged = proto::AssumeRoleRequest {
        tags: vec![tag("team", "red")],
        ..assume("acct", "s1")
    };
    assert_status(
        server.sts_as(&dev).assume_role(tagged.clone()).await,
        Code::PermissionDenied,
        &["sts:TagSession"],
    );
    let assume_and_tag = allow(
        &["sts:AssumeRole", "sts:TagSession"],
        &[&arn("role", "acct")],
    );
    server
        .put_user_policy(&admin, "dev", "assume", &assume_and_tag)
        .await;
    assume_ok(&server, &dev, tagged).await;
}

// ---- #4 STS condition keys ------------------------------------------------------------

#[tokio::test]
async fn trust_conditions_see_session_name_external_id_and_source_identity() {
    let (server, admin) = server_with_dev().await;
    let policy = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": arn("user", "dev")},
        "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"],
        "Condition": {"StringEquals": {
            "sts:RoleSessionName": "dev", "sts:ExternalId": "ext-1", "sts:SourceIdentity": "dev"
        }}
    }]})
    .to_string();
    server.create_role(&admin, "keyed", policy).await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let good = proto::AssumeRoleRequest {
        external_id: "ext-1".into(),
        source_identity: "dev".into(),
        ..assume("keyed", "dev")
    };
    for bad in [
        proto::AssumeRoleRequest {
            role_session_name: "other".into(),
            ..good.clone()
        },
        proto::AssumeRoleRequest {
            external_id: "ext-2".into(),
            ..good.clone()
        },
        proto::AssumeRoleRequest {
            source_identity: "mallory".into(),
            ..good.clone()
        },
    ] {
        assert_status(
            server.sts_as(&dev).assume_role(bad).await,
            Code::PermissionDenied,
            &["sts:AssumeRole"],
        );
    }
    assume_ok(&server, &dev, good).await;
}

/// A self-signed certificate for `localhost` (EC P-256, valid until 2126), for the TLS
/// test only: it protects nothing.
const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBuTCCAV+gAwIBAgIUein6XHKnaASVbD//Vnlvf6bnj+AwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMTEzMTI0MFoYDzIxMjYxMTA3
MTMxMjQwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARhDRtGCZJjGO+MHm55uoKNTOSB/wXJx1c0jgQvCu5/E6rn3JBCucAU
UHyeHJ7VoUXGydK8EJpsHstvwAYbBwoTo4GMMIGJMB0GA1UdDgQWBBRSjY4S/DAt
DYOLTuJrY4n01f7CETAfBgNVHSMEGDAWgBRSjY4S/DAtDYOLTuJrY4n01f7CETAU
BgNVHREEDTALgglsb2NhbGhvc3QwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMC
B4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDSAAwRQIgN7eY1Di4
QLj0E9G1b9kReQYVGU8RspaNvI8s9Spj9SACIQCssujviQGF0ruJ5M+PpI7XPwH6
9Im9CgbWHfxFigysbw==
-----END CERTIFICATE-----
";
const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYDVBzz5xPfjBpGxp
OZrEjui5GcyDOhAuVu23nqVvwm2hRANCAARhDRtGCZJjGO+MHm55uoKNTOSB/wXJ
x1c0jgQvCu5/E6rn3JBCucAUUHyeHJ7VoUXGydK8EJpsHstvwAYbBwoT
-----END PRIVATE KEY-----
";

/// A policy that allows `s3:GetObject` only over TLS (AWS's `aws:SecureTransport`).
fn tls_only_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
        "Condition": {"Bool": {"aws:SecureTransport": "true"}}
    }]})
    .to_string()
}

/// May `subject` read an object?
fn get_object(subject: String) -> proto::AuthorizeRequest {
    proto::AuthorizeRequest {
        session_token: subject,
        action: "s3:GetObject".into(),
        resource: "arn:aws:s3:::b/k".into(),
        context: vec![],
    }
}

/// Logs in as admin, creates `dev` with the TLS-only policy, and asks Authorize whether
/// dev may read an object.
async fn secure_transport_decision(server: &TestServer) -> Decision {
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    server
        .put_user_policy(&admin, "dev", "tls", &tls_only_policy())
        .await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    server
        .tokens_as(&admin)
        .authorize(get_object(dev))
        .await
        .expect("Authorize")
        .into_inner()
        .decision()
}

#[tokio::test]
async fn secure_transport_is_true_over_tls_only() {
    // Over plain TCP (the usual test server): false, so the TLS-only policy denies.
    let plain = TestServer::start().await;
    let decision = secure_transport_decision(&plain).await;
    assert_eq!(decision, Decision::ImplicitDeny);

    // The same daemon over TLS: true, so it allows.
    let tls = TestServer::builder().tls(TEST_CERT, TEST_KEY).start().await;
    let decision = secure_transport_decision(&tls).await;
    assert_eq!(decision, Decision::Allow);
    tls.stop().await.expect("clean TLS shutdown");
}

// ---- #5 a must-change-password session can do nothing else ---------------------------

#[tokio::test]
async fn a_must_change_password_session_cannot_assume_a_role() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    iam.create_user(proto::CreateUserRequest {
        user_name: "dev".into(),
        ..Default::default()
    })
    .await
    .expect("CreateUser");
    iam.create_login_profile(proto::CreateLoginProfileRequest {
        user_name: "dev".into(),
        password: DEV_PASSWORD.into(),
        password_reset_required: true,
    })
    .await
    .expect("CreateLoginProfile");
    // The trust policy names the user directly and the user has every right: only the
    // restriction stands in the way.
    server
        .create_role(&admin, "ops", trust(&arn("user", "dev"), None))
        .await;
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "dev".into(),
        policy_arn: builtin("AdministratorAccess"),
    })
    .await
    .expect("AttachUserPolicy");
    let restricted = server.session("dev", DEV_PASSWORD).await;

    assert_status(
        server
            .sts_as(&restricted)
            .assume_role(assume("ops", "escape"))
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole", "only change its password"],
    );
    assert_status(
        server
            .iam_as(&restricted)
            .create_access_key(proto::CreateAccessKeyRequest {
                user_name: "dev".into(),
            })
            .await,
        Code::PermissionDenied,
        &["iam:CreateAccessKey"],
    );
    let decision = server
        .tokens_as(&admin)
        .authorize(proto::AuthorizeRequest {
            session_token: restricted.clone(),
            action: "s3:GetObject".into(),
            resource: "*".into(),
            context: vec![],
        })
        .await
        .expect("Authorize")
        .into_inner();
    assert_eq!(decision.decision(), Decision::ImplicitDeny);
    assert!(decision.reason.contains("only change its password"));
    // What it is for still works.
    server
        .sts_as(&restricted)
        .get_caller_identity(WHOAMI)
        .await
        .expect("GetCallerIdentity");
}

// ---- #6 a recreated principal does not inherit old sessions --------------------------

#[tokio::test]
async fn sessions_die_with_their_principal_even_if_a_namesake_is_created() {
    let (server, admin) = server_with_dev().await;
    server
        .create_role(&admin, "ops", trust(&arn("user", "dev"), None))
        .await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let role_session = assume_ok(&server, &dev, assume("ops", "s1")).await;
    let user_id = jwt_claims(&dev)["stint"]["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(user_id.starts_with("AIDA"), "{user_id}");
    let role_id = jwt_claims(&role_session)["stint"]["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        role_id.starts_with("AROA") && role_id.ends_with(":s1"),
        "{role_id}"
    );

    // Delete dev and create a namesake: neither the old user session nor the role
    // session dev assumed may come back as (or on behalf of) the new dev.
    let mut iam = server.iam_as(&admin);
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
    assert_status(
        server.sts_as(&dev).get_caller_identity(WHOAMI).await,
        Code::Unauthenticated,
        &["no longer exists"],
    );
    assert_status(
        server
            .sts_as(&role_session)
            .get_caller_identity(WHOAMI)
            .await,
        Code::Unauthenticated,
        &["created again"],
    );
    let introspected = server
        .tokens_as(&admin)
        .introspect(proto::IntrospectRequest { token: dev })
        .await
        .expect("Introspect")
        .into_inner();
    assert!(!introspected.active);

    // Same for the role: a new ops does not take the old ops's sessions.
    let fresh = server.session("dev", DEV_PASSWORD).await;
    let old_ops = assume_ok(&server, &fresh, assume("ops", "s2")).await;
    iam.delete_role(proto::DeleteRoleRequest {
        role_name: "ops".into(),
    })
    .await
    .expect("DeleteRole");
    server
        .create_role(&admin, "ops", trust(&arn("user", "dev"), None))
        .await;
    assert_status(
        server.sts_as(&old_ops).get_caller_identity(WHOAMI).await,
        Code::Unauthenticated,
        &["role no longer exists"],
    );
    let new_ops = assume_ok(&server, &fresh, assume("ops", "s3")).await;
    assert!(is_alive(&server, &new_ops).await);
}

// ---- #7 a revoked ancestor revokes its descendants -----------------------------------

#[tokio::test]
async fn revoking_a_session_revokes_the_role_sessions_assumed_from_it() {
    let (server, admin) = server_with_dev().await;
    server
        .create_role(&admin, "a", trust(&arn("user", "dev"), None))
        .await;
    server
        .create_role(&admin, "b", trust(&arn("role", "a"), None))
        .await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let in_a = assume_ok(&server, &dev, assume("a", "s1")).await;
    let in_b = assume_ok(&server, &in_a, assume("b", "s1")).await;
    let other = server.session("dev", DEV_PASSWORD).await;
    let other_a = assume_ok(&server, &other, assume("a", "t1")).await;

    // Vault-like: revoking the user session (here by itself: `stint logout`) takes the
    // role sessions assumed from it, directly or by chaining, along.
    server
        .tokens_as(&dev)
        .revoke_session(revoke(&jti(&dev), "", ""))
        .await
        .expect("logout");
    assert!(!is_alive(&server, &in_a).await);
    assert!(!is_alive(&server, &in_b).await);
    assert!(
        is_alive(&server, &other_a).await,
        "another session's child lives"
    );
    let decision = server
        .tokens_as(&admin)
        .authorize(proto::AuthorizeRequest {
            session_token: in_b.clone(),
            action: "s3:GetObject".into(),
            resource: "*".into(),
            context: vec![],
        })
        .await;
    assert_status(decision, Code::InvalidArgument, &["revoked"]);

    // Revoking role a's sessions also ends the b sessions chained from them.
    let other_b = assume_ok(&server, &other_a, assume("b", "t1")).await;
    server.advance(Duration::from_secs(1));
    server
        .tokens_as(&admin)
        .revoke_session(revoke("", "", &arn("role", "a")))
        .await
        .expect("revoke role a");
    assert!(!is_alive(&server, &other_b).await);
    assert!(
        is_alive(&server, &other).await,
        "the parent user session lives"
    );
}

#[tokio::test]
async fn a_role_chain_is_bounded() {
    let (server, admin) = server_with_dev().await;
    let policy = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [arn("user", "dev"), arn("role", "loop")]},
        "Action": "sts:AssumeRole"
    }]})
    .to_string();
    server.create_role(&admin, "loop", policy).await;
    let mut token = server.session("dev", DEV_PASSWORD).await;
    // The user session and five role sessions: each new one keeps all its ancestors.
    for hop in 0..5 {
        token = assume_ok(&server, &token, assume("loop", &format!("hop{hop}"))).await;
    }
    assert_status(
        server
            .sts_as(&token)
            .assume_role(assume("loop", "hop5"))
            .await,
        Code::PermissionDenied,
        &["role chain too long"],
    );
}

// ---- #11 bounded requests -----------------------------------------------------------

#[tokio::test]
async fn oversized_requests_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let long = |n: usize| "a".repeat(n);
    let mut tokens = server.tokens_as(&admin);
    let entry = |key: String, values: Vec<String>| ContextEntry { key, values };
    let base = proto::AuthorizeRequest {
        session_token: admin.clone(),
        action: "s3:GetObject".into(),
        resource: "*".into(),
        context: vec![],
    };
    let cases = [
        (
            proto::AuthorizeRequest {
                action: format!("s3:{}", long(2_048)),
                ..base.clone()
            },
            "action",
        ),
        (
            proto::AuthorizeRequest {
                resource: format!("*{}b*", long(100_000)),
                ..base.clone()
            },
            "resource",
        ),
        (
            proto::AuthorizeRequest {
                context: (0..65)
                    .map(|i| entry(format!("k{i}"), vec!["v".into()]))
                    .collect(),
                ..base.clone()
            },
            "context",
        ),
        (
            proto::AuthorizeRequest {
                context: vec![entry(long(129), vec!["v".into()])],
                ..base.clone()
            },
            "context.key",
        ),
        (
            proto::AuthorizeRequest {
                context: vec![entry("k".into(), vec!["v".into(); 51])],
                ..base.clone()
            },
            "context.values",
        ),
        (
            proto::AuthorizeRequest {
                context: vec![entry("k".into(), vec![long(2_049)])],
                ..base.clone()
            },
            "context.values",
        ),
    ];
    for (request, field) in cases {
        assert_status(
            tokens.authorize(request).await,
            Code::InvalidArgument,
            &[field, "at most"],
        );
    }
    // At the limits it is answered.
    tokens
        .authorize(proto::AuthorizeRequest {
            resource: long(2_048),
            context: (0..64)
                .map(|i| entry(format!("k{i}"), vec![long(2_048); 2]))
                .collect(),
            ..base.clone()
        })
        .await
        .expect("Authorize at the limits");

    let mut sts = server.sts_as(&admin);
    let cases = [
        (
            proto::AssumeRoleRequest {
                role_arn: format!("arn:stint:iam::{ACCOUNT}:role/{}", long(100_000)),
                ..assume("x", "s1")
            },
            "role_arn",
        ),
        (
            proto::AssumeRoleRequest {
                tags: vec![tag(&long(100_000), "v")],
                ..assume("x", "s1")
            },
            "tags",
        ),
        (
            proto::AssumeRoleRequest {
                policy_arns: vec![long(3_000)],
                ..assume("x", "s1")
            },
            "policy_arns",
        ),
        (
            proto::AssumeRoleRequest {
                transitive_tag_keys: vec!["k".into(); 51],
                ..assume("x", "s1")
            },
            "transitive_tag_keys",
        ),
    ];
    for (request, field) in cases {
        let status = assert_status(
            sts.assume_role(request).await,
            Code::InvalidArgument,
            &[field],
        );
        assert!(status.message().len() < 200, "{}", status.message());
    }
    // None of it reached the audit log.
    let events = server
        .audit_as(&admin)
        .list_events(proto::ListEventsRequest {
            event_name: "sts:AssumeRole".into(),
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events;
    assert!(events.is_empty(), "{events:?}");
}

// ---- #14 a revocation and its audit event land together or not at all ---------------

#[tokio::test]
async fn a_revocation_the_store_refuses_changes_nothing() {
    let (server, store) = TestServer::over_faults(5, 60).await;
    let admin = server.admin_login().await;
    let mut tokens = server.tokens_as(&admin);
    let mut whoami = server.sts_as(&admin);

    store.refuse_all(true);
    assert_status(
        tokens.revoke_session(revoke(&jti(&admin), "", "")).await,
        Code::Unavailable,
        &["audit"],
    );
    store.refuse_all(false);
    // Neither the revocation nor its event was written: the session still works, and
    // once the store takes writes again the same request succeeds and is audited.
    whoami
        .get_caller_identity(WHOAMI)
        .await
        .expect("the refused revocation did not land");
    let revoked = tokens
        .revoke_session(revoke(&jti(&admin), "", ""))
        .await
        .expect("RevokeSession once the store takes writes")
        .into_inner()
        .revoked;
    assert_eq!(revoked, 1);
    assert_status(
        whoami.get_caller_identity(WHOAMI).await,
        Code::Unauthenticated,
        &["revoked"],
    );
}

/// Behind a TCP load balancer with TLS end to end (the PROXY header first, then the TLS
/// handshake, as from an NLB or HAProxy in TCP mode): conditions see both facts, TLS
/// (`aws:SecureTransport`) and the client the header names (`aws:SourceIp`).
#[tokio::test]
async fn behind_a_proxy_conditions_see_the_client_and_its_tls() {
    let server = TestServer::builder()
        .tls(TEST_CERT, TEST_KEY)
        .config(|c| c.proxy_protocol_from = vec!["127.0.0.99".into()])
        .start()
        .await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", DEV_PASSWORD)
        .await;
    let office_over_tls = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
        "Condition": {
            "Bool": {"aws:SecureTransport": "true"},
            "IpAddress": {"aws:SourceIp": "203.0.113.0/24"}
        }
    }]});
    server
        .put_user_policy(&admin, "dev", "office", &office_over_tls.to_string())
        .await;
    let dev = server.session("dev", DEV_PASSWORD).await;
    let decide = |client: &'static str| {
        let (server, admin, dev) = (&server, admin.clone(), dev.clone());
        async move {
            let channel = server
                .proxied_channel(99, ProxyHeader::V2(client))
                .await
                .expect("TLS through the proxy");
            stint::proto::tokens_client::TokensClient::with_interceptor(
                channel,
                Bearer::new(&admin),
            )
            .authorize(get_object(dev))
            .await
            .expect("Authorize")
            .into_inner()
            .decision()
        }
    };
    assert_eq!(decide("203.0.113.7:40000").await, Decision::Allow);
    assert_eq!(decide("198.51.100.1:40000").await, Decision::ImplicitDeny);
    server.stop().await.expect("clean TLS shutdown");
}
