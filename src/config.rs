//! Layered, strict server configuration for `stint serve`.
//!
//! Layers, lowest to highest precedence:
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. a TOML file (`--config FILE`, or `STINT_CONFIG`, resolved by `main`);
//! 3. `STINT_*` environment variables: `STINT_<KEY>` for top-level keys
//!    (`STINT_LISTEN`, `STINT_DATA_DIR`, …) and `STINT_<SECTION>__<KEY>` for keys in a
//!    section (`STINT_ARGON2__MEMORY_KIB`, `STINT_TLS__CERT_FILE`);
//! 4. command-line flags ([`Overrides`]).
//!
//! Strict where it is safe to be: an unknown key in the file or a value that does not parse
//! is an error that names the key, variable or file. The environment is shared with the
//! client (a shell that ran `stint login` may start the server), so the client's own
//! variables ([`CLIENT_ENV_VARS`]) are ignored and any other unknown `STINT_*` variable is
//! a [warning](EnvWarning) naming the closest config key, not a refusal. There are no
//! inline secrets: secrets come from files (`*_file` keys). Relative paths are relative
//! to the working directory of the process.
//!
//! [`deploy/stint.toml`](example_toml) documents every key.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::authn::password::Argon2Params;

/// Prefix of every environment variable Stint reads.
pub const ENV_PREFIX: &str = "STINT_";

/// `STINT_*` variables used by `main`, the client-side commands (`env = "STINT_…"` in
/// `src/cli/`, `STINT_HOME`) or set by them for a shell or a child (`assume-role --output
/// env`, `stint exec`); the server ignores them silently. A unit test keeps this list in
/// step with `src/cli/`.
pub const CLIENT_ENV_VARS: &[&str] = &[
    "STINT_CONFIG",
    "STINT_HOME",
    "STINT_ENDPOINT",
    "STINT_CA_CERT",
    "STINT_TOKEN",
    "STINT_TOKEN_EXPIRATION",
    "STINT_PROFILE",
    "STINT_ACCESS_KEY_ID",
    "STINT_SECRET_ACCESS_KEY_FILE",
    "STINT_SESSION_TOKEN",
    "STINT_EXPIRATION",
    "STINT_PASSWORD",
    "STINT_BENCH_ACCESS_KEY_ID",
    "STINT_BENCH_SECRET_ACCESS_KEY",
    "STINT_BENCH_PASSWORD",
    "STINT_CREDENTIALS_FILE",
    "STINT_SECRET_ACCESS_KEY",
    "STINT_CLIENT_CERT",
    "STINT_CLIENT_KEY",
    "STINT_WEB_IDENTITY_TOKEN_FILE",
    "STINT_ROLE_ARN",
    "STINT_ROLE_SESSION_NAME",
];

/// Variables of the test harness (e.g. `STINT_TEST_POSTGRES_URL`), ignored by the server.
pub const TEST_ENV_PREFIX: &str = "STINT_TEST_";

/// Key suffixes whose values [`Config::to_redacted_toml`] replaces with `"***"`.
const SECRET_KEY_SUFFIXES: &[&str] = &["secret", "password", "passphrase", "private_key"];

/// What replaces a secret value in printed configuration.
pub const REDACTED: &str = "***";

/// The fully commented example configuration shipped in `deploy/stint.toml`.
pub fn example_toml() -> &'static str {
    include_str!("../deploy/stint.toml")
}

/// Server configuration. See the module documentation for how it is layered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC (and `/.well-known/*` HTTP) listener binds. Plain text is allowed
    /// only on a loopback address; any other address needs TLS or `insecure`.
    pub listen: SocketAddr,
    /// Directory holding the sled database.
    pub data_dir: PathBuf,
    /// File holding the master key that seals secrets at rest (mode 0600). `None` means
    /// `<data_dir>/master.key`; see [`Config::master_key_path`].
    pub master_key_file: Option<PathBuf>,
    /// Allow plain-text gRPC on a non-loopback address.
    pub insecure: bool,
    /// Load balancers (addresses or CIDRs) whose connections start with a PROXY protocol
    /// header (v2 or v1) naming the client; empty (the default): none. From these peers the header
    /// is required; from others it is never read (see `rpc::proxy`).
    pub proxy_protocol_from: Vec<String>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Development mode (only allowed on a loopback address).
    pub dev: bool,
    /// TLS for the listener.
    pub tls: TlsConfig,
    /// Storage engine tuning.
    pub store: StoreConfig,
    /// Partition and account id used in ARNs.
    pub account: AccountConfig,
    /// Issued credentials (JWTs) and signing-key rotation.
    pub tokens: TokenConfig,
    /// Password hashing (argon2id) cost.
    pub argon2: Argon2Config,
    /// Failed-login throttling and lockout.
    pub lockout: LockoutConfig,
    /// Audit log durability and checkpoints.
    pub audit: AuditConfig,
    /// Background sweeper of expired sessions and revocations.
    pub sweeper: SweeperConfig,
    /// The HTTP ops listener (`/healthz`, `/readyz`, `/metrics`).
    pub ops: OpsConfig,
    /// Load limits: password-hash pool, request concurrency, deadlines, HTTP/2.
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: PathBuf::from("stint-data"),
            master_key_file: None,
            insecure: false,
            proxy_protocol_from: Vec::new(),
            log_format: LogFormat::default(),
            dev: false,
            tls: TlsConfig::default(),
            store: StoreConfig::default(),
            account: AccountConfig::default(),
            tokens: TokenConfig::default(),
            argon2: Argon2Config::default(),
            lockout: LockoutConfig::default(),
            audit: AuditConfig::default(),
            sweeper: SweeperConfig::default(),
            ops: OpsConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// TLS for the listener: both files, or `dev` (a generated local CA), or neither. The
/// files are re-read on SIGHUP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s): when set, every client must present a certificate signed by
    /// one of them (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// Generate a local CA and a server certificate signed by it in `<data_dir>/tls` and
    /// serve with them (`--dev-tls`); instead of `cert_file`/`key_file`.
    pub dev: bool,
}

impl TlsConfig {
    /// Whether TLS is configured (both files given, or dev certificates).
    pub fn enabled(&self) -> bool {
        self.dev || (self.cert_file.is_some() && self.key_file.is_some())
    }
}

/// Storage engine: sled in `data_dir` (the default), or PostgreSQL when `url` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled page cache size, in MiB.
    pub cache_mb: u64,
    /// `postgres://user[:password]@host[:port]/db`: share one PostgreSQL database between
    /// replicas instead of the sled store in `data_dir`. Printed with the password hidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Connections each replica keeps to PostgreSQL.
    pub pool_size: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mb: 64,
            url: None,
            pool_size: 8,
        }
    }
}

/// Partition and account id used in ARNs (`arn:<partition>:iam::<id>:user/…`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountConfig {
    /// ARN partition: `[a-z][a-z0-9-]{0,31}`.
    pub partition: String,
    /// Account id: exactly 12 digits.
    pub id: String,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            partition: "stint".into(),
            id: "000000000000".into(),
        }
    }
}

/// Issued credentials (JWTs) and signing-key rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// `iss` claim of issued tokens, and the `issuer` of `/.well-known/openid-configuration`.
    /// Empty (the default): the server's URL, derived from `listen` and TLS (see
    /// [`Config::issuer`]); set it to the URL clients use when that differs (a DNS name,
    /// a proxy, a wildcard listen address), so strict OIDC libraries accept discovery.
    pub issuer: String,
    /// `aud` claim of issued tokens.
    pub audience: String,
    /// Tolerated clock difference when checking `nbf`/`exp`, in seconds.
    pub clock_skew_seconds: u64,
    /// Scheduled signing-key rotation interval, in hours.
    pub rotation_interval_hours: u64,
    /// How long the next signing key is published in the JWKS before it signs, in seconds.
    pub publish_ahead_seconds: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: "stint".into(),
            clock_skew_seconds: 60,
            rotation_interval_hours: 720,
            publish_ahead_seconds: 3600,
        }
    }
}

/// Password hashing cost (argon2id; defaults are the OWASP recommendation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory cost, in KiB (at least 8 × `parallelism`).
    pub memory_kib: u32,
    /// Number of passes (at least 1).
    pub iterations: u32,
    /// Degree of parallelism (lanes, at least 1).
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Failed-login throttling and lockout (the model: `docs/lockout.md`,
/// `core::authn::lockout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Failures from addresses a principal never logged in from, within
    /// `reset_after_seconds`, after which it is locked against such addresses.
    pub max_failures: u32,
    /// Delay after the first failure, in milliseconds; doubles with each further failure.
    pub base_delay_ms: u64,
    /// Cap on the per-(principal, address) delay, in milliseconds.
    pub max_delay_ms: u64,
    /// How long a lockout lasts, in seconds.
    pub lockout_seconds: u64,
    /// Quiet period after which the failure count resets, in seconds.
    pub reset_after_seconds: u64,
    /// Failures one address may make per window before its attempts are slowed.
    pub address_budget: u32,
    /// The address budget's window, in seconds.
    pub address_window_seconds: u64,
    /// Cap on the delay of an address over its budget, in milliseconds.
    pub address_max_delay_ms: u64,
    /// How many addresses a principal remembers having logged in from.
    pub known_addresses: u32,
    /// A remembered address is forgotten this many days after its last login.
    pub known_address_days: u32,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
            lockout_seconds: 900,
            reset_after_seconds: 900,
            address_budget: 100,
            address_window_seconds: 600,
            address_max_delay_ms: 5_000,
            known_addresses: 16,
            known_address_days: 90,
        }
    }
}

