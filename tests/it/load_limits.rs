//! Under load the server refuses quickly and cleanly (issue 12, items 2 and 3): a full
//! password-hash queue, too many requests in flight, an oversized message, a passed
//! deadline — each is a prompt status naming its limit, never a hang, and never a change
//! without its audit event.

use std::time::Duration;

use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use stint::config::{Argon2Config, Config};
use stint::proto;
use stint::proto::get_session_token_request::Credential;
use stint::store::Table;

use crate::common::*;

/// Generous bound on a burst: reaching it means something hung, not that it was slow.
const HANG: Duration = Duration::from_secs(120);

/// Argon2 costly enough (tens of ms, even optimised) that requests overlap a hash.
fn slow_hashes(config: &mut Config) {
    config.argon2 = Argon2Config {
        memory_kib: 32 * 1024,
        iterations: 2,
        parallelism: 1,
    };
}

fn login_request(user: &str, password: &str) -> proto::GetSessionTokenRequest {
    proto::GetSessionTokenRequest {
        credential: Some(Credential::Password(proto::PasswordCredential {
            user_name: user.into(),
            password: password.into(),
        })),
        token_code: String::new(),
        duration_seconds: 0,
        serial_number: String::new(),
    }
}

/// `n` logins of `user` at once on the server's connection; their results in the order
/// they completed.
async fn burst(
    server: &TestServer,
    user: &str,
    password: &str,
    n: usize,
) -> Vec<Result<(), Status>> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut sts = server.sts();
        let request = login_request(user, password);
        calls.spawn(async move { sts.get_session_token(request).await.map(|_| ()) });
    }
    tokio::time::timeout(HANG, async {
        let mut out = Vec::new();
        while let Some(result) = calls.join_next().await {
            out.push(result.expect("login task"));
        }
        out
    })
    .await
    .expect("every login of the burst answered (no hang)")
}

fn session_count(server: &TestServer) -> usize {
    server
        .store()
        .scan(Table::Sessions, b"", None, usize::MAX)
        .expect("scan sessions")
        .len()
}

#[tokio::test]
async fn a_full_hash_queue_refuses_some_logins_at_once_and_the_rest_succeed() {
    let server = TestServer::start_with(|config| {
        slow_hashes(config);
        config.limits.hash_threads = 1;
        config.limits.hash_queue = 1;
    })
    .await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "burst", "burst-password-1")
        .await;

    let results = burst(&server, "burst", "burst-password-1", 12).await;
    let refused: Vec<&Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let succeeded = results.len() - refused.len();
    assert!(succeeded >= 1, "no login got through: {refused:?}");
    assert!(
        !refused.is_empty(),
        "12 logins never overflowed a queue of 1"
    );
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("limits.hash_queue"),
            "{}",
            status.message()
        );
        let pushback = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .expect("a retry hint")
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap();
        assert!(pushback >= 1);
    }
    // Refusals checked no password: they count as no failure, and the pool serves on.
    server.session("burst", "burst-password-1").await;
    let stats = server.broker().hash_pool_stats();
    assert_eq!((stats.threads, stats.queue_bound), (1, 1));
    assert!(stats.refused >= refused.len() as u64, "{stats:?}");
}

#[tokio::test]
async fn more_slow_requests_than_the_limits_get_a_fast_refusal_naming_the_limit() {
    type Tweak = fn(&mut Config);
    let cases: [(&str, Tweak); 2] = [
        ("limits.max_concurrent_requests", |config| {
            config.limits.max_concurrent_requests = 2;
        }),
        ("for the connection", |config| {
            config.limits.max_concurrent_requests_per_connection = 2;
        }),
    ];
    for (limit, tweak) in cases {
        let server = TestServer::start_with(|config| {
            slow_hashes(config);
            config.limits.hash_threads = 1;
            tweak(config);
        })
        .await;
        let admin = server.admin_login().await;
        server
            .create_user_with_password(&admin, "slow", "slow-password-1")
            .await;

        let results = burst(&server, "slow", "slow-password-1", 8).await;
        // The admitted logins each wait for a hash; the refusals do not wait at all, so
        // the first answer is a refusal.
        let first = results[0]
            .as_ref()
            .expect_err("the first answer is a refusal");
        assert_eq!(first.code(), Code::ResourceExhausted, "{limit}: {first:?}");
        assert!(
            first.message().contains(limit),
            "{limit}: {}",
            first.message()
        );
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert!(ok >= 1, "{limit}: none admitted: {results:?}");
        for result in &results {
            if let Err(status) = result {
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "{limit}: {status:?}"
                );
            }
        }
        // Health checks are never refused for load, and the server serves on.
        let health = HealthClient::new(server.channel())
            .check(HealthCheckRequest::default())
            .await;
        assert!(health.is_ok(), "{limit}: {health:?}");
        server.session("slow", "slow-password-1").await;
    }
}

