//! Decisions and their explanations, following AWS's "Policy evaluation logic":
//! an explicit deny in any policy wins; otherwise every policy type present (identity,
//! permissions boundary, session) must allow; otherwise the request is implicitly denied.
//!
//! Matching only reads compiled statements and the context; the `Vec`s of hits allocate
//! only when a statement matches, and the reason string is built once at the end.

use std::slice;

use super::condition::ArnParts;
use super::parse::{Effect, Patterns, PrincipalEntry, Statement};
use super::{Decision, Evaluation, NamedPolicy, PolicySet, Request, StatementRef};

#[derive(Clone, Copy)]
struct Hit<'a> {
    policy: &'a str,
    statement: &'a str,
}

impl Hit<'_> {
    fn to_ref(self) -> StatementRef {
        StatementRef {
            policy: self.policy.to_string(),
            statement: self.statement.to_string(),
        }
    }
}

fn refs(hits: &[Hit]) -> Vec<StatementRef> {
    hits.iter().map(|h| h.to_ref()).collect()
}

fn names(hits: &[Hit]) -> String {
    let mut out = String::with_capacity(hits.len() * 24);
    for (i, h) in hits.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(h.policy);
        out.push('#');
        out.push_str(h.statement);
    }
    out
}

fn patterns_match<T>(p: &Patterns<T>, mut one: impl FnMut(&T) -> bool) -> bool {
    p.items.iter().any(&mut one) != p.negated
}

/// A request with its action and resource split once, before scanning statements.
struct Prepared<'r> {
    action: Option<(&'r str, &'r str)>,
    resource: ArnParts<'r>,
    req: &'r Request<'r>,
}

impl<'r> Prepared<'r> {
    fn new(req: &'r Request<'r>) -> Self {
        Prepared {
            action: req.action.split_once(':'),
            resource: ArnParts::split(req.resource),
            req,
        }
    }
}

/// Action, resource and conditions (not the principal) match the request.
fn applies(s: &Statement, p: &Prepared) -> bool {
    patterns_match(&s.actions, |a| a.matches(p.action))
        && s.resources.as_ref().is_none_or(|r| {
            patterns_match(r, |pattern| {
                pattern.matches_split(&p.resource, p.req.context)
            })
        })
        && s.conditions.iter().all(|c| c.holds(p.req.context))
}

/// Scans `policies`: allow hits go to `allows`, deny hits to `denies`. Returns whether any
/// statement allowed.
fn scan<'a>(
    policies: &[NamedPolicy<'a>],
    req: &Prepared,
    allows: &mut Vec<Hit<'a>>,
    denies: &mut Vec<Hit<'a>>,
) -> bool {
    let before = allows.len();
    for np in policies {
        for s in &np.policy.statements {
            if applies(s, req) {
                let hit = Hit {
                    policy: np.name,
                    statement: &s.name,
                };
                match s.effect {
                    Effect::Allow => allows.push(hit),
                    Effect::Deny => denies.push(hit),
                }
            }
        }
    }
    allows.len() > before
}

/// Evaluates one request against a principal's policies in its own account.
pub fn evaluate(req: &Request, set: &PolicySet) -> Evaluation {
    let prepared = Prepared::new(req);
    let mut allows = Vec::with_capacity(8);
    let mut denies = Vec::new();
    let identity = scan(set.identity, &prepared, &mut allows, &mut denies);
    let identity_end = allows.len();
    let boundary = set.boundary.as_ref().map(|b| {
        let allowed = scan(slice::from_ref(b), &prepared, &mut allows, &mut denies);
        (b.name, allowed)
    });
    let session = set
        .session
        .map(|s| scan(s, &prepared, &mut allows, &mut denies));
    let what = || format!("{} on {}", req.action, req.resource);
    if !denies.is_empty() {
        return Evaluation {
            decision: Decision::ExplicitDeny,
            reason: format!("{} explicitly denied by {}", what(), names(&denies)),
            matched: refs(&denies),
        };
    }
    let implicit = |reason: String| Evaluation {
        decision: Decision::ImplicitDeny,
        matched: Vec::new(),
        reason,
    };
    if !identity {
        return implicit(format!("no identity-based policy allows {}", what()));
    }
    if let Some((name, false)) = boundary {
        return implicit(format!(
            "allowed by {} but the permissions boundary {name} does not allow {}",
            names(&allows[..identity_end]),
            what()
        ));
    }
    if session == Some(false) {
        return implicit(format!(
            "allowed by {} but no session policy allows {}",
            names(&allows[..identity_end]),
            what()
        ));
    }
    // The matched statements already name who allowed; keep the allow reason cheap.
    let reason = match (boundary.is_some(), session.is_some()) {
        (false, false) => "allowed by an identity-based policy",
        (true, false) => "allowed by an identity-based policy and the permissions boundary",
        (false, true) => "allowed by an identity-based policy and the session policy",
        (true, true) => {
            "allowed by an identity-based policy, the permissions boundary and the session policy"
        }
    };
    Evaluation {
        decision: Decision::Allow,
        matched: refs(&allows),
        reason: reason.to_string(),
    }
}

