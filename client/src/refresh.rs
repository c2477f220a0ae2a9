//! [`RefreshingCredentials`]: what a service calls once at startup.
//!
//! It logs in (and assumes a role, if configured), then keeps the credentials fresh:
//! a refresh is due at 80 % of the lifetime ± 10 % (jitter, so a fleet started together
//! does not refresh together); while Stint is down it retries with capped exponential
//! back-off (jittered too) and keeps serving the last good credentials until they expire.
//! Concurrent callers share one refresh. Time comes from a [`Clock`](crate::Clock), so tests
//! drive expiry without sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::{AssumeRole, Client, Credentials, LongTermCredential, Session};
use crate::clock::{SharedClock, system_clock};
use crate::error::Error;
use crate::secret::Secret;

/// The future a [`Source::from_fn`] closure returns.
pub type SessionFuture = Pin<Box<dyn Future<Output = Result<Session, Error>> + Send>>;

type FetchFn = dyn Fn(Client) -> SessionFuture + Send + Sync;

/// Where the first session comes from.
#[derive(Clone)]
pub enum Source {
    /// Log in with these long-term credentials each time.
    LongTerm(LongTermCredential),
    /// Any other way (a password prompt, a vault, credentials handed over by a parent):
    /// the closure gets the client and returns a session.
    Fetch(Arc<FetchFn>),
    /// `AssumeRoleWithWebIdentity` with the token in a file the platform rotates (a
    /// Kubernetes projected service-account token, a CI job's ID token): the file is read
    /// again on every refresh, so a rotated token is picked up. No login, no stored secret.
    WebIdentity(WebIdentity),
}

/// A role assumed with the OIDC token in a file (see [`Source::web_identity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebIdentity {
    /// The file holding the token (re-read on each refresh).
    pub token_file: PathBuf,
    /// The role to assume.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// Lifetime; `None` means the server's default (1 h).
    pub duration: Option<Duration>,
}

/// Session name when `STINT_ROLE_SESSION_NAME` is not set.
pub const DEFAULT_WEB_IDENTITY_SESSION_NAME: &str = "web-identity";

/// Bound on a token file: the server takes tokens of at most 20000 bytes.
const MAX_TOKEN_FILE_BYTES: u64 = 20_000;

impl WebIdentity {
    /// Reads the token now (a fresh read each call: the platform rotates the file).
    pub fn read_token(&self) -> Result<Secret, Error> {
        read_token_file(&self.token_file)
    }
}

/// The token in `path`, surrounding whitespace removed; an error names the file, never the
/// content.
pub fn read_token_file(path: &Path) -> Result<Secret, Error> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Source(format!("web identity token file {}: {e}", path.display())))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Source(format!("web identity token file {}: {e}", path.display())))?;
    let text = Secret::new(text);
    if text.expose().len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(Error::Source(format!(
            "web identity token file {}: larger than {MAX_TOKEN_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let token = text.expose().trim();
    if token.is_empty() {
        return Err(Error::Source(format!(
            "web identity token file {}: empty",
            path.display()
        )));
    }
    Ok(Secret::new(token.to_owned()))
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::LongTerm(credential) => f.debug_tuple("LongTerm").field(credential).finish(),
            Source::Fetch(_) => f.write_str("Fetch(..)"),
            Source::WebIdentity(w) => f.debug_tuple("WebIdentity").field(w).finish(),
        }
    }
}

/// Bound on a credentials file: it holds two short strings.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

impl Source {
    /// An access key.
    pub fn access_key(access_key_id: impl Into<String>, secret: Secret) -> Self {
        Source::LongTerm(LongTermCredential::AccessKey {
            access_key_id: access_key_id.into(),
            secret_access_key: secret,
        })
    }

    /// The access key in `STINT_ACCESS_KEY_ID` and `STINT_SECRET_ACCESS_KEY`.
    pub fn access_key_from_env() -> Result<Self, Error> {
        Self::access_key_from_vars(|name| std::env::var(name).ok())
    }

