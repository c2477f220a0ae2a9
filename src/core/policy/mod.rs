//! The IAM policy language: parse and validate once, evaluate many times.
//!
//! Every Stint decision is an evaluation of AWS-IAM-style JSON policies, and users paste
//! policies straight from the AWS IAM User Guide, so the semantics follow AWS case for case:
//! explicit deny beats allow beats implicit deny; identity policies are intersected with the
//! permissions boundary and the session policy when present; trust policies decide
//! `sts:AssumeRole` (see [`evaluate_assume_role`]).
//!
//! Why a compiled form: a document is validated and compiled once, at write time
//! ([`Policy::parse`]), into split action patterns, prepared wildcard templates, parsed
//! CIDRs, numbers and dates. Evaluation never touches JSON and does not allocate while
//! matching (only the returned [`Evaluation`] allocates), so one decision costs a few µs.
//!
//! Choices where AWS leaves room, documented once here:
//! - A statement is named by its `Sid`, or `Statement[i]` (0-based) when it has none; a
//!   [`StatementRef`] displays as `policy#Sid`.
//! - Resource ARNs are matched segment by segment (`*`/`?` never cross a `:` in the first five
//!   segments); the partition is an ordinary segment, which is why built-ins write `arn:*:`.
//! - A variable whose key is missing (and has no default) or has several values makes that
//!   one policy value match nothing.
//! - `NotPrincipal` is accepted only with `Deny` (AWS refuses it with `Allow`); unlike AWS,
//!   Stint also accepts it in trust policies, where it denies everyone not listed.
//! - `Version` `2008-10-17` is accepted; as in AWS, `${…}` is then literal text.
//! - Trust naming the caller needs no identity policy in the same account, but (as AWS
//!   documents) the caller's permissions boundary must still allow `sts:AssumeRole`, and so
//!   must its session policy when the trust names the session's role rather than the session.
//!   Across accounts both sides must allow ("Cross-account policy evaluation logic").
//! - A document refuses duplicate keys at any depth (serde_json would keep the last one) and
//!   patterns or condition values longer than [`MAX_MATCH_LEN`].
//!
//! Module map: [`parse`] (JSON → compiled statements, all validation), [`condition`]
//! (operators), [`glob`] (wildcards and variables), [`eval`] (decisions and explanations),
//! [`builtin`] (managed policies shipped with Stint).

pub mod builtin;
mod condition;
mod eval;
mod glob;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

pub use condition::Cidr;
pub use eval::{evaluate, evaluate_assume_role};

/// The longest action, resource, principal, pattern or condition value the engine matches, in
/// characters: AWS's ARN limit. Documents with a longer pattern or condition value are refused
/// at parse; a request with a longer action or resource is implicitly denied; a longer context
/// value or variable value matches no pattern. With every input capped, the worst case of one
/// match is bounded (see `benches/policy.rs`).
pub const MAX_MATCH_LEN: usize = 2048;

/// `text` is longer than [`MAX_MATCH_LEN`] characters (bytes are checked first: cheap).
pub fn over_match_cap(text: &str) -> bool {
    text.len() > MAX_MATCH_LEN && text.chars().count() > MAX_MATCH_LEN
}

/// Where a policy document is attached; decides size limit and whether `Principal` is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// A customer or built-in managed policy (also used as a permissions boundary).
    Managed,
    UserInline,
    GroupInline,
    RoleInline,
    /// A role's trust (assume-role) policy: `Principal` required, `Resource` unused.
    Trust,
    /// A session policy passed to `AssumeRole`/`GetFederationToken`.
    Session,
}

impl PolicyKind {
    /// AWS's limit, counted in characters excluding whitespace.
    pub fn max_chars(self) -> usize {
        match self {
            PolicyKind::Managed => 6144,
            PolicyKind::UserInline => 2048,
            PolicyKind::GroupInline => 5120,
            PolicyKind::RoleInline => 10240,
            PolicyKind::Trust => 2048,
            PolicyKind::Session => 2048,
        }
    }
}

