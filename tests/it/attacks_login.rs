//! Issue 9, the login path attacked as a client that speaks only `proto/` would: an MFA
//! code ignored on access-key logins (#9), the disk filled through failed logins (#10),
//! throttling that punishes neighbours and can be aimed (#13), and lockout transitions
//! that could be half-written (#14).
//!
//! Different client addresses are real: the client socket is bound to another loopback
//! address (127.0.0.x) with `Endpoint::local_address`, so the daemon sees it as the peer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use stint::audit::event::EventFilter;
use stint::core::authn::totp;
use stint::proto::get_session_token_request::Credential;
use stint::proto::sts_client::StsClient;
use stint::proto::{self};
use stint::store::{Store, Table};

use crate::common::ProxyHeader::{V1, V2};
use crate::common::*;

const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Collects the server log of one test.
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// An STS client whose connection comes from `127.0.0.<last>`.
async fn sts_from(server: &TestServer, last: u8) -> StsClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .local_address(Some(loopback(last)))
        .connect()
        .await
        .expect("connect from another loopback address");
    StsClient::new(channel)
}

async fn login_from(
    server: &TestServer,
    last: u8,
    credential: Credential,
    code: Option<&str>,
) -> Result<proto::Credentials, tonic::Status> {
    sts_from(server, last)
        .await
        .get_session_token(proto::GetSessionTokenRequest {
            credential: Some(credential),
            token_code: code.unwrap_or_default().into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().credentials.expect("credentials"))
}

fn password(user: &str, password: &str) -> Credential {
    Credential::Password(proto::PasswordCredential {
        user_name: user.into(),
        password: password.into(),
    })
}

fn key(id: &str, secret: &str) -> Credential {
    Credential::AccessKey(proto::AccessKeyCredential {
        access_key_id: id.into(),
        secret_access_key: secret.into(),
    })
}

/// `invalid credentials`: the one answer for every wrong secret.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = assert_status(result, Code::Unauthenticated, &[]);
    assert_eq!(status.message(), "invalid credentials");
}

