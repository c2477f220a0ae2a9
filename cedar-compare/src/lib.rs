//! Stint's IAM policy evaluation beside cedar-policy, on one policy set written both ways.
//!
//! Issue 12 asks that evaluating the 20-statement set of `benches/policy.rs` stays at least
//! 10× faster than cedar-policy on an equivalent set. A speed ratio means nothing unless the
//! two sets decide alike, so this crate holds the Cedar translation and a table of requests
//! that both engines must decide the same way (the tests below); the benchmark
//! (`benches/cedar.rs`) then times both on the issue's request.
//!
//! Its own workspace (like `fuzz/`), so neither the daemon nor the root's tests ever build
//! cedar-policy or its serde_json `preserve_order` feature (which this workspace therefore
//! uses to check that the audit log's canonical bytes do not depend on it:
//! `tests/preserve_order.rs`).
//! `cargo test --manifest-path cedar-compare/Cargo.toml` runs the table (CI does),
//! `cargo bench --manifest-path cedar-compare/Cargo.toml` the comparison.
//!
//! The translation, statement by statement (IAM on the left):
//! - an identity policy's Allow is a `permit`; every Deny, in any layer, is a `forbid`;
//! - the permissions boundary and the session policy each become one `forbid … unless`
//!   their Allow statements match, which is IAM's intersection of the three layers;
//! - `Action`/`Resource` globs are `like` on `context.action`/`context.resource` (Cedar has
//!   no wildcards in entity ids; both engines' `*` spans any characters here);
//! - `${aws:username}` is written out (`alice`): Cedar has neither policy variables inside
//!   patterns nor string concatenation, so a Cedar deployment keeps one copy per user;
//! - a condition on a key the request may lack guards with `has`, which is IAM's "a missing
//!   key does not match" (and `…IfExists`, or a negated operator, matches on it);
//! - `IpAddress` is `isInRange`, `Date…` is the `datetime` extension, `Bool` is a boolean.
//!
//! Cedar matches actions case-sensitively and IAM does not, so the table spells every action
//! as AWS documents it.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context as CedarContext, Entities, EntityUid, PolicySet as CedarPolicySet,
    Request as CedarRequest, RestrictedExpression,
};
use stint::core::policy::Context;

#[path = "../../benches/policies/set.rs"]
mod set;
pub use set::StintPolicies;

