//! The hot path's memory: verified tokens, each session's compiled policies, revocations.
//!
//! `Authorize` and every authenticated RPC used to verify a signature, parse claims, read
//! the session record, the revocations, the principal and its policies from the store on
//! each call. A verified token is kept here, keyed by the SHA-256 of the token text, with
//! the caller it proved; a hit costs one hash and a few comparisons. What can make a hit
//! wrong, and how each is caught:
//!
//! - expiry: every hit checks `nbf`/`exp` (with the verifier's leeway) against the broker's
//!   [`Clock`](super::Clock), so a manual clock expires entries in tests;
//! - revocation: an in-memory copy of the revocations table, changed synchronously by
//!   `RevokeSession` on this process. Its generation is stamped on each entry; a hit whose
//!   stamp is older re-checks the entry's session chain against the set;
//! - IAM changes (a user or role deleted and created again, a policy detached): every
//!   committed batch that writes users, groups, roles or policies bumps the IAM
//!   generation; an entry (and its compiled policies) from an older generation is
//!   re-verified from the store;
//! - signing keys: an entry remembers the verifier that accepted it; a rotation, purge or
//!   reload replaces the verifier, and the entry is re-verified;
//! - other replicas (a shared PostgreSQL store): they revoke and change IAM too, unseen by
//!   the generations above. There the revocation set is re-read from the store, and every
//!   entry re-verified, once [`SHARED_REFRESH`] old: another replica's revocation or IAM
//!   change takes effect here within that bound for tokens this replica has cached (a
//!   token it has not cached is checked against the store at once).
//!
//! A cache miss is the old path: full verification, store reads; its result is cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::core::token::Verifier;
use crate::store::{self, Batch, Store, Table};

use super::caller::{Caller, EffectivePolicies};
use super::tokens::Revocation;
use super::{BrokerError, unix_ms, unix_secs};

/// Verified tokens (and sessions with compiled policies) kept at most; a full cache drops
/// its expired entries, then everything if that was not enough.
pub const MAX_CACHED_TOKENS: usize = 10_000;
/// And at most about this many bytes of them: a session can carry up to ~80 KiB of session
/// policies and tags, so the count alone would allow most of a GiB.
pub const MAX_CACHED_TOKEN_BYTES: usize = 64 << 20;

/// On a shared store: how stale a replica's view of other replicas' revocations and IAM
/// changes may be, for tokens it has cached.
pub const SHARED_REFRESH: Duration = Duration::from_secs(1);

/// Whether a batch changes what cached callers depend on: principals, their unique ids,
/// group memberships, boundaries and policies.
pub(crate) fn writes_iam(batch: &Batch) -> bool {
    batch.writes.iter().any(|(table, ..)| {
        matches!(
            table,
            Table::Users | Table::Groups | Table::Roles | Table::Policies
        )
    })
}

/// The SHA-256 of a token's text.
pub(crate) type TokenHash = [u8; 32];

pub(crate) fn token_hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// One verified token.
pub(crate) struct Verified {
    pub caller: Caller,
    /// Unix seconds: accepted while `valid_from <= now < valid_until` (leeway included).
    valid_from: i64,
    valid_until: i64,
    /// The verifier that accepted it: a key change replaces it.
    verifier: Arc<Verifier>,
    iam_generation: u64,
    revocation_generation: AtomicU64,
    checked_at: SystemTime,
}

/// The verified tokens, and about how much memory they hold.
#[derive(Default)]
struct CachedTokens {
    entries: HashMap<TokenHash, Arc<Verified>>,
    bytes: usize,
}

impl CachedTokens {
    fn remove(&mut self, hash: &TokenHash) {
        if let Some(gone) = self.entries.remove(hash) {
            self.bytes = self.bytes.saturating_sub(approx_bytes(&gone.caller));
        }
    }

