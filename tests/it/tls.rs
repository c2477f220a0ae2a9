//! TLS that just works (issue 10, deliver 5): `--dev-tls` certificates trusted through their
//! CA and refused without it or with another CA; mTLS refusing clients without a
//! certificate from the client CA; certificate reload that keeps open connections; and the
//! real binary printing how clients trust its dev CA and reloading on SIGHUP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use stint::broker::ManualClock;
use stint::cli::client::{ClientTls, connect_with};
use stint::config::{Argon2Config, Config};
use stint::daemon::Daemon;
use stint::rpc::tls::dev::{self, DevTls};
use stint::rpc::tls::{ServerTls, TlsSource};
use stint::store::seal::MasterKey;

use crate::common::{start_time, test_lockout};

/// A daemon serving TLS on `127.0.0.1:0` until dropped.
struct TlsServer {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(tls: ServerTls) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().join("data"),
            argon2: Argon2Config {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            lockout: test_lockout(),
            ..Config::default()
        };
        let clock = Arc::new(ManualClock::new(start_time()));
        let master = MasterKey::generate(&ring::rand::SystemRandom::new()).expect("master key");
        let daemon = Daemon::open_with_master(config, master, clock).expect("daemon opens");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            daemon
                .serve_tls(listener, Some(tls), async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| e.to_string())
        });
        Self {
            port,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    fn endpoint(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("clean TLS shutdown");
        }
    }
}

fn trusting(ca: &Path) -> ClientTls {
    ClientTls {
        ca_cert: Some(ca.to_path_buf()),
        ..ClientTls::default()
    }
}

/// One health check over `channel`.
async fn health_on(channel: Channel) -> Result<(), String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

/// Connects the way the CLI does and makes one call; the error text otherwise. (Under
/// TLS 1.3 a refused client certificate only shows on the first call.)
async fn health(endpoint: &str, tls: &ClientTls) -> Result<Channel, String> {
    let channel = connect_with(endpoint, tls)
        .await
        .map_err(|e| e.to_string())?;
    health_on(channel.clone()).await?;
    Ok(channel)
}

fn dev_certs(dir: &Path) -> DevTls {
    dev::ensure(dir, &[], start_time()).expect("dev certificates")
}

fn source(dev: &DevTls, client_ca: Option<PathBuf>) -> TlsSource {
    TlsSource {
        cert_file: dev.server_cert.clone(),
        key_file: dev.server_key.clone(),
        client_ca_file: client_ca,
    }
}

/// `GET path` over HTTPS/1.1 trusting `ca`: (status line, body).
async fn https_get(port: u16, ca: &Path, path: &str) -> (String, String) {
    let roots = stint::rpc::tls::root_store(&std::fs::read(ca).unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("HTTPS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[tokio::test]
async fn dev_tls_is_trusted_through_its_ca_and_refused_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev_certs(dir.path());
    let other = dev_certs(&dir.path().join("other"));
    let server = TlsServer::start(ServerTls::from_files(source(&dev, None)).unwrap()).await;

    // The CA that signed the server certificate: accepted, by name and by IP SAN.
    for host in ["localhost", "127.0.0.1"] {
        health(&server.endpoint(host), &trusting(&dev.ca_cert))
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    // The system roots alone do not know a local CA.
    let err = health(&server.endpoint("localhost"), &ClientTls::default())
        .await
        .unwrap_err();
    assert!(
        err.contains("--ca-cert") || err.contains("no trusted CA"),
        "{err}"
    );
    // Another dev CA: refused.
    let err = health(&server.endpoint("localhost"), &trusting(&other.ca_cert))
        .await
        .unwrap_err();
    assert!(err.contains("not signed by the --ca-cert CA"), "{err}");
    // The server certificate is not a CA: trusting it as one does not work either.
    let err = health(&server.endpoint("localhost"), &trusting(&dev.server_cert))
        .await
        .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
    // Plain HTTP/2 to the TLS port is not served.
    assert!(
        health(
            &format!("http://127.0.0.1:{}", server.port),
            &ClientTls::default()
        )
        .await
        .is_err()
    );

    // The .well-known routes work over TLS too (HTTP/1.1 by ALPN).
    let (status, body) = https_get(server.port, &dev.ca_cert, "/.well-known/jwks.json").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"keys\""), "{body}");
    let (status, body) = https_get(
        server.port,
        &dev.ca_cert,
        "/.well-known/openid-configuration",
    )
    .await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("https://localhost"), "{body}");
    server.stop().await;
}

