//! Audit use cases: reading the log is authorized (`stint:ReadAuditLog`) and audited,
//! checkpoints are signed with the broker's current signing key, and [`Broker::audited`]
//! commits a change in the same batch as its record.
//!
//! `WatchEvents` streams hold memory for as long as a client keeps them open, so each
//! caller may hold [`WATCHES_PER_CALLER`] and the server [`WATCHES_TOTAL`]; a slot is
//! released when its stream ends or is dropped.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde_json::json;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::audit::AuditError;
use crate::audit::chain::{self, CheckpointSigner, Record, VerifyReport};
use crate::audit::event::{Event, EventFilter, Outcome};
use crate::core::time::checked_sub_ms;
use crate::store::{self, Batch, Store, StoreError, Tx};

use super::keys::{KeyRing, public_key_of};
use super::{Broker, BrokerError, Caller, RequestMeta};

const READ_ACTION: &str = "stint:ReadAuditLog";
/// Open `WatchEvents` streams one caller may hold (a user, or a role across all its
/// sessions).
pub const WATCHES_PER_CALLER: usize = 4;
/// Open `WatchEvents` streams the server holds in all.
pub const WATCHES_TOTAL: usize = 64;

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
        public_key_of(self.store.as_ref(), kid)
    }
}

/// Counts of open watch streams, per caller and in all.
#[derive(Default)]
pub(crate) struct WatchSlots {
    open: Mutex<(usize, HashMap<String, usize>)>,
}

impl WatchSlots {
    pub(crate) fn acquire(
        self: &Arc<Self>,
        caller: &str,
        what: &str,
    ) -> Result<WatchSlot, BrokerError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_caller) = &mut *open;
        if *total >= WATCHES_TOTAL {
            return Err(BrokerError::LimitExceeded(format!(
                "the server already serves {WATCHES_TOTAL} {what} streams; retry later"
            )));
        }
        let mine = per_caller.entry(caller.to_string()).or_default();
        if *mine >= WATCHES_PER_CALLER {
            return Err(BrokerError::LimitExceeded(format!(
                "{caller} already holds {WATCHES_PER_CALLER} {what} streams; close one first"
            )));
        }
        *mine += 1;
        *total += 1;
        Ok(WatchSlot {
            slots: self.clone(),
            caller: caller.to_string(),
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// One open watch; gives its slot back when dropped.
pub(crate) struct WatchSlot {
    slots: Arc<WatchSlots>,
    caller: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_caller) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_caller.get_mut(&self.caller) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_caller.remove(&self.caller);
            }
        }
    }
}

/// A `WatchEvents` stream holding its slot until it is dropped.
pub struct AuditWatch {
    records: ReceiverStream<Result<Record, AuditError>>,
    _slot: WatchSlot,
}