impl LockoutConfig {
    /// The policy the broker applies.
    pub fn policy(&self) -> crate::core::authn::lockout::LockoutPolicy {
        crate::core::authn::lockout::LockoutPolicy {
            max_failures: self.max_failures,
            base_delay_ms: self.base_delay_ms,
            max_delay_ms: self.max_delay_ms,
            lockout_seconds: self.lockout_seconds,
            reset_after_seconds: self.reset_after_seconds,
            address_budget: self.address_budget,
            address_window_seconds: self.address_window_seconds,
            address_max_delay_ms: self.address_max_delay_ms,
            known_addresses: self.known_addresses,
            known_address_days: self.known_address_days,
        }
    }

    /// Every knob within bounds, then the one ordering rule.
    fn validate(&self) -> Result<(), ConfigError> {
        const DAY: u64 = 86_400;
        let bounds: [(&'static str, u64, u64, u64); 10] = [
            ("lockout.max_failures", self.max_failures.into(), 1, 1_000),
            ("lockout.base_delay_ms", self.base_delay_ms, 0, 60_000),
            ("lockout.max_delay_ms", self.max_delay_ms, 0, 300_000),
            ("lockout.lockout_seconds", self.lockout_seconds, 1, DAY),
            (
                "lockout.reset_after_seconds",
                self.reset_after_seconds,
                1,
                7 * DAY,
            ),
            (
                "lockout.address_budget",
                self.address_budget.into(),
                1,
                1_000_000,
            ),
            (
                "lockout.address_window_seconds",
                self.address_window_seconds,
                1,
                DAY,
            ),
            (
                "lockout.address_max_delay_ms",
                self.address_max_delay_ms,
                0,
                60_000,
            ),
            (
                "lockout.known_addresses",
                self.known_addresses.into(),
                1,
                256,
            ),
            (
                "lockout.known_address_days",
                self.known_address_days.into(),
                1,
                3_650,
            ),
        ];
        for (key, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{value} is not between {min} and {max}"),
                });
            }
        }
        if self.base_delay_ms > self.max_delay_ms {
            return Err(ConfigError::Invalid {
                key: "lockout.base_delay_ms",
                reason: format!(
                    "{} must not exceed lockout.max_delay_ms ({})",
                    self.base_delay_ms, self.max_delay_ms
                ),
            });
        }
        Ok(())
    }
}

/// Audit log durability and checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How long a request waits for its audit event to be durable before it fails, in ms.
    pub flush_timeout_ms: u64,
    /// Write a chain checkpoint every this many events.
    pub checkpoint_every_events: u64,
    /// Write a chain checkpoint at least this often, in seconds.
    pub checkpoint_every_seconds: u64,
    /// Days to keep audit events; 0 keeps them forever.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            flush_timeout_ms: 5000,
            checkpoint_every_events: 1000,
            checkpoint_every_seconds: 300,
            retention_days: 0,
        }
    }
}

/// Background sweeper of expired sessions and revocations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweeperConfig {
    /// Seconds between sweeps.
    pub interval_seconds: u64,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 60,
        }
    }
}

/// The HTTP ops listener: liveness, readiness and Prometheus metrics, unauthenticated
/// (`docs/metrics.md`). Off unless `listen` is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// `IP:PORT` of the ops listener, e.g. `127.0.0.1:7421`; unset: no ops listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl OpsConfig {
    /// The ops port must not be the gRPC port on an overlapping address.
    fn validate(&self, grpc: &SocketAddr) -> Result<(), ConfigError> {
        let Some(ops) = self.listen else {
            return Ok(());
        };
        let overlap =
            ops.ip() == grpc.ip() || ops.ip().is_unspecified() || grpc.ip().is_unspecified();
        if ops.port() != 0 && ops.port() == grpc.port() && overlap {
            return Err(ConfigError::Invalid {
                key: "ops.listen",
                reason: format!(
                    "{ops} is the gRPC listen address ({grpc}): give the ops listener a port of its own"
                ),
            });
        }
        Ok(())
    }
}

/// Load limits: what the server takes on at once and for how long, so that under load it
/// refuses quickly (`RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`) instead of queueing without
/// end. docs/ARCHITECTURE.md ("Limits") has the table and what a client sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Threads hashing passwords (argon2id), apart from the async workers; 0: one per core.
    pub hash_threads: u64,
    /// Password checks that may wait for a hashing thread; more are refused at once.
    pub hash_queue: u64,
    /// Requests in flight in the whole server; more are refused at once.
    pub max_concurrent_requests: u64,
    /// Requests in flight on one connection; more are refused at once.
    pub max_concurrent_requests_per_connection: u64,
    /// HTTP/2 streams one connection may open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u64,
    /// Longest a request may take to answer, in ms; a client's shorter `grpc-timeout` wins.
    pub request_timeout_ms: u64,
    /// Seconds between HTTP/2 pings on an idle connection; 0: no pings.
    pub keepalive_interval_seconds: u64,
    /// Seconds to wait for a ping's answer before closing the connection.
    pub keepalive_timeout_seconds: u64,
    /// Largest header block a request may send, in bytes (bearer tokens travel here).
    pub max_header_list_bytes: u64,
    /// Largest HTTP/2 frame accepted, in bytes.
    pub max_frame_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            hash_threads: 0,
            hash_queue: 64,
            max_concurrent_requests: 1024,
            max_concurrent_requests_per_connection: 256,
            max_concurrent_streams: 1024,
            request_timeout_ms: 60_000,
            keepalive_interval_seconds: 60,
            keepalive_timeout_seconds: 20,
            max_header_list_bytes: 65_536,
            max_frame_bytes: 16_384,
        }
    }
}

impl LimitsConfig {
    /// The hashing threads to start (`hash_threads`, or one per core when 0).
    pub fn hash_threads(&self) -> usize {
        match usize::try_from(self.hash_threads) {
            Ok(0) | Err(_) => crate::broker::default_hash_threads(),
            Ok(n) => n,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ranges = [
            ("limits.hash_threads", self.hash_threads, HASH_THREADS),
            ("limits.hash_queue", self.hash_queue, HASH_QUEUE),
            (
                "limits.max_concurrent_requests",
                self.max_concurrent_requests,
                CONCURRENT_REQUESTS,
            ),
            (
                "limits.max_concurrent_requests_per_connection",
                self.max_concurrent_requests_per_connection,
                CONCURRENT_REQUESTS,
            ),
            (
                "limits.max_concurrent_streams",
                self.max_concurrent_streams,
                CONCURRENT_REQUESTS,
            ),
            (
                "limits.request_timeout_ms",
                self.request_timeout_ms,
                REQUEST_TIMEOUT_MS,
            ),
            (
                "limits.keepalive_interval_seconds",
                self.keepalive_interval_seconds,
                KEEPALIVE_INTERVAL_SECONDS,
            ),
            (
                "limits.keepalive_timeout_seconds",
                self.keepalive_timeout_seconds,
                KEEPALIVE_TIMEOUT_SECONDS,
            ),
            (
                "limits.max_header_list_bytes",
                self.max_header_list_bytes,
                HEADER_LIST_BYTES,
            ),
            ("limits.max_frame_bytes", self.max_frame_bytes, FRAME_BYTES),
        ];
        for (key, value, range) in ranges {
            in_range(key, value, range)?;
        }
        Ok(())
    }
}

/// Command-line flags; applied last, over file and environment. `None`/`false` leaves the
/// lower layers alone (a flag cannot turn `insecure` or `dev` off).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `--listen ADDR`
    pub listen: Option<SocketAddr>,
    /// `--data-dir DIR`
    pub data_dir: Option<PathBuf>,
    /// `--master-key-file FILE`
    pub master_key_file: Option<PathBuf>,
    /// `--store-url postgres://…`
    pub store_url: Option<String>,
    /// `--tls-cert FILE`
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key FILE`
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca FILE`
    pub tls_client_ca: Option<PathBuf>,
    /// `--dev-tls`
    pub dev_tls: bool,
    /// `--insecure`
    pub insecure: bool,
    /// `--log-format text|json`
    pub log_format: Option<LogFormat>,
    /// `--dev`
    pub dev: bool,
    /// `--ops-listen ADDR`
    pub ops_listen: Option<SocketAddr>,
    /// `--hash-threads N`
    pub hash_threads: Option<u64>,
    /// `--max-concurrent-requests N`
    pub max_concurrent_requests: Option<u64>,
}

