//! Workload identity from the client's side: `stint-client`'s `RefreshingCredentials` with a
//! token file the platform rotates, the `stint` CLI's `--web-identity-token-file`, and the
//! deploy/ recipes (their trust policies run through the real server with tokens for the
//! right and a wrong subject; their manifests parse with the expected kinds).
//!
//! Tokens are signed here with an Ed25519 key the provider holds inline (as with
//! `kubectl get --raw /openid/v1/jwks`), so no issuer needs to be reachable.
//! AWS reference: STS `AssumeRoleWithWebIdentity`; SDKs read `AWS_WEB_IDENTITY_TOKEN_FILE`
//! again on every refresh because the platform rotates it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tonic::Code;

use stint::broker::{Clock as _, ManualClock};
use stint::proto;
use stint_client::{
    Client, CredentialState, Error, RefreshConfig, RefreshingCredentials, Secret, SharedClock,
    Source, WebIdentity,
};

use crate::common::*;

const SUBJECT: &str = "system:serviceaccount:prod:app";
const KID: &str = "sa-key-1";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An OIDC issuer's signing key (the cluster's service-account signer).
struct Signer(Ed25519KeyPair);

impl Signer {
    fn new() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn jwks(&self) -> String {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": KID, "alg": "EdDSA",
            "x": b64(self.0.public_key().as_ref())}]})
        .to_string()
    }

    /// A token from `issuer` for `sub`/`aud`, valid for 10 minutes from the server's now.
    fn token(&self, server: &TestServer, issuer: &str, sub: &str, aud: &str) -> String {
        let now = server.now_secs();
        let header = json!({"alg": "EdDSA", "kid": KID, "typ": "JWT"});
        let claims = json!({"iss": issuer, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 600});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

/// Registers `issuer` with the signer's keys inline and client id `audience`.
async fn register_provider(
    server: &TestServer,
    admin: &str,
    issuer: &str,
    audience: &str,
    signer: &Signer,
) {
    server
        .iam_as(admin)
        .create_open_id_connect_provider(proto::CreateOpenIdConnectProviderRequest {
            url: issuer.into(),
            client_id_list: vec![audience.into()],
            thumbprint_list: vec![],
            tags: vec![],
            jwks_json: signer.jwks(),
        })
        .await
        .expect("CreateOpenIDConnectProvider");
}

async fn create_role(server: &TestServer, admin: &str, name: &str, trust: &str) {
    server
        .iam_as(admin)
        .create_role(proto::CreateRoleRequest {
            role_name: name.into(),
            assume_role_policy_document: trust.into(),
            ..Default::default()
        })
        .await
        .expect("CreateRole");
}

fn host_path(issuer: &str) -> &str {
    issuer.trim_start_matches("https://")
}

/// The `prod:app` service account of `issuer` may assume role `app` (audience `stint`).
async fn setup(server: &TestServer, signer: &Signer, issuer: &str) -> String {
    let admin = server.admin_login().await;
    register_provider(server, &admin, issuer, "stint", signer).await;
    let hp = host_path(issuer);
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": format!("arn:stint:iam::{ACCOUNT}:oidc-provider/{hp}")},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{hp}:sub"): SUBJECT, format!("{hp}:aud"): "stint"}}
    }]});
    create_role(server, &admin, "app", &trust.to_string()).await;
    admin
}

fn shared_clock(clock: &Arc<ManualClock>) -> SharedClock {
    let clock = clock.clone();
    Arc::new(move || clock.now())
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "stint-wif-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

/// The platform rotating the token: written whole, then renamed into place (as the kubelet
/// does), so a reader never sees half a token.
fn rotate_token(path: &Path, token: &str) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, token).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

const ISSUER: &str = "https://oidc.cluster.test/id/C1";

