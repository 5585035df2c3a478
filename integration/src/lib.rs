//! End-to-end test harness for berth: every test that drives real binaries uses it.
//!
//! - [`subreaper`]: make the test process a child subreaper and reap orphans (shims) safely.
//! - [`image`]: deterministic busybox test images (OCI layout, import tar, docker-archive) and
//!   a multi-layer image with whiteouts, hardlinks and symlinks for unpack tests.
//! - [`containerd`]: a private containerd (Debian's 1.6.20, or v2.3.4 from
//!   `BERTH_CONTAINERD2_DIR`) on temporary root/state/socket with a chosen shim first in PATH.
//! - [`registry`]: Debian's `docker-registry` on a free port (HTTP, TLS with a test CA, basic
//!   auth) and push/pull helpers through skopeo.
//! - [`daemon`]: `TestDaemon`, berthd on a temporary root/state/socket.
//! - `instance` (private): the core both daemons share — temp directories, the daemon
//!   process, `kill -9`/restart, leftover checks and cleanup; `shim_sockets` (private) remembers
//!   the sockets their shims create so cleanup removes those of SIGKILLed shims too.
//! - [`events`]: `ctr events` captured in the background, from any daemon's `ctr`.
//! - [`bins`]: locating our binaries (berthd, our shim) and required system binaries.
//! - [`procs`]: `/proc` and mount helpers used by cleanup.
//! - [`tasks`]: `ctr tasks ls` parsing, waiting for a task status, finding a task's shim.
//!
//! Every helper that starts something stops it and removes its files on `Drop`, which also
//! runs when a test panics; cleanup is idempotent so a killed test run leaves nothing that
//! breaks the next run.

pub mod bench;
pub mod bins;
pub mod containerd;
pub mod daemon;
pub mod events;
pub mod image;
mod instance;
pub mod procs;
pub mod registry;
mod shim_sockets;
pub mod subreaper;
pub mod tasks;

pub use bins::require_bin;
