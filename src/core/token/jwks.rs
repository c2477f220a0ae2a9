//! The JSON Web Key Set (RFC 7517) of Stint's signing keys, in RFC 8037 form
//! (`kty: OKP`, `crv: Ed25519`, `x` = raw public key, base64url).
//!
//! It is what `/.well-known/jwks.json` serves, and all an application needs to verify
//! Stint credentials offline with any JOSE library.

use serde_json::json;

use super::{ALG_EDDSA, b64url_encode};

/// Serializes `(kid, public key)` pairs as a JWKS document.
pub fn jwks_json(keys: &[(String, [u8; 32])]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, public_key)| {
            json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url_encode(public_key),
                "kid": kid,
                "alg": ALG_EDDSA,
                "use": "sig",
            })
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    use ring::rand::SystemRandom;

    use super::*;
    use crate::core::token::claims::tests::sample;
    use crate::core::token::{Claims, Ed25519Signer, Verifier, provider};

    #[test]
    fn rfc8037_public_key_shape() {
        // RFC 8037 A.2 public key.
        let x = crate::core::token::b64url_decode(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let json = jwks_json(&[("rfc".into(), x.try_into().unwrap())]);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"keys":[{"kty":"OKP","crv":"Ed25519",
                "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"rfc","alg":"EdDSA","use":"sig"}]})
        );
        assert_eq!(jwks_json(&[]), r#"{"keys":[]}"#);
    }

    /// An independent library, given only the JWKS document, verifies our token.
    #[test]
    fn jsonwebtoken_verifies_with_only_the_jwks() {
        provider::install().unwrap();
        let rng = SystemRandom::new();
        let signers: Vec<Ed25519Signer> = ["k-old", "k-new"]
            .into_iter()
            .map(|kid| {
                Ed25519Signer::from_pkcs8(kid.into(), &Ed25519Signer::generate_pkcs8(&rng).unwrap())
                    .unwrap()
            })
            .collect();
        let published: Vec<_> = signers
            .iter()
            .map(|s| (s.kid().to_owned(), s.public_key()))
            .collect();
        let jwks: JwkSet = serde_json::from_str(&jwks_json(&published)).unwrap();

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false; // the test clock is fixed in 2023
        validation.set_audience(&["stint"]);
        validation.set_issuer(&["https://stint.example"]);

        let mut ours = Verifier::new("https://stint.example".into(), "stint".into(), 0);
        for (kid, key) in &published {
            ours.insert_key(kid.clone(), *key);
        }
        for signer in &signers {
            let token = signer.sign(&sample()).unwrap();
            let kid = decode_header(&token).unwrap().kid.unwrap();
            let jwk = jwks.find(&kid).unwrap();
            let key = DecodingKey::from_jwk(jwk).unwrap();
            let data = decode::<Claims>(&token, &key, &validation).unwrap();
            assert_eq!(data.claims, sample());
            // The other published key must not verify it.
            let other = signers.iter().find(|s| s.kid() != kid).unwrap();
            let wrong = DecodingKey::from_jwk(jwks.find(other.kid()).unwrap()).unwrap();
            assert!(decode::<Claims>(&token, &wrong, &validation).is_err());
            // And both verifiers agree.
            let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
            assert_eq!(ours.verify(&token, now).unwrap(), data.claims);
        }
    }
}
