//! A private containerd for interop tests, in two generations.
//!
//! - [`Generation::V1`]: Debian's `containerd` 1.6.20 (task API v2), config `version = 2`,
//!   driven with Debian's `ctr` (1.6's ctr and daemon must agree).
//! - [`Generation::V2`]: containerd v2.3.4 from `$BERTH_CONTAINERD2_DIR` (task API v3,
//!   Transfer service), config `version = 3`, driven with its own `ctr`.
//!
//! Each instance lives in one temp directory (`root/`, `state/`, `config.toml`,
//! `containerd.log`), listens on `state/containerd.sock` (+ `.ttrpc`), has the CRI plugins
//! (and NRI, whose socket is global) disabled, and runs with a chosen [`ShimDir`] first in its
//! PATH so it uses that `containerd-shim-runc-v2` (ours or a Go one). `ctr` calls default to a
//! namespace unique to the instance, which also makes the runc root of its containers
//! (`/run/containerd/runc/<ns>`) private, so cleanup can find them.
//!
//! Cleanup (on [`Containerd::stop`] and on `Drop`, which also runs on panic): stop the daemon,
//! SIGKILL leftover shims (found by the instance's directory in their argv or cwd) and their
//! descendants, `runc delete --force` every container in the namespace's runc root, remove
//! shim sockets, unmount everything under the instance directory and delete it. On panic the
//! daemon's log tail is printed.

use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins::{self, require_bin, ShimDir};
use crate::procs;
use crate::subreaper;

/// Where the Go shims keep runc state: `<RUNC_ROOT>/<namespace>/<id>`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// Errors from starting or stopping a private containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("setting up {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawning {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("containerd ({bin}) exited during startup with {status}; log {log}:\n{tail}")]
    EarlyExit {
        bin: PathBuf,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("containerd did not answer `ctr version` on {socket} within {secs}s; last ctr error: {ctr_err}\nlog {log}:\n{tail}")]
    NotReady {
        socket: PathBuf,
        secs: u64,
        ctr_err: String,
        log: PathBuf,
        tail: String,
    },
    #[error("subreaper: {0}")]
    Subreaper(#[from] subreaper::SubreaperError),
}

/// Which containerd to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Debian's containerd 1.6.20 (`/usr/bin/containerd`, `/usr/bin/ctr`).
    V1,
    /// containerd v2.3.4 from `$BERTH_CONTAINERD2_DIR`.
    V2,
}

/// Builder for a private containerd.
#[derive(Debug)]
pub struct Builder {
    generation: Generation,
    bin_dir: Option<PathBuf>,
    shim_dir: Option<ShimDir>,
    extra_config: String,
    namespace: Option<String>,
}

impl Builder {
    /// Directory holding `containerd` and `ctr` (required for [`Generation::V2`]; for V1
    /// defaults to Debian's binaries in PATH).
    #[must_use]
    pub fn bin_dir(mut self, dir: &Path) -> Self {
        self.bin_dir = Some(dir.to_path_buf());
        self
    }

    /// Shim directory to put first in the daemon's PATH (kept alive by the instance). Default:
    /// Debian's Go shim for V1, the Go shim beside its `containerd` for V2.
    #[must_use]
    pub fn shim_dir(mut self, dir: ShimDir) -> Self {
        self.shim_dir = Some(dir);
        self
    }

