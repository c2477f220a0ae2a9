//! `--dev-tls`: a local CA and a server certificate signed by it, in `<data_dir>/tls`.
//!
//! rustls (like browsers) refuses a CA certificate presented as a server's own, so one
//! self-signed certificate will not do: clients trust `ca.pem`; the server presents
//! `server.pem` (not a CA; SANs localhost, 127.0.0.1, ::1 and any extra names). The files
//! are reused while they still verify, for every requested name, 30 days from now;
//! otherwise the server certificate is re-issued by the same CA (its key is kept in
//! `ca.key`), and a new CA is made only when the old one cannot be used. Keys are 0600 in
//! a 0700 directory.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use time::OffsetDateTime;

use super::{TlsError, certificates, read_pem, root_store, server_config};

/// Names every dev server certificate covers.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Files still valid this much later are reused.
pub const REUSE_MARGIN: Duration = Duration::from_secs(30 * 86_400);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
const SERVER_LIFETIME: Duration = Duration::from_secs(397 * 86_400);
const BACKDATE: Duration = Duration::from_secs(3600);

/// What [`ensure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The files on disk were still good.
    Reused,
    /// The CA was kept; the server certificate was issued anew (expiring, new names).
    ServerReissued,
    /// A new CA (clients must trust it again) and server certificate.
    NewCa,
}

/// The dev certificates in `<data_dir>/tls`.
#[derive(Clone, Debug)]
pub struct DevTls {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The server certificate's names.
    pub names: Vec<String>,
    pub outcome: Outcome,
}

impl DevTls {
    fn paths(data_dir: &Path) -> Self {
        // Absolute, so the printed paths work from any directory.
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let dir = data_dir.join("tls");
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            dir,
            names: Vec::new(),
            outcome: Outcome::Reused,
        }
    }

    /// How clients trust this CA, for a server at `endpoint` (`https://localhost:7420`).
    pub fn trust_instructions(&self, endpoint: &str) -> String {
        let ca = self.ca_cert.display();
        let state = match self.outcome {
            Outcome::Reused => "reused",
            Outcome::ServerReissued => "reused; server certificate renewed",
            Outcome::NewCa => "new",
        };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "Development TLS: serving a certificate for {} signed by a local CA ({state}).",
            self.names.join(", ")
        );
        let _ = writeln!(text, "Clients trust it with the CA certificate {ca}:");
        let _ = writeln!(
            text,
            "  stint login --endpoint {endpoint} --ca-cert {ca} --user admin"
        );
        let _ = writeln!(text, "or, for every command of this shell:");
        let _ = writeln!(
            text,
            "  export STINT_ENDPOINT={endpoint} STINT_CA_CERT={ca}"
        );
        let _ = writeln!(
            text,
            "  curl --cacert {ca} {endpoint}/.well-known/jwks.json"
        );
        text
    }
}

/// Makes sure `<data_dir>/tls` holds a CA and a server certificate for the default names
/// plus `extra_names`, valid at `now` and for at least [`REUSE_MARGIN`] more.
pub fn ensure(
    data_dir: &Path,
    extra_names: &[String],
    now: SystemTime,
) -> Result<DevTls, TlsError> {
    let mut dev = DevTls::paths(data_dir);
    dev.names = names(extra_names)?;
    create_private_dir(&dev.dir)?;
    let check_at = now + REUSE_MARGIN;

    let existing = (
        read_pem(&dev.ca_cert),
        read_pem(&dev.server_cert),
        read_pem(&dev.server_key),
    );
    if let (Ok(ca), Ok(cert), Ok(key)) = existing
        && still_good(&ca, &cert, &key, &dev.names, check_at).is_ok()
    {
        restrict(&dev.server_key)?;
        restrict(&dev.ca_key)?;
        dev.outcome = Outcome::Reused;
        return Ok(dev);
    }

    // Same CA if its key is there and it still verifies what it issues.
    if let (Ok(ca_pem), Ok(ca_key_pem)) = (read_pem(&dev.ca_cert), read_pem(&dev.ca_key))
        && let Ok(ca_key_text) = String::from_utf8(ca_key_pem)
        && let Ok(ca_key) = KeyPair::from_pem(&ca_key_text)
    {
        let issuer = Issuer::new(ca_params(&ca_key, now)?, ca_key);
        let (cert, key) = issue_server(&issuer, &dev.names, now)?;
        if still_good(
            &ca_pem,
            cert.as_bytes(),
            key.as_bytes(),
            &dev.names,
            check_at,
        )
        .is_ok()
        {
            write_file(&dev.server_key, key.as_bytes(), true)?;
            write_file(&dev.server_cert, cert.as_bytes(), false)?;
            dev.outcome = Outcome::ServerReissued;
            return Ok(dev);
        }
    }

    let ca_key = KeyPair::generate().map_err(gen_error)?;
    let ca_cert = ca_params(&ca_key, now)?
        .self_signed(&ca_key)
        .map_err(gen_error)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params(&ca_key, now)?, ca_key);
    let (cert, key) = issue_server(&issuer, &dev.names, now)?;
    write_file(&dev.ca_key, ca_key_pem.as_bytes(), true)?;
    write_file(&dev.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_file(&dev.server_key, key.as_bytes(), true)?;
    write_file(&dev.server_cert, cert.as_bytes(), false)?;
    dev.outcome = Outcome::NewCa;
    Ok(dev)
}

