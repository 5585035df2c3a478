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
//! [`crate::bins::berth_bin`]); ready means its gRPC socket accepts connections. Directories,
//! process handling and cleanup are the private-daemon core (`instance.rs`) that
//! [`crate::containerd::Containerd`] shares; this module adds berthd's config and clients.

use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::{self, require_bin, ShimDir};
use crate::instance::{Instance, InstanceError, Spec};
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

impl From<InstanceError> for DaemonError {
    fn from(e: InstanceError) -> Self {
        match e {
            InstanceError::Io { path, source } => DaemonError::Io { path, source },
            InstanceError::Spawn { bin, source } => DaemonError::Spawn { bin, source },
            InstanceError::EarlyExit {
                bin,
                status,
                log,
                tail,
            } => DaemonError::EarlyExit {
                bin,
                status,
                log,
                tail,
            },
            InstanceError::NotReady {
                socket,
                secs,
                log,
                tail,
                ..
            } => DaemonError::NotReady {
                socket,
                secs,
                log,
                tail,
            },
        }
    }
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
        let core = Instance::create(Spec {
            name: "berthd",
            dir_prefix: "berthd-",
            socket: "berth.sock",
            bin,
            shim_dir,
            namespace: self.namespace,
        })?;
        let text = match self.config_override {
            Some(t) => t
                .replace("{root}", &core.root().to_string_lossy())
                .replace("{state}", &core.state().to_string_lossy())
                .replace("{address}", &core.address().to_string_lossy()),
            None => format!(
                "# generated by berth's integration harness\n\
                 version = 2\n\
                 root = \"{}\"\n\
                 state = \"{}\"\n\n\
                 [grpc]\n  address = \"{}\"\n\n\
                 [ttrpc]\n  address = \"{}\"\n\n\
                 [debug]\n  level = \"debug\"\n\n{}",
                core.root().display(),
                core.state().display(),
                core.address().display(),
                core.ttrpc_address().display(),
                self.extra_config
            ),
        };
        core.write_config(&text)?;
        let mut d = TestDaemon {
            core,
            args: self.args,
            env: self.env,
        };
        d.spawn_and_wait()?;
        Ok(d)
    }
}

/// A running berthd; stopped and cleaned up on drop (also on panic, printing its log).
#[derive(Debug)]
pub struct TestDaemon {
    core: Instance,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl TestDaemon {
    // address, root, state, logs, ctr/ctr_ok, berth*, kill9, stop_daemon, leftovers, stop…
    // come from the shared core.
    crate::instance::delegate_to_instance!();

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
        self.core.spawn(&self.args, &self.env)?;
        self.core
            .wait_ready(Duration::from_secs(30), Duration::from_millis(25), |c| {
                UnixStream::connect(c.address())
                    .map(drop)
                    .map_err(|e| e.to_string())
            })?;
        Ok(())
    }

    /// Debian's `ctr` bound to this daemon (`--address`, `--namespace`); add args and run.
    #[must_use]
    pub fn ctr_command(&self) -> Command {
        self.core.client_command(&require_bin("ctr", "containerd"))
    }

    /// Starts berthd again on the same root/state/config (a running one is killed first).
    ///
    /// # Errors
    /// As for starting.
    pub fn restart(&mut self) -> Result<(), DaemonError> {
        self.kill9();
        self.spawn_and_wait()
    }
}
