//! The audit log as seen over gRPC: every decision recorded, filters, paging, the chain.

use std::time::Duration;

use tonic::Code;

use stint::proto::{self, AuditEvent};

use crate::common::*;

async fn all_events(
    server: &TestServer,
    token: &str,
    filter: proto::ListEventsRequest,
) -> Vec<AuditEvent> {
    let mut audit = server.audit_as(token);
    let mut out = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = audit
            .list_events(proto::ListEventsRequest {
                next_token: next_token.clone(),
                ..filter.clone()
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

fn find<'a>(
    events: &'a [AuditEvent],
    name: &str,
    principal: &str,
    outcome: &str,
) -> Option<&'a AuditEvent> {
    events
        .iter()
        .find(|e| e.event_name == name && e.principal_arn == principal && e.outcome == outcome)
}

#[tokio::test]
async fn logins_and_iam_changes_are_recorded_with_their_outcome() {
    let server = TestServer::start().await;
    // A failed login first, then the admin's, then changes allowed and denied.
    assert_status(
        server.login(ADMIN, "wrong", None).await,
        Code::Unauthenticated,
        &[],
    );
    server.after_failure();
    let admin = server.admin_login().await;
    let admin_jti = jwt_claims(&admin)["jti"].as_str().unwrap().to_string();
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let dev = server
        .login("dev", "dev-password-1", None)
        .await
        .unwrap()
        .session_token;
    assert_status(
        server
            .iam_as(&dev)
            .create_user(proto::CreateUserRequest {
                user_name: "eve".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        &["iam:CreateUser"],
    );

    let events = all_events(&server, &admin, proto::ListEventsRequest::default()).await;
    let admin_arn = arn("user", ADMIN);
    let dev_arn = arn("user", "dev");

    let failed = find(&events, "sts:GetSessionToken", ADMIN, "Deny")
        .or_else(|| find(&events, "sts:GetSessionToken", &admin_arn, "Deny"))
        .unwrap_or_else(|| panic!("no denied login in {events:#?}"));
    assert!(!failed.reason.is_empty());
    assert!(
        !failed.event_json.contains("wrong"),
        "the password leaked into the audit log: {}",
        failed.event_json
    );
    let login = find(&events, "sts:GetSessionToken", &admin_arn, "Allow").expect("admin login");
    assert_eq!(login.session_id, admin_jti);
    assert_eq!(login.source_ip, "127.0.0.1");
    assert!(!login.event_json.contains(ADMIN_PASSWORD));

    let created = find(&events, "iam:CreateUser", &admin_arn, "Allow").expect("CreateUser allowed");
    assert!(
        created.event_json.contains("\"dev\""),
        "{}",
        created.event_json
    );
    let denied = find(&events, "iam:CreateUser", &dev_arn, "Deny").expect("CreateUser denied");
    assert!(
        denied.reason.contains("iam:CreateUser"),
        "{}",
        denied.reason
    );
    assert!(
        denied.reason.contains(&arn("user", "eve")),
        "{}",
        denied.reason
    );
    assert!(!denied.request_id.is_empty());

    // The log is a chain: ascending sequence numbers, each linked to its predecessor.
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "{pair:#?}");
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let times: Vec<i64> = events.iter().map(|e| timestamp_secs(&e.time)).collect();
    assert!(times.windows(2).all(|t| t[0] <= t[1]), "{times:?}");

    let report = server.verify_chain(&admin).await;
    assert!(report.intact, "{report:?}");
    assert!(report.events_checked >= events.len() as u64, "{report:?}");
    assert_eq!(report.first_broken_seq, 0);
}

#[tokio::test]
async fn filters_and_paging() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    for name in ["u1", "u2", "u3"] {
        server.advance(Duration::from_secs(10));
        iam.create_user(proto::CreateUserRequest {
            user_name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let created = all_events(
        &server,
        &admin,
        proto::ListEventsRequest {
            event_name: "iam:CreateUser".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(created.len(), 3, "{created:#?}");
    assert!(created.iter().all(|e| e.event_name == "iam:CreateUser"));

    // Paging one at a time yields the same events, in order.
    let mut audit = server.audit_as(&admin);
    let mut paged = Vec::new();
    let mut next_token = String::new();
    loop {
        let page = audit
            .list_events(proto::ListEventsRequest {
                event_name: "iam:CreateUser".into(),
                max_results: 1,
                next_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 1);
        paged.extend(page.events);
        if page.next_token.is_empty() {
            break;
        }
        next_token = page.next_token;
    }
    assert_eq!(
        paged.iter().map(|e| e.seq).collect::<Vec<_>>(),
        created.iter().map(|e| e.seq).collect::<Vec<_>>()
    );

    // A time window picks the middle one.
    let middle = timestamp_secs(&created[1].time);
    let window = all_events(
        &server,
        &admin,
        proto::ListEventsRequest {
            event_name: "iam:CreateUser".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: middle - 1,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: middle + 1,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(window.len(), 1, "{window:#?}");
    assert_eq!(window[0].seq, created[1].seq);

    // Outcome and principal filters.
    let denies = all_events(
        &server,
        &admin,
        proto::ListEventsRequest {
            outcome: "Deny".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(denies.is_empty(), "{denies:#?}");
    let by_admin = all_events(
        &server,
        &admin,
        proto::ListEventsRequest {
            principal_arn: arn("user", ADMIN),
            ..Default::default()
        },
    )
    .await;
    assert!(
        by_admin
            .iter()
            .all(|e| e.principal_arn == arn("user", ADMIN))
    );
    assert!(by_admin.len() >= 4);

    // Bad filter values name the field.
    for (request, field) in [
        (
            proto::ListEventsRequest {
                outcome: "Maybe".into(),
                ..Default::default()
            },
            "outcome",
        ),
        (
            proto::ListEventsRequest {
                max_results: 1001,
                ..Default::default()
            },
            "max_results",
        ),
        (
            proto::ListEventsRequest {
                next_token: "garbage".into(),
                ..Default::default()
            },
            "next_token",
        ),
    ] {
        assert_status(
            audit.list_events(request).await,
            Code::InvalidArgument,
            &[field],
        );
    }
}

#[tokio::test]
async fn reading_the_log_needs_the_right_and_is_itself_audited() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "dev", "dev-password-1")
        .await;
    let dev = server
        .login("dev", "dev-password-1", None)
        .await
        .unwrap()
        .session_token;
    assert_status(
        server
            .audit_as(&dev)
            .list_events(proto::ListEventsRequest::default())
            .await,
        Code::PermissionDenied,
        &["stint:ReadAuditLog"],
    );
    assert_status(
        server
            .audit_as(&dev)
            .verify_chain(proto::VerifyChainRequest {})
            .await,
        Code::PermissionDenied,
        &["stint:ReadAuditLog"],
    );
    let reads = all_events(
        &server,
        &admin,
        proto::ListEventsRequest {
            event_name: "stint:ReadAuditLog".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        find(&reads, "stint:ReadAuditLog", &arn("user", "dev"), "Deny").is_some(),
        "{reads:#?}"
    );
    assert!(find(&reads, "stint:ReadAuditLog", &arn("user", ADMIN), "Allow").is_some());
}

#[tokio::test]
async fn credential_changes_and_key_rotations_are_in_the_rotation_log() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server
        .create_user_with_password(&admin, "svc", "svc-password-1")
        .await;
    let secret = server
        .iam_as(&admin)
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "svc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_key
        .unwrap()
        .secret_access_key;
    server
        .keys_as(&admin)
        .rotate_signing_key(proto::RotateSigningKeyRequest {})
        .await
        .unwrap();
    let rotations = server
        .audit_as(&admin)
        .list_rotations(proto::ListRotationsRequest::default())
        .await
        .expect("ListRotations")
        .into_inner()
        .events;
    let names: Vec<&str> = rotations.iter().map(|e| e.event_name.as_str()).collect();
    for expected in [
        "stint:CreateSigningKey",
        "iam:CreateLoginProfile",
        "iam:CreateAccessKey",
        "stint:RotateSigningKey",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.contains(&"iam:CreateUser"), "{names:?}");
    // The new access key's secret is not in the log.
    let key_event = rotations
        .iter()
        .find(|e| e.event_name == "iam:CreateAccessKey")
        .unwrap();
    assert!(
        !key_event.event_json.contains(&secret),
        "{}",
        key_event.event_json
    );
    assert!(
        !rotations
            .iter()
            .any(|e| e.event_json.contains("svc-password-1"))
    );
}
