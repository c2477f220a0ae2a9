//! Prometheus metrics: a small process-wide registry of atomics, rendered in the text
//! exposition format 0.0.4 by the ops listener (`GET /metrics`, [`crate::rpc::ops_http`]).
//!
//! Hand-written rather than a crate: Stint needs counters, integer gauges and fixed-bucket
//! histograms, and the text format is a page of code; `prometheus-client` would add a
//! crate (and its derive macros) to a tree kept lean for 2-core builds.
//!
//! Labels are `&'static str` only: a value must come from a fixed table in the code (RPC
//! paths known to the descriptor set, gRPC code names, reason classes), so no user name,
//! ARN or token can become a label, and every family's cardinality is bounded by its
//! tables (plus [`MAX_SERIES`] as a backstop). `docs/metrics.md` documents every metric;
//! a test keeps it in step with [`Metrics::render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use crate::store::{Batch, Entries, Entry, Store, StoreError, Table};

/// Most series one family holds; further label sets share one series labelled `other`.
pub const MAX_SERIES: usize = 4096;

/// Latency buckets, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Audit batch-size buckets, in records per flush.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into fixed buckets (upper bounds, ascending; `+Inf` implied).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); cumulated when rendered.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() { value } else { 0.0 };
        let slot = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One metric per label set; label values are static strings (see the module docs).
pub struct Family<M> {
    labels: &'static [&'static str],
    make: fn() -> M,
    series: RwLock<BTreeMap<Box<[&'static str]>, Arc<M>>>,
}

