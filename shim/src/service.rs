//! The task service: containerd's `Task` ttrpc API (served as both `containerd.task.v2.Task`
//! and `containerd.task.v3.Task`) over the task model, the runtime and container IO.
//!
//! Locking: one `std::sync::Mutex<State>`, never held across an await. Operations read what
//! they need, release the lock, call the runtime, then re-lock to record the result and queue
//! the event — so the exit handler (`handle_exits`) is never blocked by a slow `runc`.
//!
//! Exit ordering, the part containerd's Go shim got wrong for years (`processExits`/
//! `handleStarted` in v2.x): an exit can reach us before the pid is known (the init dies while
//! `runc create` is still running, an exec'd process exits before `runc exec` returns) or
//! while `Start` has not yet queued `TaskStart`. Starts in flight are counted; exits of unknown
//! pids seen meanwhile are parked in `State::early_exits` and claimed when the pid is read
//! from the pid file; exits of a process whose start is in flight are deferred until its start
//! event is queued. Each process records its exit once, so exactly one `TaskExit` goes out.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
    TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::{CheckpointOptions, ProcessDetails};
use containerd_shim_protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::types::task::{ProcessInfo, Status as ProtoStatus};
use runc_wrapper::{CheckpointOpts, CreateOpts, CriuOpts, ExecOpts, KillOpts, RestoreOpts};
use tokio::sync::{mpsc, Notify};
use ttrpc::r#async::TtrpcContext;

use crate::error::TaskError;
use crate::io::{ConsoleSocket, IoOptions, ProcessIo, RuncStdio, StdioSpec, WinSize};
use crate::mount::{unmount_all, Mount};
use crate::options::RuncOptions;
use crate::publisher::Publisher;
use crate::reaper::Exit;
use crate::runtime::Runtime;
use crate::task::{Container, Proc, RestorePlan, State, Status};

/// How long Delete waits for a process's output to drain (containerd 1.6 waits 2 s).
const IO_DRAIN: Duration = Duration::from_secs(2);
/// How long we wait for runc to hand over the pty master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A protobuf timestamp for a wall-clock time.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

fn ts_field(t: Option<SystemTime>) -> MessageField<Timestamp> {
    t.map(timestamp).into()
}

/// Shared state of the task service.
struct Inner {
    state: Mutex<State>,
    oom: crate::cgroup::OomMonitor,
    namespace: String,
    publisher: Publisher,
    shutdown: Arc<Notify>,
}

/// The task service; clones share everything.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

fn runtime_io(r: RuncStdio) -> runc_wrapper::ProcessIo {
    runc_wrapper::ProcessIo {
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

fn read_pid(path: &Path) -> Result<u32, TaskError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| TaskError::Other(format!("reading pid file {}: {e}", path.display())))?;
    s.trim()
        .parse()
        .map_err(|e| TaskError::Other(format!("pid file {} holds {s:?}: {e}", path.display())))
}

/// The cgroup of a container's init (for Stats and OOM watching); `None`, logged, if unknown.
fn cgroup_of(id: &str, pid: u32) -> Option<crate::cgroup::Cgroup> {
    match crate::cgroup::Cgroup::for_pid(pid as i32) {
        Ok(cg) => Some(cg),
        Err(e) => {
            log::warn!("cgroup of container {id} (pid {pid}): {e}");
            None
        }
    }
}