    fn retain(&mut self, keep: impl Fn(&Verified) -> bool) {
        let mut bytes = 0;
        self.entries.retain(|_, entry| {
            let kept = keep(entry);
            if kept {
                bytes += approx_bytes(&entry.caller);
            }
            kept
        });
        self.bytes = bytes;
    }
}

/// About what a cached caller holds: a fixed part, its session policies, tags and chain.
fn approx_bytes(caller: &Caller) -> usize {
    let stint = &caller.claims.stint;
    let tags: usize = stint.tags.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    let keys: usize = stint.transitive_tag_keys.iter().map(|k| k.len() + 24).sum();
    let policies: usize = caller
        .session
        .session_policies
        .iter()
        .map(|p| p.len() + 24)
        .sum();
    1024 + tags + keys + policies + caller.session.ancestors.len() * 128
}

/// A session's compiled policies, for the IAM generation they were loaded in.
struct CompiledFor {
    iam_generation: u64,
    checked_at: SystemTime,
    policies: Arc<EffectivePolicies>,
}

/// The revocations table, in memory.
#[derive(Default)]
struct RevocationSet {
    entries: HashMap<String, Revocation>,
    refreshed_at: Option<SystemTime>,
    /// The size at which [`SessionCache::revoked`] next drops expired entries: twice what
    /// the last sweep left, so one revocation costs O(1) amortised, not a pass over all.
    prune_at: usize,
}

/// Fewest entries before expired revocations are swept from memory.
const MIN_PRUNE_AT: usize = 64;

#[derive(Default)]
pub(crate) struct SessionCache {
    tokens: Mutex<CachedTokens>,
    /// By session id (`jti`).
    policies: Mutex<HashMap<String, CompiledFor>>,
    revocations: RwLock<RevocationSet>,
    /// Held by the one request re-reading revocations of a shared store.
    refreshing: Mutex<()>,
    iam_generation: AtomicU64,
    revocation_generation: AtomicU64,
}

/// What a lookup found.
pub(crate) enum Hit {
    /// Valid now; its revocation stamp is current.
    Fresh(Arc<Verified>),
    /// Valid now, but revocations changed since it was checked: check its chain.
    Recheck(Arc<Verified>),
    Miss,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn elapsed(since: SystemTime, now: SystemTime) -> Duration {
    // A clock that went backwards counts as stale.
    now.duration_since(since).unwrap_or(Duration::MAX)
}

impl SessionCache {
    pub fn iam_generation(&self) -> u64 {
        self.iam_generation.load(Ordering::Acquire)
    }

    pub fn revocation_generation(&self) -> u64 {
        self.revocation_generation.load(Ordering::Acquire)
    }

