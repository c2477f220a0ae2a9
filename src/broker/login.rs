//! Logging in (`GetSessionToken`): password (+ TOTP) or access key → a session, behind the
//! brute-force defence and with every attempt audited.

use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::audit::event::Outcome;
use crate::core::authn::lockout::{LockoutState, LockoutTransition};
use crate::core::authn::password;
use crate::core::model::{AccessKey, AccessKeyStatus, User, name_key};
use crate::core::secret::SecretString;
use crate::store::{self, Table, Tx};

use super::caller::RequestMeta;
use super::sts::{
    CHANGE_PASSWORD_ONLY, Issued, LoginCredential, MintSpec, SESSION_DEFAULT, SESSION_MAX,
    SESSION_MIN, SessionTokenInput, access_key_hash, duration_in,
};
use super::{Broker, BrokerError, unix_ms, unix_secs};

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
}

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
