//! Identities and their names: ARNs, ids, and AWS's naming rules.
//!
//! Every entity Stint stores is a record here. Records are serialised as JSON with a format
//! version (`v`) so a future layout can be read next to an old one. Names are unique
//! case-insensitively (as in IAM), so stores key them by [`name_key`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Current on-disk format version of every record.
pub const RECORD_VERSION: u32 = 1;

/// The partition and account every ARN of this deployment lives in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub partition: String,
    pub id: String,
}

impl Account {
    pub fn new(partition: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            partition: partition.into(),
            id: id.into(),
        }
    }

    /// `arn:P:iam::A:<kind>/<path-without-leading-slash><name>`
    pub fn iam_arn(&self, kind: &str, path: &str, name: &str) -> String {
        format!("arn:{}:iam::{}:{kind}{path}{name}", self.partition, self.id)
    }

    pub fn user_arn(&self, path: &str, name: &str) -> String {
        self.iam_arn("user", path, name)
    }
    pub fn group_arn(&self, path: &str, name: &str) -> String {
        self.iam_arn("group", path, name)
    }
    pub fn role_arn(&self, path: &str, name: &str) -> String {
        self.iam_arn("role", path, name)
    }
    pub fn policy_arn(&self, path: &str, name: &str) -> String {
        self.iam_arn("policy", path, name)
    }
    /// Built-in managed policies live in the `aws` account, like AWS managed policies.
    pub fn builtin_policy_arn(&self, name: &str) -> String {
        format!("arn:{}:iam::aws:policy/{name}", self.partition)
    }
    pub fn mfa_arn(&self, name: &str) -> String {
        self.iam_arn("mfa", "/", name)
    }
    pub fn root_arn(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition, self.id)
    }
    pub fn assumed_role_arn(&self, role_name: &str, session_name: &str) -> String {
        format!(
            "arn:{}:sts::{}:assumed-role/{role_name}/{session_name}",
            self.partition, self.id
        )
    }
}

/// A parsed ARN: `arn:partition:service:region:account:resource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// `None` for a malformed ARN or one longer than AWS's 2,048 characters
    /// ([`crate::core::policy::MAX_MATCH_LEN`]).
    pub fn parse(text: &'a str) -> Option<Self> {
        if crate::core::policy::over_match_cap(text) {
            return None;
        }
        let mut parts = text.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Arn {
            partition: parts.next()?,
            service: parts.next()?,
            region: parts.next()?,
            account: parts.next()?,
            resource: parts.next()?,
        };
        (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty())
            .then_some(arn)
    }

    /// For `…:role/path/name` returns `("role", "name")`; the last segment is the name.
    pub fn kind_and_name(&self) -> Option<(&'a str, &'a str)> {
        let (kind, rest) = self.resource.split_once('/')?;
        let name = rest.rsplit('/').next()?;
        (!name.is_empty()).then_some((kind, name))
    }
}

/// The case-insensitive key a name is stored under.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// What kind of name is being checked, with AWS's length limit for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    User,
    Group,
    Role,
    Policy,
    InlinePolicy,
    RoleSessionName,
    MfaDevice,
}

impl NameKind {
    fn limits(self) -> (usize, usize, &'static str) {
        match self {
            NameKind::User => (1, 64, "user_name"),
            NameKind::Group => (1, 128, "group_name"),
            NameKind::Role => (1, 64, "role_name"),
            NameKind::Policy => (1, 128, "policy_name"),
            NameKind::InlinePolicy => (1, 128, "policy_name"),
            NameKind::RoleSessionName => (2, 64, "role_session_name"),
            NameKind::MfaDevice => (1, 226, "virtual_mfa_device_name"),
        }
    }

    pub fn field(self) -> &'static str {
        self.limits().2
    }
}

/// Checks a name against IAM's `[\w+=,.@-]{min,max}`; the error names the field.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), String> {
    let (min, max, field) = kind.limits();
    let len = name.chars().count();
    if len < min || len > max {
        return Err(format!(
            "{field} must be {min} to {max} characters, got {len}"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_+=,.@-".contains(*c)))
    {
        return Err(format!(
            "{field} contains {bad:?}; allowed are letters, digits and _+=,.@-"
        ));
    }
    Ok(())
}

/// IAM paths: `/` or `/a/b/`, at most 512 characters of printable ASCII.
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path == "/" {
        return Ok(());
    }
    if path.len() > 512 {
        return Err("path must be at most 512 characters".into());
    }
    if !path.starts_with('/') || !path.ends_with('/') {
        return Err("path must begin and end with '/'".into());
    }
    if path.bytes().any(|b| !(0x21..=0x7e).contains(&b)) || path.contains("//") {
        return Err("path must be printable ASCII without empty segments".into());
    }
    Ok(())
}

/// Normalises an empty path to `/`.
pub fn path_or_root(path: &str) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        path.into()
    }
}

