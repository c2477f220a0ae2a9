//! Sealing secrets at rest (TOTP seeds, signing keys) under a master key that lives
//! outside the database.
//!
//! Why it looks like this:
//! - The master key is a separate file, so a copied database alone reveals no secret.
//!   It is exactly **32 raw bytes** (not hex: no trailing-newline ambiguity, and an
//!   operator cannot paste it somewhere by accident), created with mode 0600; loading
//!   refuses a file that group or others can read.
//! - AES-256-GCM from ring with a random 96-bit nonce per seal. Random nonces are safe
//!   for far more than the few thousand secrets a Stint store holds (the bound is ~2³²
//!   seals per key).
//! - Every sealed value names its own context in the AAD (e.g. `"totp-seed:<serial>"`),
//!   so a ciphertext copied onto another record fails to open.
//! - Format: `version (1) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The version byte lets
//!   a future format (or cipher) coexist with old records.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::core::secret::SecretBytes;

/// Master key length in bytes.
pub const KEY_LEN: usize = 32;
/// Current sealed-format version.
pub const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// Errors from key loading and (un)sealing. Messages carry paths and fixed phrases, never
/// key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Reading or writing the key file failed.
    #[error("master key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file is readable by group or others.
    #[error(
        "master key file {path} has mode {mode:04o}, readable by group or others; \
         run `chmod 600` on it (and check who may have read it)"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly 32 bytes.
    #[error("master key file {path} must be exactly {KEY_LEN} raw bytes, found {len}")]
    KeyLength {
        /// The key file.
        path: PathBuf,
        /// Bytes found.
        len: u64,
    },
    /// The random source failed.
    #[error("random source failed")]
    Random,
    /// Encryption failed.
    #[error("sealing failed")]
    Seal,
    /// The sealed bytes are not in a format this version understands.
    #[error("sealed data is malformed: {0}")]
    Format(&'static str),
    /// Authentication failed.
    #[error(
        "cannot open sealed data: the master key may be wrong (a different key file than \
         the one this store was created with), or the data was altered"
    )]
    Open,
}

