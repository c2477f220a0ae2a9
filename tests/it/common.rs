//! The harness: a real Stint daemon on `127.0.0.1:0` with a temp data dir, a manual clock
//! and a bootstrapped admin, plus typed clients and helpers to log in and read tokens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use stint::broker::{Broker, ManualClock};
use stint::config::{Argon2Config, Config, LockoutConfig};
use stint::core::authn::totp;
use stint::core::secret::SecretString;
use stint::daemon::{Daemon, DaemonError};
use stint::proto::audit_client::AuditClient;
use stint::proto::get_session_token_request::Credential;
use stint::proto::iam_client::IamClient;
use stint::proto::keys_client::KeysClient;
use stint::proto::sts_client::StsClient;
use stint::proto::tokens_client::TokensClient;
use stint::proto::{self, AuditEvent};
use stint::rpc::TlsFiles;
use stint::store::memory::MemoryStore;
use stint::store::seal::MasterKey;
use stint::store::{Batch, Entries, Entry, Store, StoreError, Table};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
pub const ACCOUNT: &str = "000000000000";

/// `arn:stint:iam::000000000000:<kind>/<name>`.
pub fn arn(kind: &str, name: &str) -> String {
    format!("arn:stint:iam::{ACCOUNT}:{kind}/{name}")
}

/// A built-in managed policy's ARN.
pub fn builtin(name: &str) -> String {
    format!("arn:stint:iam::aws:policy/{name}")
}

/// Lockout tuning used by every test server: short back-off so a test can step past it
/// with [`TestServer::after_failure`].
pub fn test_lockout() -> LockoutConfig {
    LockoutConfig {
        max_failures: 5,
        base_delay_ms: 100,
        max_delay_ms: 1_000,
        lockout_seconds: 300,
        reset_after_seconds: 900,
        ..LockoutConfig::default()
    }
}

/// The config every test server starts from: data in `data_dir`, cheap Argon2,
/// [`test_lockout`].
pub fn test_config(data_dir: PathBuf) -> Config {
    Config {
        data_dir,
        argon2: Argon2Config {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
        lockout: test_lockout(),
        ..Config::default()
    }
}

/// How long the audit log waits for a flush on a server over a [`FaultStore`]: a refused
/// write answers well within a test's patience.
pub const FAULT_FLUSH_TIMEOUT: Duration = Duration::from_millis(200);

/// A [`MemoryStore`] that fails on demand, to show that a change committed apart from its
/// audit event would land while one committed with it cannot.
#[derive(Default)]
pub struct FaultStore {
    inner: MemoryStore,
    refuse_audit: AtomicBool,
    refuse_flush: AtomicBool,
    /// Committed batches that write something but append no audit record.
    unaudited: std::sync::atomic::AtomicUsize,
}

impl FaultStore {
    /// While set, every batch that appends to the audit log fails; all others commit.
    pub fn refuse_audit(&self, refuse: bool) {
        self.refuse_audit.store(refuse, Ordering::SeqCst);
    }

    /// While set, every flush fails.
    pub fn refuse_flush(&self, refuse: bool) {
        self.refuse_flush.store(refuse, Ordering::SeqCst);
    }

    /// While set, every commit and flush fails.
    pub fn refuse_all(&self, refuse: bool) {
        self.inner.refuse_writes(refuse);
    }

    /// How many committed batches wrote something without an audit record.
    pub fn unaudited_commits(&self) -> usize {
        self.unaudited.load(Ordering::SeqCst)
    }

    /// Every row of every table.
    pub fn snapshot(&self) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut rows = Vec::new();
        for table in Table::ALL {
            for (key, value) in self.inner.scan(table, b"", None, usize::MAX).expect("scan") {
                rows.push((table, key, value));
            }
        }
        rows
    }
}

