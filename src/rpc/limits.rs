//! Load limits at the edge: the server refuses what it cannot take on quickly, instead of
//! queueing without end.
//!
//! - Requests in flight in the whole server are capped ([`Limits::max_concurrent_requests`]);
//!   one more is answered `RESOURCE_EXHAUSTED` at once, with a `grpc-retry-pushback-ms`
//!   hint. Health checks are exempt, so a busy server is not mistaken for a dead one.
//! - Every request has a deadline: the client's `grpc-timeout`, capped by
//!   [`Limits::request_timeout`]. Past it the handler is dropped and the client gets
//!   `DEADLINE_EXCEEDED`. A handler only stops at an `.await`, and every change commits
//!   with its audit event in one synchronous batch, so a cut-short request leaves either
//!   the whole change or none of it.
//! - Each request message is bounded by its RPC ([`max_request_bytes`]): small calls
//!   (`GetCallerIdentity`, `AssumeRole`, `Authorize`) accept far less than the IAM calls
//!   that carry policy documents. The length prefix of each gRPC message is checked as it
//!   arrives, before the message is buffered; too large is `RESOURCE_EXHAUSTED` naming
//!   the limit. Each service's decoder is capped at its largest method as well.
//!
//! Per-connection limits (requests in flight, HTTP/2 streams, frame and header sizes,
//! keepalive) are tonic's and hyper's, set in [`super::serve_with_limits`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Buf, Bytes, Frame, SizeHint};
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::config::LimitsConfig;

/// The limits the server runs with (from `[limits]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent_requests: usize,
    pub max_concurrent_requests_per_connection: usize,
    pub max_concurrent_streams: u32,
    pub request_timeout: Duration,
    /// `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub max_header_list_bytes: u32,
    pub max_frame_bytes: u32,
}

impl Limits {
    /// From a validated `[limits]` section (values past a type's range saturate).
    pub fn from_config(config: &LimitsConfig) -> Self {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let u32_of = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            max_concurrent_requests: size(config.max_concurrent_requests),
            max_concurrent_requests_per_connection: size(
                config.max_concurrent_requests_per_connection,
            ),
            max_concurrent_streams: u32_of(config.max_concurrent_streams),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            keepalive_interval: (config.keepalive_interval_seconds > 0)
                .then(|| Duration::from_secs(config.keepalive_interval_seconds)),
            keepalive_timeout: Duration::from_secs(config.keepalive_timeout_seconds),
            max_header_list_bytes: u32_of(config.max_header_list_bytes),
            max_frame_bytes: u32_of(config.max_frame_bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&LimitsConfig::default())
    }
}

const KIB: usize = 1024;
/// The IAM service: policy documents (inline ≤ 10 KiB, managed ≤ 6 KiB), simulations
/// with up to 10 extra policies of ≤ 128 Ki characters, inline OIDC JWKS ≤ 64 KiB.
pub const IAM_MAX_REQUEST: usize = 4 * KIB * KIB;
/// `Sts` calls carrying tags, session policies, policy ARNs or a web identity token.
pub const STS_MAX_REQUEST: usize = 128 * KIB;
/// `Tokens`: Authorize with every field at its bound that a real caller reaches (64
/// context keys × a few values of ≤ 2,048), Introspect's token.
pub const TOKENS_MAX_REQUEST: usize = 512 * KIB;
/// `Audit`, `Keys`, health, reflection: a few small fields.
pub const SMALL_MAX_REQUEST: usize = 16 * KIB;
/// Calls with (next to) no fields.
const TINY_MAX_REQUEST: usize = KIB;
/// A login: a name ≤ 64, a password ≤ 1,024 bytes or a secret ≤ 128, a code.
const LOGIN_MAX_REQUEST: usize = 4 * KIB;

