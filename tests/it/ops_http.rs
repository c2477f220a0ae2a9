//! The ops listener over a real server: probes, readiness following the store and the
//! audit log, Prometheus metrics of the RPCs just made (and nothing that names a user),
//! and its bounds (methods, paths, connections, header size).
//!
//! The metrics registry is process-wide and other tests run servers at the same time, so
//! these tests assert increases, never exact values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use stint::store::{Batch, Entries, Entry, Store, StoreError, Table};

use crate::common::{FAULT_FLUSH_TIMEOUT, FaultStore, TestServer, arn, assume, trust};

/// A distinctive user name: it must never show up in `/metrics`.
const USER: &str = "zebulon-ops-7719";
const PASSWORD: &str = "zebulon-password-1";
const ROLE: &str = "ops-metrics-role-4412";

async fn ops_server() -> TestServer {
    TestServer::builder()
        .config(|c| c.ops.listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await
}

fn ops(server: &TestServer) -> SocketAddr {
    server.ops_addr.expect("ops listener bound")
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, head, body).
async fn request(addr: SocketAddr, raw: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8(bytes).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = request(addr, &raw).await;
    (status, body)
}

/// `/metrics` as sample (name with labels) → value.
async fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, head, body) = request(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("text/plain; version=0.0.4"),
        "exposition content type: {head}"
    );
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_owned(), value.parse().expect("numeric value"))
        })
        .collect();
    (body, samples)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// Polls `/readyz` (bounded) until it answers `want`; returns the body.
