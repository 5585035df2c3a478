//! Mount descriptions returned by snapshotters and the code that applies them
//! (containerd's `mount/mount_linux.go`).
//!
//! A [`Mount`] is what crosses the API (type, source, options); [`mount_all`] turns a list of
//! them into `mount(2)` calls on a target and [`unmount_all`] takes them down again, falling
//! back to a lazy detach when the target stays busy.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

/// One filesystem mount, as containerd's `types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// Filesystem type: `bind`, `overlay`, …
    pub fs_type: String,
    /// Source: a directory for bind mounts, a placeholder (`overlay`) for overlay.
    pub source: String,
    /// Options as `mount -o` takes them: flags (`ro`, `rbind`, `nosuid`) and data
    /// (`lowerdir=…`).
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mount {fs_type} {source_path} on {target} (options {options:?}): {errno}")]
    Mount {
        fs_type: String,
        source_path: String,
        target: PathBuf,
        options: Vec<String>,
        errno: Errno,
    },
    #[error("unmount {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
    #[error("mount options for {target} are {len} bytes, longer than a page even after shortening lowerdir paths")]
    OptionsTooLong { target: PathBuf, len: usize },
}

/// The flag half of parsed options; everything else is filesystem data.
struct Parsed {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        // (clear, flag) as containerd's table.
        let f: Option<(bool, MsFlags)> = match o.as_str() {
            "async" => Some((true, MsFlags::MS_SYNCHRONOUS)),
            "atime" => Some((true, MsFlags::MS_NOATIME)),
            "bind" => Some((false, MsFlags::MS_BIND)),
            "defaults" => Some((false, MsFlags::empty())),
            "dev" => Some((true, MsFlags::MS_NODEV)),
            "diratime" => Some((true, MsFlags::MS_NODIRATIME)),
            "dirsync" => Some((false, MsFlags::MS_DIRSYNC)),
            "exec" => Some((true, MsFlags::MS_NOEXEC)),
            "mand" => Some((false, MsFlags::MS_MANDLOCK)),
            "noatime" => Some((false, MsFlags::MS_NOATIME)),
            "nodev" => Some((false, MsFlags::MS_NODEV)),
            "nodiratime" => Some((false, MsFlags::MS_NODIRATIME)),
            "noexec" => Some((false, MsFlags::MS_NOEXEC)),
            "nomand" => Some((true, MsFlags::MS_MANDLOCK)),
            "norelatime" => Some((true, MsFlags::MS_RELATIME)),
            "nostrictatime" => Some((true, MsFlags::MS_STRICTATIME)),
            "nosuid" => Some((false, MsFlags::MS_NOSUID)),
            "rbind" => Some((false, MsFlags::MS_BIND | MsFlags::MS_REC)),
            "relatime" => Some((false, MsFlags::MS_RELATIME)),
            "remount" => Some((false, MsFlags::MS_REMOUNT)),
            "ro" => Some((false, MsFlags::MS_RDONLY)),
            "rw" => Some((true, MsFlags::MS_RDONLY)),
            "strictatime" => Some((false, MsFlags::MS_STRICTATIME)),
            "suid" => Some((true, MsFlags::MS_NOSUID)),
            "sync" => Some((false, MsFlags::MS_SYNCHRONOUS)),
            _ => None,
        };
        let p = match o.as_str() {
            "private" => Some(MsFlags::MS_PRIVATE),
            "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => Some(MsFlags::MS_SHARED),
            "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => Some(MsFlags::MS_SLAVE),
            "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => Some(MsFlags::MS_UNBINDABLE),
            "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            _ => None,
        };
        match (f, p) {
            (Some((true, flag)), _) => flags.remove(flag),
            (Some((false, flag)), _) => flags.insert(flag),
            (None, Some(pf)) => propagation.insert(pf),
            (None, None) => data.push(o.clone()),
        }
    }
    Parsed {
        flags,
        propagation,
        data,
    }
}

/// Longest page of mount data the kernel copies from `mount(2)`.
const PAGE: usize = 4096;