/// Checks tags against AWS limits: at most 50, key 1–128, value 0–256, unique keys, and
/// IAM's character set `[\p{L}\p{Z}\p{N}_.:/=+\-@]` (IAM API Reference, "Tag"). Stint reads
/// letters and numbers as Rust's `char::is_alphanumeric` and separators as non-control
/// whitespace, so NUL, other control characters and the invisible bidi controls (U+200E/F,
/// U+202A–E, U+2066–9), which could make a tag display as something it is not, are refused.
pub fn validate_tags(tags: &[Tag]) -> Result<(), String> {
    if tags.len() > 50 {
        return Err(format!("tags: at most 50, got {}", tags.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for tag in tags {
        let klen = tag.key.chars().count();
        if klen == 0 || klen > 128 {
            return Err(format!(
                "tags: key {:?} must be 1 to 128 characters",
                tag.key
            ));
        }
        if tag.value.chars().count() > 256 {
            return Err(format!(
                "tags: value of {:?} exceeds 256 characters",
                tag.key
            ));
        }
        if let Some(c) = tag.key.chars().find(|&c| !tag_char(c)) {
            return Err(format!(
                "tags: key \"{}\" contains U+{:04X}; keys and values allow letters, digits, spaces and _ . : / = + - @",
                tag.key.escape_debug(),
                u32::from(c)
            ));
        }
        if let Some(c) = tag.value.chars().find(|&c| !tag_char(c)) {
            return Err(format!(
                "tags: value of {:?} contains U+{:04X}; keys and values allow letters, digits, spaces and _ . : / = + - @",
                tag.key,
                u32::from(c)
            ));
        }
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!(
                "tags: key {:?} uses the reserved prefix aws:",
                tag.key
            ));
        }
        if !seen.insert(tag.key.to_ascii_lowercase()) {
            return Err(format!("tags: duplicate key {:?}", tag.key));
        }
    }
    Ok(())
}

/// One character of IAM's tag alphabet (letters, numbers, separators, `_ . : / = + - @`).
fn tag_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
        || (c.is_whitespace() && !c.is_control())
}

/// Unique ids in AWS's shape: a 4-letter prefix and 17 base32 characters.
pub fn unique_id(prefix: &str, random: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::with_capacity(21);
    id.push_str(prefix);
    id.extend(
        random
            .iter()
            .take(16)
            .map(|b| ALPHABET[(*b & 31) as usize] as char),
    );
    id.push(ALPHABET[(random[0] >> 5) as usize] as char);
    id
}

/// Access key ids as AWS shapes them: `AKIA`/`ASIA` and 16 base32 characters (20 in all).
pub fn access_key_id(prefix: &str, random: &[u8; 16]) -> String {
    let mut id = unique_id(prefix, random);
    id.truncate(prefix.len() + 16);
    id
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// Unix time in milliseconds: records store plain integers, never clock types.
pub use crate::core::time::UnixMs;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginProfile {
    /// Argon2id PHC string (salted hash; never the password).
    pub phc: String,
    pub create_date: UnixMs,
    pub password_reset_required: bool,
    pub last_changed: UnixMs,
    #[serde(default)]
    pub last_used: Option<UnixMs>,
    /// Earlier PHC strings, newest first, for reuse prevention.
    #[serde(default)]
    pub history: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub v: u32,
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub create_date: UnixMs,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub login_profile: Option<LoginProfile>,
    /// Group names (as written at AddUserToGroup).
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    pub v: u32,
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub create_date: UnixMs,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Role {
    pub v: u32,
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub create_date: UnixMs,
    pub assume_role_policy_document: String,
    #[serde(default)]
    pub description: String,
    pub max_session_duration: i32,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub attached_policies: Vec<String>,
    #[serde(default)]
    pub inline_policies: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions_boundary: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version_id: String,
    pub document: String,
    pub create_date: UnixMs,
}

/// A customer managed policy with up to five versions, one of them the default.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub v: u32,
    pub name: String,
    pub id: String,
    pub path: String,
    pub arn: String,
    pub create_date: UnixMs,
    pub update_date: UnixMs,
    #[serde(default)]
    pub description: String,
    pub default_version_id: String,
    pub versions: Vec<PolicyVersion>,
    /// Number used for the next `vN` id; never reused.
    pub next_version: u32,
}

impl ManagedPolicy {
    pub fn default_document(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.version_id == self.default_version_id)
            .map(|v| v.document.as_str())
    }
}

