//! The `stint` command line: one module per command family; `main.rs` only parses and
//! dispatches.

pub mod audit;
pub mod bench;
pub mod client;
pub mod completions;
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
    /// Output format of client commands: text for people, json for programs.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: OutputFormat,
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
    /// Make users, groups, roles and policies match a JSON, YAML or TOML declaration.
    ///
    /// Reads what exists, plans the changes (pure: the same file and server state give the
    /// same plan), prints each change and makes it through the audited Iam RPCs. Running it
    /// twice changes nothing the second time. With --dry-run only the plan is printed;
    /// with --output json it is one JSON object ({"dry_run", "changes": [...]}).
    Apply(client::apply::ApplyArgs),
    /// Access review: who can do what, policy simulation, the credential report.
    #[command(subcommand)]
    Review(client::admin::ReviewCommand),
    /// Run a command with a role's credentials in its environment, refreshed before expiry.
    Exec(client::exec::ExecArgs),
    /// Set (or show) a profile's role, source profile, MFA serial, endpoint and CA.
    Configure(client::exec::ConfigureArgs),
    /// Print a shell completion script: `stint completions bash > /etc/bash_completion.d/stint`.
    Completions(completions::CompletionsArgs),
    /// Print the stint(1) man page: `stint man > stint.1 && man ./stint.1`.
    Man,
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
    /// Generate a local CA and a server certificate signed by it in <data-dir>/tls, serve
    /// TLS with them and print how clients trust the CA.
    #[arg(long, conflicts_with = "tls_cert")]
    pub dev_tls: bool,
    /// Extra DNS name or IP address for the --dev-tls certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// PEM CA certificate(s): clients must present a certificate signed by one (mTLS).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plain gRPC on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Development mode: initialise an empty data dir with a generated admin; loopback only.
    #[arg(long)]
    pub dev: bool,
    /// Threads hashing passwords (limits.hash_threads; 0 = one per core).
    #[arg(long, value_name = "N")]
    pub hash_threads: Option<u64>,
    /// Requests in flight before more are refused (limits.max_concurrent_requests).
    #[arg(long, value_name = "N")]
    pub max_concurrent_requests: Option<u64>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Serve /healthz, /readyz and /metrics over plain HTTP on this address (ops.listen).
    #[arg(long, value_name = "ADDR")]
    pub ops_listen: Option<std::net::SocketAddr>,
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

/// The global `--output`. `env` is `assume-role`'s (`export …` lines for `eval`); elsewhere
/// it means text.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    #[value(hide = true)]
    Env,
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
    overrides.tls_client_ca = more.tls_client_ca;
    overrides.dev_tls = more.dev_tls;
    overrides.insecure = more.insecure;
    overrides.log_format = more.log_format;
    overrides.dev = more.dev;
    overrides.ops_listen = more.ops_listen;
    overrides.hash_threads = more.hash_threads;
    overrides.max_concurrent_requests = more.max_concurrent_requests;
    let (config, warnings) =
        Config::load_with_warnings(flags.config.as_deref(), &env_vars(), &overrides)?;
    for warning in warnings {
        eprintln!("stint: warning: {warning}");
    }
    Ok(config)
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::util::SubscriberInitExt;
    // `try_init` also routes the `log` crate's records (sled's) into tracing.
    // Colours only for a person at a terminal: escape codes cost CPU on every request line
    // and clutter files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = log_subscriber(format, ansi, std::io::stderr).try_init();
}

/// The daemon's log subscriber, writing to `writer`.
///
/// A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped:
/// tracing-subscriber's default reports such a failure with `eprintln!`, which panics
/// when stderr itself fails, and a panic inside a request handler ends the call
/// CANCELLED. Logging must never fail a request.
fn log_subscriber<W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .log_internal_errors(false);
    match format {
        LogFormat::Json => Box::new(builder.json().with_current_span(true).finish()),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start runtime: {e}")))
}

