//! Password hashing with argon2id, stored as PHC strings
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
//!
//! Why these choices:
//! - argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane) is memory-hard, so a stolen
//!   database is expensive to crack on GPUs; the parameters live in the PHC string, so
//!   they can be raised later and old hashes upgraded on the next successful login
//!   ([`needs_rehash`]).
//! - The salt comes in as an argument: `core` has no ambient randomness.
//! - Unknown users must cost the same time as known ones, or the login endpoint becomes a
//!   user-enumeration oracle. [`DummyHash`] gives the broker a hash to verify against.

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use std::ops::ControlFlow;

use zeroize::Zeroize;

use serde::{Deserialize, Serialize};

use crate::core::error::Error;
use crate::core::secret::SecretString;

/// Cost parameters for argon2id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Argon2Params {
    /// The cheapest parameters argon2 accepts. Tests only: never configure this.
    pub const TEST_CHEAP: Self = Self {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// The largest costs that can be configured (`argon2.*` in the config), and that a
    /// stored hash may ask for: 4 GiB, 256 passes, 255 lanes.
    pub const MAX: Self = Self {
        memory_kib: 4 * 1024 * 1024,
        iterations: 256,
        parallelism: 255,
    };

    /// OWASP Password Storage Cheat Sheet minimum for argon2id.
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    fn hasher(&self) -> Result<Argon2<'static>, Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::PasswordHash(format!("invalid argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Hashes `password` with `salt` (16 random bytes from the caller) into a PHC string.
pub fn hash_password(
    password: &SecretString,
    salt: &[u8; 16],
    params: &Argon2Params,
) -> Result<String, Error> {
    hash_password_pausing(password, salt, params, &mut || ControlFlow::Continue(()))
}

/// [`hash_password`], calling `pause` every few hundred µs of hashing (see the `stint-argon2` crate).
pub fn hash_password_pausing(
    password: &SecretString,
    salt: &[u8; 16],
    params: &Argon2Params,
    pause: &mut dyn FnMut() -> ControlFlow<()>,
) -> Result<String, Error> {
    let mut tag = sliced_hash(password, salt, params, pause)?;
    let phc = phc_string(salt, params, &tag);
    tag.zeroize();
    phc
}

fn sliced_hash(
    password: &SecretString,
    salt: &[u8],
    params: &Argon2Params,
    pause: &mut dyn FnMut() -> ControlFlow<()>,
) -> Result<[u8; stint_argon2::TAG_LEN], Error> {
    let params = stint_argon2::Params {
        memory_kib: params.memory_kib,
        iterations: params.iterations,
        parallelism: params.parallelism,
    };
    stint_argon2::hash(password.expose().as_bytes(), salt, &params, pause)
        .map_err(|e| Error::PasswordHash(e.to_string()))
}

fn phc_string(salt: &[u8], params: &Argon2Params, tag: &[u8]) -> Result<String, Error> {
    let refused = |e: &dyn std::fmt::Display| Error::PasswordHash(format!("hashing failed: {e}"));
    let checked = params.hasher()?.params().clone();
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&checked).map_err(|e| refused(&e))?,
        salt: Some(Salt::new(salt).map_err(|e| refused(&e))?),
        hash: Some(Output::new(tag).map_err(|e| refused(&e))?),
    };
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string. `Ok(false)` is a wrong password;
/// `Err` is a stored hash that cannot be used. The final comparison is constant time.
pub fn verify_password(password: &SecretString, phc: &str) -> Result<bool, Error> {
    verify_password_pausing(password, phc, &mut || ControlFlow::Continue(()))
}

/// [`verify_password`], calling `pause` every few hundred µs of hashing for the hashes
/// `stint-argon2` computes (the ones [`hash_password`] writes); any other stored hash is
/// verified by the `argon2` crate in one go.
pub fn verify_password_pausing(
    password: &SecretString,
    phc: &str,
    pause: &mut dyn FnMut() -> ControlFlow<()>,
) -> Result<bool, Error> {
    let hash = PasswordHash::new(phc)
        .map_err(|_| Error::PasswordHash("stored hash is not a valid PHC string".into()))?;
    // A stored hash is ours, but a database is not to be trusted with the memory and CPU
    // a check may take: no more than the largest configurable cost.
    let stored = Params::try_from(&hash).ok();
    if let Some(stored) = &stored
        && (stored.m_cost() > Argon2Params::MAX.memory_kib
            || stored.t_cost() > Argon2Params::MAX.iterations
            || stored.p_cost() > Argon2Params::MAX.parallelism)
    {
        return Err(Error::PasswordHash(
            "stored hash costs more than the largest configurable argon2 parameters".into(),
        ));
    }
    if let Some((params, salt, expected)) = stored.as_ref().and_then(|p| ours(&hash, p)) {
        let mut tag = sliced_hash(password, salt, &params, pause)?;
        let matches = bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..], expected));
        tag.zeroize();
        return Ok(matches);
    }
    // The hash carries its own algorithm, version and parameters; these defaults are
    // overridden by them.
    let verifier = Argon2::default();
    match PasswordVerifier::<PasswordHash>::verify_password(
        &verifier,
        password.expose().as_bytes(),
        &hash,
    ) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(Error::PasswordHash(format!("verification failed: {e}"))),
    }
}