/// The largest request message `path` (`/package.Service/Method`) accepts.
pub fn max_request_bytes(path: &str) -> usize {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    match (service, method) {
        ("stint.v1.Sts", "GetCallerIdentity") | ("stint.v1.Tokens", "GetJwks") => TINY_MAX_REQUEST,
        ("stint.v1.Sts", "GetSessionToken") | ("stint.v1.Tokens", "RevokeSession") => {
            LOGIN_MAX_REQUEST
        }
        ("stint.v1.Sts", _) => STS_MAX_REQUEST,
        ("stint.v1.Tokens", _) => TOKENS_MAX_REQUEST,
        ("stint.v1.Iam", _) => IAM_MAX_REQUEST,
        _ => SMALL_MAX_REQUEST,
    }
}

/// The tower layer enforcing the global cap, deadlines and message sizes.
#[derive(Clone)]
pub struct LimitsLayer {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    request_timeout: Duration,
}

impl LimitsLayer {
    pub fn new(limits: &Limits) -> Self {
        let max_in_flight = limits
            .max_concurrent_requests
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            request_timeout: limits.request_timeout,
        }
    }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitsService<S> {
    inner: S,
    layer: LimitsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for LimitsService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        crate::broker::share_core();
        let grpc = is_grpc(&request);
        let path = request.uri().path();
        // tonic routes by path alone: a gRPC method called with another content type
        // would skip the message-size cap below. The gRPC spec's answer is 415.
        if !grpc && is_grpc_path(path) {
            let refusal = plain(http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
            return Box::pin(async move { Ok(refusal) });
        }
        let exempt = path.starts_with("/grpc.health.v1.Health/");
        let permit = if exempt {
            None
        } else {
            match self.layer.in_flight.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let refusal = overloaded(grpc, self.layer.max_in_flight);
                    return Box::pin(async move { Ok(refusal) });
                }
            }
        };
        let deadline = match client_timeout(request.headers()) {
            Some(asked) if asked < self.layer.request_timeout => {
                (asked, "the client's grpc-timeout")
            }
            _ => (self.layer.request_timeout, "limits.request_timeout_ms"),
        };
        let request = if grpc {
            let limit = max_request_bytes(path);
            let method = path.to_string();
            request.map(|body| Body::new(SizedBody::new(body, limit, method)))
        } else {
            request
        };
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(deadline.0, inner.call(request)).await {
                Ok(answer) => answer,
                Err(_) => Ok(deadline_exceeded(grpc, deadline.0, deadline.1)),
            }
        })
    }
}

/// A path of one of the gRPC services (Stint's, health, reflection), not an HTTP route.
fn is_grpc_path(path: &str) -> bool {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    service.starts_with("stint.") || service.starts_with("grpc.")
}

fn is_grpc<B>(request: &http::Request<B>) -> bool {
    is_grpc_content_type(request.headers())
}

/// `application/grpc`, bare or with a codec (`+proto`) or parameters (`; …`), as the gRPC
/// over HTTP/2 spec writes it; `application/grpc-web` and other look-alikes are not gRPC
/// (this server does not speak gRPC-Web).
pub fn is_grpc_content_type(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(rest) = value
        .get(..16)
        .filter(|head| head.eq_ignore_ascii_case("application/grpc"))
        .map(|_| &value[16..])
    else {
        return false;
    };
    rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
}

fn overloaded(grpc: bool, limit: usize) -> http::Response<Body> {
    if !grpc {
        return plain(http::StatusCode::SERVICE_UNAVAILABLE);
    }
    let mut status = Status::resource_exhausted(format!(
        "server busy: {limit} requests already in flight (limits.max_concurrent_requests); retry shortly"
    ));
    if let Ok(value) = "100".parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status.into_http()
}

fn deadline_exceeded(grpc: bool, after: Duration, source: &str) -> http::Response<Body> {
    if !grpc {
        return plain(http::StatusCode::GATEWAY_TIMEOUT);
    }
    Status::deadline_exceeded(format!(
        "deadline of {} ms ({source}) passed before the answer; a change is either complete or not made",
        after.as_millis()
    ))
    .into_http()
}

fn plain(code: http::StatusCode) -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    *response.status_mut() = code;
    response
}

