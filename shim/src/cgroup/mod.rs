//! cgroups v1 and v2: detection, OOM events, metrics, moving pids.
//!
//! Why it exists: the shim reports a container's resource usage (`Stats` →
//! `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`, packed in an
//! `Any` exactly as containerd's `typeurl.MarshalAny` does), turns OOM kills into `TaskOOM`
//! events, and joins the `ShimCgroup` runc option. containerd's Go shim does this with
//! containerd/cgroups (`runtime/v2/runc/task/service.go` `Stats`, `pkg/oom/v1`, `pkg/oom/v2`,
//! `runtime/v2/runc/manager` `ShimCgroup`); this module reads the same files directly.
//!
//! What lives here:
//! - [`mode`]: legacy / hybrid / unified, from `statfs` of `/sys/fs/cgroup` (containerd's
//!   `cgroups.Mode()`; hybrid is treated as v1, as containerd does).
//! - [`Cgroup`]: a process's cgroup(s) found from `/proc/<pid>/cgroup` + mountinfo
//!   ([`paths`]), with [`Cgroup::stats`] and [`Cgroup::add_pid`]; [`v1`] and [`v2`] hold the
//!   file formats, over the shared stat-file readers in `stat`.
//! - [`OomMonitor`]: eventfd (v1) / inotify (v2) watches in the tokio reactor, no threads.
//! - [`join_cgroup`]: the `ShimCgroup` option (a path relative to the hierarchy roots).
//!
//! How the core uses it:
//! ```ignore
//! let cg = Cgroup::for_pid(init_pid)?;                 // after runc create/start
//! oom_monitor.add(&container_id, &cg)?;                // TaskOOM source (see OomMonitor)
//! let any = cg.stats()?.to_any()?;                     // StatsResponse.stats
//! cgroup::join_cgroup(&opts.shim_cgroup, shim_pid)?;   // in `start`, ShimCgroup option
//! ```

mod oom;
pub mod paths;
mod stat;
pub mod v1;
pub mod v2;

use std::io;
use std::path::{Path, PathBuf};

use protobuf::well_known_types::any::Any;
use protobuf::Message;

pub use oom::OomMonitor;
pub use v1::CgroupV1;
pub use v2::CgroupV2;

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `Any.type_url` of v1 metrics (containerd registers the gogo message name, no prefix).
pub const METRICS_V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// `Any.type_url` of v2 metrics.
pub const METRICS_V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Errors of the cgroup module; each names the file, directory or pid concerned.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cgroups are not available: statfs {path}: {source}")]
    Unavailable { path: PathBuf, source: io::Error },
    #[error("no cgroup of pid {pid} found in any mounted hierarchy (mode {mode:?})")]
    NotFound { pid: i32, mode: CgroupMode },
    #[error("cgroup {path:?} does not exist under any hierarchy in {root}")]
    NoSuchCgroup { path: String, root: PathBuf },
    #[error("cgroup has no memory controller (looked at {path}); OOM events need it")]
    NoMemoryController { path: PathBuf },
    #[error("register OOM notification on {path}: {source}")]
    OomRegister { path: PathBuf, source: io::Error },
    #[error("encode metrics: {0}")]
    Encode(#[from] protobuf::Error),
}

/// How cgroups are mounted on this host (containerd/cgroups `CGMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 hierarchies plus cgroup2 at `/sys/fs/cgroup/unified` (used as v1).
    Hybrid,
    /// cgroup2 at `/sys/fs/cgroup`.
    Unified,
}

/// Detects the host's cgroup mode from `statfs(/sys/fs/cgroup)`.
pub fn mode() -> Result<CgroupMode, CgroupError> {
    mode_at(Path::new(CGROUP_ROOT))
}

/// [`mode`] for a different mount root.
pub fn mode_at(root: &Path) -> Result<CgroupMode, CgroupError> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    let st = statfs(root).map_err(|e| CgroupError::Unavailable {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    if st.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Ok(CgroupMode::Unified);
    }
    match statfs(&root.join("unified")) {
        Ok(u) if u.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(CgroupMode::Hybrid),
        _ => Ok(CgroupMode::Legacy),
    }
}

/// A container's cgroup: v1 (per-controller directories) or v2 (one directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroup {
    V1(CgroupV1),
    V2(CgroupV2),
}

impl Cgroup {
    /// The cgroup of `pid` (the container's init), v2 in unified mode and v1 otherwise —
    /// containerd's `cgroups.Load(V1, PidPath(pid))` / `cgroupsv2.PidGroupPath(pid)`.
    pub fn for_pid(pid: i32) -> Result<Cgroup, CgroupError> {
        let mode = mode()?;
        let proc_cgroup = read_required(&PathBuf::from(format!("/proc/{pid}/cgroup")))?;
        let mountinfo = read_required(Path::new("/proc/self/mountinfo"))?;
        Self::from_proc(pid, mode, &proc_cgroup, &mountinfo)
    }

