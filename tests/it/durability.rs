//! Issue 6, the audit and rotation logs: one event per state change or mint, with the
//! right fields; no credential without its durable record when the store fails; watching
//! the log live; tampering found offline.

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use stint::audit::chain::{self, Breach};
use stint::proto::{self, AuditEvent};
use stint::store::sled::SledStore;
use stint::store::{Batch, Store, Table};

use crate::common::*;

/// The events a step caused: everything after `*mark` except the trailing read of the
/// log itself; moves `*mark` past that read.
async fn caused(server: &TestServer, admin: &str, mark: &mut u64) -> Vec<AuditEvent> {
    let mut events = server.events_after(admin, *mark).await;
    let read = events.pop().expect("the listing's own event");
    assert_eq!(read.event_name, "stint:ReadAuditLog", "{read:?}");
    *mark = read.seq;
    events
}

/// What one step should have logged.
struct Expect<'a> {
    event_name: &'a str,
    principal: &'a str,
    outcome: &'a str,
    /// For mints: the credential's `access_key_id`.
    session_id: Option<String>,
}

#[track_caller]
fn check_one(step: &str, events: &[AuditEvent], expect: &Expect<'_>, secrets: &[&str]) {
    assert_eq!(
        events.len(),
        1,
        "{step}: expected exactly one event: {events:#?}"
    );
    let event = &events[0];
    assert_eq!(event.event_name, expect.event_name, "{step}: {event:?}");
    assert_eq!(event.principal_arn, expect.principal, "{step}: {event:?}");
    assert_eq!(event.outcome, expect.outcome, "{step}: {event:?}");
    assert!(
        !event.request_id.is_empty(),
        "{step}: no request id: {event:?}"
    );
    assert_eq!(event.source_ip, "127.0.0.1", "{step}: {event:?}");
    if let Some(session_id) = &expect.session_id {
        assert_eq!(&event.session_id, session_id, "{step}: {event:?}");
    }
    for secret in secrets {
        assert!(
            !event.event_json.contains(secret),
            "{step}: a secret reached the audit log: {}",
            event.event_json
        );
    }
}

