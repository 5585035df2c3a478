//! Wires stores, services and sockets together; start-up and shutdown.
//!
//! [`run`] reads top to bottom: directories (root 0700, state 0711) → `oom_score` → content
//! store → snapshotters (built-in and `[proxy_plugins]`) → metadata → event exchange + GC (one
//! collection before serving) → the plugin list (what `ctr plugins ls` shows; disabled and
//! required plugins applied) → gRPC services on the Unix socket (0660, `[grpc]` uid/gid) →
//! ttrpc events socket → metrics → `READY=1` → wait for the shutdown future → close.
//! Shutdown ends event subscriptions, lets in-flight calls finish for up to 5 s, then removes
//! the sockets.
//!
//! The runtime subsystem registers its services (containers, tasks) in [`runtime_services`].

use crate::api::{self, introspection::PluginInfo, Core};
use crate::config::{ids, Config, ProxyKind};
use crate::content;
use crate::events::Exchange;
use crate::metadata::{self, gc::Scheduler, SharingPolicy, SnapshotterEntry};
use crate::snapshots::{self as sn, Backend};
use protos::containerd::services as svc;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory or socket could not be prepared.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Content store failed to open.
    #[error(transparent)]
    Content(#[from] content::Error),
    /// Not exactly one content store enabled.
    #[error("content store: {0}")]
    ContentStore(String),
    /// Metadata store failed to open.
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    /// A required plugin did not load.
    #[error("required plugin {id} {reason}")]
    Required {
        /// `type.id`.
        id: String,
        /// Why.
        reason: String,
    },
    /// gRPC server failure.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// ttrpc server failure.
    #[error("ttrpc server on {path}: {msg}")]
    Ttrpc {
        /// Socket.
        path: PathBuf,
        /// Message.
        msg: String,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Writes `oom_score_adj` for this process (containerd applies it when non-zero).
pub fn apply_oom_score(score: i32) -> Result<(), Error> {
    if score == 0 {
        return Ok(());
    }
    let p = Path::new("/proc/self/oom_score_adj");
    std::fs::write(p, score.to_string()).map_err(io("write oom_score_adj", p))
}

fn fs_name(path: &Path) -> String {
    match nix::sys::statfs::statfs(path) {
        Ok(s) => {
            let magic = s.filesystem_type().0;
            match magic {
                0xEF53 => "ext4".into(),
                0x5846_5342 => "xfs".into(),
                0x0102_1994 => "tmpfs".into(),
                0x794c_7630 => "overlayfs".into(),
                0x9123_683E => "btrfs".into(),
                0x2FC1_2FC1 => "zfs".into(),
                m => format!("fs type {m:#x}"),
            }
        }
        Err(e) => format!("unknown: {e}"),
    }
}

/// The snapshotter plugins: loaded backends plus the rows `ctr plugins ls` shows for the
/// ones berthd does not have, with containerd's skip/error reasons.
fn snapshotters(
    cfg: &Config,
    root: &Path,
    disabled: &dyn Fn(&str) -> bool,
) -> (Vec<SnapshotterEntry>, Vec<PluginInfo>) {
    const T: &str = "io.containerd.snapshotter.v1";
    let mut entries = Vec::new();
    let mut infos = Vec::new();
    let fs = fs_name(root);
    let skip = api::introspection::SKIP_PLUGIN;
    let unsupported = [
        ("aufs", format!("aufs is not supported by berthd (use overlayfs): {skip}")),
        (
            "btrfs",
            format!("path {} ({fs}) must be a btrfs filesystem to be used with the btrfs snapshotter: {skip}", root.join(format!("{T}.btrfs")).display()),
        ),
        ("devmapper", "devmapper not configured".to_string()),
        (
            "zfs",
            format!("path {} must be a zfs filesystem to be used with the zfs snapshotter: {skip}", root.join(format!("{T}.zfs")).display()),
        ),
    ];
    for (id, why) in unsupported {
        if !disabled(&format!("{T}.{id}")) {
            infos.push(
                PluginInfo {
                    platform: true,
                    ..PluginInfo::ok(T, id, &[])
                }
                .failed(why),
            );
        }
    }
    if !disabled(ids::NATIVE) {
        let c = cfg.native();
        let dir = if c.root_path.is_empty() {
            root.join(ids::NATIVE)
        } else {
            PathBuf::from(c.root_path)
        };
        let info = PluginInfo {
            platform: true,
            ..PluginInfo::ok(T, "native", &[])
        }
        .export("root", dir.display().to_string());
        match sn::NativeSnapshotter::open(&dir) {
            Ok(s) => {
                entries.push(SnapshotterEntry {
                    name: "native".into(),
                    backend: Arc::new(Backend::Native(s)).into(),
                });
                infos.push(info);
            }
            Err(e) => infos.push(info.failed(e.to_string())),
        }
    }
    if !disabled(ids::OVERLAYFS) {
        let c = cfg.overlayfs();
        let dir = if c.root_path.is_empty() {
            root.join(ids::OVERLAYFS)
        } else {
            PathBuf::from(c.root_path)
        };
        let info = PluginInfo {
            platform: true,
            ..PluginInfo::ok(T, "overlayfs", &[])
        }
        .export("root", dir.display().to_string());
        let opened = sn::overlay::overlay_supported().and_then(|()| {
            sn::OverlaySnapshotter::open(
                &dir,
                sn::OverlayConfig {
                    upperdir_label: c.upperdir_label,
                },
            )
            .map(|s| s.with_mount_options(c.mount_options.clone()))
        });
        match opened {
            Ok(s) => {
                entries.push(SnapshotterEntry {
                    name: "overlayfs".into(),
                    backend: Arc::new(Backend::Overlay(s)).into(),
                });
                infos.push(info);
            }
            Err(e) => infos.push(info.failed(e.to_string())),
        }
    }
    for (name, p) in &cfg.proxy_plugins {
        // Content proxies are set up by `content_store`.
        if p.kind() != Some(ProxyKind::Snapshot) || disabled(&format!("{T}.{name}")) {
            continue;
        }
        let info = PluginInfo::ok(T, name, &[]).export("address", p.address.clone());
        match metadata::proxy::ProxySnapshotter::new(name, &p.address) {
            Ok(ps) => {
                if entries.iter().any(|e| e.name == *name) {
                    log::warn!("proxy snapshotter {name} replaces the built-in one of that name");
                    entries.retain(|e| e.name != *name);
                    infos.retain(|i| !(i.r#type == T && i.id == *name));
                }
                entries.push(SnapshotterEntry {
                    name: name.clone(),
                    backend: metadata::backend::SnapBackend::Proxy(Arc::new(ps)),
                });
                infos.push(info);
            }
            Err(e) => infos.push(info.failed(e.to_string())),
        }
    }
    (entries, infos)
}

/// The content store the metadata plugin wraps: the built-in one, or a `[proxy_plugins]` entry
/// of type `content`, and its row for `ctr plugins ls`.
///
/// containerd registers a content proxy as one more `io.containerd.content.v1` plugin, and its
/// metadata plugin takes *the* content plugin: 1.6 takes whichever its map yields first
/// (random between the built-in `content` and the proxy), 2.x fails with "multiple plugins
/// registered for io.containerd.content.v1". Either way a proxy only works reliably with
/// `disabled_plugins = ["io.containerd.content.v1.content"]`. berthd makes that rule explicit:
/// with a content proxy configured and the built-in store still enabled (or two proxies), it
/// refuses to start and says which line to add, instead of picking one. The proxy's row is
/// `ok` with its `address` exported, as containerd's (whose gRPC dial is lazy, so an unreachable
/// socket shows up on the first request, naming plugin and address, not here).
fn content_store(
    cfg: &Config,
    root: &Path,
    disabled: &dyn Fn(&str) -> bool,
    plugins: &mut Vec<PluginInfo>,
) -> Result<content::Backend, Error> {
    const T: &str = "io.containerd.content.v1";
    let proxies: Vec<(&String, &crate::config::ProxyPlugin)> = cfg
        .proxy_plugins
        .iter()
        .filter(|(name, p)| {
            p.kind() == Some(ProxyKind::Content) && !disabled(&format!("{T}.{name}"))
        })
        .collect();
    let local_enabled = !disabled(ids::CONTENT);
    let names = |v: &[(&String, &crate::config::ProxyPlugin)]| {
        v.iter()
            .map(|(n, p)| format!("{T}.{n} (address {})", p.address))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (local_enabled, proxies.as_slice()) {
        (true, []) => {
            let content_root = root.join(ids::CONTENT);
            let cs = content::Store::open(&content_root)?;
            plugins.push(
                PluginInfo::ok(T, "content", &[]).export("root", content_root.display().to_string()),
            );
            Ok(cs.into())
        }
        (false, [(name, p)]) => {
            let ps = content::proxy::ProxyStore::new(name, &p.address)?;
            log::info!("content store: proxy plugin {name} at {}", p.address);
            plugins.push(PluginInfo::ok(T, name, &[]).export("address", p.address.clone()));
            Ok(ps.into())
        }
        (false, []) => Err(Error::ContentStore(format!(
            "{} is disabled and no [proxy_plugins] entry of type \"content\" is configured: enable one of them",
            ids::CONTENT
        ))),
        (true, ps) => Err(Error::ContentStore(format!(
            "content proxy plugin {} configured while the built-in {} is enabled: the metadata plugin wraps exactly one content store; add disabled_plugins = [\"{}\"] to use the proxy",
            names(ps),
            ids::CONTENT,
            ids::CONTENT
        ))),
        (false, ps) => Err(Error::ContentStore(format!(
            "several content proxy plugins are configured ({}): the metadata plugin wraps exactly one content store; disable all but one",
            names(ps)
        ))),
    }
}

/// Services of the runtime subsystem (containers, tasks) and their plugin rows. The runtime
/// adds itself here; until then berthd serves the storage core only.
fn runtime_services(
    core: &Core,
    cfg: &Config,
    routes: &mut tonic::service::RoutesBuilder,
) -> (Vec<PluginInfo>, crate::runtime::TaskManager) {
    api::tasks::register(core, cfg, routes)
}

/// The transfer subsystem's plugin rows (`ctr plugins ls`) and its stream registry.
fn transfer_plugins() -> (crate::transfer::StreamManager, Vec<PluginInfo>) {
    let rows = vec![
        PluginInfo::ok(
            "io.containerd.streaming.v1",
            "manager",
            &["io.containerd.metadata.v1"],
        ),
        PluginInfo::ok(
            "io.containerd.transfer.v1",
            "local",
            &["io.containerd.lease.v1", "io.containerd.metadata.v1"],
        ),
        PluginInfo::ok(
            "io.containerd.grpc.v1",
            "streaming",
            &["io.containerd.streaming.v1"],
        ),
        PluginInfo::ok(
            "io.containerd.grpc.v1",
            "transfer",
            &["io.containerd.transfer.v1", "io.containerd.streaming.v1"],
        ),
    ];
    (crate::transfer::StreamManager::default(), rows)
}

/// Asks tonic for the configured message size limits on a generated server.
macro_rules! limited {
    ($server:expr, $cfg:expr) => {
        $server
            .max_decoding_message_size(
                usize::try_from($cfg.grpc.max_recv_message_size).unwrap_or(usize::MAX),
            )
            .max_encoding_message_size(
                usize::try_from($cfg.grpc.max_send_message_size).unwrap_or(usize::MAX),
            )
    };
}

fn bind_unix(
    path: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<tokio::net::UnixListener, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create socket directory", dir))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale socket", path)(e)),
    }
    let l = tokio::net::UnixListener::bind(path).map_err(io("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod socket", path))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io("chown socket", path))?;
    Ok(l)
}

/// ttrpc `Events/Forward`: what shims call to deliver task events.
/// The task manager drops a `/tasks/exit` it already published on restore (or a shim re-sent)
/// and a second `/tasks/delete` of a task, and learns when a task's `/tasks/delete` went out.
struct TtrpcEvents(Exchange, crate::runtime::TaskManager);

#[async_trait::async_trait]
impl containerd_shim_protos::shim_async::Events for TtrpcEvents {
    async fn forward(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        req: containerd_shim_protos::api::ForwardRequest,
    ) -> ttrpc::Result<containerd_shim_protos::protobuf::well_known_types::empty::Empty> {
        let env = req.envelope.into_option().ok_or_else(|| {
            ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                "envelope must be set",
            ))
        })?;
        let event = env.event.into_option().unwrap_or_default();
        let timestamp = env
            .timestamp
            .into_option()
            .map(|t| {
                metadata::Ts(
                    t.seconds
                        .saturating_mul(1_000_000_000)
                        .saturating_add(i64::from(t.nanos)),
                )
            })
            .unwrap_or_else(metadata::Ts::now);
        let e = crate::events::Envelope {
            timestamp,
            namespace: env.namespace,
            topic: env.topic,
            event: prost_types::Any {
                type_url: event.type_url,
                value: event.value,
            },
        };
        if !self
            .1
            .forwarded_event_is_new(&e.namespace, &e.topic, &e.event)
            .await
        {
            return Ok(Default::default());
        }
        let (ns, topic, event) = (e.namespace.clone(), e.topic.clone(), e.event.clone());
        self.0.forward(e).map_err(|e| {
            ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                e.to_string(),
            ))
        })?;
        // Only now may a `delete` waiting for this /tasks/delete shut the shim down.
        self.1.event_forwarded(&ns, &topic, &event);
        Ok(Default::default())
    }
}

