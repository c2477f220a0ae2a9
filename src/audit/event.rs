//! What one audit event says, and its canonical bytes.
//!
//! An [`Event`] is serialised with `serde_json::to_vec` in the struct's field order, with
//! empty and absent fields skipped; `params` is a `serde_json::Value` whose objects are
//! written with their keys sorted ([`SortedKeys`]), so the bytes depend only on the content,
//! not on insertion order nor on whether some crate in the build turned on serde_json's
//! `preserve_order`. Those bytes are what the chain hashes ([`Event::canonical_bytes`]).
//!
//! Callers strip secrets from `params` before building an event; [`redact`] is a second
//! line of defence that blanks any value under a key that names a secret.
//!
//! Every event is bounded ([`Event::cap_size`], applied by the writer): whatever a caller
//! put in it, its canonical bytes stay within [`MAX_EVENT_BYTES`], so no request, however
//! large, can make the log grow by more than that per event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON value written with every object's keys in byte order: what serde_json's default
/// `BTreeMap` objects give, kept even when `preserve_order` makes them insertion-ordered.
pub struct SortedKeys<'a>(pub &'a Value);

impl Serialize for SortedKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &SortedKeys(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&SortedKeys(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

fn serialize_sorted<S: serde::Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
    SortedKeys(value).serialize(serializer)
}

/// Current format version of [`Event`].
pub const EVENT_VERSION: u32 = 1;

/// What the request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Allow,
    Deny,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "Allow",
            Outcome::Deny => "Deny",
            Outcome::Error => "Error",
        }
    }

    /// Parses `Allow` / `Deny` / `Error`, case-insensitively (wire filters are strings).
    pub fn parse(text: &str) -> Option<Self> {
        [Outcome::Allow, Outcome::Deny, Outcome::Error]
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The credential an event issued or acted on (never the token itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// The JWT `jti`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role_arn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_identity: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expires_ms: i64,
    /// The signing key that signed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kid: String,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// One audited decision or change. Field order is the canonical order: do not reorder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    /// Assigned by the writer; whatever the caller sets is overwritten.
    #[serde(default)]
    pub seq: u64,
    pub time_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// `sts:AssumeRole`, `iam:CreateUser`, `stint:RotateSigningKey`, `stint:Lockout`, …
    pub event_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal_arn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// Request parameters, secrets removed.
    #[serde(
        default,
        skip_serializing_if = "Value::is_null",
        serialize_with = "serialize_sorted"
    )]
    pub params: Value,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialInfo>,
    /// Part of the rotation log: signing keys, passwords, MFA devices, access keys.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rotation: bool,
}

impl Event {
    pub fn new(time_ms: i64, event_name: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            v: EVENT_VERSION,
            seq: 0,
            time_ms,
            request_id: String::new(),
            event_name: event_name.into(),
            principal_arn: String::new(),
            source_ip: String::new(),
            user_agent: String::new(),
            params: Value::Null,
            outcome,
            reason: String::new(),
            credential: None,
            rotation: false,
        }
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = id.into();
        self
    }
    pub fn with_principal(mut self, arn: impl Into<String>) -> Self {
        self.principal_arn = arn.into();
        self
    }
    pub fn with_source_ip(mut self, ip: impl Into<String>) -> Self {
        self.source_ip = ip.into();
        self
    }
    pub fn with_user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }
    /// Sets the request parameters, passing them through [`redact`] first.
    pub fn with_params(mut self, mut params: Value) -> Self {
        redact(&mut params);
        self.params = params;
        self
    }
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
    pub fn with_credential(mut self, credential: CredentialInfo) -> Self {
        self.credential = Some(credential);
        self
    }
    /// Marks the event as part of the rotation log.
    pub fn rotation(mut self) -> Self {
        self.rotation = true;
        self
    }

    /// The bytes the chain hashes.
    #[allow(clippy::expect_used)] // strings, numbers and JSON values always serialise
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise to JSON")
    }

    /// Shrinks an event whose canonical bytes exceed [`MAX_EVENT_BYTES`]: `params` beyond
    /// [`MAX_PARAMS_BYTES`] becomes `{"truncated": <prefix of its JSON>, "bytes": <size>}`,
    /// `reason` is cut at [`MAX_REASON_BYTES`] and every other text field at
    /// [`MAX_FIELD_BYTES`], each cut ending in [`TRUNCATED`]. Sizes are of the JSON-escaped
    /// text, so the bound holds for any content. An event within the bound is untouched.
    pub fn cap_size(&mut self) {
        if self.canonical_bytes().len() <= MAX_EVENT_BYTES {
            return;
        }
        let params = serde_json::to_string(&SortedKeys(&self.params)).unwrap_or_default();
        if params.len() > MAX_PARAMS_BYTES {
            let mut prefix = params.clone();
            cap_text(&mut prefix, MAX_PARAMS_BYTES - 64);
            self.params = serde_json::json!({ "truncated": prefix, "bytes": params.len() });
        }
        cap_text(&mut self.reason, MAX_REASON_BYTES);
        for field in [
            &mut self.request_id,
            &mut self.event_name,
            &mut self.principal_arn,
            &mut self.source_ip,
            &mut self.user_agent,
        ] {
            cap_text(field, MAX_FIELD_BYTES);
        }
        if let Some(credential) = self.credential.as_mut() {
            for field in [
                &mut credential.session_id,
                &mut credential.role_arn,
                &mut credential.session_name,
                &mut credential.source_identity,
                &mut credential.kid,
            ] {
                cap_text(field, MAX_FIELD_BYTES);
            }
        }
    }
}

