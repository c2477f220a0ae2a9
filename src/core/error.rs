//! The core layer's error type for authentication, token and crypto failures.
//!
//! Messages are safe to log: they never contain a password, seed, code, key or token.
//! Callers at the RPC edge collapse the authentication variants (`TotpMismatch`,
//! `TotpReplayed`, `MalformedTotp`, a failed password check…) into one "invalid
//! credentials" answer; the distinction exists for the audit log and for tests.

/// Errors from `core::authn` and `core::token`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is structurally wrong, badly signed or has the wrong issuer/audience.
    /// The reason is a fixed phrase, never a fragment of the token.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    TokenExpired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("token not yet valid")]
    TokenNotYetValid,
    /// The token names a signing key this verifier does not know (truncated kid).
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The TOTP code is not exactly six ASCII digits.
    #[error("malformed TOTP code")]
    MalformedTotp,
    /// The TOTP code matches no step in the accepted window.
    #[error("TOTP code does not match")]
    TotpMismatch,
    /// The TOTP code matches a step that was already used (RFC 6238 §5.2).
    #[error("TOTP code already used")]
    TotpReplayed,
    /// Password hashing or PHC parsing failed (bad parameters, malformed stored hash).
    #[error("password hash: {0}")]
    PasswordHash(String),
    /// A caller-supplied value cannot be used (e.g. a colon in an otpauth label).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// A cryptographic primitive failed (bad key encoding, RNG failure…).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    // The lead adds, when merging the policy engine:
    // #[error(transparent)]
    // Policy(#[from] crate::core::policy::PolicyError),
}
