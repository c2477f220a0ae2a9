//! The one table from broker errors to gRPC status.
//!
//! Client-caused errors say what was wrong; server-side failures become an opaque
//! `INTERNAL` with a log line carrying the detail (never a secret: errors hold none);
//! storage I/O failures (a full disk) are transient: `UNAVAILABLE`, detail in the log.

use tonic::{Code, Status};

use crate::broker::BrokerError;

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Self {
        let message = err.to_string();
        match err {
            BrokerError::InvalidCredentials => Status::unauthenticated(message),
            BrokerError::LockedOut { retry_after } => {
                let mut status = Status::unauthenticated(message);
                if let Ok(value) = retry_after.as_secs().max(1).to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            BrokerError::Unauthenticated(_) => Status::unauthenticated(message),
            BrokerError::AccessDenied { .. } => Status::permission_denied(message),
            BrokerError::InvalidInput { .. } | BrokerError::MalformedPolicy { .. } => {
                Status::invalid_argument(message)
            }
            BrokerError::NotFound(_) => Status::not_found(message),
            BrokerError::AlreadyExists(_) => Status::already_exists(message),
            BrokerError::DeleteConflict(_) | BrokerError::FailedPrecondition(_) => {
                Status::failed_precondition(message)
            }
            BrokerError::LimitExceeded(_) => Status::resource_exhausted(message),
            BrokerError::Overloaded { retry_after, .. } => {
                let mut status = Status::resource_exhausted(message);
                // gRPC's retry pushback (ms), as the client retry design reads it.
                let ms = retry_after.as_millis().max(1);
                if let Ok(value) = ms.to_string().parse() {
                    status
                        .metadata_mut()
                        .insert("grpc-retry-pushback-ms", value);
                }
                status
            }
            BrokerError::AuditUnavailable => Status::new(
                Code::Unavailable,
                "audit log unavailable; the request was not carried out",
            ),
            BrokerError::StoreUnavailable(detail) => {
                tracing::error!(%detail, "storage unavailable");
                Status::unavailable("storage unavailable; retry later")
            }
            BrokerError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn codes_follow_the_table() {
        let cases: Vec<(BrokerError, Code)> = vec![
            (BrokerError::InvalidCredentials, Code::Unauthenticated),
            (
                BrokerError::LockedOut {
                    retry_after: Duration::from_secs(9),
                },
                Code::Unauthenticated,
            ),
            (
                BrokerError::AccessDenied {
                    action: "a".into(),
                    resource: "r".into(),
                    reason: "x".into(),
                },
                Code::PermissionDenied,
            ),
            (
                BrokerError::invalid("user_name", "bad"),
                Code::InvalidArgument,
            ),
            (BrokerError::NotFound("user x".into()), Code::NotFound),
            (
                BrokerError::AlreadyExists("user x".into()),
                Code::AlreadyExists,
            ),
            (
                BrokerError::DeleteConflict("user x".into()),
                Code::FailedPrecondition,
            ),
            (
                BrokerError::LimitExceeded("x".into()),
                Code::ResourceExhausted,
            ),
            (
                BrokerError::Overloaded {
                    what: "x".into(),
                    retry_after: Duration::from_millis(40),
                },
                Code::ResourceExhausted,
            ),
            (BrokerError::AuditUnavailable, Code::Unavailable),
            (
                BrokerError::from(crate::store::StoreError::Io("No space left".into())),
                Code::Unavailable,
            ),
            (
                BrokerError::Internal("disk on fire at /secret/path".into()),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
        let internal = Status::from(BrokerError::Internal("disk on fire".into()));
        assert_eq!(internal.message(), "internal error");
        let full = Status::from(BrokerError::StoreUnavailable("/secret/path: ENOSPC".into()));
        assert!(!full.message().contains("secret"), "{}", full.message());
        let locked = Status::from(BrokerError::LockedOut {
            retry_after: Duration::from_secs(9),
        });
        assert_eq!(locked.metadata().get("retry-after").unwrap(), "9");
        let busy = Status::from(BrokerError::Overloaded {
            what: "password checks".into(),
            retry_after: Duration::from_millis(40),
        });
        assert_eq!(busy.metadata().get("grpc-retry-pushback-ms").unwrap(), "40");
        assert!(
            busy.message().contains("password checks"),
            "{}",
            busy.message()
        );
        let invalid = Status::from(BrokerError::invalid("user_name", "too long"));
        assert!(invalid.message().starts_with("user_name"));
    }
}
