//! Decision tables from the AWS IAM User Guide; each row names the section it comes from.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use Decision::{Allow, ExplicitDeny, ImplicitDeny};

fn ctx(pairs: &[(&str, &str)]) -> Context {
    let mut c = Context::new();
    for (k, v) in pairs {
        if let Some(list) = v.strip_prefix('[') {
            let values = list
                .trim_end_matches(']')
                .split(',')
                .filter(|s| !s.is_empty());
            c.insert_multi(k, values.map(str::to_string).collect());
        } else {
            c.insert(k, *v);
        }
    }
    c
}

fn parse(doc: &serde_json::Value, kind: PolicyKind) -> Policy {
    Policy::parse(&doc.to_string(), kind).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn stmt(effect: &str, action: &str, resource: &str) -> serde_json::Value {
    json!({"Effect": effect, "Action": action, "Resource": resource})
}

fn doc(statements: serde_json::Value) -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn identity_decision(
    policy: &serde_json::Value,
    action: &str,
    resource: &str,
    c: &Context,
) -> Evaluation {
    let p = parse(policy, PolicyKind::Managed);
    let identity = [NamedPolicy {
        name: "p",
        policy: &p,
    }];
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    let req = Request {
        principal: None,
        action,
        resource,
        context: c,
    };
    evaluate(&req, &set)
}

#[test]
fn single_policy_examples() {
    let bucket_home = doc(json!([{
        "Sid": "AllowHome",
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject"],
        "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/*"
    }]));
    let ip_limited = doc(json!([{
        "Effect": "Allow", "Action": "ec2:*", "Resource": "*",
        "Condition": {"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "203.0.113.0/24"]}}
    }]));
    let date_window = doc(json!([{
        "Effect": "Allow", "Action": "ec2:*", "Resource": "*",
        "Condition": {
            "DateGreaterThan": {"aws:CurrentTime": "2020-04-01T00:00:00Z"},
            "DateLessThan": {"aws:CurrentTime": "2020-06-30T23:59:59Z"}
        }
    }]));
    let tag_keys = doc(json!([{
        "Effect": "Allow", "Action": "iam:TagUser", "Resource": "*",
        "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["Department", "Project"]}}
    }]));
    let team_default = doc(json!([{
        "Effect": "Allow", "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::bucket/${aws:PrincipalTag/team, 'company-wide'}/*"
    }]));
    let not_resource = doc(json!([{
        "Effect": "Allow", "Action": "s3:*",
        "NotResource": ["arn:aws:s3:::HRBucket/Payroll", "arn:aws:s3:::HRBucket/Payroll/*"]
    }]));
    let not_action = doc(json!([
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}
    ]));
    let prefix_var = doc(json!([{
        "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::amzn-s3-demo-bucket",
        "Condition": {"StringLike": {"s3:prefix": ["", "home/", "home/${aws:username}/*"]}}
    }]));
    let escapes = doc(json!([{
        "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/${*}literal${?}"
    }]));
    let mfa_age = doc(json!([{
        "Effect": "Allow", "Action": "ec2:StopInstances", "Resource": "*",
        "Condition": {"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}
    }]));
    let user_any = doc(json!([stmt(
        "Allow",
        "iam:GetUser",
        "arn:aws:iam::123456789012:use?/carol"
    )]));
    let anyname = ctx(&[("aws:username", "alice")]);
    let none = Context::new();
    #[rustfmt::skip]
    let rows: &[(&str, &serde_json::Value, &str, &str, Context, Decision)] = &[
        ("Elements: Resource (variable in path)", &bucket_home, "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/alice/notes.txt", anyname.clone(), Allow),
        ("Elements: Resource (variable in path)", &bucket_home, "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home/bob/notes.txt", anyname.clone(), ImplicitDeny),
        ("Variables: missing key matches nothing", &bucket_home, "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/home//x", none.clone(), ImplicitDeny),
        ("Elements: Action (case-insensitive)", &bucket_home, "S3:getobject", "arn:aws:s3:::amzn-s3-demo-bucket/home/alice/x", anyname.clone(), Allow),
        ("Elements: Resource (case-sensitive)", &bucket_home, "s3:GetObject", "arn:aws:s3:::AMZN-S3-DEMO-BUCKET/home/alice/x", anyname.clone(), ImplicitDeny),
        ("Condition operators: IP address", &ip_limited, "ec2:RunInstances", "*", ctx(&[("aws:SourceIp", "203.0.113.17")]), Allow),
        ("Condition operators: IP address", &ip_limited, "ec2:RunInstances", "*", ctx(&[("aws:SourceIp", "198.51.100.1")]), ImplicitDeny),
        ("Condition operators: IP address (missing key)", &ip_limited, "ec2:RunInstances", "*", none.clone(), ImplicitDeny),
        ("Condition operators: date (ANDed operators)", &date_window, "ec2:StartInstances", "*", ctx(&[("aws:CurrentTime", "2020-05-01T00:00:00Z")]), Allow),
        ("Condition operators: date (ANDed operators)", &date_window, "ec2:StartInstances", "*", ctx(&[("aws:CurrentTime", "2020-07-01T00:00:00Z")]), ImplicitDeny),
        ("Condition operators: date (epoch value)", &date_window, "ec2:StartInstances", "*", ctx(&[("aws:CurrentTime", "1588291200")]), Allow),
        ("Multivalued keys: ForAllValues", &tag_keys, "iam:TagUser", "*", ctx(&[("aws:TagKeys", "[Department,Project]")]), Allow),
        ("Multivalued keys: ForAllValues", &tag_keys, "iam:TagUser", "*", ctx(&[("aws:TagKeys", "[Department,Cost]")]), ImplicitDeny),
        ("Multivalued keys: ForAllValues (missing key is true)", &tag_keys, "iam:TagUser", "*", none.clone(), Allow),
        ("Variables: default value", &team_default, "s3:GetObject", "arn:aws:s3:::bucket/company-wide/x", none.clone(), Allow),
        ("Variables: default value", &team_default, "s3:GetObject", "arn:aws:s3:::bucket/red/x", ctx(&[("aws:PrincipalTag/team", "red")]), Allow),
        ("Variables: default value", &team_default, "s3:GetObject", "arn:aws:s3:::bucket/company-wide/x", ctx(&[("aws:PrincipalTag/team", "red")]), ImplicitDeny),
        ("Elements: NotResource", &not_resource, "s3:GetObject", "arn:aws:s3:::HRBucket/Payroll/jan.csv", none.clone(), ImplicitDeny),
        ("Elements: NotResource", &not_resource, "s3:GetObject", "arn:aws:s3:::HRBucket/Other/x", none.clone(), Allow),
        ("Elements: NotAction", &not_action, "iam:CreateUser", "*", none.clone(), ImplicitDeny),
        ("Elements: NotAction", &not_action, "s3:GetObject", "arn:aws:s3:::b/k", none.clone(), Allow),
        ("Variables: in condition values", &prefix_var, "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", ctx(&[("aws:username", "alice"), ("s3:prefix", "home/alice/docs")]), Allow),
        ("Variables: in condition values", &prefix_var, "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket", ctx(&[("aws:username", "alice"), ("s3:prefix", "home/bob/docs")]), ImplicitDeny),
        ("Variables: special characters", &escapes, "s3:GetObject", "arn:aws:s3:::b/*literal?", none.clone(), Allow),
        ("Variables: special characters", &escapes, "s3:GetObject", "arn:aws:s3:::b/xliteral?", none.clone(), ImplicitDeny),
        ("Condition operators: numeric", &mfa_age, "ec2:StopInstances", "*", ctx(&[("aws:MultiFactorAuthAge", "120")]), Allow),
        ("Condition operators: numeric (missing key)", &mfa_age, "ec2:StopInstances", "*", none.clone(), ImplicitDeny),
        ("Elements: Resource (wildcard in resource type)", &user_any, "iam:GetUser", "arn:aws:iam::123456789012:user/carol", none.clone(), Allow),
        ("Elements: Resource (wildcard stays in segment)", &user_any, "iam:GetUser", "arn:aws:iam::123456789012:user/caroline", none.clone(), ImplicitDeny),
    ];
    for (section, policy, action, resource, c, want) in rows {
        let got = identity_decision(policy, action, resource, c);
        assert_eq!(
            got.decision, *want,
            "{section}: {action} {resource} ({})",
            got.reason
        );
    }
}

#[test]
fn force_mfa_pattern() {
    // "Example: Allows MFA-authenticated IAM users to manage their own MFA device" — the
    // deny uses BoolIfExists so requests without the key (long-term keys) are denied too.
    let policy = doc(json!([
        {"Sid": "AllowAll", "Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "DenyNoMfa", "Effect": "Deny", "NotAction": ["iam:ListMFADevices"], "Resource": "*",
         "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}}
    ]));
    let rows = [
        (
            ctx(&[("aws:MultiFactorAuthPresent", "true")]),
            "ec2:RunInstances",
            Allow,
        ),
        (
            ctx(&[("aws:MultiFactorAuthPresent", "false")]),
            "ec2:RunInstances",
            ExplicitDeny,
        ),
        (Context::new(), "ec2:RunInstances", ExplicitDeny),
        (Context::new(), "iam:ListMFADevices", Allow),
    ];
    for (c, action, want) in rows {
        let e = identity_decision(&policy, action, "*", &c);
        assert_eq!(e.decision, want, "{action} {c:?}");
        if want == ExplicitDeny {
            assert_eq!(
                e.matched,
                vec![StatementRef {
                    policy: "p".into(),
                    statement: "DenyNoMfa".into()
                }]
            );
        }
    }
}

/// "Policy evaluation logic": identity ∩ boundary ∩ session, deny anywhere wins.
#[test]
fn policy_types_combine() {
    let s3_all = parse(
        &doc(json!([stmt("Allow", "s3:*", "*")])),
        PolicyKind::Managed,
    );
    let s3_get = parse(
        &doc(json!([{"Sid": "Get", "Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}])),
        PolicyKind::Managed,
    );
    let ec2_all = parse(
        &doc(json!([stmt("Allow", "ec2:*", "*")])),
        PolicyKind::Managed,
    );
    let deny_delete = parse(
        &doc(
            json!([{"Sid": "NoDelete", "Effect": "Deny", "Action": "s3:Delete*", "Resource": "*"}]),
        ),
        PolicyKind::Managed,
    );
    let id = |p| NamedPolicy {
        name: "identity",
        policy: p,
    };
    let bnd = |p| {
        Some(NamedPolicy {
            name: "boundary",
            policy: p,
        })
    };
    let c = Context::new();
    let ask = |action: &str, set: &PolicySet| {
        evaluate(
            &Request {
                principal: None,
                action,
                resource: "arn:aws:s3:::b/k",
                context: &c,
            },
            set,
        )
    };
    let identity_s3 = [id(&s3_all)];
    let identity_ec2 = [id(&ec2_all)];
    let identity_s3_deny = [
        id(&s3_all),
        NamedPolicy {
            name: "deny",
            policy: &deny_delete,
        },
    ];
    let session_get = [NamedPolicy {
        name: "session",
        policy: &s3_get,
    }];
    let session_deny = [NamedPolicy {
        name: "session",
        policy: &deny_delete,
    }];
    let empty: [NamedPolicy; 0] = [];
    #[rustfmt::skip]
    let rows: &[(&str, PolicySet, &str, Decision, &str)] = &[
        ("Evaluation logic: identity allow", PolicySet { identity: &identity_s3, boundary: None, session: None }, "s3:PutObject", Allow, ""),
        ("Evaluation logic: no identity allow", PolicySet { identity: &identity_ec2, boundary: None, session: None }, "s3:PutObject", ImplicitDeny, "no identity-based policy"),
        ("Evaluation logic: explicit deny wins", PolicySet { identity: &identity_s3_deny, boundary: None, session: None }, "s3:DeleteObject", ExplicitDeny, "deny#NoDelete"),
        ("Permissions boundaries: both allow", PolicySet { identity: &identity_s3, boundary: bnd(&s3_get), session: None }, "s3:GetObject", Allow, ""),
        ("Permissions boundaries: boundary lacks allow", PolicySet { identity: &identity_s3, boundary: bnd(&s3_get), session: None }, "s3:PutObject", ImplicitDeny, "permissions boundary boundary"),
        ("Permissions boundaries: boundary alone grants nothing", PolicySet { identity: &identity_ec2, boundary: bnd(&s3_all), session: None }, "s3:GetObject", ImplicitDeny, "no identity-based policy"),
        ("Permissions boundaries: deny in boundary", PolicySet { identity: &identity_s3, boundary: bnd(&deny_delete), session: None }, "s3:DeleteObject", ExplicitDeny, "boundary#NoDelete"),
        ("Session policies: intersection", PolicySet { identity: &identity_s3, boundary: None, session: Some(&session_get) }, "s3:GetObject", Allow, ""),
        ("Session policies: session lacks allow", PolicySet { identity: &identity_s3, boundary: None, session: Some(&session_get) }, "s3:PutObject", ImplicitDeny, "session policy"),
        ("Session policies: session alone grants nothing", PolicySet { identity: &identity_ec2, boundary: None, session: Some(&session_get) }, "s3:GetObject", ImplicitDeny, "identity"),
        ("Session policies: deny in session", PolicySet { identity: &identity_s3, boundary: None, session: Some(&session_deny) }, "s3:DeleteObject", ExplicitDeny, "session#NoDelete"),
        ("Session policies: present but empty", PolicySet { identity: &identity_s3, boundary: None, session: Some(&empty) }, "s3:GetObject", ImplicitDeny, "session policy"),
        ("Evaluation logic: no policies at all", PolicySet::default(), "s3:GetObject", ImplicitDeny, "no identity-based policy"),
    ];
    for (section, set, action, want, reason) in rows {
        let e = ask(action, set);
        assert_eq!(e.decision, *want, "{section}: {}", e.reason);
        assert!(
            e.reason.contains(reason),
            "{section}: reason {:?} lacks {reason:?}",
            e.reason
        );
        assert_eq!(e.matched.is_empty(), *want == ImplicitDeny, "{section}");
    }
    let both = ask(
        "s3:GetObject",
        &PolicySet {
            identity: &identity_s3,
            boundary: bnd(&s3_get),
            session: Some(&session_get),
        },
    );
    let shown: Vec<String> = both.matched.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        shown,
        ["identity#Statement[0]", "boundary#Get", "session#Get"]
    );
}

const ACCOUNT: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::123456789012:role/Deploy";
const ALICE: &str = "arn:aws:iam::123456789012:user/alice";

fn trust(principal: serde_json::Value, extra: serde_json::Value) -> Policy {
    let mut statements = vec![
        json!({"Sid": "Trust", "Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}),
    ];
    if let serde_json::Value::Array(more) = extra {
        statements.extend(more);
    }
    parse(&doc(json!(statements)), PolicyKind::Trust)
}

/// "How IAM roles differ from resource-based policies" / "Role trust policies".
#[test]
fn trust_policy_examples() {
    let allow_assume = parse(
        &doc(
            json!([{"Sid": "Assume", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}]),
        ),
        PolicyKind::Managed,
    );
    let deny_assume = parse(
        &doc(json!([{"Sid": "NoAssume", "Effect": "Deny", "Action": "sts:*", "Resource": "*"}])),
        PolicyKind::Managed,
    );
    let by_user = trust(json!({"AWS": ALICE}), json!([]));
    let by_root = trust(json!({"AWS": "arn:aws:iam::123456789012:root"}), json!([]));
    let by_id = trust(json!({"AWS": ACCOUNT}), json!([]));
    let by_other = trust(json!({"AWS": "arn:aws:iam::111122223333:root"}), json!([]));
    let by_any = trust(json!("*"), json!([]));
    let by_role = trust(
        json!({"AWS": "arn:aws:iam::123456789012:role/ops/Builder"}),
        json!([]),
    );
    let ext_policy = parse(
        &doc(
            json!([{"Effect": "Allow", "Principal": {"AWS": ALICE}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "Unique1"}}}]),
        ),
        PolicyKind::Trust,
    );
    let trust_deny = trust(
        json!({"AWS": ACCOUNT}),
        json!([{"Sid": "NoAlice", "Effect": "Deny", "Principal": {"AWS": ALICE}, "Action": "sts:AssumeRole"}]),
    );
    let service = trust(json!({"Service": "ec2.amazonaws.com"}), json!([]));
    let none: [NamedPolicy; 0] = [];
    let allow = [NamedPolicy {
        name: "caller",
        policy: &allow_assume,
    }];
    let deny = [NamedPolicy {
        name: "caller",
        policy: &deny_assume,
    }];
    let session = "arn:aws:sts::123456789012:assumed-role/Builder/ci-42";
    let c = Context::new();
    let ext = ctx(&[("sts:ExternalId", "Unique1")]);
    type Row<'a> = (
        &'a str,
        &'a Policy,
        &'a [NamedPolicy<'a>],
        &'a str,
        &'a Context,
        Decision,
    );
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("Trust: principal names the user ARN (alone suffices)", &by_user, &none, ALICE, &c, Allow),
        ("Trust: other user not named", &by_user, &allow, "arn:aws:iam::123456789012:user/bob", &c, ImplicitDeny),
        ("Trust: account root needs identity allow", &by_root, &none, ALICE, &c, ImplicitDeny),
        ("Trust: account root + identity allow", &by_root, &allow, ALICE, &c, Allow),
        ("Trust: bare account id + identity allow", &by_id, &allow, ALICE, &c, Allow),
        ("Trust: bare account id without identity allow", &by_id, &none, ALICE, &c, ImplicitDeny),
        ("Trust: other account", &by_other, &allow, ALICE, &c, ImplicitDeny),
        ("Trust: wildcard principal", &by_any, &none, ALICE, &c, Allow),
        ("Trust: role ARN matches its sessions", &by_role, &none, session, &c, Allow),
        ("Trust: role ARN does not match other role's sessions", &by_role, &none, "arn:aws:sts::123456789012:assumed-role/Other/ci", &c, ImplicitDeny),
        ("Trust: explicit deny in caller policy wins", &by_user, &deny, ALICE, &c, ExplicitDeny),
        ("Trust: explicit deny in trust policy wins", &trust_deny, &allow, ALICE, &c, ExplicitDeny),
        ("Trust: external id condition met", &ext_policy, &none, ALICE, &ext, Allow),
        ("Trust: external id missing", &ext_policy, &none, ALICE, &c, ImplicitDeny),
        ("Trust: service principal does not match a user", &service, &allow, ALICE, &c, ImplicitDeny),
        ("Trust: service principal", &service, &none, "ec2.amazonaws.com", &c, Allow),
    ];
    for (section, trust_policy, identity, principal, c, want) in rows {
        let req = Request {
            principal: Some(principal),
            action: "sts:AssumeRole",
            resource: ROLE,
            context: c,
        };
        let set = PolicySet {
            identity,
            ..PolicySet::default()
        };
        let e = evaluate_assume_role(
            &req,
            NamedPolicy {
                name: "trust_policy",
                policy: trust_policy,
            },
            &set,
        );
        assert_eq!(e.decision, *want, "{section}: {}", e.reason);
    }
    // Explanations name the trust statement and, for the account case, the caller's statement.
    let req = Request {
        principal: Some(ALICE),
        action: "sts:AssumeRole",
        resource: ROLE,
        context: &c,
    };
    let e = evaluate_assume_role(
        &req,
        NamedPolicy {
            name: "trust_policy",
            policy: &by_root,
        },
        &PolicySet {
            identity: &allow,
            ..PolicySet::default()
        },
    );
    let shown: Vec<String> = e.matched.iter().map(|m| m.to_string()).collect();
    assert_eq!(shown, ["trust_policy#Trust", "caller#Assume"]);
}

/// "Update a role trust policy" (a boundary must allow sts:AssumeRole even when the trust
/// policy names the user) and "Session policies" (a session policy limits what a resource
/// policy grants to the role ARN, not to the session ARN).
#[test]
fn trust_with_boundary_and_session_limits() {
    let assume_any = parse(
        &doc(json!([{"Sid": "B", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}])),
        PolicyKind::Managed,
    );
    let s3_only = parse(
        &doc(json!([stmt("Allow", "s3:*", "*")])),
        PolicyKind::Managed,
    );
    let session_arn = "arn:aws:sts::123456789012:assumed-role/Builder/ci-42";
    let by_user = trust(json!({"AWS": ALICE}), json!([]));
    let by_role = trust(
        json!({"AWS": "arn:aws:iam::123456789012:role/Builder"}),
        json!([]),
    );
    let by_session = trust(json!({"AWS": session_arn}), json!([]));
    let c = Context::new();
    let none: [NamedPolicy; 0] = [];
    let session_s3 = [NamedPolicy {
        name: "session",
        policy: &s3_only,
    }];
    let session_assume = [NamedPolicy {
        name: "session",
        policy: &assume_any,
    }];
    let boundary = |p| {
        Some(NamedPolicy {
            name: "boundary",
            policy: p,
        })
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, &Policy, &str, PolicySet, Decision)> = vec![
        ("boundary without sts:AssumeRole", &by_user, ALICE, PolicySet { identity: &none, boundary: boundary(&s3_only), session: None }, ImplicitDeny),
        ("boundary allowing sts:AssumeRole", &by_user, ALICE, PolicySet { identity: &none, boundary: boundary(&assume_any), session: None }, Allow),
        ("role ARN named, session policy lacks allow", &by_role, session_arn, PolicySet { identity: &none, boundary: None, session: Some(&session_s3) }, ImplicitDeny),
        ("role ARN named, session policy allows", &by_role, session_arn, PolicySet { identity: &none, boundary: None, session: Some(&session_assume) }, Allow),
        ("session ARN named, session policy not needed", &by_session, session_arn, PolicySet { identity: &none, boundary: None, session: Some(&session_s3) }, Allow),
    ];
    for (section, trust_policy, principal, set, want) in rows {
        let req = Request {
            principal: Some(principal),
            action: "sts:AssumeRole",
            resource: ROLE,
            context: &c,
        };
        let e = evaluate_assume_role(
            &req,
            NamedPolicy {
                name: "trust_policy",
                policy: trust_policy,
            },
            &set,
        );
        assert_eq!(e.decision, want, "{section}: {}", e.reason);
    }
}

/// IAM User Guide, "Cross-account policy evaluation logic": when the role's account differs
/// from the caller's, the trust policy (resource-based) and the caller's identity-based
/// policies must both allow, however the trust policy names the caller. Same account: naming
/// the caller is enough (see `trust_policy_examples`). Service and web-identity principals
/// have no identity policies: the trust policy alone decides.
#[test]
fn cross_account_trust_needs_both_sides() {
    const BOB_222: &str = "arn:aws:iam::222222222222:user/bob";
    const SESSION_222: &str = "arn:aws:sts::222222222222:assumed-role/Ci/run-1";
    const OIDC: &str =
        "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com";
    let allow_assume = parse(
        &doc(
            json!([{"Sid": "Assume", "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ROLE}]),
        ),
        PolicyKind::Managed,
    );
    let deny_assume = parse(
        &doc(json!([{"Effect": "Deny", "Action": "sts:AssumeRole", "Resource": "*"}])),
        PolicyKind::Managed,
    );
    let s3_only = parse(
        &doc(json!([stmt("Allow", "s3:*", "*")])),
        PolicyKind::Managed,
    );
    let by_bob = trust(json!({"AWS": BOB_222}), json!([]));
    let by_account = trust(json!({"AWS": "222222222222"}), json!([]));
    let by_root = trust(json!({"AWS": "arn:aws:iam::222222222222:root"}), json!([]));
    let by_any = trust(json!("*"), json!([]));
    let by_role = trust(
        json!({"AWS": "arn:aws:iam::222222222222:role/Ci"}),
        json!([]),
    );
    let by_service = trust(json!({"Service": "ec2.amazonaws.com"}), json!([]));
    let by_oidc = trust(json!({"Federated": OIDC}), json!([]));
    let named = |policy| {
        [NamedPolicy {
            name: "caller",
            policy,
        }]
    };
    let (allow, deny, s3) = (named(&allow_assume), named(&deny_assume), named(&s3_only));
    let none: [NamedPolicy; 0] = [];
    #[rustfmt::skip]
    let rows: &[(&str, &Policy, &[NamedPolicy], &str, Decision)] = &[
        ("other account's user named, no identity allow", &by_bob, &none, BOB_222, ImplicitDeny),
        ("other account's user named, identity allows nothing relevant", &by_bob, &s3, BOB_222, ImplicitDeny),
        ("other account's user named + identity allow", &by_bob, &allow, BOB_222, Allow),
        ("other account by id, no identity allow", &by_account, &none, BOB_222, ImplicitDeny),
        ("other account by id + identity allow", &by_account, &allow, BOB_222, Allow),
        ("other account root + identity allow", &by_root, &allow, BOB_222, Allow),
        ("Principal * from another account, no identity allow", &by_any, &none, BOB_222, ImplicitDeny),
        ("Principal * from another account + identity allow", &by_any, &allow, BOB_222, Allow),
        ("other account's role named, its session has no identity allow", &by_role, &none, SESSION_222, ImplicitDeny),
        ("other account's role named + session's identity allow", &by_role, &allow, SESSION_222, Allow),
        ("cross-account explicit deny in caller's policies", &by_bob, &deny, BOB_222, ExplicitDeny),
        ("other account not named", &by_bob, &allow, "arn:aws:iam::333333333333:user/bob", ImplicitDeny),
        ("same account: naming the caller suffices", &trust(json!({"AWS": ALICE}), json!([])), &none, ALICE, Allow),
        ("same account: account root needs identity allow", &trust(json!({"AWS": ACCOUNT}), json!([])), &none, ALICE, ImplicitDeny),
        ("service principal: trust alone", &by_service, &none, "ec2.amazonaws.com", Allow),
        ("service principal not named", &by_service, &none, "lambda.amazonaws.com", ImplicitDeny),
        ("service principal is not the account", &by_account, &allow, "ec2.amazonaws.com", ImplicitDeny),
        ("web identity provider: trust alone", &by_oidc, &none, OIDC, Allow),
        ("provider ARN does not match Principal AWS account", &trust(json!({"AWS": ACCOUNT}), json!([])), &allow, OIDC, ImplicitDeny),
    ];
    for (section, trust_policy, identity, principal, want) in rows {
        let c = Context::new();
        let req = Request {
            principal: Some(principal),
            action: "sts:AssumeRole",
            resource: ROLE,
            context: &c,
        };
        let set = PolicySet {
            identity,
            ..PolicySet::default()
        };
        let e = evaluate_assume_role(
            &req,
            NamedPolicy {
                name: "trust_policy",
                policy: trust_policy,
            },
            &set,
        );
        assert_eq!(e.decision, *want, "{section}: {}", e.reason);
    }
}

/// Requests longer than [`MAX_MATCH_LEN`] are denied without matching, and the reason does not
/// echo them; a request at the cap is evaluated normally.
#[test]
fn over_long_requests_are_denied_cheaply() {
    let any = parse(
        &doc(json!([stmt(
            "Allow",
            "*",
            &format!("arn:aws:s3:::*{}b*", "a".repeat(1000))
        )])),
        PolicyKind::Managed,
    );
    let identity = [NamedPolicy {
        name: "p",
        policy: &any,
    }];
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    let c = Context::new();
    let long = format!("arn:aws:s3:::{}", "a".repeat(1_000_000));
    let at_cap = format!("arn:aws:s3:::{}b", "a".repeat(MAX_MATCH_LEN - 15));
    let long_action = format!("s3:{}", "G".repeat(MAX_MATCH_LEN));
    for (action, resource, want) in [
        ("s3:GetObject", long.as_str(), ImplicitDeny),
        (long_action.as_str(), "arn:aws:s3:::b", ImplicitDeny),
        ("s3:GetObject", at_cap.as_str(), Allow),
    ] {
        let req = Request {
            principal: Some(ALICE),
            action,
            resource,
            context: &c,
        };
        let e = evaluate(&req, &set);
        assert_eq!(e.decision, want, "{}", e.reason);
        assert!(e.reason.len() < 200, "reason echoes the input");
        let t = evaluate_assume_role(&req, identity[0], &set);
        assert_ne!(t.decision, Allow);
    }
    // An over-long context value matches no pattern, even `*`.
    let like = parse(
        &doc(json!([{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"StringLike": {"aws:PrincipalTag/x": "*"}}}])),
        PolicyKind::Managed,
    );
    let identity = [NamedPolicy {
        name: "p",
        policy: &like,
    }];
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    for (value, want) in [
        ("v".repeat(MAX_MATCH_LEN), Allow),
        ("v".repeat(MAX_MATCH_LEN + 1), ImplicitDeny),
    ] {
        let mut c = Context::new();
        c.insert("aws:PrincipalTag/x", value);
        let req = Request {
            principal: None,
            action: "s3:GetObject",
            resource: "arn:aws:s3:::b",
            context: &c,
        };
        assert_eq!(evaluate(&req, &set).decision, want);
    }
}

/// Documents whose patterns or condition values exceed [`MAX_MATCH_LEN`] are refused, with
/// the statement and field named.
#[test]
fn over_long_patterns_are_refused_at_parse() {
    let long = format!("arn:aws:s3:::{}", "a".repeat(MAX_MATCH_LEN));
    let long_action = format!("s3:{}", "a".repeat(MAX_MATCH_LEN));
    let v = |s: serde_json::Value| doc(json!([s]));
    #[rustfmt::skip]
    let rows: Vec<(serde_json::Value, PolicyKind, &str)> = vec![
        (v(json!({"Sid": "Big", "Effect": "Allow", "Action": "*", "Resource": long})), PolicyKind::Managed, "Statement[0] (Sid \"Big\").Resource"),
        (v(json!({"Effect": "Deny", "Action": "*", "NotResource": ["*", long]})), PolicyKind::Managed, "Statement[0].NotResource"),
        (v(json!({"Effect": "Allow", "Action": long_action, "Resource": "*"})), PolicyKind::Managed, "Statement[0].Action"),
        (v(json!({"Effect": "Allow", "NotAction": long_action, "Resource": "*"})), PolicyKind::Managed, "Statement[0].NotAction"),
        (v(json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringLike": {"aws:username": ["a", "a".repeat(MAX_MATCH_LEN + 1)]}}})), PolicyKind::Managed, "Statement[0].Condition.StringLike"),
        (v(json!({"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::123456789012:user/{}", "a".repeat(MAX_MATCH_LEN))}, "Action": "sts:AssumeRole"})), PolicyKind::RoleInline, "Statement[0].Principal"),
    ];
    for (value, kind, location) in rows {
        let kind = if location.ends_with("Principal") {
            PolicyKind::Trust
        } else {
            kind
        };
        let errors = validate(&value.to_string(), kind);
        let e = errors
            .iter()
            .find(|e| e.location.starts_with(location))
            .unwrap_or_else(|| panic!("{location}: {errors:?}"));
        assert!(e.message.contains("at most 2048"), "{e}");
    }
    // At the cap: accepted.
    let at_cap = format!("arn:aws:s3:::{}", "a".repeat(MAX_MATCH_LEN - 13));
    assert!(
        Policy::parse(
            &doc(json!([stmt("Allow", "*", &at_cap)])).to_string(),
            PolicyKind::Managed
        )
        .is_ok()
    );
}

/// serde_json keeps the last of duplicate keys, which would turn `"Effect": "Deny", "Effect":
/// "Allow"` into an allow; AWS refuses such documents (MalformedPolicyDocument), at any depth.
#[test]
fn duplicate_keys_are_refused() {
    #[rustfmt::skip]
    let rows = [
        (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Effect":"Allow","Action":"*","Resource":"*"}]}"#, "Statement[0]", "Effect"),
        (r#"{"Version":"2012-10-17","Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#, "(document)", "Version"),
        (r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true","aws:SecureTransport":"false"}}}}"#, "Statement.Condition.Bool", "aws:SecureTransport"),
        (r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"a:b":"true"},"Bool":{"a:b":"false"}}}]}"#, "Statement[1].Condition", "Bool"),
    ];
    for (text, location, key) in rows {
        let e = Policy::parse(text, PolicyKind::Managed).expect_err(text);
        assert_eq!(e.location, location, "{e}");
        assert!(e.message.contains(&format!("duplicate key {key:?}")), "{e}");
    }
    // The same key in different objects is fine.
    let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;
    assert!(Policy::parse(ok, PolicyKind::Managed).is_ok());
}

/// "Condition operators": values are ORed for every operator, `Null` included.
#[test]
fn null_with_several_values_is_ored() {
    let p = parse(
        &doc(json!([{"Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"Null": {"aws:TokenIssueTime": ["true", "false"]}}}])),
        PolicyKind::Managed,
    );
    let identity = [NamedPolicy {
        name: "p",
        policy: &p,
    }];
    let set = PolicySet {
        identity: &identity,
        ..PolicySet::default()
    };
    for c in [
        Context::new(),
        ctx(&[("aws:TokenIssueTime", "2026-01-01T00:00:00Z")]),
    ] {
        let req = Request {
            principal: None,
            action: "s3:GetObject",
            resource: "*",
            context: &c,
        };
        assert_eq!(evaluate(&req, &set).decision, Allow);
    }
}

fn first_error(value: &serde_json::Value, kind: PolicyKind) -> PolicyError {
    Policy::parse(&value.to_string(), kind).expect_err("should be refused")
}

#[test]
fn refused_documents_name_statement_and_field() {
    let v = |s: serde_json::Value| doc(json!([s]));
    #[rustfmt::skip]
    let rows: Vec<(&str, serde_json::Value, PolicyKind, &str, &str)> = vec![
        ("unknown element", v(json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Resorce": "*"})), PolicyKind::Managed, "Statement[0].Resorce", "unknown element"),
        ("Action and NotAction", v(json!({"Sid": "Both", "Effect": "Allow", "Action": "*", "NotAction": "s3:*", "Resource": "*"})), PolicyKind::Managed, "Statement[0] (Sid \"Both\").NotAction", "both"),
        ("no Effect", v(json!({"Action": "*", "Resource": "*"})), PolicyKind::Managed, "Statement[0].Effect", "missing"),
        ("bad Effect", v(json!({"Effect": "allow", "Action": "*", "Resource": "*"})), PolicyKind::Managed, "Statement[0].Effect", "Allow"),
        ("no Action", v(json!({"Effect": "Allow", "Resource": "*"})), PolicyKind::Managed, "Statement[0].Action", "missing"),
        ("no Resource", v(json!({"Effect": "Allow", "Action": "*"})), PolicyKind::Managed, "Statement[0].Resource", "missing"),
        ("unknown operator", v(json!({"Sid": "AllowS3", "Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEqualsAny": {"a:b": "c"}}})), PolicyKind::Managed, "Statement[0] (Sid \"AllowS3\").Condition.StringEqualsAny", "unknown condition operator"),
        ("malformed CIDR", v(json!({"Sid": "AllowS3", "Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}})), PolicyKind::Managed, "Statement[0] (Sid \"AllowS3\").Condition.IpAddress", "aws:SourceIp"),
        ("malformed date", v(json!({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "soon"}}})), PolicyKind::Managed, "Statement[0].Condition.DateLessThan", "ISO 8601"),
        ("malformed ARN", v(json!({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3"})), PolicyKind::Managed, "Statement[0].Resource", "malformed ARN"),
        ("wildcard in service", v(json!({"Effect": "Allow", "Action": "s*:GetObject", "Resource": "*"})), PolicyKind::Managed, "Statement[0].Action", "service part"),
        ("Principal in identity policy", v(json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"})), PolicyKind::Managed, "Statement[0].Principal", "not allowed"),
        ("trust without Principal", v(json!({"Effect": "Allow", "Action": "sts:AssumeRole"})), PolicyKind::Trust, "Statement[0].Principal", "missing"),
        ("NotPrincipal with Allow", v(json!({"Effect": "Allow", "NotPrincipal": {"AWS": ALICE}, "Action": "sts:AssumeRole"})), PolicyKind::Trust, "Statement[0].NotPrincipal", "Deny"),
        ("wildcard principal ARN", v(json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/*"}, "Action": "sts:AssumeRole"})), PolicyKind::Trust, "Statement[0].Principal.AWS", "wildcards"),
        ("bad Sid", v(json!({"Sid": "no spaces", "Effect": "Allow", "Action": "*", "Resource": "*"})), PolicyKind::Managed, "Statement[0] (Sid \"no spaces\").Sid", "letters"),
        ("bad Version", json!({"Version": "2012-10-18", "Statement": [stmt("Allow", "*", "*")]}), PolicyKind::Managed, "Version", "2012-10-17"),
        ("unknown top-level element", json!({"Version": "2012-10-17", "Statment": []}), PolicyKind::Managed, "Statment", "unknown element"),
        ("not JSON", json!("just a string"), PolicyKind::Managed, "(document)", "JSON object"),
    ];
    for (section, value, kind, location, message) in rows {
        let e = first_error(&value, kind);
        assert_eq!(e.location, location, "{section}: {e}");
        assert!(e.message.contains(message), "{section}: {e}");
    }
}

#[test]
fn validate_reports_every_problem_and_size_limits() {
    let bad = doc(json!([
        {"Effect": "Allow", "Action": "*"},
        {"Sid": "X", "Effect": "Maybe", "Action": "s3:GetObject", "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "nope"}}}
    ]));
    let errors = validate(&bad.to_string(), PolicyKind::Managed);
    let locations: Vec<&str> = errors.iter().map(|e| e.location.as_str()).collect();
    assert_eq!(
        locations,
        [
            "Statement[0].Resource",
            "Statement[1] (Sid \"X\").Effect",
            "Statement[1] (Sid \"X\").Condition.IpAddress"
        ]
    );
    assert_eq!(
        errors[0].to_string(),
        format!("Statement[0].Resource: {}", errors[0].message)
    );

    // Whitespace does not count towards the limit.
    let padded = format!(
        "{}{}",
        doc(json!([stmt("Allow", "*", "*")])),
        " ".repeat(5000)
    );
    assert!(validate(&padded, PolicyKind::Session).is_empty());
    let resources: Vec<String> = (0..120)
        .map(|i| format!("arn:aws:s3:::bucket-{i:04}/*"))
        .collect();
    let big = doc(json!([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": resources}]))
        .to_string();
    assert!(validate(&big, PolicyKind::Managed).is_empty());
    let too_big = validate(&big, PolicyKind::UserInline);
    assert_eq!(too_big.len(), 1, "{too_big:?}");
    assert!(too_big[0].message.contains("at most 2048"));
}

#[test]
fn statement_names_and_legacy_version() {
    let p = parse(
        &doc(
            json!([stmt("Allow", "*", "*"), {"Sid": "Two", "Effect": "Deny", "Action": "*", "Resource": "*"}]),
        ),
        PolicyKind::Managed,
    );
    assert_eq!(
        p.statement_names().collect::<Vec<_>>(),
        ["Statement[0]", "Two"]
    );
    // Version 2008-10-17: `${…}` is literal text.
    let legacy = json!({"Version": "2008-10-17", "Statement": stmt("Allow", "s3:GetObject", "arn:aws:s3:::b/${aws:username}")});
    let c = ctx(&[("aws:username", "alice")]);
    assert_eq!(
        identity_decision(&legacy, "s3:GetObject", "arn:aws:s3:::b/alice", &c).decision,
        ImplicitDeny
    );
    assert_eq!(
        identity_decision(
            &legacy,
            "s3:GetObject",
            "arn:aws:s3:::b/${aws:username}",
            &c
        )
        .decision,
        Allow
    );
}

#[test]
fn partition_is_ignored_so_aws_documentation_policies_govern_stint_arns() {
    // DESIGN.md: the engine is partition-agnostic. The IAMUserChangePassword example from
    // the AWS User Guide, as written, must govern Stint's own `arn:stint:` users.
    let policy = doc(json!([stmt(
        "Allow",
        "iam:ChangePassword",
        "arn:aws:iam::*:user/${aws:username}"
    )]));
    let alice = ctx(&[("aws:username", "alice")]);
    let rows = [
        ("arn:stint:iam::000000000000:user/alice", Allow),
        ("arn:aws:iam::000000000000:user/alice", Allow),
        ("arn:stint:iam::000000000000:user/bob", ImplicitDeny),
        ("arn:stint:sts::000000000000:user/alice", ImplicitDeny),
    ];
    for (resource, expected) in rows {
        let got = identity_decision(&policy, "iam:ChangePassword", resource, &alice).decision;
        assert_eq!(got, expected, "{resource}");
    }
}

#[test]
fn context_keys_are_case_insensitive() {
    let mut c = Context::new();
    c.insert("AWS:SourceIP", "10.0.0.1");
    assert_eq!(c.get("aws:sourceip"), Some(&["10.0.0.1".to_string()][..]));
    c.insert("aws:sourceip", "10.0.0.2");
    assert_eq!(c.get("Aws:SourceIp").unwrap(), ["10.0.0.2"]);
    assert!(c.get("aws:other").is_none());
}

fn arb_statement() -> impl Strategy<Value = serde_json::Value> {
    let effect = prop_oneof![Just("Allow"), Just("Deny")];
    let action = prop_oneof![
        Just("*"),
        Just("s3:*"),
        Just("s3:Get*"),
        Just("s3:GetObject"),
        Just("ec2:*"),
        Just("iam:?etUser")
    ];
    let resource = prop_oneof![
        Just("*"),
        Just("arn:aws:s3:::b/*"),
        Just("arn:aws:s3:::b/k"),
        Just("arn:aws:iam::*:user/${aws:username}")
    ];
    let condition = prop_oneof![
        Just(json!(null)),
        Just(json!({"Bool": {"aws:MultiFactorAuthPresent": "true"}})),
        Just(json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})),
        Just(json!({"StringNotEquals": {"aws:username": "bob"}})),
    ];
    (effect, action, resource, condition).prop_map(|(e, a, r, c)| {
        let mut s = json!({"Effect": e, "Action": a, "Resource": r});
        if !c.is_null() {
            s["Condition"] = c;
        }
        s
    })
}

fn decide_all(
    statements: &[serde_json::Value],
    action: &str,
    resource: &str,
    c: &Context,
) -> Decision {
    identity_decision(&doc(json!(statements)), action, resource, c).decision
}

proptest! {
    /// Adding a Deny never turns a deny into an allow; adding an Allow never turns an allow
    /// into a deny (evaluation logic monotonicity).
    #[test]
    fn monotonic(base in prop::collection::vec(arb_statement(), 1..6), extra in arb_statement(),
                 action in prop_oneof![Just("s3:GetObject"), Just("s3:PutObject"), Just("iam:GetUser")],
                 resource in prop_oneof![Just("arn:aws:s3:::b/k"), Just("arn:aws:iam::1:user/alice")],
                 mfa in any::<bool>(), ip in prop_oneof![Just("10.1.1.1"), Just("192.168.0.1")]) {
        let c = ctx(&[("aws:username", "alice"), ("aws:MultiFactorAuthPresent", if mfa { "true" } else { "false" }), ("aws:SourceIp", ip)]);
        let before = decide_all(&base, action, resource, &c);
        let mut more = base.clone();
        more.push(extra.clone());
        let after = decide_all(&more, action, resource, &c);
        if extra["Effect"] == "Deny" {
            prop_assert!(!(before != Allow && after == Allow));
            prop_assert!(after != Allow || before == Allow);
        } else {
            prop_assert!(!(before == Allow && after != Allow));
            prop_assert!(before != ExplicitDeny || after == ExplicitDeny);
        }
    }

    /// The duplicate-key pre-pass never fires on a document without duplicates (serde_json
    /// `Value` objects cannot hold any) and always fires when a key is repeated, at the top
    /// level or inside a statement.
    #[test]
    fn duplicate_keys_are_found_exactly(value in arb_json(), other in arb_json()) {
        let text = value.to_string();
        let duplicate = |errors: &[PolicyError]| errors.iter().any(|e| e.message.starts_with("duplicate key"));
        prop_assert!(!duplicate(&validate(&text, PolicyKind::Managed)));
        if let serde_json::Value::Object(map) = &value
            && let Some(key) = map.keys().next()
        {
            let repeated = format!("{{{}:{},{}", json!(key), other, &text[1..]);
            prop_assert!(duplicate(&validate(&repeated, PolicyKind::Managed)), "{}", repeated);
            let nested = doc(json!([value.clone()])).to_string().replacen(&text, &repeated, 1);
            let errors = validate(&nested, PolicyKind::Managed);
            let found = errors.iter().find(|e| e.message.starts_with("duplicate key"));
            prop_assert!(found.is_some_and(|e| e.location.starts_with("Statement[0]")), "{:?}", errors);
        }
    }

    /// No input makes the parser or the evaluator panic.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = validate(&text, PolicyKind::Managed);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        let text = value.to_string();
        for kind in [PolicyKind::Managed, PolicyKind::Trust] {
            if let Ok(p) = Policy::parse(&text, kind) {
                let c = Context::new();
                let identity = [NamedPolicy { name: "p", policy: &p }];
                let req = Request { principal: Some(ALICE), action: "s3:GetObject", resource: "arn:aws:s3:::b/k", context: &c };
                let _ = evaluate(&req, &PolicySet { identity: &identity, ..PolicySet::default() });
                let _ = evaluate_assume_role(&req, identity[0], &PolicySet::default());
            }
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!("*")),
        Just(json!("2012-10-17")),
        Just(json!("Allow")),
        Just(json!("Deny")),
        Just(json!("s3:Get*")),
        Just(json!("arn:aws:s3:::b/${aws:username}")),
        Just(json!("10.0.0.0/8")),
        "[a-zA-Z0-9:*?/${}.-]{0,12}".prop_map(serde_json::Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
    ];
    let key = prop_oneof![
        Just("Version"),
        Just("Statement"),
        Just("Effect"),
        Just("Action"),
        Just("NotAction"),
        Just("Resource"),
        Just("Principal"),
        Just("AWS"),
        Just("Condition"),
        Just("StringLike"),
        Just("IpAddress"),
        Just("ForAllValues:StringEquals"),
        Just("aws:SourceIp"),
        Just("Sid"),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

#[test]
fn compiled_policies_are_shareable_across_threads() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    shareable::<Policy>();
    shareable::<Context>();
    let p = std::sync::Arc::new(parse(
        &doc(json!([stmt("Allow", "s3:*", "*")])),
        PolicyKind::Managed,
    ));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let c = Context::new();
                let identity = [NamedPolicy {
                    name: "p",
                    policy: &p,
                }];
                let req = Request {
                    principal: None,
                    action: "s3:GetObject",
                    resource: "arn:aws:s3:::b/k",
                    context: &c,
                };
                evaluate(
                    &req,
                    &PolicySet {
                        identity: &identity,
                        ..PolicySet::default()
                    },
                )
                .decision
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Allow);
    }
}
