//! A disk that fills up, with the real `stint serve` binary: its data dir and its own log
//! on a small tmpfs. While the disk is full every write fails UNAVAILABLE (never CANCELLED
//! or INTERNAL) and health is NOT_SERVING; once space returns the daemon recovers by
//! itself, and afterwards nothing is lost or half-written: the chain verifies and every
//! credential a client received has its event. Mounting needs root: skipped loudly when
//! not permitted. A second test logs to `/dev/full` (every write ENOSPC), which needs
//! nothing special.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use stint::proto;
use stint::proto::iam_client::IamClient;
use stint::proto::sts_client::StsClient;

use crate::common::{arn, trust};
use crate::crash::{Daemon, admin_token, bearer, command, init, recorded_sessions, verify};

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.0).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A port free right now, for a daemon whose log cannot be read for its address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `stint serve` on `port` with its log going to `stderr`.
fn serve(data_dir: &Path, port: u16, stderr: Stdio) -> Daemon {
    let addr = format!("127.0.0.1:{port}");
    let child = command(data_dir)
        .args(["serve", "--listen", &addr, "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("stint serve starts");
    Daemon { child, addr }
}

async fn health(channel: Channel) -> Option<ServingStatus> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

/// Waits (bounded) until the daemon answers health checks with SERVING.
async fn serving(daemon: &mut Daemon) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("the daemon exited before serving: {status}");
        }
        // Every call bounded: a daemon that hangs fails the test instead of stalling it.
        if let Ok(channel) = Channel::from_shared(format!("http://{}", daemon.addr))
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            && health(channel.clone()).await == Some(ServingStatus::Serving)
        {
            return channel;
        }
        assert!(Instant::now() < deadline, "the daemon never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ROLE: &str = "disk-role";

async fn create_role(channel: Channel, admin: &str) {
    IamClient::new(channel)
        .create_role(bearer(
            proto::CreateRoleRequest {
                role_name: ROLE.into(),
                assume_role_policy_document: trust(&arn("user", "admin"), None),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("CreateRole");
}

/// One AssumeRole: the session id of the credential received.
async fn mint(channel: Channel, admin: &str, name: &str) -> Result<String, tonic::Status> {
    let request = proto::AssumeRoleRequest {
        role_arn: arn("role", ROLE),
        role_session_name: name.into(),
        ..Default::default()
    };
    StsClient::new(channel)
        .assume_role(bearer(request, admin))
        .await
        .map(|r| r.into_inner().credentials.unwrap().access_key_id)
}

async fn create_user(channel: Channel, admin: &str, user: &str) -> Result<(), tonic::Status> {
    IamClient::new(channel)
        .create_user(bearer(
            proto::CreateUserRequest {
                user_name: user.into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .map(|_| ())
}

/// Fills the filesystem of `path` with one file until a write fails.
fn fill(path: &Path) {
    let mut ballast = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 256 << 10];
    while ballast.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while ballast.write_all(&small).is_ok() {}
    let _ = ballast.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_unavailable_and_recovers_when_space_returns() {
    let parent = tempfile::tempdir().unwrap();
    let mnt = parent.path().join("mnt");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "24m") else {
        eprintln!(
            "SKIPPED a_full_disk_fails_writes_unavailable_and_recovers_when_space_returns: \
             cannot mount a tmpfs here (needs root)"
        );
        return;
    };
    let data_dir = mnt.join("data");
    let admin_seed = init(&data_dir);
    let log = std::fs::File::create(mnt.join("stint.log")).unwrap();
    let mut daemon = serve(&data_dir, free_port(), Stdio::from(log));
    let channel = serving(&mut daemon).await;
    let admin = admin_token(channel.clone(), &admin_seed).await;
    create_role(channel.clone(), &admin).await;
    let mut received = vec![mint(channel.clone(), &admin, "before").await.unwrap()];

    // The disk fills up: writes fail UNAVAILABLE, nothing else, and health follows.
    let ballast = mnt.join("ballast");
    fill(&ballast);
    let mut codes = Vec::new();
    let mut unavailable = 0;
    for i in 0..400 {
        let outcome = if i % 2 == 0 {
            mint(channel.clone(), &admin, &format!("full-{i}"))
                .await
                .map(|id| received.push(id))
        } else {
            create_user(channel.clone(), &admin, &format!("full-{i}")).await
        };
        if let Err(status) = outcome {
            codes.push(status.code());
            if status.code() == Code::Unavailable {
                unavailable += 1;
                if unavailable >= 10 {
                    break;
                }
            }
        }
    }
    let wrong: Vec<&Code> = codes.iter().filter(|c| **c != Code::Unavailable).collect();
    assert!(
        wrong.is_empty(),
        "writes on a full disk must fail UNAVAILABLE only, got {wrong:?}"
    );
    assert!(unavailable >= 10, "the full disk never failed a write");
    assert_eq!(
        health(channel.clone()).await,
        Some(ServingStatus::NotServing),
        "health while the disk is full"
    );

    // Space returns: the daemon recovers by itself, within a bounded time.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(30);
    loop {
        if health(channel.clone()).await == Some(ServingStatus::Serving)
            && let Ok(id) = mint(channel.clone(), &admin, "recovered").await
        {
            received.push(id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 30 s of space returning"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "disk full: {} writes refused UNAVAILABLE; recovered {:?} after space returned",
        codes.len(),
        freed.elapsed()
    );
    create_user(channel.clone(), &admin, "after-recovery")
        .await
        .expect("writes work again");
    for i in 0..20 {
        received.push(
            mint(channel.clone(), &admin, &format!("after-{i}"))
                .await
                .unwrap(),
        );
    }

    // Nothing lost or half-written: the chain verifies and every credential has its event.
    drop(channel);
    assert!(daemon.terminate(), "SIGTERM exits 0");
    verify(&data_dir);
    let recorded = recorded_sessions(&data_dir);
    let missing: Vec<&String> = received
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "credentials without their event: {missing:?}"
    );
}

/// The daemon's log on a device where every write fails (ENOSPC): requests still succeed
/// (tracing-subscriber's default reports a failed log write with `eprintln!`, which
/// panics when stderr itself fails; a panic in a handler ended calls CANCELLED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_never_fails_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let admin_seed = init(dir.path());
    let dev_full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut daemon = serve(dir.path(), free_port(), Stdio::from(dev_full));
    let channel = serving(&mut daemon).await;
    let admin = admin_token(channel.clone(), &admin_seed).await;
    create_role(channel.clone(), &admin).await;
    mint(channel.clone(), &admin, "logged-nowhere")
        .await
        .expect("AssumeRole");
    // A refusal logs too.
    let refused = StsClient::new(channel.clone())
        .get_session_token(crate::crash::password_login(
            "admin",
            "wrong password",
            String::new(),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    drop(channel);
    assert!(daemon.terminate(), "SIGTERM exits 0");
}
