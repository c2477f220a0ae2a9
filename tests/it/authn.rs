//! Issue 4, "authentication that holds up", end to end over gRPC: force-MFA onboarding,
//! code replay (also concurrent and across a restart), MFA resync and deactivation,
//! password policy and forced changes, access keys, lockout audit, indistinguishable
//! failures for access keys, and the credential report.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use stint::core::authn::totp;
use stint::proto::get_session_token_request::Credential;
use stint::proto::{self, AuditEvent};

use crate::common::*;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

async fn list_users(server: &TestServer, token: &str) -> Result<Vec<String>, tonic::Status> {
    let users = server
        .iam_as(token)
        .list_users(proto::ListUsersRequest::default())
        .await?
        .into_inner()
        .users;
    Ok(users.into_iter().map(|u| u.user_name).collect())
}

async fn get_self(server: &TestServer, token: &str) -> Result<proto::User, tonic::Status> {
    Ok(server
        .iam_as(token)
        .get_user(proto::GetUserRequest::default())
        .await?
        .into_inner()
        .user
        .expect("user in GetUser"))
}

async fn caller_arn(server: &TestServer, token: &str) -> String {
    server
        .sts_as(token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("GetCallerIdentity")
        .into_inner()
        .arn
}

fn key_credential(id: &str, secret: &str) -> Credential {
    Credential::AccessKey(proto::AccessKeyCredential {
        access_key_id: id.into(),
        secret_access_key: secret.into(),
    })
}

async fn key_login(server: &TestServer, id: &str, secret: &str) -> Result<String, tonic::Status> {
    Ok(server
        .get_session_token(key_credential(id, secret), None, 0)
        .await?
        .session_token)
}

fn decode_seed(base32: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(base32.as_bytes())
        .expect("base32 seed")
}

#[track_caller]
fn assert_invalid_credentials<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = assert_status(result, Code::Unauthenticated, &[]);
    assert_eq!(status.message(), "invalid credentials");
}

async fn events_named(server: &TestServer, token: &str, name: &str) -> Vec<AuditEvent> {
    server
        .audit_as(token)
        .list_events(proto::ListEventsRequest {
            event_name: name.into(),
            max_results: 1000,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events
}

// ---- 1. force-MFA onboarding ----------------------------------------------------------

#[tokio::test]
async fn force_mfa_user_can_only_enroll_until_logging_in_with_a_code() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "alice", "alice-password-1")
        .await;
    server
        .create_user_with_password(&admin, "bob", "bob-password-1")
        .await;
    server
        .attach_builtin(
            &admin,
            "alice",
            &["SelfServiceMFA", "IAMUserChangePassword", "ReadOnlyAccess"],
        )
        .await;

    let first = server
        .login("alice", "alice-password-1", None)
        .await
        .expect("password-only login")
        .session_token;
    assert_eq!(jwt_claims(&first)["amr"], serde_json::json!(["pwd"]));
    assert_status(
        list_users(&server, &first).await,
        Code::PermissionDenied,
        &["iam:ListUsers"],
    );
    assert_eq!(caller_arn(&server, &first).await, arn("user", "alice"));

    let mut iam = server.iam_as(&first);
    // Not for somebody else.
    assert_status(
        iam.create_virtual_mfa_device(proto::CreateVirtualMfaDeviceRequest {
            user_name: "bob".into(),
            virtual_mfa_device_name: String::new(),
        })
        .await,
        Code::PermissionDenied,
        &[],
    );
    // For herself (empty user name = the caller).
    let device = iam
        .create_virtual_mfa_device(proto::CreateVirtualMfaDeviceRequest::default())
        .await
        .expect("CreateVirtualMfaDevice for self")
        .into_inner();
    assert_eq!(device.serial_number, arn("mfa", "alice"));
    assert!(
        device.qr_code_png.starts_with(PNG_SIGNATURE),
        "not a PNG: {:?}",
        &device.qr_code_png[..device.qr_code_png.len().min(8)]
    );
    assert!(
        device.otpauth_uri.starts_with("otpauth://totp/"),
        "{}",
        device.otpauth_uri
    );
    assert!(
        device
            .otpauth_uri
            .contains(&format!("secret={}", device.base32_string_seed)),
        "{} lacks the seed",
        device.otpauth_uri
    );
    let seed = decode_seed(&device.base32_string_seed);
    assert_eq!(seed.len(), totp::SEED_LEN);

    // Two consecutive codes from the device enable it.
    let step = totp::step_at(server.now());
    let enable = |c1: String, c2: String| proto::EnableMfaDeviceRequest {
        user_name: String::new(),
        serial_number: device.serial_number.clone(),
        authentication_code_1: c1,
        authentication_code_2: c2,
    };
    // Not consecutive: refused, naming the field.
    assert_status(
        iam.enable_mfa_device(enable(
            totp::code_at(&seed, step - 2),
            totp::code_at(&seed, step),
        ))
        .await,
        Code::InvalidArgument,
        &["authentication_code_2"],
    );
    iam.enable_mfa_device(enable(
        totp::code_at(&seed, step - 1),
        totp::code_at(&seed, step),
    ))
    .await
    .expect("EnableMfaDevice with two consecutive codes");
    server.mark_used(&seed, step);

    // The password-only session is still without MFA, so still fenced in.
    assert_status(
        list_users(&server, &first).await,
        Code::PermissionDenied,
        &[],
    );
    let devices = iam
        .list_mfa_devices(proto::ListMfaDevicesRequest::default())
        .await
        .expect("ListMfaDevices for self")
        .into_inner()
        .mfa_devices;
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0].serial_number, device.serial_number);
    assert_eq!(devices[0].user_name, "alice");

    // Now that a device is enabled, a password alone no longer logs in.
    assert_invalid_credentials(server.login("alice", "alice-password-1", None).await);
    server.after_failure();

    let code = server.fresh_code(&seed);
    let second = server
        .login("alice", "alice-password-1", Some(&code))
        .await
        .expect("login with password and code")
        .session_token;
    let claims = jwt_claims(&second);
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(claims["stint"]["mfa_present"], true);
    let users = list_users(&server, &second)
        .await
        .expect("ListUsers with MFA");
    for name in [ADMIN, "alice", "bob"] {
        assert!(users.iter().any(|u| u == name), "{name} not in {users:?}");
    }
}