/// The client's `grpc-timeout` (`<1–8 digits><H|M|S|m|u|n>`); `None` if absent or invalid.
fn client_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A request body that refuses any gRPC message longer than its method's limit, as soon
/// as the message's length prefix has arrived.
struct SizedBody {
    inner: Body,
    limit: usize,
    method: String,
    /// Bytes of the current 5-byte prefix seen so far, and the prefix itself.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message body still to come.
    remaining: usize,
}

impl SizedBody {
    fn new(inner: Body, limit: usize, method: String) -> Self {
        Self {
            inner,
            limit,
            method,
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Walks the message framing through `data`; the first oversized message is an error.
    fn observe(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > self.limit {
                    return Err(Status::resource_exhausted(format!(
                        "request message of {len} bytes is larger than the {} KiB limit of {}",
                        self.limit / KIB,
                        self.method
                    )));
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

impl HttpBody for SizedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = self.observe(data.chunk())
                {
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised_exactly() {
        let cases = [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("Application/GRPC", true),
            ("application/grpc-web", false),
            ("application/grpc-web-text", false),
            ("application/grpcx", false),
            ("application/json", false),
            ("application/grp", false),
            ("", false),
        ];
        for (value, want) in cases {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_grpc_content_type(&headers), want, "{value:?}");
        }
        assert!(!is_grpc_content_type(&http::HeaderMap::new()));
    }

    #[test]
    fn small_calls_accept_far_less_than_iam() {
        let cases = [
            ("/stint.v1.Sts/GetCallerIdentity", TINY_MAX_REQUEST),
            ("/stint.v1.Sts/GetSessionToken", LOGIN_MAX_REQUEST),
            ("/stint.v1.Sts/AssumeRole", STS_MAX_REQUEST),
            ("/stint.v1.Tokens/Authorize", TOKENS_MAX_REQUEST),
            ("/stint.v1.Iam/PutRolePolicy", IAM_MAX_REQUEST),
            ("/stint.v1.Iam/SimulatePrincipalPolicy", IAM_MAX_REQUEST),
            ("/stint.v1.Audit/ListEvents", SMALL_MAX_REQUEST),
            ("/grpc.health.v1.Health/Check", SMALL_MAX_REQUEST),
            ("/nonsense", SMALL_MAX_REQUEST),
            ("", SMALL_MAX_REQUEST),
        ];
        for (path, want) in cases {
            assert_eq!(max_request_bytes(path), want, "{path}");
        }
        assert!(max_request_bytes("/stint.v1.Tokens/Authorize") * 8 <= IAM_MAX_REQUEST);
        assert!(max_request_bytes("/stint.v1.Sts/AssumeRole") * 32 <= IAM_MAX_REQUEST);
    }

    #[test]
    fn grpc_timeouts_parse_and_nonsense_is_ignored() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5S", Some(Duration::from_secs(5))),
            ("250m", Some(Duration::from_millis(250))),
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("7n", Some(Duration::from_nanos(7))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("5s", None),
            ("-5S", None),
            ("５S", None),
        ];
        for (value, want) in cases {
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = value.parse() {
                headers.insert("grpc-timeout", v);
            }
            assert_eq!(client_timeout(&headers), *want, "{value:?}");
        }
        assert_eq!(client_timeout(&http::HeaderMap::new()), None);
    }

    fn framed(messages: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &len in messages {
            out.push(0);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, len));
        }
        out
    }

    #[test]
    fn each_message_is_measured_whatever_the_chunking() {
        let cases: &[(&[usize], bool)] = &[
            (&[0], true),
            (&[100], true),
            (&[100, 100, 100], true),
            (&[101], false),
            (&[10, 101], false),
        ];
        for (messages, ok) in cases {
            let bytes = framed(messages);
            for chunk in [1, 2, 3, 5, 7, 64, bytes.len().max(1)] {
                let mut body = SizedBody::new(Body::default(), 100, "/x/Y".into());
                let got = bytes.chunks(chunk).try_for_each(|c| body.observe(c));
                assert_eq!(got.is_ok(), *ok, "{messages:?} in chunks of {chunk}");
                if let Err(status) = got {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                    assert!(status.message().contains("/x/Y"), "{}", status.message());
                }
            }
        }
    }
}
