//! `GetSessionToken`: password + TOTP, replay, indistinguishable failures, lockout.

use std::time::Duration;

use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn admin_login_with_mfa_carries_pwd_and_otp() {
    let server = TestServer::start().await;
    let code = server.fresh_code(&server.admin_seed.clone());
    let creds = server
        .login(ADMIN, ADMIN_PASSWORD, Some(&code))
        .await
        .expect("login");
    assert!(
        creds.access_key_id.starts_with("ASIA"),
        "{}",
        creds.access_key_id
    );

    let header = jwt_header(&creds.session_token);
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));

    let claims = jwt_claims(&creds.session_token);
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(claims["sub"], arn("user", ADMIN));
    // The issuer defaults to the server URL derived from `listen` (issue 10).
    assert_eq!(claims["iss"], server.config.issuer());
    assert_eq!(claims["aud"], "stint");
    assert_eq!(claims["jti"], creds.access_key_id.as_str());
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(iat, server.now_secs());
    assert_eq!(claims["nbf"].as_i64(), Some(iat));
    // Default GetSessionToken lifetime: 12 h, and the response says the same.
    assert_eq!(claims["exp"].as_i64(), Some(iat + 43_200));
    assert_eq!(timestamp_secs(&creds.expiration), iat + 43_200);
    assert_eq!(claims["stint"]["mfa_present"], true);

    let me = server
        .sts_as(&creds.session_token)
        .get_caller_identity(stint::proto::GetCallerIdentityRequest {})
        .await
        .expect("GetCallerIdentity")
        .into_inner();
    assert_eq!(me.arn, arn("user", ADMIN));
    assert_eq!(me.account, ACCOUNT);
    assert!(me.user_id.starts_with("AIDA"), "{}", me.user_id);

    let devices = server
        .iam_as(&creds.session_token)
        .list_mfa_devices(stint::proto::ListMfaDevicesRequest::default())
        .await
        .expect("ListMfaDevices for the caller")
        .into_inner()
        .mfa_devices;
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0].serial_number, server.admin_serial);
    assert_eq!(devices[0].user_name, ADMIN);
}

#[tokio::test]
async fn password_only_user_gets_pwd_amr_and_custom_duration() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let creds = server
        .get_session_token(
            stint::proto::get_session_token_request::Credential::Password(
                stint::proto::PasswordCredential {
                    user_name: "dev".into(),
                    password: "dev-password-1".into(),
                },
            ),
            None,
            900,
        )
        .await
        .expect("login");
    let claims = jwt_claims(&creds.session_token);
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert_eq!(claims["stint"]["mfa_present"], false);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    for bad in [899, 129_601, -1] {
        let result = server
            .get_session_token(
                stint::proto::get_session_token_request::Credential::Password(
                    stint::proto::PasswordCredential {
                        user_name: "dev".into(),
                        password: "dev-password-1".into(),
                    },
                ),
                None,
                bad,
            )
            .await;
        assert_status(result, Code::InvalidArgument, &["duration_seconds"]);
    }
}

#[tokio::test]
async fn a_totp_code_is_accepted_once() {
    let server = TestServer::start().await;
    let seed = server.admin_seed.clone();
    let code = server.code_for(&seed);
    server
        .login(ADMIN, ADMIN_PASSWORD, Some(&code))
        .await
        .expect("first use of the code");
    let replay = server.login(ADMIN, ADMIN_PASSWORD, Some(&code)).await;
    let status = assert_status(replay, Code::Unauthenticated, &[]);
    assert_eq!(status.message(), "invalid credentials");

    // The next step's code works (after the back-off of the failed attempt).
    server.after_failure();
    server.advance(Duration::from_secs(30));
    let next = server.code_for(&seed);
    assert_ne!(next, code);
    server
        .login(ADMIN, ADMIN_PASSWORD, Some(&next))
        .await
        .expect("next code");
}