#[tokio::test]
async fn self_service_cannot_bind_a_device_to_another_user_by_naming_it_after_herself() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "alice", "alice-password-1")
        .await;
    server.create_user(&admin, "bob").await;
    server
        .attach_builtin(&admin, "alice", &["SelfServiceMFA"])
        .await;
    let alice = server
        .login("alice", "alice-password-1", None)
        .await
        .expect("login")
        .session_token;
    assert_status(
        server
            .iam_as(&alice)
            .create_virtual_mfa_device(proto::CreateVirtualMfaDeviceRequest {
                user_name: "bob".into(),
                virtual_mfa_device_name: "alice".into(),
            })
            .await
            .map(|r| r.into_inner().serial_number),
        Code::PermissionDenied,
        &[],
    );
}

// ---- 2. replay ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_with_one_code_mint_exactly_once() {
    let server = TestServer::start().await;
    let seed = server.admin_seed.clone();
    for round in 0..4 {
        let code = server.fresh_code(&seed);
        let (a, b) = tokio::join!(
            server.login(ADMIN, ADMIN_PASSWORD, Some(&code)),
            server.login(ADMIN, ADMIN_PASSWORD, Some(&code)),
        );
        let (ok, refused): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(Result::is_ok);
        assert_eq!(
            ok.len(),
            1,
            "round {round}: {} successes with one code",
            ok.len()
        );
        let status = refused.into_iter().next().unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "round {round}");
        assert_eq!(status.message(), "invalid credentials", "round {round}");
        server.after_failure();
    }
}

/// The restarted daemon reads the same data dir with the same master key and clock.
#[tokio::test]
async fn a_used_code_stays_used_across_a_restart() {
    let server = TestServer::start().await;
    let seed = server.admin_seed.clone();
    let code = server.fresh_code(&seed);
    server
        .login(ADMIN, ADMIN_PASSWORD, Some(&code))
        .await
        .expect("first use of the code");

    // Same data dir, same master key, same (manual) time: the code is still spent.
    let server = server.restart().await;
    assert_invalid_credentials(server.login(ADMIN, ADMIN_PASSWORD, Some(&code)).await);
    // The daemon itself is fine: the next step's code works (past the back-off).
    server.advance(Duration::from_secs(totp::STEP_SECONDS));
    let next = server.fresh_code(&seed);
    server
        .login(ADMIN, ADMIN_PASSWORD, Some(&next))
        .await
        .expect("next code after restart");
    server.stop().await.expect("clean shutdown");
}

// ---- 3. resync, deactivate, list ------------------------------------------------------

/// A user with SelfServiceMFA + ReadOnlyAccess, a password and an enabled device.
async fn mfa_user(server: &TestServer, admin: &str, user: &str, password: &str) -> Vec<u8> {
    server
        .create_user_with_password(admin, user, password)
        .await;
    server
        .attach_builtin(admin, user, &["SelfServiceMFA", "ReadOnlyAccess"])
        .await;
    server.enroll_mfa(admin, user).await
}

