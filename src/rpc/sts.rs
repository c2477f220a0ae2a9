//! `stint.v1.Sts`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::broker::{
    AssumeRoleInput, Broker, LoginCredential, SessionTokenInput, WebIdentityInput,
};
use crate::core::secret::SecretString;
use crate::proto::{self, get_session_token_request::Credential, sts_server};

use super::{auth, convert};

pub struct StsService {
    pub broker: Arc<Broker>,
}

fn optional_code(code: String) -> Option<SecretString> {
    (!code.is_empty()).then(|| SecretString::new(code))
}

#[tonic::async_trait]
impl sts_server::Sts for StsService {
    async fn get_session_token(
        &self,
        request: Request<proto::GetSessionTokenRequest>,
    ) -> Result<Response<proto::GetSessionTokenResponse>, Status> {
        let meta = auth::meta(&request);
        let proto::GetSessionTokenRequest {
            credential,
            token_code,
            duration_seconds,
            serial_number: _,
        } = request.into_inner();
        let credential = match credential {
            Some(Credential::Password(proto::PasswordCredential {
                user_name,
                password,
            })) => LoginCredential::Password {
                user_name,
                password: SecretString::new(password),
            },
            Some(Credential::AccessKey(proto::AccessKeyCredential {
                access_key_id,
                secret_access_key,
            })) => LoginCredential::AccessKey {
                access_key_id,
                secret_access_key: SecretString::new(secret_access_key),
            },
            None => {
                return Err(Status::invalid_argument(
                    "credential: give password or access_key",
                ));
            }
        };
        let issued = self
            .broker
            .get_session_token(
                &meta,
                SessionTokenInput {
                    credential,
                    token_code: optional_code(token_code),
                    duration_seconds,
                },
            )
            .await?;
        Ok(Response::new(proto::GetSessionTokenResponse {
            credentials: Some(convert::credentials(issued)),
        }))
    }

    async fn assume_role(
        &self,
        request: Request<proto::AssumeRoleRequest>,
    ) -> Result<Response<proto::AssumeRoleResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let proto::AssumeRoleRequest {
            role_arn,
            role_session_name,
            duration_seconds,
            external_id,
            token_code,
            policy,
            tags,
            source_identity,
            policy_arns,
            transitive_tag_keys,
            serial_number,
            audience,
        } = request.into_inner();
        let packed = policy.chars().filter(|c| !c.is_whitespace()).count();
        let assumed = self
            .broker
            .assume_role(
                &meta,
                &caller,
                AssumeRoleInput {
                    role_arn,
                    role_session_name,
                    duration_seconds,
                    external_id,
                    token_code: optional_code(token_code),
                    serial_number,
                    policy,
                    policy_arns,
                    tags: convert::tags_in(tags),
                    transitive_tag_keys,
                    source_identity,
                    audience,
                },
            )
            .await?;
        Ok(Response::new(proto::AssumeRoleResponse {
            credentials: Some(convert::credentials(assumed.credentials)),
            assumed_role_user: Some(proto::AssumedRoleUser {
                assumed_role_id: assumed.assumed_role_id,
                arn: assumed.arn,
            }),
            packed_policy_size: (packed * 100 / 2048) as i32,
            source_identity: assumed.source_identity,
        }))
    }

    async fn get_caller_identity(
        &self,
        request: Request<proto::GetCallerIdentityRequest>,
    ) -> Result<Response<proto::GetCallerIdentityResponse>, Status> {
        let caller = auth::caller(&self.broker, &request)?;
        let proto::GetCallerIdentityRequest {} = request.into_inner();
        let (account, arn, user_id) = self.broker.get_caller_identity(&caller);
        Ok(Response::new(proto::GetCallerIdentityResponse {
            account,
            arn,
            user_id,
        }))
    }

    /// Unauthenticated, like AWS's: the web identity token is the credential.
    async fn assume_role_with_web_identity(
        &self,
        request: Request<proto::AssumeRoleWithWebIdentityRequest>,
    ) -> Result<Response<proto::AssumeRoleWithWebIdentityResponse>, Status> {
        let meta = auth::meta(&request);
        let proto::AssumeRoleWithWebIdentityRequest {
            role_arn,
            role_session_name,
            web_identity_token,
            duration_seconds,
            policy,
            policy_arns,
        } = request.into_inner();
        let packed = policy.chars().filter(|c| !c.is_whitespace()).count();
        let assumed = self
            .broker
            .assume_role_with_web_identity(
                &meta,
                WebIdentityInput {
                    role_arn,
                    role_session_name,
                    web_identity_token: SecretString::new(web_identity_token),
                    duration_seconds,
                    policy,
                    policy_arns,
                },
            )
            .await?;
        Ok(Response::new(proto::AssumeRoleWithWebIdentityResponse {
            credentials: Some(convert::credentials(assumed.credentials)),
            assumed_role_user: Some(proto::AssumedRoleUser {
                assumed_role_id: assumed.assumed_role_id,
                arn: assumed.arn,
            }),
            packed_policy_size: (packed * 100 / 2048) as i32,
            subject_from_web_identity_token: assumed.subject,
            audience: assumed.audience,
            provider: assumed.provider,
        }))
    }
}