impl Store for FaultStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.inner.scan(table, prefix, after, limit)
    }
    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
        self.inner.last(table)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let appends = batch
            .writes
            .iter()
            .any(|(table, ..)| *table == Table::Audit);
        if appends && self.refuse_audit.load(Ordering::SeqCst) {
            return Err(StoreError::Io("audit writes refused (test fault)".into()));
        }
        self.inner.commit(batch)?;
        if !appends && !batch.writes.is_empty() {
            self.unaudited.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.refuse_flush.load(Ordering::SeqCst) {
            return Err(StoreError::Io("flush refused (test fault)".into()));
        }
        self.inner.flush()
    }
}

/// A daemon over `store` with the test config, neither serving nor bootstrapped: for what
/// happens before a server starts (its first keys, its first admin).
pub fn unstarted_daemon(
    store: Arc<dyn Store>,
    master: &MasterKey,
    clock: &Arc<ManualClock>,
) -> Result<Daemon, DaemonError> {
    let config = test_config(std::env::temp_dir().join("stint-unused-data-dir"));
    Daemon::assemble(config, store, master.clone(), clock.clone())
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(
            format!("Bearer {token}")
                .parse()
                .expect("token is ASCII metadata"),
        )
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

/// What a test's load balancer puts before its connection's bytes.
#[derive(Clone, Copy, Debug)]
pub enum ProxyHeader<'a> {
    /// Nothing: a proxy that forgot to send one, or a plain client.
    None,
    /// A PROXY v2 header naming this client (`address:port`).
    V2(&'a str),
    /// A PROXY v1 line naming this client.
    V1(&'a str),
}

impl ProxyHeader<'_> {
    fn encode(self, target: SocketAddr) -> Vec<u8> {
        let parse = |client: &str| -> SocketAddr { client.parse().expect("client address") };
        match self {
            Self::None => Vec::new(),
            Self::V2(client) => stint::core::proxy_header::encode(parse(client), target),
            Self::V1(client) => stint::core::proxy_header::encode_v1(parse(client), target),
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The ops listener's address, when `config.ops.listen` is set (port 0 is fine).
    pub ops_addr: Option<SocketAddr>,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    /// The bootstrapped admin's TOTP seed.
    pub admin_seed: Vec<u8>,
    pub admin_serial: String,
    channel: Channel,
    /// Last TOTP step handed out per seed, so helpers never replay a code (shared with
    /// replicas).
    used_steps: Arc<Mutex<HashMap<Vec<u8>, u64>>>,
    /// The broker the daemon serves (for use cases with no RPC: sweep, key purge).
    /// `None` once [`TestServer::stop_keeping_data`] released it.
    broker: Option<Arc<Broker>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    dir: Option<TempDir>,
    master: MasterKey,
    /// The store given to the builder (`None`: sled in `dir`).
    injected_store: Option<Arc<dyn Store>>,
    /// The server's certificate and key, when it serves TLS.
    tls: Option<TestTls>,
}

/// A PEM certificate for `localhost` and its private key.
#[derive(Clone)]
pub struct TestTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A daemon over the injected store, or over sled in `config.data_dir`.
fn open_daemon(
    config: &Config,
    store: Option<Arc<dyn Store>>,
    master: &MasterKey,
    clock: &Arc<ManualClock>,
) -> Daemon {
    match store {
        Some(store) => Daemon::assemble(config.clone(), store, master.clone(), clock.clone()),
        None => Daemon::open_with_master(config.clone(), master.clone(), clock.clone()),
    }
    .expect("daemon opens")
}

struct Running {
    addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
    channel: Channel,
    broker: Arc<Broker>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), String>>,
}

/// Serves `daemon` on `127.0.0.1:0` (over TLS when given) until told to stop.
async fn serve_daemon(daemon: Daemon, tls: Option<&TestTls>) -> Running {
    let broker = daemon.broker.clone();
    let ops_addr = daemon.bind_ops().await.expect("bind ops listener");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, rx) = oneshot::channel::<()>();
    let files = tls.map(|tls| TlsFiles {
        cert_pem: tls.cert_pem.as_bytes().to_vec(),
        key_pem: tls.key_pem.as_bytes().to_vec(),
    });
    let task = tokio::spawn(async move {
        daemon
            .serve(listener, files, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| e.to_string())
    });
    let channel = endpoint(addr, tls).connect().await.expect("connect");
    Running {
        addr,
        ops_addr,
        channel,
        broker,
        shutdown,
        task,
    }
}

/// The endpoint of a test server at `addr`: plain, or TLS trusting its certificate.
fn endpoint(addr: SocketAddr, tls: Option<&TestTls>) -> tonic::transport::Endpoint {
    match tls {
        None => Channel::from_shared(format!("http://{addr}")).expect("uri"),
        Some(tls) => Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .expect("uri")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.cert_pem))
                    .domain_name("localhost"),
            )
            .expect("tls config"),
    }
}

