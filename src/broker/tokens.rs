//! Token use cases for apps: decisions (`Authorize`), introspection, revocation, and the
//! authorization of Stint's own admin calls.
//!
//! Revocation rule: a session is revoked when it, or any session it was assumed from
//! (its ancestors, kept on its record, at most [`crate::core::model::MAX_SESSION_ANCESTORS`]), is revoked —
//! by its id, or by a cutoff on its principal or role later than its issue time. Each
//! session record carries its ancestors' ids, principals, roles and issue times, so the
//! rule holds after a parent's own record was swept. Cutoffs only move forward.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::event::Outcome;
use crate::core::model::{Session, SessionLink};
use crate::core::policy::{self, Decision, Request};
use crate::core::token::{Claims, TokenKind};
use crate::store::{self, Table};

use super::caller::{Caller, RESTRICTED_ACTIONS, RequestMeta};
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
pub(crate) struct Revocation {
    pub(crate) v: u32,
    pub(crate) issued_before_ms: i64,
    /// After this, every token it could match has expired; the sweeper removes it.
    pub(crate) keep_until_ms: i64,
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

/// The keys a revocation of `link` is stored under: its id, its principal, its role.
fn revocation_keys(link: &SessionLink) -> Vec<String> {
    let mut keys = vec![
        format!("jti:{}", link.jti),
        format!("principal:{}", link.sub),
    ];
    if link.principal_arn != link.sub {
        keys.push(format!("principal:{}", link.principal_arn));
    }
    if let Some(role) = &link.role_arn {
        keys.push(format!("role:{role}"));
    }
    keys
}

/// The session itself as a link, next to its ancestors.
pub(crate) fn own_link(claims: &Claims, session: &Session) -> SessionLink {
    SessionLink {
        jti: claims.jti.clone(),
        sub: claims.sub.clone(),
        principal_arn: claims.stint.principal_arn.clone(),
        role_arn: claims.stint.role_arn.clone(),
        issued_at: session.issued_at,
    }
}

/// Whether a revocation covers any of `links`: a revoked `jti`, or its principal or role
/// revoked after it was issued (compared to the millisecond the session record holds;
/// `iat` has whole seconds only). `read` fetches a stored revocation (from the store, or
/// through a transaction so the answer is a precondition of what follows).
pub(crate) fn revoked_link<'l>(
    links: impl IntoIterator<Item = &'l SessionLink>,
    mut read: impl FnMut(&str) -> Result<Option<Revocation>, BrokerError>,
) -> Result<Option<&'l SessionLink>, BrokerError> {
    for link in links {
        for key in revocation_keys(link) {
            let Some(entry) = read(&key)? else { continue };
            if key.starts_with("jti:") || link.issued_at < entry.issued_before_ms {
                return Ok(Some(link));
            }
        }
    }
    Ok(None)
}

/// Bounds on an `Authorize` request, checked before anything is logged or matched. The
/// ARN and action limits are IAM's (2,048 characters); the context bounds are Stint's
/// own, generous for real condition keys (AWS's global keys are at most ~50 characters,
/// and a request tag value is at most 256).
pub const MAX_ACTION_CHARS: usize = 2_048;
pub const MAX_RESOURCE_CHARS: usize = 2_048;
pub const MAX_CONTEXT_KEYS: usize = 64;
pub const MAX_CONTEXT_KEY_CHARS: usize = 128;
pub const MAX_CONTEXT_VALUES: usize = 50;
pub const MAX_CONTEXT_VALUE_CHARS: usize = 2_048;

/// Longest target in a `RevokeSession` request (an ARN, or a session id).
const MAX_REVOKE_TARGET_CHARS: usize = 2_048;

