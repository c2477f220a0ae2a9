//! STS use cases: log in (`GetSessionToken`), assume a role, say who the caller is, and
//! turn a bearer token back into a [`Caller`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::audit::event::{CredentialInfo, Event, Outcome};
use crate::core::authn::totp;
use crate::core::model::{
    MAX_SESSION_ANCESTORS, MfaDevice, NameKind, RECORD_VERSION, Role, Session, SessionLink, Tag,
    User, name_key, validate_name, validate_tags,
};
use crate::core::policy::{self, Decision, NamedPolicy, PolicyKind, Request};
use crate::core::secret::SecretString;
use crate::core::token::{Claims, StintClaims, TokenKind};
use crate::store::{self, Table, Tx};

use super::caller::{Caller, RequestMeta};
use super::{Broker, BrokerError, unix_ms, unix_secs};

pub const SESSION_DEFAULT: u32 = 43_200;
pub const SESSION_MIN: u32 = 900;
pub const SESSION_MAX: u32 = 129_600;
pub const ROLE_DEFAULT: u32 = 3_600;
pub const ROLE_CHAIN_MAX: u32 = 3_600;

pub enum LoginCredential {
    Password {
        user_name: String,
        password: SecretString,
    },
    AccessKey {
        access_key_id: String,
        secret_access_key: SecretString,
    },
}

pub struct SessionTokenInput {
    pub credential: LoginCredential,
    pub token_code: Option<SecretString>,
    /// 0 = default.
    pub duration_seconds: i32,
}

/// Credentials handed to a caller. The token is a bearer secret: `Debug` redacts it.
#[derive(Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub session_token: String,
    pub expiration: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &"***")
            .field("expiration", &self.expiration)
            .finish()
    }
}

#[derive(Debug, Clone, Default)]
pub struct AssumeRoleInput {
    pub role_arn: String,
    pub role_session_name: String,
    pub duration_seconds: i32,
    pub external_id: String,
    pub token_code: Option<SecretString>,
    /// The MFA device `token_code` is from; empty: any of the caller's enabled devices.
    pub serial_number: String,
    pub policy: String,
    pub policy_arns: Vec<String>,
    pub tags: Vec<Tag>,
    pub transitive_tag_keys: Vec<String>,
    pub source_identity: String,
    /// The minted token's `aud`; empty: the server's own audience (see [`check_audience`]).
    pub audience: String,
}

#[derive(Debug, Clone)]
pub struct AssumedRole {
    pub credentials: Issued,
    pub assumed_role_id: String,
    pub arn: String,
    pub source_identity: String,
}

/// Everything that goes into one minted credential.
pub(super) struct MintSpec {
    kind: TokenKind,
    sub: String,
    principal_arn: String,
    user_id: String,
    role_arn: Option<String>,
    session_name: Option<String>,
    source_identity: Option<String>,
    mfa_auth_time: Option<i64>,
    auth_time: i64,
    amr: Vec<String>,
    tags: BTreeMap<String, String>,
    transitive_tag_keys: Vec<String>,
    chained: bool,
    duration: Duration,
    session_policies: Vec<String>,
    /// The unique id of the user behind the session (see [`Session::principal_id`]).
    principal_id: String,
    /// The sessions this one is assumed from, root first.
    ancestors: Vec<SessionLink>,
    /// May only change its password (see [`Session::restricted`]).
    restricted: bool,
    /// `aud` when it is not the server's own (an app's token, never a Stint session).
    audience: Option<String>,
    /// The web identity token's `sub` (see [`Session::web_identity_subject`]).
    web_identity_subject: Option<String>,
}

impl MintSpec {
    /// A `GetSessionToken` session of an IAM user (the user's tags become principal tags).
    /// A user session gets session policies only to restrict it to changing its password,
    /// so one with any is marked restricted: the rule then holds whatever policies say.
    pub(super) fn user_session(
        user: &User,
        amr: Vec<String>,
        mfa_auth_time: Option<i64>,
        now: SystemTime,
        duration: Duration,
        session_policies: Vec<String>,
    ) -> Self {
        MintSpec {
            kind: TokenKind::Session,
            sub: user.arn.clone(),
            principal_arn: user.arn.clone(),
            user_id: user.id.clone(),
            role_arn: None,
            session_name: None,
            source_identity: None,
            mfa_auth_time,
            auth_time: unix_secs(now),
            amr,
            tags: user
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
            transitive_tag_keys: vec![],
            chained: false,
            duration,
            restricted: !session_policies.is_empty(),
            session_policies,
            principal_id: user.id.clone(),
            ancestors: Vec::new(),
            audience: None,
            web_identity_subject: None,
        }
    }

