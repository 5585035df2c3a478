//! `TestDaemon`: berthd on a temporary root, state and socket, for end-to-end tests.
//!
//! Mirrors [`crate::containerd::Containerd`] so the same test can drive either daemon: a
//! generated `config.toml` (containerd's keys: `version`, `root`, `state`, `[grpc] address`,
//! `[ttrpc] address`) plus optional extra TOML, our shim directory first in PATH, logs in a
//! file printed on panic, `ctr` (Debian's, which berthd must satisfy unchanged) and `berth`
//! helpers bound to the socket and a per-instance namespace, `kill -9`, restart on the same
//! directories, and cleanup of shims, containers, mounts and files on stop/drop.
//!
//! The berthd binary comes from `$BERTH_BIN_DIR` or the cargo target dir (see
//! [`crate::bins::berth_bin`]); ready means its gRPC socket accepts connections.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins::{self, require_bin, ShimDir};
use crate::containerd::{cleanup_instance, leftover_processes};
use crate::procs;
use crate::subreaper;

/// Errors from starting berthd.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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
    #[error("berthd ({bin}) exited during startup with {status}; log {log}:\n{tail}")]
    EarlyExit {
        bin: PathBuf,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("berthd did not accept connections on {socket} within {secs}s; log {log}:\n{tail}")]
    NotReady {
        socket: PathBuf,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("subreaper: {0}")]
    Subreaper(#[from] subreaper::SubreaperError),
}

/// How to start berthd.
#[derive(Debug, Default)]
pub struct Builder {
    bin: Option<PathBuf>,
    shim_dir: Option<ShimDir>,
    extra_config: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    namespace: Option<String>,
    config_override: Option<String>,
}

impl Builder {
    /// Use this berthd binary instead of the built one.
    #[must_use]
    pub fn bin(mut self, bin: &Path) -> Self {
        self.bin = Some(bin.to_path_buf());
        self
    }

    /// Shim directory first in berthd's PATH (default: our shim, when built).
    #[must_use]
    pub fn shim_dir(mut self, dir: ShimDir) -> Self {
        self.shim_dir = Some(dir);
        self
    }

    /// TOML appended to the generated config.
    #[must_use]
    pub fn extra_config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Replace the generated config entirely; `{root}`, `{state}` and `{address}` are
    /// substituted with the instance's paths.
    #[must_use]
    pub fn config(mut self, template: &str) -> Self {
        self.config_override = Some(template.to_string());
        self
    }

    /// Extra command-line argument for berthd (after `--config <path>`).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Extra environment variable for berthd.
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Namespace for the `ctr`/`berth` helpers (default: unique per instance).
    #[must_use]
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// Starts berthd and waits until its socket accepts connections (30 s).
    ///
    /// # Errors
    /// Setup, spawn, early exit (with the log tail) or not ready.
    ///
    /// # Panics
    /// When berthd is not built (with the cargo command to build it).
    pub fn start(self) -> Result<TestDaemon, DaemonError> {
        subreaper::ensure()?;
        let bin = self.bin.unwrap_or_else(bins::berthd_bin);
        let shim_dir = self.shim_dir.or_else(|| {
            let shim = bins::berth_bin_dir().join("containerd-shim-runc-v2");
            shim.exists().then(|| ShimDir::new(&shim))
        });
        let base = tempfile::Builder::new()
            .prefix("berthd-")
            .tempdir()
            .map_err(|source| DaemonError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        let suffix: String = base
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("berthd-")
                    .to_lowercase()
            })
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let d = TestDaemon {
            bin,
            root: base.join("root"),
            state: base.join("state"),
            config: base.join("config.toml"),
            log: base.join("berthd.log"),
            base,
            shim_dir,
            args: self.args,
            env: self.env,
            namespace: self
                .namespace
                .unwrap_or_else(|| format!("berth-test-{suffix}")),
            child: None,
        };
        let text = match self.config_override {
            Some(t) => t
                .replace("{root}", &d.root.to_string_lossy())
                .replace("{state}", &d.state.to_string_lossy())
                .replace("{address}", &d.address().to_string_lossy()),
            None => format!(
                "# generated by berth's integration harness\n\
                 version = 2\n\
                 root = \"{}\"\n\
                 state = \"{}\"\n\n\
                 [grpc]\n  address = \"{}\"\n\n\
                 [ttrpc]\n  address = \"{}\"\n\n\
                 [debug]\n  level = \"debug\"\n\n{}",
                d.root.display(),
                d.state.display(),
                d.address().display(),
                d.ttrpc_address().display(),
                self.extra_config
            ),
        };
        fs::write(&d.config, text).map_err(|source| DaemonError::Io {
            path: d.config.clone(),
            source,
        })?;
        let mut d = d;
        d.spawn_and_wait()?;
        Ok(d)
    }
}

/// A running berthd; stopped and cleaned up on drop (also on panic, printing its log).
#[derive(Debug)]
pub struct TestDaemon {
    bin: PathBuf,
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    log: PathBuf,
    shim_dir: Option<ShimDir>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    namespace: String,
    child: Option<Child>,
}

