//! Token use cases for apps: decisions (`Authorize`), introspection, revocation, and the
//! authorization of Stint's own admin calls.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::event::Outcome;
use crate::core::policy::{self, Decision, Request};
use crate::core::token::Claims;
use crate::store::{self, Table, Tx};

use super::caller::{Caller, RequestMeta};
use super::{Broker, BrokerError, unix_ms};

#[derive(Debug, Clone)]
pub struct AuthorizeOutcome {
    pub decision: Decision,
    pub matched: Vec<String>,
    pub principal_arn: String,
    pub reason: String,
}

/// "Everything issued to X before T" — kept until no such token can still be alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Revocation {
    v: u32,
    issued_before_ms: i64,
    /// After this, every token it could match has expired; the sweeper removes it.
    keep_until_ms: i64,
}

/// Condition keys that describe the session itself. They come from the token only: a
/// request context that could set them would let a caller forge MFA or identity.
const SESSION_KEYS: &[&str] = &[
    "aws:username",
    "aws:userid",
    "aws:principalarn",
    "aws:principaltype",
    "aws:principalaccount",
    "aws:tokenissuetime",
    "aws:multifactorauthpresent",
    "aws:multifactorauthage",
    "aws:sourceidentity",
];

fn is_session_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SESSION_KEYS.contains(&key.as_str()) || key.starts_with("aws:principaltag/")
}

fn revocation_keys(claims: &Claims) -> Vec<String> {
    let mut keys = vec![
        format!("jti:{}", claims.jti),
        format!("principal:{}", claims.sub),
        format!("principal:{}", claims.stint.principal_arn),
    ];
    if let Some(role) = &claims.stint.role_arn {
        keys.push(format!("role:{role}"));
    }
    keys
}

