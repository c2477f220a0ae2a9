//! Generic server calls: `stint iam <Action> [JSON|@file]`, `keys`, `audit
//! list|watch|chain-verify`, `revoke`, `authorize` and the `call` escape hatch. Flags are
//! turned into the request's proto3 JSON and go through [`super::call`].
//!
//! Output follows the global `--output text|json`: answers of generic calls are JSON either
//! way (normalised by [`call::to_json`]); `authorize` prints the decision in text, and exits
//! 0 (Allow), 1 (ExplicitDeny/ImplicitDeny) or 2 (could not ask), like `grep`.

use std::io::Read;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use prost_reflect::{MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

use super::call::{self, call_and_print, from_json, from_value};
use super::{AuthFlags, Context, Env, bearer, parse_key_value, parse_rfc3339};
use crate::cli::{CliError, OutputFormat, runtime};

/// Methods that take no bearer token.
const NO_AUTH: &[&str] = &[
    "stint.v1.Sts.GetSessionToken",
    "stint.v1.Sts.AssumeRoleWithWebIdentity",
    "stint.v1.Tokens.GetJwks",
];

#[derive(Args, Debug)]
pub struct IamArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The Iam action, e.g. CreateUser, AttachRolePolicy, ListUsers.
    #[arg(required_unless_present = "list")]
    pub action: Option<String>,
    /// Request as JSON (snake_case fields), @FILE, or @- for standard input (default {}).
    /// Policy documents (`policy_document`, `assume_role_policy_document`, `policy`, …) may
    /// be JSON objects; they are sent as the strings the API wants.
    pub json: Option<String>,
    /// List the Iam actions and exit.
    #[arg(long)]
    pub list: bool,
    /// Print the action's request and response fields with their types, and exit.
    #[arg(long, requires = "action")]
    pub describe: bool,
}

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// Service/Method, e.g. Tokens/Introspect or stint.v1.Iam/ListRoles.
    pub method: String,
    /// Request as JSON, @FILE, or @- for standard input (default {}).
    pub json: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// The signing keys and their states.
    List(AuthFlags),
    /// Rotate the signing key now.
    Rotate(AuthFlags),
    /// The key rotation log.
    History(HistoryArgs),
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// At most this many events.
    #[arg(long)]
    pub max: Option<i32>,
    /// Continue from a previous answer's next_token.
    #[arg(long)]
    pub next_token: Option<String>,
}

#[derive(Args, Debug)]
pub struct AuditListArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// Only events of this principal ARN.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only events with this name (e.g. sts:AssumeRole).
    #[arg(long)]
    pub event_name: Option<String>,
    /// Only this outcome: Allow, Deny or Error.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Events at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_rfc3339)]
    pub since: Option<time::OffsetDateTime>,
    /// Events before this RFC 3339 time.
    #[arg(long, value_parser = parse_rfc3339)]
    pub until: Option<time::OffsetDateTime>,
    /// At most this many events.
    #[arg(long)]
    pub max: Option<i32>,
    /// Continue from a previous answer's next_token.
    #[arg(long)]
    pub next_token: Option<String>,
    /// Newest events first (next_token then pages back in time).
    #[arg(long)]
    pub newest_first: bool,
}

#[derive(Args, Debug)]
pub struct AuditWatchArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// Replay events after this sequence number (1 or more) first; without it, only new
    /// events (`audit list` reads the past).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub after_seq: Option<u64>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["session_id", "principal_arn", "role_arn"])))]
pub struct RevokeArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// One session, by id (the credential's jti / ASIA… access key id).
    #[arg(long)]
    pub session_id: Option<String>,
    /// Everything issued to this principal.
    #[arg(long)]
    pub principal_arn: Option<String>,
    /// Everything issued for this role.
    #[arg(long)]
    pub role_arn: Option<String>,
    /// Only what was issued before this RFC 3339 time (default: now).
    #[arg(long, value_parser = parse_rfc3339)]
    pub before: Option<time::OffsetDateTime>,
}

#[derive(Args, Debug)]
pub struct AuthorizeArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The action, e.g. s3:GetObject.
    #[arg(long)]
    pub action: String,
    /// The resource ARN.
    #[arg(long)]
    pub resource: String,
    /// Request context key=value (repeatable; repeating a key adds values).
    #[arg(long = "context", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
}

