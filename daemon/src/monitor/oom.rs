//! OOM watch of legacy runtime v1 tasks (containerd `metrics/cgroups/v1/oom.go`): v1 shims do
//! not watch their container's memory cgroup, so containerd's cgroups monitor does — an
//! eventfd on `memory.oom_control` per task — publishing `/tasks/oom` and counting the kills
//! in `container_memory_oom_total` (a counter labelled `container_id` and `namespace` only).
//! Runtime v2 tasks are left to their shim, which publishes `/tasks/oom` itself; containerd
//! 1.6 exports no OOM counter for them on cgroup v1 hosts either.
//!
//! The watches themselves are the shim crate's [`OomMonitor`] (eventfd in the reactor, ends
//! when the cgroup goes away), keyed `<namespace>/<id>` (a namespace has no `/`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use shim::cgroup::{Cgroup, OomMonitor};

use super::Error;
use crate::events::Exchange;

/// The counters and the watches behind them.
#[derive(Debug)]
pub struct OomWatch {
    counts: Mutex<BTreeMap<(String, String), u64>>,
    watches: OomMonitor,
}

impl OomWatch {
    /// A watch publishing `/tasks/oom` on `events`, and the task counting OOMs and publishing
    /// them (ends when the watch is dropped).
    pub fn new(events: Exchange) -> (Arc<OomWatch>, tokio::task::JoinHandle<()>) {
        let (watches, mut ooms) = OomMonitor::new();
        let watch = Arc::new(OomWatch {
            counts: Mutex::default(),
            watches,
        });
        let weak = Arc::downgrade(&watch);
        let task = tokio::spawn(async move {
            while let Some(key) = ooms.recv().await {
                let Some((ns, id)) = key.split_once('/') else {
                    continue;
                };
                let Some(watch) = weak.upgrade() else { return };
                if let Some(n) = lock(&watch.counts).get_mut(&(ns.to_string(), id.to_string())) {
                    *n += 1;
                }
                log::info!("OOM event in task {ns}/{id}");
                let ev = crate::runtime::event_any(
                    "containerd.events.TaskOOM",
                    &protos::events::TaskOom {
                        container_id: id.to_string(),
                    },
                );
                if let Err(e) = events.publish_any(ns, "/tasks/oom", ev) {
                    log::error!("post OOM event of {ns}/{id}: {e}");
                }
            }
        });
        (watch, task)
    }

    /// Starts watching task `ns/id` whose init process is `pid`, with its counter at 0 (a
    /// task re-created under the same id starts over). A task whose cgroup is already gone
    /// is not watched (containerd: NotFound is no error); a host without the memory
    /// controller is logged and not watched, as containerd's `ErrMemoryNotSupported`.
    pub fn add(&self, ns: &str, id: &str, pid: u32) -> Result<(), Error> {
        let cgroup_err = |source| Error::Cgroup {
            namespace: ns.to_string(),
            id: id.to_string(),
            pid,
            source: Box::new(source),
        };
        let cg = match i32::try_from(pid).map(Cgroup::for_pid) {
            Ok(Ok(cg)) => cg,
            Ok(Err(shim::cgroup::CgroupError::NotFound { .. })) | Err(_) => return Ok(()),
            Ok(Err(shim::cgroup::CgroupError::Read { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(())
            }
            Ok(Err(e)) => return Err(cgroup_err(e)),
        };
        match self.watches.add(&format!("{ns}/{id}"), &cg) {
            Ok(()) => {}
            Err(e @ shim::cgroup::CgroupError::NoMemoryController { .. }) => {
                log::warn!("OOM monitoring of {ns}/{id} failed: {e}");
                return Ok(());
            }
            Err(e) => return Err(cgroup_err(e)),
        }
        lock(&self.counts).insert((ns.to_string(), id.to_string()), 0);
        Ok(())
    }

    /// Stops watching task `ns/id` and forgets its counter.
    pub fn remove(&self, ns: &str, id: &str) {
        self.watches.remove(&format!("{ns}/{id}"));
        lock(&self.counts).remove(&(ns.to_string(), id.to_string()));
    }

    /// Whether `ns/id` is watched.
    pub fn contains(&self, ns: &str, id: &str) -> bool {
        lock(&self.counts).contains_key(&(ns.to_string(), id.to_string()))
    }

    /// ((namespace, id), OOMs seen) of every watched task.
    pub fn counts(&self) -> Vec<((String, String), u64)> {
        lock(&self.counts)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
