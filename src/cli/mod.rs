//! The `stint` command line: one module per command family; `main.rs` only parses and
//! dispatches.

pub mod audit;
pub mod bench;
pub mod client;
pub mod init;
pub mod policy;
pub mod serve;
pub mod store;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::broker::SystemClock;
use crate::config::{Config, LogFormat, Overrides};
use crate::core::secret::SecretString;

/// The CLI layer's error: a message for a person, already naming what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(String);

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError(message.into())
    }
}

impl From<crate::daemon::DaemonError> for CliError {
    fn from(err: crate::daemon::DaemonError) -> Self {
        CliError(err.to_string())
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(err: crate::config::ConfigError) -> Self {
        CliError(err.to_string())
    }
}

#[derive(Parser)]
#[command(
    name = "stint",
    version,
    about = "Temporary-credential broker: IAM policies, MFA, short-lived signed credentials"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the broker daemon.
    Serve(ServeArgs),
    /// Create a data dir with its master key, signing keys and first administrator.
    Init(InitArgs),
    /// Validate and simulate policies offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Audit log: offline tools on a stopped daemon's data dir (verify, export) and
    /// calls to a running server (list, watch, chain-verify).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Load-test a throwaway in-process broker over loopback gRPC.
    Bench(bench::BenchArgs),
    /// Store maintenance: move a sled data dir into PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Log in (password + MFA code, or an access key) and cache the session.
    Login(client::login::LoginArgs),
    /// Assume a role with the cached session; print and cache its credentials.
    AssumeRole(client::login::AssumeRoleArgs),
    /// Show who the current credentials belong to and when they expire.
    Whoami(client::login::WhoamiArgs),
    /// Revoke the cached session on the server (when allowed) and forget it.
    Logout(client::login::LogoutArgs),
    /// Call any stint.v1.Iam action: `stint iam CreateUser '{"user_name":"bob"}'`.
    Iam(client::admin::IamArgs),
    /// Signing keys on a running server.
    #[command(subcommand)]
    Keys(client::admin::KeysCommand),
    /// Revoke one session, or everything a principal or role got before a time.
    Revoke(client::admin::RevokeArgs),
    /// Ask the server whether the current credentials may do an action on a resource.
    Authorize(client::admin::AuthorizeArgs),
    /// Call any stint.v1 method with JSON: `stint call Tokens/Introspect '{"token":"…"}'`.
    Call(client::admin::CallArgs),
    /// MFA devices.
    #[command(subcommand)]
    Mfa(client::mfa::MfaCommand),
    /// Make users, groups, roles and policies match a JSON declaration (idempotent).
    Apply(client::apply::ApplyArgs),
    /// Access review: who can do what, policy simulation, the credential report.
    #[command(subcommand)]
    Review(client::admin::ReviewCommand),
}

/// Server flags (they override the config file and `STINT_*` environment).
#[derive(Args, Debug, Default)]
pub struct ServerFlags {
    /// TOML config file (also `STINT_CONFIG`).
    #[arg(long, env = "STINT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (sled store, master key).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File with the 256-bit master key (default: <data-dir>/master.key).
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// Use this PostgreSQL database (postgres://user@host:port/db) instead of sled in
    /// the data dir; every replica needs the same --master-key-file.
    #[arg(long)]
    pub store_url: Option<String>,
}