#[tokio::test]
async fn resync_deactivate_and_list_mfa_devices() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let seed = mfa_user(&server, &admin, "carol", "carol-password-1").await;
    let code = server.fresh_code(&seed);
    let carol = server
        .login("carol", "carol-password-1", Some(&code))
        .await
        .expect("login with MFA")
        .session_token;
    let mut iam = server.iam_as(&carol);
    let devices = iam
        .list_mfa_devices(proto::ListMfaDevicesRequest::default())
        .await
        .expect("ListMfaDevices")
        .into_inner()
        .mfa_devices;
    assert_eq!(devices.len(), 1, "{devices:?}");
    let serial = devices[0].serial_number.clone();
    assert_eq!(serial, arn("mfa", "carol"));
    assert!(devices[0].enable_date.is_some());

    // Resync with two consecutive codes read off the device two steps later.
    server.advance(Duration::from_secs(2 * totp::STEP_SECONDS));
    let step = totp::step_at(server.now());
    let resync = |c1: String, c2: String| proto::ResyncMfaDeviceRequest {
        user_name: String::new(),
        serial_number: serial.clone(),
        authentication_code_1: c1,
        authentication_code_2: c2,
    };
    assert_status(
        iam.resync_mfa_device(resync(
            totp::code_at(&seed, step - 2),
            totp::code_at(&seed, step),
        ))
        .await,
        Code::InvalidArgument,
        &["authentication_code_2"],
    );
    assert_status(
        iam.resync_mfa_device(resync("12345".into(), totp::code_at(&seed, step)))
            .await,
        Code::InvalidArgument,
        &["authentication_code_1"],
    );
    iam.resync_mfa_device(resync(
        totp::code_at(&seed, step - 1),
        totp::code_at(&seed, step),
    ))
    .await
    .expect("ResyncMfaDevice with two consecutive codes");
    server.mark_used(&seed, step);
    // The same pair cannot be replayed, nor can its newest code log in.
    assert_status(
        iam.resync_mfa_device(resync(
            totp::code_at(&seed, step - 1),
            totp::code_at(&seed, step),
        ))
        .await,
        Code::InvalidArgument,
        &["authentication_code_2"],
    );
    assert_invalid_credentials(
        server
            .login(
                "carol",
                "carol-password-1",
                Some(&totp::code_at(&seed, step)),
            )
            .await,
    );
    server.after_failure();
    // The next step's code does.
    let code = server.fresh_code(&seed);
    let carol = server
        .login("carol", "carol-password-1", Some(&code))
        .await
        .expect("login after resync")
        .session_token;

    // Deactivate (allowed by SelfServiceMFA only with MFA in the session).
    server
        .iam_as(&carol)
        .deactivate_mfa_device(proto::DeactivateMfaDeviceRequest {
            user_name: String::new(),
            serial_number: serial.clone(),
        })
        .await
        .expect("DeactivateMfaDevice");
    let devices = server
        .iam_as(&admin)
        .list_mfa_devices(proto::ListMfaDevicesRequest {
            user_name: "carol".into(),
            ..Default::default()
        })
        .await
        .expect("ListMfaDevices by the admin")
        .into_inner()
        .mfa_devices;
    assert!(devices.is_empty(), "{devices:?}");

    // Password alone now logs in, and the token says there was no MFA.
    let plain = server
        .login("carol", "carol-password-1", None)
        .await
        .expect("login without code after deactivation")
        .session_token;
    let claims = jwt_claims(&plain);
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert_eq!(claims["stint"]["mfa_present"], false);
    assert!(
        claims["stint"]["mfa_auth_time"].is_null(),
        "{}",
        claims["stint"]
    );
    // A code from the deleted device is no second factor any more.
    server.advance(Duration::from_secs(totp::STEP_SECONDS));
    let stale = server.fresh_code(&seed);
    assert_invalid_credentials(
        server
            .login("carol", "carol-password-1", Some(&stale))
            .await,
    );
}

#[tokio::test]
async fn resync_lets_a_drifted_device_log_in() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let seed = mfa_user(&server, &admin, "drift", "drift-password-1").await;
    // The device's clock runs 5 steps (2.5 minutes) behind: its code is refused.
    server.advance(Duration::from_secs(10 * totp::STEP_SECONDS));
    let device_code = |server: &TestServer, next: u64| {
        totp::code_at(&seed, totp::step_at(server.now()) - 5 + next)
    };
    assert_invalid_credentials(
        server
            .login("drift", "drift-password-1", Some(&device_code(&server, 0)))
            .await,
    );
    server.after_failure();
    server
        .iam_as(&admin)
        .resync_mfa_device(proto::ResyncMfaDeviceRequest {
            user_name: "drift".into(),
            serial_number: arn("mfa", "drift"),
            authentication_code_1: device_code(&server, 0),
            authentication_code_2: device_code(&server, 1),
        })
        .await
        .expect("resync with the device's codes");
    // Two steps later the device shows its next unused code, which now logs in.
    server.advance(Duration::from_secs(2 * totp::STEP_SECONDS));
    server
        .login("drift", "drift-password-1", Some(&device_code(&server, 0)))
        .await
        .expect("the drifted device's current code logs in after resync");
}

// ---- 4. passwords ---------------------------------------------------------------------

fn strict_policy() -> proto::PasswordPolicy {
    proto::PasswordPolicy {
        minimum_password_length: 12,
        require_symbols: true,
        require_numbers: true,
        require_uppercase_characters: false,
        require_lowercase_characters: true,
        allow_users_to_change_password: true,
        max_password_age: 90,
        password_reuse_prevention: 2,
        hard_expiry: false,
        expire_passwords: false,
    }
}

