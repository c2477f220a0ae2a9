//! TLS terminated by Stint itself, so the certificate can be replaced while serving.
//!
//! tonic's `ServerTlsConfig` is fixed at startup. Here a tokio-rustls acceptor sits over
//! the TCP listener and takes the *current* rustls `ServerConfig` for each new handshake.
//! [`ServerTls::reload`] (run on SIGHUP) builds a complete new config from the files —
//! certificate chain, key and client CA — and swaps it in only if all of it is valid; a bad
//! new pair keeps the old config and says why. Swapping the whole config (rather than only
//! the certificate behind a `ResolvesServerCert`) lets the mTLS client CA rotate the same
//! way. Established connections keep the config they were made with, so nothing is dropped.
//!
//! Accepted streams are tokio-rustls `TlsStream`s, for which tonic provides
//! `TlsConnectInfo<TcpConnectInfo>`: `RequestMeta.secure_transport` and the peer address
//! read it exactly as with tonic's own TLS.

pub mod dev;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;

use super::proxy::{AbortOnDrop, Proxied, ProxyTrust};

/// PEM files larger than this are refused before they are parsed.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why TLS material could not be used: names the file or part at fault, never key bytes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl TlsError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The files a [`ServerTls`] is (re)loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSource {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by a CA in this file.
    pub client_ca_file: Option<PathBuf>,
}

/// The listener's TLS: the current rustls config, replaceable while serving. Cheap to
/// clone; clones share the config.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Arc<ServerConfig>>,
    source: Option<TlsSource>,
}

impl ServerTls {
    /// From PEM bytes; [`reload`](Self::reload) then has nothing to re-read.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Self, TlsError> {
        Ok(Self::with(
            server_config(cert_pem, key_pem, client_ca_pem)?,
            None,
        ))
    }

    /// From files, re-read by [`reload`](Self::reload).
    pub fn from_files(source: TlsSource) -> Result<Self, TlsError> {
        let config = load(&source)?;
        Ok(Self::with(config, Some(source)))
    }

    fn with(config: ServerConfig, source: Option<TlsSource>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(config)),
                source,
            }),
        }
    }

    /// The files this TLS is reloaded from, if any.
    pub fn source(&self) -> Option<&TlsSource> {
        self.inner.source.as_ref()
    }

    /// Re-reads the files and switches new handshakes to them. On error the current
    /// config stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let source = self
            .inner
            .source
            .as_ref()
            .ok_or_else(|| TlsError::new("this TLS config was not loaded from files"))?;
        self.install(load(source)?);
        Ok(())
    }

    /// Switches new handshakes to these PEM bytes (checked first; on error nothing
    /// changes).
    pub fn replace_pem(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<(), TlsError> {
        self.install(server_config(cert_pem, key_pem, client_ca_pem)?);
        Ok(())
    }

    fn install(&self, config: ServerConfig) {
        let config = Arc::new(config);
        match self.inner.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = match self.inner.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }
}

/// The TLS the config asks for: none, the configured files, or (`tls.dev`) generated dev
/// certificates in `<data_dir>/tls` with `extra_names` as additional SANs. `now` dates and
/// checks the dev certificates.
pub fn from_config(
    config: &Config,
    extra_names: &[String],
    now: SystemTime,
) -> Result<Option<(ServerTls, Option<dev::DevTls>)>, TlsError> {
    if !extra_names.is_empty() && !config.tls.dev {
        return Err(TlsError::new(
            "--tls-san names the generated dev certificate: use it with --dev-tls",
        ));
    }
    if config.tls.dev {
        let dev = dev::ensure(&config.data_dir, extra_names, now)?;
        let tls = ServerTls::from_files(TlsSource {
            cert_file: dev.server_cert.clone(),
            key_file: dev.server_key.clone(),
            client_ca_file: config.tls.client_ca_file.clone(),
        })?;
        return Ok(Some((tls, Some(dev))));
    }
    match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls::from_files(TlsSource {
                cert_file: cert.clone(),
                key_file: key.clone(),
                client_ca_file: config.tls.client_ca_file.clone(),
            })?;
            Ok(Some((tls, None)))
        }
        _ => Ok(None),
    }
}