/// Runs a parsed command; the exit code follows the command's own rules.
pub fn run(cli: Cli) -> ExitCode {
    let output = cli.output;
    let result = match cli.command {
        Command::Policy(command) => return policy::run(command, output),
        Command::Serve(args) => run_serve(args),
        Command::Init(mut args) => {
            args.output = max_output(args.output, output);
            run_init(args)
        }
        Command::Audit(command) => run_audit(command, output),
        Command::Store(StoreCommand::Migrate { from, to }) => {
            store::migrate(&from, &to, 64 * 1024 * 1024).map(|report| {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
                ExitCode::SUCCESS
            })
        }
        Command::Bench(args) => runtime().and_then(|rt| {
            rt.block_on(bench::run(args, output))
                .map(|()| ExitCode::SUCCESS)
        }),
        Command::Login(args) => client::login::login(args, &client::Env::from_process()),
        Command::AssumeRole(args) => client::login::assume_role(args, &client::Env::from_process()),
        Command::Whoami(mut args) => {
            args.output = max_output(args.output, output);
            client::login::whoami(args, &client::Env::from_process())
        }
        Command::Logout(args) => client::login::logout(args, &client::Env::from_process()),
        Command::Iam(args) => client::admin::iam(args, &client::Env::from_process(), output),
        Command::Keys(command) => {
            client::admin::keys(command, &client::Env::from_process(), output)
        }
        Command::Revoke(args) => client::admin::revoke(args, &client::Env::from_process(), output),
        // Like grep: 0 allowed, 1 denied, 2 could not tell.
        Command::Authorize(args) => {
            return match client::admin::authorize(args, &client::Env::from_process(), output) {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("stint: {err}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Call(args) => client::admin::call(args, &client::Env::from_process(), output),
        Command::Mfa(command) => client::mfa::run(command, &client::Env::from_process()),
        Command::Apply(args) => client::apply::apply(args, &client::Env::from_process(), output),
        Command::Review(command) => {
            client::admin::review(command, &client::Env::from_process(), output)
        }
        Command::Exec(args) => client::exec::exec(args, &client::Env::from_process()),
        Command::Configure(args) => client::exec::configure(args, &client::Env::from_process()),
        Command::Completions(args) => completions::print(&completions::completions(args.shell)),
        Command::Man => completions::man_page().and_then(|page| completions::print(&page)),
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
            tls_client_ca: args.tls_client_ca.clone(),
            dev_tls: args.dev_tls,
            insecure: args.insecure,
            log_format: args.log_format,
            dev: args.dev,
            ops_listen: args.ops_listen,
            hash_threads: args.hash_threads,
            max_concurrent_requests: args.max_concurrent_requests,
            ..Overrides::default()
        },
    )?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(config.log_format);
    runtime()?.block_on(async move {
        // Bind first: when the port is taken, nothing has been created (nor a password lost).
        let listener = serve::bind(config.listen).await?;
        let ops = match config.ops.listen {
            Some(addr) => Some(crate::daemon::bind_ops(addr).await?),
            None => None,
        };
        if config.dev {
            serve::init_dev(&config).await?;
        }
        let daemon = serve::Daemon::open(config.clone(), Arc::new(SystemClock))?;
        if let Some(ops) = ops {
            daemon.use_ops_listener(ops);
        }
        let tls = crate::rpc::tls::from_config(&config, &args.tls_san, crate::core::time::Clock::now(&SystemClock))
            .map_err(|e| CliError::new(format!("TLS: {e}")))?;
        let addr = listener.local_addr().map_err(|e| CliError::new(e.to_string()))?;
        tracing::info!(%addr, tls = tls.is_some(), data_dir = %config.data_dir.display(), "stint serving");
        if let Some((_, Some(dev))) = &tls {
            client::say(dev.trust_instructions(&format!("https://localhost:{}", addr.port())))?;
        }
        daemon.serve_tls(listener, tls.map(|(tls, _)| tls), serve::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
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

/// A subcommand's own `--output` (kept for old scripts) or the global one, whichever asks
/// for JSON.
fn max_output(own: OutputFormat, global: OutputFormat) -> OutputFormat {
    if own == OutputFormat::Json || global == OutputFormat::Json {
        OutputFormat::Json
    } else {
        OutputFormat::Text
    }
}

fn run_audit(command: AuditCommand, output: OutputFormat) -> Result<ExitCode, CliError> {
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
        AuditCommand::List(args) => {
            client::admin::audit_list(args, &client::Env::from_process(), output)
        }
        AuditCommand::Watch(args) => {
            client::admin::audit_watch(args, &client::Env::from_process(), output)
        }
        AuditCommand::ChainVerify(auth) => {
            client::admin::audit_chain_verify(auth, &client::Env::from_process(), output)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn global_output_parses_everywhere_and_keeps_old_spellings() {
        Cli::command().debug_assert();
        let rows: &[(&[&str], OutputFormat)] = &[
            (&["stint", "keys", "list"], OutputFormat::Text),
            (
                &["stint", "--output", "json", "keys", "list"],
                OutputFormat::Json,
            ),
            (
                &["stint", "keys", "list", "--output", "json"],
                OutputFormat::Json,
            ),
            (
                &["stint", "audit", "list", "--output", "json"],
                OutputFormat::Json,
            ),
            (
                &["stint", "policy", "validate", "p.json", "--output", "json"],
                OutputFormat::Json,
            ),
            (
                &[
                    "stint",
                    "authorize",
                    "--action",
                    "s3:GetObject",
                    "--resource",
                    "*",
                    "--output",
                    "json",
                ],
                OutputFormat::Json,
            ),
            (
                &[
                    "stint",
                    "iam",
                    "CreateUser",
                    "--describe",
                    "--output",
                    "json",
                ],
                OutputFormat::Json,
            ),
        ];
        for (line, want) in rows {
            let cli = Cli::try_parse_from(*line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(cli.output, *want, "{line:?}");
        }
        // Commands that had their own --output keep it (same values, plus assume-role's env).
        let cli = Cli::try_parse_from(["stint", "whoami", "--output", "json"]).unwrap();
        let Command::Whoami(args) = cli.command else {
            panic!("whoami")
        };
        assert_eq!(max_output(args.output, cli.output), OutputFormat::Json);
        let cli = Cli::try_parse_from(["stint", "--output", "json", "whoami"]).unwrap();
        let Command::Whoami(args) = cli.command else {
            panic!("whoami")
        };
        assert_eq!(max_output(args.output, cli.output), OutputFormat::Json);
        let cli =
            Cli::try_parse_from(["stint", "assume-role", "--role-arn", "r", "--output", "env"])
                .unwrap();
        let Command::AssumeRole(args) = cli.command else {
            panic!("assume-role")
        };
        assert_eq!(args.output, OutputFormat::Env);
        assert!(Cli::try_parse_from(["stint", "keys", "list", "--output", "yaml"]).is_err());
    }

    /// A token on the command line is a secret from the parser on: no `Debug` of the
    /// parsed flags shows it (`AuthFlags` is what every client command flattens).
    #[test]
    fn a_token_flag_never_shows_in_debug() {
        #[derive(clap::Parser, Debug)]
        struct Flags {
            #[command(flatten)]
            auth: client::AuthFlags,
        }
        let flags = Flags::try_parse_from(["stint", "--token", "tok-never-printed"]).unwrap();
        assert_eq!(flags.auth.token_flag(), Some("tok-never-printed"));
        let shown = format!("{flags:?}");
        assert!(!shown.contains("tok-never-printed"), "{shown}");
        let line = [
            "stint",
            "bench",
            "--endpoint",
            "http://127.0.0.1:1",
            "--token",
            "tok-never-printed",
        ];
        let Command::Bench(args) = Cli::try_parse_from(line).unwrap().command else {
            panic!("bench")
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("tok-never-printed"), "{shown}");
    }
}