    /// An `AssumeRoleWithWebIdentity` session: the role's, on behalf of `provider_arn`'s
    /// `subject` (no Stint user behind it, so no principal id and no ancestors).
    #[allow(clippy::too_many_arguments)] // one constructor, each field named at the call
    pub(super) fn web_identity_session(
        role: &Role,
        session_name: &str,
        session_arn: &str,
        assumed_role_id: &str,
        provider_arn: &str,
        subject: &str,
        now: SystemTime,
        duration: Duration,
        session_policies: Vec<String>,
    ) -> Self {
        MintSpec {
            kind: TokenKind::AssumedRole,
            sub: session_arn.to_string(),
            principal_arn: provider_arn.to_string(),
            user_id: assumed_role_id.to_string(),
            role_arn: Some(role.arn.clone()),
            session_name: Some(session_name.to_string()),
            source_identity: None,
            mfa_auth_time: None,
            auth_time: unix_secs(now),
            amr: vec!["web_identity".into()],
            tags: role
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect(),
            transitive_tag_keys: vec![],
            chained: false,
            duration,
            session_policies,
            principal_id: String::new(),
            ancestors: Vec::new(),
            restricted: false,
            audience: None,
            web_identity_subject: Some(subject.to_string()),
        }
    }
}

pub(super) fn duration_in(
    field: &str,
    value: i32,
    default: u32,
    min: u32,
    max: u32,
) -> Result<Duration, BrokerError> {
    let secs = if value == 0 {
        default
    } else {
        u32::try_from(value).unwrap_or(0)
    };
    if secs < min || secs > max {
        return Err(BrokerError::invalid(
            field,
            format!("must be between {min} and {max} seconds, got {value}"),
        ));
    }
    Ok(Duration::from_secs(secs.into()))
}