/// One problem in a policy document, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct PolicyError {
    /// e.g. `Statement[2] (Sid "AllowS3").Condition.IpAddress`.
    pub location: String,
    pub message: String,
}

impl PolicyError {
    fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            location: location.into(),
            message: message.into(),
        }
    }
}

/// A validated, compiled policy. Cheap to share (`Arc<Policy>`); evaluation takes `&self`.
#[derive(Debug, Clone)]
pub struct Policy {
    kind: PolicyKind,
    statements: Vec<parse::Statement>,
}

impl Policy {
    /// Validates and compiles `text`; returns the first problem if any.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        let (policy, mut errors) = parse::compile(text, kind);
        match policy {
            Some(p) if errors.is_empty() => Ok(p),
            _ => Err(if errors.is_empty() {
                PolicyError::new("(document)", "invalid policy")
            } else {
                errors.swap_remove(0)
            }),
        }
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Statement names (Sid or `Statement[i]`), in document order.
    pub fn statement_names(&self) -> impl Iterator<Item = &str> {
        self.statements.iter().map(|s| &*s.name)
    }
}

/// Every problem in `text`, in document order (empty when the policy is valid).
pub fn validate(text: &str, kind: PolicyKind) -> Vec<PolicyError> {
    parse::compile(text, kind).1
}

/// The request context: condition keys (case-insensitive) to one or more string values.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Sorted by lowercased key, for allocation-free binary-search lookups.
    entries: Vec<(String, Vec<String>)>,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to the single value `value`, replacing earlier values.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) {
        self.insert_multi(key, vec![value.into()]);
    }

    /// Sets `key` to `values` (a multivalued key such as `aws:TagKeys`).
    pub fn insert_multi(&mut self, key: &str, values: Vec<String>) {
        let key = key.to_lowercase();
        match self.position(&key) {
            Ok(i) => self.entries[i].1 = values,
            Err(i) => self.entries.insert(i, (key, values)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.get_lowercase(&key.to_lowercase())
    }

    /// Lookup with a key already lowercased (compiled policies store keys that way).
    pub(crate) fn get_lowercase(&self, key: &str) -> Option<&[String]> {
        self.position(key)
            .ok()
            .map(|i| self.entries[i].1.as_slice())
    }

    /// The value of a policy variable: present only when the key has exactly one value.
    pub(crate) fn variable(&self, key: &str) -> Option<&str> {
        match self.get_lowercase(key) {
            Some([one]) => Some(one),
            _ => None,
        }
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

/// One authorization question.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller's ARN (only trust policies look at it).
    pub principal: Option<&'a str>,
    pub action: &'a str,
    pub resource: &'a str,
    pub context: &'a Context,
}

/// A policy and the name it is reported under in [`StatementRef`]s.
#[derive(Debug, Clone, Copy)]
pub struct NamedPolicy<'a> {
    pub name: &'a str,
    pub policy: &'a Policy,
}

/// The policies that apply to one principal in its own account.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicySet<'a> {
    /// Inline, attached and groups' policies.
    pub identity: &'a [NamedPolicy<'a>],
    pub boundary: Option<NamedPolicy<'a>>,
    pub session: Option<&'a [NamedPolicy<'a>]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "Allow",
            Decision::ExplicitDeny => "ExplicitDeny",
            Decision::ImplicitDeny => "ImplicitDeny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A statement that decided an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatementRef {
    pub policy: String,
    /// The `Sid`, or `Statement[i]` (0-based) without one.
    pub statement: String,
}

impl fmt::Display for StatementRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.policy, self.statement)
    }
}

/// A decision with its explanation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: Decision,
    /// Deny statements for an explicit deny; the allowing statements (every policy type) for
    /// an allow; empty for an implicit deny.
    pub matched: Vec<StatementRef>,
    pub reason: String,
}