#[tokio::test]
async fn an_oversized_message_to_a_small_rpc_is_refused_naming_the_limit() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let big = "a".repeat(600 * 1024);

    // Authorize (512 KiB): refused before decoding, so before authentication too.
    let refused = server
        .tokens_as(&admin)
        .authorize(proto::AuthorizeRequest {
            session_token: admin.clone(),
            action: big.clone(),
            resource: "*".into(),
            context: vec![],
        })
        .await
        .expect_err("oversized Authorize");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    for part in ["/stint.v1.Tokens/Authorize", "512 KiB"] {
        assert!(refused.message().contains(part), "{}", refused.message());
    }
    // AssumeRole (128 KiB) and a login (4 KiB) refuse far less than an IAM call takes.
    let role = server
        .sts_as(&admin)
        .assume_role(proto::AssumeRoleRequest {
            role_arn: "a".repeat(200 * 1024),
            ..Default::default()
        })
        .await
        .expect_err("oversized AssumeRole");
    assert_eq!(role.code(), Code::ResourceExhausted, "{role:?}");
    assert!(role.message().contains("128 KiB"), "{}", role.message());
    let login = server
        .sts()
        .get_session_token(login_request(ADMIN, &"p".repeat(8 * 1024)))
        .await
        .expect_err("oversized login");
    assert_eq!(login.code(), Code::ResourceExhausted, "{login:?}");
    assert!(login.message().contains("4 KiB"), "{}", login.message());

    // The same size to PutUserPolicy passes the transport limit and meets the policy's
    // own bound (a field error instead).
    server.create_user(&admin, "carol").await;
    let put = |document: String| {
        let mut iam = server.iam_as(&admin);
        async move {
            iam.put_user_policy(proto::PutUserPolicyRequest {
                user_name: "carol".into(),
                policy_name: "big".into(),
                policy_document: document,
            })
            .await
        }
    };
    let policy = put(big.clone()).await.expect_err("oversized policy");
    assert_eq!(policy.code(), Code::InvalidArgument, "{policy:?}");
    assert!(
        policy.message().contains("policy_document"),
        "{}",
        policy.message()
    );
    // Past the IAM limit (4 MiB) it is the transport's refusal again.
    let huge = put("a".repeat(5 * 1024 * 1024))
        .await
        .expect_err("message over 4 MiB");
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
    assert!(huge.message().contains("4096 KiB"), "{}", huge.message());

    // The connection serves on.
    server
        .sts_as(&admin)
        .get_caller_identity(proto::GetCallerIdentityRequest::default())
        .await
        .expect("GetCallerIdentity after the refusals");
}