/// A virtual MFA device. The seed is sealed under the master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaDevice {
    pub v: u32,
    pub serial_number: String,
    pub user_name: String,
    pub sealed_seed: Vec<u8>,
    #[serde(default)]
    pub enable_date: Option<UnixMs>,
    /// The last accepted TOTP time step: codes at or before it are replays.
    #[serde(default)]
    pub last_used_step: Option<u64>,
    /// How many 30 s steps the device's clock runs ahead (+) or behind (−), learned at
    /// enable/resync; codes are checked around the server's step shifted by it.
    #[serde(default)]
    pub drift_steps: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessKeyStatus {
    Active,
    Inactive,
}

impl AccessKeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKeyStatus::Active => "Active",
            AccessKeyStatus::Inactive => "Inactive",
        }
    }
}

/// A long-term access key. Only a hash of the secret is kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessKey {
    pub v: u32,
    pub access_key_id: String,
    pub user_name: String,
    pub secret_hash: String,
    pub status: AccessKeyStatus,
    pub create_date: UnixMs,
    #[serde(default)]
    pub last_used: Option<UnixMs>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published in the JWKS, not yet signing.
    Pending,
    Active,
    /// Verifying only, until every token it signed has expired.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
}

/// An Ed25519 signing key; the PKCS#8 document is sealed under the master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SigningKey {
    pub v: u32,
    pub kid: String,
    pub sealed_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
    pub state: KeyState,
    pub created: UnixMs,
    #[serde(default)]
    pub activated: Option<UnixMs>,
    #[serde(default)]
    pub retired: Option<UnixMs>,
    #[serde(default)]
    pub purge_after: Option<UnixMs>,
}

/// A minted session kept until it expires, for Authorize/Introspect and revocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub v: u32,
    pub jti: String,
    pub principal_arn: String,
    #[serde(default)]
    pub role_arn: Option<String>,
    pub issued_at: UnixMs,
    pub expires_at: UnixMs,
    /// Session policy documents (inline and managed, resolved at AssumeRole time).
    #[serde(default)]
    pub session_policies: Vec<String>,
    /// The unique id (`AIDA…`) of the user behind the session when it was minted, so a
    /// namesake created after a delete is not taken for it. Empty in older records.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal_id: String,
    /// The sessions this one was assumed from, the root first and the parent last
    /// (at most [`MAX_SESSION_ANCESTORS`]): revoking any of them revokes this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<SessionLink>,
    /// A session that may only change its password: it can assume no role and call
    /// nothing but the password change, whatever its policies say.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restricted: bool,
    /// The `sub` of the web identity token a federated session was assumed with (its
    /// provider is `principal_arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity_subject: Option<String>,
}

/// How many sessions a session may descend from (user session → role → role …): bounds
/// the revocation check on every request.
pub const MAX_SESSION_ANCESTORS: usize = 5;

/// What a child session keeps of one ancestor: enough to match revocations against it
/// even after the ancestor's own record was swept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLink {
    pub jti: String,
    /// The ancestor's `sub` (user or assumed-role ARN).
    pub sub: String,
    pub principal_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    pub issued_at: UnixMs,
}

/// AWS account password policy fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    pub minimum_password_length: u32,
    pub require_symbols: bool,
    pub require_numbers: bool,
    pub require_uppercase_characters: bool,
    pub require_lowercase_characters: bool,
    pub allow_users_to_change_password: bool,
    /// Days; 0 = never expire.
    pub max_password_age: u32,
    /// 0 = no reuse prevention.
    pub password_reuse_prevention: u32,
    pub hard_expiry: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            minimum_password_length: 8,
            require_symbols: false,
            require_numbers: false,
            require_uppercase_characters: false,
            require_lowercase_characters: false,
            allow_users_to_change_password: true,
            max_password_age: 0,
            password_reuse_prevention: 0,
            hard_expiry: false,
        }
    }
}

