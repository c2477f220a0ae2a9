//! Issue 5, the credential lifecycle: session policies, session tags and source identity
//! through role chains, permission boundaries, key rotation and purge, the sweeper,
//! revocation by role, and access review.

use std::time::Duration;

use serde_json::json;
use tonic::Code;

use stint::audit::chain;
use stint::proto::{self, Decision};

use crate::common::*;

/// The test config, with the background sweeper out of the way: these tests call
/// `sweep()` and `purge_expired_keys()` themselves and count what they removed.
fn manual_sweeps(config: &mut stint::config::Config) {
    config.sweeper.interval_seconds = 7 * 86_400;
}

async fn start() -> TestServer {
    TestServer::start_with(manual_sweeps).await
}

/// `Authorize` with the admin's token as bearer, so a dead `token` shows in the answer.
async fn authorize(
    server: &TestServer,
    bearer: &str,
    token: &str,
    action: &str,
    resource: &str,
) -> Result<proto::AuthorizeResponse, tonic::Status> {
    server
        .tokens_as(bearer)
        .authorize(proto::AuthorizeRequest {
            session_token: token.into(),
            action: action.into(),
            resource: resource.into(),
            context: vec![],
        })
        .await
        .map(|r| r.into_inner())
}

async fn decide(server: &TestServer, token: &str, action: &str, resource: &str) -> Decision {
    authorize(server, token, token, action, resource)
        .await
        .unwrap_or_else(|s| panic!("Authorize {action} {resource}: {s}"))
        .decision()
}

async fn create_role(server: &TestServer, admin: &str, role: &str, trusted: &str, max: i32) {
    server
        .iam_as(admin)
        .create_role(proto::CreateRoleRequest {
            role_name: role.into(),
            // Tags and source identity need their own trust (AWS: sts:TagSession,
            // sts:SetSourceIdentity).
            assume_role_policy_document: json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": trusted},
                "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}]})
            .to_string(),
            max_session_duration: max,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("CreateRole {role}: {s}"));
}

async fn put_role_policy(server: &TestServer, admin: &str, role: &str, document: String) {
    server
        .put_role_policy(admin, role, &format!("{role}-inline"), &document)
        .await;
}

async fn create_policy(server: &TestServer, admin: &str, name: &str, document: String) -> String {
    server
        .iam_as(admin)
        .create_policy(proto::CreatePolicyRequest {
            policy_name: name.into(),
            policy_document: document,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("CreatePolicy {name}: {s}"))
        .into_inner()
        .policy
        .unwrap()
        .arn
}

/// A password-only user and their session token.
async fn user_session(server: &TestServer, admin: &str, user: &str) -> String {
    let password = format!("{user}-password-1");
    server
        .create_user_with_password(admin, user, &password)
        .await;
    server.session(user, &password).await
}

async fn caller_identity(server: &TestServer, token: &str) -> Result<String, tonic::Status> {
    server
        .sts_as(token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .map(|r| r.into_inner().arn)
}

// ---- 1. session policies ----------------------------------------------------------------

#[tokio::test]
async fn session_policies_intersect_with_the_role() {
    let server = start().await;
    let admin = server.admin_login().await;
    let dev = user_session(&server, &admin, "dev").await;
    create_role(&server, &admin, "data", &arn("user", "dev"), 0).await;
    put_role_policy(
        &server,
        &admin,
        "data",
        allow(&["s3:*"], &["arn:aws:s3:::data/*"]),
    )
    .await;
    let get_only = create_policy(
        &server,
        &admin,
        "get-only",
        allow(&["s3:GetObject"], &["*"]),
    )
    .await;
    let object = "arn:aws:s3:::data/report.csv";

    // Without a session policy the role's s3:* applies.
    let full = server
        .sts_as(&dev)
        .assume_role(assume("data", "full"))
        .await
        .expect("AssumeRole")
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    assert_eq!(
        decide(&server, &full, "s3:PutObject", object).await,
        Decision::Allow
    );

    let inline = proto::AssumeRoleRequest {
        policy: allow(&["s3:GetObject"], &["*"]),
        ..assume("data", "inline")
    };
    let managed = proto::AssumeRoleRequest {
        policy_arns: vec![get_only.clone()],
        ..assume("data", "managed")
    };
    for request in [inline, managed] {
        let what = request.role_session_name.clone();
        let token = server
            .sts_as(&dev)
            .assume_role(request)
            .await
            .unwrap_or_else(|s| panic!("AssumeRole {what}: {s}"))
            .into_inner()
            .credentials
            .unwrap()
            .session_token;
        let get = authorize(&server, &token, &token, "s3:GetObject", object)
            .await
            .unwrap();
        assert_eq!(get.decision(), Decision::Allow, "{what}: {get:?}");
        assert!(get.reason.contains("session policy"), "{what}: {get:?}");
        let put = authorize(&server, &token, &token, "s3:PutObject", object)
            .await
            .unwrap();
        assert_eq!(put.decision(), Decision::ImplicitDeny, "{what}: {put:?}");
        assert!(put.reason.contains("session policy"), "{what}: {put:?}");
        assert!(put.matched_statements.is_empty(), "{what}: {put:?}");
        // The session policy cannot widen the role: outside data/* stays denied.
        assert_eq!(
            decide(&server, &token, "s3:GetObject", "arn:aws:s3:::other/x").await,
            Decision::ImplicitDeny,
            "{what}"
        );
    }

    // Limits: 2048 characters of inline policy, 10 managed ones.
    let mut long = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]
    });
    long["Statement"][0]["Sid"] = json!("x".repeat(2100));
    let long = long.to_string();
    assert!(long.len() > 2048);
    assert_status(
        server
            .sts_as(&dev)
            .assume_role(proto::AssumeRoleRequest {
                policy: long,
                ..assume("data", "long")
            })
            .await,
        Code::InvalidArgument,
        &["policy", "2048"],
    );
    assert_status(
        server
            .sts_as(&dev)
            .assume_role(proto::AssumeRoleRequest {
                policy_arns: vec![get_only; 11],
                ..assume("data", "many")
            })
            .await,
        Code::InvalidArgument,
        &["policy_arns"],
    );
}

