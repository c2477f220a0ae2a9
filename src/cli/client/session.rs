//! The credentials cache: `credentials.json` in `$STINT_HOME` (default `$HOME/.stint`), a
//! JSON map profile → cached session; and beside it `config.json`, profile → settings
//! (role ARN, source profile, MFA serial, endpoint, CA), what `aws configure` keeps in
//! `~/.aws/config`. Settings and secrets stay apart: `stint logout` never loses a profile's
//! settings, and the settings file holds nothing worth stealing.
//!
//! The file holds bearer tokens, so it is written whole to a temporary file created with
//! mode 0600 in a 0700 directory, synced, then renamed over the old one: a reader never
//! sees half a file, and the tokens are never world-readable, not even for a moment.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::CliError;
use crate::core::secret::SecretString;

/// File name inside the Stint home directory.
pub const FILE_NAME: &str = "credentials.json";

/// What a cached credential is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// From `GetSessionToken` (`stint login`).
    Session,
    /// From `AssumeRole` (`stint assume-role`).
    AssumedRole,
}

/// One cached credential.
#[derive(Clone, Debug)]
pub struct CachedSession {
    /// The server it came from (later commands default to it).
    pub endpoint: String,
    /// `ASIA…` id of the session (also its revocation handle).
    pub access_key_id: String,
    /// The bearer token (a JWT).
    pub session_token: SecretString,
    /// When the server stops accepting it.
    pub expiration: OffsetDateTime,
    /// Session or assumed role.
    pub kind: Kind,
}

impl CachedSession {
    /// The "session expired; run stint login" check, with `now` as a parameter.
    pub fn ensure_fresh(&self, profile: &str, now: OffsetDateTime) -> Result<(), CliError> {
        if self.expiration <= now {
            let what = match self.kind {
                Kind::Session => "session",
                Kind::AssumedRole => "role credentials",
            };
            let fix = match self.kind {
                Kind::Session => "run `stint login`".to_string(),
                Kind::AssumedRole => "run `stint assume-role` again".to_string(),
            };
            return Err(CliError::new(format!(
                "the {what} of profile '{profile}' expired at {}; {fix}",
                rfc3339(self.expiration)
            )));
        }
        Ok(())
    }
}

/// On-disk shape. Kept apart from [`CachedSession`] so the token leaves its secret type at
/// exactly one place ([`Stored::from`]).
#[derive(Serialize, Deserialize)]
struct Stored {
    endpoint: String,
    access_key_id: String,
    session_token: String,
    expiration: String,
    kind: Kind,
}

impl From<&CachedSession> for Stored {
    fn from(s: &CachedSession) -> Self {
        Stored {
            endpoint: s.endpoint.clone(),
            access_key_id: s.access_key_id.clone(),
            session_token: s.session_token.expose().to_string(),
            expiration: rfc3339(s.expiration),
            kind: s.kind,
        }
    }
}

/// RFC 3339 rendering (UTC as given).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Where the credentials file lives: `$STINT_HOME/credentials.json`, else
/// `$HOME/.stint/credentials.json`. The environment is read by the caller, not here.
pub fn credentials_path(
    stint_home: Option<&Path>,
    home: Option<&Path>,
) -> Result<PathBuf, CliError> {
    match (stint_home, home) {
        (Some(dir), _) if !dir.as_os_str().is_empty() => Ok(dir.join(FILE_NAME)),
        (_, Some(home)) if !home.as_os_str().is_empty() => Ok(home.join(".stint").join(FILE_NAME)),
        _ => Err(CliError::new(
            "cannot find the credentials file: set STINT_HOME or HOME",
        )),
    }
}

/// The credentials file, loaded; change it with [`put`](Self::put) /
/// [`remove`](Self::remove), then [`save`](Self::save).
pub struct CredentialsFile {
    path: PathBuf,
    profiles: BTreeMap<String, Stored>,
}

impl CredentialsFile {
    /// Reads `path`; a missing file is an empty cache.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let profiles = match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => BTreeMap::new(),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::new(format!(
                    "{} is not a valid credentials file: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(CliError::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(CredentialsFile {
            path: path.to_path_buf(),
            profiles,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached credential of `profile`, if any.
    pub fn get(&self, profile: &str) -> Result<Option<CachedSession>, CliError> {
        let Some(s) = self.profiles.get(profile) else {
            return Ok(None);
        };
        let expiration = OffsetDateTime::parse(&s.expiration, &Rfc3339).map_err(|_| {
            CliError::new(format!(
                "profile '{profile}' in {} has a bad expiration '{}'",
                self.path.display(),
                s.expiration
            ))
        })?;
        Ok(Some(CachedSession {
            endpoint: s.endpoint.clone(),
            access_key_id: s.access_key_id.clone(),
            session_token: SecretString::new(s.session_token.clone()),
            expiration,
            kind: s.kind,
        }))
    }

