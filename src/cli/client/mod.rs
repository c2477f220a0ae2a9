//! The client side of `stint`: commands that talk to a running server over gRPC.
//!
//! - [`session`]: the credentials cache (`$STINT_HOME/credentials.json`, 0600).
//! - [`login`]: `login`, `assume-role`, `whoami`, `logout` (typed Sts/Tokens clients).
//! - [`mfa`]: `mfa enroll` (QR in the terminal, two consecutive codes).
//! - [`admin`]: `iam`, `keys`, `audit list|watch|chain-verify`, `revoke`, `authorize`,
//!   `call` — all through the one generic JSON ↔ gRPC mechanism in [`call`].
//! - [`duration`]: `900`, `15m`, `2h`, `1h30m`.
//!
//! Token selection, for every authenticated command: `--token` / `STINT_TOKEN` beats the
//! cached profile (`--profile` / `STINT_PROFILE`, default `default`); a cached credential
//! past its expiration is refused here with "expired at …; run stint login" rather than
//! sent. The endpoint is `--endpoint` / `STINT_ENDPOINT`, else the profile's, else
//! `http://127.0.0.1:7420`.

pub mod admin;
pub mod apply;
pub mod call;
pub mod duration;
pub mod exec;
pub mod login;
pub mod mfa;
pub mod session;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use time::OffsetDateTime;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::cli::CliError;
use crate::core::secret::SecretString;
use session::{CachedSession, CredentialsFile};

/// Where `stint` looks for a server when neither a flag, the environment nor the profile
/// names one.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7420";

/// Which server, and which cached profile.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnFlags {
    /// Server URL, http:// or https:// (default: the profile's, else http://127.0.0.1:7420).
    #[arg(long, env = "STINT_ENDPOINT")]
    pub endpoint: Option<String>,
    /// PEM CA certificate that signed the server's TLS certificate, trusted in addition to
    /// the system's CAs (https:// only).
    #[arg(long, env = "STINT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (mTLS).
    #[arg(
        long = "tls-cert",
        value_name = "FILE",
        env = "STINT_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long = "tls-key",
        value_name = "FILE",
        env = "STINT_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Credentials profile in the cache.
    #[arg(long, env = "STINT_PROFILE", default_value = "default")]
    pub profile: String,
}

/// [`ConnFlags`] plus an explicit token.
#[derive(Args, Debug, Clone, Default)]
pub struct AuthFlags {
    #[command(flatten)]
    pub conn: ConnFlags,
    /// Session token to use instead of the cached profile's.
    #[arg(long, env = "STINT_TOKEN", hide_env_values = true, value_parser = secret_arg)]
    pub token: Option<SecretString>,
}

impl AuthFlags {
    /// `--token` / `STINT_TOKEN`, for [`ClientContext::token`].
    pub fn token_flag(&self) -> Option<&str> {
        self.token.as_ref().map(SecretString::expose)
    }
}

/// Parses a secret command-line value (a token, a key) straight into a [`SecretString`]:
/// redacted in the flags' `Debug`, zeroized when the command ends.
pub fn secret_arg(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::new(value.to_owned()))
}