/// The default names, then each extra one (a DNS name or an IP address) once.
fn names(extra: &[String]) -> Result<Vec<String>, TlsError> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|n| n.to_string()).collect();
    for name in extra {
        let name = name.trim();
        if name.len() > 253 || ServerName::try_from(name).is_err() {
            return Err(TlsError::new(format!(
                "--tls-san {:?} is not a DNS name or an IP address",
                name.chars().take(64).collect::<String>()
            )));
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
    }
    if names.len() > 64 {
        return Err(TlsError::new("--tls-san: at most 61 extra names"));
    }
    Ok(names)
}

/// Whether `cert` (with `key`) verifies under `ca` for every name at `at`, and `ca` itself
/// is still valid then (webpki does not check a trust anchor's dates; other TLS stacks do).
fn still_good(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    names: &[String],
    at: SystemTime,
) -> Result<(), TlsError> {
    server_config(cert, key, None)?;
    for anchor in certificates(ca)? {
        let not_after = not_after(&anchor)
            .ok_or_else(|| TlsError::new("cannot read the CA certificate's validity"))?;
        if offset(at)? > not_after {
            return Err(TlsError::new(format!("the CA expires at {not_after}")));
        }
    }
    let chain = certificates(cert)?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| TlsError::new("empty certificate chain"))?;
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(ca)?), super::provider())
            .build()
            .map_err(|e| TlsError::new(e.to_string()))?;
    let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    for name in names {
        let server_name = ServerName::try_from(name.as_str())
            .map_err(|e| TlsError::new(format!("{name}: {e}")))?;
        verifier
            .verify_server_cert(leaf, intermediates, &server_name, &[], at)
            .map_err(|e| TlsError::new(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// The `notAfter` of a DER X.509 certificate: Certificate → tbsCertificate → (optional
/// version, serial, signature algorithm, issuer) → validity → second time.
fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    use crate::core::der::element;
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        (_, _, rest) = element(rest)?; // the explicit version was first: skip the serial
    }
    let (_, _, rest) = element(rest)?; // signature algorithm
    let (_, _, rest) = element(rest)?; // issuer
    let (_, validity, _) = element(rest)?;
    let (_, _, validity) = element(validity)?; // notBefore
    let (tag, time, _) = element(validity)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime YYMMDDHHMMSSZ: 50..99 are 19xx (RFC 5280 §4.1.2.5.1).
        0x17 if text.len() == 13 => {
            let century = if text.get(..2)?.parse::<u8>().ok()? >= 50 {
                "19"
            } else {
                "20"
            };
            format!("{century}{text}")
        }
        0x18 if text.len() == 15 => text.to_string(),
        _ => return None,
    };
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]Z");
    time::PrimitiveDateTime::parse(&full, &format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

fn gen_error(err: rcgen::Error) -> TlsError {
    TlsError::new(format!("cannot generate the dev certificate: {err}"))
}

fn offset(t: SystemTime) -> Result<OffsetDateTime, TlsError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TlsError::new("the clock is before 1970"))?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map_err(|e| TlsError::new(format!("the clock is out of range: {e}")))
}

/// The CA's parameters. Its name is derived from its key, so the issuer can be rebuilt
/// from `ca.key` alone to re-issue the server certificate.
fn ca_params(key: &KeyPair, now: SystemTime) -> Result<CertificateParams, TlsError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    let id = data_encoding::HEXLOWER.encode(&digest.as_ref()[..8]);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stint development");
    dn.push(DnType::CommonName, format!("Stint development CA {id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(now - BACKDATE)?;
    params.not_after = offset(now + CA_LIFETIME)?;
    Ok(params)
}

/// A server certificate (not a CA) for `names`, signed by `issuer`: (cert PEM, key PEM).
fn issue_server(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    now: SystemTime,
) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(gen_error)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Stint development");
    dn.push(DnType::CommonName, "Stint development server");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now - BACKDATE)?;
    params.not_after = offset(now + SERVER_LIFETIME)?;
    let cert = params.signed_by(&key, issuer).map_err(gen_error)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| TlsError::new(format!("cannot create {}: {e}", dir.display())))
}