/// A fixed, realistic start: the current time rounded down to a whole minute, so the
/// clock starts on a TOTP step boundary (and tokens are not expired for offline checks).
#[allow(clippy::disallowed_methods)] // The manual clock starts from the wall clock.
pub fn start_time() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(secs - secs % 60)
}

/// One adjustment of the test config.
pub type ConfigTweak = Box<dyn FnOnce(&mut Config) + Send>;

/// Builds a [`TestServer`]: the one harness every integration test uses. By default the
/// daemon runs over sled in a temp data dir; [`Self::store`] puts it over any store (the
/// in-memory one, or one that injects faults).
#[derive(Default)]
pub struct TestServerBuilder {
    store: Option<Arc<dyn Store>>,
    tls: Option<TestTls>,
    tweaks: Vec<ConfigTweak>,
    replica: Option<Replica>,
}

/// What a second replica shares with the first: master key, clock, admin, used codes.
struct Replica {
    master: MasterKey,
    clock: Arc<ManualClock>,
    admin_seed: Vec<u8>,
    admin_serial: String,
    used_steps: Arc<Mutex<HashMap<Vec<u8>, u64>>>,
}

impl TestServerBuilder {
    /// Serves over `store` instead of sled in the temp dir.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Another replica of `first` (give it the same store): same master key, clock and
    /// admin; no bootstrap of its own.
    pub fn replica_of(mut self, first: &TestServer) -> Self {
        self.replica = Some(Replica {
            master: first.master.clone(),
            clock: first.clock.clone(),
            admin_seed: first.admin_seed.clone(),
            admin_serial: first.admin_serial.clone(),
            used_steps: first.used_steps.clone(),
        });
        self
    }

    /// Serves over `store` with the short [`FAULT_FLUSH_TIMEOUT`].
    pub fn faults(self, store: &Arc<FaultStore>) -> Self {
        self.store(store.clone()).config(|config| {
            config.audit.flush_timeout_ms = FAULT_FLUSH_TIMEOUT.as_millis() as u64;
        })
    }

