//! One module per top-level command, mirroring `cmd/ctr/commands/*` in containerd.

pub mod containers;
pub mod content;
pub mod events;
pub mod images;
pub mod leases;
pub mod metrics;
pub mod namespaces;
pub mod oci;
pub mod plugins;
pub mod run;
pub mod snapshots;
pub mod tasks;
pub mod version;