#[tokio::test]
async fn refreshing_credentials_reread_the_rotated_token_file() {
    let server = TestServer::start().await;
    let signer = Signer::new();
    setup(&server, &signer, ISSUER).await;
    let dir = TempDir::new("rotate");
    let file = dir.path("token");
    rotate_token(&file, &signer.token(&server, ISSUER, SUBJECT, "stint"));

    let creds = RefreshingCredentials::start_with_clock(
        Client::connect(format!("http://{}", server.addr))
            .await
            .unwrap(),
        Source::WebIdentity(WebIdentity {
            token_file: file.clone(),
            role_arn: arn("role", "app"),
            session_name: "pod-1".into(),
            duration: Some(Duration::from_secs(900)),
        }),
        RefreshConfig {
            background: false,
            ..RefreshConfig::default()
        },
        shared_clock(&server.clock),
    )
    .await
    .expect("start with the token file, no login");
    let first = creds.credentials().await.unwrap();
    assert_eq!(creds.state(), CredentialState::Fresh);
    assert_eq!(
        creds
            .session()
            .await
            .unwrap()
            .caller_identity()
            .await
            .unwrap()
            .arn,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/app/pod-1")
    );

    // 810 s later the first token (10 min) has expired; the platform has rotated the file.
    // The refresh at 90 % can only succeed by reading the new token.
    server.advance(Duration::from_secs(810));
    rotate_token(&file, &signer.token(&server, ISSUER, SUBJECT, "stint"));
    let second = creds
        .credentials()
        .await
        .expect("refreshed with the rotated token");
    assert_ne!(second.access_key_id, first.access_key_id);
    assert!(second.expiration > first.expiration);
    assert_eq!(creds.state(), CredentialState::Fresh);

    // The file now holds a bad token (signed by another key): the refresh fails, the state
    // says why, and the last good credentials are served until they expire.
    server.advance(Duration::from_secs(810));
    rotate_token(
        &file,
        &Signer::new().token(&server, ISSUER, SUBJECT, "stint"),
    );
    assert_eq!(creds.credentials().await.unwrap(), second);
    match creds.state() {
        CredentialState::Stale { last_error } => assert!(
            last_error.contains("Unauthenticated")
                && last_error.contains("invalid web identity token"),
            "{last_error}"
        ),
        other => panic!("expected Stale, got {other:?}"),
    }
    server.advance(Duration::from_secs(91));
    let err = creds.credentials().await.expect_err("expired");
    assert!(matches!(err, Error::Expired { .. }), "{err:?}");
    assert!(
        err.to_string().contains("invalid web identity token"),
        "{err}"
    );
    assert_eq!(creds.state(), CredentialState::Expired);

    // The platform fixes the file: the next attempt after the back-off recovers.
    rotate_token(&file, &signer.token(&server, ISSUER, SUBJECT, "stint"));
    server.advance(Duration::from_secs(61));
    creds.credentials().await.expect("recovered");
    assert_eq!(creds.state(), CredentialState::Fresh);
}

#[tokio::test]
async fn a_missing_token_file_fails_the_start_naming_the_file() {
    let server = TestServer::start().await;
    let dir = TempDir::new("missing");
    let file = dir.path("absent-token");
    let err = RefreshingCredentials::start_with_clock(
        Client::connect(format!("http://{}", server.addr))
            .await
            .unwrap(),
        Source::web_identity(&file, arn("role", "app"), "pod-1"),
        RefreshConfig {
            background: false,
            ..RefreshConfig::default()
        },
        shared_clock(&server.clock),
    )
    .await
    .expect_err("no token file");
    assert!(err.to_string().contains("absent-token"), "{err}");
}

/// `Client::assume_role_with_web_identity`: the trust policy decides on the token's subject
/// (AWS: the role's trust policy conditions on `<provider>:sub`).
#[tokio::test]
async fn client_assume_role_with_web_identity_follows_the_trust_policy() {
    let server = TestServer::start().await;
    let signer = Signer::new();
    setup(&server, &signer, ISSUER).await;
    let client = Client::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    let good = Secret::new(signer.token(&server, ISSUER, SUBJECT, "stint"));
    let session = client
        .assume_role_with_web_identity(&arn("role", "app"), "pod-1", &good, None)
        .await
        .expect("matching subject");
    assert!(session.credentials().is_valid_at(server.now()));

    let other =
        Secret::new(signer.token(&server, ISSUER, "system:serviceaccount:prod:other", "stint"));
    let err = client
        .assume_role_with_web_identity(&arn("role", "app"), "pod-1", &other, None)
        .await
        .expect_err("another subject");
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err:?}");

    let garbage = Secret::new("not.a.jwt".to_owned());
    let err = client
        .assume_role_with_web_identity(&arn("role", "app"), "pod-1", &garbage, None)
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err:?}");
}

