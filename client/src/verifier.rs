//! [`Verifier`]: offline verification of Stint tokens for apps.
//!
//! The public keys come from Stint's `Tokens.GetJwks` (the same document it serves at
//! `/.well-known/jwks.json`) over the client's channel, so the app needs no second HTTP
//! stack. They are cached; a token signed by a key the cache does not know triggers a
//! refetch — at most once per `min_refresh_interval`, so a flood of tokens with made-up
//! `kid`s cannot turn the app into a JWKS hammer. Signatures are checked by `jsonwebtoken`
//! with a ring provider that speaks EdDSA only (`alg: none` and HS* are refused before any
//! key is looked up); issuer, audience and the time window are checked against the
//! [`Clock`](crate::Clock) with a leeway.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::claims::Claims;
use crate::client::{Client, bearer_channel};
use crate::clock::{SharedClock, system_clock};
use crate::error::Error;
use crate::proto;
use crate::proto::tokens_client::TokensClient;
use crate::refresh::{RefreshingCredentials, backoff_delay};

/// Tokens longer than this are refused unparsed (Stint's are well under 2 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// A JWKS with more keys than this is refused (Stint publishes two or three).
pub const MAX_JWKS_KEYS: usize = 64;

/// What a [`Verifier`] accepts.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// The expected `iss` (Stint's `tokens.issuer`).
    pub issuer: String,
    /// The expected `aud` (this app's audience; Stint's default is `stint`).
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (30 s).
    pub leeway: Duration,
    /// At most one JWKS fetch per this interval (30 s).
    pub min_refresh_interval: Duration,
    /// Refetch the JWKS when the cached copy is older than this (1 h).
    pub max_cache_age: Duration,
}

impl VerifierConfig {
    /// Defaults for an issuer and audience.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(30),
            max_cache_age: Duration::from_secs(3600),
        }
    }
}

