//! Use cases: where a request becomes a decision.
//!
//! Each public method of [`Broker`] is one use case (log in, assume a role, create a user…):
//! load the principal, evaluate policy, change state or mint, write the audit event, answer.
//! gRPC handlers, the CLI and tests all call these same functions, so there is one place
//! where each rule is enforced. The clock is injected ([`Clock`]) so expiry can be tested
//! without sleeping.

mod audit;
mod caller;
mod error;
mod hash_pool;
mod iam;
mod keys;
mod login;
mod oidc_fetch;
mod review;
mod session_cache;
mod sts;
mod sweep;
mod tokens;
mod web_identity;

pub use audit::{AuditWatch, WATCHES_PER_CALLER, WATCHES_TOTAL};
pub use caller::{Caller, RequestMeta};
pub use error::BrokerError;
pub use hash_pool::{HashPoolStats, PoolBusy, share_core};
pub use iam::{Holder, OidcProvider, OidcProviderInput, Page};
pub use keys::{KeyRing, ScheduledRotation};
pub use review::{Grant, SimulationInput, SimulationResult};
pub use session_cache::{MAX_CACHED_TOKENS, SHARED_REFRESH};
pub use sts::{AssumeRoleInput, AssumedRole, Issued, LoginCredential, SessionTokenInput};
pub use sweep::SweepReport;
pub use tokens::{AuthorizeOutcome, MAX_REVOCATIONS_STREAMED, RevocationEntry, RevocationWatch};
pub use web_identity::{WebIdentityAssumed, WebIdentityInput};

/// The clock lives in `core::time`; re-exported here where the use cases take it.
pub use crate::core::time::{Clock, ManualClock, SystemClock, unix_ms, unix_secs};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};

use crate::audit::writer::AuditLog;
use crate::core::authn::lockout::LockoutPolicy;
use crate::core::authn::password::{self, Argon2Params};
use crate::core::model::Account;
use crate::core::policy::{Policy, PolicyKind};
use crate::core::secret::SecretString;
use crate::store::Store;
use crate::store::seal::MasterKey;

/// Settings the use cases need (a projection of the daemon config).
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub account: Account,
    pub issuer: String,
    pub audience: String,
    pub clock_skew: Duration,
    pub argon2: Argon2Params,
    pub lockout: LockoutPolicy,
    /// Threads hashing passwords (argon2id), apart from the async workers and the
    /// blocking pool.
    pub hash_threads: usize,
    /// Hashes that may wait for a thread; one more is refused at once (`RESOURCE_EXHAUSTED`).
    pub hash_queue: usize,
}

/// Hashing threads when `limits.hash_threads` is 0: one per core.
pub fn default_hash_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Hashes that may wait for a thread by default.
pub const DEFAULT_HASH_QUEUE: usize = 64;

impl BrokerSettings {
    pub fn dev(account: Account) -> Self {
        Self {
            account,
            issuer: "stint".into(),
            audience: "stint".into(),
            clock_skew: Duration::from_secs(60),
            argon2: Argon2Params::default(),
            lockout: LockoutPolicy::default(),
            hash_threads: default_hash_threads(),
            hash_queue: DEFAULT_HASH_QUEUE,
        }
    }
}

pub struct Broker {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) master: MasterKey,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) settings: BrokerSettings,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: SystemRandom,
    /// Password hashes run here (see `hash_pool`), never on the async workers.
    hash_pool: hash_pool::HashPool,
    /// Open `WatchEvents` streams, capped per caller and in all.
    pub(crate) watches: Arc<audit::WatchSlots>,
    /// Open `WatchRevocations` streams, capped like `WatchEvents` (slots of their own).
    pub(crate) revocation_watches: Arc<audit::WatchSlots>,
    /// Bumped for each applied revocation (by the audit log's applied hook, even when the
    /// request that made it was dropped): wakes the `WatchRevocations` streams.
    pub(crate) revocations_changed: tokio::sync::watch::Sender<u64>,
    compiled: Mutex<CompiledPolicies>,
    dummy_phc: String,
    /// OIDC providers' fetched signing keys (`AssumeRoleWithWebIdentity`).
    web_identity_keys: web_identity::KeyCache,
    /// Verified tokens, compiled session policies, revocations (see `session_cache`).
    pub(crate) cache: Arc<session_cache::SessionCache>,
}

/// Most compiled policies kept, and most bytes of their texts.
const MAX_COMPILED_POLICIES: usize = 20_000;
const MAX_COMPILED_POLICY_TEXT_BYTES: usize = 16 << 20;

/// Compiled policies by kind, then by document text (looked up without allocating).
#[derive(Default)]
struct CompiledPolicies {
    by_kind: HashMap<PolicyKind, HashMap<String, Arc<Policy>>>,
    text_bytes: usize,
}