/// A CA and a client certificate it signed, written as PEM files in `dir`: (ca, cert, key).
fn client_ca_and_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} client CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![format!("{name}.service")]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name}.service"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test]
async fn mtls_requires_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dev_certs(dir.path());
    let (client_ca, cert, key) = client_ca_and_cert(dir.path(), "billing");
    let (_, rogue_cert, rogue_key) = client_ca_and_cert(dir.path(), "rogue");
    let server =
        TlsServer::start(ServerTls::from_files(source(&dev, Some(client_ca))).unwrap()).await;
    let endpoint = server.endpoint("localhost");

    let err = health(&endpoint, &trusting(&dev.ca_cert))
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("certificate"),
        "no client certificate: {err}"
    );
    let rogue = ClientTls {
        client_cert: Some(rogue_cert),
        client_key: Some(rogue_key),
        ..trusting(&dev.ca_cert)
    };
    health(&endpoint, &rogue)
        .await
        .expect_err("a certificate from another CA is refused");
    let good = ClientTls {
        client_cert: Some(cert.clone()),
        client_key: Some(key),
        ..trusting(&dev.ca_cert)
    };
    health(&endpoint, &good)
        .await
        .expect("a certificate from the client CA is accepted");
    // Half an identity is refused before connecting.
    let half = ClientTls {
        client_cert: Some(cert),
        ..trusting(&dev.ca_cert)
    };
    let err = connect_with(&endpoint, &half)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--tls-cert and --tls-key"), "{err}");
    server.stop().await;
}

fn copy_pair(from: &DevTls, to: &TlsSource) {
    std::fs::copy(&from.server_cert, &to.cert_file).unwrap();
    std::fs::copy(&from.server_key, &to.key_file).unwrap();
}

#[tokio::test]
async fn reload_switches_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = dev_certs(&dir.path().join("first"));
    let second = dev_certs(&dir.path().join("second"));
    let served = TlsSource {
        cert_file: dir.path().join("server.pem"),
        key_file: dir.path().join("server.key"),
        client_ca_file: None,
    };
    copy_pair(&first, &served);
    let tls = ServerTls::from_files(served.clone()).unwrap();
    let server = TlsServer::start(tls.clone()).await;
    let endpoint = server.endpoint("localhost");
    let open = health(&endpoint, &trusting(&first.ca_cert)).await.unwrap();

    copy_pair(&second, &served);
    tls.reload().expect("reload the new pair");
    // The open connection was made with the first certificate and keeps working (a
    // reconnect would now be refused: the server presents the second one).
    for _ in 0..3 {
        health_on(open.clone())
            .await
            .expect("open connection survives reload");
    }
    health(&endpoint, &trusting(&first.ca_cert))
        .await
        .expect_err("new connections get the new certificate");
    health(&endpoint, &trusting(&second.ca_cert))
        .await
        .expect("new connections trust the new CA");

    // A broken pair (key of another certificate) is refused; the second pair stays.
    std::fs::copy(&first.server_key, &served.key_file).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
    health(&endpoint, &trusting(&second.ca_cert))
        .await
        .expect("still the second certificate");
    health_on(open).await.expect("and the first connection");
    server.stop().await;
}