fn check_len(field: &str, value: &str, max: usize) -> Result<(), BrokerError> {
    // Bytes bound chars from above: the cheap test first, the exact count only near it.
    if value.len() > max && value.chars().count() > max {
        return Err(BrokerError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Checks an `Authorize` request against the bounds above; the error names the field.
pub(crate) fn check_authorize_bounds(
    action: &str,
    resource: &str,
    context: &[(String, Vec<String>)],
) -> Result<(), BrokerError> {
    check_len("action", action, MAX_ACTION_CHARS)?;
    check_len("resource", resource, MAX_RESOURCE_CHARS)?;
    if context.len() > MAX_CONTEXT_KEYS {
        return Err(BrokerError::invalid(
            "context",
            format!("at most {MAX_CONTEXT_KEYS} entries"),
        ));
    }
    for (key, values) in context {
        check_len("context.key", key, MAX_CONTEXT_KEY_CHARS)?;
        if values.len() > MAX_CONTEXT_VALUES {
            return Err(BrokerError::invalid(
                "context.values",
                format!("at most {MAX_CONTEXT_VALUES} values per key"),
            ));
        }
        for value in values {
            check_len("context.values", value, MAX_CONTEXT_VALUE_CHARS)?;
        }
    }
    Ok(())
}

/// What one `RevokeSession` request names: exactly one target.
enum RevokeTarget<'a> {
    Session(&'a str),
    Principal(&'a str),
    Role(&'a str),
}

impl<'a> RevokeTarget<'a> {
    fn from_request(
        session_id: &'a str,
        principal_arn: &'a str,
        role_arn: &'a str,
    ) -> Result<Self, BrokerError> {
        let given = [
            ("session_id", session_id),
            ("principal_arn", principal_arn),
            ("role_arn", role_arn),
        ];
        for (field, value) in given {
            check_len(field, value, MAX_REVOKE_TARGET_CHARS)?;
        }
        let named: Vec<&str> = given
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(f, _)| *f)
            .collect();
        match (named.as_slice(), session_id, principal_arn, role_arn) {
            (["session_id"], id, _, _) => Ok(Self::Session(id)),
            (["principal_arn"], _, arn, _) => Ok(Self::Principal(arn)),
            (["role_arn"], _, _, arn) => Ok(Self::Role(arn)),
            ([], ..) => Err(BrokerError::invalid(
                "session_id",
                "give exactly one of session_id, principal_arn or role_arn",
            )),
            (many, ..) => Err(BrokerError::invalid(
                "session_id",
                format!(
                    "give exactly one of session_id, principal_arn or role_arn, not {}",
                    many.join(" and ")
                ),
            )),
        }
    }

    fn key(&self) -> String {
        match self {
            Self::Session(id) => format!("jti:{id}"),
            Self::Principal(arn) => format!("principal:{arn}"),
            Self::Role(arn) => format!("role:{arn}"),
        }
    }
}

impl Broker {
    /// Whether this session, or any session it was assumed from, has been revoked.
    pub(crate) fn is_revoked(
        &self,
        claims: &Claims,
        session: &Session,
    ) -> Result<bool, BrokerError> {
        let own = own_link(claims, session);
        let links = session.ancestors.iter().chain(std::iter::once(&own));
        let revoked = revoked_link(links, |key| {
            Ok(store::read::<Revocation>(
                self.store.as_ref(),
                Table::Revocations,
                key,
            )?)
        })?;
        Ok(revoked.is_some())
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
        if caller.is_restricted() && !RESTRICTED_ACTIONS.contains(&action) {
            return Err(BrokerError::AccessDenied {
                action: action.into(),
                resource: resource.into(),
                reason: RESTRICTED_REASON.into(),
            });
        }
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
        check_authorize_bounds(action, resource, context)?;
        if action.is_empty() || !action.contains(':') {
            return Err(BrokerError::invalid(
                "action",
                "must look like service:Action",
            ));
        }
        if resource.is_empty() {
            return Err(BrokerError::invalid("resource", "must be an ARN or *"));
        }
        for (key, _) in context {
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
        }
        let subject = self
            .authenticate_subject(session_token)
            .map_err(|err| match err {
                BrokerError::Unauthenticated(m) => BrokerError::invalid("session_token", m),
                other => other,
            })?;
        if subject.is_restricted() {
            return Ok(AuthorizeOutcome {
                decision: Decision::ImplicitDeny,
                matched: Vec::new(),
                principal_arn: subject.arn().to_string(),
                reason: RESTRICTED_REASON.into(),
            });
        }
        let now = self.now();
        let policies = self.caller_policies(&subject)?;
        let mut ctx = self.caller_context(&subject, meta, now);
        for (key, values) in context {
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
        self.authenticate_subject(token)
            .ok()
            .map(|caller| caller.claims)
    }

    pub fn jwks(&self) -> std::sync::Arc<str> {
        self.keys.jwks()
    }

    /// Revokes one session (`session_id`), or everything issued to a principal or role
    /// before `issued_before` (default: now). Exactly one target per request, authorized
    /// on its own (`stint:RevokeSession` on the principal or role ARN; for a session id,
    /// on the session's principal). A caller may always revoke its own session, and a
    /// user everything issued to itself, without a policy: logging out needs no right.
    /// A stored cutoff only ever moves forward, so a later request cannot bring
    /// revoked sessions back. The revocation and its audit event commit together.
    pub async fn revoke_session(
        &self,
        meta: &RequestMeta,
        caller: &Caller,
        session_id: &str,
        principal_arn: &str,
        role_arn: &str,
        issued_before_ms: Option<i64>,
    ) -> Result<u64, BrokerError> {
        let target = RevokeTarget::from_request(session_id, principal_arn, role_arn)?;
        let now = self.now();
        let now_ms = unix_ms(now);
        let key = target.key();
        // A cutoff in the future counts as now: it may not block sessions not yet issued.
        let cutoff = issued_before_ms.map_or(now_ms + 1, |t| t.min(now_ms + 1));
        let keep_until = now_ms
            + (super::keys::MAX_TOKEN_LIFETIME + self.settings.clock_skew).as_millis() as i64;
        let params = json!({"session_id": session_id, "principal_arn": principal_arn, "role_arn": role_arn, "issued_before_ms": issued_before_ms});
        let revoked = self
            .audited(
                |tx| {
                    let resource = match &target {
                        RevokeTarget::Session(id) => {
                            let session: Option<Session> = tx.get(Table::Sessions, id)?;
                            let session = session
                                .ok_or_else(|| BrokerError::NotFound(format!("session {id}")))?;
                            session.principal_arn
                        }
                        RevokeTarget::Principal(arn) | RevokeTarget::Role(arn) => arn.to_string(),
                    };
                    if !revokes_itself(caller, &target) {
                        self.require(caller, meta, "stint:RevokeSession", &resource)?;
                    }
                    let stored: Option<Revocation> = tx.get(Table::Revocations, &key)?;
                    let revocation = Revocation {
                        v: 1,
                        issued_before_ms: stored
                            .as_ref()
                            .map_or(cutoff, |s| s.issued_before_ms.max(cutoff)),
                        keep_until_ms: stored
                            .as_ref()
                            .map_or(keep_until, |s| s.keep_until_ms.max(keep_until)),
                    };
                    tx.put(Table::Revocations, &key, &revocation);
                    Ok(1)
                },
                |result| {
                    let outcome = match result {
                        Ok(_) => Outcome::Allow,
                        Err(BrokerError::AccessDenied { .. }) => Outcome::Deny,
                        Err(_) => Outcome::Error,
                    };
                    let mut event =
                        self.event(meta, "stint:RevokeSession", caller.arn(), outcome, now);
                    event.params = params.clone();
                    if let Err(err) = result {
                        event.reason = err.to_string();
                    }
                    Some(event)
                },
            )
            .await?;
        // Cached tokens and `WatchRevocations` streams saw it before this call answers
        // (the audit log's applied hook, see `Broker::new`).
        Ok(revoked)
    }
}

/// Whether the target is the caller's own: its session, or for a user everything issued
/// to that user. (An assumed-role ARN is shared by everyone who picks the same session
/// name, so a role session may revoke only itself.)
fn revokes_itself(caller: &Caller, target: &RevokeTarget<'_>) -> bool {
    match target {
        RevokeTarget::Session(id) => *id == caller.jti(),
        RevokeTarget::Principal(arn) => {
            caller.claims.stint.kind == TokenKind::Session && *arn == caller.arn()
        }
        RevokeTarget::Role(_) => false,
    }
}

const RESTRICTED_REASON: &str =
    "this session may only change its password (the password must be changed first)";

// ---- WatchRevocations ------------------------------------------------------------------

/// One revocation as `WatchRevocations` sends it: exactly one of `session_id`,
/// `principal_arn`, `role_arn` is set, or none on the end-of-snapshot marker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationEntry {
    pub session_id: String,
    pub principal_arn: String,
    pub role_arn: String,
    pub issued_before_ms: i64,
    pub keep_until_ms: i64,
    pub end_of_snapshot: bool,
}

/// Bound on the revocations one stream tracks (the sweeper keeps the table to entries
/// whose tokens may still be alive, so a real table is far smaller).
pub const MAX_REVOCATIONS_STREAMED: usize = 100_000;
const REVOCATION_PAGE: usize = 1_000;
/// A stream rescans at least this often, even without a wake-up.
const REVOCATION_RESCAN: std::time::Duration = std::time::Duration::from_secs(5);
const WATCH_ACTION: &str = "stint:WatchRevocations";

fn revocation_entry(key: &str, revocation: &Revocation) -> Option<RevocationEntry> {
    let (kind, target) = key.split_once(':')?;
    let mut entry = RevocationEntry {
        issued_before_ms: revocation.issued_before_ms,
        keep_until_ms: revocation.keep_until_ms,
        ..RevocationEntry::default()
    };
    match kind {
        "jti" => entry.session_id = target.to_string(),
        "principal" => entry.principal_arn = target.to_string(),
        "role" => entry.role_arn = target.to_string(),
        _ => return None,
    }
    Some(entry)
}

/// Every stored revocation, by key (at most [`MAX_REVOCATIONS_STREAMED`]).
fn stored_revocations(
    store: &dyn store::Store,
) -> Result<Vec<(String, RevocationEntry)>, BrokerError> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan(Table::Revocations, b"", after.as_deref(), REVOCATION_PAGE)?;
        let full = page.len() == REVOCATION_PAGE;
        for (key, bytes) in &page {
            let revocation: Revocation = store::decode(Table::Revocations, key, bytes)?;
            let key = String::from_utf8_lossy(key).into_owned();
            if let Some(entry) = revocation_entry(&key, &revocation) {
                out.push((key, entry));
            }
        }
        if out.len() > MAX_REVOCATIONS_STREAMED {
            return Err(BrokerError::LimitExceeded(format!(
                "more than {MAX_REVOCATIONS_STREAMED} revocations in force"
            )));
        }
        match page.last() {
            Some((key, _)) if full => after = Some(key.clone()),
            _ => return Ok(out),
        }
    }
}

/// A `WatchRevocations` stream, holding its slot until it is dropped.
pub struct RevocationWatch {
    entries: tokio_stream::wrappers::ReceiverStream<Result<RevocationEntry, BrokerError>>,
    _slot: super::audit::WatchSlot,
}

impl tokio_stream::Stream for RevocationWatch {
    type Item = Result<RevocationEntry, BrokerError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.entries).poll_next(cx)
    }
}

