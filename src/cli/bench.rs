//! `stint bench`: a load generator over real gRPC.
//!
//! By default it starts a broker in-process on `127.0.0.1:0` with a temporary data dir;
//! with `--endpoint` it drives a running server instead (plain or TLS, any store), using
//! the client's credentials and creating nothing there (see [`BenchArgs::endpoint`]). It
//! drives the server with concurrent tonic clients for a fixed time per RPC and reports each figure beside the
//! primitive beneath it, measured in the same run, as a ratio: an empty unary RPC
//! (`grpc.health.v1.Health/Check`, "echo") for every RPC, one fdatasync for AssumeRole's
//! durable audit, one argon2id hash for logins, a bare Ed25519 verify for offline token
//! verification — and how much a flood of logins slows Authorize down. `--output json`
//! prints one object per line per measurement so other tools can read it.
//!
//! Each stream sends its next call when the last one answers (closed loop), so figures are
//! taken at saturation, where any CPU a login takes shows as request latency. `--rate`
//! offers a fixed rate instead (open loop, timed without coordinated omission, see
//! [`backlog`]): the latency at the load a server is actually run at.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::broker::{Broker, Clock as _, RequestMeta, SystemClock};
use crate::config::Config;
use crate::core::authn::{password, totp};
use crate::core::secret::SecretString;
use crate::core::token::Verifier;
use crate::proto::{self, sts_client::StsClient, tokens_client::TokensClient};
use crate::store::seal::MasterKey;

use super::client::duration::parse_duration;
use super::client::{
    ClientTls, ConnFlags, Context as ClientContext, Env as ClientEnv, connect_with,
};
use super::serve::Daemon;
use super::{CliError, OutputFormat};

/// What `--rpc` can measure.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchRpc {
    /// The empty unary RPC (`grpc.health.v1.Health/Check`): the ceiling.
    Echo,
    /// `Sts/GetCallerIdentity`: one token verification.
    GetCallerIdentity,
    /// `Tokens/Authorize` with the caller's own session token.
    Authorize,
    /// `Sts/AssumeRole`: a signed, durably audited mint.
    AssumeRole,
    /// `Sts/GetSessionToken` with an access key.
    GetSessionTokenKey,
    /// `Sts/GetSessionToken` with a password (argon2id).
    Login,
    /// Offline verification of a session token against the served JWKS (no RPC).
    VerifyOffline,
}

impl BenchRpc {
    const ALL: [BenchRpc; 7] = [
        BenchRpc::Echo,
        BenchRpc::GetCallerIdentity,
        BenchRpc::Authorize,
        BenchRpc::AssumeRole,
        BenchRpc::GetSessionTokenKey,
        BenchRpc::Login,
        BenchRpc::VerifyOffline,
    ];

    fn name(self) -> &'static str {
        match self {
            BenchRpc::Echo => "echo",
            BenchRpc::GetCallerIdentity => "get-caller-identity",
            BenchRpc::Authorize => "authorize",
            BenchRpc::AssumeRole => "assume-role",
            BenchRpc::GetSessionTokenKey => "get-session-token-key",
            BenchRpc::Login => "login",
            BenchRpc::VerifyOffline => "verify-offline",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// RPC to measure (repeatable); default: echo and authorize.
    #[arg(long = "rpc", value_enum)]
    pub rpcs: Vec<BenchRpc>,
    /// Concurrent streams (in-flight requests).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Time per measurement: seconds (`30`) or with a unit (`2s`, `1m`).
    #[arg(long, default_value = "3s", value_parser = parse_bench_duration)]
    pub duration: Duration,
    /// Open loop: offer this many calls per second in all, spread over the streams, instead
    /// of each stream sending its next call when the last one answers. A call sent late
    /// because its stream was still waiting on the server is timed from when it was due,
    /// so a server that falls behind shows it in p99 (no coordinated omission).
    #[arg(long, conflicts_with = "suite", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Every RPC at 16 and 64 streams, beside its primitive, plus Authorize during a login
    /// flood, at saturation and at half its rate alone (open loop).
    #[arg(long)]
    pub suite: bool,
    /// Concurrent logins in the flood phase.
    #[arg(long, default_value_t = 8)]
    pub login_flood: usize,
    /// Drive a running server (`http://` or `https://`) instead of an in-process one. It
    /// authenticates like every client command (`--token` / `STINT_TOKEN`, else the
    /// profile's cached session) and creates nothing: echo, get-caller-identity,
    /// authorize (the caller's token as its own subject) and verify-offline need only a
    /// valid session; assume-role needs `--role-arn` (a role the caller may assume: each
    /// call mints a 900 s session and writes its audit event); get-session-token-key
    /// needs `--access-key-id` and `--secret-access-key`; login and the login flood need
    /// `--login-user` and `STINT_BENCH_PASSWORD` (a user without MFA). RPCs whose
    /// credentials are missing are skipped by `--suite` and refused when named.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// PEM CA certificate of the server's TLS certificate (with an https:// --endpoint).
    #[arg(long, env = "STINT_CA_CERT", requires = "endpoint")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that require one (mTLS).
    #[arg(long = "tls-cert", value_name = "FILE", env = "STINT_CLIENT_CERT", requires_all = ["endpoint", "client_key"])]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long = "tls-key",
        value_name = "FILE",
        env = "STINT_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,
    /// Credentials profile whose cached session drives a running server.
    #[arg(long, env = "STINT_PROFILE", default_value = "default")]
    pub profile: String,
    /// Session token to use instead of the profile's (with --endpoint).
    #[arg(long, env = "STINT_TOKEN", hide_env_values = true, value_parser = super::client::secret_arg)]
    pub token: Option<SecretString>,
    /// Role to assume for assume-role (with --endpoint).
    #[arg(long, requires = "endpoint")]
    pub role_arn: Option<String>,
    /// Access key for get-session-token-key (with --endpoint).
    #[arg(long, env = "STINT_BENCH_ACCESS_KEY_ID", requires = "endpoint")]
    pub access_key_id: Option<String>,
    /// Its secret (prefer the environment variable to the command line).
    #[arg(
        long,
        env = "STINT_BENCH_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "access_key_id",
        value_parser = super::client::secret_arg
    )]
    pub secret_access_key: Option<SecretString>,
    /// User whose password logins are measured (password in STINT_BENCH_PASSWORD).
    #[arg(long, requires = "endpoint")]
    pub login_user: Option<String>,
}

/// `--rate` bounds: one call a minute, ten million a second.
const MIN_RATE: f64 = 1.0 / 60.0;
const MAX_RATE: f64 = 1e7;

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (MIN_RATE..=MAX_RATE).contains(&rate) => Ok(rate),
        Ok(_) => Err(format!(
            "calls per second must be between {MIN_RATE:.3} (one a minute) and {MAX_RATE}"
        )),
        Err(_) => Err("expected calls per second, a number such as 5000".into()),
    }
}

