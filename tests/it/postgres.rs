//! Several replicas on one PostgreSQL database: each test starts two real servers over
//! two separate connection pools to one fresh database (as two `stint serve` processes
//! would be) and checks that what one does holds on the other.
//!
//! They need `STINT_TEST_POSTGRES_URL` (scripts/with-postgres.sh sets it) and are skipped
//! with a message when it is unset.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use stint::audit::chain;
use stint::daemon::{JOBS_LEASE, Schedule, holds_lease, jobs_lease_ttl};
use stint::proto;
use stint::store::lease::lease_key;
use stint::store::postgres::{PostgresStore, testing};
use stint::store::{Store, Table};

use crate::common::*;

const WHOAMI: proto::GetCallerIdentityRequest = proto::GetCallerIdentityRequest {};

/// Two replicas (A bootstraps, B joins) over one fresh database; `None` when skipped.
async fn two_replicas(test: &str) -> Option<(TestServer, TestServer, Arc<dyn Store>)> {
    let base = testing::url(test)?;
    let url = testing::fresh_database(&base, test).expect("test database");
    let store_a: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 4).expect("store A"));
    let store_b: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 4).expect("store B"));
    let a = TestServer::builder().store(store_a).start().await;
    let b = TestServer::builder()
        .store(store_b.clone())
        .replica_of(&a)
        .start()
        .await;
    Some((a, b, store_b))
}

