//! Request edges: bearer token → [`Caller`], and the facts about a request
//! ([`RequestMeta`]) that the audit log and condition keys need.

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

use crate::broker::{Broker, Caller, RequestMeta};

use super::log::RequestId;

/// Reads request id, source address and user agent.
pub fn meta<T>(request: &Request<T>) -> RequestMeta {
    RequestMeta {
        request_id: request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default(),
        // An IPv4 client of a dual-stack (`[::]`) listener arrives as `::ffff:a.b.c.d`: it
        // is that IPv4 address, for `aws:SourceIp` conditions, throttling and the audit log.
        source_ip: request.remote_addr().map(|addr| addr.ip().to_canonical()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(256)
            .collect(),
        secure_transport: request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .is_some(),
    }
}

/// The `authorization: Bearer <session_token>` of a request, verified.
pub fn caller<T>(broker: &Broker, request: &Request<T>) -> Result<Caller, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <session_token>"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not text"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization must be: Bearer <session_token>"))?;
    let caller = broker.authenticate(token.trim()).map_err(Status::from)?;
    tracing::Span::current().record("principal", caller.arn());
    Ok(caller)
}

/// Caller and meta together, for handlers that need both.
pub fn context<T>(broker: &Broker, request: &Request<T>) -> Result<(Caller, RequestMeta), Status> {
    Ok((caller(broker, request)?, meta(request)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, SocketAddr};
    use tonic::transport::server::TcpConnectInfo;

    #[test]
    fn the_source_address_is_canonical() {
        let cases: &[(&str, &str)] = &[
            ("[::ffff:192.0.2.9]:5000", "192.0.2.9"),
            ("192.0.2.9:5000", "192.0.2.9"),
            ("[2001:db8::1]:5000", "2001:db8::1"),
            // IPv4-compatible (deprecated) addresses are not IPv4 clients.
            ("[::192.0.2.9]:5000", "::192.0.2.9"),
        ];
        for (peer, want) in cases {
            let mut request = Request::new(());
            request.extensions_mut().insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer.parse::<SocketAddr>().unwrap()),
            });
            let want: IpAddr = want.parse().unwrap();
            assert_eq!(meta(&request).source_ip, Some(want), "{peer}");
        }
    }
}
