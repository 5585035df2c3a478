//! The native snapshotter (containerd's `snapshots/native/native.go`): every active snapshot
//! is a full copy of its parent, so it works on any filesystem and needs no overlayfs.
//!
//! Layout under the plugin root (`<root>/io.containerd.snapshotter.v1.native`):
//! `metadata.redb` and `snapshots/<id>/` (the tree itself). Mounts are always bind mounts:
//! of the snapshot's own directory, or, for a view with a parent, read-only of the parent's.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::storage::{MetaStore, Snapshot};
use super::{fsutil, Error, Info, Kind, Labels, Mount, Result, Snapshotter, Usage};

/// The directory name containerd gives this plugin under the daemon root.
pub const PLUGIN_DIR: &str = "io.containerd.snapshotter.v1.native";

pub struct NativeSnapshotter {
    root: PathBuf,
    ms: MetaStore,
}

impl NativeSnapshotter {
    /// Open the snapshotter rooted at `root` (created 0700 if missing).
    pub fn open(root: &Path) -> Result<Self> {
        let snaps = root.join("snapshots");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&snaps)
            .map_err(|e| Error::io("create", &snaps, e))?;
        let ms = MetaStore::open(&root.join("metadata.redb"))?;
        Ok(NativeSnapshotter {
            root: root.to_path_buf(),
            ms,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `snapshots/<id>`: the snapshot's tree.
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let ro = if s.kind == Kind::View { "ro" } else { "rw" };
        let source = match s.parent_ids.first() {
            Some(pid) if s.kind != Kind::Active => self.snapshot_dir(pid),
            _ => self.snapshot_dir(&s.id),
        };
        vec![Mount {
            fs_type: "bind".into(),
            source: source.display().to_string(),
            options: vec!["rbind".into(), ro.into()],
        }]
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        // A view of a parent binds the parent itself: it needs no directory of its own.
        let td = (kind == Kind::Active || parent.is_empty()).then(|| {
            self.root
                .join("snapshots")
                .join(format!("new-{}", uuid::Uuid::new_v4().simple()))
        });
        if let Some(td) = &td {
            fs::create_dir(td).map_err(|e| Error::io("create", td, e))?;
            fs::set_permissions(td, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", td, e))?;
        }
        let result = self.ms.create(kind, key, parent, labels, |s| {
            let Some(td) = &td else { return Ok(()) };
            if let Some(pid) = s.parent_ids.first() {
                let src = self.snapshot_dir(pid);
                fsutil::copy_dir(&src, td)
                    .map_err(|e| Error::io("copy parent snapshot", &src, e))?;
            }
            let dst = self.snapshot_dir(&s.id);
            fs::rename(td, &dst).map_err(|e| Error::io("rename snapshot dir to", &dst, e))?;
            let snaps = self.root.join("snapshots");
            fsutil::sync_dir(&snaps).map_err(|e| Error::io("sync", &snaps, e))
        });
        match result {
            Ok(s) => Ok(self.mounts_for(&s)),
            Err(e) => {
                if let Some(td) = &td {
                    let _ = fs::remove_dir_all(td);
                }
                Err(e)
            }
        }
    }
}

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        self.ms.update_info(info, fieldpaths)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind == Kind::Active {
            let dir = self.snapshot_dir(&id);
            return fsutil::disk_usage(&dir).map_err(|e| Error::io("measure", dir, e));
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
            let dir = self.snapshot_dir(id);
            // Data first, then the metadata that makes it a committed snapshot.
            fsutil::sync_filesystem(&dir).map_err(|e| Error::io("sync", &dir, e))?;
            fsutil::disk_usage(&dir).map_err(|e| Error::io("measure", dir, e))
        })?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<()> {
        let (id, _) = self.ms.remove(key)?;
        let dir = self.snapshot_dir(&id);
        if dir.exists() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                log::warn!("remove snapshot directory {}: {e}", dir.display());
            }
        }
        Ok(())
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        for (_, info) in self.ms.walk()? {
            visit(&info)?;
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<()> {
        fsutil::remove_unreferenced(&self.ms, &self.root.join("snapshots"))
    }

    fn close(&self) -> Result<()> {
        self.ms.close();
        Ok(())
    }
}