/// Makes an existing key file 0600 (a missing one is left alone).
fn restrict(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    if path.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| TlsError::new(format!("cannot chmod {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename (0600 when `private`).
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| TlsError::new(format!("cannot write {}: {e}", path.display()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generates_then_reuses_then_renews() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = ensure(dir.path(), &["stint.test".into()], now).unwrap();
        assert_eq!(first.outcome, Outcome::NewCa);
        assert_eq!(first.names, ["localhost", "127.0.0.1", "::1", "stint.test"]);
        assert_eq!(mode(&first.server_key), 0o600);
        assert_eq!(mode(&first.ca_key), 0o600);
        assert_eq!(mode(&first.dir), 0o700);
        let ca = std::fs::read(&first.ca_cert).unwrap();

        // The server certificate is not a CA, and it chains to ca.pem.
        let cert = std::fs::read(&first.server_cert).unwrap();
        let key = std::fs::read(&first.server_key).unwrap();
        still_good(&ca, &cert, &key, &first.names, now).unwrap();
        assert!(still_good(&cert, &cert, &key, &first.names, now).is_err());

        let table: &[(&str, Vec<String>, SystemTime, Outcome)] = &[
            (
                "restart",
                vec!["stint.test".into()],
                now + Duration::from_secs(86_400),
                Outcome::Reused,
            ),
            (
                "new name",
                vec!["other.test".into()],
                now,
                Outcome::ServerReissued,
            ),
            // The server certificate lives 397 days: within 30 days of its end it is renewed.
            (
                "expiring",
                vec!["other.test".into()],
                now + Duration::from_secs(370 * 86_400),
                Outcome::ServerReissued,
            ),
            // The CA lives 10 years.
            (
                "CA expiring",
                vec![],
                now + Duration::from_secs(3640 * 86_400),
                Outcome::NewCa,
            ),
        ];
        for (what, extra, at, want) in table {
            let got = ensure(dir.path(), extra, *at).unwrap();
            assert_eq!(got.outcome, *want, "{what}");
        }
        assert_ne!(
            std::fs::read(&first.ca_cert).unwrap(),
            ca,
            "a new CA was written"
        );
    }

    #[test]
    fn a_broken_server_key_is_replaced_and_a_lost_ca_key_means_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = ensure(dir.path(), &[], now).unwrap();
        std::fs::write(&first.server_key, "garbage").unwrap();
        assert_eq!(
            ensure(dir.path(), &[], now).unwrap().outcome,
            Outcome::ServerReissued
        );
        std::fs::remove_file(&first.ca_key).unwrap();
        std::fs::write(&first.server_key, "garbage").unwrap();
        assert_eq!(
            ensure(dir.path(), &[], now).unwrap().outcome,
            Outcome::NewCa
        );
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        let key = KeyPair::generate().unwrap();
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280).
        for secs in [1_800_000_000, 4_102_444_800] {
            let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
            params.not_after = OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(not_after(cert.der()).unwrap().unix_timestamp(), secs);
        }
        assert_eq!(not_after(b"\x30\x82\xff"), None);
        assert_eq!(not_after(b""), None);
    }

    #[test]
    fn extra_names_are_checked() {
        for bad in ["", "bad name", "a..b", "-"] {
            let err = names(&[bad.to_string()]);
            assert!(err.is_err(), "{bad:?} should be refused");
        }
        let ok = names(&["10.0.0.5".into(), "LOCALHOST".into(), "fe80::1".into()]).unwrap();
        assert_eq!(ok, ["localhost", "127.0.0.1", "::1", "10.0.0.5", "fe80::1"]);
    }

    #[test]
    fn instructions_name_the_ca_and_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let dev = ensure(
            dir.path(),
            &[],
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        let text = dev.trust_instructions("https://localhost:7420");
        let ca = dev.ca_cert.display().to_string();
        assert!(text.contains(&format!("--ca-cert {ca}")), "{text}");
        assert!(text.contains(&format!("STINT_CA_CERT={ca}")), "{text}");
        assert!(text.contains("https://localhost:7420"), "{text}");
    }
}
