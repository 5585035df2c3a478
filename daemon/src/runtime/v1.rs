//! Legacy runtime v1 (`io.containerd.runtime.v1.linux`, containerd 1.x `runtime/v1/linux`):
//! Debian's `containerd-shim` speaking `containerd.runtime.linux.shim.v1.Shim` over ttrpc.
//!
//! Differences from runtime v2 that matter here:
//! - berthd starts the shim itself (no `start` action): `containerd-shim -namespace <ns>
//!   -workdir <work> -address <grpc> -containerd-binary <berthd> -runtime-root <root>
//!   -socket unix:///run/containerd/s/<sha256> [-debug]` in the bundle directory; the shim
//!   listens on that socket. Its address and pid go to the bundle's `address` / `shim.pid`.
//! - The protocol names processes by id (the container id is the init process) and has no
//!   `Stats`/`Connect`/`Shutdown`; `Delete` of the init process takes no request.
//! - So metrics are read by berthd itself, as containerd's `runtime/v1/linux/task.go` does:
//!   the task's cgroup is found from its init pid when it is created, started or restored
//!   (`<bundle>/init.pid`), and [`V1Client::stats`] reads it with the shim crate's `cgroup`
//!   module (the same reader our v2 shim answers `Stats` with).
//! - The shim only publishes `/tasks/exit`, by running `berthd publish` (Debian's v1 shim
//!   sends no OOM events: berthd's cgroups monitor, `crate::monitor::oom`, watches v1 tasks);
//!   the runtime publishes create, start, exec-started, paused, resumed and delete itself.
//! - A dead shim cannot clean up after itself: berthd runs `runc delete --force` and
//!   unmounts the rootfs.
//!
//! Messages are defined here with prost, field numbers as in containerd v1.6.20
//! `runtime/v1/shim/v1/shim.proto`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ::shim::cgroup::{Cgroup, CgroupError};
use prost::Message;
use sha2::Digest;

use super::{event_any, Any, EventSink, Exit, PidInfo, ProcessIo, ProcessState, Result, Status};
use super::{Error, Mount};

/// The runtime name that selects this runtime.
pub const RUNTIME_NAME: &str = "io.containerd.runtime.v1.linux";
/// Its plugin directory under root and state.
pub const TASK_DIR: &str = "io.containerd.runtime.v1.linux";
const SERVICE: &str = "containerd.runtime.linux.shim.v1.Shim";

