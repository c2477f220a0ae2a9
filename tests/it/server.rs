//! The listener itself: health, the `.well-known` HTTP routes, offline JWT verification
//! with an independent library, and shutdown.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use stint::proto;

use crate::common::*;

#[tokio::test]
async fn health_is_serving_for_the_server_and_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    for service in [
        "",
        "stint.v1.Sts",
        "stint.v1.Iam",
        "stint.v1.Tokens",
        "stint.v1.Audit",
        "stint.v1.Keys",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{service:?}: {s}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    assert_status(
        health
            .check(HealthCheckRequest {
                service: "stint.v1.Nope".into(),
            })
            .await,
        Code::NotFound,
        &[],
    );
}

#[tokio::test]
async fn jwks_over_http_matches_the_token_kid_and_grpc() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let kid = jwt_header(&admin)["kid"].as_str().unwrap().to_string();

    let (status, body) = http_get(server.addr, "/.well-known/jwks.json").await;
    assert_eq!(status, 200, "{body}");
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        assert_eq!(key["kty"], "OKP", "{key}");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert!(
            key.get("d").is_none(),
            "private key material published: {key}"
        );
    }
    assert!(
        keys.iter().any(|k| k["kid"] == kid.as_str()),
        "{kid} not in {body}"
    );

    // The gRPC GetJwks answers the same document, with no bearer token needed.
    let grpc = proto::tokens_client::TokensClient::new(server.channel())
        .get_jwks(proto::GetJwksRequest {})
        .await
        .expect("GetJwks")
        .into_inner();
    assert_eq!(grpc.jwks_json, body);
    assert_eq!(grpc.keys.len(), keys.len());
    assert!(grpc.keys.iter().any(|k| k.kid == kid));

    let (status, body) = http_get(server.addr, "/.well-known/openid-configuration").await;
    assert_eq!(status, 200, "{body}");
    let oidc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(oidc["issuer"], server.config.issuer().as_str());
    assert_eq!(
        oidc["jwks_uri"],
        format!("http://{}/.well-known/jwks.json", server.addr)
    );
    assert_eq!(
        oidc["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );
}

#[tokio::test]

async fn unknown_http_paths_are_not_found() {
    let server = TestServer::start().await;
    for path in ["/.well-known/nope", "/", "/jwks.json"] {
        let (status, body) = http_get(server.addr, path).await;
        assert_eq!(status, 404, "{path}: {body:?}");
    }
    // gRPC callers of an unknown service still get UNIMPLEMENTED.
    let mut grpc = tonic::client::Grpc::new(server.channel());
    grpc.ready().await.expect("ready");
    let answer: Result<tonic::Response<proto::GetJwksResponse>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(proto::GetJwksRequest {}),
            http::uri::PathAndQuery::from_static("/stint.v1.Nope/Call"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_status(answer, Code::Unimplemented, &[]);
}

#[tokio::test]
async fn an_independent_library_verifies_tokens_with_only_the_jwks() {
    stint::core::token::provider::install().expect("crypto provider");
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let (_, body) = http_get(server.addr, "/.well-known/jwks.json").await;
    let set: JwkSet = serde_json::from_str(&body).expect("a JWK Set");

    let header = jsonwebtoken::decode_header(&admin).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("kid");
    let jwk = set.find(&kid).expect("the token's kid is published");
    let key = DecodingKey::from_jwk(jwk).expect("decoding key from the JWK");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["stint"]);
    validation.set_issuer(&[server.config.issuer()]);
    let data = decode::<serde_json::Value>(&admin, &key, &validation).expect("verifies");
    assert_eq!(data.claims["sub"], arn("user", ADMIN));
    assert_eq!(data.claims["amr"], serde_json::json!(["pwd", "otp"]));

    // A tampered payload does not verify.
    let mut parts: Vec<String> = admin.split('.').map(str::to_string).collect();
    let mut claims = jwt_claims(&admin);
    claims["sub"] = serde_json::json!(arn("user", "mallory"));
    use base64::Engine as _;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");
    assert!(decode::<serde_json::Value>(&forged, &key, &validation).is_err());
    // And the server refuses it too.
    assert_status(
        server
            .sts_as(&forged)
            .get_caller_identity(proto::GetCallerIdentityRequest {})
            .await,
        Code::Unauthenticated,
        &[],
    );
    // Another published key (the next one) does not verify this token.
    let other = set
        .keys
        .iter()
        .find(|k| k.common.key_id.as_deref() != Some(kid.as_str()))
        .expect("the next key is published ahead");
    let other_key = DecodingKey::from_jwk(other).unwrap();
    assert!(decode::<serde_json::Value>(&admin, &other_key, &validation).is_err());
}

#[tokio::test]
async fn shuts_down_cleanly_on_request() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let admin = server.admin_login().await;
    assert!(!admin.is_empty());
    // The timeout only turns a hang into a failure; it is not part of the behaviour.
    tokio::time::timeout(std::time::Duration::from_secs(30), server.stop())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting connections after shutdown"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_data_and_makes_no_new_first_keys() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let keys_before = server
        .keys_as(&admin)
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("ListSigningKeys")
        .into_inner()
        .keys;
    let server = server.restart().await;
    let admin = server.admin_login().await;
    let keys_after = server
        .keys_as(&admin)
        .list_signing_keys(proto::ListSigningKeysRequest {})
        .await
        .expect("ListSigningKeys after restart")
        .into_inner()
        .keys;
    assert_eq!(keys_after, keys_before);
    let report = server.verify_chain(&admin).await;
    assert!(report.intact, "{report:?}");
}