#[tokio::test]
async fn every_change_and_mint_is_one_event_with_its_fields() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let admin_arn = arn("user", ADMIN);
    let dev_arn = arn("user", "dev");
    let dev_password = "dev-password-1";
    let mut iam = server.iam_as(&admin);
    let mut mark = server.events_after(&admin, 0).await.last().unwrap().seq;
    let mut secrets: Vec<String> = vec![ADMIN_PASSWORD.into(), dev_password.into(), admin.clone()];

    iam.create_user(proto::CreateUserRequest {
        user_name: "dev".into(),
        ..Default::default()
    })
    .await
    .expect("CreateUser");
    let expect = |event_name, principal, outcome| Expect {
        event_name,
        principal,
        outcome,
        session_id: None,
    };
    let events = caused(&server, &admin, &mut mark).await;
    check_one(
        "CreateUser",
        &events,
        &expect("iam:CreateUser", &admin_arn, "Allow"),
        &[],
    );
    assert!(events[0].event_json.contains("\"dev\""), "{events:?}");

    // (The login profile is set up outside the table.)
    iam.create_login_profile(proto::CreateLoginProfileRequest {
        user_name: "dev".into(),
        password: dev_password.into(),
        password_reset_required: false,
    })
    .await
    .expect("CreateLoginProfile");
    caused(&server, &admin, &mut mark).await;

    iam.attach_user_policy(proto::AttachUserPolicyRequest {
        user_name: "dev".into(),
        policy_arn: builtin("ReadOnlyAccess"),
    })
    .await
    .expect("AttachUserPolicy");
    check_one(
        "AttachUserPolicy",
        &caused(&server, &admin, &mut mark).await,
        &expect("iam:AttachUserPolicy", &admin_arn, "Allow"),
        &[],
    );

    iam.create_role(proto::CreateRoleRequest {
        role_name: "worker".into(),
        assume_role_policy_document: trust(&dev_arn, None),
        ..Default::default()
    })
    .await
    .expect("CreateRole");
    check_one(
        "CreateRole",
        &caused(&server, &admin, &mut mark).await,
        &expect("iam:CreateRole", &admin_arn, "Allow"),
        &[],
    );

    server
        .put_role_policy(&admin, "worker", "read", &allow(&["s3:GetObject"], &["*"]))
        .await;
    check_one(
        "PutRolePolicy",
        &caused(&server, &admin, &mut mark).await,
        &expect("iam:PutRolePolicy", &admin_arn, "Allow"),
        &[],
    );

    // A role dev may not assume.
    iam.create_role(proto::CreateRoleRequest {
        role_name: "locked".into(),
        assume_role_policy_document: trust(&admin_arn, None),
        ..Default::default()
    })
    .await
    .expect("CreateRole locked");
    caused(&server, &admin, &mut mark).await;

    // Mints: GetSessionToken allowed and denied.
    let dev = server
        .login("dev", dev_password, None)
        .await
        .expect("dev login");
    secrets.push(dev.session_token.clone());
    check_one(
        "GetSessionToken Allow",
        &caused(&server, &admin, &mut mark).await,
        &Expect {
            session_id: Some(dev.access_key_id.clone()),
            ..expect("sts:GetSessionToken", &dev_arn, "Allow")
        },
        &[dev_password, &dev.session_token],
    );
    assert_status(
        server.login("dev", "not-the-password", None).await,
        Code::Unauthenticated,
        &[],
    );
    server.after_failure();
    let events = caused(&server, &admin, &mut mark).await;
    // Nobody authenticated: the event names the user the attempt was for.
    let attempted = events
        .first()
        .map(|e| e.principal_arn.clone())
        .unwrap_or_default();
    assert!(
        attempted == dev_arn || attempted == "dev",
        "denied login names {attempted:?}"
    );
    check_one(
        "GetSessionToken Deny",
        &events,
        &expect("sts:GetSessionToken", &attempted, "Deny"),
        &["not-the-password"],
    );
    assert!(!events[0].reason.is_empty(), "{events:?}");

    // AssumeRole allowed and denied.
    let assumed = server
        .sts_as(&dev.session_token)
        .assume_role(proto::AssumeRoleRequest {
            role_arn: arn("role", "worker"),
            role_session_name: "job".into(),
            ..Default::default()
        })
        .await
        .expect("AssumeRole")
        .into_inner()
        .credentials
        .unwrap();
    secrets.push(assumed.session_token.clone());
    check_one(
        "AssumeRole Allow",
        &caused(&server, &admin, &mut mark).await,
        &Expect {
            session_id: Some(assumed.access_key_id.clone()),
            ..expect("sts:AssumeRole", &dev_arn, "Allow")
        },
        &[&assumed.session_token, &dev.session_token],
    );
    assert_status(
        server
            .sts_as(&dev.session_token)
            .assume_role(proto::AssumeRoleRequest {
                role_arn: arn("role", "locked"),
                role_session_name: "job".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        &["sts:AssumeRole"],
    );
    let events = caused(&server, &admin, &mut mark).await;
    check_one(
        "AssumeRole Deny",
        &events,
        &Expect {
            session_id: Some(String::new()),
            ..expect("sts:AssumeRole", &dev_arn, "Deny")
        },
        &[&dev.session_token],
    );
    assert!(events[0].reason.contains("sts:AssumeRole"), "{events:?}");

    // Keys, revocation, access keys.
    server
        .keys_as(&admin)
        .rotate_signing_key(proto::RotateSigningKeyRequest {})
        .await
        .expect("RotateSigningKey");
    check_one(
        "RotateSigningKey",
        &caused(&server, &admin, &mut mark).await,
        &expect("stint:RotateSigningKey", &admin_arn, "Allow"),
        &[],
    );
    server
        .tokens_as(&admin)
        .revoke_session(proto::RevokeSessionRequest {
            session_id: assumed.access_key_id.clone(),
            ..Default::default()
        })
        .await
        .expect("RevokeSession");
    let events = caused(&server, &admin, &mut mark).await;
    check_one(
        "RevokeSession",
        &events,
        &expect("stint:RevokeSession", &admin_arn, "Allow"),
        &[&assumed.session_token],
    );
    assert!(
        events[0].event_json.contains(&assumed.access_key_id),
        "{events:?}"
    );
    let key = iam
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "dev".into(),
        })
        .await
        .expect("CreateAccessKey")
        .into_inner()
        .access_key
        .unwrap();
    let events = caused(&server, &admin, &mut mark).await;
    check_one(
        "CreateAccessKey",
        &events,
        &expect("iam:CreateAccessKey", &admin_arn, "Allow"),
        &[&key.secret_access_key],
    );
    // (The event names the user but not the new key's id: noted, not asserted.)
    secrets.push(key.secret_access_key.clone());

    // Across the whole log: no password, token or secret key, anywhere.
    for event in server.events_after(&admin, 0).await {
        for secret in &secrets {
            assert!(
                !event.event_json.contains(secret.as_str()),
                "a secret in event {}: {}",
                event.seq,
                event.event_json
            );
        }
    }
}