/// How a trust statement's principal matched the caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trusted {
    /// By the caller's own ARN (or `*`): no identity policy needed.
    Directly,
    /// By the role ARN of the caller's assumed-role session: as `Directly`, but the
    /// caller's session policy, if any, must also allow.
    ViaRole,
    /// By account: the caller's identity policies must also allow.
    ViaAccount,
}

fn entry_matches(
    entry: &PrincipalEntry,
    caller: Option<&str>,
    caller_account: &str,
) -> Option<Trusted> {
    match entry {
        PrincipalEntry::Anyone => Some(Trusted::Directly),
        PrincipalEntry::Account(a) => {
            (caller.is_some() && **a == *caller_account).then_some(Trusted::ViaAccount)
        }
        PrincipalEntry::Arn(arn) => {
            let caller = caller?;
            if **arn == *caller {
                Some(Trusted::Directly)
            } else {
                is_session_of_role(caller, arn).then_some(Trusted::ViaRole)
            }
        }
        PrincipalEntry::Named(name) => (caller? == &**name).then_some(Trusted::Directly),
    }
}

/// `arn:P:sts::A:assumed-role/R/S` is a session of `arn:P:iam::A:role/[path/]R`.
fn is_session_of_role(caller: &str, role_arn: &str) -> bool {
    let mut c = caller.splitn(6, ':');
    let mut r = role_arn.splitn(6, ':');
    let (Some("arn"), Some(cp), Some("sts"), Some(_), Some(ca), Some(cres)) =
        (c.next(), c.next(), c.next(), c.next(), c.next(), c.next())
    else {
        return false;
    };
    let (Some("arn"), Some(rp), Some("iam"), Some(_), Some(ra), Some(rres)) =
        (r.next(), r.next(), r.next(), r.next(), r.next(), r.next())
    else {
        return false;
    };
    let Some(role_path) = rres.strip_prefix("role/") else {
        return false;
    };
    let role_name = role_path.rsplit('/').next().unwrap_or(role_path);
    let Some((session_role, session)) = cres
        .strip_prefix("assumed-role/")
        .and_then(|s| s.split_once('/'))
    else {
        return false;
    };
    cp == rp && ca == ra && session_role == role_name && !session.is_empty()
}

fn principal_matches(
    p: &Patterns<PrincipalEntry>,
    caller: Option<&str>,
    caller_account: &str,
) -> Option<Trusted> {
    let best = p
        .items
        .iter()
        .filter_map(|e| entry_matches(e, caller, caller_account))
        .min_by_key(|t| *t as u8);
    match (p.negated, best) {
        (false, found) => found,
        (true, None) => Some(Trusted::Directly),
        (true, Some(_)) => None,
    }
}

