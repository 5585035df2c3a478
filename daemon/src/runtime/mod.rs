//! Runtime v2: tasks run in per-container shim processes that berthd starts, talks to over
//! ttrpc, and reconnects to after a restart (containerd `runtime/v2`).
//!
//! - [`bundle`]: the OCI bundle in `<state>/io.containerd.runtime.v2.task/<ns>/<id>` with its
//!   `work` link into `<root>`; created before the shim starts, removed (rootfs unmounted) on
//!   delete.
//! - [`checkpoint`]: task checkpoints as content (the CRIU image directory as a tar plus the
//!   spec) and their unpacking into a private scratch directory for a restore.
//! - [`binary`]: runtime name → shim binary resolution, the `start`/`delete` invocations with
//!   containerd's flags and environment, and parsing of the shim's start reply (1.x address
//!   text, 2.x JSON or protobuf bootstrap).
//! - [`shim`]: a thin ttrpc client speaking task API v2 or v3 (same messages, different
//!   service name), every call bounded by a timeout.
//! - [`manager`]: the task list, create/delete/load (live restore, in parallel), dead-shim
//!   clean-up with exactly one exit event, and the shim log fifo.
//! - [`v1`]: the legacy `io.containerd.runtime.v1.linux` runtime over Debian's
//!   `containerd-shim` (berthd starts it, publishes most of its events).
//! - [`config`]: per-runtime configuration (`runtime_type`, `runtime_path`, `options`) and the
//!   legacy `[plugins.linux]` keys.
//!
//! The core never sees a tonic type: `api/tasks.rs` converts requests into the plain types
//! below. Events leave through the [`EventSink`] trait, which `server.rs` wires to the events
//! exchange.

pub mod binary;
pub mod bundle;
pub mod checkpoint;
pub mod config;
pub mod manager;
pub mod shim;
#[cfg(test)]
mod tests;
pub mod v1;

use std::path::PathBuf;
use std::time::Duration;

pub use config::{LinuxV1Config, RuntimeConfig};
pub use manager::{ManagerConfig, ShimTask, TaskManager};

use crate::errdefs::{HasKind, Kind};

/// Everything that can go wrong while running tasks through shims.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime name is neither `io.containerd.<name>.<version>` nor an absolute path.
    #[error("invalid runtime name {runtime:?}: use a name like `io.containerd.runc.v2` or an absolute path to a shim binary")]
    InvalidRuntimeName {
        /// The name as given.
        runtime: String,
    },
    /// The shim binary for a runtime is not installed.
    #[error(
        "runtime {runtime:?} binary not installed {binary:?}: not found on PATH nor next to berthd"
    )]
    ShimNotInstalled {
        /// The runtime name.
        runtime: String,
        /// The binary name looked for.
        binary: String,
    },
    /// A runtime given as an absolute path does not exist.
    #[error("invalid custom binary path {path}: {source}")]
    InvalidShimPath {
        /// The path as given.
        path: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
    /// A runtime this daemon does not implement.
    #[error("{what}")]
    Unimplemented {
        /// What is missing and how to get it.
        what: String,
    },
    /// A filesystem operation on a bundle or state directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `<shim> start` failed; `output` is what the shim printed.
    #[error("start shim {binary} for {id}: {status}: {output}")]
    ShimStart {
        /// Task id.
        id: String,
        /// Shim binary.
        binary: PathBuf,
        /// Exit status or spawn error.
        status: String,
        /// Combined stdout/stderr of the shim.
        output: String,
    },
    /// The shim's start reply could not be understood.
    #[error("shim {binary} for {id} replied with an unusable address: {reason}")]
    BadStartReply {
        /// Task id.
        id: String,
        /// Shim binary.
        binary: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `<shim> delete` failed.
    #[error("shim delete for {id} ({binary}): {reason}")]
    ShimDelete {
        /// Task id.
        id: String,
        /// Shim binary.
        binary: PathBuf,
        /// Exit status and stderr.
        reason: String,
    },
    /// Could not connect to the shim's socket.
    #[error("connect to shim of {id} at {address}: {reason}")]
    Connect {
        /// Task id.
        id: String,
        /// The ttrpc address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The shim answered with an error status (its code is kept).
    #[error("{message}")]
    Shim {
        /// Task id.
        id: String,
        /// The gRPC code the shim returned.
        code: i32,
        /// The shim's message.
        message: String,
    },
    /// A shim call did not answer in time: the shim or the OCI runtime hangs.
    #[error("shim of {id} did not answer {method} within {timeout:?}: shim or OCI runtime hung")]
    Timeout {
        /// Task id.
        id: String,
        /// The ttrpc method.
        method: &'static str,
        /// The bound that expired.
        timeout: Duration,
    },
    /// The shim's connection closed (the shim died).
    #[error("shim of {id} disconnected during {method}: {reason}")]
    ShimGone {
        /// Task id.
        id: String,
        /// The ttrpc method.
        method: &'static str,
        /// Transport detail.
        reason: String,
    },
    /// No such task or process.
    #[error("{what}: not found")]
    NotFound {
        /// What was looked up, e.g. `task c1`.
        what: String,
    },
    /// The task already exists.
    #[error("{what}: already exists")]
    AlreadyExists {
        /// What, e.g. `task c1`.
        what: String,
    },
    /// Bad input.
    #[error("{what}")]
    InvalidArgument {
        /// What is wrong and how to fix it.
        what: String,
    },
    /// A protobuf message from or to the shim could not be (de)coded.
    #[error("{context}: {reason}")]
    Codec {
        /// Which message.
        context: String,
        /// Why.
        reason: String,
    },
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::InvalidRuntimeName { .. } | Error::InvalidArgument { .. } => {
                Kind::InvalidArgument
            }
            Error::ShimNotInstalled { .. }
            | Error::InvalidShimPath { .. }
            | Error::NotFound { .. } => Kind::NotFound,
            Error::Unimplemented { .. } => Kind::NotImplemented,
            Error::AlreadyExists { .. } => Kind::AlreadyExists,
            Error::Shim { code, .. } => kind_of_code(*code),
            Error::ShimGone { .. } => Kind::NotFound,
            Error::Timeout { .. } => Kind::Unavailable,
            _ => Kind::Unknown,
        }
    }
}

