//! Checking a credential: signature, algorithm, key id, issuer, audience, time.
//!
//! Verification runs on every authenticated request, so it goes straight to ring with
//! public keys parsed once per key rather than through `jsonwebtoken::decode` (which
//! builds a verifier per call); the overhead over a bare Ed25519 verify is two small
//! base64 decodes and one JSON parse. `now` is a parameter: no clock reads in `core`,
//! and expiry is tested on a fixed clock. The signature is checked before any claim is
//! trusted, and `alg` is pinned to EdDSA (no `none`, no HMAC-with-the-public-key).

use std::collections::HashMap;
use std::time::SystemTime;

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Deserialize;

use super::{ALG_EDDSA, Claims, b64url_decode, unix_seconds};
use crate::core::error::Error;

/// The only header fields we read. `crit` is captured to refuse it (RFC 7515 §4.1.11:
/// we understand no extensions).
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Longest `kid` echoed back in an error (the value is attacker-controlled).
const MAX_KID_IN_ERROR: usize = 64;

/// Verifies tokens for one issuer and audience against a set of public keys by `kid`.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway_seconds: i64,
    keys: HashMap<String, UnparsedPublicKey<[u8; 32]>>,
    /// Stint's own header for each key (base64url) → kid: skips header parsing.
    known_headers: HashMap<String, String>,
}

impl Verifier {
    /// A verifier with no keys yet. `leeway_seconds` absorbs clock skew on `exp`/`nbf`.
    pub fn new(issuer: String, audience: String, leeway_seconds: u64) -> Self {
        Self {
            issuer,
            audience,
            leeway_seconds: i64::try_from(leeway_seconds).unwrap_or(i64::MAX),
            keys: HashMap::new(),
            known_headers: HashMap::new(),
        }
    }

    /// Trusts `public_key` for tokens whose header says `kid` (replacing any previous one).
    pub fn insert_key(&mut self, kid: String, public_key: [u8; 32]) {
        self.known_headers
            .insert(super::header_b64(&kid), kid.clone());
        self.keys
            .insert(kid, UnparsedPublicKey::new(&ED25519, public_key));
    }

    /// Stops trusting `kid`. Returns whether it was known.
    pub fn remove_key(&mut self, kid: &str) -> bool {
        self.known_headers.retain(|_, k| k != kid);
        self.keys.remove(kid).is_some()
    }

