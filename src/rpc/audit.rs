//! `stint.v1.Audit`: reading, following and verifying the audit and rotation logs.
//! Reading is itself authorized (`stint:ReadAuditLog`) and audited.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::audit::chain::Record;
use crate::audit::event::{EventFilter, Outcome};
use crate::broker::{Broker, BrokerError};
use crate::proto::{self, audit_server};

use super::{auth, convert};

pub struct AuditService {
    pub broker: Arc<Broker>,
}

pub fn event_out(record: &Record) -> proto::AuditEvent {
    let e = &record.event;
    proto::AuditEvent {
        seq: e.seq,
        time: Some(convert::timestamp_ms(e.time_ms)),
        event_name: e.event_name.clone(),
        principal_arn: e.principal_arn.clone(),
        outcome: e.outcome.as_str().into(),
        session_id: e
            .credential
            .as_ref()
            .map(|c| c.session_id.clone())
            .unwrap_or_default(),
        event_json: String::from_utf8_lossy(&e.canonical_bytes()).into_owned(),
        hash: record.hash.clone(),
        prev_hash: record.prev_hash.clone(),
        request_id: e.request_id.clone(),
        source_ip: e.source_ip.clone(),
        reason: e.reason.clone(),
    }
}

fn token_in(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token.parse().map(Some).map_err(|_| {
        BrokerError::invalid("next_token", "is not a token this service returned").into()
    })
}

fn max_in(max: i32) -> Result<usize, Status> {
    match max {
        0 => Ok(100),
        1..=1000 => Ok(max as usize),
        _ => Err(BrokerError::invalid("max_results", "must be 1 to 1000").into()),
    }
}

type EventStream = tonic::codegen::BoxStream<proto::AuditEvent>;

#[tonic::async_trait]
impl audit_server::Audit for AuditService {
    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let proto::ListEventsRequest {
            start_time,
            end_time,
            principal_arn,
            event_name,
            outcome,
            next_token,
            max_results,
            newest_first,
        } = request.into_inner();
        let outcome = match outcome.as_str() {
            "" => None,
            text => Some(Outcome::parse(text).ok_or_else(|| {
                Status::from(BrokerError::invalid(
                    "outcome",
                    "must be Allow, Deny or Error",
                ))
            })?),
        };
        let filter = EventFilter {
            start_ms: start_time.as_ref().map(convert::ms_from_timestamp),
            end_ms: end_time.as_ref().map(convert::ms_from_timestamp),
            principal_arn: (!principal_arn.is_empty()).then_some(principal_arn),
            event_name: (!event_name.is_empty()).then_some(event_name),
            outcome,
            rotation_only: false,
        };
        let (records, next) = self
            .broker
            .read_audit(
                &caller,
                &meta,
                "ListEvents",
                &filter,
                token_in(&next_token)?,
                max_in(max_results)?,
                newest_first,
            )
            .await?;
        Ok(Response::new(proto::ListEventsResponse {
            events: records.iter().map(event_out).collect(),
            next_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let proto::WatchEventsRequest { after_seq } = request.into_inner();
        let stream = self.broker.watch_audit(&caller, &meta, after_seq).await?;
        let stream = stream.map(|item| {
            item.map(|record| event_out(&record))
                .map_err(|err| Status::from(BrokerError::from(err)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn verify_chain(
        &self,
        request: Request<proto::VerifyChainRequest>,
    ) -> Result<Response<proto::VerifyChainResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let report = self.broker.verify_audit(&caller, &meta).await?;
        Ok(Response::new(proto::VerifyChainResponse {
            intact: report.intact,
            events_checked: report.events_checked,
            first_broken_seq: report.first_broken_seq.unwrap_or_default(),
            reason: report.reason,
        }))
    }

    async fn list_rotations(
        &self,
        request: Request<proto::ListRotationsRequest>,
    ) -> Result<Response<proto::ListRotationsResponse>, Status> {
        let (caller, meta) = auth::context(&self.broker, &request)?;
        let proto::ListRotationsRequest {
            next_token,
            max_results,
        } = request.into_inner();
        let filter = EventFilter {
            rotation_only: true,
            ..EventFilter::default()
        };
        let (records, next) = self
            .broker
            .read_audit(
                &caller,
                &meta,
                "ListRotations",
                &filter,
                token_in(&next_token)?,
                max_in(max_results)?,
                false,
            )
            .await?;
        Ok(Response::new(proto::ListRotationsResponse {
            events: records.iter().map(event_out).collect(),
            next_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}
