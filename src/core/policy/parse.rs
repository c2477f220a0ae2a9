//! JSON document → validated, compiled statements.
//!
//! One pass does both validation and compilation and keeps going after a problem, so
//! [`super::validate`] can report every error while [`super::Policy::parse`] keeps the first.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::condition::{ArnPattern, Condition};
use super::glob::{Syntax, Template};
use super::{Context, MAX_MATCH_LEN, Policy, PolicyError, PolicyKind, over_match_cap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// A list of patterns under `X` or `NotX`.
#[derive(Debug, Clone)]
pub(crate) struct Patterns<T> {
    pub negated: bool,
    pub items: Vec<T>,
}

#[derive(Debug, Clone)]
pub(crate) struct Statement {
    /// `Sid`, or `Statement[i]` without one.
    pub name: Box<str>,
    pub effect: Effect,
    pub actions: Patterns<ActionPattern>,
    /// `None` in trust policies, where the resource is the role itself.
    pub resources: Option<Patterns<ArnPattern>>,
    /// `Some` only in trust policies.
    pub principals: Option<Patterns<PrincipalEntry>>,
    pub conditions: Vec<Condition>,
}

/// `service:name-pattern`, matched case-insensitively; `*` alone is every action.
#[derive(Debug, Clone)]
pub(crate) enum ActionPattern {
    Any,
    Service {
        /// Lowercased.
        service: Box<str>,
        name: Template,
    },
}

impl ActionPattern {
    /// `action` split once per request into service and name (`None` without a colon).
    pub fn matches(&self, action: Option<(&str, &str)>) -> bool {
        match self {
            ActionPattern::Any => true,
            ActionPattern::Service { service, name } => match action {
                Some((s, n)) => s.eq_ignore_ascii_case(service) && name.matches(n, &EMPTY_CONTEXT),
                None => false,
            },
        }
    }
}

static EMPTY_CONTEXT: Context = Context {
    entries: Vec::new(),
};

/// One entry of `Principal`/`NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalEntry {
    /// `"*"` or `{"AWS": "*"}`.
    Anyone,
    /// `arn:P:iam::A:root` or the bare 12-digit account id.
    Account(Box<str>),
    /// A user, role or assumed-role session ARN.
    Arn(Box<str>),
    /// `Service`, `Federated` and `CanonicalUser` names, matched exactly.
    Named(Box<str>),
}

const TOP_LEVEL: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT_FIELDS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

struct Errors(Vec<PolicyError>);

impl Errors {
    fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.0.push(PolicyError::new(location, message));
    }
}

/// Compiles `text`; the policy is `Some` only when there are no errors.
pub(crate) fn compile(text: &str, kind: PolicyKind) -> (Option<Policy>, Vec<PolicyError>) {
    let mut errors = Errors(Vec::new());
    let size = text.chars().filter(|c| !c.is_whitespace()).count();
    if size > kind.max_chars() {
        errors.push(
            "(document)",
            format!(
                "policy is {size} characters (excluding whitespace); a {kind:?} policy may have at most {}",
                kind.max_chars()
            ),
        );
    }
    let doc: Value = match serde_json::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            errors.push("(document)", format!("invalid JSON: {e}"));
            return (None, errors.0);
        }
    };
    if let Some((location, key)) = duplicate_key(text) {
        errors.push(
            location,
            format!("duplicate key {key:?}: each key may appear once in an object (MalformedPolicyDocument)"),
        );
    }
    let Value::Object(doc) = doc else {
        errors.push("(document)", "a policy must be a JSON object");
        return (None, errors.0);
    };
    for key in doc.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            errors.push(
                key.as_str(),
                "unknown element (expected Version, Id, Statement)",
            );
        }
    }
    let variables = match doc.get("Version") {
        Some(Value::String(v)) if v == "2012-10-17" => true,
        Some(Value::String(v)) if v == "2008-10-17" => false,
        Some(_) => {
            errors.push(
                "Version",
                "must be \"2012-10-17\" (or the legacy \"2008-10-17\")",
            );
            true
        }
        None => {
            errors.push("Version", "missing; use \"2012-10-17\"");
            true
        }
    };
    if let Some(id) = doc.get("Id")
        && !id.is_string()
    {
        errors.push("Id", "must be a string");
    }
    let raw_statements: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(list)) if !list.is_empty() => list.iter().collect(),
        Some(Value::Array(_)) => {
            errors.push("Statement", "must not be empty");
            Vec::new()
        }
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => {
            errors.push("Statement", "must be an object or an array of objects");
            Vec::new()
        }
        None => {
            errors.push("Statement", "missing");
            Vec::new()
        }
    };
    let mut sids = HashSet::new();
    let mut statements = Vec::with_capacity(raw_statements.len());
    for (index, raw) in raw_statements.into_iter().enumerate() {
        let Value::Object(fields) = raw else {
            errors.push(format!("Statement[{index}]"), "must be an object");
            continue;
        };
        if let Some(s) = compile_statement(index, fields, kind, variables, &mut sids, &mut errors) {
            statements.push(s);
        }
    }
    let policy = errors.0.is_empty().then_some(Policy { kind, statements });
    (policy, errors.0)
}