impl Broker {
    pub(crate) fn enabled_mfa_devices(
        &self,
        user_name: &str,
    ) -> Result<Vec<MfaDevice>, BrokerError> {
        Ok(store::read_page::<MfaDevice>(
            self.store.as_ref(),
            Table::MfaDevices,
            &mfa_prefix(user_name),
            None,
            usize::MAX,
        )?
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.enable_date.is_some())
        .collect())
    }

    /// Verifies a code and records its time step atomically: a code is accepted once.
    pub(crate) fn consume_totp(
        &self,
        user_name: &str,
        serial: &str,
        code: &SecretString,
        now: SystemTime,
    ) -> Result<bool, BrokerError> {
        let key = mfa_key(user_name, serial);
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let Some(mut device) = tx.get::<MfaDevice>(Table::MfaDevices, &key)? else {
                return Ok(false);
            };
            let seed = self.master.open(&device.sealed_seed, &mfa_aad(serial))?;
            let device_now = totp::shifted(now, device.drift_steps);
            match totp::verify(
                seed.expose(),
                code.expose(),
                device_now,
                device.last_used_step,
            ) {
                Ok(step) => {
                    device.last_used_step = Some(step);
                    tx.put(Table::MfaDevices, &key, &device);
                    Ok(true)
                }
                Err(_) => Ok(false),
            }
        })
    }

    /// Signs, records the session, and writes the audit event; answers only once the
    /// event is durable.
    pub(super) async fn mint(
        &self,
        meta: &RequestMeta,
        event_name: &str,
        params: serde_json::Value,
        spec: MintSpec,
        now: SystemTime,
    ) -> Result<Issued, BrokerError> {
        let random: [u8; 16] = self.random()?;
        let jti = crate::core::model::access_key_id("ASIA", &random);
        let iat = unix_secs(now);
        let exp = iat + spec.duration.as_secs() as i64;
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: spec.sub.clone(),
            aud: spec
                .audience
                .clone()
                .unwrap_or_else(|| self.settings.audience.clone()),
            iat,
            nbf: iat,
            exp,
            jti: jti.clone(),
            auth_time: spec.auth_time,
            amr: spec.amr,
            stint: StintClaims {
                kind: spec.kind,
                account: self.settings.account.id.clone(),
                user_id: spec.user_id,
                principal_arn: spec.principal_arn.clone(),
                role_arn: spec.role_arn.clone(),
                session_name: spec.session_name.clone(),
                source_identity: spec.source_identity.clone(),
                mfa_present: spec.mfa_auth_time.is_some(),
                mfa_auth_time: spec.mfa_auth_time,
                tags: spec.tags,
                transitive_tag_keys: spec.transitive_tag_keys,
                chained: spec.chained,
            },
        };
        let signer = self.keys.signer();
        let session_token = signer.sign(&claims)?;
        let session = Session {
            v: RECORD_VERSION,
            jti: jti.clone(),
            principal_arn: spec.principal_arn.clone(),
            role_arn: spec.role_arn.clone(),
            issued_at: unix_ms(now),
            expires_at: exp * 1000,
            session_policies: spec.session_policies,
            principal_id: spec.principal_id,
            ancestors: spec.ancestors,
            restricted: spec.restricted,
            web_identity_subject: spec.web_identity_subject,
        };
        let mut event = self.event(meta, event_name, &spec.principal_arn, Outcome::Allow, now);
        event.params = params;
        event.credential = Some(CredentialInfo {
            session_id: jti.clone(),
            role_arn: spec.role_arn.unwrap_or_default(),
            session_name: spec.session_name.unwrap_or_default(),
            source_identity: spec.source_identity.unwrap_or_default(),
            expires_ms: exp * 1000,
            kid: signer.kid().to_string(),
        });
        // The session record and its audit event are one atomic write. A child session
        // reads its ancestors' revocations in the same transaction: a revocation that
        // lands meanwhile conflicts, and the retry sees it.
        self.audited(
            |tx| {
                let revoked = super::tokens::revoked_link(&session.ancestors, |key| {
                    Ok(tx.get(Table::Revocations, key)?)
                })?;
                if let Some(link) = revoked {
                    return Err(BrokerError::Unauthenticated(format!(
                        "session {} has been revoked",
                        link.jti
                    )));
                }
                tx.put(Table::Sessions, &jti, &session);
                Ok(())
            },
            |result| result.is_ok().then(|| event.clone()),
        )
        .await?;
        Ok(Issued {
            access_key_id: jti,
            session_token,
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(exp as u64),
        })
    }

    /// Verifies a bearer token for Stint itself: signature, issuer, the server's own
    /// audience (a token minted for an app is not a Stint session), expiry, revocation.
    pub fn authenticate(&self, token: &str) -> Result<Caller, BrokerError> {
        self.authenticate_for(token, &|aud| aud == self.settings.audience)
    }

    /// Verifies a token an app presents to `Tokens.Authorize` / `Introspect`: like
    /// [`authenticate`](Self::authenticate), but any audience this server minted is
    /// accepted (checking it against the app is the app's side of the contract).
    pub fn authenticate_subject(&self, token: &str) -> Result<Caller, BrokerError> {
        self.authenticate_for(token, &|_| true)
    }

    fn authenticate_for(
        &self,
        token: &str,
        accept_audience: &dyn Fn(&str) -> bool,
    ) -> Result<Caller, BrokerError> {
        let now = self.now();
        let shared = self.store.shared();
        if shared {
            self.cache.refresh_if_due(self.store.as_ref(), now)?;
        }
        let hash = super::session_cache::token_hash(token);
        let verifier = self.keys.verifier();
        // Read before anything is loaded: a change committed meanwhile bumps them, and
        // the entry made from what was loaded is checked again on its next use.
        let iam_generation = self.cache.iam_generation();
        let revocation_generation = self.cache.revocation_generation();
        match self.cache.lookup(&hash, now, &verifier, shared) {
            super::session_cache::Hit::Fresh(entry)
                if accept_audience(&entry.caller.claims.aud) =>
            {
                return Ok(entry.caller.clone());
            }
            super::session_cache::Hit::Recheck(entry)
                if accept_audience(&entry.caller.claims.aud) =>
            {
                let caller = &entry.caller;
                let own = super::tokens::own_link(&caller.claims, &caller.session);
                let links = caller.session.ancestors.iter().chain(std::iter::once(&own));
                let revoked =
                    super::tokens::revoked_link(links, |key| Ok(self.cache.revocation(key)))?;
                if revoked.is_some() {
                    self.cache.forget(&hash);
                    return Err(BrokerError::Unauthenticated(
                        "session has been revoked".into(),
                    ));
                }
                self.cache.rechecked(&entry, revocation_generation);
                return Ok(entry.caller.clone());
            }
            _ => {}
        }
        let (caller, verifier) =
            self.authenticate_uncached(token, accept_audience, now, verifier)?;
        self.cache.insert(
            hash,
            &caller,
            verifier,
            i64::try_from(self.settings.clock_skew.as_secs()).unwrap_or(i64::MAX),
            iam_generation,
            revocation_generation,
            now,
        );
        Ok(caller)
    }

    /// Full verification: signature and claims, the session record, revocations and the
    /// principal's unique id, from the store. Returns the verifier that accepted it.
    fn authenticate_uncached(
        &self,
        token: &str,
        accept_audience: &dyn Fn(&str) -> bool,
        now: SystemTime,
        verifier: std::sync::Arc<crate::core::token::Verifier>,
    ) -> Result<(Caller, std::sync::Arc<crate::core::token::Verifier>), BrokerError> {
        let (claims, verifier) = match verifier.verify_for(token, now, accept_audience) {
            // Signed by a key another replica created since we last read the keys.
            Err(crate::core::error::Error::UnknownKey(_))
                if self.keys.may_reload_for_unknown_kid(now) =>
            {
                self.reload_keys()?;
                let verifier = self.keys.verifier();
                (verifier.verify_for(token, now, accept_audience), verifier)
            }
            verified => (verified, verifier),
        };
        let claims = claims
            .map_err(|err| BrokerError::Unauthenticated(format!("invalid session token: {err}")))?;
        // Every minted session has a record (written with its audit event); one without
        // is not a session this broker stands behind, so it fails closed.
        let session: Option<Session> =
            store::read(self.store.as_ref(), Table::Sessions, &claims.jti)?;
        let Some(session) = session else {
            return Err(BrokerError::Unauthenticated("unknown session".into()));
        };
        if self.is_revoked(&claims, &session)? {
            return Err(BrokerError::Unauthenticated(
                "session has been revoked".into(),
            ));
        }
        let caller = Caller { claims, session };
        self.check_principal_ids(&caller)?;
        Ok((caller, verifier))
    }

    pub fn get_caller_identity(&self, caller: &Caller) -> (String, String, String) {
        (
            self.settings.account.id.clone(),
            caller.arn().to_string(),
            caller.claims.stint.user_id.clone(),
        )
    }

    /// `sts:AssumeRole`: the role's trust policy decides, with the caller as principal.
    pub async fn assume_role(
        &self,
        meta: &RequestMeta,
        caller: &Caller,
        input: AssumeRoleInput,
    ) -> Result<AssumedRole, BrokerError> {
        check_assume_role_bounds(&input)?;
        let now = self.now();
        let result = self
            .assume_role_inner(meta, caller, &input, now, assume_role_params(&input))
            .await;
        if let Err(err) = &result
            && !matches!(err, BrokerError::AuditUnavailable)
        {
            let outcome = match err {
                BrokerError::AccessDenied { .. } | BrokerError::InvalidCredentials => Outcome::Deny,
                _ => Outcome::Error,
            };
            let mut event = self.event(meta, "sts:AssumeRole", caller.arn(), outcome, now);
            // Built again rather than cloned on every success: failures are the rare case.
            event.params = assume_role_params(&input);
            event.reason = err.to_string();
            self.audit.append(event).await?;
        }
        result
    }

    async fn assume_role_inner(
        &self,
        meta: &RequestMeta,
        caller: &Caller,
        input: &AssumeRoleInput,
        now: SystemTime,
        params: serde_json::Value,
    ) -> Result<AssumedRole, BrokerError> {
        // Structural, whatever the trust policy says: a session that must change its
        // password first may not become anyone else.
        if caller.is_restricted() {
            return Err(BrokerError::AccessDenied {
                action: "sts:AssumeRole".into(),
                resource: input.role_arn.clone(),
                reason:
                    "this session may only change its password (the password must be changed first)"
                        .into(),
            });
        }
        // Every session keeps its ancestors (for revocation); the chain is bounded.
        let mut ancestors = caller.session.ancestors.clone();
        if ancestors.len() >= MAX_SESSION_ANCESTORS {
            return Err(BrokerError::AccessDenied {
                action: "sts:AssumeRole".into(),
                resource: input.role_arn.clone(),
                reason: format!(
                    "role chain too long: a session may descend from at most {MAX_SESSION_ANCESTORS} sessions"
                ),
            });
        }
        ancestors.push(super::tokens::own_link(&caller.claims, &caller.session));
        validate_name(NameKind::RoleSessionName, &input.role_session_name)
            .map_err(|m| BrokerError::invalid("role_session_name", m))?;
        if !input.external_id.is_empty() {
            let len = input.external_id.chars().count();
            if !(2..=1224).contains(&len)
                || !input
                    .external_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
            {
                return Err(BrokerError::invalid(
                    "external_id",
                    "must be 2 to 1224 characters of [\\w+=,.@:/-]",
                ));
            }
        }
        if !input.source_identity.is_empty() {
            validate_name(NameKind::RoleSessionName, &input.source_identity).map_err(|m| {
                BrokerError::invalid(
                    "source_identity",
                    m.replace("role_session_name", "source_identity"),
                )
            })?;
        }
        validate_tags(&input.tags).map_err(|m| BrokerError::invalid("tags", m))?;
        check_audience(&input.audience)?;
        let audience = if input.audience.is_empty() {
            self.settings.audience.clone()
        } else {
            input.audience.clone()
        };
        if input.policy_arns.len() > 10 {
            return Err(BrokerError::invalid(
                "policy_arns",
                "at most 10 managed session policies",
            ));
        }
        if input.policy.chars().count() > 2048 {
            return Err(BrokerError::invalid(
                "policy",
                "session policy must be at most 2048 characters",
            ));
        }
        let role_name = crate::core::model::Arn::parse(&input.role_arn)
            .filter(|a| a.service == "iam" && a.account == self.settings.account.id)
            .and_then(|a| {
                a.kind_and_name()
                    .filter(|(k, _)| *k == "role")
                    .map(|(_, n)| n.to_string())
            })
            .ok_or_else(|| {
                BrokerError::invalid(
                    "role_arn",
                    format!(
                        "{:?} is not a role ARN of account {}",
                        input.role_arn, self.settings.account.id
                    ),
                )
            })?;
        let role: Role = self
            .load_role(&role_name)?
            .filter(|r| r.arn == input.role_arn)
            .ok_or_else(|| BrokerError::NotFound(format!("role {}", input.role_arn)))?;

        let chained = caller.claims.stint.kind == TokenKind::AssumedRole;
        let max = if chained {
            ROLE_CHAIN_MAX
        } else {
            role.max_session_duration as u32
        };
        let duration = duration_in(
            "duration_seconds",
            input.duration_seconds,
            ROLE_DEFAULT.min(max),
            900,
            max,
        )?;

        // Source identity can never change once set, also through chaining.
        let inherited_source = caller.claims.stint.source_identity.clone();
        if let Some(existing) = &inherited_source
            && !input.source_identity.is_empty()
            && &input.source_identity != existing
        {
            return Err(BrokerError::AccessDenied {
                action: "sts:SetSourceIdentity".into(),
                resource: input.role_arn.clone(),
                reason: "source identity is already set for this session chain and cannot change"
                    .into(),
            });
        }
        let source_identity = inherited_source
            .or_else(|| (!input.source_identity.is_empty()).then(|| input.source_identity.clone()));

        // Fresh MFA on AssumeRole, for trust policies that ask for it.
        let mut mfa_auth_time = caller.claims.stint.mfa_auth_time;
        if let Some(code) = &input.token_code {
            let user = caller.user_name().ok_or_else(|| {
                BrokerError::invalid(
                    "token_code",
                    "only IAM user sessions can present an MFA code",
                )
            })?;
            let mut ok = false;
            let devices = self.enabled_mfa_devices(user)?.into_iter().filter(|d| {
                input.serial_number.is_empty() || d.serial_number == input.serial_number
            });
            for device in devices {
                if self.consume_totp(user, &device.serial_number, code, now)? {
                    ok = true;
                    break;
                }
            }
            if !ok {
                return Err(BrokerError::InvalidCredentials);
            }
            mfa_auth_time = Some(unix_secs(now));
        }

        // Session tags: the caller's transitive tags carry over and cannot be overridden.
        let mut tags: BTreeMap<String, String> = BTreeMap::new();
        let mut transitive: Vec<String> = Vec::new();
        if chained {
            for key in &caller.claims.stint.transitive_tag_keys {
                if let Some(value) = caller.claims.stint.tags.get(key) {
                    tags.insert(key.clone(), value.clone());
                    transitive.push(key.clone());
                }
            }
        }
        for tag in &input.tags {
            if transitive.iter().any(|k| k.eq_ignore_ascii_case(&tag.key)) {
                return Err(BrokerError::invalid(
                    "tags",
                    format!(
                        "tag {:?} is transitive from the calling session and cannot be overridden",
                        tag.key
                    ),
                ));
            }
            tags.insert(tag.key.clone(), tag.value.clone());
        }
        for key in &input.transitive_tag_keys {
            if !input.tags.iter().any(|t| &t.key == key) {
                return Err(BrokerError::invalid(
                    "transitive_tag_keys",
                    format!("{key:?} is not one of the session tags"),
                ));
            }
            transitive.push(key.clone());
        }

        // Session policies, validated now.
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

        // The trust decision.
        let mut ctx = self.caller_context(caller, meta, now);
        if let Some(t) = mfa_auth_time {
            ctx.insert("aws:MultiFactorAuthPresent", "true");
            ctx.insert(
                "aws:MultiFactorAuthAge",
                (unix_secs(now) - t).max(0).to_string(),
            );
        }
        if !input.external_id.is_empty() {
            ctx.insert("sts:ExternalId", input.external_id.clone());
        }
        ctx.insert("sts:RoleSessionName", input.role_session_name.clone());
        // Stint's analogue of the web-identity `aud` keys: which app the token is for,
        // the server's own audience when the request names none.
        ctx.insert("stint:Audience", audience.clone());
        if let Some(source) = &source_identity {
            ctx.insert("sts:SourceIdentity", source.clone());
        }
        for tag in &input.tags {
            ctx.insert(&format!("aws:RequestTag/{}", tag.key), tag.value.clone());
        }
        if !input.tags.is_empty() {
            ctx.insert_multi(
                "aws:TagKeys",
                input.tags.iter().map(|t| t.key.clone()).collect(),
            );
        }
        let trust = self.compiled(PolicyKind::Trust, &role.assume_role_policy_document)?;
        let caller_policies = self.caller_policies(caller)?;
        let request = Request {
            principal: Some(caller.arn()),
            action: "sts:AssumeRole",
            resource: &role.arn,
            context: &ctx,
        };
        let evaluation = caller_policies.with_set(|set| {
            policy::evaluate_assume_role(
                &request,
                NamedPolicy {
                    name: "trust_policy",
                    policy: &trust,
                },
                set,
            )
        });
        if evaluation.decision != Decision::Allow {
            return Err(BrokerError::AccessDenied {
                action: "sts:AssumeRole".into(),
                resource: role.arn.clone(),
                reason: evaluation.reason,
            });
        }
        // AWS ("Passing session tags in AWS STS"; "Monitor and control actions taken with
        // assumed roles"): passing session tags needs sts:TagSession, setting a source
        // identity needs sts:SetSourceIdentity, each decided like sts:AssumeRole (trust
        // policy, plus the caller's policies where the trust names only the account),
        // with aws:RequestTag/*, aws:TagKeys and sts:SourceIdentity in the context.
        let extra_actions = [
            (!input.tags.is_empty(), "sts:TagSession"),
            (!input.source_identity.is_empty(), "sts:SetSourceIdentity"),
        ];
        for (needed, action) in extra_actions {
            if !needed {
                continue;
            }
            let request = Request { action, ..request };
            let evaluation = caller_policies.with_set(|set| {
                policy::evaluate_assume_role(
                    &request,
                    NamedPolicy {
                        name: "trust_policy",
                        policy: &trust,
                    },
                    set,
                )
            });
            if evaluation.decision != Decision::Allow {
                return Err(BrokerError::AccessDenied {
                    action: action.into(),
                    resource: role.arn.clone(),
                    reason: evaluation.reason,
                });
            }
        }

        let session_arn = self
            .settings
            .account
            .assumed_role_arn(&role.name, &input.role_session_name);
        let assumed_role_id = format!("{}:{}", role.id, input.role_session_name);
        // Role tags are the principal tags of the session; session tags override them.
        let mut all_tags: BTreeMap<String, String> = role
            .tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        all_tags.extend(tags);
        let spec = MintSpec {
            kind: TokenKind::AssumedRole,
            sub: session_arn.clone(),
            principal_arn: caller.claims.stint.principal_arn.clone(),
            user_id: assumed_role_id.clone(),
            role_arn: Some(role.arn.clone()),
            session_name: Some(input.role_session_name.clone()),
            source_identity: source_identity.clone(),
            mfa_auth_time,
            auth_time: caller.claims.auth_time,
            amr: caller.claims.amr.clone(),
            tags: all_tags,
            transitive_tag_keys: transitive,
            chained,
            duration,
            session_policies,
            principal_id: match caller.claims.stint.kind {
                TokenKind::Session => caller.claims.stint.user_id.clone(),
                TokenKind::AssumedRole => caller.session.principal_id.clone(),
            },
            ancestors,
            restricted: false,
            audience: (audience != self.settings.audience).then_some(audience),
            web_identity_subject: None,
        };
        let credentials = self.mint(meta, "sts:AssumeRole", params, spec, now).await?;
        Ok(AssumedRole {
            credentials,
            assumed_role_id,
            arn: session_arn,
            source_identity: source_identity.unwrap_or_default(),
        })
    }

    pub(crate) fn event(
        &self,
        meta: &RequestMeta,
        name: &str,
        principal: &str,
        outcome: Outcome,
        now: SystemTime,
    ) -> Event {
        let mut event = Event::new(unix_ms(now), name, outcome);
        event.request_id = meta.request_id.clone();
        event.principal_arn = principal.to_string();
        event.source_ip = meta.source_ip.map(|ip| ip.to_string()).unwrap_or_default();
        event.user_agent = meta.user_agent.clone();
        event
    }
}

