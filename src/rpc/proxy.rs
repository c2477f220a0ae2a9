//! Connections from a load balancer that speaks the PROXY protocol (v2 or v1): the client's
//! address is read off the front of the connection, so throttling, `aws:SourceIp` and the
//! audit log see the client rather than the proxy.
//!
//! Only peers in `proxy_protocol_from` are proxies. From them a header is required (a
//! connection without one is closed: a proxy that forgot `send-proxy-v2` or `proxy_protocol
//! on` must not make every client look like the proxy); from anyone else none is read, so a
//! client cannot claim an address. The header is read exactly, never a byte of what follows
//! it (v2: its length is in its first 16 bytes; v1: up to its CRLF, at most 107 bytes),
//! under the same bound on time and on connections in progress as a TLS handshake.
//!
//! [`Proxied`] reports the client's address through tonic's `TcpConnectInfo`, so
//! `Request::remote_addr` (and [`super::auth::meta`]) read it with no further change, with
//! or without TLS over it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::core::policy::Cidr;
use crate::core::proxy_header::{self, FIXED_LEN, Source, V1_MIN_LEN, V1_PREFIX};

/// Which peers are proxies that send a PROXY header.
#[derive(Clone, Debug, Default)]
pub struct ProxyTrust {
    from: Arc<[Cidr]>,
}

impl ProxyTrust {
    /// From `proxy_protocol_from` entries (addresses or CIDRs), validated by the config.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        Ok(Self {
            from: proxy_header::parse_trusted(entries)?.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.from.is_empty()
    }

    fn is_proxy(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|cidr| cidr.contains(ip))
    }

    /// Reads the header if `peer` is a proxy; the stream then reports the client's address.
    pub async fn accept(&self, mut tcp: TcpStream, peer: SocketAddr) -> io::Result<Proxied> {
        let local = tcp.local_addr().ok();
        if !self.is_proxy(peer.ip()) {
            return Ok(Proxied {
                tcp,
                local,
                remote: Some(peer),
            });
        }
        let invalid = |e: proxy_header::HeaderError| io::Error::new(io::ErrorKind::InvalidData, e);
        // The shortest header of either version: reading it never takes a byte past one.
        let mut head = [0u8; V1_MIN_LEN];
        tcp.read_exact(&mut head).await?;
        let source = if head.starts_with(V1_PREFIX) {
            // A text line: read up to its CRLF, a byte at a time (at most V1_MAX_LEN).
            let mut line = head.to_vec();
            let len = loop {
                match proxy_header::v1_len(&line).map_err(invalid)? {
                    Some(len) => break len,
                    None => line.push(tcp.read_u8().await?),
                }
            };
            // A CRLF inside the first read ends a line too short to be valid.
            proxy_header::parse_v1(&line[..len])
        } else {
            let mut fixed = [0u8; FIXED_LEN];
            fixed[..V1_MIN_LEN].copy_from_slice(&head);
            tcp.read_exact(&mut fixed[V1_MIN_LEN..]).await?;
            let len = proxy_header::block_len(&fixed).map_err(invalid)?;
            let mut block = vec![0u8; len];
            tcp.read_exact(&mut block).await?;
            proxy_header::parse(&fixed, &block)
        };
        let remote = match source.map_err(invalid)? {
            // `::ffff:a.b.c.d` (a TCP6 header for an IPv4 client) is that IPv4 client.
            Source::Client(client) => SocketAddr::new(client.ip().to_canonical(), client.port()),
            Source::Proxy => peer,
        };
        Ok(Proxied {
            tcp,
            local,
            remote: Some(remote),
        })
    }
}

/// A TCP connection whose remote address may come from a PROXY header.
#[derive(Debug)]
pub struct Proxied {
    tcp: TcpStream,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
}