/// Refused before any check, with a `retry-after` hint (seconds).
#[track_caller]
fn assert_slowed<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> u64 {
    let status = assert_status(result, Code::Unauthenticated, &["retry after"]);
    status
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn last_seq(server: &TestServer) -> u64 {
    server.broker().audit_log().durable_seq()
}

// ---- #9: a token code with an access key ------------------------------------------------

/// AWS `GetSessionToken` with access keys plus `SerialNumber`/`TokenCode` returns MFA
/// credentials; a wrong code is an authentication failure. Stint did neither: the code
/// was ignored and the session had no MFA.
#[tokio::test]
async fn an_access_key_login_with_a_code_is_checked_against_the_owners_device() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "svc").await;
    let seed = server.enroll_mfa(&admin, "svc").await;
    let (svc_id, svc_secret) = server.create_access_key(&admin, "svc").await;
    server.create_user(&admin, "nodevice").await;
    let (plain_id, plain_secret) = server.create_access_key(&admin, "nodevice").await;
    let svc = || key(&svc_id, &svc_secret);

    // A wrong code: the same uniform answer, and counted as a failure (back-off).
    let good = server.fresh_code(&seed);
    let wrong = format!("{:06}", (good.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_invalid(login_from(&server, 1, svc(), Some(&wrong)).await);
    assert_slowed(login_from(&server, 1, svc(), Some(&good)).await);
    server.after_failure();

    // The right code: an MFA session.
    let creds = login_from(&server, 1, svc(), Some(&good))
        .await
        .expect("key + code");
    let claims = jwt_claims(&creds.session_token);
    assert_eq!(claims["amr"], serde_json::json!(["key", "otp"]));
    assert_eq!(claims["stint"]["mfa_present"], true);
    assert_eq!(claims["stint"]["mfa_auth_time"], server.now_secs());

    // The same code again: replayed, refused.
    assert_invalid(login_from(&server, 1, svc(), Some(&good)).await);
    server.after_failure();

    // No code: a key-only session, as before.
    let creds = login_from(&server, 1, svc(), None).await.expect("key only");
    let claims = jwt_claims(&creds.session_token);
    assert_eq!(claims["amr"], serde_json::json!(["key"]));
    assert_eq!(claims["stint"]["mfa_present"], false);

    // A code for an owner with no device is not a second factor.
    let code = server.code_for(&seed);
    assert_invalid(login_from(&server, 2, key(&plain_id, &plain_secret), Some(&code)).await);
    // A wrong secret with the right code does not burn the code.
    server.advance(Duration::from_secs(totp::STEP_SECONDS));
    let next = server.fresh_code(&seed);
    assert_invalid(login_from(&server, 3, key(&svc_id, &"x".repeat(40)), Some(&next)).await);
    let creds = login_from(&server, 4, svc(), Some(&next))
        .await
        .expect("the code survived a wrong secret");
    assert_eq!(
        jwt_claims(&creds.session_token)["amr"],
        serde_json::json!(["key", "otp"])
    );
}

// ---- #10: filling the disk through failed logins ----------------------------------------

/// IAM user names are 1 to 64 characters (AWS `CreateUser`); bounding them before anything
/// is written keeps a failed login from writing megabytes to the audit log.
#[tokio::test]
async fn a_four_megabyte_user_name_is_refused_quickly_and_barely_grows_the_audit_log() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let before = last_seq(&server);

    // 4 MB is refused by the RPC's message limit (4 KiB) before the broker sees it...
    assert_status(
        login_from(&server, 7, password(&"a".repeat(4_000_000), "x"), None).await,
        Code::ResourceExhausted,
        &["/stint.v1.Sts/GetSessionToken", "4 KiB"],
    );
    // ...and what fits the message is bounded by the broker before anything is written.
    let huge = "a".repeat(3_000);
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let status = assert_status(
            login_from(&server, 7, password(&huge, "whatever"), None).await,
            Code::InvalidArgument,
            &["user_name", "64"],
        );
        assert!(status.message().len() < 200, "{}", status.message());
    }
    let huge_key = key(&"A".repeat(3_000), "x");
    assert_status(
        login_from(&server, 7, huge_key, None).await,
        Code::InvalidArgument,
        &["access_key_id"],
    );
    let long_password = "p".repeat(1_025);
    assert_status(
        login_from(&server, 7, password(ADMIN, &long_password), None).await,
        Code::InvalidArgument,
        &["password", "1024"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // ListEvents still works, and five refusals took a few hundred bytes each.
    let events = server.events_after(&admin, before).await;
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.event_name == "sts:GetSessionToken")
        .collect();
    assert_eq!(refused.len(), 5, "{refused:#?}");
    let bytes: usize = refused.iter().map(|e| e.event_json.len()).sum();
    assert!(bytes < 5 * 1024, "{bytes} bytes for five refusals");
    for event in &refused {
        assert_eq!(event.principal_arn, HIDDEN);
        assert!(
            !event.event_json.contains("aaaaaaaa"),
            "{}",
            event.event_json
        );
    }
    // The admin is not slowed by any of it (none was a guess).
    server.admin_login().await;
}