impl ServerFlags {
    fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            master_key_file: self.master_key_file.clone(),
            store_url: self.store_url.clone(),
            ..Overrides::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerFlags,
    /// Listen address (default 127.0.0.1:7420).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain gRPC on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Development mode: initialise an empty data dir with a generated admin; loopback only.
    #[arg(long)]
    pub dev: bool,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub server: ServerFlags,
    /// Name of the first administrator.
    #[arg(long)]
    pub admin_user: String,
    /// Read the administrator's password from standard input.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Wipe an existing data dir.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped daemon's sled data dir (every table, the audit chain) into an
    /// empty PostgreSQL database; the replicas then use the same master key file.
    Migrate {
        /// The sled data dir.
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database (postgres://user@host:port/db).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and checkpoints of a stopped daemon's data dir (or, with
    /// --store-url, of the PostgreSQL store, live); exit 0 only if intact.
    Verify {
        #[command(flatten)]
        server: ServerFlags,
    },
    /// Write every event as JSON lines to standard output.
    Export {
        #[command(flatten)]
        server: ServerFlags,
    },
    /// List events from a running server.
    List(client::admin::AuditListArgs),
    /// Follow a running server's events as JSON lines.
    Watch(client::admin::AuditWatchArgs),
    /// Ask a running server to verify its hash chain; exit 0 only if intact.
    ChainVerify(client::AuthFlags),
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("STINT_"))
        .collect()
}

pub fn load_config(flags: &ServerFlags, more: Overrides) -> Result<Config, CliError> {
    let mut overrides = flags.overrides();
    overrides.listen = more.listen;
    overrides.tls_cert = more.tls_cert;
    overrides.tls_key = more.tls_key;
    overrides.insecure = more.insecure;
    overrides.log_format = more.log_format;
    overrides.dev = more.dev;
    Ok(Config::load(
        flags.config.as_deref(),
        &env_vars(),
        &overrides,
    )?)
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start runtime: {e}")))
}

/// Runs a parsed command; the exit code follows the command's own rules.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Policy(command) => return policy::run(command),
        Command::Serve(args) => run_serve(args),
        Command::Init(args) => run_init(args),
        Command::Audit(command) => run_audit(command),
        Command::Store(StoreCommand::Migrate { from, to }) => {
            store::migrate(&from, &to, 64 * 1024 * 1024).map(|report| {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                ExitCode::SUCCESS
            })
        }
        Command::Bench(args) => {
            runtime().and_then(|rt| rt.block_on(bench::run(args)).map(|()| ExitCode::SUCCESS))
        }
        Command::Login(args) => client::login::login(args, &client::Env::from_process()),
        Command::AssumeRole(args) => client::login::assume_role(args, &client::Env::from_process()),
        Command::Whoami(args) => client::login::whoami(args, &client::Env::from_process()),
        Command::Logout(args) => client::login::logout(args, &client::Env::from_process()),
        Command::Iam(args) => client::admin::iam(args, &client::Env::from_process()),
        Command::Keys(command) => client::admin::keys(command, &client::Env::from_process()),
        Command::Revoke(args) => client::admin::revoke(args, &client::Env::from_process()),
        Command::Authorize(args) => client::admin::authorize(args, &client::Env::from_process()),
        Command::Call(args) => client::admin::call(args, &client::Env::from_process()),
        Command::Mfa(command) => client::mfa::run(command, &client::Env::from_process()),
        Command::Apply(args) => client::apply::apply(args, &client::Env::from_process()),
        Command::Review(command) => client::admin::review(command, &client::Env::from_process()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("stint: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> Result<ExitCode, CliError> {
    let config = load_config(
        &args.server,
        Overrides {
            listen: args.listen,
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            insecure: args.insecure,
            log_format: args.log_format,
            dev: args.dev,
            ..Overrides::default()
        },
    )?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(config.log_format);
    runtime()?.block_on(async move {
        if config.dev && init::is_uninitialised(&config.data_dir) && !config.master_key_path().exists() {
            let password = generate_password()?;
            let out = init::initialise(&config, "admin", &password, false).await?;
            let mut stdout = std::io::stdout();
            println!("Development mode: initialised {}", config.data_dir.display());
            init::print(&mut stdout, &out, false, Some(&password)).map_err(|e| CliError::new(e.to_string()))?;
        }
        let daemon = serve::Daemon::open(config.clone(), Arc::new(SystemClock))?;
        let tls = serve::tls_files(&config)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener.local_addr().map_err(|e| CliError::new(e.to_string()))?;
        tracing::info!(%addr, tls = tls.is_some(), data_dir = %config.data_dir.display(), "stint serving");
        daemon.serve(listener, tls, serve::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
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

fn run_init(args: InitArgs) -> Result<ExitCode, CliError> {
    let config = load_config(&args.server, Overrides::default())?;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| CliError::new(format!("cannot read password from stdin: {e}")))?;
    let password = SecretString::new(password.trim_end_matches(['\n', '\r']).to_string());
    if password.expose().is_empty() {
        return Err(CliError::new("the password read from stdin is empty"));
    }
    runtime()?.block_on(async move {
        let out = init::initialise(&config, &args.admin_user, &password, args.force).await?;
        init::print(
            &mut std::io::stdout(),
            &out,
            args.output == OutputFormat::Json,
            None,
        )
        .map_err(|e| CliError::new(e.to_string()))?;
        Ok(ExitCode::SUCCESS)
    })
}

fn run_audit(command: AuditCommand) -> Result<ExitCode, CliError> {
    match command {
        AuditCommand::Verify { server } => {
            let config = load_config(&server, Overrides::default())?;
            // sled: the stopped daemon's data dir; PostgreSQL (--store-url): live is fine.
            let store = crate::daemon::open_store(&config)?;
            let report = crate::audit::chain::verify(&*store, None)
                .map_err(|e| CliError::new(e.to_string()))?;
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(if report.intact {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Export { server } => {
            let config = load_config(&server, Overrides::default())?;
            let store = crate::daemon::open_store(&config)?;
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            audit::export_jsonl(&*store, &mut lock, &Default::default())
                .map_err(|e| CliError::new(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::List(args) => client::admin::audit_list(args, &client::Env::from_process()),
        AuditCommand::Watch(args) => client::admin::audit_watch(args, &client::Env::from_process()),
        AuditCommand::ChainVerify(auth) => {
            client::admin::audit_chain_verify(auth, &client::Env::from_process())
        }
    }
}