    /// Profile names, sorted.
    pub fn profiles(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// Replaces `profile`.
    pub fn put(&mut self, profile: &str, session: &CachedSession) {
        self.profiles
            .insert(profile.to_string(), Stored::from(session));
    }

    /// Deletes `profile`; whether it was there.
    pub fn remove(&mut self, profile: &str) -> bool {
        self.profiles.remove(profile).is_some()
    }

    /// Writes the file atomically with mode 0600 (directory 0700).
    pub fn save(&self) -> Result<(), CliError> {
        let json = serde_json::to_vec_pretty(&self.profiles)
            .map_err(|e| CliError::new(format!("cannot encode credentials: {e}")))?;
        write_private(&self.path, &json)
    }
}

/// Writes `bytes` (and a newline) to `path` atomically: a 0600 temporary beside it,
/// synced, renamed over it; the directory is created 0700 when missing.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let io = |what: &str, e: std::io::Error| CliError::new(format!("cannot {what}: {e}"));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(&format!("create {}", dir.display()), e))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // `mode` only applies to a new file; a stale temporary keeps its own.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(&format!("write {}", path.display()), e)
    })
}

/// File name of the profile settings inside the Stint home directory.
pub const CONFIG_FILE_NAME: &str = "config.json";

/// A profile's settings (`stint configure`): how to get its credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The role `stint exec --profile P` assumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The profile whose cached `stint login` session assumes the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_profile: Option<String>,
    /// An OIDC token file that assumes the role instead (AssumeRoleWithWebIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity_token_file: Option<PathBuf>,
    /// MFA device whose code is asked for when the role is first assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_serial: Option<String>,
    /// Server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// PEM CA certificate of the server (a copy kept in the Stint home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// `config.json` beside the credentials file, loaded; [`save`](Self::save) writes it back.
pub struct ProfilesFile {
    path: PathBuf,
    profiles: BTreeMap<String, ProfileConfig>,
}

impl ProfilesFile {
    /// The settings file that sits beside `credentials` (the credentials file's path).
    pub fn beside(credentials: &Path) -> Result<Self, CliError> {
        Self::load(&credentials.with_file_name(CONFIG_FILE_NAME))
    }

    /// Reads `path`; a missing file has no profiles.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let profiles = match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => BTreeMap::new(),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::new(format!(
                    "{} is not a valid profile settings file: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(CliError::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        Ok(ProfilesFile {
            path: path.to_path_buf(),
            profiles,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings of `profile` (empty when it has none).
    pub fn get(&self, profile: &str) -> ProfileConfig {
        self.profiles.get(profile).cloned().unwrap_or_default()
    }

    /// Profile names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// Replaces the settings of `profile`.
    pub fn put(&mut self, profile: &str, config: ProfileConfig) {
        self.profiles.insert(profile.to_string(), config);
    }

    /// Where a profile's CA certificate copy lives: `<home>/ca/<profile>.pem`.
    pub fn ca_path(&self, profile: &str) -> PathBuf {
        let safe: String = profile
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.path.with_file_name("ca").join(format!("{safe}.pem"))
    }

    /// Writes the file atomically (0600 like the credentials: it names roles and devices).
    pub fn save(&self) -> Result<(), CliError> {
        let json = serde_json::to_vec_pretty(&self.profiles)
            .map_err(|e| CliError::new(format!("cannot encode profile settings: {e}")))?;
        write_private(&self.path, &json)
    }
}

/// What the CLI reads from a token without verifying it (for display and the revocation
/// handle only; the server verifies every use).
#[derive(Debug, Default, Deserialize)]
pub struct Peek {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub exp: i64,
    #[serde(default)]
    pub stint: PeekStint,
}

/// The part of the `stint` claim the CLI shows.
#[derive(Debug, Default, Deserialize)]
pub struct PeekStint {
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub mfa_present: bool,
}