/// AWS CloudTrail records `HIDDEN_DUE_TO_SECURITY_REASONS` as the user name of a failed
/// console login for an unknown user: a password typed into the user-name field must not
/// end up in the log. Known users and known access key ids are kept.
#[tokio::test]
async fn a_password_typed_as_the_user_name_never_reaches_the_audit_log_or_the_server_log() {
    // The server log, captured: a current-thread test runtime runs the daemon's request
    // handling on this thread, where this subscriber is the default.
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || LogSink(sink.clone()))
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let (dev_key_id, _) = server.create_access_key(&admin, "dev").await;
    let before = last_seq(&server);
    // Other tests, on other threads with no subscriber, may have cached "never log" for
    // the daemon's call sites meanwhile; re-ask now that this thread has one.
    tracing::callsite::rebuild_interest_cache();

    // Looks like a name (unknown), and does not (invalid): neither is written anywhere.
    let typed_as_name = "Tr0ub4dor.and.3";
    let invalid_name = "correct horse battery!";
    assert_invalid(login_from(&server, 8, password(typed_as_name, "x"), None).await);
    let status = assert_status(
        login_from(&server, 9, password(invalid_name, "x"), None).await,
        Code::InvalidArgument,
        &["user_name"],
    );
    assert!(!status.message().contains("horse"), "{}", status.message());
    let unknown_key = format!("AKIA{}", "Z".repeat(16));
    assert_invalid(login_from(&server, 8, key(&unknown_key, "x"), None).await);
    // Known ones are kept.
    assert_invalid(login_from(&server, 10, password("dev", "wrong"), None).await);
    assert_invalid(login_from(&server, 10, key(&dev_key_id, "wrong"), None).await);

    let events = server.events_after(&admin, before).await;
    let all: String = events.iter().map(|e| e.event_json.as_str()).collect();
    for secret in [typed_as_name, "horse", &unknown_key] {
        assert!(
            !all.contains(secret),
            "{secret:?} is in the audit log: {all}"
        );
    }
    // Nor is it stored: throttling rows are keyed by a digest of the name.
    let rows = server
        .broker()
        .store()
        .scan(Table::Lockouts, &[], None, usize::MAX)
        .expect("scan lockouts");
    assert!(!rows.is_empty());
    for (key, value) in rows {
        let row = String::from_utf8_lossy(&key).to_lowercase() + &String::from_utf8_lossy(&value);
        assert!(!row.contains(&typed_as_name.to_lowercase()), "{row}");
    }
    let hidden = events
        .iter()
        .filter(|e| e.event_name == "sts:GetSessionToken" && e.principal_arn == HIDDEN)
        .count();
    assert_eq!(hidden, 3, "{events:#?}");
    let log = String::from_utf8(log.lock().unwrap().clone()).expect("UTF-8 log");
    assert!(
        log.matches("GetSessionToken").count() >= 5,
        "the log was not captured: {log}"
    );
    assert!(log.contains(HIDDEN), "{log}");
    for secret in [typed_as_name, "horse", &unknown_key] {
        assert!(
            !log.contains(secret),
            "{secret:?} is in the server log: {log}"
        );
    }
    let dev_events: Vec<_> = events
        .iter()
        .filter(|e| e.principal_arn == arn("user", "dev"))
        .collect();
    assert_eq!(dev_events.len(), 2, "{events:#?}");
    assert!(dev_events.iter().any(|e| e.event_json.contains("\"dev\"")));
    assert!(
        dev_events
            .iter()
            .any(|e| e.event_json.contains(&dev_key_id))
    );
}

// ---- #13: throttling that cannot be aimed ------------------------------------------------

/// OWASP (Authentication Cheat Sheet, "Account lockout"): throttle the guesser, not the
/// neighbours. A mistyped password slows only that user from that address.
#[tokio::test]
async fn a_failure_slows_only_that_user_from_that_address() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    for user in ["alice", "bob"] {
        server
            .create_user_with_password(&admin, user, &format!("{user}-password-1"))
            .await;
    }
    let (a, b) = (20, 21);
    assert_invalid(login_from(&server, a, password("alice", "typo"), None).await);
    // alice from A waits...
    assert_slowed(login_from(&server, a, password("alice", "alice-password-1"), None).await);
    // ...but not alice from B, nor bob from A.
    let alice = login_from(&server, b, password("alice", "alice-password-1"), None)
        .await
        .expect("alice from another address");
    login_from(&server, a, password("bob", "bob-password-1"), None)
        .await
        .expect("bob from the same address");
    // The daemon really saw two addresses.
    let events = server.events_after(&admin, 0).await;
    let from = |ip: &str| {
        events
            .iter()
            .any(|e| e.source_ip == ip && e.principal_arn == arn("user", "alice"))
    };
    assert!(from("127.0.0.20") && from("127.0.0.21"), "{events:#?}");
    assert!(!alice.session_token.is_empty());
}