impl<M> Family<M> {
    fn new(labels: &'static [&'static str], make: fn() -> M) -> Self {
        Self {
            labels,
            make,
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// Runs `f` on the series for `values` (one per label, in order), creating it.
    pub fn with<R>(&self, values: &[&'static str], f: impl FnOnce(&M) -> R) -> R {
        f(&self.series(values))
    }

    /// The series for `values`, created if new: hold it to skip the lookup on a hot path.
    pub fn series(&self, values: &[&'static str]) -> Arc<M> {
        let found = self
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(values)
            .cloned();
        match found {
            Some(series) => series,
            None => {
                let mut all = self.series.write().unwrap_or_else(|p| p.into_inner());
                let key: Box<[&'static str]> = if all.len() >= MAX_SERIES {
                    self.labels.iter().map(|_| "other").collect()
                } else {
                    values.into()
                };
                all.entry(key)
                    .or_insert_with(|| Arc::new((self.make)()))
                    .clone()
            }
        }
    }

    fn snapshot(&self) -> Vec<(Box<[&'static str]>, Arc<M>)> {
        self.series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Every metric Stint exports (documented in `docs/metrics.md`).
pub struct Metrics {
    started: Instant,
    /// gRPC (and `/.well-known`) requests by `rpc` (full path) and `code` (gRPC code name).
    pub rpc_requests: Family<Counter>,
    /// Time to the response head, by `rpc`.
    pub rpc_duration: Family<Histogram>,
    pub logins_succeeded: Counter,
    /// Failed `GetSessionToken` calls by `reason` class.
    pub logins_failed: Family<Counter>,
    /// Credentials issued, by `kind` (`session`, `role`, `web_identity`).
    pub tokens_minted: Family<Counter>,
    /// Records made durable by one audit flush.
    pub audit_flush_batch_size: Histogram,
    /// Time of one audit flush round (fsync or commit wait, plus a due checkpoint).
    pub audit_flush_duration: Histogram,
    /// Records one audit group commit wrote in one store transaction.
    pub audit_commit_batch_size: Histogram,
    /// Store time of one audit group commit (the round trip on PostgreSQL).
    pub audit_commit_duration: Histogram,
    /// Store operations by `op` (`get`, `scan`, `last`, `commit`, `flush`).
    pub store_duration: Family<Histogram>,
    /// Failed store operations by `op` (a commit conflict counts).
    pub store_errors: Family<Counter>,
    /// 1 while the signing keys are loaded (the last reload succeeded).
    pub signing_keys_loaded: Gauge,
    /// 1 while the audit log is healthy (gRPC health SERVING).
    pub audit_log_healthy: Gauge,
}

fn counter() -> Counter {
    Counter::default()
}
fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            rpc_requests: Family::new(&["rpc", "code"], counter),
            rpc_duration: Family::new(&["rpc"], latency),
            logins_succeeded: Counter::default(),
            logins_failed: Family::new(&["reason"], counter),
            tokens_minted: Family::new(&["kind"], counter),
            audit_flush_batch_size: Histogram::new(BATCH_BUCKETS),
            audit_flush_duration: Histogram::new(LATENCY_BUCKETS),
            audit_commit_batch_size: Histogram::new(BATCH_BUCKETS),
            audit_commit_duration: Histogram::new(LATENCY_BUCKETS),
            store_duration: Family::new(&["op"], latency),
            store_errors: Family::new(&["op"], counter),
            signing_keys_loaded: Gauge::default(),
            audit_log_healthy: Gauge::default(),
        }
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let version: &'static [&'static str] = &[env!("CARGO_PKG_VERSION")];
        header(
            &mut out,
            "stint_build_info",
            "gauge",
            "Always 1; the version label names the build.",
        );
        sample(&mut out, "stint_build_info", &["version"], version, "1");
        header(
            &mut out,
            "stint_uptime_seconds",
            "gauge",
            "Seconds since the process started serving metrics.",
        );
        let uptime = format_f64(self.started.elapsed().as_secs_f64());
        sample(&mut out, "stint_uptime_seconds", &[], &[], &uptime);
        gauge(
            &mut out,
            "stint_signing_keys_loaded",
            "1 while the signing keys are loaded (the last reload succeeded).",
            &self.signing_keys_loaded,
        );
        gauge(
            &mut out,
            "stint_audit_log_healthy",
            "1 while the audit log is healthy (gRPC health SERVING).",
            &self.audit_log_healthy,
        );
        counters(
            &mut out,
            "stint_rpc_requests_total",
            "Requests by full gRPC method path and gRPC status code.",
            &self.rpc_requests,
        );
        histograms(
            &mut out,
            "stint_rpc_duration_seconds",
            "Time from request to response head, by gRPC method path.",
            &self.rpc_duration,
        );
        header(
            &mut out,
            "stint_logins_succeeded_total",
            "counter",
            "Successful logins (GetSessionToken).",
        );
        let n = self.logins_succeeded.get().to_string();
        sample(&mut out, "stint_logins_succeeded_total", &[], &[], &n);
        counters(
            &mut out,
            "stint_logins_failed_total",
            "Failed logins (GetSessionToken) by reason class.",
            &self.logins_failed,
        );
        counters(
            &mut out,
            "stint_tokens_minted_total",
            "Credentials issued, by kind.",
            &self.tokens_minted,
        );
        histogram(
            &mut out,
            "stint_audit_flush_batch_size",
            "Audit records made durable by one flush.",
            &[],
            &[],
            &self.audit_flush_batch_size,
            true,
        );
        histogram(
            &mut out,
            "stint_audit_flush_duration_seconds",
            "Time of one audit flush round.",
            &[],
            &[],
            &self.audit_flush_duration,
            true,
        );
        histogram(
            &mut out,
            "stint_audit_commit_batch_size",
            "Audit records written by one group commit (one store transaction).",
            &[],
            &[],
            &self.audit_commit_batch_size,
            true,
        );
        histogram(
            &mut out,
            "stint_audit_commit_duration_seconds",
            "Store time of one audit group commit.",
            &[],
            &[],
            &self.audit_commit_duration,
            true,
        );
        histograms(
            &mut out,
            "stint_store_operation_duration_seconds",
            "Store operation latency by operation.",
            &self.store_duration,
        );
        counters(
            &mut out,
            "stint_store_operation_errors_total",
            "Failed store operations by operation (commit conflicts included).",
            &self.store_errors,
        );
        out
    }
}

/// The process-wide registry (tests running several servers in one process share it).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// One audit flush made `records` durable in `elapsed` (called by the audit flusher).
pub fn audit_flushed(records: u64, elapsed: Duration) {
    let m = metrics();
    m.audit_flush_batch_size.observe(records as f64);
    m.audit_flush_duration.observe_duration(elapsed);
}

/// One audit group commit wrote `records` in one store transaction taking `elapsed`.
pub fn audit_committed(records: usize, elapsed: Duration) {
    let m = metrics();
    m.audit_commit_batch_size.observe(records as f64);
    m.audit_commit_duration.observe_duration(elapsed);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[&str], values: &[&str], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().zip(values).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

fn gauge(out: &mut String, name: &str, help: &str, gauge: &Gauge) {
    header(out, name, "gauge", help);
    sample(out, name, &[], &[], &gauge.get().to_string());
}

fn counters(out: &mut String, name: &str, help: &str, family: &Family<Counter>) {
    header(out, name, "counter", help);
    for (values, counter) in family.snapshot() {
        sample(
            out,
            name,
            family.labels,
            &values,
            &counter.get().to_string(),
        );
    }
}

fn histograms(out: &mut String, name: &str, help: &str, family: &Family<Histogram>) {
    header(out, name, "histogram", help);
    for (values, h) in family.snapshot() {
        histogram(out, name, help, family.labels, &values, &h, false);
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    values: &[&str],
    h: &Histogram,
    with_header: bool,
) {
    if with_header {
        header(out, name, "histogram", help);
    }
    let bucket = format!("{name}_bucket");
    let mut labels_le: Vec<&str> = labels.to_vec();
    labels_le.push("le");
    let mut cumulative = 0u64;
    for (i, count) in h.buckets.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        let le = h
            .bounds
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| format_f64(*b));
        let mut values_le: Vec<&str> = values.to_vec();
        values_le.push(&le);
        sample(
            out,
            &bucket,
            &labels_le,
            &values_le,
            &cumulative.to_string(),
        );
    }
    let sum = format_f64(f64::from_bits(h.sum.load(Ordering::Relaxed)));
    sample(out, &format!("{name}_sum"), labels, values, &sum);
    // The count is the +Inf bucket, so the two agree in one scrape.
    sample(
        out,
        &format!("{name}_count"),
        labels,
        values,
        &cumulative.to_string(),
    );
}

fn format_f64(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "0".into()
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A store that times every operation into `stint_store_operation_duration_seconds`
/// (and counts failures); wrapped around the store by the daemon's assembly.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    /// Per operation (`STORE_OPS` order), resolved once: no lookup per call.
    series: Vec<(Arc<Histogram>, Arc<Counter>)>,
}

const STORE_OPS: [&str; 6] = ["get", "scan", "last", "commit", "flush", "commit_group"];

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        let m = metrics();
        let series = STORE_OPS
            .iter()
            .map(|op| (m.store_duration.series(&[op]), m.store_errors.series(&[op])))
            .collect();
        Self { inner, series }
    }

    fn timed<T>(
        &self,
        op: usize,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = f();
        if let Some((latency, errors)) = self.series.get(op) {
            latency.observe_duration(started.elapsed());
            if result.is_err() {
                errors.inc();
            }
        }
        result
    }
}

