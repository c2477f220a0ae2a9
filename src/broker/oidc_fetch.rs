//! Fetching an OIDC issuer's keys: `<issuer>/.well-known/openid-configuration` names the
//! `jwks_uri`, which serves the JWKS.
//!
//! A minimal HTTP/1.1 GET over hyper's client connection (already in the tree through
//! tonic), with TLS from tokio-rustls on ring and the system's trust roots
//! (rustls-native-certs, so a company CA for an internal IdP works as it does for every
//! other tool on the host). Plain HTTP only to loopback hosts. Each response is bounded
//! ([`MAX_JWKS_BYTES`]) and the whole fetch, discovery included, to [`FETCH_TIMEOUT`];
//! redirects are not followed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use super::iam::is_loopback_host;
use crate::core::token::web_identity::MAX_JWKS_BYTES;

/// Longest a whole fetch (discovery and JWKS) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The issuer's JWKS document, as text.
pub async fn fetch_jwks(issuer: &str) -> Result<String, String> {
    tokio::time::timeout(FETCH_TIMEOUT, async {
        let discovery = get(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .await?;
        let document: Value = serde_json::from_slice(&discovery)
            .map_err(|e| format!("discovery document is not JSON: {e}"))?;
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("discovery document has no jwks_uri")?;
        if !jwks_uri_allowed(issuer, jwks_uri) {
            return Err(format!(
                "jwks_uri of an https issuer must be https, got {:?}",
                jwks_uri.chars().take(256).collect::<String>()
            ));
        }
        let jwks = get(jwks_uri).await?;
        String::from_utf8(jwks).map_err(|_| "JWKS is not UTF-8".to_string())
    })
    .await
    .map_err(|_| format!("timed out after {} s", FETCH_TIMEOUT.as_secs()))?
}

/// An https issuer's discovery document cannot send the broker to plain http (even on
/// loopback, where a compromised issuer would reach the broker host's local services).
fn jwks_uri_allowed(issuer: &str, jwks_uri: &str) -> bool {
    jwks_uri.starts_with("https://") || issuer.starts_with("http://")
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err("no trusted root certificates found on this host".into());
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// One GET; the body if the answer is 200 and at most [`MAX_JWKS_BYTES`].
async fn get(url: &str) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("bad URL {url:?}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("URL {url:?} is not http(s)")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("URL {url:?} has no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !https && !is_loopback_host(authority.as_str()) {
        return Err(format!("{url:?}: plain http only to loopback hosts"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, "stint")
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    if https {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("bad server name {host:?}"))?;
        let tls = TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {authority}: {e}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<I>(io: I, request: http::Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("HTTP status {}", response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_issuer_cannot_point_the_fetch_at_plain_http() {
        let cases = [
            ("https://issuer.example", "https://keys.example/jwks", true),
            (
                "https://issuer.example",
                "http://127.0.0.1:8080/admin",
                false,
            ),
            ("https://issuer.example", "file:///etc/passwd", false),
            ("http://127.0.0.1:9/x", "http://127.0.0.1:9/x/keys", true),
        ];
        for (issuer, uri, want) in cases {
            assert_eq!(jwks_uri_allowed(issuer, uri), want, "{issuer} {uri}");
        }
    }

    #[tokio::test]
    async fn plain_http_to_a_remote_host_is_refused_before_connecting() {
        let err = get("http://192.0.2.1/keys").await.unwrap_err();
        assert!(err.contains("loopback"), "{err}");
    }
}
