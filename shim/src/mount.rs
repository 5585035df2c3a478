//! Mounting the container rootfs from `CreateTaskRequest.rootfs`, and unmounting it.
//!
//! containerd hands the shim the snapshotter's mounts (`overlay` with lower/upper/work dirs,
//! or a `bind` of a native snapshot); the shim mounts them onto `<bundle>/rootfs` before
//! `runc create` and unmounts on delete (`runtime/v2/runc/container.go` `NewContainer`,
//! `mount.UnmountAll`). Options are split into mount flags and filesystem data the way
//! containerd's `mount_linux.go` `parseMountOptions` does.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Errors mounting or unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("failed to mount rootfs component {kind} {source_path} on {target}: {errno}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        errno: Errno,
    },
    #[error("unmounting {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
}

/// One mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Splits options into (flags, propagation flags, data) like containerd's `parseMountOptions`.
pub fn parse_options(options: &[String]) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut prop = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (clear, f) = match o.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let mut p = match o.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if o.starts_with('r') {
                    p |= MsFlags::MS_REC;
                }
                prop |= p;
                continue;
            }
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        if clear {
            flags.remove(f);
        } else {
            flags.insert(f);
        }
    }
    (flags, prop, data.join(","))
}

impl Mount {
    /// Mounts onto `target`. A read-only bind is a bind followed by a read-only remount, as
    /// the kernel ignores `MS_RDONLY` on the initial bind.
    pub fn mount(&self, target: &Path) -> Result<(), MountError> {
        let (flags, prop, data) = parse_options(&self.options);
        let err = |errno| MountError::Mount {
            kind: self.kind.clone(),
            source_path: self.source.clone(),
            target: target.to_path_buf(),
            errno,
        };
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(
            Some(self.source.as_str()),
            target,
            Some(self.kind.as_str()),
            flags,
            data,
        )
        .map_err(err)?;
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .map_err(err)?;
        }
        if !prop.is_empty() {
            mount(None::<&str>, target, None::<&str>, prop, None::<&str>).map_err(err)?;
        }
        Ok(())
    }
}

/// Unmounts everything stacked on `target` (containerd's `UnmountAll`); a path that is not a
/// mount point or does not exist is not an error.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    for _ in 0..64 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                // Something still holds it (a process in the mount ns being torn down):
                // detach lazily so the bundle can be removed.
                return umount2(target, MntFlags::MNT_DETACH).or_else(|e| match e {
                    Errno::EINVAL | Errno::ENOENT => Ok(()),
                    errno => Err(MountError::Unmount {
                        target: target.to_path_buf(),
                        errno,
                    }),
                });
            }
            Err(errno) => {
                return Err(MountError::Unmount {
                    target: target.to_path_buf(),
                    errno,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn overlay_options_become_data() {
        let (f, p, d) = parse_options(&opts(&[
            "index=off",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "workdir=/w",
        ]));
        assert!(f.is_empty() && p.is_empty());
        assert_eq!(d, "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w");
    }

    #[test]
    fn bind_flags() {
        let (f, p, d) = parse_options(&opts(&["rbind", "ro", "rprivate"]));
        assert!(f.contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(p, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert!(d.is_empty());
        let (f, _, _) = parse_options(&opts(&["ro", "rw"]));
        assert!(!f.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn bind_mount_and_unmount_all() {
        let src = tempfile::tempdir().expect("src");
        std::fs::write(src.path().join("f"), b"x").expect("write");
        let dst = tempfile::tempdir().expect("dst");
        let m = Mount {
            kind: "bind".into(),
            source: src.path().display().to_string(),
            options: opts(&["rbind", "ro"]),
        };
        m.mount(dst.path()).expect("mount (needs root)");
        assert!(dst.path().join("f").exists());
        assert!(
            std::fs::write(dst.path().join("g"), b"y").is_err(),
            "ro bind must be read-only"
        );
        unmount_all(dst.path()).expect("unmount");
        assert!(!dst.path().join("f").exists());
        unmount_all(dst.path()).expect("unmount of a non-mount is fine");
        unmount_all(&dst.path().join("missing")).expect("missing is fine");
    }
}