/// What the audit event of an `AssumeRole` records of its request (no secrets: only
/// whether an external id, MFA code or inline policy was given).
fn assume_role_params(input: &AssumeRoleInput) -> serde_json::Value {
    json!({
        "role_arn": input.role_arn,
        "role_session_name": input.role_session_name,
        "duration_seconds": input.duration_seconds,
        "external_id_present": !input.external_id.is_empty(),
        "mfa": input.token_code.is_some(),
        "policy_present": !input.policy.is_empty(),
        "policy_arns": input.policy_arns,
        "tags": input.tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect::<Vec<_>>(),
        "source_identity": input.source_identity,
        "audience": input.audience,
    })
}

/// Longest ARN Stint accepts in a request (IAM's limit for ARNs and policy ARNs).
const MAX_ARN_CHARS: usize = 2_048;

/// Size bounds on an `AssumeRole` request, checked before anything is logged or matched
/// (the finer rules, with the values in their messages, come after). The limits are
/// STS's: session name 64, external id 1,224, source identity 64, inline policy 2,048,
/// at most 10 policy ARNs and 50 session tags (key 128, value 256 characters).
fn check_assume_role_bounds(input: &AssumeRoleInput) -> Result<(), BrokerError> {
    fn too_long(value: &str, max: usize) -> bool {
        value.len() > max && value.chars().count() > max
    }
    let fields = [
        ("role_arn", input.role_arn.as_str(), MAX_ARN_CHARS),
        ("role_session_name", &input.role_session_name, 64),
        ("external_id", &input.external_id, 1_224),
        ("source_identity", &input.source_identity, 64),
        ("policy", &input.policy, 2_048),
        ("serial_number", &input.serial_number, 256),
        ("audience", &input.audience, MAX_AUDIENCE_CHARS),
        (
            "token_code",
            input.token_code.as_ref().map_or("", |c| c.expose()),
            16,
        ),
    ];
    for (field, value, max) in fields {
        if too_long(value, max) {
            return Err(BrokerError::invalid(
                field,
                format!("must be at most {max} characters"),
            ));
        }
    }
    if input.policy_arns.len() > 10 {
        return Err(BrokerError::invalid(
            "policy_arns",
            "at most 10 managed session policies",
        ));
    }
    if input.policy_arns.iter().any(|a| too_long(a, MAX_ARN_CHARS)) {
        return Err(BrokerError::invalid(
            "policy_arns",
            format!("each must be at most {MAX_ARN_CHARS} characters"),
        ));
    }
    if input.tags.len() > 50 {
        return Err(BrokerError::invalid("tags", "at most 50 session tags"));
    }
    if input
        .tags
        .iter()
        .any(|t| too_long(&t.key, 128) || too_long(&t.value, 256))
    {
        return Err(BrokerError::invalid(
            "tags",
            "keys must be at most 128 and values at most 256 characters",
        ));
    }
    if input.transitive_tag_keys.len() > 50 {
        return Err(BrokerError::invalid(
            "transitive_tag_keys",
            "at most 50 keys",
        ));
    }
    if input.transitive_tag_keys.iter().any(|k| too_long(k, 128)) {
        return Err(BrokerError::invalid(
            "transitive_tag_keys",
            "each must be at most 128 characters",
        ));
    }
    Ok(())
}