/// `JSON`, `@file`, `@-` (stdin) or nothing (`{}`).
pub fn read_json_arg(arg: Option<&str>) -> Result<String, CliError> {
    match arg {
        None => Ok("{}".to_string()),
        Some("@-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::new(format!("cannot read JSON from stdin: {e}")))?;
            Ok(text)
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| CliError::new(format!("cannot read {path}: {e}"))),
            None => Ok(arg.to_string()),
        },
    }
}

fn rfc3339(t: time::OffsetDateTime) -> Value {
    Value::String(super::session::rfc3339(t))
}

/// Calls `method` with `body` and prints the answer (JSON in both output formats).
fn invoke(
    auth: &AuthFlags,
    env: &Env,
    method: &MethodDescriptor,
    body: Body,
) -> Result<ExitCode, CliError> {
    let ctx = Context::open(&auth.conn, env)?;
    let token = if NO_AUTH.contains(&method.full_name()) {
        None
    } else {
        Some(ctx.token(auth.token_flag())?)
    };
    let message = match body {
        Body::Text(text) => from_json(&method.input(), &text)?,
        Body::Value(value) => from_value(&method.input(), &value)?,
    };
    let request = match &token {
        Some(token) => bearer(message, token)?,
        None => tonic::Request::new(message),
    };
    runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        call_and_print(channel, method, request, &mut out).await
    })?;
    Ok(ExitCode::SUCCESS)
}

enum Body {
    Text(String),
    Value(Value),
}

fn method(service: &str, name: &str) -> Result<MethodDescriptor, CliError> {
    call::method(&call::service(service)?, name)
}

