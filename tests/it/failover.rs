//! Failover of a real cluster: three `stint serve` processes on loopback ports share one
//! PostgreSQL database while clients spread logins and `AssumeRole` across them.
//!
//! - `sigkill_of_a_replica_loses_no_credential_and_the_others_serve`: one replica dies
//!   by SIGKILL mid-load. Every credential a client received has its audit event in the
//!   one chain, `stint audit verify` passes on the database, the survivors keep serving, a
//!   TOTP code used on one replica is refused on another, and a session revoked on one is
//!   refused by the others at once (revocations are read from the database on every
//!   request: the documented bound is "as soon as `RevokeSession` answered").
//! - `postgres_restart_fails_cleanly_and_recovers_without_restarting_stint`: the
//!   database itself stops mid-load (its own throwaway cluster, so other tests on the
//!   shared one are not disturbed): requests fail with UNAVAILABLE, gRPC health says
//!   NOT_SERVING, and once the database is back every replica serves again, without a
//!   restart of Stint, and the chain still verifies.
//!
//! They need `STINT_TEST_POSTGRES_URL` (and, for the restart, `STINT_TEST_PG_BIN`);
//! `scripts/with-postgres.sh` sets both. Unset, they are skipped with a message.
//!
//! `measure_assume_role_throughput` (ignored) is the throughput driver for one and three
//! replicas on PostgreSQL next to sled; see its doc.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use stint::core::authn::totp;
use stint::proto;
use stint::proto::get_session_token_request::Credential;
use stint::proto::iam_client::IamClient;
use stint::proto::sts_client::StsClient;
use stint::proto::tokens_client::TokensClient;
use stint::store::postgres::testing;

use crate::common::{Bearer, allow, arn, assume, init_totp_seed, jwt_claims, run_init, trust};

const PASSWORD: &str = "failover test password 42";
/// How long recovery may take before the test fails (polled, not slept).
const RECOVERY: Duration = Duration::from_secs(30);

fn binary() -> String {
    std::env::var("STINT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stint").to_string())
}

/// A cluster's shared settings: the database (or, for sled, none) and the master key.
struct Shared {
    dir: tempfile::TempDir,
    store_url: Option<String>,
}

impl Shared {
    fn key(&self) -> PathBuf {
        self.dir.path().join("master.key")
    }

    /// `stint SUBCOMMAND` with cheap hashing, a quiet log, the store and the master key.
    fn command(&self, data_dir: &Path, subcommand: &str) -> Command {
        let mut cmd = Command::new(binary());
        cmd.env("STINT_DATA_DIR", data_dir)
            .env("STINT_ARGON2__MEMORY_KIB", "8")
            .env("STINT_ARGON2__ITERATIONS", "1")
            .env("RUST_LOG", "info,h2=warn,hyper=warn,tower=warn,sled=warn")
            .env_remove("STINT_CONFIG")
            .env_remove("STINT_STORE__URL")
            .arg(subcommand);
        if let Some(url) = &self.store_url {
            cmd.arg("--store-url").arg(url);
        }
        cmd.arg("--master-key-file").arg(self.key());
        cmd
    }