    /// TOML appended verbatim to the generated config (plugin sections).
    #[must_use]
    pub fn extra_config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Namespace `ctr` uses by default (instead of a unique `berth-test-<random>` one).
    #[must_use]
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// Writes the config and starts the daemon; returns once `ctr version` answers.
    ///
    /// # Errors
    /// Setup, spawn, early exit or not ready within 30 s (with the log tail).
    ///
    /// # Panics
    /// When a required binary is missing (naming the package to install).
    pub fn start(self) -> Result<Containerd, ContainerdError> {
        subreaper::ensure()?;
        let (containerd, ctr) = match (self.generation, &self.bin_dir) {
            (_, Some(d)) => (d.join("containerd"), d.join("ctr")),
            (Generation::V1, None) => (
                require_bin("containerd", "containerd"),
                require_bin("ctr", "containerd"),
            ),
            (Generation::V2, None) => panic!(
                "containerd v2 needs a bin_dir: use Containerd::v2(), which reads ${}",
                bins::CONTAINERD2_ENV
            ),
        };
        let _ = require_bin("runc", "runc");
        // Always an explicit shim: without one, containerd v2 would find Debian's 1.6 Go shim
        // in /usr/bin before its own (PATH wins over the daemon's directory).
        let shim_dir = match (self.shim_dir, self.generation) {
            (Some(d), _) => d,
            (None, Generation::V1) => bins::debian_go_shim_dir(),
            (None, Generation::V2) => ShimDir::new(
                &containerd
                    .parent()
                    .unwrap_or_else(|| Path::new("/"))
                    .join("containerd-shim-runc-v2"),
            ),
        };
        let base = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir()
            .map_err(|source| ContainerdError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        let suffix = base
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("berth-ctrd-")
                    .to_lowercase()
            })
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>();
        let namespace = self
            .namespace
            .unwrap_or_else(|| format!("berth-test-{suffix}"));
        let mut c = Containerd {
            generation: self.generation,
            containerd,
            ctr,
            root: base.join("root"),
            state: base.join("state"),
            config: base.join("config.toml"),
            log: base.join("containerd.log"),
            base,
            shim_dir: Some(shim_dir),
            namespace,
            child: None,
        };
        c.write_config(&self.extra_config)?;
        c.spawn_and_wait()?;
        Ok(c)
    }
}

/// A running private containerd. Dropping it stops it and removes everything it created.
#[derive(Debug)]
pub struct Containerd {
    generation: Generation,
    containerd: PathBuf,
    ctr: PathBuf,
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    log: PathBuf,
    shim_dir: Option<ShimDir>,
    namespace: String,
    child: Option<Child>,
}

impl Containerd {
    /// Builder for Debian's containerd 1.6.20.
    #[must_use]
    pub fn v1() -> Builder {
        Builder {
            generation: Generation::V1,
            bin_dir: None,
            shim_dir: None,
            extra_config: String::new(),
            namespace: None,
        }
    }

    /// Builder for containerd v2.3.4 from `$BERTH_CONTAINERD2_DIR`; `None` (after printing
    /// loudly that `test_name` did not run) when the variable is unset. Fails under `CI=true`.
    #[must_use]
    pub fn v2(test_name: &str) -> Option<Builder> {
        let dir = bins::containerd2_dir(test_name)?;
        Some(Builder {
            generation: Generation::V2,
            bin_dir: Some(dir),
            shim_dir: None,
            extra_config: String::new(),
            namespace: None,
        })
    }

    fn write_config(&self, extra: &str) -> Result<(), ContainerdError> {
        let (version, disabled) = match self.generation {
            Generation::V1 => (
                2,
                r#""io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs""#,
            ),
            Generation::V2 => (
                3,
                r#""io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs""#,
            ),
        };
        let text = format!(
            "# generated by berth's integration harness\n\
             version = {version}\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [{disabled}]\n\n\
             [grpc]\n  address = \"{sock}\"\n\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\n\
             [debug]\n  level = \"debug\"\n\n{extra}",
            root = self.root.display(),
            state = self.state.display(),
            sock = self.address().display(),
        );
        fs::write(&self.config, text).map_err(|source| ContainerdError::Io {
            path: self.config.clone(),
            source,
        })
    }

