//! The claims a Stint credential carries.
//!
//! Standard JWT claims are flat; everything Stint-specific lives in one `stint` object so
//! it cannot collide with a registered claim name. Optional and empty fields are left
//! out of the JSON: tokens travel in every request header, so bytes matter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `amr` value: password.
pub const AMR_PASSWORD: &str = "pwd";
/// `amr` value: one-time password (TOTP).
pub const AMR_OTP: &str = "otp";
/// `amr` value: long-term access key.
pub const AMR_KEY: &str = "key";

/// A credential's claims. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (the Stint deployment's URL or name).
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
    /// Session id (revocation handle).
    pub jti: String,
    /// When the principal originally authenticated (kept across role assumption).
    pub auth_time: i64,
    /// Authentication methods (`["pwd","otp"]`, `["pwd"]`, `["key"]`).
    pub amr: Vec<String>,
    /// Stint's own claims.
    pub stint: StintClaims,
}

/// What kind of session a credential represents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// From `GetSessionToken`: the principal itself.
    Session,
    /// From `AssumeRole`.
    AssumedRole,
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
    /// `AIDA…` for users, `AROA…:session` for assumed roles (`aws:userid`).
    pub user_id: String,
    /// The long-term principal behind the session: the user ARN, or for assumed roles
    /// the ARN of whoever assumed.
    pub principal_arn: String,
    /// The role, for assumed-role sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `RoleSessionName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// `sts:SourceIdentity`, sticky across role chaining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// `aws:MultiFactorAuthPresent`.
    pub mfa_present: bool,
    /// When MFA was performed (`aws:MultiFactorAuthAge` = now − this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_auth_time: Option<i64>,
    /// Session tags (`aws:PrincipalTag/*` for assumed roles).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Tag keys that survive role chaining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitive_tag_keys: Vec<String>,
    /// Whether this session came from a role assuming a role (1 h lifetime cap).
    #[serde(default, skip_serializing_if = "is_false")]
    pub chained: bool,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A representative assumed-role credential, shared by the token tests.
    pub(crate) fn sample() -> Claims {
        Claims {
            iss: "https://stint.example".into(),
            sub: "arn:stint:sts::123456789012:assumed-role/deploy/alice".into(),
            aud: "stint".into(),
            iat: 1_700_000_000,
            nbf: 1_700_000_000,
            exp: 1_700_003_600,
            jti: "ASIA0000000000000001".into(),
            auth_time: 1_699_999_000,
            amr: vec![AMR_PASSWORD.into(), AMR_OTP.into()],
            stint: StintClaims {
                kind: TokenKind::AssumedRole,
                account: "123456789012".into(),
                user_id: "AROA0000000000000001:alice".into(),
                principal_arn: "arn:stint:iam::123456789012:user/alice".into(),
                role_arn: Some("arn:stint:iam::123456789012:role/deploy".into()),
                session_name: Some("alice".into()),
                source_identity: None,
                mfa_present: true,
                mfa_auth_time: Some(1_699_999_000),
                tags: BTreeMap::from([("team".into(), "infra".into())]),
                transitive_tag_keys: vec![],
                chained: false,
            },
        }
    }

    #[test]
    fn empty_fields_are_omitted_and_round_trip() {
        let claims = sample();
        let json = serde_json::to_value(&claims).unwrap();
        let stint = json["stint"].as_object().unwrap();
        assert_eq!(stint["kind"], "assumed_role");
        for absent in ["source_identity", "transitive_tag_keys", "chained"] {
            assert!(!stint.contains_key(absent), "{absent}");
        }
        assert_eq!(json["amr"], serde_json::json!(["pwd", "otp"]));
        let back: Claims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims);
    }

    #[test]
    fn minimal_session_claims_parse() {
        let json = r#"{"iss":"i","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j",
            "auth_time":1,"amr":["key"],"stint":{"kind":"session","account":"123456789012",
            "user_id":"AIDA1","principal_arn":"arn:stint:iam::123456789012:user/svc",
            "mfa_present":false}}"#;
        let c: Claims = serde_json::from_str(json).unwrap();
        assert_eq!(c.stint.kind, TokenKind::Session);
        assert!(c.stint.tags.is_empty() && !c.stint.chained && c.stint.role_arn.is_none());
    }
}