impl Broker {
    /// Follows revocations: every one in force, an end-of-snapshot marker, then each new
    /// or raised one (woken by [`Broker::revoke_session`], rescanned every few seconds).
    /// Authorized by `stint:WatchRevocations` on `*`; opening is audited, a refusal too.
    /// Streams are capped per caller and in all, like `WatchEvents`.
    pub async fn watch_revocations(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<RevocationWatch, BrokerError> {
        let holder = caller
            .claims
            .stint
            .role_arn
            .as_deref()
            .unwrap_or(caller.arn());
        let opened = self
            .require(caller, meta, WATCH_ACTION, "*")
            .and_then(|()| self.revocation_watches.acquire(holder, "WatchRevocations"));
        let outcome = match &opened {
            Ok(_) => Outcome::Allow,
            Err(BrokerError::AccessDenied { .. } | BrokerError::LimitExceeded(_)) => Outcome::Deny,
            Err(_) => Outcome::Error,
        };
        let mut event = self.event(meta, WATCH_ACTION, caller.arn(), outcome, self.now());
        if let Err(err) = &opened {
            event.reason = err.to_string();
        }
        self.audit.append(event).await?;
        let slot = opened?;

        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let store = self.store.clone();
        let mut changed = self.revocations_changed.subscribe();
        tokio::spawn(async move {
            let mut sent: std::collections::HashMap<String, (i64, i64)> = Default::default();
            let mut snapshot = true;
            loop {
                let current = match stored_revocations(store.as_ref()) {
                    Ok(current) => current,
                    Err(err) => {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                };
                let mut seen = std::collections::HashSet::with_capacity(current.len());
                for (key, entry) in current {
                    let version = (entry.issued_before_ms, entry.keep_until_ms);
                    if sent.get(&key) != Some(&version) {
                        if tx.send(Ok(entry)).await.is_err() {
                            return;
                        }
                        sent.insert(key.clone(), version);
                    }
                    seen.insert(key);
                }
                // Swept entries: their tokens have all expired; forget them.
                sent.retain(|key, _| seen.contains(key));
                if std::mem::take(&mut snapshot) {
                    let marker = RevocationEntry {
                        end_of_snapshot: true,
                        ..RevocationEntry::default()
                    };
                    if tx.send(Ok(marker)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    woke = changed.changed() => if woke.is_err() { return },
                    () = tokio::time::sleep(REVOCATION_RESCAN) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(RevocationWatch {
            entries: tokio_stream::wrappers::ReceiverStream::new(rx),
            _slot: slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: BrokerError) -> String {
        match err {
            BrokerError::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn revoke_takes_exactly_one_target() {
        let cases: &[(&str, &str, &str, Result<&str, &str>)] = &[
            ("ASIA1", "", "", Ok("jti:ASIA1")),
            ("", "arn:p", "", Ok("principal:arn:p")),
            ("", "", "arn:r", Ok("role:arn:r")),
            ("", "", "", Err("session_id")),
            ("ASIA1", "arn:p", "", Err("session_id and principal_arn")),
            ("", "arn:p", "arn:r", Err("principal_arn and role_arn")),
            (
                "ASIA1",
                "arn:p",
                "arn:r",
                Err("session_id and principal_arn and role_arn"),
            ),
        ];
        for (id, principal, role, want) in cases {
            let got = RevokeTarget::from_request(id, principal, role);
            match (got, want) {
                (Ok(target), Ok(key)) => assert_eq!(target.key(), *key),
                (Err(err), Err(needle)) => {
                    assert!(err.to_string().contains(needle), "{err} lacks {needle}")
                }
                (Ok(t), Err(_)) => panic!("{id}/{principal}/{role} accepted as {}", t.key()),
                (Err(e), Ok(_)) => panic!("{id}/{principal}/{role} refused: {e}"),
            }
        }
        let long = "a".repeat(MAX_REVOKE_TARGET_CHARS + 1);
        let err = RevokeTarget::from_request("", &long, "")
            .err()
            .expect("too long");
        assert_eq!(field_of(err), "principal_arn");
    }

    #[test]
    fn authorize_bounds_name_the_field() {
        let long = |n: usize| "é".repeat(n);
        let ctx = |n: usize, key: String, values: Vec<String>| -> Vec<(String, Vec<String>)> {
            (0..n)
                .map(|i| (format!("{key}{i}"), values.clone()))
                .collect()
        };
        let ok_ctx = ctx(
            MAX_CONTEXT_KEYS,
            "k".into(),
            vec![long(MAX_CONTEXT_VALUE_CHARS); 3],
        );
        // Multi-byte characters at the limit are within it (characters, not bytes).
        assert!(
            check_authorize_bounds(&long(MAX_ACTION_CHARS), &long(MAX_RESOURCE_CHARS), &ok_ctx)
                .is_ok()
        );
        type Context = Vec<(String, Vec<String>)>;
        let cases: Vec<(String, String, Context, &str)> = vec![
            (long(MAX_ACTION_CHARS + 1), "*".into(), vec![], "action"),
            (
                "s3:Get".into(),
                long(MAX_RESOURCE_CHARS + 1),
                vec![],
                "resource",
            ),
            (
                "s3:Get".into(),
                "*".into(),
                ctx(MAX_CONTEXT_KEYS + 1, "k".into(), vec![]),
                "context",
            ),
            (
                "s3:Get".into(),
                "*".into(),
                vec![(long(MAX_CONTEXT_KEY_CHARS + 1), vec![])],
                "context.key",
            ),
            (
                "s3:Get".into(),
                "*".into(),
                vec![("k".into(), vec![String::new(); MAX_CONTEXT_VALUES + 1])],
                "context.values",
            ),
            (
                "s3:Get".into(),
                "*".into(),
                vec![("k".into(), vec![long(MAX_CONTEXT_VALUE_CHARS + 1)])],
                "context.values",
            ),
        ];
        for (action, resource, context, field) in cases {
            let err = check_authorize_bounds(&action, &resource, &context).expect_err(field);
            assert_eq!(field_of(err), field);
        }
    }

    fn link(jti: &str, issued_at: i64) -> SessionLink {
        SessionLink {
            jti: jti.into(),
            sub: format!("arn:sub/{jti}"),
            principal_arn: "arn:user/alice".into(),
            role_arn: Some("arn:role/ops".into()),
            issued_at,
        }
    }

    #[test]
    fn a_revoked_ancestor_is_found_and_cutoffs_compare_issue_times() {
        let revocation = |issued_before_ms| Revocation {
            v: 1,
            issued_before_ms,
            keep_until_ms: i64::MAX,
        };
        let chain = [link("root", 1_000), link("child", 2_000)];
        let cases: &[(&str, i64, Option<&str>)] = &[
            ("jti:root", 0, Some("root")),
            ("jti:child", 0, Some("child")),
            ("jti:other", 0, None),
            ("principal:arn:user/alice", 1_500, Some("root")),
            ("principal:arn:user/alice", 1_000, None),
            ("role:arn:role/ops", 2_001, Some("root")),
            ("principal:arn:sub/child", 2_001, Some("child")),
            ("principal:arn:sub/child", 2_000, None),
        ];
        for (stored_key, cutoff, want) in cases {
            let found = revoked_link(&chain, |key| {
                Ok((key == *stored_key).then(|| revocation(*cutoff)))
            })
            .unwrap();
            assert_eq!(
                found.map(|l| l.jti.as_str()),
                *want,
                "{stored_key} < {cutoff}"
            );
        }
    }
}
