//! `containerd.services.tasks.v1.Tasks` (containerd `services/tasks/local.go`): looks up the
//! container record, then forwards to the task's shim through [`crate::runtime`].
//!
//! Like containerd's daemon, this service publishes no task events itself: shims publish
//! `/tasks/create`, `/tasks/start`, `/tasks/exit`, `/tasks/delete`, `/tasks/exec-added`,
//! `/tasks/exec-started`, `/tasks/paused`, `/tasks/resumed` and `/tasks/oom` over ttrpc;
//! the runtime publishes exit + delete only for shims that died.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protos::containerd::services::tasks::v1::{
    tasks_server::Tasks, CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest,
    CreateTaskRequest, CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest, ListPidsResponse,
    ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use protos::containerd::types::Metric;
use protos::task_types::{Process, ProcessInfo};
use tonic::{Code, Request, Response, Status};

use super::{blocking, ctx, filter, to_status, Core};
use crate::metadata::containers::Container;
use crate::runtime::checkpoint::{self as ckpt, Scratch, ScratchDir};
use crate::runtime::{self, CreateOpts, Mount, ProcessIo, ProcessState, ShimTask, TaskManager};

/// containerd's `stateTimeout`: a hung shim shows up as UNKNOWN in `List`, not as a hang.
const STATE_TIMEOUT: Duration = Duration::from_secs(2);

/// The tasks service.
#[derive(Clone)]
pub struct Service {
    /// Metadata, events, GC.
    pub core: Core,
    /// The runtime v2 task manager.
    pub tasks: TaskManager,
    /// Where checkpoints are made and unpacked (`<state>/checkpoints`).
    scratch: Scratch,
    /// Checkpoints unpacked for a restore, kept until the task's init starts (the shim runs
    /// `runc restore` at Start) or the task is deleted. Keyed by (namespace, id).
    restores: Arc<Mutex<HashMap<(String, String), ScratchDir>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tasks::Service").finish_non_exhaustive()
    }
}

/// Runtime error → status. Errors the shim returned keep the shim's own code (containerd
/// `errdefs.FromGRPC` then `ToGRPC` round-trips them); the rest use the errdefs mapping.
fn status(e: &runtime::Error) -> Status {
    match e.shim_code() {
        Some(code) => Status::new(Code::from_i32(code), e.to_string()),
        None => to_status(e),
    }
}

