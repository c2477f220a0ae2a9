//! This workspace builds `stint` with serde_json's `preserve_order` (cedar-policy turns it
//! on), the one build in the repository where JSON objects keep insertion order. The audit
//! chain's canonical bytes must not change with it.

use serde_json::json;
use stint::audit::event::{Event, Outcome};

#[test]
fn this_build_keeps_insertion_order() {
    // Without this, the test below would prove nothing.
    assert_eq!(json!({"z": 1, "a": 2}).to_string(), r#"{"z":1,"a":2}"#);
}

#[test]
fn audit_canonical_bytes_sort_keys_whatever_serde_json_features() {
    let event = Event::new(5, "sts:AssumeRole", Outcome::Deny)
        .with_principal("arn:stint:iam::1:user/a")
        .with_params(
            json!({"z": 1, "a": {"y": [{"d": 1, "c": 2}], "b": 3}, "token_code": "123456"}),
        );
    let text = String::from_utf8(event.canonical_bytes()).unwrap();
    assert_eq!(
        text,
        r#"{"v":1,"seq":0,"time_ms":5,"event_name":"sts:AssumeRole","principal_arn":"arn:stint:iam::1:user/a","params":{"a":{"b":3,"y":[{"c":2,"d":1}]},"token_code":"[REDACTED]","z":1},"outcome":"Deny"}"#
    );
}
