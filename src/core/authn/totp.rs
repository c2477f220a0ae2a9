//! Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps,
//! ±1 step of clock skew — the parameters every authenticator app supports.
//!
//! Why it looks like this:
//! - `now` is a parameter, so the window logic is tested on a fixed clock.
//! - A code is accepted at most once (RFC 6238 §5.2): the caller stores the accepted
//!   step and passes it back as `last_used_step`; any step at or before it is refused
//!   with [`Error::TotpReplayed`]. The broker maps every TOTP error to "invalid
//!   credentials"; the variants exist for the audit log.
//! - Codes are compared in constant time, and all window steps are always computed.
//! - Enrolment and resync ask for two consecutive codes ([`verify_consecutive`]), which
//!   proves the device holds the seed and tells us its clock offset.
//!
//! The HOTP computation is totp-rs's. Its internal copy of the seed is not zeroized unless
//! its `zeroize` feature is on (see the module report).

use std::time::{SystemTime, UNIX_EPOCH};

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use totp_rs::{Algorithm, Builder, Secret};

use crate::core::error::Error;
use crate::core::secret::{SecretBytes, SecretString};

/// Seconds per TOTP step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: u64 = 1;
/// Length of a new seed in bytes (160 bits, RFC 4226 §4's recommendation).
pub const SEED_LEN: usize = 20;

fn hotp(seed: &[u8], step: u64, digits: u8) -> String {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_step_duration(STEP_SECONDS)
        .with_skew(0)
        .with_secret(Secret::from(seed))
        // Compliance checks reject seeds < 128 bits; RFC test seeds and imported devices
        // may be shorter, and length is the caller's concern (`new_seed` makes 160 bits).
        .build_noncompliant()
        .generate(step.saturating_mul(STEP_SECONDS))
        .to_string()
}

/// The 6-digit code for `step` (a step is `unix_seconds / 30`).
pub fn code_at(seed: &[u8], step: u64) -> String {
    hotp(seed, step, DIGITS as u8)
}

/// The step containing `now` (0 before the epoch).
pub fn step_at(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / STEP_SECONDS)
}

fn check_format(code: &str) -> Result<(), Error> {
    if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::MalformedTotp)
    }
}

fn ct_code_eq(seed: &[u8], step: u64, code: &str) -> bool {
    code_at(seed, step).as_bytes().ct_eq(code.as_bytes()).into()
}

/// Verifies `code` against steps `now-1 ..= now+1` and returns the accepted step, which
/// the caller must store and pass back as `last_used_step` next time.
///
/// Errors: [`Error::MalformedTotp`] (not six ASCII digits), [`Error::TotpReplayed`] (only
/// matches steps `<= last_used_step`), [`Error::TotpMismatch`].
pub fn verify(
    seed: &[u8],
    code: &str,
    now: SystemTime,
    last_used_step: Option<u64>,
) -> Result<u64, Error> {
    check_format(code)?;
    let current = step_at(now);
    let first = current.saturating_sub(SKEW_STEPS);
    // Compute every step in the window and select without branching on the secret match.
    let mut fresh_match = subtle::Choice::from(0);
    let mut stale_match = subtle::Choice::from(0);
    let mut accepted = 0u64;
    for step in first..=current + SKEW_STEPS {
        let matches = subtle::Choice::from(u8::from(ct_code_eq(seed, step, code)));
        let fresh = subtle::Choice::from(u8::from(last_used_step.is_none_or(|last| step > last)));
        let take = matches & fresh;
        // Steps ascend, so the latest fresh match wins.
        accepted = u64::conditional_select(&accepted, &step, take);
        fresh_match |= take;
        stale_match |= matches & !fresh;
    }
    if bool::from(fresh_match) {
        Ok(accepted)
    } else if bool::from(stale_match) {
        Err(Error::TotpReplayed)
    } else {
        Err(Error::TotpMismatch)
    }
}

/// Verifies two consecutive codes, as typed at enrolment (`EnableMfaDevice`) or resync:
/// `code1` at step `t`, `code2` at `t + 1`, with `t + 1` in
/// `[now - search_back_steps, now + 1]`. Returns `t + 1`, the step to store as last used.
///
/// A wide `search_back_steps` lets a device whose clock drifted be re-synchronised;
/// two consecutive 6-digit matches are a ~10⁻¹² coincidence per step searched.
pub fn verify_consecutive(
    seed: &[u8],
    code1: &str,
    code2: &str,
    now: SystemTime,
    search_back_steps: u64,
) -> Result<u64, Error> {
    check_format(code1)?;
    check_format(code2)?;
    let current = step_at(now);
    let newest = current + SKEW_STEPS;
    let oldest = current.saturating_sub(search_back_steps).max(1);
    // Newest first: the most recent pair is the one just typed.
    (oldest..=newest)
        .rev()
        .find(|&second| ct_code_eq(seed, second - 1, code1) && ct_code_eq(seed, second, code2))
        .ok_or(Error::TotpMismatch)
}