    fn access_key_from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let id = get("STINT_ACCESS_KEY_ID")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Source("STINT_ACCESS_KEY_ID is not set".into()))?;
        let secret = get("STINT_SECRET_ACCESS_KEY")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Source("STINT_SECRET_ACCESS_KEY is not set".into()))?;
        if !id.starts_with("AKIA") {
            return Err(Error::Source(
                "STINT_ACCESS_KEY_ID: expected a long-term key (AKIA…)".into(),
            ));
        }
        Ok(Self::access_key(id, Secret::new(secret)))
    }

    /// The access key in a JSON file: `{"access_key_id": "AKIA…", "secret_access_key":
    /// "…"}`, at the top level or under `"access_key"` (the shape `CreateAccessKey`
    /// prints).
    pub fn access_key_from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        use std::io::Read as _;
        let path = path.as_ref();
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
        let text = Secret::new(text);
        if text.expose().len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(Error::Source(format!(
                "{}: larger than {MAX_KEY_FILE_BYTES} bytes",
                path.display()
            )));
        }
        Self::access_key_from_json(text.expose())
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))
    }

    fn access_key_from_json(text: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON ({})", e.classify_name()))?;
        let object = value.get("access_key").unwrap_or(&value);
        let field = |name: &str| {
            object
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("missing string field {name:?}"))
        };
        let id = field("access_key_id")?;
        let secret = Secret::new(field("secret_access_key")?);
        Ok(Self::access_key(id, secret))
    }

    /// `AssumeRoleWithWebIdentity` of `role_arn` with the token in `token_file`.
    pub fn web_identity(
        token_file: impl Into<PathBuf>,
        role_arn: impl Into<String>,
        session_name: impl Into<String>,
    ) -> Self {
        Source::WebIdentity(WebIdentity {
            token_file: token_file.into(),
            role_arn: role_arn.into(),
            session_name: session_name.into(),
            duration: None,
        })
    }

    /// The web identity in `STINT_WEB_IDENTITY_TOKEN_FILE` and `STINT_ROLE_ARN` (and
    /// optionally `STINT_ROLE_SESSION_NAME`), as AWS SDKs read
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`/`AWS_ROLE_ARN`.
    pub fn web_identity_from_env() -> Result<Self, Error> {
        Self::web_identity_from_vars(|name| std::env::var(name).ok())
    }

    fn web_identity_from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let file = get("STINT_WEB_IDENTITY_TOKEN_FILE")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Source("STINT_WEB_IDENTITY_TOKEN_FILE is not set".into()))?;
        let role_arn = get("STINT_ROLE_ARN")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Source("STINT_ROLE_ARN is not set".into()))?;
        let session_name = get("STINT_ROLE_SESSION_NAME")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_WEB_IDENTITY_SESSION_NAME.into());
        Ok(Self::web_identity(file, role_arn, session_name))
    }

    /// A closure that produces a session.
    pub fn from_fn<F, Fut>(fetch: F) -> Self
    where
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Session, Error>> + Send + 'static,
    {
        Source::Fetch(Arc::new(move |client| Box::pin(fetch(client))))
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    // The category only: serde_json's message can quote the (secret) input.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

/// Tuning for [`RefreshingCredentials`].
#[derive(Clone, Debug)]
pub struct RefreshConfig {
    /// Assume this role after logging in (services usually do).
    pub role: Option<AssumeRole>,
    /// `GetSessionToken` lifetime; `None` means the server's default.
    pub session_duration: Option<Duration>,
    /// Refresh at this fraction of the lifetime (0.8).
    pub refresh_fraction: f64,
    /// ± this fraction of the lifetime (0.1) for the refresh point, and ± this fraction of
    /// each back-off delay.
    pub jitter: f64,
    /// First retry delay after a failed refresh (1 s); doubles per failure...
    pub backoff_initial: Duration,
    /// ...up to this (60 s).
    pub backoff_max: Duration,
    /// Refresh from a background task (true), so callers seldom wait; with `false`,
    /// refreshes happen only inside [`RefreshingCredentials::credentials`].
    pub background: bool,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            role: None,
            session_duration: None,
            refresh_fraction: 0.8,
            jitter: 0.1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            background: true,
        }
    }
}

impl RefreshConfig {
    fn validate(&self) -> Result<(), Error> {
        if !(self.refresh_fraction > 0.0 && self.refresh_fraction <= 1.0) {
            return Err(Error::Config("refresh_fraction: must be in (0, 1]".into()));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(Error::Config("jitter: must be in [0, 0.5]".into()));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(Error::Config(
                "backoff_initial/backoff_max: need 0 < initial <= max".into(),
            ));
        }
        Ok(())
    }
}

/// `fraction ± jitter` of `lifetime`; `unit` is uniform in [0, 1).
pub fn refresh_delay(lifetime: Duration, fraction: f64, jitter: f64, unit: f64) -> Duration {
    let f = (fraction + jitter * (2.0 * unit - 1.0)).clamp(0.0, 1.0);
    lifetime.mul_f64(f)
}

/// The delay before retry number `failures` (1 = first retry): `initial · 2^(failures−1)`
/// ± `jitter`, never above `max`. `unit` is uniform in [0, 1).
pub fn backoff_delay(
    failures: u32,
    initial: Duration,
    max: Duration,
    jitter: f64,
    unit: f64,
) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let base = initial.saturating_mul(1u32 << doublings).min(max);
    let factor = (1.0 + jitter * (2.0 * unit - 1.0)).max(0.0);
    base.mul_f64(factor).min(max)
}

/// A uniform number in [0, 1) from the system RNG (0.5 if it fails: no jitter then).
fn unit_random() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// How the credentials are doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialState {
    /// Valid, and the last refresh (if any) worked.
    Fresh,
    /// A refresh is in flight.
    Refreshing,
    /// Still valid, but the last refresh failed; retrying with back-off.
    Stale {
        /// Why the last refresh failed.
        last_error: String,
    },
    /// No valid credentials.
    Expired,
}

struct Shared {
    current: Option<Credentials>,
    refresh_at: SystemTime,
    retry_at: SystemTime,
    failures: u32,
    last_error: Option<String>,
    in_flight: bool,
    /// Bumped by every finished refresh attempt: a caller that waited for the refresh lock
    /// sees someone else's attempt and does not repeat it.
    generation: u64,
}

struct Inner {
    client: Client,
    source: Source,
    config: RefreshConfig,
    clock: SharedClock,
    shared: Mutex<Shared>,
    refresh_lock: tokio::sync::Mutex<()>,
}

enum Next {
    Serve(Credentials),
    Refresh(u64),
}

impl Inner {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self, now: SystemTime) -> Next {
        let s = self.shared();
        match &s.current {
            Some(c) if c.is_valid_at(now) && (now < s.refresh_at || now < s.retry_at) => {
                Next::Serve(c.clone())
            }
            // Expired or never fetched: still honour the back-off.
            _ if now < s.retry_at => match &s.current {
                Some(c) if c.is_valid_at(now) => Next::Serve(c.clone()),
                _ => Next::Refresh(u64::MAX),
            },
            _ => Next::Refresh(s.generation),
        }
    }

    async fn fetch(&self) -> Result<Credentials, Error> {
        let session = match &self.source {
            Source::LongTerm(credential) => {
                self.client
                    .get_session_token(credential, None, self.config.session_duration)
                    .await?
            }
            Source::Fetch(fetch) => fetch(self.client.clone()).await?,
            Source::WebIdentity(w) => {
                let token = w.read_token()?;
                self.client
                    .assume_role_with_web_identity(&w.role_arn, &w.session_name, &token, w.duration)
                    .await?
            }
        };
        let session = match &self.config.role {
            Some(role) => session.assume_role(role.clone()).await?,
            None => session,
        };
        Ok(session.credentials().clone())
    }

    async fn refresh(self: Arc<Self>, seen_generation: u64) {
        let _one_at_a_time = self.refresh_lock.lock().await;
        {
            let mut s = self.shared();
            if s.generation != seen_generation {
                return;
            }
            s.in_flight = true;
        }
        let result = self.fetch().await;
        let now = self.clock.now();
        let mut s = self.shared();
        s.in_flight = false;
        s.generation += 1;
        match result {
            Ok(credentials) => {
                let lifetime = credentials
                    .expiration
                    .duration_since(now)
                    .unwrap_or_default();
                s.refresh_at = now
                    + refresh_delay(
                        lifetime,
                        self.config.refresh_fraction,
                        self.config.jitter,
                        unit_random(),
                    );
                s.retry_at = UNIX_EPOCH;
                s.failures = 0;
                s.last_error = None;
                tracing::debug!(access_key_id = %credentials.access_key_id, "stint credentials refreshed");
                s.current = Some(credentials);
            }
            Err(err) => {
                s.failures = s.failures.saturating_add(1);
                let delay = backoff_delay(
                    s.failures,
                    self.config.backoff_initial,
                    self.config.backoff_max,
                    self.config.jitter,
                    unit_random(),
                );
                s.retry_at = now + delay;
                tracing::warn!(error = %err, failures = s.failures, retry_in = ?delay, "stint credential refresh failed");
                s.last_error = Some(err.to_string());
            }
        }
    }
}

/// Credentials that keep themselves fresh. Clone it freely: clones share one state.
///
/// ```no_run
/// # async fn demo() -> Result<(), stint_client::Error> {
/// use stint_client::{AssumeRole, Client, RefreshConfig, RefreshingCredentials, Source};
///
/// let client = Client::connect_lazy("https://stint.example:8443")?;
/// let credentials = RefreshingCredentials::start(
///     client,
///     Source::access_key_from_env()?,
///     RefreshConfig {
///         role: Some(AssumeRole::new("arn:stint:iam::000000000000:role/reports-reader", "reports")),
///         ..RefreshConfig::default()
///     },
/// )
/// .await?;
/// // Before each call to another service:
/// let token = credentials.credentials().await?.session_token;
/// # let _ = token; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RefreshingCredentials {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RefreshingCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingCredentials")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl RefreshingCredentials {
    /// Logs in now (an error if that fails) and keeps the credentials fresh from then on.
    pub async fn start(
        client: Client,
        source: Source,
        config: RefreshConfig,
    ) -> Result<Self, Error> {
        Self::start_with_clock(client, source, config, system_clock()).await
    }

    /// [`start`](Self::start) with a given clock (tests).
    pub async fn start_with_clock(
        client: Client,
        source: Source,
        config: RefreshConfig,
        clock: SharedClock,
    ) -> Result<Self, Error> {
        config.validate()?;
        let background = config.background;
        let this = Self {
            inner: Arc::new(Inner {
                client,
                source,
                config,
                clock,
                shared: Mutex::new(Shared {
                    current: None,
                    refresh_at: UNIX_EPOCH,
                    retry_at: UNIX_EPOCH,
                    failures: 0,
                    last_error: None,
                    in_flight: false,
                    generation: 0,
                }),
                refresh_lock: tokio::sync::Mutex::new(()),
            }),
        };
        this.credentials().await?;
        if background {
            tokio::spawn(background_refresh(Arc::downgrade(&this.inner)));
        }
        Ok(this)
    }

    /// Valid credentials: the current ones, or — when a refresh is due and not backing off —
    /// freshly fetched ones (concurrent callers share that one fetch). While Stint is down
    /// this serves the last good credentials until they expire, then fails with
    /// [`Error::Expired`].
    pub async fn credentials(&self) -> Result<Credentials, Error> {
        let now = self.inner.clock.now();
        match self.inner.next(now) {
            Next::Serve(credentials) => return Ok(credentials),
            Next::Refresh(u64::MAX) => {}
            Next::Refresh(generation) => {
                // A task of its own, so a caller that gives up cannot leave it half done.
                let _ = tokio::spawn(self.inner.clone().refresh(generation)).await;
            }
        }
        let now = self.inner.clock.now();
        let s = self.inner.shared();
        match &s.current {
            Some(c) if c.is_valid_at(now) => Ok(c.clone()),
            _ => Err(Error::Expired {
                last_error: s
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no credentials yet".into()),
            }),
        }
    }

    /// The state right now.
    pub fn state(&self) -> CredentialState {
        let now = self.inner.clock.now();
        let s = self.inner.shared();
        let valid = s.current.as_ref().is_some_and(|c| c.is_valid_at(now));
        if s.in_flight {
            CredentialState::Refreshing
        } else if !valid {
            CredentialState::Expired
        } else if let Some(last_error) = &s.last_error {
            CredentialState::Stale {
                last_error: last_error.clone(),
            }
        } else {
            CredentialState::Fresh
        }
    }

    /// When the next refresh (or retry) is due.
    pub fn next_refresh(&self) -> SystemTime {
        let s = self.inner.shared();
        s.refresh_at.max(s.retry_at)
    }

    /// A [`Session`] with the current credentials.
    pub async fn session(&self) -> Result<Session, Error> {
        Ok(self.inner.client.session(self.credentials().await?))
    }
}

