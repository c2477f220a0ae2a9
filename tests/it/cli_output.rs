//! The real `stint` binary as a client of a test server: `apply` (YAML, TOML, convergence,
//! `--dry-run`, `--prune`), `authorize`'s exit status (0 allow, 1 deny, 2 error, like
//! grep), the global `--output json` (64-bit numbers as numbers, `*_json` fields as
//! objects, decisions named `Allow`/`ExplicitDeny`/`ImplicitDeny`), and `stint iam` with
//! policy documents given as objects and `--describe`.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::{Value, json};
use tempfile::TempDir;

use stint::proto;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_stint");

/// Runs `stint` against a test server with an explicit token and an empty `STINT_HOME`.
struct Cli {
    endpoint: String,
    home: TempDir,
}

impl Cli {
    fn new(server: &TestServer) -> Cli {
        Cli {
            endpoint: format!("http://{}", server.addr),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `stint <global…> <args…> --endpoint … --token …`, off the runtime's thread so the
    /// in-process server keeps serving.
    async fn run(&self, token: &str, global: &[&str], args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        for key in [
            "STINT_TOKEN",
            "STINT_PROFILE",
            "STINT_ENDPOINT",
            "STINT_CA_CERT",
            "STINT_CONFIG",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("STINT_HOME", self.home.path())
            .args(global)
            .args(args)
            .args(["--endpoint", &self.endpoint, "--token", token]);
        tokio::task::spawn_blocking(move || cmd.output().expect("stint runs"))
            .await
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    async fn ok(&self, token: &str, global: &[&str], args: &[&str]) -> String {
        let out = self.run(token, global, args).await;
        assert!(
            out.status.success(),
            "stint {args:?} failed ({:?}): {}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

fn tags_of(tags: Vec<proto::Tag>) -> BTreeMap<String, String> {
    tags.into_iter().map(|t| (t.key, t.value)).collect()
}

async fn user_state(
    server: &TestServer,
    admin: &str,
    name: &str,
) -> (BTreeMap<String, String>, Vec<String>, Vec<String>) {
    let mut iam = server.iam_as(admin);
    let user = iam
        .get_user(proto::GetUserRequest {
            user_name: name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let groups = iam
        .list_groups_for_user(proto::ListGroupsForUserRequest {
            user_name: name.into(),
            max_items: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .groups
        .into_iter()
        .map(|g| g.group_name)
        .collect();
    let attached = iam
        .list_attached_user_policies(proto::ListAttachedUserPoliciesRequest {
            user_name: name.into(),
            max_items: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attached_policies
        .into_iter()
        .map(|p| p.policy_arn)
        .collect();
    (tags_of(user.tags), groups, attached)
}

const APPLY_YAML: &str = r#"
policies:
  - policy_name: ReadReports
    description: read the reports
    policy_document:
      Version: "2012-10-17"
      Statement:
        - {Effect: Allow, Action: "s3:GetObject", Resource: "arn:aws:s3:::reports/*"}
groups:
  - group_name: dev
    attached_policies: [ReadOnlyAccess]
users:
  - user_name: carol
    groups: [dev]
    tags: {team: web, cost: "42"}
    attached_policies: [ReadReports]
roles:
  - role_name: reports-reader
    max_session_duration: 7200
    assume_role_policy_document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Principal: {AWS: "arn:stint:iam::000000000000:user/carol"}
          Action: "sts:AssumeRole"
    attached_policies: [ReadReports]
"#;

/// The same carol, declared in TOML with other tags, no group and no managed policy.
const APPLY_TOML: &str = r#"
[[users]]
user_name = "carol"
tags = { team = "api" }
inline_policies = { s3 = { Version = "2012-10-17", Statement = [{ Effect = "Allow", Action = "s3:ListBucket", Resource = "*" }] } }
"#;

#[tokio::test]
async fn apply_yaml_creates_then_toml_converges_tags_memberships_and_attachments() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let cli = Cli::new(&server);
    let yaml = cli.file("iam.yaml", APPLY_YAML);

    let out = cli.ok(&admin, &[], &["apply", "-f", &yaml]).await;
    assert!(out.contains("create user carol"), "{out}");
    assert!(out.contains("create role reports-reader"), "{out}");
    let (tags, groups, attached) = user_state(&server, &admin, "carol").await;
    assert_eq!(
        tags,
        BTreeMap::from([("team".into(), "web".into()), ("cost".into(), "42".into())])
    );
    assert_eq!(groups, ["dev"]);
    assert_eq!(attached, [arn("policy", "ReadReports")]);
    let role = server
        .iam_as(&admin)
        .get_role(proto::GetRoleRequest {
            role_name: "reports-reader".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    assert_eq!(role.max_session_duration, 7200);

    // Idempotent: the second run plans nothing.
    let again = cli.ok(&admin, &[], &["apply", "-f", &yaml]).await;
    assert_eq!(again.trim(), "made 0 change(s)", "{again}");

    // Drift made by hand on a declared user is undone: the file is the truth.
    server
        .iam_as(&admin)
        .tag_user(proto::TagUserRequest {
            user_name: "carol".into(),
            tags: vec![proto::Tag {
                key: "handmade".into(),
                value: "x".into(),
            }],
        })
        .await
        .unwrap();
    let toml = cli.file("carol.toml", APPLY_TOML);
    let out = cli.ok(&admin, &[], &["apply", "-f", &toml]).await;
    assert!(out.contains("untag user carol: cost, handmade"), "{out}");
    assert!(out.contains("remove user carol from group dev"), "{out}");
    assert!(
        out.contains(&format!(
            "detach {} from user carol",
            arn("policy", "ReadReports")
        )),
        "{out}"
    );
    let (tags, groups, attached) = user_state(&server, &admin, "carol").await;
    assert_eq!(tags, BTreeMap::from([("team".into(), "api".into())]));
    assert!(groups.is_empty(), "{groups:?}");
    assert!(attached.is_empty(), "{attached:?}");
    let inline = server
        .iam_as(&admin)
        .get_user_policy(proto::GetUserPolicyRequest {
            user_name: "carol".into(),
            policy_name: "s3".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy_document;
    assert!(inline.contains("s3:ListBucket"), "{inline}");
    // --format overrides the extension; --dry-run plans the way back and changes nothing.
    let txt = cli.file("iam.txt", APPLY_YAML);
    let out = cli
        .ok(
            &admin,
            &[],
            &["apply", "-f", &txt, "--format", "yaml", "--dry-run"],
        )
        .await;
    assert!(out.contains("would add user carol to group dev"), "{out}");
    let (_, groups, _) = user_state(&server, &admin, "carol").await;
    assert!(
        groups.is_empty(),
        "--dry-run changed memberships: {groups:?}"
    );
    let out = cli.run(&admin, &[], &["apply", "-f", &txt]).await;
    assert!(!out.status.success(), "YAML read as JSON should fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("iam.txt"),
        "{out:?}"
    );

    // Without --prune the group, role and policy the TOML file omits are still there.
    assert!(
        server
            .iam_as(&admin)
            .get_role(proto::GetRoleRequest {
                role_name: "reports-reader".into()
            })
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn apply_dry_run_changes_nothing_and_prune_removes_only_what_is_undeclared() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let cli = Cli::new(&server);
    // What the file will not mention: a user with a password and an access key, a role
    // with a policy attached, a group, and a customer policy.
    server
        .create_user_with_password(&admin, "stale", "stale password 12345")
        .await;
    let mut iam = server.iam_as(&admin);
    iam.create_access_key(proto::CreateAccessKeyRequest {
        user_name: "stale".into(),
    })
    .await
    .unwrap();
    iam.create_policy(proto::CreatePolicyRequest {
        policy_name: "Old".into(),
        policy_document: allow(&["s3:GetObject"], &["*"]),
        ..Default::default()
    })
    .await
    .unwrap();
    iam.create_role(proto::CreateRoleRequest {
        role_name: "oldrole".into(),
        assume_role_policy_document: trust(&arn("user", "stale"), None),
        ..Default::default()
    })
    .await
    .unwrap();
    iam.attach_role_policy(proto::AttachRolePolicyRequest {
        role_name: "oldrole".into(),
        policy_arn: arn("policy", "Old"),
    })
    .await
    .unwrap();
    iam.create_group(proto::CreateGroupRequest {
        group_name: "legacy".into(),
        path: String::new(),
    })
    .await
    .unwrap();
    iam.add_user_to_group(proto::AddUserToGroupRequest {
        group_name: "legacy".into(),
        user_name: "stale".into(),
    })
    .await
    .unwrap();

    let file = cli.file(
        "keep.json",
        &json!({"users": [{"user_name": "carol"}]}).to_string(),
    );
    // --dry-run: the plan, in JSON, and nothing changes.
    let plan = cli
        .ok(
            &admin,
            &["--output", "json"],
            &["apply", "-f", &file, "--prune", "--dry-run"],
        )
        .await;
    let plan: Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["dry_run"], true);
    let changes: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap().to_string())
        .collect();
    for wanted in [
        "create_user",
        "delete_user",
        "delete_role",
        "delete_group",
        "delete_policy",
        "delete_access_key",
        "delete_login_profile",
    ] {
        assert!(changes.iter().any(|c| c == wanted), "{wanted}: {changes:?}");
    }
    let deleted: Vec<&Value> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "delete_user")
        .collect();
    assert_eq!(
        deleted,
        [&json!({"change": "delete_user", "name": "stale"})]
    );
    assert!(
        iam.get_user(proto::GetUserRequest {
            user_name: "stale".into()
        })
        .await
        .is_ok(),
        "--dry-run deleted a user"
    );
    assert_status(
        iam.get_user(proto::GetUserRequest {
            user_name: "carol".into(),
        })
        .await,
        tonic::Code::NotFound,
        &[],
    );

    // --prune for real: everything undeclared goes, except the caller and built-ins.
    let out = cli
        .ok(&admin, &[], &["apply", "-f", &file, "--prune"])
        .await;
    assert!(out.contains("delete user stale"), "{out}");
    assert!(!out.contains(&format!("delete user {ADMIN}")), "{out}");
    assert_status(
        iam.get_user(proto::GetUserRequest {
            user_name: "stale".into(),
        })
        .await,
        tonic::Code::NotFound,
        &[],
    );
    assert_status(
        iam.get_role(proto::GetRoleRequest {
            role_name: "oldrole".into(),
        })
        .await,
        tonic::Code::NotFound,
        &[],
    );
    assert_status(
        iam.get_policy(proto::GetPolicyRequest {
            policy_arn: arn("policy", "Old"),
        })
        .await,
        tonic::Code::NotFound,
        &[],
    );
    assert!(
        iam.get_user(proto::GetUserRequest {
            user_name: ADMIN.into()
        })
        .await
        .is_ok()
    );
    assert!(
        iam.get_policy(proto::GetPolicyRequest {
            policy_arn: builtin("AdministratorAccess")
        })
        .await
        .is_ok()
    );
    // The admin still works (its own attachments were kept), and a second prune is empty.
    let again = cli
        .ok(&admin, &[], &["apply", "-f", &file, "--prune"])
        .await;
    assert_eq!(again.trim(), "made 0 change(s)", "{again}");
}

/// A role session whose policies allow s3:* but explicitly deny s3:DeleteObject.
async fn role_token(server: &TestServer, admin: &str) -> String {
    let mut iam = server.iam_as(admin);
    iam.create_role(proto::CreateRoleRequest {
        role_name: "reader".into(),
        assume_role_policy_document: trust(&arn("user", ADMIN), None),
        ..Default::default()
    })
    .await
    .unwrap();
    let document = json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "NoDelete", "Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}
        ]
    });
    server
        .put_role_policy(admin, "reader", "s3", &document.to_string())
        .await;
    server
        .sts_as(admin)
        .assume_role(proto::AssumeRoleRequest {
            role_arn: arn("role", "reader"),
            role_session_name: "cli".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap()
        .session_token
}

#[tokio::test]
async fn authorize_exits_0_allow_1_deny_2_error_and_names_decisions() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let token = role_token(&server, &admin).await;
    let cli = Cli::new(&server);
    let ask = |action: &'static str| {
        [
            "authorize",
            "--action",
            action,
            "--resource",
            "arn:aws:s3:::bucket/key",
        ]
    };
    let rows = [
        ("s3:GetObject", 0, "Allow"),
        ("s3:DeleteObject", 1, "ExplicitDeny"),
        ("ec2:RunInstances", 1, "ImplicitDeny"),
    ];
    for (action, code, decision) in rows {
        let out = cli.run(&token, &[], &ask(action)).await;
        assert_eq!(out.status.code(), Some(code), "{action}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().next(), Some(decision), "{action}: {text}");

        let out = cli.run(&token, &["--output", "json"], &ask(action)).await;
        assert_eq!(out.status.code(), Some(code), "{action} (json)");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["decision"], decision, "{json}");
    }
    // Errors are 2, not 1: a token the server refuses, and no server at all.
    let out = cli.run("not-a-token", &[], &ask("s3:GetObject")).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let mut cmd = Command::new(BIN);
    cmd.env("STINT_HOME", cli.home.path())
        .env_remove("STINT_TOKEN")
        .args(ask("s3:GetObject"))
        .args(["--endpoint", "http://127.0.0.1:1", "--token", &token]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test]
async fn output_json_prints_numbers_and_nested_json() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let cli = Cli::new(&server);

    // Audit events: uint64 seq as a number, event_json as an object.
    let out = cli
        .ok(
            &admin,
            &["--output", "json"],
            &["audit", "list", "--max", "5"],
        )
        .await;
    let json: Value = serde_json::from_str(&out).unwrap();
    let events = json["events"].as_array().unwrap();
    assert!(!events.is_empty());
    for event in events {
        assert!(event["seq"].is_u64(), "{event}");
        assert!(event["event_json"].is_object(), "{event}");
    }

    // Introspect: int64 exp as a number, claims_json as an object.
    let body = json!({ "token": admin }).to_string();
    let out = cli
        .ok(&admin, &[], &["call", "Tokens/Introspect", &body])
        .await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["active"], true, "{json}");
    assert!(json["exp"].is_i64(), "{json}");
    assert_eq!(json["claims_json"]["exp"], json["exp"], "{json}");

    // RevokeSession: uint64 count as a number.
    let out = cli
        .ok(
            &admin,
            &["--output", "json"],
            &["revoke", "--role-arn", &arn("role", "nobody")],
        )
        .await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert!(json["revoked"].is_u64(), "{json}");

    // The credential report follows --output: CSV in text, JSON with --output json; the old
    // `--format` spelling still works.
    let csv = cli.ok(&admin, &[], &["review", "credential-report"]).await;
    assert!(csv.starts_with("user,"), "{csv}");
    let report = cli
        .ok(
            &admin,
            &["--output", "json"],
            &["review", "credential-report"],
        )
        .await;
    assert!(serde_json::from_str::<Value>(&report).is_ok(), "{report}");
    let old = cli
        .ok(
            &admin,
            &[],
            &["review", "credential-report", "--format", "json"],
        )
        .await;
    assert!(serde_json::from_str::<Value>(&old).is_ok(), "{old}");
    // whoami had its own --output; the global one before the subcommand works too.
    let out = cli.ok(&admin, &["--output", "json"], &["whoami"]).await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["arn"], arn("user", ADMIN), "{json}");
    assert!(json["expires_in_seconds"].is_i64(), "{json}");

    // Global flag after the subcommand works too.
    let out = cli
        .ok(
            &admin,
            &[],
            &["audit", "list", "--max", "1", "--output", "json"],
        )
        .await;
    assert!(serde_json::from_str::<Value>(&out).unwrap()["events"][0]["seq"].is_u64());
}

#[tokio::test]
async fn iam_accepts_object_documents_and_describes_actions() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let cli = Cli::new(&server);
    let document = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]
    });
    let body = json!({"policy_name": "Obj", "policy_document": document}).to_string();
    let out = cli.ok(&admin, &[], &["iam", "CreatePolicy", &body]).await;
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["policy"]["policy_name"], "Obj", "{created}");
    let body = json!({
        "role_name": "objrole",
        "assume_role_policy_document": serde_json::from_str::<Value>(&trust(&arn("user", ADMIN), None)).unwrap(),
    })
    .to_string();
    cli.ok(&admin, &[], &["iam", "CreateRole", &body]).await;
    let role = server
        .iam_as(&admin)
        .get_role(proto::GetRoleRequest {
            role_name: "objrole".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    let trust_doc: Value = serde_json::from_str(&role.assume_role_policy_document).unwrap();
    assert_eq!(trust_doc["Statement"][0]["Action"], "sts:AssumeRole");
    // A string still works, as before.
    let body = json!({"role_name": "objrole", "policy_name": "p", "policy_document": document.to_string()})
        .to_string();
    cli.ok(&admin, &[], &["iam", "PutRolePolicy", &body]).await;

    // --describe: fields and types from the descriptor, no server needed.
    let out = cli
        .ok(&admin, &[], &["iam", "CreateUser", "--describe"])
        .await;
    assert!(out.contains("request:"), "{out}");
    assert!(out.contains("  user_name: string"), "{out}");
    assert!(
        out.contains("  tags: repeated Tag {key: string, value: string}"),
        "{out}"
    );
    assert!(out.contains("response:"), "{out}");
    assert!(out.contains("  user: User {arn: string"), "{out}");
    let out = cli
        .ok(
            &admin,
            &["--output", "json"],
            &["iam", "PutRolePolicy", "--describe"],
        )
        .await;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["action"], "PutRolePolicy");
    assert!(
        json["request"].as_array().unwrap().contains(
            &json!({"name": "policy_document", "type": "policy document (JSON object or string)"})
        ),
        "{json}"
    );
    let out = cli
        .ok(
            &admin,
            &[],
            &["iam", "SimulatePrincipalPolicy", "--describe"],
        )
        .await;
    assert!(
        out.contains("enum Decision (Unspecified|Allow|ExplicitDeny|ImplicitDeny)"),
        "{out}"
    );
}
