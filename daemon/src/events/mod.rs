//! The event exchange (containerd `events/exchange`): every service publishes here, shims
//! forward here (over ttrpc), and `Subscribe` streams from here, filtered with containerd's
//! filter language over the envelope (`topic`, `namespace`, `event.<field>` is not supported).
//!
//! Events are `Any`s whose type URL is the protobuf message's full name (what containerd's
//! `typeurl.MarshalAny` produces for its event types), so `ctr events` decodes them.

use crate::errdefs::{HasKind, Kind};
use crate::filters::{non_empty, Adaptor, Filter};
use crate::metadata::{validate_identifier, Ts};
use prost_types::Any;
use tokio::sync::broadcast;

/// Errors of the exchange.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Topic fails containerd's `validateTopic`.
    #[error("topic {topic:?}: {reason}: invalid argument")]
    BadTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Envelope incomplete.
    #[error("{0}: invalid argument")]
    Invalid(String),
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// An event with its routing data.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// When it was published.
    pub timestamp: Ts,
    /// Namespace it happened in.
    pub namespace: String,
    /// Topic, e.g. `/images/create`.
    pub topic: String,
    /// The event.
    pub event: Any,
}

impl Adaptor for Envelope {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "namespace" => non_empty(&self.namespace),
            "topic" => non_empty(&self.topic),
            "event" => event_field(&self.event, &path[1..]),
            _ => None,
        }
    }
}

/// `event.<field>` in filters: the string fields (and `labels.<k>`) of containerd's event
/// types, by protobuf field name, as their generated `Field` methods expose them. Unknown
/// event types have no fields.
fn event_field(any: &Any, path: &[String]) -> Option<String> {
    use crate::filters::label_field;
    use imgev::{ImageCreate, ImageDelete, ImageUpdate};
    let name = path.first()?.as_str();
    let url = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    macro_rules! fields {
        ($t:ty, [$($f:ident),*] $(, labels = $l:ident)?) => {{
            let e = <$t as prost::Message>::decode(any.value.as_slice()).ok()?;
            match name {
                $(stringify!($f) => non_empty(&e.$f),)*
                $("labels" => label_field(&e.$l, &path[1..]),)?
                _ => None,
            }
        }};
    }
    match url {
        "containerd.events.TaskCreate" => {
            fields!(ev::TaskCreate, [container_id, bundle, checkpoint])
        }
        "containerd.events.TaskStart" => fields!(ev::TaskStart, [container_id]),
        "containerd.events.TaskDelete" => fields!(ev::TaskDelete, [container_id, id]),
        "containerd.events.TaskExit" => fields!(ev::TaskExit, [container_id, id]),
        "containerd.events.TaskOOM" => fields!(ev::TaskOom, [container_id]),
        "containerd.events.TaskExecAdded" => fields!(ev::TaskExecAdded, [container_id, exec_id]),
        "containerd.events.TaskExecStarted" => {
            fields!(ev::TaskExecStarted, [container_id, exec_id])
        }
        "containerd.events.TaskPaused" => fields!(ev::TaskPaused, [container_id]),
        "containerd.events.TaskResumed" => fields!(ev::TaskResumed, [container_id]),
        "containerd.events.TaskCheckpointed" => {
            fields!(ev::TaskCheckpointed, [container_id, checkpoint])
        }
        "containerd.events.ContainerCreate" => fields!(ev::ContainerCreate, [id, image]),
        "containerd.events.ContainerUpdate" => fields!(
            ev::ContainerUpdate,
            [id, image, snapshot_key],
            labels = labels
        ),
        "containerd.events.ContainerDelete" => fields!(ev::ContainerDelete, [id]),
        "containerd.events.ContentDelete" => fields!(ev::ContentDelete, [digest]),
        "containerd.events.SnapshotPrepare" => {
            fields!(ev::SnapshotPrepare, [key, parent, snapshotter])
        }
        "containerd.events.SnapshotCommit" => fields!(ev::SnapshotCommit, [key, name, snapshotter]),
        "containerd.events.SnapshotRemove" => fields!(ev::SnapshotRemove, [key, snapshotter]),
        "containerd.events.NamespaceCreate" => {
            fields!(ev::NamespaceCreate, [name], labels = labels)
        }
        "containerd.events.NamespaceUpdate" => {
            fields!(ev::NamespaceUpdate, [name], labels = labels)
        }
        "containerd.events.NamespaceDelete" => fields!(ev::NamespaceDelete, [name]),
        "containerd.services.images.v1.ImageCreate" => {
            fields!(ImageCreate, [name], labels = labels)
        }
        "containerd.services.images.v1.ImageUpdate" => {
            fields!(ImageUpdate, [name], labels = labels)
        }
        "containerd.services.images.v1.ImageDelete" => fields!(ImageDelete, [name]),
        _ => None,
    }
}

