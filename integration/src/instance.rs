//! The private-daemon core shared by [`crate::daemon::TestDaemon`] (berthd) and
//! [`crate::containerd::Containerd`]: both run one daemon on a temporary directory and differ
//! only in the binary, the config they write and how they decide the daemon is ready.
//!
//! An [`Instance`] owns `<tmp>/{root,state,config.toml,<name>.log}`, the daemon's socket
//! `state/<socket>` (+ `.ttrpc`), a namespace unique to it (also making the runc root of its
//! containers, `/run/containerd/runc/<ns>`, private), and the daemon child process (spawned in
//! its own process group, registered with the [`crate::subreaper`]). It provides the accessors,
//! `ctr` command, `kill -9`/SIGTERM/restart, leftover checks and cleanup that both handles
//! expose unchanged.
//!
//! Cleanup (on [`Instance::stop`] and on `Drop`, which also runs on panic and then prints the
//! log tail): stop the daemon, SIGKILL leftover shims (found by the instance's directory in
//! their argv or cwd) and their descendants, `runc delete --force` every container in the
//! namespace's runc root, remove the shim sockets its shims created (see
//! [`crate::shim_sockets`]), unmount everything under the instance directory and delete it,
//! and remove the namespace's cgroups.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins::{self, ShimDir};
use crate::procs;
use crate::shim_sockets::{ShimSockets, TASK_DIR};
use crate::subreaper;

/// Where the Go shims (and ours) keep runc state: `<RUNC_ROOT>/<namespace>/<id>`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

