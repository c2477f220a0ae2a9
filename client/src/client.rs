//! Connecting to Stint, logging in, assuming roles.
//!
//! A [`Client`] is a cheap-to-clone gRPC channel. Logging in returns a [`Session`]: the
//! channel plus the credentials, which is what every authenticated call needs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::error::Error;
use crate::proto;
use crate::proto::get_session_token_request::Credential;
use crate::proto::sts_client::StsClient;
use crate::proto::tokens_client::TokensClient;
use crate::secret::Secret;

/// How to reach Stint.
///
/// `https://` endpoints use TLS, trusting the operating system's roots plus
/// [`ca_cert_pem`](Self::ca_cert_pem) if given (e.g. the CA printed by
/// `stint serve --dev-tls`). `http://` is accepted for loopback addresses only, unless
/// [`allow_plaintext`](Self::allow_plaintext) says otherwise.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://stint.example:8443` or `http://127.0.0.1:8443`.
    pub endpoint: String,
    /// An extra CA certificate (PEM) to trust besides the system roots.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each call.
    pub request_timeout: Duration,
    /// Permit `http://` to a non-loopback host (credentials then cross the network in
    /// clear text: only for a trusted private network or a sidecar).
    pub allow_plaintext: bool,
}

impl ClientConfig {
    /// Defaults for `endpoint`: system roots, 5 s to connect, 30 s per call.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            ca_cert_pem: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            allow_plaintext: false,
        }
    }

    /// Also trusts this CA certificate (PEM).
    pub fn with_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert_pem = Some(pem.into());
        self
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let uri: http::Uri = self
            .endpoint
            .parse()
            .map_err(|e| Error::Config(format!("endpoint {:?}: {e}", self.endpoint)))?;
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("endpoint {:?}: no host", self.endpoint)))?;
        let endpoint = Endpoint::from(uri.clone())
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        match uri.scheme_str() {
            Some("https") => {
                let mut tls = ClientTlsConfig::new()
                    .with_native_roots()
                    .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
                if let Some(pem) = &self.ca_cert_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                endpoint.tls_config(tls).map_err(Error::from)
            }
            Some("http") if self.allow_plaintext || is_loopback(host) => Ok(endpoint),
            Some("http") => Err(Error::Config(format!(
                "endpoint {:?}: plain http:// is only for loopback addresses; use https:// \
                 (or set allow_plaintext)",
                self.endpoint
            ))),
            _ => Err(Error::Config(format!(
                "endpoint {:?}: the scheme must be https:// or http://",
                self.endpoint
            ))),
        }
    }
}

impl From<&str> for ClientConfig {
    fn from(endpoint: &str) -> Self {
        Self::new(endpoint)
    }
}

impl From<String> for ClientConfig {
    fn from(endpoint: String) -> Self {
        Self::new(endpoint)
    }
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Temporary credentials: an `ASIA…` id and the signed session token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `ASIA…`: names the session (it is the token's `jti`).
    pub access_key_id: String,
    /// The bearer token (an Ed25519-signed JWT).
    pub session_token: Secret,
    /// When the token stops working.
    pub expiration: SystemTime,
}

impl Credentials {
    fn from_proto(creds: Option<proto::Credentials>) -> Result<Self, Error> {
        let creds = creds.ok_or(Error::InvalidResponse("credentials missing"))?;
        let expiration = creds
            .expiration
            .ok_or(Error::InvalidResponse("credentials without expiration"))?;
        let seconds = u64::try_from(expiration.seconds)
            .map_err(|_| Error::InvalidResponse("expiration before 1970"))?;
        Ok(Self {
            access_key_id: creds.access_key_id,
            session_token: Secret::new(creds.session_token),
            expiration: UNIX_EPOCH + Duration::from_secs(seconds),
        })
    }

    /// Whether the credentials are still valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.expiration
    }
}

