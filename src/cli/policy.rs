//! `stint policy validate|simulate`: test policies offline (in CI, before they reach a server).
//!
//! `validate FILE…` prints every problem as `FILE: location: message` and exits 1 if any.
//! `--kind` picks the size limit and rules; `auto` (the default) treats a document whose
//! statements name a `Principal` as a trust policy and anything else as a managed policy.
//!
//! `simulate [--input FILE]` reads JSON lines (stdin by default), one case per line, and
//! writes one JSON line per case, in order. Blank lines are skipped.
//!
//! ```text
//! in:  {"policies":[DOC,…], "action":"s3:GetObject", "resource":"arn:…", "principal":"arn:…",
//!       "context":{"aws:SourceIp":"10.0.0.1", "aws:TagKeys":["a","b"]},
//!       "permission_boundary":DOC, "session_policy":DOC, "trust_policy":DOC}
//! out: {"decision":"Allow"|"ExplicitDeny"|"ImplicitDeny", "matched":["policies[0]#Sid", …], "reason":"…"}
//!      or {"error":"…"} for a case that is itself invalid (the run goes on).
//! ```
//!
//! DOC is a policy object or a string holding one. Policies are named `policies[i]`,
//! `permission_boundary`, `session_policy` and `trust_policy` in `matched`; statements by
//! `Sid` or `Statement[i]`. `policies` are checked as role inline policies (the largest
//! identity limit), the boundary as managed, the session and trust policies as such.
//! Context values (strings or arrays of strings) are used as given; nothing is derived from
//! the principal. With `trust_policy` the case is the `sts:AssumeRole` check of `resource`
//! (a role ARN) by `principal`, `policies` being the caller's identity policies. `principal`
//! is an IAM identity's ARN (its account field is the caller's account: when it differs from
//! the role's, the trust and the caller's policies must both allow, as AWS's cross-account
//! logic says), a service name such as `ec2.amazonaws.com`, or a web-identity/SAML provider
//! ARN (those two have no identity policies: the trust policy alone decides). Identical
//! documents are compiled once per run, so thousands of cases take milliseconds.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::core::policy::{
    Context, Evaluation, NamedPolicy, Policy, PolicyKind, PolicySet, Request, evaluate,
    evaluate_assume_role, validate,
};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate policy documents; print every problem with its location; exit 1 if any.
    Validate {
        /// Policy type (decides size limit and whether Principal is required).
        #[arg(long, value_enum, default_value_t = KindArg::Auto)]
        kind: KindArg,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate JSON-lines cases (see `stint policy simulate --help` and the module docs).
    Simulate {
        /// Read cases from FILE instead of stdin.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Auto,
    Managed,
    UserInline,
    GroupInline,
    RoleInline,
    Trust,
    Session,
}

pub fn run(command: PolicyCommand, output: crate::cli::OutputFormat) -> ExitCode {
    let json = output == crate::cli::OutputFormat::Json;
    let result = match command {
        PolicyCommand::Validate { kind, files } => {
            let out = &mut io::stdout().lock();
            if json {
                validate_files_json(&files, kind, out)
            } else {
                validate_files(&files, kind, out)
            }
            .map(|ok| {
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        }
        PolicyCommand::Simulate { input } => {
            let output = io::stdout().lock();
            match input {
                None => simulate(io::stdin().lock(), output),
                Some(path) => fs::File::open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
                    .and_then(|f| simulate(io::BufReader::new(f), output)),
            }
            .map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("stint policy: {e}");
        ExitCode::from(2)
    })
}

/// `--output json`: one object, `{"valid": bool, "files": [{"file", "errors": […]}]}`.
pub fn validate_files_json(
    files: &[PathBuf],
    kind: KindArg,
    out: &mut impl Write,
) -> io::Result<bool> {
    let mut ok = true;
    let mut rows = Vec::new();
    for path in files {
        let errors: Vec<String> = match fs::read_to_string(path) {
            Ok(text) => validate(&text, resolve_kind(kind, &text))
                .iter()
                .map(ToString::to_string)
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        ok &= errors.is_empty();
        rows.push(json!({"file": path.display().to_string(), "errors": errors}));
    }
    writeln!(out, "{}", json!({"valid": ok, "files": rows}))?;
    Ok(ok)
}

/// Prints every problem in `files`; `Ok(true)` when all are valid.
pub fn validate_files(files: &[PathBuf], kind: KindArg, out: &mut impl Write) -> io::Result<bool> {
    let mut ok = true;
    for path in files {
        let name = path.display();
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                writeln!(out, "{name}: {e}")?;
                ok = false;
                continue;
            }
        };
        let errors = validate(&text, resolve_kind(kind, &text));
        for e in &errors {
            writeln!(out, "{name}: {e}")?;
        }
        ok &= errors.is_empty();
    }
    Ok(ok)
}

fn resolve_kind(kind: KindArg, text: &str) -> PolicyKind {
    match kind {
        KindArg::Auto => {
            if names_principal(text) {
                PolicyKind::Trust
            } else {
                PolicyKind::Managed
            }
        }
        KindArg::Managed => PolicyKind::Managed,
        KindArg::UserInline => PolicyKind::UserInline,
        KindArg::GroupInline => PolicyKind::GroupInline,
        KindArg::RoleInline => PolicyKind::RoleInline,
        KindArg::Trust => PolicyKind::Trust,
        KindArg::Session => PolicyKind::Session,
    }
}

fn names_principal(text: &str) -> bool {
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let has = |s: &Value| s.get("Principal").is_some() || s.get("NotPrincipal").is_some();
    match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().any(has),
        Some(one) => has(one),
        None => false,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    policies: Vec<Value>,
    action: String,
    resource: String,
    principal: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
    permission_boundary: Option<Value>,
    session_policy: Option<Value>,
    trust_policy: Option<Value>,
}

/// Compiled documents by (kind, text): CI suites repeat the same policies across cases.
#[derive(Default)]
struct Cache(HashMap<(PolicyKind, String), Result<Arc<Policy>, String>>);

impl Cache {
    fn get(&mut self, doc: &Value, kind: PolicyKind, name: &str) -> Result<Arc<Policy>, String> {
        let text = match doc {
            Value::String(s) => s.clone(),
            Value::Object(_) => doc.to_string(),
            _ => {
                return Err(format!(
                    "{name}: must be a policy object or a string holding one"
                ));
            }
        };
        if self.0.len() > 10_000 {
            self.0.clear();
        }
        self.0
            .entry((kind, text))
            .or_insert_with_key(|(kind, text)| {
                Policy::parse(text, *kind)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| format!("{name}: {e}"))
    }
}

/// Reads cases from `input` and writes one JSON line per case to `output`.
pub fn simulate(input: impl BufRead, output: impl Write) -> io::Result<()> {
    let mut out = BufWriter::new(output);
    let mut cache = Cache::default();
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match run_case(&line, &mut cache) {
            Ok(e) => json!({
                "decision": e.decision.as_str(),
                "matched": e.matched.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "reason": e.reason,
            }),
            Err(error) => json!({ "error": error }),
        };
        serde_json::to_writer(&mut out, &answer)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn run_case(line: &str, cache: &mut Cache) -> Result<Evaluation, String> {
    let case: Case = serde_json::from_str(line).map_err(|e| format!("invalid case: {e}"))?;
    let context = build_context(&case.context)?;
    let names: Vec<String> = (0..case.policies.len())
        .map(|i| format!("policies[{i}]"))
        .collect();
    let identity_docs = case
        .policies
        .iter()
        .zip(&names)
        .map(|(doc, name)| cache.get(doc, PolicyKind::RoleInline, name))
        .collect::<Result<Vec<_>, _>>()?;
    let boundary_doc = case
        .permission_boundary
        .as_ref()
        .map(|d| cache.get(d, PolicyKind::Managed, "permission_boundary"))
        .transpose()?;
    let session_doc = case
        .session_policy
        .as_ref()
        .map(|d| cache.get(d, PolicyKind::Session, "session_policy"))
        .transpose()?;
    let trust_doc = case
        .trust_policy
        .as_ref()
        .map(|d| cache.get(d, PolicyKind::Trust, "trust_policy"))
        .transpose()?;

    let identity: Vec<NamedPolicy> = identity_docs
        .iter()
        .zip(&names)
        .map(|(policy, name)| NamedPolicy { name, policy })
        .collect();
    let session = session_doc.as_deref().map(|policy| {
        [NamedPolicy {
            name: "session_policy",
            policy,
        }]
    });
    let set = PolicySet {
        identity: &identity,
        boundary: boundary_doc.as_deref().map(|policy| NamedPolicy {
            name: "permission_boundary",
            policy,
        }),
        session: session.as_ref().map(|s| s.as_slice()),
    };
    let req = Request {
        principal: case.principal.as_deref(),
        action: &case.action,
        resource: &case.resource,
        context: &context,
    };
    match trust_doc.as_deref() {
        None => Ok(evaluate(&req, &set)),
        Some(policy) => {
            if case.principal.as_deref().is_none_or(str::is_empty) {
                return Err("a trust_policy case needs a principal: an IAM ARN, a service name (ec2.amazonaws.com) or a provider ARN".into());
            }
            let trust = NamedPolicy {
                name: "trust_policy",
                policy,
            };
            Ok(evaluate_assume_role(&req, trust, &set))
        }
    }
}

fn build_context(raw: &Map<String, Value>) -> Result<Context, String> {
    let mut context = Context::new();
    for (key, value) in raw {
        match value {
            Value::String(s) => context.insert(key, s.as_str()),
            Value::Array(items) => {
                let values = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("context {key:?}: array items must be strings"))?;
                context.insert_multi(key, values);
            }
            _ => {
                return Err(format!(
                    "context {key:?}: must be a string or an array of strings"
                ));
            }
        }
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        simulate(input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn simulate_cases_in_order() {
        let allow = r#"{"Version":"2012-10-17","Statement":{"Sid":"S3","Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}}"#;
        let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"s3:Delete*","Resource":"*"}]}"#;
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Acct","Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}"#;
        let assume = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":"sts:AssumeRole","Resource":"arn:stint:iam::123456789012:role/R"}]}"#;
        let lines = [
            format!(
                r#"{{"policies":[{allow}],"action":"s3:GetObject","resource":"arn:aws:s3:::b/k","context":{{"aws:SourceIp":"10.0.0.1"}}}}"#
            ),
            format!(
                r#"{{"policies":[{allow}],"action":"s3:GetObject","resource":"arn:aws:s3:::b/k","context":{{"aws:SourceIp":"11.0.0.1"}}}}"#
            ),
            String::new(),
            format!(
                r#"{{"policies":[{allow},{}],"action":"s3:DeleteObject","resource":"arn:aws:s3:::b/k","context":{{"aws:SourceIp":"10.0.0.1"}}}}"#,
                serde_json::to_string(deny).unwrap()
            ),
            r#"{"policies":[{"Statement":[]}],"action":"s3:GetObject","resource":"*"}"#.to_string(),
            "not json".to_string(),
            format!(
                r#"{{"policies":[{allow}],"action":"s3:GetObject","resource":"*","context":{{"aws:SourceIp":"10.0.0.1"}},"session_policy":{deny}}}"#
            ),
            format!(
                r#"{{"policies":[{assume}],"action":"sts:AssumeRole","resource":"arn:stint:iam::123456789012:role/R","principal":"arn:stint:iam::123456789012:user/u","trust_policy":{trust}}}"#
            ),
            format!(
                r#"{{"policies":[],"action":"sts:AssumeRole","resource":"arn:stint:iam::123456789012:role/R","principal":"arn:stint:iam::123456789012:user/u","trust_policy":{trust}}}"#
            ),
            r#"{"policies":[],"action":"x:y","resource":"*","context":{"k":1}}"#.to_string(),
        ];
        let out = sim(&lines.join("\n"));
        assert_eq!(out.len(), 9, "{out:?}");
        let decision = |i: usize| out[i]["decision"].as_str().unwrap_or("error");
        assert_eq!(decision(0), "Allow");
        assert_eq!(out[0]["matched"], json!(["policies[0]#S3"]));
        assert_eq!(decision(1), "ImplicitDeny");
        assert_eq!(decision(2), "ExplicitDeny");
        assert_eq!(out[2]["matched"], json!(["policies[1]#Statement[0]"]));
        assert!(
            out[3]["error"]
                .as_str()
                .unwrap()
                .starts_with("policies[0]: ")
        );
        assert!(out[4]["error"].as_str().unwrap().contains("invalid case"));
        assert_eq!(decision(5), "ImplicitDeny");
        assert!(
            out[5]["reason"]
                .as_str()
                .unwrap()
                .contains("session policy")
        );
        assert_eq!(decision(6), "Allow");
        assert_eq!(
            out[6]["matched"],
            json!(["trust_policy#Acct", "policies[0]#A"])
        );
        assert_eq!(decision(7), "ImplicitDeny");
        assert!(out[8]["error"].as_str().unwrap().contains("context"));
    }

    /// IAM User Guide, "Cross-account policy evaluation logic": a trust policy naming a user
    /// of another account is not enough; that user's own policies must allow too. Service and
    /// federated principals are accepted as `principal` and matched by name.
    #[test]
    fn simulate_cross_account_and_service_principals() {
        let role = "arn:stint:iam::111111111111:role/Shared";
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Bob","Effect":"Allow","Principal":{"AWS":"arn:stint:iam::222222222222:user/bob"},"Action":"sts:AssumeRole"},{"Sid":"Ec2","Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"},{"Sid":"Gh","Effect":"Allow","Principal":{"Federated":"arn:stint:iam::111111111111:oidc-provider/token.actions.githubusercontent.com"},"Action":"sts:AssumeRoleWithWebIdentity"}]}"#;
        let assume = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"A","Effect":"Allow","Action":"sts:AssumeRole","Resource":"{role}"}}]}}"#
        );
        let case = |policies: &str, action: &str, principal: &str| {
            format!(
                r#"{{"policies":[{policies}],"action":"{action}","resource":"{role}","principal":"{principal}","trust_policy":{trust}}}"#
            )
        };
        let bob = "arn:stint:iam::222222222222:user/bob";
        let oidc = "arn:stint:iam::111111111111:oidc-provider/token.actions.githubusercontent.com";
        let lines = [
            case("", "sts:AssumeRole", bob),
            case(&assume, "sts:AssumeRole", bob),
            case("", "sts:AssumeRole", "ec2.amazonaws.com"),
            case("", "sts:AssumeRole", "lambda.amazonaws.com"),
            case("", "sts:AssumeRoleWithWebIdentity", oidc),
            format!(
                r#"{{"policies":[],"action":"sts:AssumeRole","resource":"{role}","trust_policy":{trust}}}"#
            ),
        ];
        let out = sim(&lines.join("\n"));
        let decision = |i: usize| out[i]["decision"].as_str().unwrap_or("error");
        assert_eq!(decision(0), "ImplicitDeny", "{}", out[0]);
        assert!(out[0]["reason"].as_str().unwrap().contains("cross-account"));
        assert_eq!(decision(1), "Allow", "{}", out[1]);
        assert_eq!(
            out[1]["matched"],
            json!(["trust_policy#Bob", "policies[0]#A"])
        );
        assert_eq!(decision(2), "Allow", "{}", out[2]);
        assert_eq!(decision(3), "ImplicitDeny");
        assert_eq!(decision(4), "Allow", "{}", out[4]);
        assert!(
            out[5]["error"]
                .as_str()
                .unwrap()
                .contains("needs a principal")
        );
    }

    /// AWS, "Available keys for AWS web identity federation": a Kubernetes workload's trust
    /// policy keyed on `<provider host/path>:sub` and `:aud` (and `:amr` where present),
    /// as `AssumeRoleWithWebIdentity` fills them.
    #[test]
    fn simulate_federated_web_identity_trust() {
        let role = "arn:stint:iam::111111111111:role/app";
        let provider = "arn:stint:iam::111111111111:oidc-provider/oidc.cluster.example/id/C1";
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Pod","Effect":"Allow","Principal":{{"Federated":"{provider}"}},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{{"StringEquals":{{"oidc.cluster.example/id/C1:sub":"system:serviceaccount:prod:app","oidc.cluster.example/id/C1:aud":"stint"}},"ForAnyValue:StringEquals":{{"oidc.cluster.example/id/C1:amr":"mfa"}}}}}}]}}"#
        );
        let case = |principal: &str, action: &str, sub: &str, aud: &str| {
            format!(
                r#"{{"policies":[],"action":"{action}","resource":"{role}","principal":"{principal}","trust_policy":{trust},"context":{{"oidc.cluster.example/id/C1:sub":"{sub}","oidc.cluster.example/id/C1:aud":"{aud}","oidc.cluster.example/id/C1:amr":["pwd","mfa"],"aws:FederatedProvider":"{provider}"}}}}"#
            )
        };
        let app = "system:serviceaccount:prod:app";
        let other_provider = "arn:stint:iam::111111111111:oidc-provider/other.example";
        let lines = [
            case(provider, "sts:AssumeRoleWithWebIdentity", app, "stint"),
            case(
                provider,
                "sts:AssumeRoleWithWebIdentity",
                "system:serviceaccount:prod:intruder",
                "stint",
            ),
            case(
                provider,
                "sts:AssumeRoleWithWebIdentity",
                app,
                "sts.amazonaws.com",
            ),
            case(
                other_provider,
                "sts:AssumeRoleWithWebIdentity",
                app,
                "stint",
            ),
            case(provider, "sts:AssumeRole", app, "stint"),
        ];
        let out = sim(&lines.join("\n"));
        let decision = |i: usize| out[i]["decision"].as_str().unwrap_or("error").to_string();
        assert_eq!(decision(0), "Allow", "{}", out[0]);
        assert_eq!(out[0]["matched"], json!(["trust_policy#Pod"]));
        for (i, case) in out.iter().enumerate().skip(1) {
            assert_eq!(case["decision"], "ImplicitDeny", "case {i}: {case}");
        }
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn validate_files_reports_locations() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        let bad = dir.path().join("bad.json");
        let trust = dir.path().join("trust.json");
        fs::write(
            &good,
            crate::core::policy::builtin::get("SelfServiceMFA")
                .unwrap()
                .document,
        )
        .unwrap();
        fs::write(
            &bad,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject"}]}"#,
        )
        .unwrap();
        fs::write(&trust, r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"}]}"#).unwrap();
        let mut out = Vec::new();
        assert!(validate_files(&[good.clone(), trust.clone()], KindArg::Auto, &mut out).unwrap());
        assert!(out.is_empty());
        assert!(!validate_files(&[good, bad.clone()], KindArg::Auto, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "{}: Statement[0].Resource: missing: a statement needs Resource or NotResource\n",
                bad.display()
            )
        );
        let mut out = Vec::new();
        assert!(!validate_files(std::slice::from_ref(&trust), KindArg::Managed, &mut out).unwrap());

        // --output json: the same verdicts, one object.
        let mut out = Vec::new();
        assert!(!validate_files_json(&[trust], KindArg::Managed, &mut out).unwrap());
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["valid"], false);
        assert!(
            !json["files"][0]["errors"].as_array().unwrap().is_empty(),
            "{json}"
        );
    }
}
