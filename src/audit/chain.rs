//! The hash chain: linking records, signed checkpoints and anchors, verification, pruning.
//!
//! `record.hash = SHA-256(prev_hash ‖ event.canonical_bytes())`, the first record (seq 1)
//! linking to 32 zero bytes. Records live in [`Table::Audit`] under their seq as 8-byte
//! big-endian keys, so a scan returns them in chain order.
//!
//! A chain alone proves order and integrity of what is there, not that nothing is missing
//! at the end. **Checkpoints** close that gap: every so many events (or seconds) the writer
//! signs `"stint-audit-checkpoint\n{seq}\n{hash}\n{time_ms}"` with Ed25519 and stores it in
//! [`Table::Meta`] under `audit/checkpoint/{seq:020}`; a checkpoint naming a seq past the
//! last record is a truncation. Retention ([`prune_before`]) deletes old records after
//! storing a signed **anchor** (`"stint-audit-anchor\n…"`, a different domain so a
//! checkpoint can't be replayed as an anchor) at `audit/anchor`; the chain then verifies
//! from the anchor instead of from the zero hash.
//!
//! # Limits (what verification does not prove)
//!
//! - Each checkpoint stores the public key that signed it, so [`verify`] without a keyring
//!   (offline, `stint audit verify` on a stopped daemon's directory) checks the signatures
//!   against the stored keys: that proves consistency, not authenticity — someone who can
//!   rewrite the database can rewrite records *and* re-sign checkpoints with a key of
//!   their own. Authenticity needs the broker's keyring ([`verify`] with `keys`), or a
//!   comparison of [`VerifyReport::kids`] against the published JWKS.
//! - Events appended after the last checkpoint can be dropped from the tail undetected;
//!   deleting checkpoints together with the tail hides a deeper truncation. Shipping
//!   checkpoints off the machine (log, JWKS-style endpoint) is the remedy; not done here.
//! - A rewrite that recomputes every later hash is caught only at the next checkpoint,
//!   reported as [`Breach::Rewritten`] from the seq after the last checkpoint that matched.

use data_encoding::HEXLOWER;
use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::event::Event;
use crate::store::{self, Batch, Store, Table};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// What seq 1 links to.
pub const GENESIS: Hash = [0; 32];

/// Meta key prefix of checkpoints; the suffix is the seq, zero-padded to 20 digits.
pub const CHECKPOINT_PREFIX: &str = "audit/checkpoint/";
/// Meta key of the retention anchor.
pub const ANCHOR_KEY: &str = "audit/anchor";

/// Current format version of [`Checkpoint`].
pub const CHECKPOINT_VERSION: u32 = 1;

const PAGE: usize = 1024;

/// One stored link of the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub event: Event,
    /// Hex of the previous record's hash (or of [`GENESIS`] / the anchor's).
    pub prev_hash: String,
    /// Hex of `SHA-256(prev_hash bytes ‖ event canonical bytes)`.
    pub hash: String,
}

impl Record {
    pub fn seq(&self) -> u64 {
        self.event.seq
    }

    /// Links `event` (whose `seq` the caller has set) after `prev`.
    pub fn link(prev: &Hash, event: Event) -> Self {
        let hash = chain_hash(prev, &event);
        Self {
            event,
            prev_hash: HEXLOWER.encode(prev),
            hash: HEXLOWER.encode(&hash),
        }
    }

    pub fn hash_bytes(&self) -> Option<Hash> {
        decode_hash(&self.hash)
    }

    /// Decodes a stored record; `seq` names it in the error.
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<Self, AuditError> {
        serde_json::from_slice(bytes).map_err(|err| AuditError::Corrupt {
            seq,
            reason: err.to_string(),
        })
    }
}

/// `SHA-256(prev ‖ event.canonical_bytes())`.
pub fn chain_hash(prev: &Hash, event: &Event) -> Hash {
    let mut input = Vec::with_capacity(32 + 256);
    input.extend_from_slice(prev);
    input.extend_from_slice(&event.canonical_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest(&SHA256, &input).as_ref());
    hash
}

pub fn decode_hash(hex: &str) -> Option<Hash> {
    HEXLOWER.decode(hex.as_bytes()).ok()?.try_into().ok()
}

/// The [`Table::Audit`] key of `seq`.
pub fn record_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub fn seq_of_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// When the writer signs a checkpoint; `0` disables a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_events: u64,
    pub every_seconds: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_events: 1000,
            every_seconds: 60,
        }
    }
}

