//! Logging in (`GetSessionToken`): password (+ TOTP) or access key (+ TOTP) → a session,
//! behind the brute-force defence of [`crate::core::authn::lockout`], every attempt
//! audited.
//!
//! Input is bounded before anything is logged, stored, hashed or matched. A name that is
//! not a known user or access key is never written anywhere: as AWS does for failed
//! console logins, the audit log and the server log say `HIDDEN_DUE_TO_SECURITY_REASONS`
//! (a password typed into the user-name field must not end up in either).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::audit::event::{Event, Outcome};
use crate::core::authn::lockout::{Gate, LockoutState, LockoutTransition, Refusal};
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

/// What the logs say instead of a name that is unknown or invalid (AWS's wording).
pub const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";
/// Longest password accepted (the password policy allows at most 128 characters).
pub const MAX_PASSWORD_BYTES: usize = 1_024;
/// Longest access-key secret accepted (Stint's and AWS's are 40 characters).
pub const MAX_SECRET_BYTES: usize = 128;
/// IAM user names: 1 to 64 of `[\w+=,.@-]`.
const MAX_USER_NAME: usize = 64;
/// AWS `AccessKeyId`: 16 to 128 word characters.
const ACCESS_KEY_ID_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// The rows of the Lockouts table one login attempt touches (see `core::authn::lockout`).
/// Row keys carry a digest of the name, never the name: a password typed as a user name
/// is not stored either.
pub(crate) struct LockoutKeys {
    /// `user` or `key`.
    kind: &'static str,
    /// The user name (lower-cased) or access key id, to find who a lock is about.
    name: String,
    /// `<kind>:<digest of name>`.
    principal: String,
    /// `pair:<principal>@<address>`.
    pair: String,
    /// `ip:<address>`.
    address_row: String,
    /// The normalised source address (IPv4, or an IPv6 /64).
    address: String,
    /// Passwords lock their user; access keys are never locked.
    lockable: bool,
}

impl LockoutKeys {
    fn new(kind: &'static str, name: String, meta: &RequestMeta, lockable: bool) -> Self {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("stint-lockout\n{kind}\n{name}").as_bytes(),
        );
        let principal = format!(
            "{kind}:{}",
            data_encoding::HEXLOWER.encode(&digest.as_ref()[..16])
        );
        let address = address_of(meta.source_ip);
        Self {
            kind,
            name,
            pair: format!("pair:{principal}@{address}"),
            address_row: format!("ip:{address}"),
            principal,
            address,
            lockable,
        }
    }
}

/// The address a throttle counts: an IPv4 address, or the /64 an IPv6 host sits in (one
/// host can use every address of its /64).
fn address_of(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".into(),
    }
}

/// The lockout rows of a password login (and of a password change) as `user_name`.
pub(crate) fn lockout_keys(user_name: &str, meta: &RequestMeta) -> LockoutKeys {
    LockoutKeys::new("user", name_key(user_name), meta, true)
}

fn access_key_lockout_keys(access_key_id: &str, meta: &RequestMeta) -> LockoutKeys {
    LockoutKeys::new("key", access_key_id.to_string(), meta, false)
}

/// Bounds every field of a login before anything else looks at it. Messages name the
/// field, never its value (it may be a password typed into the wrong box).
fn validate_login(
    credential: &LoginCredential,
    token_code: Option<&SecretString>,
) -> Result<(), BrokerError> {
    match credential {
        LoginCredential::Password {
            user_name,
            password,
        } => {
            let name_ok = (1..=MAX_USER_NAME).contains(&user_name.len())
                && user_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
            if !name_ok {
                return Err(BrokerError::invalid(
                    "user_name",
                    format!(
                        "must be 1 to {MAX_USER_NAME} characters of letters, digits and _+=,.@-"
                    ),
                ));
            }
            if password.expose().len() > MAX_PASSWORD_BYTES {
                return Err(BrokerError::invalid(
                    "password",
                    format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
                ));
            }
        }
        LoginCredential::AccessKey {
            access_key_id,
            secret_access_key,
        } => {
            let id_ok = ACCESS_KEY_ID_LEN.contains(&access_key_id.len())
                && access_key_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !id_ok {
                return Err(BrokerError::invalid(
                    "access_key_id",
                    "must be 16 to 128 letters, digits or _",
                ));
            }
            if secret_access_key.expose().len() > MAX_SECRET_BYTES {
                return Err(BrokerError::invalid(
                    "secret_access_key",
                    format!("must be at most {MAX_SECRET_BYTES} bytes"),
                ));
            }
        }
    }
    if let Some(code) = token_code {
        let code = code.expose();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BrokerError::invalid("token_code", "must be 6 digits"));
        }
    }
    Ok(())
}

