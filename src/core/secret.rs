//! Secrets as types.
//!
//! A password, a TOTP seed or a private key must never end up in a log line, an error
//! message or a freed-but-not-cleared heap page, and must never be compared with `==` on
//! plain bytes (which returns early and leaks the matching prefix length through timing).
//! [`SecretString`] and [`SecretBytes`] make the safe behaviour the only one available:
//! `Debug` is redacted, memory is zeroized on drop, equality is constant time, and reading
//! the value needs an explicit, greppable `expose()`.
//!
//! `SecretString` deserializes (passwords arrive in JSON) but deliberately does not
//! serialize: writing a secret out must go through `expose()` at the call site.

use std::fmt;

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Byte view used by the constant-time comparisons, so `ct_eq` accepts plain and secret
/// values alike.
pub trait CtBytes {
    /// The bytes to compare.
    fn ct_bytes(&self) -> &[u8];
}

impl CtBytes for str {
    fn ct_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl CtBytes for String {
    fn ct_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}
impl CtBytes for [u8] {
    fn ct_bytes(&self) -> &[u8] {
        self
    }
}
impl CtBytes for Vec<u8> {
    fn ct_bytes(&self) -> &[u8] {
        self
    }
}
impl CtBytes for SecretString {
    fn ct_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}
impl CtBytes for SecretBytes {
    fn ct_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Constant time in the content; lengths are not secret and differ → `false` at once.
fn ct_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A secret UTF-8 string: redacted `Debug`, zeroized on drop, constant-time equality.
#[derive(Clone, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `value`; its buffer is cleared when this is dropped.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself. Every call site is a place where the secret leaves its type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a plain or secret string.
    pub fn ct_eq<O: CtBytes + ?Sized>(&self, other: &O) -> bool {
        ct_eq_bytes(self.0.as_bytes(), other.ct_bytes())
    }

    /// Length in bytes (not secret for our uses: passwords have length policies anyway).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}
impl Eq for SecretString {}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// Secret bytes (TOTP seeds, PKCS#8 private keys, the master key, opened plaintext).
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `value`; its buffer is cleared when this is dropped.
    pub fn new(value: Vec<u8>) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Copies `value` into a new zeroizing buffer (the caller still owns and must clear the
    /// original if it matters).
    pub fn from_slice(value: &[u8]) -> Self {
        Self::new(value.to_vec())
    }

    /// The secret itself.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison with plain or secret bytes.
    pub fn ct_eq<O: CtBytes + ?Sized>(&self, other: &O) -> bool {
        ct_eq_bytes(&self.0, other.ct_bytes())
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(value: Vec<u8>) -> Self {
        Self::new(value)
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}
impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2".into());
        let b = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "SecretString(***)");
        assert_eq!(format!("{b:?}"), "SecretBytes(***)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn ct_eq_table() {
        let s = SecretString::new("correct horse".into());
        let cases: &[(&str, bool)] = &[
            ("correct horse", true),
            ("correct hors", false),
            ("correct horsf", false),
            ("Correct horse", false),
            ("", false),
            ("correct horse ", false),
        ];
        for (other, want) in cases {
            assert_eq!(s.ct_eq(*other), *want, "{other:?}");
            assert_eq!(
                s.ct_eq(&SecretString::new((*other).into())),
                *want,
                "{other:?}"
            );
        }
        let b = SecretBytes::from_slice(&[1, 2, 3]);
        assert!(b.ct_eq(&[1u8, 2, 3][..]));
        assert!(!b.ct_eq(&[1u8, 2, 4][..]));
        assert!(!b.ct_eq(&vec![1u8, 2]));
        assert_eq!(b, SecretBytes::new(vec![1, 2, 3]));
    }

    #[test]
    fn deserializes_from_json_string() {
        #[derive(Deserialize)]
        struct Login {
            password: SecretString,
        }
        let login: Login = serde_json::from_str(r#"{"password":"p@ss"}"#).unwrap();
        assert_eq!(login.password.expose(), "p@ss");
        assert_eq!(login.password.len(), 4);
    }
}
