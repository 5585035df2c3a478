//! containerd-shim-runc-v2, as a library so integration tests and benchmarks can reach its parts.
//!
//! Module ownership while the crate is being built (see ARCHITECTURE.md):
//! - `io`: container stdio (fifos, `file://`, `binary://`, null, pty/console socket).
//! - `cgroup`: cgroup v1/v2 detection, OOM watching, stats (`io.containerd.cgroups.v1/v2.Metrics`).

pub mod cgroup;
pub mod io;
