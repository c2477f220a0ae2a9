//! Virtual MFA devices: create (seed shown once), enable and resync with two consecutive
//! codes, deactivate, delete (only a device that is not enabled, as AWS), list.

use serde_json::json;

use crate::core::authn::totp;
use crate::core::model::{MfaDevice, NameKind, RECORD_VERSION, User};
use crate::core::secret::{SecretBytes, SecretString};
use crate::store::Table;

use super::super::sts::{mfa_aad, mfa_key};
use super::super::{Broker, BrokerError, Caller, RequestMeta, unix_ms};
use super::{check_name, not_found, resource_tag_keys};

/// How far (in 30 s steps, each way) ResyncMfaDevice searches for the device's codes.
const RESYNC_WINDOW_STEPS: u64 = 40;

/// AWS's bounds on a serial number: 9 to 256 characters of `[\w+=/:,.@-]`.
fn check_serial(serial: &str) -> Result<(), BrokerError> {
    if !(9..=256).contains(&serial.len()) {
        return Err(BrokerError::invalid(
            "serial_number",
            format!("must be 9 to 256 characters, got {}", serial.len()),
        ));
    }
    if !serial
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+=/:,.@-".contains(&b))
    {
        return Err(BrokerError::invalid(
            "serial_number",
            "may contain only letters, digits and _+=/:,.@-",
        ));
    }
    Ok(())
}