/// `now` moved by `steps` time steps (a device's clock drift).
pub fn shifted(now: SystemTime, steps: i64) -> SystemTime {
    let by = std::time::Duration::from_secs(steps.unsigned_abs() * STEP_SECONDS);
    if steps >= 0 {
        now + by
    } else {
        now.checked_sub(by).unwrap_or(now)
    }
}

/// Wraps 20 caller-supplied random bytes as a TOTP seed.
pub fn new_seed(random: [u8; SEED_LEN]) -> SecretBytes {
    let random = zeroize::Zeroizing::new(random);
    SecretBytes::from_slice(&random[..])
}

/// RFC 4648 base32 without padding, the form authenticator apps accept for manual entry.
pub fn seed_base32(seed: &[u8]) -> SecretString {
    SecretString::new(data_encoding::BASE32_NOPAD.encode(seed))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key URI Format provisioning URI
/// (`otpauth://totp/Issuer:account?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`).
/// It contains the seed, hence `SecretString`. Issuer and account name must be non-empty
/// and contain no `:` (the label separator; authenticators split on it even when encoded).
pub fn otpauth_uri(issuer: &str, account_name: &str, seed: &[u8]) -> Result<SecretString, Error> {
    if issuer.is_empty() || account_name.is_empty() {
        return Err(Error::InvalidInput(
            "otpauth issuer and account name must be non-empty",
        ));
    }
    if issuer.contains(':') || account_name.contains(':') {
        return Err(Error::InvalidInput(
            "otpauth issuer and account name must not contain ':'",
        ));
    }
    let issuer = percent_encode(issuer);
    let secret = seed_base32(seed);
    Ok(SecretString::new(format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account_name),
        secret = secret.expose(),
    )))
}

