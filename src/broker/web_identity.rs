//! `sts:AssumeRoleWithWebIdentity`: a workload trades the OIDC token its platform gave it
//! (a Kubernetes projected service-account token, a CI job's token) for role credentials.
//! No long-term secret exists anywhere: the token is the credential, so the call takes no
//! bearer token.
//!
//! Order matters, because the caller is anonymous: bound the fields; verify the token
//! (registered issuer, known key, signature, time, audience) before anything else is
//! looked at, so a caller without a valid token learns nothing — every token problem gets
//! the same UNAUTHENTICATED answer, the precise reason going only to the audit log; then
//! the role's trust policy decides, with the provider's ARN as the `Federated` principal
//! and the condition keys AWS sets (`<host/path>:sub`, `:aud`, `:amr`,
//! `aws:FederatedProvider`). A missing role and a trust policy that says no look the same.
//!
//! Keys: inline JWKS, or fetched (see [`super::oidc_fetch`]) and cached per provider. An
//! unknown `kid` triggers one refresh, at most one per provider every
//! [`REFRESH_INTERVAL`], so a stream of junk tokens cannot make the broker hammer an
//! issuer. No lock is held across a fetch, and only this call ever fetches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::audit::event::Outcome;
use crate::core::model::{NameKind, Role, validate_name};
use crate::core::policy::{self, Decision, NamedPolicy, PolicyKind, PolicySet, Request};
use crate::core::secret::SecretString;
use crate::core::token::web_identity::{KeySet, MAX_TOKEN_BYTES, Rejected, UnverifiedToken};

use super::caller::{RequestMeta, base_context};
use super::iam::OidcProvider;
use super::sts::{Issued, MintSpec, ROLE_DEFAULT, duration_in};
use super::{Broker, BrokerError, unix_secs};

/// Least time between two JWKS fetches for one provider.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// The one answer to every bad token.
pub const INVALID_TOKEN: &str = "invalid web identity token";
const ACTION: &str = "sts:AssumeRoleWithWebIdentity";

#[derive(Debug, Clone, Default)]
pub struct WebIdentityInput {
    pub role_arn: String,
    pub role_session_name: String,
    pub web_identity_token: SecretString,
    pub duration_seconds: i32,
    pub policy: String,
    pub policy_arns: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct WebIdentityAssumed {
    pub credentials: Issued,
    pub assumed_role_id: String,
    pub arn: String,
    pub subject: String,
    pub audience: String,
    /// The provider's `host/path`.
    pub provider: String,
}

/// Fetched key sets by provider ARN.
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, CachedKeys>>,
}

struct CachedKeys {
    /// The provider record's unique id: a recreated provider starts afresh.
    provider_id: String,
    keys: Option<Arc<KeySet>>,
    last_fetch: Option<SystemTime>,
}

/// What the cache says before any fetch.
enum Lookup {
    Ready(Arc<KeySet>),
    /// Fetch now (the attempt is already recorded); `stale` is what the cache held.
    Fetch {
        stale: Option<Arc<KeySet>>,
    },
    /// Refresh not allowed yet.
    Limited(Option<Arc<KeySet>>),
}

impl KeyCache {
    fn lookup(&self, provider: &OidcProvider, kid: &str, now: SystemTime) -> Lookup {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries
            .entry(provider.arn.clone())
            .or_insert_with(|| CachedKeys {
                provider_id: provider.id.clone(),
                keys: None,
                last_fetch: None,
            });
        if entry.provider_id != provider.id {
            *entry = CachedKeys {
                provider_id: provider.id.clone(),
                keys: None,
                last_fetch: None,
            };
        }
        if let Some(keys) = &entry.keys
            && keys.contains(kid)
        {
            return Lookup::Ready(keys.clone());
        }
        let due = entry.last_fetch.is_none_or(|last| {
            now.duration_since(last).unwrap_or_default() >= REFRESH_INTERVAL || now < last // the clock went back: do not lock the provider out
        });
        if due {
            entry.last_fetch = Some(now);
            Lookup::Fetch {
                stale: entry.keys.clone(),
            }
        } else {
            Lookup::Limited(entry.keys.clone())
        }
    }

    fn store(&self, provider: &OidcProvider, keys: Arc<KeySet>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get_mut(&provider.arn)
            && entry.provider_id == provider.id
        {
            entry.keys = Some(keys);
        }
    }

    fn forget(&self, provider_arn: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(provider_arn);
    }
}

/// A token refusal: the audit reason; the caller sees [`INVALID_TOKEN`] only.
fn refuse(why: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unauthenticated(format!("{INVALID_TOKEN}: {why}"))
}