/// The 32-byte key every secret at rest is sealed under.
#[derive(Clone)]
pub struct MasterKey(SecretBytes);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(key.as_mut_slice())
            .map_err(|_| SealError::Random)?;
        Ok(Self(SecretBytes::from_slice(key.as_slice())))
    }

    /// Wraps existing key bytes (exactly 32).
    pub fn from_bytes(key: SecretBytes) -> Result<Self, SealError> {
        if key.len() != KEY_LEN {
            return Err(SealError::Format("master key must be 32 bytes"));
        }
        Ok(Self(key))
    }

    /// Loads the key file: exactly 32 raw bytes; on Unix, no group/other permissions.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SealError::InsecurePermissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(SealError::KeyLength {
                path: path.to_owned(),
                len: meta.len(),
            });
        }
        // Read one byte more than needed to notice a file that grew since `metadata`.
        let mut buf = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        (&mut file)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() != KEY_LEN {
            return Err(SealError::KeyLength {
                path: path.to_owned(),
                len: buf.len() as u64,
            });
        }
        Ok(Self(SecretBytes::from_slice(&buf)))
    }

    /// Generates a key and writes it to a new file (never overwriting one) with mode 0600,
    /// synced to disk with its directory entry.
    pub fn create(path: &Path, rng: &dyn SecureRandom) -> Result<Self, SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        let key = Self::generate(rng)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(key.0.expose()).map_err(io)?;
        file.sync_all().map_err(io)?;
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(key)
    }

    #[allow(clippy::expect_used)] // the length is checked at construction
    fn aead_key(&self) -> LessSafeKey {
        // Length is checked at construction, so this cannot fail.
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.0.expose()).expect("master key is 32 bytes"),
        )
    }

    /// Encrypts and authenticates `plaintext`, binding `aad` (which is not stored: the
    /// same `aad` must be given to [`open`](Self::open)).
    pub fn seal(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .aead_key()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| SealError::Seal)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Authenticates and decrypts what [`seal`](Self::seal) produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes, SealError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Format("too short"));
        }
        if sealed[0] != FORMAT_V1 {
            return Err(SealError::Format("unknown format version"));
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..HEADER_LEN])
            .map_err(|_| SealError::Format("bad nonce"))?;
        let mut buf = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
        let plaintext = self
            .aead_key()
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(SecretBytes::from_slice(plaintext))
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    fn key() -> MasterKey {
        MasterKey::generate(&SystemRandom::new()).unwrap()
    }

    #[test]
    fn round_trip_and_format() {
        let rng = SystemRandom::new();
        let k = key();
        for plaintext in [&b""[..], b"x", b"a TOTP seed of twenty", &[0u8; 1000]] {
            let sealed = k.seal(plaintext, b"totp-seed:alice", &rng).unwrap();
            assert_eq!(sealed.len(), 1 + 12 + plaintext.len() + 16);
            assert_eq!(sealed[0], FORMAT_V1);
            assert_eq!(
                k.open(&sealed, b"totp-seed:alice").unwrap().expose(),
                plaintext
            );
        }
        // Fresh nonce each time.
        assert_ne!(
            k.seal(b"same", b"", &rng).unwrap(),
            k.seal(b"same", b"", &rng).unwrap()
        );
    }

    #[test]
    fn failures_table() {
        let rng = SystemRandom::new();
        let k = key();
        let sealed = k.seal(b"secret seed", b"ctx:1", &rng).unwrap();
        let flip = |i: usize| {
            let mut s = sealed.clone();
            s[i] ^= 0x01;
            s
        };
        let last = sealed.len() - 1;
        type Case = (
            &'static str,
            MasterKey,
            Vec<u8>,
            &'static [u8],
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("wrong key", key(), sealed.clone(), b"ctx:1", "open"),
            ("wrong aad", k.clone(), sealed.clone(), b"ctx:2", "open"),
            ("empty aad", k.clone(), sealed.clone(), b"", "open"),
            ("nonce bit", k.clone(), flip(1), b"ctx:1", "open"),
            (
                "ciphertext bit",
                k.clone(),
                flip(HEADER_LEN),
                b"ctx:1",
                "open",
            ),
            ("tag bit", k.clone(), flip(last), b"ctx:1", "open"),
            (
                "truncated",
                k.clone(),
                sealed[..last].to_vec(),
                b"ctx:1",
                "open",
            ),
            (
                "version",
                k.clone(),
                {
                    let mut s = sealed.clone();
                    s[0] = 2;
                    s
                },
                b"ctx:1",
                "format",
            ),
            (
                "too short",
                k.clone(),
                vec![FORMAT_V1; HEADER_LEN + TAG_LEN - 1],
                b"ctx:1",
                "format",
            ),
        ];
        for (name, key, data, aad, want) in cases {
            let got = match key.open(&data, aad) {
                Ok(_) => "ok",
                Err(SealError::Open) => "open",
                Err(SealError::Format(_)) => "format",
                Err(e) => panic!("{name}: {e}"),
            };
            assert_eq!(got, want, "{name}");
        }
        assert!(
            SealError::Open
                .to_string()
                .contains("master key may be wrong")
        );
    }

    #[test]
    fn create_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::create(&path, &SystemRandom::new()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        let loaded = MasterKey::load(&path).unwrap();
        let sealed = created.seal(b"s", b"a", &SystemRandom::new()).unwrap();
        assert_eq!(loaded.open(&sealed, b"a").unwrap().expose(), b"s");
        // Never overwrites.
        assert!(matches!(
            MasterKey::create(&path, &SystemRandom::new()),
            Err(SealError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists
        ));
        assert_eq!(format!("{loaded:?}"), "MasterKey(***)");
    }

    #[cfg(unix)]
    #[test]
    fn load_refusals() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let readable = write("readable", &[7; 32], 0o644);
        let err = MasterKey::load(&readable).unwrap_err();
        assert!(
            matches!(err, SealError::InsecurePermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        assert!(matches!(
            MasterKey::load(&write("group", &[7; 32], 0o640)),
            Err(SealError::InsecurePermissions { .. })
        ));
        let hex = write("hex", "ab".repeat(32).as_bytes(), 0o600);
        assert!(matches!(
            MasterKey::load(&hex),
            Err(SealError::KeyLength { len: 64, .. })
        ));
        let short = write("short", &[7; 31], 0o600);
        assert!(matches!(
            MasterKey::load(&short),
            Err(SealError::KeyLength { len: 31, .. })
        ));
        assert!(MasterKey::load(&write("ok", &[7; 32], 0o400)).is_ok());
        assert!(matches!(
            MasterKey::load(&dir.path().join("missing")),
            Err(SealError::Io { .. })
        ));
    }

    #[test]
    fn from_bytes_checks_length() {
        assert!(MasterKey::from_bytes(SecretBytes::new(vec![0; 31])).is_err());
        assert!(MasterKey::from_bytes(SecretBytes::new(vec![0; 32])).is_ok());
    }
}