/// Reads a PEM file, refusing one larger than [`MAX_PEM_BYTES`].
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| TlsError::new(format!("cannot read {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TlsError::new(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::new(format!(
            "{} is larger than {MAX_PEM_BYTES} bytes: not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

fn load(source: &TlsSource) -> Result<ServerConfig, TlsError> {
    let in_file = |path: &Path| {
        let path = path.display().to_string();
        move |e: TlsError| TlsError::new(format!("{path}: {e}"))
    };
    let cert = read_pem(&source.cert_file)?;
    let key = read_pem(&source.key_file)?;
    let client_ca = match &source.client_ca_file {
        Some(path) => Some(read_pem(path)?),
        None => None,
    };
    // Each part is checked on its own first so the error names the file at fault.
    certificates(&cert).map_err(in_file(&source.cert_file))?;
    private_key(&key).map_err(in_file(&source.key_file))?;
    if let (Some(pem), Some(path)) = (&client_ca, &source.client_ca_file) {
        client_verifier(pem).map_err(in_file(path))?;
    }
    server_config(&cert, &key, client_ca.as_deref()).map_err(|e| {
        TlsError::new(format!(
            "{} with {}: {e}",
            source.cert_file.display(),
            source.key_file.display()
        ))
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every `CERTIFICATE` block of `pem`, in order.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(format!("not a PEM certificate list: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new("no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The first private key of `pem` (PKCS#8, PKCS#1 or SEC1). The parser's own error is not
/// repeated: it could quote part of the key file.
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| TlsError::new("no PEM private key found (PKCS#8, PKCS#1 or SEC1 expected)"))
}

/// The certificates of `pem` as a root store (for mTLS clients, or a client's extra CA).
pub fn root_store(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::new(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn client_verifier(
    pem: &[u8],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(pem)?), provider())
        .build()
        .map_err(|e| TlsError::new(format!("client CA: {e}")))
}

/// A rustls server config: this chain and key (which must match), client certificates
/// required and checked against `client_ca_pem` when given, ALPN h2 and http/1.1 (gRPC
/// and the `.well-known` routes share the port).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<ServerConfig, TlsError> {
    let certs = certificates(cert_pem)?;
    let key = private_key(key_pem)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(format!("TLS versions: {e}")))?;
    let builder = match client_ca_pem {
        Some(pem) => builder.with_client_cert_verifier(client_verifier(pem)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepted, PROXY-header-read (for trusted proxies) and handshaken TLS connections, for
/// tonic's `serve_with_incoming_shutdown`.
pub type Incoming = ReceiverStream<io::Result<TlsStream<Proxied>>>;

/// Accepts TCP connections on `listener`, reads a PROXY header from trusted proxies and
/// completes the TLS handshakes concurrently (bounded in number and time, see
/// [`super::proxy::incoming`]) with the config current at accept time.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    proxies: ProxyTrust,
) -> (Incoming, AbortOnDrop) {
    super::proxy::incoming(listener, move |tcp, peer| {
        let acceptor = tls.acceptor();
        let proxies = proxies.clone();
        async move {
            let proxied = proxies.accept(tcp, peer).await?;
            acceptor.accept(proxied).await
        }
    })
}

/// Reloads `tls` from its files on every SIGHUP, until dropped. Nothing for TLS that was
/// not loaded from files.
pub fn reload_on_sighup(tls: &ServerTls) -> Option<AbortOnDrop> {
    #[cfg(unix)]
    {
        tls.source()?;
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGHUP: TLS reload disabled");
                return None;
            }
        };
        let tls = tls.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(err) => tracing::warn!(
                        error = %err,
                        "SIGHUP: TLS reload refused; still serving the previous certificate"
                    ),
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = tls;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn server_config_checks_each_part() {
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("localhost");
        let config = server_config(cert.as_bytes(), key.as_bytes(), None).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>, &'a str);
        let cases: &[Case] = &[
            (b"", key.as_bytes(), None, "no CERTIFICATE block"),
            (key.as_bytes(), key.as_bytes(), None, "no CERTIFICATE block"),
            (cert.as_bytes(), b"", None, "no PEM private key"),
            (cert.as_bytes(), cert.as_bytes(), None, "no PEM private key"),
            (cert.as_bytes(), other_key.as_bytes(), None, "do not fit"),
            (
                cert.as_bytes(),
                key.as_bytes(),
                Some(b"junk"),
                "no CERTIFICATE block",
            ),
        ];
        for (cert, key, ca, want) in cases {
            let err = server_config(cert, key, *ca).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn a_bad_reload_keeps_the_current_config() {
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource {
            cert_file: dir.path().join("c.pem"),
            key_file: dir.path().join("k.pem"),
            client_ca_file: None,
        };
        let (cert, key) = pair("localhost");
        std::fs::write(&source.cert_file, &cert).unwrap();
        std::fs::write(&source.key_file, &key).unwrap();
        let tls = ServerTls::from_files(source.clone()).unwrap();
        let before = Arc::as_ptr(&tls.inner.current.read().unwrap().clone());

        let (_, other_key) = pair("localhost");
        std::fs::write(&source.key_file, &other_key).unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("k.pem") && err.contains("do not fit"), "{err}");
        assert_eq!(
            Arc::as_ptr(&tls.inner.current.read().unwrap().clone()),
            before
        );

        let (cert2, key2) = pair("localhost");
        std::fs::write(&source.cert_file, &cert2).unwrap();
        std::fs::write(&source.key_file, &key2).unwrap();
        tls.reload().unwrap();
        assert_ne!(
            Arc::as_ptr(&tls.inner.current.read().unwrap().clone()),
            before
        );

        let static_tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes(), None).unwrap();
        assert!(static_tls.reload().is_err());
    }

    #[test]
    fn from_config_picks_files_dev_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        assert!(from_config(&config, &[], now).unwrap().is_none());
        let err = from_config(&config, &["x.lan".into()], now).err().unwrap();
        assert!(err.to_string().contains("--dev-tls"), "{err}");

        config.tls.dev = true;
        let (tls, dev) = from_config(&config, &["x.lan".into()], now)
            .unwrap()
            .unwrap();
        let dev = dev.unwrap();
        assert!(dev.names.contains(&"x.lan".to_string()));
        assert_eq!(tls.source().unwrap().cert_file, dev.server_cert);

        config.tls.dev = false;
        config.tls.cert_file = Some(dev.server_cert.clone());
        config.tls.key_file = Some(dev.server_key.clone());
        config.tls.client_ca_file = Some(dir.path().join("missing-ca.pem"));
        let err = from_config(&config, &[], now).err().unwrap().to_string();
        assert!(err.contains("missing-ca.pem"), "{err}");
        config.tls.client_ca_file = Some(dev.ca_cert.clone());
        let (_, dev) = from_config(&config, &[], now).unwrap().unwrap();
        assert!(dev.is_none());
    }

    #[test]
    fn oversized_pem_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.pem");
        std::fs::write(&path, vec![b'A'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let err = read_pem(&path).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