fn parse_bench_duration(text: &str) -> Result<Duration, String> {
    let seconds = parse_duration(text)?;
    Ok(Duration::from_secs(
        u64::try_from(seconds).map_err(|e| e.to_string())?,
    ))
}

/// One measured figure, printed as a text row or a JSON line.
#[derive(Debug, Clone, serde::Serialize)]
struct Figure {
    rpc: &'static str,
    concurrency: usize,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
    phase: &'static str,
    /// The primitive beneath it, its rate in the same run, and this figure's share of it.
    primitive: &'static str,
    primitive_rps: f64,
    ratio: f64,
    /// The share of the machine's CPU time the hypervisor gave to other guests while this
    /// was measured (`/proc/stat` steal; `null` where there is none to read).
    steal_pct: Option<f64>,
    /// CPU time of this process per call: server and clients in-process, the clients
    /// alone with `--endpoint`. Steal does not inflate it, so it compares builds on a
    /// noisy machine better than `rps` does. `null` in a login flood (the logins' hashing
    /// is in it) or where `/proc/self/stat` is unreadable.
    cpu_us_per_call: Option<f64>,
    /// Open loop (`--rate`, and the suite's half-load flood): the calls per second offered;
    /// `null` when each stream sent its next call as soon as the last answered.
    offered_rps: Option<f64>,
}

#[derive(Clone, Copy)]
struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
    errors: usize,
    steal_pct: Option<f64>,
    cpu_us_per_call: Option<f64>,
}

fn stats(mut samples: Vec<Duration>, errors: usize, wall: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        per_sec: samples.len() as f64 / wall.as_secs_f64(),
        errors,
        steal_pct: None,
        cpu_us_per_call: None,
    }
}

/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat`'s CPU times, on every architecture
/// Stint builds for.
const PROC_TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of a process, in ticks, from its `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields count from its last `)`.
fn parse_process_cpu_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_ascii_whitespace()
        .collect();
    // After the name: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

fn process_cpu_ticks() -> Option<u64> {
    parse_process_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU µs per call between two readings, over `calls` calls.
fn cpu_us_per_call(before: Option<u64>, after: Option<u64>, calls: f64) -> Option<f64> {
    let ticks = after?.checked_sub(before?)?;
    (calls >= 1.0).then(|| (ticks.saturating_mul(1_000_000) / PROC_TICKS_PER_SEC) as f64 / calls)
}

/// Cumulative CPU time of the whole machine, from the first line of `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTimes {
    steal: u64,
    total: u64,
}

/// Parses `cpu  user nice system idle iowait irq softirq steal [guest guest_nice]`; guest
/// time is already counted in user, so the total is the first eight fields.
fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let mut fields = stat.lines().next()?.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(CpuTimes {
        steal: *values.get(7)?,
        total: values.iter().try_fold(0u64, |sum, v| sum.checked_add(*v))?,
    })
}

fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Steal between two readings, as a percentage of all CPU time between them.
fn steal_pct(before: Option<CpuTimes>, after: Option<CpuTimes>) -> Option<f64> {
    let (before, after) = (before?, after?);
    let total = after.total.checked_sub(before.total).filter(|&t| t > 0)?;
    let steal = after.steal.checked_sub(before.steal)?;
    Some(steal as f64 * 100.0 / total as f64)
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::new(e.to_string())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The `authorization` value for `token`, built once: like the client library, the bench
/// clones it into each request rather than re-validating ~700 bytes per call.
fn authorization(token: &str) -> Result<AsciiMetadataValue, CliError> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| CliError::new("the session token is not a valid header value"))
}

fn bearer<T>(message: T, authorization: &AsciiMetadataValue) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

/// How one measurement loads the server: `concurrency` streams for `duration`, each
/// sending its next call when the last answers (closed loop), or at `rate` calls per
/// second in all (open loop, see [`Pace`]).
#[derive(Clone, Copy, Debug)]
struct Load {
    duration: Duration,
    concurrency: usize,
    rate: Option<f64>,
}

impl Load {
    fn closed(duration: Duration, concurrency: usize) -> Self {
        Load {
            duration,
            concurrency,
            rate: None,
        }
    }
}

/// Open-loop schedule of one stream: its calls are due at fixed intervals, whatever the
/// server answers, and stream `i` of `n` starts `i/n` of an interval in, so together the
/// streams offer an even `rate`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pace {
    first: Duration,
    interval: Duration,
}

impl Pace {
    fn new(rate: f64, stream: usize, streams: usize) -> Self {
        let streams = streams.max(1);
        let interval = Duration::try_from_secs_f64(streams as f64 / rate).unwrap_or(Duration::MAX);
        Pace {
            first: interval.mul_f64(stream as f64 / streams as f64),
            interval,
        }
    }

    /// When call `k` (from 0) is due, counted from the start of the measurement; `None`
    /// past any time a measurement can reach.
    fn due(&self, k: u32) -> Option<Duration> {
        self.interval.checked_mul(k)?.checked_add(self.first)
    }
}

/// How long a paced call waited for its stream, the stream being busy with the call before
/// it: `max(0, the last call's wait + its answer time − the interval)` (Lindley's recursion
/// for a queue with one server). A call's latency is this wait plus its own answer time, so
/// a server that answers slower than the interval shows its backlog in the figures, as if
/// every call had been sent when due (no coordinated omission), while the client's timer
/// waking late (tokio's resolution is 1 ms) is not charged to the server.
fn backlog(last_wait: Duration, last_answer: Duration, interval: Duration) -> Duration {
    (last_wait + last_answer).saturating_sub(interval)
}

/// Runs `call` from `load.concurrency` tasks for `load.duration`; task `i` uses channel
/// `i % n`. Failed calls are counted, not timed.
async fn drive<F, Fut>(load: Load, channels: &[Channel], call: F) -> Result<Stats, CliError>
where
    F: Fn(Channel) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    // tokio's clock, so tests can run a measurement on paused time.
    let started = tokio::time::Instant::now();
    let deadline = started + load.duration;
    let streams = load.concurrency.max(1);
    let mut tasks = Vec::new();
    for i in 0..streams {
        let call = call.clone();
        let channel = channels
            .get(i % channels.len().max(1))
            .cloned()
            .ok_or_else(|| CliError::new("no connection"))?;
        let pace = load.rate.map(|rate| Pace::new(rate, i, streams));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            let (mut wait, mut k) = (Duration::ZERO, 0u32);
            while tokio::time::Instant::now() < deadline {
                if let Some(pace) = pace {
                    let due = match pace.due(k).and_then(|at| started.checked_add(at)) {
                        Some(due) if due < deadline => due,
                        _ => break,
                    };
                    k = k.saturating_add(1);
                    tokio::time::sleep_until(due).await;
                }
                let sent = tokio::time::Instant::now();
                let result = call(channel.clone()).await;
                let answer = sent.elapsed();
                match result {
                    Ok(()) => samples.push(wait + answer),
                    Err(_) => errors += 1,
                }
                if let Some(pace) = pace {
                    wait = backlog(wait, answer, pace.interval);
                }
                // CPU-only calls (offline verify) must still let the other tasks run.
                tokio::task::yield_now().await;
            }
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (samples, failed) = task.await.map_err(err)?;
        all.extend(samples);
        errors += failed;
    }
    // An open loop's last call can end before the deadline; its window is still `duration`.
    Ok(stats(all, errors, started.elapsed().max(load.duration)))
}

