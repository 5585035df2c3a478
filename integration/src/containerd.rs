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
//! Directories, the daemon process, `kill -9`/restart and cleanup (on [`Containerd::stop`] and
//! on `Drop`, which also runs on panic and prints the log tail) are the private-daemon core
//! (`instance.rs`) shared with [`crate::daemon::TestDaemon`]: it kills leftover shims and
//! containers, deletes their runc state, removes the sockets its shims created, unmounts and
//! deletes the instance directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::{self, require_bin, ShimDir};
use crate::instance::{Instance, InstanceError, Spec};
use crate::subreaper;

/// Where the Go shims keep runc state: `<RUNC_ROOT>/<namespace>/<id>`.
pub const RUNC_ROOT: &str = crate::instance::RUNC_ROOT;

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

impl From<InstanceError> for ContainerdError {
    fn from(e: InstanceError) -> Self {
        match e {
            InstanceError::Io { path, source } => ContainerdError::Io { path, source },
            InstanceError::Spawn { bin, source } => ContainerdError::Spawn { bin, source },
            InstanceError::EarlyExit {
                bin,
                status,
                log,
                tail,
            } => ContainerdError::EarlyExit {
                bin,
                status,
                log,
                tail,
            },
            InstanceError::NotReady {
                socket,
                secs,
                last_err,
                log,
                tail,
            } => ContainerdError::NotReady {
                socket,
                secs,
                ctr_err: last_err,
                log,
                tail,
            },
        }
    }
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
        let core = Instance::create(Spec {
            name: "containerd",
            dir_prefix: "berth-ctrd-",
            socket: "containerd.sock",
            bin: containerd,
            shim_dir: Some(shim_dir),
            namespace: self.namespace,
        })?;
        let mut c = Containerd {
            generation: self.generation,
            ctr,
            core,
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
    ctr: PathBuf,
    core: Instance,
}

impl Containerd {
    // address, root, state, logs, ctr/ctr_ok, berth*, kill9, stop_daemon, leftovers, stop…
    // come from the shared core.
    crate::instance::delegate_to_instance!();

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
            root = self.core.root().display(),
            state = self.core.state().display(),
            sock = self.address().display(),
        );
        Ok(self.core.write_config(&text)?)
    }

    fn spawn_and_wait(&mut self) -> Result<(), ContainerdError> {
        self.core.spawn(&[], &[])?;
        let ctr = self.ctr.clone();
        self.core
            .wait_ready(Duration::from_secs(30), Duration::from_millis(50), |c| {
                if !c.address().exists() {
                    return Err("socket not created yet".to_string());
                }
                match c.client_command(&ctr).arg("version").output() {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })?;
        Ok(())
    }

    /// Which containerd this is.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The `ctr` binary matching this daemon.
    #[must_use]
    pub fn ctr_bin(&self) -> &Path {
        &self.ctr
    }

    /// The `containerd` binary.
    #[must_use]
    pub fn containerd_bin(&self) -> &Path {
        self.core.bin()
    }

    /// A `ctr` command with `--address` and `--namespace` set (add args, then run it).
    #[must_use]
    pub fn ctr_command(&self) -> Command {
        self.core.client_command(&self.ctr)
    }

    /// Imports an image archive (`ctr images import <tar>`), returning ctr's output.
    ///
    /// # Panics
    /// When the import fails (see [`Containerd::ctr_ok`]).
    pub fn import(&self, archive: &Path) -> String {
        self.ctr_ok(&["images", "import", &archive.to_string_lossy()])
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
}