fn compile_statement(
    index: usize,
    fields: &Map<String, Value>,
    kind: PolicyKind,
    variables: bool,
    sids: &mut HashSet<String>,
    errors: &mut Errors,
) -> Option<Statement> {
    let before = errors.0.len();
    let sid = match fields.get("Sid") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(Value::String(_)) | None => None,
        Some(_) => {
            errors.push(format!("Statement[{index}].Sid"), "must be a string");
            None
        }
    };
    let here = match sid {
        Some(sid) => format!("Statement[{index}] (Sid {sid:?})"),
        None => format!("Statement[{index}]"),
    };
    let at = |field: &str| format!("{here}.{field}");
    if let Some(sid) = sid {
        if !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            errors.push(
                at("Sid"),
                "may contain only letters A-Z, a-z and digits 0-9",
            );
        }
        if !sids.insert(sid.to_string()) {
            errors.push(
                at("Sid"),
                format!("duplicate Sid {sid:?}; Sids must be unique within a policy"),
            );
        }
    }
    for key in fields.keys() {
        if !STATEMENT_FIELDS.contains(&key.as_str()) {
            errors.push(
                at(key),
                "unknown element (expected Sid, Effect, Principal, NotPrincipal, Action, NotAction, Resource, NotResource, Condition)",
            );
        }
    }
    let effect = match fields.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Some(Effect::Allow),
        Some(Value::String(e)) if e == "Deny" => Some(Effect::Deny),
        Some(_) => {
            errors.push(at("Effect"), "must be \"Allow\" or \"Deny\"");
            None
        }
        None => {
            errors.push(at("Effect"), "missing (\"Allow\" or \"Deny\")");
            None
        }
    };

    let principals = match pick(fields, "Principal", "NotPrincipal", &at, errors) {
        Some((field, negated, value)) => {
            if kind != PolicyKind::Trust {
                errors.push(
                    at(field),
                    format!(
                        "not allowed in a {kind:?} policy (only trust policies name principals)"
                    ),
                );
                None
            } else {
                if negated && effect == Some(Effect::Allow) {
                    errors.push(
                        at(field),
                        "NotPrincipal must be used with \"Effect\": \"Deny\"",
                    );
                }
                compile_principals(value, &at(field), errors)
                    .map(|items| Patterns { negated, items })
            }
        }
        None => {
            if kind == PolicyKind::Trust {
                errors.push(
                    at("Principal"),
                    "missing: a trust policy must name a Principal",
                );
            }
            None
        }
    };

    let actions = match pick(fields, "Action", "NotAction", &at, errors) {
        Some((field, negated, value)) => strings(value, &at(field), errors).map(|list| Patterns {
            negated,
            items: list
                .iter()
                .filter_map(|a| {
                    capped(a)
                        .and_then(compile_action)
                        .map_err(|m| errors.push(at(field), m))
                        .ok()
                })
                .collect(),
        }),
        None => {
            errors.push(
                at("Action"),
                "missing: a statement needs Action or NotAction",
            );
            None
        }
    };

    let resources = match pick(fields, "Resource", "NotResource", &at, errors) {
        Some((field, negated, value)) => strings(value, &at(field), errors).map(|list| Patterns {
            negated,
            items: list
                .iter()
                .filter_map(|r| {
                    capped(r)
                        .and_then(|r| ArnPattern::parse(r, variables))
                        .map_err(|m| errors.push(at(field), m))
                        .ok()
                })
                .collect(),
        }),
        None => {
            if kind != PolicyKind::Trust {
                errors.push(
                    at("Resource"),
                    "missing: a statement needs Resource or NotResource",
                );
            }
            None
        }
    };

    let conditions = match fields.get("Condition") {
        None => Vec::new(),
        Some(value) => compile_conditions(value, &at("Condition"), variables, errors),
    };

    if errors.0.len() > before {
        return None;
    }
    Some(Statement {
        name: sid
            .map_or_else(|| format!("Statement[{index}]"), str::to_string)
            .into_boxed_str(),
        effect: effect?,
        actions: actions?,
        resources: if kind == PolicyKind::Trust {
            None
        } else {
            resources
        },
        principals,
        conditions,
    })
}