async fn set_policy(
    server: &TestServer,
    admin: &str,
    policy: proto::PasswordPolicy,
) -> Result<(), tonic::Status> {
    server
        .iam_as(admin)
        .update_account_password_policy(proto::UpdateAccountPasswordPolicyRequest {
            password_policy: Some(policy),
        })
        .await
        .map(|_| ())
}

async fn get_policy(server: &TestServer, token: &str) -> proto::PasswordPolicy {
    server
        .iam_as(token)
        .get_account_password_policy(proto::GetAccountPasswordPolicyRequest {})
        .await
        .expect("GetAccountPasswordPolicy")
        .into_inner()
        .password_policy
        .expect("password policy")
}

#[tokio::test]
async fn password_policy_round_trips_and_refuses_out_of_range_values() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    set_policy(&server, &admin, strict_policy())
        .await
        .expect("UpdateAccountPasswordPolicy");
    let read = get_policy(&server, &admin).await;
    assert_eq!(
        read,
        proto::PasswordPolicy {
            expire_passwords: true,
            ..strict_policy()
        }
    );

    let cases: [(&str, proto::PasswordPolicy); 4] = [
        (
            "minimum_password_length",
            proto::PasswordPolicy {
                minimum_password_length: 5,
                ..strict_policy()
            },
        ),
        (
            "password_reuse_prevention",
            proto::PasswordPolicy {
                password_reuse_prevention: 25,
                ..strict_policy()
            },
        ),
        (
            "max_password_age",
            proto::PasswordPolicy {
                max_password_age: 1096,
                ..strict_policy()
            },
        ),
        (
            "max_password_age",
            proto::PasswordPolicy {
                max_password_age: -1,
                ..strict_policy()
            },
        ),
    ];
    for (field, policy) in cases {
        assert_status(
            set_policy(&server, &admin, policy).await,
            Code::InvalidArgument,
            &[field],
        );
    }
    // The refused updates changed nothing.
    assert_eq!(get_policy(&server, &admin).await, read);
}

#[tokio::test]
async fn a_weak_password_is_refused_naming_the_field() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    set_policy(&server, &admin, strict_policy()).await.unwrap();
    server.create_user(&admin, "weak").await;
    let mut iam = server.iam_as(&admin);
    for (password, rule) in [
        ("sh0rt-pw!", "at least 12"),
        ("no-numbers-here!", "number"),
        ("n0symbolsinhere", "symbol"),
    ] {
        let status = assert_status(
            iam.create_login_profile(proto::CreateLoginProfileRequest {
                user_name: "weak".into(),
                password: password.into(),
                password_reset_required: false,
            })
            .await,
            Code::InvalidArgument,
            &["password", rule],
        );
        assert!(
            !status.message().contains(password),
            "the error repeats the password: {}",
            status.message()
        );
    }
    // Nothing was stored.
    assert_status(
        iam.get_login_profile(proto::GetLoginProfileRequest {
            user_name: "weak".into(),
        })
        .await,
        Code::NotFound,
        &[],
    );
    iam.create_login_profile(proto::CreateLoginProfileRequest {
        user_name: "weak".into(),
        password: "str0ng-enough!".into(),
        password_reset_required: false,
    })
    .await
    .expect("a password that meets the policy");
}

