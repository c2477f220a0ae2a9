//! `stint exec` / `stint configure` as processes against the real server, and per-app
//! audiences (`AssumeRole.audience`, the `stint:Audience` condition key) with the
//! server-URL issuer.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tonic::Code;

use stint::proto::{self, Decision};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_stint");
const CAROL_PASSWORD: &str = "carol's long passphrase";

fn sts_arn(role: &str, session: &str) -> String {
    format!("arn:stint:sts::{ACCOUNT}:assumed-role/{role}/{session}")
}

/// Admin setup: carol (password, no MFA) may assume `deploy`, which may read one bucket.
/// `condition` goes into the trust statement.
async fn deploy_role(server: &TestServer, condition: Option<Value>) {
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "carol", CAROL_PASSWORD)
        .await;
    let mut iam = server.iam_as(&admin);
    iam.create_role(proto::CreateRoleRequest {
        role_name: "deploy".into(),
        assume_role_policy_document: trust(&arn("user", "carol"), condition),
        ..Default::default()
    })
    .await
    .expect("CreateRole");
    server
        .put_role_policy(
            &admin,
            "deploy",
            "read-releases",
            &allow(&["s3:GetObject"], &["arn:aws:s3:::releases/*"]),
        )
        .await;
}

async fn carol_session(server: &TestServer) -> String {
    server
        .login("carol", CAROL_PASSWORD, None)
        .await
        .expect("carol logs in")
        .session_token
}

fn assume_for(audience: &str) -> proto::AssumeRoleRequest {
    proto::AssumeRoleRequest {
        role_arn: arn("role", "deploy"),
        role_session_name: "carol".into(),
        audience: audience.into(),
        ..Default::default()
    }
}

// ---- the `stint` binary --------------------------------------------------------------

/// A client shell: its own STINT_HOME, nothing inherited that would steer the client.
struct Client {
    home: tempfile::TempDir,
    endpoint: String,
}

