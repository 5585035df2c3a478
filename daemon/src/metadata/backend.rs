//! The snapshotters the metadata layer maps namespaced keys onto: the built-in backends
//! (`snapshots::Backend`: overlayfs, native) or an out-of-process one configured under
//! `[proxy_plugins]` (type `snapshot`), which speaks containerd's Snapshots gRPC API
//! ([`super::proxy`]). One closed enum, dispatched by `match`.

use super::proxy::ProxySnapshotter;
use super::{Labels, Result};
use crate::snapshots::{self as sn, Mount, Snapshotter as _, Usage};
use std::sync::Arc;

/// A snapshotter backend.
#[derive(Clone)]
pub enum SnapBackend {
    /// overlayfs or native, in process.
    Builtin(Arc<sn::Backend>),
    /// A proxy plugin.
    Proxy(Arc<ProxySnapshotter>),
}

impl std::fmt::Debug for SnapBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapBackend::Builtin(b) => write!(f, "Builtin({})", b.name()),
            SnapBackend::Proxy(p) => write!(f, "Proxy({p:?})"),
        }
    }
}

impl SnapBackend {
    /// Active snapshot on `parent`.
    pub fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.prepare(key, parent, labels)?),
            SnapBackend::Proxy(p) => p.prepare(key, parent, labels, false),
        }
    }

    /// Read-only view of `parent`.
    pub fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.view(key, parent, labels)?),
            SnapBackend::Proxy(p) => p.prepare(key, parent, labels, true),
        }
    }

    /// Commit active `key` as `name`.
    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.commit(name, key, labels)?),
            SnapBackend::Proxy(p) => p.commit(name, key, labels),
        }
    }

    /// Remove `key`.
    pub fn remove(&self, key: &str) -> Result<()> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.remove(key)?),
            SnapBackend::Proxy(p) => p.remove(key),
        }
    }

    /// Mounts of `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.mounts(key)?),
            SnapBackend::Proxy(p) => p.mounts(key),
        }
    }

    /// Disk usage of `key`.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.usage(key)?),
            SnapBackend::Proxy(p) => p.usage(key),
        }
    }

    /// Every snapshot as (name, parent).
    pub fn list(&self) -> Result<Vec<(String, String)>> {
        match self {
            SnapBackend::Builtin(b) => {
                let mut out = Vec::new();
                b.walk(&mut |i| {
                    out.push((i.name.clone(), i.parent.clone()));
                    Ok(())
                })?;
                Ok(out)
            }
            SnapBackend::Proxy(p) => p.list(),
        }
    }

    /// Reclaim leftovers.
    pub fn cleanup(&self) -> Result<()> {
        match self {
            SnapBackend::Builtin(b) => Ok(b.cleanup()?),
            SnapBackend::Proxy(p) => p.cleanup(),
        }
    }
}

impl From<Arc<sn::Backend>> for SnapBackend {
    fn from(b: Arc<sn::Backend>) -> Self {
        SnapBackend::Builtin(b)
    }
}