#[tokio::test]
async fn a_passed_deadline_ends_cleanly_with_nothing_half_written() {
    let server = TestServer::start_with(slow_hashes).await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "late", "late-password-1")
        .await;
    let sessions = session_count(&server);

    // A login that cannot finish within the client's deadline (one hash is longer).
    let mut request = Request::new(login_request("late", "late-password-1"));
    request.set_timeout(Duration::from_millis(2));
    let late = tokio::time::timeout(HANG, server.sts().get_session_token(request))
        .await
        .expect("answered")
        .expect_err("past its deadline");
    assert!(
        matches!(late.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{late:?}"
    );
    if late.code() == Code::DeadlineExceeded {
        assert!(
            late.message().contains("grpc-timeout"),
            "{}",
            late.message()
        );
    }
    // No session was minted for it, and it was not counted as a failure.
    assert_eq!(session_count(&server), sessions);
    server.session("late", "late-password-1").await;
    assert_eq!(session_count(&server), sessions + 1);

    // Changes cut short at any point: each user exists exactly when its event does.
    let names: Vec<String> = (0..16).map(|i| format!("cut{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut request = Request::new(proto::CreateUserRequest {
            user_name: name.clone(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_micros(50 * (i as u64 + 1)));
        let _ = server.iam_as(&admin).create_user(request).await;
    }
    let events = server.events_after(&admin, 0).await;
    for name in &names {
        let exists = server
            .iam_as(&admin)
            .get_user(proto::GetUserRequest {
                user_name: name.clone(),
            })
            .await
            .is_ok();
        let audited = events.iter().any(|e| {
            e.event_name == "iam:CreateUser"
                && e.outcome == "Allow"
                && e.event_json.contains(&format!("\"{name}\""))
        });
        assert_eq!(
            exists, audited,
            "{name}: exists {exists}, audited {audited}"
        );
    }
    let report = server.verify_chain(&admin).await;
    assert!(report.intact, "{report:?}");
}

#[tokio::test]
async fn the_server_caps_every_deadline() {
    let server = TestServer::start_with(|config| {
        slow_hashes(config);
        config.limits.request_timeout_ms = 2;
    })
    .await;
    let sessions = session_count(&server);
    // No client deadline: the server's own cap ends the login (one hash is longer).
    let late = tokio::time::timeout(
        HANG,
        server
            .sts()
            .get_session_token(login_request(ADMIN, ADMIN_PASSWORD)),
    )
    .await
    .expect("answered")
    .expect_err("past the server's deadline");
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(
        late.message().contains("limits.request_timeout_ms"),
        "{}",
        late.message()
    );
    assert_eq!(session_count(&server), sessions);
}

/// tonic routes by path alone, so a gRPC method called with another content type would
/// skip the per-RPC message cap (reflection would then buffer up to 4 MiB per message,
/// unauthenticated). Every gRPC path answers such a request 415 before reading its body.
#[tokio::test]
async fn a_grpc_method_with_another_content_type_is_refused_before_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let paths = [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/stint.v1.Sts/GetSessionToken",
        "/grpc.health.v1.Health/Check",
    ];
    // gRPC-Web is not gRPC here: the server does not speak it.
    let content_types = ["application/x", "application/grpc-web"];
    for (path, content_type) in paths
        .iter()
        .flat_map(|path| content_types.map(|content_type| (path, content_type)))
    {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        // Declares a 4 MiB message and sends none of it: a server that read the body would
        // wait, not answer.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: 4194309\r\nConnection: close\r\n\r\n\0\0\x40\0\0",
            server.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered without reading the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 415"),
            "{path} {content_type}: {answer}"
        );
    }
    // The HTTP routes are not gRPC paths.
    assert_eq!(http_get(server.addr, "/.well-known/jwks.json").await.0, 200);
}

/// A client that gives up on a login while its password is being hashed (cancel,
/// deadline, disconnect) stops that hash at its next pause: a flood of abandoned logins
/// does not keep the hashing threads busy for nobody.
#[tokio::test]
async fn a_login_abandoned_mid_hash_stops_its_hash() {
    let server = TestServer::start_with(|config| {
        // Long enough (~1 s) that the hash is still running when the client leaves.
        config.argon2 = Argon2Config {
            memory_kib: 256 * 1024,
            iterations: 4,
            parallelism: 1,
        };
        config.limits.hash_threads = 1;
    })
    .await;
    let server = &server;
    let mut sts = server.sts();
    let login = tokio::spawn(async move {
        sts.get_session_token(login_request("nobody", "some-password-1"))
            .await
    });
    let until = move |done: fn(stint::broker::HashPoolStats) -> bool| async move {
        tokio::time::timeout(HANG, async {
            while !done(server.broker().hash_pool_stats()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the hash pool reached the state");
    };
    until(|s| s.running == 1).await;
    login.abort();
    assert!(login.await.unwrap_err().is_cancelled());
    // Stopped part way (before, it ran to the end for nobody).
    until(|s| s.running == 0 && s.stopped == 1).await;
}