impl Client {
    fn new(server: &TestServer) -> Self {
        Client {
            home: tempfile::tempdir().expect("temp home"),
            endpoint: format!("http://{}", server.addr),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STINT_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("STINT_HOME", self.home.path().join("stint"))
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("stint runs")
    }

    /// `stint login --user carol --password-stdin` into profile `default`.
    fn login_carol(&self, duration: &str) {
        let mut child = self
            .command()
            .args([
                "login",
                "--endpoint",
                &self.endpoint,
                "--user",
                "carol",
                "--password-stdin",
                "--duration",
                duration,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stint login starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{CAROL_PASSWORD}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "login: {}", text(&out.stderr));
    }

    fn configure_deploy(&self) {
        let out = self.run(&[
            "configure",
            "--profile",
            "deploy",
            "--role-arn",
            &arn("role", "deploy"),
            "--source-profile",
            "default",
        ]);
        assert!(out.status.success(), "configure: {}", text(&out.stderr));
        let shown: Value = serde_json::from_slice(&out.stdout).expect("configure prints JSON");
        assert_eq!(shown["role_arn"], arn("role", "deploy"));
        assert_eq!(shown["source_profile"], "default");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_time(text: &str) -> i64 {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .unix_timestamp()
}

fn wall_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `check` (every 50 ms, at most `limit`) until it returns something.
fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `stint exec --profile deploy -- sh -c 'env'`: the child sees the four variables and a
/// credentials file holding the same values; the token is a live session of the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_child_with_fresh_role_credentials() {
    let server = TestServer::start().await;
    deploy_role(&server, None).await;
    let client = Client::new(&server);
    client.login_carol("1h");
    client.configure_deploy();

    let script = r#"printf '%s\n' "$STINT_ACCESS_KEY_ID" "$STINT_EXPIRATION" "$STINT_ENDPOINT" "$STINT_SESSION_TOKEN" "$STINT_TOKEN"; cat "$STINT_CREDENTIALS_FILE"; exit 7"#;
    let out = tokio::task::spawn_blocking({
        let mut cmd = client.command();
        cmd.args(["exec", "--profile", "deploy", "--", "sh", "-c", script]);
        move || cmd.output().expect("stint exec runs")
    })
    .await
    .unwrap();
    // The child's exit status is exec's.
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let (key_id, expiration, endpoint, token, stint_token) = (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    );
    let file: Value = serde_json::from_str(&lines.collect::<Vec<_>>().join("\n"))
        .expect("the credentials file is JSON");

    assert!(key_id.starts_with("ASIA"), "{key_id}");
    assert_eq!(endpoint, client.endpoint);
    assert_eq!(token, stint_token);
    let claims = jwt_claims(&token);
    assert_eq!(claims["jti"], key_id.as_str());
    assert_eq!(claims["sub"], sts_arn("deploy", "carol"));
    assert_eq!(claims["aud"], "stint");
    // A fresh credential: issued now on the server's clock, for the default hour.
    assert_eq!(claims["iat"].as_i64(), Some(server.now_secs()));
    assert_eq!(parse_time(&expiration), server.now_secs() + 3600);
    assert_eq!(claims["exp"].as_i64(), Some(parse_time(&expiration)));
    assert_eq!(file["access_key_id"], key_id.as_str());
    assert_eq!(file["session_token"], token.as_str());
    assert_eq!(file["expiration"], expiration.as_str());
    assert_eq!(file["endpoint"], client.endpoint.as_str());

    // The server stands behind it, as the role.
    let identity = server
        .sts_as(&token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("the exec'd token is a live session")
        .into_inner();
    assert_eq!(identity.arn, sts_arn("deploy", "carol"));
}

/// A missing or expired source session: exec runs nothing and says which login to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_without_a_live_source_session_names_the_login_to_run() {
    let server = TestServer::start().await;
    deploy_role(&server, None).await;
    let client = Client::new(&server);
    client.configure_deploy();
    let marker = client.home.path().join("ran");
    let touch = format!("touch {}", marker.display());

    let out = client.run(&["exec", "--profile", "deploy", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "no cached session for source profile 'default': run `stint login --profile default` first"
        ),
        "{}",
        text(&out.stderr)
    );

    // A 15-minute session logged in 20 minutes ago (the server's clock set back).
    server
        .clock
        .set(UNIX_EPOCH + Duration::from_secs((wall_secs() - 1200) as u64));
    client.login_carol("15m");
    let out = client.run(&["exec", "--profile", "deploy", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the session of source profile 'default' expired at")
            && stderr.contains("run `stint login --profile default --user carol`"),
        "{stderr}"
    );
    // A profile without a role says how to configure one.
    let out = client.run(&["exec", "--profile", "default", "--", "true"]);
    assert!(
        text(&out.stderr).contains("stint configure --profile default --role-arn ARN"),
        "{}",
        text(&out.stderr)
    );
    assert!(!marker.exists(), "the command must not run");
}

/// The refresh across expiry, with the real binary: the role credential is minted on a
/// server clock set back so that it expires seconds from now; exec rewrites the file
/// (atomically, 0600 in a 0700 dir) with a credential minted after the clock moved on,
/// sends the child SIGHUP, forwards SIGTERM, and exits 128 + 15 when the child dies of it.
/// A key rotation in between: the refreshed credential is signed with the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_refreshes_the_credentials_file_across_expiry_and_signals_the_child() {
    let server = TestServer::start().await;
    deploy_role(&server, None).await;
    let client = Client::new(&server);
    client.configure_deploy();

    // Server time = wall − 896 s: a 15-minute credential expires 4 s from now.
    let rewound = wall_secs() - 896;
    server
        .clock
        .set(UNIX_EPOCH + Duration::from_secs(rewound as u64));
    client.login_carol("1h");

    let work = client.home.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let script = r#"trap 'echo hup >> "$WORK/hups"' HUP
echo "$STINT_CREDENTIALS_FILE" > "$WORK/file.tmp" && mv "$WORK/file.tmp" "$WORK/file"
while :; do sleep 0.1; done"#;
    let mut exec = client
        .command()
        .env("WORK", &work)
        .args([
            "exec",
            "--profile",
            "deploy",
            "--duration",
            "15m",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stint exec starts");

    let file_path: PathBuf = eventually(Duration::from_secs(20), "the child to start", || {
        std::fs::read_to_string(work.join("file"))
            .ok()
            .map(|s| PathBuf::from(s.trim()))
    });
    let read = |path: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(path).expect("credentials file")).expect("JSON")
    };
    let first = read(&file_path);
    let first_exp = parse_time(first["expiration"].as_str().unwrap());
    assert_eq!(first_exp, rewound + 900);
    assert_eq!(
        std::fs::metadata(&file_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let dir = file_path.parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // The signing key rotates, then the server's clock catches up with the wall clock:
    // the old credential expires, and its replacement is signed with the new key.
    let rotated = server
        .broker()
        .rotate_keys(&stint::broker::RequestMeta::default(), "test")
        .await
        .expect("rotate keys");
    server.advance(Duration::from_secs(896));
    let fresh = eventually(Duration::from_secs(30), "a refreshed credential", || {
        let now = read(&file_path);
        let exp = parse_time(now["expiration"].as_str()?);
        (exp > first_exp + 800).then_some(now)
    });
    assert_ne!(fresh["access_key_id"], first["access_key_id"]);
    let token = fresh["session_token"].as_str().unwrap().to_string();
    assert_eq!(jwt_claims(&token)["jti"], fresh["access_key_id"]);
    let first_token = first["session_token"].as_str().unwrap();
    assert_ne!(jwt_header(first_token)["kid"], rotated.kid.as_str());
    assert_eq!(jwt_header(&token)["kid"], rotated.kid.as_str());
    server
        .sts_as(&token)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("the refreshed token is live");
    eventually(Duration::from_secs(10), "SIGHUP to reach the child", || {
        std::fs::read_to_string(work.join("hups"))
            .ok()
            .filter(|s| s.contains("hup"))
    });

    // SIGTERM to exec reaches the child; exec exits as the child did.
    let pid = rustix::process::Pid::from_raw(exec.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = exec.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut exec.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(143), "{}", status.1);
    assert!(!dir.exists(), "the private directory is removed on exit");
    assert!(!status.1.contains(&token), "no token in exec's messages");
}

// ---- audiences and the issuer ----------------------------------------------------------

/// A token minted for app `billing` carries `aud: billing`; it is not a Stint session
/// (a stolen app token must not reach Stint's API: AWS keeps web-identity audiences
/// apart the same way), while Tokens.Authorize and Introspect answer for it.
#[tokio::test]
async fn an_app_audience_token_is_refused_as_a_stint_session_but_authorized_for_the_app() {
    let server = TestServer::start().await;
    deploy_role(&server, None).await;
    let carol = carol_session(&server).await;

    let app = server
        .sts_as(&carol)
        .assume_role(assume_for("billing"))
        .await
        .expect("AssumeRole for billing")
        .into_inner()
        .credentials
        .unwrap();
    let claims = jwt_claims(&app.session_token);
    assert_eq!(claims["aud"], "billing");
    assert_eq!(claims["iss"], server.config.issuer().as_str());

    // As a bearer token for Stint itself: refused, whatever the call.
    assert_status(
        server
            .sts_as(&app.session_token)
            .get_caller_identity(proto::GetCallerIdentityRequest {})
            .await,
        Code::Unauthenticated,
        &["audience mismatch"],
    );
    assert_status(
        server
            .sts_as(&app.session_token)
            .assume_role(assume_for(""))
            .await,
        Code::Unauthenticated,
        &["audience mismatch"],
    );
    assert_status(
        server
            .iam_as(&app.session_token)
            .list_users(proto::ListUsersRequest::default())
            .await,
        Code::Unauthenticated,
        &["audience mismatch"],
    );

    // The app asks about it with its own (Stint-audience) credentials.
    let app_service = server
        .sts_as(&carol)
        .assume_role(assume_for(""))
        .await
        .expect("AssumeRole for Stint")
        .into_inner()
        .credentials
        .unwrap()
        .session_token;
    assert_eq!(jwt_claims(&app_service)["aud"], "stint");
    let mut tokens = server.tokens_as(&app_service);
    let introspected = tokens
        .introspect(proto::IntrospectRequest {
            token: app.session_token.clone(),
        })
        .await
        .expect("Introspect")
        .into_inner();
    assert!(introspected.active);
    assert_eq!(introspected.jti, app.access_key_id);
    let decide = |resource: &str| proto::AuthorizeRequest {
        session_token: app.session_token.clone(),
        action: "s3:GetObject".into(),
        resource: resource.into(),
        context: vec![],
    };
    let allowed = tokens
        .authorize(decide("arn:aws:s3:::releases/v1.tar.gz"))
        .await
        .expect("Authorize")
        .into_inner();
    assert_eq!(allowed.decision(), Decision::Allow);
    assert_eq!(allowed.principal_arn, sts_arn("deploy", "carol"));
    let denied = tokens
        .authorize(decide("arn:aws:s3:::payroll/x"))
        .await
        .expect("Authorize")
        .into_inner();
    assert_eq!(denied.decision(), Decision::ImplicitDeny);

    // Revocation still reaches it.
    let admin = server.admin_login().await;
    server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            session_id: app.access_key_id.clone(),
            ..Default::default()
        })
        .await
        .expect("RevokeSession");
    let after = tokens
        .introspect(proto::IntrospectRequest {
            token: app.session_token.clone(),
        })
        .await
        .expect("Introspect")
        .into_inner();
    assert!(!after.active, "a revoked app token is inactive");
}

/// `stint:Audience` is a request condition key of sts:AssumeRole, like `sts:ExternalId`:
/// a trust policy can pin the audiences a role's tokens may be minted for. An empty
/// audience is the server's own (`tokens.audience`), so it is matched as that value.
#[tokio::test]
async fn the_trust_policy_decides_the_audience_through_stint_audience() {
    let server = TestServer::start().await;
    deploy_role(
        &server,
        Some(json!({"StringEquals": {"stint:Audience": ["billing", "stint"]}})),
    )
    .await;
    let carol = carol_session(&server).await;
    let mut sts = server.sts_as(&carol);
    for allowed in ["billing", "", "stint"] {
        let creds = sts
            .assume_role(assume_for(allowed))
            .await
            .unwrap_or_else(|s| panic!("audience {allowed:?}: {s}"))
            .into_inner()
            .credentials
            .unwrap();
        let want = if allowed.is_empty() { "stint" } else { allowed };
        assert_eq!(jwt_claims(&creds.session_token)["aud"], want);
    }
    assert_status(
        sts.assume_role(assume_for("payroll")).await,
        Code::PermissionDenied,
        &["sts:AssumeRole"],
    );

    // Malformed audiences are refused before any policy is read, naming the field.
    for bad in ["two words".to_string(), "a".repeat(257), "caf\u{e9}".into()] {
        assert_status(
            sts.assume_role(assume_for(&bad)).await,
            Code::InvalidArgument,
            &["audience"],
        );
    }
}

/// The issuer is the server's URL (derived from `listen` when `tokens.issuer` is unset):
/// tokens and `/.well-known/openid-configuration` say the same, as OIDC discovery
/// requires (OpenID Connect Discovery 1.0 §4.3), and an explicit issuer wins.
#[tokio::test]
async fn tokens_and_discovery_name_the_server_url_as_issuer() {
    for explicit in [None, Some("https://stint.example.com")] {
        let server = TestServer::start_with(|c| {
            if let Some(issuer) = explicit {
                c.tokens.issuer = issuer.into();
            }
        })
        .await;
        let want = explicit.unwrap_or("http://127.0.0.1:7420");
        assert_eq!(server.config.issuer(), want);
        let admin = server.admin_login().await;
        assert_eq!(jwt_claims(&admin)["iss"], want);
        let (status, body) = http_get(server.addr, "/.well-known/openid-configuration").await;
        assert_eq!(status, 200);
        let oidc: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(oidc["issuer"], want);
    }
}

/// The profile's MFA serial: `stint exec --code` sends it with the code, so a trust policy
/// that wants a recent MFA (AWS: `aws:MultiFactorAuthAge`) is met by the first AssumeRole
/// even when the login's MFA is old; a code for another device is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sends_the_profiles_mfa_serial_with_the_code() {
    let server = TestServer::start().await;
    deploy_role(
        &server,
        Some(json!({"NumericLessThan": {"aws:MultiFactorAuthAge": "300"}})),
    )
    .await;
    let admin = server.admin_login().await;
    let seed = server.enroll_mfa(&admin, "carol").await;
    let serial = server
        .iam_as(&admin)
        .list_mfa_devices(proto::ListMfaDevicesRequest {
            user_name: "carol".into(),
            ..Default::default()
        })
        .await
        .expect("ListMfaDevices")
        .into_inner()
        .mfa_devices[0]
        .serial_number
        .clone();

    let client = Client::new(&server);
    let mut login = client
        .command()
        .args(["login", "--endpoint", &client.endpoint, "--user", "carol"])
        .args(["--password-stdin", "--code", &server.fresh_code(&seed)])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    login
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{CAROL_PASSWORD}\n").as_bytes())
        .unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success(), "login: {}", text(&out.stderr));
    // The login's MFA grows old.
    server.advance(Duration::from_secs(3600));
    client.configure_deploy();
    let configure = |serial: &str| {
        let out = client.run(&["configure", "--profile", "deploy", "--mfa-serial", serial]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    configure(&serial);

    let exec = |code: Option<String>| {
        let mut cmd = client.command();
        cmd.args(["exec", "--profile", "deploy"]);
        if let Some(code) = code {
            cmd.args(["--code", &code]);
        }
        cmd.args(["--", "sh", "-c", "echo \"$STINT_SESSION_TOKEN\""]);
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    let out = exec(None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );

    let out = exec(Some(server.fresh_code(&seed))).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let claims = jwt_claims(text(&out.stdout).trim());
    assert_eq!(claims["stint"]["mfa_present"], true);
    assert_eq!(
        claims["stint"]["mfa_auth_time"].as_i64(),
        Some(server.now_secs())
    );

    configure("arn:stint:iam::000000000000:mfa/someone-else");
    let out = exec(Some(server.fresh_code(&seed))).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unauthenticated"),
        "{}",
        text(&out.stderr)
    );
}

/// The source session disappears while the child runs: the refresh fails, exec says which
/// login to run and keeps the child alive, and the next `stint login` is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_survives_a_lost_source_session_and_picks_up_the_next_login() {
    let server = TestServer::start().await;
    deploy_role(&server, None).await;
    let client = Client::new(&server);
    client.configure_deploy();
    let rewound = wall_secs() - 896;
    server
        .clock
        .set(UNIX_EPOCH + Duration::from_secs(rewound as u64));
    client.login_carol("1h");

    let work = client.home.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let script = r#"echo "$STINT_CREDENTIALS_FILE" > "$WORK/file.tmp" && mv "$WORK/file.tmp" "$WORK/file"
while :; do sleep 0.1; done"#;
    let mut exec = client
        .command()
        .env("WORK", &work)
        .args(["exec", "--profile", "deploy", "--duration", "15m"])
        .args(["--refresh-signal", "none", "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stint exec starts");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let stderr = stderr.clone();
        let mut pipe = exec.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let file_path: PathBuf = eventually(Duration::from_secs(20), "the child to start", || {
        std::fs::read_to_string(work.join("file"))
            .ok()
            .map(|s| PathBuf::from(s.trim()))
    });
    let first: Value = serde_json::from_slice(&std::fs::read(&file_path).unwrap()).unwrap();

    let out = client.run(&["logout", "--no-revoke"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually(Duration::from_secs(20), "the login hint", || {
        stderr
            .lock()
            .unwrap()
            .contains("cannot refresh the credentials")
            .then_some(())
    });
    assert!(
        stderr
            .lock()
            .unwrap()
            .contains("run `stint login --profile default` first"),
        "{}",
        stderr.lock().unwrap()
    );
    assert_eq!(exec.try_wait().unwrap(), None, "the child keeps running");

    client.login_carol("1h");
    server.advance(Duration::from_secs(896));
    let first_exp = parse_time(first["expiration"].as_str().unwrap());
    eventually(
        Duration::from_secs(40),
        "a refresh with the new login",
        || {
            let now: Value = serde_json::from_slice(&std::fs::read(&file_path).ok()?).ok()?;
            (parse_time(now["expiration"].as_str()?) > first_exp + 800).then_some(())
        },
    );

    let pid = rustix::process::Pid::from_raw(exec.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::task::spawn_blocking(move || exec.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    // sh dies of the forwarded SIGINT: 128 + 2.
    assert_eq!(status.code(), Some(130), "{}", stderr.lock().unwrap());
}