/// Median time of `runs` calls of a blocking primitive, as calls per second on one core.
fn primitive_rate(
    runs: usize,
    mut once: impl FnMut() -> Result<(), CliError>,
) -> Result<f64, CliError> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        once()?;
        samples.push(t.elapsed());
    }
    let p50 = stats(samples, 0, Duration::from_secs(1)).p50;
    Ok(1.0 / p50.as_secs_f64().max(1e-9))
}

fn progress(line: &str) {
    eprintln!("stint bench: {line}");
}

/// What the measured closures need: the server and the callers' credentials (the
/// optional ones may be missing against a running server).
struct Setup {
    endpoint: String,
    tls: ClientTls,
    /// Where the fdatasync primitive is measured.
    probe_dir: std::path::PathBuf,
    token: String,
    /// User and password for logins.
    login: Option<(String, SecretString)>,
    access_key: Option<(String, SecretString)>,
    role_arn: Option<String>,
    verifier: Arc<Verifier>,
    /// The session token's signed part, its signature and the key that made it.
    signed: Arc<(Vec<u8>, Vec<u8>, [u8; 32])>,
}

pub async fn run(args: BenchArgs, output: OutputFormat) -> Result<(), CliError> {
    if let Some(endpoint) = args.endpoint.clone() {
        return run_remote(&args, output, &endpoint).await;
    }
    let dir = tempfile_dir()?;
    let result = run_in(&args, output, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    args: &BenchArgs,
    output: OutputFormat,
    dir: &std::path::Path,
) -> Result<(), CliError> {
    let config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    let argon2 = password::Argon2Params {
        memory_kib: config.argon2.memory_kib,
        iterations: config.argon2.iterations,
        parallelism: config.argon2.parallelism,
    };
    let issuer = config.issuer();
    let audience = config.tokens.audience.clone();
    let master = MasterKey::generate(&SystemRandom::new()).map_err(err)?;
    let daemon = Daemon::open_with_master(config, master, Arc::new(SystemClock))?;
    let broker: Arc<Broker> = daemon.broker.clone();
    let password = SecretString::new("bench password 1234".into());
    let (_, _, seed) = broker
        .bootstrap_admin("admin", &password)
        .await
        .map_err(err)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        daemon
            .serve(listener, None, async {
                let _ = stopped.await;
            })
            .await
    });
    let result = async {
        let setup = prepare(&broker, addr, &password, seed.expose(), &issuer, &audience).await?;
        let setup = Setup {
            probe_dir: dir.to_path_buf(),
            ..setup
        };
        measure(args, output, &setup, &argon2).await
    }
    .await;
    if result.is_ok() && matches!(output, OutputFormat::Text) {
        // What group commit did for the mints above: records per transaction and per fsync.
        let stats = broker.audit.stats();
        if stats.appended > 0 {
            println!(
                "audit log: {} records in {} commit groups ({:.1} per transaction, {:.0} µs each), {} flushes ({:.1} per fsync, {:.0} µs each)",
                stats.appended,
                stats.commit_batches,
                stats.committed_records as f64 / stats.commit_batches.max(1) as f64,
                stats.commit_time.as_secs_f64() * 1e6 / stats.commit_batches.max(1) as f64,
                stats.flushes,
                stats.mean_batch,
                stats.flush_time.as_secs_f64() * 1e6 / stats.flushes.max(1) as f64,
            );
        }
    }
    let _ = stop.send(());
    server.await.map_err(err)??;
    result
}

async fn connect(addr: std::net::SocketAddr) -> Result<Channel, CliError> {
    Channel::from_shared(format!("http://{addr}"))
        .map_err(err)?
        .connect()
        .await
        .map_err(err)
}

/// A running server: the client's credentials, nothing created there.
async fn run_remote(
    args: &BenchArgs,
    output: OutputFormat,
    endpoint: &str,
) -> Result<(), CliError> {
    let conn = ConnFlags {
        endpoint: Some(endpoint.to_string()),
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
        profile: args.profile.clone(),
    };
    let context = ClientContext::open(&conn, &ClientEnv::from_process())?;
    let token = context
        .token(args.token.as_ref().map(SecretString::expose))?
        .expose()
        .to_string();
    let channel = context.channel().await?;
    // Fail fast, with the server's reason, on a token it does not take.
    StsClient::new(channel.clone())
        .get_caller_identity(bearer(
            proto::GetCallerIdentityRequest {},
            &authorization(&token)?,
        ))
        .await
        .map_err(|s| CliError::new(format!("the server refuses the bench's session token ({}: {}); run `stint login` or give --token", s.code(), s.message())))?;
    let login = match &args.login_user {
        Some(user) => {
            let password = std::env::var("STINT_BENCH_PASSWORD").map_err(|_| {
                CliError::new("--login-user needs the user's password in STINT_BENCH_PASSWORD")
            })?;
            Some((user.clone(), SecretString::new(password)))
        }
        None => None,
    };
    let access_key = match (&args.access_key_id, &args.secret_access_key) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (Some(_), None) => {
            return Err(CliError::new(
                "--access-key-id needs --secret-access-key (or STINT_BENCH_SECRET_ACCESS_KEY)",
            ));
        }
        _ => None,
    };
    let claims = unverified_claims(&token)?;
    let text = |key: &str| claims[key].as_str().unwrap_or_default().to_string();
    let (verifier, signed) = offline_verifier(channel, &token, &text("iss"), &text("aud")).await?;
    let setup = Setup {
        endpoint: endpoint.to_string(),
        tls: context.tls.clone(),
        probe_dir: std::env::temp_dir(),
        token,
        login,
        access_key,
        role_arn: args.role_arn.clone(),
        verifier,
        signed,
    };
    let argon2 = password::Argon2Params {
        memory_kib: Config::default().argon2.memory_kib,
        iterations: Config::default().argon2.iterations,
        parallelism: Config::default().argon2.parallelism,
    };
    measure(args, output, &setup, &argon2).await
}