    fn data_dir(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("replica-{n}"))
    }

    /// `stint init`; returns the admin's TOTP seed.
    fn init(&self) -> Vec<u8> {
        init_totp_seed(&run_init(self.command(&self.data_dir(0), "init"), PASSWORD))
    }

    /// `stint audit <what>` against the store (the stopped data dir for sled).
    fn audit(&self, what: &str) -> std::process::Output {
        let mut cmd = Command::new(binary());
        cmd.env("STINT_DATA_DIR", self.data_dir(0))
            .env_remove("STINT_CONFIG")
            .env_remove("STINT_STORE__URL")
            .args(["audit", what]);
        if let Some(url) = &self.store_url {
            cmd.arg("--store-url").arg(url);
        }
        cmd.arg("--master-key-file").arg(self.key());
        cmd.output().unwrap()
    }

    fn verify(&self) -> Value {
        let out = self.audit("verify");
        let report: Value =
            serde_json::from_slice(&out.stdout).expect("verify prints a JSON report");
        assert!(out.status.success(), "stint audit verify failed: {report}");
        assert_eq!(report["intact"], true, "{report}");
        report
    }

    /// Session ids of every credential event in the chain.
    fn recorded_sessions(&self) -> HashSet<String> {
        let out = self.audit("export");
        assert!(
            out.status.success(),
            "export failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| {
                let record: Value = serde_json::from_str(line).expect("JSON lines");
                record["event"]["credential"]["session_id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// One `stint serve` process.
struct Replica {
    child: Child,
    addr: String,
    channel: Channel,
}

impl Replica {
    async fn start(shared: &Shared, n: usize) -> Replica {
        let mut child = shared
            .command(&shared.data_dir(n), "serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stint serve starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(addr) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the replica logs its address once it is serving");
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("replica reachable");
        Replica {
            child,
            addr,
            channel,
        }
    }

    fn sts(&self) -> StsClient<Channel> {
        StsClient::new(self.channel.clone())
    }

    fn sts_as(
        &self,
        token: &str,
    ) -> StsClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>> {
        StsClient::with_interceptor(self.channel.clone(), Bearer::new(token))
    }

    async fn health(&self) -> Option<ServingStatus> {
        let response = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// SIGKILL.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn key_login(id: &str, secret: &str) -> proto::GetSessionTokenRequest {
    proto::GetSessionTokenRequest {
        credential: Some(Credential::AccessKey(proto::AccessKeyCredential {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
        })),
        token_code: String::new(),
        duration_seconds: 3600,
        serial_number: String::new(),
    }
}

fn admin_login(code: String) -> proto::GetSessionTokenRequest {
    proto::GetSessionTokenRequest {
        credential: Some(Credential::Password(proto::PasswordCredential {
            user_name: "admin".into(),
            password: PASSWORD.into(),
        })),
        token_code: code,
        duration_seconds: 3600,
        serial_number: String::new(),
    }
}

fn now_step() -> u64 {
    totp::step_at(std::time::SystemTime::now())
}

/// The admin's session (a code for the current step), the service user's access key, and
/// a role `worker` the service user may assume.
async fn setup(first: &Replica, seed: &[u8]) -> (String, String, String) {
    let admin = first
        .sts()
        .get_session_token(admin_login(totp::code_at(seed, now_step())))
        .await
        .expect("admin logs in")
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    let mut iam = IamClient::with_interceptor(first.channel.clone(), Bearer::new(&admin));
    iam.create_user(proto::CreateUserRequest {
        user_name: "svc".into(),
        ..Default::default()
    })
    .await
    .expect("CreateUser");
    iam.put_user_policy(proto::PutUserPolicyRequest {
        user_name: "svc".into(),
        policy_name: "assume".into(),
        policy_document: allow(&["sts:AssumeRole"], &[&arn("role", "worker")]),
    })
    .await
    .expect("PutUserPolicy");
    iam.create_role(proto::CreateRoleRequest {
        role_name: "worker".into(),
        assume_role_policy_document: trust(&arn("user", "svc"), None),
        ..Default::default()
    })
    .await
    .expect("CreateRole");
    let key = iam
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "svc".into(),
        })
        .await
        .expect("CreateAccessKey")
        .into_inner()
        .access_key
        .unwrap();
    (admin, key.access_key_id, key.secret_access_key)
}

/// What the load clients saw.
#[derive(Default)]
struct Load {
    /// Session ids of every credential a client received.
    received: Mutex<Vec<String>>,
    /// Credentials received per replica.
    per_replica: Mutex<Vec<usize>>,
    /// Error codes seen.
    errors: Mutex<Vec<Code>>,
    stop: AtomicBool,
    done: AtomicUsize,
}

impl Load {
    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn got(&self, replica: usize, session_id: String) {
        self.received.lock().unwrap().push(session_id);
        let mut per = self.per_replica.lock().unwrap();
        if per.len() <= replica {
            per.resize(replica + 1, 0);
        }
        per[replica] += 1;
    }

    async fn wait_for(&self, total: usize, deadline: Duration) {
        let started = Instant::now();
        while self.count() < total && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Clients: each logs in with the access key on one replica and assumes the role on the
/// next one, round and round; every credential received is recorded. A replica that
/// answers with an error is skipped for that round.
fn spawn_clients(
    replicas: &[(usize, Channel)],
    clients: usize,
    id: &str,
    secret: &str,
    load: &Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let replicas = replicas.to_vec();
            let (id, secret, load) = (id.to_string(), secret.to_string(), load.clone());
            tokio::spawn(async move {
                let mut turn = c;
                while !load.stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let (n, channel) = &replicas[turn % replicas.len()];
                    let login = StsClient::new(channel.clone())
                        .get_session_token(key_login(&id, &secret))
                        .await;
                    let token = match login {
                        Ok(response) => {
                            let credentials = response.into_inner().credentials.unwrap();
                            load.got(*n, credentials.access_key_id);
                            credentials.session_token
                        }
                        Err(status) => {
                            load.errors.lock().unwrap().push(status.code());
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    };
                    let (m, channel) = &replicas[(turn + 1) % replicas.len()];
                    let assumed = StsClient::with_interceptor(channel.clone(), Bearer::new(&token))
                        .assume_role(assume("worker", &format!("c{c}")))
                        .await;
                    match assumed {
                        Ok(response) => {
                            let credentials = response.into_inner().credentials.unwrap();
                            load.got(*m, credentials.access_key_id);
                        }
                        Err(status) => load.errors.lock().unwrap().push(status.code()),
                    }
                }
                load.done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect()
}

async fn stop_clients(load: &Load, clients: Vec<tokio::task::JoinHandle<()>>) {
    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
}

/// `Ok` when `token` still works on `replica`; the status otherwise.
async fn whoami(replica: &Replica, token: &str) -> Result<(), tonic::Status> {
    replica
        .sts_as(token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .map(|_| ())
}

async fn cluster(replicas: usize, url: Option<String>) -> (Shared, Vec<u8>, Vec<Replica>) {
    let shared = Shared {
        dir: tempfile::tempdir().unwrap(),
        store_url: url,
    };
    let seed = shared.init();
    let mut started = Vec::new();
    for n in 0..replicas {
        started.push(Replica::start(&shared, n).await);
    }
    (shared, seed, started)
}

fn assert_every_credential_recorded(shared: &Shared, load: &Load) {
    let received = load.received.lock().unwrap().clone();
    let recorded = shared.recorded_sessions();
    let missing: Vec<&String> = received.iter().filter(|s| !recorded.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} received credentials have no audit event, e.g. {:?}",
        missing.len(),
        received.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_replica_loses_no_credential_and_the_others_serve() {
    let Some(base) = testing::url("failover_sigkill") else {
        return;
    };
    let url = testing::fresh_database(&base, "failover_sigkill").expect("test database");
    let (shared, seed, mut replicas) = cluster(3, Some(url)).await;
    let (admin, id, secret) = setup(&replicas[0], &seed).await;

    let load = Arc::new(Load::default());
    let targets: Vec<(usize, Channel)> = replicas
        .iter()
        .enumerate()
        .map(|(n, r)| (n, r.channel.clone()))
        .collect();
    let clients = spawn_clients(&targets, 9, &id, &secret, &load);
    load.wait_for(150, RECOVERY).await;
    let before_kill = load.count();
    assert!(
        before_kill >= 50,
        "only {before_kill} credentials before the kill"
    );
    replicas[2].kill();
    let killed_at = load.per_replica.lock().unwrap().clone();
    // The survivors keep serving: more credentials from each of them after the kill.
    load.wait_for(before_kill + 150, RECOVERY).await;
    stop_clients(&load, clients).await;
    let after = load.per_replica.lock().unwrap().clone();
    for n in [0, 1] {
        assert!(
            after[n] > killed_at[n],
            "replica {n} served nothing after the kill: {killed_at:?} -> {after:?}"
        );
    }
    for replica in &replicas[..2] {
        assert_eq!(replica.health().await, Some(ServingStatus::Serving));
    }

    // A TOTP code used on one replica is refused on another. (Setup used the current
    // step; the next one is within the accepted skew and not used yet.)
    let code = totp::code_at(&seed, now_step() + 1);
    replicas[1]
        .sts()
        .get_session_token(admin_login(code.clone()))
        .await
        .expect("the first use of the code, on replica 1");
    let replayed = replicas[0]
        .sts()
        .get_session_token(admin_login(code))
        .await
        .expect_err("the same code on replica 0");
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");

    // A session revoked on one replica is refused by the others within the bound.
    let victim = StsClient::new(replicas[1].channel.clone())
        .get_session_token(key_login(&id, &secret))
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    whoami(&replicas[0], &victim).await.expect("alive before");
    TokensClient::with_interceptor(replicas[1].channel.clone(), Bearer::new(&admin))
        .revoke_session(proto::RevokeSessionRequest {
            session_id: jwt_claims(&victim)["jti"].as_str().unwrap().to_string(),
            principal_arn: String::new(),
            role_arn: String::new(),
            issued_before: None,
        })
        .await
        .expect("revoked on replica 1");
    let refused = whoami(&replicas[1], &victim).await.expect_err("revoked");
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "the revoking replica, at once"
    );
    // Replica 0 cached the token above: it re-checks it against the database at most
    // SHARED_REFRESH (1 s) later (docs/ARCHITECTURE.md); allow scheduling slack.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match whoami(&replicas[0], &victim).await {
            Err(refused) => {
                assert_eq!(refused.code(), Code::Unauthenticated, "replica 0");
                break;
            }
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => panic!("replica 0 still accepts a session revoked on replica 1"),
        }
    }

    // Every credential a client received has its event; the one chain verifies.
    assert_every_credential_recorded(&shared, &load);
    let report = shared.verify();
    assert!(report["events_checked"].as_u64().unwrap() as usize >= load.count());
}

/// A PostgreSQL cluster of this test's own, so stopping it disturbs no other test.
pub(crate) struct OwnPostgres {
    bin: PathBuf,
    run_as: Option<String>,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    pub(crate) fn create(test: &str) -> Option<OwnPostgres> {
        let bin = match std::env::var("STINT_TEST_PG_BIN") {
            Ok(bin) if !bin.is_empty() => PathBuf::from(bin),
            _ => {
                eprintln!(
                    "SKIPPED {test}: STINT_TEST_PG_BIN is not set (scripts/with-postgres.sh sets it)"
                );
                return None;
            }
        };
        let run_as = std::env::var("STINT_TEST_PG_USER")
            .ok()
            .filter(|u| !u.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres {
            bin,
            run_as,
            dir,
            port,
        };
        if let Some(user) = &pg.run_as {
            let ok = Command::new("chown")
                .args(["-R", user])
                .arg(pg.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to {user}");
        }
        let data = pg.data();
        pg.run(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 100\n",
            pg.port,
            pg.dir.path().display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.dir.path().join("data/postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        pg.start();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let out = match &self.run_as {
            Some(user) => {
                let mut line = format!("'{}'", program.display());
                for arg in &args[1..] {
                    line.push_str(&format!(" '{arg}'"));
                }
                Command::new("su")
                    .args([user.as_str(), "-s", "/bin/sh", "-c", &line])
                    .output()
                    .unwrap()
            }
            None => Command::new(&program).args(&args[1..]).output().unwrap(),
        };
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    fn stop(&self) {
        self.run(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Serves TLS with this certificate and key, and only TLS over TCP (`hostssl`, SCRAM
    /// passwords: set one first), then restarts.
    pub(crate) fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        let data = self.dir.path().join("data");
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some(user) = &self.run_as {
                assert!(
                    Command::new("chown")
                        .arg(user)
                        .arg(&path)
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap()
            .write_all(b"ssl = on\n")
            .unwrap();
        self.stop();
        self.start();
    }

    /// `127.0.0.1:<port>` and `localhost:<port>`, for URLs of this cluster.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl").display().to_string();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = match &self.run_as {
            Some(user) => Command::new("su")
                .args([user.as_str(), "-s", "/bin/sh", "-c"])
                .arg(format!("'{program}' -D '{data}' -m immediate stop"))
                .output(),
            None => Command::new(program).args(args).output(),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_fails_cleanly_and_recovers_without_restarting_stint() {
    let test = "failover_pg_restart";
    if testing::url(test).is_none() {
        return;
    }
    let Some(pg) = OwnPostgres::create(test) else {
        return;
    };
    let url = testing::fresh_database(&pg.url(), test).expect("test database");
    let (shared, seed, replicas) = cluster(3, Some(url)).await;
    let (_admin, id, secret) = setup(&replicas[0], &seed).await;

    let load = Arc::new(Load::default());
    let targets: Vec<(usize, Channel)> = replicas
        .iter()
        .enumerate()
        .map(|(n, r)| (n, r.channel.clone()))
        .collect();
    const CLIENTS: usize = 6;
    let clients = spawn_clients(&targets, CLIENTS, &id, &secret, &load);
    load.wait_for(100, RECOVERY).await;
    assert!(
        load.count() >= 30,
        "only {} credentials before the stop",
        load.count()
    );

    pg.stop();
    load.errors.lock().unwrap().clear();
    // While the database is down: requests fail with UNAVAILABLE, and every replica's
    // health turns NOT_SERVING (the load's failed commits flip it).
    let down_at = load.count();
    for replica in &replicas {
        let started = Instant::now();
        loop {
            let status = replica.health().await;
            if status == Some(ServingStatus::NotServing) {
                break;
            }
            assert!(
                started.elapsed() < RECOVERY,
                "replica at {} still {status:?} with the database down",
                replica.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = replica
            .sts()
            .get_session_token(key_login(&id, &secret))
            .await
            .expect_err("no credential without the database");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    }
    {
        let errors = load.errors.lock().unwrap();
        assert!(
            !errors.is_empty(),
            "the load saw no failure while the database was down"
        );
        let unclean: Vec<_> = errors.iter().filter(|c| **c != Code::Unavailable).collect();
        assert!(
            unclean.is_empty(),
            "failures other than UNAVAILABLE: {unclean:?}"
        );
    }
    // A credential handed out while the database was down would be one without its
    // durable event: past the stop, only the answers already on their way (one request in
    // flight per client) may arrive.
    let during = load.count() - down_at;
    assert!(
        during <= CLIENTS,
        "{during} credentials minted with the database down"
    );

    pg.start();
    // Every replica recovers on its own: SERVING again and minting.
    for replica in &replicas {
        let started = Instant::now();
        while replica.health().await != Some(ServingStatus::Serving) {
            assert!(
                started.elapsed() < RECOVERY,
                "replica at {} did not recover",
                replica.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let recovered_at = load.count();
    load.wait_for(recovered_at + 60, RECOVERY).await;
    stop_clients(&load, clients).await;
    assert!(
        load.count() >= recovered_at + 60,
        "the load did not recover: {} -> {}",
        recovered_at,
        load.count()
    );
    for replica in &replicas {
        replica
            .sts()
            .get_session_token(key_login(&id, &secret))
            .await
            .expect("mints after the database is back");
    }
    assert_every_credential_recorded(&shared, &load);
    shared.verify();
}

/// Not a test: AssumeRole throughput (each call also preceded by an access-key login, so
/// per round two durable audited mints) with one and three replicas on PostgreSQL and one
/// on sled, measured in one run for `BENCHMARKS.md`.
///
/// `scripts/with-postgres.sh cargo test --test it measure_assume_role_throughput -- --ignored --nocapture`
/// (`STINT_BENCH_BIN=path/to/stint` measures another build; `STINT_BENCH_SECS` the time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn measure_assume_role_throughput() {
    let Some(base) = testing::url("measure_assume_role") else {
        return;
    };
    let secs: u64 = std::env::var("STINT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let clients = 32;
    for (label, replicas, url) in [
        ("sled, 1 replica", 1, None),
        (
            "postgres, 1 replica",
            1,
            Some(testing::fresh_database(&base, "measure_1").unwrap()),
        ),
        (
            "postgres, 3 replicas",
            3,
            Some(testing::fresh_database(&base, "measure_3").unwrap()),
        ),
    ] {
        let (_shared, seed, started) = cluster(replicas, url).await;
        let (admin, _, _) = setup(&started[0], &seed).await;
        // Tokens to assume the role with: one svc session per client.
        let mut iam = IamClient::with_interceptor(started[0].channel.clone(), Bearer::new(&admin));
        let key = iam
            .create_access_key(proto::CreateAccessKeyRequest {
                user_name: "svc".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_key
            .unwrap();
        let token = started[0]
            .sts()
            .get_session_token(key_login(&key.access_key_id, &key.secret_access_key))
            .await
            .unwrap()
            .into_inner()
            .credentials
            .unwrap()
            .session_token;
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let channels: Vec<Channel> = started.iter().map(|r| r.channel.clone()).collect();
        let began = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let mut sts = StsClient::with_interceptor(
                    channels[c % channels.len()].clone(),
                    Bearer::new(&token),
                );
                let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match sts.assume_role(assume("worker", "bench")).await {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            let _ = handle.await;
        }
        let elapsed = began.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "{label}: {n} AssumeRole in {elapsed:.1}s = {:.0}/s ({} failed, {clients} clients)",
            n as f64 / elapsed,
            failed.load(Ordering::Relaxed)
        );
    }
}
