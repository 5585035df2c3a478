//! The overlayfs snapshotter (containerd's `snapshots/overlay/overlay.go`).
//!
//! On-disk layout under the plugin root (`<root>/io.containerd.snapshotter.v1.overlayfs`):
//! `metadata.redb` and `snapshots/<id>/{fs,work}`. `fs` is the layer's own content (the
//! overlay upperdir while active), `work` the overlay workdir (active snapshots only).
//! Mounts mirror containerd's choices: a bind mount when there is no parent (and a read-only
//! bind of the parent for a one-parent view), otherwise an overlay with the parents' `fs`
//! directories as `lowerdir` (nearest first) and, for active snapshots, `upperdir`/`workdir`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};

use super::storage::{MetaStore, Snapshot};
use super::{fsutil, Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage};

/// The directory name containerd gives this plugin under the daemon root.
pub const PLUGIN_DIR: &str = "io.containerd.snapshotter.v1.overlayfs";

/// Label added to `stat`/`walk`/`update` results when `upperdir_label` is on.
pub const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// Options of `[plugins."io.containerd.snapshotter.v1.overlayfs"]`.
#[derive(Debug, Clone, Default)]
pub struct OverlayConfig {
    /// Report each snapshot's upper directory in the `containerd.io/snapshot/overlay.upperdir`
    /// label.
    pub upperdir_label: bool,
}

pub struct OverlaySnapshotter {
    root: PathBuf,
    ms: MetaStore,
    config: OverlayConfig,
    /// See [`OverlaySnapshotter::with_mount_options`].
    mount_options: Vec<String>,
    index_off: bool,
    userxattr: bool,
}

/// Whether the running kernel knows overlayfs (`/proc/filesystems`).
pub fn overlay_supported() -> Result<()> {
    let fss = fs::read_to_string("/proc/filesystems")
        .map_err(|e| Error::io("read", "/proc/filesystems", e))?;
    if fss
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        Ok(())
    } else {
        Err(Error::OverlayUnsupported {
            reason: "\"overlay\" is not listed in /proc/filesystems".into(),
        })
    }
}

/// True when this process runs in a user namespace other than the initial one, where
/// overlay needs `userxattr` (containerd's `overlayutils.NeedsUserXAttr`).
pub(crate) fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let f: Vec<&str> = map.split_whitespace().collect();
            !(f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
        }
        Err(_) => false,
    }
}