/// Why a token was refused. The messages never quote the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a JWT, or its claims are not Stint's.
    #[error("malformed token")]
    Malformed,
    /// Not EdDSA (e.g. `none` or `HS256`).
    #[error("algorithm {0} is not accepted (EdDSA only)")]
    UnsupportedAlgorithm(String),
    /// The header names no key.
    #[error("token header has no kid")]
    MissingKid,
    /// No published key has this id (even after refetching the JWKS).
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past `exp` (+ leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf`/`iat` (− leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is not this app.
    #[error("wrong audience")]
    WrongAudience,
    /// Revoked (learned from the `WatchRevocations` stream).
    #[error("token revoked")]
    Revoked,
    /// The JWKS could not be fetched or parsed.
    #[error("cannot load the JWKS: {0}")]
    Jwks(String),
}

/// Checks issuer, audience and the validity window at `now` (Unix seconds).
pub fn check_claims(claims: &Claims, config: &VerifierConfig, now: i64) -> Result<(), VerifyError> {
    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
    if claims.iss != config.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if claims.aud != config.audience {
        return Err(VerifyError::WrongAudience);
    }
    if now >= claims.exp.saturating_add(leeway) {
        return Err(VerifyError::Expired);
    }
    if now.saturating_add(leeway) < claims.nbf.max(claims.iat) {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<JwkJson>,
}

#[derive(Deserialize)]
struct JwkJson {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    kid: String,
}

/// Ed25519 keys by kid; other key types are skipped.
fn decoding_keys<'a>(
    keys: impl ExactSizeIterator<Item = (&'a str, &'a str, &'a str, &'a str)>,
) -> Result<HashMap<String, DecodingKey>, VerifyError> {
    if keys.len() > MAX_JWKS_KEYS {
        return Err(VerifyError::Jwks(format!("more than {MAX_JWKS_KEYS} keys")));
    }
    let mut out = HashMap::new();
    for (kty, crv, x, kid) in keys {
        if kty != "OKP" || crv != "Ed25519" || kid.is_empty() {
            continue;
        }
        let key = DecodingKey::from_ed_components(x)
            .map_err(|_| VerifyError::Jwks(format!("key {kid:?}: bad x")))?;
        out.insert(kid.to_owned(), key);
    }
    Ok(out)
}

fn keys_from_proto(
    response: &proto::GetJwksResponse,
) -> Result<HashMap<String, DecodingKey>, VerifyError> {
    decoding_keys(
        response
            .keys
            .iter()
            .map(|k| (k.kty.as_str(), k.crv.as_str(), k.x.as_str(), k.kid.as_str())),
    )
}

fn keys_from_json(jwks_json: &str) -> Result<HashMap<String, DecodingKey>, VerifyError> {
    let set: JwkSet =
        serde_json::from_str(jwks_json).map_err(|e| VerifyError::Jwks(e.to_string()))?;
    decoding_keys(
        set.keys
            .iter()
            .map(|k| (k.kty.as_str(), k.crv.as_str(), k.x.as_str(), k.kid.as_str())),
    )
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: SystemTime,
    last_attempt: Option<SystemTime>,
}

/// Revocations learned from `Tokens.WatchRevocations`, each kept until every token it
/// could match has expired.
#[derive(Default)]
struct Revoked {
    /// jti → keep until (Unix ms).
    sessions: HashMap<String, i64>,
    /// principal ARN → (issued-before cutoff, keep until), both Unix ms.
    principals: HashMap<String, (i64, i64)>,
    /// role ARN → (cutoff, keep until).
    roles: HashMap<String, (i64, i64)>,
    synced: bool,
}

/// Bound on the revocations a verifier keeps (the server's own bound on a stream).
pub const MAX_REVOCATIONS: usize = 100_000;

impl Revoked {
    fn len(&self) -> usize {
        self.sessions.len() + self.principals.len() + self.roles.len()
    }

    fn apply(&mut self, entry: proto::RevocationEntry, now_ms: i64) {
        if entry.end_of_snapshot {
            self.synced = true;
            return;
        }
        if self.len() >= MAX_REVOCATIONS {
            self.forget_expired(now_ms);
            if self.len() >= MAX_REVOCATIONS {
                tracing::warn!("more than {MAX_REVOCATIONS} revocations; ignoring the rest");
                return;
            }
        }
        let raise = |slot: &mut (i64, i64)| {
            slot.0 = slot.0.max(entry.issued_before_ms);
            slot.1 = slot.1.max(entry.keep_until_ms);
        };
        if !entry.session_id.is_empty() {
            let keep = self.sessions.entry(entry.session_id.clone()).or_default();
            *keep = (*keep).max(entry.keep_until_ms);
        } else if !entry.principal_arn.is_empty() {
            raise(
                self.principals
                    .entry(entry.principal_arn.clone())
                    .or_default(),
            );
        } else if !entry.role_arn.is_empty() {
            raise(self.roles.entry(entry.role_arn.clone()).or_default());
        }
    }

    fn forget_expired(&mut self, now_ms: i64) {
        self.sessions.retain(|_, keep| *keep > now_ms);
        self.principals.retain(|_, (_, keep)| *keep > now_ms);
        self.roles.retain(|_, (_, keep)| *keep > now_ms);
    }

    /// The server's rule, offline: the session's id, or a cutoff on its subject,
    /// principal or role later than its issue time. `iat` has whole seconds, so a token
    /// issued in the cutoff's own second counts as revoked (the safe side). A role
    /// session assumed from a session revoked by id is not caught here (its claims do
    /// not name its parent); `Authorize`/`Introspect` still refuse it.
    fn covers(&self, claims: &Claims) -> bool {
        if self.sessions.contains_key(&claims.jti) {
            return true;
        }
        let issued_ms = claims.iat.saturating_mul(1000);
        let before =
            |slot: Option<&(i64, i64)>| slot.is_some_and(|(cutoff, _)| issued_ms < *cutoff);
        before(self.principals.get(&claims.sub))
            || before(self.principals.get(&claims.stint.principal_arn))
            || claims
                .stint
                .role_arn
                .as_ref()
                .is_some_and(|role| before(self.roles.get(role)))
    }
}

struct Inner {
    revoked: RwLock<Revoked>,
    client: Option<Client>,
    config: VerifierConfig,
    clock: SharedClock,
    cache: RwLock<KeyCache>,
    fetch_lock: tokio::sync::Mutex<()>,
    validation: Validation,
}

/// Verifies Stint tokens offline. Clone it freely: clones share the key cache.
///
/// ```no_run
/// # async fn demo(token: &str) -> Result<(), Box<dyn std::error::Error>> {
/// use stint_client::{Client, Verifier, VerifierConfig};
///
/// let client = Client::connect("https://stint.example:8443").await?;
/// let verifier = Verifier::new(client, VerifierConfig::new("stint", "stint")).await?;
/// let claims = verifier.verify(token).await?;
/// println!("{} (MFA: {})", claims.sub, claims.stint.mfa_present);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Fetches the JWKS from Stint now (an error if that fails) and verifies against it.
    pub async fn new(client: Client, config: VerifierConfig) -> Result<Self, Error> {
        Self::with_clock(client, config, system_clock()).await
    }

    /// [`new`](Self::new) with a given clock (tests).
    pub async fn with_clock(
        client: Client,
        config: VerifierConfig,
        clock: SharedClock,
    ) -> Result<Self, Error> {
        let this = Self::build(Some(client), config, clock, HashMap::new());
        this.refresh().await.map_err(|e| match e {
            VerifyError::Jwks(message) => Error::Transport(message),
            other => Error::Transport(other.to_string()),
        })?;
        Ok(this)
    }

    /// A verifier over a fixed JWK Set (JSON), never refetched: for pinned keys and tests.
    pub fn from_jwks_json(
        jwks_json: &str,
        config: VerifierConfig,
        clock: SharedClock,
    ) -> Result<Self, VerifyError> {
        Ok(Self::build(None, config, clock, keys_from_json(jwks_json)?))
    }

    fn build(
        client: Option<Client>,
        config: VerifierConfig,
        clock: SharedClock,
        keys: HashMap<String, DecodingKey>,
    ) -> Self {
        crate::provider::install();
        // Signature and algorithm by jsonwebtoken; time, issuer and audience by
        // `check_claims` against our clock.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let fetched_at = clock.now();
        Self {
            inner: Arc::new(Inner {
                revoked: RwLock::new(Revoked::default()),
                client,
                config,
                clock,
                cache: RwLock::new(KeyCache {
                    keys,
                    fetched_at,
                    last_attempt: None,
                }),
                fetch_lock: tokio::sync::Mutex::new(()),
                validation,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// The key ids currently cached.
    pub fn cached_kids(&self) -> Vec<String> {
        let cache = self.inner.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut kids: Vec<String> = cache.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Refetches the JWKS now, unless one was fetched less than `min_refresh_interval` ago.
    /// Returns whether it fetched.
    pub async fn refresh(&self) -> Result<bool, VerifyError> {
        let Some(client) = &self.inner.client else {
            return Ok(false);
        };
        let _one_at_a_time = self.inner.fetch_lock.lock().await;
        let now = self.inner.clock.now();
        {
            let mut cache = self.inner.cache.write().unwrap_or_else(|e| e.into_inner());
            if let Some(last) = cache.last_attempt
                && now.duration_since(last).unwrap_or_default()
                    < self.inner.config.min_refresh_interval
            {
                return Ok(false);
            }
            cache.last_attempt = Some(now);
        }
        let response = TokensClient::new(client.channel())
            .get_jwks(proto::GetJwksRequest {})
            .await
            .map_err(|s| VerifyError::Jwks(Error::from(s).to_string()))?
            .into_inner();
        let keys = keys_from_proto(&response)?;
        tracing::debug!(keys = keys.len(), "stint JWKS fetched");
        let mut cache = self.inner.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.keys = keys;
        cache.fetched_at = now;
        Ok(true)
    }

    fn cached_key(&self, kid: &str) -> (Option<DecodingKey>, bool) {
        let cache = self.inner.cache.read().unwrap_or_else(|e| e.into_inner());
        let old = self
            .inner
            .clock
            .now()
            .duration_since(cache.fetched_at)
            .unwrap_or_default()
            > self.inner.config.max_cache_age;
        (cache.keys.get(kid).cloned(), old)
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = match self.cached_key(&kid) {
            (Some(key), false) => key,
            (cached, _) => {
                // Unknown kid (a rotation since the last fetch) or an old cache: refetch,
                // rate-limited. A failed refetch keeps the cached keys.
                if let Err(err) = self.refresh().await {
                    tracing::warn!(error = %err, "stint JWKS refresh failed");
                }
                match self.cached_key(&kid).0.or(cached) {
                    Some(key) => key,
                    None => return Err(VerifyError::UnknownKey(kid)),
                }
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    VerifyError::UnsupportedAlgorithm(format!("{:?}", header.alg))
                }
                _ => VerifyError::Malformed,
            },
        )?;
        let now = self
            .inner
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        check_claims(&data.claims, &self.inner.config, now)?;
        if self
            .inner
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .covers(&data.claims)
        {
            return Err(VerifyError::Revoked);
        }
        Ok(data.claims)
    }

    /// Follows `Tokens.WatchRevocations` with `credentials` (which need
    /// `stint:WatchRevocations`), so [`verify`](Self::verify) refuses a revoked token
    /// within seconds of its revocation instead of at its expiry. Reconnects with back-off
    /// when the stream breaks (the server resends its snapshot). Stops when the returned
    /// guard is dropped.
    pub fn follow_revocations(&self, credentials: RefreshingCredentials) -> RevocationFollower {
        let inner = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let Some(verifier) = inner.upgrade().map(|inner| Verifier { inner }) else {
                    return;
                };
                match verifier.follow_once(&credentials).await {
                    Ok(()) => failures = 0,
                    Err(err) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %err, failures, "stint revocation stream broke");
                    }
                }
                verifier
                    .inner
                    .revoked
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .synced = false;
                drop(verifier);
                let delay = backoff_delay(
                    failures.max(1),
                    Duration::from_secs(1),
                    Duration::from_secs(30),
                    0.1,
                    0.5,
                );
                tokio::time::sleep(delay).await;
            }
        });
        RevocationFollower(task.abort_handle())
    }

    async fn follow_once(&self, credentials: &RefreshingCredentials) -> Result<(), Error> {
        let session = credentials.session().await?;
        let mut stream = TokensClient::new(bearer_channel(
            self.inner
                .client
                .as_ref()
                .ok_or_else(|| {
                    Error::Config("a verifier over fixed keys cannot follow revocations".into())
                })?
                .channel(),
            &session.credentials().session_token,
        )?)
        .watch_revocations(proto::WatchRevocationsRequest {})
        .await?
        .into_inner();
        while let Some(entry) = stream.message().await? {
            let now_ms = unix_ms(self.inner.clock.now());
            let mut revoked = self
                .inner
                .revoked
                .write()
                .unwrap_or_else(|e| e.into_inner());
            revoked.apply(entry, now_ms);
        }
        Ok(())
    }

    /// Whether the revocation stream has delivered its snapshot (and is still connected).
    pub fn revocations_synced(&self) -> bool {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .synced
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Keeps a [`Verifier::follow_revocations`] task running; dropping it stops the task.
#[derive(Debug)]
pub struct RevocationFollower(tokio::task::AbortHandle);

impl Drop for RevocationFollower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;
    use crate::claims::{StintClaims, TokenKind};

    pub(crate) const NOW: i64 = 1_800_000_000;

    pub(crate) fn sample() -> Claims {
        Claims {
            iss: "stint".into(),
            sub: "arn:stint:iam::000000000000:user/svc".into(),
            aud: "orders".into(),
            iat: NOW - 60,
            nbf: NOW - 60,
            exp: NOW + 840,
            jti: "ASIA0000000000000001".into(),
            auth_time: NOW - 60,
            amr: vec!["key".into()],
            stint: StintClaims {
                kind: TokenKind::Session,
                account: "000000000000".into(),
                user_id: "AIDA1".into(),
                principal_arn: "arn:stint:iam::000000000000:user/svc".into(),
                role_arn: None,
                session_name: None,
                source_identity: None,
                mfa_present: false,
                mfa_auth_time: None,
                tags: BTreeMap::new(),
                transitive_tag_keys: vec![],
                chained: false,
            },
        }
    }

    pub(crate) fn config() -> VerifierConfig {
        VerifierConfig::new("stint", "orders")
    }

    pub(crate) struct TestKey {
        pub kid: String,
        pair: Ed25519KeyPair,
    }

    impl TestKey {
        pub fn new(kid: &str) -> Self {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            Self {
                kid: kid.into(),
                pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
            }
        }

        pub fn jwks(&self) -> String {
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                "kid": self.kid, "x": B64.encode(self.pair.public_key().as_ref())}]})
            .to_string()
        }

        pub fn sign_raw(&self, header: &serde_json::Value, claims: &Claims) -> String {
            let input = format!(
                "{}.{}",
                B64.encode(header.to_string()),
                B64.encode(serde_json::to_string(claims).unwrap())
            );
            let signature = self.pair.sign(input.as_bytes());
            format!("{input}.{}", B64.encode(signature.as_ref()))
        }

        pub fn sign(&self, claims: &Claims) -> String {
            self.sign_raw(
                &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid}),
                claims,
            )
        }
    }

    pub(crate) fn fixed_clock(now: i64) -> SharedClock {
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(now as u64))
    }

    #[test]
    fn claim_checks() {
        let c = config();
        let with = |f: fn(&mut Claims)| {
            let mut claims = sample();
            f(&mut claims);
            claims
        };
        let cases: Vec<(&str, Claims, i64, Result<(), VerifyError>)> = vec![
            ("valid", sample(), NOW, Ok(())),
            (
                "wrong issuer",
                with(|c| c.iss = "evil".into()),
                NOW,
                Err(VerifyError::WrongIssuer),
            ),
            (
                "wrong audience",
                with(|c| c.aud = "stint".into()),
                NOW,
                Err(VerifyError::WrongAudience),
            ),
            ("expired within leeway", sample(), NOW + 840 + 29, Ok(())),
            (
                "expired past leeway",
                sample(),
                NOW + 840 + 30,
                Err(VerifyError::Expired),
            ),
            ("nbf within leeway", with(|c| c.nbf = NOW + 30), NOW, Ok(())),
            (
                "nbf in the future",
                with(|c| c.nbf = NOW + 31),
                NOW,
                Err(VerifyError::NotYetValid),
            ),
            (
                "iat in the future",
                with(|c| c.iat = NOW + 31),
                NOW,
                Err(VerifyError::NotYetValid),
            ),
        ];
        for (name, claims, now, want) in cases {
            assert_eq!(check_claims(&claims, &c, now), want, "{name}");
        }
    }

    #[tokio::test]
    async fn verifies_and_refuses_forgeries() {
        let key = TestKey::new("k1");
        let verifier = Verifier::from_jwks_json(&key.jwks(), config(), fixed_clock(NOW)).unwrap();
        let token = key.sign(&sample());
        assert_eq!(verifier.verify(&token).await.unwrap(), sample());

        // Same kid, different key: bad signature.
        let forger = TestKey::new("k1");
        assert_eq!(
            verifier.verify(&forger.sign(&sample())).await,
            Err(VerifyError::BadSignature)
        );
        // A payload edited after signing.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut admin = sample();
        admin.sub = "arn:stint:iam::000000000000:user/admin".into();
        parts[1] = B64.encode(serde_json::to_string(&admin).unwrap());
        assert_eq!(
            verifier.verify(&parts.join(".")).await,
            Err(VerifyError::BadSignature)
        );
        // alg none, and HS256 keyed with the public key.
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","kid":"k1"}"#),
            B64.encode(serde_json::to_string(&sample()).unwrap())
        );
        assert_eq!(verifier.verify(&none).await, Err(VerifyError::Malformed));
        let hs = key.sign_raw(&serde_json::json!({"alg": "HS256", "kid": "k1"}), &sample());
        assert!(matches!(
            verifier.verify(&hs).await,
            Err(VerifyError::UnsupportedAlgorithm(_))
        ));
        // Unknown kid, missing kid, garbage, oversize.
        let other = TestKey::new("k2");
        assert_eq!(
            verifier.verify(&other.sign(&sample())).await,
            Err(VerifyError::UnknownKey("k2".into()))
        );
        let no_kid = key.sign_raw(&serde_json::json!({"alg": "EdDSA"}), &sample());
        assert_eq!(verifier.verify(&no_kid).await, Err(VerifyError::MissingKid));
        assert_eq!(
            verifier.verify("not.a.jwt").await,
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verifier.verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).await,
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn revocations_apply_like_the_server_rule() {
        let entry = |f: fn(&mut proto::RevocationEntry)| {
            let mut e = proto::RevocationEntry {
                keep_until_ms: (NOW + 3600) * 1000,
                ..Default::default()
            };
            f(&mut e);
            e
        };
        let mut role_session = sample();
        role_session.sub = "arn:stint:sts::000000000000:assumed-role/worker/batch".into();
        role_session.stint.role_arn = Some("arn:stint:iam::000000000000:role/worker".into());
        let cases: Vec<(&str, proto::RevocationEntry, Claims, bool)> = vec![
            (
                "its jti",
                entry(|e| e.session_id = "ASIA0000000000000001".into()),
                sample(),
                true,
            ),
            (
                "another jti",
                entry(|e| e.session_id = "ASIA9".into()),
                sample(),
                false,
            ),
            (
                "principal, cutoff after iat",
                entry(|e| {
                    e.principal_arn = "arn:stint:iam::000000000000:user/svc".into();
                    e.issued_before_ms = (NOW - 60) * 1000 + 1;
                }),
                sample(),
                true,
            ),
            (
                "principal, cutoff at iat",
                entry(|e| {
                    e.principal_arn = "arn:stint:iam::000000000000:user/svc".into();
                    e.issued_before_ms = (NOW - 60) * 1000;
                }),
                sample(),
                false,
            ),
            (
                "principal behind an assumed role",
                entry(|e| {
                    e.principal_arn = "arn:stint:iam::000000000000:user/svc".into();
                    e.issued_before_ms = NOW * 1000;
                }),
                role_session.clone(),
                true,
            ),
            (
                "its role",
                entry(|e| {
                    e.role_arn = "arn:stint:iam::000000000000:role/worker".into();
                    e.issued_before_ms = NOW * 1000;
                }),
                role_session.clone(),
                true,
            ),
            (
                "another role",
                entry(|e| {
                    e.role_arn = "arn:stint:iam::000000000000:role/other".into();
                    e.issued_before_ms = NOW * 1000;
                }),
                role_session,
                false,
            ),
        ];
        for (name, entry, claims, want) in cases {
            let mut revoked = Revoked::default();
            revoked.apply(entry, NOW * 1000);
            assert_eq!(revoked.covers(&claims), want, "{name}");
        }
        // Cutoffs only rise; expired entries are forgotten; the marker syncs.
        let mut revoked = Revoked::default();
        let principal = |cutoff: i64, keep: i64| proto::RevocationEntry {
            principal_arn: "p".into(),
            issued_before_ms: cutoff,
            keep_until_ms: keep,
            ..Default::default()
        };
        revoked.apply(principal(200, 1000), 0);
        revoked.apply(principal(100, 500), 0);
        assert_eq!(revoked.principals["p"], (200, 1000));
        revoked.forget_expired(1000);
        assert_eq!(revoked.len(), 0);
        assert!(!revoked.synced);
        revoked.apply(
            proto::RevocationEntry {
                end_of_snapshot: true,
                ..Default::default()
            },
            0,
        );
        assert!(revoked.synced && revoked.len() == 0);
    }

    #[tokio::test]
    async fn expiry_follows_the_clock() {
        let key = TestKey::new("k1");
        let late = Verifier::from_jwks_json(&key.jwks(), config(), fixed_clock(NOW + 900)).unwrap();
        assert_eq!(
            late.verify(&key.sign(&sample())).await,
            Err(VerifyError::Expired)
        );
    }
}