/// The few environment facts the client reads, gathered in one place so tests pass
/// their own instead of mutating the process environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `$STINT_HOME`.
    pub stint_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl Env {
    /// Reads `STINT_HOME` and `HOME`.
    pub fn from_process() -> Self {
        Env {
            stint_home: std::env::var_os("STINT_HOME").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// An opened credentials cache and the profile a command works on.
pub struct Context {
    pub creds: CredentialsFile,
    pub profile: String,
    endpoint_flag: Option<String>,
    /// Trust and client identity for TLS (`tls.ca_cert`: the `--ca-cert` flag).
    pub tls: ClientTls,
}

impl Context {
    /// Opens the cache named by `env`.
    pub fn open(conn: &ConnFlags, env: &Env) -> Result<Self, CliError> {
        if conn.profile.trim().is_empty() {
            return Err(CliError::new("--profile must not be empty"));
        }
        let path = session::credentials_path(env.stint_home.as_deref(), env.home.as_deref())?;
        // Flags and environment first, then the profile's settings (`stint configure`).
        let settings = session::ProfilesFile::beside(&path)?.get(&conn.profile);
        let endpoint_flag = conn.endpoint.clone().filter(|e| !e.trim().is_empty());
        let profile_ca = settings.ca_cert.filter(|_| {
            endpoint_flag
                .as_ref()
                .is_none_or(|e| e.starts_with("https://"))
        });
        Ok(Context {
            creds: CredentialsFile::load(&path)?,
            profile: conn.profile.clone(),
            endpoint_flag: endpoint_flag.or(settings.endpoint),
            tls: ClientTls {
                ca_cert: conn.ca_cert.clone().or(profile_ca),
                client_cert: conn.client_cert.clone(),
                client_key: conn.client_key.clone(),
            },
        })
    }

    /// The cached credential of the current profile.
    pub fn cached(&self) -> Result<Option<CachedSession>, CliError> {
        self.creds.get(&self.profile)
    }

    /// Flag / env, else the profile's endpoint, else the default.
    pub fn endpoint(&self) -> Result<String, CliError> {
        if let Some(e) = &self.endpoint_flag {
            return Ok(e.clone());
        }
        Ok(self
            .cached()?
            .map(|c| c.endpoint)
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()))
    }

    /// The bearer token for this command (see [`select_token`]).
    pub fn token(&self, flag: Option<&str>) -> Result<SecretString, CliError> {
        select_token(flag, self.cached()?.as_ref(), &self.profile, now())
    }

    /// A connected channel to [`endpoint`](Self::endpoint).
    pub async fn channel(&self) -> Result<Channel, CliError> {
        connect_with(&self.endpoint()?, &self.tls).await
    }

    /// A connected channel to a given endpoint (with this command's CA and client
    /// certificate).
    pub async fn channel_to(&self, endpoint: &str) -> Result<Channel, CliError> {
        connect_with(endpoint, &self.tls).await
    }
}

/// `--token` / `STINT_TOKEN` if given (and not empty), else the cached profile's token
/// if it has not expired at `now`.
pub fn select_token(
    flag: Option<&str>,
    cached: Option<&CachedSession>,
    profile: &str,
    now: OffsetDateTime,
) -> Result<SecretString, CliError> {
    if let Some(token) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(SecretString::new(token.to_string()));
    }
    let cached = cached.ok_or_else(|| {
        CliError::new(format!(
            "not logged in (no cached session for profile '{profile}'); run `stint login` or set STINT_TOKEN"
        ))
    })?;
    cached.ensure_fresh(profile, now)?;
    Ok(cached.session_token.clone())
}

/// The wall clock, read once per use at the CLI edge.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Wraps `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &SecretString) -> Result<Request<T>, CliError> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {}", token.expose()).parse().map_err(|_| {
        CliError::new("the session token contains characters not allowed in a header")
    })?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A gRPC status as a message for a person.