#[tokio::test]
async fn reset_required_allows_only_a_password_change() {
    const FIRST: &str = "first-passw0rd!";
    const RESET: &str = "admin-set-passw0rd!";
    const NEW: &str = "my-own-passw0rd!";
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    set_policy(&server, &admin, strict_policy()).await.unwrap();
    server
        .create_user_with_password(&admin, "dave", FIRST)
        .await;
    server
        .attach_builtin(&admin, "dave", &["ReadOnlyAccess"])
        .await;
    let full = server
        .login("dave", FIRST, None)
        .await
        .unwrap()
        .session_token;
    get_self(&server, &full)
        .await
        .expect("GetUser before reset");

    server
        .iam_as(&admin)
        .update_login_profile(proto::UpdateLoginProfileRequest {
            user_name: "dave".into(),
            password: RESET.into(),
            password_reset_required: true,
        })
        .await
        .expect("UpdateLoginProfile");
    assert_invalid_credentials(server.login("dave", FIRST, None).await);
    server.after_failure();

    let restricted = server
        .login("dave", RESET, None)
        .await
        .expect("login with the reset password")
        .session_token;
    assert_eq!(caller_arn(&server, &restricted).await, arn("user", "dave"));
    assert_eq!(
        get_policy(&server, &restricted)
            .await
            .minimum_password_length,
        12
    );
    assert_status(
        get_self(&server, &restricted).await,
        Code::PermissionDenied,
        &["iam:GetUser"],
    );
    assert_status(
        list_users(&server, &restricted).await,
        Code::PermissionDenied,
        &[],
    );

    let mut iam = server.iam_as(&restricted);
    let change = |old: &str, new: &str| proto::ChangePasswordRequest {
        old_password: old.into(),
        new_password: new.into(),
    };
    assert_invalid_credentials(iam.change_password(change("not-the-passw0rd!", NEW)).await);
    // A wrong old password counts like a failed login: the next try waits out the back-off.
    assert_status(
        iam.change_password(change(RESET, NEW)).await,
        Code::Unauthenticated,
        &["retry after"],
    );
    server.after_failure();
    // The current password and the one before it are remembered (reuse prevention 2).
    for reused in [RESET, FIRST] {
        assert_status(
            iam.change_password(change(RESET, reused)).await,
            Code::InvalidArgument,
            &["new_password"],
        );
    }
    assert_status(
        iam.change_password(change(RESET, "weakpassword")).await,
        Code::InvalidArgument,
        &["new_password"],
    );
    iam.change_password(change(RESET, NEW))
        .await
        .expect("ChangePassword");

    let profile = server
        .iam_as(&admin)
        .get_login_profile(proto::GetLoginProfileRequest {
            user_name: "dave".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .login_profile
        .unwrap();
    assert!(!profile.password_reset_required);
    assert_invalid_credentials(server.login("dave", RESET, None).await);
    server.after_failure();
    let renewed = server
        .login("dave", NEW, None)
        .await
        .expect("login with the new password")
        .session_token;
    assert_eq!(get_self(&server, &renewed).await.unwrap().user_name, "dave");
    list_users(&server, &renewed)
        .await
        .expect("full rights again");
}

#[tokio::test]
async fn an_old_password_restricts_the_session_and_hard_expiry_refuses_login() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let policy = proto::PasswordPolicy {
        max_password_age: 30,
        ..strict_policy()
    };
    set_policy(&server, &admin, policy).await.unwrap();
    server
        .create_user_with_password(&admin, "erin", "erin-passw0rd-1!")
        .await;
    server
        .attach_builtin(&admin, "erin", &["ReadOnlyAccess"])
        .await;
    let fresh = server
        .login("erin", "erin-passw0rd-1!", None)
        .await
        .unwrap()
        .session_token;
    list_users(&server, &fresh).await.expect("young password");

    // 29 days: still fine; 31 days: the password has expired.
    server.advance(Duration::from_secs(29 * 86_400));
    let young = server
        .login("erin", "erin-passw0rd-1!", None)
        .await
        .unwrap()
        .session_token;
    list_users(&server, &young)
        .await
        .expect("29-day-old password");
    server.advance(Duration::from_secs(2 * 86_400));
    let expired = server
        .login("erin", "erin-passw0rd-1!", None)
        .await
        .expect("an expired password still logs in, restricted")
        .session_token;
    assert_status(
        list_users(&server, &expired).await,
        Code::PermissionDenied,
        &[],
    );
    assert_status(
        get_self(&server, &expired).await,
        Code::PermissionDenied,
        &[],
    );
    server
        .iam_as(&expired)
        .change_password(proto::ChangePasswordRequest {
            old_password: "erin-passw0rd-1!".into(),
            new_password: "erin-passw0rd-2!".into(),
        })
        .await
        .expect("ChangePassword from the restricted session");
    let renewed = server
        .login("erin", "erin-passw0rd-2!", None)
        .await
        .unwrap()
        .session_token;
    list_users(&server, &renewed)
        .await
        .expect("changed password");

    // The admin's own password is as old: change it first, then turn on hard expiry.
    let admin = server.admin_login().await;
    assert_status(
        list_users(&server, &admin).await,
        Code::PermissionDenied,
        &[],
    );
    server
        .iam_as(&admin)
        .change_password(proto::ChangePasswordRequest {
            old_password: ADMIN_PASSWORD.into(),
            new_password: "new admin passw0rd!".into(),
        })
        .await
        .expect("admin changes the expired password");
    let code = server.fresh_code(&server.admin_seed.clone());
    let admin = server
        .login(ADMIN, "new admin passw0rd!", Some(&code))
        .await
        .unwrap()
        .session_token;
    set_policy(
        &server,
        &admin,
        proto::PasswordPolicy {
            hard_expiry: true,
            ..policy
        },
    )
    .await
    .expect("hard expiry on");
    server.advance(Duration::from_secs(31 * 86_400));
    assert_invalid_credentials(server.login("erin", "erin-passw0rd-2!", None).await);
}

// ---- 5. access keys -------------------------------------------------------------------

#[tokio::test]
async fn access_key_lifecycle() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "svc").await;
    server
        .attach_builtin(&admin, "svc", &["ReadOnlyAccess"])
        .await;
    let mut iam = server.iam_as(&admin);
    let mut keys = Vec::new();
    for _ in 0..2 {
        let key = iam
            .create_access_key(proto::CreateAccessKeyRequest {
                user_name: "svc".into(),
            })
            .await
            .expect("CreateAccessKey")
            .into_inner()
            .access_key
            .unwrap();
        assert!(
            key.access_key_id.starts_with("AKIA") && key.access_key_id.len() >= 20,
            "{}",
            key.access_key_id
        );
        assert_eq!(key.secret_access_key.len(), 40);
        assert_eq!(key.status, "Active");
        assert_eq!(key.user_name, "svc");
        keys.push((key.access_key_id, key.secret_access_key));
    }
    assert_ne!(keys[0], keys[1]);
    assert_status(
        iam.create_access_key(proto::CreateAccessKeyRequest {
            user_name: "svc".into(),
        })
        .await,
        Code::ResourceExhausted,
        &[],
    );
    let (id1, secret1) = keys[0].clone();
    let (id2, secret2) = keys[1].clone();

    let last_used = |id: &str| {
        let mut iam = server.iam_as(&admin);
        let id = id.to_string();
        async move {
            iam.get_access_key_last_used(proto::GetAccessKeyLastUsedRequest { access_key_id: id })
                .await
                .expect("GetAccessKeyLastUsed")
                .into_inner()
        }
    };
    let before = last_used(&id1).await;
    assert_eq!(before.user_name, "svc");
    assert!(
        before
            .access_key_last_used
            .as_ref()
            .unwrap()
            .last_used_date
            .is_none()
    );

    server.advance(Duration::from_secs(5));
    let session = key_login(&server, &id1, &secret1)
        .await
        .expect("login with the key");
    let claims = jwt_claims(&session);
    assert_eq!(claims["amr"], serde_json::json!(["key"]));
    assert_eq!(claims["sub"], arn("user", "svc"));
    assert_eq!(claims["stint"]["mfa_present"], false);
    let used = last_used(&id1).await.access_key_last_used.unwrap();
    assert_eq!(timestamp_secs(&used.last_used_date), server.now_secs());
    assert!(
        last_used(&id2)
            .await
            .access_key_last_used
            .unwrap()
            .last_used_date
            .is_none()
    );

    // The key's own session lists its keys (self), and no listing carries a secret.
    for (token, user_name) in [(&session, ""), (&admin, "svc")] {
        let listed = server
            .iam_as(token)
            .list_access_keys(proto::ListAccessKeysRequest {
                user_name: user_name.into(),
                ..Default::default()
            })
            .await
            .expect("ListAccessKeys")
            .into_inner();
        let ids: Vec<&str> = listed
            .access_key_metadata
            .iter()
            .map(|k| k.access_key_id.as_str())
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&id1.as_str()) && ids.contains(&id2.as_str()));
        let dump = format!("{listed:?}");
        assert!(
            !dump.contains(&secret1) && !dump.contains(&secret2),
            "{dump}"
        );
    }

    // Inactive: refused exactly like a wrong secret.
    iam.update_access_key(proto::UpdateAccessKeyRequest {
        user_name: "svc".into(),
        access_key_id: id1.clone(),
        status: "Inactive".into(),
    })
    .await
    .expect("UpdateAccessKey Inactive");
    assert_invalid_credentials(key_login(&server, &id1, &secret1).await);
    server.after_failure();
    assert_status(
        iam.update_access_key(proto::UpdateAccessKeyRequest {
            user_name: "svc".into(),
            access_key_id: id1.clone(),
            status: "Paused".into(),
        })
        .await,
        Code::InvalidArgument,
        &["status"],
    );
    iam.update_access_key(proto::UpdateAccessKeyRequest {
        user_name: "svc".into(),
        access_key_id: id1.clone(),
        status: "Active".into(),
    })
    .await
    .expect("UpdateAccessKey Active");
    key_login(&server, &id1, &secret1)
        .await
        .expect("active again");

    // Delete: gone from the list, refused at login, and the slot is free again.
    iam.delete_access_key(proto::DeleteAccessKeyRequest {
        user_name: "svc".into(),
        access_key_id: id2.clone(),
    })
    .await
    .expect("DeleteAccessKey");
    let listed = iam
        .list_access_keys(proto::ListAccessKeysRequest {
            user_name: "svc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_key_metadata;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].access_key_id, id1);
    assert_eq!(listed[0].status, "Active");
    assert_invalid_credentials(key_login(&server, &id2, &secret2).await);
    server.after_failure();
    iam.create_access_key(proto::CreateAccessKeyRequest {
        user_name: "svc".into(),
    })
    .await
    .expect("a new key after deleting one");

    // Every key change is in the rotation log, with no secret.
    let rotations = server
        .audit_as(&admin)
        .list_rotations(proto::ListRotationsRequest::default())
        .await
        .expect("ListRotations")
        .into_inner()
        .events;
    let with = |name: &str, id: &str| {
        rotations
            .iter()
            .filter(|e| e.event_name == name && e.event_json.contains(id))
            .count()
    };
    // Inactive and Active; "Paused" never reached the broker.
    assert_eq!(with("iam:UpdateAccessKey", &id1), 2, "{rotations:#?}");
    assert_eq!(with("iam:DeleteAccessKey", &id2), 1, "{rotations:#?}");
    let creates = rotations
        .iter()
        .filter(|e| e.event_name == "iam:CreateAccessKey")
        .count();
    assert_eq!(creates, 4, "two keys, one refused, one after the delete");
    // Which key was created is on record.
    assert_eq!(with("iam:CreateAccessKey", &id1), 1, "{rotations:#?}");
    assert_eq!(with("iam:CreateAccessKey", &id2), 1, "{rotations:#?}");
    for event in &rotations {
        assert!(
            !event.event_json.contains(&secret1) && !event.event_json.contains(&secret2),
            "{}",
            event.event_json
        );
    }
}

// ---- 6. lockout audit -----------------------------------------------------------------

#[tokio::test]
async fn a_lockout_and_its_end_are_audited() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "right-password-1")
        .await;
    assert!(
        events_named(&server, &admin, "stint:Lockout")
            .await
            .is_empty()
    );

    let lockout = server.config.lockout.clone();
    for _ in 0..lockout.max_failures {
        assert_invalid_credentials(server.login("dev", "wrong-password", None).await);
        server.after_failure();
    }
    let locks = events_named(&server, &admin, "stint:Lockout").await;
    let user_lock = locks
        .iter()
        .find(|e| e.event_json.contains("user:dev"))
        .unwrap_or_else(|| panic!("no lockout of user:dev in {locks:#?}"));
    assert_eq!(user_lock.outcome, "Deny");
    assert!(
        events_named(&server, &admin, "stint:LockoutEnded")
            .await
            .is_empty()
    );

    // Served, but nobody has tried since: nothing to record yet.
    server.advance(Duration::from_secs(lockout.lockout_seconds + 1));
    assert!(
        events_named(&server, &admin, "stint:LockoutEnded")
            .await
            .is_empty()
    );
    // The next attempt clears it, and that is recorded.
    server
        .login("dev", "right-password-1", None)
        .await
        .expect("login after the lock");
    let ended = events_named(&server, &admin, "stint:LockoutEnded").await;
    assert!(
        ended.iter().any(|e| e.event_json.contains("user:dev")),
        "{ended:#?}"
    );
    assert!(ended.iter().all(|e| e.seq > user_lock.seq));
}