    fn spawn_and_wait(&mut self) -> Result<(), ContainerdError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| ContainerdError::Io {
                path: self.log.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| ContainerdError::Io {
            path: self.log.clone(),
            source,
        })?;
        let mut path = String::new();
        if let Some(d) = &self.shim_dir {
            path.push_str(&d.path().to_string_lossy());
            path.push(':');
        }
        path.push_str("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let child = subreaper::spawn_registered(
            Command::new(&self.containerd)
                .arg("--config")
                .arg(&self.config)
                .env("PATH", path)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .process_group(0),
        )
        .map_err(|source| ContainerdError::Spawn {
            bin: self.containerd.clone(),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + timeout;
        let mut last_err = String::from("socket not created yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    subreaper::unregister(child.id());
                    self.child = None;
                    return Err(ContainerdError::EarlyExit {
                        bin: self.containerd.clone(),
                        status: status.to_string(),
                        log: self.log.clone(),
                        tail: self.log_tail(40),
                    });
                }
            }
            if self.address().exists() {
                match self.ctr_raw(&["version"]) {
                    Ok(o) if o.status.success() => return Ok(()),
                    Ok(o) => last_err = String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => last_err = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(ContainerdError::NotReady {
                    socket: self.address(),
                    secs: timeout.as_secs(),
                    ctr_err: last_err,
                    log: self.log.clone(),
                    tail: self.log_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Which containerd this is.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The gRPC socket path (what `ctr --address` and berth's CLI take).
    #[must_use]
    pub fn address(&self) -> PathBuf {
        self.state.join("containerd.sock")
    }

    /// The ttrpc socket path (shims publish events there).
    #[must_use]
    pub fn ttrpc_address(&self) -> PathBuf {
        self.state.join("containerd.sock.ttrpc")
    }

    /// containerd's `root` (content, snapshots, metadata).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// containerd's `state` (sockets, task bundles).
    #[must_use]
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The generated config file.
    #[must_use]
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The daemon's log file (stdout+stderr, debug level).
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The namespace `ctr` calls use.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The `ctr` binary matching this daemon.
    #[must_use]
    pub fn ctr_bin(&self) -> &Path {
        &self.ctr
    }

    /// The `containerd` binary.
    #[must_use]
    pub fn containerd_bin(&self) -> &Path {
        &self.containerd
    }

    /// The shim directory first in the daemon's PATH, if one was given.
    #[must_use]
    pub fn shim_dir(&self) -> Option<&Path> {
        self.shim_dir.as_ref().map(ShimDir::path)
    }

    /// The daemon's pid while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runtime state directory of a task: `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
    #[must_use]
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.state
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// The last `lines` lines of the daemon's log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A `ctr` command with `--address` and `--namespace` set (add args, then run it).
    #[must_use]
    pub fn ctr_command(&self) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        c
    }

    fn ctr_raw(&self, args: &[&str]) -> std::io::Result<Output> {
        self.ctr_command().args(args).output()
    }

    /// Runs `ctr <args>` against this daemon and returns its output (any exit status).
    ///
    /// # Panics
    /// When `ctr` cannot be executed at all.
    #[must_use]
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_raw(args)
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", self.ctr.display()))
    }

    /// Runs `ctr <args>`, requires success and returns stdout.
    ///
    /// # Panics
    /// When `ctr` fails: the message has its stderr and the daemon's log tail.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "`ctr {}` failed ({}):\nstdout: {}\nstderr: {}\ncontainerd log tail ({}):\n{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log.display(),
            self.log_tail(60)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Imports an image archive (`ctr images import <tar>`), returning ctr's output.
    ///
    /// # Panics
    /// When the import fails (see [`Containerd::ctr_ok`]).
    pub fn import(&self, archive: &Path) -> String {
        self.ctr_ok(&["images", "import", &archive.to_string_lossy()])
    }

    /// SIGKILLs the daemon (shims and containers keep running) and waits for it to die.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            subreaper::unregister(child.id());
        }
    }

    /// Starts the daemon again on the same root, state and config (after [`Containerd::kill9`]
    /// or [`Containerd::stop_daemon`]); a running daemon is killed first.
    ///
    /// # Errors
    /// As for starting.
    pub fn restart(&mut self) -> Result<(), ContainerdError> {
        self.kill9();
        self.spawn_and_wait()
    }

    /// SIGTERM the daemon and wait up to 10 s (then SIGKILL). Shims keep running.
    /// Returns the exit status description, or `None` if it was not running.
    pub fn stop_daemon(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s.to_string()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    break child
                        .wait()
                        .ok()
                        .map(|s| format!("{s} (SIGKILLed after 10s)"));
                }
            }
        };
        subreaper::unregister(child.id());
        status
    }

    /// Leftover shim processes of this instance (argv or cwd under its directory), with their
    /// descendants (runc, container processes), and its containers' processes.
    #[must_use]
    pub fn leftover_processes(&self) -> Vec<i32> {
        leftover_processes(&self.base, &self.namespace, self.pid())
    }

    /// Mount points under the instance directory (rootfs mounts, snapshot mounts).
    #[must_use]
    pub fn leftover_mounts(&self) -> Vec<PathBuf> {
        procs::mounts_under(&self.base)
    }

    /// Stops everything and removes all files; returns what it could not clean (empty when
    /// clean). Idempotent; also run by `Drop`.
    pub fn stop(&mut self) -> Vec<String> {
        self.stop_daemon();
        cleanup_instance(&self.base, &self.state, &self.namespace)
    }
}