pub fn iam(args: IamArgs, env: &Env, output: OutputFormat) -> Result<ExitCode, CliError> {
    let iam = call::service("Iam")?;
    if args.list {
        if output == OutputFormat::Json {
            let names: Vec<String> = iam.methods().map(|m| m.name().to_string()).collect();
            super::say(format_args!("{}", Value::from(names)))?;
            return Ok(ExitCode::SUCCESS);
        }
        for m in iam.methods() {
            super::say(format_args!("{}", m.name()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let action = args.action.as_deref().unwrap_or_default();
    // `stint iam credential-report [csv|json]` prints the report itself.
    if action == "credential-report" {
        return credential_report(
            CredentialReportArgs {
                auth: args.auth,
                format: args.json,
            },
            env,
            output,
        );
    }
    let method = call::method(&iam, action)?;
    if args.describe {
        return describe(&method, output);
    }
    let body = documents_as_strings(&read_json_arg(args.json.as_deref())?)?;
    invoke(&args.auth, env, &method, Body::Text(body))
}

/// Whether a request field holds a JSON document sent as a string (a policy, or an
/// inline JWKS such as `jwks_json`).
fn is_document_field(name: &str) -> bool {
    name == "policy"
        || name.contains("policy_document")
        || name.ends_with("_document")
        || name.ends_with("_json")
}

/// Serialises object (or array) values of document fields, at any depth, to strings.
pub fn documents_as_strings(body: &str) -> Result<String, CliError> {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if is_document_field(key) && (v.is_object() || v.is_array()) {
                        *v = Value::String(v.to_string());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if body.trim().is_empty() {
        return Ok("{}".into());
    }
    // Not JSON: leave it to the request parser, whose error names the message.
    let Ok(mut value) = serde_json::from_str::<Value>(body) else {
        return Ok(body.to_string());
    };
    walk(&mut value);
    Ok(value.to_string())
}

/// A field's type as a person reads it: `string`, `repeated Tag {key: string, …}`, ….
fn type_of(field: &prost_reflect::FieldDescriptor, depth: usize) -> String {
    use prost_reflect::Kind;
    let base = match field.kind() {
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            "timestamp (RFC 3339)".to_string()
        }
        Kind::Message(m) if m.full_name() == "google.protobuf.Duration" => {
            "duration (e.g. \"3600s\")".to_string()
        }
        Kind::Message(m) if field.is_map() => {
            let (k, v) = (m.map_entry_key_field(), m.map_entry_value_field());
            return format!("map<{}, {}>", type_of(&k, depth), type_of(&v, depth));
        }
        Kind::Message(m) if depth >= 2 => m.name().to_string(),
        Kind::Message(m) => {
            let inner: Vec<String> = m
                .fields()
                .map(|f| format!("{}: {}", f.name(), type_of(&f, depth + 1)))
                .collect();
            format!("{} {{{}}}", m.name(), inner.join(", "))
        }
        Kind::Enum(e) => {
            let values: Vec<String> = e
                .values()
                .map(|v| {
                    call::decision_name(v.name())
                        .filter(|_| e.full_name() == "stint.v1.Decision")
                        .map_or_else(|| v.name().to_string(), str::to_string)
                })
                .collect();
            format!("enum {} ({})", e.name(), values.join("|"))
        }
        Kind::Bytes => "bytes (base64)".to_string(),
        Kind::String if is_document_field(field.name()) => {
            "policy document (JSON object or string)".to_string()
        }
        kind => format!("{kind:?}").to_ascii_lowercase(),
    };
    if field.is_list() {
        format!("repeated {base}")
    } else {
        base
    }
}

/// `stint iam <Action> --describe`: the request and response fields, from the descriptor.
fn describe(method: &MethodDescriptor, output: OutputFormat) -> Result<ExitCode, CliError> {
    let fields = |m: MessageDescriptor| -> Vec<(String, String)> {
        m.fields()
            .map(|f| (f.name().to_string(), type_of(&f, 0)))
            .collect()
    };
    let (request, response) = (fields(method.input()), fields(method.output()));
    if output == OutputFormat::Json {
        let list = |rows: &[(String, String)]| -> Value {
            rows.iter()
                .map(|(name, ty)| json!({"name": name, "type": ty}))
                .collect()
        };
        let json = json!({
            "action": method.name(),
            "request_type": method.input().full_name(),
            "response_type": method.output().full_name(),
            "request": list(&request),
            "response": list(&response),
        });
        super::say(format_args!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    super::say(format_args!(
        "{} ({} -> {})",
        method.name(),
        method.input().name(),
        method.output().name()
    ))?;
    for (title, rows) in [("request", &request), ("response", &response)] {
        super::say(format_args!("{title}:"))?;
        if rows.is_empty() {
            super::say("  (no fields)")?;
        }
        for (name, ty) in rows {
            super::say(format_args!("  {name}: {ty}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn call(args: CallArgs, env: &Env, _output: OutputFormat) -> Result<ExitCode, CliError> {
    let method = call::method_by_path(&args.method)?;
    let body = documents_as_strings(&read_json_arg(args.json.as_deref())?)?;
    invoke(&args.auth, env, &method, Body::Text(body))
}

pub fn keys(command: KeysCommand, env: &Env, _output: OutputFormat) -> Result<ExitCode, CliError> {
    match command {
        KeysCommand::List(auth) => invoke(
            &auth,
            env,
            &method("Keys", "ListSigningKeys")?,
            Body::Value(json!({})),
        ),
        KeysCommand::Rotate(auth) => invoke(
            &auth,
            env,
            &method("Keys", "RotateSigningKey")?,
            Body::Value(json!({})),
        ),
        KeysCommand::History(args) => {
            let mut body = Map::new();
            if let Some(max) = args.max {
                body.insert("max_results".into(), max.into());
            }
            if let Some(t) = args.next_token {
                body.insert("next_token".into(), t.into());
            }
            invoke(
                &args.auth,
                env,
                &method("Audit", "ListRotations")?,
                Body::Value(Value::Object(body)),
            )
        }
    }
}

/// The `ListEvents` request for `stint audit list`'s flags.
pub fn list_events_body(args: &AuditListArgs) -> Value {
    let mut body = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            body.insert(key.into(), v);
        }
    };
    put("principal_arn", args.principal.clone().map(Value::from));
    put("event_name", args.event_name.clone().map(Value::from));
    put("outcome", args.outcome.clone().map(Value::from));
    put("start_time", args.since.map(rfc3339));
    put("end_time", args.until.map(rfc3339));
    put("max_results", args.max.map(Value::from));
    put("next_token", args.next_token.clone().map(Value::from));
    put(
        "newest_first",
        args.newest_first.then_some(Value::Bool(true)),
    );
    Value::Object(body)
}

pub fn audit_list(
    args: AuditListArgs,
    env: &Env,
    _output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let body = list_events_body(&args);
    invoke(
        &args.auth,
        env,
        &method("Audit", "ListEvents")?,
        Body::Value(body),
    )
}

pub fn audit_watch(
    args: AuditWatchArgs,
    env: &Env,
    _output: OutputFormat,
) -> Result<ExitCode, CliError> {
    // Unset means "from the tail": only events that happen from now on.
    let body = match args.after_seq {
        Some(seq) => json!({ "after_seq": seq.to_string() }),
        None => json!({}),
    };
    invoke(
        &args.auth,
        env,
        &method("Audit", "WatchEvents")?,
        Body::Value(body),
    )
}

/// `VerifyChain` on the server; exits 1 when the chain is not intact.
pub fn audit_chain_verify(
    auth: AuthFlags,
    env: &Env,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let method = method("Audit", "VerifyChain")?;
    let ctx = Context::open(&auth.conn, env)?;
    let token = ctx.token(auth.token_flag())?;
    let request = bearer(from_json(&method.input(), "{}")?, &token)?;
    let answer = runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        call::unary(channel, &method, request)
            .await
            .map_err(super::status_error)
    })?;
    let json = call::to_json(&answer)?;
    let intact = json["intact"] == Value::Bool(true);
    if output == OutputFormat::Json {
        super::say(format_args!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ))?;
    } else if intact {
        super::say(format_args!(
            "intact: {} events checked",
            json["events_checked"]
        ))?;
    } else {
        super::say(format_args!(
            "BROKEN at seq {}: {} ({} events checked)",
            json["first_broken_seq"],
            json["reason"].as_str().unwrap_or_default(),
            json["events_checked"]
        ))?;
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `RevokeSession` request for `stint revoke`'s flags.
pub fn revoke_body(args: &RevokeArgs) -> Value {
    let mut body = Map::new();
    for (key, value) in [
        ("session_id", &args.session_id),
        ("principal_arn", &args.principal_arn),
        ("role_arn", &args.role_arn),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), v.clone().into());
        }
    }
    if let Some(t) = args.before {
        body.insert("issued_before".into(), rfc3339(t));
    }
    Value::Object(body)
}

pub fn revoke(args: RevokeArgs, env: &Env, _output: OutputFormat) -> Result<ExitCode, CliError> {
    let body = revoke_body(&args);
    invoke(
        &args.auth,
        env,
        &method("Tokens", "RevokeSession")?,
        Body::Value(body),
    )
}

/// `ContextEntry` list: repeated keys collect their values, first-seen order.
pub fn context_entries(pairs: &[(String, String)]) -> Value {
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        match entries.iter_mut().find(|(key, _)| key == k) {
            Some((_, values)) => values.push(v.clone()),
            None => entries.push((k.clone(), vec![v.clone()])),
        }
    }
    Value::Array(
        entries
            .into_iter()
            .map(|(key, values)| json!({"key": key, "values": values}))
            .collect(),
    )
}

/// Asks `Tokens.Authorize` about the current credentials. Exit 0 for Allow, 1 for a
/// deny; the caller maps an error to 2.
pub fn authorize(
    args: AuthorizeArgs,
    env: &Env,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let method = method("Tokens", "Authorize")?;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token_flag())?;
    let body = json!({
        "session_token": token.expose(),
        "action": args.action,
        "resource": args.resource,
        "context": context_entries(&args.context),
    });
    let request = bearer(from_value(&method.input(), &body)?, &token)?;
    let answer = runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        call::unary(channel, &method, request)
            .await
            .map_err(super::status_error)
    })?;
    let json = call::to_json(&answer)?;
    let decision = json["decision"]
        .as_str()
        .unwrap_or("Unspecified")
        .to_string();
    if output == OutputFormat::Json {
        super::say(format_args!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ))?;
    } else {
        super::say(&decision)?;
        for (label, key) in [("principal", "principal_arn"), ("reason", "reason")] {
            if let Some(text) = json[key].as_str().filter(|t| !t.is_empty()) {
                super::say(format_args!("  {label}: {text}"))?;
            }
        }
        if let Some(matched) = json["matched_statements"].as_array() {
            for statement in matched.iter().filter_map(Value::as_str) {
                super::say(format_args!("  matched: {statement}"))?;
            }
        }
    }
    Ok(if decision == "Allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_bodies_are_valid_requests() {
        let list = AuditListArgs {
            auth: AuthFlags::default(),
            principal: Some("arn:stint:iam::1:user/bob".into()),
            event_name: Some("AssumeRole".into()),
            outcome: None,
            since: Some(parse_rfc3339("2026-01-02T03:04:05Z").unwrap()),
            until: None,
            max: Some(10),
            next_token: None,
            newest_first: true,
        };
        let msg = from_value(
            &method("Audit", "ListEvents").unwrap().input(),
            &list_events_body(&list),
        )
        .unwrap();
        let json = call::to_json(&msg).unwrap();
        assert_eq!(json["start_time"], "2026-01-02T03:04:05Z");
        assert_eq!(json["principal_arn"], "arn:stint:iam::1:user/bob");
        assert_eq!(json["max_results"], 10);
        assert_eq!(json["newest_first"], true);

        let revoke = RevokeArgs {
            auth: AuthFlags::default(),
            session_id: None,
            principal_arn: None,
            role_arn: Some("arn:stint:iam::1:role/r".into()),
            before: Some(parse_rfc3339("2026-01-01T00:00:00Z").unwrap()),
        };
        let msg = from_value(
            &method("Tokens", "RevokeSession").unwrap().input(),
            &revoke_body(&revoke),
        )
        .unwrap();
        let json = call::to_json(&msg).unwrap();
        assert_eq!(json["role_arn"], "arn:stint:iam::1:role/r");
        assert_eq!(json["issued_before"], "2026-01-01T00:00:00Z");

        let watch = from_value(
            &method("Audit", "WatchEvents").unwrap().input(),
            &json!({"after_seq": "42"}),
        )
        .unwrap();
        assert_eq!(call::to_json(&watch).unwrap()["after_seq"], 42);
    }

    #[test]
    fn authorize_context_groups_values() {
        let pairs = vec![
            ("aws:SourceIp".to_string(), "10.0.0.1".to_string()),
            ("aws:TagKeys".to_string(), "a".to_string()),
            ("aws:SourceIp".to_string(), "10.0.0.2".to_string()),
        ];
        let ctx = context_entries(&pairs);
        assert_eq!(
            ctx,
            json!([
                {"key": "aws:SourceIp", "values": ["10.0.0.1", "10.0.0.2"]},
                {"key": "aws:TagKeys", "values": ["a"]}
            ])
        );
        let body = json!({"session_token": "t", "action": "s3:GetObject", "resource": "r", "context": ctx});
        let msg = from_value(&method("Tokens", "Authorize").unwrap().input(), &body).unwrap();
        let typed: crate::proto::AuthorizeRequest =
            prost::Message::decode(prost::Message::encode_to_vec(&msg).as_slice()).unwrap();
        assert_eq!(typed.context[0].values, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn object_documents_become_strings() {
        let doc = json!({"Version": "2012-10-17", "Statement": []});
        let rows = [
            // (request, field, want: the field's value after)
            (
                json!({"policy_name": "P", "policy_document": doc}),
                "policy_document",
                Value::String(doc.to_string()),
            ),
            (
                json!({"assume_role_policy_document": doc}),
                "assume_role_policy_document",
                Value::String(doc.to_string()),
            ),
            (
                json!({"policy": doc}),
                "policy",
                Value::String(doc.to_string()),
            ),
            (
                json!({"url": "https://k8s", "jwks_json": {"keys": []}}),
                "jwks_json",
                json!(r#"{"keys":[]}"#),
            ),
            // A string stays as it was.
            (
                json!({"policy_document": "{}"}),
                "policy_document",
                json!("{}"),
            ),
            // Other object fields are not documents.
            (
                json!({"password_policy": {"minimum_password_length": 14}}),
                "password_policy",
                json!({"minimum_password_length": 14}),
            ),
        ];
        for (request, field, want) in rows {
            let out: Value =
                serde_json::from_str(&documents_as_strings(&request.to_string()).unwrap()).unwrap();
            assert_eq!(out[field], want, "{request}");
        }
        // The result is a valid request: the object arrives as the JSON text.
        let body = documents_as_strings(
            &json!({"role_name": "r", "policy_name": "p", "policy_document": doc}).to_string(),
        )
        .unwrap();
        let msg = from_json(&method("Iam", "PutRolePolicy").unwrap().input(), &body).unwrap();
        let typed: crate::proto::PutRolePolicyRequest =
            prost::Message::decode(prost::Message::encode_to_vec(&msg).as_slice()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&typed.policy_document).unwrap(),
            doc
        );
        // Not JSON: handed on unchanged, for the request parser to name the error.
        assert_eq!(documents_as_strings("{nope").unwrap(), "{nope");
        assert_eq!(documents_as_strings("  ").unwrap(), "{}");
    }

    #[test]
    fn credential_report_format_follows_output() {
        let rows = [
            (None, OutputFormat::Text, Some("csv")),
            (None, OutputFormat::Json, Some("json")),
            (Some("json"), OutputFormat::Text, Some("json")),
            (Some("CSV"), OutputFormat::Json, Some("csv")),
            (Some("xml"), OutputFormat::Text, None),
        ];
        for (old, output, want) in rows {
            assert_eq!(report_format(old, output).ok(), want, "{old:?} {output:?}");
        }
    }

    #[test]
    fn describe_types() {
        let create_user = method("Iam", "CreateUser").unwrap().input();
        let ty =
            |m: &MessageDescriptor, name: &str| type_of(&m.get_field_by_name(name).unwrap(), 0);
        assert_eq!(ty(&create_user, "user_name"), "string");
        assert_eq!(
            ty(&create_user, "tags"),
            "repeated Tag {key: string, value: string}"
        );
        let put = method("Iam", "PutUserPolicy").unwrap().input();
        assert_eq!(
            ty(&put, "policy_document"),
            "policy document (JSON object or string)"
        );
        let list = method("Audit", "ListEvents").unwrap().input();
        assert_eq!(ty(&list, "start_time"), "timestamp (RFC 3339)");
        assert_eq!(ty(&list, "max_results"), "int32");
    }

    #[test]
    fn json_args() {
        assert_eq!(read_json_arg(None).unwrap(), "{}");
        assert_eq!(read_json_arg(Some(r#"{"a":1}"#)).unwrap(), r#"{"a":1}"#);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.json");
        std::fs::write(&path, r#"{"user_name":"x"}"#).unwrap();
        let arg = format!("@{}", path.display());
        assert_eq!(read_json_arg(Some(&arg)).unwrap(), r#"{"user_name":"x"}"#);
        assert!(read_json_arg(Some("@/nonexistent/file.json")).is_err());
    }
}

#[derive(Subcommand, Debug)]
pub enum ReviewCommand {
    /// Every user and role allowed an action on a resource (through groups and trust), and why.
    WhoCan(WhoCanArgs),
    /// Decisions for one user or role over actions and resources, with the matched statements.
    Simulate(SimulateArgs),
    /// The credential report: password and access-key age and use, MFA, per user.
    CredentialReport(CredentialReportArgs),
}

#[derive(Args, Debug)]
pub struct WhoCanArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The action, e.g. s3:GetObject.
    #[arg(long)]
    pub action: String,
    /// The resource ARN.
    #[arg(long)]
    pub resource: String,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The user or role ARN whose policies are simulated.
    #[arg(long)]
    pub principal_arn: String,
    /// Actions (repeatable).
    #[arg(long = "action", required = true)]
    pub actions: Vec<String>,
    /// Resources (repeatable; default *).
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// Context key=value (repeatable).
    #[arg(long = "context", value_parser = parse_key_value)]
    pub context: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct CredentialReportArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// Old spelling of the format (csv or json); use the global --output (text is CSV).
    #[arg(long, hide = true)]
    pub format: Option<String>,
}

pub fn review(
    command: ReviewCommand,
    env: &Env,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    match command {
        ReviewCommand::WhoCan(args) => invoke(
            &args.auth,
            env,
            &method("Iam", "WhoCan")?,
            Body::Value(json!({"action_name": args.action, "resource_arn": args.resource})),
        ),
        ReviewCommand::Simulate(args) => invoke(
            &args.auth,
            env,
            &method("Iam", "SimulatePrincipalPolicy")?,
            Body::Value(json!({
                "policy_source_arn": args.principal_arn,
                "action_names": args.actions,
                "resource_arns": args.resources,
                "context_entries": context_entries(&args.context),
            })),
        ),
        ReviewCommand::CredentialReport(args) => credential_report(args, env, output),
    }
}

/// The report's format: `--output json` → json, text → csv; the old `--format` or bare
/// argument wins when given.
fn report_format(old: Option<&str>, output: OutputFormat) -> Result<&'static str, CliError> {
    match old.map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => Ok("csv"),
        Some("json") => Ok("json"),
        Some(other) => Err(CliError::new(format!(
            "format: '{other}' is not csv or json (use --output text|json)"
        ))),
        None if output == OutputFormat::Json => Ok("json"),
        None => Ok("csv"),
    }
}

/// Prints the report itself (CSV or JSON), not its protobuf envelope.
fn credential_report(
    args: CredentialReportArgs,
    env: &Env,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let format = report_format(args.format.as_deref(), output)?;
    let method = method("Iam", "GetCredentialReport")?;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token_flag())?;
    let message = from_value(&method.input(), &json!({"format": format}))?;
    let request = bearer(message, &token)?;
    runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        let response = super::call::unary(channel, &method, request)
            .await
            .map_err(super::status_error)?;
        let content = response
            .get_field_by_name("content")
            .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default();
        use std::io::Write as _;
        std::io::stdout()
            .write_all(&content)
            .map_err(|e| CliError::new(format!("cannot write output: {e}")))?;
        Ok(ExitCode::SUCCESS)
    })
}
