//! The `stint-client` library against the real daemon: logins, role assumption,
//! `RefreshingCredentials` across expiry, key rotation and an outage (on the server's
//! manual clock, shared with the client), the `Verifier` following a rotation, and
//! `BearerAuthLayer` guarding another gRPC service.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use stint::broker::{Clock as _, ManualClock};
use stint::proto;
use stint_client::{
    AssumeRole, BearerAuthLayer, Client, CredentialState, Error, RefreshConfig,
    RefreshingCredentials, Secret, SharedClock, Source, TokenKind, Verifier, VerifierConfig,
    VerifyError,
};

use crate::common::*;

/// The client reads the same manual clock as the server.
fn shared_clock(clock: &Arc<ManualClock>) -> SharedClock {
    let clock = clock.clone();
    Arc::new(move || clock.now())
}

async fn client(server: &TestServer) -> Client {
    Client::connect(format!("http://{}", server.addr))
        .await
        .expect("connect")
}

/// A service user `svc` with an access key, and a role `worker` that trusts it.
async fn service_setup(server: &TestServer, admin: &str) -> proto::AccessKey {
    let mut iam = server.iam_as(admin);
    iam.create_user(proto::CreateUserRequest {
        user_name: "svc".into(),
        ..Default::default()
    })
    .await
    .expect("CreateUser");
    let key = iam
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "svc".into(),
        })
        .await
        .expect("CreateAccessKey")
        .into_inner()
        .access_key
        .expect("key");
    iam.create_role(proto::CreateRoleRequest {
        role_name: "worker".into(),
        assume_role_policy_document: trust(&arn("user", "svc"), None),
        ..Default::default()
    })
    .await
    .expect("CreateRole");
    key
}

fn worker_role(duration_secs: u64) -> AssumeRole {
    AssumeRole {
        duration: Some(Duration::from_secs(duration_secs)),
        ..AssumeRole::new(arn("role", "worker"), "batch")
    }
}

fn source(key: &proto::AccessKey) -> Source {
    Source::access_key(
        key.access_key_id.clone(),
        Secret::new(key.secret_access_key.clone()),
    )
}

fn kid(token: &Secret) -> String {
    jwt_header(token.expose())["kid"]
        .as_str()
        .expect("kid")
        .to_owned()
}

async fn rotate(server: &TestServer, admin: &str) {
    server
        .keys_as(admin)
        .rotate_signing_key(proto::RotateSigningKeyRequest {})
        .await
        .expect("RotateSigningKey");
}

#[tokio::test]
async fn login_with_password_and_totp_and_with_an_access_key() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "carol", "carol's long password")
        .await;
    let seed = server.enroll_mfa(&admin, "carol").await;
    let client = client(&server).await;
    let password = Secret::new("carol's long password");

    // A wrong code is refused with the server's status.
    let wrong = server
        .code_for(&seed)
        .replace(|c: char| c.is_ascii_digit(), "0");
    let err = client
        .login_password("carol", &password, Some(&wrong))
        .await
        .expect_err("wrong TOTP code");
    assert!(matches!(err, Error::Rpc { .. }), "{err:?}");
    assert!(!err.to_string().contains("carol's long password"), "{err}");
    server.after_failure();

    let code = server.fresh_code(&seed);
    let session = client
        .login_password("carol", &password, Some(&code))
        .await
        .expect("password + TOTP login");
    assert_eq!(
        session.caller_identity().await.unwrap().arn,
        arn("user", "carol")
    );
    assert_eq!(
        jwt_claims(session.credentials().session_token.expose())["amr"],
        serde_json::json!(["pwd", "otp"])
    );
    assert!(session.credentials().access_key_id.starts_with("ASIA"));

    let key = service_setup(&server, &admin).await;
    let session = client
        .login_access_key(
            &key.access_key_id,
            &Secret::new(key.secret_access_key.clone()),
            None,
        )
        .await
        .expect("access key login");
    let identity = session.caller_identity().await.unwrap();
    assert_eq!(identity.arn, arn("user", "svc"));
    assert_eq!(identity.account, ACCOUNT);
    let err = client
        .login_access_key(&key.access_key_id, &Secret::new("not the secret"), None)
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
}

#[tokio::test]
async fn assume_role_through_the_library() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    let client = client(&server).await;
    let session = client
        .login_access_key(
            &key.access_key_id,
            &Secret::new(key.secret_access_key.clone()),
            None,
        )
        .await
        .unwrap();
    let worker = session
        .assume_role(worker_role(900))
        .await
        .expect("AssumeRole");
    assert_eq!(
        worker.caller_identity().await.unwrap().arn,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/worker/batch")
    );
    assert_eq!(
        worker.credentials().expiration,
        UNIX_EPOCH + Duration::from_secs(server.now_secs() as u64 + 900)
    );
    // A role whose trust policy does not name the caller: the server's refusal comes back.
    let err = session
        .assume_role(AssumeRole::new(arn("role", "nobody"), "x"))
        .await
        .expect_err("unknown role");
    assert!(err.code().is_some(), "{err:?}");
}

