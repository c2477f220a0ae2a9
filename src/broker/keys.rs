//! Signing keys: the active signer, and every key verifiers may still meet.
//!
//! Private keys live sealed in the store; in memory the active one is a cached ring key
//! pair (the minting hot path never re-parses a key). Retired keys stay published until
//! every token they signed has expired plus the clock-skew margin.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ring::rand::SecureRandom;

use crate::core::model::{KeyState, RECORD_VERSION, SigningKey};
use crate::core::secret::SecretBytes;
use crate::core::token::jwks::jwks_json;
use crate::core::token::{Ed25519Signer, Verifier};
use crate::store::seal::MasterKey;
use crate::store::{self, Batch, Store, Table, Tx};

use crate::audit::event::{Event, Outcome};
use crate::core::time::{checked_add_ms, ymd};

use super::{Broker, BrokerError, BrokerSettings, Caller, RequestMeta, unix_ms};

/// Longest lifetime of anything Stint signs (GetSessionToken's maximum).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(129_600);

struct Active {
    signer: Arc<Ed25519Signer>,
    verifier: Arc<Verifier>,
    jwks: Arc<str>,
}

/// Least time between two reloads triggered by tokens naming a kid this ring lacks (a
/// key another replica created), so junk kids cannot make every request read the store.
pub const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(1);

pub struct KeyRing {
    active: RwLock<Active>,
    /// When an unknown kid last triggered a reload (by the broker's clock).
    last_unknown_kid_reload: Mutex<Option<SystemTime>>,
    issuer: String,
    audience: String,
    leeway: u64,
}

fn aad(kid: &str) -> Vec<u8> {
    format!("stint-signing-key:{kid}").into_bytes()
}

impl KeyRing {
    /// Loads every published key (the store must hold an active one: see
    /// [`first_keys`]).
    pub fn load(
        store: &dyn Store,
        master: &MasterKey,
        settings: &BrokerSettings,
    ) -> Result<Self, BrokerError> {
        let records = all_keys(store)?;
        let ring = KeyRing {
            active: RwLock::new(build(
                master,
                &records,
                settings.issuer.clone(),
                settings.audience.clone(),
                settings.clock_skew.as_secs(),
            )?),
            last_unknown_kid_reload: Mutex::new(None),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.clock_skew.as_secs(),
        };
        Ok(ring)
    }

