//! Publishing task events to containerd without ever blocking the caller.
//!
//! `publish` only pushes onto an in-order queue; one task drains it, forwarding each event as
//! an `Envelope` to `containerd.services.events.ttrpc.v1.Events/Forward` at `TTRPC_ADDRESS`
//! (containerd's `runtime/v2/shim/publisher.go`), reconnecting when the daemon restarted. If
//! that fails and a publish binary is known, it falls back to
//! `<publish-binary> --address <grpc address> publish --topic T --namespace NS` with the
//! marshalled `Any` on stdin (the v1 shim's way). An event that cannot be delivered is retried
//! with a growing delay, in order, so an exit that happens while containerd is down is
//! delivered once when it comes back — exactly once, because the queue is the only sender.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use tokio::sync::{mpsc, watch};

use crate::reaper::Reaper;

/// How long one forward attempt may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times an event is retried before it is dropped (about 10 minutes of backoff).
const MAX_ATTEMPTS: u32 = 130;
/// Longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Queue bound: beyond this, new events are dropped (and logged) rather than using memory.
const QUEUE_LIMIT: usize = 2048;

/// Errors delivering one event.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("connecting to containerd's ttrpc socket {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("forwarding {topic} to {address}: {source}")]
    Forward {
        topic: String,
        address: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("publish binary {binary}: {reason}")]
    Binary { binary: String, reason: String },
    #[error("no TTRPC_ADDRESS and no publish binary: nowhere to send {topic}")]
    Nowhere { topic: String },
}

/// One queued event.
#[derive(Clone)]
pub struct Event {
    pub topic: &'static str,
    /// What the event is about (`t1`, `t1/e1`), for logs.
    pub subject: String,
    pub event: Any,
    pub at: SystemTime,
}

/// Where and how events are delivered.
#[derive(Debug, Clone, Default)]
pub struct PublisherConfig {
    pub namespace: String,
    pub ttrpc_address: String,
    pub grpc_address: String,
    pub publish_binary: String,
}

/// The sending half: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Event>,
    /// Cuts a retry backoff short (shutdown wants the queue drained now).
    hurry: Arc<tokio::sync::Notify>,
    depth: Arc<std::sync::atomic::AtomicUsize>,
    idle: watch::Receiver<bool>,
}

impl Publisher {
    /// Creates the publisher and the future that drains its queue (spawn it).
    pub fn new(
        config: PublisherConfig,
    ) -> (Publisher, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (idle_tx, idle) = watch::channel(true);
        let hurry = Arc::new(tokio::sync::Notify::new());
        let publisher = Publisher {
            tx,
            hurry: hurry.clone(),
            depth: depth.clone(),
            idle,
        };
        (publisher, drain(config, rx, depth, idle_tx, hurry))
    }

    /// Queues an event; returns at once.
    pub fn publish<M: Message>(
        &self,
        topic: &'static str,
        type_name: &str,
        subject: &str,
        msg: &M,
    ) {
        use std::sync::atomic::Ordering;
        if self.depth.load(Ordering::Relaxed) >= QUEUE_LIMIT {
            log::error!("event queue full ({QUEUE_LIMIT}), dropping {topic}");
            return;
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            topic,
            subject: subject.to_string(),
            event: crate::options::pack_any(type_name, msg),
            at: SystemTime::now(),
        };
        if self.tx.send(event).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            log::error!("event queue closed, dropping {topic}");
        }
    }

    /// Waits until everything queued so far was delivered or dropped, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let mut idle = self.idle.clone();
        let depth = self.depth.clone();
        self.hurry.notify_one();
        tokio::time::timeout(timeout, async move {
            while depth.load(Ordering::Relaxed) > 0 {
                if idle.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .is_ok()
    }
}

async fn drain(
    config: PublisherConfig,
    mut rx: mpsc::UnboundedReceiver<Event>,
    depth: Arc<std::sync::atomic::AtomicUsize>,
    idle: watch::Sender<bool>,
    hurry: Arc<tokio::sync::Notify>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(ev) = rx.recv().await {
        let _ = idle.send(false);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match deliver(&config, &mut client, &ev).await {
                Ok(()) => {
                    log::debug!(
                        "event {} for {} forwarded to containerd (attempt {attempt})",
                        ev.topic,
                        ev.subject
                    );
                    break;
                }
                Err(e) if attempt >= MAX_ATTEMPTS => {
                    log::error!("dropping event {} after {attempt} attempts: {e}", ev.topic);
                    break;
                }
                Err(e) => {
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        log::warn!("post event {} (attempt {attempt}): {e}", ev.topic);
                    }
                    let delay = Duration::from_secs(u64::from(attempt)).min(MAX_BACKOFF);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = hurry.notified() => hurry.notify_one(),
                    }
                }
            }
        }
        depth.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let _ = idle.send(true);
    }
}