#[tokio::test]
async fn refreshing_credentials_across_expiry_and_key_rotation() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    let creds = RefreshingCredentials::start_with_clock(
        client(&server).await,
        source(&key),
        RefreshConfig {
            role: Some(worker_role(900)),
            background: false,
            ..RefreshConfig::default()
        },
        shared_clock(&server.clock),
    )
    .await
    .expect("start");
    let first = creds.credentials().await.unwrap();
    assert_eq!(creds.state(), CredentialState::Fresh);

    // Before 70 % of 900 s nothing changes; at 90 % it has refreshed.
    server.advance(Duration::from_secs(629));
    assert_eq!(creds.credentials().await.unwrap(), first);
    server.advance(Duration::from_secs(181));
    let second = creds.credentials().await.unwrap();
    assert_ne!(second.access_key_id, first.access_key_id);
    assert!(second.expiration > first.expiration);

    // The signing key rotates; the next credentials (after the first expired) carry the
    // new kid, and they work.
    let old_kid = kid(&second.session_token);
    rotate(&server, &admin).await;
    server.advance(Duration::from_secs(901));
    assert!(!second.is_valid_at(server.now()));
    let third = creds.credentials().await.expect("refreshed across expiry");
    assert!(third.is_valid_at(server.now()));
    assert_ne!(kid(&third.session_token), old_kid);
    let session = creds.session().await.unwrap();
    assert_eq!(
        session.caller_identity().await.unwrap().arn,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/worker/batch")
    );
    assert_eq!(creds.state(), CredentialState::Fresh);
}

#[tokio::test]
async fn refreshing_credentials_serve_stale_while_stint_is_down() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    let clock = server.clock.clone();
    let creds = RefreshingCredentials::start_with_clock(
        Client::connect_lazy(format!("http://{}", server.addr)).unwrap(),
        source(&key),
        RefreshConfig {
            role: Some(worker_role(900)),
            background: false,
            ..RefreshConfig::default()
        },
        shared_clock(&clock),
    )
    .await
    .expect("start");
    let good = creds.credentials().await.unwrap();
    server.stop().await.expect("stop");

    // Past the refresh point: the refresh fails, the last good credentials are served.
    clock.advance(Duration::from_secs(820));
    assert_eq!(creds.credentials().await.unwrap(), good);
    match creds.state() {
        CredentialState::Stale { last_error } => {
            assert!(last_error.contains("cannot reach Stint"), "{last_error}")
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    // Past expiry: nothing to serve.
    clock.advance(Duration::from_secs(81));
    let err = creds.credentials().await.expect_err("expired");
    assert!(matches!(err, Error::Expired { .. }), "{err:?}");
    assert_eq!(creds.state(), CredentialState::Expired);
}

#[tokio::test]
async fn verifier_refetches_the_jwks_on_an_unknown_kid_rate_limited() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    let client = client(&server).await;
    let config = VerifierConfig::new(server.broker().issuer(), &server.config.tokens.audience);
    let verifier = Verifier::with_clock(client.clone(), config, shared_clock(&server.clock))
        .await
        .expect("JWKS fetched");
    let login = || async {
        client
            .login_access_key(
                &key.access_key_id,
                &Secret::new(key.secret_access_key.clone()),
                None,
            )
            .await
            .expect("login")
            .credentials()
            .clone()
    };
    let before = verifier.cached_kids();
    // The fetch at construction counts for the rate limit (one per 30 s).
    server.advance(Duration::from_secs(31));

    // Two rotations: the key now signing was not even pending at the first fetch.
    rotate(&server, &admin).await;
    rotate(&server, &admin).await;
    let token = login().await.session_token;
    assert!(!before.contains(&kid(&token)), "{before:?}");
    let claims = verifier
        .verify(token.expose())
        .await
        .expect("refetched and verified");
    assert_eq!(claims.sub, arn("user", "svc"));
    assert_eq!(claims.stint.kind, TokenKind::Session);
    assert!(verifier.cached_kids().contains(&kid(&token)));

    // Two more rotations within 30 s: the refetch is rate-limited, so the unknown kid is
    // refused until the interval has passed.
    rotate(&server, &admin).await;
    rotate(&server, &admin).await;
    let newer = login().await.session_token;
    assert_eq!(
        verifier.verify(newer.expose()).await,
        Err(VerifyError::UnknownKey(kid(&newer)))
    );
    server.advance(Duration::from_secs(31));
    assert!(verifier.verify(newer.expose()).await.is_ok());
}