    /// Called after every committed batch (`Broker::audited`), before its RPC answers:
    /// one that wrote IAM makes cached callers and policies be checked again.
    pub fn committed(&self, wrote_iam: bool) {
        if wrote_iam {
            self.iam_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Called by the audit log for every change it applied (see `AuditLog::on_applied`),
    /// before the change's request is answered and even if it never is: IAM writes make
    /// cached callers and policies be checked again, and revocations take effect at once.
    /// Returns whether the change wrote a revocation.
    pub fn applied(&self, change: &Batch, now_ms: i64) -> bool {
        self.committed(writes_iam(change));
        let mut revoked = false;
        for (table, key, value) in &change.writes {
            if let (Table::Revocations, Some(bytes)) = (table, value) {
                revoked = true;
                match store::decode::<Revocation>(Table::Revocations, key, bytes) {
                    Ok(revocation) => {
                        self.revoked(
                            String::from_utf8_lossy(key).into_owned(),
                            revocation,
                            now_ms,
                        );
                    }
                    // Written by this process a moment ago with the same codec.
                    Err(err) => {
                        tracing::error!(error = %err, "a revocation just written does not decode")
                    }
                }
            }
        }
        revoked
    }

    /// The entry for `hash` if it may answer at `now` for `verifier` without the store.
    pub fn lookup(
        &self,
        hash: &TokenHash,
        now: SystemTime,
        verifier: &Arc<Verifier>,
        shared: bool,
    ) -> Hit {
        let Some(entry) = lock(&self.tokens).entries.get(hash).cloned() else {
            return Hit::Miss;
        };
        let secs = unix_secs(now);
        let usable = entry.valid_from <= secs
            && secs < entry.valid_until
            && Arc::ptr_eq(&entry.verifier, verifier)
            && entry.iam_generation == self.iam_generation()
            && !(shared && elapsed(entry.checked_at, now) >= SHARED_REFRESH);
        if !usable {
            lock(&self.tokens).remove(hash);
            return Hit::Miss;
        }
        if entry.revocation_generation.load(Ordering::Acquire) == self.revocation_generation() {
            Hit::Fresh(entry)
        } else {
            Hit::Recheck(entry)
        }
    }

    /// Marks `entry` checked against the revocations of `generation`.
    pub fn rechecked(&self, entry: &Verified, generation: u64) {
        entry
            .revocation_generation
            .fetch_max(generation, Ordering::AcqRel);
    }

    pub fn forget(&self, hash: &TokenHash) {
        lock(&self.tokens).remove(hash);
    }

    /// Caches `caller`, verified at `now` by `verifier` with `leeway` seconds, against the
    /// generations read before it was loaded.
    #[allow(clippy::too_many_arguments)] // each stamp named at the one call
    pub fn insert(
        &self,
        hash: TokenHash,
        caller: &Caller,
        verifier: Arc<Verifier>,
        leeway: i64,
        iam_generation: u64,
        revocation_generation: u64,
        now: SystemTime,
    ) {
        let entry = Arc::new(Verified {
            caller: caller.clone(),
            valid_from: caller.claims.nbf.saturating_sub(leeway),
            valid_until: caller.claims.exp.saturating_add(leeway),
            verifier,
            iam_generation,
            revocation_generation: AtomicU64::new(revocation_generation),
            checked_at: now,
        });
        let bytes = approx_bytes(&entry.caller);
        let mut tokens = lock(&self.tokens);
        tokens.remove(&hash);
        let full = |t: &CachedTokens| {
            t.entries.len() >= MAX_CACHED_TOKENS || t.bytes + bytes > MAX_CACHED_TOKEN_BYTES
        };
        if full(&tokens) {
            let secs = unix_secs(now);
            tokens.retain(|e| secs < e.valid_until);
            if full(&tokens) {
                *tokens = CachedTokens::default();
            }
        }
        tokens.bytes += bytes;
        tokens.entries.insert(hash, entry);
    }

    /// The compiled policies of session `jti`, if loaded in the current IAM generation
    /// (and, on a shared store, recently).
    pub fn policies(
        &self,
        jti: &str,
        now: SystemTime,
        shared: bool,
    ) -> Option<Arc<EffectivePolicies>> {
        let cache = lock(&self.policies);
        let found = cache.get(jti)?;
        let usable = found.iam_generation == self.iam_generation()
            && !(shared && elapsed(found.checked_at, now) >= SHARED_REFRESH);
        usable.then(|| found.policies.clone())
    }

    pub fn insert_policies(
        &self,
        jti: &str,
        policies: Arc<EffectivePolicies>,
        iam_generation: u64,
        now: SystemTime,
    ) {
        let mut cache = lock(&self.policies);
        if cache.len() >= MAX_CACHED_TOKENS {
            let current = self.iam_generation();
            cache.retain(|_, c| c.iam_generation == current);
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(
            jti.to_owned(),
            CompiledFor {
                iam_generation,
                checked_at: now,
                policies,
            },
        );
    }

    /// A stored revocation, from memory.
    pub fn revocation(&self, key: &str) -> Option<Revocation> {
        self.revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(key)
            .cloned()
    }

    /// Records a revocation this process committed (before its RPC answers).
    pub fn revoked(&self, key: String, revocation: Revocation, now_ms: i64) {
        let mut set = self.revocations.write().unwrap_or_else(|p| p.into_inner());
        // The sweeper removes these from the store; memory follows here, now and then (an
        // expired entry only refuses tokens that have expired anyway).
        if set.entries.len() >= set.prune_at {
            set.entries.retain(|_, r| r.keep_until_ms >= now_ms);
            set.prune_at = (set.entries.len() * 2).max(MIN_PRUNE_AT);
        }
        set.entries.insert(key, revocation);
        self.revocation_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Loads every stored revocation (at startup, and on a shared store every
    /// [`SHARED_REFRESH`] from the first request after it is due).
    pub fn load_revocations(&self, store: &dyn Store, now: SystemTime) -> Result<(), BrokerError> {
        let mut entries = HashMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan(Table::Revocations, b"", after.as_deref(), 1_000)?;
            for (key, bytes) in &page {
                let revocation: Revocation = store::decode(Table::Revocations, key, bytes)?;
                entries.insert(String::from_utf8_lossy(key).into_owned(), revocation);
            }
            match page.last() {
                Some((key, _)) if page.len() == 1_000 => after = Some(key.clone()),
                _ => break,
            }
        }
        let mut set = self.revocations.write().unwrap_or_else(|p| p.into_inner());
        // Merged, not replaced: a revocation this process applied while the scan ran may
        // be missing from the scan. Entries only ever rise; expired ones are dropped.
        let now_ms = unix_ms(now);
        for (key, revocation) in std::mem::take(&mut set.entries) {
            if revocation.keep_until_ms < now_ms {
                continue;
            }
            let merged = entries.entry(key).or_insert_with(|| revocation.clone());
            merged.issued_before_ms = merged.issued_before_ms.max(revocation.issued_before_ms);
            merged.keep_until_ms = merged.keep_until_ms.max(revocation.keep_until_ms);
        }
        set.prune_at = (entries.len() * 2).max(MIN_PRUNE_AT);
        set.entries = entries;
        set.refreshed_at = Some(now);
        self.revocation_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// On a shared store, re-reads the revocations when [`SHARED_REFRESH`] has passed; one
    /// request does it while the others go on with the current set.
    pub fn refresh_if_due(&self, store: &dyn Store, now: SystemTime) -> Result<(), BrokerError> {
        let due = self
            .revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .refreshed_at
            .is_none_or(|at| elapsed(at, now) >= SHARED_REFRESH);
        if !due {
            return Ok(());
        }
        let Ok(_refreshing) = self.refreshing.try_lock() else {
            return Ok(());
        };
        self.load_revocations(store, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_sha256_of_the_text() {
        let hex = data_encoding::HEXLOWER.encode(&token_hash("abc"));
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(token_hash("a.b.c"), token_hash("a.b.d"));
    }

    fn revocation(issued_before_ms: i64, keep_until_ms: i64) -> Revocation {
        Revocation {
            v: 1,
            issued_before_ms,
            keep_until_ms,
        }
    }

    /// A caller whose session carries `policy_bytes` of session policy, valid at t=0..3600.
    fn caller(jti: &str, policy_bytes: usize) -> Caller {
        let mut claims = crate::core::token::claims::tests::sample();
        claims.jti = jti.into();
        (claims.nbf, claims.exp) = (0, 3_600);
        let session: crate::core::model::Session = serde_json::from_value(serde_json::json!({
            "v": 1, "jti": jti, "principal_arn": "arn:aws:iam::000000000000:user/dev",
            "issued_at": 0, "expires_at": 3_600_000,
            "session_policies": ["x".repeat(policy_bytes)],
        }))
        .unwrap();
        Caller { claims, session }
    }

    /// Many sessions with large session policies are bounded by bytes, not only by count.
    #[test]
    fn cached_tokens_are_bounded_in_bytes() {
        let cache = SessionCache::default();
        let verifier = Arc::new(Verifier::new("iss".into(), "aud".into(), 0));
        let big = 60 * 1024;
        let fits = MAX_CACHED_TOKEN_BYTES / (big + 2048);
        for n in 0..fits + 200 {
            let hash = token_hash(&n.to_string());
            cache.insert(
                hash,
                &caller(&n.to_string(), big),
                verifier.clone(),
                0,
                0,
                0,
                SystemTime::UNIX_EPOCH,
            );
            let tokens = lock(&cache.tokens);
            assert!(
                tokens.bytes <= MAX_CACHED_TOKEN_BYTES,
                "{n}: {}",
                tokens.bytes
            );
            assert!(tokens.entries.len() < fits + 100, "{n}");
        }
    }

    /// A refresh that scanned before a revocation landed must not drop it from memory;
    /// what the scan found is merged in, cutoffs only rise, and expired entries go.
    #[test]
    fn expired_revocations_are_swept_from_memory_in_batches() {
        let cache = SessionCache::default();
        let len = || cache.revocations.read().unwrap().entries.len();
        // Each already expired at 1,000 ms; the sweep comes once the set has doubled.
        for n in 0..MIN_PRUNE_AT {
            cache.revoked(format!("old{n}"), revocation(0, 500), 1_000);
        }
        assert_eq!(len(), MIN_PRUNE_AT);
        cache.revoked("live".into(), revocation(0, 5_000), 1_000);
        assert_eq!(len(), 1);
        assert!(cache.revocation("live").is_some());
    }

    #[test]
    fn a_refresh_merges_with_revocations_applied_meanwhile() {
        let store = crate::store::memory::MemoryStore::new();
        let stored = revocation(500, 10_000);
        let mut batch = Batch::default();
        batch.writes.push((
            Table::Revocations,
            b"session:both".to_vec(),
            Some(store::encode(&stored)),
        ));
        store.commit(&batch).unwrap();
        let cache = SessionCache::default();
        let now_ms = 1_000;
        cache.revoked("session:mine".into(), revocation(900, 10_000), now_ms);
        cache.revoked("session:both".into(), revocation(700, 5_000), now_ms);
        cache.revoked("session:gone".into(), revocation(100, 999), 0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms as u64);
        cache.load_revocations(&store, now).unwrap();
        let cutoff = |key: &str| {
            cache
                .revocation(key)
                .map(|r| (r.issued_before_ms, r.keep_until_ms))
        };
        assert_eq!(cutoff("session:mine"), Some((900, 10_000)));
        assert_eq!(cutoff("session:both"), Some((700, 10_000)));
        assert_eq!(cutoff("session:gone"), None);
    }

    /// Every change the audit log applies reaches the cache: an IAM write moves the IAM
    /// generation, a revocation is in the set, other writes change nothing.
    #[test]
    fn applied_changes_reach_the_cache() {
        let cache = SessionCache::default();
        let mut iam = Batch::default();
        iam.writes
            .push((Table::Users, b"dev".to_vec(), Some(b"{}".to_vec())));
        let mut revoke = Batch::default();
        revoke.writes.push((
            Table::Revocations,
            b"session:x".to_vec(),
            Some(store::encode(&revocation(5, 10))),
        ));
        let mut session = Batch::default();
        session
            .writes
            .push((Table::Sessions, b"x".to_vec(), Some(b"{}".to_vec())));
        let (iam_before, revocations_before) =
            (cache.iam_generation(), cache.revocation_generation());
        cache.applied(&session, 0);
        assert_eq!(cache.iam_generation(), iam_before);
        assert_eq!(cache.revocation_generation(), revocations_before);
        cache.applied(&iam, 0);
        assert_eq!(cache.iam_generation(), iam_before + 1);
        cache.applied(&revoke, 0);
        assert!(cache.revocation_generation() > revocations_before);
        assert_eq!(
            cache.revocation("session:x").map(|r| r.issued_before_ms),
            Some(5)
        );
    }

    #[test]
    fn staleness_counts_a_clock_gone_backwards_as_stale() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(
            elapsed(t, t + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(elapsed(t, t - Duration::from_secs(1)), Duration::MAX);
    }
}
