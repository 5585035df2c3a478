//! OOM notifications: one watch task per container, all reporting container ids on one channel
//! the core turns into `TaskOOM` events (containerd's `pkg/oom/v1` epoller and `pkg/oom/v2`
//! watcher, without their extra goroutines: the eventfd / inotify fd sits in the reactor).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{v1, v2, Cgroup, CgroupError};
use crate::io::fd::AsyncPipe as AsyncFdReader;

/// Watches containers' cgroups for OOM kills.
///
/// ```ignore
/// let (oom, mut ooms) = OomMonitor::new();
/// oom.add(&container_id, &Cgroup::for_pid(init_pid)?)?;       // after Start
/// tokio::spawn(async move { while let Some(id) = ooms.recv().await { publish_task_oom(id) } });
/// oom.remove(&container_id);                                   // on Delete
/// ```
#[derive(Debug)]
pub struct OomMonitor {
    tx: mpsc::UnboundedSender<String>,
    watches: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl OomMonitor {
    /// A monitor and the receiving end of its "container id OOM'd" channel.
    pub fn new() -> (OomMonitor, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            OomMonitor {
                tx,
                watches: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    /// Starts watching `cg` for container `id` (replacing an earlier watch of the same id).
    /// Must run inside the tokio runtime. The watch ends by itself when the cgroup is removed
    /// (v1) or emptied (v2).
    pub fn add(&self, id: &str, cg: &Cgroup) -> Result<(), CgroupError> {
        let task = match cg {
            Cgroup::V1(c) => {
                let dir = c
                    .path("memory")
                    .ok_or_else(|| CgroupError::NoMemoryController {
                        path: c.paths().values().next().cloned().unwrap_or_default(),
                    })?;
                let efd = v1::oom_eventfd(dir)?;
                let efd = AsyncFdReader::new(efd).map_err(|source| CgroupError::OomRegister {
                    path: dir.to_path_buf(),
                    source,
                })?;
                tokio::spawn(watch_v1(
                    id.to_string(),
                    dir.to_path_buf(),
                    efd,
                    self.tx.clone(),
                ))
            }
            Cgroup::V2(c) => {
                let fd: OwnedFd = v2::events_inotify(c.path())?;
                let fd = AsyncFdReader::new(fd).map_err(|source| CgroupError::OomRegister {
                    path: c.path().to_path_buf(),
                    source,
                })?;
                tokio::spawn(watch_v2(
                    id.to_string(),
                    c.path().to_path_buf(),
                    fd,
                    self.tx.clone(),
                ))
            }
        };
        if let Some(old) = lock(&self.watches).insert(id.to_string(), task) {
            old.abort();
        }
        Ok(())
    }

    /// Stops watching container `id` (closing its eventfd / inotify fd).
    pub fn remove(&self, id: &str) {
        if let Some(t) = lock(&self.watches).remove(id) {
            t.abort();
        }
    }
}

impl Drop for OomMonitor {
    fn drop(&mut self) {
        for t in lock(&self.watches).values() {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn watch_v1(id: String, dir: PathBuf, efd: AsyncFdReader, tx: mpsc::UnboundedSender<String>) {
    let mut counter = [0u8; 8];
    loop {
        if let Err(e) = efd.read(&mut counter).await {
            log::warn!("OOM eventfd of {}: {e}", dir.display());
            return;
        }
        // The kernel also signals the eventfd when the cgroup goes away (containerd checks
        // `cg.State() == Deleted`).
        if !dir.join("memory.oom_control").exists() {
            log::debug!(
                "memory cgroup {} removed, OOM watch of {id} ends",
                dir.display()
            );
            return;
        }
        if tx.send(id.clone()).is_err() {
            return;
        }
    }
}

async fn watch_v2(id: String, dir: PathBuf, fd: AsyncFdReader, tx: mpsc::UnboundedSender<String>) {
    // containerd starts from 0: an OOM kill before the watch began is reported at the first
    // change of memory.events.
    let mut last_oom_kill = 0u64;
    let mut buf = [0u8; 1024];
    loop {
        if let Err(e) = fd.read(&mut buf).await {
            log::warn!("inotify on {}: {e}", dir.display());
            return;
        }
        match v2::memory_events(&dir) {
            Ok(Some(ev)) => {
                if ev.oom_kill > last_oom_kill && tx.send(id.clone()).is_err() {
                    return;
                }
                last_oom_kill = last_oom_kill.max(ev.oom_kill);
            }
            // memory.events gone: the cgroup was removed.
            Ok(None) => return,
            Err(e) => {
                // ENODEV while the cgroup is being removed is the normal end.
                if Path::new(&dir).join("memory.events").exists() {
                    log::warn!("{e}");
                }
                return;
            }
        }
        if v2::is_empty(&dir) {
            return;
        }
    }
}