/// Shorten `lowerdir=` by expressing every layer relative to an fd on their common parent
/// directory (`/proc/self/fd/N/<id>/fs`); containerd does the same with a chdir in a child
/// process, which a threaded daemon cannot do. The fd must stay open until `mount` returns.
fn compact_lowerdirs(data: &mut [String]) -> Option<OwnedFd> {
    let idx = data.iter().position(|o| o.starts_with("lowerdir="))?;
    let dirs: Vec<&str> = data[idx]["lowerdir=".len()..].split(':').collect();
    let first = Path::new(dirs.first()?);
    let mut common: PathBuf = first.parent()?.to_path_buf();
    while !dirs.iter().all(|d| Path::new(d).starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    if common.as_os_str().len() <= 1 {
        return None;
    }
    let fd = open(
        &common,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let prefix = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let short: Vec<String> = dirs
        .iter()
        .map(|d| {
            let rel = Path::new(d).strip_prefix(&common).unwrap_or(Path::new(d));
            format!("{prefix}/{}", rel.display())
        })
        .collect();
    data[idx] = format!("lowerdir={}", short.join(":"));
    Some(fd)
}

impl Mount {
    /// Mount this on `target` (an existing directory).
    pub fn mount(&self, target: &Path) -> Result<(), Error> {
        let Parsed {
            flags,
            propagation,
            mut data,
        } = parse_options(&self.options);
        let fail = |errno| Error::Mount {
            fs_type: self.fs_type.clone(),
            source_path: self.source.clone(),
            target: target.to_path_buf(),
            options: self.options.clone(),
            errno,
        };
        let mut _lower_fd = None;
        if data.join(",").len() >= PAGE {
            _lower_fd = compact_lowerdirs(&mut data);
            let len = data.join(",").len();
            if len >= PAGE {
                return Err(Error::OptionsTooLong {
                    target: target.to_path_buf(),
                    len,
                });
            }
        }
        let data = data.join(",");
        let data_opt = (!data.is_empty()).then_some(data.as_str());
        // A bind mount ignores MS_RDONLY on the first call; it takes a remount (below).
        let first = if flags.contains(MsFlags::MS_BIND) {
            flags - MsFlags::MS_RDONLY
        } else {
            flags
        };
        nix::mount::mount(
            Some(self.source.as_str()),
            target,
            Some(self.fs_type.as_str()),
            first,
            data_opt,
        )
        .map_err(fail)?;
        if !propagation.is_empty() {
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                propagation,
                None::<&str>,
            )
            .map_err(fail)?;
        }
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            let keep = flags
                & (MsFlags::MS_RDONLY
                    | MsFlags::MS_BIND
                    | MsFlags::MS_REC
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC);
            if let Err(errno) = nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                keep | MsFlags::MS_REMOUNT,
                None::<&str>,
            ) {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
                return Err(fail(errno));
            }
        }
        Ok(())
    }
}

/// The read-only form of a mount list (containerd's `readonlyMounts`): bind mounts get `ro`,
/// an overlay with an upper directory becomes a lower-only overlay with the upper on top.
pub fn readonly(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.fs_type == "overlay" {
                let upper = m
                    .options
                    .iter()
                    .find_map(|o| o.strip_prefix("upperdir="))
                    .map(str::to_string);
                if let Some(upper) = upper {
                    m.options
                        .retain(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="));
                    for o in &mut m.options {
                        if let Some(lower) = o.strip_prefix("lowerdir=") {
                            *o = format!("lowerdir={upper}:{lower}");
                        }
                    }
                }
            } else {
                m.options.retain(|o| o != "rw" && o != "ro");
                m.options.push("ro".into());
            }
            m
        })
        .collect()
}

/// Apply `mounts` in order on `target`. On failure the mounts already made are undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), Error> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = m.mount(target) {
            for _ in 0..i {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Unmount the top mount on `target`, retrying while busy and detaching lazily as a last
/// resort.
pub fn unmount(target: &Path) -> Result<(), Error> {
    for _ in 0..50 {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(Errno::EBUSY) => sleep(Duration::from_millis(20)),
            Err(errno) => {
                return Err(Error::Unmount {
                    target: target.to_path_buf(),
                    errno,
                })
            }
        }
    }
    nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|errno| Error::Unmount {
        target: target.to_path_buf(),
        errno,
    })
}

/// Unmount everything stacked on `target` (until it is no longer a mount point).
pub fn unmount_all(target: &Path) -> Result<(), Error> {
    loop {
        match unmount(target) {
            Ok(()) => {}
            Err(Error::Unmount {
                errno: Errno::EINVAL | Errno::ENOENT,
                ..
            }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A temporary directory with `mounts` applied, unmounted and removed on drop
/// (containerd's `mount.WithTempMount`).
pub struct TempMount {
    dir: Option<tempdir::Dir>,
}

static TEMP_MOUNT_LOCATION: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where [`TempMount`] creates its mount points (containerd's `mount.SetTempMountLocation`,
/// which containerd points at `<root>/tmpmounts`). Set once at start-up; the default is the
/// system temp dir. Returns false if it was already set.
pub fn set_temp_mount_location(dir: PathBuf) -> bool {
    TEMP_MOUNT_LOCATION.set(dir).is_ok()
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory under the temp mount location, made with a random name; removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let base = super::TEMP_MOUNT_LOCATION
                .get()
                .cloned()
                .unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&base)?;
            for _ in 0..16 {
                let p = base.join(format!("{prefix}{}", uuid::Uuid::new_v4().simple()));
                match std::fs::create_dir(&p) {
                    Ok(()) => return Ok(Dir(p)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "could not pick a temp dir name",
            ))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            // Only an empty directory is removed: if the unmount failed, the mounted content
            // must not be deleted through it.
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

/// Errors of [`TempMount::new`].
#[derive(Debug, thiserror::Error)]
pub enum TempMountError {
    #[error("create temporary mount point: {0}")]
    Dir(#[source] std::io::Error),
    #[error(transparent)]
    Mount(#[from] Error),
}

impl TempMount {
    /// Mount `mounts` on a fresh temporary directory.
    pub fn new(mounts: &[Mount]) -> Result<Self, TempMountError> {
        let dir = tempdir::Dir::new("berth-mount-").map_err(TempMountError::Dir)?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), tempdir::Dir::path)
    }

    /// Unmount and remove now, reporting unmount errors (drop ignores them).
    pub fn close(mut self) -> Result<(), Error> {
        let r = match &self.dir {
            Some(d) => unmount_all(d.path()),
            None => Ok(()),
        };
        self.dir.take();
        r
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if let Err(e) = unmount_all(d.path()) {
                log::warn!("unmount temporary mount {}: {e}", d.path().display());
            }
        }
    }
}