/// The one present field out of `X`/`NotX`: `(name, negated, value)`.
fn pick<'v>(
    fields: &'v Map<String, Value>,
    positive: &'static str,
    negative: &'static str,
    at: &impl Fn(&str) -> String,
    errors: &mut Errors,
) -> Option<(&'static str, bool, &'v Value)> {
    match (fields.get(positive), fields.get(negative)) {
        (Some(_), Some(_)) => {
            errors.push(
                at(negative),
                format!("a statement cannot have both {positive} and {negative}"),
            );
            None
        }
        (Some(v), None) => Some((positive, false, v)),
        (None, Some(v)) => Some((negative, true, v)),
        (None, None) => None,
    }
}

/// Refuses a pattern or value the engine would not match (see [`MAX_MATCH_LEN`]).
fn capped(value: &str) -> Result<&str, String> {
    if over_match_cap(value) {
        return Err(format!(
            "a value of {} characters (starting {:?}); at most {MAX_MATCH_LEN} are allowed",
            value.chars().count(),
            value.chars().take(32).collect::<String>()
        ));
    }
    Ok(value)
}

/// The first key repeated within one JSON object, at any depth, as (location, key).
/// `serde_json` keeps the last of duplicate keys, so `{"Effect":"Deny","Effect":"Allow"}`
/// would silently allow; AWS refuses such a document (MalformedPolicyDocument).
fn duplicate_key(text: &str) -> Option<(String, String)> {
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let _ = UniqueKeys {
        path: String::new(),
        found: &found,
    }
    .deserialize(&mut deserializer);
    found.into_inner()
}

/// Walks a JSON value, stopping at the first duplicate key (recorded in `found`).
struct UniqueKeys<'f> {
    /// e.g. `Statement[1].Condition`.
    path: String,
    found: &'f RefCell<Option<(String, String)>>,
}

impl UniqueKeys<'_> {
    fn child(&self, path: String) -> Self {
        UniqueKeys {
            path,
            found: self.found,
        }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        while seq
            .next_element_seed(self.child(format!("{}[{index}]", self.path)))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key.clone()) {
                let location = if self.path.is_empty() {
                    "(document)".to_string()
                } else {
                    self.path.clone()
                };
                *self.found.borrow_mut() = Some((location, key));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self.child(path))?;
        }
        Ok(())
    }
}

/// A string or a non-empty array of strings.
fn strings<'v>(value: &'v Value, at: &str, errors: &mut Errors) -> Option<Vec<&'v str>> {
    match value {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(list) if !list.is_empty() => {
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                match item {
                    Value::String(s) => out.push(s.as_str()),
                    _ => {
                        errors.push(at, "array items must be strings");
                        return None;
                    }
                }
            }
            Some(out)
        }
        Value::Array(_) => {
            errors.push(at, "must not be an empty array");
            None
        }
        _ => {
            errors.push(at, "must be a string or an array of strings");
            None
        }
    }
}