    /// Serves TLS with `cert_pem` (for `localhost`) and `key_pem`; the clients trust it.
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some(TestTls {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Writes an audit chain checkpoint every `events` events or `seconds` seconds.
    pub fn checkpoints(self, events: u64, seconds: u64) -> Self {
        self.config(move |config| {
            config.audit.checkpoint_every_events = events;
            config.audit.checkpoint_every_seconds = seconds;
        })
    }

    /// Adjusts the test config (applied in order, before validation).
    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    pub async fn start(self) -> TestServer {
        let Self {
            store,
            tls,
            tweaks,
            replica,
        } = self;
        TestServer::launch(store, tls, replica, move |config| {
            for tweak in tweaks {
                tweak(config);
            }
        })
        .await
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server with the test config, adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::launch(None, None, None, tweak).await
    }

    /// A server over a new [`FaultStore`] (see [`TestServerBuilder::faults`]) that writes a
    /// chain checkpoint every `checkpoint_events` events or `checkpoint_seconds` seconds.
    pub async fn over_faults(
        checkpoint_events: u64,
        checkpoint_seconds: u64,
    ) -> (Self, Arc<FaultStore>) {
        let store = Arc::new(FaultStore::default());
        let server = Self::builder()
            .faults(&store)
            .checkpoints(checkpoint_events, checkpoint_seconds)
            .start()
            .await;
        (server, store)
    }

    /// A builder, for a server over another store (or several config tweaks).
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    async fn launch(
        store: Option<Arc<dyn Store>>,
        tls: Option<TestTls>,
        replica: Option<Replica>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path().join("data"));
        tweak(&mut config);
        config.validate().expect("test config is valid");

        let (clock, master, used_steps) = match &replica {
            Some(r) => (r.clock.clone(), r.master.clone(), r.used_steps.clone()),
            None => (
                Arc::new(ManualClock::new(start_time())),
                MasterKey::generate(&SystemRandom::new()).expect("master key"),
                Arc::default(),
            ),
        };
        let daemon = open_daemon(&config, store.clone(), &master, &clock);
        let (admin_seed, admin_serial) = match replica {
            Some(r) => (r.admin_seed, r.admin_serial),
            None => {
                let (_, serial, seed) = daemon
                    .broker
                    .bootstrap_admin(ADMIN, &SecretString::new(ADMIN_PASSWORD.into()))
                    .await
                    .expect("bootstrap admin");
                (seed.expose().to_vec(), serial)
            }
        };
        let running = serve_daemon(daemon, tls.as_ref()).await;
        Self {
            addr: running.addr,
            ops_addr: running.ops_addr,
            clock,
            config,
            admin_seed,
            admin_serial,
            channel: running.channel,
            used_steps,
            broker: Some(running.broker),
            shutdown: Some(running.shutdown),
            task: Some(running.task),
            dir: Some(dir),
            master,
            injected_store: store,
            tls,
        }
    }

    /// Stops the server and starts it again over the same data (data dir or injected
    /// store), master key and clock, on a new port; the admin and used TOTP steps carry
    /// over.
    pub async fn restart(mut self) -> Self {
        self.shut_down().await.expect("clean shutdown");
        let daemon = open_daemon(
            &self.config,
            self.injected_store.clone(),
            &self.master,
            &self.clock,
        );
        let running = serve_daemon(daemon, self.tls.as_ref()).await;
        self.addr = running.addr;
        self.ops_addr = running.ops_addr;
        self.channel = running.channel;
        self.broker = Some(running.broker);
        self.shutdown = Some(running.shutdown);
        self.task = Some(running.task);
        self
    }

    /// The daemon's broker, to call use cases that have no RPC (sweep, key purge).
    pub fn broker(&self) -> &Arc<Broker> {
        self.broker.as_ref().expect("the server is running")
    }

    /// The store the daemon runs over.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.broker().store()
    }

    /// Stops the server and waits for it to finish (final flush included).
    pub async fn stop(mut self) -> Result<(), String> {
        self.shut_down().await
    }