impl Connected for Proxied {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

impl AsyncRead for Proxied {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Proxied {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Aborts the accept task when dropped (with the server future).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client that has not finished its PROXY header and TLS handshake by then is dropped.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections being prepared at once; further ones wait in the kernel's backlog.
const MAX_CONCURRENT_PREPARES: usize = 4096;

/// Accepts TCP connections on `listener` and prepares each one concurrently with
/// `prepare` (PROXY header, TLS handshake), bounded in number and time; the prepared
/// streams are what tonic's `serve_with_incoming_shutdown` serves.
pub fn incoming<S, F, Fut>(
    listener: TcpListener,
    prepare: F,
) -> (ReceiverStream<io::Result<S>>, AbortOnDrop)
where
    S: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(accept_loop(listener, prepare, tx));
    (ReceiverStream::new(rx), AbortOnDrop(task))
}

async fn accept_loop<S, F, Fut>(listener: TcpListener, prepare: F, tx: mpsc::Sender<io::Result<S>>)
where
    S: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PREPARES));
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // No Nagle: small gRPC frames would otherwise meet delayed ACKs.
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let prepared = prepare(tcp, peer);
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(PREPARE_TIMEOUT, prepared).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(err)) => {
                    tracing::info!(%peer, error = %err, "connection refused before its first request")
                }
                Err(_) => tracing::info!(%peer, "connection timed out before its first request"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server, peer)
    }

    #[tokio::test]
    async fn only_trusted_peers_have_their_header_read() {
        let claimed: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let cases: [(&[&str], bool, &str); 4] = [
            // trusted, header sent: the client's address
            (&["127.0.0.1"], true, "claimed"),
            // trusted CIDR, no header: refused
            (&["127.0.0.0/8"], false, "refused"),
            // untrusted: the header is not read; the peer's own address stands
            (&["10.0.0.0/8"], true, "peer"),
            (&[], false, "peer"),
        ];
        for (from, send_header, want) in cases {
            let trust =
                ProxyTrust::parse(&from.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            let (mut client, server, peer) = pair().await;
            if send_header {
                client
                    .write_all(&proxy_header::encode(claimed, server.local_addr().unwrap()))
                    .await
                    .unwrap();
            } else {
                client
                    .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    .await
                    .unwrap();
            }
            let got = trust.accept(server, peer).await;
            match want {
                "claimed" => assert_eq!(got.unwrap().connect_info().remote_addr, Some(claimed)),
                "peer" => assert_eq!(got.unwrap().connect_info().remote_addr, Some(peer)),
                _ => assert_eq!(
                    got.unwrap_err().kind(),
                    io::ErrorKind::InvalidData,
                    "{from:?}"
                ),
            }
        }
    }

    #[tokio::test]
    async fn the_bytes_after_the_header_are_left_for_http2() {
        let trust = ProxyTrust::parse(&["127.0.0.1".into()]).unwrap();
        let client_addr: SocketAddr = "[2001:db8::7]:1".parse().unwrap();
        type Encode = fn(SocketAddr, SocketAddr) -> Vec<u8>;
        let cases: [(Encode, &[u8], Option<SocketAddr>); 4] = [
            (proxy_header::encode, b"PRI * HTTP/2.0", Some(client_addr)),
            (
                proxy_header::encode_v1,
                b"PRI * HTTP/2.0",
                Some(client_addr),
            ),
            // The shortest v1 line, then a single byte: nothing past the CRLF is taken.
            (|_, _| b"PROXY UNKNOWN\r\n".to_vec(), b"P", None),
            (|_, _| b"PROXY UNKNOWN\r\n".to_vec(), b"\x16\x03\x01", None),
        ];
        for (encode, after, want) in cases {
            let (mut client, server, peer) = pair().await;
            let mut bytes = encode(client_addr, peer);
            bytes.extend_from_slice(after);
            client.write_all(&bytes).await.unwrap();
            let mut proxied = trust.accept(server, peer).await.unwrap();
            assert_eq!(
                proxied.connect_info().remote_addr,
                Some(want.unwrap_or(peer))
            );
            let mut rest = vec![0u8; after.len()];
            proxied.read_exact(&mut rest).await.unwrap();
            assert_eq!(rest, after);
        }
    }

    #[tokio::test]
    async fn a_v1_line_without_its_crlf_is_refused_at_the_bound() {
        let trust = ProxyTrust::parse(&["127.0.0.1".into()]).unwrap();
        let (mut client, server, peer) = pair().await;
        client
            .write_all(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 4096]].concat())
            .await
            .unwrap();
        let err = trust.accept(server, peer).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("no CRLF within 107 bytes"),
            "{err}"
        );
    }

    #[test]
    fn entries_that_are_not_addresses_are_named() {
        let err = ProxyTrust::parse(&["10.0.0.0/8".into(), "haproxy".into()]).unwrap_err();
        assert!(err.contains("\"haproxy\""), "{err}");
    }
}