/// Who a login attempt is about, as the logs may show it.
struct Subject {
    /// The principal ARN of a known user or key owner; [`HIDDEN`] otherwise.
    principal: String,
    /// The name or key id as given, if known; [`HIDDEN`] otherwise.
    shown: String,
}

impl Subject {
    fn hidden() -> Self {
        Self {
            principal: HIDDEN.into(),
            shown: HIDDEN.into(),
        }
    }
}

impl Broker {
    /// Password (+ TOTP) or access key (+ TOTP) → session credentials.
    pub async fn get_session_token(
        &self,
        meta: &RequestMeta,
        input: SessionTokenInput,
    ) -> Result<Issued, BrokerError> {
        let SessionTokenInput {
            credential,
            token_code,
            duration_seconds,
        } = input;
        let checked = validate_login(&credential, token_code.as_ref()).and_then(|()| {
            duration_in(
                "duration_seconds",
                duration_seconds,
                SESSION_DEFAULT,
                SESSION_MIN,
                SESSION_MAX,
            )
        });
        let subject = match &checked {
            Ok(_) => self.login_subject(&credential)?,
            Err(_) => Subject::hidden(),
        };
        tracing::Span::current().record("principal", subject.principal.as_str());
        let result = match checked {
            Err(err) => Err(err),
            Ok(duration) => match credential {
                LoginCredential::Password {
                    user_name,
                    password,
                } => {
                    self.login_with_password(
                        meta, &subject, &user_name, password, token_code, duration,
                    )
                    .await
                }
                LoginCredential::AccessKey {
                    access_key_id,
                    secret_access_key,
                } => {
                    self.login_with_access_key(
                        meta,
                        &subject,
                        &access_key_id,
                        secret_access_key,
                        token_code,
                        duration,
                    )
                    .await
                }
            },
        };
        // Refusals are audited where they are decided; any other failure (bad input, the
        // store refusing a write) is audited here, so it too lands in the log or, when the
        // log cannot take it either, answers "audit unavailable" and flips health. A login
        // refused because the hash queue is full checked nothing and is not audited: an
        // event each would turn a flood the queue sheds into a flood of audit writes (the
        // request log still has one line per refusal).
        if let Err(err) = &result
            && !matches!(
                err,
                BrokerError::InvalidCredentials
                    | BrokerError::LockedOut { .. }
                    | BrokerError::AuditUnavailable
                    | BrokerError::Overloaded { .. }
            )
        {
            let params = json!({ "duration_seconds": duration_seconds });
            self.audit
                .append(self.login_event(meta, &subject, Outcome::Error, &err.to_string(), params))
                .await?;
        }
        result
    }

    /// Resolves a (validated) credential's name to what the logs may show.
    fn login_subject(&self, credential: &LoginCredential) -> Result<Subject, BrokerError> {
        Ok(match credential {
            LoginCredential::Password { user_name, .. } => match self.load_user(user_name)? {
                Some(user) => Subject {
                    principal: user.arn,
                    shown: user_name.clone(),
                },
                None => Subject::hidden(),
            },
            LoginCredential::AccessKey { access_key_id, .. } => {
                let key: Option<AccessKey> =
                    store::read(self.store.as_ref(), Table::AccessKeys, access_key_id)?;
                match key {
                    Some(key) => Subject {
                        principal: self
                            .load_user(&key.user_name)?
                            .map_or_else(|| access_key_id.clone(), |u| u.arn),
                        shown: access_key_id.clone(),
                    },
                    None => Subject::hidden(),
                }
            }
        })
    }

    fn login_event(
        &self,
        meta: &RequestMeta,
        subject: &Subject,
        outcome: Outcome,
        reason: &str,
        params: serde_json::Value,
    ) -> Event {
        let mut event = self.event(
            meta,
            "sts:GetSessionToken",
            &subject.principal,
            outcome,
            self.now(),
        );
        event.reason = reason.into();
        event.params = params;
        event
    }