/// The JWT's claims, unverified; `None` when `token` is not a JWT.
pub fn peek(token: &SecretString) -> Option<Peek> {
    let payload = token.expose().split('.').nth(1)?;
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(token: &str, exp: i64, kind: Kind) -> CachedSession {
        CachedSession {
            endpoint: "http://127.0.0.1:7420".into(),
            access_key_id: "ASIAEXAMPLE".into(),
            session_token: SecretString::new(token.into()),
            expiration: OffsetDateTime::from_unix_timestamp(exp).unwrap(),
            kind,
        }
    }

    #[test]
    fn path_rules() {
        let p = credentials_path(Some(Path::new("/s")), Some(Path::new("/h"))).unwrap();
        assert_eq!(p, Path::new("/s/credentials.json"));
        let p = credentials_path(None, Some(Path::new("/h"))).unwrap();
        assert_eq!(p, Path::new("/h/.stint/credentials.json"));
        let p = credentials_path(Some(Path::new("")), Some(Path::new("/h"))).unwrap();
        assert_eq!(p, Path::new("/h/.stint/credentials.json"));
        assert!(credentials_path(None, None).is_err());
    }

    #[test]
    fn round_trip_mode_and_profile_isolation() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("nested").join("home");
        let path = credentials_path(Some(&home), None).unwrap();

        let empty = CredentialsFile::load(&path).unwrap();
        assert_eq!(empty.profiles().count(), 0);

        let mut file = CredentialsFile::load(&path).unwrap();
        file.put(
            "default",
            &session("tok-default", 2_000_000_000, Kind::Session),
        );
        file.put("ops", &session("tok-ops", 2_000_000_100, Kind::Session));
        file.save().unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);

        // Another profile is written without disturbing the first.
        let mut file = CredentialsFile::load(&path).unwrap();
        file.put(
            "default/role",
            &session("tok-role", 2_000_000_050, Kind::AssumedRole),
        );
        assert!(file.remove("ops"));
        assert!(!file.remove("ops"));
        file.save().unwrap();

        let file = CredentialsFile::load(&path).unwrap();
        let names: Vec<_> = file.profiles().collect();
        assert_eq!(names, ["default", "default/role"]);
        let d = file.get("default").unwrap().unwrap();
        assert_eq!(d.session_token.expose(), "tok-default");
        assert_eq!(d.kind, Kind::Session);
        assert_eq!(d.expiration.unix_timestamp(), 2_000_000_000);
        let r = file.get("default/role").unwrap().unwrap();
        assert_eq!(r.session_token.expose(), "tok-role");
        assert_eq!(r.kind, Kind::AssumedRole);
        assert!(file.get("ops").unwrap().is_none());

        // The on-disk shape is the documented one.
        let raw: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let entry = &raw["default"];
        for key in [
            "endpoint",
            "access_key_id",
            "session_token",
            "expiration",
            "kind",
        ] {
            assert!(entry.get(key).is_some(), "{key} missing");
        }
        assert_eq!(entry["kind"], "session");
        assert_eq!(raw["default/role"]["kind"], "assumed_role");
        // No temporary is left behind.
        assert_eq!(fs::read_dir(&home).unwrap().count(), 1);
    }

    #[test]
    fn loose_mode_is_tightened_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut file = CredentialsFile::load(&path).unwrap();
        file.put("p", &session("t", 1, Kind::Session));
        file.save().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, "not json").unwrap();
        let err = CredentialsFile::load(&path).err().unwrap().to_string();
        assert!(err.contains("credentials.json"), "{err}");
    }

    #[test]
    fn profile_settings_round_trip_beside_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("home").join(FILE_NAME);
        let mut file = ProfilesFile::beside(&creds).unwrap();
        assert_eq!(file.get("deploy"), ProfileConfig::default());
        let deploy = ProfileConfig {
            role_arn: Some("arn:stint:iam::000000000000:role/deploy".into()),
            source_profile: Some("default".into()),
            mfa_serial: Some("arn:stint:iam::000000000000:mfa/alice".into()),
            endpoint: Some("https://stint.example:7420".into()),
            ca_cert: Some(file.ca_path("deploy")),
            web_identity_token_file: Some("/var/run/secrets/stint/token".into()),
        };
        file.put("deploy", deploy.clone());
        file.save().unwrap();
        let path = dir.path().join("home").join(CONFIG_FILE_NAME);
        assert_eq!(file.path(), path);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = ProfilesFile::beside(&creds).unwrap();
        assert_eq!(again.get("deploy"), deploy);
        assert_eq!(again.names().collect::<Vec<_>>(), ["deploy"]);
        assert!(again.ca_path("a/../b").ends_with("ca/a_.._b.pem"));
        // Unset fields are left out of the file.
        let mut sparse = ProfilesFile::beside(&creds).unwrap();
        sparse.put("x", ProfileConfig::default());
        sparse.save().unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["x"], serde_json::json!({}));
        fs::write(&path, r#"{"x":{"role":"r"}}"#).unwrap();
        let err = ProfilesFile::beside(&creds).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn expiry_check() {
        let s = session("t", 1_000, Kind::Session);
        let before = OffsetDateTime::from_unix_timestamp(999).unwrap();
        let after = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        assert!(s.ensure_fresh("default", before).is_ok());
        let err = s.ensure_fresh("default", after).unwrap_err().to_string();
        assert!(err.contains("expired at 1970-01-01T00:16:40Z"), "{err}");
        assert!(err.contains("stint login"), "{err}");
    }

    #[test]
    fn peek_reads_unverified_claims() {
        let payload = data_encoding::BASE64URL_NOPAD.encode(
            br#"{"sub":"arn:stint:iam::123456789012:user/bob","jti":"ASIA1","exp":5,"stint":{"kind":"assumed_role","mfa_present":true}}"#,
        );
        let token = SecretString::new(format!("e30.{payload}.sig"));
        let p = peek(&token).unwrap();
        assert_eq!(p.sub, "arn:stint:iam::123456789012:user/bob");
        assert_eq!(p.jti, "ASIA1");
        assert_eq!(p.exp, 5);
        assert_eq!(p.stint.kind, Some(Kind::AssumedRole));
        assert!(p.stint.mfa_present);
        assert!(peek(&SecretString::new("opaque".into())).is_none());
    }
}