/// Long-term credentials: what a session is made from.
#[derive(Clone, Debug)]
pub enum LongTermCredential {
    /// A user name and password (add a TOTP code if the user has MFA).
    Password {
        /// IAM user name.
        user_name: String,
        /// The password.
        password: Secret,
    },
    /// An access key (`AKIA…` id and secret).
    AccessKey {
        /// `AKIA…`.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
    },
}

impl LongTermCredential {
    fn to_proto(&self) -> Credential {
        match self {
            LongTermCredential::Password {
                user_name,
                password,
            } => Credential::Password(proto::PasswordCredential {
                user_name: user_name.clone(),
                password: password.expose().to_owned(),
            }),
            LongTermCredential::AccessKey {
                access_key_id,
                secret_access_key,
            } => Credential::AccessKey(proto::AccessKeyCredential {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.expose().to_owned(),
            }),
        }
    }
}

/// `AssumeRole` parameters. Build with [`AssumeRole::new`] and struct update syntax:
///
/// ```
/// use std::time::Duration;
/// use stint_client::AssumeRole;
/// let request = AssumeRole {
///     duration: Some(Duration::from_secs(900)),
///     ..AssumeRole::new("arn:stint:iam::000000000000:role/deploy", "release-42")
/// };
/// assert_eq!(request.session_name, "release-42");
/// ```
#[derive(Clone, Debug, Default)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// `RoleSessionName` (shows in the assumed-role ARN and the audit log).
    pub session_name: String,
    /// Lifetime; `None` means the server's default (1 h).
    pub duration: Option<Duration>,
    /// `ExternalId`, when the trust policy asks for one.
    pub external_id: Option<String>,
    /// A TOTP code, when the trust policy requires MFA.
    pub totp_code: Option<String>,
    /// `SourceIdentity` (sticky across role chaining).
    pub source_identity: Option<String>,
    /// Session tags.
    pub tags: Vec<(String, String)>,
    /// An inline session policy (JSON) narrowing the role's rights.
    pub policy: Option<String>,
}

impl AssumeRole {
    /// Assume `role_arn` as session `session_name`, everything else default.
    pub fn new(role_arn: impl Into<String>, session_name: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            session_name: session_name.into(),
            ..Self::default()
        }
    }

    fn to_proto(&self) -> Result<proto::AssumeRoleRequest, Error> {
        Ok(proto::AssumeRoleRequest {
            role_arn: self.role_arn.clone(),
            role_session_name: self.session_name.clone(),
            duration_seconds: duration_seconds(self.duration, "duration")?,
            external_id: self.external_id.clone().unwrap_or_default(),
            token_code: self.totp_code.clone().unwrap_or_default(),
            policy: self.policy.clone().unwrap_or_default(),
            tags: self
                .tags
                .iter()
                .map(|(key, value)| proto::Tag {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            source_identity: self.source_identity.clone().unwrap_or_default(),
            ..Default::default()
        })
    }
}

fn duration_seconds(duration: Option<Duration>, field: &str) -> Result<i32, Error> {
    match duration {
        None => Ok(0),
        Some(d) => i32::try_from(d.as_secs())
            .map_err(|_| Error::Config(format!("{field}: {} s is too long", d.as_secs()))),
    }
}

/// Who the credentials belong to (`GetCallerIdentity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    /// 12-digit account id.
    pub account: String,
    /// The caller's ARN (user, or assumed-role session).
    pub arn: String,
    /// `AIDA…` or `AROA…:session`.
    pub user_id: String,
}

/// A policy decision from `Tokens.Authorize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An Allow statement matched and no Deny did.
    Allow,
    /// A Deny statement matched.
    ExplicitDeny,
    /// Nothing allowed it.
    ImplicitDeny,
}