#[allow(missing_docs)]
mod pb {
    use protos::task_types::ProcessInfo;
    use protos::types::Mount;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateTaskRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub bundle: String,
        #[prost(string, tag = "3")]
        pub runtime: String,
        #[prost(message, repeated, tag = "4")]
        pub rootfs: Vec<Mount>,
        #[prost(bool, tag = "5")]
        pub terminal: bool,
        #[prost(string, tag = "6")]
        pub stdin: String,
        #[prost(string, tag = "7")]
        pub stdout: String,
        #[prost(string, tag = "8")]
        pub stderr: String,
        #[prost(string, tag = "9")]
        pub checkpoint: String,
        #[prost(string, tag = "10")]
        pub parent_checkpoint: String,
        #[prost(message, optional, tag = "11")]
        pub options: Option<prost_types::Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateTaskResponse {
        #[prost(uint32, tag = "1")]
        pub pid: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeleteResponse {
        #[prost(uint32, tag = "1")]
        pub pid: u32,
        #[prost(uint32, tag = "2")]
        pub exit_status: u32,
        #[prost(message, optional, tag = "3")]
        pub exited_at: Option<prost_types::Timestamp>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct IdRequest {
        #[prost(string, tag = "1")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecProcessRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(bool, tag = "2")]
        pub terminal: bool,
        #[prost(string, tag = "3")]
        pub stdin: String,
        #[prost(string, tag = "4")]
        pub stdout: String,
        #[prost(string, tag = "5")]
        pub stderr: String,
        #[prost(message, optional, tag = "6")]
        pub spec: Option<prost_types::Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResizePtyRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(uint32, tag = "2")]
        pub width: u32,
        #[prost(uint32, tag = "3")]
        pub height: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StateResponse {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub bundle: String,
        #[prost(uint32, tag = "3")]
        pub pid: u32,
        #[prost(int32, tag = "4")]
        pub status: i32,
        #[prost(string, tag = "5")]
        pub stdin: String,
        #[prost(string, tag = "6")]
        pub stdout: String,
        #[prost(string, tag = "7")]
        pub stderr: String,
        #[prost(bool, tag = "8")]
        pub terminal: bool,
        #[prost(uint32, tag = "9")]
        pub exit_status: u32,
        #[prost(message, optional, tag = "10")]
        pub exited_at: Option<prost_types::Timestamp>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KillRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(uint32, tag = "2")]
        pub signal: u32,
        #[prost(bool, tag = "3")]
        pub all: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CloseIoRequest {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(bool, tag = "2")]
        pub stdin: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPidsResponse {
        #[prost(message, repeated, tag = "1")]
        pub processes: Vec<ProcessInfo>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckpointTaskRequest {
        #[prost(string, tag = "1")]
        pub path: String,
        #[prost(message, optional, tag = "2")]
        pub options: Option<prost_types::Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ShimInfoResponse {
        #[prost(uint32, tag = "1")]
        pub shim_pid: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateTaskRequest {
        #[prost(message, optional, tag = "1")]
        pub resources: Option<prost_types::Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StartResponse {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(uint32, tag = "2")]
        pub pid: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WaitResponse {
        #[prost(uint32, tag = "1")]
        pub exit_status: u32,
        #[prost(message, optional, tag = "2")]
        pub exited_at: Option<prost_types::Timestamp>,
    }
}

/// The init process's pid file the v1 shim writes into the bundle (`process.InitPidFile`).
const INIT_PID_FILE: &str = "init.pid";

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|p| *p > 0)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cgroup of the init process `pid` (containerd: `cgroups.Load(cgroups.V1,
/// cgroups.PidPath(pid))` in `newTask` and `Start`). A process or cgroup that is already gone
/// gives `None` (containerd's `ErrCgroupDeleted`): the task's metrics are then NotFound. On a
/// cgroup v2 (unified) host this is the v2 cgroup; see [`V1Client::stats`].
fn find_cgroup(ns: &str, id: &str, pid: u32) -> Option<Cgroup> {
    match i32::try_from(pid).map(Cgroup::for_pid) {
        Ok(Ok(cg)) => Some(cg),
        Ok(Err(CgroupError::Read { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Ok(Err(CgroupError::NotFound { .. })) | Err(_) => None,
        Ok(Err(e)) => {
            // containerd fails the create here; the container already runs, so berthd keeps
            // it and reports its metrics as NotFound instead.
            log::warn!("cgroup of v1 task {ns}/{id} (pid {pid}): {e}");
            None
        }
    }
}

/// The socket a shim for `ns/id` listens on (containerd v1 `bundle.shimAddress`).
pub fn socket_address(grpc_address: &str, ns: &str, id: &str) -> String {
    let d = sha2::Sha256::digest(format!("{grpc_address}/{ns}/{id}").as_bytes());
    format!("unix:///run/containerd/s/{}", hex::encode(d))
}

/// A connection to a v1 shim; publishes the events v1 shims leave to the runtime.
#[derive(Clone)]
pub struct V1Client {
    id: String,
    namespace: String,
    bundle: PathBuf,
    client: ttrpc::r#async::Client,
    timeout: Duration,
    events: Arc<dyn EventSink>,
    send_order: Arc<tokio::sync::Mutex<()>>,
    /// The task's cgroup (containerd's `Task.cg`): `None` until the init pid is known, or
    /// when its cgroup was already gone then.
    cgroup: Arc<std::sync::Mutex<Option<Cgroup>>>,
}

impl std::fmt::Debug for V1Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1Client")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl V1Client {
    /// Connect to a v1 shim at `address`. When the bundle already holds the init's
    /// `init.pid` (a restore), the task's cgroup is loaded from that pid, as containerd's
    /// `loadTasks` does.
    pub async fn connect(
        id: &str,
        ns: &str,
        bundle: &Path,
        address: &str,
        timeout: Duration,
        events: Arc<dyn EventSink>,
    ) -> Result<V1Client> {
        let dial = super::shim::dial_address(address);
        let client = tokio::time::timeout(timeout, ttrpc::r#async::Client::connect(&dial))
            .await
            .map_err(|_| Error::Connect {
                id: id.into(),
                address: dial.clone(),
                reason: format!("timed out after {timeout:?}"),
            })?
            .map_err(|e| Error::Connect {
                id: id.into(),
                address: dial.clone(),
                reason: e.to_string(),
            })?;
        let c = V1Client {
            id: id.into(),
            namespace: ns.into(),
            bundle: bundle.into(),
            client,
            timeout,
            events,
            send_order: Arc::default(),
            cgroup: Arc::default(),
        };
        if let Some(pid) = read_pid(&bundle.join(INIT_PID_FILE)) {
            c.load_cgroup(pid);
        }
        Ok(c)
    }

    /// Remember the cgroup of the init process `pid` (see [`find_cgroup`]).
    fn load_cgroup(&self, pid: u32) {
        *lock(&self.cgroup) = find_cgroup(&self.namespace, &self.id, pid);
    }

    /// cgroup metrics of the task, read by berthd (v1 shims have no `Stats`), as an `Any`
    /// holding `io.containerd.cgroups.v1.Metrics` — or, on a cgroup v2 (unified) host,
    /// `io.containerd.cgroups.v2.Metrics` as a v2 shim would report. (containerd 1.6 only
    /// loads v1 hierarchies for this runtime, so on a unified host it fails the create with
    /// "cgroups: cgroup mountpoint does not exist"; berthd runs such tasks and reports v2
    /// metrics.) Files that do not exist read as empty (`cgroups.IgnoreNotExist`); a task
    /// without a cgroup is NotFound, as in containerd.
    pub async fn stats(&self) -> Result<Any> {
        let Some(cg) = lock(&self.cgroup).clone() else {
            return Err(Error::NotFound {
                what: format!("cgroup of task {} does not exist", self.id),
            });
        };
        let id = self.id.clone();
        let read = move || {
            cg.stats().and_then(|m| m.to_any()).map_err(|e| match e {
                CgroupError::Read { path, source } => {
                    Error::io("read cgroup file for metrics", path, source)
                }
                e => Error::Codec {
                    context: format!("metrics of v1 task {id}"),
                    reason: e.to_string(),
                },
            })
        };
        let any = tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| Error::Codec {
                context: format!("metrics of v1 task {}", self.id),
                reason: e.to_string(),
            })??;
        Ok(Any {
            type_url: any.type_url,
            value: any.value,
        })
    }

    fn pid_of(&self, exec_id: &str) -> String {
        if exec_id.is_empty() {
            self.id.clone()
        } else {
            exec_id.to_string()
        }
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let mut request = ttrpc::Request::new();
        request.set_service(SERVICE.to_string());
        request.set_method(method.to_string());
        request.payload = req.encode_to_vec();
        if let Some(t) = timeout {
            request.set_timeout_nano(i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        }
        let mut fut = std::pin::pin!(self.client.request(request));
        let first = {
            let _order = self.send_order.lock().await;
            futures::poll!(fut.as_mut())
        };
        let fut = async move {
            match first {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => fut.await,
            }
        };
        let res = match timeout {
            Some(t) => tokio::time::timeout(t + Duration::from_millis(500), fut)
                .await
                .map_err(|_| Error::Timeout {
                    id: self.id.clone(),
                    method,
                    timeout: t,
                })?,
            None => fut.await,
        };
        let res = res.map_err(|e| match e {
            ttrpc::Error::RpcStatus(s) => Error::Shim {
                id: self.id.clone(),
                code: containerd_shim_protos::protobuf::Enum::value(&s.code()),
                message: s.message().to_string(),
            },
            ttrpc::Error::Others(m) if m.contains("deadline elapsed") => Error::Timeout {
                id: self.id.clone(),
                method,
                timeout: self.timeout,
            },
            other => Error::ShimGone {
                id: self.id.clone(),
                method,
                reason: other.to_string(),
            },
        })?;
        Resp::decode(res.payload.as_slice()).map_err(|e| Error::Codec {
            context: format!("decode {method} reply from v1 shim of {}", self.id),
            reason: e.to_string(),
        })
    }

    async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        req: &Req,
    ) -> Result<Resp> {
        self.call(method, req, Some(self.timeout)).await
    }

    fn publish<M: Message>(&self, topic: &str, type_name: &str, msg: &M) {
        self.events
            .publish(&self.namespace, topic, event_any(type_name, msg));
    }

    /// `Create` the container; publishes `/tasks/create`.
    pub async fn create(
        &self,
        runtime: &str,
        rootfs: &[Mount],
        io: &ProcessIo,
        checkpoint: &str,
        options: Option<&Any>,
    ) -> Result<u32> {
        let req = pb::CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.to_string_lossy().into_owned(),
            runtime: runtime.into(),
            rootfs: rootfs
                .iter()
                .map(|m| protos::types::Mount {
                    r#type: m.kind.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            checkpoint: checkpoint.into(),
            parent_checkpoint: String::new(),
            options: options.cloned(),
        };
        let r: pb::CreateTaskResponse = self.unary("Create", &req).await?;
        if r.pid > 0 {
            self.load_cgroup(r.pid);
        }
        self.publish(
            "/tasks/create",
            "containerd.events.TaskCreate",
            &protos::events::TaskCreate {
                container_id: self.id.clone(),
                bundle: req.bundle,
                rootfs: req.rootfs,
                io: Some(protos::events::TaskIo {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                }),
                checkpoint: req.checkpoint,
                pid: r.pid,
            },
        );
        Ok(r.pid)
    }

    /// `Start`; publishes `/tasks/start` or `/tasks/exec-started`.
    pub async fn start(&self, exec_id: &str) -> Result<u32> {
        let r: pb::StartResponse = self
            .unary(
                "Start",
                &pb::IdRequest {
                    id: self.pid_of(exec_id),
                },
            )
            .await?;
        if exec_id.is_empty() {
            if lock(&self.cgroup).is_none() {
                self.load_cgroup(r.pid);
            }
            self.publish(
                "/tasks/start",
                "containerd.events.TaskStart",
                &protos::events::TaskStart {
                    container_id: self.id.clone(),
                    pid: r.pid,
                },
            );
        } else {
            self.publish(
                "/tasks/exec-started",
                "containerd.events.TaskExecStarted",
                &protos::events::TaskExecStarted {
                    container_id: self.id.clone(),
                    exec_id: exec_id.into(),
                    pid: r.pid,
                },
            );
        }
        Ok(r.pid)
    }

    /// `State`.
    pub async fn state(&self, exec_id: &str) -> Result<ProcessState> {
        let r: pb::StateResponse = self
            .unary(
                "State",
                &pb::IdRequest {
                    id: self.pid_of(exec_id),
                },
            )
            .await?;
        let status = match r.status {
            1 => Status::Created,
            2 => Status::Running,
            3 => Status::Stopped,
            4 => Status::Paused,
            5 => Status::Pausing,
            _ => Status::Unknown,
        };
        Ok(ProcessState {
            id: self.pid_of(exec_id),
            pid: r.pid,
            status,
            io: ProcessIo {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            exit_status: r.exit_status,
            exited_at: r.exited_at,
        })
    }

    /// `Delete` (init, no request) or `DeleteProcess` (exec).
    pub async fn delete(&self, exec_id: &str) -> Result<Exit> {
        let r: pb::DeleteResponse = if exec_id.is_empty() {
            self.unary("Delete", &pb::Empty {}).await?
        } else {
            self.unary("DeleteProcess", &pb::IdRequest { id: exec_id.into() })
                .await?
        };
        Ok(Exit {
            pid: r.pid,
            status: r.exit_status,
            timestamp: r.exited_at,
        })
    }

    /// `Kill`.
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let _: pb::Empty = self
            .unary(
                "Kill",
                &pb::KillRequest {
                    id: self.pid_of(exec_id),
                    signal,
                    all,
                },
            )
            .await?;
        Ok(())
    }

    /// `Exec`; publishes `/tasks/exec-added`.
    pub async fn exec(&self, exec_id: &str, io: &ProcessIo, spec: Option<&Any>) -> Result<()> {
        let req = pb::ExecProcessRequest {
            id: exec_id.into(),
            terminal: io.terminal,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            spec: spec.cloned(),
        };
        let _: pb::Empty = self.unary("Exec", &req).await?;
        self.publish(
            "/tasks/exec-added",
            "containerd.events.TaskExecAdded",
            &protos::events::TaskExecAdded {
                container_id: self.id.clone(),
                exec_id: exec_id.into(),
            },
        );
        Ok(())
    }

    /// `ResizePty`.
    pub async fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let _: pb::Empty = self
            .unary(
                "ResizePty",
                &pb::ResizePtyRequest {
                    id: self.pid_of(exec_id),
                    width,
                    height,
                },
            )
            .await?;
        Ok(())
    }

    /// `CloseIO`.
    pub async fn close_io(&self, exec_id: &str, stdin: bool) -> Result<()> {
        let _: pb::Empty = self
            .unary(
                "CloseIO",
                &pb::CloseIoRequest {
                    id: self.pid_of(exec_id),
                    stdin,
                },
            )
            .await?;
        Ok(())
    }

    /// `Pause`; publishes `/tasks/paused`.
    pub async fn pause(&self) -> Result<()> {
        let _: pb::Empty = self.unary("Pause", &pb::Empty {}).await?;
        self.publish(
            "/tasks/paused",
            "containerd.events.TaskPaused",
            &protos::events::TaskPaused {
                container_id: self.id.clone(),
            },
        );
        Ok(())
    }

    /// `Resume`; publishes `/tasks/resumed`.
    pub async fn resume(&self) -> Result<()> {
        let _: pb::Empty = self.unary("Resume", &pb::Empty {}).await?;
        self.publish(
            "/tasks/resumed",
            "containerd.events.TaskResumed",
            &protos::events::TaskResumed {
                container_id: self.id.clone(),
            },
        );
        Ok(())
    }

    /// `ListPids`.
    pub async fn pids(&self) -> Result<Vec<PidInfo>> {
        let r: pb::ListPidsResponse = self
            .unary(
                "ListPids",
                &pb::IdRequest {
                    id: self.id.clone(),
                },
            )
            .await?;
        Ok(r.processes
            .into_iter()
            .map(|p| PidInfo {
                pid: p.pid,
                info: p.info,
            })
            .collect())
    }

    /// `Checkpoint`; publishes `/tasks/checkpointed` (containerd's v1 `Task.Checkpoint`).
    pub async fn checkpoint(&self, path: &str, options: Option<&Any>) -> Result<()> {
        let req = pb::CheckpointTaskRequest {
            path: path.into(),
            options: options.cloned(),
        };
        let _: pb::Empty = self
            .call("Checkpoint", &req, Some(self.timeout * 12))
            .await?;
        self.publish(
            "/tasks/checkpointed",
            "containerd.events.TaskCheckpointed",
            &protos::events::TaskCheckpointed {
                container_id: self.id.clone(),
                ..Default::default()
            },
        );
        Ok(())
    }

    /// `Update` (v1 has no annotations).
    pub async fn update(&self, resources: Option<&Any>) -> Result<()> {
        let _: pb::Empty = self
            .unary(
                "Update",
                &pb::UpdateTaskRequest {
                    resources: resources.cloned(),
                },
            )
            .await?;
        Ok(())
    }

    /// `Wait` (unbounded).
    pub async fn wait(&self, exec_id: &str) -> Result<Exit> {
        let r: pb::WaitResponse = self
            .call(
                "Wait",
                &pb::IdRequest {
                    id: self.pid_of(exec_id),
                },
                None,
            )
            .await?;
        Ok(Exit {
            pid: 0,
            status: r.exit_status,
            timestamp: r.exited_at,
        })
    }

    /// `ShimInfo`: the shim's pid.
    pub async fn shim_pid(&self) -> Result<u32> {
        let r: pb::ShimInfoResponse = self.unary("ShimInfo", &pb::Empty {}).await?;
        Ok(r.shim_pid)
    }

    /// Publish `/tasks/delete` after the runtime deleted the task.
    pub fn published_delete(&self, exit: &Exit) {
        self.publish(
            "/tasks/delete",
            "containerd.events.TaskDelete",
            &protos::events::TaskDelete {
                container_id: self.id.clone(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: exit.timestamp,
                id: String::new(),
            },
        );
    }
}

/// How to start a v1 shim.
#[derive(Debug, Clone)]
pub struct V1Command {
    /// The shim binary (`[plugins.linux] shim`).
    pub binary: PathBuf,
    /// berthd's gRPC address (`-address`; `berthd publish` sends events there).
    pub grpc_address: String,
    /// berthd itself (`-containerd-binary`).
    pub publish_binary: PathBuf,
    /// `-runtime-root` (`[plugins.linux] runtime_root`).
    pub runtime_root: String,
    /// `-debug` (`[plugins.linux] shim_debug`).
    pub debug: bool,
}

impl V1Command {
    /// Start the shim for `ns/id` in `bundle` with work dir `work`, listening on `address`;
    /// waits (bounded) until the socket accepts connections. Returns the child, which the
    /// caller must wait on (the shim is berthd's child until berthd exits).
    ///
    /// With `debug`, the shim's stdout/stderr are the fifos `shim.stdout.log` and
    /// `shim.stderr.log` in the work dir (opened read-write, as containerd does, so the shim
    /// never gets EPIPE when berthd restarts), copied into berthd's log by [`copy_logs`].
    pub async fn start(
        &self,
        ns: &str,
        id: &str,
        bundle: &Path,
        work: &Path,
        address: &str,
        timeout: Duration,
    ) -> Result<tokio::process::Child> {
        let sock = address.strip_prefix("unix://").unwrap_or(address);
        if let Some(dir) = Path::new(sock).parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io("create socket directory", dir, e))?;
        }
        let _ = std::fs::remove_file(sock);
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("-namespace").arg(ns);
        cmd.arg("-workdir").arg(work);
        cmd.arg("-address").arg(&self.grpc_address);
        cmd.arg("-containerd-binary").arg(&self.publish_binary);
        if !self.runtime_root.is_empty() {
            cmd.arg("-runtime-root").arg(&self.runtime_root);
        }
        cmd.arg("-socket").arg(address);
        if self.debug {
            cmd.arg("-debug");
        }
        cmd.current_dir(bundle);
        cmd.env("GOMAXPROCS", "2");
        cmd.stdin(std::process::Stdio::null());
        if self.debug {
            let open = |name: &str| -> Result<std::fs::File> {
                let p = work.join(name);
                match nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::io("create shim log fifo", &p, e.into())),
                }
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .map_err(|e| Error::io("open shim log fifo", &p, e))
            };
            cmd.stdout(open("shim.stdout.log")?);
            cmd.stderr(open("shim.stderr.log")?);
        } else {
            cmd.stdout(std::process::Stdio::null());
            cmd.stderr(std::process::Stdio::null());
        }
        cmd.process_group(0);
        let fail = |status: String| Error::ShimStart {
            id: id.into(),
            binary: self.binary.clone(),
            status,
            output: String::new(),
        };
        let mut child = cmd.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if std::os::unix::net::UnixStream::connect(sock).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(format!("exited before serving: {status}")));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(fail(format!(
                    "did not listen on {address} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = child.id().unwrap_or_default();
        let write = |name: &str, data: String| {
            let p = bundle.join(name);
            std::fs::write(&p, data).map_err(|e| Error::io("write", &p, e))
        };
        write("address", address.to_string())?;
        write("shim.pid", pid.to_string())?;
        Ok(child)
    }
}

/// Copy a v1 shim's `shim.stdout.log` / `shim.stderr.log` fifos (present with `shim_debug`)
/// into berthd's log; one task per fifo, to keep with the task.
pub fn copy_logs(ns: &str, id: &str, work: &Path) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncBufReadExt;
    let mut handles = Vec::new();
    for name in ["shim.stdout.log", "shim.stderr.log"] {
        let p = work.join(name);
        if !p.exists() {
            continue;
        }
        let Ok(rx) = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&p)
        else {
            continue;
        };
        let (ns, id) = (ns.to_string(), id.to_string());
        handles.push(tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(rx).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log::info!(target: "berthd::shim", "{ns}/{id}: {line}");
            }
        }));
    }
    handles
}

/// Clean up after a v1 shim that is gone (containerd v1 `cleanupAfterDeadShim`): the OCI
/// runtime deletes the container (killing what is left), the rootfs is unmounted.
pub async fn cleanup_dead(
    runtime: &str,
    runtime_root: &str,
    ns: &str,
    id: &str,
    rootfs: &Path,
) -> Exit {
    let root = if runtime_root.is_empty() {
        "/run/containerd/runc".to_string()
    } else {
        runtime_root.to_string()
    };
    let root = Path::new(&root).join(ns);
    let pid = read_pid(&rootfs.with_file_name(INIT_PID_FILE)).unwrap_or(0);
    let out = tokio::process::Command::new(if runtime.is_empty() { "runc" } else { runtime })
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", id])
        .output()
        .await;
    if let Ok(o) = &out {
        if !o.status.success() {
            log::warn!(
                "runc delete --force {ns}/{id}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
    if let Err(e) = super::bundle::unmount_all(rootfs) {
        log::warn!("unmount {}: {e}", rootfs.display());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Exit {
        pid,
        status: 128 + 9,
        timestamp: Some(prost_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_of_a_live_pid_is_found_and_of_a_gone_pid_is_none() {
        let me = std::process::id();
        let cg = find_cgroup("ns", "me", me).expect("cgroup of this process");
        let any = cg.stats().and_then(|m| m.to_any()).expect("metrics");
        assert!(
            any.type_url.starts_with("io.containerd.cgroups.v"),
            "{}",
            any.type_url
        );
        assert!(!any.value.is_empty());

        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(find_cgroup("ns", "gone", pid).is_none(), "reaped pid {pid}");
        assert!(find_cgroup("ns", "huge", u32::MAX).is_none());
    }

    #[test]
    fn init_pid_file_reads_positive_pids_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(INIT_PID_FILE);
        assert_eq!(read_pid(&p), None);
        std::fs::write(&p, "1234\n").expect("write");
        assert_eq!(read_pid(&p), Some(1234));
        std::fs::write(&p, "0").expect("write");
        assert_eq!(read_pid(&p), None);
        std::fs::write(&p, "junk").expect("write");
        assert_eq!(read_pid(&p), None);
    }
}
