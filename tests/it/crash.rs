//! Kill -9 at random moments of a mixed workload, round after round, on one data dir.
//!
//! The real `stint serve` binary runs on a sled data dir while several clients create
//! users and login profiles, put inline policies, log in with passwords, mint role
//! sessions and rotate the signing key. At a random moment (seeded; the seed is printed
//! and `STINT_CRASH_SEED` replays it) the daemon gets SIGKILL. Then: `stint audit verify`
//! passes, every session a client received has its event in the chain, the daemon starts
//! again, and every change a client saw acknowledged is there (users, login profiles,
//! policies, signing keys) and every received session token still verifies.
//!
//! The process helpers here are shared with `disk_full.rs`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Request;
use tonic::transport::Channel;

use stint::proto;
use stint::proto::get_session_token_request::Credential;
use stint::proto::iam_client::IamClient;
use stint::proto::keys_client::KeysClient;
use stint::proto::sts_client::StsClient;

use crate::common::{allow, arn, init_totp_seed, run_init, trust};

pub const BIN: &str = env!("CARGO_BIN_EXE_stint");
pub const ADMIN_PASSWORD: &str = "crash test password 42";
const USER_PASSWORD: &str = "crash test user password 7";

/// Cheap hashing and a quiet JSON log, through the environment.
pub fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("STINT_DATA_DIR", data_dir)
        .env("STINT_ARGON2__MEMORY_KIB", "8")
        .env("STINT_ARGON2__ITERATIONS", "1")
        .env("RUST_LOG", "info,sled=warn,h2=warn,hyper=warn,tower=warn")
        .env_remove("STINT_CONFIG");
    cmd
}

/// `stint init` with an `admin` user; returns the admin's TOTP seed.
fn init_command(data_dir: &Path) -> Command {
    let mut cmd = command(data_dir);
    cmd.arg("init");
    cmd
}

pub fn init(data_dir: &Path) -> Vec<u8> {
    init_totp_seed(&run_init(init_command(data_dir), ADMIN_PASSWORD))
}

/// A running `stint serve`, killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
}