// ---- the store refuses writes -----------------------------------------------------------

async fn assume(
    server: &TestServer,
    token: &str,
) -> Result<proto::AssumeRoleResponse, tonic::Status> {
    server
        .sts_as(token)
        .assume_role(proto::AssumeRoleRequest {
            role_arn: arn("role", "worker"),
            role_session_name: "job".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// An admin session, and a session of user `dev`, whom role `worker` trusts.
async fn dev_who_may_assume_worker(server: &TestServer) -> (String, String) {
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    server
        .create_role(&admin, "worker", trust(&arn("user", "dev"), None))
        .await;
    let dev = server.session("dev", "dev-password-1").await;
    (admin, dev)
}

#[tokio::test]
async fn no_credential_leaves_while_the_store_refuses_writes() {
    let (server, store) = TestServer::over_faults(5, 60).await;
    let (_, dev) = dev_who_may_assume_worker(&server).await;
    assume(&server, &dev)
        .await
        .expect("AssumeRole while healthy");
    server.health_becomes(ServingStatus::Serving).await;

    store.refuse_all(true);
    // Bounded well below the default flush timeout (5 s): the configured 200 ms applies.
    let bound = FAULT_FLUSH_TIMEOUT * 10;
    let login = tokio::time::timeout(bound, server.login("dev", "dev-password-1", None))
        .await
        .expect("GetSessionToken answers within the bound");
    assert_status(login, Code::Unavailable, &[]);
    let assumed = tokio::time::timeout(bound, assume(&server, &dev))
        .await
        .expect("AssumeRole answers within the bound");
    assert_status(assumed, Code::Unavailable, &[]);
    server.health_becomes(ServingStatus::NotServing).await;

    store.refuse_all(false);
    server.health_becomes(ServingStatus::Serving).await;
    let fresh = server
        .login("dev", "dev-password-1", None)
        .await
        .expect("login once the store accepts writes");
    assume(&server, &fresh.session_token)
        .await
        .expect("AssumeRole once the store accepts writes");
    let admin = server.admin_login().await;
    let report = server.verify_chain(&admin).await;
    assert!(report.intact, "{report:?}");
}

/// A flush that fails answers every caller whose record it was to cover at once, with
/// UNAVAILABLE: none waits out the flush timeout (30 s here). Their records stay in the
/// chain and become durable with the next good flush.
#[tokio::test]
async fn a_failed_flush_answers_its_callers_at_once() {
    let store = std::sync::Arc::new(FaultStore::default());
    let server = TestServer::builder()
        .faults(&store)
        .config(|config| config.audit.flush_timeout_ms = 30_000)
        .start()
        .await;
    let (admin, dev) = dev_who_may_assume_worker(&server).await;

    store.refuse_flush(true);
    let started = std::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut sts = server.sts_as(&dev);
        calls.spawn(async move {
            sts.assume_role(proto::AssumeRoleRequest {
                role_arn: arn("role", "worker"),
                role_session_name: "job".into(),
                ..Default::default()
            })
            .await
        });
    }
    while let Some(answer) = calls.join_next().await {
        assert_status(answer.expect("call task"), Code::Unavailable, &[]);
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "callers of a failed flush waited {took:?}"
    );

    store.refuse_flush(false);
    server.health_becomes(ServingStatus::Serving).await;
    assume(&server, &dev)
        .await
        .expect("AssumeRole once flushes succeed");
    let report = server.verify_chain(&admin).await;
    assert!(report.intact, "{report:?}");
}

// ---- WatchEvents ------------------------------------------------------------------------

fn created(event: &AuditEvent, name: &str) -> bool {
    event.event_name == "iam:CreateUser" && event.event_json.contains(&format!("\"{name}\""))
}

#[tokio::test]
async fn watch_events_follows_the_log_without_gaps() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "early").await;
    let listed = server.events_after(&admin, 0).await;
    let last = listed.last().unwrap().seq;

    let mut live = server.watch(&admin, last).await.expect("WatchEvents");
    server.create_user(&admin, "u1").await;
    server.create_user(&admin, "u2").await;
    // The watch's own read of the log comes first (it is audited before streaming).
    let own = next_event(&mut live).await;
    assert_eq!(own.seq, last + 1, "{own:?}");
    assert_eq!(own.event_name, "stint:ReadAuditLog", "{own:?}");
    let first = next_event(&mut live).await;
    let second = next_event(&mut live).await;
    assert!(created(&first, "u1"), "{first:?}");
    assert!(created(&second, "u2"), "{second:?}");
    assert_eq!((first.seq, second.seq), (last + 2, last + 3));
    assert_eq!(second.prev_hash, first.hash);

    // From an older seq: the backlog first, in order and without gaps, then live.
    let from = listed[listed.len() / 2].seq;
    let mut replay = server.watch(&admin, from).await.expect("WatchEvents");
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut replay).await;
        let done = created(&event, "u2");
        seen.push(event);
        if done {
            break;
        }
    }
    for (i, event) in seen.iter().enumerate() {
        assert_eq!(event.seq, from + 1 + i as u64, "{seen:#?}");
    }
    assert!(seen.iter().any(|e| created(e, "u1")), "{seen:#?}");
    // Next: this watch's own read, then a new event, live on both streams.
    let own = next_event(&mut replay).await;
    assert_eq!(own.event_name, "stint:ReadAuditLog", "{own:?}");
    server.create_user(&admin, "u3").await;
    let replayed = next_event(&mut replay).await;
    assert!(created(&replayed, "u3"), "{replayed:?}");
    assert_eq!(replayed.seq, own.seq + 1);
    let mut tail = next_event(&mut live).await;
    if tail.event_name == "stint:ReadAuditLog" {
        // The second watch's read, seen live on the first stream.
        assert_eq!(tail.seq, second.seq + 1, "{tail:?}");
        tail = next_event(&mut live).await;
    }
    assert_eq!(tail.seq, replayed.seq, "{tail:?}");
}

