//! Snapshotters: the namespace-agnostic filesystem-layer backends (containerd's `snapshots/`).
//!
//! A snapshot is a directory tree identified by a caller-chosen *key*. This module holds:
//! - [`Snapshotter`], the trait every backend implements, with the lifecycle documented on it;
//! - [`Backend`], the closed set of backends (overlayfs, native) the daemon dispatches over;
//! - [`overlay`] and [`native`], the two backends, laid out on disk exactly as containerd's;
//! - [`storage`], the redb metadata store both backends share (containerd's `snapshots/storage`);
//! - [`mount`], the [`Mount`] type and the helper that applies a mount list to a target;
//! - [`fsutil`], disk usage, tree copy and xattr helpers shared by the backends and `diff`.
//!
//! Namespaces, GC references and events are added by the metadata layer above; nothing here
//! knows about them. Every method blocks on filesystem and database I/O: async callers run it
//! inside `tokio::task::spawn_blocking`. The server opens each backend on its plugin directory
//! (`<root>/io.containerd.snapshotter.v1.overlayfs` via [`OverlaySnapshotter::open`],
//! `<root>/io.containerd.snapshotter.v1.native` via [`NativeSnapshotter::open`]) and shares
//! the [`Backend`] in an `Arc`; [`Error::kind`] is what the API layer maps to a gRPC code.

pub mod fsutil;
pub mod mount;
pub mod native;
pub mod overlay;
pub mod storage;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use mount::Mount;
pub use native::NativeSnapshotter;
pub use overlay::{OverlayConfig, OverlaySnapshotter};

/// Labels attached to a snapshot (`containerd.io/gc.root`, `containerd.io/snapshot.ref`, …).
pub type Labels = HashMap<String, String>;

/// The three states a snapshot can be in (containerd's `snapshots.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Read-only snapshot created by `view`; cannot be committed.
    View,
    /// Read-write snapshot created by `prepare`; becomes `Committed` on `commit`.
    Active,
    /// Immutable snapshot, usable as a parent.
    Committed,
}

impl Kind {
    /// The lower-case name containerd uses in filters and `ctr snapshots ls` (`view`, `active`,
    /// `committed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `stat` returns about a snapshot (containerd's `snapshots.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (for active/view) or name (for committed) of the snapshot.
    pub name: String,
    /// The committed parent's name, empty when the snapshot has no parent.
    pub parent: String,
    pub kind: Kind,
    pub labels: Labels,
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// Disk resources held by one snapshot's own layer (not its parents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Number of distinct inodes.
    pub inodes: i64,
    /// Bytes allocated on disk (`st_blocks * 512` summed over distinct inodes).
    pub size: i64,
}

/// The error classes the API layer maps to gRPC codes (containerd's `errdefs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    /// Anything else: I/O and database failures (gRPC `Unknown`).
    Internal,
}

/// Everything that can go wrong in a snapshotter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {key:?} does not exist")]
    NotFound { key: String },
    #[error("parent snapshot {parent:?} does not exist")]
    ParentNotFound { parent: String },
    #[error("snapshot {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("parent {parent:?} is a {kind} snapshot: only committed snapshots can be parents")]
    ParentNotCommitted { parent: String, kind: Kind },
    #[error("snapshot {key:?} is {kind}, not active: only active snapshots can be committed")]
    NotActive { key: String, kind: Kind },
    #[error("snapshot {key:?} is committed: mounts exist only for active and view snapshots")]
    NotActiveOrView { key: String },
    #[error(
        "cannot remove snapshot {key:?}: it is the parent of {children:?}; remove those first"
    )]
    HasChildren { key: String, children: Vec<String> },
    #[error("cannot update field {field:?} of snapshot {key:?}: only \"labels\" and \"labels.<key>\" are mutable")]
    ImmutableField { key: String, field: String },
    #[error("invalid snapshot key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("snapshotter at {root} is closed")]
    Closed { root: PathBuf },
    #[error("overlayfs is not available: {reason} (load the `overlay` kernel module)")]
    OverlayUnsupported { reason: String },
    #[error("snapshot metadata database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("corrupt snapshot record for {key:?} in {path}: {source}")]
    Corrupt {
        key: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The class of this error, for the single place that converts to a gRPC status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } | Error::ParentNotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::NotActive { .. }
            | Error::NotActiveOrView { .. }
            | Error::HasChildren { .. }
            | Error::Closed { .. }
            | Error::OverlayUnsupported { .. } => ErrorKind::FailedPrecondition,
            Error::ParentNotCommitted { .. }
            | Error::ImmutableField { .. }
            | Error::InvalidKey { .. } => ErrorKind::InvalidArgument,
            Error::Db { .. } | Error::Corrupt { .. } | Error::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A snapshotter manages a set of snapshots (filesystem layers) addressed by string keys.
