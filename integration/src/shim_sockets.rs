//! Remembering the sockets our daemons' shims create, so cleanup can remove them.
//!
//! Shims listen outside the daemon's directories, on `/run/containerd/s/<sha256>` (the Go
//! shims' and ours: `sha256(<daemon address>/<namespace>/<id or group>)`, see containerd's
//! `pkg/shim` `SocketAddress`; with `-debug` 1.7+/2.x Go shims add a second socket hashed from
//! the same path plus `/debug`). Go shims remove them only on a clean `Shutdown`, so every shim
//! a test SIGKILLs leaves its socket behind, and the daemon then deletes the bundle whose
//! `address` file named it — by the time the harness cleans up, nothing points at it any more.
//!
//! So [`ShimSockets`] watches while the daemon runs: every 100 ms (and on demand, before a
//! `kill -9` or a stop) it reads the shim address each bundle records
//! (`<state>/io.containerd.runtime.v2.task/<ns>/<id>/address`, or the `address` field of
//! `bootstrap.json` with containerd 2.x) and remembers the socket it names, plus the debug
//! socket derived from the same bundle.
//! Every path it remembers comes from this instance's own bundles and (for the derived ones)
//! hashes this instance's unique socket path, so cleanup never touches another daemon's shims;
//! it also skips any socket that still accepts connections.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Task bundles below the daemon's state directory: `<ns>/<id>/`.
pub(crate) const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// Where containerd's shims put their sockets.
const SOCKET_DIR: &str = "/run/containerd/s";

/// The annotation that makes several tasks share one shim (its value replaces the id in the
/// socket hash).
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// How often the watcher looks at the bundles.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Seen {
    /// Bundles already looked at (their sockets are in `sockets`).
    bundles: BTreeSet<PathBuf>,
    sockets: BTreeSet<PathBuf>,
}

/// The shim sockets of one daemon instance; see the module docs.
#[derive(Debug)]
pub(crate) struct ShimSockets {
    state: PathBuf,
    /// The daemon's socket paths a shim may hash (gRPC address, ttrpc address).
    daemon_addresses: Vec<PathBuf>,
    seen: Arc<Mutex<Seen>>,
    watcher: Option<(Sender<()>, JoinHandle<()>)>,
}

impl ShimSockets {
    pub(crate) fn new(state: &Path, daemon_addresses: Vec<PathBuf>) -> Self {
        ShimSockets {
            state: state.to_path_buf(),
            daemon_addresses,
            seen: Arc::default(),
            watcher: None,
        }
    }