/// OWASP's "device cookie" idea keyed on the address: a lock refuses only addresses that
/// never logged in as the user, so a stranger cannot lock the owner out of her usual place.
#[tokio::test]
async fn a_stranger_cannot_lock_the_owner_out_of_an_address_she_used_before() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "alice", "alice-password-1")
        .await;
    let (home, stranger, cafe) = (30, 31, 32);
    login_from(&server, home, password("alice", "alice-password-1"), None)
        .await
        .expect("alice at home");

    let lockout = server.config.lockout.clone();
    for _ in 0..lockout.max_failures {
        assert_invalid(login_from(&server, stranger, password("alice", "guess"), None).await);
        server.after_failure();
    }
    let locks: Vec<_> = server
        .events_after(&admin, 0)
        .await
        .into_iter()
        .filter(|e| e.event_name == "stint:Lockout")
        .collect();
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0].principal_arn, arn("user", "alice"));

    // Locked for the stranger and for any address alice never used, even with the right
    // password...
    for from in [stranger, cafe] {
        let retry = assert_slowed(
            login_from(&server, from, password("alice", "alice-password-1"), None).await,
        );
        assert!(retry > 1 && retry <= lockout.lockout_seconds, "{retry}");
    }
    // ...but not at home.
    login_from(&server, home, password("alice", "alice-password-1"), None)
        .await
        .expect("alice at home while locked elsewhere");
    // A typo at home neither locks her nor extends the lock: only back-off.
    assert_invalid(login_from(&server, home, password("alice", "typo"), None).await);
    server.after_failure();
    login_from(&server, home, password("alice", "alice-password-1"), None)
        .await
        .expect("alice at home after a typo");
    // Once served, the lock is gone everywhere.
    server.advance(Duration::from_secs(lockout.lockout_seconds));
    login_from(&server, cafe, password("alice", "alice-password-1"), None)
        .await
        .expect("alice at the cafe after the lock");
}

/// An access key's secret is 40 random characters: guessing it is hopeless, so failures
/// with its (public) id slow the guessing address and never lock the key's owner out.
#[tokio::test]
async fn guessing_a_services_access_key_never_locks_the_service_out() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "svc").await;
    let (svc_id, svc_secret) = server.create_access_key(&admin, "svc").await;
    let (service_host, attacker) = (40, 41);
    let before = last_seq(&server);

    let guess = || login_from(&server, attacker, key(&svc_id, &"x".repeat(40)), None);
    for _ in 0..12 {
        assert_invalid(guess().await);
        server.after_failure();
    }
    assert_invalid(guess().await);
    // The attacker's address is slowed...
    assert_slowed(login_from(&server, attacker, key(&svc_id, &svc_secret), None).await);
    // ...the service, from its own address (never used before), is not.
    login_from(&server, service_host, key(&svc_id, &svc_secret), None)
        .await
        .expect("the service logs in while its key id is being guessed");
    let events = server.events_after(&admin, before).await;
    assert!(
        !events.iter().any(|e| e.event_name == "stint:Lockout"),
        "{events:#?}"
    );
}

/// A shared NAT or a cluster's egress: an address over its failure budget is slowed (a
/// bounded back-off), never blocked for everyone behind it; users who logged in from it
/// before are not slowed at all.
#[tokio::test]
async fn an_address_over_its_failure_budget_is_slowed_but_never_blocked() {
    let server = TestServer::start_with(|c| {
        c.lockout.address_budget = 3;
        c.lockout.address_window_seconds = 600;
        c.lockout.address_max_delay_ms = 400;
    })
    .await;
    let admin = server.admin_login().await;
    for user in ["carol", "dave"] {
        server
            .create_user_with_password(&admin, user, &format!("{user}-password-1"))
            .await;
    }
    let (nat, elsewhere) = (50, 51);
    login_from(&server, nat, password("dave", "dave-password-1"), None)
        .await
        .expect("dave has used the NAT before");

    // Four failures against four different names: each (name, address) pair is fresh.
    for guess in ["u1", "u2", "u3", "u4"] {
        assert_invalid(login_from(&server, nat, password(guess, "guess"), None).await);
    }
    // Over budget: carol (new to this address) must wait a little...
    let retry =
        assert_slowed(login_from(&server, nat, password("carol", "carol-password-1"), None).await);
    assert_eq!(
        retry, 1,
        "at most address_max_delay_ms (400 ms), rounded up"
    );
    // ...dave, who knows the address, does not; nor does anyone elsewhere.
    login_from(&server, nat, password("dave", "dave-password-1"), None)
        .await
        .expect("a known address is exempt from its budget");
    login_from(
        &server,
        elsewhere,
        password("carol", "carol-password-1"),
        None,
    )
    .await
    .expect("another address");
    // Slowed, not blocked: after the (capped) delay carol gets in from the NAT.
    for guess in ["u5", "u6", "u7", "u8"] {
        server.advance(Duration::from_millis(401));
        assert_invalid(login_from(&server, nat, password(guess, "guess"), None).await);
    }
    server.advance(Duration::from_millis(401));
    login_from(&server, nat, password("carol", "carol-password-1"), None)
        .await
        .expect("carol through the NAT after the capped delay");
}

