//! Parser and evaluator must never panic, whatever the bytes (duplicate keys, over-long
//! patterns and values included), and nothing past `MAX_MATCH_LEN` is ever allowed.
//!
//! `cargo +nightly fuzz run policy_parse` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run policy_parse`
//! on stable), from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stint::core::policy::{
    Context, Decision, MAX_MATCH_LEN, NamedPolicy, Policy, PolicyKind, PolicySet, Request,
    evaluate, evaluate_assume_role, validate,
};

const KINDS: [PolicyKind; 6] = [
    PolicyKind::Managed,
    PolicyKind::UserInline,
    PolicyKind::GroupInline,
    PolicyKind::RoleInline,
    PolicyKind::Trust,
    PolicyKind::Session,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let errors = validate(text, kind);
    let parsed = Policy::parse(text, kind);
    assert_eq!(errors.is_empty(), parsed.is_ok());
    if let Ok(policy) = parsed {
        let mut ctx = Context::new();
        ctx.insert("aws:username", "alice");
        ctx.insert("aws:SourceIp", "10.0.0.1");
        ctx.insert("aws:CurrentTime", "2026-01-01T00:00:00Z");
        ctx.insert_multi("aws:TagKeys", vec!["a".into(), "b".into()]);
        let named = NamedPolicy { name: "fuzz", policy: &policy };
        let identity = [named];
        let req = Request {
            principal: Some("arn:aws:sts::123456789012:assumed-role/R/s"),
            action: "s3:GetObject",
            resource: "arn:aws:s3:::bucket/alice/key",
            context: &ctx,
        };
        let set = PolicySet { identity: &identity, boundary: Some(named), session: None };
        let _ = evaluate(&req, &set);
        let _ = evaluate_assume_role(&req, named, &set);
        // Past the match cap nothing is allowed, whatever the document says.
        let long = format!("arn:aws:s3:::{}", "a".repeat(MAX_MATCH_LEN));
        let over = Request { resource: &long, ..req };
        assert_ne!(evaluate(&over, &set).decision, Decision::Allow);
    }
});