/// Renders `uri` as a QR code in Unicode half blocks for a terminal. Colours are
/// inverted (light modules drawn) so it scans on the usual dark-background terminal.
/// The result encodes the seed, hence `SecretString`.
pub fn qr_terminal(uri: &str) -> Result<SecretString, Error> {
    let code = QrCode::new(uri.as_bytes())
        .map_err(|_| Error::InvalidInput("otpauth URI too long for a QR code"))?;
    Ok(SecretString::new(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// RFC 6238 Appendix B seed for SHA-1.
    const RFC_SEED: &[u8] = b"12345678901234567890";

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn rfc6238_appendix_b_sha1() {
        let vectors: &[(u64, &str)] = &[
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (unix, eight) in vectors {
            let step = step_at(at(*unix));
            assert_eq!(hotp(RFC_SEED, step, 8), *eight, "T={unix}");
            assert_eq!(code_at(RFC_SEED, step), eight[2..], "T={unix}");
            assert_eq!(
                verify(RFC_SEED, &eight[2..], at(*unix), None).unwrap(),
                step,
                "T={unix}"
            );
        }
    }

    #[test]
    fn verify_window_and_replay_table() {
        let now = at(1_234_567_890);
        let t = step_at(now);
        let code = |s: u64| code_at(RFC_SEED, s);
        type Case = (&'static str, String, Option<u64>, Result<u64, &'static str>);
        let cases: Vec<Case> = vec![
            ("current step", code(t), None, Ok(t)),
            ("one step behind", code(t - 1), None, Ok(t - 1)),
            ("one step ahead", code(t + 1), None, Ok(t + 1)),
            ("two steps behind", code(t - 2), None, Err("mismatch")),
            ("two steps ahead", code(t + 2), None, Err("mismatch")),
            ("after an older use", code(t), Some(t - 1), Ok(t)),
            ("same step again", code(t), Some(t), Err("replayed")),
            ("older than last use", code(t - 1), Some(t), Err("replayed")),
            ("ahead of last use", code(t + 1), Some(t), Ok(t + 1)),
            ("five digits", "12345".into(), None, Err("malformed")),
            ("seven digits", "1234567".into(), None, Err("malformed")),
            ("letters", "12a456".into(), None, Err("malformed")),
            ("plus sign", "+12345".into(), None, Err("malformed")),
            ("spaces", "123 45".into(), None, Err("malformed")),
            ("non-ascii digits", "١٢٣٤٥٦".into(), None, Err("malformed")),
        ];
        for (name, code, last, want) in cases {
            let got = verify(RFC_SEED, &code, now, last).map_err(|e| match e {
                Error::MalformedTotp => "malformed",
                Error::TotpMismatch => "mismatch",
                Error::TotpReplayed => "replayed",
                other => panic!("{name}: unexpected {other:?}"),
            });
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn wrong_seed_does_not_verify() {
        let now = at(1_700_000_000);
        let code = code_at(RFC_SEED, step_at(now));
        assert!(matches!(
            verify(b"another seed 1234567", &code, now, None),
            Err(Error::TotpMismatch)
        ));
    }

    #[test]
    fn verify_near_epoch_does_not_underflow() {
        assert_eq!(
            verify(RFC_SEED, &code_at(RFC_SEED, 0), at(5), None).unwrap(),
            0
        );
        assert_eq!(
            verify(RFC_SEED, &code_at(RFC_SEED, 1), at(5), None).unwrap(),
            1
        );
    }

    #[test]
    fn consecutive_codes_table() {
        let now = at(1_700_000_000);
        let t = step_at(now);
        let c = |s: u64| code_at(RFC_SEED, s);
        type Case = (&'static str, String, String, u64, Result<u64, ()>);
        let cases: Vec<Case> = vec![
            ("just typed", c(t - 1), c(t), 10, Ok(t)),
            ("device one step ahead", c(t), c(t + 1), 10, Ok(t + 1)),
            ("drifted 8 steps behind", c(t - 9), c(t - 8), 10, Ok(t - 8)),
            (
                "drifted beyond the search",
                c(t - 12),
                c(t - 11),
                10,
                Err(()),
            ),
            ("swapped order", c(t), c(t - 1), 10, Err(())),
            ("same code twice", c(t), c(t), 10, Err(())),
            ("not consecutive", c(t - 2), c(t), 10, Err(())),
            ("too far ahead", c(t + 1), c(t + 2), 10, Err(())),
        ];
        for (name, c1, c2, back, want) in cases {
            let got = verify_consecutive(RFC_SEED, &c1, &c2, now, back).map_err(|_| ());
            assert_eq!(got, want, "{name}");
        }
        assert!(matches!(
            verify_consecutive(RFC_SEED, "x", &c(t), now, 10),
            Err(Error::MalformedTotp)
        ));
    }

    #[test]
    fn seed_encodings() {
        let seed = new_seed(*RFC_SEED.first_chunk::<20>().unwrap());
        assert_eq!(seed.expose(), RFC_SEED);
        // RFC 4648 §10 vector, and the RFC 6238 seed as authenticators know it.
        assert_eq!(seed_base32(b"foobar").expose(), "MZXW6YTBOI");
        assert_eq!(
            seed_base32(RFC_SEED).expose(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn otpauth_uri_is_encoded() {
        let uri = otpauth_uri("Stint Corp", "alice@example.com", RFC_SEED).unwrap();
        assert_eq!(
            uri.expose(),
            "otpauth://totp/Stint%20Corp:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Stint%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(format!("{uri:?}"), "SecretString(***)");
        // totp-rs, an independent parser, reads back the same seed and parameters.
        let parsed = totp_rs::Totp::from_url(uri.expose()).unwrap();
        assert_eq!(parsed.issuer(), Some("Stint Corp"));
        assert_eq!(parsed.account_name(), "alice@example.com");
        assert_eq!(parsed.generate(59).to_string(), "287082");
        for (issuer, account) in [
            ("a:b", "alice"),
            ("Stint", "x:y"),
            ("", "alice"),
            ("Stint", ""),
        ] {
            assert!(matches!(
                otpauth_uri(issuer, account, RFC_SEED),
                Err(Error::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn qr_renders_and_refuses_oversized_input() {
        let uri = otpauth_uri("Stint", "alice", RFC_SEED).unwrap();
        let qr = qr_terminal(uri.expose()).unwrap();
        let lines: Vec<&str> = qr.expose().lines().collect();
        assert!(lines.len() > 10);
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count())
        );
        assert!(qr.expose().contains('█'));
        assert!(qr_terminal(&"x".repeat(5000)).is_err());
    }
}
