//! Generic gRPC calls: JSON in, JSON out, for any `stint.v1` method, driven by the
//! descriptor set compiled into the binary ([`crate::proto::FILE_DESCRIPTOR_SET`]).
//!
//! [`DynamicCodec`] is a tonic codec over prost-reflect's [`DynamicMessage`]; its decoder
//! is bound to the method's output descriptor. Requests accept proto3 JSON (snake_case
//! field names or their lowerCamelCase JSON names; unknown fields are an error);
//! responses print with the proto field names and every field, defaults included, so
//! `"intact": false` is never silently left out.
//!
//! Printed JSON is for programs, so [`to_json`] then fixes what proto3 JSON does for
//! JavaScript's sake: 64-bit integers become JSON numbers (not strings), `*_json` string
//! fields (`event_json`, `claims_json`, …) become the JSON they hold, and decisions are
//! named as `stint policy simulate` names them (`Allow`, `ExplicitDeny`, `ImplicitDeny`).

use std::io::Write;
use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ReflectMessage, SerializeOptions, ServiceDescriptor,
};
use serde_json::Value;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::cli::CliError;

/// Protobuf package of every Stint service.
pub const PACKAGE: &str = "stint.v1";

/// The descriptor pool of all `stint.v1` protos (decoded once).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    #[allow(clippy::expect_used)] // compiled into the binary by build.rs
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled-in descriptor set decodes")
    })
}

/// A service by short (`Iam`) or full (`stint.v1.Iam`) name.
pub fn service(name: &str) -> Result<ServiceDescriptor, CliError> {
    let full = if name.contains('.') {
        name.to_string()
    } else {
        format!("{PACKAGE}.{name}")
    };
    if let Some(s) = pool().get_service_by_name(&full) {
        return Ok(s);
    }
    let names: Vec<String> = pool().services().map(|s| s.name().to_string()).collect();
    if let Some(s) = pool()
        .services()
        .find(|s| s.name().eq_ignore_ascii_case(name) || s.full_name().eq_ignore_ascii_case(name))
    {
        return Ok(s);
    }
    Err(CliError::new(format!(
        "unknown service '{name}'; services: {}",
        names.join(", ")
    )))
}

/// A method of `service` by exact or case-insensitive name; otherwise an error listing
/// the closest names.
pub fn method(service: &ServiceDescriptor, name: &str) -> Result<MethodDescriptor, CliError> {
    if let Some(m) = service.methods().find(|m| m.name() == name) {
        return Ok(m);
    }
    let folded: Vec<MethodDescriptor> = service
        .methods()
        .filter(|m| m.name().eq_ignore_ascii_case(name))
        .collect();
    if let [m] = folded.as_slice() {
        return Ok(m.clone());
    }
    let names: Vec<String> = service.methods().map(|m| m.name().to_string()).collect();
    let close = close_matches(name, names.iter().map(String::as_str), 5);
    let hint = if close.is_empty() {
        format!("{} has: {}", service.name(), names.join(", "))
    } else {
        format!("did you mean {}?", close.join(", "))
    };
    Err(CliError::new(format!(
        "unknown {} action '{name}'; {hint}",
        service.name()
    )))
}

/// `Service/Method`, `Service.Method` or `stint.v1.Service/Method`.
pub fn method_by_path(path: &str) -> Result<MethodDescriptor, CliError> {
    let path = path.trim_start_matches('/');
    let (svc, name) = path
        .rsplit_once('/')
        .or_else(|| path.rsplit_once('.'))
        .ok_or_else(|| {
            CliError::new(format!(
                "'{path}' is not Service/Method (e.g. Iam/ListUsers)"
            ))
        })?;
    method(&service(svc)?, name)
}

