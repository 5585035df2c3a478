//! A ttrpc client for the shim task API, v2 or v3 (containerd `runtime/v2/shim.go`
//! `shimTask`, `process.go`).
//!
//! Task API v3 (containerd 2.x) is a renamed copy of v2: same messages, same methods, only
//! the service name differs (`containerd.task.v2.Task` / `containerd.task.v3.Task`). So one
//! generic `call` builds the ttrpc request with the service name the shim announced at
//! start, using `containerd-shim-protos` message types. Every call except `Wait` carries a
//! deadline (in the request, so the shim can give up too, and locally, so a hung shim cannot
//! hold a caller forever).

use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::{
    any::Any as PbAny, empty::Empty, timestamp::Timestamp as PbTimestamp,
};
use containerd_shim_protos::protobuf::{Message, MessageField};
use ttrpc::r#async::Client;

use super::binary::BootstrapParams;
use super::{Any, CreateOpts, Error, Exit, PidInfo, ProcessIo, ProcessState, Result, Status};

/// ttrpc metadata key containerd puts the namespace under (`namespaces.WithNamespace`).
const NAMESPACE_KEY: &str = "containerd-namespace-ttrpc";

/// A connection to one shim.
#[derive(Clone)]
pub struct ShimClient {
    id: String,
    namespace: String,
    service: &'static str,
    version: i32,
    client: Client,
    timeout: Duration,
    /// Held while a request is handed to the connection: see [`ShimClient::call`].
    send_order: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ShimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimClient")
            .field("id", &self.id)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Normalise a shim address to what the ttrpc crate dials (`unix://` + path or `@name`).
pub fn dial_address(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    }
}