/// containerd's `validateTopic`: `/` followed by identifier components.
pub fn validate_topic(topic: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::BadTopic {
        topic: topic.to_string(),
        reason: reason.to_string(),
    };
    if topic.is_empty() {
        return Err(bad("must not be empty"));
    }
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(bad("must start with '/'"));
    };
    if rest.is_empty() {
        return Err(bad("must have at least one component"));
    }
    for c in rest.split('/') {
        if validate_identifier("topic component", c).is_err() {
            return Err(bad(&format!("failed validation on component {c:?}")));
        }
    }
    Ok(())
}

/// An event message with its protobuf full name.
pub trait Event: prost::Message + Sized {
    /// Full protobuf name, used as the `Any` type URL.
    const TYPE_URL: &'static str;
    /// Topic containerd publishes it on.
    const TOPIC: &'static str;

    /// Packs into an `Any`.
    fn to_any(&self) -> Any {
        Any {
            type_url: Self::TYPE_URL.to_string(),
            value: self.encode_to_vec(),
        }
    }
}

macro_rules! event {
    ($t:ty, $url:literal, $topic:literal) => {
        impl Event for $t {
            const TYPE_URL: &'static str = $url;
            const TOPIC: &'static str = $topic;
        }
    };
}

use protos::containerd::events as ev;
use protos::containerd::services::images::v1 as imgev;
event!(
    ev::NamespaceCreate,
    "containerd.events.NamespaceCreate",
    "/namespaces/create"
);
event!(
    ev::NamespaceUpdate,
    "containerd.events.NamespaceUpdate",
    "/namespaces/update"
);
event!(
    ev::NamespaceDelete,
    "containerd.events.NamespaceDelete",
    "/namespaces/delete"
);
event!(
    ev::ContentCreate,
    "containerd.events.ContentCreate",
    "/content/create"
);
event!(
    ev::ContentDelete,
    "containerd.events.ContentDelete",
    "/content/delete"
);
event!(
    ev::SnapshotPrepare,
    "containerd.events.SnapshotPrepare",
    "/snapshot/prepare"
);
event!(
    ev::SnapshotCommit,
    "containerd.events.SnapshotCommit",
    "/snapshot/commit"
);
event!(
    ev::SnapshotRemove,
    "containerd.events.SnapshotRemove",
    "/snapshot/remove"
);
event!(
    ev::ContainerCreate,
    "containerd.events.ContainerCreate",
    "/containers/create"
);
event!(
    ev::ContainerUpdate,
    "containerd.events.ContainerUpdate",
    "/containers/update"
);
event!(
    ev::ContainerDelete,
    "containerd.events.ContainerDelete",
    "/containers/delete"
);
event!(
    imgev::ImageCreate,
    "containerd.services.images.v1.ImageCreate",
    "/images/create"
);
event!(
    imgev::ImageUpdate,
    "containerd.services.images.v1.ImageUpdate",
    "/images/update"
);
event!(
    imgev::ImageDelete,
    "containerd.services.images.v1.ImageDelete",
    "/images/delete"
);

