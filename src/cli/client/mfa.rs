//! `stint mfa enroll`: create a virtual MFA device, show it as a QR code, and enable it
//! with two consecutive codes.
//!
//! Enrolment cannot get stuck: a device left created but never enabled (an interrupted
//! enrolment, codes typed wrong) is deleted (`DeleteVirtualMfaDevice`, which AWS allows
//! only on a device that is not enabled) and created afresh; the same code typed twice is
//! asked for again rather than sent. The codes typed are used up, so the command ends by
//! saying to wait for the next code before logging in.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use tonic::Code;
use tonic::transport::Channel;

use super::{AuthFlags, Context, Env, bearer, prompt_secret, session};
use crate::cli::{CliError, runtime};
use crate::core::authn::totp::qr_terminal;
use crate::core::secret::SecretString;
use crate::proto::iam_client::IamClient;
use crate::proto::{
    CreateVirtualMfaDeviceRequest, CreateVirtualMfaDeviceResponse, DeleteVirtualMfaDeviceRequest,
    EnableMfaDeviceRequest,
};

#[derive(Subcommand, Debug)]
pub enum MfaCommand {
    /// Create a virtual MFA device, show its QR code, and enable it with two codes.
    Enroll(MfaEnrollArgs),
}

#[derive(Args, Debug)]
pub struct MfaEnrollArgs {
    #[command(flatten)]
    pub auth: AuthFlags,
    /// The user to enroll (default: yourself).
    #[arg(long)]
    pub user: Option<String>,
    /// Device name (default: the user's name).
    #[arg(long)]
    pub device_name: Option<String>,
}

/// How many times a code is asked for before giving up.
const CODE_ATTEMPTS: usize = 3;

fn check_code(code: &str) -> Result<(), CliError> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CliError::new("an MFA code is 6 digits"));
    }
    Ok(())
}

/// Reads a 6-digit code; `not` is a code it must differ from (the previous one).
fn read_code(prompt: &str, not: Option<&str>) -> Result<String, CliError> {
    let mut last_error = CliError::new("no code given");
    for _ in 0..CODE_ATTEMPTS {
        let code = prompt_secret(prompt)?;
        let code = code.expose().trim();
        match check_code(code) {
            Err(e) => {
                eprintln!("{e}");
                last_error = e;
            }
            Ok(()) if not == Some(code) => {
                eprintln!("That is the same code again: wait until your app shows the next one.");
                last_error = CliError::new("the two codes must be consecutive, not the same twice");
            }
            Ok(()) => return Ok(code.to_string()),
        }
    }
    Err(last_error)
}