/// Signs checkpoints and anchors; implemented by the broker over its Ed25519 keyring.
///
/// `public_key` must answer for every kid that ever signed a checkpoint — retired and
/// purged signing keys included (keep their public halves) — or verification with the
/// keyring reports those checkpoints as signed by an unknown key. Messages start with
/// `stint-audit-` and contain newlines, so they can never be a JWT signing input.
pub trait CheckpointSigner: Send + Sync {
    /// Signs with the current key: `(kid, 64-byte signature)`, or `None` if there is no
    /// key yet (the checkpoint is skipped).
    fn sign(&self, message: &[u8]) -> Option<(String, Vec<u8>)>;
    fn public_key(&self, kid: &str) -> Option<[u8; 32]>;
}

/// Which statement a [`Checkpoint`] signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seal {
    Checkpoint,
    Anchor,
}

impl Seal {
    fn domain(self) -> &'static str {
        match self {
            Seal::Checkpoint => "stint-audit-checkpoint",
            Seal::Anchor => "stint-audit-anchor",
        }
    }

    /// `"{domain}\n{seq}\n{hash}\n{time_ms}"`.
    pub fn message(self, seq: u64, hash_hex: &str, time_ms: i64) -> Vec<u8> {
        format!("{}\n{seq}\n{hash_hex}\n{time_ms}", self.domain()).into_bytes()
    }
}

/// A signed statement "the record at `seq` has hash `hash`" (a checkpoint or the anchor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u32,
    pub seq: u64,
    /// Hex.
    pub hash: String,
    pub time_ms: i64,
    pub kid: String,
    /// Hex of the Ed25519 public key of `kid`, for offline verification.
    pub public_key: String,
    /// Hex of the Ed25519 signature over [`Seal::message`].
    pub signature: String,
}

impl Checkpoint {
    /// Signs; `None` when the signer has no key (or can't name the key it used).
    pub fn sign(
        seal: Seal,
        signer: &dyn CheckpointSigner,
        seq: u64,
        hash_hex: &str,
        time_ms: i64,
    ) -> Option<Self> {
        let (kid, signature) = signer.sign(&seal.message(seq, hash_hex, time_ms))?;
        let public_key = signer.public_key(&kid)?;
        Some(Self {
            v: CHECKPOINT_VERSION,
            seq,
            hash: hash_hex.to_string(),
            time_ms,
            kid,
            public_key: HEXLOWER.encode(&public_key),
            signature: HEXLOWER.encode(&signature),
        })
    }

    /// Checks the signature against the keyring's key for `kid` (which must also be the
    /// stored key) or, without a keyring, against the stored key.
    pub fn verify_signature(
        &self,
        seal: Seal,
        keys: Option<&dyn CheckpointSigner>,
    ) -> Result<(), String> {
        let stored: [u8; 32] = HEXLOWER
            .decode(self.public_key.as_bytes())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("stored public key is unreadable")?;
        let key = match keys {
            None => stored,
            Some(keys) => {
                let known = keys
                    .public_key(&self.kid)
                    .ok_or_else(|| format!("kid {} is unknown to the keyring", self.kid))?;
                if known != stored {
                    return Err(format!("stored public key is not kid {}'s", self.kid));
                }
                known
            }
        };
        let signature = HEXLOWER
            .decode(self.signature.as_bytes())
            .map_err(|_| "signature is unreadable")?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(
                &seal.message(self.seq, &self.hash, self.time_ms),
                &signature,
            )
            .map_err(|_| format!("signature by kid {} does not verify", self.kid))
    }
}

pub fn checkpoint_key(seq: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{seq:020}")
}

