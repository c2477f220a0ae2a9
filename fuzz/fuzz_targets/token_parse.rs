//! Credentials: Stint's own JWT verifier and the web identity (OIDC) token and JWKS
//! parsers, with a fixed key. Three readings of each input:
//! 1. the bytes as a token (garbage, truncated, huge, wrong alg, bad base64…);
//! 2. `header_json \0 payload_json`, signed here with the fixed key, so the claims and
//!    time checks after a good signature are reached too;
//! 3. the bytes as a JWKS document.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use stint::core::secret::SecretBytes;
use stint::core::token::web_identity::{KeySet, UnverifiedToken};
use stint::core::token::{Ed25519Signer, Verifier};

const KID: &str = "fuzz-key";

struct Fixture {
    signer: Ed25519Signer,
    verifier: Verifier,
    jwks: KeySet,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pkcs8 = Ed25519Signer::generate_pkcs8(&SystemRandom::new()).expect("key");
        let signer =
            Ed25519Signer::from_pkcs8(KID.into(), &SecretBytes::new(pkcs8.expose().to_vec()))
                .expect("signer");
        let mut verifier = Verifier::new("https://stint.example".into(), "stint".into(), 30);
        verifier.insert_key(KID.into(), signer.public_key());
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"{KID}","x":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(signer.public_key())
        );
        let jwks = KeySet::parse(&jwks).expect("jwks");
        Fixture {
            signer,
            verifier,
            jwks,
        }
    })
}

fn check(f: &Fixture, token: &str) {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = f.verifier.verify(token, now);
    let _ = f.verifier.verify_for(token, now, &|aud| aud.len() < 8);
    if let Ok(parsed) = UnverifiedToken::parse(token) {
        let _ = parsed.verify_signature(&f.jwks);
        let _ = parsed.claims.check(
            1_700_000_000,
            60,
            &["stint".into(), "sts.amazonaws.com".into()],
        );
        let _ = parsed.claims.check(i64::MIN, i64::MAX, &[]);
        let _ = parsed.claims.check(i64::MAX, i64::MIN, &[]);
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    check(f, &text);
    if let Some((header, payload)) = text.split_once('\0') {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = f.signer.sign_bytes(input.as_bytes());
        check(f, &format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)));
    }
    let _ = KeySet::parse(&text);
});