    /// Key ids currently trusted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies `token` at `now` for this verifier's own audience and returns its claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, Error> {
        self.verify_for(token, now, &|aud| aud == self.audience)
    }

    /// Like [`verify`](Self::verify), accepting any `aud` for which `accept_audience`
    /// says yes (the issuer's app tokens, when the issuer answers for them).
    pub fn verify_for(
        &self,
        token: &str,
        now: SystemTime,
        accept_audience: &dyn Fn(&str) -> bool,
    ) -> Result<Claims, Error> {
        let invalid = Error::InvalidToken;
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS (three dot-separated parts)"));
        };

        // Fast path: the byte-exact header our signer writes (alg EdDSA, no crit).
        let parsed_kid: String;
        let kid: &str = match self.known_headers.get(header_b64) {
            Some(kid) => kid,
            None => {
                let header_json = b64url_decode(header_b64.as_bytes())
                    .ok_or(invalid("header is not base64url"))?;
                let header: Header = serde_json::from_slice(&header_json)
                    .map_err(|_| invalid("header is not valid JSON"))?;
                if header.alg != ALG_EDDSA {
                    return Err(invalid("alg is not EdDSA"));
                }
                if header.crit.is_some() {
                    return Err(invalid("crit header extensions are not supported"));
                }
                parsed_kid = header.kid.ok_or(invalid("header has no kid"))?;
                &parsed_kid
            }
        };
        let Some(key) = self.keys.get(kid) else {
            return Err(Error::UnknownKey(
                kid.chars().take(MAX_KID_IN_ERROR).collect(),
            ));
        };

        let signature =
            b64url_decode(signature_b64.as_bytes()).ok_or(invalid("signature is not base64url"))?;
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        key.verify(signed.as_bytes(), &signature)
            .map_err(|_| invalid("signature does not verify"))?;

        let payload =
            b64url_decode(payload_b64.as_bytes()).ok_or(invalid("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| invalid("claims are not valid Stint claims"))?;
        if claims.iss != self.issuer {
            return Err(invalid("issuer mismatch"));
        }
        if !accept_audience(&claims.aud) {
            return Err(invalid("audience mismatch"));
        }
        let now = unix_seconds(now);
        if now >= claims.exp.saturating_add(self.leeway_seconds) {
            return Err(Error::TokenExpired);
        }
        if now.saturating_add(self.leeway_seconds) < claims.nbf {
            return Err(Error::TokenNotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use ring::rand::SystemRandom;

    use super::*;
    use crate::core::token::claims::tests::sample;
    use crate::core::token::{Ed25519Signer, b64url_encode};

    fn signer(kid: &str) -> Ed25519Signer {
        let pkcs8 = Ed25519Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519Signer::from_pkcs8(kid.into(), &pkcs8).unwrap()
    }

    fn at(unix: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    }

    fn verifier_for(s: &Ed25519Signer) -> Verifier {
        let mut v = Verifier::new("https://stint.example".into(), "stint".into(), 30);
        v.insert_key(s.kid().into(), s.public_key());
        v
    }

    /// Re-signs arbitrary header/payload JSON with `s`, for forging test cases.
    fn sign_raw(s: &Ed25519Signer, header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes())
        );
        let sig = s.key_pair.sign(input.as_bytes());
        format!("{input}.{}", b64url_encode(sig.as_ref()))
    }

    fn kind(r: Result<Claims, Error>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(Error::InvalidToken(reason)) => format!("invalid: {reason}"),
            Err(Error::TokenExpired) => "expired".into(),
            Err(Error::TokenNotYetValid) => "not yet valid".into(),
            Err(Error::UnknownKey(kid)) => format!("unknown key {kid}"),
            Err(e) => format!("other: {e}"),
        }
    }

    #[test]
    fn time_checks_with_leeway_table() {
        let s = signer("k1");
        let v = verifier_for(&s);
        let token = s.sign(&sample()).unwrap(); // nbf 1_700_000_000, exp 1_700_003_600, leeway 30
        let cases: &[(i64, &str)] = &[
            (1_700_000_000 - 31, "not yet valid"),
            (1_700_000_000 - 30, "ok"),
            (1_700_000_000, "ok"),
            (1_700_003_600 + 29, "ok"),
            (1_700_003_600 + 30, "expired"),
            (1_800_000_000, "expired"),
        ];
        for (now, want) in cases {
            assert_eq!(kind(v.verify(&token, at(*now))), *want, "now={now}");
        }
        assert_eq!(v.verify(&token, at(1_700_000_100)).unwrap(), sample());
    }

    #[test]
    fn rejection_table() {
        let s = signer("k1");
        let other = signer("k1"); // same kid, different key
        let v = verifier_for(&s);
        let now = at(1_700_000_100);
        let good = s.sign(&sample()).unwrap();
        let claims_json = serde_json::to_string(&sample()).unwrap();
        let with = |f: fn(&mut Claims)| {
            let mut c = sample();
            f(&mut c);
            s.sign(&c).unwrap()
        };
        let [h, p, sig]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
        let mut flipped_sig = b64url_decode(sig.as_bytes()).unwrap();
        flipped_sig[0] ^= 1;
        let other_payload = b64url_encode(br#"{"iss":"x"}"#);
        let cases: Vec<(&str, String, &str)> = vec![
            ("good", good.clone(), "ok"),
            (
                "two parts",
                format!("{h}.{p}"),
                "invalid: not a compact JWS (three dot-separated parts)",
            ),
            (
                "four parts",
                format!("{good}.x"),
                "invalid: not a compact JWS (three dot-separated parts)",
            ),
            (
                "empty",
                String::new(),
                "invalid: not a compact JWS (three dot-separated parts)",
            ),
            (
                "header not base64",
                format!("!!.{p}.{sig}"),
                "invalid: header is not base64url",
            ),
            (
                "flipped signature bit",
                format!("{h}.{p}.{}", b64url_encode(&flipped_sig)),
                "invalid: signature does not verify",
            ),
            (
                "swapped payload",
                format!("{h}.{other_payload}.{sig}"),
                "invalid: signature does not verify",
            ),
            (
                "truncated signature",
                format!("{h}.{p}.{}", &sig[..40]),
                "invalid: signature does not verify",
            ),
            (
                "signed by another key",
                other.sign(&sample()).unwrap(),
                "invalid: signature does not verify",
            ),
            (
                "unknown kid",
                signer("k2").sign(&sample()).unwrap(),
                "unknown key k2",
            ),
            (
                "alg none",
                sign_raw(&s, r#"{"alg":"none","kid":"k1"}"#, &claims_json),
                "invalid: alg is not EdDSA",
            ),
            (
                "alg HS256",
                sign_raw(&s, r#"{"alg":"HS256","kid":"k1"}"#, &claims_json),
                "invalid: alg is not EdDSA",
            ),
            (
                "no kid",
                sign_raw(&s, r#"{"alg":"EdDSA"}"#, &claims_json),
                "invalid: header has no kid",
            ),
            (
                "crit",
                sign_raw(
                    &s,
                    r#"{"alg":"EdDSA","kid":"k1","crit":["exp"]}"#,
                    &claims_json,
                ),
                "invalid: crit header extensions are not supported",
            ),
            (
                "not stint claims",
                sign_raw(&s, r#"{"alg":"EdDSA","kid":"k1"}"#, r#"{"sub":"x"}"#),
                "invalid: claims are not valid Stint claims",
            ),
            (
                "wrong issuer",
                with(|c| c.iss = "https://evil.example".into()),
                "invalid: issuer mismatch",
            ),
            (
                "wrong audience",
                with(|c| c.aud = "other".into()),
                "invalid: audience mismatch",
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(kind(v.verify(&token, now)), want, "{name}");
        }
    }

    #[test]
    fn audience_set_is_the_callers_choice() {
        let s = signer("k1");
        let v = verifier_for(&s);
        let now = at(1_700_000_100);
        let mut claims = sample();
        claims.aud = "billing".into();
        let app_token = s.sign(&claims).unwrap();
        let own = s.sign(&sample()).unwrap();
        assert_eq!(
            kind(v.verify(&app_token, now)),
            "invalid: audience mismatch"
        );
        let apps = |aud: &str| aud == "stint" || aud == "billing";
        assert_eq!(kind(v.verify_for(&app_token, now, &apps)), "ok");
        assert_eq!(kind(v.verify_for(&own, now, &apps)), "ok");
        assert_eq!(
            kind(v.verify_for(&app_token, now, &|aud| aud == "stint")),
            "invalid: audience mismatch"
        );
        // The audience never bypasses the signature or the issuer.
        claims.iss = "https://evil.example".into();
        let foreign = s.sign(&claims).unwrap();
        assert_eq!(
            kind(v.verify_for(&foreign, now, &|_| true)),
            "invalid: issuer mismatch"
        );
    }

    #[test]
    fn key_rotation_insert_and_remove() {
        let old = signer("k1");
        let new = signer("k2");
        let mut v = verifier_for(&old);
        v.insert_key("k2".into(), new.public_key());
        let now = at(1_700_000_100);
        let t_old = old.sign(&sample()).unwrap();
        let t_new = new.sign(&sample()).unwrap();
        assert!(v.verify(&t_old, now).is_ok() && v.verify(&t_new, now).is_ok());
        assert!(v.remove_key("k1"));
        assert!(!v.remove_key("k1"));
        assert!(matches!(v.verify(&t_old, now), Err(Error::UnknownKey(k)) if k == "k1"));
        assert!(v.verify(&t_new, now).is_ok());
        assert_eq!(v.kids().collect::<Vec<_>>(), ["k2"]);
    }

    #[test]
    fn attacker_kid_is_truncated_in_the_error() {
        let s = signer("k1");
        let v = verifier_for(&s);
        let kid = "x".repeat(10_000);
        let token = sign_raw(&s, &format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#), "{}");
        match v.verify(&token, at(0)) {
            Err(Error::UnknownKey(k)) => assert_eq!(k.len(), MAX_KID_IN_ERROR),
            other => panic!("{other:?}"),
        }
    }
}

/// Rough timings next to the bare ring primitive (`cargo test --release --lib -- --ignored
/// timing --nocapture`). Prints only: benchmarks belong in `benches/`, never assertions.
#[cfg(test)]
mod timing {
    use std::hint::black_box;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use ring::rand::SystemRandom;
    use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

    use crate::core::token::claims::tests::sample;
    use crate::core::token::{Claims, Ed25519Signer, Verifier, b64url_encode, provider};

    /// Best batch average over `n` calls in batches of 100: the minimum filters out the
    /// noise of a shared machine.
    fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
        const BATCH: u32 = 100;
        for _ in 0..BATCH {
            f();
        }
        (0..n / BATCH)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..BATCH {
                    f();
                }
                start.elapsed().as_secs_f64() * 1e6 / f64::from(BATCH)
            })
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    #[ignore = "timing report, run explicitly in release"]
    fn timing_sign_verify_vs_bare_ring() {
        const N: u32 = 5_000;
        provider::install().unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer = Ed25519Signer::from_pkcs8("k1".into(), &pkcs8).unwrap();
        let bare = Ed25519KeyPair::from_pkcs8(pkcs8.expose()).unwrap();
        let claims = sample();
        let token = signer.sign(&claims).unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = crate::core::token::b64url_decode(sig.as_bytes()).unwrap();
        let public = UnparsedPublicKey::new(&ED25519, signer.public_key());
        let mut verifier = Verifier::new("https://stint.example".into(), "stint".into(), 0);
        verifier.insert_key("k1".into(), signer.public_key());
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let dec = DecodingKey::from_ed_components(&b64url_encode(&signer.public_key())).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.set_audience(&["stint"]);

        let ring_sign = per_op(N, || {
            black_box(bare.sign(black_box(signed.as_bytes())));
        });
        let our_sign = per_op(N, || {
            black_box(signer.sign(black_box(&claims)).unwrap());
        });
        let ring_verify = per_op(N, || {
            public.verify(black_box(signed.as_bytes()), &sig).unwrap();
        });
        let our_verify = per_op(N, || {
            black_box(verifier.verify(black_box(&token), now).unwrap());
        });
        let jwt_verify = per_op(N, || {
            black_box(
                jsonwebtoken::decode::<Claims>(black_box(&token), &dec, &validation).unwrap(),
            );
        });
        println!("token: {} bytes", token.len());
        println!(
            "sign:   ring {ring_sign:.1} µs, Ed25519Signer {our_sign:.1} µs ({:.2}x)",
            our_sign / ring_sign
        );
        println!(
            "verify: ring {ring_verify:.1} µs, Verifier {our_verify:.1} µs ({:.2}x), jsonwebtoken::decode {jwt_verify:.1} µs ({:.2}x)",
            our_verify / ring_verify,
            jwt_verify / ring_verify
        );
    }
}
