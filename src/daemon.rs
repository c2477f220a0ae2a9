//! The daemon: a broker over a store, served over gRPC/HTTP with its background jobs.
//!
//! [`Daemon::assemble`] builds the server over any `Arc<dyn Store>` (sled in production,
//! the in-memory store or a fault-injecting one in tests), so `stint serve`, `stint init`,
//! the benchmark and every integration test run the same assembly. [`Daemon::open`] is
//! the production path: the configured store (sled in the data dir, or PostgreSQL when
//! `store.url` is set) and the master key file.
//!
//! Serving also runs the ops listener when `ops.listen` is set (`/healthz`, `/readyz`,
//! `/metrics`: [`rpc::ops_http`]) and tells systemd when it is ready and stopping
//! ([`notify`]).

pub mod notify;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::chain::CheckpointPolicy;
use crate::audit::writer::{AuditConfig as AuditWriterConfig, AuditLog};
use crate::broker::{Broker, BrokerSettings, ScheduledRotation};
use crate::config::Config;
use crate::core::authn::password::Argon2Params;
use crate::core::model::Account;
use crate::core::time::Clock;
use crate::metrics::MeteredStore;
use crate::rpc::ops_http::{self, Readiness};
use crate::rpc::{self, TlsFiles};
use crate::store::Store;
use crate::store::postgres::{PostgresStore, redact_url};
use crate::store::seal::MasterKey;
use crate::store::sled::SledStore;

/// Opens the configured store: PostgreSQL (migrated to this build's schema) when
/// `store.url` is set, else sled in `data_dir`.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, DaemonError> {
    if let Some(url) = &config.store.url {
        let pool = usize::try_from(config.store.pool_size).unwrap_or(1);
        let store = PostgresStore::open(url, pool)
            .map_err(|e| DaemonError::new(format!("store {}: {e}", redact_url(url))))?;
        return Ok(Arc::new(store));
    }
    let cache_bytes = config
        .store
        .cache_mb
        .checked_mul(1024 * 1024)
        .ok_or_else(|| DaemonError::new("store.cache_mb is too large"))?;
    Ok(Arc::new(
        SledStore::open(&config.data_dir, cache_bytes)
            .map_err(|e| DaemonError::new(e.to_string()))?,
    ))
}

/// Why the daemon could not be assembled or served: a message for a person.
#[derive(Debug)]
pub struct DaemonError(String);

impl DaemonError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DaemonError {}

/// An assembled server: the broker over its store, and the config it runs with.
pub struct Daemon {
    pub broker: Arc<Broker>,
    pub store: Arc<dyn Store>,
    pub config: Config,
    /// The ops listener, once bound ([`Self::use_ops_listener`], [`Self::bind_ops`]).
    ops_listener: Mutex<Option<TcpListener>>,
    /// Whether the signing keys are loaded: set at assembly, then by each reload.
    keys_loaded: Arc<AtomicBool>,
}

/// Binds the ops listener's address, naming the key in the error.
pub async fn bind_ops(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr).await.map_err(|e| {
        DaemonError::new(format!(
            "cannot listen on {addr} (ops.listen): {e} (pick another address with --ops-listen or STINT_OPS__LISTEN)"
        ))
    })
}

/// The broker's settings, projected from the daemon config.
pub fn broker_settings(config: &Config) -> BrokerSettings {
    BrokerSettings {
        account: Account::new(config.account.partition.clone(), config.account.id.clone()),
        issuer: config.issuer(),
        audience: config.tokens.audience.clone(),
        clock_skew: Duration::from_secs(config.tokens.clock_skew_seconds),
        argon2: Argon2Params {
            memory_kib: config.argon2.memory_kib,
            iterations: config.argon2.iterations,
            parallelism: config.argon2.parallelism,
        },
        lockout: config.lockout.policy(),
        hash_threads: config.limits.hash_threads(),
        hash_queue: usize::try_from(config.limits.hash_queue).unwrap_or(usize::MAX),
    }
}

/// How often the background jobs run, from the (validated) config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub sweep_every: Duration,
    pub rotate_every: Duration,
    pub publish_ahead: Duration,
    /// Zero: keep the audit log forever.
    pub retention: Duration,
}

