//! `stint serve`: open the data dir, assemble the daemon ([`crate::daemon`]), serve until
//! SIGINT/SIGTERM.

use std::path::Path;

use crate::config::Config;
use crate::rpc::TlsFiles;

use super::CliError;

pub use crate::daemon::{Daemon, broker_settings};

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
