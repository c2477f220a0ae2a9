//! `stint serve`: open the data dir, assemble the broker, serve until SIGINT/SIGTERM.
//!
//! [`Daemon::open`] and [`Daemon::serve`] are also what the integration tests use, with a
//! listener on `127.0.0.1:0` and a manual clock, so tests run the real server.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::audit::chain::CheckpointPolicy;
use crate::audit::writer::{AuditConfig as AuditWriterConfig, AuditLog};
use crate::broker::{Broker, BrokerSettings, Clock, RequestMeta, default_hash_concurrency};
use crate::config::Config;
use crate::core::authn::password::Argon2Params;
use crate::core::model::Account;
use crate::rpc::{self, TlsFiles};
use crate::store::Store;
use crate::store::seal::MasterKey;
use crate::store::sled::SledStore;

use super::CliError;

/// An opened data directory with everything the server needs.
pub struct Daemon {
    pub broker: Arc<Broker>,
    pub store: Arc<SledStore>,
    pub config: Config,
}

pub fn broker_settings(config: &Config) -> BrokerSettings {
    BrokerSettings {
        account: Account::new(config.account.partition.clone(), config.account.id.clone()),
        issuer: config.tokens.issuer.clone(),
        audience: config.tokens.audience.clone(),
        clock_skew: Duration::from_secs(config.tokens.clock_skew_seconds),
        argon2: Argon2Params {
            memory_kib: config.argon2.memory_kib,
            iterations: config.argon2.iterations,
            parallelism: config.argon2.parallelism,
        },
        lockout: config.lockout.policy(),
        hash_concurrency: default_hash_concurrency(),
    }
}

impl Daemon {
    /// Opens an initialised data dir. Must run inside a tokio runtime.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Self, CliError> {
        let master_path = config.master_key_path();
        if !master_path.exists() {
            return Err(CliError::new(format!(
                "master key {} not found: run `stint init --data-dir {}` first (or `stint serve --dev`), or point --master-key-file at it",
                master_path.display(),
                config.data_dir.display()
            )));
        }
        let master = MasterKey::load(&master_path)
            .map_err(|e| CliError::new(format!("master key {}: {e}", master_path.display())))?;
        Self::open_with_master(config, master, clock)
    }

    pub fn open_with_master(
        config: Config,
        master: MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CliError> {
        let store = Arc::new(
            SledStore::open(&config.data_dir, config.store.cache_mb * 1024 * 1024)
                .map_err(|e| CliError::new(e.to_string()))?,
        );
        let dyn_store: Arc<dyn Store> = store.clone();
        let audit = AuditLog::open(
            dyn_store.clone(),
            AuditWriterConfig {
                flush_timeout: Duration::from_millis(config.audit.flush_timeout_ms),
                checkpoint: CheckpointPolicy {
                    every_events: config.audit.checkpoint_every_events,
                    every_seconds: config.audit.checkpoint_every_seconds,
                },
            },
        )
        .map_err(|e| CliError::new(format!("audit log: {e}")))?;
        let broker = Broker::new(dyn_store, audit, master, broker_settings(&config), clock)
            .map_err(|e| {
                CliError::new(format!(
                    "{e} (is the master key the one this data dir was initialised with?)"
                ))
            })?;
        broker.install_checkpoint_signer();
        Ok(Self {
            broker,
            store,
            config,
        })
    }

    /// Serves until `shutdown` resolves, with the background sweeper running; then
    /// flushes the store.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<TlsFiles>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CliError> {
        let sweeper = tokio::spawn(sweep_loop(
            self.broker.clone(),
            Duration::from_secs(self.config.sweeper.interval_seconds.max(1)),
            Duration::from_secs(self.config.tokens.rotation_interval_hours * 3600),
            Duration::from_secs(self.config.audit.retention_days * 86_400),
        ));
        let result = rpc::serve(listener, self.broker.clone(), tls, shutdown).await;
        sweeper.abort();
        self.store
            .flush()
            .map_err(|e| CliError::new(format!("final flush failed: {e}")))?;
        result.map_err(|e| CliError::new(e.to_string()))
    }
}

async fn sweep_loop(
    broker: Arc<Broker>,
    every: Duration,
    rotate_every: Duration,
    retention: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = None;
    loop {
        tick.tick().await;
        if let Err(err) = broker.sweep() {
            tracing::warn!(error = %err, "sweep failed");
        }
        if let Err(err) = broker.purge_expired_keys().await {
            tracing::warn!(error = %err, "signing-key purge failed");
        }
        // Pruning verifies the chain first, so it runs hourly rather than every sweep.
        let prune_due = last_prune
            .is_none_or(|at: tokio::time::Instant| at.elapsed() >= Duration::from_secs(3600));
        if !retention.is_zero() && prune_due {
            last_prune = Some(tokio::time::Instant::now());
            if let Err(err) = broker.prune_audit(retention).await {
                tracing::warn!(error = %err, "audit retention prune failed");
            }
        }
        if !rotate_every.is_zero() {
            match broker.rotation_due(rotate_every) {
                Ok(true) => {
                    if let Err(err) = broker
                        .rotate_keys(&RequestMeta::default(), "stint:scheduler")
                        .await
                    {
                        tracing::warn!(error = %err, "scheduled key rotation failed");
                    }
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "rotation check failed"),
            }
        }
    }
}

/// Reads PEM files named by the config.
pub fn tls_files(config: &Config) -> Result<Option<TlsFiles>, CliError> {
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })),
        _ => Ok(None),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