/// Up to `limit` candidates close to `wanted` (edit distance, case-insensitive, or one
/// containing the other), best first.
pub fn close_matches<'a>(
    wanted: &str,
    candidates: impl Iterator<Item = &'a str>,
    limit: usize,
) -> Vec<String> {
    let w = wanted.to_ascii_lowercase();
    let max = (w.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .filter_map(|c| {
            let lc = c.to_ascii_lowercase();
            let d = levenshtein(&w, &lc);
            if d <= max {
                Some((d, c))
            } else if w.len() >= 4 && (lc.contains(&w) || w.contains(&lc)) {
                Some((max + 1 + lc.len().abs_diff(w.len()), c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(limit)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// JSON text → message of type `desc`.
pub fn from_json(desc: &MessageDescriptor, json: &str) -> Result<DynamicMessage, CliError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let mut de = serde_json::Deserializer::from_str(json);
    let msg =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &DeserializeOptions::new())
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| CliError::new(format!("bad {} JSON: {e}", desc.name())))?;
    Ok(msg)
}

/// JSON value → message (for requests built from flags).
pub fn from_value(
    desc: &MessageDescriptor,
    value: &serde_json::Value,
) -> Result<DynamicMessage, CliError> {
    from_json(desc, &value.to_string())
}

/// Message → JSON value, proto field names, defaults included, [normalised](normalise).
pub fn to_json(msg: &DynamicMessage) -> Result<serde_json::Value, CliError> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut json = msg
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CliError::new(format!("cannot render {}: {e}", msg.descriptor().name())))?;
    normalise(&msg.descriptor(), &mut json);
    Ok(json)
}

/// The printed name of a `stint.v1.Decision` value.
pub fn decision_name(proto_name: &str) -> Option<&'static str> {
    match proto_name {
        "DECISION_ALLOW" => Some("Allow"),
        "DECISION_EXPLICIT_DENY" => Some("ExplicitDeny"),
        "DECISION_IMPLICIT_DENY" => Some("ImplicitDeny"),
        "DECISION_UNSPECIFIED" => Some("Unspecified"),
        _ => None,
    }
}

/// Rewrites proto3 JSON of a `desc` message in place: int64 strings → numbers, `*_json`
/// strings → JSON, decision enum names → `Allow`/`ExplicitDeny`/`ImplicitDeny`.
pub fn normalise(desc: &MessageDescriptor, json: &mut Value) {
    if desc.full_name().starts_with("google.protobuf.") {
        return; // well-known types have their own JSON forms (Timestamp → RFC 3339)
    }
    let Value::Object(object) = json else {
        return;
    };
    for field in desc.fields() {
        let Some(value) = object.get_mut(field.name()) else {
            continue;
        };
        if field.is_map() {
            let entry = match field.kind() {
                Kind::Message(entry) => entry,
                _ => continue,
            };
            if let Value::Object(map) = value {
                let value_field = entry.map_entry_value_field();
                for v in map.values_mut() {
                    normalise_value(&value_field, v);
                }
            }
        } else if field.is_list() {
            if let Value::Array(items) = value {
                for v in items {
                    normalise_value(&field, v);
                }
            }
        } else {
            normalise_value(&field, value);
        }
    }
}

fn normalise_value(field: &FieldDescriptor, value: &mut Value) {
    match field.kind() {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<i64>().ok()) {
                *value = Value::from(n);
            }
        }
        Kind::Uint64 | Kind::Fixed64 => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<u64>().ok()) {
                *value = Value::from(n);
            }
        }
        Kind::Enum(e) if e.full_name() == "stint.v1.Decision" => {
            if let Some(name) = value.as_str().and_then(decision_name) {
                *value = Value::from(name);
            }
        }
        Kind::String if field.name().ends_with("_json") => {
            if let Some(text) = value.as_str() {
                if text.is_empty() {
                    *value = Value::Null;
                } else if let Ok(parsed) = serde_json::from_str::<Value>(text) {
                    *value = parsed;
                }
            }
        }
        Kind::Message(desc) => normalise(&desc, value),
        _ => {}
    }
}

/// Encodes and decodes [`DynamicMessage`]s; decodes as `output`.
#[derive(Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec for `method`'s messages.
    pub fn for_method(method: &MethodDescriptor) -> Self {
        DynamicCodec {
            output: method.output(),
        }
    }
}

/// Writes a [`DynamicMessage`]'s protobuf bytes.
pub struct DynamicEncoder;

/// Reads bytes as the bound message type.
pub struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.output.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode request: {e}")))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode {}: {e}", self.0.name())))
    }
}

fn path_of(method: &MethodDescriptor) -> Result<http::uri::PathAndQuery, CliError> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    http::uri::PathAndQuery::try_from(path).map_err(|e| CliError::new(e.to_string()))
}

/// One unary call.
pub async fn unary(
    channel: Channel,
    method: &MethodDescriptor,
    request: Request<DynamicMessage>,
) -> Result<DynamicMessage, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("server not ready: {e}")))?;
    let path = path_of(method).map_err(|e| Status::internal(e.to_string()))?;
    Ok(grpc
        .unary(request, path, DynamicCodec::for_method(method))
        .await?
        .into_inner())
}