impl Error {
    /// The gRPC code a shim returned, if this error came from the shim (containerd passes
    /// the shim's code through: `errdefs.FromGRPC` then `ToGRPC`).
    pub fn shim_code(&self) -> Option<i32> {
        match self {
            Error::Shim { code, .. } => Some(*code),
            Error::Timeout { .. } => Some(4), // DeadlineExceeded
            _ => None,
        }
    }

    fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// gRPC code → errdefs kind (containerd `errdefs.FromGRPC`).
fn kind_of_code(code: i32) -> Kind {
    match code {
        3 => Kind::InvalidArgument,
        5 => Kind::NotFound,
        6 => Kind::AlreadyExists,
        9 => Kind::FailedPrecondition,
        11 => Kind::OutOfRange,
        12 => Kind::NotImplemented,
        14 => Kind::Unavailable,
        _ => Kind::Unknown,
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A mount as containerd's `types.Mount` (rootfs mounts the snapshotter computed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// Filesystem type (`overlay`, `bind`, …).
    pub kind: String,
    /// Source device or directory.
    pub source: String,
    /// Target inside the rootfs (usually empty for the rootfs itself).
    pub target: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// A typed protobuf value, as `google.protobuf.Any` (spec, runtime options, event payloads).
pub type Any = prost_types::Any;

/// Standard I/O of a process: fifo paths or URIs (`binary://`, `file://`) the shim opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessIo {
    /// stdin path, empty for none.
    pub stdin: String,
    /// stdout path.
    pub stdout: String,
    /// stderr path.
    pub stderr: String,
    /// Allocate a terminal.
    pub terminal: bool,
}

/// What `Tasks.Create` needs, after the API layer looked up the container.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Container (and task) id.
    pub id: String,
    /// The OCI runtime spec as stored with the container (JSON bytes in `value`).
    pub spec: Any,
    /// Runtime name from the container record.
    pub runtime: String,
    /// `runtime_path` from the request: a shim binary overriding the name.
    pub runtime_path: String,
    /// Runtime options from the container record.
    pub runtime_options: Option<Any>,
    /// Task options from the request (win over runtime options).
    pub task_options: Option<Any>,
    /// Rootfs mounts from the snapshotter.
    pub rootfs: Vec<Mount>,
    /// Standard I/O.
    pub io: ProcessIo,
    /// Checkpoint directory to restore from, empty for none.
    pub checkpoint: String,
}

/// How a process ended (containerd `runtime.Exit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    /// Pid of the process.
    pub pid: u32,
    /// Exit status (128+signal for signals, 255 when unknown).
    pub status: u32,
    /// When it exited.
    pub timestamp: Option<prost_types::Timestamp>,
}

/// Process status as `containerd.v1.types.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Unknown.
    #[default]
    Unknown,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Stopped,
    /// Paused.
    Paused,
    /// Being paused.
    Pausing,
}

impl Status {
    /// The `containerd.v1.types.Status` enum value.
    pub fn as_proto(self) -> i32 {
        match self {
            Status::Unknown => 0,
            Status::Created => 1,
            Status::Running => 2,
            Status::Stopped => 3,
            Status::Paused => 4,
            Status::Pausing => 5,
        }
    }
}

/// State of a task or exec process (shim `State`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessState {
    /// Process id: the container id for the init process, else the exec id.
    pub id: String,
    /// Pid.
    pub pid: u32,
    /// Status.
    pub status: Status,
    /// I/O as given at create.
    pub io: ProcessIo,
    /// Exit status when stopped.
    pub exit_status: u32,
    /// Exit time when stopped.
    pub exited_at: Option<prost_types::Timestamp>,
}

/// One process of a task (`ListPids`).
#[derive(Debug, Clone, PartialEq)]
pub struct PidInfo {
    /// Pid.
    pub pid: u32,
    /// Runtime-specific details (runc: `containerd.runc.v1.ProcessDetails` with the exec id).
    pub info: Option<Any>,
}

/// Where task events go: the daemon's events exchange (wired in `server.rs`).
pub trait EventSink: Send + Sync + 'static {
    /// Publish `event` (its `type_url` is the event type, e.g. `containerd.events.TaskExit`)
    /// on `topic` in `namespace`.
    fn publish(&self, namespace: &str, topic: &str, event: Any);
}

/// The daemon's events exchange is the production sink.
impl EventSink for crate::events::Exchange {
    fn publish(&self, namespace: &str, topic: &str, event: Any) {
        if let Err(e) = self.publish_any(namespace, topic, event) {
            log::warn!("publish {topic} in {namespace}: {e}");
        }
    }
}

/// An [`EventSink`] that drops everything, for tests of the shim manager alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _namespace: &str, _topic: &str, _event: Any) {}
}

/// Encode a prost event into the `Any` envelope containerd uses (`typeurl.MarshalAny`:
/// the type URL of `containerd.events.*` is the bare message name).
pub fn event_any<M: prost::Message>(type_name: &str, msg: &M) -> Any {
    Any {
        type_url: type_name.to_string(),
        value: msg.encode_to_vec(),
    }
}