/// Why a configuration could not be loaded or is invalid. Every message names the key,
/// variable or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or a value has the wrong type.
    #[error("config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: toml::de::Error,
    },
    /// The config file has a key Stint does not know.
    #[error("config file {}: unknown key `{key}`", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Dotted path of the key, e.g. `argon2.memory_kb`.
        key: String,
    },
    /// A `STINT_*` environment variable whose value does not parse.
    #[error("environment variable {var}: {reason}")]
    EnvValue {
        /// The variable name.
        var: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The listen address is not loopback and neither TLS nor `insecure` is set.
    #[error(
        "listen address {listen} is not loopback: give --tls-cert and --tls-key, or --insecure"
    )]
    NotLoopback {
        /// The listen address.
        listen: SocketAddr,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// An unknown `STINT_*` variable: ignored, and shown to the operator with the config key
/// it most resembles (a typo such as `STINT_ARGON2_MEMORY_KIB` is then obvious).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvWarning {
    /// The variable name.
    pub var: String,
    /// The closest known variable and its config key (`None`: nothing is close).
    pub closest: Option<(String, String)>,
}

impl fmt::Display for EnvWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignoring unknown environment variable {}", self.var)?;
        match &self.closest {
            Some((var, key)) => write!(f, " (did you mean {var}, config key `{key}`?)"),
            None => f.write_str(
                " (config keys are STINT_<KEY> or STINT_<SECTION>__<KEY>, e.g. STINT_ARGON2__MEMORY_KIB)",
            ),
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then the `STINT_*`
    /// variables in `env` (pass `std::env::vars()`; other variables are ignored), then
    /// `overrides`; and [validates](Config::validate) the result. Unknown variables are
    /// dropped; [`Config::load_with_warnings`] returns them.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::load_with_warnings(file, env, overrides).map(|(config, _)| config)
    }

    /// [`Config::load`], with a warning for each unknown `STINT_*` variable.
    pub fn load_with_warnings(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<(Self, Vec<EnvWarning>), ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let warnings = config.apply_env(env)?;
        config.apply_overrides(overrides);
        config.validate()?;
        Ok((config, warnings))
    }

    /// Parses a config file over the defaults (no env, no flags, no validation).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses TOML text over the defaults; `path` is only used in error messages.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_err = |source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        };
        let table: toml::Table = text.parse().map_err(parse_err)?;
        if let Some(key) = unknown_key(&table, &schema(), "") {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        // Parse from the text again (not the table) so type errors carry line and column.
        toml::from_str(text).map_err(parse_err)
    }

    /// Applies the `STINT_*` variables of `env`, in order, over `self`; returns a warning
    /// for each unknown one (client variables are known, and ignored).
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<Vec<EnvWarning>, ConfigError> {
        let schema = schema();
        let defaults = toml_table(&Self::default());
        let mut table = toml_table(self);
        let mut warnings = Vec::new();
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            // Client variables, and the test harness's (`STINT_TEST_POSTGRES_URL`), are
            // not server configuration.
            if CLIENT_ENV_VARS.contains(&var.as_str()) || var.starts_with(TEST_ENV_PREFIX) {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let kind = match lookup(&schema, &path) {
                Some(kind) if !kind.is_table() => kind,
                _ => {
                    warnings.push(EnvWarning {
                        var: var.clone(),
                        closest: closest_env_var(var, &schema),
                    });
                    continue;
                }
            };
            let bad = |reason: String| ConfigError::EnvValue {
                var: var.clone(),
                reason,
            };
            let new = match kind {
                // An optional key (absent from the defaults) is unset by an empty value.
                toml::Value::String(_)
                    if value.is_empty() && lookup(&defaults, &path).is_none() =>
                {
                    None
                }
                toml::Value::String(_) => Some(toml::Value::String(value.clone())),
                toml::Value::Integer(_) => Some(toml::Value::Integer(
                    value
                        .trim()
                        .parse()
                        .map_err(|e| bad(format!("expected an integer: {e}")))?,
                )),
                toml::Value::Boolean(_) => {
                    Some(toml::Value::Boolean(parse_bool(value).ok_or_else(
                        || bad("expected a boolean (true/false, 1/0, yes/no, on/off)".into()),
                    )?))
                }
                // A list of strings: comma-separated; empty is the empty list.
                toml::Value::Array(_) => Some(toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(|item| toml::Value::String(item.to_owned()))
                        .collect(),
                )),
                _ => {
                    warnings.push(EnvWarning {
                        var: var.clone(),
                        closest: closest_env_var(var, &schema),
                    });
                    continue;
                }
            };
            set(&mut table, &path, new);
            // Deserialize after each variable so a bad value is blamed on its variable.
            *self = table
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| bad(e.message().to_owned()))?;
        }
        Ok(warnings)
    }

    /// Applies command-line flags over `self`.
    pub fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(listen) = o.listen {
            self.listen = listen;
        }
        if let Some(dir) = &o.data_dir {
            self.data_dir.clone_from(dir);
        }
        if let Some(file) = &o.master_key_file {
            self.master_key_file = Some(file.clone());
        }
        if let Some(url) = &o.store_url {
            self.store.url = Some(url.clone());
        }
        if let Some(file) = &o.tls_cert {
            self.tls.cert_file = Some(file.clone());
        }
        if let Some(file) = &o.tls_key {
            self.tls.key_file = Some(file.clone());
        }
        if let Some(file) = &o.tls_client_ca {
            self.tls.client_ca_file = Some(file.clone());
        }
        self.tls.dev |= o.dev_tls;
        if let Some(format) = o.log_format {
            self.log_format = format;
        }
        self.insecure |= o.insecure;
        self.dev |= o.dev;
        if let Some(addr) = o.ops_listen {
            self.ops.listen = Some(addr);
        }
        if let Some(n) = o.hash_threads {
            self.limits.hash_threads = n;
        }
        if let Some(n) = o.max_concurrent_requests {
            self.limits.max_concurrent_requests = n;
        }
    }

    /// The effective token issuer: `tokens.issuer`, or else the server's own URL,
    /// `https://<listen>` with TLS and `http://<listen>` without. A wildcard listen
    /// address (`0.0.0.0`, `::`) names no host clients could use, so `localhost` stands
    /// in for it: deployments reached by a DNS name set `tokens.issuer`.
    pub fn issuer(&self) -> String {
        if !self.tokens.issuer.is_empty() {
            return self.tokens.issuer.clone();
        }
        let scheme = if self.tls.enabled() { "https" } else { "http" };
        let port = self.listen.port();
        match self.listen.ip() {
            ip if ip.is_unspecified() => format!("{scheme}://localhost:{port}"),
            std::net::IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}"),
            std::net::IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
        }
    }

    /// Where the master key lives: `master_key_file`, or `<data_dir>/master.key`.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// Checks ranges and cross-key rules; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }

        // Paths must be UTF-8 so the effective config can be printed and re-read.
        let paths = [
            ("data_dir", Some(&self.data_dir)),
            ("master_key_file", self.master_key_file.as_ref()),
            ("tls.cert_file", self.tls.cert_file.as_ref()),
            ("tls.key_file", self.tls.key_file.as_ref()),
            ("tls.client_ca_file", self.tls.client_ca_file.as_ref()),
        ];
        for (key, path) in paths {
            if let Some(path) = path {
                if path.as_os_str().is_empty() {
                    return invalid(key, "must not be empty");
                }
                if path.to_str().is_none() {
                    return invalid(key, format!("{} is not valid UTF-8", path.display()));
                }
            }
        }

        if let Err(reason) = crate::core::proxy_header::parse_trusted(&self.proxy_protocol_from) {
            return invalid(
                "proxy_protocol_from",
                format!("{reason} (e.g. \"10.0.0.5\", \"10.0.0.0/24\")"),
            );
        }

        let partition = self.account.partition.as_bytes();
        let partition_ok = matches!(partition.first(), Some(b'a'..=b'z'))
            && partition.len() <= 32
            && partition
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
        if !partition_ok {
            return invalid(
                "account.partition",
                format!(
                    "{:?} must match [a-z][a-z0-9-]{{0,31}}",
                    self.account.partition
                ),
            );
        }
        let id = self.account.id.as_bytes();
        if id.len() != 12 || !id.iter().all(u8::is_ascii_digit) {
            return invalid(
                "account.id",
                format!("{:?} must be exactly 12 digits", self.account.id),
            );
        }

        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid(
                "tls",
                "give both tls.cert_file and tls.key_file (--tls-cert and --tls-key), or neither",
            );
        }
        if self.tls.dev && self.tls.cert_file.is_some() {
            return invalid(
                "tls.dev",
                "generated dev certificates (--dev-tls) replace tls.cert_file/tls.key_file: give one or the other",
            );
        }
        if self.tls.client_ca_file.is_some() && !self.tls.enabled() {
            return invalid(
                "tls.client_ca_file",
                "client certificates need TLS: give tls.cert_file and tls.key_file, or --dev-tls",
            );
        }
        let loopback = is_loopback(&self.listen);
        if !loopback && !self.tls.enabled() && !self.insecure {
            return Err(ConfigError::NotLoopback {
                listen: self.listen,
            });
        }
        if self.dev && !loopback {
            return invalid(
                "dev",
                format!(
                    "dev mode is only allowed on a loopback listen address, not {}",
                    self.listen
                ),
            );
        }

        let t = &self.tokens;
        if t.issuer.len() > 1024 || t.issuer.chars().any(char::is_whitespace) {
            return invalid(
                "tokens.issuer",
                "must be a URL without spaces, at most 1024 bytes (empty: derived from listen)",
            );
        }
        if t.audience.is_empty() {
            return invalid("tokens.audience", "must not be empty");
        }
        in_range(
            "tokens.clock_skew_seconds",
            t.clock_skew_seconds,
            CLOCK_SKEW_SECONDS,
        )?;
        in_range(
            "tokens.rotation_interval_hours",
            t.rotation_interval_hours,
            ROTATION_INTERVAL_HOURS,
        )?;
        if t.publish_ahead_seconds >= t.rotation_interval_hours.saturating_mul(3600) {
            return invalid(
                "tokens.publish_ahead_seconds",
                format!(
                    "{} s must be shorter than tokens.rotation_interval_hours ({} h)",
                    t.publish_ahead_seconds, t.rotation_interval_hours
                ),
            );
        }

        in_range("store.cache_mb", self.store.cache_mb, CACHE_MB)?;
        in_range("store.pool_size", self.store.pool_size, POOL_SIZE)?;
        if let Some(url) = &self.store.url
            && !crate::store::postgres::is_postgres_url(url)
        {
            return invalid(
                "store.url",
                "expected postgres://user@host:port/database (only PostgreSQL is supported)",
            );
        }
        if let Some(url) = &self.store.url
            && let Err(err) = crate::store::postgres_tls::split_url(url)
        {
            return invalid("store.url", err.to_string());
        }

        let a = &self.argon2;
        in_range(
            "argon2.parallelism",
            u64::from(a.parallelism),
            ARGON2_PARALLELISM,
        )?;
        in_range(
            "argon2.iterations",
            u64::from(a.iterations),
            ARGON2_ITERATIONS,
        )?;
        let min_memory = 8 * u64::from(a.parallelism);
        if u64::from(a.memory_kib) < min_memory {
            return invalid(
                "argon2.memory_kib",
                format!(
                    "{} must be at least 8 × argon2.parallelism ({min_memory})",
                    a.memory_kib
                ),
            );
        }
        in_range(
            "argon2.memory_kib",
            u64::from(a.memory_kib),
            ARGON2_MEMORY_KIB,
        )?;

        self.lockout.validate()?;

        let au = &self.audit;
        in_range(
            "audit.flush_timeout_ms",
            au.flush_timeout_ms,
            FLUSH_TIMEOUT_MS,
        )?;
        in_range(
            "audit.checkpoint_every_events",
            au.checkpoint_every_events,
            CHECKPOINT_EVERY_EVENTS,
        )?;
        in_range(
            "audit.checkpoint_every_seconds",
            au.checkpoint_every_seconds,
            CHECKPOINT_EVERY_SECONDS,
        )?;
        in_range("audit.retention_days", au.retention_days, RETENTION_DAYS)?;
        in_range(
            "sweeper.interval_seconds",
            self.sweeper.interval_seconds,
            SWEEP_INTERVAL_SECONDS,
        )?;
        self.ops.validate(&self.listen)?;
        self.limits.validate()?;
        Ok(())
    }

    /// The effective configuration as TOML (for `stint serve --print-config`), with the
    /// value of any key that looks secret (ending in `secret`, `password`, `passphrase`,
    /// `private_key`) replaced by `"***"`. Parses back into the same `Config` unless a
    /// value was redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut table = match toml::Table::try_from(self) {
            Ok(table) => table,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        redact(&mut table);
        if let Some(url) = &self.store.url
            && let Some(store) = table.get_mut("store").and_then(toml::Value::as_table_mut)
        {
            store.insert(
                "url".into(),
                toml::Value::String(crate::store::postgres::redact_url(url)),
            );
        }
        let mut out = String::from("# Effective stint configuration (secrets redacted).\n");
        if self.master_key_file.is_none() {
            out.push_str(&format!(
                "# master_key_file is unset: the master key is {}\n",
                self.master_key_path().display()
            ));
        }
        out.push('\n');
        out.push_str(&toml::to_string(&table).unwrap_or_else(|e| format!("# {e}\n")));
        out
    }
}