// ---- tampering, found offline -----------------------------------------------------------

fn write(data_dir: &std::path::Path, seq: u64, value: Option<Vec<u8>>) {
    let store = SledStore::open(data_dir, 1 << 20).expect("open the data dir");
    store
        .commit(&Batch {
            expects: vec![],
            writes: vec![(Table::Audit, chain::record_key(seq).to_vec(), value)],
        })
        .unwrap();
    store.flush().unwrap();
}

#[tokio::test]
async fn edited_and_deleted_events_are_found_offline() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    for name in ["u1", "u2", "u3", "u4"] {
        server.create_user(&admin, name).await;
    }
    let data_dir = server.config.data_dir.clone();
    let _dir = server.stop_keeping_data().await;
    let verify = || stint::cli::audit::verify_offline(&data_dir, 1 << 20).expect("verify");

    let report = verify();
    assert!(report.intact, "{report:?}");
    let total = report.last_seq;
    assert!(total >= 6, "{report:?}");

    // Change one byte of one event: the `2` of the user name in `CreateUser u2`.
    let (target, original) = {
        let store = SledStore::open(&data_dir, 1 << 20).unwrap();
        store
            .scan(Table::Audit, &[], None, 10_000)
            .unwrap()
            .into_iter()
            .find(|(_, value)| {
                let text = String::from_utf8_lossy(value);
                text.contains("iam:CreateUser") && text.contains("\"u2\"")
            })
            .map(|(key, value)| (chain::seq_of_key(&key).unwrap(), value))
            .expect("the CreateUser u2 event")
    };
    assert!(target > 1 && target < total, "{target} of {total}");
    let text = String::from_utf8(original.clone()).unwrap();
    let at = text.find("\"u2\"").unwrap() + 2;
    let mut edited = original.clone();
    edited[at] = b'9';
    write(&data_dir, target, Some(edited));
    let report = verify();
    assert!(!report.intact, "{report:?}");
    assert_eq!(report.first_broken_seq, Some(target), "{report:?}");
    assert_eq!(report.breach, Some(Breach::Edited), "{report:?}");
    assert_eq!(report.breach.unwrap().as_str(), "edited");

    // Put it back: intact again, so the edit was the only problem.
    write(&data_dir, target, Some(original));
    assert!(verify().intact);

    // Delete one event in the middle.
    let gone = total / 2 + 1;
    write(&data_dir, gone, None);
    let report = verify();
    assert!(!report.intact, "{report:?}");
    assert_eq!(report.first_broken_seq, Some(gone), "{report:?}");
    assert_eq!(report.breach, Some(Breach::Deleted), "{report:?}");
    assert_eq!(report.breach.unwrap().as_str(), "deleted");
}