    /// Refuses a login the lockout gate holds back (back-off, lock or address budget),
    /// audited as a Deny, before any secret is looked at.
    async fn refuse_if_held_back(
        &self,
        meta: &RequestMeta,
        subject: &Subject,
        keys: &LockoutKeys,
        now: SystemTime,
        params: &serde_json::Value,
    ) -> Result<(), BrokerError> {
        let Err(refusal) = self.gate_check(meta, keys, now).await? else {
            return Ok(());
        };
        let event = self.login_event(
            meta,
            subject,
            Outcome::Deny,
            refusal_reason(refusal),
            params.clone(),
        );
        self.audit.append(event).await?;
        Err(BrokerError::LockedOut {
            retry_after: refusal.retry_after(),
        })
    }

    async fn login_with_password(
        &self,
        meta: &RequestMeta,
        subject: &Subject,
        user_name: &str,
        password: SecretString,
        token_code: Option<SecretString>,
        duration: Duration,
    ) -> Result<Issued, BrokerError> {
        let now = self.now();
        let params = json!({ "user_name": subject.shown, "duration_seconds": duration.as_secs(), "mfa": token_code.is_some() });
        let keys = lockout_keys(user_name, meta);
        self.refuse_if_held_back(meta, subject, &keys, now, &params)
            .await?;

        let user = self.load_user(user_name)?;
        let phc = user
            .as_ref()
            .and_then(|u| u.login_profile.as_ref())
            .map(|p| p.phc.clone())
            .unwrap_or_else(|| self.dummy_phc.clone());
        let has_profile = user.as_ref().is_some_and(|u| u.login_profile.is_some());
        let password_for_rehash = password.clone();
        let verified = self.verify_password_job(password, phc).await??;
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
                let denial = self.login_event(meta, subject, Outcome::Deny, reason, params);
                self.record_login_failure(meta, &keys, now, Some(denial))
                    .await?;
                return Err(BrokerError::InvalidCredentials);
            }
        };
        self.lockout_success(&keys, now)?;
        let mfa_auth_time = matches!(mfa, MfaCheck::Passed).then(|| unix_secs(now));
        let must_change = self.password_must_change(&user, now)?;
        if must_change == PasswordState::HardExpired {
            let event = self.login_event(
                meta,
                subject,
                Outcome::Deny,
                "password expired; an administrator must reset it",
                params,
            );
            self.audit.append(event).await?;
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
        let phc = match self.hash_password_job(password, salt).await {
            Ok(phc) => phc?,
            // The login itself succeeded: upgrade on a later one rather than refuse it.
            Err(BrokerError::Overloaded { .. }) => return Ok(()),
            Err(err) => return Err(err),
        };
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

    /// An access key, and optionally a code of the key owner's MFA device: as AWS's
    /// `GetSessionToken` with `TokenCode`, a right code makes an MFA session
    /// (`amr` `["key", "otp"]`), a wrong or replayed one is a failed login.
    async fn login_with_access_key(
        &self,
        meta: &RequestMeta,
        subject: &Subject,
        access_key_id: &str,
        secret: SecretString,
        token_code: Option<SecretString>,
        duration: Duration,
    ) -> Result<Issued, BrokerError> {
        let now = self.now();
        let params = json!({ "access_key_id": subject.shown, "duration_seconds": duration.as_secs(), "mfa": token_code.is_some() });
        let keys = access_key_lockout_keys(access_key_id, meta);
        self.refuse_if_held_back(meta, subject, &keys, now, &params)
            .await?;
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
        // The code is checked only with the right secret, so it is never burned by
        // someone who does not hold the key.
        let mfa = match (&user, &token_code) {
            (Some(user), Some(code)) => self.check_login_mfa(user, Some(code), now)?,
            (Some(_), None) => MfaCheck::NotEnrolled,
            (None, _) => MfaCheck::Failed,
        };
        let user = match (user, mfa) {
            (Some(user), MfaCheck::Passed | MfaCheck::NotEnrolled) => user,
            (user, _) => {
                let reason = if user.is_some() {
                    "bad or replayed MFA code"
                } else {
                    "bad or inactive access key"
                };
                let denial = self.login_event(meta, subject, Outcome::Deny, reason, params);
                self.record_login_failure(meta, &keys, now, Some(denial))
                    .await?;
                return Err(BrokerError::InvalidCredentials);
            }
        };
        self.lockout_success(&keys, now)?;
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            if let Some(mut key) = tx.get::<AccessKey>(Table::AccessKeys, access_key_id)?
                && stale_use(key.last_used, now)
            {
                key.last_used = Some(unix_ms(now));
                tx.put(Table::AccessKeys, access_key_id, &key);
            }
            Ok::<_, BrokerError>(())
        })?;
        let (amr, mfa_auth_time) = if mfa == MfaCheck::Passed {
            (vec!["key".into(), "otp".into()], Some(unix_secs(now)))
        } else {
            (vec!["key".into()], None)
        };
        let spec = MintSpec::user_session(&user, amr, mfa_auth_time, now, duration, vec![]);
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
            // The user who logged in, not a namesake created since.
            if let Some(mut stored) = tx.get::<User>(Table::Users, &key)?
                && stored.id == user.id
                && let Some(profile) = stored.login_profile.as_mut()
                && stale_use(profile.last_used, now)
            {
                profile.last_used = Some(unix_ms(now));
                tx.put(Table::Users, &key, &stored);
            }
            Ok::<_, BrokerError>(())
        })
    }

    /// `Err(wait)` while the attempt must wait (for a password change's old password).
    pub(crate) async fn lockout_check(
        &self,
        meta: &RequestMeta,
        keys: &LockoutKeys,
        now: SystemTime,
    ) -> Result<Result<(), Duration>, BrokerError> {
        Ok(self
            .gate_check(meta, keys, now)
            .await?
            .map_err(Refusal::retry_after))
    }

    /// Counts a failed password check (of a password change).
    pub(crate) async fn lockout_fail(
        &self,
        meta: &RequestMeta,
        keys: &LockoutKeys,
        _who: &str,
        now: SystemTime,
    ) -> Result<(), BrokerError> {
        self.record_login_failure(meta, keys, now, None).await
    }

    fn read_gate(&self, keys: &LockoutKeys) -> Result<Gate, BrokerError> {
        let read = |key: &str| -> Result<LockoutState, BrokerError> {
            Ok(store::read(self.store.as_ref(), Table::Lockouts, key)?.unwrap_or_default())
        };
        Ok(Gate {
            pair: read(&keys.pair)?,
            principal: read(&keys.principal)?,
            address: read(&keys.address_row)?,
        })
    }

    /// Whether an attempt may proceed. A principal lock that has been served is cleared
    /// here, in one batch with its `stint:LockoutEnded` event.
    async fn gate_check(
        &self,
        meta: &RequestMeta,
        keys: &LockoutKeys,
        now: SystemTime,
    ) -> Result<Result<(), Refusal>, BrokerError> {
        let mut gate = self.read_gate(keys)?;
        if gate.principal.served_lock(now).is_some() {
            let (principal, shown) = self.lockout_principal(keys)?;
            self.audited(
                |tx| {
                    let mut row: LockoutState = tx
                        .get(Table::Lockouts, &keys.principal)?
                        .unwrap_or_default();
                    let ended = row.clear_served_lock(now);
                    if ended.is_some() {
                        put_row(tx, &keys.principal, &row);
                    }
                    Ok(ended)
                },
                |result| match result {
                    Ok(Some(ended)) => {
                        let mut event =
                            self.event(meta, "stint:LockoutEnded", &principal, Outcome::Allow, now);
                        event.reason = format!("{shown} lockout ended at {}", unix_ms(*ended));
                        Some(event)
                    }
                    _ => None,
                },
            )
            .await?;
            gate.principal.clear_served_lock(now);
        }
        Ok(gate.check(&keys.address, keys.lockable, now, &self.settings.lockout))
    }

    /// Counts a failure on the pair, the address and (from a stranger) the principal, in
    /// one batch with its audit event: `denial` (the refused login), or, when this failure
    /// locks the principal, `stint:Lockout` (and `denial` right after it).
    async fn record_login_failure(
        &self,
        meta: &RequestMeta,
        keys: &LockoutKeys,
        now: SystemTime,
        denial: Option<Event>,
    ) -> Result<(), BrokerError> {
        let policy = self.settings.lockout;
        let (principal, shown) = self.lockout_principal(keys)?;
        let transition = self
            .audited(
                |tx| {
                    let read = |tx: &mut Tx<'_>, key: &str| -> Result<LockoutState, BrokerError> {
                        Ok(tx.get(Table::Lockouts, key)?.unwrap_or_default())
                    };
                    let mut gate = Gate {
                        pair: read(tx, &keys.pair)?,
                        principal: read(tx, &keys.principal)?,
                        address: read(tx, &keys.address_row)?,
                    };
                    let transition =
                        gate.record_failure(&keys.address, keys.lockable, now, &policy);
                    put_row(tx, &keys.pair, &gate.pair);
                    put_row(tx, &keys.address_row, &gate.address);
                    if keys.lockable {
                        put_row(tx, &keys.principal, &gate.principal);
                    }
                    Ok(transition)
                },
                |result| match result {
                    Ok(LockoutTransition::Locked { .. }) => {
                        let mut event =
                            self.event(meta, "stint:Lockout", &principal, Outcome::Deny, now);
                        event.reason = format!(
                            "{shown} locked for {} s against addresses it never logged in from",
                            policy.lockout_seconds
                        );
                        Some(event)
                    }
                    _ => denial.clone(),
                },
            )
            .await?;
        if let (LockoutTransition::Locked { .. }, Some(denial)) = (transition, denial) {
            self.audit.append(denial).await?;
        }
        Ok(())
    }

    /// A successful login: the pair forgets its failures, the principal remembers the
    /// address. Bookkeeping of a verified credential, not an audited change.
    fn lockout_success(&self, keys: &LockoutKeys, now: SystemTime) -> Result<(), BrokerError> {
        let policy = self.settings.lockout;
        store::transact(self.store.as_ref(), |tx: &mut Tx<'_>| {
            let mut gate = Gate {
                pair: tx.get(Table::Lockouts, &keys.pair)?.unwrap_or_default(),
                principal: tx
                    .get(Table::Lockouts, &keys.principal)?
                    .unwrap_or_default(),
                address: LockoutState::default(),
            };
            let before = gate.clone();
            gate.record_success(&keys.address, now, &policy);
            // Most successes change nothing (no failures, a known address): no write.
            if gate.pair != before.pair {
                put_row(tx, &keys.pair, &gate.pair);
            }
            if gate.principal != before.principal {
                put_row(tx, &keys.principal, &gate.principal);
            }
            Ok::<_, BrokerError>(())
        })
    }

    /// The ARN a lockout is about and how its key may be shown: a known user's or key
    /// owner's; otherwise [`HIDDEN`] (the name may be anything, a password included).
    fn lockout_principal(&self, keys: &LockoutKeys) -> Result<(String, String), BrokerError> {
        let user = match keys.kind {
            "user" => self.load_user(&keys.name)?,
            _ => {
                let key: Option<AccessKey> =
                    store::read(self.store.as_ref(), Table::AccessKeys, &keys.name)?;
                key.map(|k| self.load_user(&k.user_name))
                    .transpose()?
                    .flatten()
            }
        };
        Ok(match user {
            Some(user) => (user.arn, format!("{}:{}", keys.kind, keys.name)),
            None => (HIDDEN.into(), format!("{}:{HIDDEN}", keys.kind)),
        })
    }
}

