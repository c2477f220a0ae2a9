//! Tests of the real `stint` binary as a process: a SIGKILL while clients mint at full
//! speed loses no audit event of any credential a client received, and a full run's logs,
//! errors and audit export never contain a secret.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tonic::Request;
use tonic::transport::Channel;

use crate::common::run_init;
use stint::proto;
use stint::proto::get_session_token_request::Credential;
use stint::proto::iam_client::IamClient;
use stint::proto::sts_client::StsClient;

const BIN: &str = env!("CARGO_BIN_EXE_stint");
const PASSWORD: &str = "process test password 42";

/// Cheap hashing and a quiet, complete log, through the environment (never defaults).
fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("STINT_DATA_DIR", data_dir)
        .env("STINT_ARGON2__MEMORY_KIB", "8")
        .env("STINT_ARGON2__ITERATIONS", "1")
        .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info,sled=info")
        .env_remove("STINT_CONFIG");
    cmd
}

struct Init {
    totp_secret: String,
    otpauth_uri: String,
}

fn init_command(data_dir: &Path) -> Command {
    let mut cmd = command(data_dir);
    cmd.arg("init");
    cmd
}

fn init(data_dir: &Path) -> Init {
    let json = run_init(init_command(data_dir), PASSWORD);
    Init {
        totp_secret: json["totp_secret"].as_str().unwrap().to_string(),
        otpauth_uri: json["otpauth_uri"].as_str().unwrap().to_string(),
    }
}