fn seq_of_checkpoint_key(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(CHECKPOINT_PREFIX.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

/// Stores a checkpoint (not flushed: it becomes durable with the next flush).
pub fn write_checkpoint(store: &dyn Store, checkpoint: &Checkpoint) -> Result<(), AuditError> {
    store.commit(&Batch {
        expects: vec![],
        writes: vec![(
            Table::Meta,
            checkpoint_key(checkpoint.seq).into_bytes(),
            Some(store::encode(checkpoint)),
        )],
    })?;
    Ok(())
}

/// Every checkpoint with `seq > after`, in seq order.
pub fn read_checkpoints(store: &dyn Store, after: u64) -> Result<Vec<Checkpoint>, AuditError> {
    let mut out = Vec::new();
    let mut cursor = checkpoint_key(after).into_bytes();
    loop {
        let page = store.scan(
            Table::Meta,
            CHECKPOINT_PREFIX.as_bytes(),
            Some(&cursor),
            PAGE,
        )?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        cursor = last.clone();
        for (key, value) in page {
            out.push(store::decode(Table::Meta, &key, &value)?);
        }
    }
}

pub fn read_anchor(store: &dyn Store) -> Result<Option<Checkpoint>, AuditError> {
    Ok(store::read(store, Table::Meta, ANCHOR_KEY)?)
}

/// Why a chain is not intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Breach {
    /// A record's content no longer matches its hash, or the next record's link to it.
    Edited,
    /// A seq is missing.
    Deleted,
    /// A record sits under another record's seq.
    Reordered,
    /// A checkpoint names a seq past the last record.
    Truncated,
    /// A checkpoint's hash differs from the record's: the chain was recomputed.
    Rewritten,
    /// A checkpoint or the anchor doesn't verify.
    BadSignature,
    /// A key that is not a seq.
    Unreadable,
}

impl Breach {
    pub fn as_str(self) -> &'static str {
        match self {
            Breach::Edited => "edited",
            Breach::Deleted => "deleted",
            Breach::Reordered => "reordered",
            Breach::Truncated => "truncated",
            Breach::Rewritten => "rewritten",
            Breach::BadSignature => "bad-signature",
            Breach::Unreadable => "unreadable",
        }
    }
}

/// The outcome of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub intact: bool,
    /// Records that verified before the first breach (all of them when intact).
    pub events_checked: u64,
    pub first_broken_seq: Option<u64>,
    pub breach: Option<Breach>,
    /// `"{breach}: {detail}"`, or a summary when intact.
    pub reason: String,
    pub checkpoints_checked: u64,
    /// Seq of the retention anchor the walk started from.
    pub anchor_seq: Option<u64>,
    /// Seq of the last record verified.
    pub last_seq: u64,
    /// Kids that signed the anchor and the checkpoints seen (compare with the JWKS).
    pub kids: Vec<String>,
}

struct Walk {
    report: VerifyReport,
}

impl Walk {
    fn breach(mut self, seq: u64, breach: Breach, detail: String) -> VerifyReport {
        self.report.intact = false;
        self.report.first_broken_seq = Some(seq);
        self.report.breach = Some(breach);
        self.report.reason = format!("{}: {detail}", breach.as_str());
        self.report
    }

    fn saw_kid(&mut self, kid: &str) {
        if !self.report.kids.iter().any(|k| k == kid) {
            self.report.kids.push(kid.to_string());
        }
    }
}

/// Walks every record in seq order and reports the first breach; see the module doc for
/// what it proves. `keys`: the broker's keyring, or `None` to trust stored public keys.
pub fn verify(
    store: &dyn Store,
    keys: Option<&dyn CheckpointSigner>,
) -> Result<VerifyReport, AuditError> {
    verify_upto(store, keys, None)
}