impl ShimClient {
    /// Connect to the shim described by `params`; `timeout` bounds every later call.
    pub async fn connect(
        id: &str,
        namespace: &str,
        params: &BootstrapParams,
        timeout: Duration,
    ) -> Result<ShimClient> {
        let service = match params.version {
            2 => "containerd.task.v2.Task",
            3 => "containerd.task.v3.Task",
            v => {
                return Err(Error::Connect {
                    id: id.into(),
                    address: params.address.clone(),
                    reason: format!("unsupported task API version {v}"),
                })
            }
        };
        let address = dial_address(&params.address);
        let connect = Client::connect(&address);
        let client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| Error::Connect {
                id: id.into(),
                address: address.clone(),
                reason: format!("timed out after {timeout:?}"),
            })?
            .map_err(|e| Error::Connect {
                id: id.into(),
                address: address.clone(),
                reason: e.to_string(),
            })?;
        Ok(ShimClient {
            id: id.into(),
            namespace: namespace.into(),
            service,
            version: params.version,
            client,
            timeout,
            send_order: std::sync::Arc::default(),
        })
    }

    /// The task API version in use (2 or 3).
    pub fn version(&self) -> i32 {
        self.version
    }

    async fn call<Req: Message, Resp: Message>(
        &self,
        method: &'static str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let payload = req.write_to_bytes().map_err(|e| Error::Codec {
            context: format!("encode {method} request for {}", self.id),
            reason: e.to_string(),
        })?;
        let mut request = ttrpc::Request::new();
        request.set_service(self.service.to_string());
        request.set_method(method.to_string());
        request.payload = payload;
        if let Some(t) = timeout {
            request.set_timeout_nano(i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        }
        let mut kv = ttrpc::proto::KeyValue::new();
        kv.key = NAMESPACE_KEY.to_string();
        kv.value = self.namespace.clone();
        request.metadata.push(kv);
        // The ttrpc crate numbers a request before queueing it, so concurrent calls can hit
        // the wire out of order, which Go's ttrpc 1.2 server (containerd 2.x shims) rejects
        // ("StreamID cannot be re-used and must increment"). The first poll numbers and
        // queues the request; doing it under a lock keeps numbering and queueing in order.
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
            // A little slack so the shim's own deadline error arrives first when it can.
            Some(t) => tokio::time::timeout(t + Duration::from_millis(500), fut)
                .await
                .map_err(|_| Error::Timeout {
                    id: self.id.clone(),
                    method,
                    timeout: t,
                })?,
            None => fut.await,
        };
        let res = res.map_err(|e| self.map_err(method, e))?;
        Resp::parse_from_bytes(&res.payload).map_err(|e| Error::Codec {
            context: format!("decode {method} reply from shim of {}", self.id),
            reason: e.to_string(),
        })
    }

    fn map_err(&self, method: &'static str, e: ttrpc::Error) -> Error {
        match e {
            ttrpc::Error::RpcStatus(s) => {
                let code = containerd_shim_protos::protobuf::Enum::value(&s.code());
                // ttrpc reports its own deadline as DeadlineExceeded.
                if code == 4 {
                    return Error::Timeout {
                        id: self.id.clone(),
                        method,
                        timeout: self.timeout,
                    };
                }
                Error::Shim {
                    id: self.id.clone(),
                    code,
                    message: s.message().to_string(),
                }
            }
            // The ttrpc crate's own deadline (the request carried `timeout_nano`).
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
        }
    }

    async fn unary<Req: Message, Resp: Message>(
        &self,
        method: &'static str,
        req: &Req,
    ) -> Result<Resp> {
        self.call(method, req, Some(self.timeout)).await
    }

    /// `Create`: the shim creates the container with the OCI runtime; returns its pid.
    pub async fn create(
        &self,
        bundle: &std::path::Path,
        opts: &CreateOpts,
        options: Option<&Any>,
    ) -> Result<u32> {
        let mut req = api::CreateTaskRequest::new();
        req.id = self.id.clone();
        req.bundle = bundle.to_string_lossy().into_owned();
        req.rootfs = opts
            .rootfs
            .iter()
            .map(|m| {
                let mut pm = api::Mount::new();
                pm.type_ = m.kind.clone();
                pm.source = m.source.clone();
                pm.target = m.target.clone();
                pm.options = m.options.clone();
                pm
            })
            .collect();
        req.stdin = opts.io.stdin.clone();
        req.stdout = opts.io.stdout.clone();
        req.stderr = opts.io.stderr.clone();
        req.terminal = opts.io.terminal;
        req.checkpoint = opts.checkpoint.clone();
        req.options = any_field(options);
        let resp: api::CreateTaskResponse = self.unary("Create", &req).await?;
        Ok(resp.pid)
    }

    /// `Start` of the init process (`exec_id` empty) or an exec; returns the pid.
    pub async fn start(&self, exec_id: &str) -> Result<u32> {
        let mut req = api::StartRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        let resp: api::StartResponse = self.unary("Start", &req).await?;
        Ok(resp.pid)
    }

    /// `State` of the init process or an exec.
    pub async fn state(&self, exec_id: &str) -> Result<ProcessState> {
        let mut req = api::StateRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        let r: api::StateResponse = self.unary("State", &req).await?;
        use containerd_shim_protos::api::Status as S;
        let status = match r.status.enum_value_or_default() {
            S::CREATED => Status::Created,
            S::RUNNING => Status::Running,
            S::STOPPED => Status::Stopped,
            S::PAUSED => Status::Paused,
            S::PAUSING => Status::Pausing,
            S::UNKNOWN => Status::Unknown,
        };
        Ok(ProcessState {
            id: if exec_id.is_empty() {
                self.id.clone()
            } else {
                exec_id.to_string()
            },
            pid: r.pid,
            status,
            io: ProcessIo {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            exit_status: r.exit_status,
            exited_at: r.exited_at.as_ref().map(timestamp),
        })
    }

    /// `Delete` of the init process or an exec; returns its exit.
    pub async fn delete(&self, exec_id: &str) -> Result<Exit> {
        let mut req = api::DeleteRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        let r: api::DeleteResponse = self.unary("Delete", &req).await?;
        Ok(Exit {
            pid: r.pid,
            status: r.exit_status,
            timestamp: r.exited_at.as_ref().map(timestamp),
        })
    }

    /// `Kill` with `signal`; `all` signals every process in the container.
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let mut req = api::KillRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        req.signal = signal;
        req.all = all;
        let _: Empty = self.unary("Kill", &req).await?;
        Ok(())
    }

    /// `Exec`: add a process described by `spec` (an OCI process, JSON in an `Any`).
    pub async fn exec(&self, exec_id: &str, io: &ProcessIo, spec: Option<&Any>) -> Result<()> {
        let mut req = api::ExecProcessRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        req.stdin = io.stdin.clone();
        req.stdout = io.stdout.clone();
        req.stderr = io.stderr.clone();
        req.terminal = io.terminal;
        req.spec = any_field(spec);
        let _: Empty = self.unary("Exec", &req).await?;
        Ok(())
    }

    /// `ResizePty`.
    pub async fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let mut req = api::ResizePtyRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        req.width = width;
        req.height = height;
        let _: Empty = self.unary("ResizePty", &req).await?;
        Ok(())
    }

    /// `CloseIO` (stdin).
    pub async fn close_io(&self, exec_id: &str, stdin: bool) -> Result<()> {
        let mut req = api::CloseIORequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        req.stdin = stdin;
        let _: Empty = self.unary("CloseIO", &req).await?;
        Ok(())
    }

    /// `Pause`.
    pub async fn pause(&self) -> Result<()> {
        let mut req = api::PauseRequest::new();
        req.id = self.id.clone();
        let _: Empty = self.unary("Pause", &req).await?;
        Ok(())
    }

    /// `Resume`.
    pub async fn resume(&self) -> Result<()> {
        let mut req = api::ResumeRequest::new();
        req.id = self.id.clone();
        let _: Empty = self.unary("Resume", &req).await?;
        Ok(())
    }

    /// `Pids`: the processes in the container.
    pub async fn pids(&self) -> Result<Vec<PidInfo>> {
        let mut req = api::PidsRequest::new();
        req.id = self.id.clone();
        let r: api::PidsResponse = self.unary("Pids", &req).await?;
        Ok(r.processes
            .iter()
            .map(|p| PidInfo {
                pid: p.pid,
                info: p.info.as_ref().map(from_pb_any),
            })
            .collect())
    }

    /// `Checkpoint` into `path` with runtime-specific `options`.
    pub async fn checkpoint(&self, path: &str, options: Option<&Any>) -> Result<()> {
        let mut req = api::CheckpointTaskRequest::new();
        req.id = self.id.clone();
        req.path = path.into();
        req.options = any_field(options);
        // Checkpoints of big containers take long: a generous bound, not none.
        let _: Empty = self
            .call("Checkpoint", &req, Some(self.timeout * 12))
            .await?;
        Ok(())
    }

    /// `Update` resources (an OCI `LinuxResources` in an `Any`) and annotations.
    pub async fn update(
        &self,
        resources: Option<&Any>,
        annotations: &std::collections::HashMap<String, String>,
    ) -> Result<()> {
        let mut req = api::UpdateTaskRequest::new();
        req.id = self.id.clone();
        req.resources = any_field(resources);
        req.annotations = annotations.clone();
        let _: Empty = self.unary("Update", &req).await?;
        Ok(())
    }

    /// `Stats`: cgroup metrics as an `Any`.
    pub async fn stats(&self) -> Result<Option<Any>> {
        let mut req = api::StatsRequest::new();
        req.id = self.id.clone();
        let r: api::StatsResponse = self.unary("Stats", &req).await?;
        Ok(r.stats.as_ref().map(from_pb_any))
    }

    /// `Wait` for the init process or an exec to exit. Unbounded by design; returns
    /// [`Error::ShimGone`] if the shim dies meanwhile.
    pub async fn wait(&self, exec_id: &str) -> Result<Exit> {
        let mut req = api::WaitRequest::new();
        req.id = self.id.clone();
        req.exec_id = exec_id.into();
        let r: api::WaitResponse = self.call("Wait", &req, None).await?;
        Ok(Exit {
            pid: 0,
            status: r.exit_status,
            timestamp: r.exited_at.as_ref().map(timestamp),
        })
    }

    /// `Connect`: (shim pid, task pid); also the liveness probe on restore.
    pub async fn connect_info(&self) -> Result<(u32, u32)> {
        let mut req = api::ConnectRequest::new();
        req.id = self.id.clone();
        let r: api::ConnectResponse = self.unary("Connect", &req).await?;
        Ok((r.shim_pid, r.task_pid))
    }

    /// `Shutdown`: ask the shim to exit (it refuses while it still has tasks unless `now`).
    pub async fn shutdown(&self, now: bool, timeout: Duration) -> Result<()> {
        let mut req = api::ShutdownRequest::new();
        req.id = self.id.clone();
        req.now = now;
        match self.call::<_, Empty>("Shutdown", &req, Some(timeout)).await {
            // The shim exits while answering: a closed connection is success.
            Ok(_) | Err(Error::ShimGone { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn any_field(a: Option<&Any>) -> MessageField<PbAny> {
    match a {
        Some(a) => {
            let mut pb = PbAny::new();
            pb.type_url = a.type_url.clone();
            pb.value = a.value.clone();
            MessageField::some(pb)
        }
        None => MessageField::none(),
    }
}

fn from_pb_any(a: &PbAny) -> Any {
    Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    }
}

fn timestamp(t: &PbTimestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

/// The client of a task's shim: runtime v2 (task API v2/v3) or legacy runtime v1. The tasks
/// service calls these without caring which.
#[derive(Clone, Debug)]
pub enum TaskClient {
    /// A runtime v2 shim.
    V2(ShimClient),
    /// A `containerd-shim` v1.
    V1(super::v1::V1Client),
}

impl TaskClient {
    /// Task API version: 2 or 3 for v2 shims, 1 for `containerd-shim`.
    pub fn version(&self) -> i32 {
        match self {
            TaskClient::V2(c) => c.version(),
            TaskClient::V1(_) => 1,
        }
    }

    /// Start the init process or an exec; returns its pid.
    pub async fn start(&self, exec_id: &str) -> Result<u32> {
        match self {
            TaskClient::V2(c) => c.start(exec_id).await,
            TaskClient::V1(c) => c.start(exec_id).await,
        }
    }

    /// State of the init process or an exec.
    pub async fn state(&self, exec_id: &str) -> Result<ProcessState> {
        match self {
            TaskClient::V2(c) => c.state(exec_id).await,
            TaskClient::V1(c) => c.state(exec_id).await,
        }
    }

    /// Delete the init process or an exec.
    pub async fn delete(&self, exec_id: &str) -> Result<Exit> {
        match self {
            TaskClient::V2(c) => c.delete(exec_id).await,
            TaskClient::V1(c) => c.delete(exec_id).await,
        }
    }

    /// Signal a process (or all with `all`).
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.kill(exec_id, signal, all).await,
            TaskClient::V1(c) => c.kill(exec_id, signal, all).await,
        }
    }

    /// Add an exec process.
    pub async fn exec(&self, exec_id: &str, io: &ProcessIo, spec: Option<&Any>) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.exec(exec_id, io, spec).await,
            TaskClient::V1(c) => c.exec(exec_id, io, spec).await,
        }
    }

    /// Resize a process's terminal.
    pub async fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.resize_pty(exec_id, width, height).await,
            TaskClient::V1(c) => c.resize_pty(exec_id, width, height).await,
        }
    }

    /// Close a process's stdin.
    pub async fn close_io(&self, exec_id: &str, stdin: bool) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.close_io(exec_id, stdin).await,
            TaskClient::V1(c) => c.close_io(exec_id, stdin).await,
        }
    }

    /// Freeze the container.
    pub async fn pause(&self) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.pause().await,
            TaskClient::V1(c) => c.pause().await,
        }
    }

    /// Thaw the container.
    pub async fn resume(&self) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.resume().await,
            TaskClient::V1(c) => c.resume().await,
        }
    }

    /// Processes in the container.
    pub async fn pids(&self) -> Result<Vec<PidInfo>> {
        match self {
            TaskClient::V2(c) => c.pids().await,
            TaskClient::V1(c) => c.pids().await,
        }
    }

    /// Checkpoint into `path`.
    pub async fn checkpoint(&self, path: &str, options: Option<&Any>) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.checkpoint(path, options).await,
            TaskClient::V1(c) => c.checkpoint(path, options).await,
        }
    }

    /// Update resources (v1 shims take no annotations).
    pub async fn update(
        &self,
        resources: Option<&Any>,
        annotations: &std::collections::HashMap<String, String>,
    ) -> Result<()> {
        match self {
            TaskClient::V2(c) => c.update(resources, annotations).await,
            TaskClient::V1(c) => c.update(resources).await,
        }
    }

    /// cgroup metrics: from the shim (v2), or read by berthd from the task's cgroup (v1, as
    /// containerd's v1 runtime does; see [`super::v1::V1Client::stats`]).
    pub async fn stats(&self) -> Result<Option<Any>> {
        match self {
            TaskClient::V2(c) => c.stats().await,
            TaskClient::V1(c) => c.stats().await.map(Some),
        }
    }

    /// Wait for a process to exit.
    pub async fn wait(&self, exec_id: &str) -> Result<Exit> {
        match self {
            TaskClient::V2(c) => c.wait(exec_id).await,
            TaskClient::V1(c) => c.wait(exec_id).await,
        }
    }

    /// (shim pid, task pid); the task pid is 0 for v1 shims.
    pub async fn connect_info(&self) -> Result<(u32, u32)> {
        match self {
            TaskClient::V2(c) => c.connect_info().await,
            TaskClient::V1(c) => Ok((c.shim_pid().await?, 0)),
        }
    }
}
