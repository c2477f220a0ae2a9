//! The broker layer's one error enum. `rpc/status.rs` maps it to gRPC codes in one table.

use std::time::Duration;

use crate::audit::AuditError;
use crate::core::policy::PolicyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Wrong password, wrong code, unknown user or key: deliberately indistinguishable.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed attempts; retry after {} s", retry_after.as_secs().max(1))]
    LockedOut { retry_after: Duration },
    /// A bearer token that is missing, malformed, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{action} on {resource} is not allowed: {reason}")]
    AccessDenied {
        action: String,
        resource: String,
        reason: String,
    },
    #[error("{field}: {message}")]
    InvalidInput { field: String, message: String },
    #[error("malformed policy document in {field}: {error}")]
    MalformedPolicy { field: String, error: PolicyError },
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("cannot delete {0}")]
    DeleteConflict(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// A bounded queue is full: refused before any work, retry after the hint.
    #[error("server busy ({what}); retry in {} ms", retry_after.as_millis().max(1))]
    Overloaded { what: String, retry_after: Duration },
    #[error("{0}")]
    FailedPrecondition(String),
    /// The audit log could not record the event, so nothing is answered.
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// The store failed I/O (a full disk, a lost database): transient, the caller retries.
    #[error("storage unavailable: {0}")]
    StoreUnavailable(String),
    /// Store or crypto failure: the detail goes to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        BrokerError::InvalidInput {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for BrokerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Io(detail) => BrokerError::StoreUnavailable(detail),
            err => BrokerError::Internal(format!("store: {err}")),
        }
    }
}

impl crate::store::TxError for BrokerError {
    fn is_conflict(&self) -> bool {
        false
    }
}

impl From<AuditError> for BrokerError {
    fn from(err: AuditError) -> Self {
        tracing::error!(error = %err, "audit append failed");
        BrokerError::AuditUnavailable
    }
}

impl From<crate::core::error::Error> for BrokerError {
    fn from(err: crate::core::error::Error) -> Self {
        BrokerError::Internal(format!("core: {err}"))
    }
}

impl From<crate::store::seal::SealError> for BrokerError {
    fn from(err: crate::store::seal::SealError) -> Self {
        BrokerError::Internal(format!("seal: {err}"))
    }
}