/// Decides `sts:AssumeRole` (and friends): `req.resource` is the role ARN, `req.principal`
/// the caller. A trust statement naming the caller's ARN (or `*`, or for an assumed-role
/// session its role's ARN) allows without an identity policy; one naming the caller's
/// account also needs the caller's own policies (identity ∩ boundary ∩ session) to allow the
/// action on the role. An explicit deny in the trust policy or the caller's policies wins.
///
/// As AWS documents ("Update a role trust policy", "Session policies"), a caller's
/// permissions boundary must still allow the action when the trust policy names the caller,
/// and a caller's session policy must when it names the session's role (not the session).
pub fn evaluate_assume_role(
    req: &Request,
    trust: NamedPolicy,
    caller: &PolicySet,
    caller_account: &str,
) -> Evaluation {
    let mut denies = Vec::new();
    let mut direct = Vec::new();
    let mut via_role = Vec::new();
    let mut via_account = Vec::new();
    let prepared = Prepared::new(req);
    for s in &trust.policy.statements {
        if !applies(s, &prepared) {
            continue;
        }
        let how = match &s.principals {
            Some(p) => principal_matches(p, req.principal, caller_account),
            None => None,
        };
        let Some(how) = how else { continue };
        let hit = Hit {
            policy: trust.name,
            statement: &s.name,
        };
        match (s.effect, how) {
            (Effect::Deny, _) => denies.push(hit),
            (Effect::Allow, Trusted::Directly) => direct.push(hit),
            (Effect::Allow, Trusted::ViaRole) => via_role.push(hit),
            (Effect::Allow, Trusted::ViaAccount) => via_account.push(hit),
        }
    }
    let own = evaluate(req, caller);
    let caller_name = req.principal.unwrap_or("(anonymous)");
    if !denies.is_empty() || own.decision == Decision::ExplicitDeny {
        let mut matched = refs(&denies);
        let mut reason = format!("{} on {} explicitly denied", req.action, req.resource);
        if !denies.is_empty() {
            reason = format!("{reason} by trust policy statement(s) {}", names(&denies));
        }
        if own.decision == Decision::ExplicitDeny {
            reason = format!("{reason}; caller's policies: {}", own.reason);
            matched.extend(own.matched);
        }
        return Evaluation {
            decision: Decision::ExplicitDeny,
            matched,
            reason,
        };
    }
    if !direct.is_empty() || !via_role.is_empty() {
        // AWS: a permissions boundary on the caller must allow the action even when the
        // trust policy names the caller; a session policy must when the trust policy names
        // the session's role rather than the session.
        let by_role_only = direct.is_empty();
        let mut matched = refs(if by_role_only { &via_role } else { &direct });
        let limits = [
            (
                "permissions boundary",
                caller.boundary.as_ref().map(slice::from_ref),
            ),
            ("session policy", caller.session.filter(|_| by_role_only)),
        ];
        for (what, policies) in limits {
            let Some(policies) = policies else { continue };
            let alone = evaluate(
                req,
                &PolicySet {
                    identity: policies,
                    ..PolicySet::default()
                },
            );
            if alone.decision != Decision::Allow {
                return Evaluation {
                    decision: Decision::ImplicitDeny,
                    matched: Vec::new(),
                    reason: format!(
                        "trust policy names {caller_name}, but the caller's {what} does not allow {} on {}",
                        req.action, req.resource
                    ),
                };
            }
            matched.extend(alone.matched);
        }
        return Evaluation {
            decision: Decision::Allow,
            matched,
            reason: format!("trust policy names {caller_name}"),
        };
    }
    if !via_account.is_empty() {
        if own.decision == Decision::Allow {
            let mut matched = refs(&via_account);
            matched.extend(own.matched);
            return Evaluation {
                decision: Decision::Allow,
                matched,
                reason: format!(
                    "trust policy {} trusts account {caller_account}; {}",
                    names(&via_account),
                    own.reason
                ),
            };
        }
        return Evaluation {
            decision: Decision::ImplicitDeny,
            matched: Vec::new(),
            reason: format!(
                "trust policy {} trusts account {caller_account}, but the caller's policies do not allow it: {}",
                names(&via_account),
                own.reason
            ),
        };
    }
    Evaluation {
        decision: Decision::ImplicitDeny,
        matched: Vec::new(),
        reason: format!(
            "trust policy {} does not allow {caller_name} to {} {}",
            trust.name, req.action, req.resource
        ),
    }
}
