//! STS use cases: log in (`GetSessionToken`), assume a role, say who the caller is, and
//! turn a bearer token back into a [`Caller`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::audit::event::{CredentialInfo, Event, Outcome};
use crate::core::authn::lockout::{LockoutState, LockoutTransition};
use crate::core::authn::{password, totp};
use crate::core::model::{
    AccessKey, AccessKeyStatus, MfaDevice, NameKind, RECORD_VERSION, Role, Session, Tag, User,
    name_key, validate_name, validate_tags,
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
    pub policy: String,
    pub policy_arns: Vec<String>,
    pub tags: Vec<Tag>,
    pub transitive_tag_keys: Vec<String>,
    pub source_identity: String,
}

#[derive(Debug, Clone)]
pub struct AssumedRole {
    pub credentials: Issued,
    pub assumed_role_id: String,
    pub arn: String,
    pub source_identity: String,
}

/// Everything that goes into one minted credential.
struct MintSpec {
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
}

impl MintSpec {
    /// A `GetSessionToken` session of an IAM user (the user's tags become principal tags).
    fn user_session(
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
            session_policies,
        }
    }
}

fn duration_in(
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

pub(crate) fn lockout_keys(user_name: &str, meta: &RequestMeta) -> Vec<String> {
    let mut keys = vec![format!("user:{}", name_key(user_name))];
    if let Some(ip) = meta.source_ip {
        keys.push(format!("ip:{ip}"));
    }
    keys
}

impl Broker {
    /// Password (+ TOTP) or access key → session credentials.
    pub async fn get_session_token(
        &self,
        meta: &RequestMeta,
        input: SessionTokenInput,
    ) -> Result<Issued, BrokerError> {
        let duration = duration_in(
            "duration_seconds",
            input.duration_seconds,
            SESSION_DEFAULT,
            SESSION_MIN,
            SESSION_MAX,
        )?;
        let (who, result) = match input.credential {
            LoginCredential::Password {
                user_name,
                password,
            } => {
                let result = self
                    .login_with_password(meta, &user_name, password, input.token_code, duration)
                    .await;
                (user_name, result)
            }
            LoginCredential::AccessKey {
                access_key_id,
                secret_access_key,
            } => {
                let result = self
                    .login_with_access_key(meta, &access_key_id, secret_access_key, duration)
                    .await;
                (access_key_id, result)
            }
        };
        // Refusals are audited where they are decided; any other failure (e.g. the store
        // refusing a write) is audited here, so it too lands in the log or, when the log
        // cannot take it either, answers "audit unavailable" and flips health.
        if let Err(err) = &result
            && !matches!(
                err,
                BrokerError::InvalidCredentials
                    | BrokerError::LockedOut { .. }
                    | BrokerError::AuditUnavailable
            )
        {
            self.audit_login(
                meta,
                &who,
                Outcome::Error,
                &err.to_string(),
                json!({ "duration_seconds": duration.as_secs() }),
                None,
            )
            .await?;
        }
        result
    }

    async fn login_with_password(
        &self,
        meta: &RequestMeta,
        user_name: &str,
        password: SecretString,
        token_code: Option<SecretString>,
        duration: Duration,
    ) -> Result<Issued, BrokerError> {
        let now = self.now();
        let params = json!({ "user_name": user_name, "duration_seconds": duration.as_secs(), "mfa": token_code.is_some() });
        let keys = lockout_keys(user_name, meta);
        if let Err(retry_after) = self.lockout_check(meta, &keys, now).await? {
            self.audit_login(
                meta,
                user_name,
                Outcome::Deny,
                "locked out",
                params.clone(),
                None,
            )
            .await?;
            return Err(BrokerError::LockedOut { retry_after });
        }

        let user = self.load_user(user_name)?;
        let phc = user
            .as_ref()
            .and_then(|u| u.login_profile.as_ref())
            .map(|p| p.phc.clone())
            .unwrap_or_else(|| self.dummy_phc.clone());
        let has_profile = user.as_ref().is_some_and(|u| u.login_profile.is_some());
        let password_for_rehash = password.clone();
        let verified = self
            .hash_job(move || password::verify_password(&password, &phc))
            .await??;
        let password_ok = verified && has_profile;

        // The MFA check runs only after a correct password, so a code is never burned by
        // someone who does not know the password.
        let mfa = match (&user, password_ok) {
            (Some(user), true) => self.check_login_mfa(user, token_code.as_ref(), now)?,
            _ => MfaCheck::Failed,
        };
        let user = match (user, mfa) {
            (Some(user), MfaCheck::Passed | MfaCheck::NotEnrolled) if password_ok => user,
            _ => {
                let reason = if password_ok {
                    "bad or replayed MFA code"
                } else {
                    "bad user name or password"
                };
                self.lockout_fail(meta, &keys, user_name, now).await?;
                self.audit_login(meta, user_name, Outcome::Deny, reason, params, None)
                    .await?;
                return Err(BrokerError::InvalidCredentials);
            }
        };
        self.lockout_reset(&keys)?;
        let mfa_auth_time = matches!(mfa, MfaCheck::Passed).then(|| unix_secs(now));
        let must_change = self.password_must_change(&user, now)?;
        if must_change == PasswordState::HardExpired {
            self.audit_login(
                meta,
                user_name,
                Outcome::Deny,
                "password expired; an administrator must reset it",
                params,
                None,
            )
            .await?;
            return Err(BrokerError::InvalidCredentials);
        }
        self.touch_password_use(&user, now)?;
        self.upgrade_hash_if_needed(&user, &password_for_rehash)
            .await?;
        let amr = if mfa_auth_time.is_some() {
            vec!["pwd".into(), "otp".into()]
        } else {
            vec!["pwd".into()]
        };
        // An expired or reset password buys a session that can only change it.
        let restriction = if must_change == PasswordState::MustChange {
            vec![CHANGE_PASSWORD_ONLY.to_string()]
        } else {
            vec![]
        };
        let spec = MintSpec::user_session(&user, amr, mfa_auth_time, now, duration, restriction);
        self.mint(meta, "sts:GetSessionToken", params, spec, now)
            .await
    }

    fn password_must_change(
        &self,
        user: &User,
        now: SystemTime,
    ) -> Result<PasswordState, BrokerError> {
        let Some(profile) = &user.login_profile else {
            return Ok(PasswordState::Fine);
        };
        let policy = self.password_policy()?;
        let age_ms = unix_ms(now) - profile.last_changed;
        let expired =
            policy.max_password_age > 0 && age_ms > i64::from(policy.max_password_age) * 86_400_000;
        Ok(
            match (expired, policy.hard_expiry, profile.password_reset_required) {
                (true, true, _) => PasswordState::HardExpired,
                (true, false, _) | (false, _, true) => PasswordState::MustChange,
                _ => PasswordState::Fine,
            },
        )
    }

    /// Re-hashes a password made with older argon2 parameters, now that we have it.
    async fn upgrade_hash_if_needed(
        &self,
        user: &User,
        password: &SecretString,
    ) -> Result<(), BrokerError> {
        let Some(profile) = &user.login_profile else {
            return Ok(());
        };
        let params = self.settings.argon2;
        if !password::needs_rehash(&profile.phc, &params) {
            return Ok(());
        }
        let salt: [u8; 16] = self.random()?;
        let password = password.clone();
        let phc = self
            .hash_job(move || password::hash_password(&password, &salt, &params))
            .await??;
        let old = profile.phc.clone();
        let key = name_key(&user.name);
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            if let Some(mut user) = tx.get::<User>(Table::Users, &key)?
                && let Some(profile) = user.login_profile.as_mut()
                && profile.phc == old
            {
                profile.phc = phc.clone();
                tx.put(Table::Users, &key, &user);
            }
            Ok::<_, BrokerError>(())
        })
    }

    async fn login_with_access_key(
        &self,
        meta: &RequestMeta,
        access_key_id: &str,
        secret: SecretString,
        duration: Duration,
    ) -> Result<Issued, BrokerError> {
        let now = self.now();
        let params =
            json!({ "access_key_id": access_key_id, "duration_seconds": duration.as_secs() });
        let keys = lockout_keys(access_key_id, meta);
        if let Err(retry_after) = self.lockout_check(meta, &keys, now).await? {
            self.audit_login(
                meta,
                access_key_id,
                Outcome::Deny,
                "locked out",
                params,
                None,
            )
            .await?;
            return Err(BrokerError::LockedOut { retry_after });
        }
        let record: Option<AccessKey> =
            store::read(self.store.as_ref(), Table::AccessKeys, access_key_id)?;
        let expected = record
            .as_ref()
            .map(|k| k.secret_hash.clone())
            .unwrap_or_else(|| access_key_hash("unknown", "unknown"));
        let presented = access_key_hash(access_key_id, secret.expose());
        let matches = bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            presented.as_bytes(),
        ));
        let user = match record {
            Some(key) if matches && key.status == AccessKeyStatus::Active => {
                self.load_user(&key.user_name)?
            }
            _ => None,
        };
        let Some(user) = user else {
            self.lockout_fail(meta, &keys, access_key_id, now).await?;
            self.audit_login(
                meta,
                access_key_id,
                Outcome::Deny,
                "bad or inactive access key",
                params,
                None,
            )
            .await?;
            return Err(BrokerError::InvalidCredentials);
        };
        self.lockout_reset(&keys)?;
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            if let Some(mut key) = tx.get::<AccessKey>(Table::AccessKeys, access_key_id)? {
                key.last_used = Some(unix_ms(now));
                tx.put(Table::AccessKeys, access_key_id, &key);
            }
            Ok::<_, BrokerError>(())
        })?;
        let spec = MintSpec::user_session(&user, vec!["key".into()], None, now, duration, vec![]);
        self.mint(meta, "sts:GetSessionToken", params, spec, now)
            .await
    }

    fn check_login_mfa(
        &self,
        user: &User,
        code: Option<&SecretString>,
        now: SystemTime,
    ) -> Result<MfaCheck, BrokerError> {
        let devices = self.enabled_mfa_devices(&user.name)?;
        if devices.is_empty() {
            // A code for a user without a device is a mistake, not a second factor.
            return Ok(if code.is_some() {
                MfaCheck::Failed
            } else {
                MfaCheck::NotEnrolled
            });
        }
        let Some(code) = code else {
            return Ok(MfaCheck::Failed);
        };
        for device in devices {
            if self.consume_totp(&user.name, &device.serial_number, code, now)? {
                return Ok(MfaCheck::Passed);
            }
        }
        Ok(MfaCheck::Failed)
    }

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

    fn touch_password_use(&self, user: &User, now: SystemTime) -> Result<(), BrokerError> {
        let key = name_key(&user.name);
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            if let Some(mut user) = tx.get::<User>(Table::Users, &key)? {
                if let Some(profile) = user.login_profile.as_mut() {
                    profile.last_used = Some(unix_ms(now));
                }
                tx.put(Table::Users, &key, &user);
            }
            Ok::<_, BrokerError>(())
        })
    }

    /// `Err(wait)` while any of `keys` is locked or backing off. A lockout that has been
    /// served is cleared here and its end audited.
    pub(crate) async fn lockout_check(
        &self,
        meta: &RequestMeta,
        keys: &[String],
        now: SystemTime,
    ) -> Result<Result<(), Duration>, BrokerError> {
        let mut longest: Option<Duration> = None;
        for key in keys {
            let state: Option<LockoutState> =
                store::read(self.store.as_ref(), Table::Lockouts, key)?;
            let Some(state) = state else { continue };
            if let Some(ended) = state.served_lock(now) {
                let cleared = store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
                    let current: Option<LockoutState> = tx.get(Table::Lockouts, key)?;
                    let still_served =
                        current.as_ref().and_then(|c| c.served_lock(now)) == Some(ended);
                    if still_served {
                        tx.delete(Table::Lockouts, key);
                    }
                    Ok::<_, BrokerError>(still_served)
                })?;
                if cleared {
                    let principal = self.lockout_principal(key, key)?;
                    let mut event =
                        self.event(meta, "stint:LockoutEnded", &principal, Outcome::Allow, now);
                    event.reason = format!("{key} lockout ended at {}", unix_ms(ended));
                    self.audit.append(event).await?;
                }
                continue;
            }
            if let Err(wait) = state.check(now, &self.settings.lockout) {
                longest = Some(longest.map_or(wait, |l| l.max(wait)));
            }
        }
        Ok(longest.map_or(Ok(()), Err))
    }

    pub(crate) async fn lockout_fail(
        &self,
        meta: &RequestMeta,
        keys: &[String],
        who: &str,
        now: SystemTime,
    ) -> Result<(), BrokerError> {
        let policy = self.settings.lockout;
        let locked = store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let mut locked = Vec::new();
            for key in keys {
                let mut state: LockoutState = tx.get(Table::Lockouts, key)?.unwrap_or_default();
                if let LockoutTransition::Locked { .. } = state.record_failure(now, &policy) {
                    locked.push(key.clone());
                }
                tx.put(Table::Lockouts, key, &state);
            }
            Ok::<_, BrokerError>(locked)
        })?;
        for key in locked {
            let principal = self.lockout_principal(&key, who)?;
            let mut event = self.event(meta, "stint:Lockout", &principal, Outcome::Deny, now);
            event.reason = format!("{key} locked for {} s", policy.lockout_seconds);
            self.audit.append(event).await?;
        }
        Ok(())
    }

    /// The ARN a lockout key is about: the user's, or the access key owner's; otherwise
    /// (a source address, an unknown name) the key itself.
    fn lockout_principal(&self, key: &str, fallback: &str) -> Result<String, BrokerError> {
        let Some(name) = key.strip_prefix("user:") else {
            return Ok(fallback.to_string());
        };
        if let Some(user) = self.load_user(name)? {
            return Ok(user.arn);
        }
        let access_key: Option<AccessKey> = store::read(
            self.store.as_ref(),
            Table::AccessKeys,
            &name.to_ascii_uppercase(),
        )?;
        Ok(match access_key.map(|k| self.load_user(&k.user_name)) {
            Some(Ok(Some(user))) => user.arn,
            _ => fallback.to_string(),
        })
    }

    pub(crate) fn lockout_reset(&self, keys: &[String]) -> Result<(), BrokerError> {
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            for key in keys {
                if tx.get_raw(Table::Lockouts, key.as_bytes())?.is_some() {
                    tx.delete(Table::Lockouts, key);
                }
            }
            Ok::<_, BrokerError>(())
        })
    }

    async fn audit_login(
        &self,
        meta: &RequestMeta,
        who: &str,
        outcome: Outcome,
        reason: &str,
        params: serde_json::Value,
        principal: Option<&str>,
    ) -> Result<(), BrokerError> {
        let mut event = self.event(
            meta,
            "sts:GetSessionToken",
            principal.unwrap_or(who),
            outcome,
            self.now(),
        );
        event.reason = reason.into();
        event.params = params;
        self.audit.append(event).await?;
        Ok(())
    }

    /// Signs, records the session, and writes the audit event; answers only once the
    /// event is durable.
    async fn mint(
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
            aud: self.settings.audience.clone(),
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
        // The session record and its audit event are one atomic write.
        let session_write = (
            Table::Sessions,
            jti.as_bytes().to_vec(),
            Some(store::encode(&session)),
        );
        self.audit.append_with(event, vec![session_write]).await?;
        Ok(Issued {
            access_key_id: jti,
            session_token,
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(exp as u64),
        })
    }

    /// Verifies a bearer token: signature, issuer, audience, expiry, and revocation.
    pub fn authenticate(&self, token: &str) -> Result<Caller, BrokerError> {
        let claims = self
            .keys
            .verifier()
            .verify(token, self.now())
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
        Ok(Caller {
            claims,
            session_policies: session.session_policies,
        })
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
        let now = self.now();
        let params = json!({
            "role_arn": input.role_arn,
            "role_session_name": input.role_session_name,
            "duration_seconds": input.duration_seconds,
            "external_id_present": !input.external_id.is_empty(),
            "mfa": input.token_code.is_some(),
            "policy_present": !input.policy.is_empty(),
            "policy_arns": input.policy_arns,
            "tags": input.tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect::<Vec<_>>(),
            "source_identity": input.source_identity,
        });
        let result = self
            .assume_role_inner(meta, caller, &input, now, params.clone())
            .await;
        if let Err(err) = &result
            && !matches!(err, BrokerError::AuditUnavailable)
        {
            {
                let outcome = match err {
                    BrokerError::AccessDenied { .. } | BrokerError::InvalidCredentials => {
                        Outcome::Deny
                    }
                    _ => Outcome::Error,
                };
                let mut event = self.event(meta, "sts:AssumeRole", caller.arn(), outcome, now);
                event.params = params;
                event.reason = err.to_string();
                self.audit.append(event).await?;
            }
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
            for device in self.enabled_mfa_devices(user)? {
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

/// The only rights of a session whose password must be changed first.
const CHANGE_PASSWORD_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ChangePasswordOnly","Effect":"Allow","Action":["iam:ChangePassword","iam:GetAccountPasswordPolicy","sts:GetCallerIdentity"],"Resource":"*"}]}"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PasswordState {
    Fine,
    MustChange,
    HardExpired,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MfaCheck {
    NotEnrolled,
    Passed,
    Failed,
}

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