/// The message of a failed checkpoint (containerd `criuError` + ` path= <dump log>`): the
/// first line of runc's error, then the `Error` lines criu wrote to its log, then where the
/// whole log was kept.
fn criu_error(id: &str, e: &runc_wrapper::Error, dump_log: &Path) -> String {
    let runc = e
        .runtime_message()
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    let first = runc.lines().next().unwrap_or_default().trim().to_string();
    let criu: Vec<String> = std::fs::read_to_string(dump_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Error ("))
        .map(|l| {
            // "(00.038528) Error (criu/vdso.c:613): vdso: ..." → "vdso: ..."
            l.split_once("): ")
                .map_or(l, |(_, msg)| msg)
                .trim()
                .to_string()
        })
        .take(3)
        .collect();
    let mut msg = format!("checkpoint of container {id} failed: {first}");
    if !criu.is_empty() {
        msg.push_str(&format!(" (criu: {})", criu.join("; ")));
    }
    msg.push_str(&format!(" path= {}", dump_log.display()));
    msg
}

/// Whether the init's exit must take the rest of the container with it: true unless the
/// spec gives the container its own pid namespace (containerd's `ShouldKillAllOnExit`).
fn kill_all_on_exit(spec: &serde_json::Value) -> bool {
    let private_pid_ns = spec["linux"]["namespaces"].as_array().is_some_and(|nss| {
        nss.iter().any(|ns| {
            ns["type"] == "pid"
                && ns
                    .get("path")
                    .and_then(|p| p.as_str())
                    .is_none_or(str::is_empty)
        })
    });
    !private_pid_ns
}

/// Maps runc's kill failures like containerd's `checkKillError`.
fn kill_error(what: &str, e: runc_wrapper::Error) -> TaskError {
    let msg = e.to_string().to_lowercase();
    if msg.contains("not running")
        || msg.contains("no such process")
        || msg.contains("process already finished")
    {
        TaskError::NotFound(format!("{what}: process already finished"))
    } else if msg.contains("does not exist") {
        TaskError::NotFound(format!("{what}: no such container"))
    } else {
        TaskError::runtime(format!("{what}: unknown error after kill"), e)
    }
}

impl Service {
    /// The service and the receiver of OOM notifications (container ids) to feed to
    /// [`Service::handle_ooms`].
    pub fn new(
        namespace: &str,
        publisher: Publisher,
        shutdown: Arc<Notify>,
    ) -> (Service, mpsc::UnboundedReceiver<String>) {
        let (oom, ooms) = crate::cgroup::OomMonitor::new();
        let svc = Service {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                oom,
                namespace: namespace.to_string(),
                publisher,
                shutdown,
            }),
        };
        (svc, ooms)
    }

    /// Turns OOM notifications into `TaskOOM` events, forever.
    pub async fn handle_ooms(self, mut ooms: mpsc::UnboundedReceiver<String>) {
        while let Some(id) = ooms.recv().await {
            log::info!("container {id} hit its memory limit (OOM kill)");
            self.publish_oom(&id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// Number of containers (for Shutdown and tests).
    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }

    /// Consumes exits of container processes from the reaper, forever.
    pub async fn handle_exits(self, mut exits: mpsc::UnboundedReceiver<Exit>) {
        while let Some(exit) = exits.recv().await {
            let kill_all = {
                let mut st = self.lock();
                self.route_exit(&mut st, exit)
            };
            if let Some((runtime, id)) = kill_all {
                // The init of a container sharing the host pid namespace exited: take the
                // rest of its processes down (they are in its cgroup).
                tokio::spawn(async move {
                    if let Err(e) = runtime
                        .runc
                        .kill(&id, libc::SIGKILL, &KillOpts { all: true })
                        .await
                    {
                        log::debug!("kill --all after init exit of {id}: {e}");
                    }
                });
            }
        }
    }

    /// Records one exit; returns a kill-all job when a shared-pid-ns init exited.
    fn route_exit(&self, st: &mut State, exit: Exit) -> Option<(Runtime, String)> {
        let Some((cid, exec_id)) = st.find_pid(exit.pid) else {
            if st.pending_starts > 0 {
                st.early_exits.insert(exit.pid, exit);
            }
            return None;
        };
        let c = st.containers.get_mut(&cid)?;
        let p = c.process_mut(&exec_id).ok()?;
        if p.starting {
            p.deferred_exit = Some(exit);
            return None;
        }
        self.apply_exit(c, &exec_id, exit)
    }

    /// Marks the process exited and queues its one `TaskExit`.
    ///
    /// An init that exits while exec'd processes still run has its exit held back until the
    /// last of them exited (containerd 2.x `handleInitExit`): containerd must see every exec's
    /// exit before the container's. The kill-all job is returned at once either way.
    fn apply_exit(
        &self,
        c: &mut Container,
        exec_id: &str,
        exit: Exit,
    ) -> Option<(Runtime, String)> {
        let cid = c.id.clone();
        let kill_all = exec_id.is_empty() && c.kill_all_on_exit;
        if exec_id.is_empty() && c.execs_running() {
            c.pending_init_exit = Some(exit);
            log::debug!("init of {cid} exited; its exit waits for the exec'd processes");
            return kill_all.then(|| (c.runtime.clone(), cid));
        }
        let released = self.record_exit(c, exec_id, exit);
        if !exec_id.is_empty() {
            self.release_pending_init(c);
        }
        (released && kill_all).then(|| (c.runtime.clone(), cid))
    }

    /// Publishes a held-back init exit once no exec'd process runs any more.
    fn release_pending_init(&self, c: &mut Container) {
        if !c.execs_running() {
            if let Some(exit) = c.pending_init_exit.take() {
                self.record_exit(c, "", exit);
            }
        }
    }

    /// Marks one process exited and queues its `TaskExit`; false if it had already exited.
    fn record_exit(&self, c: &mut Container, exec_id: &str, exit: Exit) -> bool {
        let cid = c.id.clone();
        let Ok(p) = c.process_mut(exec_id) else {
            return false;
        };
        if !p.set_exited(exit.status, exit.at) {
            return false;
        }
        let mut ev = TaskExit::new();
        ev.container_id = cid.clone();
        ev.id = if exec_id.is_empty() {
            cid.clone()
        } else {
            exec_id.to_string()
        };
        ev.pid = exit.pid;
        ev.exit_status = exit.status;
        ev.exited_at = ts_field(Some(exit.at));
        self.publisher().publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            "containerd.events.TaskExit",
            &format!("{}/{}", ev.container_id, ev.id),
            &ev,
        );
        log::debug!(
            "process {} of {cid} (pid {}) exited with {}",
            ev.id,
            exit.pid,
            exit.status
        );
        true
    }

    /// Publishes `TaskOOM` for a container (called by the OOM watcher).
    pub fn publish_oom(&self, id: &str) {
        let mut ev = TaskOOM::new();
        ev.container_id = id.to_string();
        self.publisher().publish(
            topics::TASK_OOM_EVENT_TOPIC,
            "containerd.events.TaskOOM",
            &ev.container_id.clone(),
            &ev,
        );
    }

    fn io_options(&self, id: &str, o: &RuncOptions) -> IoOptions {
        IoOptions {
            id: id.to_string(),
            namespace: self.inner.namespace.clone(),
            uid: (o.io_uid != 0 || o.io_gid != 0).then_some(o.io_uid),
            gid: (o.io_uid != 0 || o.io_gid != 0).then_some(o.io_gid),
        }
    }

    /// Sets up IO before the runtime runs: (io for non-terminal, console socket for terminal,
    /// fds for the runtime).
    async fn prepare_io(
        stdio: &StdioSpec,
        opts: &IoOptions,
    ) -> Result<
        (
            Option<ProcessIo>,
            Option<ConsoleSocket>,
            runc_wrapper::ProcessIo,
        ),
        TaskError,
    > {
        if stdio.terminal {
            let sock = ConsoleSocket::new()?;
            Ok((None, Some(sock), runc_wrapper::ProcessIo::default()))
        } else {
            let pio = ProcessIo::create(stdio, opts).await?;
            let fds = runtime_io(pio.take_runc_stdio());
            Ok((Some(pio), None, fds))
        }
    }

    /// After the runtime created the process: the pty master becomes the process's IO.
    async fn finish_io(
        pio: Option<ProcessIo>,
        console: Option<ConsoleSocket>,
        stdio: &StdioSpec,
        opts: &IoOptions,
    ) -> Result<Option<Arc<ProcessIo>>, TaskError> {
        match (pio, console) {
            (Some(p), _) => Ok(Some(Arc::new(p))),
            (None, Some(sock)) => {
                let master: OwnedFd = tokio::time::timeout(CONSOLE_TIMEOUT, sock.receive_master())
                    .await
                    .map_err(|_| {
                        TaskError::Other(format!(
                            "runtime sent no pty master within {CONSOLE_TIMEOUT:?}"
                        ))
                    })??;
                Ok(Some(Arc::new(
                    ProcessIo::with_console(master, stdio, opts).await?,
                )))
            }
            (None, None) => Ok(None),
        }
    }

    async fn do_create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse, TaskError> {
        let id = req.id.clone();
        if id.is_empty() {
            return Err(TaskError::InvalidArgument(
                "container id must not be empty".into(),
            ));
        }
        if self.lock().containers.contains_key(&id) {
            return Err(TaskError::AlreadyExists(format!("container {id}")));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec_path = bundle.join("config.json");
        let spec_data = std::fs::read(&spec_path).map_err(|e| {
            TaskError::InvalidArgument(format!(
                "bundle of container {id}: reading {}: {e}",
                spec_path.display()
            ))
        })?;
        let spec: serde_json::Value = serde_json::from_slice(&spec_data).map_err(|e| {
            TaskError::InvalidArgument(format!(
                "bundle of container {id}: malformed {}: {e}",
                spec_path.display()
            ))
        })?;
        let options = RuncOptions::from_any(req.options.as_ref())?;
        options.write(&bundle)?;

        let rootfs = if req.rootfs.is_empty() {
            None
        } else {
            let rootfs = bundle.join("rootfs");
            match std::fs::create_dir(&rootfs) {
                Ok(()) => {
                    use std::os::unix::fs::PermissionsExt;
                    let _ =
                        std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o711));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(TaskError::Other(format!(
                        "creating {}: {e}",
                        rootfs.display()
                    )))
                }
            }
            for m in &req.rootfs {
                let mount = Mount {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                };
                if let Err(e) = mount.mount(&rootfs) {
                    let _ = unmount_all(&rootfs);
                    return Err(e.into());
                }
            }
            Some(rootfs)
        };
        let cleanup_rootfs = |r: &Option<PathBuf>| {
            if let Some(r) = r {
                if let Err(e) = unmount_all(r) {
                    log::warn!("failed to cleanup rootfs mount: {e}");
                }
            }
        };

        let runtime = Runtime::new(&options, &self.inner.namespace, &bundle);
        let stdio = StdioSpec {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let io_opts = self.io_options(&id, &options);
        let restore = RestorePlan::from_request(&req.checkpoint, &options.criu_work_path);
        if restore.is_some() && !req.parent_checkpoint.is_empty() {
            // runc restore has no --parent-path (only checkpoint --pre-dump chains use it).
            log::warn!(
                "container {id}: parent checkpoint {} ignored on restore",
                req.parent_checkpoint
            );
        }
        let (io, pid) = if restore.is_some() {
            // containerd `createCheckpointedState`: IO now (a terminal's console socket is made
            // at Start), `runc restore` at Start; until then the init is created, pid 0.
            if stdio.terminal {
                (None, 0)
            } else {
                match ProcessIo::create(&stdio, &io_opts).await {
                    Ok(p) => (Some(Arc::new(p)), 0),
                    Err(e) => {
                        cleanup_rootfs(&rootfs);
                        return Err(e.into());
                    }
                }
            }
        } else {
            match self
                .run_create(&id, &bundle, &runtime, &options, &stdio, &io_opts)
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    cleanup_rootfs(&rootfs);
                    return Err(e);
                }
            }
        };

        let mut init = Proc::new("", stdio.clone());
        init.pid = pid;
        init.io = io;
        let mut c = Container {
            id: id.clone(),
            bundle: bundle.clone(),
            rootfs,
            options,
            runtime,
            init,
            execs: Default::default(),
            reserved: Default::default(),
            kill_all_on_exit: kill_all_on_exit(&spec),
            pending_init_exit: None,
            cgroup: (pid > 0).then(|| cgroup_of(&id, pid)).flatten(),
            restore,
        };
        let mut ev = TaskCreate::new();
        ev.container_id = id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut tio = TaskIO::new();
        tio.stdin = req.stdin.clone();
        tio.stdout = req.stdout.clone();
        tio.stderr = req.stderr.clone();
        tio.terminal = req.terminal;
        ev.io = Some(tio).into();
        ev.checkpoint = req.checkpoint.clone();
        ev.pid = pid;
        let kill_all = {
            let mut st = self.lock();
            self.publisher().publish(
                topics::TASK_CREATE_EVENT_TOPIC,
                "containerd.events.TaskCreate",
                &ev.container_id.clone(),
                &ev,
            );
            let k = if pid > 0 {
                let early = st.early_exits.remove(&pid);
                st.end_start();
                early.and_then(|e| self.apply_exit(&mut c, "", e))
            } else {
                None
            };
            st.containers.insert(id.clone(), c);
            k
        };
        if let Some((rt, cid)) = kill_all {
            let _ = rt
                .runc
                .kill(&cid, libc::SIGKILL, &KillOpts { all: true })
                .await;
        }
        let mut resp = CreateTaskResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    /// `runc create` of an init: IO, the runtime call, the pid. Counts a pending start (the
    /// caller ends it once the container is recorded); on failure ends it and cleans up the
    /// runtime's state (not the rootfs).
    async fn run_create(
        &self,
        id: &str,
        bundle: &Path,
        runtime: &Runtime,
        options: &RuncOptions,
        stdio: &StdioSpec,
        io_opts: &IoOptions,
    ) -> Result<(Option<Arc<ProcessIo>>, u32), TaskError> {
        let (pio, console, fds) = Self::prepare_io(stdio, io_opts).await?;
        let pid_file = bundle.join("init.pid");
        let opts = CreateOpts {
            pid_file: Some(pid_file.clone()),
            console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
            no_pivot: options.no_pivot_root,
            no_new_keyring: options.no_new_keyring,
            extra_files: Vec::new(),
            io: fds,
        };
        self.lock().pending_starts += 1;
        let created = runtime.runc.create(id, bundle, opts).await;
        let result = match created {
            Ok(()) => match Self::finish_io(pio, console, stdio, io_opts).await {
                Ok(io) => read_pid(&pid_file).map(|pid| (io, pid)),
                Err(e) => Err(e),
            },
            Err(e) => Err(TaskError::runtime(
                format!("OCI runtime create failed for container {id}"),
                e,
            )),
        };
        if result.is_err() {
            self.lock().end_start();
            if let Err(de) = runtime.delete(id, true).await {
                log::debug!("cleanup after failed create of {id}: {de}");
            }
        }
        result
    }

    async fn do_start(&self, req: StartRequest) -> Result<StartResponse, TaskError> {
        if req.exec_id.is_empty() {
            self.start_init(&req.id).await
        } else {
            self.start_exec(&req.id, &req.exec_id).await
        }
    }

    async fn start_init(&self, id: &str) -> Result<StartResponse, TaskError> {
        let (runtime, restore) = {
            let mut st = self.lock();
            let c = st.container_mut(id)?;
            match c.init.status {
                Status::Created if !c.init.starting => {}
                Status::Created => {
                    return Err(TaskError::FailedPrecondition(format!(
                        "container {id} is already starting"
                    )))
                }
                s => {
                    return Err(TaskError::FailedPrecondition(format!(
                        "cannot start a {} process (container {id})",
                        s.name()
                    )))
                }
            }
            c.init.starting = true;
            let restore = c.restore.take().map(|plan| {
                (
                    plan,
                    c.bundle.clone(),
                    c.options.no_pivot_root,
                    c.init.stdio.clone(),
                    c.init.io.clone(),
                    self.io_options(id, &c.options),
                )
            });
            let runtime = c.runtime.clone();
            if restore.is_some() {
                // The pid is unknown until runc restore returns: park early exits.
                st.pending_starts += 1;
            }
            (runtime, restore)
        };
        if let Some(restore) = restore {
            return self.start_restored(id, runtime, restore).await;
        }
        let res = runtime.runc.start(id).await;
        let (pid, kill_all) = self.finish_start_init(id, res)?;
        if let Some((rt, cid)) = kill_all {
            let _ = rt
                .runc
                .kill(&cid, libc::SIGKILL, &KillOpts { all: true })
                .await;
        }
        let mut resp = StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    /// Start of an init created from a checkpoint (containerd `createdCheckpointState.Start`):
    /// `runc restore --detach --no-subreaper` with the checkpoint as `--image-path`, the init's
    /// pid file, `--no-pivot` as configured and the stdio made at Create (or a console socket),
    /// then the pid and cgroup as after a create, and `TaskStart`.
    async fn start_restored(
        &self,
        id: &str,
        runtime: Runtime,
        (plan, bundle, no_pivot, stdio, io, io_opts): (
            RestorePlan,
            PathBuf,
            bool,
            StdioSpec,
            Option<Arc<ProcessIo>>,
            IoOptions,
        ),
    ) -> Result<StartResponse, TaskError> {
        let pid_file = bundle.join("init.pid");
        let image = plan.image_path.clone();
        let result: Result<(Option<Arc<ProcessIo>>, u32), TaskError> = async {
            let console = if stdio.terminal {
                Some(ConsoleSocket::new()?)
            } else {
                None
            };
            let fds = io
                .as_ref()
                .map(|p| runtime_io(p.take_runc_stdio()))
                .unwrap_or_default();
            let opts = RestoreOpts {
                criu: CriuOpts {
                    image_path: Some(plan.image_path),
                    work_path: plan.work_path,
                    ..Default::default()
                },
                bundle: Some(bundle.clone()),
                detach: true,
                pid_file: Some(pid_file.clone()),
                console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
                no_subreaper: true,
                no_pivot,
                io: fds,
            };
            runtime.runc.restore(id, opts).await.map_err(|e| {
                TaskError::runtime(
                    format!(
                        "OCI runtime restore failed for container {id} (checkpoint {})",
                        image.display()
                    ),
                    e,
                )
            })?;
            let io = match console {
                Some(sock) => Self::finish_io(None, Some(sock), &stdio, &io_opts).await?,
                None => io,
            };
            Ok((io, read_pid(&pid_file)?))
        }
        .await;
        let cgroup = match &result {
            Ok((_, pid)) => cgroup_of(id, *pid),
            Err(_) => None,
        };
        let kill_all = {
            let mut st = self.lock();
            let early = match &result {
                Ok((_, pid)) => st.early_exits.remove(pid),
                Err(_) => None,
            };
            st.end_start();
            let c = st.container_mut(id)?;
            let (io, pid) = match result {
                Ok(v) => v,
                Err(e) => {
                    c.init.starting = false;
                    return Err(e);
                }
            };
            c.init.pid = pid;
            c.init.io = io;
            c.cgroup = cgroup;
            if let Some(exit) = early {
                c.init.deferred_exit = Some(exit);
            }
            drop(st);
            self.finish_start_init(id, Ok(()))?.1
        };
        if let Some((rt, cid)) = kill_all {
            let _ = rt
                .runc
                .kill(&cid, libc::SIGKILL, &KillOpts { all: true })
                .await;
        }
        let pid = self.lock().container(id)?.init.pid;
        let mut resp = StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    /// Records the outcome of `runc start` for an init and queues `TaskStart` (then any exit
    /// that arrived meanwhile, so the exit event always follows the start event).
    fn finish_start_init(
        &self,
        id: &str,
        res: runc_wrapper::Result<()>,
    ) -> Result<(u32, Option<(Runtime, String)>), TaskError> {
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        c.init.starting = false;
        let deferred = c.init.deferred_exit.take();
        if let Err(e) = res {
            if let Some(exit) = deferred {
                self.apply_exit(c, "", exit);
            }
            return Err(TaskError::runtime(
                format!("OCI runtime start failed for container {id}"),
                e,
            ));
        }
        if c.init.status == Status::Created {
            c.init.status = Status::Running;
        }
        if let Some(cg) = &c.cgroup {
            if let Err(e) = self.inner.oom.add(id, cg) {
                log::error!("add cg to OOM monitor for {id}: {e}");
            }
        }
        let mut ev = TaskStart::new();
        ev.container_id = id.to_string();
        ev.pid = c.init.pid;
        self.publisher().publish(
            topics::TASK_START_EVENT_TOPIC,
            "containerd.events.TaskStart",
            &ev.container_id.clone(),
            &ev,
        );
        let pid = c.init.pid;
        Ok((pid, deferred.and_then(|exit| self.apply_exit(c, "", exit))))
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<StartResponse, TaskError> {
        let (runtime, bundle, spec, stdio, io_opts) = {
            let mut st = self.lock();
            let c = st.container_mut(id)?;
            if c.init.status != Status::Running || c.pending_init_exit.is_some() {
                return Err(TaskError::FailedPrecondition(format!(
                    "cannot start exec {exec_id}: container {id} is {}",
                    if c.pending_init_exit.is_some() {
                        "stopped"
                    } else {
                        c.init.status.name()
                    }
                )));
            }
            let io_opts = self.io_options(id, &c.options);
            let runtime = c.runtime.clone();
            let bundle = c.bundle.clone();
            let p = c.process_mut(exec_id)?;
            if p.status != Status::Created || p.starting {
                return Err(TaskError::FailedPrecondition(format!(
                    "cannot start a {} process (exec {exec_id} in container {id})",
                    p.status.name()
                )));
            }
            let spec = p.spec.take().ok_or_else(|| {
                TaskError::FailedPrecondition(format!(
                    "exec {exec_id} in container {id} has no process spec"
                ))
            })?;
            p.starting = true;
            let stdio = p.stdio.clone();
            st.pending_starts += 1;
            (runtime, bundle, spec, stdio, io_opts)
        };
        let pid_file = bundle.join(format!("{exec_id}.pid"));
        let result: Result<(Option<Arc<ProcessIo>>, u32), TaskError> = async {
            let (pio, console, fds) = Self::prepare_io(&stdio, &io_opts).await?;
            let opts = ExecOpts {
                detach: true,
                pid_file: Some(pid_file.clone()),
                console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
                extra_files: Vec::new(),
                io: fds,
            };
            runtime.runc.exec(id, &spec, opts).await.map_err(|e| {
                TaskError::runtime(
                    format!("OCI runtime exec failed for exec {exec_id} in container {id}"),
                    e,
                )
            })?;
            let io = Self::finish_io(pio, console, &stdio, &io_opts).await?;
            Ok((io, read_pid(&pid_file)?))
        }
        .await;
        let mut st = self.lock();
        let early = match &result {
            Ok((_, pid)) => st.early_exits.remove(pid),
            Err(_) => None,
        };
        st.end_start();
        let c = st.container_mut(id)?;
        let p = c.process_mut(exec_id)?;
        p.starting = false;
        let (io, pid) = match result {
            Ok(v) => v,
            Err(e) => {
                p.spec = Some(spec);
                // The init may have exited while this exec was starting.
                self.release_pending_init(c);
                return Err(e);
            }
        };
        p.pid = pid;
        p.io = io;
        if p.status == Status::Created {
            p.status = Status::Running;
        }
        let deferred = p.deferred_exit.take().or(early);
        let mut ev = TaskExecStarted::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        ev.pid = pid;
        self.publisher().publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            "containerd.events.TaskExecStarted",
            &format!("{}/{}", ev.container_id, ev.exec_id),
            &ev,
        );
        if let Some(exit) = deferred {
            self.apply_exit(c, exec_id, exit);
        }
        let mut resp = StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse, TaskError> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let (io, runtime, rootfs, bundle) = {
            let st = self.lock();
            let c = st.container(id)?;
            let p = c.process(exec_id)?;
            if matches!(p.status, Status::Running | Status::Paused) || p.starting {
                let what = if exec_id.is_empty() {
                    format!("container {id}")
                } else {
                    format!("exec {exec_id} in container {id}")
                };
                return Err(TaskError::FailedPrecondition(format!(
                    "cannot delete a {} process ({what})",
                    p.status.name()
                )));
            }
            (
                p.io.clone(),
                c.runtime.clone(),
                c.rootfs.clone(),
                c.bundle.clone(),
            )
        };
        if let Some(io) = &io {
            io.wait(IO_DRAIN).await;
            io.close().await;
        }
        if exec_id.is_empty() {
            if let Err(e) = runtime.delete(id, false).await {
                if !e.to_string().contains("does not exist") {
                    // A created (never started) container: force it.
                    if let Err(e2) = runtime.delete(id, true).await {
                        if !e2.to_string().contains("does not exist") {
                            return Err(TaskError::runtime(
                                format!("failed to delete task {id}"),
                                e,
                            ));
                        }
                    }
                }
            }
            self.inner.oom.remove(id);
            if let Some(r) = &rootfs {
                if let Err(e) = unmount_all(r) {
                    log::warn!("failed to cleanup rootfs mount of {id}: {e}");
                }
            }
        } else {
            let _ = std::fs::remove_file(bundle.join(format!("{exec_id}.pid")));
        }
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        let p = if exec_id.is_empty() {
            let c = st
                .containers
                .remove(id)
                .ok_or_else(|| TaskError::NotFound(format!("container {id} not created")))?;
            c.init
        } else {
            c.execs.remove(exec_id).ok_or_else(|| {
                TaskError::NotFound(format!(
                    "process {exec_id} does not exist in container {id}"
                ))
            })?
        };
        drop(st);
        let mut resp = DeleteResponse::new();
        resp.pid = p.pid;
        resp.exit_status = p.exit_status;
        resp.exited_at = ts_field(p.exited_at);
        if exec_id.is_empty() {
            let mut ev = TaskDelete::new();
            ev.container_id = id.to_string();
            ev.pid = p.pid;
            ev.exit_status = p.exit_status;
            ev.exited_at = ts_field(p.exited_at);
            self.publisher().publish(
                topics::TASK_DELETE_EVENT_TOPIC,
                "containerd.events.TaskDelete",
                &ev.container_id.clone(),
                &ev,
            );
        }
        Ok(resp)
    }

    fn do_exec(&self, req: &ExecProcessRequest) -> Result<Empty, TaskError> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        if exec_id.is_empty() {
            return Err(TaskError::InvalidArgument(format!(
                "exec id must not be empty (container {id})"
            )));
        }
        let spec_any = req.spec.as_ref().ok_or_else(|| {
            TaskError::InvalidArgument(format!("exec {exec_id} in container {id}: no process spec"))
        })?;
        let spec: oci_spec::runtime::Process =
            serde_json::from_slice(&spec_any.value).map_err(|e| {
                TaskError::InvalidArgument(format!(
                    "exec {exec_id} in container {id}: malformed process spec: {e}"
                ))
            })?;
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        // A created-from-checkpoint init has no container to exec in until Start restores it
        // (containerd `createdCheckpointState.Exec`).
        if matches!(c.init.status, Status::Stopped | Status::Paused) || c.restore.is_some() {
            return Err(TaskError::FailedPrecondition(format!(
                "cannot exec in a {} state (container {id})",
                c.init.status.name()
            )));
        }
        if c.execs.contains_key(exec_id) || c.reserved.contains(exec_id) {
            return Err(TaskError::AlreadyExists(format!("id {exec_id}")));
        }
        let mut p = Proc::new(
            exec_id,
            StdioSpec {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
        );
        p.spec = Some(spec);
        c.execs.insert(exec_id.to_string(), p);
        let mut ev = TaskExecAdded::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        self.publisher().publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            "containerd.events.TaskExecAdded",
            &format!("{}/{}", ev.container_id, ev.exec_id),
            &ev,
        );
        Ok(Empty::new())
    }

    async fn do_kill(&self, req: KillRequest) -> Result<Empty, TaskError> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let sig = i32::try_from(req.signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| {
                TaskError::InvalidArgument(format!(
                    "signal {} is not a valid signal number",
                    req.signal
                ))
            })?;
        let (runtime, pid, status) = {
            let st = self.lock();
            let c = st.container(id)?;
            let p = c.process(exec_id)?;
            (c.runtime.clone(), p.pid, p.status)
        };
        if exec_id.is_empty() {
            if status == Status::Stopped && !req.all {
                return Err(TaskError::NotFound(format!(
                    "container {id}: process already finished"
                )));
            }
            return runtime
                .runc
                .kill(id, sig, &KillOpts { all: req.all })
                .await
                .map(|()| Empty::new())
                .map_err(|e| kill_error(&format!("container {id}"), e));
        }
        if pid == 0 {
            return Err(TaskError::FailedPrecondition(format!(
                "exec {exec_id} in container {id}: process not created"
            )));
        }
        if status == Status::Stopped {
            return Err(TaskError::NotFound(format!(
                "exec {exec_id} in container {id}: process already finished"
            )));
        }
        let signal = nix::sys::signal::Signal::try_from(sig)
            .map_err(|_| TaskError::InvalidArgument(format!("signal {sig} is not supported")))?;
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal) {
            Ok(()) => Ok(Empty::new()),
            Err(nix::errno::Errno::ESRCH) => Err(TaskError::NotFound(format!(
                "exec {exec_id} in container {id}: process already finished"
            ))),
            Err(e) => Err(TaskError::Other(format!(
                "exec kill error for {exec_id}: {e}"
            ))),
        }
    }

    async fn pause_resume(&self, id: &str, pause: bool) -> Result<Empty, TaskError> {
        let runtime = {
            let st = self.lock();
            let c = st.container(id)?;
            let ok = if pause {
                Status::Running
            } else {
                Status::Paused
            };
            if c.init.status != ok {
                let msg = match (pause, c.init.status) {
                    (true, Status::Created) => "cannot pause task in created state",
                    (true, Status::Paused) => "cannot pause a paused container",
                    (true, _) => "cannot pause a stopped container",
                    (false, Status::Created) => "cannot resume task in created state",
                    (false, Status::Running) => "cannot resume a running process",
                    (false, _) => "cannot resume a stopped container",
                };
                return Err(TaskError::FailedPrecondition(format!(
                    "{msg} (container {id})"
                )));
            }
            c.runtime.clone()
        };
        let res = if pause {
            runtime.runc.pause(id).await
        } else {
            runtime.runc.resume(id).await
        };
        res.map_err(|e| {
            TaskError::runtime(
                format!("{} container {id}", if pause { "pause" } else { "resume" }),
                e,
            )
        })?;
        let mut st = self.lock();
        if let Ok(c) = st.container_mut(id) {
            if c.init.status != Status::Stopped {
                c.init.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
            }
        }
        drop(st);
        if pause {
            let mut ev = TaskPaused::new();
            ev.container_id = id.to_string();
            self.publisher().publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                "containerd.events.TaskPaused",
                &ev.container_id.clone(),
                &ev,
            );
        } else {
            let mut ev = TaskResumed::new();
            ev.container_id = id.to_string();
            self.publisher().publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                "containerd.events.TaskResumed",
                &ev.container_id.clone(),
                &ev,
            );
        }
        Ok(Empty::new())
    }

    async fn do_pids(&self, req: PidsRequest) -> Result<PidsResponse, TaskError> {
        let id = req.id.as_str();
        let runtime = self.lock().container(id)?.runtime.clone();
        let pids =
            runtime.runc.ps(id).await.map_err(|e| {
                TaskError::runtime(format!("listing processes of container {id}"), e)
            })?;
        let st = self.lock();
        let c = st.container(id)?;
        let mut resp = PidsResponse::new();
        for pid in pids {
            let mut info = ProcessInfo::new();
            info.pid = pid as u32;
            if let Some((exec_id, _)) = c.execs.iter().find(|(_, p)| p.pid == pid as u32) {
                let mut d = ProcessDetails::new();
                d.exec_id = exec_id.clone();
                info.info = Some(crate::options::pack_any(
                    "containerd.runc.v1.ProcessDetails",
                    &d,
                ))
                .into();
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    fn do_state(&self, req: &StateRequest) -> Result<StateResponse, TaskError> {
        let st = self.lock();
        let c = st.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let mut resp = StateResponse::new();
        resp.id = if req.exec_id.is_empty() {
            c.id.clone()
        } else {
            req.exec_id.clone()
        };
        resp.exec_id = req.exec_id.clone();
        resp.bundle = c.bundle.display().to_string();
        resp.pid = p.pid;
        resp.status = match p.status {
            Status::Created => ProtoStatus::CREATED,
            Status::Running => ProtoStatus::RUNNING,
            Status::Paused => ProtoStatus::PAUSED,
            Status::Stopped => ProtoStatus::STOPPED,
        }
        .into();
        resp.stdin = p.stdio.stdin.clone();
        resp.stdout = p.stdio.stdout.clone();
        resp.stderr = p.stdio.stderr.clone();
        resp.terminal = p.stdio.terminal;
        resp.exit_status = p.exit_status;
        resp.exited_at = ts_field(p.exited_at);
        Ok(resp)
    }

    async fn do_wait(&self, req: WaitRequest) -> Result<WaitResponse, TaskError> {
        let mut rx = {
            let st = self.lock();
            st.container(&req.id)?
                .process(&req.exec_id)?
                .exited
                .subscribe()
        };
        let _ = rx.wait_for(|exited| *exited).await;
        let st = self.lock();
        let mut resp = WaitResponse::new();
        // The process may have been deleted meanwhile; report what we saw then.
        if let Ok(p) = st.container(&req.id).and_then(|c| c.process(&req.exec_id)) {
            resp.exit_status = p.exit_status;
            resp.exited_at = ts_field(p.exited_at);
        }
        Ok(resp)
    }

    async fn do_update(&self, req: UpdateTaskRequest) -> Result<Empty, TaskError> {
        let id = req.id.as_str();
        let runtime = {
            let st = self.lock();
            let c = st.container(id)?;
            if c.init.status == Status::Stopped {
                return Err(TaskError::FailedPrecondition(format!(
                    "cannot update a stopped container {id}"
                )));
            }
            c.runtime.clone()
        };
        let any = req.resources.as_ref().ok_or_else(|| {
            TaskError::InvalidArgument(format!("update of container {id}: no resources"))
        })?;
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(&any.value).map_err(|e| {
                TaskError::InvalidArgument(format!(
                    "update of container {id}: resources {:?} are not LinuxResources JSON: {e}",
                    any.type_url
                ))
            })?;
        runtime
            .runc
            .update(id, &res)
            .await
            .map_err(|e| TaskError::runtime(format!("update container {id}"), e))?;
        Ok(Empty::new())
    }

    /// containerd `Init.checkpoint`: `runc checkpoint` into the request's path (else
    /// CheckpointOptions.ImagePath, else runc Options.CriuImagePath), `--leave-running` unless
    /// Exit, work files in CheckpointOptions.WorkPath or a `criu-work` directory under the
    /// bundle's `work` removed afterwards. On failure criu's dump.log is kept as
    /// `<bundle>/criu-dump.log` and the error quotes criu's own error lines and that path.
    async fn do_checkpoint(&self, req: CheckpointTaskRequest) -> Result<Empty, TaskError> {
        let id = req.id.as_str();
        let (runtime, options, bundle) = {
            let st = self.lock();
            let c = st.container(id)?;
            match c.init.status {
                Status::Running | Status::Paused => {}
                Status::Created => {
                    return Err(TaskError::FailedPrecondition(format!(
                        "cannot checkpoint a task in created state (container {id})"
                    )))
                }
                Status::Stopped => {
                    return Err(TaskError::FailedPrecondition(format!(
                        "cannot checkpoint a stopped container {id}"
                    )))
                }
            }
            (c.runtime.clone(), c.options.clone(), c.bundle.clone())
        };
        let mut copts = CheckpointOptions::new();
        if let Some(any) = req.options.as_ref().filter(|a| !a.type_url.is_empty()) {
            copts = CheckpointOptions::parse_from_bytes(&any.value).map_err(|e| {
                TaskError::InvalidArgument(format!(
                    "checkpoint options {:?} of container {id}: {e}",
                    any.type_url
                ))
            })?;
        }
        let image = [&req.path, &copts.image_path, &options.criu_image_path]
            .into_iter()
            .find(|p| !p.is_empty())
            .cloned()
            .ok_or_else(|| {
                TaskError::InvalidArgument(format!(
                    "checkpoint of container {id}: no image path (set the request's path or CheckpointOptions.ImagePath)"
                ))
            })?;
        // containerd keeps a caller's work directory and removes its own.
        let (work, own_work) = if copts.work_path.is_empty() {
            (bundle.join("work").join("criu-work"), true)
        } else {
            (PathBuf::from(&copts.work_path), false)
        };
        let opts = CheckpointOpts {
            criu: CriuOpts {
                image_path: Some(PathBuf::from(&image)),
                work_path: Some(work.clone()),
                tcp_established: copts.open_tcp,
                ext_unix_sk: copts.external_unix_sockets,
                shell_job: copts.terminal,
                file_locks: copts.file_locks,
                empty_ns: copts.empty_namespaces.clone(),
                ..Default::default()
            },
            leave_running: !copts.exit,
            ..Default::default()
        };
        let res = runtime.runc.checkpoint(id, &opts).await;
        let res = res.map_err(|e| {
            let dump_log = bundle.join("criu-dump.log");
            if let Err(ce) = std::fs::copy(work.join("dump.log"), &dump_log) {
                log::error!("failed to copy dump.log to criu-dump.log: {ce}");
            }
            TaskError::Other(criu_error(id, &e, &dump_log))
        });
        if own_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        res?;
        let mut ev = TaskCheckpointed::new();
        ev.container_id = id.to_string();
        ev.checkpoint = image;
        self.publisher().publish(
            topics::TASK_CHECKPOINTED_EVENT_TOPIC,
            "containerd.events.TaskCheckpointed",
            &ev.container_id.clone(),
            &ev,
        );
        Ok(Empty::new())
    }

    async fn do_stats(&self, req: StatsRequest) -> Result<StatsResponse, TaskError> {
        let id = req.id.as_str();
        let (runtime, status, cgroup) = {
            let st = self.lock();
            let c = st.container(id)?;
            (c.runtime.clone(), c.init.status, c.cgroup.clone())
        };
        if status == Status::Stopped {
            return Err(TaskError::NotFound(format!(
                "cgroup of container {id} does not exist (stopped)"
            )));
        }
        let any = match cgroup {
            // Read the cgroup files directly, as the Go shim does (works for any runtime).
            Some(cg) => cg
                .stats()
                .and_then(|m| m.to_any())
                .map_err(|e| TaskError::Other(format!("stats of container {id}: {e}")))?,
            // No cgroup found at create: ask the runtime.
            None => {
                let stats = runtime
                    .runc
                    .stats(id)
                    .await
                    .map_err(|e| TaskError::runtime(format!("stats of container {id}"), e))?;
                crate::metrics::v1_metrics(&stats)
            }
        };
        let mut resp = StatsResponse::new();
        resp.stats = Some(any).into();
        Ok(resp)
    }

    fn io_of(&self, id: &str, exec_id: &str) -> Result<Option<Arc<ProcessIo>>, TaskError> {
        let st = self.lock();
        Ok(st.container(id)?.process(exec_id)?.io.clone())
    }
}

fn log_err<T>(op: &str, r: Result<T, TaskError>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        log::debug!("{op}: {e}");
        e.into()
    })
}

