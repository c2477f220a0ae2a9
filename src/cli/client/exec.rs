//! `stint exec` and `stint configure`: run a command with a role's credentials, kept fresh.
//!
//! `stint configure --profile deploy --role-arn … --source-profile default` stores how a
//! profile gets credentials (like `aws configure`); `stint exec --profile deploy -- CMD`
//! then assumes the role with the source profile's cached `stint login` session and runs
//! CMD with the credentials in its environment:
//!
//! | variable | value |
//! |---|---|
//! | `STINT_SESSION_TOKEN` (and `STINT_TOKEN` for nested `stint` commands, unless `--audience`) | the bearer token |
//! | `STINT_ACCESS_KEY_ID` | the `ASIA…` session id |
//! | `STINT_EXPIRATION` | RFC 3339 expiry |
//! | `STINT_ENDPOINT` | the server URL |
//! | `STINT_CREDENTIALS_FILE` | a JSON file holding the same four, always current |
//! | `STINT_CA_CERT` | the server's CA, when the profile has one |
//!
//! Refresh, for a child that outlives its credentials: one mechanism, a file and a signal.
//! Before expiry ([`next_refresh`]) exec assumes the role again, rewrites the credentials
//! file atomically (a 0600 temporary renamed over it, in a 0700 directory of its own, so
//! a reader never sees half a file) and sends the child `--refresh-signal` (SIGHUP by
//! default; `none` for children that re-read the file on their own). The environment
//! cannot change under a running process, so a long-running child reads the file. SIGINT
//! and SIGTERM (and SIGHUP) sent to exec are forwarded to the child; exec exits with the
//! child's status (128 + signal when the child was killed), and removes the directory.
//!
//! With `--web-identity-token-file` (or `STINT_WEB_IDENTITY_TOKEN_FILE`, or the profile's
//! `web_identity_token_file`) there is no source session: each (re)assumption reads the
//! OIDC token file afresh — the platform rotates it — and calls AssumeRoleWithWebIdentity.
//!
//! The source session is re-read from the cache at every refresh: when it expires while
//! the child runs, exec says which `stint login` to run, keeps retrying with back-off, and
//! picks up the new session as soon as it is cached.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use time::OffsetDateTime;
use tonic::transport::Channel;

use super::duration::parse_duration;
use super::session::{self, CachedSession, CredentialsFile, Kind, ProfileConfig, ProfilesFile};
use super::{ConnFlags, DEFAULT_ENDPOINT, Env, bearer, connect, from_timestamp};
use crate::cli::{CliError, runtime};
use crate::core::secret::SecretString;
use crate::proto::AssumeRoleRequest;
use crate::proto::sts_client::StsClient;

/// `stint exec --help`: what the child gets.
const EXEC_AFTER_HELP: &str = "\
The child's environment: STINT_SESSION_TOKEN (and STINT_TOKEN), STINT_ACCESS_KEY_ID,
STINT_EXPIRATION (RFC 3339), STINT_ENDPOINT, STINT_CA_CERT (when the profile has a CA) and
STINT_CREDENTIALS_FILE: a 0600 JSON file {access_key_id, session_token, expiration,
endpoint} in a private directory. Before the credentials expire, exec assumes the role
again, replaces the file atomically and sends the child --refresh-signal (SIGHUP by
default). SIGINT, SIGTERM and SIGHUP are forwarded to the child; exec exits with the
child's status.

  stint configure --profile deploy --role-arn arn:stint:iam::000000000000:role/deploy \\
      --source-profile default
  stint exec --profile deploy -- ./release.sh";