pub fn status_error(status: Status) -> CliError {
    let what = match status.code() {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "failed precondition",
        Code::ResourceExhausted => "too many attempts",
        Code::Unavailable => "server unavailable",
        Code::DeadlineExceeded => "timed out",
        Code::Unimplemented => "not implemented by this server",
        Code::Internal => "server error",
        other => return CliError::new(format!("{other:?}: {}", status.message())),
    };
    let mut message = format!("{what}: {}", status.message());
    if status.code() == Code::Unauthenticated && status.message().contains("expired") {
        message.push_str("; run `stint login`");
    }
    CliError::new(message)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// How a client trusts the server and, for mTLS, identifies itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// A CA trusted in addition to the system's (`--ca-cert` / `STINT_CA_CERT`).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (`--tls-cert`/`--tls-key`, `STINT_CLIENT_CERT`/`_KEY`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Connects to `endpoint`; `https://` uses TLS, trusting the system's CAs and `ca_cert`.
pub async fn connect(endpoint: &str, ca_cert: Option<&Path>) -> Result<Channel, CliError> {
    let tls = ClientTls {
        ca_cert: ca_cert.map(Path::to_path_buf),
        ..ClientTls::default()
    };
    connect_with(endpoint, &tls).await
}

/// Connects to `endpoint` with the trust and client identity of `tls`.
pub async fn connect_with(endpoint: &str, tls: &ClientTls) -> Result<Channel, CliError> {
    let secure = if let Some(rest) = endpoint.strip_prefix("https://") {
        !rest.is_empty()
    } else if endpoint.starts_with("http://") {
        false
    } else {
        return Err(CliError::new(format!(
            "endpoint '{endpoint}' must start with http:// or https://"
        )));
    };
    let mut ep = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| CliError::new(format!("bad endpoint '{endpoint}': {}", error_chain(&e))))?
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("stint-cli/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| CliError::new(e.to_string()))?;
    if secure {
        ep = ep
            .tls_config(client_tls_config(tls)?)
            .map_err(|e| CliError::new(format!("TLS setup failed: {}", error_chain(&e))))?;
    } else if tls.ca_cert.is_some() || tls.client_cert.is_some() {
        return Err(CliError::new(format!(
            "--ca-cert/--tls-cert were given but '{endpoint}' is not https://"
        )));
    }
    ep.connect().await.map_err(|e| {
        let text = error_chain(&e);
        CliError::new(format!(
            "cannot connect to {endpoint}: {text}{}",
            tls_hint(&text, tls)
        ))
    })
}

/// The system's CAs plus `tls.ca_cert`, and the client identity if any.
pub fn client_tls_config(tls: &ClientTls) -> Result<ClientTlsConfig, CliError> {
    let tls_error = |e: crate::rpc::tls::TlsError| CliError::new(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped; an empty store is refused below.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = &tls.ca_cert {
        let pem = crate::rpc::tls::read_pem(path).map_err(tls_error)?;
        let extra = crate::rpc::tls::root_store(&pem)
            .map_err(|e| CliError::new(format!("--ca-cert {}: {e}", path.display())))?;
        roots.roots.extend(extra.roots);
    }
    if roots.is_empty() {
        return Err(CliError::new(
            "no trusted CA: this system has no CA certificates; give --ca-cert FILE (or STINT_CA_CERT)",
        ));
    }
    let mut config = ClientTlsConfig::new().trust_anchors(roots.roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = crate::rpc::tls::read_pem(cert).map_err(tls_error)?;
            let key_pem = crate::rpc::tls::read_pem(key).map_err(tls_error)?;
            crate::rpc::tls::certificates(&cert_pem)
                .map_err(|e| CliError::new(format!("--tls-cert {}: {e}", cert.display())))?;
            crate::rpc::tls::private_key(&key_pem)
                .map_err(|e| CliError::new(format!("--tls-key {}: {e}", key.display())))?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        _ => {
            return Err(CliError::new(
                "give both --tls-cert and --tls-key (STINT_CLIENT_CERT and STINT_CLIENT_KEY), or neither",
            ));
        }
    }
    Ok(config)
}

/// What to do about a TLS failure, from its text.
fn tls_hint(error: &str, tls: &ClientTls) -> &'static str {
    if error.contains("UnknownIssuer") || error.contains("invalid peer certificate") {
        if tls.ca_cert.is_none() {
            " (the server's certificate is not signed by a CA this system trusts: give --ca-cert FILE or STINT_CA_CERT, e.g. the ca.pem that `stint serve --dev-tls` prints)"
        } else {
            " (the server's certificate is not signed by the --ca-cert CA, nor by a system CA)"
        }
    } else if error.contains("CertificateRequired") || error.contains("certificate required") {
        " (the server requires a client certificate: give --tls-cert and --tls-key)"
    } else {
        ""
    }
}

/// Writes `text` and a newline to standard output. A closed pipe (`stint … | head`) is
/// not an error and does not panic as `println!` would.
pub fn say(text: impl std::fmt::Display) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::new(format!("cannot write output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Reads a secret line from the terminal without echo; when standard input is not a
/// terminal (a script, a test), one line from standard input, the prompt on stderr.
pub fn prompt_secret(prompt: &str) -> Result<SecretString, CliError> {
    use std::io::{IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = zeroize::Zeroizing::new(String::new());
        return match std::io::stdin().read_line(&mut line) {
            Ok(0) => Err(CliError::new(format!(
                "no answer on standard input to: {prompt}"
            ))),
            Ok(_) => Ok(SecretString::new(
                line.trim_end_matches(['\r', '\n']).to_string(),
            )),
            Err(e) => Err(CliError::new(format!("cannot read standard input: {e}"))),
        };
    }
    rpassword::prompt_password(prompt)
        .map(|s| SecretString::new(s.trim_end_matches(['\r', '\n']).to_string()))
        .map_err(|e| CliError::new(format!("cannot prompt on the terminal: {e}")))
}

/// `k=v` for `--tag` and `--context`.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{text}' is not key=value")),
    }
}

/// Parses an RFC 3339 time flag.
pub fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("'{text}' is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"))
}