///
/// # Lifecycle
///
/// 1. **Prepare** an *active* snapshot from a committed parent (or from nothing):
///    `prepare(key, parent, labels)` returns the [`Mount`]s that, applied to a directory
///    (see [`mount::mount_all`]), show the parent's content read-write. Changes made through
///    the mount land in the snapshot's own layer only.
/// 2. The caller **mounts**, writes (e.g. unpacks a layer with `diff::apply`), and unmounts.
///    `mounts(key)` returns the same mount list again, e.g. after a restart.
/// 3. **Commit** the active snapshot under a new name: `commit(name, key, labels)`. The key
///    disappears, the name appears as a *committed* snapshot whose labels are exactly the ones
///    given to commit (not inherited), and which can now be the parent of further snapshots.
///    Its disk usage is computed once here and cached.
/// 4. **View** creates a read-only snapshot of a committed parent (for inspection); it can be
///    mounted but never committed.
/// 5. **Remove** drops any snapshot that is not the parent of another one (otherwise
///    `FailedPrecondition`). A removed key is immediately reusable; its directories are
///    deleted after the metadata commits, and anything left behind by a crash is reclaimed by
///    **cleanup**.
///
/// `stat`, `update` (labels only, via field paths `labels` / `labels.<k>`), `usage` and
/// `walk` inspect snapshots of every kind. `close` releases the metadata database; it is
/// idempotent, and every other call after it fails with [`Error::Closed`].
///
/// Implementations are safe to share between threads; all methods block.
pub trait Snapshotter: Send + Sync {
    /// Information about the snapshot `key` of any kind.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Update the mutable fields (labels) of `info.name`. With no `fieldpaths` all labels are
    /// replaced by `info.labels`; `labels` does the same, `labels.<k>` sets or (when absent
    /// from `info.labels`) deletes one label. Any other path is `InvalidArgument`. The updated
    /// timestamp is refreshed; name, kind, parent and created are never changed.
    fn update(&self, info: &Info, fieldpaths: &[String]) -> Result<Info>;

    /// Disk usage of the snapshot's own layer: cached for committed snapshots, computed by
    /// walking the layer for active ones (may be slow).
    fn usage(&self, key: &str) -> Result<Usage>;

    /// The mounts of an active or view snapshot.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Create an active snapshot `key` on top of committed `parent` ("" for none).
    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;

    /// Create a read-only view `key` of committed `parent` ("" for an empty view).
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;

    /// Turn active snapshot `key` into committed snapshot `name` with `labels`.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;

    /// Remove snapshot `key`; fails if another snapshot has it as parent.
    fn remove(&self, key: &str) -> Result<()>;

    /// Call `visit` for every snapshot (in no particular order). An error from `visit` stops
    /// the walk and is returned.
    fn walk(&self, visit: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()>;

    /// Delete directories that no snapshot references any more (crash leftovers).
    fn cleanup(&self) -> Result<()>;

    /// Release the metadata database. Idempotent.
    fn close(&self) -> Result<()>;

    /// All snapshots for which `filter` returns true. The metadata layer passes a predicate
    /// built from containerd's filter syntax (`kind==active,labels."x"==y`).
    fn list(&self, filter: &dyn Fn(&Info) -> bool) -> Result<Vec<Info>> {
        let mut out = Vec::new();
        self.walk(&mut |info| {
            if filter(info) {
                out.push(info.clone());
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The closed set of snapshotters berthd ships (dispatch by `match`, not `dyn`).
pub enum Backend {
    Overlay(OverlaySnapshotter),
    Native(NativeSnapshotter),
}

impl Backend {
    /// containerd's plugin name: `overlayfs` or `native`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Overlay(_) => "overlayfs",
            Backend::Native(_) => "native",
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Backend::Overlay($s) => $e,
            Backend::Native($s) => $e,
        }
    };
}

impl Snapshotter for Backend {
    fn stat(&self, key: &str) -> Result<Info> {
        dispatch!(self, s => s.stat(key))
    }
    fn update(&self, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        dispatch!(self, s => s.update(info, fieldpaths))
    }
    fn usage(&self, key: &str) -> Result<Usage> {
        dispatch!(self, s => s.usage(key))
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        dispatch!(self, s => s.mounts(key))
    }
    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        dispatch!(self, s => s.prepare(key, parent, labels))
    }
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        dispatch!(self, s => s.view(key, parent, labels))
    }
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        dispatch!(self, s => s.commit(name, key, labels))
    }
    fn remove(&self, key: &str) -> Result<()> {
        dispatch!(self, s => s.remove(key))
    }
    fn walk(&self, visit: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        dispatch!(self, s => s.walk(visit))
    }
    fn cleanup(&self) -> Result<()> {
        dispatch!(self, s => s.cleanup())
    }
    fn close(&self) -> Result<()> {
        dispatch!(self, s => s.close())
    }
}