/// A grpc.health service behind `BearerAuthLayer` on a port of its own.
async fn guarded_health(verifier: Verifier) -> HealthClient<tonic::transport::Channel> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(BearerAuthLayer::new(verifier))
            .add_service(health)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn check(
    health: &mut HealthClient<tonic::transport::Channel>,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    health.check(request).await.map(|_| ())
}

#[tokio::test]
async fn bearer_layer_refuses_forged_expired_and_wrong_audience_tokens() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    let client = client(&server).await;
    let clock = shared_clock(&server.clock);
    let issuer = server.broker().issuer().to_string();
    let ours = VerifierConfig::new(&issuer, &server.config.tokens.audience);
    let mut guarded = guarded_health(
        Verifier::with_clock(client.clone(), ours, clock.clone())
            .await
            .unwrap(),
    )
    .await;
    let token = client
        .login_access_key(
            &key.access_key_id,
            &Secret::new(key.secret_access_key.clone()),
            None,
        )
        .await
        .unwrap()
        .credentials()
        .session_token
        .clone();
    check(&mut guarded, Some(token.expose()))
        .await
        .expect("a valid token passes");

    // Missing header.
    assert_status(
        check(&mut guarded, None).await,
        Code::Unauthenticated,
        &["missing"],
    );
    // Forged: the payload rewritten to claim the admin, signature kept.
    let parts: Vec<&str> = token.expose().split('.').collect();
    let mut claims = jwt_claims(token.expose());
    claims["sub"] = arn("user", ADMIN).into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    assert_status(
        check(&mut guarded, Some(&forged)).await,
        Code::Unauthenticated,
        &["signature"],
    );
    // Forged: alg none, no signature.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    assert_status(
        check(&mut guarded, Some(&none)).await,
        Code::Unauthenticated,
        &[],
    );
    // Wrong audience: the same valid token at an app that expects its own audience.
    let mut billing = guarded_health(
        Verifier::with_clock(
            client.clone(),
            VerifierConfig::new(&issuer, "billing"),
            clock.clone(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_status(
        check(&mut billing, Some(token.expose())).await,
        Code::Unauthenticated,
        &["audience"],
    );
    // Expired: past exp plus the 30 s leeway on the shared clock.
    let exp = jwt_claims(token.expose())["exp"].as_i64().unwrap();
    server.advance(Duration::from_secs((exp - server.now_secs() + 30) as u64));
    assert_status(
        check(&mut guarded, Some(token.expose())).await,
        Code::Unauthenticated,
        &["expired"],
    );
}

/// What `examples/guarded_service.rs` does where offline claims are not enough: the app,
/// with its own session, asks `Authorize` about the caller's token.
#[tokio::test]
async fn an_app_asks_authorize_about_its_caller() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    server
        .put_role_policy(
            &admin,
            "worker",
            "health",
            &allow(&["health:Check"], &["arn:stint:health:::reports"]),
        )
        .await;
    let client = client(&server).await;
    let app = client
        .login_access_key(
            &key.access_key_id,
            &Secret::new(key.secret_access_key.clone()),
            None,
        )
        .await
        .unwrap();
    let caller = app.assume_role(worker_role(900)).await.unwrap();
    let token = &caller.credentials().session_token;
    for (resource, want) in [
        ("arn:stint:health:::reports", stint_client::Decision::Allow),
        (
            "arn:stint:health:::billing",
            stint_client::Decision::ImplicitDeny,
        ),
    ] {
        assert_eq!(
            app.authorize(token, "health:Check", resource)
                .await
                .unwrap(),
            want,
            "{resource}"
        );
    }
    // A garbage subject token is the server's INVALID_ARGUMENT, naming the field.
    let err = app
        .authorize(&Secret::new("garbage"), "health:Check", "*")
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("session_token"), "{err}");
}

