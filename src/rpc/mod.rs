//! The gRPC edge: tonic services, health, reflection and the `.well-known` HTTP routes on
//! one listener.
//!
//! Handlers are thin: convert the wire message once, call the broker use case, convert
//! the answer. Errors become `Status` in one place (`status.rs`).

pub mod audit;
pub mod auth;
pub mod convert;
pub mod http;
pub mod iam;
pub mod keys;
pub mod limits;
pub mod log;
pub mod ops_http;
pub mod proxy;
pub mod request_metrics;
pub mod status;
pub mod sts;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::broker::Broker;
use crate::proto;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("reflection setup failed: {0}")]
    Reflection(String),
    #[error("server failed: {0}")]
    Transport(String),
}

/// PEM certificate chain and private key for TLS, fixed for the server's life (see
/// [`tls::ServerTls`] for TLS that reloads and checks client certificates).
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

const SERVICES: [&str; 5] = [
    "stint.v1.Sts",
    "stint.v1.Tokens",
    "stint.v1.Iam",
    "stint.v1.Audit",
    "stint.v1.Keys",
];

/// Serves every service on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let tls = tls
        .map(|files| tls::ServerTls::from_pem(&files.cert_pem, &files.key_pem, None))
        .transpose()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    serve_with_tls(listener, broker, tls, shutdown).await
}

/// [`serve`] with TLS terminated by [`tls::ServerTls`]: reloaded from its files on
/// SIGHUP, and with client certificates required when it has a client CA.
pub async fn serve_with_tls(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<tls::ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let proxies = proxy::ProxyTrust::default();
    serve_with_limits(
        listener,
        broker,
        tls,
        limits::Limits::default(),
        proxies,
        shutdown,
    )
    .await
}

/// [`serve_with_tls`] under the given load [`limits::Limits`] (`[limits]` of the config),
/// reading PROXY headers from `proxies` (`proxy_protocol_from`).
pub async fn serve_with_limits(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<tls::ServerTls>,
    limits: limits::Limits,
    proxies: proxy::ProxyTrust,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_serving(&health, true).await;
    // Health follows the audit log: no durable audit, no service.
    let mut healthy = broker.audit_log().healthy_watch();
    let reporter = health.clone();
    tokio::spawn(async move {
        while healthy.changed().await.is_ok() {
            let ok = *healthy.borrow();
            set_serving(&reporter, ok).await;
        }
    });

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    // Each decoder is capped at its service's largest request (see `limits`).
    use limits::{IAM_MAX_REQUEST, SMALL_MAX_REQUEST, STS_MAX_REQUEST, TOKENS_MAX_REQUEST};
    let routes = Routes::new(
        proto::sts_server::StsServer::new(sts::StsService {
            broker: broker.clone(),
        })
        .max_decoding_message_size(STS_MAX_REQUEST),
    )
    .add_service(
        proto::tokens_server::TokensServer::new(tokens::TokensService {
            broker: broker.clone(),
        })
        .max_decoding_message_size(TOKENS_MAX_REQUEST),
    )
    .add_service(
        proto::iam_server::IamServer::new(iam::IamService {
            broker: broker.clone(),
        })
        .max_decoding_message_size(IAM_MAX_REQUEST),
    )
    .add_service(
        proto::audit_server::AuditServer::new(audit::AuditService {
            broker: broker.clone(),
        })
        .max_decoding_message_size(SMALL_MAX_REQUEST),
    )
    .add_service(
        proto::keys_server::KeysServer::new(keys::KeysService {
            broker: broker.clone(),
        })
        .max_decoding_message_size(SMALL_MAX_REQUEST),
    )
    .add_service(health_service.max_decoding_message_size(SMALL_MAX_REQUEST))
    .add_service(reflection.max_decoding_message_size(SMALL_MAX_REQUEST));
    let router = routes
        .into_axum_router()
        .merge(http::routes(broker.clone(), tls.is_some()))
        .fallback(http::not_found);

    let prefix = format!("{:06x}", std::process::id() & 0xff_ffff);
    let router = Server::builder()
        .accept_http1(true)
        // Per connection: requests in flight (one more is RESOURCE_EXHAUSTED at once),
        // streams, frame and header sizes, and pings to find dead peers.
        .concurrency_limit_per_connection(limits.max_concurrent_requests_per_connection)
        .load_shed(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .http2_keepalive_interval(limits.keepalive_interval)
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(log::RequestLogLayer::new(&prefix))
        .layer(request_metrics::RequestMetricsLayer)
        .layer(limits::LimitsLayer::new(&limits))
        .add_routes(Routes::from(router));
    let served = match tls {
        // No Nagle: small gRPC frames would otherwise meet delayed ACKs (~40 ms stalls).
        None if proxies.is_empty() => {
            router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await
        }
        None => {
            let (incoming, _accept) = proxy::incoming(listener, move |tcp, peer| {
                let proxies = proxies.clone();
                async move { proxies.accept(tcp, peer).await }
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(tls) => {
            let _reload = tls::reload_on_sighup(&tls);
            let (incoming, _accept) = tls::incoming(listener, tls, proxies);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    served.map_err(|e| ServeError::Transport(e.to_string()))
}

async fn set_serving(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    for service in SERVICES {
        health.set_service_status(service, status).await;
    }
}