/// Size bounds, checked before anything is parsed, logged or matched.
fn check_bounds(input: &WebIdentityInput) -> Result<(), BrokerError> {
    let too_long = |value: &str, max: usize| value.len() > max && value.chars().count() > max;
    let fields = [
        ("role_arn", input.role_arn.as_str(), 2_048),
        ("role_session_name", &input.role_session_name, 64),
        ("policy", &input.policy, 2_048),
    ];
    for (field, value, max) in fields {
        if too_long(value, max) {
            return Err(BrokerError::invalid(
                field,
                format!("must be at most {max} characters"),
            ));
        }
    }
    if input.web_identity_token.expose().len() > MAX_TOKEN_BYTES {
        return Err(BrokerError::invalid(
            "web_identity_token",
            format!("must be at most {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    if input.web_identity_token.expose().len() < 4 {
        return Err(BrokerError::invalid("web_identity_token", "is required"));
    }
    if input.policy_arns.len() > 10 || input.policy_arns.iter().any(|a| too_long(a, 2_048)) {
        return Err(BrokerError::invalid(
            "policy_arns",
            "at most 10 managed session policies, each at most 2048 characters",
        ));
    }
    Ok(())
}

impl Broker {
    /// Drops a provider's cached keys (it was deleted).
    pub(crate) fn forget_web_identity_keys(&self, provider_arn: &str) {
        self.web_identity_keys.forget(provider_arn);
    }

    /// The provider's keys holding `kid`, fetching (rate-limited) when it is unknown.
    async fn web_identity_keys_for(
        &self,
        provider: &OidcProvider,
        kid: &str,
        now: SystemTime,
    ) -> Result<Arc<KeySet>, BrokerError> {
        if let Some(inline) = &provider.jwks_json {
            return KeySet::parse(inline)
                .map(Arc::new)
                .map_err(|e| refuse(format!("inline JWKS of {}: {e}", provider.arn)));
        }
        let stale = match self.web_identity_keys.lookup(provider, kid, now) {
            Lookup::Ready(keys) => return Ok(keys),
            Lookup::Limited(keys) => {
                return keys.ok_or_else(|| {
                    refuse(format!(
                        "no keys for {} yet and the last fetch was under {} s ago",
                        provider.arn,
                        REFRESH_INTERVAL.as_secs()
                    ))
                });
            }
            Lookup::Fetch { stale } => stale,
        };
        match super::oidc_fetch::fetch_jwks(&provider.url).await {
            Ok(json) => {
                let keys = Arc::new(
                    KeySet::parse(&json)
                        .map_err(|e| refuse(format!("JWKS of {}: {e}", provider.url)))?,
                );
                self.web_identity_keys.store(provider, keys.clone());
                Ok(keys)
            }
            Err(why) => {
                tracing::warn!(provider = %provider.arn, error = %why, "JWKS fetch failed");
                stale.ok_or_else(|| refuse(format!("JWKS of {} unavailable: {why}", provider.url)))
            }
        }
    }

    /// Verifies the token; answers its provider, claims and the audience that matched.
    async fn verify_web_identity(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<(OidcProvider, UnverifiedToken, String), BrokerError> {
        let parsed = UnverifiedToken::parse(token).map_err(refuse)?;
        let provider = self
            .oidc_provider_for_issuer(&parsed.claims.iss)?
            .ok_or_else(|| {
                refuse(format!(
                    "issuer {:?} is not a registered OpenID Connect provider",
                    parsed.claims.iss.chars().take(256).collect::<String>()
                ))
            })?;
        let keys = self
            .web_identity_keys_for(&provider, &parsed.kid, now)
            .await?;
        match parsed.verify_signature(&keys) {
            Ok(()) => {}
            Err(Rejected::UnknownKid(kid)) => {
                // The cache had keys but not this one and was refreshed too recently.
                return Err(refuse(format!(
                    "unknown signing key id {kid:?} for {}",
                    provider.arn
                )));
            }
            Err(other) => return Err(refuse(other)),
        }
        let leeway = i64::try_from(self.settings.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let audience = parsed
            .claims
            .check(unix_secs(now), leeway, &provider.client_ids)
            .map_err(refuse)?;
        Ok((provider, parsed, audience))
    }

    pub async fn assume_role_with_web_identity(
        &self,
        meta: &RequestMeta,
        input: WebIdentityInput,
    ) -> Result<WebIdentityAssumed, BrokerError> {
        let now = self.now();
        // Never the token itself: it is a bearer credential until it expires.
        let mut params = json!({
            "role_arn": input.role_arn,
            "role_session_name": input.role_session_name,
            "duration_seconds": input.duration_seconds,
            "policy_present": !input.policy.is_empty(),
            "policy_arns": input.policy_arns,
        });
        if let Err(err) = check_bounds(&input) {
            let bounded =
                json!({"web_identity_token_bytes": input.web_identity_token.expose().len()});
            return self.web_identity_refused("", bounded, err, now, meta).await;
        }
        let verified = self
            .verify_web_identity(input.web_identity_token.expose(), now)
            .await;
        let (provider, token, audience) = match verified {
            Ok(v) => v,
            Err(err) => return self.web_identity_refused("", params, err, now, meta).await,
        };
        params["provider"] = json!(provider.arn);
        params["web_identity_subject"] = json!(token.claims.sub);
        params["audience"] = json!(audience);
        match self
            .web_identity_assume(
                meta,
                &input,
                &provider,
                &token,
                &audience,
                params.clone(),
                now,
            )
            .await
        {
            Ok(assumed) => Ok(assumed),
            Err(err) => {
                self.web_identity_refused(&provider.arn, params, err, now, meta)
                    .await
            }
        }
    }

    /// Audits a refusal with its reason and answers it — token problems uniformly.
    async fn web_identity_refused<R>(
        &self,
        principal: &str,
        params: serde_json::Value,
        err: BrokerError,
        now: SystemTime,
        meta: &RequestMeta,
    ) -> Result<R, BrokerError> {
        if matches!(err, BrokerError::AuditUnavailable) {
            return Err(err);
        }
        let outcome = match err {
            BrokerError::AccessDenied { .. } | BrokerError::Unauthenticated(_) => Outcome::Deny,
            _ => Outcome::Error,
        };
        let mut event = self.event(meta, ACTION, principal, outcome, now);
        event.params = params;
        event.reason = err.to_string();
        self.audit.append(event).await?;
        Err(match err {
            BrokerError::Unauthenticated(_) => BrokerError::Unauthenticated(INVALID_TOKEN.into()),
            other => other,
        })
    }

    #[allow(clippy::too_many_arguments)] // the verified pieces of one request
    async fn web_identity_assume(
        &self,
        meta: &RequestMeta,
        input: &WebIdentityInput,
        provider: &OidcProvider,
        token: &UnverifiedToken,
        audience: &str,
        params: serde_json::Value,
        now: SystemTime,
    ) -> Result<WebIdentityAssumed, BrokerError> {
        validate_name(NameKind::RoleSessionName, &input.role_session_name)
            .map_err(|m| BrokerError::invalid("role_session_name", m))?;
        let denied = |reason: String| BrokerError::AccessDenied {
            action: ACTION.into(),
            resource: input.role_arn.clone(),
            reason,
        };
        // A missing role answers like a trust policy that says no: an anonymous caller
        // must not learn which roles exist.
        let role: Role = crate::core::model::Arn::parse(&input.role_arn)
            .filter(|a| a.service == "iam" && a.account == self.settings.account.id)
            .and_then(|a| {
                a.kind_and_name()
                    .filter(|(k, _)| *k == "role")
                    .map(|(_, n)| n.to_string())
            })
            .map(|name| self.load_role(&name))
            .transpose()?
            .flatten()
            .filter(|r| r.arn == input.role_arn)
            .ok_or_else(|| {
                denied("no such role, or its trust policy does not allow this identity".into())
            })?;
        let duration = duration_in(
            "duration_seconds",
            input.duration_seconds,
            ROLE_DEFAULT.min(role.max_session_duration as u32),
            900,
            role.max_session_duration as u32,
        )?;
        let mut session_policies = Vec::new();
        if !input.policy.is_empty() {
            policy::Policy::parse(&input.policy, PolicyKind::Session).map_err(|error| {
                BrokerError::MalformedPolicy {
                    field: "policy".into(),
                    error,
                }
            })?;
            session_policies.push(input.policy.clone());
        }
        for arn in &input.policy_arns {
            let doc = self.managed_document(arn)?.ok_or_else(|| {
                BrokerError::invalid("policy_arns", format!("{arn} does not exist"))
            })?;
            session_policies.push(doc);
        }

        // AWS ("Available keys for AWS web identity federation"): `<provider>:sub`,
        // `:aud` (the client id that matched), `:amr`, and `aws:FederatedProvider`.
        let host_path = provider.host_path().to_string();
        let mut ctx = base_context(&self.settings.account, meta, now);
        ctx.insert(&format!("{host_path}:sub"), token.claims.sub.clone());
        ctx.insert(&format!("{host_path}:aud"), audience.to_string());
        if !token.claims.amr.is_empty() {
            ctx.insert_multi(&format!("{host_path}:amr"), token.claims.amr.clone());
        }
        ctx.insert("aws:FederatedProvider", provider.arn.clone());
        ctx.insert("sts:RoleSessionName", input.role_session_name.clone());
        let trust = self.compiled(PolicyKind::Trust, &role.assume_role_policy_document)?;
        let request = Request {
            principal: Some(&provider.arn),
            action: ACTION,
            resource: &role.arn,
            context: &ctx,
        };
        let evaluation = policy::evaluate_assume_role(
            &request,
            NamedPolicy {
                name: "trust_policy",
                policy: &trust,
            },
            &PolicySet::default(),
        );
        if evaluation.decision != Decision::Allow {
            return Err(denied(evaluation.reason));
        }

        let session_arn = self
            .settings
            .account
            .assumed_role_arn(&role.name, &input.role_session_name);
        let assumed_role_id = format!("{}:{}", role.id, input.role_session_name);
        let spec = MintSpec::web_identity_session(
            &role,
            &input.role_session_name,
            &session_arn,
            &assumed_role_id,
            &provider.arn,
            &token.claims.sub,
            now,
            duration,
            session_policies,
        );
        let credentials = self.mint(meta, ACTION, params, spec, now).await?;
        Ok(WebIdentityAssumed {
            credentials,
            assumed_role_id,
            arn: session_arn,
            subject: token.claims.sub.clone(),
            audience: audience.to_string(),
            provider: host_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(id: &str) -> OidcProvider {
        OidcProvider {
            v: 1,
            arn: "arn:stint:iam::1:oidc-provider/issuer.test".into(),
            url: "https://issuer.test".into(),
            client_ids: vec!["stint".into()],
            thumbprints: vec![],
            tags: vec![],
            create_date: 0,
            id: id.into(),
            jwks_json: None,
        }
    }

    fn keys(kid: &str) -> Arc<KeySet> {
        // x = 32 bytes of 7, base64url.
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc"}]});
        Arc::new(KeySet::parse(&jwks.to_string()).unwrap())
    }

    #[test]
    fn refresh_is_rate_limited_per_provider_and_reset_by_recreation() {
        let cache = KeyCache::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let p = provider("A");
        assert!(matches!(
            cache.lookup(&p, "k1", t0),
            Lookup::Fetch { stale: None }
        ));
        cache.store(&p, keys("k1"));
        assert!(matches!(cache.lookup(&p, "k1", t0), Lookup::Ready(_)));
        // Unknown kid within the interval: no fetch, the cached keys.
        let soon = t0 + Duration::from_secs(9);
        assert!(matches!(
            cache.lookup(&p, "k2", soon),
            Lookup::Limited(Some(_))
        ));
        let later = t0 + REFRESH_INTERVAL;
        assert!(matches!(
            cache.lookup(&p, "k2", later),
            Lookup::Fetch { stale: Some(_) }
        ));
        assert!(matches!(cache.lookup(&p, "k2", later), Lookup::Limited(_)));
        // The same URL registered again: nothing cached carries over.
        let again = provider("B");
        assert!(matches!(
            cache.lookup(&again, "k1", later),
            Lookup::Fetch { stale: None }
        ));
        cache.forget(&again.arn);
        assert!(matches!(
            cache.lookup(&again, "k1", later),
            Lookup::Fetch { stale: None }
        ));
    }

    #[test]
    fn bounds_name_the_field() {
        let base = WebIdentityInput {
            role_arn: "arn:stint:iam::1:role/r".into(),
            role_session_name: "s".into(),
            web_identity_token: SecretString::new("a.b.c".into()),
            ..Default::default()
        };
        assert!(check_bounds(&base).is_ok());
        let long = |n: usize| "a".repeat(n);
        let cases = [
            (
                WebIdentityInput {
                    role_arn: long(2_049),
                    ..base.clone()
                },
                "role_arn",
            ),
            (
                WebIdentityInput {
                    role_session_name: long(65),
                    ..base.clone()
                },
                "role_session_name",
            ),
            (
                WebIdentityInput {
                    policy: long(2_049),
                    ..base.clone()
                },
                "policy",
            ),
            (
                WebIdentityInput {
                    policy_arns: vec![long(3); 11],
                    ..base.clone()
                },
                "policy_arns",
            ),
            (
                WebIdentityInput {
                    web_identity_token: SecretString::new(long(20_001)),
                    ..base.clone()
                },
                "web_identity_token",
            ),
            (
                WebIdentityInput {
                    web_identity_token: SecretString::new(String::new()),
                    ..base.clone()
                },
                "web_identity_token",
            ),
        ];
        for (input, want) in cases {
            match check_bounds(&input) {
                Err(BrokerError::InvalidInput { field, .. }) => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
