//! The 20-statement policy set of `benches/policy.rs`: three identity policies, a
//! permissions boundary and a session policy. Shared (`#[path]`) with `cedar-compare/`,
//! which writes the same set in Cedar, so both measure and test the very same documents.

use stint::core::policy::{
    Context, Decision, NamedPolicy, Policy, PolicyKind, PolicySet, Request, evaluate,
};

/// The documents, in the order [`StintPolicies::decide`] layers them.
const DOCS: [(&str, PolicyKind); 5] = [
    (include_str!("developer.json"), PolicyKind::Managed),
    (include_str!("mfa_guard.json"), PolicyKind::Managed),
    (include_str!("logs.json"), PolicyKind::Managed),
    (include_str!("boundary.json"), PolicyKind::Managed),
    (include_str!("session.json"), PolicyKind::Session),
];

/// The five documents, parsed.
pub struct StintPolicies {
    policies: Vec<Policy>,
}

impl StintPolicies {
    pub fn parse() -> Self {
        let policies = DOCS
            .iter()
            .map(|(text, kind)| Policy::parse(text, *kind).expect("a benchmark policy"))
            .collect();
        Self { policies }
    }

    pub fn statements(&self) -> usize {
        self.policies
            .iter()
            .map(|p| p.statement_names().count())
            .sum()
    }

    /// Evaluates the three identity policies under the boundary and the session policy.
    pub fn decide(&self, action: &str, resource: &str, context: &Context) -> Decision {
        let p = &self.policies;
        let identity = [
            NamedPolicy {
                name: "developer",
                policy: &p[0],
            },
            NamedPolicy {
                name: "mfa-guard",
                policy: &p[1],
            },
            NamedPolicy {
                name: "logs",
                policy: &p[2],
            },
        ];
        let session = [NamedPolicy {
            name: "session",
            policy: &p[4],
        }];
        let set = PolicySet {
            identity: &identity,
            boundary: Some(NamedPolicy {
                name: "boundary",
                policy: &p[3],
            }),
            session: Some(&session),
        };
        let request = Request {
            principal: None,
            action,
            resource,
            context,
        };
        evaluate(&request, &set).decision
    }
}
