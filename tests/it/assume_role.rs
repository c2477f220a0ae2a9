//! `AssumeRole`: a service reading one bucket with an access key, a contractor who needs
//! MFA, lifetimes and expiry on the manual clock.

use std::time::Duration;

use serde_json::json;
use tonic::Code;

use stint::proto::get_session_token_request::Credential;
use stint::proto::{self, Decision};

use crate::common::*;

fn sts_arn(role: &str, session: &str) -> String {
    format!("arn:stint:sts::{ACCOUNT}:assumed-role/{role}/{session}")
}

fn assume(role: &str, session: &str, duration_seconds: i32) -> proto::AssumeRoleRequest {
    proto::AssumeRoleRequest {
        role_arn: arn("role", role),
        role_session_name: session.into(),
        duration_seconds,
        ..Default::default()
    }
}

async fn decide(server: &TestServer, token: &str, action: &str, resource: &str) -> Decision {
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
        .decision()
}

/// Admin setup for the bucket reader: a service user with an access key, a role trusting
/// it with a managed `s3:GetObject` policy and an inline `s3:ListBucket` policy.
async fn reports_setup(server: &TestServer) -> proto::AccessKey {
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    iam.create_user(proto::CreateUserRequest {
        user_name: "reporter".into(),
        ..Default::default()
    })
    .await
    .expect("CreateUser");
    let key = iam
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "reporter".into(),
        })
        .await
        .expect("CreateAccessKey")
        .into_inner()
        .access_key
        .unwrap();
    assert!(
        key.access_key_id.starts_with("AKIA"),
        "{}",
        key.access_key_id
    );
    assert_eq!(key.status, "Active");
    assert!(!key.secret_access_key.is_empty());

    iam.create_role(proto::CreateRoleRequest {
        role_name: "reports-reader".into(),
        assume_role_policy_document: trust(&arn("user", "reporter"), None),
        ..Default::default()
    })
    .await
    .expect("CreateRole");
    let policy = iam
        .create_policy(proto::CreatePolicyRequest {
            policy_name: "get-reports".into(),
            policy_document: allow(&["s3:GetObject"], &["arn:aws:s3:::reports/*"]),
            ..Default::default()
        })
        .await
        .expect("CreatePolicy")
        .into_inner()
        .policy
        .unwrap();
    iam.attach_role_policy(proto::AttachRolePolicyRequest {
        role_name: "reports-reader".into(),
        policy_arn: policy.arn,
    })
    .await
    .expect("AttachRolePolicy");
    server
        .put_role_policy(
            &admin,
            "reports-reader",
            "list-reports",
            &allow(&["s3:ListBucket"], &["arn:aws:s3:::reports"]),
        )
        .await;
    key
}

fn access_key(key: &proto::AccessKey, secret: &str) -> Credential {
    Credential::AccessKey(proto::AccessKeyCredential {
        access_key_id: key.access_key_id.clone(),
        secret_access_key: secret.into(),
    })
}

