//! # stint-client
//!
//! The client side of Stint for Rust services and apps, without the
//! server: no sled, no argon2, no server stubs.
//!
//! - [`Client`]: connect (TLS by default: system roots plus an optional CA), log in with a
//!   password + TOTP code or an access key, assume a role, ask who you are.
//! - [`RefreshingCredentials`]: what a service calls once at startup; keeps credentials
//!   fresh (refresh ahead of expiry with jitter, back-off while Stint is down, the last
//!   good credentials until they expire) and reports its [`CredentialState`].
//! - [`Verifier`]: for apps; verifies Stint tokens offline against the cached JWKS and
//!   returns typed [`Claims`]; optionally it follows Stint's revocation stream
//!   ([`Verifier::follow_revocations`]) so a revoked token is refused within seconds.
//! - [`BearerAuthLayer`]: puts verified [`Claims`] into the request extensions of another
//!   gRPC service, refusing bad tokens with `UNAUTHENTICATED`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use stint_client::{Client, RefreshConfig, RefreshingCredentials, Source};
//!
//! let client = Client::connect("https://stint.example:8443").await?;
//! let credentials =
//!     RefreshingCredentials::start(client, Source::access_key_from_env()?, RefreshConfig::default())
//!         .await?;
//! let session = credentials.session().await?;
//! println!("running as {}", session.caller_identity().await?.arn);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod claims;
mod client;
mod clock;
mod error;
mod layer;
mod provider;
mod refresh;
mod secret;
mod verifier;

/// The generated gRPC types and clients (client stubs only), for calls this crate does not
/// wrap.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("stint.v1");
}

pub use claims::{Claims, StintClaims, TokenKind};
pub use client::{
    AssumeRole, CallerIdentity, Client, ClientConfig, Credentials, Decision, LongTermCredential,
    Session,
};
pub use clock::{Clock, SharedClock, SystemClock, system_clock};
pub use error::Error;
pub use layer::{BearerAuth, BearerAuthLayer, BearerToken};
pub use provider::RING_EDDSA_VERIFY;
pub use refresh::{
    CredentialState, DEFAULT_WEB_IDENTITY_SESSION_NAME, RefreshConfig, RefreshingCredentials,
    SessionFuture, Source, WebIdentity, backoff_delay, read_token_file, refresh_delay,
};
pub use secret::Secret;
pub use verifier::{
    MAX_JWKS_KEYS, MAX_REVOCATIONS, MAX_TOKEN_BYTES, RevocationFollower, Verifier, VerifierConfig,
    VerifyError, check_claims,
};

/// README.md's Rust snippets (the `rust,no_run` blocks of the service and app
/// walkthroughs), compiled by `cargo test --doc` so README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
