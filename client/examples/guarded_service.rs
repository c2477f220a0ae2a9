//! A gRPC service guarded by Stint: `grpc.health.v1.Health` behind [`BearerAuthLayer`].
//!
//! Every request must carry `authorization: Bearer <Stint token>`; the layer verifies it
//! offline (JWKS cached from Stint) and hands the handler typed [`Claims`]. Offline claims
//! answer "who is this, with MFA or not"; whether that principal may read a particular
//! thing is a policy question, so for the named-service check the handler asks Stint's
//! `Tokens.Authorize`, authenticating with the service's own credentials (which
//! [`RefreshingCredentials`] keeps fresh).
//!
//! ```text
//! STINT_ENDPOINT=http://127.0.0.1:7420 \
//! STINT_ACCESS_KEY_ID=AKIA… STINT_SECRET_ACCESS_KEY=… \
//!   cargo run -p stint-client --example guarded_service
//! # then, with a token from `stint login`:
//! grpcurl -plaintext -H "authorization: Bearer $STINT_SESSION_TOKEN" \
//!   -d '{"service":"reports"}' 127.0.0.1:50061 grpc.health.v1.Health/Check
//! ```
//!
//! Optional: `STINT_CA_CERT` (PEM file) for a private CA, `STINT_ISSUER` and
//! `STINT_AUDIENCE` (default `stint`), `GUARDED_ADDR` (default `127.0.0.1:50061`).

use std::pin::Pin;

use stint_client::{
    BearerAuthLayer, BearerToken, Claims, Client, ClientConfig, Decision, RefreshConfig,
    RefreshingCredentials, Source, Verifier, VerifierConfig,
};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

struct Guarded {
    /// The service's own credentials, for `Authorize`.
    credentials: RefreshingCredentials,
}

#[tonic::async_trait]
impl Health for Guarded {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        // The layer put these here; without them the request never reached us.
        let claims = request
            .extensions()
            .get::<Claims>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no verified token"))?;
        let caller_token = request
            .extensions()
            .get::<BearerToken>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no verified token"))?;
        let service = &request.get_ref().service;
        println!(
            "{} (MFA: {}) asks about {service:?}",
            claims.sub, claims.stint.mfa_present
        );
        if !service.is_empty() {
            // Offline claims cannot say whether this principal may read this service's
            // status: ask Stint, as ourselves.
            let session = self
                .credentials
                .session()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let resource = format!("arn:stint:health:::{service}");
            let decision = session
                .authorize(&caller_token.0, "health:Check", &resource)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            if decision != Decision::Allow {
                return Err(Status::permission_denied(format!(
                    "{} may not health:Check {resource} ({decision:?})",
                    claims.sub
                )));
            }
        }
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch is not offered here"))
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ClientConfig::new(env_or("STINT_ENDPOINT", "http://127.0.0.1:7420"));
    if let Ok(path) = std::env::var("STINT_CA_CERT") {
        config = config.with_ca_cert_pem(std::fs::read(path)?);
    }
    let client = Client::connect_lazy(config)?;
    let credentials = RefreshingCredentials::start(
        client.clone(),
        Source::access_key_from_env()?,
        RefreshConfig::default(),
    )
    .await?;
    let verifier = Verifier::new(
        client,
        VerifierConfig::new(
            env_or("STINT_ISSUER", "stint"),
            env_or("STINT_AUDIENCE", "stint"),
        ),
    )
    .await?;
    // Refuse revoked tokens within seconds (needs `stint:WatchRevocations`; without it the
    // follower logs the refusal and retries, and tokens are refused at expiry only).
    let _following = verifier.follow_revocations(credentials.clone());

    let addr = env_or("GUARDED_ADDR", "127.0.0.1:50061").parse()?;
    println!("guarded grpc.health.v1.Health on {addr}");
    tonic::transport::Server::builder()
        .layer(BearerAuthLayer::new(verifier))
        .add_service(HealthServer::new(Guarded { credentials }))
        .serve(addr)
        .await?;
    Ok(())
}