impl Schedule {
    pub fn from_config(config: &Config) -> Result<Self, DaemonError> {
        let secs = |key: &str, value: Option<u64>| {
            value.map(Duration::from_secs).ok_or_else(|| {
                DaemonError::new(format!("{key} is too large (run `stint config check`)"))
            })
        };
        Ok(Self {
            sweep_every: Duration::from_secs(config.sweeper.interval_seconds.max(1)),
            rotate_every: secs(
                "tokens.rotation_interval_hours",
                config.tokens.rotation_interval_hours.checked_mul(3600),
            )?,
            publish_ahead: Duration::from_secs(config.tokens.publish_ahead_seconds),
            retention: secs(
                "audit.retention_days",
                config.audit.retention_days.checked_mul(86_400),
            )?,
        })
    }
}

impl Daemon {
    /// Opens an initialised data dir (sled store, master key file). Must run inside a
    /// tokio runtime.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Self, DaemonError> {
        let master_path = config.master_key_path();
        if !master_path.exists() && config.store.url.is_some() {
            return Err(DaemonError::new(format!(
                "master key {} not found: every replica on a PostgreSQL store needs the key file `stint init --store-url … --master-key-file PATH` created (--master-key-file)",
                master_path.display()
            )));
        }
        if !master_path.exists() {
            return Err(DaemonError::new(format!(
                "master key {} not found: run `stint init --data-dir {}` first (or `stint serve --dev`), or point --master-key-file at it",
                master_path.display(),
                config.data_dir.display()
            )));
        }
        let master = MasterKey::load(&master_path)
            .map_err(|e| DaemonError::new(format!("master key {}: {e}", master_path.display())))?;
        Self::open_with_master(config, master, clock)
    }

    /// Opens the configured store ([`open_store`]) with `master`.
    pub fn open_with_master(
        config: Config,
        master: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DaemonError> {
        let store = open_store(&config)?;
        Self::assemble(config, store, master, clock)
    }

    /// Assembles the server over any store (timed into the store metrics): the audit log
    /// (on `clock`), the broker and its checkpoint signer. Must run inside a tokio runtime.
    pub fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        master: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DaemonError> {
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store));
        let audit = AuditLog::open_with_clock(
            store.clone(),
            AuditWriterConfig {
                flush_timeout: Duration::from_millis(config.audit.flush_timeout_ms),
                checkpoint: CheckpointPolicy {
                    every_events: config.audit.checkpoint_every_events,
                    every_seconds: config.audit.checkpoint_every_seconds,
                },
            },
            clock.clone(),
        )
        .map_err(|e| DaemonError::new(format!("audit log: {e}")))?;
        audit
            .on_commit_batch(|batch| crate::metrics::audit_committed(batch.records, batch.elapsed));
        let broker = Broker::new(
            store.clone(),
            audit,
            master,
            broker_settings(&config),
            clock,
        )
        .map_err(|e| {
            DaemonError::new(format!(
                "{e} (is the master key the one this data dir was initialised with?)"
            ))
        })?;
        broker.install_checkpoint_signer();
        // `Broker::new` loaded the keys (or failed).
        crate::metrics::metrics().signing_keys_loaded.set(1);
        Ok(Self {
            broker,
            store,
            config,
            ops_listener: Mutex::new(None),
            keys_loaded: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Serves the ops routes on `listener` (bound early by `stint serve`, before
    /// anything is created) instead of binding `ops.listen` when serving.
    pub fn use_ops_listener(&self, listener: TcpListener) {
        *self.ops_listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    /// Binds `ops.listen` now (if set and not bound yet) and returns the bound address:
    /// for a caller that needs the port of `127.0.0.1:0`.
    pub async fn bind_ops(&self) -> Result<Option<SocketAddr>, DaemonError> {
        if let Some(bound) = self.ops_addr() {
            return Ok(Some(bound));
        }
        let Some(addr) = self.config.ops.listen else {
            return Ok(None);
        };
        let listener = bind_ops(addr).await?;
        let bound = listener.local_addr().ok();
        self.use_ops_listener(listener);
        Ok(bound)
    }

    fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Makes every committed change durable.
    pub fn flush(&self) -> Result<(), DaemonError> {
        self.store
            .flush()
            .map_err(|e| DaemonError::new(format!("flush failed: {e}")))
    }

    /// Serves until `shutdown` resolves, with the background jobs running; then flushes
    /// the store.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsFiles>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), DaemonError> {
        let tls = tls
            .map(|f| rpc::tls::ServerTls::from_pem(&f.cert_pem, &f.key_pem, None))
            .transpose()
            .map_err(|e| DaemonError::new(format!("TLS: {e}")))?;
        self.serve_tls(listener, tls, shutdown).await
    }

    /// [`serve`](Self::serve) with reloadable TLS (SIGHUP) and optional client certificates.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        tls: Option<rpc::tls::ServerTls>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), DaemonError> {
        let schedule = Schedule::from_config(&self.config)?;
        let proxies = rpc::proxy::ProxyTrust::parse(&self.config.proxy_protocol_from)
            .map_err(|e| DaemonError::new(format!("proxy_protocol_from: {e}")))?;
        self.bind_ops().await?;
        let ops_listener = self
            .ops_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let readiness = Arc::new(Readiness::new(
            self.broker.clone(),
            self.keys_loaded.clone(),
        ));
        let (stop_ops, ops_stopped) = tokio::sync::watch::channel(false);
        let ops = ops_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "ops listener serving /healthz, /readyz, /metrics");
            }
            tokio::spawn(ops_http::serve(listener, readiness.clone(), ops_stopped))
        });
        let holder = replica_id();
        let jobs = tokio::spawn(background_jobs(
            self.broker.clone(),
            schedule,
            holder.clone(),
            self.keys_loaded.clone(),
        ));
        let systemd = notify::Notifier::from_env().map(Arc::new);
        let watchdog = systemd.clone().and_then(|systemd| {
            let every = notify::watchdog_from_env()?;
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    systemd.notify("WATCHDOG=1");
                }
            }))
        });
        // Not ready from the moment shutdown begins, while in-flight requests drain.
        let draining = {
            let readiness = readiness.clone();
            let systemd = systemd.clone();
            async move {
                shutdown.await;
                readiness.set_stopping();
                if let Some(systemd) = &systemd {
                    systemd
                        .notify("STOPPING=1\nSTATUS=shutting down: finishing in-flight requests");
                }
            }
        };
        // Poll the shutdown future once before READY=1: that installs its signal
        // handlers, so a SIGTERM right after READY=1 shuts down gracefully instead of
        // killing the process.
        let mut draining = std::pin::pin!(draining);
        let mut drained = false;
        std::future::poll_fn(|cx| {
            drained = draining.as_mut().poll(cx).is_ready();
            std::task::Poll::Ready(())
        })
        .await;
        let draining = async move {
            if !drained {
                draining.await;
            }
        };
        if let Some(systemd) = systemd.as_ref().filter(|_| !drained) {
            // Bound, store open, keys loaded: connections queue until the server accepts.
            let addr = listener
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            systemd.notify(&format!("READY=1\nSTATUS=serving gRPC on {addr}"));
        }
        let limits = rpc::limits::Limits::from_config(&self.config.limits);
        let result = rpc::serve_with_limits(
            listener,
            self.broker.clone(),
            tls,
            limits,
            proxies,
            draining,
        )
        .await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        jobs.abort();
        // Wait until the jobs task is gone: it holds the broker (and so the store).
        let _ = jobs.await;
        let _ = stop_ops.send(true);
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        // Hand the jobs to another replica now rather than when the lease expires.
        if let Err(err) = crate::store::lease::release(self.store.as_ref(), JOBS_LEASE, &holder) {
            tracing::warn!(error = %err, "jobs lease not released");
        }
        self.flush()?;
        result.map_err(|e| DaemonError::new(e.to_string()))
    }
}