/// A connection to Stint. Clone it freely: clones share the channel.
///
/// ```no_run
/// # async fn demo() -> Result<(), stint_client::Error> {
/// use stint_client::{AssumeRole, Client, ClientConfig, Secret};
///
/// let config = ClientConfig::new("https://stint.example:8443")
///     .with_ca_cert_pem(std::fs::read("ca.pem").map_err(|e| stint_client::Error::Config(e.to_string()))?);
/// let client = Client::connect(config).await?;
/// let session = client
///     .login_password("carol", &Secret::new("her password"), Some("123456"))
///     .await?;
/// let deploy = session
///     .assume_role(AssumeRole::new("arn:stint:iam::000000000000:role/deploy", "carol"))
///     .await?;
/// println!("{}", deploy.caller_identity().await?.arn);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects now (fails fast if Stint is unreachable or its certificate is not trusted).
    pub async fn connect(config: impl Into<ClientConfig>) -> Result<Self, Error> {
        let channel = config.into().endpoint()?.connect().await?;
        Ok(Self { channel })
    }

    /// Connects on first use, and reconnects by itself: for services that may start
    /// before Stint does.
    pub fn connect_lazy(config: impl Into<ClientConfig>) -> Result<Self, Error> {
        Ok(Self {
            channel: config.into().endpoint()?.connect_lazy(),
        })
    }

    /// Wraps an existing tonic channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self { channel }
    }

    /// The underlying channel, for the generated clients in [`crate::proto`].
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `GetSessionToken` with any long-term credential; `duration: None` means the
    /// server's default.
    pub async fn get_session_token(
        &self,
        credential: &LongTermCredential,
        totp_code: Option<&str>,
        duration: Option<Duration>,
    ) -> Result<Session, Error> {
        let response = StsClient::new(self.channel())
            .get_session_token(proto::GetSessionTokenRequest {
                credential: Some(credential.to_proto()),
                token_code: totp_code.unwrap_or_default().to_owned(),
                duration_seconds: duration_seconds(duration, "duration")?,
                serial_number: String::new(),
            })
            .await?
            .into_inner();
        Ok(self.session(Credentials::from_proto(response.credentials)?))
    }

    /// Logs in with a password and, if the user has MFA, the current TOTP code.
    pub async fn login_password(
        &self,
        user_name: &str,
        password: &Secret,
        totp_code: Option<&str>,
    ) -> Result<Session, Error> {
        let credential = LongTermCredential::Password {
            user_name: user_name.to_owned(),
            password: password.clone(),
        };
        self.get_session_token(&credential, totp_code, None).await
    }

    /// Logs in with an access key (and a TOTP code if the user has MFA and policy wants it).
    pub async fn login_access_key(
        &self,
        access_key_id: &str,
        secret_access_key: &Secret,
        totp_code: Option<&str>,
    ) -> Result<Session, Error> {
        let credential = LongTermCredential::AccessKey {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.clone(),
        };
        self.get_session_token(&credential, totp_code, None).await
    }

    /// `AssumeRoleWithWebIdentity`: trade a platform's OIDC token (a Kubernetes projected
    /// service-account token, a CI job's ID token) for a session of `role_arn`. Unauthenticated
    /// like AWS's: the token is the credential, no login comes first.
    pub async fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        web_identity_token: &Secret,
        duration: Option<Duration>,
    ) -> Result<Session, Error> {
        let response = StsClient::new(self.channel())
            .assume_role_with_web_identity(proto::AssumeRoleWithWebIdentityRequest {
                role_arn: role_arn.to_owned(),
                role_session_name: session_name.to_owned(),
                web_identity_token: web_identity_token.expose().to_owned(),
                duration_seconds: duration_seconds(duration, "duration")?,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(self.session(Credentials::from_proto(response.credentials)?))
    }

    /// A session from credentials obtained elsewhere (e.g. `STINT_SESSION_TOKEN`).
    pub fn session(&self, credentials: Credentials) -> Session {
        Session {
            client: self.clone(),
            credentials,
        }
    }
}

/// A client with credentials: makes authenticated calls.
#[derive(Clone, Debug)]
pub struct Session {
    client: Client,
    credentials: Credentials,
}

pub(crate) type BearerChannel =
    InterceptedService<Channel, Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>>;

pub(crate) fn bearer_channel(channel: Channel, token: &Secret) -> Result<BearerChannel, Error> {
    let mut value: MetadataValue<_> = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| Error::Config("session token: not valid header text".into()))?;
    value.set_sensitive(true);
    Ok(InterceptedService::new(
        channel,
        Box::new(move |mut request: Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
            Ok(request)
        }),
    ))
}