#[tokio::test]
async fn service_role_reads_one_bucket() {
    let server = TestServer::start().await;
    let key = reports_setup(&server).await;

    let session = server
        .get_session_token(access_key(&key, &key.secret_access_key), None, 0)
        .await
        .expect("GetSessionToken with an access key");
    let claims = jwt_claims(&session.session_token);
    assert_eq!(claims["amr"], json!(["key"]));
    assert_eq!(claims["sub"], arn("user", "reporter"));
    // The service user itself has no S3 rights.
    assert_eq!(
        decide(
            &server,
            &session.session_token,
            "s3:GetObject",
            "arn:aws:s3:::reports/x"
        )
        .await,
        Decision::ImplicitDeny
    );

    let assumed = server
        .sts_as(&session.session_token)
        .assume_role(assume("reports-reader", "nightly", 0))
        .await
        .expect("AssumeRole")
        .into_inner();
    let role_session = sts_arn("reports-reader", "nightly");
    let user = assumed.assumed_role_user.unwrap();
    assert_eq!(user.arn, role_session);
    assert!(
        user.assumed_role_id.starts_with("AROA"),
        "{}",
        user.assumed_role_id
    );
    assert!(user.assumed_role_id.ends_with(":nightly"));
    let creds = assumed.credentials.unwrap();
    assert!(creds.access_key_id.starts_with("ASIA"));
    let token = creds.session_token;
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], role_session.as_str());
    assert_eq!(claims["stint"]["role_arn"], arn("role", "reports-reader"));
    assert_eq!(claims["stint"]["session_name"], "nightly");
    assert_eq!(claims["amr"], json!(["key"]));
    // Default AssumeRole lifetime: one hour.
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(timestamp_secs(&creds.expiration), iat + 3600);

    let me = server
        .sts_as(&token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("GetCallerIdentity")
        .into_inner();
    assert_eq!(me.arn, role_session);
    assert_eq!(me.account, ACCOUNT);

    let cases = [
        ("s3:GetObject", "arn:aws:s3:::reports/x", Decision::Allow),
        (
            "s3:GetObject",
            "arn:aws:s3:::reports/2024/q1.csv",
            Decision::Allow,
        ),
        ("s3:ListBucket", "arn:aws:s3:::reports", Decision::Allow),
        (
            "s3:GetObject",
            "arn:aws:s3:::payroll/x",
            Decision::ImplicitDeny,
        ),
        (
            "s3:GetObject",
            "arn:aws:s3:::reports-archive/x",
            Decision::ImplicitDeny,
        ),
        (
            "s3:PutObject",
            "arn:aws:s3:::reports/x",
            Decision::ImplicitDeny,
        ),
        ("iam:CreateUser", &arn("user", "x"), Decision::ImplicitDeny),
    ];
    for (action, resource, expected) in cases {
        assert_eq!(
            decide(&server, &token, action, resource).await,
            expected,
            "{action} on {resource}"
        );
    }
    // The role session cannot administer Stint either.
    assert_status(
        server
            .iam_as(&token)
            .create_user(proto::CreateUserRequest {
                user_name: "x".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        &["iam:CreateUser", &arn("user", "x")],
    );
}

#[tokio::test]
async fn access_key_and_trust_refusals() {
    let server = TestServer::start().await;
    let key = reports_setup(&server).await;

    // A wrong secret and an unknown key id look the same as a bad password.
    let wrong = server
        .get_session_token(access_key(&key, "not-the-secret"), None, 0)
        .await;
    assert_status(wrong, Code::Unauthenticated, &[]).message();
    server.after_failure();
    let unknown = server
        .get_session_token(
            Credential::AccessKey(proto::AccessKeyCredential {
                access_key_id: "AKIANOTAREALKEY00000".into(),
                secret_access_key: key.secret_access_key.clone(),
            }),
            None,
            0,
        )
        .await;
    let status = assert_status(unknown, Code::Unauthenticated, &[]);
    assert_eq!(status.message(), "invalid credentials");
    server.after_failure();

    // A user the trust policy does not name is refused.
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "outsider", "outsider-pw-1")
        .await;
    let outsider = server
        .login("outsider", "outsider-pw-1", None)
        .await
        .unwrap()
        .session_token;
    assert_status(
        server
            .sts_as(&outsider)
            .assume_role(assume("reports-reader", "sneaky", 0))
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole", &arn("role", "reports-reader")],
    );
    // A role that does not exist.
    let session = server
        .get_session_token(access_key(&key, &key.secret_access_key), None, 0)
        .await
        .unwrap()
        .session_token;
    assert_status(
        server
            .sts_as(&session)
            .assume_role(assume("no-such-role", "s1", 0))
            .await,
        Code::NotFound,
        &["no-such-role"],
    );
    // No bearer token at all.
    assert_status(
        server
            .sts_as("")
            .assume_role(assume("reports-reader", "s1", 0))
            .await,
        Code::Unauthenticated,
        &[],
    );
    // A deactivated key no longer logs in.
    server
        .iam_as(&admin)
        .update_access_key(proto::UpdateAccessKeyRequest {
            user_name: "reporter".into(),
            access_key_id: key.access_key_id.clone(),
            status: "Inactive".into(),
        })
        .await
        .expect("UpdateAccessKey");
    let status = assert_status(
        server
            .get_session_token(access_key(&key, &key.secret_access_key), None, 0)
            .await,
        Code::Unauthenticated,
        &[],
    );
    assert_eq!(status.message(), "invalid credentials");
}

#[tokio::test]
async fn durations_outside_the_role_limits_name_the_field() {
    let server = TestServer::start().await;
    let key = reports_setup(&server).await;
    let session = server
        .get_session_token(access_key(&key, &key.secret_access_key), None, 0)
        .await
        .unwrap()
        .session_token;
    let mut sts = server.sts_as(&session);
    for bad in [899, 3601, -900] {
        assert_status(
            sts.assume_role(assume("reports-reader", "s1", bad)).await,
            Code::InvalidArgument,
            &["duration_seconds"],
        );
    }
    // The bounds themselves are fine.
    for (ok, session_name) in [(900, "lo"), (3600, "hi")] {
        let creds = sts
            .assume_role(assume("reports-reader", session_name, ok))
            .await
            .unwrap_or_else(|s| panic!("{ok}: {s}"))
            .into_inner()
            .credentials
            .unwrap();
        let claims = jwt_claims(&creds.session_token);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            i64::from(ok)
        );
    }
    // Bad session names are refused before anything else.
    assert_status(
        sts.assume_role(assume("reports-reader", "no spaces", 0))
            .await,
        Code::InvalidArgument,
        &["role_session_name"],
    );

    // A role allowing 12 h: a direct session may use it, a chained one at most 1 h.
    let admin = server.admin_login().await;
    server
        .iam_as(&admin)
        .create_role(proto::CreateRoleRequest {
            role_name: "long".into(),
            assume_role_policy_document: trust(&sts_arn("reports-reader", "chain"), None),
            max_session_duration: 43_200,
            ..Default::default()
        })
        .await
        .expect("CreateRole long");
    let chained_from = sts
        .assume_role(assume("reports-reader", "chain", 0))
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    assert_status(
        server
            .sts_as(&chained_from)
            .assume_role(assume("long", "second", 7200))
            .await,
        Code::InvalidArgument,
        &["duration_seconds"],
    );
    let chained = server
        .sts_as(&chained_from)
        .assume_role(assume("long", "second", 3600))
        .await
        .expect("chained AssumeRole within 1 h")
        .into_inner();
    assert_eq!(
        chained.assumed_role_user.unwrap().arn,
        sts_arn("long", "second")
    );
}