/// A protobuf timestamp as a time.
pub fn from_timestamp(ts: Option<&prost_types::Timestamp>) -> Option<OffsetDateTime> {
    let ts = ts?;
    OffsetDateTime::from_unix_timestamp(ts.seconds)
        .ok()
        .map(|t| t + time::Duration::nanoseconds(i64::from(ts.nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use session::Kind;

    fn cached(exp: i64) -> CachedSession {
        CachedSession {
            endpoint: "http://h:1".into(),
            access_key_id: "ASIA1".into(),
            session_token: SecretString::new("cached-token".into()),
            expiration: OffsetDateTime::from_unix_timestamp(exp).unwrap(),
            kind: Kind::Session,
        }
    }

    #[test]
    fn token_selection() {
        let now = OffsetDateTime::from_unix_timestamp(100).unwrap();
        let fresh = cached(200);
        let stale = cached(50);
        let t = select_token(Some("flag-token"), Some(&stale), "p", now).unwrap();
        assert_eq!(t.expose(), "flag-token");
        let t = select_token(Some(""), Some(&fresh), "p", now).unwrap();
        assert_eq!(t.expose(), "cached-token");
        let err = select_token(None, Some(&stale), "p", now)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expired at 1970-01-01T00:00:50Z; run `stint login`"),
            "{err}"
        );
        let err = select_token(None, None, "ops", now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("profile 'ops'"), "{err}");
    }

    #[test]
    fn key_values_and_times() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        assert!(parse_key_value("=v").is_err());
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_rfc3339("2026-01-31T12:00:00Z").is_ok());
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn bearer_header() {
        let r = bearer((), &SecretString::new("abc.def.ghi".into())).unwrap();
        assert_eq!(
            r.metadata().get("authorization").unwrap(),
            "Bearer abc.def.ghi"
        );
        assert!(bearer((), &SecretString::new("bad\ntoken".into())).is_err());
    }

    /// Smoke test: the whole client command surface parses, starting nothing.
    #[test]
    fn smoke_command_lines_parse() {
        let lines: &[&[&str]] = &[
            &[
                "stint",
                "login",
                "--user",
                "bob",
                "--password-stdin",
                "--code",
                "123456",
                "--duration",
                "2h",
            ],
            &[
                "stint",
                "login",
                "--access-key-id",
                "AKIA1",
                "--secret-file",
                "/k",
            ],
            &[
                "stint",
                "assume-role",
                "--role-arn",
                "arn:stint:iam::1:role/r",
                "--duration",
                "15m",
                "--tag",
                "a=b",
                "--tag",
                "c=d",
                "--output",
                "env",
                "--no-cache",
            ],
            &["stint", "whoami", "--profile", "ops", "--output", "json"],
            &["stint", "logout"],
            &["stint", "iam", "CreateUser", r#"{"user_name":"bob"}"#],
            &["stint", "iam", "--list"],
            &["stint", "keys", "list"],
            &["stint", "keys", "rotate"],
            &["stint", "keys", "history", "--max", "5"],
            &[
                "stint",
                "audit",
                "list",
                "--principal",
                "arn:x",
                "--since",
                "2026-01-01T00:00:00Z",
                "--max",
                "3",
            ],
            &["stint", "audit", "watch", "--after-seq", "9"],
            &["stint", "audit", "chain-verify"],
            &["stint", "audit", "verify", "--data-dir", "/d"],
            &["stint", "revoke", "--session-id", "ASIA1"],
            &[
                "stint",
                "revoke",
                "--role-arn",
                "arn:r",
                "--before",
                "2026-01-01T00:00:00Z",
            ],
            &[
                "stint",
                "authorize",
                "--action",
                "s3:GetObject",
                "--resource",
                "arn:aws:s3:::b/k",
                "--context",
                "aws:SourceIp=10.0.0.1",
            ],
            &["stint", "call", "Tokens/GetJwks"],
            &["stint", "mfa", "enroll", "--user", "bob"],
            &[
                "stint",
                "whoami",
                "--endpoint",
                "https://h:1",
                "--ca-cert",
                "/ca.pem",
                "--tls-cert",
                "/c.pem",
                "--tls-key",
                "/k.pem",
            ],
            &[
                "stint",
                "serve",
                "--dev",
                "--dev-tls",
                "--tls-san",
                "stint.lan",
            ],
            &["stint", "serve", "--tls-client-ca", "/ca.pem"],
            &["stint", "completions", "zsh"],
            &["stint", "man"],
        ];
        for line in lines {
            if let Err(e) = crate::cli::Cli::try_parse_from(*line) {
                panic!("{line:?}: {e}");
            }
        }
        let bad: &[&[&str]] = &[
            &[
                "stint",
                "assume-role",
                "--role-arn",
                "r",
                "--duration",
                "2x",
            ],
            &["stint", "revoke"],
            &["stint", "revoke", "--session-id", "a", "--role-arn", "r"],
            &["stint", "login", "--duration", "0"],
            // A client certificate needs its key, and the other way round.
            &["stint", "whoami", "--tls-cert", "/c.pem"],
            &["stint", "whoami", "--tls-key", "/k.pem"],
            &[
                "stint",
                "serve",
                "--dev-tls",
                "--tls-cert",
                "/c",
                "--tls-key",
                "/k",
            ],
            &["stint", "completions", "powershell"],
        ];
        for line in bad {
            assert!(
                crate::cli::Cli::try_parse_from(*line).is_err(),
                "{line:?} should fail"
            );
        }
    }
}
