//! `containerd.services.events.v1.Events` over gRPC, and the ttrpc
//! `containerd.services.events.ttrpc.v1.Events/Forward` shims use (see `server`).

use super::{ctx, filter, to_status};
use crate::events::{Envelope, Exchange};
use crate::metadata::Ts;
use futures::Stream;
use protos::containerd::services::events::v1::{
    events_server::Events, ForwardRequest, PublishRequest, SubscribeRequest,
};
use protos::containerd::types::Envelope as PEnvelope;
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The events service.
#[derive(Debug)]
pub struct Service(pub Exchange);

/// Envelope from the wire (timestamp defaults to now).
pub fn envelope_from(e: PEnvelope) -> Result<Envelope, Status> {
    let event = e
        .event
        .ok_or_else(|| Status::invalid_argument("envelope event must be set"))?;
    let timestamp = e
        .timestamp
        .map(|t| {
            Ts(t.seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.nanos)))
        })
        .unwrap_or_else(Ts::now);
    Ok(Envelope {
        timestamp,
        namespace: e.namespace,
        topic: e.topic,
        event,
    })
}

fn envelope_to(e: Envelope) -> PEnvelope {
    PEnvelope {
        timestamp: Some(e.timestamp.to_proto()),
        namespace: e.namespace,
        topic: e.topic,
        event: Some(e.event),
    }
}

#[tonic::async_trait]
impl Events for Service {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let ev = r
            .event
            .ok_or_else(|| Status::invalid_argument("event must be set"))?;
        self.0
            .publish_any(c.ns.as_str(), &r.topic, ev)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        self.0
            .forward(envelope_from(env)?)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(()))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<PEnvelope, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let f = filter(&req.into_inner().filters)?;
        let mut sub = self.0.subscribe(f);
        let s = async_stream::stream! {
            while let Some(e) = sub.next().await {
                yield Ok(envelope_to(e));
            }
        };
        Ok(Response::new(Box::pin(s)))
    }
}
