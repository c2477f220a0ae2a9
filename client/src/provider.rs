//! A ring-backed `jsonwebtoken` crypto provider that verifies EdDSA and nothing else.
//!
//! jsonwebtoken 12 ships its crypto behind features (aws-lc-rs or RustCrypto); enabling
//! neither keeps ring — which rustls already brings — the one crypto stack. Only
//! verification is offered: an app never signs Stint tokens. Every other algorithm is
//! refused, which also closes the "HS256 with the public key as secret" confusion.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use ring::signature::{ED25519, UnparsedPublicKey};

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

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, JwtError> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
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

fn unsupported_ed_components(_: &[u8], _: &EllipticCurve) -> Result<Vec<u8>, JwtError> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
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

/// EdDSA verification via ring; everything else refused.
pub static RING_EDDSA_VERIFY: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: unsupported_components,
        rsa_pub_components_from_public_key: unsupported_components,
        ec_pub_components_from_private_key: unsupported_ec_components,
        ed_pub_components_from_private_key: unsupported_ed_components,
        compute_digest: digest,
    },
};

/// Makes [`RING_EDDSA_VERIFY`] jsonwebtoken's process-wide provider unless the app already
/// installed one (then that one is used; the verifier still accepts EdDSA only).
pub fn install() {
    let _ = RING_EDDSA_VERIFY.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_eddsa_with_an_ed25519_key() {
        let hmac = DecodingKey::from_secret(b"secret").unwrap();
        for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            assert!(new_verifier(&alg, &hmac).is_err(), "{alg:?}");
        }
        // An HMAC key cannot pose as an Ed25519 key.
        assert!(new_verifier(&Algorithm::EdDSA, &hmac).is_err());
        let ed =
            DecodingKey::from_ed_components("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert!(new_verifier(&Algorithm::EdDSA, &ed).is_ok());
        let enc = EncodingKey::from_secret(b"k").unwrap();
        assert!(no_signer(&Algorithm::EdDSA, &enc).is_err());
    }
}