/// [`verify`], stopping after record `upto` (checkpoints past it are not checked).
fn verify_upto(
    store: &dyn Store,
    keys: Option<&dyn CheckpointSigner>,
    upto: Option<u64>,
) -> Result<VerifyReport, AuditError> {
    let mut walk = Walk {
        report: VerifyReport {
            intact: true,
            events_checked: 0,
            first_broken_seq: None,
            breach: None,
            reason: String::new(),
            checkpoints_checked: 0,
            anchor_seq: None,
            last_seq: 0,
            kids: Vec::new(),
        },
    };
    let mut expected = 1u64;
    let mut prev = GENESIS;
    let anchor = read_anchor(store)?;
    if let Some(anchor) = &anchor {
        if let Err(why) = anchor.verify_signature(Seal::Anchor, keys) {
            return Ok(walk.breach(anchor.seq, Breach::BadSignature, format!("anchor: {why}")));
        }
        let Some(hash) = decode_hash(&anchor.hash) else {
            return Ok(walk.breach(anchor.seq, Breach::BadSignature, "anchor hash".into()));
        };
        walk.saw_kid(&anchor.kid);
        walk.report.anchor_seq = Some(anchor.seq);
        walk.report.last_seq = anchor.seq;
        expected = anchor.seq + 1;
        prev = hash;
    }
    let anchor_seq = expected - 1;
    let mut checkpoints = read_checkpoints(store, anchor_seq)?.into_iter().peekable();
    let mut last_good_checkpoint = anchor_seq;
    let mut cursor: Option<Vec<u8>> = None;
    'pages: loop {
        let page = store.scan(Table::Audit, &[], cursor.as_deref(), PAGE)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        cursor = Some(last.clone());
        for (key, value) in page {
            let Some(seq) = seq_of_key(&key) else {
                let detail = format!("key {} is not a seq", HEXLOWER.encode(&key));
                return Ok(walk.breach(expected, Breach::Unreadable, detail));
            };
            if upto.is_some_and(|upto| seq > upto) {
                break 'pages;
            }
            if seq <= anchor_seq {
                // Left behind by an interrupted prune: only the anchored one is checked.
                if seq == anchor_seq {
                    let hash = Record::decode(seq, &value).ok().map(|r| r.hash);
                    if hash.as_deref() != anchor.as_ref().map(|a| a.hash.as_str()) {
                        let detail = format!("record {seq} differs from the anchor");
                        return Ok(walk.breach(seq, Breach::Rewritten, detail));
                    }
                }
                continue;
            }
            if seq > expected {
                let detail = if expected + 1 == seq {
                    format!("record {expected} is missing")
                } else {
                    format!("records {expected}..{} are missing", seq - 1)
                };
                return Ok(walk.breach(expected, Breach::Deleted, detail));
            }
            let record = match Record::decode(seq, &value) {
                Ok(record) => record,
                Err(err) => {
                    let detail = format!("record {seq} does not parse ({err})");
                    return Ok(walk.breach(seq, Breach::Edited, detail));
                }
            };
            if record.event.seq != seq {
                let detail = format!("seq {seq} holds record {}", record.event.seq);
                return Ok(walk.breach(seq, Breach::Reordered, detail));
            }
            if store::encode(&record) != value {
                let detail = format!("record {seq} is not in canonical form");
                return Ok(walk.breach(seq, Breach::Edited, detail));
            }
            let hash = decode_hash(&record.prev_hash).map(|p| chain_hash(&p, &record.event));
            let Some(hash) = hash.filter(|h| HEXLOWER.encode(h).as_str() == record.hash.as_str())
            else {
                let detail = format!("record {seq} does not match its hash");
                return Ok(walk.breach(seq, Breach::Edited, detail));
            };
            if record.prev_hash != HEXLOWER.encode(&prev) {
                // Both are self-consistent, so one was rewritten whole: blame the earlier.
                let (blamed, detail) = if seq - 1 > anchor_seq {
                    let detail = format!("record {seq} links to another record {}", seq - 1);
                    (seq - 1, detail)
                } else {
                    (
                        seq,
                        format!("record {seq} does not link to the chain start"),
                    )
                };
                return Ok(walk.breach(blamed, Breach::Edited, detail));
            }
            prev = hash;
            expected = seq + 1;
            walk.report.events_checked += 1;
            walk.report.last_seq = seq;
            while let Some(checkpoint) = checkpoints.next_if(|c| c.seq <= seq) {
                if let Err(why) = checkpoint.verify_signature(Seal::Checkpoint, keys) {
                    let detail = format!("checkpoint {}: {why}", checkpoint.seq);
                    return Ok(walk.breach(checkpoint.seq, Breach::BadSignature, detail));
                }
                if checkpoint.seq != seq || checkpoint.hash != record.hash {
                    let detail = format!(
                        "checkpoint {} differs from the stored chain (rewritten after {})",
                        checkpoint.seq, last_good_checkpoint
                    );
                    return Ok(walk.breach(last_good_checkpoint + 1, Breach::Rewritten, detail));
                }
                walk.saw_kid(&checkpoint.kid);
                walk.report.checkpoints_checked += 1;
                last_good_checkpoint = seq;
            }
        }
    }
    if upto.is_none()
        && let Some(checkpoint) = checkpoints.next()
    {
        if let Err(why) = checkpoint.verify_signature(Seal::Checkpoint, keys) {
            let detail = format!("checkpoint {}: {why}", checkpoint.seq);
            return Ok(walk.breach(checkpoint.seq, Breach::BadSignature, detail));
        }
        let detail = format!(
            "checkpoint {} names records past the last one ({})",
            checkpoint.seq, walk.report.last_seq
        );
        return Ok(walk.breach(expected, Breach::Truncated, detail));
    }
    walk.report.reason = format!(
        "intact: {} events, {} checkpoints{}",
        walk.report.events_checked,
        walk.report.checkpoints_checked,
        match walk.report.anchor_seq {
            Some(seq) => format!(", from anchor {seq}"),
            None => String::new(),
        }
    );
    Ok(walk.report)
}

