//! `examples/python/`: a client generated from `proto/` with the standard gRPC tools logs
//! in with an access key, assumes a role and verifies the token with PyJWT from the JWKS.
//!
//! Needs a Python with `examples/python/requirements.txt` installed, named by
//! `STINT_TEST_PYTHON` (`.ci/run` makes one); without it the test says so and passes.

use std::path::Path;

use serde_json::Value;
use stint::proto;
use tokio::process::Command;

use crate::common::*;

#[tokio::test]
async fn the_python_example_logs_in_assumes_a_role_and_verifies_offline() {
    let Ok(python) = std::env::var("STINT_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED the_python_example_logs_in_assumes_a_role_and_verifies_offline: \
             STINT_TEST_PYTHON is unset (see .ci/run)"
        );
        return;
    };
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    server.create_user(&admin, "pysvc").await;
    let key = server
        .iam_as(&admin)
        .create_access_key(proto::CreateAccessKeyRequest {
            user_name: "pysvc".into(),
        })
        .await
        .expect("CreateAccessKey")
        .into_inner()
        .access_key
        .expect("access key");
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": arn("user", "pysvc")},
                       "Action": "sts:AssumeRole"}]
    });
    server
        .create_role(&admin, "reports-reader", trust.to_string())
        .await;

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/stint_example.py");
    let generated = Command::new(&python)
        .arg(&example)
        .arg("generate")
        .output()
        .await
        .expect("python runs");
    assert!(
        generated.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let run = Command::new(&python)
        .arg(&example)
        .arg("run")
        .env("STINT_ENDPOINT", server.addr.to_string())
        .env("STINT_ACCESS_KEY_ID", &key.access_key_id)
        .env("STINT_SECRET_ACCESS_KEY", &key.secret_access_key)
        .env("STINT_ROLE_ARN", arn("role", "reports-reader"))
        .env("STINT_ISSUER", server.broker().issuer())
        .output()
        .await
        .expect("python runs");
    assert!(
        run.status.success(),
        "run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Value = serde_json::from_slice(&run.stdout).expect("one JSON line");
    let session_arn =
        format!("arn:stint:sts::{ACCOUNT}:assumed-role/reports-reader/python-example");
    assert_eq!(out["arn"], session_arn.as_str());
    assert_eq!(out["claims"]["sub"], session_arn.as_str());
    assert_eq!(
        out["claims"]["stint"]["role_arn"],
        arn("role", "reports-reader").as_str()
    );
}
