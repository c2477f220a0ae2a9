//! Policy evaluation cost next to the cost of parsing the same documents.
//!
//! A realistic set: three identity policies, a permissions boundary and a session policy,
//! 20 statements in all, with IpAddress, StringLike, Bool and Date conditions and a
//! `${aws:username}` variable. Criterion reports the means; a manual loop then prints
//! p50/p99 for one evaluation and the parse/evaluate ratio.
//!
//! Then the adversarial glob (issue 9, #11): a policy `Resource` of `arn:aws:s3:::*a…ab*`
//! (1,000 `a`s) against a 2,048-character resource of `a`s, the shape that made the old
//! backtracking matcher O(n·m); reported next to `str::contains` on the same lengths, and the
//! same pattern with a `?` in the segment (the one shape still searched offset by offset).
//!
//! `CARGO_TARGET_DIR=/work/main/target cargo bench --bench policy`
// Benchmarks set up fixed inputs: a failure there is a bug in the benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use stint::core::policy::{
    Context, Decision, MAX_MATCH_LEN, NamedPolicy, Policy, PolicyKind, PolicySet, Request, evaluate,
};

#[path = "policies/set.rs"]
mod set;
use set::StintPolicies;

fn context() -> Context {
    let mut c = Context::new();
    c.insert("aws:username", "alice");
    c.insert("aws:SourceIp", "10.20.30.40");
    c.insert("aws:MultiFactorAuthPresent", "true");
    c.insert("aws:SecureTransport", "true");
    c.insert("aws:CurrentTime", "2026-11-29T10:00:00Z");
    c.insert("aws:ResourceTag/team", "dev-payments");
    c.insert("aws:PrincipalArn", "arn:aws:iam::123456789012:user/alice");
    c
}

const ACTION: &str = "s3:PutObject";
const RESOURCE: &str = "arn:aws:s3:::app-data/home/alice/report.csv";

/// The adversarial case: a one-statement policy with `*{a×1000}{tail}*` and a resource of
/// `a`s filling [`MAX_MATCH_LEN`] (no match: the worst case for a backtracking matcher).
struct Adversarial {
    policy: Policy,
    resource: String,
    needle: String,
    haystack: String,
}

impl Adversarial {
    fn new(tail: &str) -> Self {
        let prefix = "arn:aws:s3:::";
        let needle = format!("{}{tail}", "a".repeat(1000));
        let doc = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"{prefix}*{needle}*"}}]}}"#
        );
        let haystack = "a".repeat(MAX_MATCH_LEN - prefix.len());
        Adversarial {
            policy: Policy::parse(&doc, PolicyKind::Managed).expect("adversarial policy"),
            resource: format!("{prefix}{haystack}"),
            needle: needle.replace('?', "a"),
            haystack,
        }
    }

    fn evaluate(&self, ctx: &Context) -> Decision {
        let identity = [NamedPolicy {
            name: "p",
            policy: &self.policy,
        }];
        let set = PolicySet {
            identity: &identity,
            ..PolicySet::default()
        };
        let req = Request {
            principal: None,
            action: "s3:GetObject",
            resource: &self.resource,
            context: ctx,
        };
        evaluate(black_box(&req), black_box(&set)).decision
    }

    fn contains(&self) -> bool {
        black_box(&self.haystack).contains(black_box(self.needle.as_str()))
    }
}

/// Median nanoseconds of `f` over `runs` runs.
fn median_ns(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut ns: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    percentile(&ns, 0.5)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let policies = StintPolicies::parse();
    let ctx = context();
    assert_eq!(policies.statements(), 20);
    let decide = || policies.decide(black_box(ACTION), black_box(RESOURCE), black_box(&ctx));
    assert_eq!(decide(), Decision::Allow);

    // `STINT_BENCH_EVALS=N`: just run N evaluations (for `perf stat`/callgrind) and exit.
    if let Some(n) = std::env::var("STINT_BENCH_EVALS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        for _ in 0..n {
            black_box(decide());
        }
        return;
    }

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("evaluate 20 statements (allow)", |b| b.iter(decide));
    c.bench_function("parse the same 5 documents", |b| {
        b.iter(StintPolicies::parse)
    });
    let plain = Adversarial::new("b");
    let with_one = Adversarial::new("?b");
    let empty = Context::new();
    assert_eq!(plain.evaluate(&empty), Decision::ImplicitDeny);
    assert_eq!(with_one.evaluate(&empty), Decision::ImplicitDeny);
    assert!(!plain.contains());
    c.bench_function(
        "adversarial *a{1000}b* vs 2048-char resource (evaluate)",
        |b| b.iter(|| plain.evaluate(&empty)),
    );
    c.bench_function("str::contains, same lengths", |b| {
        b.iter(|| plain.contains())
    });
    c.bench_function(
        "adversarial *a{1000}?b* vs 2048-char resource (evaluate)",
        |b| b.iter(|| with_one.evaluate(&empty)),
    );
    c.final_summary();

    // `cargo test --benches` runs this binary without `--bench`: skip the manual loop there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    const BATCH: usize = 8;
    let mut eval_ns = Vec::with_capacity(50_000);
    for _ in 0..50_000 {
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(decide());
        }
        eval_ns.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    let mut parse_ns = Vec::with_capacity(5_000);
    for _ in 0..5_000 {
        let start = Instant::now();
        black_box(StintPolicies::parse());
        parse_ns.push(start.elapsed().as_nanos() as f64);
    }
    eval_ns.sort_by(f64::total_cmp);
    parse_ns.sort_by(f64::total_cmp);
    let (e50, e99) = (percentile(&eval_ns, 0.5), percentile(&eval_ns, 0.99));
    let p50 = percentile(&parse_ns, 0.5);
    println!(
        "evaluate (20 statements, batches of {BATCH}): p50 {:.2} µs, p99 {:.2} µs",
        e50 / 1e3,
        e99 / 1e3
    );
    println!("parse (same documents): p50 {:.2} µs", p50 / 1e3);
    println!("parse / evaluate (p50): {:.1}x", p50 / e50);
    let glob = median_ns(2_000, || {
        black_box(plain.evaluate(&empty));
    });
    let contains = median_ns(2_000, || {
        black_box(plain.contains());
    });
    let with_one_ns = median_ns(200, || {
        black_box(with_one.evaluate(&empty));
    });
    println!(
        "adversarial *a{{1000}}b* vs {MAX_MATCH_LEN} chars: p50 {:.2} µs; str::contains {:.2} µs; ratio {:.1}x",
        glob / 1e3,
        contains / 1e3,
        glob / contains
    );
    println!(
        "with a `?` in the segment (offset-by-offset search): p50 {:.1} µs",
        with_one_ns / 1e3
    );
}