/// The secure-transport condition key is true on a connection accepted by the reloadable
/// acceptor (tonic's `TlsConnectInfo` is there); the full policy decision over TLS is
/// `attacks_sts::secure_transport_is_true_over_tls_only`.
#[tokio::test]
async fn the_tls_acceptor_reports_secure_transport_and_peer_address() {
    use stint::rpc::auth::meta;
    use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
    let dir = tempfile::tempdir().unwrap();
    let dev = dev_certs(dir.path());
    let tls = ServerTls::from_files(source(&dev, None)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut incoming, _accept) = stint::rpc::tls::incoming(listener, tls, Default::default());
    let client = tokio::spawn(async move {
        let endpoint = format!("https://localhost:{port}");
        let channel = connect_with(&endpoint, &trusting(&dev.ca_cert)).await;
        // Stay connected: a closed socket has no peer address to report.
        std::future::pending::<()>().await;
        drop(channel);
    });
    let stream = tokio_stream::StreamExt::next(&mut incoming)
        .await
        .expect("a connection")
        .expect("handshake");
    let info: TlsConnectInfo<TcpConnectInfo> = stream.connect_info();
    let mut request = tonic::Request::new(());
    request.extensions_mut().insert(info);
    let meta = meta(&request);
    assert!(meta.secure_transport);
    assert_eq!(meta.source_ip, Some(std::net::IpAddr::from([127, 0, 0, 1])));
    client.abort();
}

const BIN: &str = env!("CARGO_BIN_EXE_stint");

/// Kills the process if the test fails before stopping it.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn completions_and_man_page_come_from_the_binary() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for word in ["serve", "assume-role", "dev-tls", "ca-cert"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        ".TH stint 1",
        "stint\\-serve",
        "stint\\-completions",
        "stint\\-man",
    ] {
        assert!(text.contains(word), "man page lacks {word}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

#[tokio::test]
async fn serve_dev_tls_prints_how_to_trust_it_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--dev-tls",
            "--tls-san",
            "stint.test",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("STINT_DATA_DIR", &data)
        .env("STINT_ARGON2__MEMORY_KIB", "8")
        .env("STINT_ARGON2__ITERATIONS", "1")
        .env("RUST_LOG", "info")
        .env_remove("STINT_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stint serve starts");
    let mut guard = KillOnDrop(None);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let tx = lines_tx.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(format!("out {line}"));
        }
    });
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(format!("err {line}"));
        }
    });
    let pid = child.id().to_string();
    guard.0 = Some(child);
    let mut out = String::new();
    let mut log = Vec::new();
    let mut port = None;
    while port.is_none() || !out.contains("curl --cacert") {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no trust instructions; stdout:\n{out}\nlog:\n{log:?}"));
        if let Some(text) = line.strip_prefix("out ") {
            out.push_str(text);
            out.push('\n');
        } else if let Some(text) = line.strip_prefix("err ") {
            if let Some(addr) = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
            {
                port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            }
            log.push(text.to_string());
        }
    }
    let port = port.unwrap();
    let ca = std::path::absolute(data.join("tls/ca.pem")).unwrap();
    let ca_text = ca.display().to_string();
    for want in [
        format!("stint login --endpoint https://localhost:{port} --ca-cert {ca_text}"),
        format!("export STINT_ENDPOINT=https://localhost:{port} STINT_CA_CERT={ca_text}"),
        "localhost, 127.0.0.1, ::1, stint.test".to_string(),
    ] {
        assert!(out.contains(&want), "stdout lacks {want:?}:\n{out}");
    }
    let endpoint = format!("https://localhost:{port}");
    let open = health(&endpoint, &trusting(&ca))
        .await
        .expect("the printed CA is trusted");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tls/server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Replace the pair with one from another CA and send SIGHUP: new connections get it.
    let other = dev_certs(&dir.path().join("other"));
    std::fs::copy(&other.server_cert, data.join("tls/server.pem")).unwrap();
    std::fs::copy(&other.server_key, data.join("tls/server.key")).unwrap();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    let mut switched = false;
    for _ in 0..100 {
        if health(&endpoint, &trusting(&other.ca_cert)).await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "SIGHUP did not switch the certificate");
    health_on(open)
        .await
        .expect("the open connection survives SIGHUP");

    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    // Wait off the runtime: the client connections must be able to see the server's
    // GOAWAY and close, or the graceful shutdown waits for them.
    let mut child = guard.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean shutdown after SIGHUP");
}