    pub fn signer(&self) -> Arc<Ed25519Signer> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .signer
            .clone()
    }

    pub fn verifier(&self) -> Arc<Verifier> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verifier
            .clone()
    }

    pub fn jwks(&self) -> Arc<str> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .jwks
            .clone()
    }

    /// Whether a token with an unknown kid may reload the ring now (at most once per
    /// [`UNKNOWN_KID_RELOAD_EVERY`]); records the reload when it may.
    pub fn may_reload_for_unknown_kid(&self, now: SystemTime) -> bool {
        let mut last = self
            .last_unknown_kid_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| {
            now.duration_since(at)
                .map_or(true, |d| d >= UNKNOWN_KID_RELOAD_EVERY)
        });
        if due {
            *last = Some(now);
        }
        due
    }

    /// Re-reads the keys from the store (after a rotation or purge, here or on another
    /// replica).
    pub fn reload(&self, store: &dyn Store, master: &MasterKey) -> Result<(), BrokerError> {
        let records = all_keys(store)?;
        let fresh = build(
            master,
            &records,
            self.issuer.clone(),
            self.audience.clone(),
            self.leeway,
        )?;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

pub(crate) fn all_keys(store: &dyn Store) -> Result<Vec<SigningKey>, BrokerError> {
    Ok(
        store::read_page::<SigningKey>(store, Table::SigningKeys, "", None, usize::MAX)?
            .into_iter()
            .map(|(_, k)| k)
            .collect(),
    )
}

pub(crate) fn new_key_record(
    master: &MasterKey,
    rng: &dyn SecureRandom,
    now: SystemTime,
    state: KeyState,
) -> Result<SigningKey, BrokerError> {
    let pkcs8 = Ed25519Signer::generate_pkcs8(rng)?;
    let mut kid_bytes = [0u8; 8];
    rng.fill(&mut kid_bytes)
        .map_err(|_| BrokerError::Internal("random generator failed".into()))?;
    let kid = format!(
        "{}-{}",
        ymd(unix_ms(now) / 1000),
        data_encoding::HEXLOWER.encode(&kid_bytes)
    );
    let signer = Ed25519Signer::from_pkcs8(kid.clone(), &pkcs8)?;
    let sealed_pkcs8 = master.seal(pkcs8_bytes(&pkcs8), &aad(&kid), rng)?;
    Ok(SigningKey {
        v: RECORD_VERSION,
        kid,
        sealed_pkcs8,
        public_key: signer.public_key().to_vec(),
        state,
        created: unix_ms(now),
        activated: (state == KeyState::Active).then(|| unix_ms(now)),
        retired: None,
        purge_after: None,
    })
}

fn pkcs8_bytes(secret: &SecretBytes) -> &[u8] {
    secret.expose()
}

fn build(
    master: &MasterKey,
    records: &[SigningKey],
    issuer: String,
    audience: String,
    leeway: u64,
) -> Result<Active, BrokerError> {
    let active = records
        .iter()
        .filter(|k| k.state == KeyState::Active)
        .max_by_key(|k| k.activated.unwrap_or(k.created))
        .ok_or_else(|| BrokerError::Internal("no active signing key".into()))?;
    let pkcs8 = master.open(&active.sealed_pkcs8, &aad(&active.kid))?;
    let signer = Arc::new(Ed25519Signer::from_pkcs8(active.kid.clone(), &pkcs8)?);
    let mut verifier = Verifier::new(issuer, audience, leeway);
    let mut published = Vec::new();
    for key in records {
        let public: [u8; 32] =
            key.public_key.as_slice().try_into().map_err(|_| {
                BrokerError::Internal(format!("signing key {} is corrupt", key.kid))
            })?;
        verifier.insert_key(key.kid.clone(), public);
        published.push((key.kid.clone(), public));
    }
    Ok(Active {
        signer,
        verifier: Arc::new(verifier),
        jwks: jwks_json(&published).into(),
    })
}

/// The first active key and the next (pending) one, for a store that has no active key,
/// as a batch that expects the key table still empty of them, and the event that opens
/// the rotation log; `None` when the store already has an active key.
pub(crate) fn first_keys(
    store: &dyn Store,
    master: &MasterKey,
    rng: &dyn SecureRandom,
    now: SystemTime,
) -> Result<Option<(Batch, Vec<SigningKey>)>, BrokerError> {
    let mut tx = Tx::new(store);
    let existing: Vec<SigningKey> = tx.scan(Table::SigningKeys, "")?;
    if existing.iter().any(|k| k.state == KeyState::Active) {
        return Ok(None);
    }
    let active = new_key_record(master, rng, now, KeyState::Active)?;
    let pending = new_key_record(master, rng, now, KeyState::Pending)?;
    for key in [&active, &pending] {
        // Expected absent: a concurrent bootstrap of the same store conflicts.
        tx.get_raw(Table::SigningKeys, key.kid.as_bytes())?;
        tx.put(Table::SigningKeys, &key.kid, key);
    }
    Ok(Some((tx.into_batch(), vec![active, pending])))
}

/// The event that opens the rotation log with the first keys of a store.
pub(crate) fn first_keys_event(keys: &[SigningKey], now: SystemTime) -> Event {
    let listed: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({"kid": k.kid, "state": k.state.as_str()}))
        .collect();
    let mut event = Event::new(unix_ms(now), "stint:CreateSigningKey", Outcome::Allow)
        .with_principal("stint")
        .rotation();
    event.params = serde_json::json!({ "keys": listed });
    event
}

/// Where a purged signing key's public half stays, for checkpoint verification.
pub(crate) fn retired_public_key(kid: &str) -> String {
    format!("keys/public/{kid}")
}

/// Stages keeping `kid`'s public half after its record is purged.
pub(crate) fn keep_public_key(tx: &mut Tx<'_>, kid: &str, public_key: &[u8]) {
    tx.put(Table::Meta, &retired_public_key(kid), &public_key.to_vec());
}

/// The public half of any key that ever signed: a live record's, or a purged key's kept
/// copy.
pub(crate) fn public_key_of(store: &dyn Store, kid: &str) -> Option<[u8; 32]> {
    let record: Option<SigningKey> = store::read(store, Table::SigningKeys, kid).ok().flatten();
    let bytes = match record {
        Some(key) => key.public_key,
        None => store::read::<Vec<u8>>(store, Table::Meta, &retired_public_key(kid))
            .ok()
            .flatten()?,
    };
    bytes.as_slice().try_into().ok()
}

