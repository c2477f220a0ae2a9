//! Generic server calls: `stint iam <Action> [JSON|@file]`, `keys`, `audit
//! list|watch|chain-verify`, `revoke`, `authorize` and the `call` escape hatch. Flags are
//! turned into the request's proto3 JSON and go through [`super::call`].

use std::io::Read;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use prost_reflect::MethodDescriptor;
use serde_json::{Map, Value, json};

use super::call::{self, call_and_print, from_json, from_value};
use super::{AuthFlags, Context, Env, bearer, parse_key_value, parse_rfc3339};
use crate::cli::{CliError, runtime};
use crate::core::secret::SecretString;

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
    pub json: Option<String>,
    /// List the Iam actions and exit.
    #[arg(long)]
    pub list: bool,
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
}

#[derive(Args, Debug)]
pub struct AuditWatchArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// Replay events after this sequence number first (default: only new events).
    #[arg(long, default_value_t = 0)]
    pub after_seq: u64,
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

/// Calls `method` with `body` and prints the answer.
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
        Some(ctx.token(auth.token.as_deref())?)
    };
    let message = match body {
        Body::Text(text) => from_json(&method.input(), &text)?,
        Body::Value(value) => from_value(&method.input(), &value)?,
        Body::WithToken(build) => {
            let token = token
                .as_ref()
                .ok_or_else(|| CliError::new("this call needs a session token"))?;
            from_value(&method.input(), &build(token))?
        }
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
    WithToken(Box<dyn FnOnce(&SecretString) -> Value>),
}

fn method(service: &str, name: &str) -> Result<MethodDescriptor, CliError> {
    call::method(&call::service(service)?, name)
}

pub fn iam(args: IamArgs, env: &Env) -> Result<ExitCode, CliError> {
    let iam = call::service("Iam")?;
    if args.list {
        for m in iam.methods() {
            super::say(format_args!("{}", m.name()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let action = args.action.as_deref().unwrap_or_default();
    // `stint iam credential-report [csv|json]` prints the report itself.
    if action == "credential-report" {
        let format = args.json.unwrap_or_else(|| "csv".into());
        return credential_report(
            CredentialReportArgs {
                auth: args.auth,
                format,
            },
            env,
        );
    }
    let method = call::method(&iam, action)?;
    let body = read_json_arg(args.json.as_deref())?;
    invoke(&args.auth, env, &method, Body::Text(body))
}

pub fn call(args: CallArgs, env: &Env) -> Result<ExitCode, CliError> {
    let method = call::method_by_path(&args.method)?;
    let body = read_json_arg(args.json.as_deref())?;
    invoke(&args.auth, env, &method, Body::Text(body))
}

pub fn keys(command: KeysCommand, env: &Env) -> Result<ExitCode, CliError> {
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
    Value::Object(body)
}

pub fn audit_list(args: AuditListArgs, env: &Env) -> Result<ExitCode, CliError> {
    let body = list_events_body(&args);
    invoke(
        &args.auth,
        env,
        &method("Audit", "ListEvents")?,
        Body::Value(body),
    )
}

pub fn audit_watch(args: AuditWatchArgs, env: &Env) -> Result<ExitCode, CliError> {
    let body = json!({ "after_seq": args.after_seq.to_string() });
    invoke(
        &args.auth,
        env,
        &method("Audit", "WatchEvents")?,
        Body::Value(body),
    )
}

/// `VerifyChain` on the server; exits 1 when the chain is not intact.
pub fn audit_chain_verify(auth: AuthFlags, env: &Env) -> Result<ExitCode, CliError> {
    let method = method("Audit", "VerifyChain")?;
    let ctx = Context::open(&auth.conn, env)?;
    let token = ctx.token(auth.token.as_deref())?;
    let request = bearer(from_json(&method.input(), "{}")?, &token)?;
    let answer = runtime()?.block_on(async {
        let channel = ctx.channel().await?;
        call::unary(channel, &method, request)
            .await
            .map_err(super::status_error)
    })?;
    let json = call::to_json(&answer)?;
    super::say(format_args!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    ))?;
    Ok(if json["intact"] == Value::Bool(true) {
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

pub fn revoke(args: RevokeArgs, env: &Env) -> Result<ExitCode, CliError> {
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

pub fn authorize(args: AuthorizeArgs, env: &Env) -> Result<ExitCode, CliError> {
    let context = context_entries(&args.context);
    let (action, resource) = (args.action.clone(), args.resource.clone());
    let build = Box::new(move |token: &SecretString| {
        json!({
            "session_token": token.expose(),
            "action": action,
            "resource": resource,
            "context": context,
        })
    });
    invoke(
        &args.auth,
        env,
        &method("Tokens", "Authorize")?,
        Body::WithToken(build),
    )
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
        assert_eq!(call::to_json(&watch).unwrap()["after_seq"], "42");
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
    /// csv or json.
    #[arg(long, default_value = "csv")]
    pub format: String,
}

pub fn review(command: ReviewCommand, env: &Env) -> Result<ExitCode, CliError> {
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
        ReviewCommand::CredentialReport(args) => credential_report(args, env),
    }
}

/// Prints the report itself (CSV or JSON), not its protobuf envelope.
fn credential_report(args: CredentialReportArgs, env: &Env) -> Result<ExitCode, CliError> {
    let method = method("Iam", "GetCredentialReport")?;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token.as_deref())?;
    let message = from_value(&method.input(), &json!({"format": args.format}))?;
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