/// The lease that lets one replica at a time run the jobs that must run once.
pub const JOBS_LEASE: &str = "jobs";

/// How long a job lease lasts unrenewed: three rounds (at least 30 s), so a live holder
/// renews it well before it lapses and a dead one is replaced within that time.
pub fn jobs_lease_ttl(schedule: &Schedule) -> Duration {
    schedule
        .sweep_every
        .saturating_mul(3)
        .max(Duration::from_secs(30))
}

/// A random id naming this process as a lease holder.
pub fn replica_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    data_encoding::HEXLOWER.encode(&bytes)
}

/// Every round: re-reads the signing keys (another replica may have rotated them); then,
/// on the one replica holding the jobs lease, sweeps, purges expired keys, prunes the
/// audit log and rotates keys on schedule.
async fn background_jobs(
    broker: Arc<Broker>,
    schedule: Schedule,
    holder: String,
    keys_loaded: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(schedule.sweep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<std::time::SystemTime> = None;
    loop {
        tick.tick().await;
        let reloaded = broker.reload_keys();
        if let Err(err) = &reloaded {
            tracing::warn!(error = %err, "signing-key reload failed");
        }
        // A store outage leaves the loaded keys in use (readiness reports the store);
        // keys the store returns but this replica cannot open (another master key) mean
        // it cannot verify what the others sign: not ready until a reload succeeds.
        let loaded = reloaded.is_ok()
            || (keys_loaded.load(Ordering::SeqCst)
                && broker
                    .store()
                    .get(crate::store::Table::Meta, b"ops/keys")
                    .is_err());
        keys_loaded.store(loaded, Ordering::SeqCst);
        crate::metrics::metrics()
            .signing_keys_loaded
            .set(i64::from(loaded));
        match holds_jobs_lease(&broker, &schedule, &holder) {
            Ok(true) => run_jobs_once(&broker, &schedule, &mut last_prune).await,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "jobs lease unavailable"),
        }
    }
}