/// When a token signed now could still be presented: its longest lifetime plus skew.
fn purge_after(now_ms: i64, skew: Duration) -> Result<i64, BrokerError> {
    MAX_TOKEN_LIFETIME
        .checked_add(skew)
        .and_then(|d| checked_add_ms(now_ms, d))
        .ok_or_else(|| BrokerError::Internal("key purge time out of range".into()))
}

/// How a scheduled rotation check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduledRotation {
    /// Nothing to do yet.
    NotDue,
    /// No next key was published: one was published now, to sign once it has been in
    /// the JWKS for `publish_ahead`.
    Published(String),
    /// The next key became active (its kid).
    Rotated(String),
}

impl Broker {
    /// Every signing key with its state and dates.
    pub async fn list_signing_keys(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<Vec<SigningKey>, BrokerError> {
        self.require(caller, meta, "stint:ListSigningKeys", "*")?;
        let mut keys = all_keys(self.store.as_ref())?;
        keys.sort_by_key(|k| k.created);
        Ok(keys)
    }

    /// Rotates on demand (authorized) — see [`Self::rotate_keys`]. An operator's rotation
    /// (e.g. after a suspected leak) does not wait for `publish_ahead`.
    pub async fn rotate_signing_key(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<SigningKey, BrokerError> {
        let now = self.now();
        if let Err(err) = self.require(caller, meta, "stint:RotateSigningKey", "*") {
            let mut event = self.event(
                meta,
                "stint:RotateSigningKey",
                caller.arn(),
                Outcome::Deny,
                now,
            );
            event.reason = err.to_string();
            self.audit.append(event).await?;
            return Err(err);
        }
        self.rotate_keys(meta, caller.arn()).await
    }

    /// The pending key (already published) becomes active, the active key retires (still
    /// published until its tokens expire), and a new pending key is published — all in
    /// one batch with the rotation's event.
    pub async fn rotate_keys(
        &self,
        meta: &RequestMeta,
        principal: &str,
    ) -> Result<SigningKey, BrokerError> {
        let now = self.now();
        let now_ms = unix_ms(now);
        let purge_after = purge_after(now_ms, self.settings.clock_skew)?;
        let fresh_pending = new_key_record(&self.master, &self.rng, now, KeyState::Pending)?;
        let rotated = self
            .audited(
                |tx| {
                    let keys: Vec<SigningKey> = tx.scan(Table::SigningKeys, "")?;
                    let mut activated = None;
                    let mut retired = Vec::new();
                    let next = keys
                        .iter()
                        .filter(|k| k.state == KeyState::Pending)
                        .min_by_key(|k| k.created)
                        .map(|k| k.kid.clone());
                    for mut key in keys {
                        match key.state {
                            KeyState::Active => {
                                key.state = KeyState::Retired;
                                key.retired = Some(now_ms);
                                key.purge_after = Some(purge_after);
                                retired.push(key.kid.clone());
                                tx.put(Table::SigningKeys, &key.kid.clone(), &key);
                            }
                            KeyState::Pending if next.as_deref() == Some(key.kid.as_str()) => {
                                key.state = KeyState::Active;
                                key.activated = Some(now_ms);
                                activated = Some(key.clone());
                                tx.put(Table::SigningKeys, &key.kid.clone(), &key);
                            }
                            _ => {}
                        }
                    }
                    // No pending key (e.g. a store from before publish-ahead): activate
                    // the new one.
                    let activated = match activated {
                        Some(key) => {
                            tx.put(Table::SigningKeys, &fresh_pending.kid, &fresh_pending);
                            key
                        }
                        None => {
                            let mut key = fresh_pending.clone();
                            key.state = KeyState::Active;
                            key.activated = Some(now_ms);
                            tx.put(Table::SigningKeys, &key.kid, &key);
                            key
                        }
                    };
                    Ok((activated, retired))
                },
                |result| {
                    let mut event = self.event(
                        meta,
                        "stint:RotateSigningKey",
                        principal,
                        Outcome::Allow,
                        now,
                    );
                    event.rotation = true;
                    match result {
                        Ok((activated, retired)) => {
                            event.params = serde_json::json!({"activated": activated.kid, "retired": retired, "published": fresh_pending.kid});
                        }
                        Err(err) => failed(&mut event, err),
                    }
                    Some(event)
                },
            )
            .await?;
        self.keys.reload(self.store.as_ref(), &self.master)?;
        Ok(rotated.0)
    }

    /// Removes retired keys whose every token has expired (keeping their public halves
    /// for checkpoint verification), in one batch with the purge's event; returns the
    /// purged kids.
    pub async fn purge_expired_keys(&self) -> Result<Vec<String>, BrokerError> {
        let now = self.now();
        let now_ms = unix_ms(now);
        let purged = self
            .audited(
                |tx| {
                    let keys: Vec<SigningKey> = tx.scan(Table::SigningKeys, "")?;
                    let mut purged = Vec::new();
                    for key in keys {
                        if key.state == KeyState::Retired
                            && key.purge_after.is_some_and(|p| p <= now_ms)
                        {
                            keep_public_key(tx, &key.kid, &key.public_key);
                            tx.delete(Table::SigningKeys, &key.kid);
                            purged.push(key.kid);
                        }
                    }
                    Ok(purged)
                },
                |result| {
                    if matches!(result, Ok(purged) if purged.is_empty()) {
                        return None;
                    }
                    let mut event = self.event(
                        &RequestMeta::default(),
                        "stint:PurgeSigningKey",
                        "stint",
                        Outcome::Allow,
                        now,
                    );
                    event.rotation = true;
                    match result {
                        Ok(purged) => event.params = serde_json::json!({"purged": purged}),
                        Err(err) => failed(&mut event, err),
                    }
                    Some(event)
                },
            )
            .await?;
        if !purged.is_empty() {
            self.keys.reload(self.store.as_ref(), &self.master)?;
        }
        Ok(purged)
    }

    /// True when the active key has signed for at least `interval`.
    pub fn rotation_due(&self, interval: Duration) -> Result<bool, BrokerError> {
        let now_ms = unix_ms(self.now());
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        Ok(all_keys(self.store.as_ref())?
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .all(|k| now_ms.saturating_sub(k.activated.unwrap_or(k.created)) >= interval_ms))
    }

    /// The scheduler's rotation: once the active key has signed for `interval`, the next
    /// key takes over — but only after it has been in the JWKS for `publish_ahead`, so
    /// verifiers that cache the JWKS know it before it signs. With no next key published
    /// (a store from before publish-ahead, or one whose pending key was lost), one is
    /// published now and takes over `publish_ahead` later.
    pub async fn rotate_if_due(
        &self,
        interval: Duration,
        publish_ahead: Duration,
    ) -> Result<ScheduledRotation, BrokerError> {
        if !self.rotation_due(interval)? {
            return Ok(ScheduledRotation::NotDue);
        }
        let now = self.now();
        let now_ms = unix_ms(now);
        let ahead_ms = i64::try_from(publish_ahead.as_millis()).unwrap_or(i64::MAX);
        let keys = all_keys(self.store.as_ref())?;
        let next = keys
            .iter()
            .filter(|k| k.state == KeyState::Pending)
            .min_by_key(|k| k.created);
        match next {
            Some(key) if now_ms.saturating_sub(key.created) >= ahead_ms => {
                let activated = self
                    .rotate_keys(&RequestMeta::default(), "stint:scheduler")
                    .await?;
                Ok(ScheduledRotation::Rotated(activated.kid))
            }
            Some(_) => Ok(ScheduledRotation::NotDue),
            None => Ok(ScheduledRotation::Published(self.publish_next_key().await?)),
        }
    }

    /// Publishes a new pending key (in one batch with its event) when there is none.
    async fn publish_next_key(&self) -> Result<String, BrokerError> {
        let now = self.now();
        let fresh = new_key_record(&self.master, &self.rng, now, KeyState::Pending)?;
        let kid = self
            .audited(
                |tx| {
                    let keys: Vec<SigningKey> = tx.scan(Table::SigningKeys, "")?;
                    if let Some(pending) = keys.iter().find(|k| k.state == KeyState::Pending) {
                        return Ok(pending.kid.clone());
                    }
                    tx.put(Table::SigningKeys, &fresh.kid, &fresh);
                    Ok(fresh.kid.clone())
                },
                |result| {
                    let mut event = self.event(
                        &RequestMeta::default(),
                        "stint:CreateSigningKey",
                        "stint:scheduler",
                        Outcome::Allow,
                        now,
                    );
                    event.rotation = true;
                    match result {
                        Ok(kid) if *kid == fresh.kid => {
                            event.params =
                                serde_json::json!({"keys": [{"kid": kid, "state": "pending"}]});
                        }
                        Ok(_) => return None,
                        Err(err) => failed(&mut event, err),
                    }
                    Some(event)
                },
            )
            .await?;
        self.keys.reload(self.store.as_ref(), &self.master)?;
        Ok(kid)
    }
}

fn failed(event: &mut Event, err: &BrokerError) {
    event.outcome = Outcome::Error;
    event.reason = err.to_string();
}