impl Broker {
    /// Creates an unenabled virtual device; returns (serial, seed). The seed is shown once.
    pub async fn create_virtual_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        device_name: &str,
    ) -> Result<(String, SecretBytes), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let device_name = if device_name.is_empty() {
            user.clone()
        } else {
            device_name.to_string()
        };
        check_name(NameKind::MfaDevice, &device_name)?;
        let serial = self.account().mfa_arn(&device_name);
        let seed = totp::new_seed(self.random::<20>()?);
        let sealed_seed = self
            .master
            .seal(seed.expose(), &mfa_aad(&serial), &self.rng)?;
        let params = json!({"user_name": user, "virtual_mfa_device_name": device_name});
        self.iam_change(
            caller,
            meta,
            "iam:CreateVirtualMfaDevice",
            params,
            |tx, gate| {
                gate.check(&serial, &[])?;
                let target: User = tx
                    .get(Table::Users, &crate::core::model::name_key(&user))?
                    .ok_or_else(|| not_found("user", &user))?;
                // A device bound to someone else needs the right to bind devices to them
                // (AWS ties a device to a user with EnableMFADevice on that user).
                let own = caller
                    .user_name()
                    .is_some_and(|me| me.eq_ignore_ascii_case(&user));
                if !own {
                    gate.check_action(
                        "iam:EnableMfaDevice",
                        &target.arn,
                        &resource_tag_keys(&target.tags),
                    )?;
                }
                let all: Vec<MfaDevice> = tx.scan(Table::MfaDevices, "")?;
                if all.iter().any(|d| d.serial_number == serial) {
                    return Err(BrokerError::AlreadyExists(format!("MFA device {serial}")));
                }
                let device = MfaDevice {
                    v: RECORD_VERSION,
                    serial_number: serial.clone(),
                    user_name: user.clone(),
                    sealed_seed: sealed_seed.clone(),
                    enable_date: None,
                    last_used_step: None,
                    drift_steps: 0,
                };
                tx.put(Table::MfaDevices, &mfa_key(&user, &serial), &device);
                Ok(serial.clone())
            },
        )
        .await
        .map(|serial| (serial, seed))
    }

    /// EnableMfaDevice (or ResyncMfaDevice): two consecutive codes prove the device works.
    #[allow(clippy::too_many_arguments)]
    pub async fn enable_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        serial: &str,
        code1: &SecretString,
        code2: &SecretString,
        resync: bool,
    ) -> Result<(), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let action = if resync {
            "iam:ResyncMfaDevice"
        } else {
            "iam:EnableMfaDevice"
        };
        let now = self.now();
        let params = json!({"user_name": user, "serial_number": serial});
        self.iam_change(caller, meta, action, params, |tx, gate| {
            gate.load::<User>(tx, &user, vec![])?;
            for (field, code) in [
                ("authentication_code_1", code1),
                ("authentication_code_2", code2),
            ] {
                let c = code.expose();
                if c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(BrokerError::invalid(field, "must be 6 digits"));
                }
            }
            let key = mfa_key(&user, serial);
            let mut device: MfaDevice = tx
                .get(Table::MfaDevices, &key)?
                .ok_or_else(|| not_found("MFA device", serial))?;
            match (resync, device.enable_date.is_some()) {
                (false, true) => {
                    return Err(BrokerError::AlreadyExists(format!(
                        "enabled MFA device {serial}"
                    )));
                }
                (true, false) => {
                    return Err(BrokerError::FailedPrecondition(format!(
                        "MFA device {serial} is not enabled"
                    )));
                }
                _ => {}
            }
            let seed = self.master.open(&device.sealed_seed, &mfa_aad(serial))?;
            // Enable looks back 10 steps; resync looks 40 steps either way.
            let (centre, window) = if resync {
                (
                    totp::shifted(now, RESYNC_WINDOW_STEPS as i64),
                    2 * RESYNC_WINDOW_STEPS,
                )
            } else {
                (now, 10)
            };
            let step = totp::verify_consecutive(
                seed.expose(),
                code1.expose(),
                code2.expose(),
                centre,
                window,
            )
            .map_err(|_| {
                BrokerError::invalid(
                    "authentication_code_2",
                    "the two codes are not consecutive valid codes for this device",
                )
            })?;
            if device.last_used_step.is_some_and(|last| step <= last) {
                return Err(BrokerError::invalid(
                    "authentication_code_2",
                    "codes were already used",
                ));
            }
            // Remember how far the device's clock is off, beyond the ±1 step skew.
            let offset = step as i64 - totp::step_at(now) as i64;
            device.drift_steps = if offset.abs() > 1 { offset } else { 0 };
            device.last_used_step = Some(step);
            if !resync {
                device.enable_date = Some(unix_ms(now));
            }
            tx.put(Table::MfaDevices, &key, &device);
            Ok(())
        })
        .await
    }

    pub async fn deactivate_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
        serial: &str,
    ) -> Result<(), BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let params = json!({"user_name": user, "serial_number": serial});
        self.iam_change(
            caller,
            meta,
            "iam:DeactivateMfaDevice",
            params,
            |tx, gate| {
                gate.load::<User>(tx, &user, vec![])?;
                let key = mfa_key(&user, serial);
                tx.get::<MfaDevice>(Table::MfaDevices, &key)?
                    .ok_or_else(|| not_found("MFA device", serial))?;
                // A deactivated virtual device is gone: re-enrolment makes a new seed.
                tx.delete(Table::MfaDevices, &key);
                Ok(())
            },
        )
        .await
    }

    /// DeleteVirtualMfaDevice: removes a device that is not enabled (created, never
    /// enabled — what an interrupted enrolment leaves). AWS: "you must deactivate a user's
    /// virtual MFA device before you can delete it" — an enabled one is a DeleteConflict.
    /// Authorized as `iam:DeleteVirtualMfaDevice` on the device's ARN (its serial), before
    /// the caller learns whether it exists.
    pub async fn delete_virtual_mfa_device(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        serial: &str,
    ) -> Result<(), BrokerError> {
        check_serial(serial)?;
        let params = json!({"serial_number": serial});
        self.iam_change(
            caller,
            meta,
            "iam:DeleteVirtualMfaDevice",
            params,
            |tx, gate| {
                gate.check(serial, &[])?;
                let all: Vec<MfaDevice> = tx.scan(Table::MfaDevices, "")?;
                let device = all
                    .into_iter()
                    .find(|d| d.serial_number == serial)
                    .ok_or_else(|| not_found("MFA device", serial))?;
                if device.enable_date.is_some() {
                    return Err(BrokerError::DeleteConflict(format!(
                        "MFA device {serial}: it is enabled for user {}; deactivate it first (DeactivateMfaDevice)",
                        device.user_name
                    )));
                }
                tx.delete(Table::MfaDevices, &mfa_key(&device.user_name, serial));
                Ok(())
            },
        )
        .await
    }

    pub async fn list_mfa_devices(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        user_name: &str,
    ) -> Result<Vec<MfaDevice>, BrokerError> {
        let user = self.target_user(caller, user_name)?;
        let action = "iam:ListMfaDevices";
        let (_, arn, keys) = self.entity::<User>(action, &user)?;
        self.iam_read(
            caller,
            meta,
            action,
            &arn,
            &keys,
            json!({"user_name": user}),
            || self.enabled_mfa_devices(&user),
        )
        .await
    }
}
