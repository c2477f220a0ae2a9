//! The claims a Stint token carries — the same shape the server signs (a mirror of the
//! server's `core::token::claims`, kept here so apps need not depend on the server).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A verified token's claims. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Principal ARN, or assumed-role ARN.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires at (exclusive).
    pub exp: i64,
    /// Session id (the revocation handle; equals the `ASIA…` access key id).
    pub jti: String,
    /// When the principal originally authenticated.
    pub auth_time: i64,
    /// Authentication methods: `pwd`, `otp`, `key`.
    pub amr: Vec<String>,
    /// Stint's own claims.
    pub stint: StintClaims,
}

/// What kind of session a token represents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenKind {
    /// From `GetSessionToken`: the principal itself.
    Session,
    /// From `AssumeRole`.
    AssumedRole,
    /// A kind this library version does not know.
    #[serde(other)]
    Unknown,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `stint` claim object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StintClaims {
    /// Session or assumed role.
    pub kind: TokenKind,
    /// 12-digit account id.
    pub account: String,
    /// `AIDA…` for users, `AROA…:session` for assumed roles.
    pub user_id: String,
    /// The long-term principal behind the session.
    pub principal_arn: String,
    /// The role, for assumed-role sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `RoleSessionName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// `SourceIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// Whether MFA was used (`aws:MultiFactorAuthPresent`).
    pub mfa_present: bool,
    /// When MFA was performed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_auth_time: Option<i64>,
    /// Session tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Tag keys that survive role chaining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitive_tag_keys: Vec<String>,
    /// Whether this session came from role chaining.
    #[serde(default, skip_serializing_if = "is_false")]
    pub chained: bool,
}