// ---- 2. tags and source identity through a chain ----------------------------------------

fn project_x_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ProjectX",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/project": "x"}}
        }]
    })
    .to_string()
}

#[tokio::test]
async fn tags_and_source_identity_follow_a_role_chain() {
    let server = start().await;
    let admin = server.admin_login().await;
    let alice = user_session(&server, &admin, "alice").await;
    create_role(&server, &admin, "a", &arn("user", "alice"), 0).await;
    create_role(&server, &admin, "b", &arn("role", "a"), 7200).await;
    for role in ["a", "b"] {
        put_role_policy(&server, &admin, role, project_x_policy()).await;
    }
    let mut sts = server.sts_as(&alice);
    let first = sts
        .assume_role(proto::AssumeRoleRequest {
            tags: vec![tag("project", "x"), tag("team", "y")],
            transitive_tag_keys: vec!["project".into()],
            source_identity: "alice".into(),
            ..assume("a", "first")
        })
        .await
        .expect("AssumeRole a")
        .into_inner();
    assert_eq!(first.source_identity, "alice");
    let a_token = first.credentials.unwrap().session_token;
    let claims = jwt_claims(&a_token);
    assert_eq!(
        claims["stint"]["tags"],
        json!({"project": "x", "team": "y"}),
        "{claims}"
    );
    assert_eq!(claims["stint"]["source_identity"], "alice", "{claims}");
    assert_eq!(
        decide(&server, &a_token, "s3:GetObject", "arn:aws:s3:::p/x").await,
        Decision::Allow
    );
    // The condition really reads the tag: project=z gets nothing.
    let other = sts
        .assume_role(proto::AssumeRoleRequest {
            tags: vec![tag("project", "z")],
            ..assume("a", "other")
        })
        .await
        .expect("AssumeRole a with project z")
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    assert_eq!(
        decide(&server, &other, "s3:GetObject", "arn:aws:s3:::p/x").await,
        Decision::ImplicitDeny
    );

    // Chain a -> b: the transitive tag and the source identity carry over, `team` not.
    let mut from_a = server.sts_as(&a_token);
    let second = from_a
        .assume_role(assume("b", "second"))
        .await
        .expect("AssumeRole b from a")
        .into_inner();
    assert_eq!(second.source_identity, "alice");
    let b_token = second.credentials.unwrap().session_token;
    let claims = jwt_claims(&b_token);
    assert_eq!(claims["stint"]["tags"], json!({"project": "x"}), "{claims}");
    assert_eq!(claims["stint"]["source_identity"], "alice", "{claims}");
    assert_eq!(claims["stint"]["chained"], true, "{claims}");
    assert_eq!(
        decide(&server, &b_token, "s3:GetObject", "arn:aws:s3:::p/x").await,
        Decision::Allow
    );

    // Restating the same source identity is fine; changing it is not.
    from_a
        .assume_role(proto::AssumeRoleRequest {
            source_identity: "alice".into(),
            ..assume("b", "same")
        })
        .await
        .expect("same source identity");
    assert_status(
        from_a
            .assume_role(proto::AssumeRoleRequest {
                source_identity: "mallory".into(),
                ..assume("b", "other")
            })
            .await,
        Code::PermissionDenied,
        &["source identity"],
    );
    for key in ["project", "PROJECT"] {
        assert_status(
            from_a
                .assume_role(proto::AssumeRoleRequest {
                    tags: vec![tag(key, "z")],
                    ..assume("b", "override")
                })
                .await,
            Code::InvalidArgument,
            &["tags", "transitive"],
        );
    }
    // The non-transitive tag may be set afresh.
    from_a
        .assume_role(proto::AssumeRoleRequest {
            tags: vec![tag("team", "z")],
            ..assume("b", "team")
        })
        .await
        .expect("setting a non-transitive tag");

    // Role b allows 2 h, but a chained session gets at most 1 h.
    assert_status(
        from_a
            .assume_role(proto::AssumeRoleRequest {
                duration_seconds: 3601,
                ..assume("b", "long")
            })
            .await,
        Code::InvalidArgument,
        &["duration_seconds", "3600"],
    );
    let hour = from_a
        .assume_role(proto::AssumeRoleRequest {
            duration_seconds: 3600,
            ..assume("b", "hour")
        })
        .await
        .expect("a chained hour")
        .into_inner()
        .credentials
        .unwrap();
    assert_eq!(timestamp_secs(&hour.expiration), server.now_secs() + 3600);
}