// ---- the `stint` binary ---------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_stint");

/// Runs `stint args…` with its own STINT_HOME and only the given STINT_* variables.
async fn stint(home: &Path, vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STINT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("STINT_HOME", home.join("stint"))
        .env("HOME", home)
        .stdin(std::process::Stdio::null())
        .args(args);
    for (key, value) in vars {
        cmd.env(key, value);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("stint runs"))
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn caller_arn(server: &TestServer, session_token: &str) -> String {
    let client = Client::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    client
        .session(stint_client::Credentials {
            access_key_id: String::new(),
            session_token: Secret::new(session_token.to_owned()),
            expiration: server.now() + Duration::from_secs(60),
        })
        .caller_identity()
        .await
        .expect("the minted token works")
        .arn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stint_assume_role_with_a_token_file_needs_no_login() {
    let server = TestServer::start().await;
    let signer = Signer::new();
    setup(&server, &signer, ISSUER).await;
    let dir = TempDir::new("cli-assume");
    let file = dir.path("token");
    rotate_token(&file, &signer.token(&server, ISSUER, SUBJECT, "stint"));
    let endpoint = format!("http://{}", server.addr);
    let file_arg = file.to_string_lossy().into_owned();
    let role = arn("role", "app");

    // Flags.
    let out = stint(
        &dir.0,
        &[],
        &[
            "assume-role",
            "--endpoint",
            &endpoint,
            "--web-identity-token-file",
            &file_arg,
            "--role-arn",
            &role,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        caller_arn(&server, json["session_token"].as_str().unwrap()).await,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/app/web-identity")
    );

    // The environment, as a pod sets it.
    let out = stint(
        &dir.0,
        &[
            ("STINT_WEB_IDENTITY_TOKEN_FILE", &file_arg),
            ("STINT_ROLE_ARN", &role),
            ("STINT_ROLE_SESSION_NAME", "pod-9"),
            ("STINT_ENDPOINT", &endpoint),
        ],
        &["assume-role", "--no-cache"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        caller_arn(&server, json["session_token"].as_str().unwrap()).await,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/app/pod-9")
    );

    // Another service account's token: the trust policy refuses it.
    rotate_token(
        &file,
        &signer.token(&server, ISSUER, "system:serviceaccount:prod:other", "stint"),
    );
    let out = stint(
        &dir.0,
        &[],
        &[
            "assume-role",
            "--endpoint",
            &endpoint,
            "--web-identity-token-file",
            &file_arg,
            "--role-arn",
            &role,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );

    // A missing file: named, nothing sent.
    let out = stint(
        &dir.0,
        &[],
        &[
            "assume-role",
            "--endpoint",
            &endpoint,
            "--web-identity-token-file",
            "/nonexistent/token",
            "--role-arn",
            &role,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/token"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stint_exec_with_a_web_identity_profile_runs_the_command_as_the_role() {
    let server = TestServer::start().await;
    let signer = Signer::new();
    setup(&server, &signer, ISSUER).await;
    let dir = TempDir::new("cli-exec");
    let file = dir.path("token");
    rotate_token(&file, &signer.token(&server, ISSUER, SUBJECT, "stint"));
    let endpoint = format!("http://{}", server.addr);
    let file_arg = file.to_string_lossy().into_owned();
    let role = arn("role", "app");

    let out = stint(
        &dir.0,
        &[],
        &[
            "configure",
            "--profile",
            "pod",
            "--role-arn",
            &role,
            "--web-identity-token-file",
            &file_arg,
            "--endpoint",
            &endpoint,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["web_identity_token_file"], file_arg.as_str());

    let print_token = ["sh", "-c", "printf %s \"$STINT_SESSION_TOKEN\""];
    let mut args = vec!["exec", "--profile", "pod", "--session-name", "job-1", "--"];
    args.extend(print_token);
    let out = stint(&dir.0, &[], &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        caller_arn(&server, &text(&out.stdout)).await,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/app/job-1")
    );

    // No profile at all: the variables a pod has.
    let mut args = vec!["exec", "--"];
    args.extend(print_token);
    let out = stint(
        &dir.0,
        &[
            ("STINT_WEB_IDENTITY_TOKEN_FILE", &file_arg),
            ("STINT_ROLE_ARN", &role),
            ("STINT_ENDPOINT", &endpoint),
        ],
        &args,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        caller_arn(&server, &text(&out.stdout)).await,
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/app/web-identity")
    );
}

// ---- the deploy/ recipes ----------------------------------------------------------------

fn recipe(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&recipe(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a recipe's trust policy on the real server: a token from `issuer` for each subject
/// either assumes the role or is refused by the trust policy (PermissionDenied, as AWS's
/// AccessDenied for a trust policy that does not match).
async fn check_trust_policy(issuer: &str, trust: &str, role: &str, cases: &[(&str, bool)]) {
    let server = TestServer::start().await;
    let signer = Signer::new();
    let admin = server.admin_login().await;
    register_provider(&server, &admin, issuer, "stint", &signer).await;
    create_role(&server, &admin, role, trust).await;
    let client = Client::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    for (subject, allowed) in cases {
        let token = Secret::new(signer.token(&server, issuer, subject, "stint"));
        let result = client
            .assume_role_with_web_identity(&arn("role", role), "recipe", &token, None)
            .await;
        match (result, allowed) {
            (Ok(_), true) => {}
            (Err(err), false) => {
                assert_eq!(
                    err.code(),
                    Some(Code::PermissionDenied),
                    "{subject}: {err:?}"
                )
            }
            (result, _) => panic!("{subject}: expected allowed={allowed}, got {result:?}"),
        }
    }
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn the_kubernetes_recipe_manifests_and_trust_policy_work() {
    let sa = yaml("kubernetes/workload-identity/serviceaccount.yaml");
    assert_eq!(sa["kind"], "ServiceAccount");
    let (namespace, name) = (
        sa["metadata"]["namespace"].as_str().unwrap(),
        sa["metadata"]["name"].as_str().unwrap(),
    );
    let deployment = yaml("kubernetes/workload-identity/deployment.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(deployment["metadata"]["namespace"], namespace);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name);

    // The projected token: audience `stint`, rotated (expirationSeconds), mounted where
    // STINT_WEB_IDENTITY_TOKEN_FILE points.
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["projected"].is_object())
        .expect("a projected volume");
    let projected = volume["projected"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s.get("serviceAccountToken"))
        .expect("a serviceAccountToken source");
    assert_eq!(projected["audience"], "stint");
    assert!(projected["expirationSeconds"].as_u64().unwrap() >= 600);
    let container = &pod["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the token volume is mounted");
    assert_eq!(
        env_value(container, "STINT_WEB_IDENTITY_TOKEN_FILE").unwrap(),
        format!(
            "{}/{}",
            mount["mountPath"].as_str().unwrap(),
            projected["path"].as_str().unwrap()
        )
    );
    assert_eq!(
        env_value(container, "STINT_ROLE_ARN").unwrap(),
        arn("role", "app")
    );
    assert_eq!(container["command"][1], "exec");

    // The setup script registers audience `stint` and fills in the issuer's host/path.
    let script = recipe("kubernetes/workload-identity/stint-setup.sh");
    for needle in [
        "CreateOpenIDConnectProvider",
        "kubectl get --raw /openid/v1/jwks",
        "client_id_list: [\"stint\"]",
        "role_name: \"app\"",
        "ISSUER_HOST_PATH",
    ] {
        assert!(script.contains(needle), "stint-setup.sh lacks {needle}");
    }
    let permissions: Value =
        serde_json::from_str(&recipe("kubernetes/workload-identity/permissions.json")).unwrap();
    assert!(permissions["Statement"].is_array());

    // The trust policy, as the script fills it in for an in-cluster issuer.
    let issuer = "https://kubernetes.default.svc";
    let trust = recipe("kubernetes/workload-identity/trust-policy.json")
        .replace("ISSUER_HOST_PATH", host_path(issuer));
    let own = format!("system:serviceaccount:{namespace}:{name}");
    let other_name = format!("system:serviceaccount:{namespace}:other");
    let other_namespace = format!("system:serviceaccount:default:{name}");
    check_trust_policy(
        issuer,
        &trust,
        "app",
        &[
            (&own, true),
            (&other_name, false),
            (&other_namespace, false),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_ci_recipe_workflow_and_trust_policy_work() {
    let workflow = yaml("ci/github-actions.yml");
    assert_eq!(workflow["permissions"]["id-token"], "write");
    let job = &workflow["jobs"]["deploy"];
    assert_eq!(job["env"]["STINT_ROLE_ARN"], arn("role", "deploy"));
    let steps = job["steps"].as_array().unwrap();
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("audience=stint") && r.contains("STINT_WEB_IDENTITY_TOKEN_FILE=")),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r.starts_with("stint exec -- ")),
        "{runs:?}"
    );
    let script = recipe("ci/stint-setup.sh");
    assert!(script.contains("https://token.actions.githubusercontent.com"));
    assert!(script.contains("role_name: \"deploy\""));

    // Only main of ORG/REPO: another branch, another repository, a pull request are refused.
    let trust = recipe("ci/trust-policy.json");
    check_trust_policy(
        "https://token.actions.githubusercontent.com",
        &trust,
        "deploy",
        &[
            ("repo:ORG/REPO:ref:refs/heads/main", true),
            ("repo:ORG/REPO:ref:refs/heads/feature", false),
            ("repo:ORG/OTHER:ref:refs/heads/main", false),
            ("repo:ORG/REPO:pull_request", false),
        ],
    )
    .await;
}

/// `stint-setup.sh` runs as written, against a stand-in `kubectl` (the cluster's discovery
/// document and JWKS) and the real `stint` binary: the role it creates admits the
/// recipe's service account. Needs `jq` like the script; CI images without it skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_setup_script_runs_as_written() {
    if std::process::Command::new("jq")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("jq not installed: skipped");
        return;
    }
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let signer = Signer::new();
    let issuer = "https://kubernetes.default.svc";
    let dir = TempDir::new("setup-script");
    let bin = dir.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kubectl = bin.join("kubectl");
    std::fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\ncase \"$3\" in\n  /.well-known/openid-configuration) echo '{{\"issuer\":\"{issuer}\"}}' ;;\n  /openid/v1/jwks) echo '{}' ;;\n  *) exit 1 ;;\nesac\n",
            signer.jwks()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stint_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        stint_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/workload-identity/stint-setup.sh");
    let mut cmd = std::process::Command::new("sh");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STINT_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg(&script)
        .env("PATH", path)
        .env("HOME", &dir.0)
        .env("STINT_HOME", dir.path("stint"))
        .env("STINT_ENDPOINT", format!("http://{}", server.addr))
        .env("STINT_TOKEN", &admin);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let client = Client::connect(format!("http://{}", server.addr))
        .await
        .unwrap();
    for (subject, allowed) in [
        ("system:serviceaccount:stint-demo:app", true),
        ("system:serviceaccount:stint-demo:other", false),
    ] {
        let token = Secret::new(signer.token(&server, issuer, subject, "stint"));
        let result = client
            .assume_role_with_web_identity(&arn("role", "app"), "pod", &token, None)
            .await;
        assert_eq!(result.is_ok(), allowed, "{subject}: {result:?}");
    }
}