/// Sleeps until the next refresh is due (re-reading the clock at least every minute, so a
/// suspended laptop or a jumped clock is noticed), then refreshes. Ends with the last
/// handle.
async fn background_refresh(inner: Weak<Inner>) {
    loop {
        let wait = match inner.upgrade() {
            Some(inner) => {
                let this = RefreshingCredentials { inner };
                let due = this.next_refresh();
                let now = this.inner.clock.now();
                due.duration_since(now).unwrap_or_default()
            }
            None => return,
        };
        tokio::time::sleep(wait.clamp(Duration::from_millis(100), Duration::from_secs(60))).await;
        match inner.upgrade() {
            Some(inner) => {
                let _ = RefreshingCredentials { inner }.credentials().await;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn refresh_point_is_eighty_percent_plus_minus_ten() {
        let hour = S(3600);
        for (unit, want) in [(0.0, 2520), (0.5, 2880), (0.999_999, 3240)] {
            let got = refresh_delay(hour, 0.8, 0.1, unit).as_secs();
            assert!(got.abs_diff(want) <= 1, "unit {unit}: {got} != {want}");
        }
        // Never past the lifetime, never negative.
        assert_eq!(
            refresh_delay(hour, 1.0, 0.5, 0.999_999_9),
            hour.mul_f64(1.0)
        );
        assert_eq!(refresh_delay(hour, 0.1, 0.5, 0.0), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_jitters_and_caps() {
        let (initial, max) = (S(1), S(60));
        // Without jitter (unit 0.5): 1, 2, 4, ..., capped at 60.
        for (failures, want) in [
            (1, 1),
            (2, 2),
            (3, 4),
            (6, 32),
            (7, 60),
            (40, 60),
            (u32::MAX, 60),
        ] {
            assert_eq!(
                backoff_delay(failures, initial, max, 0.1, 0.5),
                S(want),
                "{failures}"
            );
        }
        // ±10 % around the doubled delay.
        assert_eq!(
            backoff_delay(3, initial, max, 0.1, 0.0),
            Duration::from_millis(3600)
        );
        let high = backoff_delay(3, initial, max, 0.1, 0.999_999);
        assert!(
            high > Duration::from_millis(4399) && high < Duration::from_millis(4401),
            "{high:?}"
        );
        // Jitter never lifts a capped delay above the cap.
        assert_eq!(backoff_delay(10, initial, max, 0.1, 0.999_999), max);
        assert!(backoff_delay(10, initial, max, 0.1, 0.0) >= S(54));
    }

    #[test]
    fn config_is_validated() {
        let bad = [
            RefreshConfig {
                refresh_fraction: 0.0,
                ..RefreshConfig::default()
            },
            RefreshConfig {
                refresh_fraction: 1.5,
                ..RefreshConfig::default()
            },
            RefreshConfig {
                jitter: 0.9,
                ..RefreshConfig::default()
            },
            RefreshConfig {
                backoff_initial: Duration::ZERO,
                ..RefreshConfig::default()
            },
            RefreshConfig {
                backoff_max: Duration::from_millis(10),
                ..RefreshConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!(RefreshConfig::default().validate().is_ok());
    }

    #[test]
    fn access_key_sources() {
        let vars = |id: Option<&str>, secret: Option<&str>| {
            let (id, secret) = (id.map(str::to_owned), secret.map(str::to_owned));
            move |name: &str| match name {
                "STINT_ACCESS_KEY_ID" => id.clone(),
                "STINT_SECRET_ACCESS_KEY" => secret.clone(),
                _ => None,
            }
        };
        assert!(Source::access_key_from_vars(vars(Some("AKIA1"), Some("s"))).is_ok());
        let err = Source::access_key_from_vars(vars(None, Some("s"))).unwrap_err();
        assert!(err.to_string().contains("STINT_ACCESS_KEY_ID"), "{err}");
        let err = Source::access_key_from_vars(vars(Some("AKIA1"), Some(""))).unwrap_err();
        assert!(err.to_string().contains("STINT_SECRET_ACCESS_KEY"), "{err}");
        let err = Source::access_key_from_vars(vars(Some("ASIA1"), Some("s"))).unwrap_err();
        assert!(err.to_string().contains("AKIA"), "{err}");

        for json in [
            r#"{"access_key_id":"AKIA1","secret_access_key":"s3cr3t"}"#,
            r#"{"access_key":{"access_key_id":"AKIA1","secret_access_key":"s3cr3t"}}"#,
        ] {
            match Source::access_key_from_json(json).unwrap() {
                Source::LongTerm(LongTermCredential::AccessKey {
                    access_key_id,
                    secret_access_key,
                }) => {
                    assert_eq!(access_key_id, "AKIA1");
                    assert_eq!(secret_access_key.expose(), "s3cr3t");
                }
                other => panic!("{other:?}"),
            }
        }
        let err = Source::access_key_from_json(r#"{"secret_access_key": 5, "x": "s3cr3t"#)
            .err()
            .unwrap();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn web_identity_sources() {
        let vars = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let role = "arn:stint:iam::000000000000:role/app";
        type Vars<'a> = &'a [(&'a str, &'a str)];
        // Ok((token file, session name)) or Err(the variable the error names).
        type Want<'a> = Result<(&'a str, &'a str), &'a str>;
        let cases: [(Vars, Want); 5] = [
            (
                &[
                    ("STINT_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
                    ("STINT_ROLE_ARN", role),
                ],
                Ok(("/var/run/token", DEFAULT_WEB_IDENTITY_SESSION_NAME)),
            ),
            (
                &[
                    ("STINT_WEB_IDENTITY_TOKEN_FILE", "/t"),
                    ("STINT_ROLE_ARN", role),
                    ("STINT_ROLE_SESSION_NAME", "pod-7"),
                ],
                Ok(("/t", "pod-7")),
            ),
            (
                &[("STINT_ROLE_ARN", role)],
                Err("STINT_WEB_IDENTITY_TOKEN_FILE"),
            ),
            (
                &[
                    ("STINT_WEB_IDENTITY_TOKEN_FILE", "/t"),
                    ("STINT_ROLE_ARN", ""),
                ],
                Err("STINT_ROLE_ARN"),
            ),
            (
                &[
                    ("STINT_WEB_IDENTITY_TOKEN_FILE", ""),
                    ("STINT_ROLE_ARN", role),
                ],
                Err("STINT_WEB_IDENTITY_TOKEN_FILE"),
            ),
        ];
        for (pairs, want) in cases {
            let got = Source::web_identity_from_vars(vars(pairs));
            match (got, want) {
                (Ok(Source::WebIdentity(w)), Ok((file, session))) => {
                    assert_eq!(w.token_file, PathBuf::from(file));
                    assert_eq!(w.role_arn, role);
                    assert_eq!(w.session_name, session);
                }
                (Err(err), Err(name)) => assert!(err.to_string().contains(name), "{err}"),
                (got, want) => panic!("{pairs:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn token_files_are_read_fresh_trimmed_and_bounded() {
        let dir = std::env::temp_dir().join(format!("stint-wif-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let source = WebIdentity {
            token_file: path.clone(),
            role_arn: "r".into(),
            session_name: "s".into(),
            duration: None,
        };
        let err = source.read_token().unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
        std::fs::write(&path, "eyJ.first.sig\n").unwrap();
        assert_eq!(source.read_token().unwrap().expose(), "eyJ.first.sig");
        // Rotated by the platform: the next read sees the new token.
        std::fs::write(&path, "eyJ.second.sig").unwrap();
        assert_eq!(source.read_token().unwrap().expose(), "eyJ.second.sig");
        std::fs::write(&path, "  \n").unwrap();
        assert!(
            source
                .read_token()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(&path, "s3cr3t".repeat(4000)).unwrap();
        let err = source.read_token().unwrap_err().to_string();
        assert!(
            err.contains("larger than") && !err.contains("s3cr3t"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A controllable clock and a source that fails while `down` is set.
    struct Fake {
        now: Arc<Mutex<SystemTime>>,
        down: Arc<std::sync::atomic::AtomicBool>,
        fetches: Arc<AtomicU32>,
    }

    fn fake_setup(lifetime: Duration) -> (Fake, Source, SharedClock) {
        let now = Arc::new(Mutex::new(UNIX_EPOCH + S(1_000_000)));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetches = Arc::new(AtomicU32::new(0));
        let source = {
            let (now, down, fetches) = (now.clone(), down.clone(), fetches.clone());
            Source::from_fn(move |client: Client| {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                let at = *now.lock().unwrap();
                let down = down.load(Ordering::SeqCst);
                async move {
                    tokio::task::yield_now().await;
                    if down {
                        return Err(Error::Transport("connection refused".into()));
                    }
                    Ok(client.session(Credentials {
                        access_key_id: format!("ASIA{n}"),
                        session_token: Secret::new(format!("token{n}")),
                        expiration: at + lifetime,
                    }))
                }
            })
        };
        let clock: SharedClock = {
            let now = now.clone();
            Arc::new(move || *now.lock().unwrap())
        };
        (Fake { now, down, fetches }, source, clock)
    }

    impl Fake {
        fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += by;
        }
    }

    fn lazy_client() -> Client {
        Client::connect_lazy("http://127.0.0.1:9").unwrap()
    }

    fn quiet() -> RefreshConfig {
        RefreshConfig {
            background: false,
            ..RefreshConfig::default()
        }
    }

    #[tokio::test]
    async fn refreshes_ahead_of_expiry_backs_off_and_serves_stale() {
        let (fake, source, clock) = fake_setup(S(1000));
        let creds = RefreshingCredentials::start_with_clock(lazy_client(), source, quiet(), clock)
            .await
            .unwrap();
        assert_eq!(creds.credentials().await.unwrap().access_key_id, "ASIA1");
        assert_eq!(creds.state(), CredentialState::Fresh);
        // Before 70 % of the lifetime: no refresh.
        fake.advance(S(699));
        assert_eq!(creds.credentials().await.unwrap().access_key_id, "ASIA1");
        // After 90 %: refreshed.
        fake.advance(S(201));
        assert_eq!(creds.credentials().await.unwrap().access_key_id, "ASIA2");
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);

        // Stint goes down past the next refresh point: the old credentials are served,
        // the state says why, and retries back off.
        fake.down.store(true, Ordering::SeqCst);
        fake.advance(S(901));
        assert_eq!(creds.credentials().await.unwrap().access_key_id, "ASIA2");
        assert!(
            matches!(creds.state(), CredentialState::Stale { ref last_error } if last_error.contains("connection refused"))
        );
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 3);
        // Within the back-off (≤ 1.1 s): no new attempt.
        assert_eq!(creds.credentials().await.unwrap().access_key_id, "ASIA2");
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 3);
        // After it: one more attempt, then a longer back-off (≥ 1.8 s).
        fake.advance(Duration::from_millis(1200));
        creds.credentials().await.unwrap();
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 4);
        fake.advance(Duration::from_millis(1700));
        creds.credentials().await.unwrap();
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 4);

        // Past expiry: an error naming the cause, state Expired.
        fake.advance(S(100));
        let err = creds.credentials().await.unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err:?}");
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert_eq!(creds.state(), CredentialState::Expired);

        // Stint is back: the next call after the back-off recovers.
        fake.down.store(false, Ordering::SeqCst);
        fake.advance(S(61));
        let back = creds.credentials().await.unwrap();
        assert_eq!(creds.state(), CredentialState::Fresh);
        assert!(back.access_key_id.starts_with("ASIA"));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let (fake, source, clock) = fake_setup(S(1000));
        let creds = RefreshingCredentials::start_with_clock(lazy_client(), source, quiet(), clock)
            .await
            .unwrap();
        fake.advance(S(950));
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let creds = creds.clone();
                tokio::spawn(async move { creds.credentials().await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().access_key_id, "ASIA2");
        }
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
    }

    /// The background task refreshes without any caller (tokio's paused time stands in for
    /// the sleeps; the fake clock for the credentials' lifetime).
    #[tokio::test(start_paused = true)]
    async fn the_background_task_refreshes_on_its_own() {
        let (fake, source, clock) = fake_setup(S(1000));
        let creds = RefreshingCredentials::start_with_clock(
            lazy_client(),
            source,
            RefreshConfig::default(),
            clock,
        )
        .await
        .unwrap();
        tokio::time::sleep(S(120)).await;
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1, "not due yet");
        fake.advance(S(950));
        tokio::time::sleep(S(61)).await;
        assert_eq!(
            fake.fetches.load(Ordering::SeqCst),
            2,
            "refreshed in the background"
        );
        assert_eq!(creds.state(), CredentialState::Fresh);
    }

    #[tokio::test]
    async fn a_failed_start_is_an_error() {
        let (fake, source, clock) = fake_setup(S(1000));
        fake.down.store(true, Ordering::SeqCst);
        let err = RefreshingCredentials::start_with_clock(lazy_client(), source, quiet(), clock)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
    }
}