// ---- 7. indistinguishable answers for access keys -------------------------------------

#[tokio::test]
async fn unknown_key_wrong_secret_and_inactive_key_answer_alike() {
    let server = TestServer::start_with(|c| c.lockout.max_failures = 10).await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "svc").await;
    let mut iam = server.iam_as(&admin);
    let key = || {
        let mut iam = iam.clone();
        async move {
            iam.create_access_key(proto::CreateAccessKeyRequest {
                user_name: "svc".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_key
            .unwrap()
        }
    };
    let active = key().await;
    let inactive = key().await;
    iam.update_access_key(proto::UpdateAccessKeyRequest {
        user_name: "svc".into(),
        access_key_id: inactive.access_key_id.clone(),
        status: "Inactive".into(),
    })
    .await
    .unwrap();

    let unknown_id = format!("AKIA{}", "Q".repeat(17));
    let wrong_secret = "x".repeat(40);
    let attempts = [
        (unknown_id.as_str(), active.secret_access_key.as_str()),
        (active.access_key_id.as_str(), wrong_secret.as_str()),
        (active.access_key_id.as_str(), ""),
        (
            inactive.access_key_id.as_str(),
            inactive.secret_access_key.as_str(),
        ),
    ];
    let mut answers = Vec::new();
    for (id, secret) in attempts {
        let status = key_login(&server, id, secret).await.expect_err("refused");
        answers.push((id.to_string(), status.code(), status.message().to_string()));
        server.after_failure();
    }
    for (id, code, message) in &answers {
        assert_eq!(
            (*code, message.as_str()),
            (Code::Unauthenticated, "invalid credentials"),
            "key id {id:?}"
        );
    }
    // An id that cannot be an access key id is malformed input, named as such (AWS:
    // AccessKeyId is 16 to 128 word characters).
    for id in ["", "AKIA", "AKIA/../../etc/passwd"] {
        assert_status(
            key_login(&server, id, "x").await,
            Code::InvalidArgument,
            &["access_key_id"],
        );
    }
    key_login(&server, &active.access_key_id, &active.secret_access_key)
        .await
        .expect("the right secret still works");
}

// ---- 8. credential report -------------------------------------------------------------

/// Splits one RFC 4180 CSV line into fields.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

async fn report(
    server: &TestServer,
    token: &str,
    format: &str,
) -> Result<proto::GetCredentialReportResponse, tonic::Status> {
    Ok(server
        .iam_as(token)
        .get_credential_report(proto::GetCredentialReportRequest {
            format: format.into(),
        })
        .await?
        .into_inner())
}

/// CSV rows keyed by user name, each a map of column → value.
fn csv_rows(content: &[u8]) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::str::from_utf8(content).expect("UTF-8 CSV");
    let mut lines = text.lines();
    let header = csv_fields(lines.next().expect("header"));
    lines
        .map(|line| {
            let cells = csv_fields(line);
            assert_eq!(
                cells.len(),
                header.len(),
                "row {line:?} vs header {header:?}"
            );
            header.iter().cloned().zip(cells).collect()
        })
        .collect()
}