/// The parameters, salt and tag of a stored hash `stint-argon2` can recompute: argon2id,
/// version 0x13, a 32-byte tag, no key id or associated data.
fn ours<'a>(hash: &'a PasswordHash, params: &Params) -> Option<(Argon2Params, &'a [u8], &'a [u8])> {
    if hash.algorithm != argon2::ARGON2ID_IDENT || hash.version != Some(Version::V0x13.into()) {
        return None;
    }
    if !params.keyid().is_empty() || !params.data().is_empty() {
        return None;
    }
    let salt = hash.salt.as_ref()?;
    let tag = hash.hash.as_ref()?;
    if tag.len() != stint_argon2::TAG_LEN || salt.len() < 8 || salt.len() > 64 {
        return None;
    }
    Some((
        Argon2Params {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        },
        salt.as_ref(),
        tag.as_bytes(),
    ))
}

/// Whether a stored hash should be recomputed with `params` after the next successful
/// login: different algorithm, version or cost, or unparsable.
pub fn needs_rehash(phc: &str, params: &Argon2Params) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return true;
    };
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(Version::V0x13.into()) {
        return true;
    }
    match Params::try_from(&hash) {
        Ok(p) => {
            p.m_cost() != params.memory_kib
                || p.t_cost() != params.iterations
                || p.p_cost() != params.parallelism
        }
        Err(_) => true,
    }
}

/// A PHC string of a fixed, unguessable-to-matter password, computed with `params`, for
/// verifying against when the user does not exist (equal timing, no enumeration).
pub fn dummy_phc(params: &Argon2Params) -> Result<String, Error> {
    const DUMMY_SALT: [u8; 16] = *b"stint-dummy-salt";
    let dummy = SecretString::new("stint: no such user, constant-time dummy".into());
    hash_password(&dummy, &DUMMY_SALT, params)
}

/// Holds a [`dummy_phc`] computed once (at startup) so an unknown-user login does exactly
/// the work of a known-user login with a wrong password.
#[derive(Clone, Debug)]
pub struct DummyHash {
    phc: String,
}

impl DummyHash {
    /// Computes the dummy hash with the same parameters real hashes use.
    pub fn new(params: &Argon2Params) -> Result<Self, Error> {
        Ok(Self {
            phc: dummy_phc(params)?,
        })
    }

    /// The PHC string.
    pub fn phc(&self) -> &str {
        &self.phc
    }

    /// Spends one password verification and always answers `false`.
    pub fn verify(&self, password: &SecretString) -> bool {
        let _ = verify_password(password, &self.phc);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 16] = [7; 16];

    fn pw(s: &str) -> SecretString {
        SecretString::new(s.into())
    }