/// Longest `audience` an `AssumeRole` request may name.
pub const MAX_AUDIENCE_CHARS: usize = 256;

/// An app audience: 1..=256 printable ASCII characters without spaces (it is matched by
/// policy conditions and compared byte for byte by verifiers), or empty for the default.
pub(crate) fn check_audience(audience: &str) -> Result<(), BrokerError> {
    if audience.len() > MAX_AUDIENCE_CHARS {
        return Err(BrokerError::invalid(
            "audience",
            format!("must be at most {MAX_AUDIENCE_CHARS} characters"),
        ));
    }
    if !audience.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BrokerError::invalid(
            "audience",
            "must be printable ASCII without spaces (e.g. https://app.example.com or billing)",
        ));
    }
    Ok(())
}

/// The only rights of a session whose password must be changed first.
pub(super) const CHANGE_PASSWORD_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ChangePasswordOnly","Effect":"Allow","Action":["iam:ChangePassword","iam:GetAccountPasswordPolicy","sts:GetCallerIdentity"],"Resource":"*"}]}"#;

pub(crate) fn mfa_prefix(user_name: &str) -> String {
    format!("{}/", name_key(user_name))
}

pub(crate) fn mfa_key(user_name: &str, serial: &str) -> String {
    format!("{}{serial}", mfa_prefix(user_name))
}

