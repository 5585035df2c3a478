//! `berth events`: subscribes to the daemon's event stream and prints one line per event:
//! timestamp, namespace, topic and the event as JSON (ctr's format). Events are decoded for
//! the topics containerd publishes; an unknown type prints its type URL.

use clap::Args as ClapArgs;
use prost::Message;
use protos::events as ev;
use protos::services::events::v1::SubscribeRequest;
use serde_json::{json, Value};

use crate::util::rfc3339_nano;
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

/// A JSON object rendered in insertion order with Go's `omitempty` rules, as Go's
/// `json.Marshal` renders the gogo-generated event structs.
#[derive(Default)]
struct Obj(Vec<(&'static str, String)>);

impl Obj {
    fn s(mut self, k: &'static str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.push((k, Value::from(v).to_string()));
        }
        self
    }
    fn n(mut self, k: &'static str, v: u64) -> Self {
        if v != 0 {
            self.0.push((k, v.to_string()));
        }
        self
    }
    fn b(mut self, k: &'static str, v: bool) -> Self {
        if v {
            self.0.push((k, "true".into()));
        }
        self
    }
    fn t(mut self, k: &'static str, v: Option<&prost_types::Timestamp>) -> Self {
        if let Some(t) = v {
            self.0
                .push((k, Value::from(rfc3339_nano(Some(t))).to_string()));
        }
        self
    }
    fn map(mut self, k: &'static str, m: &std::collections::HashMap<String, String>) -> Self {
        if !m.is_empty() {
            let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
            self.0
                .push((k, serde_json::to_string(&sorted).unwrap_or_default()));
        }
        self
    }
    fn raw(mut self, k: &'static str, v: Option<String>) -> Self {
        if let Some(v) = v {
            self.0.push((k, v));
        }
        self
    }
    fn render(self) -> String {
        let fields: Vec<String> = self
            .0
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

fn any_json(a: Option<&prost_types::Any>) -> Option<String> {
    a.map(|a| {
        Obj::default()
            .s("type_url", &a.type_url)
            .raw(
                "value",
                (!a.value.is_empty())
                    .then(|| Value::from(crate::util::base64(&a.value)).to_string()),
            )
            .render()
    })
}

fn mounts_json(ms: &[protos::types::Mount]) -> Option<String> {
    if ms.is_empty() {
        return None;
    }
    let items: Vec<String> = ms
        .iter()
        .map(|m| {
            Obj::default()
                .s("type", &m.r#type)
                .s("source", &m.source)
                .s("target", &m.target)
                .raw(
                    "options",
                    (!m.options.is_empty()).then(|| json!(m.options).to_string()),
                )
                .render()
        })
        .collect();
    Some(format!("[{}]", items.join(",")))
}

/// Decodes the event payload into the JSON Go's `json.Marshal` gives for it (field order
/// of the Go structs, empty fields omitted).
pub fn event_json(any: &prost_types::Any) -> String {
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let v = &any.value[..];
    let unknown = || json!({ "type_url": any.type_url }).to_string();
    macro_rules! dec {
        ($t:ty) => {
            match <$t>::decode(v) {
                Ok(e) => e,
                Err(_) => return unknown(),
            }
        };
    }
    let o = Obj::default();
    match name {
        "containerd.events.TaskCreate" => {
            let e = dec!(ev::TaskCreate);
            let io = e.io.as_ref().map(|io| {
                Obj::default()
                    .s("stdin", &io.stdin)
                    .s("stdout", &io.stdout)
                    .s("stderr", &io.stderr)
                    .b("terminal", io.terminal)
                    .render()
            });
            o.s("container_id", &e.container_id)
                .s("bundle", &e.bundle)
                .raw("rootfs", mounts_json(&e.rootfs))
                .raw("io", io)
                .s("checkpoint", &e.checkpoint)
                .n("pid", u64::from(e.pid))
        }
        "containerd.events.TaskStart" => {
            let e = dec!(ev::TaskStart);
            o.s("container_id", &e.container_id)
                .n("pid", u64::from(e.pid))
        }
        "containerd.events.TaskExit" => {
            let e = dec!(ev::TaskExit);
            o.s("container_id", &e.container_id)
                .s("id", &e.id)
                .n("pid", u64::from(e.pid))
                .n("exit_status", u64::from(e.exit_status))
                .t("exited_at", e.exited_at.as_ref())
        }
        "containerd.events.TaskDelete" => {
            let e = dec!(ev::TaskDelete);
            o.s("container_id", &e.container_id)
                .n("pid", u64::from(e.pid))
                .n("exit_status", u64::from(e.exit_status))
                .t("exited_at", e.exited_at.as_ref())
                .s("id", &e.id)
        }
        "containerd.events.TaskOOM" => o.s("container_id", &dec!(ev::TaskOom).container_id),
        "containerd.events.TaskExecAdded" => {
            let e = dec!(ev::TaskExecAdded);
            o.s("container_id", &e.container_id)
                .s("exec_id", &e.exec_id)
        }
        "containerd.events.TaskExecStarted" => {
            let e = dec!(ev::TaskExecStarted);
            o.s("container_id", &e.container_id)
                .s("exec_id", &e.exec_id)
                .n("pid", u64::from(e.pid))
        }
        "containerd.events.TaskPaused" => o.s("container_id", &dec!(ev::TaskPaused).container_id),
        "containerd.events.TaskResumed" => o.s("container_id", &dec!(ev::TaskResumed).container_id),
        "containerd.events.TaskCheckpointed" => {
            let e = dec!(ev::TaskCheckpointed);
            o.s("container_id", &e.container_id)
                .s("checkpoint", &e.checkpoint)
        }
        "containerd.events.ContainerCreate" => {
            let e = dec!(ev::ContainerCreate);
            let rt = e.runtime.as_ref().map(|r| {
                Obj::default()
                    .s("name", &r.name)
                    .raw("options", any_json(r.options.as_ref()))
                    .render()
            });
            o.s("id", &e.id).s("image", &e.image).raw("runtime", rt)
        }
        "containerd.events.ContainerUpdate" => {
            let e = dec!(ev::ContainerUpdate);
            o.s("id", &e.id)
                .s("image", &e.image)
                .map("labels", &e.labels)
                .s("snapshot_key", &e.snapshot_key)
        }
        "containerd.events.ContainerDelete" => o.s("id", &dec!(ev::ContainerDelete).id),
        "containerd.events.ContentCreate" => {
            let e = dec!(ev::ContentCreate);
            o.s("digest", &e.digest)
                .n("size", u64::try_from(e.size).unwrap_or(0))
        }
        "containerd.events.ContentDelete" => o.s("digest", &dec!(ev::ContentDelete).digest),
        "containerd.events.NamespaceCreate" => {
            let e = dec!(ev::NamespaceCreate);
            o.s("name", &e.name).map("labels", &e.labels)
        }
        "containerd.events.NamespaceUpdate" => {
            let e = dec!(ev::NamespaceUpdate);
            o.s("name", &e.name).map("labels", &e.labels)
        }
        "containerd.events.NamespaceDelete" => o.s("name", &dec!(ev::NamespaceDelete).name),
        "containerd.events.SnapshotPrepare" => {
            let e = dec!(ev::SnapshotPrepare);
            o.s("key", &e.key)
                .s("parent", &e.parent)
                .s("snapshotter", &e.snapshotter)
        }
        "containerd.events.SnapshotCommit" => {
            let e = dec!(ev::SnapshotCommit);
            o.s("key", &e.key)
                .s("name", &e.name)
                .s("snapshotter", &e.snapshotter)
        }
        "containerd.events.SnapshotRemove" => {
            let e = dec!(ev::SnapshotRemove);
            o.s("key", &e.key).s("snapshotter", &e.snapshotter)
        }
        "containerd.services.images.v1.ImageCreate" => {
            let e = dec!(protos::services::images::v1::ImageCreate);
            o.s("name", &e.name).map("labels", &e.labels)
        }
        "containerd.services.images.v1.ImageUpdate" => {
            let e = dec!(protos::services::images::v1::ImageUpdate);
            o.s("name", &e.name).map("labels", &e.labels)
        }
        "containerd.services.images.v1.ImageDelete" => o.s(
            "name",
            &dec!(protos::services::images::v1::ImageDelete).name,
        ),
        _ => return unknown(),
    }
    .render()
}

/// Go's `time.Time.String()` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub fn go_time(ts: Option<&prost_types::Timestamp>) -> String {
    let nano = rfc3339_nano(ts);
    let body = nano.trim_end_matches('Z').replacen('T', " ", 1);
    format!("{body} +0000 UTC")
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
        let body = e.event.as_ref().map_or_else(String::new, event_json);
        println!(
            "{} {} {} {body}",
            go_time(e.timestamp.as_ref()),
            e.namespace,
            e.topic
        );
    }
    Ok(())
}
