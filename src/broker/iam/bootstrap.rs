//! The first administrator (`stint init`, `serve --dev`).

use std::collections::BTreeMap;

use serde_json::json;

use crate::audit::event::Outcome;
use crate::core::authn::totp;
use crate::core::model::{self, MfaDevice, NameKind, RECORD_VERSION, User, name_key};
use crate::core::secret::{SecretBytes, SecretString};
use crate::store::Table;

use super::super::sts::{mfa_aad, mfa_key};
use super::super::{Broker, BrokerError, RequestMeta, unix_ms};
use super::{check_name, insert_new};

impl Broker {
    /// Creates the first administrator: a user with AdministratorAccess, a password and
    /// an enabled virtual MFA device, committed with its `stint:Init` event. Returns the
    /// user and the device seed, which is shown once.
    pub async fn bootstrap_admin(
        &self,
        user_name: &str,
        password: &SecretString,
    ) -> Result<(User, String, SecretBytes), BrokerError> {
        check_name(NameKind::User, user_name)?;
        let now = self.now();
        let phc = self.hash_new_password(password).await?;
        let serial = self.account().mfa_arn(user_name);
        let seed = totp::new_seed(self.random::<20>()?);
        let sealed_seed = self
            .master
            .seal(seed.expose(), &mfa_aad(&serial), &self.rng)?;
        let user = User {
            v: RECORD_VERSION,
            name: user_name.into(),
            id: self.ids("AIDA")?,
            path: "/".into(),
            arn: self.account().user_arn("/", user_name),
            create_date: unix_ms(now),
            tags: vec![],
            login_profile: Some(model::LoginProfile {
                phc,
                create_date: unix_ms(now),
                password_reset_required: false,
                last_changed: unix_ms(now),
                last_used: None,
                history: vec![],
            }),
            groups: vec![],
            attached_policies: vec![self.account().builtin_policy_arn("AdministratorAccess")],
            inline_policies: BTreeMap::new(),
            permissions_boundary: None,
        };
        let device = MfaDevice {
            v: RECORD_VERSION,
            serial_number: serial.clone(),
            user_name: user_name.into(),
            sealed_seed,
            enable_date: Some(unix_ms(now)),
            last_used_step: None,
            drift_steps: 0,
        };
        self.audited(
            |tx| {
                insert_new(
                    tx,
                    Table::Users,
                    &name_key(user_name),
                    &user,
                    "user",
                    user_name,
                )?;
                tx.put(Table::MfaDevices, &mfa_key(user_name, &serial), &device);
                Ok(())
            },
            |result| {
                let outcome = if result.is_ok() {
                    Outcome::Allow
                } else {
                    Outcome::Error
                };
                let mut event = self.event(
                    &RequestMeta::default(),
                    "stint:Init",
                    &user.arn,
                    outcome,
                    now,
                );
                event.params = json!({"user_name": user_name, "serial_number": serial});
                if let Err(err) = result {
                    event.reason = err.to_string();
                }
                Some(event)
            },
        )
        .await?;
        Ok((user, serial, seed))
    }
}
