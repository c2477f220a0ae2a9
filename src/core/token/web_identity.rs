//! Verifying a third party's OIDC token (`AssumeRoleWithWebIdentity`).
//!
//! Unlike Stint's own credentials (Ed25519 only, see [`super::verifier`]), platform
//! issuers sign with RS256 (Kubernetes, most CI systems), ES256 or EdDSA, so this checks
//! those three with ring and nothing else: no `none`, no HMAC (which would let anyone
//! holding the issuer's *public* key forge tokens). The algorithm must also fit the key
//! type the JWKS gives for the `kid`, so an RSA key cannot be abused under another `alg`.
//! Everything here is pure: the key set and `now` are parameters; fetching and caching
//! the JWKS is the broker's job.

use std::collections::HashMap;

use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use serde::Deserialize;
use serde_json::Value;

use super::b64url_decode;

/// STS's bound on `WebIdentityToken`.
pub const MAX_TOKEN_BYTES: usize = 20_000;
/// Largest JWKS (or discovery document) accepted, inline or fetched.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys kept from one JWKS.
pub const MAX_KEYS: usize = 100;
const MAX_KID: usize = 256;
const MAX_SUB: usize = 1_024;
const MAX_AUD: usize = 20;
const MAX_AUD_CHARS: usize = 1_024;
const MAX_AMR: usize = 20;
const MAX_AMR_CHARS: usize = 256;

/// Why a token was refused. The text goes to the audit log only (the caller gets one
/// uniform answer); it never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The header names a key id the key set does not have (worth one JWKS refresh).
    UnknownKid(String),
    Invalid(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::UnknownKid(kid) => write!(f, "unknown signing key id {kid:?}"),
            Rejected::Invalid(why) => f.write_str(why),
        }
    }
}

fn invalid(why: impl Into<String>) -> Rejected {
    Rejected::Invalid(why.into())
}

/// The signature algorithms accepted, each bound to one key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// One public key from a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Big-endian modulus and exponent.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point (0x04 ‖ x ‖ y).
    EcP256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn alg(&self) -> Alg {
        match self {
            PublicKey::Rsa { .. } => Alg::Rs256,
            PublicKey::EcP256(_) => Alg::Es256,
            PublicKey::Ed25519(_) => Alg::EdDsa,
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            PublicKey::EcP256(point) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            PublicKey::Ed25519(raw) => UnparsedPublicKey::new(&ED25519, raw)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// An issuer's signing keys by `kid`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: HashMap<String, PublicKey>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

fn b64_field(jwk: &Value, name: &str) -> Option<Vec<u8>> {
    jwk.get(name)
        .and_then(Value::as_str)
        .and_then(|s| b64url_decode(s.as_bytes()))
}

/// One JWK as a verification key, or `None` when it is not one Stint can use (an
/// encryption key, another curve or algorithm, no `kid`): such keys are skipped, as RFC
/// 7517 §5 asks of keys a consumer does not understand.
fn parse_jwk(jwk: &Value) -> Option<(String, PublicKey)> {
    let kid = jwk.get("kid")?.as_str()?;
    if kid.is_empty() || kid.len() > MAX_KID {
        return None;
    }
    if jwk
        .get("use")
        .and_then(Value::as_str)
        .is_some_and(|u| u != "sig")
    {
        return None;
    }
    let key = match (
        jwk.get("kty")?.as_str()?,
        jwk.get("crv").and_then(Value::as_str),
    ) {
        ("RSA", _) => PublicKey::Rsa {
            n: b64_field(jwk, "n")?,
            e: b64_field(jwk, "e")?,
        },
        ("EC", Some("P-256")) => {
            let (x, y) = (b64_field(jwk, "x")?, b64_field(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend(x);
            point.extend(y);
            PublicKey::EcP256(point)
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64_field(jwk, "x")?;
            if x.len() != 32 {
                return None;
            }
            PublicKey::Ed25519(x)
        }
        _ => return None,
    };
    // A key that declares its algorithm is used with that one only.
    if let Some(alg) = jwk.get("alg").and_then(Value::as_str)
        && Alg::parse(alg) != Some(key.alg())
    {
        return None;
    }
    Some((kid.to_string(), key))
}

impl KeySet {
    /// Parses a JWKS document (RFC 7517 §5), keeping the usable signature keys.
    pub fn parse(json: &str) -> Result<KeySet, String> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        let raw: RawJwks =
            serde_json::from_str(json).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let keys: HashMap<String, PublicKey> = raw
            .keys
            .iter()
            .filter_map(parse_jwk)
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            return Err(
                "JWKS has no usable signing key (RSA, EC P-256 or Ed25519, with a kid)".into(),
            );
        }
        Ok(KeySet { keys })
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The claims Stint reads from a web identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentityClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub amr: Vec<String>,
}

/// A token split and decoded, its signature not yet checked: nothing in it may be
/// trusted except to find the provider (`iss`) and the key (`kid`).
#[derive(Debug)]
pub struct UnverifiedToken {
    alg: Alg,
    pub kid: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    pub claims: WebIdentityClaims,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

fn seconds(payload: &Value, name: &str) -> Result<Option<i64>, Rejected> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid(format!("{name} is not a number"))),
    }
}

fn strings(
    payload: &Value,
    name: &str,
    max: usize,
    max_chars: usize,
) -> Result<Vec<String>, Rejected> {
    let values: Vec<String> = match payload.get(name) {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > max {
                return Err(invalid(format!("{name} has more than {max} values")));
            }
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(format!("{name} values must be strings")))?
        }
        Some(_) => return Err(invalid(format!("{name} must be a string or an array"))),
    };
    if values.iter().any(|v| v.chars().count() > max_chars) {
        return Err(invalid(format!(
            "{name} values must be at most {max_chars} characters"
        )));
    }
    Ok(values)
}