/// The same 20 statements in Cedar, for principal `alice`.
pub const CEDAR: &str = r#"
// developer
permit(principal, action, resource) when {
  (context.action like "s3:Get*" || context.action like "s3:List*") &&
  (context.resource like "arn:aws:s3:::app-*" || context.resource like "arn:aws:s3:::app-*/*")
};
permit(principal, action, resource) when {
  (context.action == "s3:PutObject" || context.action == "s3:DeleteObject") &&
  context.resource like "arn:aws:s3:::app-data/home/alice/*"
};
forbid(principal, action, resource) when {
  !(context has source_ip) ||
  !(context.source_ip.isInRange(ip("10.0.0.0/8")) ||
    context.source_ip.isInRange(ip("192.0.2.0/24")) ||
    context.source_ip.isInRange(ip("2001:db8::/32")))
};
permit(principal, action, resource) when { context.action like "ec2:Describe*" };
permit(principal, action, resource) when {
  (context.action == "ec2:StartInstances" || context.action == "ec2:StopInstances") &&
  context.resource like "arn:aws:ec2:*:123456789012:instance/*" &&
  context has resource_tag_team &&
  (context.resource_tag_team like "dev-*" || context.resource_tag_team == "platform")
};
forbid(principal, action, resource) when {
  context.action == "s3:DeleteBucket" && context.resource like "arn:aws:s3:::prod-*"
};
// mfa-guard
permit(principal, action, resource) when {
  context.action == "sts:AssumeRole" &&
  context.resource like "arn:aws:iam::123456789012:role/deploy-*" &&
  context has mfa && context.mfa == true
};
forbid(principal, action, resource) when {
  !(context.action == "iam:ChangePassword" || context.action == "sts:GetSessionToken") &&
  (!(context has mfa) || context.mfa == false)
};
permit(principal, action, resource) when {
  (context.action == "iam:GetUser" || context.action == "iam:ChangePassword") &&
  context.resource like "arn:aws:iam::*:user/alice"
};
forbid(principal, action, resource) when {
  context has now && context.now > datetime("2030-12-31T23:59:59Z")
};
// logs
permit(principal, action, resource) when {
  (context.action == "logs:CreateLogStream" || context.action == "logs:PutLogEvents") &&
  context.resource like "arn:aws:logs:*:123456789012:log-group:/app/*"
};
permit(principal, action, resource) when {
  context.action == "cloudwatch:PutMetricData" &&
  context has namespace && context.namespace == "App"
};
permit(principal, action, resource) when {
  context.action == "secretsmanager:GetSecretValue" &&
  context.resource like "arn:aws:secretsmanager:*:123456789012:secret:app/*" &&
  context has now && context.now < datetime("2031-01-01T00:00:00Z")
};
// boundary: only what its Allow statements grant, minus its Deny
forbid(principal, action, resource) unless {
  context.action like "s3:*" || context.action like "ec2:*" || context.action like "logs:*" ||
  context.action like "cloudwatch:*" || context.action like "sts:*" ||
  context.action like "secretsmanager:*" ||
  (context.action like "iam:*" && context.resource like "arn:aws:iam::*:user/alice")
};
forbid(principal, action, resource) when {
  context.action like "organizations:*" || context.action like "account:*"
};
// session: only what its Allow statements grant, minus its Deny
forbid(principal, action, resource) unless {
  (context.action like "s3:*" &&
   (context.resource like "arn:aws:s3:::app-*" || context.resource like "arn:aws:s3:::app-*/*")) ||
  !(context.action like "s3:*")
};
forbid(principal, action, resource) when {
  context has secure_transport && context.secure_transport == false
};
"#;

/// One request, with the context keys both engines see (an absent key is `None`).
#[derive(Clone, Debug)]
pub struct Case {
    pub action: &'static str,
    pub resource: &'static str,
    pub source_ip: Option<&'static str>,
    pub mfa: Option<bool>,
    pub secure_transport: Option<bool>,
    pub now: &'static str,
    pub resource_tag_team: Option<&'static str>,
    pub namespace: Option<&'static str>,
}

impl Case {
    /// Issue 12's request: alice puts an object in her home prefix, from the office, with MFA.
    pub fn issue12() -> Self {
        Self {
            action: "s3:PutObject",
            resource: "arn:aws:s3:::app-data/home/alice/report.csv",
            source_ip: Some("10.20.30.40"),
            mfa: Some(true),
            secure_transport: Some(true),
            now: "2026-11-29T10:00:00Z",
            resource_tag_team: Some("dev-payments"),
            namespace: None,
        }
    }

    pub fn stint_context(&self) -> Context {
        let mut c = Context::new();
        c.insert("aws:username", "alice");
        c.insert("aws:PrincipalArn", "arn:aws:iam::123456789012:user/alice");
        c.insert("aws:CurrentTime", self.now);
        let flag = |b: bool| if b { "true" } else { "false" };
        if let Some(ip) = self.source_ip {
            c.insert("aws:SourceIp", ip);
        }
        if let Some(mfa) = self.mfa {
            c.insert("aws:MultiFactorAuthPresent", flag(mfa));
        }
        if let Some(tls) = self.secure_transport {
            c.insert("aws:SecureTransport", flag(tls));
        }
        if let Some(team) = self.resource_tag_team {
            c.insert("aws:ResourceTag/team", team);
        }
        if let Some(namespace) = self.namespace {
            c.insert("cloudwatch:namespace", namespace);
        }
        c
    }

