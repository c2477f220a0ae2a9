//! `AssumeRoleWithWebIdentity` against a real OIDC issuer served by the test on loopback
//! (discovery document and JWKS over HTTP, its own keys), and the OIDC provider IAM calls.
//!
//! AWS reference: IAM User Guide, "Create an OpenID Connect (OIDC) identity provider in
//! IAM" and "Available keys for AWS web identity federation"; STS API Reference,
//! `AssumeRoleWithWebIdentity` (InvalidIdentityToken / IDPRejectedClaim / ExpiredToken
//! are collapsed here into one UNAUTHENTICATED answer, the reason in the audit log).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use serde_json::{Value, json};
use tonic::Code;

use stint::proto;

use crate::common::*;

const RSA_DER: &[u8] = include_bytes!("fixtures/oidc-test-rsa.der");
const SUBJECT: &str = "system:serviceaccount:prod:app";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

enum Key {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Key {
    fn ed() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Key::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }
    fn ec() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Key::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }
    fn rsa() -> Key {
        Key::Rsa(RsaKeyPair::from_der(RSA_DER).unwrap())
    }
    fn alg(&self) -> &'static str {
        match self {
            Key::Ed(_) => "EdDSA",
            Key::Ec(_) => "ES256",
            Key::Rsa(_) => "RS256",
        }
    }
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(k.public_key().as_ref())})
            }
            Key::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            Key::Rsa(k) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Key::Ed(k) => k.sign(message).as_ref().to_vec(),
            Key::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig).unwrap();
                sig
            }
        }
    }
}

/// A compact JWS from any header and payload, signed by `sign`.
fn jws(header: Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// An OIDC issuer on loopback: discovery at `/.well-known/openid-configuration`, keys at
/// `/keys`; the served JWKS can be swapped (rotation) and fetches are counted.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    async fn start(jwks: Value) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cluster", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys")});
        let (served, counter) = (jwks.clone(), fetches.clone());
        let app = axum::Router::new()
            .route(
                "/cluster/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move { axum::Json(d) }
                }),
            )
            .route(
                "/cluster/keys",
                axum::routing::get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let keys = served.lock().unwrap().clone();
                    async move { axum::Json(keys) }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer { url, jwks, fetches }
    }

    fn host_path(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    fn serve(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn jwks(keys: &[(&str, &Key)]) -> Value {
    json!({"keys": keys.iter().map(|(kid, k)| k.jwk(kid)).collect::<Vec<_>>()})
}

fn provider_arn(issuer: &Issuer) -> String {
    format!(
        "arn:stint:iam::{ACCOUNT}:oidc-provider/{}",
        issuer.host_path()
    )
}

/// Standard claims for `issuer` at the server's time.
fn claims(server: &TestServer, iss: &str) -> Value {
    let now = server.now_secs();
    json!({"iss": iss, "sub": SUBJECT, "aud": "stint", "iat": now, "nbf": now, "exp": now + 600})
}

fn token(key: &Key, kid: &str, payload: &Value) -> String {
    jws(
        json!({"alg": key.alg(), "kid": kid, "typ": "JWT"}),
        payload,
        |m| key.sign(m),
    )
}

/// A role the issuer's `prod:app` service account may assume (audience `stint`).
async fn setup(server: &TestServer, issuer: &Issuer, jwks_json: &str) -> String {
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    iam.create_open_id_connect_provider(proto::CreateOpenIdConnectProviderRequest {
        url: issuer.url.clone(),
        client_id_list: vec!["stint".into()],
        thumbprint_list: vec![],
        tags: vec![],
        jwks_json: jwks_json.into(),
    })
    .await
    .expect("CreateOpenIDConnectProvider");
    let hp = issuer.host_path();
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn(issuer)},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {format!("{hp}:sub"): SUBJECT, format!("{hp}:aud"): "stint"}}
    }]});
    iam.create_role(proto::CreateRoleRequest {
        role_name: "app".into(),
        assume_role_policy_document: trust.to_string(),
        ..Default::default()
    })
    .await
    .expect("CreateRole");
    admin
}