/// Where retention cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneCutoff {
    /// Delete records with a smaller seq.
    BeforeSeq(u64),
    /// Delete the leading records stamped earlier (stops at the first one that isn't).
    BeforeTimeMs(i64),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The anchor after pruning (`None`: nothing was ever pruned).
    pub anchor_seq: Option<u64>,
    pub deleted_events: u64,
    pub deleted_checkpoints: u64,
}

/// A verified, signed anchor not yet stored: [`plan_prune`]'s answer.
#[derive(Clone, Debug)]
pub struct PrunePlan {
    /// The new anchor's seq: every record up to it will be deleted.
    pub anchor_seq: u64,
    /// The anchor before this prune (0: none).
    pub previous_anchor_seq: u64,
    /// Stores the anchor, expecting the previous one unchanged. Commit it (with the
    /// prune's audit event), flush, then [`delete_covered`].
    pub batch: Batch,
}

/// Deletes old records behind a signed anchor so the rest still verifies:
/// [`plan_prune`], commit and flush the anchor, [`delete_covered`].
pub fn prune_before(
    store: &dyn Store,
    cutoff: PruneCutoff,
    signer: &dyn CheckpointSigner,
    now_ms: i64,
) -> Result<PruneReport, AuditError> {
    let plan = plan_prune(store, cutoff, signer, now_ms)?;
    let anchor_seq = match plan {
        Some(plan) => {
            store.commit(&plan.batch)?;
            store.flush()?;
            Some(plan.anchor_seq)
        }
        None => read_anchor(store)?.map(|a| a.seq),
    };
    delete_covered(store, anchor_seq)
}

/// Finds the last record before `cutoff`, verifies the chain up to it with `signer`'s
/// keyring (pruning must not launder a tampered prefix: [`AuditError::Broken`] if it is
/// not intact) and signs the anchor that will replace it. `None`: nothing new to prune.
pub fn plan_prune(
    store: &dyn Store,
    cutoff: PruneCutoff,
    signer: &dyn CheckpointSigner,
    now_ms: i64,
) -> Result<Option<PrunePlan>, AuditError> {
    let old_anchor = store.get(Table::Meta, ANCHOR_KEY.as_bytes())?;
    let anchor_seq = match &old_anchor {
        Some(bytes) => store::decode::<Checkpoint>(Table::Meta, ANCHOR_KEY.as_bytes(), bytes)?.seq,
        None => 0,
    };
    // The last record to delete.
    let mut cut: Option<Record> = None;
    let mut cursor = record_key(anchor_seq).to_vec();
    'scan: loop {
        let page = store.scan(Table::Audit, &[], Some(&cursor), PAGE)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        cursor = last.clone();
        for (key, value) in page {
            let seq = seq_of_key(&key).unwrap_or(u64::MAX);
            let record = Record::decode(seq, &value)?;
            let before = match cutoff {
                PruneCutoff::BeforeSeq(limit) => seq < limit,
                PruneCutoff::BeforeTimeMs(limit) => record.event.time_ms < limit,
            };
            if !before {
                break 'scan;
            }
            cut = Some(record);
        }
    }
    let Some(cut) = cut else {
        return Ok(None);
    };
    let verified = verify_upto(store, Some(signer), Some(cut.seq()))?;
    if !verified.intact {
        return Err(AuditError::Broken(Box::new(verified)));
    }
    let anchor = Checkpoint::sign(Seal::Anchor, signer, cut.seq(), &cut.hash, now_ms)
        .ok_or(AuditError::NoSigningKey)?;
    Ok(Some(PrunePlan {
        anchor_seq: cut.seq(),
        previous_anchor_seq: anchor_seq,
        batch: Batch {
            expects: vec![(Table::Meta, ANCHOR_KEY.as_bytes().to_vec(), old_anchor)],
            writes: vec![(
                Table::Meta,
                ANCHOR_KEY.as_bytes().to_vec(),
                Some(store::encode(&anchor)),
            )],
        },
    }))
}