impl Broker {
    /// Assembles the broker over an opened store, audit log and master key, loading the
    /// signing keys (and creating the first one if the store has none).
    pub fn new(
        store: Arc<dyn Store>,
        audit: Arc<AuditLog>,
        master: MasterKey,
        settings: BrokerSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, BrokerError> {
        let rng = SystemRandom::new();
        // A new store's first keys land in one batch with the event that opens the
        // rotation log, made durable before the broker serves anything.
        let now = clock.now();
        if let Some((batch, first)) = keys::first_keys(store.as_ref(), &master, &rng, now)? {
            match audit.commit_now(keys::first_keys_event(&first, now), batch) {
                // Another replica starting on the same database made them first.
                Ok(_) | Err(crate::audit::AuditError::Conflict) => {}
                Err(err) => return Err(err.into()),
            }
            store.flush()?;
        }
        let keys = Arc::new(KeyRing::load(store.as_ref(), &master, &settings)?);
        let dummy_phc = crate::core::authn::password::dummy_phc(&settings.argon2)?;
        let broker = Arc::new(Self {
            hash_pool: hash_pool::HashPool::new(settings.hash_threads, settings.hash_queue)
                .map_err(|e| BrokerError::Internal(format!("cannot start hash threads: {e}")))?,
            watches: Arc::new(audit::WatchSlots::default()),
            revocation_watches: Arc::new(audit::WatchSlots::default()),
            revocations_changed: tokio::sync::watch::Sender::new(0),
            store,
            audit,
            master,
            keys,
            settings,
            clock,
            rng,
            compiled: Mutex::default(),
            dummy_phc,
            web_identity_keys: web_identity::KeyCache::default(),
            cache: Arc::default(),
        });
        broker
            .cache
            .load_revocations(broker.store.as_ref(), broker.clock.now())?;
        // Every applied change reaches the cache, even one whose request was dropped
        // before it was answered (its change is in the store all the same).
        // `WatchRevocations` streams are woken the same way.
        let (cache, clock) = (broker.cache.clone(), broker.clock.clone());
        let revocations_changed = broker.revocations_changed.clone();
        broker.audit.on_applied(move |change| {
            if cache.applied(change, unix_ms(clock.now())) {
                revocations_changed.send_modify(|n| *n += 1);
            }
        });
        Ok(broker)
    }

    pub fn account(&self) -> &Account {
        &self.settings.account
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn audit_log(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    pub(crate) fn random<const N: usize>(&self) -> Result<[u8; N], BrokerError> {
        let mut out = [0u8; N];
        self.rng
            .fill(&mut out)
            .map_err(|_| BrokerError::Internal("system random number generator failed".into()))?;
        Ok(out)
    }

    /// Compiles a stored (already validated) document, caching the compiled form.
    pub(crate) fn compiled(
        &self,
        kind: PolicyKind,
        document: &str,
    ) -> Result<Arc<Policy>, BrokerError> {
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(policy) = cache
            .by_kind
            .get(&kind)
            .and_then(|by_text| by_text.get(document))
        {
            return Ok(policy.clone());
        }
        let policy = Arc::new(Policy::parse(document, kind).map_err(|err| {
            BrokerError::Internal(format!("stored policy no longer parses: {err}"))
        })?);
        // Session policies are the caller's own text: bounded in count and in bytes (a
        // compiled document takes a few times its text).
        let entries: usize = cache.by_kind.values().map(HashMap::len).sum();
        if entries >= MAX_COMPILED_POLICIES
            || cache.text_bytes + document.len() > MAX_COMPILED_POLICY_TEXT_BYTES
        {
            *cache = CompiledPolicies::default();
        }
        cache.text_bytes += document.len();
        cache
            .by_kind
            .entry(kind)
            .or_default()
            .insert(document.to_owned(), policy.clone());
        Ok(policy)
    }

    /// Runs a password hash or verification on the hash pool; a full queue is refused at
    /// once with [`BrokerError::Overloaded`], nothing hashed.
    pub(crate) async fn hash_job<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut hash_pool::Pause) -> T + Send + 'static,
    ) -> Result<T, BrokerError> {
        self.hash_pool.run(job).await.map_err(|err| match err {
            hash_pool::PoolError::Busy(busy) => BrokerError::Overloaded {
                what: format!(
                    "password checks: {} already wait (limits.hash_queue)",
                    busy.queued
                ),
                retry_after: busy.retry_after,
            },
            hash_pool::PoolError::Lost => BrokerError::Internal("hash job failed".into()),
        })
    }

    /// Hashes a new password with the configured cost on the hash pool, in slices that
    /// share the core with the request workers.
    pub(crate) async fn hash_password_job(
        &self,
        password: SecretString,
        salt: [u8; 16],
    ) -> Result<Result<String, crate::core::error::Error>, BrokerError> {
        let params = self.settings.argon2;
        self.hash_job(move |pause| {
            password::hash_password_pausing(&password, &salt, &params, pause)
        })
        .await
    }

    /// Checks a password against a stored PHC string on the hash pool, in slices that
    /// share the core with the request workers.
    pub(crate) async fn verify_password_job(
        &self,
        password: SecretString,
        phc: String,
    ) -> Result<Result<bool, crate::core::error::Error>, BrokerError> {
        self.hash_job(move |pause| password::verify_password_pausing(&password, &phc, pause))
            .await
    }

    /// The hash pool's counters (threads, queue, refusals).
    pub fn hash_pool_stats(&self) -> HashPoolStats {
        self.hash_pool.stats()
    }
}

impl Broker {
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The verifier for every published key (offline-style verification, benchmarks).
    pub fn token_verifier(&self) -> Arc<crate::core::token::Verifier> {
        self.keys.verifier()
    }

    /// Re-reads the signing keys from the store: picks up keys created, rotated or
    /// purged by another replica on the same database.
    pub fn reload_keys(&self) -> Result<(), BrokerError> {
        self.keys.reload(self.store.as_ref(), &self.master)
    }

    /// The public half of the key signing new credentials.
    pub fn signing_public_key(&self) -> [u8; 32] {
        self.keys.signer().public_key()
    }
}