/// The device serial AWS-style: `arn:<partition>:iam::<account>:mfa/<device>`, with the
/// partition and account of the caller's own ARN (a user or an assumed role).
fn device_serial(caller_arn: &str, device_name: &str) -> Option<String> {
    let mut parts = caller_arn.splitn(6, ':');
    let (arn, partition, _service, _region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (arn == "arn" && !partition.is_empty() && !account.is_empty())
        .then(|| format!("arn:{partition}:iam::{account}:mfa/{device_name}"))
}

/// The user name in a user ARN (`…:user/path/name`).
fn user_of(arn: &str) -> Option<&str> {
    let resource = arn.splitn(6, ':').nth(5)?;
    resource.strip_prefix("user/")?.rsplit('/').next()
}

async fn create(
    iam: &mut IamClient<Channel>,
    token: &SecretString,
    user_name: &str,
    device_name: &str,
) -> Result<CreateVirtualMfaDeviceResponse, tonic::Status> {
    let request = CreateVirtualMfaDeviceRequest {
        user_name: user_name.to_string(),
        virtual_mfa_device_name: device_name.to_string(),
    };
    let request = bearer(request, token).map_err(|e| tonic::Status::internal(e.to_string()))?;
    iam.create_virtual_mfa_device(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn delete(
    iam: &mut IamClient<Channel>,
    token: &SecretString,
    serial: &str,
) -> Result<(), CliError> {
    let request = bearer(
        DeleteVirtualMfaDeviceRequest {
            serial_number: serial.to_string(),
        },
        token,
    )?;
    iam.delete_virtual_mfa_device(request)
        .await
        .map(|_| ())
        .map_err(|status| {
            if status.code() == Code::FailedPrecondition {
                CliError::new(format!(
                    "MFA device {serial} already exists and is enabled; to replace it, deactivate it first: \
                     stint iam DeactivateMfaDevice '{{\"serial_number\":\"{serial}\"}}' (with \"user_name\" for another user)"
                ))
            } else {
                super::status_error(status)
            }
        })
}

pub fn run(command: MfaCommand, env: &Env) -> Result<ExitCode, CliError> {
    let MfaCommand::Enroll(args) = command;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token_flag())?;
    let user_name = args.user.clone().unwrap_or_default();
    let caller_arn = session::peek(&token).map(|p| p.sub).unwrap_or_default();
    let owner = if user_name.is_empty() {
        user_of(&caller_arn).unwrap_or_default().to_string()
    } else {
        user_name.clone()
    };
    let device_name = args.device_name.clone().unwrap_or_else(|| owner.clone());
    runtime()?.block_on(async {
        let mut iam = IamClient::new(ctx.channel().await?);
        let device = match create(&mut iam, &token, &user_name, &device_name).await {
            Ok(device) => device,
            Err(status) if status.code() == Code::AlreadyExists => {
                // Most likely an enrolment that never finished: such a device can go.
                let serial = device_serial(&caller_arn, &device_name)
                    .ok_or_else(|| super::status_error(status.clone()))?;
                delete(&mut iam, &token, &serial).await?;
                eprintln!("Replacing MFA device {serial}, which was created but never enabled.");
                create(&mut iam, &token, &user_name, &device_name)
                    .await
                    .map_err(super::status_error)?
            }
            Err(status) => return Err(super::status_error(status)),
        };
        // The user asked to see the seed: this is its one showing.
        match qr_terminal(&device.otpauth_uri) {
            Ok(qr) => super::say(qr.expose())?,
            Err(e) => eprintln!("(cannot draw the QR code: {e})"),
        }
        super::say(format_args!(
            "Scan the code above with an authenticator app, or enter the secret by hand:"
        ))?;
        super::say(format_args!("  secret: {}", device.base32_string_seed))?;
        super::say(format_args!("  serial: {}", device.serial_number))?;
        let codes = match read_code("First code: ", None) {
            Ok(first) => read_code("Next code (wait for it to change): ", Some(&first))
                .map(|second| (first, second)),
            Err(e) => Err(e),
        };
        let enabled = match codes {
            Ok((code_1, code_2)) => {
                let request = bearer(
                    EnableMfaDeviceRequest {
                        user_name: user_name.clone(),
                        serial_number: device.serial_number.clone(),
                        authentication_code_1: code_1,
                        authentication_code_2: code_2,
                    },
                    &token,
                )?;
                iam.enable_mfa_device(request)
                    .await
                    .map(|_| ())
                    .map_err(super::status_error)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = enabled {
            // Leave nothing half-done behind (enrolling again would replace it anyway).
            let _ = delete(&mut iam, &token, &device.serial_number).await;
            return Err(CliError::new(format!(
                "{e}; MFA device {} was not enabled: run `stint mfa enroll` again",
                device.serial_number
            )));
        }
        let who = if owner.is_empty() {
            "you".to_string()
        } else {
            owner.clone()
        };
        super::say(format_args!(
            "MFA device {} is enabled for {who}.",
            device.serial_number
        ))?;
        super::say(format_args!(
            "The codes just typed are used up: wait for the next code before logging in with it{}.",
            if owner.is_empty() {
                String::new()
            } else {
                format!(" (stint login --user {owner})")
            }
        ))?;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_and_owners_from_arns() {
        let cases = [
            (
                "arn:stint:iam::000000000000:user/admin",
                Some("arn:stint:iam::000000000000:mfa/carol"),
                Some("admin"),
            ),
            (
                "arn:aws-cn:sts::123456789012:assumed-role/ops/alice",
                Some("arn:aws-cn:iam::123456789012:mfa/carol"),
                None,
            ),
            (
                "arn:stint:iam::000000000000:user/team/bob",
                Some("arn:stint:iam::000000000000:mfa/carol"),
                Some("bob"),
            ),
            ("not-an-arn", None, None),
            ("", None, None),
        ];
        for (arn, serial, user) in cases {
            assert_eq!(device_serial(arn, "carol").as_deref(), serial, "{arn}");
            assert_eq!(user_of(arn), user, "{arn}");
        }
    }
}