impl Broker {
    /// Whether a revocation covers this session: its `jti`, or its principal or role
    /// revoked after it was issued (compared to the millisecond the session record holds;
    /// `iat` has whole seconds only).
    pub(crate) fn is_revoked(
        &self,
        claims: &Claims,
        session: &crate::core::model::Session,
    ) -> Result<bool, BrokerError> {
        for key in revocation_keys(claims) {
            let Some(entry) =
                store::read::<Revocation>(self.store.as_ref(), Table::Revocations, &key)?
            else {
                continue;
            };
            if key.starts_with("jti:") || session.issued_at < entry.issued_before_ms {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Checks that the caller's effective policies allow `action` on `resource`.
    pub fn require(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        resource: &str,
    ) -> Result<(), BrokerError> {
        self.require_with(caller, meta, action, resource, &[])
    }

    /// [`Self::require`] with the request's own condition keys (`iam:PolicyARN`,
    /// `aws:RequestTag/…`, `aws:ResourceTag/…`, …) added to the caller's context.
    pub fn require_with(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        action: &str,
        resource: &str,
        request_keys: &[(String, Vec<String>)],
    ) -> Result<(), BrokerError> {
        let now = self.now();
        let policies = self.caller_policies(caller)?;
        let mut ctx = self.caller_context(caller, meta, now);
        for (key, values) in request_keys {
            ctx.insert_multi(key, values.clone());
        }
        let request = Request {
            principal: Some(caller.arn()),
            action,
            resource,
            context: &ctx,
        };
        let evaluation = policies.with_set(|set| policy::evaluate(&request, set));
        match evaluation.decision {
            Decision::Allow => Ok(()),
            _ => Err(BrokerError::AccessDenied {
                action: action.into(),
                resource: resource.into(),
                reason: evaluation.reason,
            }),
        }
    }

    /// May the holder of `session_token` do `action` on `resource`, given `context`?
    pub fn authorize(
        &self,
        meta: &RequestMeta,
        session_token: &str,
        action: &str,
        resource: &str,
        context: &[(String, Vec<String>)],
    ) -> Result<AuthorizeOutcome, BrokerError> {
        if action.is_empty() || !action.contains(':') {
            return Err(BrokerError::invalid(
                "action",
                "must look like service:Action",
            ));
        }
        if resource.is_empty() {
            return Err(BrokerError::invalid("resource", "must be an ARN or *"));
        }
        let subject = self.authenticate(session_token).map_err(|err| match err {
            BrokerError::Unauthenticated(m) => BrokerError::invalid("session_token", m),
            other => other,
        })?;
        let now = self.now();
        let policies = self.caller_policies(&subject)?;
        let mut ctx = self.caller_context(&subject, meta, now);
        for (key, values) in context {
            if key.is_empty() {
                return Err(BrokerError::invalid(
                    "context",
                    "a context entry has an empty key",
                ));
            }
            if is_session_key(key) {
                return Err(BrokerError::invalid(
                    "context",
                    format!("{key} describes the session; Stint sets it from the token"),
                ));
            }
            ctx.insert_multi(key, values.clone());
        }
        let request = Request {
            principal: Some(subject.arn()),
            action,
            resource,
            context: &ctx,
        };
        let evaluation = policies.with_set(|set| policy::evaluate(&request, set));
        Ok(AuthorizeOutcome {
            decision: evaluation.decision,
            matched: evaluation.matched.iter().map(|m| m.to_string()).collect(),
            principal_arn: subject.arn().to_string(),
            reason: evaluation.reason,
        })
    }

    /// RFC 7662: inactive tokens say nothing but `active: false`.
    pub fn introspect(&self, token: &str) -> Option<Claims> {
        self.authenticate(token).ok().map(|caller| caller.claims)
    }

    pub fn jwks(&self) -> std::sync::Arc<str> {
        self.keys.jwks()
    }

    /// Revokes one session (`session_id`), or everything issued to a principal or role
    /// before `issued_before` (default: now).
    pub async fn revoke_session(
        &self,
        meta: &RequestMeta,
        caller: &Caller,
        session_id: &str,
        principal_arn: &str,
        role_arn: &str,
        issued_before_ms: Option<i64>,
    ) -> Result<u64, BrokerError> {
        let now = self.now();
        let targets = [
            (!session_id.is_empty()).then(|| format!("jti:{session_id}")),
            (!principal_arn.is_empty()).then(|| format!("principal:{principal_arn}")),
            (!role_arn.is_empty()).then(|| format!("role:{role_arn}")),
        ];
        let keys: Vec<String> = targets.into_iter().flatten().collect();
        if keys.is_empty() {
            return Err(BrokerError::invalid(
                "session_id",
                "give a session_id, a principal_arn or a role_arn",
            ));
        }
        let resource = if !principal_arn.is_empty() {
            principal_arn.to_string()
        } else if !role_arn.is_empty() {
            role_arn.to_string()
        } else {
            let session: Option<crate::core::model::Session> =
                store::read(self.store.as_ref(), Table::Sessions, session_id)?;
            session
                .map(|s| s.principal_arn)
                .ok_or_else(|| BrokerError::NotFound(format!("session {session_id}")))?
        };
        let result = self.require(caller, meta, "stint:RevokeSession", &resource);
        let mut event = self.event(
            meta,
            "stint:RevokeSession",
            caller.arn(),
            Outcome::Allow,
            now,
        );
        event.params = json!({"session_id": session_id, "principal_arn": principal_arn, "role_arn": role_arn, "issued_before_ms": issued_before_ms});
        if let Err(err) = result {
            event.outcome = Outcome::Deny;
            event.reason = err.to_string();
            self.audit.append(event).await?;
            return Err(err);
        }
        let now_ms = unix_ms(now);
        let revocation = Revocation {
            v: 1,
            issued_before_ms: issued_before_ms.unwrap_or(now_ms + 1),
            keep_until_ms: now_ms
                + (super::keys::MAX_TOKEN_LIFETIME + self.settings.clock_skew).as_millis() as i64,
        };
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            for key in &keys {
                tx.put(Table::Revocations, key, &revocation);
            }
            Ok::<_, BrokerError>(())
        })?;
        self.audit.append(event).await?;
        Ok(keys.len() as u64)
    }
}
