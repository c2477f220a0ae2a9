//! OpenID Connect identity providers: the issuers whose tokens `AssumeRoleWithWebIdentity`
//! accepts (Kubernetes service-account issuers, CI systems, a company's IdP).
//!
//! AWS's names and limits: the URL is `https://host[/path]` (Stint also takes plain
//! `http://` for loopback hosts: tests and local clusters), at most 255 characters, and is
//! the provider's identity — the ARN is `…:oidc-provider/<host/path>` and the record's key
//! is that `host/path`; at most 100 client ids (audiences) of at most 255 characters; at
//! most 5 thumbprints of 40 hex digits. Thumbprints are kept for AWS compatibility, but
//! TLS to the issuer is verified against the system's trust roots (as AWS now does for
//! well-known CAs), not pinned. A provider may carry its JWKS inline (`jwks_json`, a Stint
//! extension) for issuers the broker cannot reach; then no key is ever fetched.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::core::model::{RECORD_VERSION, Tag, UnixMs, validate_tags};
use crate::core::token::web_identity::{KeySet, MAX_JWKS_BYTES};
use crate::store::{self, Table};

use super::users::{check_tag_change, retag, tagging_keys};
use super::{check_arn, insert_new, not_found, request_tag_keys, resource_tag_keys};
use crate::broker::caller::{Caller, RequestMeta};
use crate::broker::{Broker, BrokerError, unix_ms};

pub const MAX_URL_CHARS: usize = 255;
pub const MAX_CLIENT_IDS: usize = 100;
pub const MAX_CLIENT_ID_CHARS: usize = 255;
pub const MAX_THUMBPRINTS: usize = 5;

/// A stored provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcProvider {
    pub v: u32,
    pub arn: String,
    /// As registered, without a trailing `/`: what the tokens' `iss` must be.
    pub url: String,
    pub client_ids: Vec<String>,
    pub thumbprints: Vec<String>,
    pub tags: Vec<Tag>,
    pub create_date: UnixMs,
    /// Unique per creation: a provider deleted and created again does not reuse cached keys.
    pub id: String,
    /// The issuer's JWKS held inline; `None`: discovery and fetch.
    pub jwks_json: Option<String>,
}

impl OidcProvider {
    /// `host[:port]/path`: the ARN's resource name and the record's key.
    pub fn host_path(&self) -> &str {
        url_host_path(&self.url).unwrap_or_default()
    }
}

/// What `CreateOpenIDConnectProvider` takes.
#[derive(Debug, Clone, Default)]
pub struct OidcProviderInput {
    pub url: String,
    pub client_ids: Vec<String>,
    pub thumbprints: Vec<String>,
    pub tags: Vec<Tag>,
    pub jwks_json: String,
}

/// The part of an issuer URL after its scheme.
pub fn url_host_path(url: &str) -> Option<&str> {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
}