#[tokio::test]
async fn credential_report_lists_every_user_in_csv_and_json() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "alice", "alice-password-1")
        .await;
    server.create_user(&admin, "svc").await;
    let key = server
        .iam_as(&admin)
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "svc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_key
        .unwrap();
    key_login(&server, &key.access_key_id, &key.secret_access_key)
        .await
        .unwrap();

    // Without a grant: refused.
    let alice = server
        .login("alice", "alice-password-1", None)
        .await
        .unwrap()
        .session_token;
    assert_status(
        report(&server, &alice, "csv").await,
        Code::PermissionDenied,
        &["iam:GetCredentialReport"],
    );
    assert_status(
        report(&server, &admin, "xml").await,
        Code::InvalidArgument,
        &["format"],
    );

    let csv = report(&server, &admin, "csv").await.expect("csv report");
    assert_eq!(csv.report_format, "text/csv");
    assert_eq!(timestamp_secs(&csv.generated_time), server.now_secs());
    let rows = csv_rows(&csv.content);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["user"] == name)
            .unwrap_or_else(|| panic!("{name} not in {rows:#?}"))
    };
    let expect = [
        // user, password_enabled, mfa_active, access_key_1_active
        (ADMIN, "true", "true", "false"),
        ("alice", "true", "false", "false"),
        ("svc", "false", "false", "true"),
    ];
    for (user, password, mfa, key1) in expect {
        let r = row(user);
        assert_eq!(r["arn"], arn("user", user));
        assert_eq!(r["password_enabled"], password, "{user}");
        assert_eq!(r["mfa_active"], mfa, "{user}");
        assert_eq!(r["access_key_1_active"], key1, "{user}");
        assert_eq!(r["access_key_2_active"], "false", "{user}");
    }
    assert_ne!(row("svc")["access_key_1_last_used_date"], "N/A");
    assert_eq!(row("svc")["access_key_2_last_rotated"], "N/A");
    assert_ne!(row("alice")["password_last_used"], "N/A");

    let json = report(&server, &admin, "json").await.expect("json report");
    assert_eq!(json.report_format, "application/json");
    let parsed: Vec<serde_json::Value> =
        serde_json::from_slice(&json.content).expect("JSON report");
    assert_eq!(parsed.len(), 3);
    for (user, password, mfa, key1) in expect {
        let r = parsed
            .iter()
            .find(|r| r["user"] == user)
            .unwrap_or_else(|| panic!("{user} not in {parsed:#?}"));
        assert_eq!(r["password_enabled"].to_string(), password, "{user}");
        assert_eq!(r["mfa_active"].to_string(), mfa, "{user}");
        assert_eq!(r["access_key_1"]["active"].to_string(), key1, "{user}");
    }
    let dump =
        String::from_utf8_lossy(&csv.content).to_string() + &String::from_utf8_lossy(&json.content);
    assert!(!dump.contains(&key.secret_access_key));
}

