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
    #[error("unmount {target}: {errno}")]
    Unmount { target: String, errno: nix::Error },
    #[error("cannot mount a rootfs made of {0} mounts; only one is supported")]
    Stacked(usize),
}

/// Mounts `mounts` read-only on a temporary directory, calls `f` with it, unmounts.
pub fn with_readonly_mount<T>(
    mounts: &[protos::types::Mount],
    f: impl FnOnce(&Path) -> T,
) -> Result<T, Error> {
    let dir = tempfile::Builder::new()
        .prefix("berth-rootfs-")
        .tempdir()
        .map_err(Error::TempDir)?;
    let mounts: Vec<protos::types::Mount> = mounts.iter().map(readonly_mount).collect();
    mount_all(&mounts, dir.path(), true)?;
    let result = f(dir.path());
    unmount(dir.path());
    Ok(result)
}

/// containerd's `readonlyMounts` (`mount/temp.go`): an overlay is mounted without its
/// upper and work directories, the upper one becoming the topmost lower directory. The view
/// is the same, but the kernel then neither sets up nor checks the work directory (a
/// directory created, feature probes with temporary files and xattrs: ≈ 5–10 ms on a busy
/// disk) and nothing can be written through the mount. `volatile` (a snapshotter
/// `mount_options` choice) only means something with an upper directory and goes too
/// (containerd's `RemoveVolatileOption`).
fn readonly_mount(m: &protos::types::Mount) -> protos::types::Mount {
    if m.r#type != "overlay" {
        return m.clone();
    }
    let upper = m
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .map(str::to_string);
    let options = m
        .options
        .iter()
        .filter(|o| {
            !o.starts_with("upperdir=") && !o.starts_with("workdir=") && o.as_str() != "volatile"
        })
        .map(|o| match (&upper, o.strip_prefix("lowerdir=")) {
            (Some(upper), Some(lower)) => format!("lowerdir={upper}:{lower}"),
            _ => o.clone(),
        })
        .collect();
    protos::types::Mount {
        options,
        ..m.clone()
    }
}

/// containerd `mount.All` for the single mount a snapshotter returns (overlay or bind).
pub fn mount_all(
    mounts: &[protos::types::Mount],
    target: &Path,
    readonly: bool,
) -> Result<(), Error> {
    let [m] = mounts else {
        return Err(Error::Stacked(mounts.len()));
    };
    let mut flags = if readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let mut data: Vec<String> = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            other => data.push(other.to_string()),
        }
    }
    let kind = if m.r#type == "bind" {
        None
    } else {
        Some(m.r#type.as_str())
    };
    let data = data.join(",");
    let err = |errno| Error::Mount {
        kind: m.r#type.clone(),
        source_path: m.source.clone(),
        target: target.display().to_string(),
        errno,
    };
    mount(
        Some(m.source.as_str()),
        target,
        kind,
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(err)?;
    // The kernel ignores MS_RDONLY on the bind call itself: make it read-only with a
    // remount, as containerd's mount.All does.
    if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        if let Err(errno) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
            unmount(target);
            return Err(err(errno));
        }
    }
    Ok(())
}

/// Lazily unmounts `target` (errors ignored: nothing mounted is fine).
pub fn unmount(target: &Path) {
    let _ = umount2(target, MntFlags::MNT_DETACH);
}

/// containerd `mount.UnmountAll`: unmounts every mount stacked on `target`.
pub fn unmount_all(target: &Path) -> Result<(), Error> {
    loop {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::Error::EINVAL | nix::Error::ENOENT) => return Ok(()),
            Err(errno) => {
                return Err(Error::Unmount {
                    target: target.display().to_string(),
                    errno,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(options: &[&str]) -> protos::types::Mount {
        protos::types::Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: options.iter().map(|o| (*o).to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn readonly_overlay_moves_upper_onto_the_lower_stack() {
        let m = readonly_mount(&overlay(&[
            "volatile",
            "index=off",
            "workdir=/s/2/work",
            "upperdir=/s/2/fs",
            "lowerdir=/s/1/fs:/s/0/fs",
        ]));
        assert_eq!(m.options, ["index=off", "lowerdir=/s/2/fs:/s/1/fs:/s/0/fs"]);
        // A view (no upper) and a bind mount are unchanged.
        let view = overlay(&["lowerdir=/s/1/fs:/s/0/fs"]);
        assert_eq!(readonly_mount(&view), view);
        let bind = protos::types::Mount {
            r#type: "bind".into(),
            source: "/s/1/fs".into(),
            options: vec!["rw".into(), "rbind".into()],
            ..Default::default()
        };
        assert_eq!(readonly_mount(&bind), bind);
    }
}