fn value_to_any(a: crate::metadata::containers::AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

fn process_proto(container_id: &str, s: ProcessState) -> Process {
    Process {
        container_id: container_id.to_string(),
        id: s.id,
        pid: s.pid,
        status: s.status.as_proto(),
        stdin: s.io.stdin,
        stdout: s.io.stdout,
        stderr: s.io.stderr,
        terminal: s.io.terminal,
        exit_status: s.exit_status,
        exited_at: s.exited_at,
    }
}

fn now() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl Service {
    /// A tasks service over `core` and `tasks`; checkpoint scratch space in `state`.
    pub fn new(core: Core, tasks: TaskManager, state: &std::path::Path) -> Service {
        Service {
            core,
            tasks,
            scratch: Scratch::new(state),
            restores: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Start-up, after the runtime re-adopted its tasks: keeps the unpacked checkpoints of
    /// re-adopted tasks (a restore whose Start is still to come) and removes the rest of what
    /// a previous berthd left in the scratch space.
    fn reclaim_restore_dirs(&self) {
        let kept = self
            .scratch
            .reclaim(|ns, id| self.tasks.get(ns, id).is_ok());
        let mut restores = self
            .restores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, dir) in kept {
            log::info!(
                "keeping unpacked checkpoint {} of re-adopted task {}/{}",
                dir.path().display(),
                key.0,
                key.1
            );
            restores.insert(key, dir);
        }
    }

    /// Forgets (and removes) the unpacked checkpoint of a task, if any. The removal of a
    /// possibly large CRIU image runs on a blocking thread, not on the async workers.
    fn drop_restore_dir(&self, ns: &str, id: &str) {
        let dir = self
            .restores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(ns.to_string(), id.to_string()));
        if let Some(dir) = dir {
            tokio::task::spawn_blocking(move || drop(dir));
        }
    }

    /// containerd `Create` with `r.Checkpoint`: check the descriptor, unpack its blob into a
    /// private scratch directory (off the async threads) and return it.
    async fn unpack_checkpoint(
        &self,
        c: crate::metadata::Ctx,
        id: &str,
        desc: &protos::containerd::types::Descriptor,
    ) -> Result<ScratchDir, Status> {
        let id = id.to_string();
        let db = self.core.db.clone();
        let scratch = self.scratch.clone();
        let desc = ckpt::Descriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
        };
        blocking(move || {
            // Checked before anything is made, as containerd's.
            if desc.media_type != ckpt::MEDIA_TYPE_CHECKPOINT {
                return Err(ckpt::Error::UnsupportedType {
                    media_type: desc.media_type,
                });
            }
            let started = std::time::Instant::now();
            let dir = scratch.create_for_restore(c.ns.as_str(), &id)?;
            ckpt::unpack_checkpoint(&db, &c, &desc, dir.path())?;
            log::debug!(
                "checkpoint {} ({} bytes) unpacked for a restore in {:?}",
                desc.digest,
                desc.size,
                started.elapsed()
            );
            Ok(dir)
        })
        .await
    }

    async fn container<T>(
        &self,
        req: &Request<T>,
        id: &str,
    ) -> Result<(String, Container), Status> {
        let c = ctx(req)?;
        let ns = c.ns.as_str().to_string();
        if id.is_empty() {
            return Err(Status::invalid_argument("container id must not be empty"));
        }
        let db = self.core.db.clone();
        let id = id.to_string();
        let rec = blocking(move || db.container_get(&c, &id)).await?;
        Ok((ns, rec))
    }

    async fn task<T>(
        &self,
        req: &Request<T>,
        id: &str,
    ) -> Result<std::sync::Arc<ShimTask>, Status> {
        let (ns, _) = self.container(req, id).await?;
        self.tasks
            .get(&ns, id)
            .map_err(|_| Status::not_found(format!("task {id} not found")))
    }

    /// containerd `t.Process(ctx, execID)`: an exec must exist before it is used.
    async fn check_exec(task: &ShimTask, exec_id: &str) -> Result<(), Status> {
        if exec_id.is_empty() {
            return Ok(());
        }
        task.client()
            .state(exec_id)
            .await
            .map(|_| ())
            .map_err(|e| status(&e))
    }
}

