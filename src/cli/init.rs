//! `stint init`: create a data dir with its master key, first signing keys and an
//! administrator (password + enabled TOTP device). `serve --dev` reuses it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use ring::rand::SystemRandom;

use crate::broker::SystemClock;
use crate::config::Config;
use crate::core::authn::totp;
use crate::core::model::{NameKind, PasswordPolicy, validate_name};
use crate::core::secret::SecretString;
use crate::store::Table;
use crate::store::seal::MasterKey;

use super::CliError;
use super::serve::Daemon;

/// What an operator needs to log in as the new admin; the seed is shown once.
pub struct InitOutput {
    pub user_name: String,
    pub arn: String,
    pub totp_secret: SecretString,
    pub otpauth_uri: SecretString,
}

/// True when the directory has no Stint data yet.
pub fn is_uninitialised(data_dir: &Path) -> bool {
    !data_dir.join("db").exists()
}

/// Initialises `config.data_dir`. Refuses a dir that already holds data unless `force`
/// (which wipes it). Everything that can be checked is checked before anything is created
/// (names, password policy, paths), and what this run created is removed again if a later
/// step fails, so a corrected retry needs no `--force`.
pub async fn initialise(
    config: &Config,
    admin_user: &str,
    password: &SecretString,
    force: bool,
) -> Result<InitOutput, CliError> {
    check_inputs(config, admin_user, password)?;
    if config.store.url.is_some() {
        return initialise_database(config, admin_user, password, force).await;
    }
    let dir = &config.data_dir;
    if !is_uninitialised(dir) || config.master_key_path().exists() {
        if !force {
            return Err(CliError::new(format!(
                "{} already holds a Stint data dir; pass --force to wipe it and start over",
                dir.display()
            )));
        }
        wipe(config)?;
    }
    let dir_existed = dir.exists();
    let result = create(config, admin_user, password).await;
    if result.is_err() {
        // Best effort: leave the directory as this run found it.
        let _ = wipe(config);
        if !dir_existed {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// What `init` checks before it creates anything.
fn check_inputs(
    config: &Config,
    admin_user: &str,
    password: &SecretString,
) -> Result<(), CliError> {
    validate_name(NameKind::User, admin_user)
        .map_err(|m| CliError::new(format!("--admin-user: {m}")))?;
    // A new data dir has the default account password policy.
    PasswordPolicy::default()
        .check(password.expose())
        .map_err(|m| CliError::new(format!("the administrator's {m}")))?;
    let dir = &config.data_dir;
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::new(format!(
            "data dir {} exists and is not a directory",
            dir.display()
        )));
    }
    let key = config.master_key_path();
    if key.is_dir() {
        return Err(CliError::new(format!(
            "master key file {} is a directory",
            key.display()
        )));
    }
    if let Some(parent) = key.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.starts_with(dir)
        && !parent.is_dir()
    {
        return Err(CliError::new(format!(
            "the master key's directory {} does not exist",
            parent.display()
        )));
    }
    Ok(())
}

/// Removes the store and the master key of `config` (not other files in the dir).
fn wipe(config: &Config) -> Result<(), CliError> {
    let dir = &config.data_dir;
    for sub in ["db", "LOCK"] {
        let path = dir.join(sub);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        }
        .map_err(|e| CliError::new(format!("cannot remove {}: {e}", path.display())))?;
    }
    let key = config.master_key_path();
    if key.exists() {
        std::fs::remove_file(&key)
            .map_err(|e| CliError::new(format!("cannot remove {}: {e}", key.display())))?;
    }
    Ok(())
}

async fn create(
    config: &Config,
    admin_user: &str,
    password: &SecretString,
) -> Result<InitOutput, CliError> {
    let dir = &config.data_dir;
    crate::store::sled::create_private_dir(dir)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    let master = MasterKey::create(&config.master_key_path(), &SystemRandom::new())
        .map_err(|e| CliError::new(format!("master key: {e}")))?;
    let daemon = Daemon::open_with_master(config.clone(), master, Arc::new(SystemClock))?;
    bootstrap(&daemon, admin_user, password).await
}

/// Initialises the PostgreSQL database of `store.url`: applies the migrations, creates
/// the master key file every replica will read, the first keys and the administrator.
/// Refuses a database that already holds Stint data (`--force` never wipes a database:
/// drop and re-create it).
async fn initialise_database(
    config: &Config,
    admin_user: &str,
    password: &SecretString,
    force: bool,
) -> Result<InitOutput, CliError> {
    let store = crate::daemon::open_store(config)?;
    for table in [Table::Users, Table::SigningKeys, Table::Audit] {
        if store
            .last(table)
            .map_err(|e| CliError::new(e.to_string()))?
            .is_some()
        {
            return Err(CliError::new(
                "the database already holds a Stint store: start replicas on it with the same --master-key-file (--force does not wipe a database; drop and re-create it)",
            ));
        }
    }
    let key = config.master_key_path();
    if key.exists() {
        if !force {
            return Err(CliError::new(format!(
                "master key {} already exists; pass --force to replace it",
                key.display()
            )));
        }
        std::fs::remove_file(&key)
            .map_err(|e| CliError::new(format!("cannot remove {}: {e}", key.display())))?;
    }
    if let Some(parent) = key
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        crate::store::sled::create_private_dir(parent)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", parent.display())))?;
    }
    let master = MasterKey::create(&key, &SystemRandom::new())
        .map_err(|e| CliError::new(format!("master key: {e}")))?;
    let daemon = Daemon::assemble(config.clone(), store, master, Arc::new(SystemClock))?;
    bootstrap(&daemon, admin_user, password).await
}

async fn bootstrap(
    daemon: &Daemon,
    admin_user: &str,
    password: &SecretString,
) -> Result<InitOutput, CliError> {
    let (user, _serial, seed) = daemon
        .broker
        .bootstrap_admin(admin_user, password)
        .await
        .map_err(|e| CliError::new(e.to_string()))?;
    let totp_secret = totp::seed_base32(seed.expose());
    // Labelled as AWS labels a virtual device: the user at the account.
    let label = format!("{}@{}", user.name, daemon.config.account.id);
    let otpauth_uri = totp::otpauth_uri("Stint", &label, seed.expose())
        .map_err(|e| CliError::new(e.to_string()))?;
    daemon.flush()?;
    Ok(InitOutput {
        user_name: user.name,
        arn: user.arn,
        totp_secret,
        otpauth_uri,
    })
}

/// Prints the enrollment for a person (QR in the terminal) or as JSON.
pub fn print(
    out: &mut dyn Write,
    init: &InitOutput,
    json: bool,
    password: Option<&SecretString>,
) -> std::io::Result<()> {
    if json {
        let mut value = serde_json::json!({
            "user_name": init.user_name,
            "arn": init.arn,
            "totp_secret": init.totp_secret.expose(),
            "otpauth_uri": init.otpauth_uri.expose(),
        });
        if let Some(password) = password {
            value["password"] = password.expose().into();
        }
        return writeln!(out, "{value}");
    }
    writeln!(out, "Administrator {} ({})", init.user_name, init.arn)?;
    if let Some(password) = password {
        writeln!(out, "  password:    {}", password.expose())?;
    }
    writeln!(out, "  TOTP secret: {}", init.totp_secret.expose())?;
    writeln!(out, "  otpauth URI: {}", init.otpauth_uri.expose())?;
    writeln!(out, "Scan this with an authenticator app (shown once):")?;
    if let Ok(qr) = totp::qr_terminal(init.otpauth_uri.expose()) {
        writeln!(out, "{}", qr.expose())?;
    }
    Ok(())
}