/// A daemon serving TLS with `fixtures/server.pem` (signed by `fixtures/ca.pem`).
async fn tls_daemon() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    use ring::rand::SystemRandom;
    use stint::config::{Argon2Config, Config};
    use stint::core::secret::SecretString;
    use stint::daemon::Daemon;
    use stint::rpc::TlsFiles;
    use stint::store::seal::MasterKey;

    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        argon2: Argon2Config {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(start_time()));
    let master = MasterKey::generate(&SystemRandom::new()).unwrap();
    let daemon = Daemon::open_with_master(config, master, clock).expect("daemon");
    daemon
        .broker
        .bootstrap_admin(ADMIN, &SecretString::new(ADMIN_PASSWORD.into()))
        .await
        .expect("bootstrap");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tls = TlsFiles {
        cert_pem: include_bytes!("fixtures/server.pem").to_vec(),
        key_pem: include_bytes!("fixtures/server.key").to_vec(),
    };
    tokio::spawn(async move {
        daemon
            .serve(listener, Some(tls), async {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop, dir)
}

const TEST_CA: &[u8] = include_bytes!("fixtures/ca.pem");

#[tokio::test]
async fn https_trusts_the_given_ca_and_refuses_an_unknown_issuer() {
    let (addr, _stop, _dir) = tls_daemon().await;
    let port = addr.port();
    for host in ["localhost", "127.0.0.1"] {
        let config = stint_client::ClientConfig::new(format!("https://{host}:{port}"))
            .with_ca_cert_pem(TEST_CA);
        let client = Client::connect(config).await.expect("TLS with the CA");
        let verifier = Verifier::new(client, VerifierConfig::new("stint", "stint"))
            .await
            .expect("GetJwks over TLS");
        assert!(!verifier.cached_kids().is_empty(), "{host}");
    }
    // System roots only: the test CA is not among them, so the handshake fails.
    let err = Client::connect(format!("https://localhost:{port}"))
        .await
        .expect_err("an unknown issuer is refused");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Plain HTTP to a non-loopback name is refused before any connection.
    let err = Client::connect("http://stint.example:7420")
        .await
        .expect_err("plaintext");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// Polls `done` for up to 10 s: waits for the revocation stream to deliver (real time;
/// no expiry is involved).
async fn eventually(mut done: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn verifier_follows_revocations_within_seconds() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    server
        .iam_as(&admin)
        .put_user_policy(proto::PutUserPolicyRequest {
            user_name: "svc".into(),
            policy_name: "follow-revocations".into(),
            policy_document: allow(&["stint:WatchRevocations"], &["*"]),
        })
        .await
        .expect("PutUserPolicy");
    let client = client(&server).await;
    let clock = shared_clock(&server.clock);
    let app = RefreshingCredentials::start_with_clock(
        client.clone(),
        source(&key),
        RefreshConfig {
            background: false,
            ..RefreshConfig::default()
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let config = VerifierConfig::new(server.broker().issuer(), &server.config.tokens.audience);
    let verifier = Verifier::with_clock(client.clone(), config, clock)
        .await
        .unwrap();
    let _following = verifier.follow_revocations(app.clone());
    assert!(
        eventually(async || verifier.revocations_synced()).await,
        "never synced"
    );

    // Callers: two role sessions assumed by the service user.
    let base = app.session().await.unwrap();
    let first = base.assume_role(worker_role(900)).await.unwrap();
    let second = base.assume_role(worker_role(900)).await.unwrap();
    let (first, second) = (
        first.credentials().session_token.clone(),
        second.credentials().session_token.clone(),
    );
    verifier
        .verify(first.expose())
        .await
        .expect("valid before revocation");

    // Revoked by session id: refused offline within seconds, the other still fine.
    let jti = jwt_claims(first.expose())["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            session_id: jti,
            ..Default::default()
        })
        .await
        .expect("RevokeSession");
    assert!(
        eventually(async || verifier.verify(first.expose()).await == Err(VerifyError::Revoked))
            .await,
        "revocation by id never arrived"
    );
    verifier.verify(second.expose()).await.expect("not revoked");

    // Everything issued for the role: the second session goes too; a session assumed
    // after the cutoff verifies.
    server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            role_arn: arn("role", "worker"),
            ..Default::default()
        })
        .await
        .expect("RevokeSession by role");
    assert!(
        eventually(async || verifier.verify(second.expose()).await == Err(VerifyError::Revoked))
            .await,
        "revocation by role never arrived"
    );
    server.advance(Duration::from_secs(1));
    let later = base.assume_role(worker_role(900)).await.unwrap();
    verifier
        .verify(later.credentials().session_token.expose())
        .await
        .expect("issued after the cutoff");
}

#[tokio::test]
async fn watch_revocations_needs_a_grant() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let key = service_setup(&server, &admin).await;
    let token = client(&server)
        .await
        .login_access_key(
            &key.access_key_id,
            &Secret::new(key.secret_access_key.clone()),
            None,
        )
        .await
        .unwrap()
        .credentials()
        .session_token
        .clone();
    // No bearer token: UNAUTHENTICATED.
    let anonymous = proto::tokens_client::TokensClient::new(server.channel())
        .watch_revocations(proto::WatchRevocationsRequest {})
        .await;
    assert_status(anonymous.map(|_| ()), Code::Unauthenticated, &[]);
    // A session without stint:WatchRevocations: PERMISSION_DENIED, naming the action.
    let denied = server
        .tokens_as(token.expose())
        .watch_revocations(proto::WatchRevocationsRequest {})
        .await;
    assert_status(
        denied.map(|_| ()),
        Code::PermissionDenied,
        &["stint:WatchRevocations"],
    );
}
