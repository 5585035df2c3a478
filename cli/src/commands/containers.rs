//! `berth containers create/ls/info/rm/label`, and the container creation `run` shares:
//! ctr's `NewContainer` flow — unpack the image if needed, `Snapshots.Prepare(id, chain
//! ID)` under a temporary lease, generate the spec client-side, `Containers.Create` with the
//! runtime name and runc `Options`.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Subcommand;
use prost::Message;
use protos::services::containers::v1::{
    container::Runtime, Container, CreateContainerRequest, DeleteContainerRequest,
    GetContainerRequest, ListContainersRequest, UpdateContainerRequest,
};
use protos::services::snapshots::v1::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use protos::services::tasks::v1::{DeleteTaskRequest, GetRequest};

use super::images::{get as get_image, parse_platform, target_of};
use crate::image::{self, store, unpack, Platform, PlatformMatcher};
use crate::spec;
use crate::util::{labels_from_args, rfc3339_nano};
use crate::{client, rootfs, Globals};

/// The type URL containerd registers for runc's `options.Options`.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// The default runtime.
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

/// ctr's container flags (`commands.ContainerFlags` + the platform run flags we support).
#[derive(Debug, clap::Args, Clone)]
pub struct ContainerFlags {
    /// Working directory of the process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variables (KEY=value), repeatable.
    #[arg(long)]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Labels for the container (key=value), repeatable.
    #[arg(long)]
    pub label: Vec<String>,
    /// Annotations for the runtime spec (key=value), repeatable.
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Extra mounts: type=bind,src=/host,dst=/ctr,options=rbind:ro (repeatable).
    #[arg(long)]
    pub mount: Vec<String>,
    /// Use the host's network namespace.
    #[arg(long)]
    pub net_host: bool,
    /// Make the rootfs read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Runtime name or absolute path of a shim binary.
    #[arg(long, default_value = DEFAULT_RUNTIME)]
    pub runtime: String,
    /// Allocate a TTY for the container.
    #[arg(short, long)]
    pub tty: bool,
    /// User to run as: name, uid, name:group or uid:gid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Memory limit (in bytes) for the container.
    #[arg(long)]
    pub memory_limit: Option<u64>,
    /// Add capabilities (CAP_…), repeatable.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop capabilities (CAP_…), repeatable.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Add a device (or every device below a directory) to the container (repeatable).
    #[arg(long)]
    pub device: Vec<PathBuf>,
    /// Run privileged: all current capabilities, host devices, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Allow privilege escalation (no_new_privileges off).
    #[arg(long)]
    pub allow_new_privs: bool,
    /// CPU shares (relative weight; `run` defaults to 1024 as ctr's run does).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CFS CPU quota in CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Cgroup path (default /<namespace>/<id>).
    #[arg(long)]
    pub cgroup: Option<String>,
    /// runc-compatible binary (runc options BinaryName).
    #[arg(long)]
    pub runc_binary: Option<String>,
    /// runc-compatible root (runc options Root).
    #[arg(long)]
    pub runc_root: Option<String>,
    /// Start runc with the systemd cgroup manager.
    #[arg(long)]
    pub runc_systemd_cgroup: bool,
    /// Snapshotter name.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    /// Labels added to the new snapshot for this container (key=value), repeatable.
    #[arg(long)]
    pub snapshotter_label: Vec<String>,
    /// Platform of the image to use (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// Join an existing namespace: <type>:<path>, e.g. network:/run/netns/x (repeatable).
    #[arg(long)]
    pub with_ns: Vec<String>,
    /// Use a host directory as the rootfs (the image argument is its path), not a snapshot.
    #[arg(long)]
    pub rootfs: bool,
    /// Path to a runtime spec (config.json) to use as is; then the only positional
    /// argument is the container id.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Images(#[from] super::images::Error),
    #[error(transparent)]
    Unpack(#[from] unpack::Error),
    #[error(transparent)]
    Spec(#[from] spec::Error),
    #[error(transparent)]
    Rootfs(#[from] rootfs::Error),
    #[error("read env file {path}: {source}")]
    EnvFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("capabilities must be specified with 'CAP_' prefix: {0:?}")]
    Capability(String),
    #[error("specifying runc-binary and runc-systemd-cgroup is only supported for \"io.containerd.runc.v2\" runtime")]
    RuncOptions,
    #[error("option --runc-systemd-cgroup requires --cgroup to be set, e.g. \"machine.slice:foo:deadbeef\"")]
    SystemdCgroup,
    #[error("image ref must be provided")]
    NoImage,
    #[error("container id must be provided")]
    NoId,
    #[error("must specify at least one container to delete: invalid argument")]
    NothingToDelete,
    #[error("cannot delete a non stopped container: {id} is {status}")]
    Running { id: String, status: String },
    #[error("failed to delete container {id:?}: {}", .status.message())]
    Delete { id: String, status: tonic::Status },
    #[error("joining a Linux namespace using --with-ns requires the format 'nstype:path'")]
    WithNsFormat,
    #[error("the Linux namespace type specified in --with-ns is not valid: {0}")]
    WithNsType(String),
    #[error("with spec config file, only container id should be provided")]
    ConfigWithImage,
    #[error("spec config file {path}: {reason}")]
    SpecFile { path: PathBuf, reason: String },
    #[error("rootfs {path}: {source}")]
    RootfsPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("get hostname: {0}")]
    Hostname(#[source] nix::Error),
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a container: [flags] <image> <id> [<command> [<args>...]].
    Create {
        #[command(flatten)]
        flags: Box<ContainerFlags>,
        image: String,
        id: Option<String>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        /// Print only the container id.
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Delete one or more existing containers.
    #[command(aliases = ["del", "remove", "rm"])]
    Delete {
        /// Do not clean up the snapshot with the container.
        #[arg(long)]
        keep_snapshot: bool,
        ids: Vec<String>,
    },
    /// Get info about a container.
    Info {
        /// Only display the spec.
        #[arg(long)]
        spec: bool,
        id: String,
    },
    /// Set and clear labels for a container: <id> [<key>=<value>...].
    Label { id: String, labels: Vec<String> },
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<(), Error> {
    let client = g.connect().await?;
    match cmd {
        Cmd::Create {
            flags,
            image,
            id,
            args,
        } => {
            let (image, id) = match (&flags.config, id) {
                (Some(_), None) => (String::new(), image),
                (Some(_), Some(_)) => return Err(Error::ConfigWithImage),
                (None, Some(id)) => (image, id),
                (None, None) => return Err(Error::NoId),
            };
            create(&client, &flags, &image, &id, &args, None).await?;
        }
        Cmd::List { quiet, filters } => {
            let list = client
                .containers()
                .list(ListContainersRequest { filters })
                .await?
                .into_inner()
                .containers;
            if quiet {
                for c in &list {
                    println!("{}", c.id);
                }
                return Ok(());
            }
            let mut tw = crate::tabwriter::TabWriter::new(4, 4);
            tw.line("CONTAINER\tIMAGE\tRUNTIME\t");
            for c in &list {
                let image = if c.image.is_empty() { "-" } else { &c.image };
                let runtime = c.runtime.as_ref().map_or("", |r| r.name.as_str());
                tw.line(&format!("{}\t{image}\t{runtime}\t", c.id));
            }
            print!("{}", tw.finish());
        }
        Cmd::Delete { keep_snapshot, ids } => {
            if ids.is_empty() {
                return Err(Error::NothingToDelete);
            }
            let mut first = None;
            for id in ids {
                if let Err(e) = delete(&client, &id, !keep_snapshot).await {
                    eprintln!("berth: failed to delete container {id:?}: {e}");
                    first.get_or_insert(e);
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
        Cmd::Info { spec, id } => {
            let c = get(&client, &id).await?;
            let spec_json: Option<serde_json::Value> = c
                .spec
                .as_ref()
                .and_then(|s| serde_json::from_slice(&s.value).ok());
            if spec {
                let v = spec_json.unwrap_or(serde_json::Value::Null);
                println!("{}", crate::gojson::render(&v, ""));
            } else {
                println!(
                    "{}",
                    crate::gojson::render(&info_json(&c, spec_json), "Container")
                );
            }
        }
        Cmd::Label { id, labels } => {
            let labels = labels_from_args(&labels);
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let c = client
                .containers()
                .update(UpdateContainerRequest {
                    container: Some(Container {
                        id,
                        labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            println!("{}", crate::util::format_labels(&c.labels));
        }
    }
    Ok(())
}

/// Go's `containers.Container` JSON as `ctr containers info` prints it.
fn info_json(c: &Container, spec: Option<serde_json::Value>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("ID".into(), c.id.clone().into());
    m.insert(
        "Labels".into(),
        serde_json::to_value(&c.labels).unwrap_or_default(),
    );
    m.insert("Image".into(), c.image.clone().into());
    let runtime = c.runtime.clone().unwrap_or_default();
    let options = runtime.options.map_or(serde_json::Value::Null, |o| {
        let mut v = serde_json::json!({ "type_url": o.type_url });
        if !o.value.is_empty() {
            v["value"] = crate::util::base64(&o.value).into();
        }
        v
    });
    m.insert(
        "Runtime".into(),
        serde_json::json!({"Name": runtime.name, "Options": options}),
    );
    m.insert("SnapshotKey".into(), c.snapshot_key.clone().into());
    m.insert("Snapshotter".into(), c.snapshotter.clone().into());
    m.insert(
        "CreatedAt".into(),
        rfc3339_nano(c.created_at.as_ref()).into(),
    );
    m.insert(
        "UpdatedAt".into(),
        rfc3339_nano(c.updated_at.as_ref()).into(),
    );
    m.insert(
        "Extensions".into(),
        if c.extensions.is_empty() {
            serde_json::Value::Null
        } else {
            c.extensions
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::json!({"type_url": v.type_url, "value": crate::util::base64(&v.value)}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        },
    );
    if let Some(s) = spec {
        m.insert("Spec".into(), s);
    }
    serde_json::Value::Object(m)
}

/// `Containers.Get`.
pub async fn get(client: &client::Client, id: &str) -> Result<Container, tonic::Status> {
    client
        .containers()
        .get(GetContainerRequest { id: id.to_string() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| tonic::Status::not_found(format!("container {id:?}: not found")))
}

/// ctr's `deleteContainer`: a stopped or created task is deleted first; a running one
/// refuses; then the container and (unless kept) its snapshot.
pub async fn delete(client: &client::Client, id: &str, cleanup: bool) -> Result<(), Error> {
    let c = get(client, id).await?;
    match client
        .tasks()
        .get(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
    {
        Ok(resp) => {
            let p = resp.into_inner().process.unwrap_or_default();
            let status = super::tasks::status_name(p.status);
            if status != "STOPPED" && status != "CREATED" {
                return Err(Error::Running {
                    id: id.to_string(),
                    status: status.to_string(),
                });
            }
            client
                .tasks()
                .delete(DeleteTaskRequest {
                    container_id: id.to_string(),
                })
                .await?;
            crate::cio::remove_fifo_dir(&[p.stdin.as_str(), p.stdout.as_str(), p.stderr.as_str()]);
        }
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    let snapshot = (cleanup && !c.snapshot_key.is_empty()).then_some(&c);
    remove(client, id, snapshot).await
}

/// Deletes container `id` whose task is known to be gone, then (when given) the snapshot
/// the container record names. `run --rm` calls this directly after its own task Delete
/// succeeded: the checks of [`delete`] would only repeat what it already knows.
pub async fn remove(
    client: &client::Client,
    id: &str,
    snapshot: Option<&Container>,
) -> Result<(), Error> {
    client
        .containers()
        .delete(DeleteContainerRequest { id: id.to_string() })
        .await
        .map_err(|status| Error::Delete {
            id: id.to_string(),
            status,
        })?;
    if let Some(c) = snapshot {
        let r = client
            .snapshots()
            .remove(RemoveSnapshotRequest {
                snapshotter: c.snapshotter.clone(),
                key: c.snapshot_key.clone(),
            })
            .await;
        match r {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s.into()),
        }
    }
    Ok(())
}

fn runtime_options(flags: &ContainerFlags) -> Result<Option<prost_types::Any>, Error> {
    let runc_specific = flags.runc_binary.is_some() || flags.runc_systemd_cgroup;
    if flags.runtime != DEFAULT_RUNTIME {
        if runc_specific {
            return Err(Error::RuncOptions);
        }
        return Ok(None);
    }
    if flags.runc_systemd_cgroup && flags.cgroup.is_none() {
        return Err(Error::SystemdCgroup);
    }
    let opts = protos::runc_options::Options {
        binary_name: flags.runc_binary.clone().unwrap_or_default(),
        root: flags.runc_root.clone().unwrap_or_default(),
        systemd_cgroup: flags.runc_systemd_cgroup,
        ..Default::default()
    };
    Ok(Some(prost_types::Any {
        type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
        value: opts.encode_to_vec(),
    }))
}

fn read_env_file(path: &PathBuf) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::EnvFile {
        path: path.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Creates container `id` from image `image_ref` as ctr's `NewContainer` does; returns it.
///
/// The work runs inside a temporary lease, which is deleted before returning — or, with
/// `keep_lease`, handed to the caller instead (once the container exists it holds its
/// snapshot, so the lease protects nothing any more): `run` deletes it concurrently with its
/// Tasks.Create, keeping the lease delete's metadata commit off its path. The caller must
/// release it.
pub async fn create(
    client: &client::Client,
    flags: &ContainerFlags,
    image_ref: &str,
    id: &str,
    args: &[String],
    keep_lease: Option<&mut Option<store::TempLease>>,
) -> Result<Container, Error> {
    if id.is_empty() {
        return Err(Error::NoId);
    }
    if let Some(path) = &flags.config {
        return create_from_spec_file(client, flags, path, id).await;
    }
    if image_ref.is_empty() {
        return Err(Error::NoImage);
    }
    for c in flags.cap_add.iter().chain(&flags.cap_drop) {
        if !c.starts_with("CAP_") {
            return Err(Error::Capability(c.clone()));
        }
    }
    let runtime_opts = runtime_options(flags)?;
    if flags.rootfs {
        return create_with_rootfs(client, flags, image_ref, id, args, runtime_opts).await;
    }
    let img = get_image(client, image_ref).await?;
    let target = target_of(&img);
    let platform = match &flags.platform {
        Some(p) => PlatformMatcher::Only(parse_platform(p)?),
        None => PlatformMatcher::Only(Platform::host()),
    };
    let (_, manifest) = image::resolve_manifest(client, &target, &platform).await?;
    let config = image::read_config(client, &manifest.config).await?;

    let lease = store::TempLease::create(client).await?;
    let leased = client.with_lease(&lease.id)?;
    let result = async {
        let diff_ids = config
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.as_slice())
            .unwrap_or_default();
        let chain = image::chain_ids(diff_ids).pop().unwrap_or_default();
        let prepare = || {
            let mut snapshots = leased.snapshots();
            let req = PrepareSnapshotRequest {
                snapshotter: flags.snapshotter.clone(),
                key: id.to_string(),
                parent: chain.clone(),
                labels: labels_from_args(&flags.snapshotter_label),
            };
            async move { snapshots.prepare(req).await }
        };
        // Prepare straight on the image's top snapshot (ctr's WithNewSnapshot): once the
        // container's snapshot exists it holds its parent against GC. NotFound means the
        // parent is missing — not unpacked yet, or collected since — so unpack (which adds
        // the chain to our lease first) and prepare again. One round trip and one metadata
        // commit fewer than checking (and leasing) the parent beforehand.
        match prepare().await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {
                if !unpack::snapshot_exists(&leased, &flags.snapshotter, &chain).await? {
                    unpack::unpack(&leased, &target, &platform, &flags.snapshotter).await?;
                }
                prepare().await?;
            }
            Err(s) => return Err(s.into()),
        }
        let built = async {
            let spec = build_spec(&leased, flags, Some(&config), None, id, args).await?;
            let mut labels: HashMap<String, String> = HashMap::new();
            labels.insert(
                "io.containerd.image.config.stop-signal".into(),
                "SIGTERM".into(),
            );
            labels.extend(labels_from_args(&flags.label));
            let container = Container {
                id: id.to_string(),
                labels,
                image: img.name.clone(),
                runtime: Some(Runtime {
                    name: flags.runtime.clone(),
                    options: runtime_opts,
                }),
                spec: Some(prost_types::Any {
                    type_url: spec::SPEC_TYPE_URL.to_string(),
                    value: serde_json::to_vec(&spec).unwrap_or_default(),
                }),
                snapshotter: flags.snapshotter.clone(),
                snapshot_key: id.to_string(),
                ..Default::default()
            };
            let created = leased
                .containers()
                .create(CreateContainerRequest {
                    container: Some(container.clone()),
                })
                .await?
                .into_inner()
                .container
                .unwrap_or(container);
            log::debug!("created container {id} from {}", img.name);
            Ok::<Container, Error>(created)
        }
        .await;
        if built.is_err() {
            let _ = leased
                .snapshots()
                .remove(RemoveSnapshotRequest {
                    snapshotter: flags.snapshotter.clone(),
                    key: id.to_string(),
                })
                .await;
        }
        built
    }
    .await;
    match keep_lease {
        Some(slot) if result.is_ok() => *slot = Some(lease),
        _ => lease.release(client).await,
    }
    result
}

/// `--config`: the spec is the user's file, unchanged (containerd `oci.WithSpecFromFile`);
/// no image, no snapshot; the spec's `root.path` is the rootfs.
async fn create_from_spec_file(
    client: &client::Client,
    flags: &ContainerFlags,
    path: &std::path::Path,
    id: &str,
) -> Result<Container, Error> {
    let text = std::fs::read(path).map_err(|source| Error::SpecFile {
        path: path.to_path_buf(),
        reason: source.to_string(),
    })?;
    let spec: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::SpecFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !spec.is_object() || spec.get("process").is_none() {
        return Err(Error::SpecFile {
            path: path.to_path_buf(),
            reason: "not an OCI runtime spec (no \"process\")".into(),
        });
    }
    let container = Container {
        id: id.to_string(),
        labels: labels_from_args(&flags.label),
        runtime: Some(Runtime {
            name: flags.runtime.clone(),
            options: runtime_options(flags)?,
        }),
        spec: Some(prost_types::Any {
            type_url: spec::SPEC_TYPE_URL.to_string(),
            value: text,
        }),
        ..Default::default()
    };
    Ok(client
        .containers()
        .create(CreateContainerRequest {
            container: Some(container.clone()),
        })
        .await?
        .into_inner()
        .container
        .unwrap_or(container))
}

/// `--rootfs`: the container runs on a host directory (containerd `oci.WithRootFSPath`);
/// no image, no snapshot.
async fn create_with_rootfs(
    client: &client::Client,
    flags: &ContainerFlags,
    path: &str,
    id: &str,
    args: &[String],
    runtime_opts: Option<prost_types::Any>,
) -> Result<Container, Error> {
    let root = std::fs::canonicalize(path).map_err(|source| Error::RootfsPath {
        path: PathBuf::from(path),
        source,
    })?;
    let mut spec = build_spec(client, flags, None, Some(&root), id, args).await?;
    spec["root"]["path"] = serde_json::json!(root.display().to_string());
    let container = Container {
        id: id.to_string(),
        labels: labels_from_args(&flags.label),
        runtime: Some(Runtime {
            name: flags.runtime.clone(),
            options: runtime_opts,
        }),
        spec: Some(prost_types::Any {
            type_url: spec::SPEC_TYPE_URL.to_string(),
            value: serde_json::to_vec(&spec).unwrap_or_default(),
        }),
        ..Default::default()
    };
    Ok(client
        .containers()
        .create(CreateContainerRequest {
            container: Some(container.clone()),
        })
        .await?
        .into_inner()
        .container
        .unwrap_or(container))
}

/// Spec generation in ctr's option order.
async fn build_spec(
    client: &client::Client,
    flags: &ContainerFlags,
    config: Option<&image::ImageConfig>,
    host_rootfs: Option<&std::path::Path>,
    id: &str,
    args: &[String],
) -> Result<serde_json::Value, Error> {
    let mut s = spec::default_spec(client.namespace(), id);
    if let Some(f) = &flags.env_file {
        spec::with_env(&mut s, &read_env_file(f)?);
    }
    spec::with_env(&mut s, &flags.env);
    let mounts = flags
        .mount
        .iter()
        .map(|m| spec::parse_mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    spec::with_mounts(&mut s, mounts);
    let run_config = config.and_then(|c| c.config.clone()).unwrap_or_default();
    if config.is_some() {
        spec::with_image_config(&mut s, &run_config);
    }

    // User lookups read the container's rootfs (a snapshot mounted read-only for the
    // moment, or the host directory of --rootfs).
    let image_user = run_config.user.clone().filter(|u| !u.is_empty());
    let wanted_user = flags
        .user
        .clone()
        .or(image_user)
        .unwrap_or_else(|| "0".into());
    match host_rootfs {
        Some(path) => spec::with_user(&mut s, &wanted_user, Some(path))?,
        None => {
            let snapshot_mounts = client
                .snapshots()
                .mounts(MountsRequest {
                    snapshotter: flags.snapshotter.clone(),
                    key: id.to_string(),
                })
                .await?
                .into_inner()
                .mounts;
            rootfs::with_readonly_mount(&snapshot_mounts, |root| {
                spec::with_user(&mut s, &wanted_user, Some(root))
            })??;
        }
    }

    if !args.is_empty() {
        s["process"]["args"] = serde_json::json!(args);
    }
    if let Some(cwd) = &flags.cwd {
        s["process"]["cwd"] = serde_json::json!(cwd);
    }
    if flags.tty {
        spec::with_tty(&mut s);
    }
    if flags.privileged {
        spec::with_privileged(&mut s, &spec::current_capabilities(), spec::host_devices());
    }
    if flags.read_only {
        s["root"]["readonly"] = serde_json::json!(true);
    }
    if flags.net_host {
        let host = nix::unistd::gethostname().map_err(Error::Hostname)?;
        spec::with_host_network(&mut s, &host.to_string_lossy());
    }
    if flags.allow_new_privs {
        // Go's `omitempty` drops a false noNewPrivileges: store it the way ctr does.
        if let Some(p) = s["process"].as_object_mut() {
            p.remove("noNewPrivileges");
        }
    }
    for cap in &flags.cap_add {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(list) = s["process"]["capabilities"][set].as_array_mut() {
                if !list.iter().any(|c| c == cap) {
                    list.push(cap.clone().into());
                }
            }
        }
    }
    for cap in &flags.cap_drop {
        for set in ["bounding", "effective", "permitted"] {
            if let Some(list) = s["process"]["capabilities"][set].as_array_mut() {
                list.retain(|c| c != cap);
            }
        }
    }
    if let Some(c) = &flags.cgroup {
        s["linux"]["cgroupsPath"] = serde_json::json!(c);
    }
    if let Some(cpus) = flags.cpus.filter(|c| *c > 0.0) {
        #[allow(clippy::cast_possible_truncation)]
        let quota = (cpus * 100_000.0) as i64;
        s["linux"]["resources"]["cpu"]["quota"] = serde_json::json!(quota);
        s["linux"]["resources"]["cpu"]["period"] = serde_json::json!(100_000);
    }
    if let Some(shares) = flags.cpu_shares.filter(|s| *s > 0) {
        s["linux"]["resources"]["cpu"]["shares"] = serde_json::json!(shares);
    }
    if let Some(limit) = flags.memory_limit {
        s["linux"]["resources"]["memory"] = serde_json::json!({ "limit": limit });
    }
    for ns in &flags.with_ns {
        let (kind, path) = ns.split_once(':').ok_or(Error::WithNsFormat)?;
        const KINDS: [&str; 7] = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup"];
        if !KINDS.contains(&kind) {
            return Err(Error::WithNsType(kind.to_string()));
        }
        // containerd `oci.WithLinuxNamespace`: replaced in place, appended if absent.
        if let Some(list) = s["linux"]["namespaces"].as_array_mut() {
            let entry = serde_json::json!({"type": kind, "path": path});
            match list.iter_mut().find(|n| n["type"] == kind) {
                Some(slot) => *slot = entry,
                None => list.push(entry),
            }
        }
    }
    for dev in &flags.device {
        spec::with_devices(&mut s, dev)?;
    }
    let mut annotations = labels_from_args(&flags.annotation);
    annotations.extend(labels_from_args(&flags.label));
    if !annotations.is_empty() {
        s["annotations"] = serde_json::to_value(annotations).unwrap_or_default();
    }
    Ok(s)
}
