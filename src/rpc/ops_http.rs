//! The ops listener: plain HTTP/1.1 for probes and scrapers, beside the gRPC port and off
//! unless `[ops] listen` is set.
//!
//! - `GET /healthz`: liveness, `200 ok` while the process serves.
//! - `GET /readyz`: readiness, `200 ready` only while the signing keys are loaded, the
//!   audit log is healthy (what flips gRPC health to NOT_SERVING) and the store answers a
//!   read; else `503` with a short reason. gRPC NOT_SERVING therefore always means 503.
//! - `GET /metrics`: Prometheus text format 0.0.4 ([`crate::metrics`]).
//!
//! Unauthenticated by design (probes and scrapers carry no credentials), so it answers
//! nothing secret: no user names, ARNs, tokens or store URLs, in bodies or labels. It is
//! bounded: GET/HEAD only (others 405), unknown paths 404, request bodies never read,
//! at most [`MAX_CONNECTIONS`] connections (more are closed at once), request heads of
//! at most [`MAX_HEAD_BYTES`] read within [`HEAD_TIMEOUT`], and a connection lives at
//! most [`CONNECTION_LIFETIME`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::metrics::metrics;
use crate::store::Table;

pub const MAX_CONNECTIONS: usize = 64;
/// Of which one address may hold at most: a client keeping idle connections open cannot
/// take every slot from the kubelet's probes.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 32;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long `/readyz` waits for the store's read before it answers 503.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The key `/readyz` reads: any key will do, a missing one included.
const PROBE_KEY: &[u8] = b"ops/readyz";

/// Why the server is not ready: the short text `/readyz` answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    ShuttingDown,
    KeysNotLoaded,
    AuditUnavailable,
    StoreUnavailable,
    StoreTimeout,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ShuttingDown => "shutting down",
            Self::KeysNotLoaded => "signing keys not loaded",
            Self::AuditUnavailable => "audit log unavailable",
            Self::StoreUnavailable => "store unavailable",
            Self::StoreTimeout => "store did not answer in time",
        })
    }
}

/// What `/readyz` checks, shared with the daemon that flips its flags.
pub struct Readiness {
    broker: Arc<Broker>,
    keys_loaded: Arc<AtomicBool>,
    stopping: AtomicBool,
    /// One store probe at a time: a flood of probes makes one read, not one each.
    probe: tokio::sync::Mutex<()>,
    /// Set while a probe's read runs (it may outlive its timeout on the blocking pool).
    probe_running: Arc<AtomicBool>,
}

impl Readiness {
    /// `keys_loaded` is kept by the daemon: set once the keys load, and after each reload.
    pub fn new(broker: Arc<Broker>, keys_loaded: Arc<AtomicBool>) -> Self {
        Self {
            broker,
            keys_loaded,
            stopping: AtomicBool::new(false),
            probe: tokio::sync::Mutex::new(()),
            probe_running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on not ready: load balancers stop sending while requests drain.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn keys_loaded(&self) -> bool {
        self.keys_loaded.load(Ordering::SeqCst)
    }

    /// Ready, or the first reason not to be.
    pub async fn check(&self) -> Result<(), NotReady> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(NotReady::ShuttingDown);
        }
        if !self.keys_loaded() {
            return Err(NotReady::KeysNotLoaded);
        }
        if !self.broker.audit_log().healthy() {
            return Err(NotReady::AuditUnavailable);
        }
        self.probe_store().await
    }

    async fn probe_store(&self) -> Result<(), NotReady> {
        let _one = self.probe.lock().await;
        // A read still hanging from an earlier probe: do not pile up another.
        if self.probe_running.swap(true, Ordering::SeqCst) {
            return Err(NotReady::StoreTimeout);
        }
        let store = self.broker.store().clone();
        let running = self.probe_running.clone();
        let read = tokio::task::spawn_blocking(move || {
            let result = store.get(Table::Meta, PROBE_KEY);
            running.store(false, Ordering::SeqCst);
            result
        });
        match tokio::time::timeout(STORE_PROBE_TIMEOUT, read).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(err))) => {
                tracing::warn!(error = %err, "readiness: store read failed");
                Err(NotReady::StoreUnavailable)
            }
            Ok(Err(_)) => {
                self.probe_running.store(false, Ordering::SeqCst);
                Err(NotReady::StoreUnavailable)
            }
            Err(_) => Err(NotReady::StoreTimeout),
        }
    }
}