// ---- #14: a lock and its record land together or not at all ------------------------------

fn lockout_rows(store: &FaultStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .scan(Table::Lockouts, &[], None, usize::MAX)
        .expect("scan lockouts")
}

/// `attempt`, made while `refuse` has the store fail, answers UNAVAILABLE and leaves the
/// lockout rows as they were.
async fn unavailable_and_unchanged<T: std::fmt::Debug>(
    store: &FaultStore,
    refuse: fn(&FaultStore, bool),
    attempt: impl Future<Output = Result<T, tonic::Status>>,
    why: &str,
) {
    let rows = lockout_rows(store);
    refuse(store, true);
    let refused = attempt.await;
    refuse(store, false);
    assert_status(refused, Code::Unavailable, &[]);
    assert_eq!(lockout_rows(store), rows, "{why}");
}

fn events_named(server: &TestServer, name: &str) -> usize {
    let filter = EventFilter {
        event_name: Some(name.into()),
        ..Default::default()
    };
    server
        .broker()
        .audit_log()
        .list(&filter, None, 10_000)
        .expect("list")
        .0
        .len()
}

/// Every state change commits in the same batch as its audit event: while the store
/// refuses audit records (and takes everything else), the failure that would lock, and
/// the attempt that would end a served lock, answer UNAVAILABLE and leave the lockout
/// rows exactly as they were. So does a store that refuses every write.
#[tokio::test]
async fn lock_and_unlock_commit_with_their_audit_events_or_not_at_all() {
    let (server, store) = TestServer::over_faults(1_000, 3_600).await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;

    let max = test_lockout().max_failures;
    for _ in 0..max - 1 {
        assert_invalid(server.login("dev", "guess", None).await);
        server.after_failure();
    }
    // The failure that locks, while the store refuses audit records, or everything:
    // nothing happens.
    let guess = || server.login("dev", "guess", None);
    let why = "a failure written without its event";
    unavailable_and_unchanged(&store, FaultStore::refuse_audit, guess(), why).await;
    let why = "a half-written failure";
    unavailable_and_unchanged(&store, FaultStore::refuse_all, guess(), why).await;
    assert_eq!(events_named(&server, "stint:Lockout"), 0);

    // Again with a store that works: locked, and recorded once.
    assert_invalid(server.login("dev", "guess", None).await);
    assert_eq!(events_named(&server, "stint:Lockout"), 1);
    assert_slowed(server.login("dev", "dev-password-1", None).await);

    // The lock is served; ending it while the store refuses writes changes nothing.
    server.advance(Duration::from_secs(test_lockout().lockout_seconds));
    let login = server.login("dev", "dev-password-1", None);
    let why = "an unlock written without its event";
    unavailable_and_unchanged(&store, FaultStore::refuse_audit, login, why).await;
    assert_eq!(events_named(&server, "stint:LockoutEnded"), 0);

    server
        .login("dev", "dev-password-1", None)
        .await
        .expect("login after the lock");
    assert_eq!(events_named(&server, "stint:LockoutEnded"), 1);
}

// ---- behind a load balancer: the PROXY protocol -----------------------------------------

/// The load balancer of these tests: connections from 127.0.0.99 carry a PROXY v2 header.
const PROXY: u8 = 99;

