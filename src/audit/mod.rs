//! The tamper-evident audit log.
//!
//! Why a layer of its own: every decision the broker takes must be on disk, in a chain
//! that shows any later edit, *before* the caller hears the answer — and that guarantee
//! has to hold under concurrency without one fsync per request. So:
//!
//! - [`event`]: what an event says ([`event::Event`]), its canonical bytes, and the
//!   last-line redaction of secrets in request parameters.
//! - [`chain`]: `hash = SHA-256(prev_hash ‖ canonical event)`, signed checkpoints and
//!   retention anchors, offline-capable verification that names the first broken seq and
//!   why, and pruning.
//! - [`writer`]: [`writer::AuditLog`], the single appender: assigns seqs under a short
//!   lock, commits, then waits for a background group-commit flusher; if the record is
//!   not durable within the timeout the append fails ([`AuditError::Unavailable`]) and
//!   the log reports itself unhealthy until a flush succeeds again.
//!
//! Everything goes through the [`crate::store::Store`] trait (tables `Audit` and `Meta`).

pub mod chain;
pub mod event;
pub mod writer;

pub use chain::{CheckpointPolicy, CheckpointSigner, Record, VerifyReport};
pub use event::{CredentialInfo, Event, EventFilter, Outcome};
pub use writer::{AuditConfig, AuditLog, AuditStats};

use crate::store::StoreError;

/// Every way the audit layer fails.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event could not be made durable (commit failed, flush failed or timed out):
    /// the request that caused it must fail.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit record {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// Pruning needs a signing key for its anchor.
    #[error("no signing key for the audit anchor")]
    NoSigningKey,
    /// Pruning refused: the part it would delete does not verify.
    #[error("audit chain is not intact: {}", .0.reason)]
    Broken(Box<VerifyReport>),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}