    /// Starts the background watcher (no-op when it runs already).
    pub(crate) fn watch(&mut self) {
        if self.watcher.is_some() {
            return;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let state = self.state.clone();
        let addresses = self.daemon_addresses.clone();
        let seen = Arc::clone(&self.seen);
        let spawned = thread::Builder::new()
            .name("shim-sockets".into())
            .spawn(move || loop {
                scan(&state, &addresses, &seen);
                match stopped.recv_timeout(POLL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            });
        // Without the thread the on-demand scans still run; the worst case is a leaked socket.
        if let Ok(handle) = spawned {
            self.watcher = Some((stop, handle));
        }
    }

    /// Reads the bundles now (before the daemon gets a chance to delete them).
    pub(crate) fn scan_now(&self) {
        scan(&self.state, &self.daemon_addresses, &self.seen);
    }

    /// Stops the watcher after a last scan.
    pub(crate) fn stop_watching(&mut self) {
        if let Some((stop, handle)) = self.watcher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        self.scan_now();
    }

    /// Every socket path remembered so far.
    pub(crate) fn known(&self) -> Vec<PathBuf> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.sockets.iter().cloned().collect()
    }

    /// Removes the remembered sockets that still exist and nobody listens on (call after the
    /// shims are dead). Returns the sockets left because something still accepts on them.
    pub(crate) fn remove_dead(&mut self) -> Vec<PathBuf> {
        self.stop_watching();
        let mut live = Vec::new();
        for p in self.known() {
            let is_socket = fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_socket());
            if !is_socket {
                continue;
            }
            if UnixStream::connect(&p).is_ok() {
                live.push(p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
        live
    }
}

impl Drop for ShimSockets {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.watcher.take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
    }
}

fn scan(state: &Path, daemon_addresses: &[PathBuf], seen: &Mutex<Seen>) {
    let Ok(namespaces) = fs::read_dir(state.join(TASK_DIR)) else {
        return;
    };
    for ns_entry in namespaces.filter_map(Result::ok) {
        let Ok(ids) = fs::read_dir(ns_entry.path()) else {
            continue;
        };
        let ns = ns_entry.file_name().to_string_lossy().into_owned();
        for id_entry in ids.filter_map(Result::ok) {
            let bundle = id_entry.path();
            // The address appears once the shim started; until then look again.
            let Some(address) = bundle_address(&bundle) else {
                continue;
            };
            {
                let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.bundles.contains(&bundle) {
                    continue;
                }
            }
            let id = id_entry.file_name().to_string_lossy().into_owned();
            let mut found = Vec::new();
            if let Some(p) = socket_path(&address) {
                found.push(p);
            }
            let mut groupings = vec![id];
            groupings.extend(group_annotation(&bundle));
            for daemon in daemon_addresses {
                for g in &groupings {
                    found.push(debug_socket(daemon, &ns, g));
                }
            }
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.bundles.insert(bundle);
            seen.sockets.extend(found);
        }
    }
}

/// The shim address a bundle records: `address` (containerd 1.x, berthd, our shim) or the
/// `address` field of `bootstrap.json` (containerd 2.x, task API v3).
fn bundle_address(bundle: &Path) -> Option<String> {
    if let Ok(a) = fs::read_to_string(bundle.join("address")) {
        return Some(a);
    }
    let text = fs::read_to_string(bundle.join("bootstrap.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["address"].as_str().map(str::to_string)
}

/// The path in an `address` file (`unix:///run/containerd/s/<hash>`), if it is a filesystem
/// socket path (not an abstract one).
fn socket_path(address: &str) -> Option<PathBuf> {
    let p = Path::new(address.trim().strip_prefix("unix://")?);
    p.is_absolute().then(|| p.to_path_buf())
}

/// The group a task's shim serves (from the bundle's `config.json`), if any.
fn group_annotation(bundle: &Path) -> Option<String> {
    let text = fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    spec["annotations"][GROUP_ANNOTATION]
        .as_str()
        .map(str::to_string)
}

/// `sha256(<daemon>/<ns>/<grouping>[/debug])` under [`SOCKET_DIR`], as containerd's
/// `pkg/shim.SocketAddress` computes it.
fn hashed_socket(daemon: &Path, ns: &str, grouping: &str, debug: bool) -> PathBuf {
    let mut path = daemon.join(ns).join(grouping);
    if debug {
        path.push("debug");
    }
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    Path::new(SOCKET_DIR).join(hex::encode(digest))
}

fn debug_socket(daemon: &Path, ns: &str, grouping: &str) -> PathBuf {
    hashed_socket(daemon, ns, grouping, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_files_name_filesystem_sockets_only() {
        assert_eq!(
            socket_path("unix:///run/containerd/s/ab\n"),
            Some(PathBuf::from("/run/containerd/s/ab"))
        );
        assert_eq!(socket_path("/run/containerd/s/ab"), None);
        assert_eq!(socket_path("unix://relative"), None);
    }

    #[test]
    fn socket_hash_is_sha256_of_the_joined_path() {
        assert_eq!(
            hashed_socket(
                Path::new("/run/containerd/containerd.sock"),
                "default",
                "t1",
                false
            ),
            Path::new(
                "/run/containerd/s/df6a0c5cd2e9a1a16d9a3f2447365d9fc6021bc1d3d9a4caa2f5b2c4f773758f"
            )
        );
        assert_eq!(
            debug_socket(Path::new("/a.sock"), "ns", "g"),
            Path::new(
                "/run/containerd/s/8e214b22ae325cc3ac37004ebd1601780f6a93b74d129af78c32d5a87c5472d1"
            )
        );
    }
}
