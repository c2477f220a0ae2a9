//! `stint serve`: bind, (in `--dev` mode) initialise an empty data dir, open it, assemble
//! the daemon ([`crate::daemon`]), serve until SIGINT/SIGTERM.
//!
//! The port is bound before anything is created: `serve --dev` prints the generated admin
//! password once, so a taken port must fail before the data dir exists, not after.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::core::secret::SecretString;
use crate::rpc::TlsFiles;

use super::{CliError, init};

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

/// Binds the listen address, naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr).await.map_err(|e| {
        CliError::new(format!(
            "cannot listen on {addr}: {e} (another `stint serve`? pick another address with --listen or STINT_LISTEN)"
        ))
    })
}

/// How to get a usable administrator back on a data dir whose password is lost.
pub fn reset_hint(config: &Config) -> String {
    format!(
        "to start over, stop the server and run `stint init --force --data-dir {} --admin-user admin --password-stdin` (or delete {})",
        config.data_dir.display(),
        config.data_dir.display()
    )
}

/// `--dev`: initialises an empty data dir with an `admin` whose generated password and
/// TOTP enrolment are printed once; on an existing one, says how to reset it.
pub async fn init_dev(config: &Config) -> Result<(), CliError> {
    if !init::is_uninitialised(&config.data_dir) || config.master_key_path().exists() {
        eprintln!(
            "Development mode: using {} (its admin password was printed when it was created; {})",
            config.data_dir.display(),
            reset_hint(config)
        );
        return Ok(());
    }
    let password = generate_password()?;
    let out = init::initialise(config, "admin", &password, false).await?;
    let mut stdout = std::io::stdout();
    let printed = {
        use std::io::Write;
        writeln!(
            stdout,
            "Development mode: initialised {}",
            config.data_dir.display()
        )
        .and_then(|()| init::print(&mut stdout, &out, false, Some(&password)))
        .and_then(|()| stdout.flush())
    };
    printed.map_err(|e| {
        CliError::new(format!(
            "cannot print the admin's password: {e}; {}",
            reset_hint(config)
        ))
    })
}

fn generate_password() -> Result<SecretString, CliError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 18];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CliError::new("random generator failed"))?;
    Ok(SecretString::new(
        data_encoding::BASE64URL_NOPAD.encode(&bytes),
    ))
}
