//! berthd as a library: every subsystem is a module, `server` wires them together explicitly.
//!
//! Layering (arrows point down only): `server` → `api` (thin tonic adapters) → `runtime`,
//! `images` → `metadata`, `diff` → `snapshots`, `content`, with `events`, `config`,
//! `filters` and `errdefs` beside.
//!
//! - `config`: config.toml (containerd's keys), defaults, imports, unknown-key warnings.
//! - `content`: namespace-agnostic blob store; `snapshots`: namespace-agnostic layer stores.
//! - `metadata`: redb database adding namespaces, labels, leases, GC on top of both (and
//!   `[proxy_plugins]` snapshotters reached over gRPC).
//! - `images`: image create/update/delete with events and GC; bounded manifest/config reads.
//! - `filters`: containerd's filter language, shared by every List and by event subscribers.
//! - `errdefs`: error kinds every module error maps to.
//! - `events`: the in-process exchange every service publishes to and `Subscribe` reads.
//! - `remotes`: the registry client (resolve, fetch, push; hosts, TLS, auth), shared with
//!   the `berth` CLI.
//! - `transfer`: containerd 2's Transfer service operations (pull, push, import, export,
//!   tag) and the Streaming side channels they use.
//! - `restart`: the restart monitor (`io.containerd.internal.v1 restart`) keeping labelled
//!   containers' tasks running or stopped, over `metadata` and `runtime`.
//! - `metrics`: Prometheus `/v1/metrics` on `[metrics] address`, gRPC request counters.
//! - `monitor`: the cgroups task monitor: per-task cgroup metrics (containerd's `container_*`)
//!   and the OOM watch of runtime v1 tasks.
//! - `api`: one module per containerd gRPC service, plus `to_status` (the only errdefs map).
//! - `server`: builds everything from the config, binds the sockets, shuts down on signals.

pub mod api;
pub mod config;
pub mod content;
pub mod diff;
pub mod errdefs;
pub mod events;
pub mod filters;
pub mod images;
pub mod metadata;
pub mod metrics;
pub mod monitor;
pub mod remotes;
pub mod restart;
pub mod runtime;
pub mod server;
pub mod snapshots;
pub mod transfer;
