//! TLS to PostgreSQL, with rustls on ring (the broker's one crypto stack), chosen by the
//! libpq parameters of the store URL.
//!
//! Managed databases (RDS, Cloud SQL, Azure) refuse or discourage plain connections, and
//! the store link carries the database password and every sealed record. So:
//!
//! - `sslmode=require` or `verify-full`: TLS, and the server's certificate is verified
//!   against `sslrootcert` (a PEM file; the provider's CA bundle) or, without it, the
//!   host's trust roots, host name included. Stricter than libpq's `require`, which
//!   accepts any certificate: an unverified link would hand the password to whoever sits
//!   in between.
//! - `verify-ca` (libpq: chain only, no host name) is refused with a message: the host
//!   name is always checked here.
//! - `disable`, `prefer` or no `sslmode`: plain TCP, as before (`prefer` falls back to
//!   plain because no unverified TLS is offered).
//!
//! - Over TLS, SCRAM is bound to the session (`tls-server-end-point`) when the server
//!   offers SCRAM-SHA-256-PLUS; `channel_binding=require` in the URL makes it mandatory,
//!   `disable` turns it off (behind a proxy that terminates TLS and relays SCRAM, where a
//!   bound login fails, as it does with libpq).
//!
//! tokio-postgres knows only `disable|prefer|require` and no `sslrootcert`, so
//! [`split_url`] takes those out of the URL (or key=value string) before it parses it.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::Socket;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;

use super::StoreError;

/// A root bundle larger than this is refused before it is parsed.
const MAX_ROOT_PEM_BYTES: u64 = 1 << 20;
/// A database that has not finished its TLS handshake by then is given up on.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the URL asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (no `sslmode`, `disable` or `prefer`).
    Plain,
    /// Verified TLS, against `sslrootcert` when given, else the host's roots.
    Verified { root_cert: Option<PathBuf> },
}

