//! One log line per request: request id, method, principal, outcome, latency.
//!
//! A tower layer opens a span per request (handlers record the principal into it once the
//! bearer token is verified) and logs when the response head is ready. Nothing from the
//! body is logged, so no secret can leak here.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

/// The id of one request, in the request extensions and the `x-request-id` header.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

#[derive(Clone, Default)]
pub struct RequestLogLayer {
    counter: std::sync::Arc<AtomicU64>,
    prefix: std::sync::Arc<str>,
}

impl RequestLogLayer {
    pub fn new(prefix: &str) -> Self {
        Self {
            counter: Default::default(),
            prefix: prefix.into(),
        }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestLog<S> {
    inner: S,
    layer: RequestLogLayer,
}

impl<S, B, R> Service<http::Request<B>> for RequestLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let n = self.layer.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n:08x}", self.layer.prefix);
        request.extensions_mut().insert(RequestId(id.clone()));
        let method = request.uri().path().to_string();
        let span = tracing::info_span!("request", request_id = %id, method = %method, principal = tracing::field::Empty);
        let started = Instant::now();
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let result = inner.call(request).await;
                let latency_us = started.elapsed().as_micros() as u64;
                match &result {
                    Ok(response) => {
                        let grpc_status = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("0")
                            .to_string();
                        let outcome = if grpc_status == "0" { "ok" } else { "error" };
                        tracing::info!(http_status = response.status().as_u16(), grpc_status = %grpc_status, outcome, latency_us, "request");
                    }
                    Err(_) => tracing::warn!(outcome = "transport_error", latency_us, "request"),
                }
                result.map(|mut response| {
                    if let Ok(value) = http::HeaderValue::from_str(&id) {
                        response.headers_mut().insert("x-request-id", value);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
}