    #[test]
    fn hash_then_verify_table() {
        let phc = hash_password(&pw("correct horse"), &SALT, &Argon2Params::TEST_CHEAP).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        let cases: &[(&str, bool)] = &[
            ("correct horse", true),
            ("correct hors", false),
            ("Correct horse", false),
            ("", false),
        ];
        for (candidate, want) in cases {
            assert_eq!(
                verify_password(&pw(candidate), &phc).unwrap(),
                *want,
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn same_input_same_hash_different_salt_different_hash() {
        let p = Argon2Params::TEST_CHEAP;
        let a = hash_password(&pw("x"), &SALT, &p).unwrap();
        assert_eq!(a, hash_password(&pw("x"), &SALT, &p).unwrap());
        assert_ne!(a, hash_password(&pw("x"), &[8; 16], &p).unwrap());
    }

    #[test]
    fn malformed_phc_is_an_error_not_false() {
        for bad in ["", "plaintext", "$argon2id$v=19$m=8,t=1,p=1$"] {
            assert!(
                matches!(verify_password(&pw("x"), bad), Err(Error::PasswordHash(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_params_are_refused() {
        let p = Argon2Params {
            memory_kib: 1,
            iterations: 1,
            parallelism: 1,
        };
        assert!(matches!(
            hash_password(&pw("x"), &SALT, &p),
            Err(Error::PasswordHash(_))
        ));
    }

    #[test]
    fn needs_rehash_table() {
        let cheap = Argon2Params::TEST_CHEAP;
        let phc = hash_password(&pw("x"), &SALT, &cheap).unwrap();
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        let cases: &[(&str, Argon2Params, bool)] = &[
            (&phc, cheap, false),
            (
                &phc,
                Argon2Params {
                    memory_kib: 16,
                    ..cheap
                },
                true,
            ),
            (
                &phc,
                Argon2Params {
                    iterations: 2,
                    ..cheap
                },
                true,
            ),
            (
                &phc,
                Argon2Params {
                    parallelism: 2,
                    ..cheap
                },
                true,
            ),
            (&argon2i, cheap, true),
            ("garbage", cheap, true),
        ];
        for (i, (hash, params, want)) in cases.iter().enumerate() {
            assert_eq!(needs_rehash(hash, params), *want, "case {i}");
        }
    }

    /// What we write is what the `argon2` crate writes, and each verifies the other's:
    /// hashes stored before the sliced hash existed keep working.
    #[test]
    fn the_phc_strings_are_the_argon2_crates() {
        use argon2::PasswordHasher;
        let params = Argon2Params {
            memory_kib: 64,
            iterations: 2,
            parallelism: 2,
        };
        let ours = hash_password(&pw("correct horse"), &SALT, &params).unwrap();
        let theirs = params
            .hasher()
            .unwrap()
            .hash_password_with_salt(b"correct horse", &SALT)
            .unwrap()
            .to_string();
        assert_eq!(ours, theirs);
        let crate_verifies = |candidate: &str| {
            PasswordVerifier::<PasswordHash>::verify_password(
                &Argon2::default(),
                candidate.as_bytes(),
                &PasswordHash::new(&ours).unwrap(),
            )
            .is_ok()
        };
        assert!(crate_verifies("correct horse"));
        assert!(!crate_verifies("correct horsE"));
    }

    /// Hashes outside the sliced hash's scope (argon2i, a 64-byte tag) are verified by the
    /// crate, in one go: `pause` is never called for them, and always for ours.
    #[test]
    fn other_stored_hashes_fall_back_to_the_crate() {
        use argon2::PasswordHasher;
        let params = Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let checked = |len| Params::new(1024, 1, 1, len).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, checked(None))
            .hash_password_with_salt(b"pw", &SALT)
            .unwrap()
            .to_string();
        let long_tag = Argon2::new(Algorithm::Argon2id, Version::V0x13, checked(Some(64)))
            .hash_password_with_salt(b"pw", &SALT)
            .unwrap()
            .to_string();
        let ours = hash_password(&pw("pw"), &SALT, &params).unwrap();
        for (phc, sliced) in [(&argon2i, false), (&long_tag, false), (&ours, true)] {
            for (candidate, want) in [("pw", true), ("pW", false)] {
                let mut pauses = 0;
                let got = verify_password_pausing(&pw(candidate), phc, &mut || {
                    pauses += 1;
                    ControlFlow::Continue(())
                });
                assert_eq!(got.unwrap(), want, "{phc} {candidate}");
                assert_eq!(pauses > 0, sliced, "{phc}");
            }
        }
    }

    /// A stored hash that asks for more than can be configured is refused before any
    /// memory is taken (4 TiB here would abort the process).
    #[test]
    fn a_stored_hash_beyond_the_configurable_costs_is_refused() {
        let phc = hash_password(&pw("x"), &SALT, &Argon2Params::TEST_CHEAP).unwrap();
        for (from, to) in [
            ("m=8,", "m=4294967295,"),
            ("m=8,", "m=4194305,"),
            ("t=1,", "t=257,"),
        ] {
            let stored = phc.replacen(from, to, 1);
            assert_ne!(stored, phc);
            match verify_password(&pw("x"), &stored) {
                Err(Error::PasswordHash(why)) => assert!(why.contains("largest"), "{why}"),
                other => panic!("{stored}: {other:?}"),
            }
        }
        assert!(verify_password(&pw("x"), &phc).unwrap());
    }

    #[test]
    fn defaults_are_owasp() {
        let d = Argon2Params::default();
        assert_eq!((d.memory_kib, d.iterations, d.parallelism), (19_456, 2, 1));
    }

    #[test]
    fn dummy_hash_is_stable_and_never_matches() {
        let p = Argon2Params::TEST_CHEAP;
        let dummy = DummyHash::new(&p).unwrap();
        assert_eq!(dummy.phc(), dummy_phc(&p).unwrap());
        assert!(!needs_rehash(dummy.phc(), &p));
        assert!(!dummy.verify(&pw("stint: no such user, constant-time dummy")));
    }
}