#[tokio::test]
async fn credential_report_csv_quotes_names_with_commas() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    // IAM user names may contain commas.
    server.create_user(&admin, "last,first").await;
    let csv = report(&server, &admin, "csv").await.expect("csv report");
    let rows = csv_rows(&csv.content);
    let row = rows
        .iter()
        .find(|r| r["user"] == "last,first")
        .unwrap_or_else(|| panic!("no row for last,first in {rows:#?}"));
    assert_eq!(row["arn"], arn("user", "last,first"));
    assert_eq!(row["password_enabled"], "false");
}

/// A service logging in with its access key many times a minute costs one write per
/// login: its session, with its audit event. The key's last-used time (kept to the
/// minute) and the lockout rows (no failures to clear, an address already known) are not
/// rewritten each time; a minute later the last-used time moves again.
#[tokio::test]
async fn a_repeated_key_login_writes_only_its_session_and_event() {
    let store = Arc::new(FaultStore::default());
    let server = TestServer::builder().faults(&store).start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "svc").await;
    let (id, secret) = server.create_access_key(&admin, "svc").await;
    let last_used = || async {
        let used = server
            .iam_as(&admin)
            .get_access_key_last_used(proto::GetAccessKeyLastUsedRequest {
                access_key_id: id.clone(),
            })
            .await
            .expect("GetAccessKeyLastUsed")
            .into_inner()
            .access_key_last_used
            .unwrap();
        timestamp_secs(&used.last_used_date)
    };

    key_login(&server, &id, &secret).await.expect("first login");
    let first = server.now_secs();
    let writes = store.unaudited_commits();
    for _ in 0..3 {
        server.advance(Duration::from_secs(15));
        key_login(&server, &id, &secret).await.expect("login again");
    }
    assert_eq!(
        store.unaudited_commits(),
        writes,
        "no write besides the mints"
    );
    assert_eq!(last_used().await, first);

    server.advance(Duration::from_secs(15));
    key_login(&server, &id, &secret)
        .await
        .expect("a minute later");
    assert_eq!(store.unaudited_commits(), writes + 1, "last used, once");
    assert_eq!(last_used().await, server.now_secs());
}