/// The exchange. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Envelope>,
    closed: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    /// A new exchange; slow subscribers lose the oldest events past 1024 buffered.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        let (closed, _) = tokio::sync::watch::channel(false);
        Self {
            tx,
            closed: std::sync::Arc::new(closed),
        }
    }

    /// Publishes a typed event on its standard topic.
    pub fn publish<E: Event>(&self, namespace: &str, event: &E) {
        let _ = self.tx.send(Envelope {
            timestamp: Ts::now(),
            namespace: namespace.to_string(),
            topic: E::TOPIC.to_string(),
            event: event.to_any(),
        });
    }

    /// Publishes an already-packed event (the `Publish` RPC).
    pub fn publish_any(&self, namespace: &str, topic: &str, event: Any) -> Result<(), Error> {
        validate_topic(topic)?;
        validate_identifier("namespace", namespace).map_err(|e| Error::Invalid(e.to_string()))?;
        let _ = self.tx.send(Envelope {
            timestamp: Ts::now(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event,
        });
        Ok(())
    }

    /// Forwards an envelope as-is (the `Forward` RPC, used by shims).
    pub fn forward(&self, env: Envelope) -> Result<(), Error> {
        validate_topic(&env.topic)?;
        validate_identifier("namespace", &env.namespace)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let _ = self.tx.send(env);
        Ok(())
    }

    /// A subscription; call [`Subscription::next`] to receive matching events.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            filter,
        }
    }

    /// Ends every subscription (daemon shutdown), so `Subscribe` streams finish and the
    /// server can drain.
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

/// A filtered receiver.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Envelope>,
    closed: tokio::sync::watch::Receiver<bool>,
    filter: Filter,
}

impl Subscription {
    /// Next matching event; `None` when the exchange is closed or gone.
    pub async fn next(&mut self) -> Option<Envelope> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            let msg = tokio::select! {
                m = self.rx.recv() => m,
                _ = self.closed.changed() => return None,
            };
            match msg {
                Ok(env) if self.filter.matches(&env) => return Some(env),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("event subscriber lagged, {n} events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        for ok in ["/images/create", "/tasks/exit", "/a"] {
            validate_topic(ok).unwrap();
        }
        for bad in ["", "images", "/", "/a//b", "/a/b c"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn subscribe_filters() {
        let x = Exchange::new();
        let mut sub = x.subscribe(Filter::parse_all(["topic~=/images/", "namespace==b"]).unwrap());
        x.publish(
            "a",
            &ev::NamespaceCreate {
                name: "a".into(),
                labels: Default::default(),
            },
        );
        x.publish(
            "a",
            &imgev::ImageCreate {
                name: "img".into(),
                labels: Default::default(),
            },
        );
        let env = sub.next().await.unwrap();
        assert_eq!(env.topic, "/images/create");
        assert_eq!(
            env.event.type_url,
            "containerd.services.images.v1.ImageCreate"
        );
        x.publish_any("b", "/custom/x", Any::default()).unwrap();
        assert_eq!(sub.next().await.unwrap().topic, "/custom/x");
        assert!(x.publish_any("b", "nope", Any::default()).is_err());
        // Event fields, as containerd's generated `Field` methods expose them.
        let mut by_field =
            x.subscribe(Filter::parse("event.name==img2,topic==\"/images/create\"").unwrap());
        x.publish(
            "a",
            &imgev::ImageCreate {
                name: "img1".into(),
                labels: Default::default(),
            },
        );
        x.publish(
            "a",
            &imgev::ImageCreate {
                name: "img2".into(),
                labels: [("k".to_string(), "v".to_string())].into(),
            },
        );
        let e = by_field.next().await.unwrap();
        assert!(
            Envelope::field(&e, &["event".into(), "labels".into(), "k".into()]).as_deref()
                == Some("v")
        );
        x.close();
        assert!(
            sub.next().await.is_none(),
            "closed exchange ends subscriptions"
        );
    }
}