/// PATH after the shim directory: the usual system directories.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The accessors, clients and lifecycle methods `TestDaemon` and `Containerd` share, each
/// delegating to the handle's `core: Instance` field (`ctr`/`ctr_ok` run the handle's own
/// `ctr_command`); invoked inside their `impl` blocks so both keep these as inherent methods
/// (source-compatible with the time each had its own copy).
macro_rules! delegate_to_instance {
    () => {
        /// The gRPC socket path (what `ctr --address` and berth's CLI take).
        #[must_use]
        pub fn address(&self) -> std::path::PathBuf {
            self.core.address()
        }

        /// The ttrpc socket path (`<address>.ttrpc`; shims publish events there).
        #[must_use]
        pub fn ttrpc_address(&self) -> std::path::PathBuf {
            self.core.ttrpc_address()
        }

        /// The daemon's `root` (content, snapshots, metadata).
        #[must_use]
        pub fn root(&self) -> &std::path::Path {
            self.core.root()
        }

        /// The daemon's `state` (sockets, task bundles).
        #[must_use]
        pub fn state(&self) -> &std::path::Path {
            self.core.state()
        }

        /// The config file the daemon runs with.
        #[must_use]
        pub fn config_path(&self) -> &std::path::Path {
            self.core.config_path()
        }

        /// The daemon's log file (stdout + stderr, debug level).
        #[must_use]
        pub fn log_path(&self) -> &std::path::Path {
            self.core.log_path()
        }

        /// The namespace the `ctr` (and `berth`) helpers use.
        #[must_use]
        pub fn namespace(&self) -> &str {
            self.core.namespace()
        }

        /// The shim directory first in the daemon's PATH, if there is one.
        #[must_use]
        pub fn shim_dir(&self) -> Option<&std::path::Path> {
            self.core.shim_dir()
        }

        /// The daemon's pid while it runs.
        #[must_use]
        pub fn pid(&self) -> Option<u32> {
            self.core.pid()
        }

        /// Runtime state directory of a task: `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
        #[must_use]
        pub fn bundle_dir(&self, id: &str) -> std::path::PathBuf {
            self.core.bundle_dir(id)
        }

        /// The whole log as a string.
        #[must_use]
        pub fn logs(&self) -> String {
            self.core.logs()
        }

        /// The last `lines` lines of the log.
        #[must_use]
        pub fn log_tail(&self, lines: usize) -> String {
            self.core.log_tail(lines)
        }

        /// Runs `ctr <args>` (the handle's `ctr_command`) and returns its output (any exit
        /// status).
        ///
        /// # Panics
        /// When `ctr` cannot be executed at all.
        #[must_use]
        pub fn ctr(&self, args: &[&str]) -> std::process::Output {
            let mut ctr = self.ctr_command();
            ctr.args(args)
                .output()
                .unwrap_or_else(|e| panic!("running {:?} {args:?}: {e}", ctr.get_program()))
        }

        /// Runs `ctr <args>`, requiring success; returns stdout.
        ///
        /// # Panics
        /// On failure, with stdout, stderr and the daemon's log tail.
        pub fn ctr_ok(&self, args: &[&str]) -> String {
            self.core.check_ok("ctr", args, &self.ctr(args))
        }

        /// `<client> --address <socket> --namespace <ns>` (stdin from /dev/null): any ctr-like
        /// binary bound to this daemon, e.g. another generation's `ctr`; add args and run.
        #[must_use]
        pub fn client_command(&self, client: &std::path::Path) -> std::process::Command {
            self.core.client_command(client)
        }

        /// Our CLI (`berth`) bound to this daemon; add args and run.
        ///
        /// # Panics
        /// When `berth` is not built (with the cargo command).
        #[must_use]
        pub fn berth_command(&self) -> std::process::Command {
            self.core
                .client_command(&$crate::bins::berth_bin("berth", "cli"))
        }

        /// Runs `berth <args>` (any exit status).
        ///
        /// # Panics
        /// When `berth` cannot be executed.
        #[must_use]
        pub fn berth(&self, args: &[&str]) -> std::process::Output {
            self.berth_command()
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("running berth {args:?}: {e}"))
        }

        /// Runs `berth <args>`, requiring success; returns stdout.
        ///
        /// # Panics
        /// On failure, with stderr and the daemon's log tail.
        pub fn berth_ok(&self, args: &[&str]) -> String {
            self.core.check_ok("berth", args, &self.berth(args))
        }

        /// SIGKILLs the daemon (shims and containers keep running) and waits for it to die.
        pub fn kill9(&mut self) {
            self.core.kill9();
        }

        /// SIGTERM the daemon and wait up to 10 s (then SIGKILL). Shims keep running.
        /// Returns the exit status description, or `None` if it was not running.
        pub fn stop_daemon(&mut self) -> Option<String> {
            self.core.stop_daemon()
        }

        /// Leftover shim processes of this instance (argv or cwd under its directory), with
        /// their descendants (runc, container processes), and its containers' processes.
        #[must_use]
        pub fn leftover_processes(&self) -> Vec<i32> {
            self.core.leftover_processes()
        }

        /// Mount points under the instance directory (rootfs mounts, snapshot mounts).
        #[must_use]
        pub fn leftover_mounts(&self) -> Vec<std::path::PathBuf> {
            self.core.leftover_mounts()
        }

        /// Sockets in `/run/containerd/s` created by this instance's shims that are still
        /// there (a SIGKILLed Go shim leaves its socket; `stop` removes them).
        #[must_use]
        pub fn leftover_shim_sockets(&self) -> Vec<std::path::PathBuf> {
            self.core.leftover_shim_sockets()
        }

        /// Stops everything and removes all files; returns what it could not clean (empty
        /// when clean). Idempotent; also run on drop.
        pub fn stop(&mut self) -> Vec<String> {
            self.core.stop()
        }
    };
}
pub(crate) use delegate_to_instance;

/// Errors from starting a daemon; each handle maps them onto its own public error enum.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstanceError {
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
    #[error("{bin} exited during startup with {status}; log {log}:\n{tail}")]
    EarlyExit {
        bin: PathBuf,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{socket} not ready within {secs}s ({last_err}); log {log}:\n{tail}")]
    NotReady {
        socket: PathBuf,
        secs: u64,
        last_err: String,
        log: PathBuf,
        tail: String,
    },
}