/// Shim processes of a daemon instance (argv or cwd mentioning `base`) with their
/// descendants, plus the processes of containers in the namespace's runc root.
pub(crate) fn leftover_processes(base: &Path, namespace: &str, daemon: Option<u32>) -> Vec<i32> {
    let daemon = daemon.and_then(|p| i32::try_from(p).ok());
    let shims: Vec<i32> = procs::processes_mentioning(&base.to_string_lossy())
        .into_iter()
        .filter(|p| Some(*p) != daemon)
        .collect();
    let mut all = procs::with_descendants(&shims);
    all.extend(runc_container_pids(namespace));
    all.sort_unstable();
    all.dedup();
    all
}

/// Everything after the daemon is stopped: kill leftover shims and containers, delete runc
/// state, remove shim sockets, cgroups, mounts and the instance directory.
pub(crate) fn cleanup_instance(base: &Path, state: &Path, namespace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let leftovers = leftover_processes(base, namespace, None);
    let alive = procs::kill_all_and_wait(&leftovers, Duration::from_secs(10));
    if !alive.is_empty() {
        problems.push(format!("processes still alive after SIGKILL: {alive:?}"));
    }
    delete_runc_containers(namespace, &mut problems);
    remove_shim_sockets(state);
    if let Err(e) = procs::remove_tree(base) {
        problems.push(e.to_string());
    }
    remove_cgroups(namespace);
    problems
}

fn runc_root(namespace: &str) -> PathBuf {
    Path::new(RUNC_ROOT).join(namespace)
}

/// Init pids (and descendants) of containers in `/run/containerd/runc/<ns>`.
fn runc_container_pids(namespace: &str) -> Vec<i32> {
    let Ok(rd) = fs::read_dir(runc_root(namespace)) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in rd.filter_map(Result::ok) {
        let Ok(text) = fs::read_to_string(e.path().join("state.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(pid) = v["init_process_pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
        {
            if pid > 0 {
                pids.push(pid);
            }
        }
    }
    procs::with_descendants(&pids)
}

fn delete_runc_containers(namespace: &str, problems: &mut Vec<String>) {
    let root = runc_root(namespace);
    let Ok(rd) = fs::read_dir(&root) else { return };
    let runc = bins::find_bin("runc").unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"));
    for e in rd.filter_map(Result::ok) {
        let id = e.file_name().to_string_lossy().into_owned();
        let o = Command::new(&runc)
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id])
            .output();
        if let Ok(o) = o {
            if !o.status.success() && e.path().exists() {
                problems.push(format!(
                    "runc delete --force {id}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
    }
    let _ = fs::remove_dir(&root);
}

/// Shim sockets live outside the instance dir (containerd's are `/run/containerd/s/<hash>`);
/// each task bundle records its shim's address in an `address` file.
fn remove_shim_sockets(state: &Path) {
    let tasks = state.join("io.containerd.runtime.v2.task");
    let Ok(namespaces) = fs::read_dir(&tasks) else {
        return;
    };
    for ns in namespaces.filter_map(Result::ok) {
        let Ok(ids) = fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.filter_map(Result::ok) {
            if let Ok(addr) = fs::read_to_string(id.path().join("address")) {
                let p = PathBuf::from(addr.trim().trim_start_matches("unix://"));
                let is_socket = fs::symlink_metadata(&p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt as _;
                    m.file_type().is_socket()
                });
                if p.is_absolute() && is_socket {
                    let _ = fs::remove_file(p);
                }
            }
        }
    }
}

/// Removes the (empty, after `runc delete`) cgroup directories `<hierarchy>/<namespace>`.
fn remove_cgroups(namespace: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.filter_map(Result::ok) {
        let dir = h.path().join(namespace);
        if let Ok(children) = fs::read_dir(&dir) {
            for c in children.filter_map(Result::ok) {
                if c.path().is_dir() {
                    let _ = fs::remove_dir(c.path());
                }
            }
            let _ = fs::remove_dir(&dir);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- containerd log tail ({}) ---\n{}\n--- end of containerd log ---",
                self.log.display(),
                self.log_tail(80)
            );
        }
        let problems = self.stop();
        if !problems.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "containerd harness cleanup problems: {problems:?}"
            );
        }
    }
}