    async fn shut_down(&mut self) -> Result<(), String> {
        self.broker = None;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| e.to_string())?,
            None => Ok(()),
        }
    }

    /// Stops the server and hands back its temp dir, so a test can open the data dir
    /// (`config.data_dir`) itself once the daemon let go of it.
    pub async fn stop_keeping_data(mut self) -> TempDir {
        self.shut_down().await.expect("clean shutdown");
        self.dir.take().expect("temp dir")
    }

    pub fn now(&self) -> SystemTime {
        use stint::broker::Clock as _;
        self.clock.now()
    }

    pub fn now_secs(&self) -> i64 {
        self.now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Steps past the login back-off that follows a failed attempt.
    pub fn after_failure(&self) {
        self.advance(Duration::from_millis(self.config.lockout.max_delay_ms + 1));
    }

    /// The TOTP code for `seed` at the manual clock's current step (no bookkeeping).
    pub fn code_for(&self, seed: &[u8]) -> String {
        totp::code_at(seed, totp::step_at(self.now()))
    }

    /// A code for `seed` that has not been used yet: the current step's, or, when that
    /// step was already handed out, the next step's after moving the clock there.
    pub fn fresh_code(&self, seed: &[u8]) -> String {
        let mut used = self.used_steps.lock().unwrap();
        let mut step = totp::step_at(self.now());
        if used.get(seed).is_some_and(|&last| last >= step) {
            let into_step = self.now_secs() as u64 % totp::STEP_SECONDS;
            self.advance(Duration::from_secs(totp::STEP_SECONDS - into_step));
            step = totp::step_at(self.now());
        }
        used.insert(seed.to_vec(), step);
        totp::code_at(seed, step)
    }

    /// Marks the current step of `seed` as used (after a code was consumed elsewhere,
    /// e.g. by `EnableMfaDevice`).
    pub fn mark_used(&self, seed: &[u8], step: u64) {
        self.used_steps.lock().unwrap().insert(seed.to_vec(), step);
    }

    /// Waits (bounded) for the overall gRPC health status to become `want`, then checks
    /// a service's status agrees.
    pub async fn health_becomes(&self, want: ServingStatus) {
        let mut health = HealthClient::new(self.channel());
        let mut watch = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health/Watch")
            .into_inner();
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(update) = watch.next().await {
                if update.expect("health update").status() == want {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "health never became {want:?}");
        let checked = health
            .check(HealthCheckRequest {
                service: "stint.v1.Sts".into(),
            })
            .await
            .expect("Health/Check")
            .into_inner()
            .status();
        assert_eq!(checked, want);
    }

    // ---- clients ------------------------------------------------------------------------

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A channel whose TCP connection comes from `127.0.0.<from>` and opens with the PROXY
    /// `header` (v2 as HAProxy's `send-proxy-v2` sends it, v1 as nginx's `proxy_protocol on`
    /// does); then TLS when the server serves it, as a client behind a TCP load balancer
    /// sees it.
    pub async fn proxied_channel(
        &self,
        from: u8,
        header: ProxyHeader<'_>,
    ) -> Result<Channel, tonic::transport::Error> {
        use tokio::io::AsyncWriteExt;
        let target = self.addr;
        let bytes = header.encode(target);
        let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let bytes = bytes.clone();
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from(([127, 0, 0, from], 0)))?;
                let mut tcp = socket.connect(target).await?;
                tcp.write_all(&bytes).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
            }
        });
        endpoint(target, self.tls.as_ref())
            .connect_with_connector(connector)
            .await
    }

    pub fn sts(&self) -> StsClient<Channel> {
        StsClient::new(self.channel())
    }

    pub fn sts_as(&self, token: &str) -> StsClient<Authed> {
        StsClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    pub fn iam_as(&self, token: &str) -> IamClient<Authed> {
        IamClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    pub fn tokens_as(&self, token: &str) -> TokensClient<Authed> {
        TokensClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    pub fn keys_as(&self, token: &str) -> KeysClient<Authed> {
        KeysClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    pub fn audit_as(&self, token: &str) -> AuditClient<Authed> {
        AuditClient::with_interceptor(self.channel(), Bearer::new(token))
    }

    /// The audit chain's verification report, as `token` sees it.
    pub async fn verify_chain(&self, token: &str) -> proto::VerifyChainResponse {
        self.audit_as(token)
            .verify_chain(proto::VerifyChainRequest {})
            .await
            .expect("VerifyChain")
            .into_inner()
    }

    // ---- logins -------------------------------------------------------------------------

    /// `GetSessionToken` with a password and an optional code.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<proto::Credentials, Status> {
        self.get_session_token(
            Credential::Password(proto::PasswordCredential {
                user_name: user.into(),
                password: password.into(),
            }),
            code,
            0,
        )
        .await
    }

    pub async fn get_session_token(
        &self,
        credential: Credential,
        code: Option<&str>,
        duration_seconds: i32,
    ) -> Result<proto::Credentials, Status> {
        let response = self
            .sts()
            .get_session_token(proto::GetSessionTokenRequest {
                credential: Some(credential),
                token_code: code.unwrap_or_default().into(),
                duration_seconds,
                serial_number: String::new(),
            })
            .await?
            .into_inner();
        Ok(response.credentials.expect("credentials in response"))
    }

    /// The admin's session token (password + a fresh TOTP code).
    pub async fn admin_login(&self) -> String {
        let code = self.fresh_code(&self.admin_seed.clone());
        self.login(ADMIN, ADMIN_PASSWORD, Some(&code))
            .await
            .expect("admin login")
            .session_token
    }

    // ---- admin setup shortcuts (each asserts success) -----------------------------------

    /// Creates a user with a password (no MFA).
    pub async fn create_user_with_password(&self, admin: &str, user: &str, password: &str) {
        let mut iam = self.iam_as(admin);
        iam.create_user(proto::CreateUserRequest {
            user_name: user.into(),
            ..Default::default()
        })
        .await
        .expect("CreateUser");
        iam.create_login_profile(proto::CreateLoginProfileRequest {
            user_name: user.into(),
            password: password.into(),
            password_reset_required: false,
        })
        .await
        .expect("CreateLoginProfile");
    }

    /// Creates a user with no password.
    pub async fn create_user(&self, admin: &str, user: &str) {
        self.iam_as(admin)
            .create_user(proto::CreateUserRequest {
                user_name: user.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("CreateUser {user}: {s}"));
    }

    /// Attaches the built-in managed policies named `policies` to `user`.
    pub async fn attach_builtin(&self, admin: &str, user: &str, policies: &[&str]) {
        let mut iam = self.iam_as(admin);
        for policy in policies {
            iam.attach_user_policy(proto::AttachUserPolicyRequest {
                user_name: user.into(),
                policy_arn: builtin(policy),
            })
            .await
            .unwrap_or_else(|s| panic!("AttachUserPolicy {policy}: {s}"));
        }
    }

    /// Puts the inline policy `policy_name` on `user`.
    pub async fn put_user_policy(
        &self,
        admin: &str,
        user: &str,
        policy_name: &str,
        document: &str,
    ) {
        self.iam_as(admin)
            .put_user_policy(proto::PutUserPolicyRequest {
                user_name: user.into(),
                policy_name: policy_name.into(),
                policy_document: document.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("PutUserPolicy {policy_name}: {s}"));
    }

    /// Puts the inline policy `policy_name` on `role`.
    pub async fn put_role_policy(
        &self,
        admin: &str,
        role: &str,
        policy_name: &str,
        document: &str,
    ) {
        self.iam_as(admin)
            .put_role_policy(proto::PutRolePolicyRequest {
                role_name: role.into(),
                policy_name: policy_name.into(),
                policy_document: document.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("PutRolePolicy {policy_name}: {s}"));
    }

    /// A new access key of `user`: (id, secret).
    pub async fn create_access_key(&self, admin: &str, user: &str) -> (String, String) {
        let key = self
            .iam_as(admin)
            .create_access_key(proto::CreateAccessKeyRequest {
                user_name: user.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("CreateAccessKey {user}: {s}"))
            .into_inner()
            .access_key
            .expect("the new key");
        (key.access_key_id, key.secret_access_key)
    }

    /// Creates a role that `trust_policy` lets be assumed.
    pub async fn create_role(&self, admin: &str, role: &str, trust_policy: String) {
        self.iam_as(admin)
            .create_role(proto::CreateRoleRequest {
                role_name: role.into(),
                assume_role_policy_document: trust_policy,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("CreateRole {role}: {s}"));
    }

    /// `user`'s session token from a password-only login.
    pub async fn session(&self, user: &str, password: &str) -> String {
        self.login(user, password, None)
            .await
            .unwrap_or_else(|s| panic!("login {user}: {s}"))
            .session_token
    }

    /// Creates and enables a virtual MFA device for `user`; returns the seed.
    pub async fn enroll_mfa(&self, admin: &str, user: &str) -> Vec<u8> {
        let mut iam = self.iam_as(admin);
        let device = iam
            .create_virtual_mfa_device(proto::CreateVirtualMfaDeviceRequest {
                user_name: user.into(),
                virtual_mfa_device_name: String::new(),
            })
            .await
            .expect("CreateVirtualMfaDevice")
            .into_inner();
        let seed = data_encoding::BASE32_NOPAD
            .decode(device.base32_string_seed.as_bytes())
            .expect("base32 seed");
        let step = totp::step_at(self.now());
        iam.enable_mfa_device(proto::EnableMfaDeviceRequest {
            user_name: user.into(),
            serial_number: device.serial_number.clone(),
            authentication_code_1: totp::code_at(&seed, step - 1),
            authentication_code_2: totp::code_at(&seed, step),
        })
        .await
        .expect("EnableMfaDevice");
        self.mark_used(&seed, step);
        seed
    }
}

// ---- the audit log ----------------------------------------------------------------------

impl TestServer {
    /// Every audit event after `after_seq` (all pages), read with `token`. Each page read
    /// adds its own `stint:ReadAuditLog` event, so the last event returned is that.
    pub async fn events_after(&self, token: &str, after_seq: u64) -> Vec<AuditEvent> {
        let mut audit = self.audit_as(token);
        let mut out = Vec::new();
        let mut next_token = after_seq.to_string();
        loop {
            let page = audit
                .list_events(proto::ListEventsRequest {
                    next_token: next_token.clone(),
                    max_results: 1000,
                    ..Default::default()
                })
                .await
                .expect("ListEvents")
                .into_inner();
            out.extend(page.events);
            if page.next_token.is_empty() {
                return out;
            }
            next_token = page.next_token;
        }
    }

    /// `WatchEvents` from after `after_seq` (0: only new events), read with `token`.
    pub async fn watch(
        &self,
        token: &str,
        after_seq: u64,
    ) -> Result<Streaming<AuditEvent>, Status> {
        self.audit_as(token)
            .watch_events(proto::WatchEventsRequest { after_seq })
            .await
            .map(|r| r.into_inner())
    }
}

/// The next event on a `WatchEvents` stream, within a bound.
pub async fn next_event(stream: &mut Streaming<AuditEvent>) -> AuditEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within the bound")
        .expect("stream open")
        .expect("event, not an error")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---- assertions and token reading -------------------------------------------------------

/// Asserts `result` failed with `code` and a message containing every one of `needles`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needles: &[&str],
) -> Status {
    let status = match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        code,
        "wrong code; message: {}",
        status.message()
    );
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{:?} does not mention {needle:?}",
            status.message()
        );
    }
    status
}

fn b64_part(token: &str, index: usize) -> Value {
    let part = token
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("JWT has no part {index}: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url JWT part");
    serde_json::from_slice(&bytes).expect("JSON JWT part")
}

/// The (unverified) JWT header.
pub fn jwt_header(token: &str) -> Value {
    b64_part(token, 0)
}

/// The (unverified) JWT payload.
pub fn jwt_claims(token: &str) -> Value {
    b64_part(token, 1)
}

pub fn timestamp_secs(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref().expect("timestamp present").seconds
}

/// A plain HTTP/1.1 GET on the server's port; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body split");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

pub fn tag(key: &str, value: &str) -> proto::Tag {
    proto::Tag {
        key: key.into(),
        value: value.into(),
    }
}

/// An `AssumeRole` request for `role` (a name) as session `session`.
pub fn assume(role: &str, session: &str) -> proto::AssumeRoleRequest {
    proto::AssumeRoleRequest {
        role_arn: arn("role", role),
        role_session_name: session.into(),
        ..Default::default()
    }
}

/// A JSON policy document with one Allow statement.
pub fn allow(actions: &[&str], resources: &[&str]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]
    })
    .to_string()
}

/// A trust policy letting `principal` (an ARN) assume the role, with optional condition.
pub fn trust(principal: &str, condition: Option<Value>) -> String {
    let mut statement = serde_json::json!({
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": "sts:AssumeRole"
    });
    if let Some(condition) = condition {
        statement["Condition"] = condition;
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}).to_string()
}

/// Finishes `cmd` (the binary at `stint init`, with its environment and store flags) with
/// `--admin-user admin --password-stdin --output json`, runs it with `password` on stdin
/// and returns its JSON.
pub fn run_init(mut cmd: std::process::Command, password: &str) -> Value {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .args([
            "--admin-user",
            "admin",
            "--password-stdin",
            "--output",
            "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stint init starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("init --output json prints JSON");
    assert_eq!(json["user_name"], "admin");
    json
}

/// The admin's TOTP seed from `stint init --output json`.
pub fn init_totp_seed(json: &Value) -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(json["totp_secret"].as_str().unwrap().as_bytes())
        .unwrap()
}
