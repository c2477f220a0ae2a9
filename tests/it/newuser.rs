//! Where a new user got stuck (issue 10), each tried as that user would: the real `stint`
//! binary against a real daemon — a `stint serve` process, or the harness's server — and
//! README's contractor walkthrough run command by command, as written.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tonic::Code;

use stint::core::authn::totp;
use stint::proto;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_stint");

/// Every `STINT_*` variable the client reads or prints, as a shell that used it has them.
const CLIENT_ENV: &[(&str, &str)] = &[
    ("STINT_HOME", "/nonexistent/stint-home"),
    ("STINT_CA_CERT", "/nonexistent/ca.pem"),
    ("STINT_PROFILE", "ops"),
    ("STINT_ENDPOINT", "https://stint.example:7420"),
    ("STINT_TOKEN", "not.a.token"),
    ("STINT_TOKEN_EXPIRATION", "2030-01-01T00:00:00Z"),
    ("STINT_ACCESS_KEY_ID", "AKIAEXAMPLE"),
    ("STINT_SECRET_ACCESS_KEY_FILE", "/nonexistent/secret"),
];

/// The binary with cheap hashing and no inherited `STINT_*` configuration.
fn stint(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env("STINT_ARGON2__MEMORY_KIB", "8")
        .env("STINT_ARGON2__ITERATIONS", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("STINT_") && !key.starts_with("STINT_ARGON2") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Output collected from a child's pipe by a thread, until the pipe closes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<String>>, Arc<std::sync::atomic::AtomicBool>);

impl Lines {
    fn follow(pipe: impl Read + Send + 'static) -> Self {
        let lines = Lines::default();
        let (sink, closed) = (lines.0.clone(), lines.1.clone());
        std::thread::spawn(move || {
            let mut pipe = pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        lines
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Everything, once the child has closed the pipe (it exited).
    fn finish(&self) -> String {
        self.wait_for("the pipe to close", |_| {
            self.1
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        });
        self.text()
    }

    /// Waits (bounded) until `find` finds something in the text.
    fn wait_for<T>(&self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = find(&self.text()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; so far:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `stint serve` process, killed when dropped.
struct Served {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    addr: String,
}

impl Served {
    /// Starts `stint <args>` (a `serve`) with `--log-format json` in the environment and
    /// waits for the address it serves on.
    fn start(mut cmd: Command) -> Served {
        let mut child = cmd
            .env("STINT_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stint serve starts");
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let stderr = Lines::follow(child.stderr.take().unwrap());
        let addr = stderr.wait_for("the serving address", |text| {
            text.lines().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                v["fields"]["addr"].as_str().map(str::to_owned)
            })
        });
        Served {
            child,
            stdout,
            stderr,
            addr,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `  <label> <value>` from `serve --dev`'s enrolment print-out.
fn printed(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
}

// ---- 1. serve --dev in a shell that uses the client -------------------------------------

/// The client's variables (README tells clients to set `STINT_HOME`) are known to the
/// server and ignored; an unknown `STINT_*` variable is a warning naming the closest config
/// key, and the server starts.
#[test]
fn serve_dev_starts_in_a_shell_that_uses_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = stint(dir.path());
    cmd.args(["serve", "--dev"])
        .env("STINT_LISTEN", "127.0.0.1:0")
        .env("STINT_DATA_DIR", dir.path().join("data"))
        .env("STINT_ARGON2_MEMORY_KIB", "64"); // typo: one underscore
    for (key, value) in CLIENT_ENV {
        cmd.env(key, value);
    }
    let served = Served::start(cmd);
    let stdout = served.stdout.wait_for("the admin's password", |t| {
        printed(t, "password:").filter(|_| t.contains("otpauth URI:"))
    });
    assert!(!stdout.is_empty());
    let stderr = served.stderr.text();
    assert!(
        stderr.contains("warning: ignoring unknown environment variable STINT_ARGON2_MEMORY_KIB")
            && stderr.contains("STINT_ARGON2__MEMORY_KIB")
            && stderr.contains("argon2.memory_kib"),
        "{stderr}"
    );
    for (key, _) in CLIENT_ENV {
        assert!(
            !stderr.contains(&format!("variable {key} ")),
            "{key} is the client's, not unknown: {stderr}"
        );
    }
    // The label of the admin's device is the user at the account, as AWS labels it.
    let uri = printed(&served.stdout.text(), "otpauth URI:").unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Stint:admin%40000000000000?"),
        "{uri}"
    );
}

/// A taken port fails before the dev data dir (and its one-time password) is created; an
/// existing dev data dir says how to start over, and that way works.
#[test]
fn serve_dev_binds_before_creating_and_says_how_to_reset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = stint(dir.path())
        .args(["serve", "--dev", "--listen", &port])
        .env("STINT_DATA_DIR", &data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {port}")),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing created when the port is taken");
    drop(taken);

    // First run creates the dir; the second says the password was printed then, and how
    // to start over.
    let mut first = stint(dir.path());
    first
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("STINT_DATA_DIR", &data);
    drop(Served::start(first));
    let mut second = stint(dir.path());
    second
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .env("STINT_DATA_DIR", &data);
    let served = Served::start(second);
    let stderr = served.stderr.text();
    assert!(
        stderr.contains("stint init --force --data-dir") && stderr.contains("--password-stdin"),
        "{stderr}"
    );
    drop(served);
    let mut reset = stint(dir.path())
        .args([
            "init",
            "--force",
            "--admin-user",
            "admin",
            "--password-stdin",
            "--output",
            "json",
        ])
        .env("STINT_DATA_DIR", &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    reset
        .stdin
        .take()
        .unwrap()
        .write_all(b"a new admin password\n")
        .unwrap();
    let out = reset.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["user_name"], "admin");
}

// ---- 3. init validates first -------------------------------------------------------------

fn init(cwd: &Path, data: &Path, user: &str, password: &str) -> std::process::Output {
    let mut child = stint(cwd)
        .args(["init", "--admin-user", user, "--password-stdin"])
        .env("STINT_DATA_DIR", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A too-short password or a bad name is refused before anything is created, so the
/// corrected retry needs no `--force`.
#[test]
fn init_validates_before_it_creates_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (user, password, needle) in [
        ("admin", "short", "at least 8 characters"),
        ("bad name!", "long enough password", "--admin-user"),
    ] {
        let out = init(dir.path(), &data, user, password);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{user}/{password} accepted");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!data.exists(), "{user}/{password}: nothing is created");
    }
    let out = init(dir.path(), &data, "admin", "long enough password");
    assert!(
        out.status.success(),
        "the retry needs no --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::read(data.join("master.key")).unwrap();

    // --force validates before it wipes: a bad retry leaves the data dir alone.
    let out = stint(dir.path())
        .args([
            "init",
            "--force",
            "--admin-user",
            "admin",
            "--password-stdin",
        ])
        .env("STINT_DATA_DIR", &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"short\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(data.join("master.key")).unwrap(), key);
    assert!(data.join("db").exists());
}

// ---- 2. MFA enrolment -------------------------------------------------------------------

/// `otpauth://totp/Stint:<label>?…` → the decoded label.
fn otpauth_label(uri: &str) -> String {
    let label = uri
        .strip_prefix("otpauth://totp/")
        .and_then(|rest| rest.split('?').next())
        .expect("otpauth URI");
    label.replace("%40", "@")
}

/// AWS DeleteVirtualMFADevice: a device that is not enabled can be deleted (what an
/// interrupted enrolment leaves); "you must deactivate a user's virtual MFA device before
/// you can delete it" (DeleteConflict). Authorized on the device's ARN; audited.
#[tokio::test]
async fn delete_virtual_mfa_device_follows_aws() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "carol", "carol-password-1")
        .await;
    server
        .create_user_with_password(&admin, "mallory", "mallory-password-1")
        .await;
    let mut iam = server.iam_as(&admin);
    let create = proto::CreateVirtualMfaDeviceRequest {
        user_name: "carol".into(),
        virtual_mfa_device_name: String::new(),
    };
    let device = iam
        .create_virtual_mfa_device(create.clone())
        .await
        .unwrap()
        .into_inner();
    let serial = arn("mfa", "carol");
    assert_eq!(device.serial_number, serial);
    // The administrator created it, but it is carol's: her app shows her account.
    assert_eq!(
        otpauth_label(&device.otpauth_uri),
        "Stint:carol@000000000000"
    );
    assert_status(
        iam.create_virtual_mfa_device(create.clone()).await,
        Code::AlreadyExists,
        &[&serial],
    );

    // Someone without iam:DeleteVirtualMfaDevice on the device is refused, and cannot
    // learn whether a device exists.
    let mallory = server
        .login("mallory", "mallory-password-1", None)
        .await
        .unwrap()
        .session_token;
    let delete = |serial: &str| proto::DeleteVirtualMfaDeviceRequest {
        serial_number: serial.into(),
    };
    for target in [serial.as_str(), &arn("mfa", "nobody")] {
        assert_status(
            server
                .iam_as(&mallory)
                .delete_virtual_mfa_device(delete(target))
                .await,
            Code::PermissionDenied,
            &["iam:DeleteVirtualMfaDevice"],
        );
    }
    assert_status(
        iam.delete_virtual_mfa_device(delete("x")).await,
        Code::InvalidArgument,
        &["serial_number"],
    );
    assert_status(
        iam.delete_virtual_mfa_device(delete(&"a".repeat(257)))
            .await,
        Code::InvalidArgument,
        &["serial_number"],
    );
    assert_status(
        iam.delete_virtual_mfa_device(delete(&arn("mfa", "nobody")))
            .await,
        Code::NotFound,
        &[],
    );

    // Never enabled: deleted, and the name is free again (a new seed).
    iam.delete_virtual_mfa_device(delete(&serial))
        .await
        .expect("a device that was never enabled can be deleted");
    let again = iam
        .create_virtual_mfa_device(create.clone())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(again.base32_string_seed, device.base32_string_seed);

    // Enabled: DeleteConflict until deactivated.
    let seed = data_encoding::BASE32_NOPAD
        .decode(again.base32_string_seed.as_bytes())
        .unwrap();
    let step = totp::step_at(server.now());
    iam.enable_mfa_device(proto::EnableMfaDeviceRequest {
        user_name: "carol".into(),
        serial_number: serial.clone(),
        authentication_code_1: totp::code_at(&seed, step - 1),
        authentication_code_2: totp::code_at(&seed, step),
    })
    .await
    .unwrap();
    assert_status(
        iam.delete_virtual_mfa_device(delete(&serial)).await,
        Code::FailedPrecondition,
        &["deactivate it first"],
    );

    // Each decision is in the log, under the caller.
    let events = server
        .audit_as(&admin)
        .list_events(proto::ListEventsRequest {
            event_name: "iam:DeleteVirtualMfaDevice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let outcomes: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.principal_arn.as_str(), e.outcome.as_str()))
        .collect();
    let admin_arn = arn("user", ADMIN);
    let mallory_arn = arn("user", "mallory");
    assert_eq!(
        outcomes,
        vec![
            (mallory_arn.as_str(), "Deny"),
            (mallory_arn.as_str(), "Deny"),
            (admin_arn.as_str(), "Error"),
            (admin_arn.as_str(), "Allow"),
            (admin_arn.as_str(), "Error"),
        ]
    );
}

/// Self-service (`SelfServiceMFA`): a user may clear her own device left half-enrolled,
/// not someone else's.
#[tokio::test]
async fn a_user_may_delete_her_own_pending_device_only() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    for user in ["carol", "dave"] {
        server
            .create_user_with_password(&admin, user, &format!("{user}-password-1"))
            .await;
        server
            .iam_as(&admin)
            .attach_user_policy(proto::AttachUserPolicyRequest {
                user_name: user.into(),
                policy_arn: builtin("SelfServiceMFA"),
            })
            .await
            .unwrap();
    }
    let carol = server
        .login("carol", "carol-password-1", None)
        .await
        .unwrap()
        .session_token;
    let dave = server
        .login("dave", "dave-password-1", None)
        .await
        .unwrap()
        .session_token;
    for token in [&carol, &dave] {
        server
            .iam_as(token)
            .create_virtual_mfa_device(proto::CreateVirtualMfaDeviceRequest::default())
            .await
            .expect("own device");
    }
    assert_status(
        server
            .iam_as(&carol)
            .delete_virtual_mfa_device(proto::DeleteVirtualMfaDeviceRequest {
                serial_number: arn("mfa", "dave"),
            })
            .await,
        Code::PermissionDenied,
        &[],
    );
    server
        .iam_as(&carol)
        .delete_virtual_mfa_device(proto::DeleteVirtualMfaDeviceRequest {
            serial_number: arn("mfa", "carol"),
        })
        .await
        .expect("her own, never enabled");
}

// ---- the CLI against the harness's server -----------------------------------------------

/// A `stint` client command against `server`, with a private credentials cache.
fn client(server: &TestServer, home: &Path) -> Command {
    let mut cmd = stint(home);
    cmd.env("STINT_HOME", home)
        .env("STINT_ENDPOINT", format!("http://{}", server.addr));
    cmd
}

/// Runs `cmd`, writing `input` to its standard input; returns (success, stdout, stderr).
fn run(mut cmd: Command, input: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn secret_in(stdout: &str) -> Vec<u8> {
    let secret = printed(stdout, "secret:").expect("the enrolment prints the secret");
    data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap()
}

/// `stint mfa enroll` cannot get stuck: the same code twice is asked for again; codes
/// that do not match leave no device behind; enrolling again replaces a device created
/// but never enabled; and the end says to wait for the next code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_enroll_cannot_get_stuck() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "carol", "carol-password-1")
        .await;
    let home = tempfile::tempdir().unwrap();
    let enroll = || {
        let mut cmd = client(&server, home.path());
        cmd.args(["mfa", "enroll", "--user", "carol"])
            .env("STINT_TOKEN", &admin);
        cmd
    };

    // Wrong codes: refused, and the device is gone again.
    let (ok, _, stderr) = run(enroll(), "000000\n111111\n");
    assert!(!ok);
    assert!(stderr.contains("was not enabled"), "{stderr}");

    // An interrupted enrolment (killed at the prompt, as by Ctrl-C) leaves a device
    // created, not enabled…
    let mut child = enroll()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::follow(child.stdout.take().unwrap());
    let stale = stdout.wait_for("the secret", |t| {
        t.contains("serial:").then(|| secret_in(t))
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // …which enrolling again replaces; the same code typed twice is asked for again.
    let mut child = enroll()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::follow(child.stdout.take().unwrap());
    let stderr = Lines::follow(child.stderr.take().unwrap());
    let seed = stdout.wait_for("the secret", |t| {
        t.contains("serial:").then(|| secret_in(t))
    });
    assert_ne!(seed, stale, "a new seed");
    let step = totp::step_at(server.now());
    let (first, second) = (totp::code_at(&seed, step - 1), totp::code_at(&seed, step));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{first}\n{first}\n{second}").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let (stdout, stderr) = (stdout.finish(), stderr.finish());
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("Replacing MFA device"), "{stderr}");
    assert!(stderr.contains("same code again"), "{stderr}");
    assert!(
        stdout.contains("wait for the next code before logging in"),
        "{stdout}"
    );
    server.mark_used(&seed, step);

    // Enabled: carol logs in with her next code; enrolling again explains what to do.
    let code = server.fresh_code(&seed);
    server
        .login("carol", "carol-password-1", Some(&code))
        .await
        .expect("carol logs in with the device");
    let (ok, _, stderr) = run(enroll(), "");
    assert!(!ok);
    assert!(
        stderr.contains("is enabled") && stderr.contains("DeactivateMfaDevice"),
        "{stderr}"
    );
}

// ---- 4. audit ---------------------------------------------------------------------------

/// `audit list --newest-first` pages back in time: the newest page first, each page
/// newest first, no event twice, together the forward listing reversed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_newest_first_pages_back_in_time() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    for i in 0..7 {
        server
            .iam_as(&admin)
            .create_user(proto::CreateUserRequest {
                user_name: format!("u{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut audit = server.audit_as(&admin);
    let filter = proto::ListEventsRequest {
        event_name: "iam:CreateUser".into(),
        ..Default::default()
    };
    let forward: Vec<u64> = audit
        .list_events(filter.clone())
        .await
        .unwrap()
        .into_inner()
        .events
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(forward.len(), 7);
    let mut backward = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = audit
            .list_events(proto::ListEventsRequest {
                newest_first: true,
                max_results: 3,
                next_token: next_token.clone(),
                ..filter.clone()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 3);
        backward.extend(page.events.iter().map(|e| e.seq));
        if page.next_token.is_empty() {
            break;
        }
        next_token = page.next_token;
    }
    let mut reversed = forward.clone();
    reversed.reverse();
    assert_eq!(backward, reversed);

    // The CLI's flag asks for it.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = client(&server, home.path());
    cmd.args(["audit", "list", "--newest-first", "--max", "2"])
        .env("STINT_TOKEN", &admin);
    let (ok, stdout, stderr) = run(cmd, "");
    assert!(ok, "{stderr}");
    let seqs: Vec<u64> = serde_json::from_str::<Value>(&stdout).unwrap()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].to_string().trim_matches('"').parse().unwrap())
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] > seqs[1], "{seqs:?}");
}

/// `stint audit watch` without `--after-seq` shows only what happens from now on: the
/// first event it prints is one made after it started, not the log's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_watch_shows_only_new_events() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = client(&server, home.path());
    let mut child = cmd
        .args(["audit", "watch"])
        .env("STINT_TOKEN", &admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Make events until the watch prints one (it starts at the tail some time after
    // the process does); every one is a CreateUser made after the watch was asked for.
    let mut first = None;
    for i in 0..100 {
        server
            .iam_as(&admin)
            .create_user(proto::CreateUserRequest {
                user_name: format!("newcomer{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            first = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let first: Value = serde_json::from_str(&first.expect("the watch printed an event")).unwrap();
    assert_eq!(first["event_name"], "iam:CreateUser", "{first}");
    assert!(
        first["event_json"].to_string().contains("newcomer"),
        "{first}"
    );
}

/// A failed login of a known user is recorded under the user's ARN, so filtering by the
/// ARN finds the failures next to the successes.
#[tokio::test]
async fn failed_logins_of_a_known_user_are_found_by_its_arn() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "carol", "carol-password-1")
        .await;
    assert_status(
        server.login("carol", "wrong password", None).await,
        Code::Unauthenticated,
        &[],
    );
    server.after_failure();
    server
        .login("carol", "carol-password-1", None)
        .await
        .unwrap();
    let events = server
        .audit_as(&admin)
        .list_events(proto::ListEventsRequest {
            principal_arn: arn("user", "carol"),
            event_name: "sts:GetSessionToken".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["Deny", "Allow"]);
}

// ---- 5. Authorize needs the app's own token ---------------------------------------------

#[tokio::test]
async fn authorize_without_the_apps_token_says_so() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut tokens = proto::tokens_client::TokensClient::new(server.channel());
    assert_status(
        tokens
            .authorize(proto::AuthorizeRequest {
                session_token: admin,
                action: "s3:GetObject".into(),
                resource: "arn:aws:s3:::reports/q3.csv".into(),
                context: vec![],
            })
            .await,
        Code::Unauthenticated,
        &["calling app's own session token", "authorization: Bearer"],
    );
}

// ---- 6. README's contractor walkthrough, as written -------------------------------------

/// The shell commands of README's blocks marked `<!-- walkthrough: NAME -->`, in order. A
/// here-document (`<<'EOF'` … `EOF`) and `\`-continued lines stay one command.
fn walkthrough(readme: &str, name: &str) -> Vec<String> {
    let marker = format!("<!-- walkthrough: {name} -->");
    let mut commands = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != marker {
            continue;
        }
        let fence = lines.by_ref().find(|l| !l.trim().is_empty());
        assert_eq!(
            fence.map(str::trim),
            Some("```sh"),
            "{marker} precedes a sh block"
        );
        let mut current = String::new();
        let mut heredoc: Option<String> = None;
        for line in lines.by_ref() {
            if heredoc.is_none() && line.trim() == "```" {
                break;
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(line);
            if let Some(end) = &heredoc {
                if line == end {
                    heredoc = None;
                }
            } else if let Some(at) = line.find("<<'") {
                let rest = &line[at + 3..];
                heredoc = Some(rest[..rest.find('\'').unwrap()].to_string());
            }
            if heredoc.is_none() && !line.ends_with('\\') {
                let command = std::mem::take(&mut current);
                let trimmed = command.trim();
                if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    commands.push(trimmed.to_string());
                }
            }
        }
    }
    commands
}

/// What the test knows of each person: password, TOTP seed, last step used.
#[derive(Default)]
struct People {
    passwords: HashMap<String, String>,
    seeds: HashMap<String, Vec<u8>>,
    last_step: HashMap<String, u64>,
}

impl People {
    /// A code of `user`'s device not used yet, within the server's ±1 step (waiting for
    /// the next step only if the last one used is already ahead).
    fn fresh_code(&mut self, user: &str) -> String {
        let seed = self
            .seeds
            .get(user)
            .unwrap_or_else(|| panic!("no seed for {user}"));
        let now = || totp::step_at(SystemTime::now());
        let step = match self.last_step.get(user) {
            Some(&last) if last >= now() => last + 1,
            _ => now(),
        };
        while step > now() + 1 {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.last_step.insert(user.to_string(), step);
        totp::code_at(seed, step)
    }
}

/// Runs one walkthrough command with bash, answering its prompts as the person would;
/// returns (success, stdout, stderr).
fn run_as_written(
    command: &str,
    cwd: &Path,
    env: &[(&str, String)],
    people: &mut People,
) -> (bool, String, String) {
    let path = format!(
        "{}:{}",
        Path::new(BIN).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", command]).current_dir(cwd).env("PATH", path);
    for (key, _) in std::env::vars() {
        if key.starts_with("STINT_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::follow(child.stdout.take().unwrap());
    let stderr = Lines::follow(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let enrolled = command
        .split_whitespace()
        .skip_while(|w| *w != "--user")
        .nth(1)
        .map(str::to_string);
    let mut answered = 0;
    let mut login_user = String::new();
    let mut enrol_step = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{command} hangs");
        let err = stderr.text();
        let pending = &err[answered..];
        let answer = if let Some(user) = pending
            .strip_suffix(": ")
            .and_then(|p| p.rsplit("Password for ").next())
            .filter(|_| pending.contains("Password for "))
        {
            login_user = user.to_string();
            Some(people.passwords[user].clone())
        } else if pending.ends_with("MFA code (empty if none): ") {
            Some(people.fresh_code(&login_user))
        } else if pending.ends_with("First code: ") {
            let user = enrolled.clone().expect("mfa enroll names --user");
            let seed = secret_in(&stdout.text());
            people.seeds.insert(user, seed.clone());
            enrol_step = totp::step_at(SystemTime::now());
            Some(totp::code_at(&seed, enrol_step - 1))
        } else if pending.ends_with("Next code (wait for it to change): ") {
            let user = enrolled.clone().unwrap();
            people.last_step.insert(user.clone(), enrol_step);
            Some(totp::code_at(&people.seeds[&user], enrol_step))
        } else {
            None
        };
        if let Some(answer) = answer {
            writeln!(stdin, "{answer}").unwrap();
            answered = err.len();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), stdout.finish(), stderr.finish())
}

/// A `stint serve <args>` (from README: `serve --dev`) on a free port in `work`, in a shell
/// that uses the client, with the admin's password and TOTP seed as it printed them.
fn start_dev(work: &Path, home: &Path, args: &[&str]) -> (Served, People) {
    // A concrete free port, not `:0`: the issuer is derived from the configured `listen`,
    // and `:0` would name port 0 (as `--listen 127.0.0.1:7420` names 7420 in README).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = stint(work);
    serve
        .args(args)
        .env("STINT_LISTEN", format!("127.0.0.1:{port}"))
        .env("STINT_HOME", home)
        .env("STINT_PROFILE", "default");
    let served = Served::start(serve);
    let dev = served.stdout.wait_for("the admin's enrolment", |t| {
        Some((printed(t, "password:")?, printed(t, "TOTP secret:")?))
    });
    let mut people = People::default();
    people.passwords.insert("admin".into(), dev.0);
    people.seeds.insert(
        "admin".into(),
        data_encoding::BASE32_NOPAD
            .decode(dev.1.as_bytes())
            .unwrap(),
    );
    (served, people)
}

/// Runs README's walkthrough commands in order, each as written, in `work` with `stint`
/// first on the PATH; asserts each succeeds and returns (command, stdout) pairs. The one
/// rewrite: README's address `http://127.0.0.1:7420` (used by `curl`) becomes the test
/// server's, which clients otherwise reach through `STINT_ENDPOINT`.
fn run_walkthrough(
    commands: &[String],
    work: &Path,
    home: &Path,
    served: &Served,
    people: &mut People,
) -> Vec<(String, String)> {
    let endpoint = format!("http://{}", served.addr);
    let env = [
        ("STINT_HOME", home.display().to_string()),
        ("STINT_ENDPOINT", endpoint.clone()),
    ];
    let mut outputs = Vec::new();
    for command in commands {
        // The passwords the walkthrough sets, as the person would be told them.
        if command.contains("CreateLoginProfile")
            && let Some(json) = command.split('\'').nth(1)
        {
            let v: Value = serde_json::from_str(json).unwrap();
            people.passwords.insert(
                v["user_name"].as_str().unwrap().into(),
                v["password"].as_str().unwrap().into(),
            );
        }
        let runnable = command.replace("http://127.0.0.1:7420", &endpoint);
        let (ok, stdout, stderr) = run_as_written(&runnable, work, &env, people);
        assert!(
            ok,
            "README command failed: {command}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        outputs.push((command.clone(), stdout));
    }
    outputs
}

/// The stdout of the first command starting with `prefix`.
fn output_of<'a>(outputs: &'a [(String, String)], prefix: &str) -> &'a str {
    &outputs
        .iter()
        .find(|(c, _)| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no command starts with {prefix}"))
        .1
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// README's contractor walkthrough, every command as written, with the real binary
/// (`stint` first on the PATH) against a real daemon. The one line that is not run as
/// written is `cargo run -- serve --dev`: it is the same binary's `serve --dev`, started by
/// the test on a free port (`STINT_LISTEN=127.0.0.1:<port>`) in a temp dir, with cheap password
/// hashing; clients reach it through `STINT_ENDPOINT`. The passwords and codes are typed by
/// the test at the prompts: the admin's from what `serve --dev` prints, carol's from the
/// walkthrough's own `CreateLoginProfile` and `mfa enroll`.
#[test]
fn readme_contractor_walkthrough_works_as_written() {
    let commands = walkthrough(&readme(), "contractor");
    assert!(commands.len() >= 10, "{commands:#?}");
    assert_eq!(commands[0], "cargo run -- serve --dev");
    assert!(
        commands.iter().all(|c| !c.contains("jq ")),
        "the walkthrough needs only stint and a shell: {commands:#?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let home: PathBuf = work.join("home");
    // The server starts from a shell that uses the client (item 1 of issue 10).
    let serve_args: Vec<&str> = commands[0]
        .trim_start_matches("cargo run -- ")
        .split(' ')
        .collect();
    let (served, mut people) = start_dev(&work, &home, &serve_args);
    let outputs = run_walkthrough(&commands[1..], &work, &home, &served, &mut people);

    // It did what the text says.
    let out = |prefix: &str| output_of(&outputs, prefix);
    let creds: Value = serde_json::from_str(out("stint assume-role")).unwrap();
    let expiration = time::OffsetDateTime::parse(
        creds["expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = (expiration - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (7100..=7200).contains(&lifetime),
        "--duration 2h: {lifetime}"
    );
    assert!(
        out("stint whoami --profile carol/role").contains("assumed-role/contractor"),
        "{}",
        out("stint whoami --profile carol/role")
    );
    let decision = out("stint authorize").to_ascii_lowercase();
    assert!(
        decision.contains("allow") && !decision.contains("deny"),
        "{decision}"
    );
    let exec = out("stint exec --profile contractor");
    assert!(
        exec.contains("assumed-role/contractor/") && exec.contains("STINT_TOKEN"),
        "{exec}"
    );
    assert!(out("stint mfa enroll").contains("is enabled for carol"));
    let carol_events = out("stint audit list --principal");
    assert!(carol_events.contains("sts:AssumeRole"), "{carol_events}");
    assert!(work.join("trust.json").exists());
}

/// README's service walkthrough, as written, against a fresh `serve --dev`: an access key
/// for `reporter`, a role it may assume, an access-key login, a profile, and `stint exec`
/// whose child prints the credentials it was given, asks who it is, and exits.
#[test]
fn readme_service_walkthrough_works_as_written() {
    let commands = walkthrough(&readme(), "service");
    assert!(commands.len() >= 9, "{commands:#?}");
    assert_eq!(commands[0], "stint login --user admin");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let home: PathBuf = work.join("home");
    let (served, mut people) = start_dev(&work, &home, &["serve", "--dev"]);
    let outputs = run_walkthrough(&commands, &work, &home, &served, &mut people);
    let out = |prefix: &str| output_of(&outputs, prefix);

    // The key as CreateAccessKey printed it, kept private; the secret alone in its file.
    let key: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("key.json")).unwrap()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(work.join("key.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(work.join("reporter.secret")).unwrap();
    assert_eq!(
        secret.trim(),
        key["access_key"]["secret_access_key"].as_str().unwrap()
    );
    let login = out("stint login --profile reporter");
    assert!(login.contains("user/reporter"), "{login}");

    // The child got the role's credentials and acted as the role.
    let exec = out("stint exec --profile svc");
    let first = exec.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("ASIA")
            && first.contains(" until 20")
            && first.ends_with(&format!(" from http://{}", served.addr)),
        "{exec}"
    );
    assert!(
        exec.contains("arn:stint:sts::000000000000:assumed-role/reports-reader/reporter"),
        "{exec}"
    );
}

/// README's app-developer walkthrough, as written, against a fresh `serve --dev`: a token
/// minted for the `billing` audience, OIDC discovery naming the server's URL as issuer,
/// and `Tokens.Authorize` asked with the app's own session. Then what the text promises
/// besides: the role refuses a token for another audience, and Stint refuses the app token
/// as a session.
#[test]
fn readme_app_walkthrough_works_as_written() {
    let commands = walkthrough(&readme(), "app");
    assert!(commands.len() >= 9, "{commands:#?}");
    assert_eq!(commands[0], "stint login --user admin");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let home: PathBuf = work.join("home");
    let (served, mut people) = start_dev(&work, &home, &["serve", "--dev"]);
    let outputs = run_walkthrough(&commands, &work, &home, &served, &mut people);
    let out = |prefix: &str| output_of(&outputs, prefix);
    let endpoint = format!("http://{}", served.addr);

    // The token is for billing.
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("clerk-token.json")).unwrap())
            .unwrap();
    let token = creds["session_token"].as_str().unwrap().to_string();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "billing", "{claims}");
    assert_eq!(claims["iss"], endpoint.as_str(), "{claims}");

    // Discovery names the server's URL as issuer, and its keys.
    let discovery: Value =
        serde_json::from_str(out("curl -s http://127.0.0.1:7420/.well-known/openid")).unwrap();
    assert_eq!(discovery["issuer"], endpoint.as_str());
    assert_eq!(
        discovery["jwks_uri"],
        format!("{endpoint}/.well-known/jwks.json").as_str()
    );
    let jwks: Value =
        serde_json::from_str(out("curl -s http://127.0.0.1:7420/.well-known/jwks")).unwrap();
    let kid = token_kid(&token);
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str()),
        "{jwks}"
    );

    // The app's own session asked, and the clerk may read the invoice.
    let decision: Value = serde_json::from_str(out("stint call --profile billing-app")).unwrap();
    assert_eq!(decision["decision"], "Allow", "{decision}");
    assert!(
        decision["principal_arn"]
            .as_str()
            .unwrap()
            .contains("assumed-role/billing-clerk/"),
        "{decision}"
    );

    // "Without `--audience billing` the trust policy refuses the role."
    let env = [
        ("STINT_HOME", home.display().to_string()),
        ("STINT_ENDPOINT", endpoint.clone()),
    ];
    let (ok, _, stderr) = run_as_written(
        "stint assume-role --role-arn arn:stint:iam::000000000000:role/billing-clerk",
        &work,
        &env,
        &mut people,
    );
    assert!(!ok && stderr.contains("permission denied"), "{stderr}");
    // "Stint itself refuses it as a session."
    let (ok, _, stderr) = run_as_written(
        &format!("stint whoami --token {token}"),
        &work,
        &env,
        &mut people,
    );
    assert!(!ok && stderr.contains("audience"), "{stderr}");
}

/// The `kid` in a JWT's header.
fn token_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(header.as_bytes())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}
