//! Signing keys: the active signer, and every key verifiers may still meet.
//!
//! Private keys live sealed in the store; in memory the active one is a cached ring key
//! pair (the minting hot path never re-parses a key). Retired keys stay published until
//! every token they signed has expired plus the clock-skew margin.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ring::rand::SecureRandom;

use crate::core::model::{KeyState, RECORD_VERSION, SigningKey};
use crate::core::secret::SecretBytes;
use crate::core::token::jwks::jwks_json;
use crate::core::token::{Ed25519Signer, Verifier};
use crate::store::seal::MasterKey;
use crate::store::{self, Store, Table, Tx};

use super::{BrokerError, BrokerSettings, unix_ms};

/// Longest lifetime of anything Stint signs (GetSessionToken's maximum).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(129_600);

struct Active {
    signer: Arc<Ed25519Signer>,
    verifier: Arc<Verifier>,
    jwks: Arc<str>,
}

pub struct KeyRing {
    active: RwLock<Active>,
    issuer: String,
    audience: String,
    leeway: u64,
}

fn aad(kid: &str) -> Vec<u8> {
    format!("stint-signing-key:{kid}").into_bytes()
}

impl KeyRing {
    /// Loads every published key; creates the first key when there is none.
    pub fn load(
        store: &dyn Store,
        master: &MasterKey,
        rng: &dyn SecureRandom,
        settings: &BrokerSettings,
        now: SystemTime,
    ) -> Result<Self, BrokerError> {
        let mut records = all_keys(store)?;
        if !records.iter().any(|k| k.state == KeyState::Active) {
            let active = new_key_record(master, rng, now, KeyState::Active)?;
            let pending = new_key_record(master, rng, now, KeyState::Pending)?;
            store::transact(store, |tx: &mut Tx<'_>| {
                tx.put(Table::SigningKeys, &active.kid, &active);
                tx.put(Table::SigningKeys, &pending.kid, &pending);
                Ok::<_, BrokerError>(())
            })?;
            records.push(active);
            records.push(pending);
        }
        let ring = KeyRing {
            active: RwLock::new(build(
                master,
                &records,
                settings.issuer.clone(),
                settings.audience.clone(),
                settings.clock_skew.as_secs(),
            )?),
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

    /// Re-reads the keys from the store (after a rotation or purge).
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
        time::OffsetDateTime::from_unix_timestamp(unix_ms(now) / 1000)
            .map(|t| format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day()))
            .unwrap_or_default(),
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

impl super::Broker {
    /// Every signing key with its state and dates.
    pub async fn list_signing_keys(
        &self,
        caller: &super::Caller,
        meta: &super::RequestMeta,
    ) -> Result<Vec<SigningKey>, BrokerError> {
        self.require(caller, meta, "stint:ListSigningKeys", "*")?;
        let mut keys = all_keys(self.store.as_ref())?;
        keys.sort_by_key(|k| k.created);
        Ok(keys)
    }

    /// Rotates on demand (authorized) — see [`Self::rotate_keys`].
    pub async fn rotate_signing_key(
        &self,
        caller: &super::Caller,
        meta: &super::RequestMeta,
    ) -> Result<SigningKey, BrokerError> {
        let now = self.now();
        if let Err(err) = self.require(caller, meta, "stint:RotateSigningKey", "*") {
            let mut event = self.event(
                meta,
                "stint:RotateSigningKey",
                caller.arn(),
                crate::audit::event::Outcome::Deny,
                now,
            );
            event.reason = err.to_string();
            self.audit.append(event).await?;
            return Err(err);
        }
        self.rotate_keys(meta, caller.arn()).await
    }

    /// The pending key (already published) becomes active, the active key retires (still
    /// published until its tokens expire), and a new pending key is published.
    pub async fn rotate_keys(
        &self,
        meta: &super::RequestMeta,
        principal: &str,
    ) -> Result<SigningKey, BrokerError> {
        let now = self.now();
        let now_ms = unix_ms(now);
        let purge_after =
            now_ms + (MAX_TOKEN_LIFETIME + self.settings.clock_skew).as_millis() as i64;
        let fresh_pending = new_key_record(&self.master, &self.rng, now, KeyState::Pending)?;
        let (activated, retired) = store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let keys: Vec<SigningKey> = tx.scan(Table::SigningKeys, "")?;
            let mut activated = None;
            let mut retired = Vec::new();
            for mut key in keys {
                match key.state {
                    KeyState::Active => {
                        key.state = KeyState::Retired;
                        key.retired = Some(now_ms);
                        key.purge_after = Some(purge_after);
                        retired.push(key.kid.clone());
                        tx.put(Table::SigningKeys, &key.kid.clone(), &key);
                    }
                    KeyState::Pending if activated.is_none() => {
                        key.state = KeyState::Active;
                        key.activated = Some(now_ms);
                        activated = Some(key.clone());
                        tx.put(Table::SigningKeys, &key.kid.clone(), &key);
                    }
                    _ => {}
                }
            }
            // No pending key (e.g. a store from before publish-ahead): activate the new one.
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
            Ok::<_, BrokerError>((activated, retired))
        })?;
        self.keys.reload(self.store.as_ref(), &self.master)?;
        let mut event = self.event(
            meta,
            "stint:RotateSigningKey",
            principal,
            crate::audit::event::Outcome::Allow,
            now,
        );
        event.rotation = true;
        event.params = serde_json::json!({"activated": activated.kid, "retired": retired, "published": fresh_pending.kid});
        self.audit.append(event).await?;
        Ok(activated)
    }

    /// Removes retired keys whose every token has expired; returns the purged kids.
    pub async fn purge_expired_keys(&self) -> Result<Vec<String>, BrokerError> {
        let now = self.now();
        let now_ms = unix_ms(now);
        let purged = store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let keys: Vec<SigningKey> = tx.scan(Table::SigningKeys, "")?;
            let mut purged = Vec::new();
            for key in keys {
                if key.state == KeyState::Retired && key.purge_after.is_some_and(|p| p <= now_ms) {
                    super::audit::keep_public_key(tx, &key.kid, &key.public_key);
                    tx.delete(Table::SigningKeys, &key.kid);
                    purged.push(key.kid);
                }
            }
            Ok::<_, BrokerError>(purged)
        })?;
        if !purged.is_empty() {
            self.keys.reload(self.store.as_ref(), &self.master)?;
            let mut event = self.event(
                &super::RequestMeta::default(),
                "stint:PurgeSigningKey",
                "stint",
                crate::audit::event::Outcome::Allow,
                now,
            );
            event.rotation = true;
            event.params = serde_json::json!({"purged": purged});
            self.audit.append(event).await?;
        }
        Ok(purged)
    }
}

impl super::Broker {
    /// True when the active key has signed for longer than `interval`.
    pub fn rotation_due(&self, interval: Duration) -> Result<bool, BrokerError> {
        let now_ms = unix_ms(self.now());
        Ok(all_keys(self.store.as_ref())?
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .all(|k| now_ms - k.activated.unwrap_or(k.created) >= interval.as_millis() as i64))
    }
}