// Ranges of the numeric keys (inclusive). Each bounds what the daemon multiplies or
// allocates from the value, so no arithmetic on a valid config can overflow.
const CACHE_MB: RangeInclusive<u64> = 1..=1_048_576; // 1 TiB
const POOL_SIZE: RangeInclusive<u64> = 1..=256;
const CLOCK_SKEW_SECONDS: RangeInclusive<u64> = 0..=3_600;
const ROTATION_INTERVAL_HOURS: RangeInclusive<u64> = 1..=87_600; // 10 years
const ARGON2_MEMORY_KIB: RangeInclusive<u64> = 8..=Argon2Params::MAX.memory_kib as u64; // 4 GiB
const ARGON2_ITERATIONS: RangeInclusive<u64> = 1..=Argon2Params::MAX.iterations as u64;
const ARGON2_PARALLELISM: RangeInclusive<u64> = 1..=Argon2Params::MAX.parallelism as u64;
const FLUSH_TIMEOUT_MS: RangeInclusive<u64> = 1..=600_000;
const CHECKPOINT_EVERY_EVENTS: RangeInclusive<u64> = 1..=100_000_000;
const CHECKPOINT_EVERY_SECONDS: RangeInclusive<u64> = 1..=604_800;
const RETENTION_DAYS: RangeInclusive<u64> = 0..=36_500; // 100 years; 0 = forever
const SWEEP_INTERVAL_SECONDS: RangeInclusive<u64> = 1..=2_592_000; // 30 days
const HASH_THREADS: RangeInclusive<u64> = 0..=256; // 0 = one per core
const HASH_QUEUE: RangeInclusive<u64> = 1..=65_536;
const CONCURRENT_REQUESTS: RangeInclusive<u64> = 1..=1_000_000;
const REQUEST_TIMEOUT_MS: RangeInclusive<u64> = 1..=3_600_000; // 1 hour
const KEEPALIVE_INTERVAL_SECONDS: RangeInclusive<u64> = 0..=86_400; // 0 = no pings
const KEEPALIVE_TIMEOUT_SECONDS: RangeInclusive<u64> = 1..=3_600;
const HEADER_LIST_BYTES: RangeInclusive<u64> = 4_096..=16_777_216; // 16 MiB
const FRAME_BYTES: RangeInclusive<u64> = 16_384..=16_777_215; // HTTP/2's own bounds

/// `key`'s value must lie in `range`; the error names the key and the range.
fn in_range(key: &'static str, value: u64, range: RangeInclusive<u64>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        reason: format!(
            "{value} is out of range: must be {} to {}",
            range.start(),
            range.end()
        ),
    })
}

/// Whether `addr` is a loopback address (127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`).
fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `config` as a TOML table (`None` fields are absent).
fn toml_table(config: &Config) -> toml::Table {
    // Only non-UTF-8 paths fail to serialize; they come from flags, which are applied after
    // the last use of this function, and `validate` refuses them.
    toml::Table::try_from(config).unwrap_or_default()
}

/// Every key Stint knows, with a value of the right type (all optional keys set).
fn schema() -> toml::Table {
    let mut full = Config {
        master_key_file: Some(PathBuf::new()),
        ..Config::default()
    };
    full.tls.cert_file = Some(PathBuf::new());
    full.tls.key_file = Some(PathBuf::new());
    full.store.url = Some(String::new());
    full.tls.client_ca_file = Some(PathBuf::new());
    full.ops.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    toml_table(&full)
}

/// The first key of `table` (dotted, under `prefix`) that is not in `schema`.
fn unknown_key(table: &toml::Table, schema: &toml::Table, prefix: &str) -> Option<String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (schema.get(key), value) {
            (None, _) => return Some(path),
            (Some(toml::Value::Table(s)), toml::Value::Table(t)) => {
                if let Some(found) = unknown_key(t, s, &path) {
                    return Some(found);
                }
            }
            // A type mismatch is reported by the deserializer, with its position.
            _ => {}
        }
    }
    None
}

/// Every config key as (`STINT_…` variable, dotted key), in schema order.
fn env_keys(table: &toml::Table, section: Option<&str>, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        match (value, section) {
            (toml::Value::Table(inner), None) => env_keys(inner, Some(key), out),
            (_, None) => out.push((
                format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                key.clone(),
            )),
            (_, Some(s)) => out.push((
                format!(
                    "{ENV_PREFIX}{}__{}",
                    s.to_ascii_uppercase(),
                    key.to_ascii_uppercase()
                ),
                format!("{s}.{key}"),
            )),
        }
    }
}

/// The config key whose variable is nearest to `var` by edit distance, if it is near
/// enough to be a likely typo (at most a third of the name after `STINT_`, at least 1) or
/// starts with `var` (a section or a truncated name).
fn closest_env_var(var: &str, schema: &toml::Table) -> Option<(String, String)> {
    let rest = var.strip_prefix(ENV_PREFIX).unwrap_or(var);
    if rest.is_empty() {
        return None;
    }
    let mut keys = Vec::new();
    env_keys(schema, None, &mut keys);
    let budget = (rest.len() / 3).max(1);
    keys.into_iter()
        .map(|(name, key)| (edit_distance(var, &name), name, key))
        .filter(|(d, name, _)| *d <= budget || name.starts_with(var))
        // A key the variable is a prefix of (a truncated name) beats a merely similar one.
        .min_by_key(|(d, name, _)| (!name.starts_with(var), *d))
        .map(|(_, name, key)| (name, key))
}