/// One server-streaming call.
pub async fn server_streaming(
    channel: Channel,
    method: &MethodDescriptor,
    request: Request<DynamicMessage>,
) -> Result<tonic::Streaming<DynamicMessage>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("server not ready: {e}")))?;
    let path = path_of(method).map_err(|e| Status::internal(e.to_string()))?;
    Ok(grpc
        .server_streaming(request, path, DynamicCodec::for_method(method))
        .await?
        .into_inner())
}

/// Calls `method` and prints: unary → pretty JSON; server stream → one JSON line per
/// message, flushed as it arrives.
pub async fn call_and_print(
    channel: Channel,
    method: &MethodDescriptor,
    request: Request<DynamicMessage>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    // A closed pipe (`| head`) ends the output quietly.
    let io = |e: std::io::Error| CliError::new(format!("cannot write output: {e}"));
    let quiet = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(io(e)),
        Ok(()) => Ok(true),
    };
    if method.is_client_streaming() {
        return Err(CliError::new(format!(
            "{} is client-streaming; the CLI does not send streams",
            method.full_name()
        )));
    }
    if method.is_server_streaming() {
        let mut stream = server_streaming(channel, method, request)
            .await
            .map_err(super::status_error)?;
        while let Some(msg) = stream.message().await.map_err(super::status_error)? {
            let line = to_json(&msg)?;
            if !quiet(writeln!(out, "{line}").and_then(|()| out.flush()))? {
                return Ok(());
            }
        }
        return Ok(());
    }
    let response = unary(channel, method, request)
        .await
        .map_err(super::status_error)?;
    let text = serde_json::to_string_pretty(&to_json(&response)?)
        .map_err(|e| CliError::new(e.to_string()))?;
    quiet(writeln!(out, "{text}")).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_create_user_with_tags() {
        let iam = service("Iam").unwrap();
        let m = method(&iam, "CreateUser").unwrap();
        assert_eq!(m.input().full_name(), "stint.v1.CreateUserRequest");
        let msg = from_json(
            &m.input(),
            r#"{"user_name":"bob","path":"/eng/","tags":[{"key":"team","value":"red"},{"key":"cc","value":"42"}]}"#,
        )
        .unwrap();

        // Through the wire format and back, as the codec does.
        let bytes = msg.encode_to_vec();
        let typed = crate::proto::CreateUserRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(typed.user_name, "bob");
        assert_eq!(typed.tags.len(), 2);
        assert_eq!(typed.tags[1].key, "cc");
        let back = DynamicMessage::decode(m.input(), bytes.as_slice()).unwrap();

        let json = to_json(&back).unwrap();
        assert_eq!(json["user_name"], "bob");
        assert_eq!(json["path"], "/eng/");
        assert_eq!(
            json["tags"],
            serde_json::json!([{"key":"team","value":"red"},{"key":"cc","value":"42"}])
        );
    }

    #[test]
    fn camel_case_accepted_unknown_field_refused() {
        let iam = service("stint.v1.Iam").unwrap();
        let input = method(&iam, "CreateUser").unwrap().input();
        let msg = from_json(&input, r#"{"userName":"amy"}"#).unwrap();
        assert_eq!(to_json(&msg).unwrap()["user_name"], "amy");
        let err = from_json(&input, r#"{"user":"amy"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CreateUserRequest"), "{err}");
        assert!(from_json(&input, r#"{"user_name":"a"} trailing"#).is_err());
        // Empty input is the empty message.
        assert_eq!(from_json(&input, "  ").unwrap(), DynamicMessage::new(input));
    }

    #[test]
    fn defaults_and_well_known_types_render() {
        let audit = service("Audit").unwrap();
        let verify = method(&audit, "VerifyChain").unwrap();
        let empty = DynamicMessage::new(verify.output());
        let json = to_json(&empty).unwrap();
        assert_eq!(json["intact"], false);

        let list = method(&audit, "ListEvents").unwrap();
        let req = from_value(
            &list.input(),
            &serde_json::json!({"start_time": "2026-01-02T03:04:05Z", "max_results": 7}),
        )
        .unwrap();
        let json = to_json(&req).unwrap();
        assert_eq!(json["start_time"], "2026-01-02T03:04:05Z");
        assert_eq!(json["max_results"], 7);
        assert!(method(&audit, "WatchEvents").unwrap().is_server_streaming());
    }

    #[test]
    fn normalised_json_for_programs() {
        use serde_json::json;
        // (method, response JSON as proto3 prints it, field, printed value)
        let rows = [
            (
                "Audit/ListEvents",
                json!({"events": [{"seq": "18446744073709551615", "event_json": "{\"a\":[1]}"}]}),
                "/events/0/seq",
                json!(18446744073709551615u64),
            ),
            (
                "Audit/ListEvents",
                json!({"events": [{"seq": "7", "event_json": "{\"a\":[1]}"}]}),
                "/events/0/event_json",
                json!({"a": [1]}),
            ),
            (
                "Audit/ListEvents",
                json!({"events": [{"event_json": ""}]}),
                "/events/0/event_json",
                Value::Null,
            ),
            (
                "Tokens/Introspect",
                json!({"exp": "-5", "claims_json": "{\"sub\":\"x\"}"}),
                "/exp",
                json!(-5),
            ),
            (
                "Tokens/Introspect",
                json!({"exp": "1", "claims_json": "{\"sub\":\"x\"}"}),
                "/claims_json",
                json!({"sub": "x"}),
            ),
            // Not JSON: left as the string it was.
            (
                "Tokens/Introspect",
                json!({"claims_json": "not json"}),
                "/claims_json",
                json!("not json"),
            ),
            (
                "Tokens/Authorize",
                json!({"decision": "DECISION_EXPLICIT_DENY"}),
                "/decision",
                json!("ExplicitDeny"),
            ),
            (
                "Tokens/Authorize",
                json!({"decision": "DECISION_ALLOW"}),
                "/decision",
                json!("Allow"),
            ),
            (
                "Iam/SimulatePrincipalPolicy",
                json!({"evaluation_results": [{"eval_decision": "DECISION_IMPLICIT_DENY"}]}),
                "/evaluation_results/0/eval_decision",
                json!("ImplicitDeny"),
            ),
            (
                "Tokens/RevokeSession",
                json!({"revoked": "3"}),
                "/revoked",
                json!(3),
            ),
            // Timestamps keep their RFC 3339 form.
            (
                "Audit/ListEvents",
                json!({"events": [{"time": "2026-01-02T03:04:05Z"}]}),
                "/events/0/time",
                json!("2026-01-02T03:04:05Z"),
            ),
        ];
        for (path, mut json, pointer, want) in rows {
            let m = method_by_path(path).unwrap();
            normalise(&m.output(), &mut json);
            assert_eq!(
                json.pointer(pointer),
                Some(&want),
                "{path} {pointer}: {json}"
            );
        }
        // And through a real message: to_json applies it.
        let m = method_by_path("Audit/VerifyChain").unwrap();
        let msg = from_value(&m.output(), &json!({"events_checked": "12"})).unwrap();
        assert_eq!(to_json(&msg).unwrap()["events_checked"], 12);
    }

    #[test]
    fn unknown_action_lists_close_matches() {
        let iam = service("Iam").unwrap();
        let err = method(&iam, "CreatUser").unwrap_err().to_string();
        assert!(err.contains("unknown Iam action 'CreatUser'"), "{err}");
        assert!(err.contains("CreateUser"), "{err}");
        let err = method(&iam, "EnableMFADevices").unwrap_err().to_string();
        assert!(err.contains("EnableMfaDevice"), "{err}");
        let err = method(&iam, "Zzzzzzzzzzzzzzzz").unwrap_err().to_string();
        assert!(err.contains("Iam has: CreateUser"), "{err}");
        // Case-insensitive exact match is accepted.
        assert_eq!(method(&iam, "createuser").unwrap().name(), "CreateUser");
        assert_eq!(
            method(&iam, "EnableMFADevice").unwrap().name(),
            "EnableMfaDevice"
        );
    }

    #[test]
    fn paths_and_services() {
        assert_eq!(method_by_path("Iam/ListUsers").unwrap().name(), "ListUsers");
        assert_eq!(
            method_by_path("/stint.v1.Keys/RotateSigningKey")
                .unwrap()
                .name(),
            "RotateSigningKey"
        );
        assert_eq!(
            method_by_path("Sts.GetCallerIdentity").unwrap().name(),
            "GetCallerIdentity"
        );
        let err = method_by_path("Nope/X").unwrap_err().to_string();
        assert!(err.contains("services: "), "{err}");
        assert!(method_by_path("Iam").is_err());
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
