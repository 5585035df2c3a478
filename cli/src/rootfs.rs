//! Temporary read-only mounts of a container's rootfs snapshot, for the client-side
//! lookups containerd's spec options do (`mount.WithReadonlyTempMount`): user and group
//! names in `/etc/passwd` and `/etc/group`.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("temporary mount directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("mount {kind} {source_path} on {target}: {errno}")]
    Mount {
        kind: String,
        source_path: String,
        target: String,
        errno: nix::Error,
    },
    #[error("cannot mount a rootfs made of {0} mounts; only one is supported")]
    Stacked(usize),
}

/// Mounts `mounts` read-only on a temporary directory, calls `f` with it, unmounts.
pub fn with_readonly_mount<T>(
    mounts: &[protos::types::Mount],
    f: impl FnOnce(&Path) -> T,
) -> Result<T, Error> {
    let [m] = mounts else {
        return Err(Error::Stacked(mounts.len()));
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-rootfs-")
        .tempdir()
        .map_err(Error::TempDir)?;
    let target = dir.path();
    let mut flags = MsFlags::MS_RDONLY;
    let mut data: Vec<String> = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" | "rw" => {}
            other => data.push(other.to_string()),
        }
    }
    let kind = if m.r#type == "bind" {
        None
    } else {
        Some(m.r#type.as_str())
    };
    let data = data.join(",");
    mount(
        Some(m.source.as_str()),
        target,
        kind,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|errno| Error::Mount {
        kind: m.r#type.clone(),
        source_path: m.source.clone(),
        target: target.display().to_string(),
        errno,
    })?;
    let result = f(target);
    let _ = umount2(target, MntFlags::MNT_DETACH);
    Ok(result)
}