impl PasswordPolicy {
    /// Checks a candidate password; the error says which rule failed, never the password.
    pub fn check(&self, password: &str) -> Result<(), String> {
        let len = password.chars().count();
        if len < self.minimum_password_length as usize {
            return Err(format!(
                "password must be at least {} characters",
                self.minimum_password_length
            ));
        }
        if len > 128 {
            return Err("password must be at most 128 characters".into());
        }
        type Rule = (bool, fn(char) -> bool, &'static str);
        let rules: [Rule; 4] = [
            (
                self.require_symbols,
                |c| c.is_ascii_punctuation(),
                "a symbol",
            ),
            (self.require_numbers, |c| c.is_ascii_digit(), "a number"),
            (
                self.require_uppercase_characters,
                |c| c.is_ascii_uppercase(),
                "an uppercase letter",
            ),
            (
                self.require_lowercase_characters,
                |c| c.is_ascii_lowercase(),
                "a lowercase letter",
            ),
        ];
        for (required, test, what) in rules {
            if required && !password.chars().any(test) {
                return Err(format!("password must contain {what}"));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(6..=128).contains(&self.minimum_password_length) {
            return Err("minimum_password_length must be 6 to 128".into());
        }
        if self.max_password_age > 1095 {
            return Err("max_password_age must be 0 (never) or 1 to 1095 days".into());
        }
        if self.password_reuse_prevention > 24 {
            return Err("password_reuse_prevention must be 0 (off) or 1 to 24".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_iam_rules() {
        let cases: &[(NameKind, &str, bool)] = &[
            (NameKind::User, "alice", true),
            (NameKind::User, "a.l+i=c,e@x-y_z", true),
            (NameKind::User, "", false),
            (NameKind::User, &"a".repeat(64), true),
            (NameKind::User, &"a".repeat(65), false),
            (NameKind::User, "al ice", false),
            (NameKind::User, "al/ice", false),
            (NameKind::Group, &"g".repeat(128), true),
            (NameKind::RoleSessionName, "a", false),
            (NameKind::RoleSessionName, "ab", true),
        ];
        for (kind, name, ok) in cases {
            assert_eq!(validate_name(*kind, name).is_ok(), *ok, "{kind:?} {name:?}");
        }
        let err = validate_name(NameKind::Role, "bad name").unwrap_err();
        assert!(err.starts_with("role_name"), "{err}");
    }

    #[test]
    fn paths_and_tags() {
        assert!(validate_path("/").is_ok());
        assert!(validate_path("/eng/ops/").is_ok());
        assert!(validate_path("eng/").is_err());
        assert!(validate_path("/eng").is_err());
        assert!(validate_path("/a//b/").is_err());
        let tag = |k: &str, v: &str| Tag {
            key: k.into(),
            value: v.into(),
        };
        assert!(validate_tags(&[tag("team", "x")]).is_ok());
        assert!(validate_tags(&[tag("team", "x"), tag("TEAM", "y")]).is_err());
        assert!(validate_tags(&[tag("aws:x", "y")]).is_err());
        assert!(validate_tags(&vec![tag("k", "v"); 51]).is_err());
        // IAM's alphabet: letters, numbers, spaces and _ . : / = + - @ (any script).
        for (k, v) in [
            ("cost-center", "Human Resources"),
            ("a_b.c:d/e=f+g-h@i", ""),
            ("équipe", "北京 1"),
        ] {
            assert!(validate_tags(&[tag(k, v)]).is_ok(), "{k}={v}");
        }
        for (k, v) in [
            ("team\0", "x"),
            ("team", "red\0"),
            ("team", "\u{202E}der"),
            ("\u{2066}team", "x"),
            ("team", "a\u{200F}"),
            ("team", "line\nbreak"),
            ("team", "tab\there"),
            ("team", "semi;colon"),
            ("zero\u{200B}width", "x"),
        ] {
            let err = validate_tags(&[tag(k, v)]).unwrap_err();
            assert!(err.contains("U+"), "{k:?}={v:?}: {err}");
        }
    }

    #[test]
    fn arns_round_trip() {
        let account = Account::new("stint", "123456789012");
        let arn = account.role_arn("/svc/", "reader");
        assert_eq!(arn, "arn:stint:iam::123456789012:role/svc/reader");
        let parsed = Arn::parse(&arn).unwrap();
        assert_eq!(parsed.account, "123456789012");
        assert_eq!(parsed.kind_and_name(), Some(("role", "reader")));
        assert!(Arn::parse("arn:stint:iam").is_none());
        assert!(Arn::parse("nope:stint:iam::1:user/x").is_none());
        let long = format!("arn:stint:iam::123456789012:user/{}", "x".repeat(2048));
        assert!(Arn::parse(&long).is_none());
    }

    #[test]
    fn password_policy_rules() {
        let policy = PasswordPolicy {
            minimum_password_length: 10,
            require_numbers: true,
            require_symbols: true,
            ..PasswordPolicy::default()
        };
        assert!(policy.check("short1!").is_err());
        assert!(policy.check("longenough!").unwrap_err().contains("number"));
        assert!(policy.check("longenough1").unwrap_err().contains("symbol"));
        assert!(policy.check("longenough1!").is_ok());
        assert!(
            PasswordPolicy {
                minimum_password_length: 5,
                ..PasswordPolicy::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn unique_ids_have_aws_shape() {
        assert_eq!(access_key_id("AKIA", &[3u8; 16]).len(), 20);
        let id = unique_id("AIDA", &[7u8; 16]);
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("AIDA"));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }
}