impl Stream for AuditWatch {
    type Item = Result<Record, AuditError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.records).poll_next(cx)
    }
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
                    let batch = tx.into_batch();
                    let committed = match batch.is_empty() {
                        true => Ok(()),
                        false => self.store.commit(&batch),
                    };
                    match committed {
                        Ok(()) => self
                            .cache
                            .committed(super::session_cache::writes_iam(&batch)),
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
            // The cache learns of the change from the audit log as it is applied
            // (`AuditLog::on_applied`), whether or not this future is still polled then.
            match self.audit.commit(event, change).await {
                Ok(_) => return result,
                Err(AuditError::Conflict) if attempt < store::TX_ATTEMPTS => continue,
                Err(AuditError::Conflict) => return Err(StoreError::Conflict.into()),
                Err(err) => return Err(err.into()),
            }
        }
    }

    pub fn install_checkpoint_signer(&self) {
        self.audit
            .set_signer(Some(Arc::new(self.checkpoint_keys())));
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

    /// One page of durable events matching `filter`, oldest first after `cursor`, or with
    /// `newest_first` newest first before `cursor`; the second value is the next page's
    /// cursor (`None` at the end).
    #[allow(clippy::too_many_arguments)]
    pub async fn read_audit(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        what: &str,
        filter: &EventFilter,
        cursor: Option<u64>,
        max: usize,
        newest_first: bool,
    ) -> Result<(Vec<Record>, Option<u64>), BrokerError> {
        self.audit_read(caller, meta, what).await?;
        if newest_first {
            return list_newest_first(
                self.store.as_ref(),
                filter,
                cursor,
                max,
                self.audit.durable_seq(),
            );
        }
        Ok(self.audit.list(filter, cursor, max)?)
    }

    /// Follows the log: every record after `after_seq`, then new ones as they land. With
    /// `after_seq` 0, only records after the watch's own (audited) read. Refused with
    /// `LimitExceeded` when the caller, or the server, holds too many streams.
    pub async fn watch_audit(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        after_seq: u64,
    ) -> Result<AuditWatch, BrokerError> {
        // A role's sessions share the role's slots: new session names buy no more.
        let holder = caller
            .claims
            .stint
            .role_arn
            .as_deref()
            .unwrap_or(caller.arn());
        let slot = match self.watches.acquire(holder, "WatchEvents") {
            Ok(slot) => slot,
            Err(err) => {
                // Refused before anything is read: recorded as such, not as a read.
                let mut event =
                    self.event(meta, READ_ACTION, caller.arn(), Outcome::Deny, self.now());
                event.params = json!({ "call": "WatchEvents" });
                event.reason = err.to_string();
                self.audit.append(event).await?;
                return Err(err);
            }
        };
        self.audit_read(caller, meta, "WatchEvents").await?;
        let from = if after_seq == 0 {
            self.audit.durable_seq()
        } else {
            after_seq
        };
        Ok(AuditWatch {
            records: self.audit.watch(from),
            _slot: slot,
        })
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

/// How many sequence numbers a newest-first listing reads per backward step.
const NEWEST_FIRST_WINDOW: u64 = 256;

/// Records matching `filter` with seq below `before` (and at most `upto`, the durable
/// seq), newest first, at most `max`. The store scans only forward, so the log is read
/// in windows of [`NEWEST_FIRST_WINDOW`] seqs walking back to its first record, within
/// the same scan budget as the forward listing (a short page with a cursor when reached).
fn list_newest_first(
    store: &dyn Store,
    filter: &EventFilter,
    before: Option<u64>,
    max: usize,
    upto: u64,
) -> Result<(Vec<Record>, Option<u64>), BrokerError> {
    let max = max.max(1);
    let Some(first) = store
        .scan(store::Table::Audit, &[], None, 1)?
        .first()
        .and_then(|(key, _)| chain::seq_of_key(key))
    else {
        return Ok((Vec::new(), None));
    };
    let mut hi = match before {
        Some(0) => return Ok((Vec::new(), None)),
        Some(before) => (before - 1).min(upto),
        None => upto,
    };
    let mut out = Vec::new();
    let mut scanned = 0;
    while hi >= first {
        let lo = hi.saturating_sub(NEWEST_FIRST_WINDOW - 1).max(first);
        let start = lo.checked_sub(1).map(chain::record_key);
        let window = store.scan(
            store::Table::Audit,
            &[],
            start.as_ref().map(|k| &k[..]),
            usize::try_from(hi - lo + 1).unwrap_or(usize::MAX),
        )?;
        for (key, value) in window.iter().rev() {
            let Some(seq) = chain::seq_of_key(key) else {
                continue;
            };
            if seq > hi {
                continue;
            }
            scanned += 1;
            let record = Record::decode(seq, value)?;
            if filter.matches(&record.event) {
                out.push(record);
                if out.len() >= max {
                    return Ok((out, (seq > first).then_some(seq)));
                }
            }
            if scanned >= crate::audit::writer::LIST_SCAN_BUDGET {
                return Ok((out, (seq > first).then_some(seq)));
            }
        }
        if lo == first {
            break;
        }
        hi = lo - 1;
    }
    Ok((out, None))
}

impl Broker {
    /// Retention: deletes audit events older than `keep`, behind a signed anchor so the
    /// rest of the chain still verifies. The anchor is committed in one batch with the
    /// prune's own event; the records it covers are deleted after. Verification and
    /// deletion run on the blocking pool. A `keep` reaching before the epoch prunes nothing.
    pub async fn prune_audit(
        &self,
        keep: std::time::Duration,
    ) -> Result<chain::PruneReport, BrokerError> {
        let now = self.now();
        let now_ms = super::unix_ms(now);
        let Some(cutoff_ms) = checked_sub_ms(now_ms, keep).filter(|ms| *ms > 0) else {
            return Ok(chain::PruneReport::default());
        };
        let cutoff = chain::PruneCutoff::BeforeTimeMs(cutoff_ms);
        let store = self.store.clone();
        let keys = self.checkpoint_keys();
        let plan = tokio::task::spawn_blocking(move || {
            chain::plan_prune(store.as_ref(), cutoff, &keys, now_ms)
        })
        .await
        .map_err(|e| BrokerError::Internal(format!("prune task failed: {e}")))?
        .map_err(|e| BrokerError::Internal(format!("audit prune: {e}")))?;
        let anchor_seq = match plan {
            Some(plan) => {
                let mut event = self.event(
                    &RequestMeta::default(),
                    "stint:PruneAuditLog",
                    "stint",
                    Outcome::Allow,
                    now,
                );
                event.params = json!({
                    "anchor_seq": plan.anchor_seq,
                    "previous_anchor_seq": plan.previous_anchor_seq,
                    "cutoff_ms": cutoff_ms,
                });
                self.audit.commit(event, plan.batch).await?;
                Some(plan.anchor_seq)
            }
            None => chain::read_anchor(self.store.as_ref())
                .map_err(|e| BrokerError::Internal(format!("audit prune: {e}")))?
                .map(|anchor| anchor.seq),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || chain::delete_covered(store.as_ref(), anchor_seq))
            .await
            .map_err(|e| BrokerError::Internal(format!("prune task failed: {e}")))?
            .map_err(|e| BrokerError::Internal(format!("audit prune: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log holding seqs `first..=last` (a pruned start), every third event named "b".
    fn log(first: u64, last: u64) -> crate::store::memory::MemoryStore {
        let store = crate::store::memory::MemoryStore::new();
        let mut batch = Batch::default();
        for seq in first..=last {
            let name = if seq % 3 == 0 { "b" } else { "a" };
            let mut event = Event::new(seq as i64, name, Outcome::Allow);
            event.seq = seq;
            let record = Record::link(&[0; 32], event);
            batch.writes.push((
                store::Table::Audit,
                chain::record_key(seq).to_vec(),
                Some(store::encode(&record)),
            ));
        }
        store.commit(&batch).unwrap();
        store
    }

    /// Newest-first pages, followed to the end, are the forward order reversed: across
    /// window edges, with a filter, a pruned start, records past the durable seq, and
    /// any page size.
    #[test]
    fn newest_first_pages_are_the_forward_order_reversed() {
        let cases = [
            (1, 600, 600, None),
            (5, 700, 650, Some("b")),
            (300, 300, 300, None),
            (10, 20, 5, None), // nothing durable yet
            (1, 257, 257, Some("a")),
        ];
        for (first, last, durable, name) in cases {
            let store = log(first, last);
            let filter = EventFilter {
                event_name: name.map(str::to_owned),
                ..EventFilter::default()
            };
            let want: Vec<u64> = (first..=last.min(durable))
                .rev()
                .filter(|seq| name.is_none_or(|n| (n == "b") == (seq % 3 == 0)))
                .collect();
            for max in [1, 7, 256, 1000] {
                let mut got = Vec::new();
                let mut cursor = None;
                loop {
                    let (page, next) =
                        list_newest_first(&store, &filter, cursor, max, durable).unwrap();
                    assert!(page.len() <= max);
                    got.extend(page.iter().map(Record::seq));
                    match next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                assert_eq!(
                    got, want,
                    "{first}..={last} durable {durable} {name:?} max {max}"
                );
            }
        }
        let empty = crate::store::memory::MemoryStore::new();
        assert_eq!(
            list_newest_first(&empty, &EventFilter::default(), None, 10, 0).unwrap(),
            (vec![], None)
        );
    }

    #[test]
    fn watch_slots_cap_each_caller_and_the_total_and_come_back_on_drop() {
        let slots = Arc::new(WatchSlots::default());
        let mine: Vec<WatchSlot> = (0..WATCHES_PER_CALLER)
            .map(|_| slots.acquire("alice", "WatchEvents").unwrap())
            .collect();
        assert!(matches!(
            slots.acquire("alice", "WatchEvents"),
            Err(BrokerError::LimitExceeded(m)) if m.contains("alice")
        ));
        drop(mine);
        assert_eq!(slots.open(), 0);
        let mut held = Vec::new();
        for i in 0..WATCHES_TOTAL {
            held.push(
                slots
                    .acquire(&format!("caller-{}", i / WATCHES_PER_CALLER), "WatchEvents")
                    .unwrap(),
            );
        }
        assert!(matches!(
            slots.acquire("newcomer", "WatchEvents"),
            Err(BrokerError::LimitExceeded(m)) if m.contains("server")
        ));
        held.pop();
        slots.acquire("newcomer", "WatchEvents").unwrap();
        assert_eq!(slots.open(), WATCHES_TOTAL - 1);
    }
}