// ---- 3. permission boundaries -----------------------------------------------------------

#[tokio::test]
async fn permission_boundaries_limit_users_and_roles() {
    let server = start().await;
    let admin = server.admin_login().await;
    let ops = user_session(&server, &admin, "ops").await;
    let mut iam = server.iam_as(&admin);
    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "ops".into(),
        policy_arn: builtin("AdministratorAccess"),
    })
    .await
    .expect("AttachUserPolicy");
    let s3_only = create_policy(&server, &admin, "s3-only", allow(&["s3:*"], &["*"])).await;
    let object = "arn:aws:s3:::b/k";
    let create = |name: &str| proto::CreateUserRequest {
        user_name: name.into(),
        ..Default::default()
    };

    assert_eq!(
        decide(&server, &ops, "iam:CreateUser", "*").await,
        Decision::Allow
    );
    iam.put_user_permissions_boundary(proto::PutUserPermissionsBoundaryRequest {
        user_name: "ops".into(),
        permissions_boundary: s3_only.clone(),
    })
    .await
    .expect("PutUserPermissionsBoundary");

    // The same session is now limited to S3.
    let denied = authorize(&server, &ops, &ops, "iam:CreateUser", &arn("user", "x"))
        .await
        .unwrap();
    assert_eq!(denied.decision(), Decision::ImplicitDeny, "{denied:?}");
    assert!(
        denied.reason.contains("permissions boundary") && denied.reason.contains(&s3_only),
        "{denied:?}"
    );
    assert_eq!(
        decide(&server, &ops, "s3:PutObject", object).await,
        Decision::Allow
    );
    assert_status(
        server.iam_as(&ops).create_user(create("x")).await,
        Code::PermissionDenied,
        &["iam:CreateUser", "permissions boundary"],
    );
    // The boundary also applies to sts:AssumeRole when the trust policy names the user.
    create_role(&server, &admin, "deployer", &arn("user", "ops"), 0).await;
    iam.attach_role_policy(proto::AttachRolePolicyRequest {
        role_name: "deployer".into(),
        policy_arn: builtin("AdministratorAccess"),
    })
    .await
    .expect("AttachRolePolicy");
    assert_status(
        server
            .sts_as(&ops)
            .assume_role(assume("deployer", "deploy"))
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole"],
    );

    iam.delete_user_permissions_boundary(proto::DeleteUserPermissionsBoundaryRequest {
        user_name: "ops".into(),
    })
    .await
    .expect("DeleteUserPermissionsBoundary");
    assert_eq!(
        decide(&server, &ops, "iam:CreateUser", &arn("user", "x")).await,
        Decision::Allow
    );
    server
        .iam_as(&ops)
        .create_user(create("x"))
        .await
        .expect("CreateUser once the boundary is gone");

    // Role sessions: the role's boundary limits its AdministratorAccess.
    iam.put_role_permissions_boundary(proto::PutRolePermissionsBoundaryRequest {
        role_name: "deployer".into(),
        permissions_boundary: s3_only.clone(),
    })
    .await
    .expect("PutRolePermissionsBoundary");
    let deployer = server
        .sts_as(&ops)
        .assume_role(assume("deployer", "deploy"))
        .await
        .expect("AssumeRole deployer")
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    assert_eq!(
        decide(&server, &deployer, "s3:PutObject", object).await,
        Decision::Allow
    );
    let denied = authorize(&server, &deployer, &deployer, "ec2:RunInstances", "*")
        .await
        .unwrap();
    assert_eq!(denied.decision(), Decision::ImplicitDeny, "{denied:?}");
    assert!(denied.reason.contains("permissions boundary"), "{denied:?}");
    assert_status(
        server.iam_as(&deployer).create_user(create("y")).await,
        Code::PermissionDenied,
        &["iam:CreateUser"],
    );
    iam.delete_role_permissions_boundary(proto::DeleteRolePermissionsBoundaryRequest {
        role_name: "deployer".into(),
    })
    .await
    .expect("DeleteRolePermissionsBoundary");
    server
        .iam_as(&deployer)
        .create_user(create("y"))
        .await
        .expect("CreateUser once the role boundary is gone");
}