/// The ops routes (GET and HEAD; axum answers 405 to other methods on them).
pub fn router(readiness: Arc<Readiness>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(readiness)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".into())
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    match readiness.check().await {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics_text(State(readiness): State<Arc<Readiness>>) -> Response {
    let m = metrics();
    m.audit_log_healthy
        .set(i64::from(readiness.broker.audit_log().healthy()));
    m.signing_keys_loaded
        .set(i64::from(readiness.keys_loaded()));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n".into())
}

/// One connection's place in its address's count, given back on drop.
struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

/// What the per-address limit counts by: an IPv4 address (IPv4-mapped ones included), or
/// an IPv6 /64, which one host usually holds whole.
fn client_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

impl AddressSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let ip = client_network(ip);
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = map.entry(ip).or_insert(0);
        if *held >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *held += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = map.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves the ops routes on `listener` until `stop` turns true (or its sender is
/// dropped); then closes every connection.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(readiness);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(Mutex::new(HashMap::new()));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            changed = stop.wait_for(|stop| *stop) => {
                let _ = changed;
                break;
            }
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "ops listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over either limit: dropping the stream closes it.
        let Some(address_slot) = AddressSlot::take(&per_address, peer.ip()) else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _slots = (slot, address_slot);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .max_headers(MAX_HEADERS);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
    connections.abort_all();
    // Wait for them to go: they hold the broker, and so the store.
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::core::time::ManualClock;
    use crate::daemon::Daemon;
    use crate::store::memory::MemoryStore;
    use crate::store::seal::MasterKey;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[test]
    fn the_per_address_limit_counts_an_ipv6_slash_64_as_one_client() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let held: Vec<AddressSlot> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|n| AddressSlot::take(&counts, ip(&format!("2001:db8:1:2::{n:x}"))).unwrap())
            .collect();
        // Another address of the same /64 is the same client; another /64 is not.
        assert!(AddressSlot::take(&counts, ip("2001:db8:1:2:ffff::1")).is_none());
        assert!(AddressSlot::take(&counts, ip("2001:db8:1:3::1")).is_some());
        // An IPv4 client counts alike whether it comes mapped or not.
        let v4: Vec<AddressSlot> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| AddressSlot::take(&counts, ip("::ffff:10.0.0.7")).unwrap())
            .collect();
        assert!(AddressSlot::take(&counts, ip("10.0.0.7")).is_none());
        drop((held, v4));
        assert!(counts.lock().unwrap().is_empty());
    }

    async fn readiness() -> (Arc<Readiness>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let master = MasterKey::generate(&ring::rand::SystemRandom::new()).unwrap();
        let clock = Arc::new(ManualClock::new(
            std::time::UNIX_EPOCH + Duration::from_secs(1 << 30),
        ));
        let mut config = Config::default();
        config.argon2.memory_kib = 8;
        config.argon2.iterations = 1;
        let daemon = Daemon::assemble(config, store.clone(), master, clock).unwrap();
        let loaded = Arc::new(AtomicBool::new(true));
        (
            Arc::new(Readiness::new(daemon.broker.clone(), loaded)),
            store,
        )
    }

    async fn call(
        app: &axum::Router,
        method: &str,
        path: &str,
    ) -> (StatusCode, String, Option<String>) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from("ignored body"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    #[tokio::test]
    async fn routes_methods_and_unknown_paths() {
        let (ready, _) = readiness().await;
        let app = router(ready);
        let cases = [
            ("GET", "/healthz", StatusCode::OK, "ok\n"),
            ("HEAD", "/healthz", StatusCode::OK, ""),
            ("GET", "/readyz", StatusCode::OK, "ready\n"),
            ("POST", "/healthz", StatusCode::METHOD_NOT_ALLOWED, ""),
            ("PUT", "/metrics", StatusCode::METHOD_NOT_ALLOWED, ""),
            ("DELETE", "/readyz", StatusCode::METHOD_NOT_ALLOWED, ""),
            ("GET", "/", StatusCode::NOT_FOUND, "not found\n"),
            ("GET", "/metrics/", StatusCode::NOT_FOUND, "not found\n"),
            (
                "GET",
                "/.well-known/jwks.json",
                StatusCode::NOT_FOUND,
                "not found\n",
            ),
        ];
        for (method, path, status, body) in cases {
            let (got, text, _) = call(&app, method, path).await;
            assert_eq!(got, status, "{method} {path}");
            assert_eq!(text, body, "{method} {path}");
        }
        let (status, body, content_type) = call(&app, "GET", "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            content_type.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(body.contains("# TYPE stint_build_info gauge"), "{body}");
        assert!(body.contains("stint_signing_keys_loaded 1\n"), "{body}");
    }

    #[tokio::test]
    async fn not_ready_reasons_in_order() {
        let (ready, store) = readiness().await;
        assert_eq!(ready.check().await, Ok(()));
        // A failed audit append turns the log unhealthy (gRPC health NOT_SERVING).
        store.refuse_writes(true);
        let event = crate::audit::event::Event::new(
            1,
            "sts:AssumeRole",
            crate::audit::event::Outcome::Allow,
        );
        let appended = ready.broker.audit_log().append(event).await;
        assert!(appended.is_err(), "{appended:?}");
        assert!(!ready.broker.audit_log().healthy());
        assert_eq!(ready.check().await, Err(NotReady::AuditUnavailable));
        ready.keys_loaded.store(false, Ordering::SeqCst);
        assert_eq!(ready.check().await, Err(NotReady::KeysNotLoaded));
        ready.set_stopping();
        assert_eq!(ready.check().await, Err(NotReady::ShuttingDown));
        let app = router(ready);
        let (status, body, _) = call(&app, "GET", "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: shutting down\n");
    }
}
