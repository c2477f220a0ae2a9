//! [`BearerAuthLayer`]: a tower layer for another gRPC service that turns
//! `authorization: Bearer <token>` into verified [`Claims`] in the request extensions, and
//! answers `UNAUTHENTICATED` — before the service runs — when the header is missing or the
//! token is forged, expired, or minted for another audience.
//!
//! It is a layer rather than a tonic interceptor because verification may have to fetch
//! the JWKS (after a key rotation), which is async. Handlers read
//! `request.extensions().get::<Claims>()`, and [`BearerToken`] when they need to ask
//! Stint's `Authorize` about the caller.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use tonic::Status;
use tower::{Layer, Service};

use crate::claims::Claims;
use crate::secret::Secret;
use crate::verifier::Verifier;

/// The caller's raw token, for `Session::authorize` (set next to the [`Claims`]).
#[derive(Clone, Debug)]
pub struct BearerToken(pub Secret);

/// Verifies bearer tokens with a [`Verifier`] in front of a service.
///
/// ```no_run
/// # async fn demo(verifier: stint_client::Verifier) -> Result<(), Box<dyn std::error::Error>> {
/// use stint_client::BearerAuthLayer;
/// # let (_, health) = tonic_health::server::health_reporter();
/// tonic::transport::Server::builder()
///     .layer(BearerAuthLayer::new(verifier))
///     .add_service(health)
///     .serve("127.0.0.1:50051".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BearerAuthLayer {
    verifier: Verifier,
}

impl BearerAuthLayer {
    /// Verifies with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`BearerAuthLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct BearerAuth<S> {
    inner: S,
    verifier: Verifier,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for BearerAuth<S> {
    const NAME: &'static str = S::NAME;
}

/// The token in `authorization: Bearer <token>`, or why there is none.
fn bearer_token(headers: &HeaderMap) -> Result<String, Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not text"))?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(Status::unauthenticated(
            "authorization must be \"Bearer <token>\"",
        )),
    }
}

impl<S, B> Service<http::Request<B>> for BearerAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the ready one (polled above) serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = match bearer_token(request.headers()) {
                Ok(token) => Secret::new(token),
                Err(status) => return Ok(status.into_http()),
            };
            match verifier.verify(token.expose()).await {
                Ok(claims) => {
                    request.extensions_mut().insert::<Claims>(claims);
                    request.extensions_mut().insert(BearerToken(token));
                    inner.call(request).await
                }
                Err(err) => {
                    tracing::debug!(error = %err, "bearer token refused");
                    Ok(Status::unauthenticated(format!("invalid bearer token: {err}")).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::verifier::VerifierConfig;
    use crate::verifier::tests::{NOW, TestKey, config, fixed_clock, sample};

    /// Answers OK with the verified subject in a header, so the test sees what reached it.
    #[derive(Clone)]
    struct Echo;

    impl Service<http::Request<()>> for Echo {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let sub = request.extensions().get::<Claims>().map(|c| c.sub.clone());
            let has_token = request.extensions().get::<BearerToken>().is_some();
            let mut response = http::Response::new(tonic::body::Body::empty());
            if let Some(sub) = sub.filter(|_| has_token) {
                response.headers_mut().insert("x-sub", sub.parse().unwrap());
            }
            std::future::ready(Ok(response))
        }
    }

    async fn call(
        verifier: &Verifier,
        authorization: Option<&str>,
    ) -> http::Response<tonic::body::Body> {
        let mut service = BearerAuthLayer::new(verifier.clone()).layer(Echo);
        let mut request = http::Request::new(());
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert("authorization", value.parse().unwrap());
        }
        service.call(request).await.unwrap()
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<String> {
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn claims_reach_the_service_and_bad_tokens_do_not() {
        let key = TestKey::new("k1");
        let verifier = Verifier::from_jwks_json(&key.jwks(), config(), fixed_clock(NOW)).unwrap();
        let good = key.sign(&sample());

        let ok = call(&verifier, Some(&format!("Bearer {good}"))).await;
        assert_eq!(ok.headers()["x-sub"], sample().sub.as_str());
        assert_eq!(grpc_status(&ok), None);

        let mut other_audience = sample();
        other_audience.aud = "billing".into();
        let forged = TestKey::new("k1").sign(&sample());
        let unauthenticated = (tonic::Code::Unauthenticated as i32).to_string();
        for bad in [
            None,
            Some("Basic dXNlcjpwYXNz".to_owned()),
            Some("Bearer ".to_owned()),
            Some(format!("Bearer {forged}")),
            Some(format!("Bearer {}", key.sign(&other_audience))),
        ] {
            let response = call(&verifier, bad.as_deref()).await;
            assert_eq!(
                grpc_status(&response).as_deref(),
                Some(unauthenticated.as_str()),
                "{bad:?}"
            );
            assert!(response.headers().get("x-sub").is_none());
        }
        let late = Verifier::from_jwks_json(
            &key.jwks(),
            VerifierConfig::new("stint", "orders"),
            fixed_clock(NOW + 3600),
        )
        .unwrap();
        let expired = call(&late, Some(&format!("Bearer {good}"))).await;
        assert_eq!(
            grpc_status(&expired).as_deref(),
            Some(unauthenticated.as_str())
        );
    }
}