/// Levenshtein distance over bytes (variable names are ASCII; anything else just differs).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, sections) = path.split_last()?;
    let mut table = table;
    for section in sections {
        table = table.get(section)?.as_table()?;
    }
    table.get(last)
}

/// Sets (or with `None` removes) the value at `path`, creating sections as needed.
fn set(table: &mut toml::Table, path: &[String], value: Option<toml::Value>) {
    let Some((last, sections)) = path.split_last() else {
        return;
    };
    let mut table = table;
    for section in sections {
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let Some(t) = entry.as_table_mut() else {
            return;
        };
        table = t;
    }
    match value {
        Some(v) => {
            table.insert(last.clone(), v);
        }
        None => {
            table.remove(last);
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// Replaces the value of every secret-looking key, at any depth, with [`REDACTED`].
fn redact(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        if is_secret_key(key) {
            *value = toml::Value::String(REDACTED.into());
        } else {
            redact_value(value);
        }
    }
}

fn redact_value(value: &mut toml::Value) {
    match value {
        toml::Value::Table(t) => redact(t),
        toml::Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(None, &env(pairs), &Overrides::default())
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:7420".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("stint-data"));
        assert_eq!(c.master_key_path(), PathBuf::from("stint-data/master.key"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.insecure && !c.dev && !c.tls.enabled());
        assert_eq!(c.store.cache_mb, 64);
        assert_eq!(
            (c.account.partition.as_str(), c.account.id.as_str()),
            ("stint", "000000000000")
        );
        assert_eq!(c.tokens.rotation_interval_hours, 720);
        assert_eq!(c.tokens.publish_ahead_seconds, 3600);
        assert_eq!(
            c.argon2,
            Argon2Config {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
        assert_eq!(c.lockout.max_delay_ms, 30_000);
        assert_eq!(c.audit.retention_days, 0);
        assert_eq!(c.sweeper.interval_seconds, 60);
        c.validate().unwrap();
    }

    #[test]
    fn proxy_protocol_from_is_a_comma_list_in_the_environment_and_checked() {
        let c = load_env(&[(
            "STINT_PROXY_PROTOCOL_FROM",
            " 10.0.0.5, 10.0.1.0/24,,fd00::/8 ",
        )])
        .unwrap();
        assert_eq!(
            c.proxy_protocol_from,
            ["10.0.0.5", "10.0.1.0/24", "fd00::/8"]
        );
        assert!(
            load_env(&[("STINT_PROXY_PROTOCOL_FROM", "")])
                .unwrap()
                .proxy_protocol_from
                .is_empty()
        );
        let err = load_env(&[("STINT_PROXY_PROTOCOL_FROM", "10.0.0.5,haproxy")]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key: "proxy_protocol_from", reason } if reason.contains("\"haproxy\"")),
            "{err}"
        );
        let f = file("proxy_protocol_from = [\"10.0.0.0/33\"]\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("proxy_protocol_from"), "{err}");
    }

    #[test]
    fn master_key_file_overrides_data_dir_default() {
        let c = load_env(&[("STINT_MASTER_KEY_FILE", "/etc/stint/master.key")]).unwrap();
        assert_eq!(c.master_key_path(), PathBuf::from("/etc/stint/master.key"));
        // An empty value unsets an optional key.
        let f = file("master_key_file = \"/k\"\n");
        let c = Config::load(
            Some(f.path()),
            &env(&[("STINT_MASTER_KEY_FILE", "")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.master_key_file, None);
    }

    #[test]
    fn layers_in_order() {
        let f = file(
            "data_dir = \"/from-file\"\nlog_format = \"json\"\n[argon2]\nmemory_kib = 1000\n[store]\ncache_mb = 7\n",
        );
        let e = env(&[
            ("STINT_DATA_DIR", "/from-env"),
            ("STINT_ARGON2__MEMORY_KIB", "2000"),
            ("PATH", "/usr/bin"),
        ]);
        let flags = Overrides {
            data_dir: Some("/from-flag".into()),
            ..Overrides::default()
        };

        let c = Config::load(Some(f.path()), &[], &Overrides::default()).unwrap();
        assert_eq!(
            c.data_dir,
            PathBuf::from("/from-file"),
            "file overrides default"
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.argon2.memory_kib, 1000);
        assert_eq!(
            c.argon2.iterations, 2,
            "unset keys in a section keep their default"
        );

        let c = Config::load(Some(f.path()), &e, &Overrides::default()).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-env"), "env overrides file");
        assert_eq!(c.argon2.memory_kib, 2000);
        assert_eq!(c.store.cache_mb, 7, "file value survives unrelated env");

        let c = Config::load(Some(f.path()), &e, &flags).unwrap();
        assert_eq!(
            c.data_dir,
            PathBuf::from("/from-flag"),
            "flag overrides env"
        );
        assert_eq!(c.argon2.memory_kib, 2000);
    }

    #[test]
    fn every_flag_applies() {
        let flags = Overrides {
            listen: Some("[::1]:9000".parse().unwrap()),
            data_dir: Some("/d".into()),
            master_key_file: Some("/k".into()),
            store_url: Some("postgres://flag@db/stint".into()),
            tls_cert: Some("/c.pem".into()),
            tls_key: Some("/k.pem".into()),
            tls_client_ca: Some("/ca.pem".into()),
            dev_tls: false,
            insecure: true,
            log_format: Some(LogFormat::Json),
            dev: true,
            ops_listen: Some("127.0.0.1:9001".parse().unwrap()),
            hash_threads: Some(3),
            max_concurrent_requests: Some(77),
        };
        let c = Config::load(
            None,
            &env(&[
                ("STINT_LOG_FORMAT", "text"),
                ("STINT_LISTEN", "127.0.0.1:1"),
            ]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.master_key_path(), PathBuf::from("/k"));
        assert_eq!(c.tls.cert_file, Some("/c.pem".into()));
        assert_eq!(c.tls.key_file, Some("/k.pem".into()));
        assert_eq!(c.tls.client_ca_file, Some("/ca.pem".into()));
        assert!(c.insecure && c.dev);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.store.url.as_deref(), Some("postgres://flag@db/stint"));
        assert_eq!(c.ops.listen, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(
            (c.limits.hash_threads, c.limits.max_concurrent_requests),
            (3, 77)
        );

        let dev_tls = Overrides {
            dev_tls: true,
            ..Overrides::default()
        };
        let c = Config::load(None, &[], &dev_tls).unwrap();
        assert!(c.tls.dev && c.tls.enabled());
    }

    #[test]
    fn store_url_from_env_is_checked_and_printed_without_its_password() {
        let c = Config::load(
            None,
            &env(&[
                ("STINT_STORE__URL", "postgres://stint:hunter2@db:5432/stint"),
                ("STINT_STORE__POOL_SIZE", "3"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.store.url.as_deref(),
            Some("postgres://stint:hunter2@db:5432/stint")
        );
        assert_eq!(c.store.pool_size, 3);
        // The test harness's variable is not a config key, and not an error either.
        Config::load(
            None,
            &env(&[("STINT_TEST_POSTGRES_URL", "postgres://x@y/z")]),
            &Overrides::default(),
        )
        .unwrap();
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("postgres://stint:***@db:5432/stint"),
            "{printed}"
        );
        for (url, key) in [
            ("/var/lib/stint", "store.url"),
            ("mysql://db/x", "store.url"),
        ] {
            let err = Config::load(
                None,
                &env(&[("STINT_STORE__URL", url)]),
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = Config::load(
            None,
            &env(&[("STINT_STORE__POOL_SIZE", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("store.pool_size"), "{err}");
    }

    #[test]
    fn every_env_var_applies() {
        let c = load_env(&[
            ("STINT_LISTEN", "0.0.0.0:1"),
            ("STINT_INSECURE", "1"),
            ("STINT_LOG_FORMAT", "json"),
            ("STINT_DEV", "false"),
            ("STINT_TLS__CERT_FILE", "/c"),
            ("STINT_TLS__KEY_FILE", "/k"),
            ("STINT_TLS__CLIENT_CA_FILE", "/ca"),
            ("STINT_STORE__CACHE_MB", "8"),
            ("STINT_ACCOUNT__PARTITION", "aws-cn"),
            ("STINT_ACCOUNT__ID", "123456789012"),
            ("STINT_TOKENS__ISSUER", "https://stint.example"),
            ("STINT_TOKENS__AUDIENCE", "apps"),
            ("STINT_TOKENS__CLOCK_SKEW_SECONDS", "5"),
            ("STINT_TOKENS__ROTATION_INTERVAL_HOURS", "24"),
            ("STINT_TOKENS__PUBLISH_AHEAD_SECONDS", "60"),
            ("STINT_ARGON2__ITERATIONS", "3"),
            ("STINT_ARGON2__PARALLELISM", "4"),
            ("STINT_LOCKOUT__MAX_FAILURES", "3"),
            ("STINT_LOCKOUT__BASE_DELAY_MS", "1"),
            ("STINT_LOCKOUT__MAX_DELAY_MS", "2"),
            ("STINT_LOCKOUT__LOCKOUT_SECONDS", "3"),
            ("STINT_LOCKOUT__RESET_AFTER_SECONDS", "4"),
            ("STINT_AUDIT__FLUSH_TIMEOUT_MS", "5"),
            ("STINT_AUDIT__CHECKPOINT_EVERY_EVENTS", "6"),
            ("STINT_AUDIT__CHECKPOINT_EVERY_SECONDS", "7"),
            ("STINT_AUDIT__RETENTION_DAYS", "8"),
            ("STINT_SWEEPER__INTERVAL_SECONDS", "9"),
            ("STINT_OPS__LISTEN", "0.0.0.0:7421"),
            ("STINT_LIMITS__HASH_THREADS", "1"),
            ("STINT_LIMITS__HASH_QUEUE", "2"),
            ("STINT_LIMITS__MAX_CONCURRENT_REQUESTS", "3"),
            ("STINT_LIMITS__MAX_CONCURRENT_REQUESTS_PER_CONNECTION", "4"),
            ("STINT_LIMITS__MAX_CONCURRENT_STREAMS", "5"),
            ("STINT_LIMITS__REQUEST_TIMEOUT_MS", "6"),
            ("STINT_LIMITS__KEEPALIVE_INTERVAL_SECONDS", "0"),
            ("STINT_LIMITS__KEEPALIVE_TIMEOUT_SECONDS", "8"),
            ("STINT_LIMITS__MAX_HEADER_LIST_BYTES", "9000"),
            ("STINT_LIMITS__MAX_FRAME_BYTES", "20000"),
        ])
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:1".parse().unwrap());
        assert!(c.insecure && !c.dev);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.tls.enabled());
        assert_eq!(c.tls.client_ca_file, Some("/ca".into()));
        assert_eq!(c.store.cache_mb, 8);
        assert_eq!(c.account.partition, "aws-cn");
        assert_eq!(c.account.id, "123456789012");
        assert_eq!(c.tokens.issuer, "https://stint.example");
        assert_eq!(c.tokens.audience, "apps");
        assert_eq!(
            (
                c.tokens.clock_skew_seconds,
                c.tokens.rotation_interval_hours,
                c.tokens.publish_ahead_seconds
            ),
            (5, 24, 60)
        );
        assert_eq!((c.argon2.iterations, c.argon2.parallelism), (3, 4));
        let l = &c.lockout;
        assert_eq!(
            (
                l.max_failures,
                l.base_delay_ms,
                l.max_delay_ms,
                l.lockout_seconds,
                l.reset_after_seconds
            ),
            (3, 1, 2, 3, 4)
        );
        let a = &c.audit;
        assert_eq!(
            (
                a.flush_timeout_ms,
                a.checkpoint_every_events,
                a.checkpoint_every_seconds,
                a.retention_days
            ),
            (5, 6, 7, 8)
        );
        assert_eq!(c.sweeper.interval_seconds, 9);
        assert_eq!(c.ops.listen, Some("0.0.0.0:7421".parse().unwrap()));
        let l = &c.limits;
        assert_eq!(
            (
                l.hash_threads,
                l.hash_queue,
                l.max_concurrent_requests,
                l.max_concurrent_requests_per_connection,
                l.max_concurrent_streams,
                l.request_timeout_ms,
            ),
            (1, 2, 3, 4, 5, 6)
        );
        assert_eq!(
            (
                l.keepalive_interval_seconds,
                l.keepalive_timeout_seconds,
                l.max_header_list_bytes,
                l.max_frame_bytes
            ),
            (0, 8, 9000, 20000)
        );
        assert_eq!(l.hash_threads(), 1);
    }

    #[test]
    fn ops_listener_is_off_by_default_and_checked() {
        assert_eq!(Config::default().ops.listen, None);
        assert!(
            !Config::default()
                .to_redacted_toml()
                .contains("listen = \"127.0.0.1:7421\"")
        );
        let on = load_env(&[("STINT_OPS__LISTEN", "127.0.0.1:7421")]).unwrap();
        assert!(
            on.to_redacted_toml()
                .contains("[ops]\nlisten = \"127.0.0.1:7421\""),
            "{}",
            on.to_redacted_toml()
        );
        // An empty value turns it off again.
        let off = load_env(&[
            ("STINT_OPS__LISTEN", "127.0.0.1:7421"),
            ("STINT_OPS__LISTEN", ""),
        ])
        .unwrap();
        assert_eq!(off.ops.listen, None);
        let err = load_env(&[("STINT_OPS__LISTEN", "localhost")]).unwrap_err();
        assert!(err.to_string().contains("STINT_OPS__LISTEN"), "{err}");
        let f = file("[ops]\nlisten = 7421\n");
        let err = Config::load(Some(f.path()), &[], &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        for (grpc, ops, ok) in [
            ("127.0.0.1:7420", "127.0.0.1:7420", false),
            ("127.0.0.1:7420", "0.0.0.0:7420", false),
            ("0.0.0.0:7420", "127.0.0.1:7420", false),
            ("127.0.0.1:7420", "127.0.0.2:7420", true),
            ("127.0.0.1:7420", "127.0.0.1:7421", true),
            ("127.0.0.1:0", "127.0.0.1:0", true),
        ] {
            let result = load_env(&[
                ("STINT_LISTEN", grpc),
                ("STINT_INSECURE", "1"),
                ("STINT_OPS__LISTEN", ops),
            ]);
            assert_eq!(result.is_ok(), ok, "{grpc} {ops}: {result:?}");
            if let Err(err) = result {
                assert!(err.to_string().contains("ops.listen"), "{err}");
            }
        }
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let cases = [
            ("colour = 1\n", "`colour`"),
            ("[argon2]\nmemory_kb = 1\n", "`argon2.memory_kb`"),
            ("[tls]\ncert = \"x\"\n", "`tls.cert`"),
            ("[metrics]\nport = 1\n", "`metrics`"),
        ];
        for (text, key) in cases {
            let f = file(text);
            let err = Config::load(Some(f.path()), &[], &Overrides::default()).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, ConfigError::UnknownKey { .. }),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(key), "{text:?}: {msg}");
            assert!(
                msg.contains(&f.path().display().to_string()),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn bad_file_value_names_file_and_key() {
        let cases = [
            ("listen = \"nowhere\"\n", "listen"),
            ("[argon2]\nmemory_kib = -1\n", "memory_kib"),
            ("log_format = \"xml\"\n", "log_format"),
            ("[store]\ncache_mb = \"big\"\n", "cache_mb"),
            ("tls = 3\n", "tls"),
            ("listen = \n", "listen"),
        ];
        for (text, key) in cases {
            let f = file(text);
            let err = Config::load(Some(f.path()), &[], &Overrides::default()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text:?}: {msg}");
            assert!(msg.contains(key), "{text:?}: {msg}");
            assert!(
                msg.contains(&f.path().display().to_string()),
                "{text:?}: {msg}"
            );
        }
        let missing = Path::new("/nonexistent/stint.toml");
        let err = Config::load(Some(missing), &[], &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/stint.toml"), "{err}");
    }

    /// An unknown `STINT_*` variable is a warning naming the closest key, not a refusal:
    /// the server starts with the rest of its configuration.
    #[test]
    fn unknown_env_var_is_a_warning_naming_the_closest_key() {
        let cases: [(&str, Option<(&str, &str)>); 8] = [
            ("STINT_LISTN", Some(("STINT_LISTEN", "listen"))),
            (
                "STINT_ARGON2_MEMORY_KIB",
                Some(("STINT_ARGON2__MEMORY_KIB", "argon2.memory_kib")),
            ),
            (
                "STINT_TLS__CERT",
                Some(("STINT_TLS__CERT_FILE", "tls.cert_file")),
            ),
            (
                "STINT_ARGON2__MEMORY_KIB__X",
                Some(("STINT_ARGON2__MEMORY_KIB", "argon2.memory_kib")),
            ),
            ("STINT_DATADIR", Some(("STINT_DATA_DIR", "data_dir"))),
            ("STINT_TLS", Some(("STINT_TLS__DEV", "tls.dev"))),
            ("STINT_", None),
            ("STINT_SOMETHING_ELSE_ENTIRELY", None),
        ];
        for (var, closest) in cases {
            let (config, warnings) = Config::load_with_warnings(
                None,
                &env(&[(var, "1"), ("STINT_STORE__CACHE_MB", "9")]),
                &Overrides::default(),
            )
            .unwrap_or_else(|e| panic!("{var} must not be refused: {e}"));
            assert_eq!(config.store.cache_mb, 9, "{var}: the rest still applies");
            assert_eq!(warnings.len(), 1, "{var}: {warnings:?}");
            assert_eq!(warnings[0].var, var);
            assert_eq!(
                warnings[0]
                    .closest
                    .as_ref()
                    .map(|(v, k)| (v.as_str(), k.as_str())),
                closest,
                "{var}"
            );
            let text = warnings[0].to_string();
            assert!(text.contains(var), "{text}");
            if let Some((_, key)) = closest {
                assert!(text.contains(key), "{text}");
            }
        }
    }

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "", 3),
            ("kitten", "sitting", 3),
            ("STINT_LISTN", "STINT_LISTEN", 1),
            ("same", "same", 0),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
            assert_eq!(edit_distance(b, a), d, "{b} {a}");
        }
    }

    /// Every `STINT_*` name the command line reads or prints (clap `env = "STINT_…"`,
    /// `STINT_HOME`, the `export` lines of `assume-role --output env`) is either a config
    /// key or in [`CLIENT_ENV_VARS`], so a shell that uses the client can start the server.
    #[test]
    fn every_stint_variable_of_the_cli_is_known_to_the_server() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli"),
            &mut files,
        );
        let schema = schema();
        let mut seen = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find(ENV_PREFIX) {
                let tail = &rest[at..];
                let len = tail
                    .bytes()
                    .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
                    .count();
                let name = tail[..len].trim_end_matches('_');
                rest = &tail[len.max(1)..];
                if name.len() <= ENV_PREFIX.len() {
                    continue;
                }
                seen += 1;
                let path: Vec<String> = name[ENV_PREFIX.len()..]
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect();
                let config_key = lookup(&schema, &path).is_some_and(|v| !v.is_table());
                assert!(
                    config_key || CLIENT_ENV_VARS.contains(&name),
                    "{name} (in {}) is neither a config key nor in CLIENT_ENV_VARS",
                    file.display()
                );
            }
        }
        assert!(seen >= 8, "the scan found the CLI's variables ({seen})");
    }

    #[test]
    fn bad_env_value_names_the_var() {
        let cases = [
            ("STINT_LISTEN", "localhost"),
            ("STINT_LISTEN", ""),
            ("STINT_INSECURE", "maybe"),
            ("STINT_LOG_FORMAT", "xml"),
            ("STINT_ARGON2__MEMORY_KIB", "lots"),
            ("STINT_ARGON2__MEMORY_KIB", "99999999999"),
            ("STINT_STORE__CACHE_MB", "-1"),
            ("STINT_AUDIT__RETENTION_DAYS", "1.5"),
        ];
        for (var, value) in cases {
            let err = load_env(&[(var, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::EnvValue { var: v, .. } if v == var),
                "{var}={value}: {err}"
            );
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn issuer_defaults_to_the_server_url() {
        let tls = TlsConfig {
            cert_file: Some("/c.pem".into()),
            key_file: Some("/k.pem".into()),
            ..TlsConfig::default()
        };
        let cases: &[(&str, bool, &str, &str)] = &[
            ("127.0.0.1:7420", false, "", "http://127.0.0.1:7420"),
            ("127.0.0.1:7420", true, "", "https://127.0.0.1:7420"),
            ("10.1.2.3:443", true, "", "https://10.1.2.3:443"),
            ("[::1]:9000", false, "", "http://[::1]:9000"),
            ("0.0.0.0:7420", true, "", "https://localhost:7420"),
            ("[::]:7420", true, "", "https://localhost:7420"),
            (
                "0.0.0.0:7420",
                true,
                "https://stint.example.com",
                "https://stint.example.com",
            ),
        ];
        for (listen, with_tls, explicit, want) in cases {
            let mut c = Config {
                listen: listen.parse().unwrap(),
                ..Config::default()
            };
            if *with_tls {
                c.tls = tls.clone();
            }
            c.tokens.issuer = explicit.to_string();
            assert_eq!(c.issuer(), *want, "{listen} tls={with_tls} {explicit:?}");
        }
    }

    #[test]
    fn listen_address_rules() {
        let tls = |c: &mut Config| {
            c.tls.cert_file = Some("/c".into());
            c.tls.key_file = Some("/k".into());
        };
        let insecure = |c: &mut Config| c.insecure = true;
        let dev = |c: &mut Config| c.dev = true;
        let none = |_: &mut Config| {};
        let dev_tls = |c: &mut Config| c.tls.dev = true;
        type Tweak<'a> = &'a dyn Fn(&mut Config);
        let cases: [(&str, Tweak, bool); 13] = [
            ("0.0.0.0:7420", &dev_tls, true),
            ("127.0.0.1:7420", &none, true),
            ("127.8.9.10:1", &none, true),
            ("[::1]:7420", &none, true),
            ("[::ffff:127.0.0.1]:7420", &none, true),
            ("127.0.0.1:0", &dev, true),
            ("0.0.0.0:7420", &none, false),
            ("[::]:7420", &none, false),
            ("10.0.0.1:7420", &none, false),
            ("0.0.0.0:7420", &insecure, true),
            ("0.0.0.0:7420", &tls, true),
            ("0.0.0.0:7420", &dev, false),
            ("[::1]:7420", &dev, true),
        ];
        for (listen, tweak, ok) in cases {
            let mut c = Config {
                listen: listen.parse().unwrap(),
                ..Config::default()
            };
            tweak(&mut c);
            let res = c.validate();
            assert_eq!(res.is_ok(), ok, "{listen}: {res:?}");
        }
        let err = Config {
            listen: "0.0.0.0:7420".parse().unwrap(),
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "listen address 0.0.0.0:7420 is not loopback: give --tls-cert and --tls-key, or --insecure"
        );
        // Through load: refused, then accepted with the flag.
        let e = env(&[("STINT_LISTEN", "0.0.0.0:7420")]);
        assert!(matches!(
            Config::load(None, &e, &Overrides::default()),
            Err(ConfigError::NotLoopback { .. })
        ));
        let flags = Overrides {
            insecure: true,
            ..Overrides::default()
        };
        assert!(Config::load(None, &e, &flags).unwrap().insecure);
    }

    #[test]
    fn validation_names_the_key() {
        type Tweak = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Tweak)> = vec![
            (
                "store.url",
                Box::new(|c| c.store.url = Some("postgres://u@db/x?sslmode=verify-ca".into())),
            ),
            (
                "proxy_protocol_from",
                Box::new(|c| c.proxy_protocol_from = vec!["10.0.0.0/8".into(), "lb".into()]),
            ),
            (
                "account.partition",
                Box::new(|c| c.account.partition = "Stint".into()),
            ),
            (
                "account.partition",
                Box::new(|c| c.account.partition = String::new()),
            ),
            (
                "account.partition",
                Box::new(|c| c.account.partition = "1abc".into()),
            ),
            (
                "account.partition",
                Box::new(|c| c.account.partition = "a_b".into()),
            ),
            (
                "account.partition",
                Box::new(|c| c.account.partition = format!("a{}", "b".repeat(32))),
            ),
            (
                "account.id",
                Box::new(|c| c.account.id = "12345678901".into()),
            ),
            (
                "account.id",
                Box::new(|c| c.account.id = "1234567890123".into()),
            ),
            (
                "account.id",
                Box::new(|c| c.account.id = "12345678901a".into()),
            ),
            ("tls", Box::new(|c| c.tls.cert_file = Some("/c".into()))),
            ("tls", Box::new(|c| c.tls.key_file = Some("/k".into()))),
            (
                "tls.dev",
                Box::new(|c| {
                    c.tls.dev = true;
                    c.tls.cert_file = Some("/c".into());
                    c.tls.key_file = Some("/k".into());
                }),
            ),
            (
                "tls.client_ca_file",
                Box::new(|c| c.tls.client_ca_file = Some("/ca".into())),
            ),
            ("argon2.memory_kib", Box::new(|c| c.argon2.memory_kib = 7)),
            (
                "argon2.memory_kib",
                Box::new(|c| {
                    c.argon2.parallelism = 4;
                    c.argon2.memory_kib = 31
                }),
            ),
            ("argon2.iterations", Box::new(|c| c.argon2.iterations = 0)),
            ("argon2.parallelism", Box::new(|c| c.argon2.parallelism = 0)),
            (
                "tokens.issuer",
                Box::new(|c| c.tokens.issuer = "https://a b".into()),
            ),
            ("tokens.audience", Box::new(|c| c.tokens.audience.clear())),
            (
                "tokens.rotation_interval_hours",
                Box::new(|c| c.tokens.rotation_interval_hours = 0),
            ),
            (
                "tokens.publish_ahead_seconds",
                Box::new(|c| c.tokens.rotation_interval_hours = 1),
            ),
            (
                "lockout.max_failures",
                Box::new(|c| c.lockout.max_failures = 0),
            ),
            (
                "lockout.base_delay_ms",
                Box::new(|c| c.lockout.base_delay_ms = 30_001),
            ),
            (
                "lockout.lockout_seconds",
                Box::new(|c| c.lockout.lockout_seconds = u64::MAX),
            ),
            (
                "lockout.reset_after_seconds",
                Box::new(|c| c.lockout.reset_after_seconds = 0),
            ),
            (
                "lockout.address_budget",
                Box::new(|c| c.lockout.address_budget = 0),
            ),
            (
                "lockout.address_window_seconds",
                Box::new(|c| c.lockout.address_window_seconds = 86_401),
            ),
            (
                "lockout.address_max_delay_ms",
                Box::new(|c| c.lockout.address_max_delay_ms = 60_001),
            ),
            (
                "lockout.known_addresses",
                Box::new(|c| c.lockout.known_addresses = 257),
            ),
            (
                "lockout.known_address_days",
                Box::new(|c| c.lockout.known_address_days = 0),
            ),
            (
                "audit.checkpoint_every_events",
                Box::new(|c| c.audit.checkpoint_every_events = 0),
            ),
            (
                "sweeper.interval_seconds",
                Box::new(|c| c.sweeper.interval_seconds = 0),
            ),
            ("data_dir", Box::new(|c| c.data_dir = PathBuf::new())),
        ];
        for (key, tweak) in cases {
            let mut c = Config::default();
            tweak(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{key}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
        // Boundaries that are fine.
        let mut c = Config::default();
        c.account.partition = format!("a{}", "-".repeat(31));
        c.account.id = "999999999999".into();
        c.argon2 = Argon2Config {
            memory_kib: 32,
            iterations: 1,
            parallelism: 4,
        };
        c.lockout.base_delay_ms = c.lockout.max_delay_ms;
        c.validate().unwrap();
    }

    /// Issue 9 #16: every numeric key is bounded, so the daemon's arithmetic on a valid
    /// config (hours × 3600, days × 86400, MiB × 2^20) cannot overflow — a huge retention
    /// once wrapped negative and pruned the whole log.
    #[test]
    fn extreme_numeric_values_are_refused_with_the_key_and_range() {
        type Tweak = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Tweak)> = vec![
            ("store.cache_mb", Box::new(|c| c.store.cache_mb = u64::MAX)),
            ("store.cache_mb", Box::new(|c| c.store.cache_mb = 0)),
            (
                "tokens.clock_skew_seconds",
                Box::new(|c| c.tokens.clock_skew_seconds = u64::MAX),
            ),
            (
                "tokens.rotation_interval_hours",
                Box::new(|c| c.tokens.rotation_interval_hours = u64::MAX),
            ),
            (
                "tokens.publish_ahead_seconds",
                Box::new(|c| c.tokens.publish_ahead_seconds = u64::MAX),
            ),
            (
                "argon2.memory_kib",
                Box::new(|c| c.argon2.memory_kib = u32::MAX),
            ),
            (
                "argon2.iterations",
                Box::new(|c| c.argon2.iterations = u32::MAX),
            ),
            (
                "argon2.parallelism",
                Box::new(|c| c.argon2.parallelism = u32::MAX),
            ),
            (
                "audit.flush_timeout_ms",
                Box::new(|c| c.audit.flush_timeout_ms = u64::MAX),
            ),
            (
                "audit.checkpoint_every_events",
                Box::new(|c| c.audit.checkpoint_every_events = u64::MAX),
            ),
            (
                "audit.checkpoint_every_seconds",
                Box::new(|c| c.audit.checkpoint_every_seconds = u64::MAX),
            ),
            (
                "audit.retention_days",
                Box::new(|c| c.audit.retention_days = u64::MAX),
            ),
            (
                "audit.retention_days",
                Box::new(|c| c.audit.retention_days = 36_501),
            ),
            (
                "sweeper.interval_seconds",
                Box::new(|c| c.sweeper.interval_seconds = u64::MAX),
            ),
            (
                "limits.hash_threads",
                Box::new(|c| c.limits.hash_threads = 257),
            ),
            ("limits.hash_queue", Box::new(|c| c.limits.hash_queue = 0)),
            (
                "limits.max_concurrent_requests",
                Box::new(|c| c.limits.max_concurrent_requests = 0),
            ),
            (
                "limits.max_concurrent_requests_per_connection",
                Box::new(|c| c.limits.max_concurrent_requests_per_connection = u64::MAX),
            ),
            (
                "limits.max_concurrent_streams",
                Box::new(|c| c.limits.max_concurrent_streams = u64::MAX),
            ),
            (
                "limits.request_timeout_ms",
                Box::new(|c| c.limits.request_timeout_ms = 0),
            ),
            (
                "limits.keepalive_interval_seconds",
                Box::new(|c| c.limits.keepalive_interval_seconds = u64::MAX),
            ),
            (
                "limits.keepalive_timeout_seconds",
                Box::new(|c| c.limits.keepalive_timeout_seconds = 0),
            ),
            (
                "limits.max_header_list_bytes",
                Box::new(|c| c.limits.max_header_list_bytes = 100),
            ),
            (
                "limits.max_frame_bytes",
                Box::new(|c| c.limits.max_frame_bytes = 1 << 24),
            ),
        ];
        for (key, tweak) in cases {
            let mut c = Config::default();
            tweak(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{key}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
        // The largest values allowed, together, still leave the daemon's arithmetic in range.
        let mut c = Config::default();
        c.store.cache_mb = *CACHE_MB.end();
        c.tokens.clock_skew_seconds = *CLOCK_SKEW_SECONDS.end();
        c.tokens.rotation_interval_hours = *ROTATION_INTERVAL_HOURS.end();
        c.tokens.publish_ahead_seconds = c.tokens.rotation_interval_hours * 3600 - 1;
        c.audit.retention_days = *RETENTION_DAYS.end();
        c.audit.flush_timeout_ms = *FLUSH_TIMEOUT_MS.end();
        c.sweeper.interval_seconds = *SWEEP_INTERVAL_SECONDS.end();
        c.validate().unwrap();
        assert!(c.store.cache_mb.checked_mul(1 << 20).is_some());
        let schedule = crate::daemon::Schedule::from_config(&c).unwrap();
        assert_eq!(schedule.retention.as_secs(), 36_500 * 86_400);
        let now_ms = crate::core::time::unix_ms(crate::core::time::from_unix_secs(1_700_000_000));
        let cutoff = crate::core::time::checked_sub_ms(now_ms, schedule.retention);
        assert!(
            cutoff.is_some_and(|ms| ms < 0),
            "before the epoch: nothing is pruned"
        );
    }

    #[test]
    fn print_config_round_trips() {
        let mut full = Config {
            master_key_file: Some("/etc/stint/master.key".into()),
            log_format: LogFormat::Json,
            listen: "[::]:443".parse().unwrap(),
            ..Config::default()
        };
        full.tls.cert_file = Some("/c.pem".into());
        full.tls.key_file = Some("/k.pem".into());
        full.tls.client_ca_file = Some("/ca.pem".into());
        full.argon2.memory_kib = 65536;
        for config in [Config::default(), full] {
            let text = config.to_redacted_toml();
            let back: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, config, "{text}");
            assert!(
                !text.contains(REDACTED),
                "nothing in Config is secret today: {text}"
            );
        }
        let text = Config::default().to_redacted_toml();
        assert!(text.contains("stint-data/master.key"), "{text}");
        assert!(text.contains("log_format = \"text\""), "{text}");
    }

    #[test]
    fn secret_looking_keys_are_redacted() {
        let mut table: toml::Table = toml::from_str(
            r#"
            admin_password = "hunter2"
            client_secret = "s3cr3t"
            key_file = "/k.pem"
            [nested]
            db_passphrase = "p"
            SIGNING_PRIVATE_KEY = "k"
            issuer = "stint"
            [[list]]
            api_secret = "x"
            "#,
        )
        .unwrap();
        redact(&mut table);
        let text = toml::to_string(&table).unwrap();
        for secret in ["hunter2", "s3cr3t", "\"p\"", "\"k\"", "\"x\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(table["admin_password"].as_str(), Some(REDACTED));
        assert_eq!(
            table["nested"]["SIGNING_PRIVATE_KEY"].as_str(),
            Some(REDACTED)
        );
        assert_eq!(table["list"][0]["api_secret"].as_str(), Some(REDACTED));
        assert_eq!(table["key_file"].as_str(), Some("/k.pem"));
        assert_eq!(table["nested"]["issuer"].as_str(), Some("stint"));
    }

    #[test]
    fn example_parses_and_matches_defaults() {
        let c = Config::from_toml_str(example_toml(), Path::new("deploy/stint.toml")).unwrap();
        c.validate().unwrap();
        // The one documented difference from the built-in defaults.
        let expected = Config {
            data_dir: "/var/lib/stint".into(),
            ..Config::default()
        };
        assert_eq!(c, expected);
        // Every key, including the optional ones, appears in the example (possibly
        // commented out), so the example stays complete as keys are added.
        let mut missing = Vec::new();
        collect_keys(&schema(), "", &mut |section, key| {
            let line = format!("{key} = ");
            let header = format!("\n[{section}]\n");
            let in_section = if section.is_empty() {
                example_toml()
                    .split("\n[")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            } else {
                example_toml()
                    .split_once(&header)
                    .map(|(_, rest)| rest.split("\n[").next().unwrap_or_default().to_owned())
                    .unwrap_or_default()
            };
            if !in_section.contains(&line) {
                missing.push(format!("{section}.{key}"));
            }
        });
        assert!(missing.is_empty(), "not in deploy/stint.toml: {missing:?}");
    }

    fn collect_keys(table: &toml::Table, section: &str, f: &mut dyn FnMut(&str, &str)) {
        for (key, value) in table {
            match value {
                toml::Value::Table(t) => collect_keys(t, key, f),
                _ => f(section, key),
            }
        }
    }

    #[test]
    fn schema_lists_every_key() {
        // 7 top-level keys plus the keys of the 10 sections (… sweeper, ops, limits).
        let s = schema();
        let mut n = 0;
        collect_keys(&s, "", &mut |_, _| n += 1);
        assert_eq!(n, 7 + 4 + 3 + 2 + 5 + 3 + 10 + 4 + 1 + 1 + 10);
        assert!(lookup(&s, &["tls".into(), "cert_file".into()]).is_some());
        assert!(lookup(&s, &["master_key_file".into()]).is_some());
    }
}