/// Deletes every record and checkpoint a stored anchor at `anchor_seq` covers (including
/// leftovers of an interrupted prune, which [`verify`] skips meanwhile).
pub fn delete_covered(
    store: &dyn Store,
    anchor_seq: Option<u64>,
) -> Result<PruneReport, AuditError> {
    let mut report = PruneReport {
        anchor_seq,
        ..PruneReport::default()
    };
    let Some(anchor_seq) = anchor_seq else {
        return Ok(report);
    };
    loop {
        let keys: Vec<Vec<u8>> = store
            .scan(Table::Audit, &[], None, PAGE)?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| seq_of_key(key).is_some_and(|seq| seq <= anchor_seq))
            .collect();
        if keys.is_empty() {
            break;
        }
        report.deleted_events += keys.len() as u64;
        delete_all(store, Table::Audit, keys)?;
    }
    loop {
        let keys: Vec<Vec<u8>> = store
            .scan(Table::Meta, CHECKPOINT_PREFIX.as_bytes(), None, PAGE)?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| seq_of_checkpoint_key(key).is_some_and(|seq| seq <= anchor_seq))
            .collect();
        if keys.is_empty() {
            break;
        }
        report.deleted_checkpoints += keys.len() as u64;
        delete_all(store, Table::Meta, keys)?;
    }
    store.flush()?;
    Ok(report)
}

