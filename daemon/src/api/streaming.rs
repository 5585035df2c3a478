//! `containerd.services.streaming.v1.Streaming` (containerd
//! `plugins/services/streaming/service.go`): the first message is a `StreamInit{id}`; the
//! stream is registered under (namespace, id) in the [`StreamManager`], acknowledged with
//! an empty `Any`, and then belongs to the transfer that names it. The RPC ends (OK, EOF
//! for the client) when that transfer closes the stream, or when the client goes away.

use super::{ctx, to_status};
use crate::transfer::stream::{pack, type_name, urls, Stream, StreamManager};
use futures::Stream as FStream;
use prost::Message;
use prost_types::Any;
use protos::containerd::services::streaming::v1::{streaming_server::Streaming, StreamInit};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// How long a client may take to send its `StreamInit`.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The streaming service.
#[derive(Debug, Clone)]
pub struct Service(pub StreamManager);

type BoxStream = Pin<Box<dyn FStream<Item = Result<Any, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Streaming for Service {
    type StreamStream = BoxStream;

    async fn stream(
        &self,
        req: Request<tonic::Streaming<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let c = ctx(&req)?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(INIT_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no StreamInit within {}s of opening the stream",
                    INIT_TIMEOUT.as_secs()
                ))
            })??
            .ok_or_else(|| Status::invalid_argument("stream closed before its StreamInit"))?;
        if type_name(&first.type_url) != urls::STREAM_INIT {
            return Err(Status::invalid_argument(format!(
                "first stream message must be {}, got {:?}",
                urls::STREAM_INIT,
                first.type_url
            )));
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("bad StreamInit: {e}")))?;
        if init.id.is_empty() {
            return Err(Status::invalid_argument("StreamInit.id must not be empty"));
        }
        let (in_tx, in_rx) = mpsc::channel::<Any>(16);
        let (out_tx, mut out_rx) = mpsc::channel::<Any>(16);
        let (flushed_tx, flushed) = tokio::sync::oneshot::channel();
        let ack = out_tx.clone();
        let reg = self
            .0
            .register(
                c.ns.as_str(),
                &init.id,
                Stream {
                    rx: in_rx,
                    tx: out_tx,
                    flushed: Some(flushed),
                },
            )
            .map_err(|e| to_status(&e))?;
        log::debug!("stream {:?} registered in {}", init.id, c.ns);
        // Acknowledge only once registered: the client names the stream right after.
        let _ = ack.send(pack(urls::EMPTY, &())).await;
        drop(ack);
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if in_tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let out = async_stream::stream! {
            // Dropped with the RPC: forgets the stream if no transfer took it.
            let _reg = reg;
            while let Some(m) = out_rx.recv().await {
                yield Ok(m);
            }
            let _ = flushed_tx.send(());
        };
        Ok(Response::new(Box::pin(out)))
    }
}
