//! `stint.v1.Keys`: signing-key listing and on-demand rotation.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::core::model::SigningKey;
use crate::proto::{self, keys_server};

use super::{auth, convert};

pub struct KeysService {
    pub broker: Arc<Broker>,
}

fn key_out(k: &SigningKey) -> proto::SigningKey {
    proto::SigningKey {
        kid: k.kid.clone(),
        state: k.state.as_str().into(),
        algorithm: "EdDSA".into(),
        created: Some(convert::timestamp_ms(k.created)),
        activated: convert::optional_timestamp_ms(k.activated),
        retired: convert::optional_timestamp_ms(k.retired),
        purge_after: convert::optional_timestamp_ms(k.purge_after),
    }
}

#[tonic::async_trait]
impl keys_server::Keys for KeysService {
    async fn list_signing_keys(
        &self,
        request: Request<proto::ListSigningKeysRequest>,
    ) -> Result<Response<proto::ListSigningKeysResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let keys = self.broker.list_signing_keys(&caller, &meta).await?;
        Ok(Response::new(proto::ListSigningKeysResponse {
            keys: keys.iter().map(key_out).collect(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<proto::RotateSigningKeyRequest>,
    ) -> Result<Response<proto::RotateSigningKeyResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let key = self.broker.rotate_signing_key(&caller, &meta).await?;
        Ok(Response::new(proto::RotateSigningKeyResponse {
            key: Some(key_out(&key)),
        }))
    }
}
