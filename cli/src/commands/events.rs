//! `berth events`: subscribes to the daemon's event stream and prints one line per event:
//! timestamp, namespace, topic and the event as JSON (ctr's format). Events are decoded for
//! the topics containerd publishes; an unknown type prints its type URL.

use clap::Args as ClapArgs;
use prost::Message;
use protos::events as ev;
use protos::services::events::v1::SubscribeRequest;
use serde_json::{json, Value};

use crate::util::rfc3339;
use crate::{client, Globals};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Filters (containerd filter syntax, e.g. topic=="/tasks/exit").
    filters: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
}

fn ts(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| rfc3339(Some(t)).into())
}

/// Decodes the event payload into the JSON Go's `json.Marshal` gives for it.
pub fn event_json(any: &prost_types::Any) -> Value {
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let v = &any.value[..];
    macro_rules! dec {
        ($t:ty) => {
            match <$t>::decode(v) {
                Ok(e) => e,
                Err(_) => return json!({ "type_url": any.type_url }),
            }
        };
    }
    match name {
        "containerd.events.TaskCreate" => {
            let e = dec!(ev::TaskCreate);
            json!({"container_id": e.container_id, "bundle": e.bundle, "pid": e.pid})
        }
        "containerd.events.TaskStart" => {
            let e = dec!(ev::TaskStart);
            json!({"container_id": e.container_id, "pid": e.pid})
        }
        "containerd.events.TaskExit" => {
            let e = dec!(ev::TaskExit);
            json!({"container_id": e.container_id, "id": e.id, "pid": e.pid,
                   "exit_status": e.exit_status, "exited_at": ts(e.exited_at.as_ref())})
        }
        "containerd.events.TaskDelete" => {
            let e = dec!(ev::TaskDelete);
            json!({"container_id": e.container_id, "pid": e.pid, "exit_status": e.exit_status,
                   "exited_at": ts(e.exited_at.as_ref()), "id": e.id})
        }
        "containerd.events.TaskOOM" => {
            let e = dec!(ev::TaskOom);
            json!({"container_id": e.container_id})
        }
        "containerd.events.TaskExecAdded" => {
            let e = dec!(ev::TaskExecAdded);
            json!({"container_id": e.container_id, "exec_id": e.exec_id})
        }
        "containerd.events.TaskExecStarted" => {
            let e = dec!(ev::TaskExecStarted);
            json!({"container_id": e.container_id, "exec_id": e.exec_id, "pid": e.pid})
        }
        "containerd.events.TaskPaused" => {
            json!({"container_id": dec!(ev::TaskPaused).container_id})
        }
        "containerd.events.TaskResumed" => {
            json!({"container_id": dec!(ev::TaskResumed).container_id})
        }
        "containerd.events.ContainerCreate" => {
            let e = dec!(ev::ContainerCreate);
            json!({"id": e.id, "image": e.image,
                   "runtime": {"name": e.runtime.map(|r| r.name).unwrap_or_default()}})
        }
        "containerd.events.ContainerUpdate" => {
            let e = dec!(ev::ContainerUpdate);
            json!({"id": e.id, "image": e.image, "snapshot_key": e.snapshot_key})
        }
        "containerd.events.ContainerDelete" => json!({"id": dec!(ev::ContainerDelete).id}),
        "containerd.events.ContentDelete" => json!({"digest": dec!(ev::ContentDelete).digest}),
        "containerd.events.NamespaceCreate" => {
            let e = dec!(ev::NamespaceCreate);
            json!({"name": e.name, "labels": e.labels})
        }
        "containerd.events.NamespaceUpdate" => {
            let e = dec!(ev::NamespaceUpdate);
            json!({"name": e.name, "labels": e.labels})
        }
        "containerd.events.NamespaceDelete" => json!({"name": dec!(ev::NamespaceDelete).name}),
        "containerd.events.SnapshotPrepare" => {
            let e = dec!(ev::SnapshotPrepare);
            json!({"key": e.key, "parent": e.parent, "snapshotter": e.snapshotter})
        }
        "containerd.events.SnapshotCommit" => {
            let e = dec!(ev::SnapshotCommit);
            json!({"key": e.key, "name": e.name, "snapshotter": e.snapshotter})
        }
        "containerd.events.SnapshotRemove" => {
            let e = dec!(ev::SnapshotRemove);
            json!({"key": e.key, "snapshotter": e.snapshotter})
        }
        "containerd.services.images.v1.ImageCreate" => {
            let e = dec!(protos::services::images::v1::ImageCreate);
            json!({"name": e.name, "labels": e.labels})
        }
        "containerd.services.images.v1.ImageUpdate" => {
            let e = dec!(protos::services::images::v1::ImageUpdate);
            json!({"name": e.name, "labels": e.labels})
        }
        "containerd.services.images.v1.ImageDelete" => {
            json!({"name": dec!(protos::services::images::v1::ImageDelete).name})
        }
        _ => json!({ "type_url": any.type_url }),
    }
}

pub async fn run(args: Args, g: &Globals) -> Result<(), Error> {
    let client = g.connect().await?;
    let mut stream = client
        .events()
        .subscribe(SubscribeRequest {
            filters: args.filters,
        })
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        let body = e
            .event
            .as_ref()
            .map_or_else(String::new, |a| event_json(a).to_string());
        println!(
            "{} {} {} {body}",
            rfc3339(e.timestamp.as_ref()),
            e.namespace,
            e.topic
        );
    }
    Ok(())
}
