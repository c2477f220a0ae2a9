//! A ring-backed `jsonwebtoken` [`CryptoProvider`].
//!
//! jsonwebtoken 12 ships its crypto behind features (aws-lc-rs or RustCrypto); we enable
//! neither, so ring stays the one crypto stack in the binary. This provider implements
//! EdDSA only — the single algorithm Stint issues — and every other algorithm is refused,
//! which also closes the classic "verify an HS256 token with the public key as secret"
//! confusion. Stint's own hot paths use ring directly ([`super::signer`],
//! [`super::verifier`]); this exists for code (and tests) that use `jsonwebtoken::decode`,
//! e.g. to prove a token verifies with nothing but the published JWKS.
//!
//! Call [`install`] once at startup (it is idempotent).

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::core::error::Error;

struct RingEdDsaSigner(Ed25519KeyPair);

impl Signer<Vec<u8>> for RingEdDsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

impl JwtSigner for RingEdDsaSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct RingEdDsaVerifier(UnparsedPublicKey<[u8; 32]>);

impl Verifier<Vec<u8>> for RingEdDsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        self.0
            .verify(msg, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingEdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, JwtError> {
    if *algorithm != Algorithm::EdDSA {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    if key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(RingEdDsaSigner(key_pair)))
}

fn new_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> Result<Box<dyn JwtVerifier>, JwtError> {
    if *algorithm != Algorithm::EdDSA {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    if key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    // Raw 32-byte key, as `DecodingKey::from_ed_components` / `from_jwk` produce.
    let raw: [u8; 32] = key
        .try_get_as_bytes()?
        .try_into()
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(RingEdDsaVerifier(UnparsedPublicKey::new(
        &ED25519, raw,
    ))))
}

fn unsupported_components(_: &[u8]) -> Result<(Vec<u8>, Vec<u8>), JwtError> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

fn unsupported_ec_components(
    _: &[u8],
    _: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), JwtError> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

fn ed_public_from_private(pkcs8: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, JwtError> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(key_pair.public_key().as_ref().to_vec())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, JwtError> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

/// The provider: EdDSA via ring, JWK thumbprints via ring digests, nothing else.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: unsupported_components,
        rsa_pub_components_from_public_key: unsupported_components,
        ec_pub_components_from_private_key: unsupported_ec_components,
        ed_pub_components_from_private_key: ed_public_from_private,
        compute_digest: digest,
    },
};

fn verifies_eddsa(provider: &CryptoProvider) -> bool {
    DecodingKey::from_ed_components(&crate::core::token::b64url_encode(&[0u8; 32]))
        .is_ok_and(|key| (provider.verifier_factory)(&Algorithm::EdDSA, &key).is_ok())
}

/// Makes [`RING_PROVIDER`] jsonwebtoken's process-wide provider. Idempotent; fails only
/// if some other provider was installed first.
pub fn install() -> Result<(), Error> {
    // jsonwebtoken keeps the provider in a `OnceLock`: the first install wins.
    let _ = RING_PROVIDER.install_default();
    match CryptoProvider::try_get_default() {
        Some(p) if std::ptr::eq(p, &RING_PROVIDER) => Ok(()),
        // Another EdDSA-capable provider (e.g. stint-client's, in the same test process)
        // serves `jsonwebtoken::decode` as well.
        Some(p) if verifies_eddsa(p) => Ok(()),
        _ => Err(Error::Crypto(
            "another jsonwebtoken crypto provider is installed",
        )),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Header, Validation, decode, encode};
    use ring::rand::SystemRandom;

    use super::*;
    use crate::core::token::claims::tests::sample;
    use crate::core::token::{Claims, Ed25519Signer};

    fn no_clock_validation() -> Validation {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims.clear();
        v.set_audience(&["stint"]);
        v.set_issuer(&["https://stint.example"]);
        v
    }

    #[test]
    fn install_is_idempotent() {
        install().unwrap();
        install().unwrap();
    }

    #[test]
    fn jsonwebtoken_round_trip_through_ring() {
        install().unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer = Ed25519Signer::from_pkcs8("k1".into(), &pkcs8).unwrap();
        let enc = EncodingKey::from_ed_der(pkcs8.expose());
        let dec = DecodingKey::from_ed_components(&crate::core::token::b64url_encode(
            &signer.public_key(),
        ))
        .unwrap();
        let v = no_clock_validation();

        // jsonwebtoken encode → jsonwebtoken decode.
        let token = encode(&Header::new(Algorithm::EdDSA), &sample(), &enc).unwrap();
        assert_eq!(decode::<Claims>(&token, &dec, &v).unwrap().claims, sample());
        // Our signer → jsonwebtoken decode.
        let ours = signer.sign(&sample()).unwrap();
        let data = decode::<Claims>(&ours, &dec, &v).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        assert_eq!(data.claims, sample());
        // A tampered token fails.
        let mut tampered = ours.into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(decode::<Claims>(&tampered, &dec, &v).is_err());
    }

    #[test]
    fn other_algorithms_are_refused() {
        install().unwrap();
        let hmac = EncodingKey::from_secret(b"secret").unwrap();
        let err = encode(&Header::new(Algorithm::HS256), &sample(), &hmac).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::UnsupportedAlgorithm),
            "{err:?}"
        );
        let hmac_dec = DecodingKey::from_secret(b"secret").unwrap();
        for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            assert!(new_verifier(&alg, &hmac_dec).is_err(), "{alg:?}");
        }
        // An HMAC key cannot masquerade as an Ed25519 key.
        assert!(new_verifier(&Algorithm::EdDSA, &hmac_dec).is_err());
    }

    #[test]
    fn key_utils_ed25519_and_digest() {
        let pkcs8 = Ed25519Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer = Ed25519Signer::from_pkcs8("k".into(), &pkcs8).unwrap();
        let public = ed_public_from_private(pkcs8.expose(), &EllipticCurve::Ed25519).unwrap();
        assert_eq!(public, signer.public_key());
        // SHA-256("abc"), FIPS 180-2 B.1.
        assert_eq!(
            data_encoding::HEXLOWER.encode(&digest(b"abc", ThumbprintHash::SHA256).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