/// A running daemon; its stderr lines are collected for inspection.
struct Daemon {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(data_dir: &Path) -> Daemon {
        let mut child = command(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stint serve starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(addr) = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon logs its address once it is serving");
        Daemon { child, addr, log }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("daemon reachable")
    }

    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn terminate(mut self) -> (bool, Vec<String>) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        (
            status.success(),
            std::mem::take(&mut *self.log.lock().unwrap()),
        )
    }
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn seed_of(secret: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap()
}

async fn admin_token(channel: Channel, init: &Init) -> String {
    let seed = seed_of(&init.totp_secret);
    let code = stint::core::authn::totp::code_at(
        &seed,
        stint::core::authn::totp::step_at(std::time::SystemTime::now()),
    );
    let response = StsClient::new(channel)
        .get_session_token(proto::GetSessionTokenRequest {
            credential: Some(Credential::Password(proto::PasswordCredential {
                user_name: "admin".into(),
                password: PASSWORD.into(),
            })),
            token_code: code,
            duration_seconds: 3600,
            serial_number: String::new(),
        })
        .await
        .expect("admin logs in");
    response.into_inner().credentials.unwrap().session_token
}

/// Creates a service user with an access key; returns (id, secret).
async fn service_key(channel: Channel, token: &str) -> (String, String) {
    let mut iam = IamClient::new(channel);
    iam.create_user(bearer(
        proto::CreateUserRequest {
            user_name: "svc".into(),
            ..Default::default()
        },
        token,
    ))
    .await
    .unwrap();
    let key = iam
        .create_access_key(bearer(
            proto::CreateAccessKeyRequest {
                user_name: "svc".into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_key
        .unwrap();
    (key.access_key_id, key.secret_access_key)
}

fn key_login(id: &str, secret: &str) -> proto::GetSessionTokenRequest {
    proto::GetSessionTokenRequest {
        credential: Some(Credential::AccessKey(proto::AccessKeyCredential {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
        })),
        token_code: String::new(),
        duration_seconds: 900,
        serial_number: String::new(),
    }
}

fn export(data_dir: &Path) -> Vec<Value> {
    let out = command(data_dir)
        .args(["audit", "export"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("export writes JSON lines"))
        .collect()
}

fn verify(data_dir: &Path) -> Value {
    let out = command(data_dir)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).expect("verify prints a JSON report");
    assert!(
        out.status.success(),
        "verify exit status with report {report}"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_minting_loses_no_event_of_a_received_credential() {
    let dir = tempfile::tempdir().unwrap();
    let init = init(dir.path());
    let daemon = Daemon::start(dir.path());
    let channel = daemon.channel().await;
    let token = admin_token(channel.clone(), &init).await;
    let (id, secret) = service_key(channel.clone(), &token).await;

    // Clients mint as fast as they can; every credential they receive is recorded.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (channel, received) = (channel.clone(), received.clone());
        let (id, secret) = (id.clone(), secret.clone());
        clients.push(tokio::spawn(async move {
            let mut sts = StsClient::new(channel);
            while let Ok(response) = sts.get_session_token(key_login(&id, &secret)).await {
                let credentials = response.into_inner().credentials.unwrap();
                received.lock().unwrap().push(credentials.access_key_id);
            }
        }));
    }
    // Kill once a good number of credentials are out (bounded wait).
    for _ in 0..600 {
        if received.lock().unwrap().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.kill();
    for client in clients {
        let _ = client.await;
    }
    let received = received.lock().unwrap().clone();
    assert!(
        received.len() >= 50,
        "clients minted only {} credentials",
        received.len()
    );

    let report = verify(dir.path());
    assert_eq!(report["intact"], true, "{report}");
    let events = export(dir.path());
    let recorded: std::collections::HashSet<String> = events
        .iter()
        .filter_map(|r| {
            r["event"]["credential"]["session_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let missing: Vec<&String> = received
        .iter()
        .filter(|jti| !recorded.contains(*jti))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} received credentials have no audit event",
        missing.len(),
        received.len()
    );

    // After the crash the daemon starts again on the same dir and the chain still verifies.
    let daemon = Daemon::start(dir.path());
    let channel = daemon.channel().await;
    StsClient::new(channel)
        .get_session_token(key_login(&id, &secret))
        .await
        .expect("mints after restart");
    let (clean, _) = daemon.terminate();
    assert!(clean, "SIGTERM exits 0");
    assert_eq!(verify(dir.path())["intact"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_errors_or_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let init = init(dir.path());
    let daemon = Daemon::start(dir.path());
    let channel = daemon.channel().await;
    let token = admin_token(channel.clone(), &init).await;
    let (id, secret) = service_key(channel.clone(), &token).await;
    let mut sts = StsClient::new(channel.clone());
    let session = sts
        .get_session_token(key_login(&id, &secret))
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    // Failures too: a wrong secret, a wrong password with a code, a wrong code.
    let mut errors = Vec::new();
    let wrong_secret = format!("{secret}x");
    errors.push(
        sts.get_session_token(key_login(&id, &wrong_secret))
            .await
            .unwrap_err()
            .message()
            .to_string(),
    );
    let wrong_password = proto::GetSessionTokenRequest {
        credential: Some(Credential::Password(proto::PasswordCredential {
            user_name: "admin".into(),
            password: "not the password at all".into(),
        })),
        token_code: "123456".into(),
        duration_seconds: 0,
        serial_number: String::new(),
    };
    errors.push(
        sts.get_session_token(wrong_password)
            .await
            .unwrap_err()
            .message()
            .to_string(),
    );
    let mut iam = IamClient::new(channel.clone());
    let device = iam
        .create_virtual_mfa_device(bearer(
            proto::CreateVirtualMfaDeviceRequest {
                user_name: "svc".into(),
                virtual_mfa_device_name: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    errors.push(
        iam.enable_mfa_device(bearer(
            proto::EnableMfaDeviceRequest {
                user_name: "svc".into(),
                serial_number: device.serial_number.clone(),
                authentication_code_1: "000000".into(),
                authentication_code_2: "999999".into(),
            },
            &token,
        ))
        .await
        .unwrap_err()
        .message()
        .to_string(),
    );
    iam.create_login_profile(bearer(
        proto::CreateLoginProfileRequest {
            user_name: "svc".into(),
            password: "svc login password 77".into(),
            password_reset_required: false,
        },
        &token,
    ))
    .await
    .unwrap();
    let (clean, log) = daemon.terminate();
    assert!(clean);
    let events = export(dir.path());
    let audit: Vec<String> = events.iter().map(Value::to_string).collect();

    let secrets = [
        ("admin password", PASSWORD.to_string()),
        ("admin TOTP seed", init.totp_secret.clone()),
        ("admin otpauth URI", init.otpauth_uri.clone()),
        ("access-key secret", secret.clone()),
        ("wrong access-key secret", wrong_secret),
        ("new device seed", device.base32_string_seed.clone()),
        ("new login password", "svc login password 77".to_string()),
        ("wrong password", "not the password at all".to_string()),
        ("session token", token.clone()),
        ("key session token", session.clone()),
        (
            "session token signature",
            token.rsplit('.').next().unwrap().to_string(),
        ),
    ];
    assert!(log.len() > 10, "the daemon logged {} lines", log.len());
    assert!(audit.len() > 5, "the audit log has {} events", audit.len());
    for (what, secret) in &secrets {
        for (place, lines) in [
            ("log", &log),
            ("audit export", &audit),
            ("error messages", &errors),
        ] {
            if let Some(line) = lines.iter().find(|l| l.contains(secret.as_str())) {
                panic!("{what} appears in the {place}: {line}");
            }
        }
    }
    // The log does carry what an operator needs: one line per request with its method.
    assert!(
        log.iter()
            .any(|l| l.contains("/stint.v1.Sts/GetSessionToken") && l.contains("latency_us"))
    );
}

/// Issue 9 #17: outside systemd (no `UMask=`), `stint init` under an ordinary umask of
/// 022 still leaves the data dir 0700 and every file in it 0600.
#[cfg(unix)]
#[test]
fn init_under_umask_022_leaves_a_private_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("stint");
    let reference = command(&data_dir);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(BIN)
        .args([
            "init",
            "--admin-user",
            "admin",
            "--password-stdin",
            "--output",
            "json",
        ])
        .env_remove("STINT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in reference.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    let mut child = cmd.spawn().expect("sh starts stint init");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The umask really was 022: a file the shell creates is group/world readable.
    let probe = parent.path().join("probe");
    let status = Command::new("sh")
        .args(["-c", "umask 022 && : > \"$0\""])
        .arg(&probe)
        .status()
        .unwrap();
    assert!(status.success());
    let probe_mode = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    assert_eq!(probe_mode, 0o644);

    let mut files = 0;
    let mut stack = vec![data_dir.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:04o}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{} is {mode:04o}", path.display());
            files += 1;
        }
    }
    assert!(files >= 4, "master.key, LOCK and sled's files: {files}");
}

/// A store password holding `/` or `?` (tokio-postgres ends the user info at the first
/// `@`) is hidden wherever the URL is shown: in `serve`'s start-up error when the database
/// is unreachable, and in `store migrate`'s.
#[test]
fn a_store_password_with_a_slash_is_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let url = "postgres://stint:pa/ss?Secret9@127.0.0.1:1/stint";
    let serve = command(dir.path())
        .env("STINT_STORE__URL", url)
        .args(["serve", "--listen", "127.0.0.1:0", "--master-key-file"])
        .arg(&key)
        .output()
        .unwrap();
    let migrate = command(dir.path())
        .args(["store", "migrate", "--from"])
        .arg(dir.path().join("sled"))
        .args(["--to", url])
        .output()
        .unwrap();
    for (what, output) in [("serve", serve), ("store migrate", migrate)] {
        assert!(!output.status.success(), "{what} cannot reach the database");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!printed.contains("Secret9"), "{what}: {printed}");
        assert!(!printed.contains("pa/ss"), "{what}: {printed}");
    }
}