/// The contractor's role requires MFA; a 900 s credential expires on the manual clock.
async fn contractor_flow(server: &TestServer) {
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "contractor", "contractor-pw-1")
        .await;
    server
        .iam_as(&admin)
        .create_role(proto::CreateRoleRequest {
            role_name: "contract-work".into(),
            assume_role_policy_document: trust(
                &arn("user", "contractor"),
                Some(json!({"Bool": {"aws:MultiFactorAuthPresent": "true"}})),
            ),
            ..Default::default()
        })
        .await
        .expect("CreateRole");

    // Without MFA: refused.
    let no_mfa = server
        .login("contractor", "contractor-pw-1", None)
        .await
        .expect("password-only login before enrolment")
        .session_token;
    assert_status(
        server
            .sts_as(&no_mfa)
            .assume_role(assume("contract-work", "c1", 900))
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole", &arn("role", "contract-work")],
    );

    // Enrol a device, log in with a code.
    let seed = server.enroll_mfa(&admin, "contractor").await;
    let code = server.fresh_code(&seed);
    let with_mfa = server
        .login("contractor", "contractor-pw-1", Some(&code))
        .await
        .expect("MFA login")
        .session_token;
    assert_eq!(jwt_claims(&with_mfa)["amr"], json!(["pwd", "otp"]));
    let creds = server
        .sts_as(&with_mfa)
        .assume_role(assume("contract-work", "c1", 900))
        .await
        .expect("AssumeRole with MFA")
        .into_inner()
        .credentials
        .unwrap();
    let claims = jwt_claims(&creds.session_token);
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(iat, server.now_secs());
    assert_eq!(claims["exp"].as_i64(), Some(iat + 900));
    assert_eq!(timestamp_secs(&creds.expiration), iat + 900);
    assert_eq!(claims["stint"]["mfa_present"], true);
    assert_eq!(claims["sub"], sts_arn("contract-work", "c1"));

    let skew = server.config.tokens.clock_skew_seconds;
    let mut sts = server.sts_as(&creds.session_token);
    server.advance(Duration::from_secs(899 + skew));
    let me = sts
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("valid one second before expiry (plus skew)")
        .into_inner();
    assert_eq!(me.arn, sts_arn("contract-work", "c1"));
    server.advance(Duration::from_secs(1));
    assert_status(
        sts.get_caller_identity(proto::GetCallerIdentityRequest {})
            .await,
        Code::Unauthenticated,
        &[],
    );
    // Authorize refuses it as well (as a bad input token).
    let authorize = server
        .tokens_as(&with_mfa)
        .authorize(proto::AuthorizeRequest {
            session_token: creds.session_token.clone(),
            action: "s3:GetObject".into(),
            resource: "*".into(),
            context: vec![],
        })
        .await;
    assert_status(authorize, Code::InvalidArgument, &["session_token"]);
}

