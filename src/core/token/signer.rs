//! Minting: Ed25519 JWS compact serialization, built by hand.
//!
//! Minting is the broker's hot path, so the key pair is parsed once and cached, the
//! header (`{"alg":"EdDSA","typ":"JWT","kid":…}`) is serialized and base64url-encoded
//! once, and each token costs one JSON serialization plus one Ed25519 signature.
//! (`jsonwebtoken::encode` would re-parse the PKCS#8 key on every call.)

use std::fmt;

use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::Claims;
use crate::core::error::Error;
use crate::core::secret::SecretBytes;

/// A signing key with its id, ready to mint.
pub struct Ed25519Signer {
    kid: String,
    pub(super) key_pair: Ed25519KeyPair,
    header_b64: String,
}

impl Ed25519Signer {
    /// A new PKCS#8 v2 Ed25519 private key (to be sealed and stored).
    pub fn generate_pkcs8(rng: &dyn SecureRandom) -> Result<SecretBytes, Error> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng)
            .map_err(|_| Error::Crypto("random source failed generating a signing key"))?;
        Ok(SecretBytes::from_slice(doc.as_ref()))
    }

    /// Loads a PKCS#8 (v1 or v2) Ed25519 private key under `kid`.
    pub fn from_pkcs8(kid: String, pkcs8: &SecretBytes) -> Result<Self, Error> {
        // v2 (ring's own, public key checked against the private one) or v1 (OpenSSL's).
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.expose())
            .map_err(|_| Error::Crypto("signing key is not a valid PKCS#8 Ed25519 key"))?;
        let header_b64 = super::header_b64(&kid);
        Ok(Self {
            kid,
            key_pair,
            header_b64,
        })
    }

    /// Signs `claims` into a compact JWS (`header.payload.signature`).
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let payload =
            serde_json::to_vec(claims).map_err(|_| Error::Crypto("claims do not serialize"))?;
        // header + '.' + payload + '.' + 86-char signature, base64 grows by 4/3.
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 92);
        token.push_str(&self.header_b64);
        token.push('.');
        base64::Engine::encode_string(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &payload,
            &mut token,
        );
        let signature = self.key_pair.sign(token.as_bytes());
        token.push('.');
        base64::Engine::encode_string(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            signature.as_ref(),
            &mut token,
        );
        Ok(token)
    }

    /// Signs arbitrary bytes (audit checkpoints); callers domain-separate their messages.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_ref().to_vec()
    }

    /// The raw 32-byte public key (JWKS `x`).
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key_pair.public_key().as_ref());
        out
    }

    /// The key id put in every header this signer writes.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::b64url_encode;
    use super::*;
    use crate::core::token::b64url_decode;
    use crate::core::token::claims::tests::sample;
    use ring::rand::SystemRandom;
    use ring::signature::{ED25519, UnparsedPublicKey};

    /// RFC 8037 Appendix A.1 key and A.4 signature.
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_SIG: &str =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    /// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410 §7); the 32-byte seed follows.
    const PKCS8_V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    #[test]
    fn rfc8037_vectors_through_a_pkcs8_v1_key() {
        // v1 is what `openssl genpkey -algorithm ed25519` writes: importable keys.
        let mut pkcs8 = PKCS8_V1_PREFIX.to_vec();
        pkcs8.extend_from_slice(&b64url_decode(RFC8037_D.as_bytes()).unwrap());
        let signer = Ed25519Signer::from_pkcs8("rfc".into(), &SecretBytes::new(pkcs8)).unwrap();
        assert_eq!(b64url_encode(&signer.public_key()), RFC8037_X);
        // A.4: the JWS signing input for header {"alg":"EdDSA"}, payload "Example of Ed25519 signing".
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        assert_eq!(
            b64url_encode(signer.key_pair.sign(input.as_bytes()).as_ref()),
            RFC8037_SIG
        );
    }

    #[test]
    fn signs_compact_jws_that_ring_verifies() {
        let pkcs8 = Ed25519Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer = Ed25519Signer::from_pkcs8("k1".into(), &pkcs8).unwrap();
        assert_eq!(signer.kid(), "k1");
        let token = signer.sign(&sample()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&b64url_decode(parts[0].as_bytes()).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg":"EdDSA","typ":"JWT","kid":"k1"})
        );
        let claims: Claims =
            serde_json::from_slice(&b64url_decode(parts[1].as_bytes()).unwrap()).unwrap();
        assert_eq!(claims, sample());
        let signed = &token[..parts[0].len() + 1 + parts[1].len()];
        let sig = b64url_decode(parts[2].as_bytes()).unwrap();
        let key = UnparsedPublicKey::new(&ED25519, signer.public_key());
        assert!(key.verify(signed.as_bytes(), &sig).is_ok());
        assert!(key.verify(b"something else", &sig).is_err());
        assert!(!format!("{signer:?}").contains(&format!("{:?}", pkcs8.expose())));
    }

    #[test]
    fn rejects_garbage_keys() {
        let garbage = SecretBytes::new(vec![0u8; 48]);
        assert!(matches!(
            Ed25519Signer::from_pkcs8("k".into(), &garbage),
            Err(Error::Crypto(_))
        ));
    }
}
