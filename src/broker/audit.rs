//! Audit use cases: reading the log is authorized (`stint:ReadAuditLog`) and audited, and
//! checkpoints are signed with the broker's current signing key.

use std::sync::Arc;

use serde_json::json;

use crate::audit::AuditError;
use crate::audit::chain::{self, CheckpointSigner, Record, VerifyReport};
use crate::audit::event::{Event, EventFilter, Outcome};
use crate::store::{self, Batch, Store, StoreError, Table, Tx};

use super::keys::KeyRing;
use super::{Broker, BrokerError, Caller, RequestMeta};

const READ_ACTION: &str = "stint:ReadAuditLog";

/// Signs audit checkpoints with the active signing key; answers public keys for every
/// key that ever signed (purged keys keep their public half in the store).
struct KeyringSigner {
    keys: Arc<KeyRing>,
    store: Arc<dyn Store>,
}

impl CheckpointSigner for KeyringSigner {
    fn sign(&self, message: &[u8]) -> Option<(String, Vec<u8>)> {
        let signer = self.keys.signer();
        Some((signer.kid().to_string(), signer.sign_bytes(message)))
    }

    fn public_key(&self, kid: &str) -> Option<[u8; 32]> {
        let record: Option<crate::core::model::SigningKey> =
            store::read(self.store.as_ref(), Table::SigningKeys, kid)
                .ok()
                .flatten();
        let bytes = match record {
            Some(key) => key.public_key,
            None => {
                store::read::<Vec<u8>>(self.store.as_ref(), Table::Meta, &retired_public_key(kid))
                    .ok()
                    .flatten()?
            }
        };
        bytes.as_slice().try_into().ok()
    }
}

/// Where a purged signing key's public half stays, for checkpoint verification.
pub(crate) fn retired_public_key(kid: &str) -> String {
    format!("keys/public/{kid}")
}

pub(crate) fn keep_public_key(tx: &mut Tx<'_>, kid: &str, public_key: &[u8]) {
    tx.put(Table::Meta, &retired_public_key(kid), &public_key.to_vec());
}

impl Broker {
    /// Runs `body` as an optimistic transaction and commits its batch (preconditions and
    /// writes) in the same atomic store batch as the audit event `record` builds from the
    /// outcome: the change and its record land together or not at all. A failed body
    /// commits nothing but its event; `record` returning `None` skips the audit (reads).
    /// Retried from the top when a record the body read changed meanwhile.
    pub(crate) async fn audited<R>(
        &self,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<R, BrokerError>,
        mut record: impl FnMut(&Result<R, BrokerError>) -> Option<Event>,
    ) -> Result<R, BrokerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = Tx::new(self.store.as_ref());
            let result = body(&mut tx);
            let Some(event) = record(&result) else {
                if result.is_ok() {
                    match tx.commit() {
                        Ok(()) => {}
                        Err(StoreError::Conflict) if attempt < store::TX_ATTEMPTS => continue,
                        Err(err) => return Err(err.into()),
                    }
                }
                return result;
            };
            let change = match &result {
                Ok(_) => tx.into_batch(),
                Err(_) => Batch::default(),
            };
            match self.audit.commit(event, change).await {
                Ok(_) => return result,
                Err(AuditError::Conflict) if attempt < store::TX_ATTEMPTS => continue,
                Err(AuditError::Conflict) => return Err(StoreError::Conflict.into()),
                Err(err) => return Err(err.into()),
            }
        }
    }

    pub fn install_checkpoint_signer(&self) {
        self.audit.set_signer(Some(Arc::new(KeyringSigner {
            keys: self.keys.clone(),
            store: self.store.clone(),
        })));
    }

    fn checkpoint_keys(&self) -> KeyringSigner {
        KeyringSigner {
            keys: self.keys.clone(),
            store: self.store.clone(),
        }
    }

    async fn audit_read(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        what: &str,
    ) -> Result<(), BrokerError> {
        let now = self.now();
        let decision = self.require(caller, meta, READ_ACTION, "*");
        let mut event = self.event(meta, READ_ACTION, caller.arn(), Outcome::Allow, now);
        event.params = json!({ "call": what });
        if let Err(err) = &decision {
            event.outcome = Outcome::Deny;
            event.reason = err.to_string();
        }
        self.audit.append(event).await?;
        decision
    }

    pub async fn read_audit(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        what: &str,
        filter: &EventFilter,
        after: Option<u64>,
        max: usize,
    ) -> Result<(Vec<Record>, Option<u64>), BrokerError> {
        self.audit_read(caller, meta, what).await?;
        Ok(self.audit.list(filter, after, max)?)
    }

    pub async fn watch_audit(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        after_seq: u64,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<Record, AuditError>>, BrokerError>
    {
        self.audit_read(caller, meta, "WatchEvents").await?;
        Ok(self.audit.watch(after_seq))
    }

    pub async fn verify_audit(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<VerifyReport, BrokerError> {
        self.audit_read(caller, meta, "VerifyChain").await?;
        let store = self.store.clone();
        let keys = self.checkpoint_keys();
        tokio::task::spawn_blocking(move || chain::verify(store.as_ref(), Some(&keys)))
            .await
            .map_err(|e| BrokerError::Internal(format!("verify task failed: {e}")))?
            .map_err(BrokerError::from)
    }
}

impl Broker {
    /// Retention: deletes audit events older than `keep`, behind a signed anchor so the
    /// rest of the chain still verifies. Runs on the blocking pool (it verifies first).
    pub async fn prune_audit(
        &self,
        keep: std::time::Duration,
    ) -> Result<chain::PruneReport, BrokerError> {
        let now_ms = super::unix_ms(self.now());
        let cutoff = chain::PruneCutoff::BeforeTimeMs(now_ms - keep.as_millis() as i64);
        let store = self.store.clone();
        let keys = self.checkpoint_keys();
        let report = tokio::task::spawn_blocking(move || {
            chain::prune_before(store.as_ref(), cutoff, &keys, now_ms)
        })
        .await
        .map_err(|e| BrokerError::Internal(format!("prune task failed: {e}")))?
        .map_err(|e| BrokerError::Internal(format!("audit prune: {e}")))?;
        if report.deleted_events > 0 {
            let mut event = self.event(
                &RequestMeta::default(),
                "stint:PruneAuditLog",
                "stint",
                Outcome::Allow,
                self.now(),
            );
            event.params =
                json!({"deleted_events": report.deleted_events, "anchor_seq": report.anchor_seq});
            self.audit.append(event).await?;
        }
        Ok(report)
    }
}