impl UnverifiedToken {
    /// Splits a compact JWS and decodes header and payload, refusing anything but the
    /// three algorithms before a key is even looked for.
    pub fn parse(token: &str) -> Result<UnverifiedToken, Rejected> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "token larger than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS (three dot-separated parts)"));
        };
        let header: Header = b64url_decode(header_b64.as_bytes())
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| invalid("malformed header"))?;
        let alg = Alg::parse(&header.alg).ok_or_else(|| {
            invalid(format!(
                "algorithm {:?} not accepted (RS256, ES256 or EdDSA only)",
                header.alg.chars().take(16).collect::<String>()
            ))
        })?;
        if header.crit.is_some() {
            return Err(invalid("crit header not supported"));
        }
        let kid = header
            .kid
            .filter(|k| !k.is_empty() && k.len() <= MAX_KID)
            .ok_or_else(|| invalid("header has no usable kid"))?;
        let signature = b64url_decode(signature_b64.as_bytes())
            .ok_or_else(|| invalid("malformed signature"))?;
        let payload: Value = b64url_decode(payload_b64.as_bytes())
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| invalid("malformed payload"))?;
        let text = |name: &str| -> Result<String, Rejected> {
            payload
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("{name} claim missing")))
        };
        let iss = text("iss")?;
        let sub = text("sub")?;
        if iss.len() > MAX_SUB || sub.chars().count() > MAX_SUB {
            return Err(invalid(format!(
                "iss and sub must be at most {MAX_SUB} characters"
            )));
        }
        let claims = WebIdentityClaims {
            iss,
            sub,
            aud: strings(&payload, "aud", MAX_AUD, MAX_AUD_CHARS)?,
            exp: seconds(&payload, "exp")?.ok_or_else(|| invalid("exp claim missing"))?,
            nbf: seconds(&payload, "nbf")?,
            iat: seconds(&payload, "iat")?,
            amr: strings(&payload, "amr", MAX_AMR, MAX_AMR_CHARS)?,
        };
        let signing_input = token
            .get(..header_b64.len() + 1 + payload_b64.len())
            .unwrap_or_default()
            .as_bytes()
            .to_vec();
        Ok(UnverifiedToken {
            alg,
            kid,
            signing_input,
            signature,
            claims,
        })
    }

    /// Checks the signature with the key set's key for `kid`, whose type must fit `alg`.
    pub fn verify_signature(&self, keys: &KeySet) -> Result<(), Rejected> {
        let key = keys
            .keys
            .get(&self.kid)
            .ok_or_else(|| Rejected::UnknownKid(self.kid.chars().take(64).collect()))?;
        if key.alg() != self.alg {
            return Err(invalid(format!(
                "algorithm {} does not fit the key {:?} ({})",
                self.alg.name(),
                self.kid.chars().take(64).collect::<String>(),
                key.alg().name()
            )));
        }
        if !key.verify(&self.signing_input, &self.signature) {
            return Err(invalid("bad signature"));
        }
        Ok(())
    }
}