impl Store for MeteredStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed(0, || self.inner.get(table, key))
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.timed(1, || self.inner.scan(table, prefix, after, limit))
    }
    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
        self.timed(2, || self.inner.last(table))
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.timed(3, || self.inner.commit(batch))
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.timed(4, || self.inner.flush())
    }
    /// Forwarded whole: the default would split the group into one commit per batch
    /// (one transaction, or one PostgreSQL round trip, each).
    fn commit_group(&self, batches: &[Batch]) -> (usize, Result<(), StoreError>) {
        let mut applied = 0;
        let result = self.timed(5, || {
            let (n, result) = self.inner.commit_group(batches);
            applied = n;
            result
        });
        (applied, result)
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// A group reaches the store whole (one PostgreSQL round trip), not batch by batch.
    #[test]
    fn the_metered_store_passes_a_group_on_whole() {
        let inner = Arc::new(crate::audit::testing::FaultyStore::default());
        let metered = MeteredStore::new(inner.clone());
        let batch = |key: &[u8]| Batch {
            expects: vec![(Table::Users, key.to_vec(), None)],
            writes: vec![(Table::Users, key.to_vec(), Some(b"v".to_vec()))],
        };
        let (applied, result) = metered.commit_group(&[batch(b"a"), batch(b"b"), batch(b"a")]);
        assert_eq!(applied, 2);
        assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
        assert_eq!(inner.groups.load(Ordering::Relaxed), 1);
        assert_eq!(inner.commits.load(Ordering::Relaxed), 0);
    }

    /// `name value` lines of a rendering, by sample name with labels.
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let m = Metrics::new();
        for v in [0.0001, 0.003, 0.003, 7.0, 60.0] {
            m.audit_flush_duration.observe(v);
        }
        let s = samples(&m.render());
        let b = |le: &str| {
            s[&format!("stint_audit_flush_duration_seconds_bucket{{le=\"{le}\"}}")].clone()
        };
        assert_eq!(b("0.0005"), "1");
        assert_eq!(b("0.0025"), "1");
        assert_eq!(b("0.005"), "3");
        assert_eq!(b("5"), "3");
        assert_eq!(b("10"), "4");
        assert_eq!(b("+Inf"), "5");
        assert_eq!(s["stint_audit_flush_duration_seconds_count"], "5");
        let sum: f64 = s["stint_audit_flush_duration_seconds_sum"].parse().unwrap();
        assert!((sum - 67.0061).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn labelled_series_render_with_escaped_values_and_are_capped() {
        let m = Metrics::new();
        m.rpc_requests
            .with(&["/stint.v1.Sts/AssumeRole", "OK"], |c| c.add(2));
        m.logins_failed.with(&["a\"b\\c\nd"], Counter::inc);
        let text = m.render();
        assert!(
            text.contains(
                "stint_rpc_requests_total{rpc=\"/stint.v1.Sts/AssumeRole\",code=\"OK\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("stint_logins_failed_total{reason=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        // Past the cap, new label sets share the `other` series.
        static NAMES: LazyLock<Vec<String>> =
            LazyLock::new(|| (0..MAX_SERIES + 10).map(|i| format!("k{i}")).collect());
        for name in NAMES.iter() {
            m.tokens_minted.with(&[name.as_str()], Counter::inc);
        }
        assert_eq!(m.tokens_minted.snapshot().len(), MAX_SERIES + 1);
        m.tokens_minted
            .with(&["other"], |c| assert_eq!(c.get(), 10));
    }

    #[test]
    fn every_line_is_well_formed_exposition() {
        let m = Metrics::new();
        m.rpc_duration
            .with(&["/stint.v1.Sts/GetSessionToken"], |h| h.observe(0.01));
        m.store_duration.with(&["get"], |h| h.observe(0.0001));
        let text = m.render();
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(declared.insert(name.to_owned()), "declared twice: {line}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("stint_"), "{line}");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| declared.contains(*b)))
                .unwrap_or(name);
            assert!(declared.contains(base), "sample before its TYPE: {line}");
        }
    }

    #[test]
    fn every_rendered_metric_is_documented() {
        let docs = include_str!("../docs/metrics.md");
        let m = Metrics::new();
        let text = m.render();
        let missing: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .filter(|name| !docs.contains(&format!("`{name}`")))
            .collect();
        assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    }

    #[test]
    fn metered_store_times_each_operation_and_counts_failures() {
        let inner = Arc::new(MemoryStore::default());
        let store = MeteredStore::new(inner.clone());
        let count = |op: &'static str| metrics().store_duration.with(&[op], Histogram::count);
        let errors = |op: &'static str| metrics().store_errors.with(&[op], Counter::get);
        let before = (count("get"), count("commit"), errors("commit"));
        store.get(Table::Meta, b"k").unwrap();
        store.commit(&Batch::default()).unwrap();
        inner.refuse_writes(true);
        assert!(store.commit(&Batch::default()).is_err());
        assert!(errors("commit") > before.2);
        assert!(count("get") > before.0);
        assert!(count("commit") >= before.1 + 2);
        assert!(!store.shared());
    }
}