/// The JWT's claims, unverified (the offline verifier is built for its issuer and
/// audience; the verification itself checks them).
fn unverified_claims(token: &str) -> Result<serde_json::Value, CliError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| CliError::new("the session token is not a JWT"))?;
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(payload.as_bytes())
        .map_err(|_| CliError::new("the session token's claims are not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| CliError::new("the session token's claims are not JSON"))
}

/// What an RPC needs that a running server's bench may lack, as a refusal naming it.
fn missing(setup: &Setup, rpc: BenchRpc) -> Option<&'static str> {
    match rpc {
        BenchRpc::AssumeRole if setup.role_arn.is_none() => Some(
            "assume-role needs --role-arn ARN: a role whose trust policy lets the bench's caller assume it (sts:AssumeRole)",
        ),
        BenchRpc::GetSessionTokenKey if setup.access_key.is_none() => Some(
            "get-session-token-key needs --access-key-id and --secret-access-key (or STINT_BENCH_SECRET_ACCESS_KEY)",
        ),
        BenchRpc::Login if setup.login.is_none() => {
            Some("login needs --login-user NAME and STINT_BENCH_PASSWORD (a user without MFA)")
        }
        _ => None,
    }
}

fn need<T: Clone>(value: &Option<T>, rpc: BenchRpc) -> Result<T, CliError> {
    value
        .clone()
        .ok_or_else(|| CliError::new(format!("{} cannot run without its credentials", rpc.name())))
}

/// Connects to the bench's server.
async fn open_channel(setup: &Setup) -> Result<Channel, CliError> {
    connect_with(&setup.endpoint, &setup.tls).await
}

async fn prepare(
    broker: &Broker,
    addr: std::net::SocketAddr,
    password: &SecretString,
    seed: &[u8],
    issuer: &str,
    audience: &str,
) -> Result<Setup, CliError> {
    let channel = connect(addr).await?;
    let code = totp::code_at(seed, totp::step_at(SystemClock.now()));
    let login = proto::GetSessionTokenRequest {
        credential: Some(proto::get_session_token_request::Credential::Password(
            proto::PasswordCredential {
                user_name: "admin".into(),
                password: password.expose().into(),
            },
        )),
        token_code: code,
        duration_seconds: 3600,
        serial_number: String::new(),
    };
    let token = StsClient::new(channel.clone())
        .get_session_token(login)
        .await
        .map_err(err)?
        .into_inner()
        .credentials
        .ok_or_else(|| CliError::new("no credentials"))?
        .session_token;
    // A password-only user for logins (no TOTP replay limits), with an access key.
    let admin = broker.authenticate(&token).map_err(err)?;
    let meta = RequestMeta::default();
    broker
        .create_user(&admin, &meta, "flood", "/", vec![], "")
        .await
        .map_err(err)?;
    broker
        .set_login_profile(&admin, &meta, "flood", password, false, true)
        .await
        .map_err(err)?;
    let (key, secret) = broker
        .create_access_key(&admin, &meta, "flood")
        .await
        .map_err(err)?;
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin.arn()}, "Action": "sts:AssumeRole"}]
    })
    .to_string();
    let role = broker
        .create_role(&admin, &meta, "bench", "/", &trust, "", 3600, vec![], "")
        .await
        .map_err(err)?;

    let (verifier, signed) = offline_verifier(channel, &token, issuer, audience).await?;
    Ok(Setup {
        endpoint: format!("http://{addr}"),
        tls: ClientTls::default(),
        probe_dir: std::env::temp_dir(),
        token,
        login: Some(("flood".into(), password.clone())),
        access_key: Some((key.access_key_id, secret.clone())),
        role_arn: Some(role.arn),
        verifier,
        signed,
    })
}

