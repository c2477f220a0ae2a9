//! `stint.v1.Tokens`: what apps call to check credentials.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::broker::{Broker, RevocationEntry};
use crate::proto::{self, tokens_server};

use super::{auth, convert};

type RevocationStream = tonic::codegen::BoxStream<proto::RevocationEntry>;

fn revocation_out(entry: RevocationEntry) -> proto::RevocationEntry {
    proto::RevocationEntry {
        session_id: entry.session_id,
        principal_arn: entry.principal_arn,
        role_arn: entry.role_arn,
        issued_before_ms: entry.issued_before_ms,
        keep_until_ms: entry.keep_until_ms,
        end_of_snapshot: entry.end_of_snapshot,
    }
}

pub struct TokensService {
    pub broker: Arc<Broker>,
}

pub fn jwks_response(broker: &Broker) -> proto::GetJwksResponse {
    let jwks_json = broker.jwks().to_string();
    let keys = serde_json::from_str::<serde_json::Value>(&jwks_json)
        .ok()
        .and_then(|v| v.get("keys").and_then(|k| k.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let field = |name: &str| {
                k.get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            proto::Jwk {
                kty: field("kty"),
                crv: field("crv"),
                x: field("x"),
                kid: field("kid"),
                alg: field("alg"),
                r#use: field("use"),
            }
        })
        .collect();
    proto::GetJwksResponse { jwks_json, keys }
}

#[tonic::async_trait]
impl tokens_server::Tokens for TokensService {
    async fn get_jwks(
        &self,
        request: Request<proto::GetJwksRequest>,
    ) -> Result<Response<proto::GetJwksResponse>, Status> {
        let proto::GetJwksRequest {} = request.into_inner();
        Ok(Response::new(jwks_response(&self.broker)))
    }

    async fn introspect(
        &self,
        request: Request<proto::IntrospectRequest>,
    ) -> Result<Response<proto::IntrospectResponse>, Status> {
        auth::caller(&self.broker, &request)?;
        let proto::IntrospectRequest { token } = request.into_inner();
        let response = match self.broker.introspect(&token) {
            Some(claims) => proto::IntrospectResponse {
                active: true,
                sub: claims.sub.clone(),
                jti: claims.jti.clone(),
                exp: claims.exp,
                claims_json: serde_json::to_string(&claims).unwrap_or_default(),
            },
            None => proto::IntrospectResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn authorize(
        &self,
        request: Request<proto::AuthorizeRequest>,
    ) -> Result<Response<proto::AuthorizeResponse>, Status> {
        let (_caller, meta) = auth::context(&self.broker, &request).map_err(|s| match request.metadata().get("authorization") {
            None => Status::unauthenticated("Authorize needs the calling app's own session token as `authorization: Bearer <token>` (session_token is the one being checked)"),
            Some(_) => s,
        })?;
        let proto::AuthorizeRequest {
            session_token,
            action,
            resource,
            context,
        } = request.into_inner();
        let context: Vec<(String, Vec<String>)> = context
            .into_iter()
            .map(|proto::ContextEntry { key, values }| (key, values))
            .collect();
        let outcome = self
            .broker
            .authorize(&meta, &session_token, &action, &resource, &context)?;
        Ok(Response::new(proto::AuthorizeResponse {
            decision: convert::decision(outcome.decision) as i32,
            matched_statements: outcome.matched,
            principal_arn: outcome.principal_arn,
            reason: outcome.reason,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<proto::RevokeSessionRequest>,
    ) -> Result<Response<proto::RevokeSessionResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let proto::RevokeSessionRequest {
            session_id,
            principal_arn,
            role_arn,
            issued_before,
        } = request.into_inner();
        let revoked = self
            .broker
            .revoke_session(
                &meta,
                &caller,
                &session_id,
                &principal_arn,
                &role_arn,
                issued_before.as_ref().map(convert::ms_from_timestamp),
            )
            .await?;
        Ok(Response::new(proto::RevokeSessionResponse { revoked }))
    }

    async fn watch_revocations(
        &self,
        request: Request<proto::WatchRevocationsRequest>,
    ) -> Result<Response<RevocationStream>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let stream = self.broker.watch_revocations(&caller, &meta).await?;
        let stream = stream.map(|item| item.map(revocation_out).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