/// Takes or renews the jobs lease for `holder` (by the broker's clock).
pub fn holds_jobs_lease(
    broker: &Broker,
    schedule: &Schedule,
    holder: &str,
) -> Result<bool, crate::store::StoreError> {
    holds_lease(broker, schedule, JOBS_LEASE, holder)
}

/// Takes or renews lease `name` for `holder`, with the jobs lease's lifetime.
pub fn holds_lease(
    broker: &Broker,
    schedule: &Schedule,
    name: &str,
    holder: &str,
) -> Result<bool, crate::store::StoreError> {
    let now_ms = crate::core::time::unix_ms(broker.now());
    let ttl_ms = i64::try_from(jobs_lease_ttl(schedule).as_millis()).unwrap_or(i64::MAX);
    crate::store::lease::try_acquire(broker.store().as_ref(), name, holder, now_ms, ttl_ms)
}

/// One round of the background jobs (also what tests call, with a manual clock).
pub async fn run_jobs_once(
    broker: &Arc<Broker>,
    schedule: &Schedule,
    last_prune: &mut Option<std::time::SystemTime>,
) {
    if let Err(err) = broker.sweep_in_background().await {
        tracing::warn!(error = %err, "sweep failed");
    }
    if let Err(err) = broker.purge_expired_keys().await {
        tracing::warn!(error = %err, "signing-key purge failed");
    }
    // Pruning verifies the chain first, so it runs hourly rather than every sweep.
    let now = broker.now();
    let prune_due = last_prune
        .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= Duration::from_secs(3600));
    if !schedule.retention.is_zero() && prune_due {
        *last_prune = Some(now);
        if let Err(err) = broker.prune_audit(schedule.retention).await {
            tracing::warn!(error = %err, "audit retention prune failed");
        }
    }
    match broker
        .rotate_if_due(schedule.rotate_every, schedule.publish_ahead)
        .await
    {
        Ok(ScheduledRotation::NotDue) => {}
        Ok(ScheduledRotation::Published(kid)) => {
            tracing::info!(%kid, "next signing key published ahead of rotation");
        }
        Ok(ScheduledRotation::Rotated(kid)) => tracing::info!(%kid, "signing key rotated"),
        Err(err) => tracing::warn!(error = %err, "scheduled key rotation failed"),
    }
}
