//! IAM policy documents: parse under every kind, then evaluate what parsed against a
//! fuzzed request. Input: `document \0 action \0 resource \0 principal \0 key=v1,v2 …`
//! (one context entry per line). Must never panic; libFuzzer's -timeout bounds time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stint::core::policy::{
    Context, NamedPolicy, Policy, PolicyKind, PolicySet, Request, evaluate, evaluate_assume_role,
    validate,
};

const KINDS: [PolicyKind; 6] = [
    PolicyKind::Managed,
    PolicyKind::UserInline,
    PolicyKind::GroupInline,
    PolicyKind::RoleInline,
    PolicyKind::Trust,
    PolicyKind::Session,
];

fn named(policy: &Option<Policy>) -> Option<NamedPolicy<'_>> {
    policy.as_ref().map(|policy| NamedPolicy {
        name: "fuzzed",
        policy,
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let document = parts.next().unwrap_or_default();
    let action = parts.next().unwrap_or("s3:GetObject");
    let resource = parts.next().unwrap_or("arn:aws:s3:::bucket/key");
    let principal = parts
        .next()
        .unwrap_or("arn:aws:iam::123456789012:user/alice");
    let mut context = Context::new();
    for line in parts.next().unwrap_or_default().lines() {
        if let Some((key, values)) = line.split_once('=') {
            context.insert_multi(key, values.split(',').map(str::to_owned).collect());
        }
    }

    let parsed: Vec<Option<Policy>> = KINDS
        .iter()
        .map(|kind| {
            let policy = Policy::parse(document, *kind).ok();
            // validate() reports every problem; it must agree with parse() on validity.
            assert_eq!(policy.is_some(), validate(document, *kind).is_empty());
            policy
        })
        .collect();

    let request = Request {
        principal: Some(principal),
        action,
        resource,
        context: &context,
    };
    let identity: Vec<NamedPolicy> = parsed[..4].iter().filter_map(named).collect();
    let session: Vec<NamedPolicy> = named(&parsed[5]).into_iter().collect();
    let set = PolicySet {
        identity: &identity,
        boundary: named(&parsed[0]),
        session: (!session.is_empty()).then_some(&session[..]),
    };
    let decision = evaluate(&request, &set);
    let _ = decision.reason.len();
    let plain = evaluate(
        &request,
        &PolicySet {
            identity: &identity,
            ..PolicySet::default()
        },
    );
    let _ = plain.matched.len();
    if let Some(trust) = named(&parsed[4]) {
        let _ = evaluate_assume_role(&request, trust, &set);
        let _ = evaluate_assume_role(
            &Request {
                principal: None,
                ..request
            },
            trust,
            &set,
        );
    }
});