/// How fine "last used" times are kept: a credential used many times a minute is written
/// once a minute, not on every login (AWS's own last-used data lags by hours).
const LAST_USED_GRANULARITY_MS: crate::core::time::UnixMs = 60_000;

/// Whether a "last used" time (Unix ms) is old enough to be written again at `now`.
fn stale_use(last_used: Option<crate::core::time::UnixMs>, now: SystemTime) -> bool {
    last_used.is_none_or(|at| unix_ms(now).saturating_sub(at) >= LAST_USED_GRANULARITY_MS)
}

/// Writes a row, or deletes it once it holds nothing.
fn put_row(tx: &mut Tx<'_>, key: &str, row: &LockoutState) {
    if *row == LockoutState::default() {
        tx.delete(Table::Lockouts, key);
    } else {
        tx.put(Table::Lockouts, key, row);
    }
}

fn refusal_reason(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Backoff(_) => "slowed: back-off after failures from this address",
        Refusal::Locked(_) => "locked out: too many failures from unknown addresses",
        Refusal::AddressBudget(_) => "slowed: this address spent its failure budget",
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PasswordState {
    Fine,
    MustChange,
    HardExpired,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MfaCheck {
    NotEnrolled,
    Passed,
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password_login(user_name: &str, password: &str) -> LoginCredential {
        LoginCredential::Password {
            user_name: user_name.into(),
            password: SecretString::new(password.into()),
        }
    }

    fn key_login(id: &str, secret: &str) -> LoginCredential {
        LoginCredential::AccessKey {
            access_key_id: id.into(),
            secret_access_key: SecretString::new(secret.into()),
        }
    }

    #[test]
    fn login_input_is_bounded_and_errors_name_the_field_not_the_value() {
        let long_name = "a".repeat(65);
        let huge_name = "a".repeat(4_000_000);
        let long_password = "p".repeat(MAX_PASSWORD_BYTES + 1);
        let max_password = "p".repeat(MAX_PASSWORD_BYTES);
        let long_id = "A".repeat(129);
        let long_secret = "s".repeat(MAX_SECRET_BYTES + 1);
        let cases: Vec<(LoginCredential, Option<&str>, Option<&str>)> = vec![
            (password_login("alice", "pw"), None, None),
            (
                password_login("a+b=c,d.e@f-g_h", "pw"),
                Some("123456"),
                None,
            ),
            (password_login(&"a".repeat(64), &max_password), None, None),
            (password_login("", "pw"), None, Some("user_name")),
            (password_login(&long_name, "pw"), None, Some("user_name")),
            (password_login(&huge_name, "pw"), None, Some("user_name")),
            (
                password_login("secret pass!", "pw"),
                None,
                Some("user_name"),
            ),
            (password_login("ålice", "pw"), None, Some("user_name")),
            (
                password_login("alice", &long_password),
                None,
                Some("password"),
            ),
            (
                password_login("alice", "pw"),
                Some("12345"),
                Some("token_code"),
            ),
            (
                password_login("alice", "pw"),
                Some("1234567"),
                Some("token_code"),
            ),
            (
                password_login("alice", "pw"),
                Some("12345x"),
                Some("token_code"),
            ),
            (
                password_login("alice", "pw"),
                Some("１２３４５６"),
                Some("token_code"),
            ),
            (key_login("AKIAAAAAAAAAAAAAAAAA", ""), None, None),
            (
                key_login(&"A".repeat(128), &"s".repeat(40)),
                Some("000000"),
                None,
            ),
            (key_login("AKIA", "s"), None, Some("access_key_id")),
            (key_login(&long_id, "s"), None, Some("access_key_id")),
            (
                key_login("AKIAAAAAAAAAAAAAAAA/", "s"),
                None,
                Some("access_key_id"),
            ),
            (
                key_login("AKIAAAAAAAAAAAAAAAAA", &long_secret),
                None,
                Some("secret_access_key"),
            ),
        ];
        for (i, (credential, code, want)) in cases.into_iter().enumerate() {
            let code = code.map(|c| SecretString::new(c.into()));
            let got = validate_login(&credential, code.as_ref());
            match (got, want) {
                (Ok(()), None) => {}
                (Err(BrokerError::InvalidInput { field, message }), Some(want)) => {
                    assert_eq!(field, want, "case {i}");
                    assert!(!message.contains("secret pass"), "case {i}: {message}");
                    assert!(message.len() < 100, "case {i}: {message}");
                }
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn addresses_are_counted_per_ipv4_host_and_per_ipv6_slash_64() {
        let cases: &[(Option<&str>, &str)] = &[
            (Some("192.0.2.7"), "192.0.2.7"),
            (Some("::ffff:192.0.2.7"), "192.0.2.7"),
            (Some("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64"),
            (Some("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64"),
            (Some("::1"), "0:0:0:0::/64"),
            (None, "unknown"),
        ];
        for (ip, want) in cases {
            let ip = ip.map(|ip| ip.parse::<IpAddr>().unwrap());
            assert_eq!(address_of(ip), *want, "{ip:?}");
        }
    }

    #[test]
    fn row_keys_never_hold_the_name() {
        let meta = RequestMeta {
            source_ip: Some("192.0.2.7".parse().unwrap()),
            ..Default::default()
        };
        let keys = lockout_keys("Tr0ub4dor.and.3", &meta);
        for key in [&keys.principal, &keys.pair, &keys.address_row] {
            assert!(!key.to_lowercase().contains("tr0ub4dor"), "{key}");
        }
        assert!(keys.principal.starts_with("user:"));
        assert_eq!(keys.pair, format!("pair:{}@192.0.2.7", keys.principal));
        // Case-insensitive like user names; a key id is another principal.
        assert_eq!(
            lockout_keys("TR0UB4DOR.AND.3", &meta).principal,
            keys.principal
        );
        assert_ne!(
            access_key_lockout_keys("tr0ub4dor.and.3", &meta).principal,
            keys.principal
        );
    }
}