    /// [`Cgroup::for_pid`] from the texts of `/proc/<pid>/cgroup` and mountinfo.
    pub fn from_proc(
        pid: i32,
        mode: CgroupMode,
        proc_cgroup: &str,
        mountinfo: &str,
    ) -> Result<Cgroup, CgroupError> {
        let pc = paths::parse_proc_cgroup(proc_cgroup).ok_or_else(|| CgroupError::Parse {
            path: PathBuf::from(format!("/proc/{pid}/cgroup")),
            reason: "expected ID:CONTROLLERS:PATH lines".into(),
        })?;
        let mounts = paths::parse_mountinfo(mountinfo);
        match mode {
            CgroupMode::Unified => paths::v2_path(&pc, &mounts)
                .map(|p| Cgroup::V2(CgroupV2::from_path(p)))
                .ok_or(CgroupError::NotFound { pid, mode }),
            CgroupMode::Legacy | CgroupMode::Hybrid => {
                let p = paths::v1_paths(&pc, &mounts);
                if p.is_empty() {
                    return Err(CgroupError::NotFound { pid, mode });
                }
                Ok(Cgroup::V1(CgroupV1::from_paths(p)))
            }
        }
    }

    /// Current metrics.
    pub fn stats(&self) -> Result<Metrics, CgroupError> {
        match self {
            Cgroup::V1(c) => c.stats().map(Metrics::V1),
            Cgroup::V2(c) => c.stats().map(Metrics::V2),
        }
    }

    /// Moves `pid` into this cgroup (every v1 controller directory, or the v2 directory).
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        match self {
            Cgroup::V1(c) => c.add_pid(pid),
            Cgroup::V2(c) => c.add_pid(pid),
        }
    }
}

/// Metrics of either version.
#[derive(Clone, Debug, PartialEq)]
pub enum Metrics {
    V1(containerd_shim_protos::cgroups::metrics::Metrics),
    V2(containerd_shim_protos::cgroups_v2::metrics::Metrics),
}

impl Metrics {
    /// The `Any.type_url` containerd uses for this message.
    pub fn type_url(&self) -> &'static str {
        match self {
            Metrics::V1(_) => METRICS_V1_TYPE_URL,
            Metrics::V2(_) => METRICS_V2_TYPE_URL,
        }
    }

    /// Packs the metrics as `StatsResponse.stats` (what `ctr t metrics` decodes).
    pub fn to_any(&self) -> Result<Any, CgroupError> {
        let value = match self {
            Metrics::V1(m) => m.write_to_bytes()?,
            Metrics::V2(m) => m.write_to_bytes()?,
        };
        let mut any = Any::new();
        any.type_url = self.type_url().to_string();
        any.value = value;
        Ok(any)
    }
}

/// The `ShimCgroup` option: moves `pid` into cgroup `path` (relative to each hierarchy root,
/// leading `/` optional). v1: every mounted hierarchy where that cgroup exists (containerd's
/// `cgroups.StaticPath`); unified: `/sys/fs/cgroup/<path>`.
pub fn join_cgroup(path: &str, pid: i32) -> Result<(), CgroupError> {
    let mode = mode()?;
    let mountinfo = read_required(Path::new("/proc/self/mountinfo"))?;
    join_cgroup_in(mode, &mountinfo, path, pid)
}

/// [`join_cgroup`] for an explicit mode and mountinfo text.
pub fn join_cgroup_in(
    mode: CgroupMode,
    mountinfo: &str,
    path: &str,
    pid: i32,
) -> Result<(), CgroupError> {
    let rel = path.trim_start_matches('/');
    let mounts = paths::parse_mountinfo(mountinfo);
    let dirs: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.v2 == (mode == CgroupMode::Unified))
        .map(|m| m.mountpoint.join(rel))
        .filter(|d| d.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(CgroupError::NoSuchCgroup {
            path: path.to_string(),
            root: PathBuf::from(CGROUP_ROOT),
        });
    }
    write_procs(dirs.iter().map(PathBuf::as_path), pid)
}

/// Writes `pid` to `cgroup.procs` in each directory.
fn write_procs<'a>(dirs: impl Iterator<Item = &'a Path>, pid: i32) -> Result<(), CgroupError> {
    for dir in dirs {
        let p = dir.join("cgroup.procs");
        std::fs::write(&p, pid.to_string())
            .map_err(|source| CgroupError::Write { path: p, source })?;
    }
    Ok(())
}

/// Reads a file; `None` if it (or the cgroup) does not exist. `ENODEV` is what reads of a
/// cgroup being removed return.
fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENODEV)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_required(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
