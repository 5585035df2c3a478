//! The OCI bundle a shim runs a task from (containerd `runtime/v2/bundle.go`).
//!
//! `<state>/io.containerd.runtime.v2.task/<ns>/<id>/` holds `config.json`, the `rootfs/`
//! mount point, the `work` symlink to `<root>/io.containerd.runtime.v2.task/<ns>/<id>` (the
//! shim's persistent scratch space) and whatever the shim writes (`address`,
//! `bootstrap.json`, `shim.pid`, `log` fifo, `init.pid`…). Deleting unmounts the rootfs and
//! removes both directories by renaming them to a hidden name first, so a crash halfway never
//! leaves a bundle that looks live.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Error, Result};

/// Name of the runtime v2 task plugin directory under root and state.
pub const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// A bundle on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Task id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
    pub path: PathBuf,
}

/// Validate an id or namespace the way containerd's `identifiers.Validate` does:
/// 1–76 characters, alphanumerics plus `.`, `_`, `-`, starting and ending alphanumeric.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && id.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: format!(
                "invalid {kind} {id:?}: must be 1-76 characters of [A-Za-z0-9._-], starting and ending with a letter or digit"
            ),
        })
    }
}

impl Bundle {
    /// Create the bundle for `ns/id` with `spec` (JSON) as `config.json`. On error nothing
    /// is left behind.
    pub fn create(root: &Path, state: &Path, ns: &str, id: &str, spec: &[u8]) -> Result<Bundle> {
        validate_id("task id", id)?;
        validate_id("namespace", ns)?;
        let path = state.join(ns).join(id);
        let work = root.join(ns).join(id);
        let bundle = Bundle {
            id: id.into(),
            namespace: ns.into(),
            path: path.clone(),
        };
        mkdir_all_mode(path.parent().unwrap_or(state), 0o711)?;
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists {
                    what: format!("bundle {}", path.display()),
                })
            }
            Err(e) => return Err(Error::io("create bundle", &path, e)),
        }
        let result = (|| {
            set_mode(&path, 0o700)?;
            let rootfs = path.join("rootfs");
            fs::create_dir(&rootfs).map_err(|e| Error::io("create rootfs dir", &rootfs, e))?;
            set_mode(&rootfs, 0o711)?;
            mkdir_all_mode(work.parent().unwrap_or(root), 0o711)?;
            if work.exists() {
                // A stale work dir from a task that was not cleaned up (containerd does the same).
                fs::remove_dir_all(&work)
                    .map_err(|e| Error::io("remove stale work dir", &work, e))?;
            }
            fs::create_dir(&work).map_err(|e| Error::io("create work dir", &work, e))?;
            set_mode(&work, 0o711)?;
            let link = path.join("work");
            std::os::unix::fs::symlink(&work, &link)
                .map_err(|e| Error::io("symlink work dir", &link, e))?;
            let config = path.join("config.json");
            fs::write(&config, spec).map_err(|e| Error::io("write spec", &config, e))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&path);
            let _ = fs::remove_dir_all(&work);
            return Err(e);
        }
        Ok(bundle)
    }

    /// The bundle of an existing directory (live restore).
    pub fn open(state: &Path, ns: &str, id: &str) -> Bundle {
        Bundle {
            id: id.into(),
            namespace: ns.into(),
            path: state.join(ns).join(id),
        }
    }

    /// `rootfs/` inside the bundle.
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    /// Unmount the rootfs and remove the bundle and its work directory.
    pub fn delete(&self) -> Result<()> {
        let rootfs = self.rootfs();
        unmount_all(&rootfs)?;
        let work = fs::read_link(self.path.join("work")).ok();
        match fs::remove_dir(&rootfs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove bundle rootfs", &rootfs, e)),
        }
        let r1 = atomic_delete(&self.path);
        let r2 = work.map_or(Ok(()), |w| atomic_delete(&w));
        r1.and(r2)
    }
}

/// Unmount everything mounted on `target` (stacked mounts included), like containerd's
/// `mount.UnmountAll`: lazily detached mounts do not block removal.
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // EINVAL: not a mount point (any more); ENOENT: gone.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::io("unmount", target, e.into())),
        }
    }
}

fn atomic_delete(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hidden = path.with_file_name(format!(".{name}"));
    match fs::rename(path, &hidden) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("rename for removal", path, e)),
    }
    fs::remove_dir_all(&hidden).map_err(|e| Error::io("remove", &hidden, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

fn mkdir_all_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_delete_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        let b = Bundle::create(&root, &state, "default", "c1", b"{}").expect("create");
        assert!(b.path.join("config.json").is_file());
        assert!(b.rootfs().is_dir());
        assert_eq!(
            fs::read_link(b.path.join("work")).expect("link"),
            root.join("default/c1")
        );
        assert!(matches!(
            Bundle::create(&root, &state, "default", "c1", b"{}"),
            Err(Error::AlreadyExists { .. })
        ));
        b.delete().expect("delete");
        assert!(!b.path.exists());
        assert!(!root.join("default/c1").exists());
        assert_eq!(fs::read_dir(state.join("default")).expect("ls").count(), 0);
    }

    #[test]
    fn bad_ids_are_rejected_before_touching_disk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for id in ["", "../x", "a/b", "-a", &"x".repeat(77)] {
            let r = Bundle::create(tmp.path(), &tmp.path().join("s"), "default", id, b"{}");
            assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{id:?}");
        }
        assert!(!tmp.path().join("s").exists());
    }
}