impl WebIdentityClaims {
    /// Times (with `leeway` seconds of skew) and audience: `aud` must hold one of
    /// `client_ids`; returns the one that matched.
    pub fn check(&self, now: i64, leeway: i64, client_ids: &[String]) -> Result<String, Rejected> {
        if now > self.exp.saturating_add(leeway) {
            return Err(invalid("token expired"));
        }
        if let Some(nbf) = self.nbf
            && now < nbf.saturating_sub(leeway)
        {
            return Err(invalid("token not yet valid (nbf)"));
        }
        if let Some(iat) = self.iat
            && now < iat.saturating_sub(leeway)
        {
            return Err(invalid("token issued in the future (iat)"));
        }
        self.aud
            .iter()
            .find(|a| client_ids.contains(a))
            .cloned()
            .ok_or_else(|| invalid("no aud of the token is a client id of the provider"))
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    use super::*;
    use crate::core::token::b64url_encode;

    fn token(header: Value, payload: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(payload.to_string().as_bytes())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64url_encode(&sig))
    }

    fn payload() -> Value {
        json!({"iss": "https://issuer.test", "sub": "system:serviceaccount:ns:app", "aud": ["stint", "other"], "exp": 2000, "nbf": 1000, "iat": 1000, "amr": ["pwd"]})
    }

