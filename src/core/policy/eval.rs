//! Decisions and their explanations, following AWS's "Policy evaluation logic":
//! an explicit deny in any policy wins; otherwise every policy type present (identity,
//! permissions boundary, session) must allow; otherwise the request is implicitly denied.
//!
//! Matching only reads compiled statements and the context; the `Vec`s of hits allocate
//! only when a statement matches, and the reason string is built once at the end.

use std::slice;

use super::condition::ArnParts;
use super::parse::{Effect, Patterns, PrincipalEntry, Statement, is_account_id};
use super::{
    Decision, Evaluation, MAX_MATCH_LEN, NamedPolicy, PolicySet, Request, StatementRef,
    over_match_cap,
};

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

/// An implicit deny for a request the engine will not match (edges refuse it earlier; this is
/// the fail-safe that keeps one evaluation's work bounded). The reason never echoes the input.
fn over_long(req: &Request) -> Option<Evaluation> {
    let field = if over_match_cap(req.action) {
        "action"
    } else if over_match_cap(req.resource) {
        "resource"
    } else if req.principal.is_some_and(over_match_cap) {
        "principal"
    } else {
        return None;
    };
    Some(Evaluation {
        decision: Decision::ImplicitDeny,
        matched: Vec::new(),
        reason: format!("the request's {field} is longer than {MAX_MATCH_LEN} characters"),
    })
}

/// Evaluates one request against a principal's policies in its own account.
pub fn evaluate(req: &Request, set: &PolicySet) -> Evaluation {
    if let Some(denied) = over_long(req) {
        return denied;
    }
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
    caller_account: Option<&str>,
) -> Option<Trusted> {
    match entry {
        PrincipalEntry::Anyone => Some(Trusted::Directly),
        PrincipalEntry::Account(a) => (Some(&**a) == caller_account).then_some(Trusted::ViaAccount),
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

/// The account of an IAM identity (user, role, assumed-role session, root, federated user):
/// the account field of its ARN. `None` for a service principal (`ec2.amazonaws.com`), a web
/// identity or SAML provider ARN and anything else that has no identity policies of its own.
fn identity_account(principal: &str) -> Option<&str> {
    let mut parts = principal.splitn(6, ':');
    let (Some("arn"), Some(_), Some(service), Some(_), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let provider = resource.starts_with("oidc-provider/") || resource.starts_with("saml-provider/");
    (matches!(service, "iam" | "sts") && !provider && is_account_id(account)).then_some(account)
}

/// The account field of an ARN (the role's, for a trust decision).
fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| is_account_id(a))
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
    caller_account: Option<&str>,
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
/// the caller (an IAM identity's ARN, a service name such as `ec2.amazonaws.com`, or a web
/// identity / SAML provider ARN).
///
/// Same account (the caller's account, from its ARN, is the role's, from the resource ARN): a
/// trust statement naming the caller's ARN (or `*`, or for an assumed-role session its role's
/// ARN, or a service or provider by name) allows without an identity policy; one naming the
/// caller's account also needs the caller's own policies (identity ∩ boundary ∩ session) to
/// allow the action on the role. As AWS documents ("Update a role trust policy", "Session
/// policies"), a caller's permissions boundary must still allow the action when the trust
/// policy names the caller, and a caller's session policy must when it names the session's
/// role (not the session).
///
/// Another account (IAM User Guide, "Cross-account policy evaluation logic"): both sides must
/// allow, the trust policy and the caller's own policies, however the trust names the caller.
///
/// An explicit deny in the trust policy or the caller's policies always wins.
pub fn evaluate_assume_role(req: &Request, trust: NamedPolicy, caller: &PolicySet) -> Evaluation {
    if let Some(denied) = over_long(req) {
        return denied;
    }
    let caller_account = req.principal.and_then(identity_account);
    let role_account = arn_account(req.resource);
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
    if let (Some(from), Some(to)) = (caller_account, role_account)
        && from != to
    {
        // AWS, "Cross-account policy evaluation logic": the trusting account's resource-based
        // policy and the trusted principal's identity-based policies must both allow.
        let trusted: Vec<Hit> = [direct, via_role, via_account].concat();
        if trusted.is_empty() {
            return Evaluation {
                decision: Decision::ImplicitDeny,
                matched: Vec::new(),
                reason: format!(
                    "trust policy {} does not allow {caller_name} to {} {}",
                    trust.name, req.action, req.resource
                ),
            };
        }
        if own.decision != Decision::Allow {
            return Evaluation {
                decision: Decision::ImplicitDeny,
                matched: Vec::new(),
                reason: format!(
                    "trust policy {} allows {caller_name} of account {from}, but a cross-account request also needs the caller's own policies to allow it: {}",
                    names(&trusted),
                    own.reason
                ),
            };
        }
        let mut matched = refs(&trusted);
        matched.extend(own.matched);
        return Evaluation {
            decision: Decision::Allow,
            matched,
            reason: format!(
                "cross-account: trust policy {} allows {caller_name} of account {from}; {}",
                names(&trusted),
                own.reason
            ),
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
                    "trust policy {} trusts account {}; {}",
                    names(&via_account),
                    caller_account.unwrap_or_default(),
                    own.reason
                ),
            };
        }
        return Evaluation {
            decision: Decision::ImplicitDeny,
            matched: Vec::new(),
            reason: format!(
                "trust policy {} trusts account {}, but the caller's policies do not allow it: {}",
                names(&via_account),
                caller_account.unwrap_or_default(),
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