fn delete_all(store: &dyn Store, table: Table, keys: Vec<Vec<u8>>) -> Result<(), AuditError> {
    let writes = keys.into_iter().map(|key| (table, key, None)).collect();
    store.commit(&Batch {
        expects: vec![],
        writes,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Outcome;
    use crate::audit::testing::{NoKey, TestSigner, copy_store};
    use crate::store::memory::MemoryStore;

    fn event(seq: u64) -> Event {
        let mut event = Event::new(1_000 + seq as i64, "sts:AssumeRole", Outcome::Allow)
            .with_principal(format!("arn:stint:iam::123456789012:user/u{seq}"));
        event.seq = seq;
        event
    }

    fn put(store: &dyn Store, record: &Record) {
        store
            .commit(&Batch {
                expects: vec![],
                writes: vec![(
                    Table::Audit,
                    record_key(record.seq()).to_vec(),
                    Some(store::encode(record)),
                )],
            })
            .unwrap();
    }

    fn get(store: &dyn Store, seq: u64) -> Vec<u8> {
        store.get(Table::Audit, &record_key(seq)).unwrap().unwrap()
    }

    fn set(store: &dyn Store, seq: u64, value: Option<Vec<u8>>) {
        store
            .commit(&Batch {
                expects: vec![],
                writes: vec![(Table::Audit, record_key(seq).to_vec(), value)],
            })
            .unwrap();
    }

    /// `n` records from genesis, a checkpoint every `every` (0 = none), signed by `signer`.
    fn fill(n: u64, every: u64, signer: &dyn CheckpointSigner) -> MemoryStore {
        let store = MemoryStore::new();
        append(&store, 1..=n, GENESIS, every, signer);
        store
    }

    /// Links `seqs` after `prev`, as an attacker recomputing the chain would.
    fn append(
        store: &dyn Store,
        seqs: std::ops::RangeInclusive<u64>,
        mut prev: Hash,
        every: u64,
        signer: &dyn CheckpointSigner,
    ) {
        for seq in seqs {
            let record = Record::link(&prev, event(seq));
            put(store, &record);
            prev = record.hash_bytes().unwrap();
            if every > 0 && seq % every == 0 {
                let cp = Checkpoint::sign(Seal::Checkpoint, signer, seq, &record.hash, 7).unwrap();
                write_checkpoint(store, &cp).unwrap();
            }
        }
    }

    fn check(
        store: &dyn Store,
        keys: Option<&dyn CheckpointSigner>,
    ) -> (Option<u64>, Option<Breach>) {
        let report = verify(store, keys).unwrap();
        assert_eq!(report.intact, report.breach.is_none(), "{report:?}");
        (report.first_broken_seq, report.breach)
    }

    #[test]
    fn intact_chain_verifies() {
        let signer = TestSigner::new("k1", 1);
        let store = fill(12, 5, &signer);
        let report = verify(&store, Some(&signer)).unwrap();
        assert!(report.intact, "{report:?}");
        assert_eq!(report.events_checked, 12);
        assert_eq!(report.checkpoints_checked, 2);
        assert_eq!(report.last_seq, 12);
        assert_eq!(report.kids, ["k1"]);
        assert!(verify(&store, None).unwrap().intact);
        assert!(verify(&MemoryStore::new(), None).unwrap().intact);
    }

    #[test]
    fn first_record_links_to_genesis() {
        let record = Record::link(&GENESIS, event(1));
        assert_eq!(record.prev_hash, "0".repeat(64));
        let mut input = GENESIS.to_vec();
        input.extend(event(1).canonical_bytes());
        assert_eq!(
            record.hash,
            HEXLOWER.encode(digest(&SHA256, &input).as_ref())
        );
    }

    #[test]
    fn changed_byte_is_edited() {
        let signer = TestSigner::new("k1", 1);
        let original = fill(10, 0, &signer);
        let store = copy_store(&original);
        let text = String::from_utf8(get(&store, 5)).unwrap();
        set(
            &store,
            5,
            Some(text.replace("user/u5", "user/x5").into_bytes()),
        );
        assert_eq!(check(&store, None), (Some(5), Some(Breach::Edited)));
        // A byte that breaks the JSON, and a non-canonical but equal encoding, too.
        let store = copy_store(&original);
        let mut bytes = get(&store, 3);
        bytes[0] = b'[';
        set(&store, 3, Some(bytes));
        assert_eq!(check(&store, None), (Some(3), Some(Breach::Edited)));
        let store = copy_store(&original);
        let mut bytes = get(&store, 4);
        bytes.push(b' ');
        set(&store, 4, Some(bytes));
        assert_eq!(check(&store, None), (Some(4), Some(Breach::Edited)));
        assert!(verify(&original, None).unwrap().intact);
    }

    #[test]
    fn rehashed_edit_is_blamed_on_the_edited_record() {
        let store = fill(10, 0, &NoKey);
        let prev = decode_hash(&Record::decode(5, &get(&store, 5)).unwrap().hash).unwrap();
        let mut forged = event(6);
        forged.outcome = Outcome::Deny;
        put(&store, &Record::link(&prev, forged));
        assert_eq!(check(&store, None), (Some(6), Some(Breach::Edited)));
    }

    #[test]
    fn deleted_record_is_a_gap() {
        let store = fill(10, 0, &NoKey);
        set(&store, 7, None);
        assert_eq!(check(&store, None), (Some(7), Some(Breach::Deleted)));
        let report = verify(&store, None).unwrap();
        assert_eq!(report.events_checked, 6);
        assert!(report.reason.starts_with("deleted: "), "{}", report.reason);
        // The head of the log, without an anchor, is also a deletion.
        let store = fill(3, 0, &NoKey);
        set(&store, 1, None);
        assert_eq!(check(&store, None), (Some(1), Some(Breach::Deleted)));
    }

    #[test]
    fn swapped_records_are_reordered() {
        let store = fill(10, 0, &NoKey);
        let (four, five) = (get(&store, 4), get(&store, 5));
        set(&store, 4, Some(five));
        set(&store, 5, Some(four));
        assert_eq!(check(&store, None), (Some(4), Some(Breach::Reordered)));
    }

    #[test]
    fn truncation_after_a_checkpoint() {
        let signer = TestSigner::new("k1", 1);
        let store = fill(12, 5, &signer);
        for seq in 9..=12 {
            set(&store, seq, None);
        }
        let report = verify(&store, Some(&signer)).unwrap();
        assert_eq!(report.first_broken_seq, Some(9), "{report:?}");
        assert_eq!(report.breach, Some(Breach::Truncated));
        assert!(report.reason.contains("checkpoint 10"), "{}", report.reason);
        // Past the last checkpoint, truncation is invisible (documented limit).
        let store = fill(12, 5, &signer);
        set(&store, 12, None);
        assert!(verify(&store, Some(&signer)).unwrap().intact);
    }

    #[test]
    fn recomputed_chain_is_caught_at_the_next_checkpoint() {
        let signer = TestSigner::new("k1", 1);
        let store = fill(12, 5, &signer);
        // Rewrite 7.. with consistent hashes but no key to re-sign checkpoint 10.
        let prev = Record::decode(6, &get(&store, 6))
            .unwrap()
            .hash_bytes()
            .unwrap();
        let mut forged = Record::link(&prev, event(7));
        forged.event.outcome = Outcome::Deny;
        let forged = Record::link(&prev, forged.event);
        put(&store, &forged);
        append(&store, 8..=12, forged.hash_bytes().unwrap(), 0, &NoKey);
        assert_eq!(check(&store, None), (Some(6), Some(Breach::Rewritten)));
    }

    #[test]
    fn bad_checkpoint_signatures() {
        let signer = TestSigner::new("k1", 1);
        let store = fill(12, 5, &signer);
        let mut cp: Checkpoint = store::read(&store, Table::Meta, &checkpoint_key(10))
            .unwrap()
            .unwrap();
        cp.time_ms += 1;
        write_checkpoint(&store, &cp).unwrap();
        assert_eq!(check(&store, None), (Some(10), Some(Breach::BadSignature)));

        // An attacker rewrites the whole chain and re-signs with a key of their own:
        // consistent offline, refused against the genuine keyring.
        let attacker = TestSigner::new("k1", 9);
        let forged = fill(12, 5, &attacker);
        assert!(verify(&forged, None).unwrap().intact);
        assert_eq!(
            check(&forged, Some(&signer)),
            (Some(5), Some(Breach::BadSignature))
        );
        let other_kid = TestSigner::new("k2", 1);
        assert_eq!(
            check(&store, Some(&other_kid)).1,
            Some(Breach::BadSignature)
        );
    }

    #[test]
    fn prune_keeps_the_rest_verifiable() {
        let signer = TestSigner::new("k1", 1);
        let store = fill(20, 5, &signer);
        let leftover = get(&store, 3);
        let report = prune_before(&store, PruneCutoff::BeforeSeq(11), &signer, 99).unwrap();
        assert_eq!(
            report,
            PruneReport {
                anchor_seq: Some(10),
                deleted_events: 10,
                deleted_checkpoints: 2
            }
        );
        assert_eq!(store.scan(Table::Audit, &[], None, 100).unwrap().len(), 10);
        let verified = verify(&store, Some(&signer)).unwrap();
        assert!(verified.intact, "{verified:?}");
        assert_eq!(
            (
                verified.anchor_seq,
                verified.events_checked,
                verified.checkpoints_checked
            ),
            (Some(10), 10, 2)
        );

        // By time: records 11..=14 have time_ms < 1015.
        let report = prune_before(&store, PruneCutoff::BeforeTimeMs(1015), &signer, 99).unwrap();
        assert_eq!((report.anchor_seq, report.deleted_events), (Some(14), 4));
        assert!(verify(&store, None).unwrap().intact);

        // Leftovers of an interrupted prune are skipped, then removed.
        set(&store, 3, Some(leftover));
        assert!(verify(&store, None).unwrap().intact);
        let report = prune_before(&store, PruneCutoff::BeforeSeq(0), &signer, 99).unwrap();
        assert_eq!((report.anchor_seq, report.deleted_events), (Some(14), 1));

        // Tampering after the anchor is still caught; a forged anchor is too.
        let tampered = copy_store(&store);
        set(&tampered, 15, None);
        assert_eq!(check(&tampered, None), (Some(15), Some(Breach::Deleted)));
        let tampered = copy_store(&store);
        let mut anchor = read_anchor(&tampered).unwrap().unwrap();
        anchor.seq = 13;
        tampered
            .commit(&Batch {
                expects: vec![],
                writes: vec![(Table::Meta, ANCHOR_KEY.into(), Some(store::encode(&anchor)))],
            })
            .unwrap();
        assert_eq!(
            check(&tampered, None),
            (Some(13), Some(Breach::BadSignature))
        );
    }

    #[test]
    fn prune_refuses_a_broken_prefix_and_needs_a_key() {
        let signer = TestSigner::new("k1", 1);
        let store = fill(10, 0, &signer);
        assert!(matches!(
            prune_before(&store, PruneCutoff::BeforeSeq(5), &NoKey, 1),
            Err(AuditError::NoSigningKey)
        ));
        set(&store, 2, None);
        match prune_before(&store, PruneCutoff::BeforeSeq(5), &signer, 1) {
            Err(AuditError::Broken(report)) => assert_eq!(report.first_broken_seq, Some(2)),
            other => panic!("expected Broken, got {other:?}"),
        }
        assert_eq!(store.get(Table::Meta, ANCHOR_KEY.as_bytes()).unwrap(), None);
    }
}