pub(crate) fn mfa_aad(serial: &str) -> Vec<u8> {
    format!("stint-mfa-seed:{serial}").into_bytes()
}

/// Access-key secrets are 240 random bits: a keyed SHA-256 is as safe as a slow hash and
/// keeps service logins cheap.
pub(crate) fn access_key_hash(access_key_id: &str, secret: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("stint-access-key\n{access_key_id}\n{secret}").as_bytes(),
    );
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_rules() {
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("billing", true),
            ("https://app.example.com/api", true),
            (&"a".repeat(256), true),
            (&"a".repeat(257), false),
            ("two words", false),
            ("tab\there", false),
            ("caf\u{e9}", false),
            ("line\nbreak", false),
        ];
        for (audience, ok) in cases {
            assert_eq!(check_audience(audience).is_ok(), *ok, "{audience:?}");
        }
    }

    #[test]
    fn assume_role_bounds_name_the_field() {
        let long = |n: usize| "a".repeat(n);
        let tag = |key: String, value: String| Tag { key, value };
        let base = AssumeRoleInput {
            role_arn: "arn:stint:iam::000000000000:role/r".into(),
            role_session_name: "s1".into(),
            ..AssumeRoleInput::default()
        };
        assert!(check_assume_role_bounds(&base).is_ok());
        let cases: Vec<(AssumeRoleInput, &str)> = vec![
            (
                AssumeRoleInput {
                    role_arn: long(2_049),
                    ..base.clone()
                },
                "role_arn",
            ),
            (
                AssumeRoleInput {
                    role_session_name: long(65),
                    ..base.clone()
                },
                "role_session_name",
            ),
            (
                AssumeRoleInput {
                    external_id: long(1_225),
                    ..base.clone()
                },
                "external_id",
            ),
            (
                AssumeRoleInput {
                    source_identity: long(65),
                    ..base.clone()
                },
                "source_identity",
            ),
            (
                AssumeRoleInput {
                    policy: long(2_049),
                    ..base.clone()
                },
                "policy",
            ),
            (
                AssumeRoleInput {
                    serial_number: long(257),
                    ..base.clone()
                },
                "serial_number",
            ),
            (
                AssumeRoleInput {
                    audience: long(257),
                    ..base.clone()
                },
                "audience",
            ),
            (
                AssumeRoleInput {
                    token_code: Some(SecretString::new(long(17))),
                    ..base.clone()
                },
                "token_code",
            ),
            (
                AssumeRoleInput {
                    policy_arns: vec![long(5); 11],
                    ..base.clone()
                },
                "policy_arns",
            ),
            (
                AssumeRoleInput {
                    policy_arns: vec![long(2_049)],
                    ..base.clone()
                },
                "policy_arns",
            ),
            (
                AssumeRoleInput {
                    tags: vec![tag("k".into(), "v".into()); 51],
                    ..base.clone()
                },
                "tags",
            ),
            (
                AssumeRoleInput {
                    tags: vec![tag(long(129), "v".into())],
                    ..base.clone()
                },
                "tags",
            ),
            (
                AssumeRoleInput {
                    tags: vec![tag("k".into(), long(257))],
                    ..base.clone()
                },
                "tags",
            ),
            (
                AssumeRoleInput {
                    transitive_tag_keys: vec!["k".into(); 51],
                    ..base.clone()
                },
                "transitive_tag_keys",
            ),
            (
                AssumeRoleInput {
                    transitive_tag_keys: vec![long(129)],
                    ..base.clone()
                },
                "transitive_tag_keys",
            ),
        ];
        for (input, want) in cases {
            match check_assume_role_bounds(&input) {
                Err(BrokerError::InvalidInput { field, message }) => {
                    assert_eq!(field, want);
                    assert!(message.len() < 100, "{message}");
                }
                other => panic!("{want}: {other:?}"),
            }
        }
    }
}