#[tokio::test]
async fn bad_code_bad_password_unknown_user_are_indistinguishable() {
    // Failures from an address the admin never logged in from count toward a lock.
    let server = TestServer::start_with(|c| c.lockout.max_failures = 10).await;
    let seed = server.admin_seed.clone();
    let good = server.code_for(&seed);
    let wrong_code = format!("{:06}", (good.parse::<u32>().unwrap() + 1) % 1_000_000);

    let attempts: [(&str, &str, Option<&str>); 4] = [
        (ADMIN, ADMIN_PASSWORD, Some(&wrong_code)),
        (ADMIN, "wrong password", Some(&good)),
        ("nobody", ADMIN_PASSWORD, Some(&good)),
        (ADMIN, ADMIN_PASSWORD, None),
    ];
    let mut seen = Vec::new();
    for (user, password, code) in attempts {
        let status = assert_status(
            server.login(user, password, code).await,
            Code::Unauthenticated,
            &[],
        );
        seen.push((status.code(), status.message().to_string()));
        server.after_failure();
    }
    for (code, message) in &seen {
        assert_eq!(*code, Code::Unauthenticated);
        assert_eq!(message, "invalid credentials");
    }

    // A code that is not 6 digits is malformed input (AWS: TokenCode is 6 digits), named
    // as such, before anything is checked; it is not a guess.
    for malformed in ["12345", "1234567", "12345a"] {
        assert_status(
            server.login(ADMIN, ADMIN_PASSWORD, Some(malformed)).await,
            Code::InvalidArgument,
            &["token_code", "6 digits"],
        );
    }

    // The code presented with the wrong password was not burned.
    server
        .login(ADMIN, ADMIN_PASSWORD, Some(&good))
        .await
        .expect("the right password with the same code");
}

#[tokio::test]
async fn lockout_after_max_failures_until_lockout_seconds_pass() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "right-pw-1")
        .await;
    let lockout = server.config.lockout.clone();

    // dev has never logged in from this address, so the lock applies to it (a lock
    // spares only addresses the user logged in from before: tests/it/attacks_login.rs).
    for _ in 0..lockout.max_failures {
        let status = assert_status(
            server.login("dev", "wrong-pw", None).await,
            Code::Unauthenticated,
            &[],
        );
        assert_eq!(status.message(), "invalid credentials");
        server.after_failure();
    }
    // Locked: even the right password is refused, with a retry-after hint.
    let status = assert_status(
        server.login("dev", "right-pw-1", None).await,
        Code::Unauthenticated,
        &[],
    );
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry > 0 && retry <= lockout.lockout_seconds,
        "retry-after {retry}"
    );

    // Just before the lock ends: still refused.
    server.advance(Duration::from_secs(lockout.lockout_seconds - 3));
    assert_status(
        server.login("dev", "right-pw-1", None).await,
        Code::Unauthenticated,
        &[],
    );
    // After it: the right password works again.
    server.advance(Duration::from_secs(3));
    let creds = server
        .login("dev", "right-pw-1", None)
        .await
        .expect("login after the lock");
    assert_eq!(jwt_claims(&creds.session_token)["sub"], arn("user", "dev"));
}

#[tokio::test]
async fn back_off_refuses_an_immediate_retry() {
    let server = TestServer::start().await;
    let seed = server.admin_seed.clone();
    assert_status(
        server.login(ADMIN, "wrong", None).await,
        Code::Unauthenticated,
        &[],
    );
    // Within the back-off even the right credentials are refused...
    let code = server.code_for(&seed);
    assert_status(
        server.login(ADMIN, ADMIN_PASSWORD, Some(&code)).await,
        Code::Unauthenticated,
        &[],
    );
    // ...and that refusal did not consume the code.
    server.after_failure();
    server
        .login(ADMIN, ADMIN_PASSWORD, Some(&code))
        .await
        .expect("after the back-off");
}
