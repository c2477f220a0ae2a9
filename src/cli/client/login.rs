//! `stint login`, `assume-role`, `whoami`, `logout`: the session lifecycle, with the
//! typed Sts / Tokens clients.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use time::OffsetDateTime;

use super::duration::{format_remaining, parse_duration};
use super::session::{self, CachedSession, Kind, rfc3339};
use super::{AuthFlags, ConnFlags, Context, Env, bearer, from_timestamp, parse_key_value};
use crate::cli::{CliError, OutputFormat, runtime};
use crate::core::secret::SecretString;
use crate::proto::sts_client::StsClient;
use crate::proto::tokens_client::TokensClient;
use crate::proto::{
    AccessKeyCredential, AssumeRoleRequest, AssumeRoleWithWebIdentityRequest,
    GetCallerIdentityRequest, GetSessionTokenRequest, PasswordCredential, RevokeSessionRequest,
    Tag, get_session_token_request::Credential,
};

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: ConnFlags,
    /// User name (password login; prompts for the password and MFA code).
    #[arg(long)]
    pub user: Option<String>,
    /// Read the password from standard input (no prompts: pass --code for MFA).
    #[arg(long, requires = "user")]
    pub password_stdin: bool,
    /// The 6-digit code from your MFA device (prompted for when omitted; empty = no MFA).
    #[arg(long)]
    pub code: Option<String>,
    /// Session lifetime: seconds or 15m, 2h, 1h30m (server default 12h, range 15m..36h).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<i32>,
    /// Access key id, for services (also STINT_ACCESS_KEY_ID); needs --secret-file.
    #[arg(long, env = "STINT_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// File holding the secret access key (also STINT_SECRET_ACCESS_KEY_FILE).
    #[arg(long, env = "STINT_SECRET_ACCESS_KEY_FILE")]
    pub secret_file: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsOutput {
    /// The credentials object as JSON.
    Json,
    /// `export STINT_TOKEN=…` lines for a shell's `eval`.
    Env,
}

#[derive(Args, Debug)]
pub struct AssumeRoleArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The role to assume (also STINT_ROLE_ARN).
    #[arg(long, env = "STINT_ROLE_ARN")]
    pub role_arn: String,
    /// Role session name (default: your user name; `web-identity` with a token file; also
    /// STINT_ROLE_SESSION_NAME).
    #[arg(long, env = "STINT_ROLE_SESSION_NAME")]
    pub session_name: Option<String>,
    /// Assume the role with the OIDC token in this file (a Kubernetes projected
    /// service-account token, a CI job's ID token) instead of a `stint login` session:
    /// AssumeRoleWithWebIdentity (also STINT_WEB_IDENTITY_TOKEN_FILE).
    #[arg(long, env = "STINT_WEB_IDENTITY_TOKEN_FILE", conflicts_with_all = ["external_id", "code", "tags", "source_identity", "audience"])]
    pub web_identity_token_file: Option<PathBuf>,
    /// Lifetime: seconds or 15m, 2h, 1h30m (default 1h; at most the role's maximum).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<i32>,
    /// External id the role's trust policy asks for.
    #[arg(long)]
    pub external_id: Option<String>,
    /// MFA code, when the trust policy wants a fresh one.
    #[arg(long)]
    pub code: Option<String>,
    /// Session policy (JSON file) narrowing the role's permissions.
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
    /// Session tag key=value (repeatable).
    #[arg(long = "tag", value_parser = parse_key_value)]
    pub tags: Vec<(String, String)>,
    /// Source identity, sticky across role chaining.
    #[arg(long)]
    pub source_identity: Option<String>,
    /// Mint the token for this app (its `aud`) instead of a Stint session; the trust
    /// policy sees it as `stint:Audience`.
    #[arg(long)]
    pub audience: Option<String>,
    /// How to print the credentials.
    #[arg(long, value_enum, default_value = "json")]
    pub output: OutputFormat,
    /// Do not store the credentials under profile <profile>/role.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub conn: ConnFlags,
    /// Only forget the credentials locally; do not revoke them on the server.
    #[arg(long)]
    pub no_revoke: bool,
}

fn read_password_stdin() -> Result<SecretString, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::new(format!("cannot read the password from stdin: {e}")))?;
    let password = SecretString::new(text.trim_end_matches(['\n', '\r']).to_string());
    drop(zeroize::Zeroizing::new(text));
    if password.is_empty() {
        return Err(CliError::new("the password read from stdin is empty"));
    }
    Ok(password)
}

