//! Stint's evaluation of the 20-statement set against cedar-policy's of the same set (see
//! the crate's docs for the translation), on issue 12's request, each with its request and
//! context built beforehand. Criterion reports both means; a summary with medians of
//! alternating batches and the ratio follows (goal: Cedar ≥ 10× Stint's time).
//!
//! `cargo bench --manifest-path cedar-compare/Cargo.toml` (from the repository root)
// Benchmarks set up fixed inputs: a failure there is a bug in the benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use stint::core::policy::Decision;
use stint_cedar_compare::{Case, CedarPolicies, StintPolicies};

/// Median ns per call over `rounds` batches of `per_batch` calls, alternating the two.
fn interleaved(
    rounds: usize,
    per_batch: u32,
    a: &mut dyn FnMut(),
    b: &mut dyn FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(per_batch)
    };
    let (mut xs, mut ys) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        xs.push(time(a));
        ys.push(time(b));
    }
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    (xs[rounds / 2], ys[rounds / 2])
}

fn main() {
    let stint = StintPolicies::parse();
    let cedar = CedarPolicies::parse();
    let case = Case::issue12();
    let context = case.stint_context();
    let request = case.cedar_request();
    assert_eq!(
        stint.decide(case.action, case.resource, &context),
        Decision::Allow
    );
    assert!(cedar.allows(&request));

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("stint: evaluate 20 statements (allow)", |b| {
        b.iter(|| stint.decide(black_box(case.action), black_box(case.resource), &context))
    });
    c.bench_function("cedar-policy: the same set (allow)", |b| {
        b.iter(|| cedar.allows(black_box(&request)))
    });
    c.final_summary();

    // `cargo test --benches` runs this binary without `--bench`: skip the summary there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (ours, theirs) = interleaved(
        201,
        200,
        &mut || {
            black_box(stint.decide(black_box(case.action), black_box(case.resource), &context));
        },
        &mut || {
            black_box(cedar.allows(black_box(&request)));
        },
    );
    println!("\n== summary (medians of alternating batches)");
    println!("stint, 20 statements        {ours:>10.0} ns");
    println!("cedar-policy, the same set  {theirs:>10.0} ns");
    println!(
        "cedar / stint               {:>10.1}×   (goal ≥ 10×)",
        theirs / ours
    );
}