/// Whether `host` (with an optional port) is a loopback name, where plain HTTP is allowed.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Validates and normalizes a provider URL (trailing `/` dropped).
pub fn check_url(url: &str) -> Result<String, BrokerError> {
    let bad = |m: &str| BrokerError::invalid("url", m);
    if url.is_empty() {
        return Err(bad("is required"));
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(bad("must be at most 255 characters"));
    }
    let scheme = ["https://", "http://"]
        .into_iter()
        .find(|s| url.starts_with(s))
        .ok_or_else(|| bad("must start with https://"))?;
    let rest = url[scheme.len()..].trim_end_matches('/');
    let url = format!("{scheme}{rest}");
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    if !rest.chars().all(|c| c.is_ascii_graphic()) || rest.contains(['?', '#', '@', '*']) {
        return Err(bad(
            "must be a plain https://host/path URL (no query, fragment, credentials or wildcard)",
        ));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if url.starts_with("http://") && !is_loopback_host(host) {
        return Err(bad("must use https (plain http only for loopback hosts)"));
    }
    Ok(url)
}

fn check_client_id(id: &str) -> Result<(), BrokerError> {
    if id.is_empty() || id.chars().count() > MAX_CLIENT_ID_CHARS {
        return Err(BrokerError::invalid(
            "client_id",
            format!("each must be 1 to {MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_client_ids(ids: &[String]) -> Result<Vec<String>, BrokerError> {
    if ids.len() > MAX_CLIENT_IDS {
        return Err(BrokerError::invalid(
            "client_id_list",
            format!("at most {MAX_CLIENT_IDS} client ids"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        check_client_id(id).map_err(|_| {
            BrokerError::invalid(
                "client_id_list",
                format!("each must be 1 to {MAX_CLIENT_ID_CHARS} characters"),
            )
        })?;
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

fn check_thumbprints(prints: &[String]) -> Result<Vec<String>, BrokerError> {
    if prints.len() > MAX_THUMBPRINTS {
        return Err(BrokerError::invalid(
            "thumbprint_list",
            format!("at most {MAX_THUMBPRINTS} thumbprints"),
        ));
    }
    if prints
        .iter()
        .any(|p| p.len() != 40 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(BrokerError::invalid(
            "thumbprint_list",
            "each must be 40 hexadecimal digits (a SHA-1 certificate thumbprint)",
        ));
    }
    Ok(prints.iter().map(|p| p.to_ascii_lowercase()).collect())
}

impl Broker {
    /// The `host/path` a provider ARN names, if it is one of this account's.
    fn oidc_key(&self, arn: &str) -> Result<String, BrokerError> {
        check_arn("open_id_connect_provider_arn", arn)?;
        let prefix = self.account().iam_arn("oidc-provider", "/", "");
        arn.strip_prefix(&prefix)
            .filter(|rest| !rest.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                BrokerError::invalid(
                    "open_id_connect_provider_arn",
                    format!("must be an OIDC provider ARN of this account ({prefix}<host/path>)"),
                )
            })
    }

    /// The provider whose URL is `issuer` (a token's unverified `iss`), if registered.
    pub(crate) fn oidc_provider_for_issuer(
        &self,
        issuer: &str,
    ) -> Result<Option<OidcProvider>, BrokerError> {
        let Some(key) = url_host_path(issuer.trim_end_matches('/')) else {
            return Ok(None);
        };
        let provider: Option<OidcProvider> =
            store::read(self.store.as_ref(), Table::OidcProviders, key)?;
        Ok(provider.filter(|p| p.url == issuer.trim_end_matches('/')))
    }

    pub async fn create_oidc_provider(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        input: OidcProviderInput,
    ) -> Result<OidcProvider, BrokerError> {
        let url = check_url(&input.url)?;
        let client_ids = check_client_ids(&input.client_ids)?;
        let thumbprints = check_thumbprints(&input.thumbprints)?;
        validate_tags(&input.tags).map_err(|m| BrokerError::invalid("tags", m))?;
        let jwks_json = if input.jwks_json.is_empty() {
            None
        } else {
            if input.jwks_json.len() > MAX_JWKS_BYTES {
                return Err(BrokerError::invalid(
                    "jwks_json",
                    format!("must be at most {MAX_JWKS_BYTES} bytes"),
                ));
            }
            KeySet::parse(&input.jwks_json).map_err(|m| BrokerError::invalid("jwks_json", m))?;
            Some(input.jwks_json.clone())
        };
        let key = url_host_path(&url).unwrap_or_default().to_string();
        let arn = self.account().iam_arn("oidc-provider", "/", &key);
        let id = self.ids("OIDC")?;
        let now = unix_ms(self.now());
        let params = json!({"url": url, "client_id_list": client_ids, "thumbprint_list": thumbprints,
            "tags": input.tags, "jwks_inline": jwks_json.is_some()});
        let keys = request_tag_keys(&input.tags);
        self.iam_change(
            caller,
            meta,
            "iam:CreateOpenIDConnectProvider",
            params,
            |tx, gate| {
                gate.check(&arn, &keys)?;
                let provider = OidcProvider {
                    v: RECORD_VERSION,
                    arn: arn.clone(),
                    url: url.clone(),
                    client_ids: client_ids.clone(),
                    thumbprints: thumbprints.clone(),
                    tags: input.tags.clone(),
                    create_date: now,
                    id: id.clone(),
                    jwks_json: jwks_json.clone(),
                };
                insert_new(
                    tx,
                    Table::OidcProviders,
                    &key,
                    &provider,
                    "OpenID Connect provider",
                    &url,
                )?;
                Ok(provider)
            },
        )
        .await
    }

    pub async fn get_oidc_provider(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
    ) -> Result<OidcProvider, BrokerError> {
        let params = json!({"open_id_connect_provider_arn": arn});
        let key = match self.oidc_key(arn) {
            Ok(key) => key,
            Err(err) => {
                return self
                    .iam_refused(caller, meta, "iam:GetOpenIDConnectProvider", &params, err)
                    .await;
            }
        };
        let provider: Option<OidcProvider> =
            store::read(self.store.as_ref(), Table::OidcProviders, &key)?;
        let keys = provider
            .as_ref()
            .map(|p| resource_tag_keys(&p.tags))
            .unwrap_or_default();
        self.iam_read(
            caller,
            meta,
            "iam:GetOpenIDConnectProvider",
            arn,
            &keys,
            params,
            || provider.ok_or_else(|| not_found("OpenID Connect provider", arn)),
        )
        .await
    }

    pub async fn list_oidc_providers(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<Vec<String>, BrokerError> {
        let resource = self.account().iam_arn("oidc-provider", "/", "*");
        self.iam_read(
            caller,
            meta,
            "iam:ListOpenIDConnectProviders",
            &resource,
            &[],
            json!({}),
            || {
                // AWS allows 100 providers per account; the list is not paginated.
                Ok(store::read_page::<OidcProvider>(
                    self.store.as_ref(),
                    Table::OidcProviders,
                    "",
                    None,
                    1_000,
                )?
                .into_iter()
                .map(|(_, p)| p.arn)
                .collect())
            },
        )
        .await
    }

    /// One change to an existing provider, authorized on its ARN and tags.
    #[allow(clippy::too_many_arguments)] // the IAM frame's arguments plus the change
    async fn oidc_change(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        arn: &str,
        params: serde_json::Value,
        extra: super::RequestKeys,
        change: impl Fn(&mut OidcProvider) -> Result<bool, BrokerError>,
    ) -> Result<(), BrokerError> {
        let key = match self.oidc_key(arn) {
            Ok(key) => key,
            Err(err) => return self.iam_refused(caller, meta, action, &params, err).await,
        };
        self.iam_change(caller, meta, action, params, |tx, gate| {
            let provider: Option<OidcProvider> = tx.get(Table::OidcProviders, &key)?;
            let mut keys = provider
                .as_ref()
                .map(|p| resource_tag_keys(&p.tags))
                .unwrap_or_default();
            keys.extend(extra.iter().cloned());
            gate.check(arn, &keys)?;
            let mut provider = provider.ok_or_else(|| not_found("OpenID Connect provider", arn))?;
            // `false`: delete the record.
            if change(&mut provider)? {
                tx.put(Table::OidcProviders, &key, &provider);
            } else {
                tx.delete(Table::OidcProviders, &key);
            }
            Ok(())
        })
        .await
    }

    pub async fn delete_oidc_provider(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
    ) -> Result<(), BrokerError> {
        let params = json!({"open_id_connect_provider_arn": arn});
        self.oidc_change(
            caller,
            meta,
            "iam:DeleteOpenIDConnectProvider",
            arn,
            params,
            vec![],
            |_| Ok(false),
        )
        .await?;
        self.forget_web_identity_keys(arn);
        Ok(())
    }

    /// Adds (`add`) or removes a client id (audience).
    pub async fn change_oidc_client_id(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        client_id: &str,
        add: bool,
    ) -> Result<(), BrokerError> {
        check_client_id(client_id)?;
        let action = if add {
            "iam:AddClientIDToOpenIDConnectProvider"
        } else {
            "iam:RemoveClientIDFromOpenIDConnectProvider"
        };
        let params = json!({"open_id_connect_provider_arn": arn, "client_id": client_id});
        self.oidc_change(caller, meta, action, arn, params, vec![], |p| {
            // AWS: adding a present id or removing an absent one succeeds and changes nothing.
            if add {
                if !p.client_ids.iter().any(|c| c == client_id) {
                    if p.client_ids.len() >= MAX_CLIENT_IDS {
                        return Err(BrokerError::LimitExceeded(format!(
                            "at most {MAX_CLIENT_IDS} client ids per OpenID Connect provider"
                        )));
                    }
                    p.client_ids.push(client_id.to_string());
                }
            } else {
                p.client_ids.retain(|c| c != client_id);
            }
            Ok(true)
        })
        .await
    }

    pub async fn update_oidc_thumbprints(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        thumbprints: &[String],
    ) -> Result<(), BrokerError> {
        let thumbprints = check_thumbprints(thumbprints)?;
        let params = json!({"open_id_connect_provider_arn": arn, "thumbprint_list": thumbprints});
        self.oidc_change(
            caller,
            meta,
            "iam:UpdateOpenIDConnectProviderThumbprint",
            arn,
            params,
            vec![],
            |p| {
                p.thumbprints = thumbprints.clone();
                Ok(true)
            },
        )
        .await
    }

    /// Tags (`remove` empty) or untags a provider.
    pub async fn tag_oidc_provider(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        arn: &str,
        tags: Vec<Tag>,
        remove: Vec<String>,
    ) -> Result<(), BrokerError> {
        check_tag_change(&tags, &remove)?;
        let action = if remove.is_empty() {
            "iam:TagOpenIDConnectProvider"
        } else {
            "iam:UntagOpenIDConnectProvider"
        };
        let params = json!({"open_id_connect_provider_arn": arn, "tags": tags, "tag_keys": remove});
        let keys = tagging_keys(&tags, &remove);
        self.oidc_change(caller, meta, action, arn, params, keys, |p| {
            retag(&mut p.tags, &tags, &remove)?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases: [(&str, Result<&str, &str>); 12] = [
            (
                "https://token.actions.githubusercontent.com",
                Ok("https://token.actions.githubusercontent.com"),
            ),
            (
                "https://oidc.eks.example/id/ABC/",
                Ok("https://oidc.eks.example/id/ABC"),
            ),
            (
                "http://127.0.0.1:8080/issuer",
                Ok("http://127.0.0.1:8080/issuer"),
            ),
            ("http://localhost:1", Ok("http://localhost:1")),
            ("http://[::1]:9/x", Ok("http://[::1]:9/x")),
            ("http://issuer.example", Err("https")),
            ("http://127.0.0.1.evil.example", Err("https")),
            ("ftp://x", Err("https://")),
            ("https://", Err("host")),
            ("https://x/?a=1", Err("query")),
            ("https://user@x", Err("credentials")),
            ("", Err("required")),
        ];
        for (url, want) in cases {
            match (check_url(url), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{url}: {e}"),
                (got, want) => panic!("{url}: {got:?} vs {want:?}"),
            }
        }
        assert!(check_url(&format!("https://{}", "a".repeat(250))).is_err());
    }

    #[test]
    fn client_ids_and_thumbprints_have_aws_limits() {
        assert!(check_client_ids(&vec!["a".into(); 100]).is_ok());
        assert_eq!(
            check_client_ids(&["a".into(), "a".into()]).unwrap(),
            vec!["a"]
        );
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        assert!(check_client_ids(&many).is_err());
        assert!(check_client_ids(&["a".repeat(256)]).is_err());
        assert!(check_client_ids(&[String::new()]).is_err());
        let print = "9E99A48A9960B14926BB7F3B02E22DA2B0AB7280".to_string();
        assert_eq!(
            check_thumbprints(std::slice::from_ref(&print)).unwrap()[0],
            print.to_lowercase()
        );
        assert!(check_thumbprints(&vec![print.clone(); 6]).is_err());
        assert!(check_thumbprints(&["abc".into()]).is_err());
        assert!(check_thumbprints(&["g".repeat(40)]).is_err());
    }
}
