//! The client's error type. Messages never contain a secret: tokens, passwords and access
//! key secrets travel as [`Secret`](crate::Secret)s and are not formatted.

/// What went wrong talking to Stint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (names the field).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// Could not reach Stint (connection refused, TLS handshake failed, …), or Stint said
    /// it is unavailable.
    #[error("cannot reach Stint: {0}")]
    Transport(String),
    /// Stint answered with an error status.
    #[error("Stint refused the call: {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// Stint's answer lacked a field it always sends.
    #[error("malformed answer from Stint: {0}")]
    InvalidResponse(&'static str),
    /// No usable credentials: the last good ones expired and refreshing failed.
    #[error("credentials expired and could not be refreshed: {last_error}")]
    Expired {
        /// Why the last refresh failed.
        last_error: String,
    },
    /// A credential source (environment, file, closure) failed.
    #[error("credential source: {0}")]
    Source(String),
}

impl Error {
    /// The gRPC status code, when Stint answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        // A lazy channel reports a failed connect as UNAVAILABLE: say what it is.
        if status.code() == tonic::Code::Unavailable {
            return Error::Transport(status.message().to_owned());
        }
        Error::Rpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(err: tonic::transport::Error) -> Self {
        // The source chain carries the useful part ("connection refused", "invalid peer
        // certificate: UnknownIssuer").
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Transport(message)
    }
}