/// Splits the TLS parameters off a store URL (`postgres://…?sslmode=…&sslrootcert=…`) or
/// key=value string (`host=… sslmode=…`): what is left for tokio-postgres, and the mode.
/// Error messages never quote the URL: a misplaced character of a password could be in it.
pub fn split_url(url: &str) -> Result<(String, TlsMode), StoreError> {
    let bad = |reason: &str| StoreError::Io(format!("store url: {reason}"));
    let mut mode: Option<String> = None;
    let mut root_cert: Option<PathBuf> = None;
    let mut take = |key: &str, value: String| -> Result<bool, StoreError> {
        match key {
            "sslmode" => {
                if mode.replace(value).is_some() {
                    return Err(bad("sslmode is given twice"));
                }
            }
            "sslrootcert" => {
                if value.is_empty() {
                    return Err(bad("sslrootcert is empty"));
                }
                if root_cert.replace(PathBuf::from(value)).is_some() {
                    return Err(bad("sslrootcert is given twice"));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if let Some(host_start) = host_start(url) {
        // The query starts at the first `?` after the user info, so a `?` in a password is
        // not a query.
        match url[host_start..].find('?').map(|at| host_start + at) {
            Some(q) => {
                let (base, query) = (&url[..q], &url[q + 1..]);
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let decode = |text: &str| {
                        percent_decode(text)
                            .ok_or_else(|| bad("a query parameter has a bad %-escape"))
                    };
                    if !take(&decode(key)?, decode(value)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        // key=value form: values with quotes or escapes are libpq's grammar, not split here.
        if url.contains(['\'', '\\']) {
            if url.contains("ssl") {
                return Err(bad(
                    "TLS settings with quoted key=value pairs are not supported: use a postgres:// URL",
                ));
            }
            return Ok((url.to_owned(), TlsMode::Plain));
        }
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((key, value)) if take(key, value.to_owned())? => {}
                _ => kept.push(word),
            }
        }
        kept.join(" ")
    };
    let tls = match mode.as_deref() {
        None | Some("disable" | "prefer") => {
            if root_cert.is_some() {
                return Err(bad("sslrootcert needs sslmode=verify-full (or require)"));
            }
            TlsMode::Plain
        }
        Some("require" | "verify-full") => TlsMode::Verified { root_cert },
        Some("verify-ca") => {
            return Err(bad(
                "sslmode=verify-ca is not supported: Stint always checks the host name; use sslmode=verify-full",
            ));
        }
        Some(_) => {
            return Err(bad(
                "sslmode is not one of disable, prefer, require, verify-full",
            ));
        }
    };
    // tokio-postgres then only needs to know that TLS is required.
    let rest = match tls {
        TlsMode::Plain => match mode.as_deref() {
            Some(m) => append_param(&rest, "sslmode", m),
            None => rest,
        },
        TlsMode::Verified { .. } => append_param(&rest, "sslmode", "require"),
    };
    Ok((rest, tls))
}

/// Where the host of a `postgres://` URL starts: after the user info, which ends at the
/// first `@` after the scheme, as tokio-postgres reads it (a password may hold `/`, `?`
/// or `:`). `None` for a key=value string.
pub(crate) fn host_start(url: &str) -> Option<usize> {
    let scheme_end = url.find("://")? + 3;
    Some(
        url[scheme_end..]
            .find('@')
            .map_or(scheme_end, |at| scheme_end + at + 1),
    )
}

fn append_param(url: &str, key: &str, value: &str) -> String {
    match host_start(url) {
        Some(host_start) => {
            let sep = if url[host_start..].contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{url}{sep}{key}={value}")
        }
        None => format!("{url} {key}={value}"),
    }
}

pub(crate) fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The rustls client config for `Verified`: `root_cert`'s certificates, or the host's.
pub fn client_config(root_cert: Option<&PathBuf>) -> Result<Arc<rustls::ClientConfig>, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let bad = |reason: String| {
                StoreError::Io(format!(
                    "store url sslrootcert {}: {reason}",
                    path.display()
                ))
            };
            let size = std::fs::metadata(path)
                .map_err(|e| bad(e.to_string()))?
                .len();
            if size > MAX_ROOT_PEM_BYTES {
                return Err(bad(format!("{size} bytes is over the 1 MiB limit")));
            }
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|_| bad("not PEM certificates".into()))?;
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE block".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(StoreError::Io(
                    "store url asks for TLS, but this host has no trusted root certificates: give sslrootcert".into(),
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Io(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) requires it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// tokio-postgres's TLS hook, over tokio-rustls.
#[derive(Clone)]
pub struct MakeRustls(pub Arc<rustls::ClientConfig>);

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a host name TLS can check: {e}"),
            )
        })?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            // tokio-postgres's connect_timeout covers only the TCP connect: a server that
            // accepts TLS and then stalls must not hold a pool thread for good.
            let handshake = TlsConnector::from(self.config).connect(self.name, socket);
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

/// SCRAM channel binding (`tls-server-end-point`, RFC 5929): the server's certificate,
/// hashed with its signature's hash. With it, a database that runs SCRAM-SHA-256-PLUS
/// proves the password exchange ran inside this very TLS session (libpq's
/// `channel_binding=prefer`, the default, uses it when offered; `require` insists).
impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|certificate| server_end_point(certificate.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// The `tls-server-end-point` binding of a DER certificate: the certificate hashed with
/// the hash of its signature algorithm, SHA-256 for MD5 and SHA-1 (RFC 5929 §4.1), as
/// PostgreSQL computes it. `None` where the binding is undefined (Ed25519) or not
/// implemented here (RSASSA-PSS, whose hash is in its parameters; SHA-224): then none is
/// offered and SCRAM runs without it, rather than with a value the server would compute
/// differently.
pub fn server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let oid = signature_algorithm(certificate)?;
    let hash = if oid == ECDSA_SHA1 {
        &ring::digest::SHA256
    } else if let Some(&[last]) = oid.strip_prefix(RSA) {
        match last {
            0x04 | 0x05 | 0x0b => &ring::digest::SHA256, // md5, sha1, sha256 WithRSAEncryption
            0x0c => &ring::digest::SHA384,
            0x0d => &ring::digest::SHA512,
            _ => return None,
        }
    } else if let Some(&[last]) = oid.strip_prefix(ECDSA_SHA2) {
        match last {
            0x02 => &ring::digest::SHA256,
            0x03 => &ring::digest::SHA384,
            0x04 => &ring::digest::SHA512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(ring::digest::digest(hash, certificate).as_ref().to_vec())
}

/// The OID (content bytes) of a certificate's outer `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, … }, … }`.
fn signature_algorithm(certificate: &[u8]) -> Option<&[u8]> {
    use crate::core::der::element as der;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, body, _) = der(certificate)? else {
        return None;
    };
    let (_tbs, _, rest) = der(body)?;
    let (SEQUENCE, algorithm, _) = der(rest)? else {
        return None;
    };
    match der(algorithm)? {
        (OID, oid, _) => Some(oid),
        _ => None,
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// How a store connects: plain or verified TLS.
#[derive(Clone)]
pub enum Connector {
    Plain,
    Tls(MakeRustls),
}

impl Connector {
    pub fn for_mode(mode: &TlsMode) -> Result<Self, StoreError> {
        match mode {
            TlsMode::Plain => Ok(Self::Plain),
            TlsMode::Verified { root_cert } => {
                Ok(Self::Tls(MakeRustls(client_config(root_cert.as_ref())?)))
            }
        }
    }

    pub fn connect(&self, config: &postgres::Config) -> Result<postgres::Client, postgres::Error> {
        match self {
            Self::Plain => config.connect(postgres::NoTls),
            Self::Tls(tls) => config.connect(tls.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_come_off_the_url() {
        let verified = |root: Option<&str>| TlsMode::Verified {
            root_cert: root.map(PathBuf::from),
        };
        let cases: &[(&str, &str, TlsMode)] = &[
            ("postgres://u@db/x", "postgres://u@db/x", TlsMode::Plain),
            (
                "postgres://u@db/x?sslmode=disable",
                "postgres://u@db/x?sslmode=disable",
                TlsMode::Plain,
            ),
            (
                "postgres://u@db/x?sslmode=require&application_name=a",
                "postgres://u@db/x?application_name=a&sslmode=require",
                verified(None),
            ),
            (
                "postgres://u@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
                "postgres://u@db:5432/x?sslmode=require",
                verified(Some("/etc/ca.pem")),
            ),
            (
                "host=db user=u sslmode=verify-full sslrootcert=/etc/ca.pem dbname=x",
                "host=db user=u dbname=x sslmode=require",
                verified(Some("/etc/ca.pem")),
            ),
            ("host=db user=u", "host=db user=u", TlsMode::Plain),
            (
                "postgres://u:p?w@db/x?ssl%6Dode=require",
                "postgres://u:p?w@db/x?sslmode=require",
                verified(None),
            ),
            (
                "host=db password='a b' dbname=x",
                "host=db password='a b' dbname=x",
                TlsMode::Plain,
            ),
        ];
        for (url, rest, mode) in cases {
            let (got_rest, got_mode) = split_url(url).unwrap();
            assert_eq!((got_rest.as_str(), &got_mode), (*rest, mode), "{url}");
        }
    }

    #[test]
    fn tls_settings_that_cannot_be_honoured_are_refused_by_name() {
        let cases = [
            (
                "postgres://u@db/x?sslmode=verify-ca",
                "verify-ca is not supported",
            ),
            ("postgres://u@db/x?sslmode=allow", "sslmode is not one of"),
            (
                "postgres://u@db/x?sslmode=verify-full&sslmode=disable",
                "sslmode is given twice",
            ),
            (
                "host=db password='x9 z7' sslmode=require",
                "use a postgres:// URL",
            ),
            (
                "postgres://u@db/x?sslrootcert=/ca.pem",
                "needs sslmode=verify-full",
            ),
            (
                "postgres://u@db/x?sslmode=require&sslrootcert=",
                "sslrootcert is empty",
            ),
            (
                "postgres://u@db/x?sslrootcert=%zz&sslmode=require",
                "bad %-escape",
            ),
        ];
        for (url, want) in cases {
            let err = split_url(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
            for secret in ["kL9", "Ab3", "nope", "x9 z7"] {
                assert!(!err.contains(secret), "{url}: {err}");
            }
        }
    }

    #[test]
    fn a_root_bundle_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }

    #[test]
    fn the_channel_binding_hashes_the_certificate_with_its_signature_hash() {
        let signed = |algorithm: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            let params = rcgen::CertificateParams::new(vec!["db.internal".to_string()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p256 = signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let p384 = signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        let digest = |hash, der: &[u8]| Some(ring::digest::digest(hash, der).as_ref().to_vec());
        assert_eq!(
            server_end_point(&p256),
            digest(&ring::digest::SHA256, &p256)
        );
        assert_eq!(
            server_end_point(&p384),
            digest(&ring::digest::SHA384, &p384)
        );
        // No binding is defined for Ed25519: none is offered.
        assert_eq!(server_end_point(&signed(&rcgen::PKCS_ED25519)), None);

        // Certificate { tbs (empty here), AlgorithmIdentifier { OID } }, by hand, for the
        // RSA family rcgen cannot sign with.
        let with_oid = |oid: &[u8]| {
            let algorithm = [&[0x06, oid.len() as u8], oid].concat();
            let body = [&[0x30, 0x00, 0x30, algorithm.len() as u8][..], &algorithm].concat();
            [&[0x30, body.len() as u8][..], &body].concat()
        };
        let rsa = |last: u8| with_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last]);
        for (certificate, hash) in [
            (rsa(0x05), Some(&ring::digest::SHA256)), // sha1: SHA-256 (RFC 5929)
            (rsa(0x04), Some(&ring::digest::SHA256)), // md5: SHA-256
            (rsa(0x0b), Some(&ring::digest::SHA256)),
            (rsa(0x0c), Some(&ring::digest::SHA384)),
            (rsa(0x0d), Some(&ring::digest::SHA512)),
            (rsa(0x0a), None), // RSASSA-PSS: its hash is in parameters
            (rsa(0x0e), None), // SHA-224: not offered
        ] {
            let want = hash.and_then(|hash| digest(hash, &certificate));
            assert_eq!(server_end_point(&certificate), want, "{certificate:02x?}");
        }
    }

    #[test]
    fn malformed_certificates_offer_no_binding() {
        let good = {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["db".to_string()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        for cut in 0..good.len() {
            assert_eq!(server_end_point(&good[..cut]), None, "cut at {cut}");
        }
        for garbage in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0x00, 0x00],             // indefinite length
            &[0x30, 0x85, 1, 0, 0, 0, 0],          // 5 length bytes
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], // longer than the input
            &[0x31, 0x02, 0x30, 0x00],             // a SET, not a SEQUENCE
        ] {
            assert_eq!(server_end_point(garbage), None, "{garbage:02x?}");
        }
    }
}