fn compile_action(action: &str) -> Result<ActionPattern, String> {
    if action == "*" {
        return Ok(ActionPattern::Any);
    }
    let Some((service, name)) = action.split_once(':') else {
        return Err(format!(
            "action {action:?} must be \"*\" or \"service:action\""
        ));
    };
    if service.contains(['*', '?']) {
        return Err(format!(
            "action {action:?}: wildcards are not allowed in the service part"
        ));
    }
    if service.is_empty()
        || !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "action {action:?}: invalid service prefix {service:?}"
        ));
    }
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(format!("action {action:?}: invalid action name"));
    }
    let syntax = Syntax {
        wildcards: true,
        variables: false,
        ignore_case: true,
    };
    Ok(ActionPattern::Service {
        service: service.to_ascii_lowercase().into_boxed_str(),
        name: Template::parse(name, syntax)?,
    })
}

fn compile_principals(value: &Value, at: &str, errors: &mut Errors) -> Option<Vec<PrincipalEntry>> {
    match value {
        Value::String(s) if s == "*" => Some(vec![PrincipalEntry::Anyone]),
        Value::Object(map) if !map.is_empty() => {
            let mut out = Vec::new();
            for (kind, values) in map {
                let here = format!("{at}.{kind}");
                let Some(list) = strings(values, &here, errors) else {
                    continue;
                };
                for v in list {
                    if let Err(m) = capped(v) {
                        errors.push(here.as_str(), m);
                        continue;
                    }
                    let entry = match kind.as_str() {
                        "AWS" => aws_principal(v),
                        "Service" | "Federated" | "CanonicalUser" if !v.is_empty() => {
                            Ok(PrincipalEntry::Named(v.into()))
                        }
                        "Service" | "Federated" | "CanonicalUser" => Err("empty principal".into()),
                        _ => Err("unknown principal type (expected AWS, Service, Federated, CanonicalUser)".into()),
                    };
                    match entry {
                        Ok(e) => out.push(e),
                        Err(m) => errors.push(here.as_str(), m),
                    }
                }
            }
            Some(out)
        }
        _ => {
            errors.push(
                at,
                "must be \"*\" or an object such as {\"AWS\": \"arn:…\"}",
            );
            None
        }
    }
}

fn aws_principal(v: &str) -> Result<PrincipalEntry, String> {
    if v == "*" {
        return Ok(PrincipalEntry::Anyone);
    }
    if is_account_id(v) {
        return Ok(PrincipalEntry::Account(v.into()));
    }
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    let [arn, partition, service, _region, account, resource] = parts.as_slice() else {
        return Err(format!(
            "{v:?} is neither \"*\", a 12-digit account id, nor an ARN"
        ));
    };
    if *arn != "arn" || partition.is_empty() || resource.is_empty() || !is_account_id(account) {
        return Err(format!("{v:?} is not a valid principal ARN"));
    }
    if v.contains(['*', '?']) {
        return Err(format!(
            "{v:?}: wildcards are not allowed in principal ARNs (use \"*\" with an aws:PrincipalArn condition)"
        ));
    }
    if *service == "iam" && *resource == "root" {
        return Ok(PrincipalEntry::Account((*account).into()));
    }
    Ok(PrincipalEntry::Arn(v.into()))
}

pub(crate) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn compile_conditions(
    value: &Value,
    at: &str,
    variables: bool,
    errors: &mut Errors,
) -> Vec<Condition> {
    let Value::Object(operators) = value else {
        errors.push(at, "must be an object of {\"Operator\": {\"key\": value}}");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (operator, block) in operators {
        let here = format!("{at}.{operator}");
        let Value::Object(keys) = block else {
            errors.push(here, "must be an object of {\"key\": value}");
            continue;
        };
        if keys.is_empty() {
            errors.push(here.as_str(), "must name at least one condition key");
        }
        for (key, raw) in keys {
            let values = match condition_values(raw) {
                Some(v) => v,
                None => {
                    errors.push(here.as_str(), format!("{key}: values must be strings, numbers or booleans, or an array of them"));
                    continue;
                }
            };
            if let Some(Err(m)) = values.iter().map(|v| capped(v)).find(Result::is_err) {
                errors.push(here.as_str(), format!("{key}: {m}"));
                continue;
            }
            match Condition::compile(operator, key, &values, variables) {
                Ok(c) => out.push(c),
                Err(m) => errors.push(here.as_str(), format!("{key}: {m}")),
            }
        }
    }
    out
}

fn condition_values(value: &Value) -> Option<Vec<String>> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    match value {
        Value::Array(list) => list.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}