/// Builds everything from `cfg`, serves until `shutdown` resolves, then closes.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let root = PathBuf::from(&cfg.root);
    let state = PathBuf::from(&cfg.state);
    mkdir_mode(&root, 0o700)?;
    mkdir_mode(&state, 0o711)?;
    // As containerd: a failure (e.g. lowering the score without CAP_SYS_RESOURCE) is logged,
    // not fatal.
    if let Err(e) = apply_oom_score(cfg.oom_score) {
        log::error!("failed to set OOM score on daemon: {e}");
    }
    let disabled_list = cfg.disabled_plugins.clone();
    let disabled = move |id: &str| disabled_list.iter().any(|d| d == id);

    let mut plugins = Vec::new();
    let cs = content_store(&cfg, &root, &disabled, &mut plugins)?;

    let (snaps, snap_infos) = snapshotters(&cfg, &root, &disabled);
    plugins.extend(snap_infos);

    let policy = match cfg.bolt().content_sharing_policy.as_str() {
        "isolated" => SharingPolicy::Isolated,
        _ => SharingPolicy::Shared,
    };
    let meta_dir = root.join(ids::BOLT);
    let db = Arc::new(metadata::Db::open(&meta_dir, cs, snaps, policy)?);
    plugins.push(
        PluginInfo::ok(
            "io.containerd.metadata.v1",
            "bolt",
            &["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
        )
        .export("root", meta_dir.display().to_string())
        .export("policy", cfg.bolt().content_sharing_policy),
    );
    let exchange = Exchange::new();
    plugins.push(PluginInfo::ok("io.containerd.event.v1", "exchange", &[]));
    let gc_cfg = metadata::scheduler::SchedulerConfig::from_config(&cfg.gc());
    let gc = Scheduler::with_config(&db, gc_cfg);
    // As containerd's: the effective settings are exported.
    plugins.push(
        PluginInfo::ok(
            "io.containerd.gc.v1",
            "scheduler",
            &["io.containerd.metadata.v1"],
        )
        .export("PauseThreshold", gc_cfg.pause_threshold.to_string())
        .export("DeletionThreshold", gc_cfg.deletion_threshold.to_string())
        .export("MutationThreshold", gc_cfg.mutation_threshold.to_string())
        .export(
            "ScheduleDelay",
            if gc_cfg.schedule_delay.is_zero() {
                "0s".to_string()
            } else {
                format!("{:?}", gc_cfg.schedule_delay)
            },
        ),
    );
    plugins.push(PluginInfo::ok(
        "io.containerd.lease.v1",
        "manager",
        &["io.containerd.metadata.v1"],
    ));
    plugins.push(PluginInfo {
        platform: true,
        ..PluginInfo::ok(
            "io.containerd.differ.v1",
            "walking",
            &["io.containerd.metadata.v1"],
        )
    });
    // Collect once before serving: reclaims what a crash left unreferenced, and cannot race
    // with the first clients' writes. containerd instead runs its first collection
    // `startup_delay` after start; berthd's scheduler counts this one, and its check at
    // `startup_delay` collects only if something is pending (metadata/scheduler.rs).
    let gc_task = tokio::spawn(gc.clone().run());
    match gc.collect_at_startup().await {
        Ok(s) => log::debug!("start-up gc: {s:?}"),
        Err(e) => log::warn!("start-up gc failed: {e}"),
    }

    let core = Core {
        db: Arc::clone(&db),
        events: exchange.clone(),
        gc,
    };
    let (streams, transfer_plugins) = transfer_plugins();
    plugins.extend(transfer_plugins);
    for id in [
        "content",
        "diff",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "snapshots",
    ] {
        plugins.push(PluginInfo::ok(
            "io.containerd.service.v1",
            &format!("{id}-service"),
            &["io.containerd.metadata.v1"],
        ));
    }

    let mut routes = tonic::service::RoutesBuilder::default();
    let (runtime_plugins, tasks) = runtime_services(&core, &cfg, &mut routes);
    plugins.extend(runtime_plugins);
    let (restart_row, restart_task) = crate::restart::register(
        &cfg,
        Arc::clone(&db),
        tasks.clone(),
        exchange.clone(),
        &disabled,
    );
    plugins.extend(restart_row);
    let (monitor_row, cgroups_monitor) = crate::monitor::register(
        &cfg,
        Arc::clone(&db),
        tasks.clone(),
        exchange.clone(),
        &disabled,
    );
    plugins.extend(monitor_row);
    for id in [
        "content",
        "diff",
        "events",
        "healthcheck",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "snapshots",
        "version",
    ] {
        plugins.push(PluginInfo::ok(
            "io.containerd.grpc.v1",
            id,
            &["io.containerd.service.v1"],
        ));
    }
    let plugins: Vec<PluginInfo> = plugins
        .into_iter()
        .filter(|p| !disabled(&format!("{}.{}", p.r#type, p.id)))
        .collect();
    for req in &cfg.required_plugins {
        match plugins
            .iter()
            .find(|p| format!("{}.{}", p.r#type, p.id) == *req)
        {
            None => {
                return Err(Error::Required {
                    id: req.clone(),
                    reason: "is not loaded (unknown or disabled)".into(),
                })
            }
            Some(p) if !p.is_ok() => {
                return Err(Error::Required {
                    id: req.clone(),
                    reason: format!("failed: {}", p.init_err.clone().unwrap_or_default()),
                })
            }
            Some(_) => {}
        }
    }

    let uuid = api::introspection::load_uuid(&root.join("io.containerd.grpc.v1.introspection"))
        .map_err(io("server uuid", &root))?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    routes
        .add_service(limited!(
            svc::version::v1::version_server::VersionServer::new(api::version::Service),
            cfg
        ))
        .add_service(health)
        .add_service(limited!(
            svc::introspection::v1::introspection_server::IntrospectionServer::new(
                api::introspection::Service::new(plugins, uuid)
            ),
            cfg
        ))
        .add_service(limited!(
            svc::namespaces::v1::namespaces_server::NamespacesServer::new(
                api::namespaces::Service(core.clone())
            ),
            cfg
        ))
        .add_service(limited!(
            svc::content::v1::content_server::ContentServer::new(api::content::Service(
                core.clone()
            )),
            cfg
        ))
        .add_service(limited!(
            svc::images::v1::images_server::ImagesServer::new(api::images::Service(
                crate::images::Images::new(Arc::clone(&db), exchange.clone(), core.gc.clone()),
            )),
            cfg
        ))
        .add_service(limited!(
            svc::leases::v1::leases_server::LeasesServer::new(api::leases::Service(core.clone())),
            cfg
        ))
        .add_service(limited!(
            svc::events::v1::events_server::EventsServer::new(api::events::Service(
                exchange.clone()
            )),
            cfg
        ))
        .add_service(limited!(
            svc::snapshots::v1::snapshots_server::SnapshotsServer::new(api::snapshots::Service(
                core.clone()
            )),
            cfg
        ))
        .add_service(limited!(
            svc::diff::v1::diff_server::DiffServer::new(api::diff::Service(core.clone())),
            cfg
        ))
        .add_service(limited!(
            svc::streaming::v1::streaming_server::StreamingServer::new(api::streaming::Service(
                streams.clone()
            )),
            cfg
        ))
        .add_service(limited!(
            svc::transfer::v1::transfer_server::TransferServer::new(api::transfer::Service {
                transfer: crate::transfer::Transferrer::new(
                    Arc::clone(&db),
                    crate::images::Images::new(Arc::clone(&db), exchange.clone(), core.gc.clone()),
                    core.gc.clone(),
                    crate::transfer::default_snapshotter(&db.snapshotter_names()),
                ),
                streams,
            }),
            cfg
        ));

    let address = PathBuf::from(&cfg.grpc.address);
    let listener = bind_unix(&address, 0o660, cfg.grpc.uid, cfg.grpc.gid)?;
    let ttrpc_path = PathBuf::from(cfg.ttrpc_address());
    // ttrpc binds itself: clear a stale socket first, then fix the mode afterwards.
    let _ = std::fs::remove_file(&ttrpc_path);
    let ttrpc_err = |msg: String| Error::Ttrpc {
        path: ttrpc_path.clone(),
        msg,
    };
    let mut ttrpc_server = ttrpc::asynchronous::Server::new()
        .bind(&format!("unix://{}", ttrpc_path.display()))
        .map_err(|e| ttrpc_err(e.to_string()))?
        .register_service(containerd_shim_protos::shim_async::create_events(Arc::new(
            TtrpcEvents(exchange.clone(), tasks),
        )));
    ttrpc_server
        .start()
        .await
        .map_err(|e| ttrpc_err(e.to_string()))?;
    std::fs::set_permissions(&ttrpc_path, std::fs::Permissions::from_mode(0o660))
        .map_err(io("chmod socket", &ttrpc_path))?;
    std::os::unix::fs::chown(&ttrpc_path, Some(cfg.ttrpc.uid), Some(cfg.ttrpc.gid))
        .map_err(io("chown socket", &ttrpc_path))?;

    let metrics = crate::metrics::Metrics::default();
    let metrics_task = if cfg.metrics.address.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&cfg.metrics.address)
            .await
            .map_err(|source| Error::Io {
                what: "bind [metrics] address",
                path: PathBuf::from(&cfg.metrics.address),
                source,
            })?;
        log::info!("metrics on http://{}/v1/metrics", cfg.metrics.address);
        Some(tokio::spawn(crate::metrics::serve(
            l,
            metrics.clone(),
            Arc::clone(&db),
            cgroups_monitor.clone(),
        )))
    };

    let debug_path = (!cfg.debug.address.is_empty()).then(|| PathBuf::from(&cfg.debug.address));
    let debug_task = match &debug_path {
        None => None,
        Some(p) => {
            let l = bind_unix(p, 0o660, cfg.debug.uid, cfg.debug.gid)?;
            Some(tokio::spawn(crate::metrics::serve_debug(
                l,
                metrics.clone(),
                std::time::Instant::now(),
            )))
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc = tonic::transport::Server::builder()
        .layer(metrics.layer())
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            async {
                let _ = stop_rx.await;
            },
        );
    let mut grpc = tokio::spawn(grpc);
    log::info!(
        "berthd serving on {} (ttrpc {})",
        address.display(),
        ttrpc_path.display()
    );
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("sd_notify READY=1: {e}");
    }

    let res = tokio::select! {
        r = &mut grpc => r,
        () = shutdown => {
            log::info!("shutting down");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            let _ = stop_tx.send(());
            exchange.close();
            match tokio::time::timeout(Duration::from_secs(5), &mut grpc).await {
                Ok(r) => r,
                Err(_) => {
                    log::warn!("connections still open after 5s, closing them");
                    grpc.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let _ = ttrpc_server.shutdown().await;
    gc_task.abort();
    if let Some(t) = restart_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = debug_task {
        t.abort();
    }
    if let Some(p) = &debug_path {
        let _ = std::fs::remove_file(p);
    }
    for p in [&address, &ttrpc_path] {
        let _ = std::fs::remove_file(p);
    }
    match res {
        Ok(r) => r.map_err(Error::from),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(Error::Io {
            what: "grpc task",
            path: address,
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    async fn channel(path: PathBuf) -> tonic::transport::Channel {
        tonic::transport::Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .expect("connect")
    }

    fn test_config(dir: &Path) -> Config {
        let mut cfg = Config {
            root: dir.join("root").display().to_string(),
            state: dir.join("state").display().to_string(),
            ..Config::default()
        };
        cfg.grpc.address = dir.join("s.sock").display().to_string();
        cfg
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_health_and_version_then_shuts_down_cleanly() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut cfg = test_config(tmp.path());
        cfg.disabled_plugins = vec![ids::OVERLAYFS.to_string()];
        let sock = PathBuf::from(&cfg.grpc.address);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(cfg, async {
            let _ = stopped.await;
        }));
        for _ in 0..400 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let ch = channel(sock.clone()).await;
        let health = HealthClient::new(ch.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(health.status, 1, "SERVING");
        let v = svc::version::v1::version_client::VersionClient::new(ch)
            .version(())
            .await
            .expect("version")
            .into_inner();
        assert!(v.version.contains("berth"));

        // A shim's event over ttrpc reaches a gRPC subscriber.
        let mut events =
            svc::events::v1::events_client::EventsClient::new(channel(sock.clone()).await)
                .subscribe(svc::events::v1::SubscribeRequest {
                    filters: vec!["topic==\"/tasks/oom\"".into()],
                })
                .await
                .expect("subscribe")
                .into_inner();
        let ttrpc_addr = format!("unix://{}.ttrpc", sock.display());
        let client = containerd_shim_protos::shim_async::EventsClient::new(
            ttrpc::asynchronous::Client::connect(&ttrpc_addr)
                .await
                .expect("ttrpc connect"),
        );
        let mut env = containerd_shim_protos::shim::event::Envelope::new();
        env.namespace = "default".into();
        env.topic = "/tasks/oom".into();
        let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
        any.type_url = "containerd.events.TaskOOM".into();
        any.value = vec![0x0a, 0x02, b'c', b'1'];
        env.event = Some(any).into();
        let mut req = containerd_shim_protos::api::ForwardRequest::new();
        req.envelope = Some(env).into();
        client
            .forward(ttrpc::context::with_timeout(5_000_000_000), &req)
            .await
            .expect("ttrpc Forward");
        let got = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("one event");
        assert_eq!(
            (got.namespace.as_str(), got.topic.as_str()),
            ("default", "/tasks/oom")
        );
        assert_eq!(got.event.expect("any").value, vec![0x0a, 0x02, b'c', b'1']);
        let _ = stop.send(());
        server
            .await
            .expect("join")
            .expect("run returns Ok after shutdown");
        assert!(!sock.exists() && !PathBuf::from(format!("{}.ttrpc", sock.display())).exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn required_plugin_that_is_disabled_fails_start_up() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut cfg = test_config(tmp.path());
        cfg.disabled_plugins = vec![ids::NATIVE.to_string()];
        cfg.required_plugins = vec![ids::NATIVE.to_string(), ids::OVERLAYFS.to_string()];
        let err = run(cfg, std::future::pending())
            .await
            .expect_err("must fail");
        assert!(
            matches!(&err, Error::Required { id, .. } if id == ids::NATIVE),
            "{err}"
        );
    }
}