#[derive(Args, Debug)]
#[command(after_long_help = EXEC_AFTER_HELP)]
pub struct ExecArgs {
    #[command(flatten)]
    pub conn: ConnFlags,
    /// The role to assume (default: STINT_ROLE_ARN, else the profile's `role_arn`).
    #[arg(long, env = "STINT_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// Assume the role with the OIDC token in this file (re-read at every refresh: the
    /// platform rotates it) instead of a `stint login` session (default:
    /// STINT_WEB_IDENTITY_TOKEN_FILE, else the profile's `web_identity_token_file`).
    #[arg(long, env = "STINT_WEB_IDENTITY_TOKEN_FILE", conflicts_with_all = ["source_profile", "code", "audience"])]
    pub web_identity_token_file: Option<PathBuf>,
    /// Profile whose cached `stint login` session assumes the role (default: the
    /// profile's `source_profile`, else the profile itself).
    #[arg(long)]
    pub source_profile: Option<String>,
    /// Role session name (default: your user name; `web-identity` with a token file; also
    /// STINT_ROLE_SESSION_NAME).
    #[arg(long, env = "STINT_ROLE_SESSION_NAME")]
    pub session_name: Option<String>,
    /// Lifetime of each credential: seconds or 15m, 1h (default 1h; at most the role's maximum).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<i32>,
    /// MFA code for the first AssumeRole (prompted for on a terminal when the profile has
    /// an `mfa_serial`); refreshes rely on the source session's MFA.
    #[arg(long)]
    pub code: Option<String>,
    /// Mint the token for this app audience (`aud`) instead of a Stint session.
    #[arg(long)]
    pub audience: Option<String>,
    /// Signal sent to the child after each refresh of the credentials file.
    #[arg(long, value_enum, default_value = "hup")]
    pub refresh_signal: RefreshSignal,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshSignal {
    Hup,
    Usr1,
    Usr2,
    /// Send nothing: the child re-reads `STINT_CREDENTIALS_FILE` itself.
    None,
}

impl RefreshSignal {
    fn signal(self) -> Option<rustix::process::Signal> {
        use rustix::process::Signal;
        match self {
            RefreshSignal::Hup => Some(Signal::HUP),
            RefreshSignal::Usr1 => Some(Signal::USR1),
            RefreshSignal::Usr2 => Some(Signal::USR2),
            RefreshSignal::None => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct ConfigureArgs {
    /// The profile to configure.
    #[arg(long, env = "STINT_PROFILE", default_value = "default")]
    pub profile: String,
    /// Role that `stint exec --profile P` assumes.
    #[arg(long)]
    pub role_arn: Option<String>,
    /// Profile whose `stint login` session assumes the role.
    #[arg(long)]
    pub source_profile: Option<String>,
    /// File holding an OIDC token that assumes the role instead (AssumeRoleWithWebIdentity).
    #[arg(long)]
    pub web_identity_token_file: Option<PathBuf>,
    /// MFA device serial (ARN) to ask a code for when the role is first assumed.
    #[arg(long)]
    pub mfa_serial: Option<String>,
    /// Server URL, http:// or https://.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// PEM CA certificate of the server; a copy is kept in the Stint home directory.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Print the profile's settings instead of changing them.
    #[arg(long, conflicts_with_all = ["role_arn", "source_profile", "web_identity_token_file", "mfa_serial", "endpoint", "ca_cert"])]
    pub show: bool,
}

/// `stint configure`: set (or with no setting flags, show) a profile's settings. Given
/// flags replace their setting; an empty value (`--mfa-serial ""`) removes it.
pub fn configure(args: ConfigureArgs, env: &Env) -> Result<ExitCode, CliError> {
    let profile = args.profile.trim();
    if profile.is_empty() {
        return Err(CliError::new("--profile must not be empty"));
    }
    let creds = session::credentials_path(env.stint_home.as_deref(), env.home.as_deref())?;
    let mut file = ProfilesFile::beside(&creds)?;
    let mut config = file.get(profile);
    let set = |slot: &mut Option<String>, value: Option<String>| {
        if let Some(v) = value {
            *slot = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        }
    };
    let changing = args.role_arn.is_some()
        || args.source_profile.is_some()
        || args.web_identity_token_file.is_some()
        || args.mfa_serial.is_some()
        || args.endpoint.is_some()
        || args.ca_cert.is_some();
    if changing {
        set(&mut config.role_arn, args.role_arn);
        set(&mut config.source_profile, args.source_profile);
        if let Some(file) = args.web_identity_token_file {
            config.web_identity_token_file = Some(file).filter(|f| !f.as_os_str().is_empty());
        }
        set(&mut config.mfa_serial, args.mfa_serial);
        set(&mut config.endpoint, args.endpoint);
        if let Some(endpoint) = &config.endpoint
            && !endpoint.starts_with("http://")
            && !endpoint.starts_with("https://")
        {
            return Err(CliError::new(format!(
                "--endpoint '{endpoint}' must start with http:// or https://"
            )));
        }
        if config.source_profile.as_deref() == Some(profile) {
            return Err(CliError::new(format!(
                "--source-profile must name another profile than '{profile}' (the one you `stint login` with)"
            )));
        }
        if let Some(ca) = args.ca_cert {
            if ca.as_os_str().is_empty() {
                config.ca_cert = None;
            } else {
                config.ca_cert = Some(store_ca(&file, profile, &ca)?);
            }
        }
        file.put(profile, config.clone());
        file.save()?;
        eprintln!("Saved profile '{profile}' in {}", file.path().display());
    }
    let json = serde_json::to_string_pretty(&config).unwrap_or_default();
    super::say(format_args!("{json}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Copies a PEM CA into the Stint home (so the profile does not depend on where the file
/// was), after checking it looks like a certificate.
pub(super) fn store_ca(
    file: &ProfilesFile,
    profile: &str,
    from: &Path,
) -> Result<PathBuf, CliError> {
    let pem = std::fs::read(from).map_err(|e| {
        CliError::new(format!(
            "cannot read CA certificate {}: {e}",
            from.display()
        ))
    })?;
    if pem.len() > 1 << 20 || !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(CliError::new(format!(
            "{} is not a PEM certificate (no BEGIN CERTIFICATE block)",
            from.display()
        )));
    }
    let to = file.ca_path(profile);
    session::write_private(&to, pem.trim_ascii_end())?;
    Ok(to)
}

/// Credentials handed to the child.
#[derive(Clone, Debug)]
struct Issued {
    access_key_id: String,
    session_token: SecretString,
    expiration: OffsetDateTime,
}

/// Everything exec needs to (re)assume the role.
struct Plan {
    credentials_path: PathBuf,
    source_profile: String,
    role_arn: String,
    endpoint: String,
    ca_cert: Option<PathBuf>,
    session_name: Option<String>,
    duration: i32,
    audience: String,
    mfa_serial: String,
    /// Assume with this OIDC token file (re-read each time) instead of a source session.
    web_identity_token_file: Option<PathBuf>,
}

fn plan(args: &ExecArgs, env: &Env) -> Result<Plan, CliError> {
    let profile = args.conn.profile.trim();
    if profile.is_empty() {
        return Err(CliError::new("--profile must not be empty"));
    }
    let credentials_path =
        session::credentials_path(env.stint_home.as_deref(), env.home.as_deref())?;
    let profiles = ProfilesFile::beside(&credentials_path)?;
    let config: ProfileConfig = profiles.get(profile);
    let role_arn = args
        .role_arn
        .clone()
        .or(config.role_arn.clone())
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            CliError::new(format!(
                "profile '{profile}' has no role to assume: give --role-arn ARN, or run \
                 `stint configure --profile {profile} --role-arn ARN --source-profile default`"
            ))
        })?;
    let source_profile = args
        .source_profile
        .clone()
        .or(config.source_profile.clone())
        .unwrap_or_else(|| profile.to_string());
    let source_config = profiles.get(&source_profile);
    let cached_endpoint = CredentialsFile::load(&credentials_path)?
        .get(&source_profile)?
        .map(|c| c.endpoint)
        .filter(|e| !e.is_empty());
    let endpoint = args
        .conn
        .endpoint
        .clone()
        .filter(|e| !e.trim().is_empty())
        .or(config.endpoint.clone())
        .or(source_config.endpoint.clone())
        .or(cached_endpoint)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let ca_cert = args
        .conn
        .ca_cert
        .clone()
        .or(config.ca_cert.clone())
        .or(source_config.ca_cert.clone())
        .filter(|_| endpoint.starts_with("https://"));
    Ok(Plan {
        credentials_path,
        source_profile,
        role_arn,
        endpoint,
        ca_cert,
        session_name: args.session_name.clone(),
        duration: args.duration.unwrap_or(0),
        audience: args.audience.clone().unwrap_or_default(),
        mfa_serial: config.mfa_serial.unwrap_or_default(),
        web_identity_token_file: args
            .web_identity_token_file
            .clone()
            .or(config.web_identity_token_file)
            .filter(|f| !f.as_os_str().is_empty()),
    })
}

/// The source profile's cached session, or the exact `stint login` to run.
fn source_session(plan: &Plan, now: OffsetDateTime) -> Result<CachedSession, CliError> {
    let profile = &plan.source_profile;
    let cached = CredentialsFile::load(&plan.credentials_path)?.get(profile)?;
    let login = |who: Option<&str>| {
        let user = who.map(|u| format!(" --user {u}")).unwrap_or_default();
        format!("stint login --profile {profile}{user}")
    };
    let Some(cached) = cached else {
        return Err(CliError::new(format!(
            "no cached session for source profile '{profile}': run `{}` first",
            login(None)
        )));
    };
    if cached.kind != Kind::Session {
        return Err(CliError::new(format!(
            "source profile '{profile}' holds role credentials, not a `stint login` session"
        )));
    }
    if cached.expiration <= now {
        let peek = session::peek(&cached.session_token).unwrap_or_default();
        let user = peek
            .sub
            .split_once(":user/")
            .map(|(_, name)| name.rsplit('/').next().unwrap_or(name).to_string());
        return Err(CliError::new(format!(
            "the session of source profile '{profile}' expired at {}: run `{}`",
            session::rfc3339(cached.expiration),
            login(user.as_deref())
        )));
    }
    Ok(cached)
}

async fn assume(
    plan: &Plan,
    channel: &Channel,
    code: Option<&str>,
    now: OffsetDateTime,
) -> Result<Issued, CliError> {
    if let Some(token_file) = &plan.web_identity_token_file {
        let request = crate::proto::AssumeRoleWithWebIdentityRequest {
            role_arn: plan.role_arn.clone(),
            role_session_name: plan
                .session_name
                .clone()
                .unwrap_or_else(|| super::login::DEFAULT_WEB_IDENTITY_SESSION_NAME.to_string()),
            duration_seconds: plan.duration,
            ..Default::default()
        };
        let response =
            super::login::assume_role_with_web_identity(channel.clone(), token_file, request)
                .await?;
        return issued(response.credentials);
    }
    let source = source_session(plan, now)?;
    let session_name = plan
        .session_name
        .clone()
        .unwrap_or_else(|| super::login::default_session_name(&source.session_token));
    let request = AssumeRoleRequest {
        role_arn: plan.role_arn.clone(),
        role_session_name: session_name,
        duration_seconds: plan.duration,
        token_code: code.unwrap_or_default().to_string(),
        serial_number: if code.is_some() {
            plan.mfa_serial.clone()
        } else {
            String::new()
        },
        audience: plan.audience.clone(),
        ..Default::default()
    };
    let response = StsClient::new(channel.clone())
        .assume_role(bearer(request, &source.session_token)?)
        .await
        .map_err(super::status_error)?
        .into_inner();
    issued(response.credentials)
}

fn issued(credentials: Option<crate::proto::Credentials>) -> Result<Issued, CliError> {
    let creds =
        credentials.ok_or_else(|| CliError::new("the server answered without credentials"))?;
    let expiration = from_timestamp(creds.expiration.as_ref())
        .ok_or_else(|| CliError::new("the server answered without an expiration"))?;
    Ok(Issued {
        access_key_id: creds.access_key_id,
        session_token: SecretString::new(creds.session_token),
        expiration,
    })
}

/// Never refresh earlier than this before expiry…
const MIN_MARGIN: Duration = Duration::from_secs(60);
/// …nor later than this.
const MAX_MARGIN: Duration = Duration::from_secs(15 * 60);
/// Longest wait between retries after a failed refresh.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// How long to wait before the next refresh of credentials `received` at one time and
/// expiring at `expiration`, seen at `now`, after `failures` failed refreshes in a row.
///
/// The margin before expiry is a fifth of the lifetime, within 1..15 minutes, and never
/// more than half of it; a credential already inside its margin (a short one, or clocks
/// apart) waits half its remaining time, so exec never spins. After a failure the wait
/// doubles from 2 s up to a minute, but stays within what is left before expiry.
pub fn next_refresh(
    now: OffsetDateTime,
    received: OffsetDateTime,
    expiration: OffsetDateTime,
    failures: u32,
) -> Duration {
    let to_std = |d: time::Duration| Duration::try_from(d).unwrap_or(Duration::ZERO);
    let lifetime = to_std(expiration - received);
    let remaining = to_std(expiration - now);
    let floor = Duration::from_secs(1);
    if failures > 0 {
        let backoff = Duration::from_secs(2)
            .saturating_mul(1 << failures.saturating_sub(1).min(6))
            .min(MAX_RETRY);
        return if remaining.is_zero() {
            backoff
        } else {
            backoff.min(remaining / 2).max(floor)
        };
    }
    let margin = (lifetime / 5)
        .clamp(MIN_MARGIN, MAX_MARGIN)
        .min(lifetime / 2);
    match remaining.checked_sub(margin) {
        Some(wait) if !wait.is_zero() => wait,
        _ => (remaining / 2).max(floor),
    }
}

/// A private directory for the credentials file: 0700, created fresh (never reused).
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> Result<Self, CliError> {
        let random: [u8; 8] = {
            use ring::rand::SecureRandom;
            let mut bytes = [0u8; 8];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| CliError::new("random generator failed"))?;
            bytes
        };
        let dir = std::env::temp_dir().join(format!(
            "stint-exec-{}-{}",
            std::process::id(),
            data_encoding::HEXLOWER.encode(&random)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_credentials(path: &Path, issued: &Issued, endpoint: &str) -> Result<(), CliError> {
    let json = serde_json::json!({
        "access_key_id": issued.access_key_id,
        "session_token": issued.session_token.expose(),
        "expiration": session::rfc3339(issued.expiration),
        "endpoint": endpoint,
    });
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec_pretty(&json).unwrap_or_default());
    session::write_private(path, &bytes)
}

fn send(pid: Option<u32>, signal: rustix::process::Signal) {
    let pid = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid
        && let Err(e) = rustix::process::kill_process(pid, signal)
    {
        eprintln!("stint exec: cannot signal the child: {e}");
    }
}

/// The child's exit status as ours: its code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

pub fn exec(args: ExecArgs, env: &Env) -> Result<ExitCode, CliError> {
    let plan = plan(&args, env)?;
    // Say which login to run before trying to reach any server.
    if plan.web_identity_token_file.is_none() {
        source_session(&plan, super::now())?;
    }
    let code = match args.code.clone() {
        Some(code) => Some(code.trim().to_string()),
        None if !plan.mfa_serial.is_empty() && std::io::stdin().is_terminal() => {
            let code = super::prompt_secret(&format!("MFA code for {}: ", plan.mfa_serial))?;
            Some(code.expose().trim().to_string())
        }
        None => None,
    }
    .filter(|c| !c.is_empty());
    if let Some(c) = &code
        && !(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CliError::new("the MFA code must be 6 digits"));
    }
    runtime()?.block_on(run(plan, args, code))
}

async fn run(plan: Plan, args: ExecArgs, code: Option<String>) -> Result<ExitCode, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let channel = connect(&plan.endpoint, plan.ca_cert.as_deref()).await?;
    let mut issued = assume(&plan, &channel, code.as_deref(), super::now()).await?;
    let mut received = super::now();
    let dir = PrivateDir::create()?;
    let file = dir.0.join("credentials.json");
    write_credentials(&file, &issued, &plan.endpoint)?;

    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CliError::new("give the command to run after `--`"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .env("STINT_SESSION_TOKEN", issued.session_token.expose())
        .env("STINT_ACCESS_KEY_ID", &issued.access_key_id)
        .env("STINT_EXPIRATION", session::rfc3339(issued.expiration))
        .env("STINT_ENDPOINT", &plan.endpoint)
        .env("STINT_CREDENTIALS_FILE", &file);
    if let Some(ca) = &plan.ca_cert {
        command.env("STINT_CA_CERT", ca);
    }
    // Nested `stint` commands act as the role; an app-audience token is no Stint session.
    if plan.audience.is_empty() {
        command.env("STINT_TOKEN", issued.session_token.expose());
    } else {
        command.env_remove("STINT_TOKEN");
    }
    // Watch the signals before the child exists, so none is lost in between.
    let signal_error = |e: std::io::Error| CliError::new(format!("cannot watch signals: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let mut child = command
        .spawn()
        .map_err(|e| CliError::new(format!("cannot run {}: {e}", Path::new(program).display())))?;
    let pid = child.id();
    let mut failures = 0u32;
    loop {
        let wait = next_refresh(super::now(), received, issued.expiration, failures);
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::new(format!("cannot wait for the child: {e}")))?;
                return Ok(exit_code(status));
            }
            _ = interrupt.recv() => send(pid, rustix::process::Signal::INT),
            _ = terminate.recv() => send(pid, rustix::process::Signal::TERM),
            _ = hangup.recv() => send(pid, rustix::process::Signal::HUP),
            () = tokio::time::sleep(wait) => {
                // A failed write counts as a failed refresh: the child keeps running.
                let refreshed = match assume(&plan, &channel, None, super::now()).await {
                    Ok(fresh) => write_credentials(&file, &fresh, &plan.endpoint).map(|()| fresh),
                    Err(e) => Err(e),
                };
                match refreshed {
                    Ok(fresh) => {
                        issued = fresh;
                        received = super::now();
                        failures = 0;
                        if let Some(signal) = args.refresh_signal.signal() {
                            send(pid, signal);
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        eprintln!(
                            "stint exec: cannot refresh the credentials (they expire {}): {e}",
                            session::rfc3339(issued.expiration)
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    #[test]
    fn refresh_timing_table() {
        let s = Duration::from_secs;
        // (now, received, expiration, failures, expected wait)
        let cases: &[(i64, i64, i64, u32, Duration)] = &[
            // 1 h credential: refresh 12 min (a fifth) before expiry.
            (0, 0, 3600, 0, s(3600 - 720)),
            (3000, 0, 3600, 0, s(300)),
            // 12 h: the margin is capped at 15 min.
            (0, 0, 43_200, 0, s(43_200 - 900)),
            // 15 min: the margin is at least a minute... here a fifth, 3 min.
            (0, 0, 900, 0, s(720)),
            // 2 min: the 1-minute floor.
            (0, 0, 120, 0, s(60)),
            // 6 s (clocks apart, or a very short token): margin half the lifetime.
            (0, 0, 6, 0, s(3)),
            // Already inside the margin: half of what is left, never a spin.
            (3590, 0, 3600, 0, s(5)),
            (3599, 0, 3600, 0, s(1)),
            // Expired: still a second, then back-off.
            (4000, 0, 3600, 0, s(1)),
            // Failures: 2 s, 4 s, 8 s … capped at 60 s, within half the remaining time.
            (0, 0, 3600, 1, s(2)),
            (0, 0, 3600, 2, s(4)),
            (0, 0, 3600, 3, s(8)),
            (0, 0, 3600, 20, s(60)),
            (3590, 0, 3600, 5, s(5)),
            (4000, 0, 3600, 3, s(8)),
            (4000, 0, 3600, 30, s(60)),
        ];
        for (now, received, expiration, failures, want) in cases {
            assert_eq!(
                next_refresh(at(*now), at(*received), at(*expiration), *failures),
                *want,
                "now={now} received={received} exp={expiration} failures={failures}"
            );
        }
    }

    #[test]
    fn refresh_is_always_before_expiry_and_never_a_spin() {
        for lifetime in [2i64, 10, 61, 900, 3600, 43_200, 129_600] {
            for elapsed in [0, lifetime / 3, lifetime - 1] {
                let wait = next_refresh(at(elapsed), at(0), at(lifetime), 0);
                assert!(wait >= Duration::from_secs(1), "{lifetime}/{elapsed}");
                assert!(
                    (elapsed as u64) + wait.as_secs() < lifetime as u64 || lifetime - elapsed <= 1,
                    "{lifetime}/{elapsed}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn exit_status_is_the_childs() {
        use std::os::unix::process::ExitStatusExt;
        let code = |raw| format!("{:?}", exit_code(std::process::ExitStatus::from_raw(raw)));
        assert_eq!(code(0), format!("{:?}", ExitCode::from(0)));
        assert_eq!(code(3 << 8), format!("{:?}", ExitCode::from(3)));
        // Killed by SIGTERM (15): 143, as shells report it.
        assert_eq!(code(15), format!("{:?}", ExitCode::from(143)));
    }

    #[test]
    fn command_lines_parse() {
        use clap::Parser;
        let ok: &[&[&str]] = &[
            &[
                "stint",
                "exec",
                "--profile",
                "deploy",
                "--",
                "./release.sh",
                "--fast",
            ],
            &[
                "stint",
                "exec",
                "--role-arn",
                "arn:r",
                "--refresh-signal",
                "none",
                "--",
                "sh",
                "-c",
                "env",
            ],
            &[
                "stint",
                "exec",
                "--audience",
                "billing",
                "--duration",
                "15m",
                "--",
                "true",
            ],
            &[
                "stint",
                "configure",
                "--profile",
                "deploy",
                "--role-arn",
                "arn:r",
                "--source-profile",
                "default",
            ],
            &["stint", "configure", "--profile", "deploy", "--show"],
        ];
        for line in ok {
            if let Err(e) = crate::cli::Cli::try_parse_from(*line) {
                panic!("{line:?}: {e}");
            }
        }
        let bad: &[&[&str]] = &[
            &["stint", "exec", "--profile", "deploy"],
            &["stint", "exec", "--refresh-signal", "kill", "--", "true"],
            &["stint", "configure", "--show", "--role-arn", "r"],
        ];
        for line in bad {
            assert!(crate::cli::Cli::try_parse_from(*line).is_err(), "{line:?}");
        }
    }
}