async fn readyz_becomes(addr: SocketAddr, want: u16) -> String {
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = call(addr, "GET", "/readyz").await;
        if last.0 == want {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {want}; last {last:?}");
}

#[tokio::test]
async fn probes_answer_and_the_listener_is_bounded() {
    let server = ops_server().await;
    let addr = ops(&server);
    assert_ne!(addr, server.addr);
    assert_eq!(call(addr, "GET", "/healthz").await, (200, "ok\n".into()));
    assert_eq!(call(addr, "HEAD", "/healthz").await, (200, String::new()));
    assert_eq!(call(addr, "GET", "/readyz").await, (200, "ready\n".into()));
    for (method, path, status) in [
        ("POST", "/healthz", 405),
        ("POST", "/metrics", 405),
        ("PUT", "/readyz", 405),
        ("GET", "/nope", 404),
        ("GET", "/.well-known/jwks.json", 404),
        ("GET", "/stint.v1.Sts/AssumeRole", 404),
    ] {
        assert_eq!(call(addr, method, path).await.0, status, "{method} {path}");
    }
    // A POST body is not read (and does not make the request succeed).
    let (status, _, _) = request(
        addr,
        &format!(
            "POST /readyz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        ),
    )
    .await;
    assert_eq!(status, 405);
    // An oversized request head is refused, not buffered.
    let big = "x".repeat(20 * 1024);
    let (status, _, body) = request(
        addr,
        &format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_ne!(status, 200, "{body}");
    use stint::rpc::ops_http::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS};
    // One address holding its share of idle connections: its next one is closed at once,
    // while another address (the kubelet's) is still served.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
        idle.push(connect_from(30, addr).await);
    }
    assert_closed_unanswered(connect_from(30, addr).await).await;
    assert_eq!(call(addr, "GET", "/healthz").await.0, 200);
    // Past the whole listener's limit (from several addresses), closed too.
    for n in 0..(MAX_CONNECTIONS / MAX_CONNECTIONS_PER_ADDRESS - 1) {
        for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
            idle.push(connect_from(31 + n as u8, addr).await);
        }
    }
    assert_closed_unanswered(connect_from(60, addr).await).await;
    drop(idle);
    let mut healthy = false;
    for _ in 0..200 {
        if call(addr, "GET", "/healthz").await.0 == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "slots come back once the idle connections close");
    // The gRPC port is unaffected by the ops listener and does not serve its routes.
    assert_eq!(
        crate::common::http_get(server.addr, "/healthz").await.0,
        404
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_rpcs_logins_and_tokens_without_naming_users() {
    let server = ops_server().await;
    let addr = ops(&server);
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, USER, PASSWORD)
        .await;
    server
        .create_role(&admin, ROLE, trust(&arn("user", USER), None))
        .await;
    let (_, before) = scrape(addr).await;

    // One failed login (wrong password), one good one, one AssumeRole.
    let failed = server.login(USER, "wrong-password-xyz", None).await;
    assert_eq!(failed.unwrap_err().code(), Code::Unauthenticated);
    server.after_failure();
    let session = server.session(USER, PASSWORD).await;
    server
        .sts_as(&session)
        .assume_role(assume(ROLE, "zebulon-session-9911"))
        .await
        .expect("AssumeRole");

    let (text, after) = scrape(addr).await;
    let grew = |series: &str, by: f64| {
        let (b, a) = (value(&before, series), value(&after, series));
        assert!(a >= b + by, "{series}: {b} -> {a}\n{text}");
    };
    grew(
        r#"stint_rpc_requests_total{rpc="/stint.v1.Sts/AssumeRole",code="OK"}"#,
        1.0,
    );
    grew(
        r#"stint_rpc_requests_total{rpc="/stint.v1.Sts/GetSessionToken",code="UNAUTHENTICATED"}"#,
        1.0,
    );
    grew(
        r#"stint_rpc_requests_total{rpc="/stint.v1.Sts/GetSessionToken",code="OK"}"#,
        1.0,
    );
    grew(
        r#"stint_logins_failed_total{reason="invalid_credentials"}"#,
        1.0,
    );
    grew("stint_logins_succeeded_total", 1.0);
    grew(r#"stint_tokens_minted_total{kind="session"}"#, 1.0);
    grew(r#"stint_tokens_minted_total{kind="role"}"#, 1.0);
    grew(
        r#"stint_rpc_duration_seconds_count{rpc="/stint.v1.Sts/AssumeRole"}"#,
        1.0,
    );
    grew(
        r#"stint_store_operation_duration_seconds_count{op="commit"}"#,
        1.0,
    );
    grew(
        r#"stint_store_operation_duration_seconds_count{op="get"}"#,
        1.0,
    );
    grew("stint_audit_flush_batch_size_count", 1.0);
    grew("stint_audit_flush_duration_seconds_count", 1.0);
    assert_eq!(value(&after, "stint_signing_keys_loaded"), 1.0);
    assert_eq!(value(&after, "stint_audit_log_healthy"), 1.0);
    assert!(text.contains(&format!(
        "stint_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));

    // Histograms: cumulative buckets ending in +Inf == _count, for every series.
    for (series, count) in after.iter().filter(|(s, _)| s.contains("_count")) {
        let (name, labels) = series.split_once("_count").unwrap();
        let inner = labels.trim_start_matches('{').trim_end_matches('}');
        let prefix = if inner.is_empty() {
            format!("{name}_bucket{{")
        } else {
            format!("{name}_bucket{{{inner},")
        };
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert!(buckets.len() >= 2, "{series}: no buckets\n{text}");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{series}");
        let inf = text
            .lines()
            .find(|l| l.starts_with(&prefix) && l.contains("le=\"+Inf\""))
            .unwrap_or_else(|| panic!("{series}: no +Inf bucket"));
        assert_eq!(
            inf.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap(),
            *count
        );
    }

    // Nothing that names a principal, a role or a session, nor any token.
    for secret in [
        USER,
        ROLE,
        "zebulon",
        PASSWORD,
        &session[..20],
        ":user/",
        ":role/",
    ] {
        assert!(!text.contains(secret), "{secret:?} in /metrics");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_follows_the_audit_log_like_grpc_health() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let store = Arc::new(FaultStore::default());
    let server = TestServer::builder()
        .faults(&store)
        .config(|c| c.ops.listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await;
    let addr = ops(&server);
    assert_eq!(readyz_becomes(addr, 200).await, "ready\n");

    store.refuse_all(true);
    let login = tokio::time::timeout(
        FAULT_FLUSH_TIMEOUT * 10,
        server.login("admin", "wrong", None),
    )
    .await
    .expect("answers within the bound");
    assert!(login.is_err());
    server.health_becomes(ServingStatus::NotServing).await;
    assert_eq!(
        readyz_becomes(addr, 503).await,
        "not ready: audit log unavailable\n"
    );
    let (_, samples) = scrape(addr).await;
    assert_eq!(value(&samples, "stint_audit_log_healthy"), 0.0);
    assert_eq!(
        call(addr, "GET", "/healthz").await.0,
        200,
        "alive while not ready"
    );

    store.refuse_all(false);
    server.health_becomes(ServingStatus::Serving).await;
    assert_eq!(readyz_becomes(addr, 200).await, "ready\n");
    server.stop().await.unwrap();
}

/// A [`FaultStore`] whose reads can fail too.
#[derive(Default)]
struct ReadFaults {
    inner: FaultStore,
    refuse_reads: AtomicBool,
}

impl ReadFaults {
    fn read(&self) -> Result<(), StoreError> {
        if self.refuse_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Io(
                "reads refused (test fault) postgres://stint:hunter2@db".into(),
            ));
        }
        Ok(())
    }
}

impl Store for ReadFaults {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read()?;
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.read()?;
        self.inner.scan(table, prefix, after, limit)
    }
    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
        self.read()?;
        self.inner.last(table)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.inner.commit(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

#[tokio::test]
async fn readyz_is_503_while_the_store_cannot_be_read_and_says_nothing_secret() {
    let store = Arc::new(ReadFaults::default());
    let server = TestServer::builder()
        .store(store.clone())
        .config(|c| c.ops.listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await;
    let addr = ops(&server);
    assert_eq!(call(addr, "GET", "/readyz").await, (200, "ready\n".into()));
    let (_, before) = scrape(addr).await;

    store.refuse_reads.store(true, Ordering::SeqCst);
    let (status, body) = call(addr, "GET", "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: store unavailable\n")
    );
    for secret in ["hunter2", "postgres://"] {
        assert!(!body.contains(secret));
    }
    assert_eq!(call(addr, "GET", "/healthz").await.0, 200);
    let (_, after) = scrape(addr).await;
    let errors = r#"stint_store_operation_errors_total{op="get"}"#;
    assert!(value(&after, errors) > value(&before, errors));

    store.refuse_reads.store(false, Ordering::SeqCst);
    assert_eq!(call(addr, "GET", "/readyz").await, (200, "ready\n".into()));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn no_ops_listener_unless_configured() {
    let server = TestServer::start().await;
    assert_eq!(server.ops_addr, None);
    server.stop().await.unwrap();
}

/// The real binary under a fake service manager: `READY=1` once serving (the ops
/// listener answers by then), `STOPPING=1` on SIGTERM, then a clean exit.
#[tokio::test]
async fn serve_notifies_systemd_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let ops_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_stint"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        .env("STINT_DATA_DIR", dir.path().join("data"))
        .env("STINT_ARGON2__MEMORY_KIB", "8")
        .env("STINT_ARGON2__ITERATIONS", "1")
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("STINT_CONFIG")
        .env_remove("STINT_OPS__LISTEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stint serve starts");
    let mut child = KillOnDrop(Some(child));
    let receive = |manager: &UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("a notification in time");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let ready = receive(&manager);
    assert!(ready.starts_with("READY=1\nSTATUS=serving"), "{ready:?}");
    let ops: SocketAddr = format!("127.0.0.1:{ops_port}").parse().unwrap();
    assert_eq!(call(ops, "GET", "/readyz").await, (200, "ready\n".into()));

    let child = child.0.take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = receive(&manager);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    let status = child.wait_with_output().unwrap().status;
    assert!(status.success(), "{status}");
}

/// Kills the child if the test fails before it stopped it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connect_from(last: u8, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
        .unwrap();
    socket.connect(addr).await.expect("connect")
}

async fn assert_closed_unanswered(mut extra: TcpStream) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(20), extra.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "a connection over the limit is closed unanswered");
}
