//! `stint bench`: a load generator over real gRPC on loopback.
//!
//! It starts a broker in-process on `127.0.0.1:0` with a temporary data dir, then drives it
//! with concurrent tonic clients and reports each RPC's latency next to an empty unary RPC
//! on the same server (`grpc.health.v1.Health/Check`), as a ratio — and how much a flood of
//! logins (argon2id on the bounded hashing pool) slows the other RPCs down. Requests are
//! bounded in count, so the run ends by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use tonic::Request;
use tonic::transport::Channel;

use crate::broker::{Broker, Clock as _, RequestMeta, SystemClock};
use crate::config::Config;
use crate::core::authn::totp;
use crate::core::secret::SecretString;
use crate::proto::{self, sts_client::StsClient, tokens_client::TokensClient};
use crate::store::seal::MasterKey;

use super::CliError;
use super::serve::Daemon;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Requests per measured RPC.
    #[arg(long, default_value_t = 4000)]
    pub requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Concurrent logins in the flood phase.
    #[arg(long, default_value_t = 8)]
    pub login_flood: usize,
}

struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn stats(mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        per_sec: samples.len() as f64 / wall.as_secs_f64(),
    }
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::new(e.to_string())
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Runs `requests` calls of `call` over `concurrency` tasks; returns per-call latencies.
async fn drive<F, Fut>(requests: usize, concurrency: usize, call: F) -> Result<Stats, CliError>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let started = Instant::now();
    let per_task = requests.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                call().await?;
                samples.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(samples)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(err)?.map_err(err)?);
    }
    Ok(stats(all, started.elapsed()))
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let dir = tempfile_dir()?;
    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
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
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(err)?
        .connect()
        .await
        .map_err(err)?;

    let code = totp::code_at(seed.expose(), totp::step_at(SystemClock.now()));
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
    // A password-only user for the login flood (no TOTP replay limits).
    let admin = broker.authenticate(&token).map_err(err)?;
    let meta = RequestMeta::default();
    broker
        .create_user(&admin, &meta, "flood", "/", vec![], "")
        .await
        .map_err(err)?;
    broker
        .set_login_profile(&admin, &meta, "flood", &password, false, true)
        .await
        .map_err(err)?;

    let health = {
        let channel = channel.clone();
        move || {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ())
            }
        }
    };
    let authorize = {
        let channel = channel.clone();
        let token = token.clone();
        move || {
            let mut client = TokensClient::new(channel.clone());
            let request = bearer(
                proto::AuthorizeRequest {
                    session_token: token.clone(),
                    action: "s3:GetObject".into(),
                    resource: "arn:aws:s3:::reports/q3.csv".into(),
                    context: vec![],
                },
                &token,
            );
            async move { client.authorize(request).await.map(|_| ()) }
        }
    };
    // Warm up connections and caches.
    drive(200, args.concurrency, health.clone()).await?;
    drive(200, args.concurrency, authorize.clone()).await?;

    let empty = drive(args.requests, args.concurrency, health.clone()).await?;
    let decide = drive(args.requests, args.concurrency, authorize.clone()).await?;

    // Login flood on other connections, while the same RPCs are measured again.
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut flood = Vec::new();
    let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..args.login_flood {
        let flooding = flooding.clone();
        let logins = logins.clone();
        let endpoint = format!("http://{addr}");
        let password = password.expose().to_string();
        flood.push(tokio::spawn(async move {
            let Ok(channel) = Channel::from_shared(endpoint).map_err(err)?.connect().await else {
                return Ok::<_, CliError>(());
            };
            let mut sts = StsClient::new(channel);
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let request = proto::GetSessionTokenRequest {
                    credential: Some(proto::get_session_token_request::Credential::Password(
                        proto::PasswordCredential {
                            user_name: "flood".into(),
                            password: password.clone(),
                        },
                    )),
                    token_code: String::new(),
                    duration_seconds: 900,
                    serial_number: String::new(),
                };
                sts.get_session_token(request).await.map_err(err)?;
                logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let flood_started = Instant::now();
    let empty_flood = drive(args.requests, args.concurrency, health).await?;
    let decide_flood = drive(args.requests, args.concurrency, authorize).await?;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        task.await.map_err(err)??;
    }
    let login_rate = logins.load(std::sync::atomic::Ordering::Relaxed) as f64
        / flood_started.elapsed().as_secs_f64();

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "stint bench: {} requests per RPC, {} concurrent clients, loopback gRPC",
        args.requests, args.concurrency
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "rpc", "p50 µs", "p99 µs", "req/s"
    );
    for (name, s) in [
        ("Health/Check (empty unary)", &empty),
        ("Tokens/Authorize", &decide),
        ("Health/Check during login flood", &empty_flood),
        ("Tokens/Authorize during login flood", &decide_flood),
    ] {
        println!(
            "{name:<40} {:>10.0} {:>10.0} {:>10.0}",
            us(s.p50),
            us(s.p99),
            s.per_sec
        );
    }
    println!(
        "Authorize / empty unary: p50 ratio {:.2}, throughput ratio {:.2}",
        us(decide.p50) / us(empty.p50),
        decide.per_sec / empty.per_sec
    );
    println!(
        "login flood ({} concurrent, {login_rate:.1} logins/s): Authorize p99 {:.0} µs vs {:.0} µs without (×{:.2})",
        args.login_flood,
        us(decide_flood.p99),
        us(decide.p99),
        us(decide_flood.p99) / us(decide.p99)
    );
    let _ = stop.send(());
    server.await.map_err(err)??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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
