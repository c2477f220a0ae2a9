//! Plain HTTP on the gRPC listener: `/.well-known/jwks.json` and
//! `/.well-known/openid-configuration`, so standard JWT/OIDC libraries find Stint's keys.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::broker::Broker;

pub fn routes(broker: Arc<Broker>, tls: bool) -> axum::Router {
    axum::Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(move |state: State<Arc<Broker>>, headers: HeaderMap| {
                openid_configuration(state, headers, tls)
            }),
        )
        .with_state(broker)
}

/// Unknown paths: gRPC callers get `UNIMPLEMENTED` (what tonic answers), plain HTTP
/// callers a 404 rather than an empty 200.
pub async fn not_found(headers: HeaderMap) -> axum::response::Response {
    if super::limits::is_grpc_content_type(&headers) {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return axum::response::Response::from_parts(parts, axum::body::Body::empty());
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn jwks(State(broker): State<Arc<Broker>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        broker.jwks().to_string(),
    )
}

async fn openid_configuration(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    tls: bool,
) -> impl IntoResponse {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    let body = serde_json::json!({
        "issuer": broker.issuer(),
        "jwks_uri": format!("{scheme}://{host}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "auth_time", "amr", "stint"],
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