// ---- 4. rotation and purge --------------------------------------------------------------

fn jwks_kids(json: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(json).expect("JWKS JSON");
    value["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn signing_keys(server: &TestServer, admin: &str) -> Vec<proto::SigningKey> {
    server
        .keys_as(admin)
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("ListSigningKeys")
        .into_inner()
        .keys
}

async fn rotate(server: &TestServer, admin: &str) -> String {
    server
        .keys_as(admin)
        .rotate_signing_key(proto::RotateSigningKeyRequest {})
        .await
        .expect("RotateSigningKey")
        .into_inner()
        .key
        .unwrap()
        .kid
}

#[tokio::test]
async fn retired_keys_verify_until_their_tokens_expire_then_are_purged() {
    let server = TestServer::start_with(|c| {
        manual_sweeps(c);
        // A checkpoint after every flush, so the first key signs some.
        c.audit.checkpoint_every_events = 1;
    })
    .await;
    let admin = server.admin_login().await;
    let first_kid = jwt_header(&admin)["kid"].as_str().unwrap().to_string();
    let admin_exp = jwt_claims(&admin)["exp"].as_i64().unwrap();
    let skew = server.config.tokens.clock_skew_seconds as i64;
    // A few events, so the flusher signs checkpoints with the first key.
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;

    let second_kid = rotate(&server, &admin).await;
    server.advance(Duration::from_secs(3600));
    let admin2 = server.admin_login().await;
    assert_eq!(jwt_header(&admin2)["kid"], second_kid.as_str());
    let third_kid = rotate(&server, &admin2).await;
    assert!(first_kid != second_kid && second_kid != third_kid);

    let keys = signing_keys(&server, &admin2).await;
    let state = |keys: &[proto::SigningKey], kid: &str| {
        keys.iter()
            .find(|k| k.kid == kid)
            .map(|k| k.state.clone())
            .unwrap_or_else(|| "gone".into())
    };
    assert_eq!(state(&keys, &first_kid), "retired");
    assert_eq!(state(&keys, &second_kid), "retired");
    assert_eq!(state(&keys, &third_kid), "active");
    let first_purge_after = timestamp_secs(
        &keys
            .iter()
            .find(|k| k.kid == first_kid)
            .unwrap()
            .purge_after,
    );
    // The retired key outlives every token it could have signed.
    assert!(
        first_purge_after >= admin_exp + skew,
        "purge_after {first_purge_after} < exp {admin_exp} + skew"
    );

    // The first token keeps working until its expiry (plus skew), and not after.
    server.advance(Duration::from_secs(
        (admin_exp - 1 - server.now_secs()) as u64,
    ));
    assert_eq!(
        caller_identity(&server, &admin)
            .await
            .expect("old token before exp"),
        arn("user", ADMIN)
    );
    server.advance(Duration::from_secs((1 + skew) as u64));
    assert_status(
        caller_identity(&server, &admin).await,
        Code::Unauthenticated,
        &[],
    );
    // Nothing is due yet.
    assert_eq!(
        server.broker().purge_expired_keys().await.expect("purge"),
        Vec::<String>::new()
    );
    let (_, body) = http_get(server.addr, "/.well-known/jwks.json").await;
    assert!(jwks_kids(&body).contains(&first_kid), "{body}");

    // Past the first key's purge time (only): it goes, the second stays.
    server.advance(Duration::from_secs(
        (first_purge_after + 1 - server.now_secs()) as u64,
    ));
    assert_eq!(
        server.broker().purge_expired_keys().await.expect("purge"),
        vec![first_kid.clone()]
    );
    let admin3 = server.admin_login().await;
    let keys = signing_keys(&server, &admin3).await;
    assert_eq!(state(&keys, &first_kid), "gone", "{keys:?}");
    assert_eq!(state(&keys, &second_kid), "retired", "{keys:?}");
    let (_, body) = http_get(server.addr, "/.well-known/jwks.json").await;
    let kids = jwks_kids(&body);
    assert!(!kids.contains(&first_kid), "{body}");
    assert!(kids.contains(&second_kid), "{body}");
    let grpc_kids: Vec<String> = server
        .tokens_as(&admin3)
        .get_jwks(proto::GetJwksRequest {})
        .await
        .expect("GetJwks")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(!grpc_kids.contains(&first_kid), "{grpc_kids:?}");

    let rotations = server
        .audit_as(&admin3)
        .list_rotations(proto::ListRotationsRequest::default())
        .await
        .expect("ListRotations")
        .into_inner()
        .events;
    let purges: Vec<_> = rotations
        .iter()
        .filter(|e| e.event_name == "stint:PurgeSigningKey")
        .collect();
    assert_eq!(purges.len(), 1, "{rotations:#?}");
    assert!(purges[0].event_json.contains(&first_kid), "{:?}", purges[0]);
    assert_eq!(
        rotations
            .iter()
            .filter(|e| e.event_name == "stint:RotateSigningKey")
            .count(),
        2,
        "{rotations:#?}"
    );

    // Checkpoints the purged key signed are still there, and still verify.
    let checkpoints = chain::read_checkpoints(server.broker().store().as_ref(), 0).unwrap();
    assert!(
        checkpoints.iter().any(|c| c.kid == first_kid),
        "no checkpoint by {first_kid}: {checkpoints:?}"
    );
    let report = server.verify_chain(&admin3).await;
    assert!(report.intact, "{report:?}");
}

// ---- 5. the sweeper ---------------------------------------------------------------------

#[tokio::test]
async fn sweep_removes_expired_sessions_and_revocations_only() {
    let server = start().await;
    let admin = server.admin_login().await; // 43 200 s
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let server_ref = &server;
    let login = |duration| async move {
        server_ref
            .get_session_token(
                proto::get_session_token_request::Credential::Password(proto::PasswordCredential {
                    user_name: "dev".into(),
                    password: "dev-password-1".into(),
                }),
                None,
                duration,
            )
            .await
            .expect("dev login")
    };
    let short_a = login(900).await;
    let _short_b = login(900).await;
    let hour = login(3600).await;
    server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            session_id: short_a.access_key_id.clone(),
            ..Default::default()
        })
        .await
        .expect("RevokeSession");
    let skew = server.config.tokens.clock_skew_seconds;
    // (sessions, revocations, lockouts) removed by one sweep.
    let sweep = || {
        let report = server.broker().sweep().expect("sweep");
        (report.sessions, report.revocations, report.lockouts)
    };
    assert_eq!(sweep(), (0, 0, 0));

    server.advance(Duration::from_secs(900 + skew + 1));
    assert_eq!(sweep(), (2, 0, 0));
    // The hour-long session is untouched and still works.
    assert_eq!(
        caller_identity(&server, &hour.session_token)
            .await
            .expect("unexpired session"),
        arn("user", "dev")
    );
    assert_eq!(sweep(), (0, 0, 0));

    server.advance(Duration::from_secs(3600 - 900));
    assert_eq!(sweep(), (1, 0, 0));
    // The admin's 12 h session, then the revocation once no token it matches can live.
    server.advance(Duration::from_secs(43_200 - 3600));
    assert_eq!(sweep(), (1, 0, 0));
    server.advance(Duration::from_secs(129_600 - 43_200));
    assert_eq!(sweep(), (0, 1, 0));
    assert_eq!(sweep(), (0, 0, 0));
}

