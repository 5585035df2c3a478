//! containerd-shim-runc-v2, as a library so integration tests and benchmarks can reach its parts.
//!
//! A drop-in replacement for containerd's Go runc shim: same binary name, command-line protocol,
//! ttrpc services (task API v2 *and* v3 on one socket), bundle files and events.
//!
//! What lives where:
//! - `main.rs` → [`args`] (Go-style flags) → one of: [`manager`] (`start`, `delete`, `-info`,
//!   `-v`: short-lived), or [`daemon`] (the long-running shim).
//! - [`daemon`]: one current-thread tokio runtime; wires [`reaper`], [`publisher`],
//!   [`service`] and the ttrpc server together; shutdown on the Shutdown RPC or SIGTERM.
//! - [`service`]: the `Task` API over the model in [`task`]; runtime calls through [`runtime`]
//!   (runc-wrapper with the reaper as spawner); stdio through [`io`]; rootfs via [`mount`];
//!   runc options in [`options`]; stats in [`metrics`]; errors → ttrpc codes in [`error`].
//! - [`reaper`]: subreaper + the single `waitpid(-1)` loop, exits routed by pid.
//! - [`publisher`]: the non-blocking, in-order event queue to containerd.
//! - [`logger`]: slog to the bundle's `log` fifo, with a `log` crate bridge.
//! - `io`: container stdio (fifos, `file://`, `binary://`, null, pty/console socket).
//! - `cgroup`: cgroup v1/v2 detection, OOM events, metrics.

pub mod args;
pub mod cgroup;
pub mod daemon;
pub mod error;
pub mod io;
pub mod logger;
pub mod manager;
pub mod metrics;
pub mod mount;
pub mod options;
pub mod publisher;
pub mod reaper;
pub mod runtime;
pub mod service;
pub mod task;
