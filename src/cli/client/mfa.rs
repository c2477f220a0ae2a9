//! `stint mfa enroll`: create a virtual MFA device, show it as a QR code, and enable it
//! with two consecutive codes.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{AuthFlags, Context, Env, bearer, prompt_secret};
use crate::cli::{CliError, runtime};
use crate::core::authn::totp::qr_terminal;
use crate::proto::iam_client::IamClient;
use crate::proto::{CreateVirtualMfaDeviceRequest, EnableMfaDeviceRequest};

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
    /// Device name (default: chosen by the server).
    #[arg(long)]
    pub device_name: Option<String>,
}

fn read_code(prompt: &str) -> Result<String, CliError> {
    let code = prompt_secret(prompt)?;
    let code = code.expose().trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CliError::new("an MFA code is 6 digits"));
    }
    Ok(code.to_string())
}

pub fn run(command: MfaCommand, env: &Env) -> Result<ExitCode, CliError> {
    let MfaCommand::Enroll(args) = command;
    let ctx = Context::open(&args.auth.conn, env)?;
    let token = ctx.token(args.auth.token.as_deref())?;
    let user_name = args.user.clone().unwrap_or_default();
    runtime()?.block_on(async {
        let mut iam = IamClient::new(ctx.channel().await?);
        let device = iam
            .create_virtual_mfa_device(bearer(
                CreateVirtualMfaDeviceRequest {
                    user_name: user_name.clone(),
                    virtual_mfa_device_name: args.device_name.clone().unwrap_or_default(),
                },
                &token,
            )?)
            .await
            .map_err(super::status_error)?
            .into_inner();
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
        let not_enabled = |e: CliError| {
            CliError::new(format!(
                "{e}; device {} was created but is not enabled: run `stint mfa enroll` again",
                device.serial_number
            ))
        };
        let code_1 = read_code("First code: ").map_err(not_enabled)?;
        let code_2 = read_code("Next code (wait for it to change): ").map_err(not_enabled)?;
        if code_1 == code_2 {
            return Err(not_enabled(CliError::new(
                "the two codes must be consecutive, not the same one twice",
            )));
        }
        iam.enable_mfa_device(bearer(
            EnableMfaDeviceRequest {
                user_name: user_name.clone(),
                serial_number: device.serial_number.clone(),
                authentication_code_1: code_1,
                authentication_code_2: code_2,
            },
            &token,
        )?)
        .await
        .map_err(|s| not_enabled(super::status_error(s)))?;
        let who = if user_name.is_empty() {
            "you".to_string()
        } else {
            user_name.clone()
        };
        super::say(format_args!(
            "MFA device {} is enabled for {who}. Log in again with a code to get an MFA session.",
            device.serial_number
        ))?;
        Ok(ExitCode::SUCCESS)
    })
}