impl Daemon {
    /// Starts the daemon and waits (bounded) until it logs its address.
    pub fn start(data_dir: &Path) -> Daemon {
        let mut child = command(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stint serve starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in stderr.lines().map_while(Result::ok) {
                let addr = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned));
                match (addr, tx.take()) {
                    (Some(addr), Some(sender)) => {
                        let _ = sender.send(Ok(addr));
                    }
                    (None, Some(sender)) => tx = Some(sender),
                    _ => {}
                }
                // Keep the pipe drained; show what the daemon says about failures.
                if line.contains("\"ERROR\"") || line.contains("panicked") {
                    eprintln!("daemon: {line}");
                }
            }
            if let Some(sender) = tx {
                let _ = sender.send(Err("the daemon exited before serving"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon logs its address once it is serving")
            .unwrap_or_else(|e| panic!("{e}"));
        Daemon { child, addr }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("daemon reachable")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; true when the daemon exits 0.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn password_login(user: &str, password: &str, code: String) -> proto::GetSessionTokenRequest {
    proto::GetSessionTokenRequest {
        credential: Some(Credential::Password(proto::PasswordCredential {
            user_name: user.into(),
            password: password.into(),
        })),
        token_code: code,
        duration_seconds: 3600,
        serial_number: String::new(),
    }
}

/// The admin's session token: password and the current TOTP code.
pub async fn admin_token(channel: Channel, seed: &[u8]) -> String {
    let step = stint::core::authn::totp::step_at(std::time::SystemTime::now());
    let code = stint::core::authn::totp::code_at(seed, step);
    StsClient::new(channel)
        .get_session_token(password_login("admin", ADMIN_PASSWORD, code))
        .await
        .expect("admin logs in with password and TOTP")
        .into_inner()
        .credentials
        .unwrap()
        .session_token
}

/// `stint audit verify` on the (stopped) daemon's data dir; panics unless intact.
pub fn verify(data_dir: &Path) -> Value {
    let out = command(data_dir)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verify printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "audit verify failed: {report}");
    assert_eq!(report["intact"], true, "{report}");
    report
}

/// The session ids of every credential event in the chain (`stint audit export`).
pub fn recorded_sessions(data_dir: &Path) -> HashSet<String> {
    let out = command(data_dir)
        .args(["audit", "export"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let record: Value = serde_json::from_str(line).expect("export writes JSON lines");
            record["event"]["credential"]["session_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed from `STINT_CRASH_SEED`, else from the clock; printed either way.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("STINT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (replay with STINT_CRASH_SEED={seed})");
    seed
}

/// What clients saw acknowledged in one round.
#[derive(Default)]
struct Acked {
    users: Vec<String>,
    /// Users whose `CreateLoginProfile` was acknowledged.
    with_password: Vec<String>,
    policies: Vec<(String, String)>,
    /// `(session id, session token)` of every credential received.
    sessions: Vec<(String, String)>,
    kids: Vec<String>,
    /// How each client's round ended (the first refused call), for the log.
    ended: Vec<String>,
}

const ROLE: &str = "crash-role";

/// One client: random operations until the daemon stops answering.
async fn client(
    channel: Channel,
    admin: String,
    name: String,
    mut rng: Rng,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) {
    let mut iam = IamClient::new(channel.clone());
    let mut sts = StsClient::new(channel.clone());
    let mut keys = KeysClient::new(channel);
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let roll = rng.below(100);
        let ok = if roll < 30 || mine.is_empty() {
            let user = format!("{name}-{n}");
            let created = iam
                .create_user(bearer(
                    proto::CreateUserRequest {
                        user_name: user.clone(),
                        ..Default::default()
                    },
                    &admin,
                ))
                .await
                .map_err(|s| note(&acked, "CreateUser", &s))
                .is_ok();
            if created {
                acked.lock().unwrap().users.push(user.clone());
                mine.push(user.clone());
                let profile = iam
                    .create_login_profile(bearer(
                        proto::CreateLoginProfileRequest {
                            user_name: user.clone(),
                            password: USER_PASSWORD.into(),
                            password_reset_required: false,
                        },
                        &admin,
                    ))
                    .await
                    .map_err(|s| note(&acked, "CreateLoginProfile", &s))
                    .is_ok();
                if profile {
                    acked.lock().unwrap().with_password.push(user);
                }
                profile
            } else {
                false
            }
        } else if roll < 50 {
            let user = mine[rng.below(mine.len() as u64) as usize].clone();
            let policy = format!("p{n}");
            let put = iam
                .put_user_policy(bearer(
                    proto::PutUserPolicyRequest {
                        user_name: user.clone(),
                        policy_name: policy.clone(),
                        policy_document: allow(&["s3:GetObject"], &["*"]),
                    },
                    &admin,
                ))
                .await
                .map_err(|s| note(&acked, "PutUserPolicy", &s))
                .is_ok();
            if put {
                acked.lock().unwrap().policies.push((user, policy));
            }
            put
        } else if roll < 70 {
            let with_password = acked.lock().unwrap().with_password.clone();
            let candidates: Vec<&String> =
                with_password.iter().filter(|u| mine.contains(u)).collect();
            let Some(user) = candidates.get(rng.below(candidates.len() as u64) as usize) else {
                continue;
            };
            match sts
                .get_session_token(password_login(user, USER_PASSWORD, String::new()))
                .await
            {
                Ok(response) => {
                    let credentials = response.into_inner().credentials.unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .sessions
                        .push((credentials.access_key_id, credentials.session_token));
                    true
                }
                Err(s) => note(&acked, "GetSessionToken", &s),
            }
        } else if roll < 97 {
            let request = proto::AssumeRoleRequest {
                role_arn: arn("role", ROLE),
                role_session_name: format!("{name}-{n}"),
                ..Default::default()
            };
            match sts.assume_role(bearer(request, &admin)).await {
                Ok(response) => {
                    let credentials = response.into_inner().credentials.unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .sessions
                        .push((credentials.access_key_id, credentials.session_token));
                    true
                }
                Err(s) => note(&acked, "AssumeRole", &s),
            }
        } else {
            match keys
                .rotate_signing_key(bearer(proto::RotateSigningKeyRequest {}, &admin))
                .await
            {
                Ok(response) => {
                    acked
                        .lock()
                        .unwrap()
                        .kids
                        .push(response.into_inner().key.unwrap().kid);
                    true
                }
                Err(s) => note(&acked, "RotateSigningKey", &s),
            }
        };
        if !ok {
            // The daemon is gone (or refused): this client's round is over.
            return;
        }
    }
}

/// Notes how a client's round ended; false.
fn note(acked: &Mutex<Acked>, call: &str, status: &tonic::Status) -> bool {
    acked
        .lock()
        .unwrap()
        .ended
        .push(format!("{call}: {:?}", status.code()));
    false
}

/// Every acknowledged change of the round is in the restarted daemon.
async fn assert_present(channel: Channel, admin: &str, acked: &Acked) {
    let mut iam = IamClient::new(channel.clone());
    for user in &acked.users {
        iam.get_user(bearer(
            proto::GetUserRequest {
                user_name: user.clone(),
            },
            admin,
        ))
        .await
        .unwrap_or_else(|s| panic!("acknowledged user {user} lost: {s}"));
    }
    for user in &acked.with_password {
        iam.get_login_profile(bearer(
            proto::GetLoginProfileRequest {
                user_name: user.clone(),
            },
            admin,
        ))
        .await
        .unwrap_or_else(|s| panic!("acknowledged login profile of {user} lost: {s}"));
    }
    for (user, policy) in &acked.policies {
        iam.get_user_policy(bearer(
            proto::GetUserPolicyRequest {
                user_name: user.clone(),
                policy_name: policy.clone(),
            },
            admin,
        ))
        .await
        .unwrap_or_else(|s| panic!("acknowledged policy {user}/{policy} lost: {s}"));
    }
    let mut sts = StsClient::new(channel.clone());
    for (id, token) in &acked.sessions {
        sts.get_caller_identity(bearer(proto::GetCallerIdentityRequest {}, token))
            .await
            .unwrap_or_else(|s| panic!("received session {id} no longer verifies: {s}"));
    }
    let listed: HashSet<String> = KeysClient::new(channel)
        .list_signing_keys(bearer(proto::ListSigningKeysRequest {}, admin))
        .await
        .expect("ListSigningKeys")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    for kid in &acked.kids {
        assert!(listed.contains(kid), "acknowledged rotation to {kid} lost");
    }
}

/// Totals over all rounds, for the report.
#[derive(Default, Debug)]
struct Totals {
    users: usize,
    policies: usize,
    sessions: usize,
    rotations: usize,
}

async fn kill_rounds(rounds: usize, clients: usize, test: &str) {
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let admin_seed = init(dir.path());
    let daemon = Daemon::start(dir.path());
    let admin = admin_token(daemon.channel().await, &admin_seed).await;
    IamClient::new(daemon.channel().await)
        .create_role(bearer(
            proto::CreateRoleRequest {
                role_name: ROLE.into(),
                assume_role_policy_document: trust(&arn("user", "admin"), None),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("CreateRole");
    let mut daemon = Some(daemon);
    let mut totals = Totals::default();
    let started = Instant::now();
    for round in 0..rounds {
        let running = match daemon.take() {
            Some(running) => running,
            None => Daemon::start(dir.path()),
        };
        let channel = running.channel().await;
        let acked = Arc::new(Mutex::new(Acked::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                tokio::spawn(client(
                    channel.clone(),
                    admin.clone(),
                    format!("r{round}c{i}"),
                    Rng::new(rng.next()),
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(100 + rng.below(900));
        tokio::time::sleep(kill_after).await;
        running.kill();
        for task in tasks {
            task.await.expect("client task");
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());

        verify(dir.path());
        let recorded = recorded_sessions(dir.path());
        for (id, _) in &acked.sessions {
            assert!(
                recorded.contains(id),
                "round {round} (seed {seed}): received session {id} has no audit event"
            );
        }
        let restarted = Daemon::start(dir.path());
        assert_present(restarted.channel().await, &admin, &acked).await;
        eprintln!(
            "{test}: round {round}: killed after {kill_after:?}; acknowledged {} users, {} policies, {} sessions, {} rotations; all present; clients ended on {:?}",
            acked.users.len(),
            acked.policies.len(),
            acked.sessions.len(),
            acked.kids.len(),
            acked.ended
        );
        totals.users += acked.users.len();
        totals.policies += acked.policies.len();
        totals.sessions += acked.sessions.len();
        totals.rotations += acked.kids.len();
        daemon = Some(restarted);
    }
    let last = daemon.take().unwrap();
    assert!(last.terminate(), "SIGTERM exits 0");
    verify(dir.path());
    eprintln!(
        "{test}: {rounds} kills in {:?} (seed {seed}): {totals:?}",
        started.elapsed()
    );
    assert!(
        totals.sessions > 0 && totals.users > 0,
        "the workload acknowledged nothing: {totals:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_mixed_workload_loses_no_acknowledged_change() {
    kill_rounds(10, 4, "sigkill_during_a_mixed_workload").await;
}

/// The long run: `cargo test --test it crash::sigkill_100 -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 100 kills"]
async fn sigkill_100_rounds_loses_no_acknowledged_change() {
    kill_rounds(100, 4, "sigkill_100_rounds").await;
}