impl Session {
    /// The credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The client this session talks through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn sts(&self) -> Result<StsClient<BearerChannel>, Error> {
        Ok(StsClient::new(bearer_channel(
            self.client.channel(),
            &self.credentials.session_token,
        )?))
    }

    /// `AssumeRole`: a session for the role, if its trust policy lets this session in.
    pub async fn assume_role(&self, request: AssumeRole) -> Result<Session, Error> {
        let response = self
            .sts()?
            .assume_role(request.to_proto()?)
            .await?
            .into_inner();
        Ok(self
            .client
            .session(Credentials::from_proto(response.credentials)?))
    }

    /// `GetCallerIdentity`.
    pub async fn caller_identity(&self) -> Result<CallerIdentity, Error> {
        let response = self
            .sts()?
            .get_caller_identity(proto::GetCallerIdentityRequest {})
            .await?
            .into_inner();
        Ok(CallerIdentity {
            account: response.account,
            arn: response.arn,
            user_id: response.user_id,
        })
    }

    /// Asks Stint whether the holder of `subject_token` may do `action` on `resource`.
    /// This session (the app's own) authenticates the call.
    pub async fn authorize(
        &self,
        subject_token: &Secret,
        action: &str,
        resource: &str,
    ) -> Result<Decision, Error> {
        let response = TokensClient::new(bearer_channel(
            self.client.channel(),
            &self.credentials.session_token,
        )?)
        .authorize(proto::AuthorizeRequest {
            session_token: subject_token.expose().to_owned(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            context: vec![],
        })
        .await?
        .into_inner();
        match response.decision() {
            proto::Decision::Allow => Ok(Decision::Allow),
            proto::Decision::ExplicitDeny => Ok(Decision::ExplicitDeny),
            proto::Decision::ImplicitDeny => Ok(Decision::ImplicitDeny),
            proto::Decision::Unspecified => Err(Error::InvalidResponse("decision unspecified")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (host, want) in [
            ("localhost", true),
            ("127.0.0.1", true),
            ("127.8.9.1", true),
            ("[::1]", true),
            ("10.0.0.1", false),
            ("stint.example", false),
            ("localhost.evil.example", false),
        ] {
            assert_eq!(is_loopback(host), want, "{host}");
        }
    }

    #[test]
    fn endpoint_schemes() {
        assert!(
            ClientConfig::new("http://127.0.0.1:8443")
                .endpoint()
                .is_ok()
        );
        assert!(
            ClientConfig::new("https://stint.example")
                .endpoint()
                .is_ok()
        );
        let err = ClientConfig::new("http://stint.example:8443")
            .endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let plain = ClientConfig {
            allow_plaintext: true,
            ..ClientConfig::new("http://stint.example:8443")
        };
        assert!(plain.endpoint().is_ok());
        let err = ClientConfig::new("ftp://stint.example")
            .endpoint()
            .unwrap_err();
        assert!(err.to_string().contains("scheme"), "{err}");
    }

    #[test]
    fn credentials_debug_hides_the_token() {
        let creds = Credentials {
            access_key_id: "ASIA1".into(),
            session_token: Secret::new("eyJhbGciOi.secret.part"),
            expiration: UNIX_EPOCH,
        };
        let debug = format!("{creds:?}");
        assert!(!debug.contains("eyJ"), "{debug}");
        let source = LongTermCredential::AccessKey {
            access_key_id: "AKIA1".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI"),
        };
        assert!(!format!("{source:?}").contains("wJalr"));
    }
}