/// What is fixed when an instance is created.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The daemon's name in messages and its log file name (`berthd`, `containerd`).
    pub name: &'static str,
    /// Temp directory prefix (`berthd-`, `berth-ctrd-`).
    pub dir_prefix: &'static str,
    /// Socket file name in the state directory (`berth.sock`, `containerd.sock`).
    pub socket: &'static str,
    pub bin: PathBuf,
    pub shim_dir: Option<ShimDir>,
    /// `ctr`'s namespace; default `berth-test-<random>`.
    pub namespace: Option<String>,
}

/// One private daemon on a temporary directory; see the module docs.
#[derive(Debug)]
pub(crate) struct Instance {
    name: &'static str,
    socket: &'static str,
    bin: PathBuf,
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    log: PathBuf,
    shim_dir: Option<ShimDir>,
    namespace: String,
    child: Option<Child>,
    shim_sockets: ShimSockets,
}

impl Instance {
    /// Creates the instance directory (nothing runs yet).
    pub(crate) fn create(spec: Spec) -> Result<Instance, InstanceError> {
        let base = tempfile::Builder::new()
            .prefix(spec.dir_prefix)
            .tempdir()
            .map_err(|source| InstanceError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        let suffix: String = base
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches(spec.dir_prefix)
                    .to_lowercase()
            })
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let state = base.join("state");
        let address = state.join(spec.socket);
        let ttrpc = state.join(format!("{}.ttrpc", spec.socket));
        Ok(Instance {
            name: spec.name,
            socket: spec.socket,
            bin: spec.bin,
            root: base.join("root"),
            config: base.join("config.toml"),
            log: base.join(format!("{}.log", spec.name)),
            shim_sockets: ShimSockets::new(&state, vec![address, ttrpc]),
            state,
            base,
            shim_dir: spec.shim_dir,
            namespace: spec
                .namespace
                .unwrap_or_else(|| format!("berth-test-{suffix}")),
            child: None,
        })
    }

    /// Writes the config file.
    pub(crate) fn write_config(&self, text: &str) -> Result<(), InstanceError> {
        fs::write(&self.config, text).map_err(|source| InstanceError::Io {
            path: self.config.clone(),
            source,
        })
    }

    /// Spawns `<bin> --config <config> <args>` with the shim directory first in PATH, output
    /// appended to the log, in its own process group.
    pub(crate) fn spawn(
        &mut self,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<(), InstanceError> {
        let io_err = |path: &Path, source| InstanceError::Io {
            path: path.to_path_buf(),
            source,
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| io_err(&self.log, e))?;
        let log2 = log.try_clone().map_err(|e| io_err(&self.log, e))?;
        let mut path = String::new();
        if let Some(d) = &self.shim_dir {
            path.push_str(&d.path().to_string_lossy());
            path.push(':');
        }
        path.push_str(SYSTEM_PATH);
        let child = subreaper::spawn_registered(
            Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .env("PATH", path)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .process_group(0),
        )
        .map_err(|source| InstanceError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        self.child = Some(child);
        self.shim_sockets.watch();
        Ok(())
    }

    /// Polls `probe` every `interval` until it succeeds; fails when the daemon exits first or
    /// after `timeout` (with `probe`'s last error).
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        interval: Duration,
        mut probe: impl FnMut(&Instance) -> Result<(), String>,
    ) -> Result<(), InstanceError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    subreaper::unregister(child.id());
                    self.child = None;
                    return Err(InstanceError::EarlyExit {
                        bin: self.bin.clone(),
                        status: status.to_string(),
                        log: self.log.clone(),
                        tail: self.log_tail(40),
                    });
                }
            }
            let last_err = match probe(self) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(InstanceError::NotReady {
                    socket: self.address(),
                    secs: timeout.as_secs(),
                    last_err,
                    log: self.log.clone(),
                    tail: self.log_tail(40),
                });
            }
            thread::sleep(interval);
        }
    }

    pub(crate) fn bin(&self) -> &Path {
        &self.bin
    }

    pub(crate) fn address(&self) -> PathBuf {
        self.state.join(self.socket)
    }

    pub(crate) fn ttrpc_address(&self) -> PathBuf {
        self.state.join(format!("{}.ttrpc", self.socket))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn state(&self) -> &Path {
        &self.state
    }

    pub(crate) fn config_path(&self) -> &Path {
        &self.config
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn shim_dir(&self) -> Option<&Path> {
        self.shim_dir.as_ref().map(ShimDir::path)
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        self.state.join(TASK_DIR).join(&self.namespace).join(id)
    }

    pub(crate) fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = self.logs();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `<client> --address <socket> --namespace <ns>` (ctr, berth) with stdin from /dev/null.
    pub(crate) fn client_command(&self, client: &Path) -> Command {
        let mut c = Command::new(client);
        c.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        c
    }

    /// Requires `o` (of `<tool> <args>`) to have succeeded; returns its stdout.
    ///
    /// # Panics
    /// On failure, with stdout, stderr and the daemon's log tail.
    pub(crate) fn check_ok(&self, tool: &str, args: &[&str], o: &Output) -> String {
        assert!(
            o.status.success(),
            "`{tool} {}` failed ({}):\nstdout: {}\nstderr: {}\n{} log tail ({}):\n{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.name,
            self.log.display(),
            self.log_tail(60)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// SIGKILLs the daemon (shims and containers keep running) and waits for it to die.
    pub(crate) fn kill9(&mut self) {
        // The restarted daemon deletes the bundles of shims that die meanwhile.
        self.shim_sockets.scan_now();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            subreaper::unregister(child.id());
        }
    }

    /// SIGTERM the daemon and wait up to 10 s (then SIGKILL). Shims keep running.
    /// Returns the exit status description, or `None` if it was not running.
    pub(crate) fn stop_daemon(&mut self) -> Option<String> {
        self.shim_sockets.scan_now();
        let mut child = self.child.take()?;
        let _ = kill(
            Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
            Signal::SIGTERM,
        );
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

    /// Shim processes of this instance (argv or cwd mentioning its directory) with their
    /// descendants, plus the processes of containers in the namespace's runc root.
    pub(crate) fn leftover_processes(&self) -> Vec<i32> {
        leftover_processes(&self.base, &self.namespace, self.pid())
    }

    /// Mount points under the instance directory.
    pub(crate) fn leftover_mounts(&self) -> Vec<PathBuf> {
        procs::mounts_under(&self.base)
    }

    /// Shim sockets this instance's shims created that are still on disk.
    pub(crate) fn leftover_shim_sockets(&self) -> Vec<PathBuf> {
        self.shim_sockets.scan_now();
        self.shim_sockets
            .known()
            .into_iter()
            .filter(|p| fs::symlink_metadata(p).is_ok())
            .collect()
    }

    /// Stops everything and removes all files; returns what it could not clean (empty when
    /// clean). Idempotent.
    pub(crate) fn stop(&mut self) -> Vec<String> {
        self.stop_daemon();
        let mut problems = Vec::new();
        let leftovers = leftover_processes(&self.base, &self.namespace, None);
        let alive = procs::kill_all_and_wait(&leftovers, Duration::from_secs(10));
        if !alive.is_empty() {
            problems.push(format!("processes still alive after SIGKILL: {alive:?}"));
        }
        delete_runc_containers(&self.namespace, &mut problems);
        let live = self.shim_sockets.remove_dead();
        if !live.is_empty() {
            problems.push(format!(
                "shim sockets still accepting connections, left in place: {live:?}"
            ));
        }
        if let Err(e) = procs::remove_tree(&self.base) {
            problems.push(e.to_string());
        }
        remove_cgroups(&self.namespace);
        problems
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- {name} log tail ({}) ---\n{}\n--- end of {name} log ---",
                self.log.display(),
                self.log_tail(80),
                name = self.name,
            );
        }
        let problems = self.stop();
        if !problems.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "{} harness cleanup problems: {problems:?}",
                self.name
            );
        }
    }
}

fn leftover_processes(base: &Path, namespace: &str, daemon: Option<u32>) -> Vec<i32> {
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