/// The most an event's canonical bytes may take.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// The most `params` may take (as JSON) in an event that had to be shrunk.
pub const MAX_PARAMS_BYTES: usize = 8 * 1024;
/// The most `reason` may take (JSON-escaped) in an event that had to be shrunk.
pub const MAX_REASON_BYTES: usize = 2 * 1024;
/// The most any other text field may take (JSON-escaped) in an event that had to be shrunk.
pub const MAX_FIELD_BYTES: usize = 512;
/// What ends a cut text.
pub const TRUNCATED: &str = "…[truncated]";

/// How many bytes `c` takes inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Cuts `text` so that, JSON-escaped, it takes at most `max` bytes, marking the cut.
fn cap_text(text: &mut String, max: usize) {
    if text.chars().map(escaped_len).sum::<usize>() <= max {
        return;
    }
    let budget = max.saturating_sub(TRUNCATED.len());
    let mut used = 0;
    let mut end = 0;
    for (i, c) in text.char_indices() {
        used += escaped_len(c);
        if used > budget {
            break;
        }
        end = i + c.len_utf8();
    }
    text.truncate(end);
    text.push_str(TRUNCATED);
}

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// Key fragments (lower-case, `_`/`-` removed) that name a secret.
const SECRET_KEY_PARTS: [&str; 9] = [
    "password",
    "secret",
    "tokencode",
    "authenticationcode",
    "seed",
    "sessiontoken",
    "private",
    "otpauth",
    "qrcode",
];

/// True when a parameter named `key` holds a secret (`Password`, `new_password`,
/// `secret_access_key`, `TokenCode`, `authentication_code_1`, `base32_string_seed`,
/// `session_token`, `private_key`, `otpauth_uri`, `qr_code_png`, …).
pub fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SECRET_KEY_PARTS.iter().any(|part| folded.contains(part))
}