fn envelope(config: &PublisherConfig, ev: &Event) -> ForwardRequest {
    let mut env = Envelope::new();
    env.timestamp = Some(crate::service::timestamp(ev.at)).into();
    env.namespace = config.namespace.clone();
    env.topic = ev.topic.to_string();
    env.event = Some(ev.event.clone()).into();
    let mut req = ForwardRequest::new();
    req.envelope = Some(env).into();
    req
}

async fn deliver(
    config: &PublisherConfig,
    client: &mut Option<EventsClient>,
    ev: &Event,
) -> Result<(), PublishError> {
    let ttrpc_err = if config.ttrpc_address.is_empty() {
        None
    } else {
        match forward(config, client, ev).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                // A broken connection (containerd restarted) is replaced on the next try.
                *client = None;
                Some(e)
            }
        }
    };
    if config.publish_binary.is_empty() {
        return Err(ttrpc_err.unwrap_or(PublishError::Nowhere {
            topic: ev.topic.to_string(),
        }));
    }
    match publish_binary(config, ev).await {
        Ok(()) => Ok(()),
        Err(e) => Err(ttrpc_err.unwrap_or(e)),
    }
}

async fn forward(
    config: &PublisherConfig,
    client: &mut Option<EventsClient>,
    ev: &Event,
) -> Result<(), PublishError> {
    let address = if config.ttrpc_address.contains("://") {
        config.ttrpc_address.clone()
    } else {
        format!("unix://{}", config.ttrpc_address)
    };
    if client.is_none() {
        let c = ttrpc::r#async::Client::connect(&address)
            .await
            .map_err(|source| PublishError::Connect {
                address: address.clone(),
                source,
            })?;
        *client = Some(EventsClient::new(c));
    }
    let Some(c) = client.as_ref() else {
        return Ok(());
    };
    let mut ctx = ttrpc::context::with_duration(FORWARD_TIMEOUT);
    let mut md = HashMap::new();
    md.insert(
        "containerd-namespace-ttrpc".to_string(),
        vec![config.namespace.clone()],
    );
    ctx.metadata = md;
    let req = envelope(config, ev);
    match tokio::time::timeout(FORWARD_TIMEOUT, c.forward(ctx, &req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(PublishError::Forward {
            topic: ev.topic.to_string(),
            address,
            source,
        }),
        Err(_) => Err(PublishError::Forward {
            topic: ev.topic.to_string(),
            address,
            source: ttrpc::Error::Others(format!("no answer within {FORWARD_TIMEOUT:?}")),
        }),
    }
}

async fn publish_binary(config: &PublisherConfig, ev: &Event) -> Result<(), PublishError> {
    let err = |reason: String| PublishError::Binary {
        binary: config.publish_binary.clone(),
        reason,
    };
    let data = ev.event.write_to_bytes().map_err(|e| err(e.to_string()))?;
    let mut cmd = Command::new(&config.publish_binary);
    cmd.args([
        "--address",
        &config.grpc_address,
        "publish",
        "--topic",
        ev.topic,
        "--namespace",
        &config.namespace,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let (mut child, exit) = Reaper::global()
        .spawn(cmd)
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An Any of a task event is far below the pipe buffer: this write never blocks.
        let _ = stdin.write_all(&data);
    }
    match tokio::time::timeout(FORWARD_TIMEOUT, exit).await {
        Ok(Ok(e)) if e.status == 0 => Ok(()),
        Ok(Ok(e)) => Err(err(format!("exit status {}", e.status))),
        Ok(Err(_)) => Err(err("exit status lost".into())),
        Err(_) => {
            let _ = child.kill();
            Err(err(format!("no exit within {FORWARD_TIMEOUT:?}")))
        }
    }
}