#[tokio::test]
async fn contractor_needs_mfa_and_credentials_expire() {
    let server = TestServer::start_with(|c| c.tokens.clock_skew_seconds = 0).await;
    contractor_flow(&server).await;
}

#[tokio::test]
async fn expiry_honours_the_configured_clock_skew() {
    let server = TestServer::start().await;
    assert_eq!(server.config.tokens.clock_skew_seconds, 60);
    contractor_flow(&server).await;
}

#[tokio::test]
async fn a_code_on_assume_role_supplies_fresh_mfa() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "contractor", "contractor-pw-1")
        .await;
    server
        .iam_as(&admin)
        .create_role(proto::CreateRoleRequest {
            role_name: "contract-work".into(),
            assume_role_policy_document: trust(
                &arn("user", "contractor"),
                Some(json!({"Bool": {"aws:MultiFactorAuthPresent": "true"}})),
            ),
            ..Default::default()
        })
        .await
        .expect("CreateRole");
    // A session from before enrolment has no MFA...
    let session = server
        .login("contractor", "contractor-pw-1", None)
        .await
        .unwrap()
        .session_token;
    let seed = server.enroll_mfa(&admin, "contractor").await;
    assert_status(
        server
            .sts_as(&session)
            .assume_role(assume("contract-work", "c2", 900))
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole"],
    );
    // ...a code already used (by EnableMfaDevice) is refused like any bad code...
    let mut request = assume("contract-work", "c2", 900);
    request.token_code = server.code_for(&seed);
    let status = assert_status(
        server.sts_as(&session).assume_role(request.clone()).await,
        Code::Unauthenticated,
        &[],
    );
    assert_eq!(status.message(), "invalid credentials");
    // ...and a fresh code on AssumeRole supplies the MFA the trust policy wants.
    request.token_code = server.fresh_code(&seed);
    let creds = server
        .sts_as(&session)
        .assume_role(request)
        .await
        .expect("AssumeRole with a fresh code")
        .into_inner()
        .credentials
        .unwrap();
    assert_eq!(
        jwt_claims(&creds.session_token)["stint"]["mfa_present"],
        true
    );
}

#[tokio::test]
async fn trusting_the_account_root_also_needs_an_identity_allow() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let root = format!("arn:stint:iam::{ACCOUNT}:root");
    server
        .iam_as(&admin)
        .create_role(proto::CreateRoleRequest {
            role_name: "account-wide".into(),
            assume_role_policy_document: trust(&root, None),
            ..Default::default()
        })
        .await
        .expect("CreateRole");
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let dev = server
        .login("dev", "dev-password-1", None)
        .await
        .unwrap()
        .session_token;
    // The trust policy names only the account: without an identity policy, no.
    assert_status(
        server
            .sts_as(&dev)
            .assume_role(assume("account-wide", "s1", 0))
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole", &arn("role", "account-wide")],
    );
    // With one allowing sts:AssumeRole on the role, yes.
    server
        .iam_as(&admin)
        .put_user_policy(proto::PutUserPolicyRequest {
            user_name: "dev".into(),
            policy_name: "assume".into(),
            policy_document: allow(&["sts:AssumeRole"], &[&arn("role", "account-wide")]),
        })
        .await
        .expect("PutUserPolicy");
    let assumed = server
        .sts_as(&dev)
        .assume_role(assume("account-wide", "s2", 0))
        .await
        .expect("AssumeRole with trust + identity allow")
        .into_inner();
    assert_eq!(
        assumed.assumed_role_user.unwrap().arn,
        sts_arn("account-wide", "s2")
    );
}