/// The session token's verifier from the served JWKS, as a relying party would fetch it,
/// and the token's signed part, signature and signing key (for the bare verify).
async fn offline_verifier(
    channel: Channel,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<(Arc<Verifier>, Arc<(Vec<u8>, Vec<u8>, [u8; 32])>), CliError> {
    let jwks = TokensClient::new(channel)
        .get_jwks(proto::GetJwksRequest::default())
        .await
        .map_err(err)?
        .into_inner();
    let mut verifier = Verifier::new(issuer.into(), audience.into(), 30);
    let (signed_part, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| CliError::new("session token is not a JWT"))?;
    let signature = data_encoding::BASE64URL_NOPAD
        .decode(signature.as_bytes())
        .map_err(err)?;
    let mut signer_key = None;
    for jwk in &jwks.keys {
        let x = data_encoding::BASE64URL_NOPAD
            .decode(jwk.x.as_bytes())
            .map_err(err)?;
        let public: [u8; 32] = x
            .try_into()
            .map_err(|_| CliError::new("JWKS key is not 32 bytes"))?;
        verifier.insert_key(jwk.kid.clone(), public);
        if bare_verify(&public, signed_part.as_bytes(), &signature) {
            signer_key = Some(public);
        }
    }
    let signer_key = signer_key.ok_or_else(|| CliError::new("no JWKS key verifies the token"))?;
    verifier.verify(token, SystemClock.now()).map_err(err)?;
    let signed = Arc::new((signed_part.as_bytes().to_vec(), signature, signer_key));
    Ok((Arc::new(verifier), signed))
}

fn bare_verify(public: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(message, signature)
        .is_ok()
}

fn login_request(user: &str, password: &str) -> proto::GetSessionTokenRequest {
    proto::GetSessionTokenRequest {
        credential: Some(proto::get_session_token_request::Credential::Password(
            proto::PasswordCredential {
                user_name: user.into(),
                password: password.into(),
            },
        )),
        token_code: String::new(),
        duration_seconds: 900,
        serial_number: String::new(),
    }
}

/// Measures `rpc` at `concurrency` streams.
/// [`call_rpc`] with the hypervisor's steal and this process's CPU time per call over the
/// measurement: on a shared VM a phase whose CPU was taken by other guests measures low,
/// and ratios between phases with different steal are skewed; CPU per call is not.
async fn measure_rpc(
    rpc: BenchRpc,
    load: Load,
    channels: &[Channel],
    setup: &Setup,
) -> Result<Stats, CliError> {
    let (before, cpu_before, started) = (read_cpu_times(), process_cpu_ticks(), Instant::now());
    let mut stats = call_rpc(rpc, load, channels, setup).await?;
    let calls = stats.per_sec * started.elapsed().as_secs_f64();
    stats.steal_pct = steal_pct(before, read_cpu_times());
    stats.cpu_us_per_call = cpu_us_per_call(cpu_before, process_cpu_ticks(), calls);
    Ok(stats)
}

async fn call_rpc(
    rpc: BenchRpc,
    load: Load,
    channels: &[Channel],
    setup: &Setup,
) -> Result<Stats, CliError> {
    match rpc {
        BenchRpc::Echo => {
            drive(load, channels, |channel| async move {
                tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ())
            })
            .await
        }
        BenchRpc::GetCallerIdentity => {
            let auth = authorization(&setup.token)?;
            drive(load, channels, move |channel| {
                let request = bearer(proto::GetCallerIdentityRequest {}, &auth);
                async move {
                    StsClient::new(channel)
                        .get_caller_identity(request)
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        BenchRpc::Authorize => {
            let token = Arc::new(setup.token.clone());
            let auth = authorization(&setup.token)?;
            drive(load, channels, move |channel| {
                let request = bearer(
                    proto::AuthorizeRequest {
                        session_token: token.to_string(),
                        action: "s3:GetObject".into(),
                        resource: "arn:aws:s3:::reports/q3.csv".into(),
                        context: vec![],
                    },
                    &auth,
                );
                async move {
                    TokensClient::new(channel)
                        .authorize(request)
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        BenchRpc::AssumeRole => {
            let auth = authorization(&setup.token)?;
            let role_arn = Arc::new(need(&setup.role_arn, rpc)?);
            drive(load, channels, move |channel| {
                let request = bearer(
                    proto::AssumeRoleRequest {
                        role_arn: role_arn.to_string(),
                        role_session_name: "bench".into(),
                        duration_seconds: 900,
                        ..Default::default()
                    },
                    &auth,
                );
                async move {
                    StsClient::new(channel)
                        .assume_role(request)
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        BenchRpc::GetSessionTokenKey => {
            let (id, secret) = need(&setup.access_key, rpc)?;
            let (id, secret) = (Arc::new(id), Arc::new(secret));
            drive(load, channels, move |channel| {
                let request = proto::GetSessionTokenRequest {
                    credential: Some(proto::get_session_token_request::Credential::AccessKey(
                        proto::AccessKeyCredential {
                            access_key_id: id.to_string(),
                            secret_access_key: secret.expose().to_owned(),
                        },
                    )),
                    token_code: String::new(),
                    duration_seconds: 900,
                    serial_number: String::new(),
                };
                async move {
                    StsClient::new(channel)
                        .get_session_token(request)
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        BenchRpc::Login => {
            let login = Arc::new(need(&setup.login, rpc)?);
            drive(load, channels, move |channel| {
                let request = login_request(&login.0, login.1.expose());
                async move {
                    StsClient::new(channel)
                        .get_session_token(request)
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        BenchRpc::VerifyOffline => {
            let verifier = setup.verifier.clone();
            let token = Arc::new(setup.token.clone());
            drive(load, channels, move |_| {
                let verified = verifier
                    .verify(&token, SystemClock.now())
                    .map(|_| ())
                    .map_err(|e| tonic::Status::unauthenticated(e.to_string()));
                async move { verified }
            })
            .await
        }
    }
}

/// The primitives beneath the figures, measured once per run.
struct Primitives {
    ed25519_verify: f64,
    argon2id_hash: f64,
    fdatasync: f64,
}

fn measure_primitives(
    setup: &Setup,
    argon2: &password::Argon2Params,
) -> Result<Primitives, CliError> {
    let dir = &setup.probe_dir;
    let (message, signature, public) = &*setup.signed;
    let ed25519_verify = primitive_rate(2000, || {
        if bare_verify(public, message, signature) {
            Ok(())
        } else {
            Err(CliError::new("bare Ed25519 verify failed"))
        }
    })?;
    let secret = SecretString::new("bench password 1234".into());
    let argon2id_hash = primitive_rate(5, || {
        password::hash_password(&secret, &[7u8; 16], argon2)
            .map(|_| ())
            .map_err(err)
    })?;
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).map_err(err)?;
    let fdatasync = primitive_rate(50, || {
        use std::io::Write as _;
        file.write_all(&[0u8; 512]).map_err(err)?;
        file.sync_data().map_err(err)
    })?;
    let _ = std::fs::remove_file(&path);
    Ok(Primitives {
        ed25519_verify,
        argon2id_hash,
        fdatasync,
    })
}

async fn measure(
    args: &BenchArgs,
    output: OutputFormat,
    setup: &Setup,
    argon2: &password::Argon2Params,
) -> Result<(), CliError> {
    let (rpcs, concurrencies): (Vec<BenchRpc>, Vec<usize>) = if args.suite {
        let mut rpcs = BenchRpc::ALL.to_vec();
        rpcs.retain(|&rpc| match missing(setup, rpc) {
            Some(why) => {
                progress(&format!("skipping {}: {why}", rpc.name()));
                false
            }
            None => true,
        });
        (rpcs, vec![16, 64])
    } else if args.rpcs.is_empty() {
        (
            vec![BenchRpc::Echo, BenchRpc::Authorize],
            vec![args.concurrency],
        )
    } else {
        (args.rpcs.clone(), vec![args.concurrency])
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(open_channel(setup).await?);
    }
    if let Some(why) = rpcs.iter().find_map(|&rpc| missing(setup, rpc)) {
        return Err(CliError::new(why));
    }
    progress("measuring primitives (Ed25519 verify, argon2id hash, fdatasync)");
    let primitives = measure_primitives(setup, argon2)?;
    // Warm up connections and caches.
    measure_rpc(
        BenchRpc::Echo,
        Load::closed(Duration::from_millis(200), 16),
        &channels,
        setup,
    )
    .await?;
    measure_rpc(
        BenchRpc::Authorize,
        Load::closed(Duration::from_millis(200), 16),
        &channels,
        setup,
    )
    .await?;

    let mut figures = Vec::new();
    for &concurrency in &concurrencies {
        let load = Load {
            duration: args.duration,
            concurrency,
            rate: args.rate,
        };
        progress(&format!("echo at {}", describe(load)));
        let echo = measure_rpc(BenchRpc::Echo, load, &channels, setup).await?;
        for &rpc in &rpcs {
            let s = if rpc == BenchRpc::Echo {
                echo
            } else {
                progress(&format!("{} at {}", rpc.name(), describe(load)));
                measure_rpc(rpc, load, &channels, setup).await?
            };
            if let Some(rate) = load.rate {
                // Open loop: the figure is the latency at that rate, beside the rate offered.
                figures.push(at_offered_rate(rpc.name(), concurrency, &s, rate));
                continue;
            }
            let (primitive, primitive_rps) = match rpc {
                BenchRpc::VerifyOffline => ("ed25519-verify", primitives.ed25519_verify),
                BenchRpc::Login => ("argon2id-hash", primitives.argon2id_hash),
                BenchRpc::AssumeRole => ("fdatasync", primitives.fdatasync),
                _ => ("echo", echo.per_sec),
            };
            figures.push(figure(
                rpc.name(),
                concurrency,
                &s,
                "alone",
                primitive,
                primitive_rps,
            ));
            if matches!(rpc, BenchRpc::AssumeRole | BenchRpc::Login) {
                figures.push(figure(
                    rpc.name(),
                    concurrency,
                    &s,
                    "alone",
                    "echo",
                    echo.per_sec,
                ));
            }
        }
        if args.suite && setup.login.is_some() {
            let saturated = Load::closed(args.duration, concurrency);
            let alone = measure_rpc(BenchRpc::Authorize, saturated, &channels, setup).await?;
            figures.push(figure(
                "authorize",
                concurrency,
                &alone,
                "alone",
                "echo",
                echo.per_sec,
            ));
            figures.extend(
                flood_figures(args, saturated, &alone, &channels, setup, &primitives).await?,
            );
            // The same at half of Authorize's rate alone: a server with headroom, as one
            // is run, where logins can use the idle half instead of taking from requests.
            let rate = alone.per_sec / 2.0;
            let half = Load {
                rate: Some(rate),
                ..saturated
            };
            progress(&format!("authorize at {}", describe(half)));
            let alone = measure_rpc(BenchRpc::Authorize, half, &channels, setup).await?;
            figures.push(at_offered_rate("authorize", concurrency, &alone, rate));
            figures.extend(flood_figures(args, half, &alone, &channels, setup, &primitives).await?);
        }
    }
    print_figures(&figures, output, args, &primitives);
    Ok(())
}

fn figure(
    rpc: &'static str,
    concurrency: usize,
    s: &Stats,
    phase: &'static str,
    primitive: &'static str,
    primitive_rps: f64,
) -> Figure {
    Figure {
        rpc,
        concurrency,
        rps: s.per_sec,
        p50_us: us(s.p50),
        p99_us: us(s.p99),
        errors: s.errors,
        phase,
        primitive,
        primitive_rps,
        ratio: s.per_sec / primitive_rps.max(1e-9),
        steal_pct: s.steal_pct,
        cpu_us_per_call: s.cpu_us_per_call,
        offered_rps: None,
    }
}

/// "64 streams for 3s", or "64 streams for 3s at 5000 calls/s".
fn describe(load: Load) -> String {
    match load.rate {
        None => format!("{} streams for {:?}", load.concurrency, load.duration),
        Some(rate) => format!(
            "{} streams for {:?} at {rate:.0} calls/s",
            load.concurrency, load.duration
        ),
    }
}

/// An open-loop figure measured alone, beside the rate it was offered.
fn at_offered_rate(rpc: &'static str, concurrency: usize, s: &Stats, rate: f64) -> Figure {
    let mut figure = figure(rpc, concurrency, s, "alone", "offered", rate);
    figure.offered_rps = Some(rate);
    figure
}

/// Authorize under `load` during a login flood, beside its p99 alone under the same load,
/// and the logins' rate beside one argon2id hash.
async fn flood_figures(
    args: &BenchArgs,
    load: Load,
    alone: &Stats,
    channels: &[Channel],
    setup: &Setup,
    primitives: &Primitives,
) -> Result<Vec<Figure>, CliError> {
    progress(&format!(
        "authorize at {} during a flood of {} logins",
        describe(load),
        args.login_flood
    ));
    let (during, logins) = login_flood(args, load, channels, setup).await?;
    let mut flooded = figure(
        "authorize",
        load.concurrency,
        &during,
        "login-flood",
        "authorize-alone-p99",
        us(alone.p99),
    );
    flooded.ratio = us(during.p99) / us(alone.p99).max(1e-9);
    flooded.offered_rps = load.rate;
    let mut logins = figure(
        "login",
        args.login_flood,
        &logins,
        "login-flood",
        "argon2id-hash",
        primitives.argon2id_hash,
    );
    logins.offered_rps = load.rate;
    Ok(vec![flooded, logins])
}

/// Authorize measured while `login_flood` clients log in over their own connections.
async fn login_flood(
    args: &BenchArgs,
    load: Load,
    channels: &[Channel],
    setup: &Setup,
) -> Result<(Stats, Stats), CliError> {
    let flooding = Arc::new(AtomicBool::new(true));
    let logins = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for _ in 0..args.login_flood {
        let (flooding, logins, failures) = (flooding.clone(), logins.clone(), failures.clone());
        let channel = open_channel(setup).await?;
        let (user, password) = need(&setup.login, BenchRpc::Login)?;
        flood.push(tokio::spawn(async move {
            let mut sts = StsClient::new(channel);
            while flooding.load(Ordering::Relaxed) {
                match sts
                    .get_session_token(login_request(&user, password.expose()))
                    .await
                {
                    Ok(_) => logins.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    let during = measure_rpc(BenchRpc::Authorize, load, channels, setup).await;
    flooding.store(false, Ordering::Relaxed);
    for task in flood {
        task.await.map_err(err)?;
    }
    let wall = started.elapsed();
    let mut during = during?;
    // The logins' hashing is in the process's CPU time too: no per-call figure.
    during.cpu_us_per_call = None;
    let logins = Stats {
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        per_sec: logins.load(Ordering::Relaxed) as f64 / wall.as_secs_f64(),
        errors: failures.load(Ordering::Relaxed),
        steal_pct: during.steal_pct,
        cpu_us_per_call: None,
    };
    Ok((during, logins))
}

fn json_line(figure: &Figure) -> String {
    serde_json::to_string(figure).unwrap_or_default()
}

fn print_figures(
    figures: &[Figure],
    output: OutputFormat,
    args: &BenchArgs,
    primitives: &Primitives,
) {
    if output == OutputFormat::Json {
        for figure in figures {
            println!("{}", json_line(figure));
        }
        return;
    }
    let target = match &args.endpoint {
        Some(endpoint) => format!("server at {endpoint}"),
        None => "loopback gRPC, in-process broker".to_string(),
    };
    println!(
        "stint bench: {:?} per measurement, {} connection(s), {target}",
        args.duration,
        args.connections.max(1)
    );
    println!(
        "primitives (one core): Ed25519 verify {:.0}/s, argon2id hash {:.1}/s, fdatasync {:.0}/s",
        primitives.ed25519_verify, primitives.argon2id_hash, primitives.fdatasync
    );
    println!(
        "{:<22} {:>4} {:<24} {:>10} {:>9} {:>9} {:>6}   {:<20} {:>10} {:>7} {:>6} {:>8}",
        "rpc",
        "c",
        "phase",
        "req/s",
        "p50 µs",
        "p99 µs",
        "errors",
        "beside",
        "its rate",
        "ratio",
        "steal",
        "cpu µs"
    );
    for f in figures {
        println!(
            "{:<22} {:>4} {:<24} {:>10.0} {:>9.0} {:>9.0} {:>6}   {:<20} {:>10.0} {:>6.2}× {:>6} {:>8}",
            f.rpc,
            f.concurrency,
            phase_label(f),
            f.rps,
            f.p50_us,
            f.p99_us,
            f.errors,
            f.primitive,
            f.primitive_rps,
            f.ratio,
            f.steal_pct
                .map_or_else(|| "-".to_string(), |p| format!("{p:.0}%")),
            f.cpu_us_per_call
                .map_or_else(|| "-".to_string(), |us| format!("{us:.0}"))
        );
    }
    if let Some(worst) = steal_warning(figures) {
        println!(
            "note: the hypervisor took up to {worst:.0}% of this machine's CPU (steal) during a \
             measurement; figures from such phases are low, and ratios between phases with \
             different steal are skewed"
        );
    }
}

/// The phase, with the rate offered in an open-loop measurement ("login-flood at 9000/s").
fn phase_label(figure: &Figure) -> String {
    match figure.offered_rps {
        None => figure.phase.to_string(),
        Some(rate) => format!("{} at {rate:.0}/s", figure.phase),
    }
}

/// The worst steal of the run, if it was enough to skew the figures.
fn steal_warning(figures: &[Figure]) -> Option<f64> {
    const SKEWS_FIGURES_PCT: f64 = 5.0;
    figures
        .iter()
        .filter_map(|f| f.steal_pct)
        .fold(None, |worst: Option<f64>, p| {
            Some(worst.map_or(p, |w| w.max(p)))
        })
        .filter(|&worst| worst >= SKEWS_FIGURES_PCT)
}

fn tempfile_dir() -> Result<std::path::PathBuf, CliError> {
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut random)
        .map_err(|_| CliError::new("random failed"))?;
    let dir = std::env::temp_dir().join(format!(
        "stint-bench-{}",
        data_encoding::HEXLOWER.encode(&random)
    ));
    std::fs::create_dir_all(&dir).map_err(err)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn bench_args(argv: &[&str]) -> (BenchArgs, OutputFormat) {
        let cli = Cli::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Bench(args) => (args, cli.output),
            _ => panic!("not bench"),
        }
    }

    #[test]
    fn rates_are_positive_finite_numbers_within_the_cap() {
        for (text, ok) in [
            ("5000", true),
            ("0.5", true),
            ("1e7", true),
            ("0.02", true),
            ("0.01", false),
            ("1e-300", false),
            ("0", false),
            ("-1", false),
            ("1e8", false),
            ("NaN", false),
            ("inf", false),
            ("fast", false),
            ("", false),
        ] {
            assert_eq!(parse_rate(text).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn rate_and_suite_do_not_go_together() {
        let cli = Cli::try_parse_from(["stint", "bench", "--suite", "--rate", "100"]);
        assert!(cli.is_err());
        let (args, _) = bench_args(&["stint", "bench", "--rpc", "authorize", "--rate", "250"]);
        assert_eq!(args.rate, Some(250.0));
    }

    #[test]
    fn streams_share_the_rate_evenly() {
        let ms = Duration::from_millis;
        // 4 streams at 1000/s: each sends every 4 ms, stream i starting i ms in.
        let pace = Pace::new(1000.0, 1, 4);
        assert_eq!(pace.interval, ms(4));
        assert_eq!((pace.due(0), pace.due(2)), (Some(ms(1)), Some(ms(9))));
        let mut dues: Vec<Duration> = (0..4)
            .flat_map(|i| {
                let pace = Pace::new(1000.0, i, 4);
                (0..250).filter_map(move |k| pace.due(k))
            })
            .collect();
        dues.sort();
        assert_eq!(dues.len(), 1000);
        assert!(
            dues.windows(2).all(|w| w[1] - w[0] == ms(1)),
            "one call a millisecond"
        );
        // The slowest rate over a million streams: far off, but no overflow.
        let slow = Pace::new(MIN_RATE, 999_999, 1_000_000);
        assert!(slow.due(1).is_some_and(|at| at > Duration::from_secs(3600)));
        assert_eq!(
            Pace::new(1e7, 0, 1).due(u32::MAX).map(|at| at.as_secs()),
            Some(429)
        );
    }

    #[test]
    fn a_call_waits_for_what_the_calls_before_it_overran() {
        let ms = Duration::from_millis;
        for (last_wait, last_answer, interval, wait) in [
            (0, 1, 2, 0), // answered within the interval: the next call goes out on time
            (0, 2, 2, 0), // exactly on time
            (0, 3, 2, 1), // overran by 1 ms: the next call waits 1 ms
            (1, 3, 2, 2), // and the overruns add up
            (5, 1, 2, 4), // a backlog drains by the slack of each fast answer
            (1, 0, 2, 0), // never below zero
        ] {
            assert_eq!(
                backlog(ms(last_wait), ms(last_answer), ms(interval)),
                ms(wait),
                "{last_wait} + {last_answer} against {interval}"
            );
        }
    }

    fn lazy_channel() -> Channel {
        tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_offers_its_rate_whatever_the_answers() {
        let load = Load {
            duration: Duration::from_secs(1),
            concurrency: 4,
            rate: Some(200.0),
        };
        let stats = drive(load, &[lazy_channel()], |_| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(stats.per_sec.round(), 200.0);
        assert_eq!(
            (stats.p50, stats.p99),
            (Duration::from_millis(1), Duration::from_millis(1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_slower_than_the_rate_shows_its_backlog_in_the_latencies() {
        let ms = Duration::from_millis;
        // One stream due every 10 ms, answers taking 20 ms: call k is sent at 20k ms but
        // was due at 10k ms, so it counts 20 + 10k ms.
        let slow = |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        };
        let paced = Load {
            duration: ms(100),
            concurrency: 1,
            rate: Some(100.0),
        };
        let stats = drive(paced, &[lazy_channel()], slow).await.unwrap();
        assert_eq!((stats.p50, stats.p99), (ms(40), ms(60)));
        // A closed loop sees only the answer time.
        let stats = drive(Load::closed(ms(100), 1), &[lazy_channel()], slow)
            .await
            .unwrap();
        assert_eq!((stats.p50, stats.p99), (ms(20), ms(20)));
    }

    /// Every `stint bench` line in the code blocks of README.md and BENCHMARKS.md, with its
    /// `\` continuations joined and its `# comment` dropped, as argv.
    fn documented_bench_commands(doc: &str) -> Vec<Vec<String>> {
        let (mut commands, mut in_block, mut pending) = (Vec::new(), false, String::new());
        for line in doc.lines() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if !in_block {
                continue;
            }
            let line = line.split(" # ").next().unwrap_or_default().trim();
            pending.push_str(line.trim_end_matches('\\'));
            pending.push(' ');
            if line.ends_with('\\') {
                continue;
            }
            let command = std::mem::take(&mut pending);
            let words: Vec<&str> = command.split_whitespace().collect();
            let bench = words.iter().position(|w| *w == "bench");
            let runs_stint = words.first().is_some_and(|w| w.ends_with("stint"))
                || words.starts_with(&["cargo", "run"]);
            if let (Some(at), true) = (bench, runs_stint) {
                let mut argv = vec!["stint".to_string()];
                argv.extend(words[at..].iter().map(|w| w.to_string()));
                commands.push(argv);
            }
        }
        commands
    }

    #[test]
    fn every_documented_bench_command_parses() {
        let mut seen = 0;
        for doc in [
            include_str!("../../README.md"),
            include_str!("../../BENCHMARKS.md"),
        ] {
            for argv in documented_bench_commands(doc) {
                if let Err(e) = Cli::try_parse_from(&argv) {
                    panic!("{argv:?} does not parse: {e}");
                }
                seen += 1;
            }
        }
        // README.md has 5 (two in Development, three for a running server), BENCHMARKS.md 9.
        assert!(seen >= 14, "found only {seen} documented bench commands");
    }

    #[test]
    fn the_access_key_secret_never_shows_in_debug() {
        let (args, _) = bench_args(&[
            "stint",
            "bench",
            "--endpoint",
            "http://127.0.0.1:7420",
            "--access-key-id",
            "AKIAEXAMPLE",
            "--secret-access-key",
            "s3cr3t-never-printed",
        ]);
        assert_eq!(
            args.secret_access_key.as_ref().map(SecretString::expose),
            Some("s3cr3t-never-printed")
        );
        assert!(!format!("{args:?}").contains("s3cr3t-never-printed"));
    }

    #[test]
    fn bench_arguments_parse() {
        let (args, output) = bench_args(&[
            "stint",
            "--output",
            "json",
            "bench",
            "--rpc",
            "authorize",
            "--rpc",
            "assume-role",
            "--rpc",
            "get-session-token-key",
            "--concurrency",
            "64",
            "--connections",
            "4",
            "--duration",
            "30s",
        ]);
        assert_eq!(output, OutputFormat::Json);
        assert_eq!(
            args.rpcs,
            vec![
                BenchRpc::Authorize,
                BenchRpc::AssumeRole,
                BenchRpc::GetSessionTokenKey
            ]
        );
        assert_eq!((args.concurrency, args.connections), (64, 4));
        assert_eq!(args.duration, Duration::from_secs(30));
        assert!(!args.suite);

        let (args, output) = bench_args(&["stint", "bench", "--suite", "--duration", "2"]);
        assert_eq!(output, OutputFormat::Text);
        assert!(args.suite);
        assert_eq!(args.duration, Duration::from_secs(2));
        assert!(Cli::try_parse_from(["stint", "bench", "--rpc", "nope"]).is_err());
        assert!(Cli::try_parse_from(["stint", "bench", "--duration", "0s"]).is_err());
        assert!(Cli::try_parse_from(["stint", "bench", "--duration", "fast"]).is_err());
    }

    #[test]
    fn every_rpc_name_is_its_command_line_spelling() {
        for rpc in BenchRpc::ALL {
            let (args, _) = bench_args(&["stint", "bench", "--rpc", rpc.name()]);
            assert_eq!(args.rpcs, vec![rpc]);
        }
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        let stats = Stats {
            p50: Duration::from_micros(150),
            p99: Duration::from_micros(900),
            per_sec: 5000.0,
            errors: 2,
            steal_pct: Some(12.5),
            cpu_us_per_call: Some(210.0),
        };
        let line = json_line(&figure(
            "authorize",
            64,
            &stats,
            "login-flood",
            "echo",
            20000.0,
        ));
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["rpc"], "authorize");
        assert_eq!(value["concurrency"], 64);
        assert_eq!(value["rps"], 5000.0);
        assert_eq!(value["p50_us"], 150.0);
        assert_eq!(value["p99_us"], 900.0);
        assert_eq!(value["errors"], 2);
        assert_eq!(value["phase"], "login-flood");
        assert_eq!(value["primitive"], "echo");
        assert_eq!(value["ratio"], 0.25);
        assert_eq!(value["steal_pct"], 12.5);
        assert_eq!(value["cpu_us_per_call"], 210.0);
    }

    #[test]
    fn process_cpu_is_read_from_proc_self_stat() {
        let tail = "S 1 2 3 0 -1 4194304 500 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        let cases: &[(String, Option<u64>)] = &[
            (format!("4242 (stint) {tail}"), Some(1801)),
            // A name with spaces and parentheses of its own.
            (format!("4242 (a) b (c)) {tail}"), Some(1801)),
            ("4242 (stint) S 1 2 3".to_string(), None),
            (format!("4242 stint {tail}"), None),
            (format!("4242 (stint) {}", tail.replace("1234", "x")), None),
            (String::new(), None),
        ];
        for (stat, want) in cases {
            assert_eq!(parse_process_cpu_ticks(stat), *want, "{stat:?}");
        }
        // 150 ticks (1.5 s of CPU) over 6,000 calls: 250 µs each.
        assert_eq!(cpu_us_per_call(Some(100), Some(250), 6000.0), Some(250.0));
        assert_eq!(cpu_us_per_call(Some(100), Some(250), 0.0), None);
        assert_eq!(cpu_us_per_call(Some(250), Some(100), 10.0), None);
        assert_eq!(cpu_us_per_call(None, Some(100), 10.0), None);
    }

    #[test]
    fn steal_is_read_from_proc_stat() {
        let cases: &[(&str, Option<CpuTimes>)] = &[
            (
                "cpu  10 1 5 80 2 0 1 20 7 0\ncpu0 5 0 2 40 1 0 0 10 0 0\n",
                Some(CpuTimes {
                    steal: 20,
                    total: 119,
                }),
            ),
            // Kernels before 2.6.11 have no steal field.
            ("cpu  10 1 5 80 2 0 1\n", None),
            ("cpu0 10 1 5 80 2 0 1 20\n", None),
            ("cpu  10 1 5 x 2 0 1 20\n", None),
            ("", None),
        ];
        for (stat, want) in cases {
            assert_eq!(parse_cpu_times(stat), *want, "{stat:?}");
        }
        let at = |steal, total| Some(CpuTimes { steal, total });
        assert_eq!(steal_pct(at(20, 100), at(45, 200)), Some(25.0));
        assert_eq!(steal_pct(at(20, 100), at(20, 100)), None);
        assert_eq!(steal_pct(None, at(20, 100)), None);
        let mut figure = figure(
            "echo",
            16,
            &stats(vec![], 0, Duration::from_secs(1)),
            "alone",
            "echo",
            1.0,
        );
        assert_eq!(steal_warning(std::slice::from_ref(&figure)), None);
        figure.steal_pct = Some(4.0);
        assert_eq!(steal_warning(std::slice::from_ref(&figure)), None);
        figure.steal_pct = Some(31.0);
        assert_eq!(steal_warning(&[figure.clone(), figure]), Some(31.0));
    }
}