impl TestDaemon {
    /// Builder with defaults (built berthd, our shim, generated config).
    #[must_use]
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts berthd with the default config.
    ///
    /// # Errors
    /// See [`Builder::start`].
    pub fn start() -> Result<Self, DaemonError> {
        Builder::default().start()
    }

    fn spawn_and_wait(&mut self) -> Result<(), DaemonError> {
        let io_err = |path: &Path, source| DaemonError::Io {
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
        path.push_str("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let child = subreaper::spawn_registered(
            Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .args(&self.args)
                .env("PATH", path)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .process_group(0),
        )
        .map_err(|source| DaemonError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        self.child = Some(child);
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    subreaper::unregister(child.id());
                    self.child = None;
                    return Err(DaemonError::EarlyExit {
                        bin: self.bin.clone(),
                        status: status.to_string(),
                        log: self.log.clone(),
                        tail: self.log_tail(40),
                    });
                }
            }
            if UnixStream::connect(self.address()).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NotReady {
                    socket: self.address(),
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                    tail: self.log_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// gRPC socket path.
    #[must_use]
    pub fn address(&self) -> PathBuf {
        self.state.join("berth.sock")
    }

    /// ttrpc socket path (`<address>.ttrpc`).
    #[must_use]
    pub fn ttrpc_address(&self) -> PathBuf {
        self.state.join("berth.sock.ttrpc")
    }

    /// Root directory (content, snapshots, metadata).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// State directory (sockets, task bundles).
    #[must_use]
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The config file berthd was started with.
    #[must_use]
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// berthd's log file (stdout + stderr).
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Namespace used by the `ctr`/`berth` helpers.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// berthd's pid while running.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whole log as a string.
    #[must_use]
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Last `lines` lines of the log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.logs();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Debian's `ctr` bound to this daemon (`--address`, `--namespace`); add args and run.
    #[must_use]
    pub fn ctr_command(&self) -> Command {
        let mut c = Command::new(require_bin("ctr", "containerd"));
        c.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        c
    }

    /// Runs Debian's `ctr <args>` against berthd (any exit status).
    ///
    /// # Panics
    /// When `ctr` cannot be executed.
    #[must_use]
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running ctr {args:?}: {e}"))
    }

    /// Runs `ctr <args>`, requiring success; returns stdout.
    ///
    /// # Panics
    /// On failure, with stderr and berthd's log tail.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        check_ok("ctr", args, &self.ctr(args), self)
    }

    /// Our CLI (`berth`) bound to this daemon; add args and run.
    ///
    /// # Panics
    /// When `berth` is not built (with the cargo command).
    #[must_use]
    pub fn berth_command(&self) -> Command {
        let mut c = Command::new(bins::berth_bin("berth", "cli"));
        c.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        c
    }

    /// Runs `berth <args>` (any exit status).
    ///
    /// # Panics
    /// When `berth` cannot be executed.
    #[must_use]
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running berth {args:?}: {e}"))
    }

    /// Runs `berth <args>`, requiring success; returns stdout.
    ///
    /// # Panics
    /// On failure, with stderr and berthd's log tail.
    pub fn berth_ok(&self, args: &[&str]) -> String {
        check_ok("berth", args, &self.berth(args), self)
    }

    /// SIGKILL berthd (shims and containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            subreaper::unregister(child.id());
        }
    }

    /// SIGTERM berthd and wait up to 10 s (then SIGKILL); returns its exit status.
    pub fn stop_daemon(&mut self) -> Option<String> {
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

    /// Starts berthd again on the same root/state/config (a running one is killed first).
    ///
    /// # Errors
    /// As for starting.
    pub fn restart(&mut self) -> Result<(), DaemonError> {
        self.kill9();
        self.spawn_and_wait()
    }

    /// Shims and containers started under this instance that are still alive.
    #[must_use]
    pub fn leftover_processes(&self) -> Vec<i32> {
        leftover_processes(&self.base, &self.namespace, self.pid())
    }

    /// Mounts under the instance directory.
    #[must_use]
    pub fn leftover_mounts(&self) -> Vec<PathBuf> {
        procs::mounts_under(&self.base)
    }

    /// Stops berthd and removes everything; returns what could not be cleaned.
    pub fn stop(&mut self) -> Vec<String> {
        self.stop_daemon();
        cleanup_instance(&self.base, &self.state, &self.namespace)
    }
}

fn check_ok(tool: &str, args: &[&str], o: &Output, d: &TestDaemon) -> String {
    assert!(
        o.status.success(),
        "`{tool} {}` failed ({}):\nstdout: {}\nstderr: {}\nberthd log tail ({}):\n{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log.display(),
        d.log_tail(60)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- berthd log tail ({}) ---\n{}\n--- end of berthd log ---",
                self.log.display(),
                self.log_tail(80)
            );
        }
        let problems = self.stop();
        if !problems.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "berthd harness cleanup problems: {problems:?}"
            );
        }
    }
}