fn jti(token: &str) -> String {
    jwt_claims(token)["jti"].as_str().unwrap().to_string()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_tokens_revocations_and_mfa_codes() {
    let Some((a, b, store)) = two_replicas("replicas_share").await else {
        return;
    };

    // A token minted by one replica is accepted by the other.
    let from_a = a.admin_login().await;
    assert!(is_alive(&b, &from_a).await);
    let from_b = b.admin_login().await;
    assert!(is_alive(&a, &from_b).await);

    // A TOTP code used on one replica is refused on the other (one replay state).
    let seed = a.admin_seed.clone();
    let code = a.fresh_code(&seed);
    a.login(ADMIN, ADMIN_PASSWORD, Some(&code))
        .await
        .expect("first use of the code, on A");
    let replayed = b.login(ADMIN, ADMIN_PASSWORD, Some(&code)).await;
    let status = assert_status(replayed, Code::Unauthenticated, &[]);
    assert_eq!(status.message(), "invalid credentials");
    b.after_failure();

    // A revocation made on one replica is honoured by the other at once for a token that
    // replica has not cached (a cached one within SHARED_REFRESH: tests/it/hot_path.rs).
    a.tokens_as(&from_a)
        .revoke_session(proto::RevokeSessionRequest {
            session_id: jti(&from_b),
            principal_arn: String::new(),
            role_arn: String::new(),
            issued_before: None,
        })
        .await
        .expect("A revokes B's session");
    assert!(!is_alive(&b, &from_b).await, "B honours A's revocation");
    assert!(is_alive(&b, &from_a).await);

    // Events from both replicas form one chain that verifies, from either replica and
    // offline on the database.
    let before = chain::verify(store.as_ref(), None).unwrap();
    assert!(before.intact, "{before:?}");
    for server in [&a, &b] {
        let admin = server.admin_login().await;
        let verified = server.verify_chain(&admin).await;
        assert!(verified.intact, "{verified:?}");
    }
    let after = chain::verify(store.as_ref(), None).unwrap();
    assert!(after.intact, "{after:?}");
    assert!(after.last_seq > before.last_seq);
    // No seq was taken twice or skipped: one record per seq from 1 to the head.
    let records = store.scan(Table::Audit, &[], None, usize::MAX).unwrap();
    assert_eq!(records.len() as u64, after.last_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_on_both_replicas_form_one_chain() {
    let Some((a, b, store)) = two_replicas("one_chain").await else {
        return;
    };
    let admin = a.admin_login().await;
    a.create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let a = Arc::new(a);
    let b = Arc::new(b);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let server = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            server
                .login("dev", "dev-password-1", None)
                .await
                .expect("login")
                .session_token
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    // Every credential handed out has its event in the one chain.
    let report = chain::verify(store.as_ref(), None).unwrap();
    assert!(report.intact, "{report:?}");
    let records = store.scan(Table::Audit, &[], None, usize::MAX).unwrap();
    let text: Vec<String> = records
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    for token in &tokens {
        let id = jti(token);
        assert!(
            text.iter().any(|record| record.contains(&id)),
            "no audit event for session {id}"
        );
    }
    assert!(a.broker().audit_log().healthy() && b.broker().audit_log().healthy());
    // Each replica's readers see the whole chain, the other replica's events included,
    // up to the last one (A's, appended after B's last).
    a.login("dev", "dev-password-1", None).await.expect("login");
    let total = store
        .scan(Table::Audit, &[], None, usize::MAX)
        .unwrap()
        .len();
    for server in [&a, &b] {
        let (listed, _) = server
            .broker()
            .audit_log()
            .list(&Default::default(), None, 10_000)
            .unwrap();
        assert_eq!(listed.len(), total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_replica_is_picked_up_by_the_other() {
    let Some((a, b, _store)) = two_replicas("rotation_pickup").await else {
        return;
    };
    let admin = a.admin_login().await;
    let old_kid = jwt_header(&admin)["kid"].as_str().unwrap().to_string();
    // Two rotations: the second activates a key that A created in the first, after B
    // loaded its keys (the first only activates the key B already had as published).
    for _ in 0..2 {
        a.keys_as(&admin)
            .rotate_signing_key(proto::RotateSigningKeyRequest {})
            .await
            .expect("rotation on A");
    }
    // A signs with the new key; B has never seen it and reloads the keys on the unknown
    // kid instead of refusing the token.
    let fresh = a.admin_login().await;
    let new_kid = jwt_header(&fresh)["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    assert!(
        !b.broker().jwks().contains(&new_kid),
        "B has not seen it yet"
    );
    assert!(is_alive(&b, &fresh).await, "B verifies A's new key");
    // And B now signs with the key A activated, and publishes it.
    let from_b = b.admin_login().await;
    assert_eq!(jwt_header(&from_b)["kid"].as_str().unwrap(), new_kid);
    assert!(b.broker().jwks().contains(&new_kid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_jobs_run_on_one_replica_and_move_when_it_dies() {
    let Some((a, b, store_b)) = two_replicas("jobs_lease").await else {
        return;
    };
    let schedule = Schedule::from_config(&a.config).unwrap();
    // The daemons' own rounds contend for the jobs lease at start: one of them holds it.
    let mut held = None;
    for _ in 0..200 {
        held = store_b
            .get(Table::Meta, lease_key(JOBS_LEASE).as_bytes())
            .unwrap();
        if held.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(held.is_some(), "no replica took the jobs lease");
    // The same lease logic under a name of the test's own (the daemons' rounds run on
    // the wall clock, this test on the manual one).
    let lease = |server: &TestServer, holder: &str| {
        holds_lease(server.broker(), &schedule, "test-jobs", holder).unwrap()
    };
    assert!(lease(&a, "replica-a"));
    assert!(!lease(&b, "replica-b"));
    // A renews while alive.
    a.advance(jobs_lease_ttl(&schedule) / 2);
    assert!(lease(&a, "replica-a"));
    a.advance(jobs_lease_ttl(&schedule) / 2);
    assert!(!lease(&b, "replica-b"));
    // A stops renewing (dies): once its lease lapses, B takes the jobs over.
    a.advance(jobs_lease_ttl(&schedule) / 2 + Duration::from_secs(1));
    assert!(lease(&b, "replica-b"));
    assert!(!lease(&a, "replica-a"));
    // A replica that shuts down hands the jobs lease back at once.
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(
        store_b
            .get(Table::Meta, lease_key(JOBS_LEASE).as_bytes())
            .unwrap(),
        None,
        "the holder released the jobs lease on shutdown"
    );
}

// ---- the binary: init, audit verify and store migrate on PostgreSQL ------------------

const BIN: &str = env!("CARGO_BIN_EXE_stint");

fn stint(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .args(args)
        .env("STINT_ARGON2__MEMORY_KIB", "8")
        .env("STINT_ARGON2__ITERATIONS", "1")
        .env_remove("STINT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stint starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "stint failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_shared_key_and_audit_verify_reads_the_database() {
    let Some(base) = testing::url("cli_init") else {
        return;
    };
    let url = testing::fresh_database(&base, "cli_init").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let key = key.to_str().unwrap();
    let init = [
        "init",
        "--store-url",
        &url,
        "--master-key-file",
        key,
        "--admin-user",
        "admin",
        "--password-stdin",
        "--output",
        "json",
    ];
    let out = ok(&stint(&init, "a long enough password 1\n"));
    let out: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(out["user_name"], "admin");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second init must not take over an initialised database.
    let again = stint(&init, "a long enough password 1\n");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a Stint store"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let verified = ok(&stint(&["audit", "verify", "--store-url", &url], ""));
    assert!(verified.contains("\"intact\":true"), "{verified}");
    // A replica with another master key is refused at start.
    stint::store::seal::MasterKey::create(
        &dir.path().join("other.key"),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let daemon = stint::daemon::Daemon::open(
        stint::config::Config {
            master_key_file: Some(dir.path().join("other.key")),
            store: stint::config::StoreConfig {
                url: Some(url.clone()),
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(stint::broker::SystemClock),
    );
    let err = daemon.err().expect("refused").to_string();
    assert!(err.contains("master key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_data_dir_migrates_into_postgres_with_its_chain() {
    let Some(base) = testing::url("migrate") else {
        return;
    };
    let url = testing::fresh_database(&base, "migrate").unwrap();
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let data_dir = server.config.data_dir.clone();
    let dir = server.stop_keeping_data().await;
    let data = data_dir.to_str().unwrap();
    let report = ok(&stint(
        &["store", "migrate", "--from", data, "--to", &url],
        "",
    ));
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["audit_intact"], true);
    // Everything, in order: the two stores hold the same records.
    let sled = stint::store::sled::SledStore::open(&data_dir, 1 << 20).unwrap();
    let pg = PostgresStore::open(&url, 1).unwrap();
    let mut total = 0;
    for table in Table::ALL {
        let want = sled.scan(table, &[], None, usize::MAX).unwrap();
        total += want.len();
        assert_eq!(
            pg.scan(table, &[], None, usize::MAX).unwrap(),
            want,
            "{table:?}"
        );
    }
    assert_eq!(report["records"], total as u64);
    assert!(total > 0);
    assert!(chain::verify(&pg, None).unwrap().intact);
    drop(sled);
    // Into a database that is no longer empty: refused, nothing merged.
    let again = stint(&["store", "migrate", "--from", data, "--to", &url], "");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    drop(dir);
}

/// TLS to the database: a cluster that takes only TLS over TCP (`hostssl`, SCRAM password)
/// with a certificate from a private CA. `sslmode=verify-full` with that CA as `sslrootcert` works,
/// and the store is usable; the same URL without the CA (host roots), or a host name the
/// certificate does not name, is refused before any credential is sent; plain is refused
/// by the server.
#[tokio::test]
async fn the_store_speaks_verified_tls_to_postgresql() {
    let Some(pg) = crate::failover::OwnPostgres::create("postgres_tls") else {
        return;
    };
    // A P-384 CA: the server's certificate is signed with ecdsa-with-SHA384 (as AWS RDS's
    // ecc384 CA signs), so the channel binding below is its SHA-384 hash.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    const PASSWORD: &str = "tls-test-Secret-9";
    let plain = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&plain, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("ALTER USER postgres PASSWORD '{PASSWORD}'"))
            .unwrap();
    })
    .await
    .unwrap();
    pg.require_tls(&server.pem(), &server_key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let port = pg.port();
    let url = |host: &str, query: &str| {
        format!("postgres://postgres:{PASSWORD}@{host}:{port}/postgres?{query}")
    };
    let verified = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let store = tokio::task::spawn_blocking(move || PostgresStore::open(&verified, 2))
        .await
        .unwrap()
        .expect("verified TLS to the database");
    let batch = stint::store::Batch {
        expects: vec![],
        writes: vec![(Table::Meta, b"tls-probe".to_vec(), Some(b"yes".to_vec()))],
    };
    store.commit(&batch).unwrap();
    assert_eq!(
        store.get(Table::Meta, b"tls-probe").unwrap().as_deref(),
        Some(&b"yes"[..])
    );

    // SCRAM bound to this TLS session (SCRAM-SHA-256-PLUS, tls-server-end-point): with
    // `channel_binding=require` the login succeeds only if the binding Stint computes from
    // the server's certificate is the one the server computes.
    let bound = url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&channel_binding=require",
            ca_file.display()
        ),
    );
    tokio::task::spawn_blocking(move || PostgresStore::open(&bound, 1))
        .await
        .unwrap()
        .expect("SCRAM with channel binding over verified TLS");

    let refused = [
        // The host's roots do not hold the private CA.
        (url("localhost", "sslmode=require"), "certificate"),
        // The certificate names localhost, not 127.0.0.1.
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
            ),
            "certificate",
        ),
        // Plain: the server takes only TLS over TCP.
        (url("localhost", "sslmode=disable"), "pg_hba.conf"),
    ];
    for (url, want) in refused {
        let shown = url.clone();
        let err = tokio::task::spawn_blocking(move || PostgresStore::open(&url, 1).err())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{shown} was accepted"))
            .to_string();
        assert!(err.to_lowercase().contains(want), "{shown}: {err}");
        assert!(!err.contains(PASSWORD), "{err}");
    }
}
