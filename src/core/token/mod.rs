//! Credentials as Ed25519-signed JWTs (`alg: EdDSA`, `kid` in the header).
//!
//! - [`claims`]: what a credential says (standard claims plus the `stint` object).
//! - [`signer`]: minting, on the hot path: a cached ring key pair, a precomputed header.
//! - [`verifier`]: checking, also on the hot path: cached ring public keys, `now` as a
//!   parameter, issuer/audience/expiry checks.
//! - [`provider`]: a ring-backed `jsonwebtoken` crypto provider, so third-party-style
//!   verification with `jsonwebtoken::decode` uses the same single crypto stack.
//! - [`jwks`]: the RFC 8037 public key set served at `/.well-known/jwks.json`.

pub mod claims;
pub mod jwks;
pub mod provider;
pub mod signer;
pub mod verifier;
pub mod web_identity;

pub use claims::{Claims, StintClaims, TokenKind};
pub use signer::Ed25519Signer;
pub use verifier::Verifier;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// JWS `alg` for Ed25519 (RFC 8037).
pub const ALG_EDDSA: &str = "EdDSA";

/// The exact base64url JOSE header Stint's signer writes for `kid`; the verifier keys its
/// fast path on it (a token whose header is byte-identical needs no header parsing).
pub(crate) fn header_b64(kid: &str) -> String {
    let header = serde_json::json!({ "alg": ALG_EDDSA, "typ": "JWT", "kid": kid });
    b64url_encode(header.to_string().as_bytes())
}

fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Whole seconds since the epoch, negative before it.
fn unix_seconds(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