fn check_code(code: &str) -> Result<(), CliError> {
    if code.is_empty() || (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(CliError::new("the MFA code must be 6 digits"))
    }
}

fn credential(args: &LoginArgs) -> Result<(Credential, SecretString), CliError> {
    if let Some(user) = args.user.as_deref().filter(|u| !u.is_empty()) {
        let password = if args.password_stdin {
            read_password_stdin()?
        } else {
            super::prompt_secret(&format!("Password for {user}: "))?
        };
        let code = match &args.code {
            Some(code) => SecretString::new(code.trim().to_string()),
            None if args.password_stdin => SecretString::default(),
            None => super::prompt_secret("MFA code (empty if none): ")?,
        };
        check_code(code.expose())?;
        let cred = Credential::Password(PasswordCredential {
            user_name: user.to_string(),
            password: password.expose().to_string(),
        });
        return Ok((cred, code));
    }
    let (Some(id), Some(file)) = (args.access_key_id.as_deref(), args.secret_file.as_deref())
    else {
        return Err(CliError::new(
            "give --user NAME, or --access-key-id ID with --secret-file FILE \
             (or STINT_ACCESS_KEY_ID and STINT_SECRET_ACCESS_KEY_FILE)",
        ));
    };
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
        CliError::new(format!(
            "cannot read the secret file {}: {e}",
            file.display()
        ))
    })?);
    let secret = text.trim();
    if secret.is_empty() {
        return Err(CliError::new(format!("{} is empty", file.display())));
    }
    let code = SecretString::new(args.code.clone().unwrap_or_default());
    check_code(code.expose())?;
    Ok((
        Credential::AccessKey(AccessKeyCredential {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
        }),
        code,
    ))
}

/// Expiry line: `2026-01-31T12:00:00Z (in 1h59m)`.
fn expiry(t: OffsetDateTime, now: OffsetDateTime) -> String {
    format!(
        "{} (in {})",
        rfc3339(t),
        format_remaining((t - now).whole_seconds())
    )
}