fn request(token: &str) -> proto::AssumeRoleWithWebIdentityRequest {
    proto::AssumeRoleWithWebIdentityRequest {
        role_arn: arn("role", "app"),
        role_session_name: "pod-1".into(),
        web_identity_token: token.into(),
        ..Default::default()
    }
}

async fn assume(
    server: &TestServer,
    token: &str,
) -> Result<proto::AssumeRoleWithWebIdentityResponse, tonic::Status> {
    server
        .sts()
        .assume_role_with_web_identity(request(token))
        .await
        .map(|r| r.into_inner())
}

/// Every bad token gets the same answer, whatever was wrong with it.
#[track_caller]
fn assert_invalid_token<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = assert_status(result, Code::Unauthenticated, &[]);
    assert_eq!(status.message(), "invalid web identity token");
}

async fn refusal_reasons(server: &TestServer, admin: &str) -> Vec<String> {
    server
        .audit_as(admin)
        .list_events(proto::ListEventsRequest {
            event_name: "sts:AssumeRoleWithWebIdentity".into(),
            outcome: "deny".into(),
            max_results: 1000,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn a_platform_token_assumes_the_role_with_each_algorithm() {
    let server = TestServer::start().await;
    let (ed, ec, rsa) = (Key::ed(), Key::ec(), Key::rsa());
    let issuer = Issuer::start(jwks(&[("ed", &ed), ("ec", &ec), ("rsa", &rsa)])).await;
    let admin = setup(&server, &issuer, "").await;
    for (kid, key) in [("rsa", &rsa), ("ec", &ec), ("ed", &ed)] {
        let answer = assume(&server, &token(key, kid, &claims(&server, &issuer.url)))
            .await
            .unwrap_or_else(|s| panic!("{kid}: {s}"));
        let role_session = format!("arn:stint:sts::{ACCOUNT}:assumed-role/app/pod-1");
        assert_eq!(answer.assumed_role_user.as_ref().unwrap().arn, role_session);
        assert_eq!(answer.subject_from_web_identity_token, SUBJECT);
        assert_eq!(answer.audience, "stint");
        assert_eq!(answer.provider, issuer.host_path());
        let credentials = answer.credentials.unwrap();
        let claims = jwt_claims(&credentials.session_token);
        assert_eq!(claims["sub"], role_session);
        assert_eq!(claims["stint"]["principal_arn"], provider_arn(&issuer));
        // The session works: it is the role's.
        let me = server
            .sts_as(&credentials.session_token)
            .get_caller_identity(proto::GetCallerIdentityRequest {})
            .await
            .expect("GetCallerIdentity")
            .into_inner();
        assert_eq!(me.arn, role_session);
        // The session record names the provider and the subject.
        let session: stint::core::model::Session = stint::store::read(
            server.store().as_ref(),
            stint::store::Table::Sessions,
            &credentials.access_key_id,
        )
        .unwrap()
        .unwrap();
        assert_eq!(session.principal_arn, provider_arn(&issuer));
        assert_eq!(session.web_identity_subject.as_deref(), Some(SUBJECT));
    }
    // Fetched once, then served from the cache.
    assert_eq!(issuer.fetches(), 1);
    // Audited like any other session, under the provider, with the subject.
    let events = server
        .audit_as(&admin)
        .list_events(proto::ListEventsRequest {
            event_name: "sts:AssumeRoleWithWebIdentity".into(),
            outcome: "allow".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| e.principal_arn == provider_arn(&issuer) && e.event_json.contains(SUBJECT))
    );
    assert!(
        !events[0]
            .event_json
            .contains(&token(&ed, "ed", &claims(&server, &issuer.url))[..40])
    );
}

/// Every refusal of the quality bar, each with its reason in the audit log and the same
/// answer to the caller.
#[tokio::test]
async fn bad_tokens_are_refused_uniformly() {
    let server = TestServer::start().await;
    let key = Key::ec();
    let issuer = Issuer::start(jwks(&[("k1", &key)])).await;
    let admin = setup(&server, &issuer, "").await;
    let good = claims(&server, &issuer.url);
    assume(&server, &token(&key, "k1", &good))
        .await
        .expect("valid token");
    let now = server.now_secs();
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // An RSA public key as the HMAC secret, in the classic confusion attack (RFC 8725 §2.1).
    let rsa = Key::rsa();
    let public_pem = rsa.jwk("k1").to_string();
    let hs256 = jws(json!({"alg": "HS256", "kid": "k1"}), &good, |m| {
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public_pem.as_bytes()),
            m,
        )
        .as_ref()
        .to_vec()
    });
    let impostor = Key::ec();
    let cases: Vec<(&str, String, &str)> = vec![
        // AWS: the aud must be one of the provider's client ids.
        (
            "wrong audience",
            token(&key, "k1", &with(json!({"aud": "other"}))),
            "aud",
        ),
        (
            "expired",
            token(&key, "k1", &with(json!({"exp": now - 61}))),
            "expired",
        ),
        (
            "not yet valid",
            token(&key, "k1", &with(json!({"nbf": now + 120}))),
            "nbf",
        ),
        (
            "issued in the future",
            token(&key, "k1", &with(json!({"iat": now + 120}))),
            "iat",
        ),
        (
            "unknown issuer",
            token(&key, "k1", &with(json!({"iss": "https://evil.example"}))),
            "not a registered",
        ),
        (
            "unknown kid",
            token(&key, "nope", &good),
            "unknown signing key",
        ),
        (
            "alg none",
            jws(json!({"alg": "none", "kid": "k1"}), &good, |_| vec![]),
            "algorithm",
        ),
        ("HS256 with the public key", hs256, "algorithm"),
        (
            "another key, right kid",
            token(&impostor, "k1", &good),
            "bad signature",
        ),
        (
            "RS256 header on the EC key",
            jws(json!({"alg": "RS256", "kid": "k1"}), &good, |m| rsa.sign(m)),
            "does not fit",
        ),
        ("garbage", "a.b.c".into(), "malformed"),
    ];
    for (name, bad, _) in &cases {
        let result = assume(&server, bad).await;
        assert!(result.is_err(), "{name} was accepted");
        assert_invalid_token(result);
    }
    let reasons = refusal_reasons(&server, &admin).await;
    for (name, _, why) in &cases {
        assert!(
            reasons.iter().any(|r| r.contains(why)),
            "{name}: no audit reason mentions {why:?}: {reasons:?}"
        );
    }
}

/// AWS: the trust policy's conditions on `<provider>:sub` decide which workload may assume
/// the role; another service account of the same cluster may not.
#[tokio::test]
async fn another_subject_is_denied_by_the_trust_policy() {
    let server = TestServer::start().await;
    let key = Key::ed();
    let issuer = Issuer::start(jwks(&[("k", &key)])).await;
    setup(&server, &issuer, "").await;
    let mut other = claims(&server, &issuer.url);
    other["sub"] = json!("system:serviceaccount:prod:intruder");
    assert_status(
        assume(&server, &token(&key, "k", &other)).await,
        Code::PermissionDenied,
        &["sts:AssumeRoleWithWebIdentity"],
    );
    // A role that does not exist answers the same way (no role enumeration).
    let good = token(&key, "k", &claims(&server, &issuer.url));
    let mut missing = request(&good);
    missing.role_arn = arn("role", "nope");
    let status = assert_status(
        server.sts().assume_role_with_web_identity(missing).await,
        Code::PermissionDenied,
        &[],
    );
    assert!(
        status
            .message()
            .contains("no such role, or its trust policy")
    );
    // Durations: 900 up to the role's maximum.
    for bad in [899, 3_601] {
        let mut r = request(&good);
        r.duration_seconds = bad;
        assert_status(
            server.sts().assume_role_with_web_identity(r).await,
            Code::InvalidArgument,
            &["duration_seconds"],
        );
    }
}

#[tokio::test]
async fn a_token_replayed_after_the_provider_is_deleted_is_refused() {
    let server = TestServer::start().await;
    let key = Key::ed();
    let issuer = Issuer::start(jwks(&[("k", &key)])).await;
    let admin = setup(&server, &issuer, "").await;
    let t = token(&key, "k", &claims(&server, &issuer.url));
    assume(&server, &t).await.expect("before deletion");
    server
        .iam_as(&admin)
        .delete_open_id_connect_provider(proto::DeleteOpenIdConnectProviderRequest {
            open_id_connect_provider_arn: provider_arn(&issuer),
        })
        .await
        .expect("DeleteOpenIDConnectProvider");
    assert_invalid_token(assume(&server, &t).await);
    let reasons = refusal_reasons(&server, &admin).await;
    assert!(
        reasons.iter().any(|r| r.contains("not a registered")),
        "{reasons:?}"
    );
}

/// The issuer rotates its key: a token with the new kid triggers one JWKS refresh, but no
/// more often than every 10 s per provider.
#[tokio::test]
async fn key_rotation_is_picked_up_through_the_rate_limited_refresh() {
    let server = TestServer::start().await;
    let (old, new) = (Key::ed(), Key::ec());
    let issuer = Issuer::start(jwks(&[("old", &old)])).await;
    setup(&server, &issuer, "").await;
    assume(&server, &token(&old, "old", &claims(&server, &issuer.url)))
        .await
        .expect("old key");
    assert_eq!(issuer.fetches(), 1);
    issuer.serve(jwks(&[("new", &new)]));
    // Within 10 s of the last fetch: not refetched, refused.
    let fresh = token(&new, "new", &claims(&server, &issuer.url));
    assert_invalid_token(assume(&server, &fresh).await);
    assert_invalid_token(assume(&server, &fresh).await);
    assert_eq!(
        issuer.fetches(),
        1,
        "a junk kid must not make the broker refetch"
    );
    server.advance(Duration::from_secs(10));
    let fresh = token(&new, "new", &claims(&server, &issuer.url));
    assume(&server, &fresh).await.expect("rotated key");
    assert_eq!(issuer.fetches(), 2);
    // The old key is gone from the issuer's set, so from Stint's.
    server.advance(Duration::from_secs(10));
    assert_invalid_token(assume(&server, &token(&old, "old", &claims(&server, &issuer.url))).await);
}

/// For issuers Stint cannot reach (`kubectl get --raw /openid/v1/jwks`): keys held inline,
/// never fetched.
#[tokio::test]
async fn an_inline_jwks_provider_works_without_any_fetch() {
    let server = TestServer::start().await;
    let key = Key::rsa();
    let issuer = Issuer::start(json!({"keys": []})).await;
    setup(&server, &issuer, &jwks(&[("sa", &key)]).to_string()).await;
    assume(&server, &token(&key, "sa", &claims(&server, &issuer.url)))
        .await
        .expect("inline JWKS");
    assert_invalid_token(
        assume(
            &server,
            &token(&key, "other", &claims(&server, &issuer.url)),
        )
        .await,
    );
    assert_eq!(issuer.fetches(), 0);
}

/// A hostile or broken issuer cannot make the broker read an unbounded JWKS: 64 KiB at most.
#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let server = TestServer::start().await;
    let key = Key::ed();
    let mut keys = jwks(&[("k", &key)]);
    keys["padding"] = json!("x".repeat(70 * 1024));
    let issuer = Issuer::start(keys).await;
    let admin = setup(&server, &issuer, "").await;
    assert_invalid_token(assume(&server, &token(&key, "k", &claims(&server, &issuer.url))).await);
    assert_eq!(issuer.fetches(), 1);
    let reasons = refusal_reasons(&server, &admin).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unavailable") && r.contains("body")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn oidc_providers_in_iam() {
    let server = TestServer::start().await;
    let admin = server.admin_login().await;
    let mut iam = server.iam_as(&admin);
    let create = |url: &str| proto::CreateOpenIdConnectProviderRequest {
        url: url.into(),
        client_id_list: vec!["sts.amazonaws.com".into()],
        thumbprint_list: vec!["9e99a48a9960b14926bb7f3b02e22da2b0ab7280".into()],
        tags: vec![proto::Tag {
            key: "team".into(),
            value: "ci".into(),
        }],
        jwks_json: String::new(),
    };
    let arn = iam
        .create_open_id_connect_provider(create("https://token.actions.githubusercontent.com/"))
        .await
        .expect("create")
        .into_inner()
        .open_id_connect_provider_arn;
    assert_eq!(
        arn,
        format!("arn:stint:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com")
    );
    assert_status(
        iam.create_open_id_connect_provider(create("https://token.actions.githubusercontent.com"))
            .await,
        Code::AlreadyExists,
        &[],
    );
    // AWS limits, each naming its field.
    let mut bad = create("http://issuer.example");
    assert_status(
        iam.create_open_id_connect_provider(bad.clone()).await,
        Code::InvalidArgument,
        &["url"],
    );
    bad.url = "https://issuer.example".into();
    bad.client_id_list = (0..101).map(|i| i.to_string()).collect();
    assert_status(
        iam.create_open_id_connect_provider(bad.clone()).await,
        Code::InvalidArgument,
        &["client_id_list"],
    );
    bad.client_id_list = vec!["a".into()];
    bad.thumbprint_list = vec!["ab".into()];
    assert_status(
        iam.create_open_id_connect_provider(bad.clone()).await,
        Code::InvalidArgument,
        &["thumbprint_list"],
    );
    bad.thumbprint_list = vec![];
    bad.jwks_json = "{\"keys\": []}".into();
    assert_status(
        iam.create_open_id_connect_provider(bad).await,
        Code::InvalidArgument,
        &["jwks_json"],
    );

    let id = |a: &str| proto::GetOpenIdConnectProviderRequest {
        open_id_connect_provider_arn: a.into(),
    };
    iam.add_client_id_to_open_id_connect_provider(
        proto::AddClientIdToOpenIdConnectProviderRequest {
            open_id_connect_provider_arn: arn.clone(),
            client_id: "stint".into(),
        },
    )
    .await
    .expect("add client id");
    iam.remove_client_id_from_open_id_connect_provider(
        proto::RemoveClientIdFromOpenIdConnectProviderRequest {
            open_id_connect_provider_arn: arn.clone(),
            client_id: "sts.amazonaws.com".into(),
        },
    )
    .await
    .expect("remove client id");
    iam.update_open_id_connect_provider_thumbprint(
        proto::UpdateOpenIdConnectProviderThumbprintRequest {
            open_id_connect_provider_arn: arn.clone(),
            thumbprint_list: vec![],
        },
    )
    .await
    .expect("thumbprints");
    iam.untag_open_id_connect_provider(proto::UntagOpenIdConnectProviderRequest {
        open_id_connect_provider_arn: arn.clone(),
        tag_keys: vec!["team".into()],
    })
    .await
    .expect("untag");
    let got = iam
        .get_open_id_connect_provider(id(&arn))
        .await
        .expect("get")
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(got.url, "https://token.actions.githubusercontent.com");
    assert_eq!(got.client_id_list, vec!["stint"]);
    assert!(got.thumbprint_list.is_empty() && got.tags.is_empty());
    let list = iam
        .list_open_id_connect_providers(proto::ListOpenIdConnectProvidersRequest {})
        .await
        .unwrap()
        .into_inner()
        .open_id_connect_provider_arns;
    assert_eq!(list, vec![arn.clone()]);

    // Authorized like every IAM call: a user without iam:* rights can do none of it.
    server
        .create_user_with_password(&admin, "dev", "correct horse battery")
        .await;
    let dev = server
        .login("dev", "correct horse battery", None)
        .await
        .unwrap()
        .session_token;
    let mut as_dev = server.iam_as(&dev);
    assert_status(
        as_dev.get_open_id_connect_provider(id(&arn)).await,
        Code::PermissionDenied,
        &["iam:GetOpenIDConnectProvider"],
    );
    assert_status(
        as_dev
            .delete_open_id_connect_provider(proto::DeleteOpenIdConnectProviderRequest {
                open_id_connect_provider_arn: arn.clone(),
            })
            .await,
        Code::PermissionDenied,
        &["iam:DeleteOpenIDConnectProvider"],
    );
    assert_status(
        as_dev
            .create_open_id_connect_provider(create("https://other.example"))
            .await,
        Code::PermissionDenied,
        &["iam:CreateOpenIDConnectProvider"],
    );

    iam.delete_open_id_connect_provider(proto::DeleteOpenIdConnectProviderRequest {
        open_id_connect_provider_arn: arn.clone(),
    })
    .await
    .expect("delete");
    assert_status(
        iam.get_open_id_connect_provider(id(&arn)).await,
        Code::NotFound,
        &[],
    );
    // Every change committed with its audit event.
    let events = server
        .audit_as(&admin)
        .list_events(proto::ListEventsRequest {
            max_results: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    for action in [
        "iam:CreateOpenIDConnectProvider",
        "iam:AddClientIDToOpenIDConnectProvider",
        "iam:RemoveClientIDFromOpenIDConnectProvider",
        "iam:UpdateOpenIDConnectProviderThumbprint",
        "iam:UntagOpenIDConnectProvider",
        "iam:DeleteOpenIDConnectProvider",
    ] {
        assert!(
            events
                .iter()
                .any(|e| e.event_name == action && e.outcome == "Allow"),
            "no allowed {action} event"
        );
    }
    assert_status(
        iam.get_open_id_connect_provider(id("arn:stint:iam::999999999999:oidc-provider/x"))
            .await,
        Code::InvalidArgument,
        &["open_id_connect_provider_arn"],
    );
}

/// An issuer that never answers holds up only the call that fetches from it, for at most
/// the 5 s fetch timeout; other calls (here: another provider's tokens and an ordinary
/// bearer call) go on meanwhile, since no lock is held across the fetch.
#[tokio::test]
async fn a_hanging_issuer_times_out_and_blocks_nothing_else() {
    let server = TestServer::start().await;
    // The hanging issuer: discovery answers, the key endpoint never does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": hanging_url, "jwks_uri": format!("{hanging_url}/keys")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/keys",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "{}"
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let key = Key::ed();
    let inline = Issuer::start(json!({"keys": []})).await;
    let admin = setup(&server, &inline, &jwks(&[("k", &key)]).to_string()).await;
    server
        .iam_as(&admin)
        .create_open_id_connect_provider(proto::CreateOpenIdConnectProviderRequest {
            url: hanging_url.clone(),
            client_id_list: vec!["stint".into()],
            ..Default::default()
        })
        .await
        .expect("hanging provider");

    let started = std::time::Instant::now();
    let hanging_token = token(&key, "k", &claims(&server, &hanging_url));
    let channel = server.channel();
    let pending = tokio::spawn(async move {
        stint::proto::sts_client::StsClient::new(channel)
            .assume_role_with_web_identity(request(&hanging_token))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // let the fetch start
    assume(&server, &token(&key, "k", &claims(&server, &inline.url)))
        .await
        .expect("another provider's token while the fetch hangs");
    server
        .sts_as(&admin)
        .get_caller_identity(proto::GetCallerIdentityRequest {})
        .await
        .expect("a bearer call while the fetch hangs");
    assert!(!pending.is_finished());
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_invalid_token(pending.await.unwrap());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4_900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let reasons = refusal_reasons(&server, &admin).await;
    assert!(
        reasons.iter().any(|r| r.contains("timed out")),
        "{reasons:?}"
    );
}