async fn login_through(
    server: &TestServer,
    from: u8,
    header: ProxyHeader<'_>,
    credential: Credential,
) -> Result<proto::Credentials, String> {
    let mut sts = StsClient::new(
        server
            .proxied_channel(from, header)
            .await
            .map_err(|e| format!("connect: {e}"))?,
    );
    sts.get_session_token(proto::GetSessionTokenRequest {
        credential: Some(credential),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().credentials.expect("credentials"))
    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// A server taking PROXY headers from `proxy` (an address or CIDR), with user alice; and
/// the admin's token.
async fn behind_proxy(proxy: &str) -> (TestServer, String) {
    let proxy = proxy.to_owned();
    let server = TestServer::start_with(|c| c.proxy_protocol_from = vec![proxy]).await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "alice", "alice-password-1")
        .await;
    (server, admin)
}

/// Behind HAProxy or nginx every connection comes from the proxy. With
/// `proxy_protocol_from` naming it, throttling and the audit log key on the client the
/// header names (v2 for one client here, v1 for the other): one client's typo slows that
/// client only, not everyone behind the proxy.
#[tokio::test]
async fn behind_a_proxy_throttling_and_the_audit_log_see_each_client() {
    let (server, admin) = behind_proxy(&format!("127.0.0.{PROXY}")).await;
    let (home, office) = ("203.0.113.7:50000", "[2001:db8::8]:50001");
    let right = || password("alice", "alice-password-1");

    let typo = login_through(&server, PROXY, V2(home), password("alice", "typo")).await;
    assert_eq!(typo.unwrap_err(), "Unauthenticated: invalid credentials");
    let slowed = login_through(&server, PROXY, V2(home), right()).await;
    let slowed = slowed.unwrap_err();
    assert!(
        slowed.starts_with("Unauthenticated") && slowed.contains("retry after"),
        "home is slowed: {slowed}"
    );
    login_through(&server, PROXY, V1(office), right())
        .await
        .expect("the same user from another client behind the same proxy");

    let events = server.events_after(&admin, 0).await;
    let from = |ip: &str| {
        events
            .iter()
            .any(|e| e.source_ip == ip && e.principal_arn == arn("user", "alice"))
    };
    assert!(from("203.0.113.7") && from("2001:db8::8"), "{events:#?}");
    assert!(!from(&format!("127.0.0.{PROXY}")), "{events:#?}");
}

/// A header is read only from the configured proxy, and the proxy must send one: a client
/// cannot claim an address, and a proxy without `send-proxy-v2` cannot make every client
/// look like the proxy.
#[tokio::test]
async fn only_the_configured_proxy_may_name_a_client_and_it_must() {
    let (server, admin) = behind_proxy(&format!("127.0.0.{PROXY}/32")).await;
    let right = || password("alice", "alice-password-1");

    // A client that is not the proxy sends a header claiming someone else's address: the
    // header is not read, so its bytes are a broken HTTP/2 preface and nothing is served.
    let spoofed = login_through(&server, 40, V2("198.51.100.1:1"), right()).await;
    assert!(spoofed.is_err(), "{spoofed:?}");
    // The proxy without a header: refused, not served as the proxy's own address.
    let bare = login_through(&server, PROXY, ProxyHeader::None, right()).await;
    assert!(bare.is_err(), "{bare:?}");
    // Neither reached the broker; a plain client from elsewhere is served as itself.
    login_through(&server, 41, ProxyHeader::None, right())
        .await
        .expect("a direct client");
    let sources: Vec<String> = server
        .events_after(&admin, 0)
        .await
        .into_iter()
        .filter(|e| e.principal_arn == arn("user", "alice"))
        .map(|e| e.source_ip)
        .collect();
    assert!(
        sources
            .iter()
            .all(|s| s == "127.0.0.41" || s == "127.0.0.1"),
        "{sources:?}"
    );
    assert!(sources.iter().any(|s| s == "127.0.0.41"), "{sources:?}");
}

/// A proxy connection that never sends its header holds one place in the bounded
/// accept queue for at most the preparation timeout; everyone else is served meanwhile.
#[tokio::test]
async fn a_silent_proxy_connection_stalls_no_one_else() {
    let (server, _admin) = behind_proxy(&format!("127.0.0.{PROXY}")).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(loopback(PROXY), 0))
        .unwrap();
    let _silent = socket.connect(server.addr).await.unwrap();
    let right = password("alice", "alice-password-1");
    // Well within the 10 s a silent connection may take before it is dropped.
    let served = tokio::time::timeout(
        Duration::from_secs(5),
        login_through(&server, PROXY, V2("203.0.113.7:1"), right),
    )
    .await
    .expect("not stalled behind the silent connection");
    served.expect("served while another connection from the proxy says nothing");
}