#[async_trait]
impl Task for Service {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        log_err("state", self.do_state(&req))
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        log::info!("create container {} (bundle {})", req.id, req.bundle);
        let r = self.do_create(req).await;
        if let Err(e) = &r {
            log::error!("create: {e}");
        }
        log_err("create", r)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        log_err("start", self.do_start(req).await)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        log_err("delete", self.do_delete(req).await)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        log_err("pids", self.do_pids(req).await)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        log_err("pause", self.pause_resume(&req.id, true).await)
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        log_err("resume", self.pause_resume(&req.id, false).await)
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        log_err("checkpoint", self.do_checkpoint(req).await)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        log_err("kill", self.do_kill(req).await)
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        log_err("exec", self.do_exec(&req))
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let r = self.io_of(&req.id, &req.exec_id).and_then(|io| {
            let Some(io) = io else {
                return Ok(Empty::new());
            };
            let size = WinSize {
                width: u16::try_from(req.width).unwrap_or(u16::MAX),
                height: u16::try_from(req.height).unwrap_or(u16::MAX),
            };
            match io.resize(size) {
                // containerd's shim ignores resizes of processes without a console.
                Ok(()) | Err(crate::io::IoError::NoTerminal) => Ok(Empty::new()),
                Err(e) => Err(e.into()),
            }
        });
        log_err("resize_pty", r)
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let r = self.io_of(&req.id, &req.exec_id).map(|io| {
            if req.stdin {
                if let Some(io) = io {
                    io.close_stdin();
                }
            }
            Empty::new()
        });
        log_err("close_io", r)
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        log_err("update", self.do_update(req).await)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        log_err("wait", self.do_wait(req).await)
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        log_err("stats", self.do_stats(req).await)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = self
            .lock()
            .containers
            .get(&req.id)
            .map_or(0, |c| c.init.pid);
        Ok(resp)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // Stay up while containers remain (a grouped shim serves several).
        if req.now || self.container_count() == 0 {
            log::info!("shutdown requested");
            // As the Go shim's Shutdown: the socket goes before the reply, so a `start` for a
            // new task of the same id right after this call (delete then create, as the
            // restart monitor does) cannot find this exiting shim listening and reuse it.
            if let Ok(address) = std::fs::read_to_string("address") {
                crate::manager::remove_socket(address.trim());
            }
            self.inner.shutdown.notify_one();
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_all_follows_pid_namespace() {
        let private: serde_json::Value =
            serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}});
        assert!(!kill_all_on_exit(&private));
        let shared: serde_json::Value = serde_json::json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}});
        assert!(kill_all_on_exit(&shared));
        assert!(kill_all_on_exit(&serde_json::json!({})));
    }

    #[test]
    fn criu_errors_quote_runc_criu_and_the_kept_log() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("criu-dump.log");
        std::fs::write(
            &log,
            "(00.000001) Version: 3.17\n(00.038528) Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n(00.038528) Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n",
        )
        .unwrap();
        let e = runc_wrapper::Error::InvalidArgument(
            "criu failed: type DUMP errno 0\nlog file: /w/dump.log".into(),
        );
        let m = criu_error("c1", &e, &log);
        assert!(m.starts_with("checkpoint of container c1 failed: "), "{m}");
        assert!(
            m.contains("vdso: Failed to fill self vdso symtable; kerndat_vdso_fill_symtable"),
            "{m}"
        );
        assert!(m.ends_with(&format!("path= {}", log.display())), "{m}");
        assert!(
            !m.contains("log file: /w"),
            "only the first line of runc's error: {m}"
        );
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::new(5, 7);
        let ts = timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (5, 7));
    }
}