// ---- 6. revocation by role --------------------------------------------------------------

#[tokio::test]
async fn revoking_a_role_kills_its_sessions_and_their_chains() {
    let server = start().await;
    let admin = server.admin_login().await;
    let dev = user_session(&server, &admin, "dev").await;
    create_role(&server, &admin, "worker", &arn("user", "dev"), 0).await;
    put_role_policy(&server, &admin, "worker", allow(&["s3:GetObject"], &["*"])).await;
    create_role(&server, &admin, "next", &arn("role", "worker"), 0).await;
    let object = "arn:aws:s3:::b/k";
    let mint = |name: &'static str| {
        let dev = dev.clone();
        let server = &server;
        async move {
            server
                .sts_as(&dev)
                .assume_role(assume("worker", name))
                .await
                .unwrap_or_else(|s| panic!("AssumeRole {name}: {s}"))
                .into_inner()
                .credentials
                .unwrap()
                .session_token
        }
    };
    let w1 = mint("w1").await;
    let w2 = mint("w2").await;
    for token in [&w1, &w2] {
        assert_eq!(
            decide(&server, token, "s3:GetObject", object).await,
            Decision::Allow
        );
    }
    let revoked = server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            role_arn: arn("role", "worker"),
            ..Default::default()
        })
        .await
        .expect("RevokeSession by role")
        .into_inner()
        .revoked;
    assert_eq!(revoked, 1);

    for token in [&w1, &w2] {
        assert_status(
            authorize(&server, &admin, token, "s3:GetObject", object).await,
            Code::InvalidArgument,
            &["session_token", "revoked"],
        );
        assert_status(
            caller_identity(&server, token).await,
            Code::Unauthenticated,
            &["revoked"],
        );
        // A revoked role session cannot chain either.
        assert_status(
            server
                .sts_as(token)
                .assume_role(assume("next", "chained"))
                .await,
            Code::Unauthenticated,
            &["revoked"],
        );
        let introspected = server
            .tokens_as(&admin)
            .introspect(proto::IntrospectRequest {
                token: token.clone(),
            })
            .await
            .expect("Introspect")
            .into_inner();
        assert_eq!(introspected, proto::IntrospectResponse::default());
    }
    // The user behind the sessions is not revoked.
    assert_eq!(
        caller_identity(&server, &dev)
            .await
            .expect("dev unaffected"),
        arn("user", "dev")
    );

    // A session minted after the revocation works, and chains.
    server.advance(Duration::from_secs(1));
    let w3 = mint("w3").await;
    assert_eq!(
        decide(&server, &w3, "s3:GetObject", object).await,
        Decision::Allow
    );
    server
        .sts_as(&w3)
        .assume_role(assume("next", "chained"))
        .await
        .expect("a fresh role session chains");
    let active = server
        .tokens_as(&admin)
        .introspect(proto::IntrospectRequest { token: w3.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(active.active, "{active:?}");
}

// ---- 7. access review -------------------------------------------------------------------

#[tokio::test]
async fn simulate_and_who_can_explain_access() {
    let server = start().await;
    let admin = server.admin_login().await;
    let developer = user_session(&server, &admin, "developer").await;
    let mut iam = server.iam_as(&admin);
    iam.put_user_policy(proto::PutUserPolicyRequest {
        user_name: "developer".into(),
        policy_name: "ec2-dev".into(),
        policy_document: json!({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "Describe", "Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]
        })
        .to_string(),
    })
    .await
    .expect("PutUserPolicy");
    create_role(
        &server,
        &admin,
        "reports-reader",
        &arn("user", "developer"),
        0,
    )
    .await;
    put_role_policy(
        &server,
        &admin,
        "reports-reader",
        allow(&["s3:GetObject"], &["arn:aws:s3:::reports/*"]),
    )
    .await;
    // A role that also allows it but nobody may assume.
    create_role(&server, &admin, "orphan", &arn("user", "nobody"), 0).await;
    put_role_policy(&server, &admin, "orphan", allow(&["s3:*"], &["*"])).await;

    let results = iam
        .simulate_principal_policy(proto::SimulatePrincipalPolicyRequest {
            policy_source_arn: arn("user", "developer"),
            action_names: vec!["ec2:DescribeInstances".into(), "iam:CreateUser".into()],
            ..Default::default()
        })
        .await
        .expect("SimulatePrincipalPolicy")
        .into_inner()
        .evaluation_results;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].eval_action_name, "ec2:DescribeInstances");
    assert_eq!(results[0].eval_decision(), Decision::Allow, "{results:?}");
    assert_eq!(
        results[0].matched_statements,
        vec!["user/developer/ec2-dev#Describe".to_string()],
        "{results:?}"
    );
    assert_eq!(results[1].eval_action_name, "iam:CreateUser");
    assert_eq!(
        results[1].eval_decision(),
        Decision::ImplicitDeny,
        "{results:?}"
    );
    assert!(results[1].matched_statements.is_empty(), "{results:?}");

    let grants = iam
        .who_can(proto::WhoCanRequest {
            action_name: "s3:GetObject".into(),
            resource_arn: "arn:aws:s3:::reports/q1.csv".into(),
        })
        .await
        .expect("WhoCan")
        .into_inner()
        .grants;
    let grant = |principal: &str| grants.iter().find(|g| g.principal_arn == principal);
    let role = grant(&arn("role", "reports-reader"))
        .unwrap_or_else(|| panic!("no grant for the role: {grants:#?}"));
    assert_eq!(role.principal_type, "role");
    assert!(role.via.contains("assumable by developer"), "{role:?}");
    assert!(!role.matched_statements.is_empty(), "{role:?}");
    let admin_grant =
        grant(&arn("user", ADMIN)).unwrap_or_else(|| panic!("no grant for admin: {grants:#?}"));
    assert_eq!(admin_grant.principal_type, "user");
    let orphan = grant(&arn("role", "orphan")).expect("orphan role allows it too");
    assert!(orphan.via.contains("no user can assume"), "{orphan:?}");
    assert!(
        grant(&arn("user", "developer")).is_none(),
        "the developer has no S3 rights of their own: {grants:#?}"
    );
    assert_eq!(grants.len(), 3, "{grants:#?}");

    // Without iam:SimulatePrincipalPolicy, neither works.
    let mut dev_iam = server.iam_as(&developer);
    assert_status(
        dev_iam
            .who_can(proto::WhoCanRequest {
                action_name: "s3:GetObject".into(),
                resource_arn: "*".into(),
            })
            .await,
        Code::PermissionDenied,
        &["iam:SimulatePrincipalPolicy"],
    );
    assert_status(
        dev_iam
            .simulate_principal_policy(proto::SimulatePrincipalPolicyRequest {
                policy_source_arn: arn("user", ADMIN),
                action_names: vec!["iam:CreateUser".into()],
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        &["iam:SimulatePrincipalPolicy"],
    );
}
