//! Login profiles (an administrator sets a user's password) and the account password
//! policy. Hashing happens before the change's transaction, and only once authorized.

use serde_json::json;

use crate::core::model::{self, NameKind, PasswordPolicy, User};
use crate::core::secret::SecretString;
use crate::store::{self, Table};

use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::{check_name, not_found, update_in};

const PASSWORD_POLICY_KEY: &str = "account/password_policy";

impl Broker {
    pub fn password_policy(&self) -> Result<PasswordPolicy, BrokerError> {
        Ok(store::read(self.store.as_ref(), Table::Meta, PASSWORD_POLICY_KEY)?.unwrap_or_default())
    }

    pub(super) async fn hash_new_password(
        &self,
        password: &SecretString,
    ) -> Result<String, BrokerError> {
        self.password_policy()?
            .check(password.expose())
            .map_err(|m| BrokerError::invalid("password", m))?;
        let salt: [u8; 16] = self.random()?;
        let password = password.clone();
        Ok(self.hash_password_job(password, salt).await??)
    }

    /// CreateLoginProfile (`create = true`) or UpdateLoginProfile: an admin sets a password.
    pub async fn set_login_profile(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        password: &SecretString,
        password_reset_required: bool,
        create: bool,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let action = if create {
            "iam:CreateLoginProfile"
        } else {
            "iam:UpdateLoginProfile"
        };
        let params =
            json!({"user_name": user_name, "password_reset_required": password_reset_required});
        // Authorize before paying for a hash (the change authorizes again, atomically).
        let (_, arn, keys) = self.entity::<User>(action, user_name)?;
        if let Err(err) = self.require_with(caller, meta, action, &arn, &keys) {
            return self.iam_refused(caller, meta, action, &params, err).await;
        }
        let phc = if password.expose().is_empty() && !create {
            None
        } else {
            Some(self.hash_new_password(password).await?)
        };
        let now = unix_ms(self.now());
        self.iam_change(caller, meta, action, params.clone(), |tx, gate| {
            update_in::<User, _>(tx, gate, user_name, vec![], |user| {
                let profile = &mut user.login_profile;
                match (profile.as_ref(), create) {
                    (Some(_), true) => {
                        return Err(BrokerError::AlreadyExists(format!(
                            "login profile for user {user_name}"
                        )));
                    }
                    (None, false) => return Err(not_found("login profile for user", user_name)),
                    _ => {}
                }
                let mut history = profile
                    .as_ref()
                    .map(|p| {
                        let mut h = vec![p.phc.clone()];
                        h.extend(p.history.iter().cloned());
                        h.truncate(24);
                        h
                    })
                    .unwrap_or_default();
                let (phc, last_changed) = match (&phc, profile.as_ref()) {
                    (Some(new), _) => (new.clone(), now),
                    (None, Some(old)) => {
                        history = old.history.clone();
                        (old.phc.clone(), old.last_changed)
                    }
                    (None, None) => {
                        return Err(BrokerError::invalid("password", "is required"));
                    }
                };
                *profile = Some(model::LoginProfile {
                    phc,
                    create_date: profile.as_ref().map_or(now, |p| p.create_date),
                    password_reset_required,
                    last_changed,
                    last_used: profile.as_ref().and_then(|p| p.last_used),
                    history,
                });
                Ok(())
            })
        })
        .await
    }

    pub async fn delete_login_profile(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let params = json!({"user_name": user_name});
        self.iam_change(
            caller,
            meta,
            "iam:DeleteLoginProfile",
            params,
            |tx, gate| {
                update_in::<User, _>(tx, gate, user_name, vec![], |user| {
                    user.login_profile
                        .take()
                        .map(|_| ())
                        .ok_or_else(|| not_found("login profile for user", user_name))
                })
            },
        )
        .await
    }

    pub async fn get_login_profile(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<(String, i64, bool), BrokerError> {
        let name = self.target_user(caller, user_name)?;
        let action = "iam:GetLoginProfile";
        let (user, arn, keys) = self.entity::<User>(action, &name)?;
        self.iam_read(
            caller,
            meta,
            action,
            &arn,
            &keys,
            json!({"user_name": name}),
            || {
                let user = user.ok_or_else(|| not_found("user", &name))?;
                let profile = user
                    .login_profile
                    .ok_or_else(|| not_found("login profile for user", &name))?;
                Ok((
                    user.name,
                    profile.create_date,
                    profile.password_reset_required,
                ))
            },
        )
        .await
    }

    pub async fn update_password_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        policy: PasswordPolicy,
    ) -> Result<(), BrokerError> {
        policy.validate().map_err(|m| {
            let field = m
                .split_whitespace()
                .next()
                .unwrap_or("password_policy")
                .to_string();
            BrokerError::InvalidInput { field, message: m }
        })?;
        let params = json!(policy);
        self.iam_change(
            caller,
            meta,
            "iam:UpdateAccountPasswordPolicy",
            params,
            |tx, gate| {
                gate.check("*", &[])?;
                tx.put(Table::Meta, PASSWORD_POLICY_KEY, &policy);
                Ok(())
            },
        )
        .await
    }

    pub async fn get_password_policy(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
    ) -> Result<PasswordPolicy, BrokerError> {
        self.iam_read(
            caller,
            meta,
            "iam:GetAccountPasswordPolicy",
            "*",
            &[],
            json!({}),
            || self.password_policy(),
        )
        .await
    }
}
