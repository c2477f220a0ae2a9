//! Request metrics for the gRPC listener: a tower layer counting every request by RPC and
//! gRPC status code and timing it to the response head ([`crate::metrics`]).
//!
//! Logins and minted credentials are counted here too, from the outcome of the RPCs that
//! perform them (`GetSessionToken`, `AssumeRole`, `AssumeRoleWithWebIdentity`): one place
//! at the edge, no counting inside the use cases. Labels come only from fixed tables: an
//! RPC path not in the descriptor sets the server registers becomes `other`, and the
//! status is a gRPC code name, so no caller-chosen text becomes a label.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tower::{Layer, Service};

use crate::metrics::{Counter, metrics};

/// The label of a path the server does not serve.
pub const OTHER_RPC: &str = "other";

const LOGIN: &str = "/stint.v1.Sts/GetSessionToken";

/// RPCs that mint a credential on success, and its kind.
const MINTS: &[(&str, &str)] = &[
    (LOGIN, "session"),
    ("/stint.v1.Sts/AssumeRole", "role"),
    ("/stint.v1.Sts/AssumeRoleWithWebIdentity", "web_identity"),
];

/// Every path the gRPC listener serves: each method of the registered services, and the
/// plain-HTTP routes of [`super::http`].
static KNOWN_PATHS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut paths: HashSet<String> = [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for set in [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(pool) = prost_reflect::DescriptorPool::decode(set) else {
            continue;
        };
        for service in pool.services() {
            for method in service.methods() {
                paths.insert(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
    }
    paths
});

/// The metric label for a request path: the path itself when the server serves it,
/// else [`OTHER_RPC`].
pub fn rpc_label(path: &str) -> &'static str {
    KNOWN_PATHS
        .get(path)
        .map_or(OTHER_RPC, |known| known.as_str())
}

/// The gRPC code of a response: `grpc-status` in the head (an error, trailers-only), else
/// OK for a 2xx head (a gRPC success carries its status in the trailers), else UNKNOWN.
fn response_code<B>(response: &http::Response<B>) -> Code {
    match response.headers().get("grpc-status") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32),
        None if response.status().is_success() => Code::Ok,
        None => Code::Unknown,
    }
}

/// Stable label of a code (`OK`, `UNAUTHENTICATED`, …), as gRPC names them.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Why a login failed, as a small fixed set (`docs/metrics.md`): a lockout answers
/// UNAUTHENTICATED with a `retry-after` header, a wrong credential without one.
fn login_failure_reason(code: Code, locked_out: bool) -> &'static str {
    match code {
        Code::Unauthenticated if locked_out => "locked_out",
        Code::Unauthenticated => "invalid_credentials",
        Code::InvalidArgument => "invalid_request",
        Code::ResourceExhausted => "throttled",
        Code::Unavailable => "unavailable",
        _ => "error",
    }
}

/// Records one finished request.
fn record(rpc: &'static str, code: Code, locked_out: bool, started: Instant) {
    let m = metrics();
    m.rpc_requests.with(&[rpc, code_label(code)], Counter::inc);
    m.rpc_duration
        .with(&[rpc], |h| h.observe_duration(started.elapsed()));
    if code == Code::Ok {
        if let Some((_, kind)) = MINTS.iter().find(|(path, _)| *path == rpc) {
            m.tokens_minted.with(&[kind], Counter::inc);
        }
        if rpc == LOGIN {
            m.logins_succeeded.inc();
        }
    } else if rpc == LOGIN {
        m.logins_failed
            .with(&[login_failure_reason(code, locked_out)], Counter::inc);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RequestMetricsLayer;

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RequestMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for RequestMetrics<S>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = rpc_label(request.uri().path());
        let started = Instant::now();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let result = inner.call(request).await;
            match &result {
                Ok(response) => record(
                    rpc,
                    response_code(response),
                    response.headers().contains_key("retry-after"),
                    started,
                ),
                Err(_) => record(rpc, Code::Unknown, false, started),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_paths_are_labels() {
        let cases = [
            ("/stint.v1.Sts/AssumeRole", "/stint.v1.Sts/AssumeRole"),
            ("/stint.v1.Iam/CreateUser", "/stint.v1.Iam/CreateUser"),
            (
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Check",
            ),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            ),
            ("/.well-known/jwks.json", "/.well-known/jwks.json"),
            ("/stint.v1.Sts/alice", OTHER_RPC),
            ("/", OTHER_RPC),
            ("/stint.v1.Sts/AssumeRole/", OTHER_RPC),
        ];
        for (path, label) in cases {
            assert_eq!(rpc_label(path), label, "{path}");
        }
        assert!(KNOWN_PATHS.len() > 100 && KNOWN_PATHS.len() < 500);
    }

    #[test]
    fn codes_come_from_the_head() {
        let with = |status: u16, grpc: Option<&str>| {
            let mut b = http::Response::builder().status(status);
            if let Some(g) = grpc {
                b = b.header("grpc-status", g);
            }
            response_code(&b.body(()).unwrap())
        };
        assert_eq!(with(200, None), Code::Ok);
        assert_eq!(with(200, Some("16")), Code::Unauthenticated);
        assert_eq!(with(200, Some("99")), Code::Unknown);
        assert_eq!(with(200, Some("x")), Code::Unknown);
        assert_eq!(with(404, None), Code::Unknown);
        assert_eq!(code_label(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[test]
    fn login_failures_fall_into_fixed_reasons() {
        let cases = [
            (Code::Unauthenticated, true, "locked_out"),
            (Code::Unauthenticated, false, "invalid_credentials"),
            (Code::InvalidArgument, false, "invalid_request"),
            (Code::ResourceExhausted, false, "throttled"),
            (Code::Unavailable, false, "unavailable"),
            (Code::Internal, false, "error"),
        ];
        for (code, locked, reason) in cases {
            assert_eq!(login_failure_reason(code, locked), reason);
        }
    }
}