#[tonic::async_trait]
impl Tasks for Service {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let (ns, container) = self
            .container(&req, &req.get_ref().container_id.clone())
            .await?;
        let c = ctx(&req)?;
        let r = req.into_inner();
        let Some(spec) = container.spec.clone() else {
            return Err(Status::failed_precondition(format!(
                "container {} has no spec",
                container.id
            )));
        };
        let mut checkpoint = ckpt::restore_path(&container.runtime.name, r.options.as_ref())
            .map_err(|e| to_status(&e))?;
        let mut restore_dir = None;
        if checkpoint.is_empty() {
            if let Some(desc) = &r.checkpoint {
                let dir = self.unpack_checkpoint(c, &container.id, desc).await?;
                checkpoint = dir.path().display().to_string();
                restore_dir = Some(dir);
            }
        }
        let opts = CreateOpts {
            id: container.id.clone(),
            spec: value_to_any(spec),
            runtime: container.runtime.name.clone(),
            runtime_path: r.runtime_path,
            runtime_options: container.runtime.options.clone().map(value_to_any),
            task_options: r.options,
            rootfs: r
                .rootfs
                .into_iter()
                .map(|m| Mount {
                    kind: m.r#type,
                    source: m.source,
                    target: m.target,
                    options: m.options,
                })
                .collect(),
            io: ProcessIo {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            checkpoint,
        };
        let pid = self.tasks.create(&ns, opts).await.map_err(|e| status(&e))?;
        if let Some(dir) = restore_dir {
            self.restores
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((ns, container.id.clone()), dir);
        }
        Ok(Response::new(CreateTaskResponse {
            container_id: container.id,
            pid,
        }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let exec_id = req.into_inner().exec_id;
        Self::check_exec(&t, &exec_id).await?;
        let started = t.client().start(&exec_id).await;
        if exec_id.is_empty() {
            // A restore ran (or failed) at this Start: its images are no longer needed.
            self.drop_restore_dir(&t.namespace, &t.id);
        }
        let pid = started.map_err(|e| status(&e))?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let id = req.get_ref().container_id.clone();
        let (ns, _) = self.container(&req, &id).await?;
        if self.tasks.get(&ns, &id).is_err() {
            // The runtime cleaned up a dead shim's task: forget its unpacked checkpoint too.
            self.drop_restore_dir(&ns, &id);
            return Err(Status::not_found(format!("task {id} not found")));
        }
        let exit = self.tasks.delete(&ns, &id).await;
        self.drop_restore_dir(&ns, &id);
        let exit = exit.map_err(|e| status(&e))?;
        Ok(Response::new(DeleteResponse {
            id: String::new(),
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit.timestamp,
        }))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let exec_id = req.into_inner().exec_id;
        if exec_id.is_empty() {
            return Err(Status::invalid_argument(
                "exec id must not be empty; delete the task to remove its init process",
            ));
        }
        Self::check_exec(&t, &exec_id).await?;
        let exit = t.client().delete(&exec_id).await.map_err(|e| status(&e))?;
        Ok(Response::new(DeleteResponse {
            id: exec_id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit.timestamp,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let exec_id = req.into_inner().exec_id;
        let state = tokio::time::timeout(STATE_TIMEOUT * 5, t.client().state(&exec_id))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("shim of task {} did not report its state", t.id))
            })?
            .map_err(|e| status(&e))?;
        Ok(Response::new(GetResponse {
            process: Some(process_proto(&t.id, state)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let c = ctx(&req)?;
        let tasks = self.tasks.list(c.ns.as_str());
        let states = futures::future::join_all(tasks.iter().map(|t| async move {
            match tokio::time::timeout(STATE_TIMEOUT, t.client().state("")).await {
                Ok(Ok(s)) => Some(process_proto(&t.id, s)),
                // Deleted meanwhile: leave it out, as containerd.
                Ok(Err(runtime::Error::Shim { code: 5, .. })) => None,
                Ok(Err(e)) => {
                    log::error!("get state for task {}: {e}", t.id);
                    Some(Process {
                        container_id: t.id.clone(),
                        id: t.id.clone(),
                        ..Process::default()
                    })
                }
                Err(_) => {
                    log::error!(
                        "get state for task {}: shim did not answer within {STATE_TIMEOUT:?}",
                        t.id
                    );
                    Some(Process {
                        container_id: t.id.clone(),
                        id: t.id.clone(),
                        ..Process::default()
                    })
                }
            }
        }))
        .await;
        Ok(Response::new(ListTasksResponse {
            tasks: states.into_iter().flatten().collect(),
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let r = req.into_inner();
        Self::check_exec(&t, &r.exec_id).await?;
        t.client()
            .kill(&r.exec_id, r.signal, r.all)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        if req.get_ref().exec_id.is_empty() {
            return Err(Status::invalid_argument("exec id cannot be empty"));
        }
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let r = req.into_inner();
        runtime::bundle::validate_id("exec id", &r.exec_id).map_err(|e| status(&e))?;
        let io = ProcessIo {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            terminal: r.terminal,
        };
        t.client()
            .exec(&r.exec_id, &io, r.spec.as_ref())
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let r = req.into_inner();
        Self::check_exec(&t, &r.exec_id).await?;
        t.client()
            .resize_pty(&r.exec_id, r.width, r.height)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let r = req.into_inner();
        Self::check_exec(&t, &r.exec_id).await?;
        if r.stdin {
            t.client()
                .close_io(&r.exec_id, true)
                .await
                .map_err(|e| status(&e))?;
        }
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        t.client().pause().await.map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        t.client().resume().await.map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let pids = t.client().pids().await.map_err(|e| status(&e))?;
        Ok(Response::new(ListPidsResponse {
            processes: pids
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    info: p.info,
                })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        let (ns, container) = self
            .container(&req, &req.get_ref().container_id.clone())
            .await?;
        let t = self
            .tasks
            .get(&ns, &container.id)
            .map_err(|_| Status::not_found(format!("task {} not found", container.id)))?;
        let c = ctx(&req)?;
        let r = req.into_inner();
        // containerd `getCheckpointPath`: with CheckpointOptions.ImagePath the checkpoint is
        // written there and nothing goes to the content store.
        let image_path = ckpt::checkpoint_path(&container.runtime.name, r.options.as_ref())
            .map_err(|e| to_status(&e))?;
        if !image_path.is_empty() {
            t.client()
                .checkpoint(&image_path, r.options.as_ref())
                .await
                .map_err(|e| status(&e))?;
            return Ok(Response::new(CheckpointTaskResponse {
                descriptors: Vec::new(),
            }));
        }
        let scratch = self.scratch.clone();
        let dir = blocking(move || scratch.create("ctrd-checkpoint")).await?;
        let started = std::time::Instant::now();
        t.client()
            .checkpoint(&dir.path().display().to_string(), r.options.as_ref())
            .await
            .map_err(|e| status(&e))?;
        let dumped = started.elapsed();
        let spec = container.spec.clone().map(value_to_any).unwrap_or_default();
        let db = self.core.db.clone();
        let descriptors = blocking(move || {
            let d = ckpt::store_checkpoint(&db, &c, dir.path(), &spec);
            drop(dir);
            d
        })
        .await?;
        log::debug!(
            "checkpoint of task {}: runtime {dumped:?}, content store {:?} ({} bytes)",
            t.id,
            started.elapsed().saturating_sub(dumped),
            descriptors.first().map_or(0, |d| d.size)
        );
        Ok(Response::new(CheckpointTaskResponse {
            descriptors: descriptors
                .into_iter()
                .map(|d| protos::containerd::types::Descriptor {
                    media_type: d.media_type,
                    digest: d.digest,
                    size: d.size,
                    annotations: HashMap::new(),
                })
                .collect(),
        }))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let r = req.into_inner();
        t.client()
            .update(r.resources.as_ref(), &r.annotations)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let c = ctx(&req)?;
        let ns = c.ns.as_str().to_string();
        let f = filter(&req.into_inner().filters)?;
        struct TaskFields<'a>(&'a str, &'a str, &'a str);
        impl crate::filters::Adaptor for TaskFields<'_> {
            fn field(&self, path: &[String]) -> Option<String> {
                match path.first().map(String::as_str)? {
                    "id" => Some(self.0.to_string()),
                    "namespace" => Some(self.1.to_string()),
                    "runtime" if !self.2.is_empty() => Some(self.2.to_string()),
                    _ => None,
                }
            }
        }
        let tasks: Vec<_> = self
            .tasks
            .list(&ns)
            .into_iter()
            .filter(|t| f.matches(&TaskFields(&t.id, &ns, &t.runtime)))
            .collect();
        let metrics = futures::future::join_all(tasks.iter().map(|t| async move {
            let collected = now();
            match t.client().stats().await {
                Ok(data) => Some(Metric {
                    timestamp: Some(collected),
                    id: t.id.clone(),
                    data,
                }),
                Err(e) => {
                    if e.shim_code() != Some(5) && !matches!(e, runtime::Error::NotFound { .. }) {
                        log::error!("collecting metrics for {}: {e}", t.id);
                    }
                    None
                }
            }
        }))
        .await;
        Ok(Response::new(MetricsResponse {
            metrics: metrics.into_iter().flatten().collect(),
        }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let t = self.task(&req, &req.get_ref().container_id).await?;
        let exec_id = req.into_inner().exec_id;
        Self::check_exec(&t, &exec_id).await?;
        let exit = t.client().wait(&exec_id).await.map_err(|e| status(&e))?;
        Ok(Response::new(WaitResponse {
            exit_status: exit.status,
            exited_at: exit.timestamp,
        }))
    }
}

/// `[plugins."io.containerd.runtime.v2.task"]`: berthd reads named runtimes from here too.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RuntimeV2Section {
    runtimes: std::collections::BTreeMap<String, runtime::RuntimeConfig>,
}

/// `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]`: where containerd's
/// users configure `runtime_type`, `runtime_path` and runc `options`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CriSection {
    containerd: CriContainerd,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CriContainerd {
    runtimes: std::collections::BTreeMap<String, runtime::RuntimeConfig>,
}

/// The task manager's configuration from berthd's config.toml.
pub fn manager_config(cfg: &crate::config::Config) -> runtime::ManagerConfig {
    let mut m = runtime::ManagerConfig::new(
        std::path::Path::new(&cfg.root),
        std::path::Path::new(&cfg.state),
        &cfg.grpc.address,
    );
    m.ttrpc_address = cfg.ttrpc_address();
    // containerd's `[timeouts]`; unset keys keep the manager's defaults.
    m.load_timeout = cfg.timeout("io.containerd.timeout.shim.load", m.load_timeout);
    m.cleanup_timeout = cfg.timeout("io.containerd.timeout.shim.cleanup", m.cleanup_timeout);
    m.shutdown_timeout = cfg.timeout("io.containerd.timeout.shim.shutdown", m.shutdown_timeout);
    m.debug = matches!(cfg.debug.level.as_str(), "debug" | "trace");
    match cfg.plugin_config::<CriSection>("io.containerd.grpc.v1.cri") {
        Ok(cri) => m.runtimes.extend(cri.containerd.runtimes),
        Err(e) => log::warn!("ignoring runtimes in plugins.\"io.containerd.grpc.v1.cri\": {e}"),
    }
    match cfg.plugin_config::<RuntimeV2Section>(crate::config::ids::RUNTIME_V2) {
        Ok(v2) => m.runtimes.extend(v2.runtimes),
        Err(e) => log::warn!(
            "ignoring runtimes in plugins.{:?}: {e}",
            crate::config::ids::RUNTIME_V2
        ),
    }
    for id in ["linux", "io.containerd.runtime.v1.linux"] {
        match cfg.plugin_config::<Option<runtime::LinuxV1Config>>(id) {
            Ok(Some(v1)) => m.linux_v1 = v1,
            Ok(None) => {}
            Err(e) => log::warn!("ignoring plugins.{id:?}: {e}"),
        }
    }
    m
}

/// Builds the task manager, re-adopts the tasks of a previous run (blocking start-up, as
/// containerd's runtime plugin does, so `ctr t ls` right after a restart sees them), and adds
/// the containers and tasks services. Returns their `ctr plugins ls` rows and the manager
/// (the ttrpc events service dedups forwarded exits through it).
pub fn register(
    core: &Core,
    cfg: &crate::config::Config,
    routes: &mut tonic::service::RoutesBuilder,
) -> (Vec<super::introspection::PluginInfo>, TaskManager) {
    use super::introspection::PluginInfo;
    use protos::containerd::services as svc;
    let mcfg = manager_config(cfg);
    let state_dir = mcfg.state.clone();
    let tasks = TaskManager::new(mcfg, std::sync::Arc::new(core.events.clone()));
    let service = Service::new(
        core.clone(),
        tasks.clone(),
        std::path::Path::new(&cfg.state),
    );
    let started = std::time::Instant::now();
    let after_load = {
        let service = service.clone();
        move |report: &runtime::manager::LoadReport| {
            log::info!(
                "runtime: re-adopted {} task(s), cleaned up {} dead one(s) in {:?}",
                report.live.len(),
                report.cleaned.len(),
                started.elapsed()
            );
            service.reclaim_restore_dirs();
        }
    };
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
        // Cannot block a current-thread runtime (tests): re-adopt in the background.
        let loading = tasks.clone();
        handle.spawn(async move { after_load(&loading.load().await) });
    } else {
        let report = tokio::task::block_in_place(|| handle.block_on(tasks.load()));
        after_load(&report);
    }
    routes.add_service(
        svc::containers::v1::containers_server::ContainersServer::new(super::containers::Service(
            core.clone(),
        )),
    );
    routes.add_service(svc::tasks::v1::tasks_server::TasksServer::new(service));
    let rows = vec![
        PluginInfo {
            platform: true,
            ..PluginInfo::ok(
                "io.containerd.runtime.v2",
                "task",
                &["io.containerd.event.v1", "io.containerd.metadata.v1"],
            )
        }
        .export("root", state_dir.display().to_string()),
        // Legacy runtime v1 (Debian's containerd-shim), listed as containerd 1.6 lists it.
        PluginInfo {
            platform: true,
            ..PluginInfo::ok(
                "io.containerd.runtime.v1",
                "linux",
                &["io.containerd.event.v1", "io.containerd.metadata.v1"],
            )
        },
        PluginInfo::ok(
            "io.containerd.service.v1",
            "containers-service",
            &["io.containerd.metadata.v1"],
        ),
        PluginInfo::ok(
            "io.containerd.service.v1",
            "tasks-service",
            &["io.containerd.runtime.v2", "io.containerd.metadata.v1"],
        ),
        PluginInfo::ok(
            "io.containerd.grpc.v1",
            "containers",
            &["io.containerd.service.v1"],
        ),
        PluginInfo::ok(
            "io.containerd.grpc.v1",
            "tasks",
            &["io.containerd.service.v1"],
        ),
    ];
    (rows, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn runtimes_and_legacy_linux_settings_come_from_config_toml() {
        let src = r#"
version = 2
root = "/var/lib/berth"
state = "/run/berth"
[grpc]
  address = "/run/berth/berth.sock"
[debug]
  level = "debug"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
[plugins."io.containerd.runtime.v2.task".runtimes.youki]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.runtime.v2.task".runtimes.youki.options]
    BinaryName = "/usr/local/bin/youki"
[plugins.linux]
  shim = "containerd-shim"
  runtime = "runc"
  runtime_root = "/run/berth/runc"
  no_shim = false
  shim_debug = true
"#;
        let (cfg, _warnings) =
            crate::config::Config::parse(src, std::path::Path::new("config.toml"))
                .expect("config parses");
        let m = manager_config(&cfg);
        assert_eq!(
            m.state,
            std::path::Path::new("/run/berth/io.containerd.runtime.v2.task")
        );
        assert_eq!(
            m.root,
            std::path::Path::new("/var/lib/berth/io.containerd.runtime.v2.task")
        );
        assert_eq!(m.grpc_address, "/run/berth/berth.sock");
        assert_eq!(m.ttrpc_address, "/run/berth/berth.sock.ttrpc");
        assert!(m.debug, "debug level passes -debug to shims");
        assert_eq!(m.runtimes["kata"].runtime_type, "io.containerd.kata.v2");
        let youki = m.runtimes["youki"]
            .runc_options("youki")
            .expect("options")
            .expect("some");
        let o = protos::runc_options::Options::decode(youki.value.as_slice()).expect("decode");
        assert_eq!(o.binary_name, "/usr/local/bin/youki");
        assert_eq!(m.linux_v1.runtime_root, "/run/berth/runc");
        assert!(m.linux_v1.shim_debug);
    }
}