impl OverlaySnapshotter {
    /// Open the snapshotter rooted at `root` (created 0700 if missing). Fails with
    /// `OverlayUnsupported` when the kernel has no overlayfs.
    pub fn open(root: &Path, config: OverlayConfig) -> Result<Self> {
        overlay_supported()?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| Error::io("create", root, e))?;
        let snaps = root.join("snapshots");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&snaps)
            .map_err(|e| Error::io("create", &snaps, e))?;
        let ms = MetaStore::open(&root.join("metadata.redb"))?;
        Ok(OverlaySnapshotter {
            root: root.to_path_buf(),
            ms,
            config,
            mount_options: Vec::new(),
            index_off: Path::new("/sys/module/overlay/parameters/index").exists(),
            userxattr: in_user_namespace(),
        })
    }

    /// `mount_options` (containerd 1.7+): extra options for every overlay mount (not for
    /// bind mounts), placed before the ones berthd adds (`index=off`, `userxattr`, which are
    /// then only added if not already given). E.g. `["volatile"]`: the kernel then skips
    /// syncing the upper filesystem when the overlay is unmounted (or synced), at the price
    /// of an upper directory that is unusable after a crash and, as overlayfs leaves
    /// `work/incompat/volatile` behind, an active snapshot that can be mounted only once (a
    /// second task on the same container fails with EINVAL) — for throwaway containers only.
    #[must_use]
    pub fn with_mount_options(mut self, options: Vec<String>) -> Self {
        self.mount_options = options;
        self
    }

    /// The plugin root this snapshotter was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `snapshots/<id>/fs`: the layer content (upperdir while active).
    pub fn upper_path(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id).join("fs")
    }

    fn work_path(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id).join("work")
    }

    fn with_upper_label(&self, id: &str, mut info: Info) -> Info {
        if self.config.upperdir_label {
            info.labels.insert(
                UPPERDIR_LABEL.to_string(),
                self.upper_path(id).display().to_string(),
            );
        }
        info
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        if s.parent_ids.is_empty() {
            let ro = if s.kind == Kind::View { "ro" } else { "rw" };
            return vec![Mount {
                fs_type: "bind".into(),
                source: self.upper_path(&s.id).display().to_string(),
                options: vec![ro.into(), "rbind".into()],
            }];
        }
        let mut options = self.mount_options.clone();
        let given = |name: &str| {
            options
                .iter()
                .any(|o| o == name || o.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
        };
        let (index_given, userxattr_given) = (given("index"), given("userxattr"));
        if self.index_off && !index_given {
            options.push("index=off".to_string());
        }
        if self.userxattr && !userxattr_given {
            options.push("userxattr".to_string());
        }
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", self.work_path(&s.id).display()));
            options.push(format!("upperdir={}", self.upper_path(&s.id).display()));
        } else if s.parent_ids.len() == 1 {
            return vec![Mount {
                fs_type: "bind".into(),
                source: self.upper_path(&s.parent_ids[0]).display().to_string(),
                options: vec!["ro".into(), "rbind".into()],
            }];
        }
        let lowers: Vec<String> = s
            .parent_ids
            .iter()
            .map(|id| self.upper_path(id).display().to_string())
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        vec![Mount {
            fs_type: "overlay".into(),
            source: "overlay".into(),
            options,
        }]
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let snaps = self.root.join("snapshots");
        let td = snaps.join(format!("new-{}", uuid::Uuid::new_v4().simple()));
        let mk = |p: &Path, mode| {
            fs::DirBuilder::new()
                .mode(mode)
                .create(p)
                .map_err(|e| Error::io("create", p, e))
        };
        let prepared = mk(&td, 0o700)
            .and_then(|()| mk(&td.join("fs"), 0o755))
            .and_then(|()| {
                if kind == Kind::Active {
                    mk(&td.join("work"), 0o711)
                } else {
                    Ok(())
                }
            });
        let result = prepared.and_then(|()| {
            self.ms.create(kind, key, parent, labels, |s| {
                if let Some(pid) = s.parent_ids.first() {
                    // The new upper starts with the owner of the parent's root, as containerd.
                    let pp = self.upper_path(pid);
                    let md = fs::metadata(&pp).map_err(|e| Error::io("stat parent", &pp, e))?;
                    let fsd = td.join("fs");
                    chown(
                        &fsd,
                        Some(Uid::from_raw(md.uid())),
                        Some(Gid::from_raw(md.gid())),
                    )
                    .map_err(|e| Error::io("chown", &fsd, e.into()))?;
                }
                let dst = snaps.join(&s.id);
                // The id is new in this transaction, so a directory already there is an
                // orphan: a daemon killed after its rename but before the metadata commit
                // (which also rolled the id sequence back) left it. Nothing refers to it.
                if dst.exists() {
                    log::warn!(
                        "overlayfs: removing orphaned snapshot dir {}",
                        dst.display()
                    );
                    fs::remove_dir_all(&dst)
                        .map_err(|e| Error::io("remove orphaned snapshot dir", &dst, e))?;
                }
                fs::rename(&td, &dst).map_err(|e| Error::io("rename snapshot dir to", &dst, e))?;
                fsutil::sync_dir(&snaps).map_err(|e| Error::io("sync", &snaps, e))
            })
        });
        match result {
            Ok(s) => Ok(self.mounts_for(&s)),
            Err(e) => {
                let _ = fs::remove_dir_all(&td);
                Err(e)
            }
        }
    }

    fn remove_dirs_not_in_metadata(&self) -> Result<()> {
        super::fsutil::remove_unreferenced(&self.ms, &self.root.join("snapshots"))
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        let (id, info, _) = self.ms.get_info(key)?;
        Ok(self.with_upper_label(&id, info))
    }

    fn update(&self, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        let updated = self.ms.update_info(info, fieldpaths)?;
        let (id, _, _) = self.ms.get_info(&updated.name)?;
        Ok(self.with_upper_label(&id, updated))
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind == Kind::Active {
            let upper = self.upper_path(&id);
            return fsutil::disk_usage(&upper).map_err(|e| Error::io("measure", upper, e));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let s = self.ms.get_snapshot(key)?;
        Ok(self.mounts_for(&s))
    }

    fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.ms.commit_active(key, name, labels, |id| {
            let upper = self.upper_path(id);
            // Data first, then the metadata that makes it a committed snapshot.
            fsutil::sync_filesystem(&upper).map_err(|e| Error::io("sync", &upper, e))?;
            fsutil::disk_usage(&upper).map_err(|e| Error::io("measure", upper, e))
        })?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        let (id, _) = self.ms.remove(key)?;
        let dir = self.root.join("snapshots").join(&id);
        // The metadata is gone; a directory we fail to delete is reclaimed by cleanup.
        if let Err(e) = fs::remove_dir_all(&dir) {
            log::warn!("remove snapshot directory {}: {e}", dir.display());
        }
        Ok(())
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        for (id, info) in self.ms.walk()? {
            visit(&self.with_upper_label(&id, info))?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<()> {
        self.remove_dirs_not_in_metadata()
    }

    fn close(&self) -> Result<()> {
        self.ms.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(m: &Mount) -> String {
        m.options
            .iter()
            .filter(|o| *o != "ro" && *o != "rw")
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A snapshot dir left by a daemon killed between its rename and the metadata commit
    /// (the id sequence rolled back with it) does not block the next snapshot with that id.
    #[test]
    fn orphaned_dir_with_the_next_id_is_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("ovl");
        let sn = OverlaySnapshotter::open(&root, OverlayConfig::default()).expect("open");
        let orphan = root.join("snapshots").join("1");
        fs::create_dir_all(orphan.join("fs")).expect("orphan");
        fs::write(orphan.join("fs").join("stale"), b"x").expect("stale file");
        sn.prepare("a", "", Default::default())
            .expect("prepare over an orphan");
        assert!(
            !orphan.join("fs").join("stale").exists(),
            "orphan content replaced"
        );
    }

    /// `mount_options` go first on overlay mounts only, replace the automatic `index`, and
    /// the kernel accepts the result (`volatile` included): a real overlay is mounted.
    #[test]
    fn mount_options_reach_overlay_mounts_and_mount() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sn = OverlaySnapshotter::open(&tmp.path().join("ovl"), OverlayConfig::default())
            .expect("overlay snapshotter (is the overlay module loaded?)")
            .with_mount_options(vec!["volatile".into(), "index=off".into()]);
        let base = sn.prepare("base", "", Labels::new()).expect("prepare base");
        assert_eq!(
            base[0].fs_type, "bind",
            "no parent: a bind mount, options untouched"
        );
        assert!(!base[0].options.contains(&"volatile".to_string()));
        sn.commit("base-c", "base", Labels::new()).expect("commit");
        let m = sn
            .prepare("top", "base-c", Labels::new())
            .expect("prepare top");
        assert_eq!(m[0].fs_type, "overlay");
        assert_eq!(m[0].options[..2], ["volatile", "index=off"]);
        assert_eq!(
            m[0].options
                .iter()
                .filter(|o| o.starts_with("index="))
                .count(),
            1,
            "index given once: {:?}",
            m[0].options
        );
        let target = tmp.path().join("mnt");
        fs::create_dir(&target).expect("mkdir");
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data(&m[0]).as_str()),
        )
        .expect("mount the volatile overlay");
        fs::write(target.join("f"), b"x").expect("write through the overlay");
        nix::mount::umount2(&target, nix::mount::MntFlags::empty()).expect("unmount");
        let id = sn.ms.get_snapshot("top").expect("top").id;
        assert!(sn.upper_path(&id).join("f").exists());
    }
}