pub fn login(args: LoginArgs, env: &Env) -> Result<ExitCode, CliError> {
    let mut ctx = Context::open(&args.conn, env)?;
    let endpoint = ctx.endpoint()?;
    let (credential, code) = credential(&args)?;
    let request = GetSessionTokenRequest {
        credential: Some(credential),
        token_code: code.expose().to_string(),
        duration_seconds: args.duration.unwrap_or(0),
        serial_number: String::new(),
    };
    let response = runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        StsClient::new(channel)
            .get_session_token(request)
            .await
            .map_err(super::status_error)
    })?;
    let creds = response
        .into_inner()
        .credentials
        .ok_or_else(|| CliError::new("the server answered without credentials"))?;
    let expiration = from_timestamp(creds.expiration.as_ref())
        .ok_or_else(|| CliError::new("the server answered without an expiration"))?;
    let cached = CachedSession {
        endpoint,
        access_key_id: creds.access_key_id,
        session_token: SecretString::new(creds.session_token),
        expiration,
        kind: Kind::Session,
    };
    ctx.creds.put(&ctx.profile, &cached);
    ctx.creds.save()?;
    if let Some(ca) = args.conn.ca_cert.as_deref() {
        remember_ca(&ctx, ca)?;
    }
    let peek = session::peek(&cached.session_token).unwrap_or_default();
    let who = if peek.sub.is_empty() {
        cached.access_key_id.as_str()
    } else {
        &peek.sub
    };
    let mfa = if peek.stint.mfa_present {
        ", with MFA"
    } else {
        ""
    };
    super::say(format_args!(
        "Logged in to {} as {who}{mfa} (profile '{}'); session expires {}",
        cached.endpoint,
        ctx.profile,
        expiry(cached.expiration, super::now())
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `stint login --ca-cert FILE`: the profile keeps a copy of the CA, so later commands
/// (and `stint exec`) trust the server without the flag.
fn remember_ca(ctx: &Context, ca: &std::path::Path) -> Result<(), CliError> {
    let mut profiles = session::ProfilesFile::beside(ctx.creds.path())?;
    let mut settings = profiles.get(&ctx.profile);
    let stored = super::exec::store_ca(&profiles, &ctx.profile, ca)?;
    if settings.ca_cert.as_ref() != Some(&stored) {
        settings.ca_cert = Some(stored);
        profiles.put(&ctx.profile, settings);
        profiles.save()?;
    }
    Ok(())
}

/// Default role session name: the user name from the session's ARN, else `stint-cli`.
pub(super) fn default_session_name(token: &SecretString) -> String {
    let name = session::peek(token)
        .and_then(|p| p.sub.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    let valid = (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if valid { name } else { "stint-cli".to_string() }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Session name with a web identity token when none is given.
pub(super) const DEFAULT_WEB_IDENTITY_SESSION_NAME: &str = "web-identity";

/// Bound on a token file: the server takes tokens of at most 20000 bytes.
const MAX_WEB_IDENTITY_TOKEN_BYTES: u64 = 20_000;

/// The OIDC token in `path`, read afresh (the platform rotates the file), trimmed; errors
/// name the file, never the content.
pub(super) fn read_web_identity_token(path: &std::path::Path) -> Result<SecretString, CliError> {
    let fail = |why: String| {
        CliError::new(format!(
            "cannot read the web identity token file {}: {why}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_WEB_IDENTITY_TOKEN_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    let text = SecretString::new(text);
    if text.expose().len() as u64 > MAX_WEB_IDENTITY_TOKEN_BYTES {
        return Err(fail(format!(
            "larger than {MAX_WEB_IDENTITY_TOKEN_BYTES} bytes"
        )));
    }
    let token = text.expose().trim();
    if token.is_empty() {
        return Err(fail("empty".into()));
    }
    Ok(SecretString::new(token.to_string()))
}

/// `AssumeRoleWithWebIdentity` with the token in `token_file` (no session: the token is
/// the credential).
pub(super) async fn assume_role_with_web_identity(
    channel: tonic::transport::Channel,
    token_file: &std::path::Path,
    request: AssumeRoleWithWebIdentityRequest,
) -> Result<crate::proto::AssumeRoleWithWebIdentityResponse, CliError> {
    let token = read_web_identity_token(token_file)?;
    let request = AssumeRoleWithWebIdentityRequest {
        web_identity_token: token.expose().to_string(),
        ..request
    };
    Ok(StsClient::new(channel)
        .assume_role_with_web_identity(request)
        .await
        .map_err(super::status_error)?
        .into_inner())
}

pub fn assume_role(args: AssumeRoleArgs, env: &Env) -> Result<ExitCode, CliError> {
    let mut ctx = Context::open(&args.auth.conn, env)?;
    if let Some(token_file) = &args.web_identity_token_file {
        let endpoint = ctx.endpoint()?;
        let request = AssumeRoleWithWebIdentityRequest {
            role_arn: args.role_arn.clone(),
            role_session_name: args
                .session_name
                .clone()
                .unwrap_or_else(|| DEFAULT_WEB_IDENTITY_SESSION_NAME.to_string()),
            duration_seconds: args.duration.unwrap_or(0),
            policy: read_policy_file(args.policy_file.as_deref())?,
            ..Default::default()
        };
        let response = runtime()?.block_on(async {
            let channel = ctx.channel().await?;
            assume_role_with_web_identity(channel, token_file, request).await
        })?;
        return print_role_credentials(
            &args,
            &mut ctx,
            endpoint,
            response.credentials,
            response.assumed_role_user,
        );
    }
    let token = ctx.token(args.auth.token_flag())?;
    let endpoint = ctx.endpoint()?;
    let policy = read_policy_file(args.policy_file.as_deref())?;
    let code = args.code.clone().unwrap_or_default();
    check_code(&code)?;
    let request = AssumeRoleRequest {
        role_arn: args.role_arn.clone(),
        role_session_name: args
            .session_name
            .clone()
            .unwrap_or_else(|| default_session_name(&token)),
        duration_seconds: args.duration.unwrap_or(0),
        external_id: args.external_id.clone().unwrap_or_default(),
        token_code: code,
        policy,
        tags: args
            .tags
            .iter()
            .map(|(key, value)| Tag {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        source_identity: args.source_identity.clone().unwrap_or_default(),
        audience: args.audience.clone().unwrap_or_default(),
        ..Default::default()
    };
    let request = bearer(request, &token)?;
    let response = runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        StsClient::new(channel)
            .assume_role(request)
            .await
            .map_err(super::status_error)
    })?;
    let response = response.into_inner();
    print_role_credentials(
        &args,
        &mut ctx,
        endpoint,
        response.credentials,
        response.assumed_role_user,
    )
}

fn read_policy_file(path: Option<&std::path::Path>) -> Result<String, CliError> {
    match path {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::new(format!(
                "cannot read the policy file {}: {e}",
                path.display()
            ))
        }),
        None => Ok(String::new()),
    }
}

/// Caches (unless told not to) and prints a role's credentials.
fn print_role_credentials(
    args: &AssumeRoleArgs,
    ctx: &mut Context,
    endpoint: String,
    credentials: Option<crate::proto::Credentials>,
    assumed_role_user: Option<crate::proto::AssumedRoleUser>,
) -> Result<ExitCode, CliError> {
    let creds =
        credentials.ok_or_else(|| CliError::new("the server answered without credentials"))?;
    let expiration = from_timestamp(creds.expiration.as_ref())
        .ok_or_else(|| CliError::new("the server answered without an expiration"))?;
    let cached = CachedSession {
        endpoint,
        access_key_id: creds.access_key_id,
        session_token: SecretString::new(creds.session_token),
        expiration,
        kind: Kind::AssumedRole,
    };
    let role_profile = format!("{}/role", ctx.profile);
    // An app's token is no Stint session: nothing to cache for later commands.
    let cache = !args.no_cache && args.audience.as_deref().unwrap_or_default().is_empty();
    if cache {
        ctx.creds.put(&role_profile, &cached);
        ctx.creds.save()?;
    }
    let arn = assumed_role_user.map(|u| u.arn).unwrap_or_default();
    match args.output {
        OutputFormat::Json | OutputFormat::Text => {
            let json = serde_json::json!({
                "access_key_id": cached.access_key_id,
                "session_token": cached.session_token.expose(),
                "expiration": rfc3339(cached.expiration),
            });
            super::say(format_args!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            ))?;
        }
        OutputFormat::Env => {
            super::say(format_args!(
                "export STINT_TOKEN={}",
                shell_quote(cached.session_token.expose())
            ))?;
            super::say(format_args!(
                "export STINT_TOKEN_EXPIRATION={}",
                rfc3339(cached.expiration)
            ))?;
            if !arn.is_empty() {
                super::say(format_args!("# {arn}"))?;
            }
        }
    }
    if cache {
        eprintln!(
            "Assumed {arn}; cached as profile '{role_profile}', expires {}",
            expiry(cached.expiration, super::now())
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn whoami(args: WhoamiArgs, env: &Env) -> Result<ExitCode, CliError> {
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token_flag())?;
    let request = bearer(GetCallerIdentityRequest {}, &token)?;
    let identity = runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        StsClient::new(channel)
            .get_caller_identity(request)
            .await
            .map_err(super::status_error)
    })?;
    let identity = identity.into_inner();
    let now = super::now();
    let from_flag = args.auth.token_flag().is_some_and(|t| !t.trim().is_empty());
    let peek = session::peek(&token).unwrap_or_default();
    let expiration = if from_flag {
        OffsetDateTime::from_unix_timestamp(peek.exp)
            .ok()
            .filter(|_| peek.exp > 0)
    } else {
        ctx.cached()?.map(|c| c.expiration)
    };
    let source = if from_flag {
        "--token / STINT_TOKEN".to_string()
    } else {
        format!("profile '{}'", ctx.profile)
    };
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::json!({
                "arn": identity.arn,
                "account": identity.account,
                "user_id": identity.user_id,
                "credentials": source,
                "mfa": peek.stint.mfa_present,
                "expiration": expiration.map(rfc3339),
                "expires_in_seconds": expiration.map(|t| (t - now).whole_seconds()),
            });
            super::say(format_args!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            ))?;
        }
        OutputFormat::Text | OutputFormat::Env => {
            super::say(format_args!("arn:      {}", identity.arn))?;
            super::say(format_args!("account:  {}", identity.account))?;
            super::say(format_args!("user id:  {}", identity.user_id))?;
            super::say(format_args!("from:     {source}"))?;
            super::say(format_args!(
                "mfa:      {}",
                if peek.stint.mfa_present { "yes" } else { "no" }
            ))?;
            if let Some(t) = expiration {
                super::say(format_args!("expires:  {}", expiry(t, now)))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Revokes one cached session on its server, with its own token. Never fails the logout:
/// a refusal or an unreachable server is reported and the local copy is deleted anyway.
async fn revoke_own(ctx: &Context, name: &str, cached: &CachedSession, endpoint: &str) {
    let peek = session::peek(&cached.session_token).unwrap_or_default();
    let session_id = if peek.jti.is_empty() {
        cached.access_key_id.clone()
    } else {
        peek.jti
    };
    let until = rfc3339(cached.expiration);
    let channel = match ctx.channel_to(endpoint).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "warning: not revoked on the server ({e}); profile '{name}' stays valid until {until}"
            );
            return;
        }
    };
    let request = match bearer(
        RevokeSessionRequest {
            session_id: session_id.clone(),
            ..Default::default()
        },
        &cached.session_token,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: not revoked on the server ({e})");
            return;
        }
    };
    match TokensClient::new(channel).revoke_session(request).await {
        Ok(_) => eprintln!("Revoked session {session_id} on the server."),
        Err(s) if s.code() == tonic::Code::PermissionDenied => eprintln!(
            "note: the server did not let this session revoke itself (permission denied: {}); \
             it stays valid until {until}",
            s.message()
        ),
        // Already expired or revoked: nothing left to do.
        Err(s) if s.code() == tonic::Code::Unauthenticated => {}
        Err(s) => eprintln!(
            "warning: not revoked on the server ({}); it stays valid until {until}",
            super::status_error(s)
        ),
    }
}

pub fn logout(args: LogoutArgs, env: &Env) -> Result<ExitCode, CliError> {
    let mut ctx = Context::open(&args.conn, env)?;
    let names = [ctx.profile.clone(), format!("{}/role", ctx.profile)];
    let mut entries = Vec::new();
    for name in &names {
        if let Some(c) = ctx.creds.get(name)? {
            entries.push((name.clone(), c));
        }
    }
    if entries.is_empty() {
        eprintln!(
            "Not logged in (no cached session for profile '{}').",
            ctx.profile
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = super::now();
    if !args.no_revoke {
        let rt = runtime()?;
        for (name, cached) in &entries {
            if cached.expiration <= now {
                continue;
            }
            let endpoint = args
                .conn
                .endpoint
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| cached.endpoint.clone());
            rt.block_on(revoke_own(&ctx, name, cached, &endpoint));
        }
    }
    for (name, _) in &entries {
        ctx.creds.remove(name);
    }
    ctx.creds.save()?;
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "Logged out: removed profile {} from {}",
        names.join(" and "),
        ctx.creds.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(check_code("").is_ok());
        assert!(check_code("012345").is_ok());
        assert!(check_code("12345").is_err());
        assert!(check_code("12a456").is_err());
    }

    #[test]
    fn session_name_default() {
        let jwt = |sub: &str| {
            let body =
                data_encoding::BASE64URL_NOPAD.encode(format!(r#"{{"sub":"{sub}"}}"#).as_bytes());
            SecretString::new(format!("h.{body}.s"))
        };
        assert_eq!(
            default_session_name(&jwt("arn:stint:iam::1:user/bob")),
            "bob"
        );
        assert_eq!(
            default_session_name(&jwt("arn:stint:iam::1:user/b")),
            "stint-cli"
        );
        assert_eq!(
            default_session_name(&SecretString::new("x".into())),
            "stint-cli"
        );
    }

    #[test]
    fn login_ca_cert_is_kept_in_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let env = Env {
            stint_home: Some(dir.path().join("home")),
            home: None,
        };
        let conn = ConnFlags {
            profile: "ops".into(),
            ..ConnFlags::default()
        };
        let ctx = Context::open(&conn, &env).unwrap();
        remember_ca(&ctx, &pem).unwrap();
        let stored = dir.path().join("home").join("ca").join("ops.pem");
        assert_eq!(
            std::fs::read_to_string(&stored).unwrap(),
            std::fs::read_to_string(&pem).unwrap()
        );
        // The next command of that profile trusts it without the flag…
        let again = Context::open(&conn, &env).unwrap();
        assert_eq!(again.tls.ca_cert.as_deref(), Some(stored.as_path()));
        // …unless it is pointed at a plain-text endpoint.
        let plain = ConnFlags {
            endpoint: Some("http://127.0.0.1:7420".into()),
            ..conn.clone()
        };
        assert_eq!(Context::open(&plain, &env).unwrap().tls.ca_cert, None);
        // Not a certificate: refused, naming the file.
        std::fs::write(&pem, "hello").unwrap();
        let err = remember_ca(&ctx, &pem).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("not a PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a.b-c"), "'a.b-c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
