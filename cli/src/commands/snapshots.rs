//! `berth snapshots …`: ls, prepare, view, mounts, commit, tree, rm, usage, info, label.

use std::collections::HashMap;

use clap::Subcommand;
use protos::services::snapshots::v1::{
    CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest, UsageRequest,
    ViewSnapshotRequest,
};

use crate::tabwriter::TabWriter;
use crate::util::{go_json, human_bytes, labels_from_args, rfc3339, rfc3339_nano};
use crate::{client, Globals};

#[derive(Debug, clap::Args)]
pub struct Cmd {
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    #[command(subcommand)]
    sub: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// List snapshots.
    #[command(alias = "ls")]
    List,
    /// Write the diff of two snapshots as a layer to stdout: <idA> [<idB>] (idB defaults
    /// to idA's parent).
    Diff {
        /// Media type of the diff.
        #[arg(long, default_value = "application/vnd.oci.image.layer.v1.tar+gzip")]
        media_type: String,
        /// Content upload reference to use.
        #[arg(long)]
        r#ref: Option<String>,
        /// Keep the diff content (labelled as a GC root).
        #[arg(long)]
        keep: bool,
        /// Labels for the diff content (key=value), repeatable.
        #[arg(long)]
        label: Vec<String>,
        id_a: String,
        id_b: Option<String>,
    },
    /// Usage of snapshots.
    Usage {
        /// Display size in bytes.
        #[arg(short = 'b')]
        bytes: bool,
        keys: Vec<String>,
    },
    /// Remove snapshots.
    #[command(aliases = ["del", "remove", "rm"])]
    Delete {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Prepare a snapshot from a committed snapshot: <key> [<parent>].
    Prepare {
        /// Mount target path; prints the mount command when given.
        #[arg(short, long)]
        target: Option<String>,
        /// Print out snapshot mounts as JSON.
        #[arg(long)]
        mounts: bool,
        key: String,
        parent: Option<String>,
    },
    /// Create a read-only snapshot from a committed snapshot: <key> [<parent>].
    View {
        #[arg(short, long)]
        target: Option<String>,
        #[arg(long)]
        mounts: bool,
        key: String,
        parent: Option<String>,
    },
    /// Print mount commands for a snapshot: <target> <key>.
    #[command(aliases = ["m", "mount"])]
    Mounts { target: String, key: String },
    /// Commit an active snapshot into the provided name: <key> <active>.
    Commit { key: String, active: String },
    /// Display a tree view of snapshot branches.
    Tree,
    /// Get info about a snapshot (JSON).
    Info { key: String },
    /// Add labels to a snapshot: <key> [<label>=<value>...].
    Label { key: String, labels: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error(transparent)]
    Store(#[from] crate::image::store::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("failed to remove {key:?}: {}", .status.message())]
    Remove { key: String, status: tonic::Status },
}

fn kind_name(k: i32) -> &'static str {
    match Kind::try_from(k) {
        Ok(Kind::View) => "View",
        Ok(Kind::Active) => "Active",
        Ok(Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

fn print_mounts(target: &str, mounts: &[protos::types::Mount]) {
    for m in mounts {
        println!(
            "mount -t {} {} {target} -o {}",
            m.r#type,
            m.source,
            m.options.join(",")
        );
    }
}

/// Go's `mount.Mount` JSON (field order as in the struct).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct MountJson<'a> {
    r#type: &'a str,
    source: &'a str,
    options: &'a [String],
}

/// Mounts as containerd's `PrintAsJSON` prints `[]mount.Mount`.
fn mounts_json(mounts: &[protos::types::Mount]) -> String {
    let v: Vec<MountJson<'_>> = mounts
        .iter()
        .map(|m| MountJson {
            r#type: &m.r#type,
            source: &m.source,
            options: &m.options,
        })
        .collect();
    go_json(&v)
}

/// Go's `snapshots.Info` JSON.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InfoJson<'a> {
    kind: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    parent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<std::collections::BTreeMap<&'a String, &'a String>>,
    created: String,
    updated: String,
}

fn gc_root_label() -> HashMap<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ts = prost_types::Timestamp {
        seconds: i64::try_from(now).unwrap_or(0),
        nanos: 0,
    };
    [("containerd.io/gc.root".to_string(), rfc3339(Some(&ts)))]
        .into_iter()
        .collect()
}

async fn list(client: &client::Client, snapshotter: &str) -> Result<Vec<Info>, Error> {
    let mut stream = client
        .snapshots()
        .list(ListSnapshotsRequest {
            snapshotter: snapshotter.to_string(),
            filters: Vec::new(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await? {
        out.extend(r.info);
    }
    Ok(out)
}

fn info_json(i: &Info) -> String {
    go_json(&InfoJson {
        kind: kind_name(i.kind),
        name: &i.name,
        parent: &i.parent,
        labels: (!i.labels.is_empty()).then(|| i.labels.iter().collect()),
        created: rfc3339_nano(i.created_at.as_ref()),
        updated: rfc3339_nano(i.updated_at.as_ref()),
    })
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<(), Error> {
    let client = g.connect().await?;
    let sn = cmd.snapshotter;
    let mut svc = client.snapshots();
    match cmd.sub {
        Sub::List => {
            let mut tw = TabWriter::new(1, 1);
            tw.line("KEY\tPARENT\tKIND\t");
            for i in list(&client, &sn).await? {
                tw.line(&format!(
                    "{}\t{}\t{}\t",
                    i.name,
                    i.parent,
                    kind_name(i.kind)
                ));
            }
            print!("{}", tw.finish());
        }
        Sub::Diff {
            media_type,
            r#ref,
            keep,
            label,
            id_a,
            id_b,
        } => {
            let lease = crate::image::store::TempLease::create(&client).await?;
            let leased = client.with_lease(&lease.id)?;
            // The layer is read out while our lease still holds it (GC may run as soon
            // as the lease goes).
            let result = async {
                let digest = diff(
                    &leased,
                    &sn,
                    &id_a,
                    id_b.as_deref(),
                    media_type,
                    r#ref,
                    keep,
                    &label,
                )
                .await?;
                let stdout = std::io::stdout();
                crate::image::store::copy_blob(&leased, &digest, &mut stdout.lock()).await?;
                Ok::<(), Error>(())
            }
            .await;
            lease.release(&client).await;
            result?;
        }
        Sub::Usage { bytes, keys } => {
            let keys = if keys.is_empty() {
                list(&client, &sn)
                    .await?
                    .into_iter()
                    .map(|i| i.name)
                    .collect()
            } else {
                keys
            };
            let mut tw = TabWriter::new(1, 1);
            tw.line("KEY\tSIZE\tINODES\t");
            for k in keys {
                let u = svc
                    .usage(UsageRequest {
                        snapshotter: sn.clone(),
                        key: k.clone(),
                    })
                    .await?
                    .into_inner();
                let size = if bytes {
                    u.size.to_string()
                } else {
                    human_bytes(u.size)
                };
                tw.line(&format!("{k}\t{size}\t{}\t", u.inodes));
            }
            print!("{}", tw.finish());
        }
        Sub::Delete { keys } => {
            for key in keys {
                svc.remove(RemoveSnapshotRequest {
                    snapshotter: sn.clone(),
                    key: key.clone(),
                })
                .await
                .map_err(|status| Error::Remove { key, status })?;
            }
        }
        Sub::Prepare {
            target,
            mounts,
            key,
            parent,
        } => {
            let m = svc
                .prepare(PrepareSnapshotRequest {
                    snapshotter: sn,
                    key,
                    parent: parent.unwrap_or_default(),
                    labels: gc_root_label(),
                })
                .await?
                .into_inner()
                .mounts;
            if let Some(t) = target {
                print_mounts(&t, &m);
            }
            if mounts {
                println!("{}", mounts_json(&m));
            }
        }
        Sub::View {
            target,
            mounts,
            key,
            parent,
        } => {
            let m = svc
                .view(ViewSnapshotRequest {
                    snapshotter: sn,
                    key,
                    parent: parent.unwrap_or_default(),
                    labels: HashMap::new(),
                })
                .await?
                .into_inner()
                .mounts;
            if let Some(t) = target {
                print_mounts(&t, &m);
            }
            if mounts {
                println!("{}", mounts_json(&m));
            }
        }
        Sub::Mounts { target, key } => {
            let m = svc
                .mounts(MountsRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .mounts;
            print_mounts(&target, &m);
        }
        Sub::Commit { key, active } => {
            svc.commit(CommitSnapshotRequest {
                snapshotter: sn,
                name: key,
                key: active,
                labels: gc_root_label(),
            })
            .await?;
        }
        Sub::Tree => {
            let infos = list(&client, &sn).await?;
            print!("{}", tree(&infos));
        }
        Sub::Info { key } => {
            let info = svc
                .stat(StatSnapshotRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", info_json(&info));
        }
        Sub::Label { key, labels } => {
            let labels = labels_from_args(&labels);
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let info = svc
                .update(UpdateSnapshotRequest {
                    snapshotter: sn,
                    info: Some(Info {
                        name: key,
                        labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", crate::util::format_labels(&info.labels));
        }
    }
    Ok(())
}

/// Mounts of snapshot `id` for reading: an active one's own mounts, else a temporary view
/// (removed by the caller through the returned key).
async fn readable(
    client: &client::Client,
    sn: &str,
    id: &str,
) -> Result<(Vec<protos::types::Mount>, Option<String>), Error> {
    let info = client
        .snapshots()
        .stat(StatSnapshotRequest {
            snapshotter: sn.to_string(),
            key: id.to_string(),
        })
        .await?
        .into_inner()
        .info
        .unwrap_or_default();
    if info.kind == Kind::Active as i32 {
        let m = client
            .snapshots()
            .mounts(MountsRequest {
                snapshotter: sn.to_string(),
                key: id.to_string(),
            })
            .await?
            .into_inner()
            .mounts;
        return Ok((m, None));
    }
    let key = format!(
        "{id}-view-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let m = client
        .snapshots()
        .view(ViewSnapshotRequest {
            snapshotter: sn.to_string(),
            key: key.clone(),
            parent: id.to_string(),
            labels: HashMap::new(),
        })
        .await?
        .into_inner()
        .mounts;
    Ok((m, Some(key)))
}

/// containerd `rootfs.CreateDiff` / `Diff.Compare`: returns the new layer's digest.
#[allow(clippy::too_many_arguments)]
async fn diff(
    client: &client::Client,
    sn: &str,
    id_a: &str,
    id_b: Option<&str>,
    media_type: String,
    reference: Option<String>,
    keep: bool,
    labels: &[String],
) -> Result<String, Error> {
    let mut labels = labels_from_args(labels);
    if keep {
        labels.extend(gc_root_label());
    }
    // Left (lower) is idB, or idA's parent; right (upper) is idA.
    let (lower_id, upper_id) = match id_b {
        Some(b) => (b.to_string(), id_a.to_string()),
        None => {
            let info = client
                .snapshots()
                .stat(StatSnapshotRequest {
                    snapshotter: sn.to_string(),
                    key: id_a.to_string(),
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            (info.parent, id_a.to_string())
        }
    };
    let mut temp_keys = Vec::new();
    let result = async {
        let (lower, k1) = readable(client, sn, &lower_id).await?;
        temp_keys.extend(k1);
        let (upper, k2) = readable(client, sn, &upper_id).await?;
        temp_keys.extend(k2);
        let desc = client
            .diff()
            .diff(protos::services::diff::v1::DiffRequest {
                left: lower,
                right: upper,
                media_type,
                r#ref: reference.unwrap_or_default(),
                labels,
                ..Default::default()
            })
            .await?
            .into_inner()
            .diff
            .unwrap_or_default();
        Ok::<String, Error>(desc.digest)
    }
    .await;
    for k in temp_keys {
        let _ = client
            .snapshots()
            .remove(RemoveSnapshotRequest {
                snapshotter: sn.to_string(),
                key: k,
            })
            .await;
    }
    result
}

/// ctr's `snapshots tree`: roots first, children indented with `\_`.
fn tree(infos: &[Info]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut parent: HashMap<String, String> = HashMap::new();
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    let add = |name: &str, order: &mut Vec<String>| {
        if !order.iter().any(|n| n == name) {
            order.push(name.to_string());
        }
    };
    for i in infos {
        add(&i.name, &mut order);
        parent.insert(i.name.clone(), i.parent.clone());
        if !i.parent.is_empty() {
            add(&i.parent, &mut order);
            children
                .entry(i.parent.clone())
                .or_default()
                .push(i.name.clone());
        }
    }
    fn node(name: &str, level: usize, children: &HashMap<String, Vec<String>>, out: &mut String) {
        let mut prefix = "  ".repeat(level);
        if level > 0 {
            prefix.push_str("\\_");
        }
        out.push_str(&format!("{prefix} {name}\n"));
        for c in children.get(name).into_iter().flatten() {
            node(c, level + 1, children, out);
        }
    }
    let mut out = String::new();
    for name in &order {
        if parent.get(name).is_none_or(String::is_empty) {
            node(name, 0, &children, &mut out);
        }
    }
    out
}