    fn ed_key() -> (Ed25519KeyPair, KeySet) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64url_encode(pair.public_key().as_ref())}]});
        (pair, KeySet::parse(&jwks.to_string()).unwrap())
    }

    #[test]
    fn ed25519_and_es256_tokens_verify_and_claims_read() {
        let (pair, keys) = ed_key();
        let t = token(json!({"alg": "EdDSA", "kid": "ed"}), payload(), |m| {
            pair.sign(m).as_ref().to_vec()
        });
        let parsed = UnverifiedToken::parse(&t).unwrap();
        parsed.verify_signature(&keys).unwrap();
        assert_eq!(parsed.claims.aud, vec!["stint", "other"]);
        assert_eq!(parsed.claims.amr, vec!["pwd"]);
        assert_eq!(
            parsed.claims.check(1500, 0, &["stint".into()]).unwrap(),
            "stint"
        );

        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = ec.public_key().as_ref();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig", "alg": "ES256",
            "x": b64url_encode(&point[1..33]), "y": b64url_encode(&point[33..])}]});
        let keys = KeySet::parse(&jwks.to_string()).unwrap();
        let t = token(json!({"alg": "ES256", "kid": "ec"}), payload(), |m| {
            ec.sign(&rng, m).unwrap().as_ref().to_vec()
        });
        UnverifiedToken::parse(&t)
            .unwrap()
            .verify_signature(&keys)
            .unwrap();
    }

    /// A fixed 2048-bit test key, PKCS#1 DER (ring cannot generate RSA keys).
    pub(crate) const TEST_RSA_DER: &[u8] =
        include_bytes!("../../../tests/it/fixtures/oidc-test-rsa.der");

    #[test]
    fn rs256_tokens_verify() {
        use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
        let pair = RsaKeyPair::from_der(TEST_RSA_DER).unwrap();
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "rs", "alg": "RS256",
            "n": b64url_encode(&public.n),
            "e": b64url_encode(&public.e)}]});
        let keys = KeySet::parse(&jwks.to_string()).unwrap();
        let sign = |m: &[u8]| {
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut sig)
                .unwrap();
            sig
        };
        let t = token(json!({"alg": "RS256", "kid": "rs"}), payload(), sign);
        UnverifiedToken::parse(&t)
            .unwrap()
            .verify_signature(&keys)
            .unwrap();
        // The RSA key under EdDSA: refused before any signature check.
        let t = token(json!({"alg": "EdDSA", "kid": "rs"}), payload(), sign);
        assert!(
            UnverifiedToken::parse(&t)
                .unwrap()
                .verify_signature(&keys)
                .is_err()
        );
    }

    #[test]
    fn refused_tokens() {
        let (pair, keys) = ed_key();
        let sign = |m: &[u8]| pair.sign(m).as_ref().to_vec();
        let ed = json!({"alg": "EdDSA", "kid": "ed"});
        // Parse-time refusals.
        let cases: Vec<(String, &str)> = vec![
            (
                token(json!({"alg": "none", "kid": "ed"}), payload(), |_| vec![]),
                "algorithm",
            ),
            (
                token(json!({"alg": "HS256", "kid": "ed"}), payload(), sign),
                "algorithm",
            ),
            (token(json!({"alg": "EdDSA"}), payload(), sign), "kid"),
            (
                token(
                    json!({"alg": "EdDSA", "kid": "ed", "crit": ["x"]}),
                    payload(),
                    sign,
                ),
                "crit",
            ),
            (
                token(ed.clone(), json!({"sub": "s", "exp": 1}), sign),
                "iss",
            ),
            (
                token(ed.clone(), json!({"iss": "i", "exp": 1}), sign),
                "sub",
            ),
            (
                token(ed.clone(), json!({"iss": "i", "sub": "s"}), sign),
                "exp",
            ),
            (
                token(
                    ed.clone(),
                    json!({"iss": "i", "sub": "s", "exp": 1, "aud": 5}),
                    sign,
                ),
                "aud",
            ),
            ("a.b".into(), "compact"),
            ("x".repeat(MAX_TOKEN_BYTES + 1), "larger"),
        ];
        for (t, want) in cases {
            let err = UnverifiedToken::parse(&t).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Signature-time refusals.
        let (other, _) = ed_key();
        let forged = token(ed.clone(), payload(), |m| other.sign(m).as_ref().to_vec());
        let err = UnverifiedToken::parse(&forged)
            .unwrap()
            .verify_signature(&keys);
        assert_eq!(err, Err(invalid("bad signature")));
        let unknown = token(json!({"alg": "EdDSA", "kid": "nope"}), payload(), sign);
        let err = UnverifiedToken::parse(&unknown)
            .unwrap()
            .verify_signature(&keys);
        assert!(matches!(err, Err(Rejected::UnknownKid(_))));
        let mismatched = token(json!({"alg": "ES256", "kid": "ed"}), payload(), sign);
        let err = UnverifiedToken::parse(&mismatched)
            .unwrap()
            .verify_signature(&keys);
        assert!(err.unwrap_err().to_string().contains("does not fit"));
    }

    #[test]
    fn claim_checks_with_leeway() {
        let claims = UnverifiedToken::parse(&token(
            json!({"alg": "EdDSA", "kid": "k"}),
            payload(),
            |_| vec![1],
        ))
        .unwrap()
        .claims;
        let ids = vec!["stint".to_string()];
        let cases: [(i64, &[String], Option<&str>); 6] = [
            (1500, &ids, None),
            (2060, &ids, None),
            (2061, &ids, Some("expired")),
            (940, &ids, None),
            (939, &ids, Some("nbf")),
            (1500, &[], Some("aud")),
        ];
        for (now, ids, want) in cases {
            match (claims.check(now, 60, ids), want) {
                (Ok(_), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{now}: {e}"),
                (got, want) => panic!("{now}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(&[1; 32])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": b64url_encode(&[1; 32])},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64url_encode(&[1; 32])},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rs", "alg": "ES256", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "good", "x": b64url_encode(&[1; 32])}
        ]});
        let keys = KeySet::parse(&jwks.to_string()).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains("good"));
        assert!(KeySet::parse(r#"{"keys": []}"#).is_err());
        assert!(KeySet::parse("not json").is_err());
        assert!(KeySet::parse(&" ".repeat(MAX_JWKS_BYTES + 1)).is_err());
    }
}