/// Blanks, recursively, every value under a key that names a secret. Booleans and nulls
/// are kept (`password_reset_required: true` says nothing secret); everything else,
/// numbers included (a TOTP code may arrive as one), becomes [`REDACTED`].
pub fn redact(params: &mut Value) {
    match params {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) && !matches!(value, Value::Bool(_) | Value::Null) {
                    *value = Value::String(REDACTED.into());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Which events a listing wants; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Inclusive.
    pub start_ms: Option<i64>,
    /// Exclusive.
    pub end_ms: Option<i64>,
    pub principal_arn: Option<String>,
    pub event_name: Option<String>,
    pub outcome: Option<Outcome>,
    pub rotation_only: bool,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.start_ms.is_none_or(|start| event.time_ms >= start)
            && self.end_ms.is_none_or(|end| event.time_ms < end)
            && self
                .principal_arn
                .as_deref()
                .is_none_or(|arn| event.principal_arn == arn)
            && self
                .event_name
                .as_deref()
                .is_none_or(|name| event.event_name == name)
            && self.outcome.is_none_or(|outcome| event.outcome == outcome)
            && (!self.rotation_only || event.rotation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redact_table() {
        let cases: &[(&str, Value, Value)] = &[
            ("password", json!("hunter2"), json!(REDACTED)),
            ("Password", json!("hunter2"), json!(REDACTED)),
            ("new_password", json!("x"), json!(REDACTED)),
            ("secret_access_key", json!("abc"), json!(REDACTED)),
            ("SecretAccessKey", json!("abc"), json!(REDACTED)),
            ("token_code", json!("123456"), json!(REDACTED)),
            ("TokenCode", json!(123456), json!(REDACTED)),
            ("authentication_code_1", json!("1"), json!(REDACTED)),
            ("AuthenticationCode2", json!("2"), json!(REDACTED)),
            ("base32_string_seed", json!("JBSW"), json!(REDACTED)),
            ("session_token", json!("eyJ"), json!(REDACTED)),
            ("private_key", json!({"d": "x"}), json!(REDACTED)),
            ("otpauth_uri", json!("otpauth://"), json!(REDACTED)),
            ("qr_code_png", json!([1, 2]), json!(REDACTED)),
            ("password_reset_required", json!(true), json!(true)),
            ("password", json!(null), json!(null)),
            ("user_name", json!("alice"), json!("alice")),
            ("access_key_id", json!("AKIA1"), json!("AKIA1")),
            ("role_arn", json!("arn:x"), json!("arn:x")),
            ("duration_seconds", json!(3600), json!(3600)),
        ];
        for (key, input, expected) in cases {
            let mut params = json!({ *key: input.clone() });
            redact(&mut params);
            assert_eq!(params[*key], *expected, "key {key}");
        }
    }

    #[test]
    fn redact_recurses_into_objects_and_arrays() {
        let mut params = json!({
            "user_name": "bob",
            "credential": {"access_key": {"secret_access_key": "s", "access_key_id": "AKIA"}},
            "devices": [{"seed": "S"}, {"serial": "mfa/bob"}],
        });
        redact(&mut params);
        assert_eq!(
            params,
            json!({
                "user_name": "bob",
                "credential": {"access_key": {"secret_access_key": REDACTED, "access_key_id": "AKIA"}},
                "devices": [{"seed": REDACTED}, {"serial": "mfa/bob"}],
            })
        );
    }

    #[test]
    fn canonical_bytes_skip_empty_fields_and_keep_order() {
        let event = Event::new(5, "sts:AssumeRole", Outcome::Deny)
            .with_principal("arn:stint:iam::1:user/a")
            .with_params(json!({"z": 1, "a": 2, "token_code": "123456"}));
        let text = String::from_utf8(event.canonical_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"seq":0,"time_ms":5,"event_name":"sts:AssumeRole","principal_arn":"arn:stint:iam::1:user/a","params":{"a":2,"token_code":"[REDACTED]","z":1},"outcome":"Deny"}"#
        );
        let back: Event = serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.canonical_bytes(), event.canonical_bytes());
    }

    #[test]
    fn every_event_is_capped_whatever_it_holds() {
        let huge = |c: &str| c.repeat(1024 * 1024 / c.len());
        let mut cases = vec![
            ("plain text", huge("a")),
            ("quotes", huge("\"")),
            ("control characters", huge("\u{1}")),
            ("multi-byte", huge("é")),
        ];
        cases.push(("mixed", format!("{}{}", huge("x"), "\u{0}é\"")));
        for (what, text) in cases {
            let mut event = Event::new(1, text.clone(), Outcome::Deny)
                .with_principal(text.clone())
                .with_source_ip(text.clone())
                .with_user_agent(text.clone())
                .with_request_id(text.clone())
                .with_reason(text.clone())
                .with_params(json!({ "user_name": text.clone(), "list": [text.clone(), 1] }))
                .with_credential(CredentialInfo {
                    session_id: text.clone(),
                    role_arn: text.clone(),
                    session_name: text.clone(),
                    source_identity: text.clone(),
                    expires_ms: 1,
                    kid: text.clone(),
                });
            event.cap_size();
            let bytes = event.canonical_bytes();
            assert!(
                bytes.len() <= MAX_EVENT_BYTES,
                "{what}: {} bytes",
                bytes.len()
            );
            assert!(event.reason.ends_with(TRUNCATED), "{what}");
            assert!(event.params["truncated"].as_str().is_some(), "{what}");
            assert_eq!(
                event.params["bytes"].as_u64().map(|b| b > 1_000_000),
                Some(true)
            );
            // Still a valid event that reads back the same.
            let back: Event = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, event, "{what}");
        }
    }

    #[test]
    fn a_small_event_is_untouched_and_cuts_end_on_a_char_boundary() {
        let event = Event::new(1, "sts:GetSessionToken", Outcome::Deny)
            .with_reason("bad user name or password")
            .with_params(json!({ "user_name": "HIDDEN_DUE_TO_SECURITY_REASONS" }));
        let mut capped = event.clone();
        capped.cap_size();
        assert_eq!(capped, event);

        let cases: &[(&str, usize, &str)] = &[
            ("short", 100, "short"),
            ("éééééééééé", 4 + TRUNCATED.len(), "éé…[truncated]"),
            (
                "\u{1}\u{1}\u{1}\u{1}\u{1}",
                6 + TRUNCATED.len(),
                "\u{1}…[truncated]",
            ),
        ];
        for (input, max, want) in cases {
            let mut text = input.to_string();
            cap_text(&mut text, *max);
            assert_eq!(text, *want, "{input:?} at {max}");
        }
    }

    #[test]
    fn filter_matches_each_field() {
        let event = Event::new(100, "iam:CreateUser", Outcome::Allow)
            .with_principal("p")
            .rotation();
        assert!(EventFilter::default().matches(&event));
        let with = |f: fn(&mut EventFilter)| {
            let mut filter = EventFilter::default();
            f(&mut filter);
            filter.matches(&event)
        };
        assert!(with(|f| f.start_ms = Some(100)));
        assert!(!with(|f| f.start_ms = Some(101)));
        assert!(!with(|f| f.end_ms = Some(100)));
        assert!(with(|f| f.end_ms = Some(101)));
        assert!(!with(|f| f.principal_arn = Some("q".into())));
        assert!(with(|f| f.event_name = Some("iam:CreateUser".into())));
        assert!(!with(|f| f.outcome = Some(Outcome::Deny)));
        assert!(with(|f| f.rotation_only = true));
        assert_eq!(Outcome::parse("deny"), Some(Outcome::Deny));
        assert_eq!(Outcome::parse("maybe"), None);
    }
}