    pub fn cedar_request(&self) -> CedarRequest {
        let mut pairs = vec![
            (
                "action",
                RestrictedExpression::new_string(self.action.into()),
            ),
            (
                "resource",
                RestrictedExpression::new_string(self.resource.into()),
            ),
            ("username", RestrictedExpression::new_string("alice".into())),
            (
                "now",
                RestrictedExpression::from_str(&format!("datetime(\"{}\")", self.now))
                    .expect("a datetime literal"),
            ),
        ];
        if let Some(ip) = self.source_ip {
            pairs.push(("source_ip", RestrictedExpression::new_ip(ip)));
        }
        if let Some(mfa) = self.mfa {
            pairs.push(("mfa", RestrictedExpression::new_bool(mfa)));
        }
        if let Some(tls) = self.secure_transport {
            pairs.push(("secure_transport", RestrictedExpression::new_bool(tls)));
        }
        if let Some(team) = self.resource_tag_team {
            pairs.push((
                "resource_tag_team",
                RestrictedExpression::new_string(team.into()),
            ));
        }
        if let Some(namespace) = self.namespace {
            pairs.push((
                "namespace",
                RestrictedExpression::new_string(namespace.into()),
            ));
        }
        let context = CedarContext::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_string(), v)))
            .expect("a valid context");
        let uid = |s: &str| EntityUid::from_str(s).expect("an entity uid");
        CedarRequest::new(
            uid(r#"User::"alice""#),
            uid(r#"Action::"call""#),
            uid(r#"Resource::"any""#),
            context,
            None,
        )
        .expect("a request without a schema")
    }
}

/// The Cedar set, parsed, with its authorizer.
pub struct CedarPolicies {
    policies: CedarPolicySet,
    authorizer: Authorizer,
    entities: Entities,
}

impl CedarPolicies {
    pub fn parse() -> Self {
        Self {
            policies: CEDAR.parse().expect("the Cedar translation parses"),
            authorizer: Authorizer::new(),
            entities: Entities::empty(),
        }
    }

    pub fn policies(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn allows(&self, request: &CedarRequest) -> bool {
        let response = self
            .authorizer
            .is_authorized(request, &self.policies, &self.entities);
        response.decision() == cedar_policy::Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stint::core::policy::Decision;

    /// `(what it checks, the request, allowed?)`: every statement decides at least one row.
    fn table() -> Vec<(&'static str, Case, bool)> {
        let base = Case::issue12;
        let with = |f: fn(&mut Case)| {
            let mut case = base();
            f(&mut case);
            case
        };
        vec![
            ("own home, office, MFA", base(), true),
            (
                "someone else's home",
                with(|c| c.resource = "arn:aws:s3:::app-data/home/bob/report.csv"),
                false,
            ),
            (
                "read an app bucket",
                with(|c| {
                    c.action = "s3:GetObject";
                    c.resource = "arn:aws:s3:::app-logs/2026/11/29.log";
                }),
                true,
            ),
            (
                "list an app bucket",
                with(|c| {
                    c.action = "s3:ListBucket";
                    c.resource = "arn:aws:s3:::app-logs";
                }),
                true,
            ),
            (
                "read outside app buckets",
                with(|c| {
                    c.action = "s3:GetObject";
                    c.resource = "arn:aws:s3:::finance/q4.xlsx";
                }),
                false,
            ),
            (
                "delete a prod bucket",
                with(|c| {
                    c.action = "s3:DeleteBucket";
                    c.resource = "arn:aws:s3:::prod-data";
                }),
                false,
            ),
            (
                "from outside the office",
                with(|c| c.source_ip = Some("203.0.113.9")),
                false,
            ),
            (
                "from the office over IPv6",
                with(|c| c.source_ip = Some("2001:db8::42")),
                true,
            ),
            // NotIpAddress matches a request without the key, as in AWS.
            (
                "with no source address",
                with(|c| c.source_ip = None),
                false,
            ),
            ("without MFA", with(|c| c.mfa = Some(false)), false),
            ("MFA unknown", with(|c| c.mfa = None), false),
            (
                "change own password without MFA",
                with(|c| {
                    c.mfa = Some(false);
                    c.action = "iam:ChangePassword";
                    c.resource = "arn:aws:iam::123456789012:user/alice";
                }),
                true,
            ),
            (
                "read another user",
                with(|c| {
                    c.action = "iam:GetUser";
                    c.resource = "arn:aws:iam::123456789012:user/bob";
                }),
                false,
            ),
            (
                "describe instances",
                with(|c| {
                    c.action = "ec2:DescribeInstances";
                    c.resource = "*";
                }),
                true,
            ),
            (
                "start a dev-tagged instance",
                with(|c| {
                    c.action = "ec2:StartInstances";
                    c.resource = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc";
                }),
                true,
            ),
            (
                "start a platform instance",
                with(|c| {
                    c.action = "ec2:StopInstances";
                    c.resource = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc";
                    c.resource_tag_team = Some("platform");
                }),
                true,
            ),
            (
                "start an ops instance",
                with(|c| {
                    c.action = "ec2:StartInstances";
                    c.resource = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc";
                    c.resource_tag_team = Some("ops");
                }),
                false,
            ),
            (
                "start an untagged instance",
                with(|c| {
                    c.action = "ec2:StartInstances";
                    c.resource = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc";
                    c.resource_tag_team = None;
                }),
                false,
            ),
            (
                "assume a deploy role",
                with(|c| {
                    c.action = "sts:AssumeRole";
                    c.resource = "arn:aws:iam::123456789012:role/deploy-prod";
                }),
                true,
            ),
            (
                "assume another role",
                with(|c| {
                    c.action = "sts:AssumeRole";
                    c.resource = "arn:aws:iam::123456789012:role/admin";
                }),
                false,
            ),
            (
                "write app logs",
                with(|c| {
                    c.action = "logs:PutLogEvents";
                    c.resource = "arn:aws:logs:eu-west-1:123456789012:log-group:/app/api";
                }),
                true,
            ),
            (
                "metrics in the App namespace",
                with(|c| {
                    c.action = "cloudwatch:PutMetricData";
                    c.resource = "*";
                    c.namespace = Some("App");
                }),
                true,
            ),
            (
                "metrics in another namespace",
                with(|c| {
                    c.action = "cloudwatch:PutMetricData";
                    c.resource = "*";
                    c.namespace = Some("Billing");
                }),
                false,
            ),
            (
                "metrics with no namespace",
                with(|c| {
                    c.action = "cloudwatch:PutMetricData";
                    c.resource = "*";
                }),
                false,
            ),
            (
                "an app secret",
                with(|c| {
                    c.action = "secretsmanager:GetSecretValue";
                    c.resource = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db";
                }),
                true,
            ),
            (
                "an app secret after the contract",
                with(|c| {
                    c.action = "secretsmanager:GetSecretValue";
                    c.resource = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db";
                    c.now = "2031-06-01T00:00:00Z";
                }),
                false,
            ),
            (
                "an organizations call",
                with(|c| {
                    c.action = "organizations:ListAccounts";
                    c.resource = "*";
                }),
                false,
            ),
            (
                "an action the boundary leaves out",
                with(|c| {
                    c.action = "dynamodb:GetItem";
                    c.resource = "arn:aws:dynamodb:eu-west-1:123456789012:table/app";
                }),
                false,
            ),
            (
                "without TLS",
                with(|c| c.secure_transport = Some(false)),
                false,
            ),
        ]
    }

    #[test]
    fn both_sets_have_twenty_statements() {
        assert_eq!(StintPolicies::parse().statements(), 20);
        // 13 permits and forbids for the identity statements, 2 + 2 for the two layers.
        assert_eq!(CedarPolicies::parse().policies(), 17);
    }

    #[test]
    fn stint_and_cedar_decide_every_case_alike() {
        let stint = StintPolicies::parse();
        let cedar = CedarPolicies::parse();
        let cases = table();
        assert!(cases.iter().any(|(_, _, allowed)| *allowed));
        assert!(cases.iter().any(|(_, _, allowed)| !*allowed));
        for (what, case, allowed) in cases {
            let by_stint = stint.decide(case.action, case.resource, &case.stint_context());
            assert_eq!(
                by_stint == Decision::Allow,
                allowed,
                "stint, {what}: {by_stint:?}"
            );
            assert_eq!(
                cedar.allows(&case.cedar_request()),
                allowed,
                "cedar, {what}"
            );
        }
    }
}
