//! The systems under test and the one client that drives them all.
//!
//! Every system runs on private directories through the harness builders
//! ([`TestDaemon`], [`Containerd`]), so a bench run never touches the machine's own daemons and
//! everything is removed on drop. Every system is driven by the SAME client, Debian's `ctr`
//! (spawned once per operation), so the client's cost is identical in every column and the
//! differences are daemon + shim.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bins::{self, ShimDir};
use crate::containerd::Containerd;
use crate::daemon::TestDaemon;
use crate::image::TestImage;
use crate::procs;

use super::BenchError;

/// A system the bench can measure (a closed set: one column each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    /// berthd + our shim + runc.
    Berth,
    /// Debian's containerd 1.6.20 + its Go shim + runc.
    Containerd,
    /// containerd 1.6.20 + OUR shim: isolates the shim's share of the cost.
    ContainerdBerthShim,
    /// containerd v2.3.4 + its Go shim (only with `$BERTH_CONTAINERD2_DIR`).
    Containerd2,
}

impl SystemKind {
    /// Every system, in column order.
    pub const ALL: [SystemKind; 4] = [
        SystemKind::Berth,
        SystemKind::Containerd,
        SystemKind::ContainerdBerthShim,
        SystemKind::Containerd2,
    ];

    /// The key used on the command line and in the JSON.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            SystemKind::Berth => "berth",
            SystemKind::Containerd => "containerd",
            SystemKind::ContainerdBerthShim => "containerd-berth-shim",
            SystemKind::Containerd2 => "containerd2",
        }
    }

    /// Column heading.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            SystemKind::Berth => "berthd + berth shim",
            SystemKind::Containerd => "containerd 1.6.20 + Go shim",
            SystemKind::ContainerdBerthShim => "containerd 1.6.20 + berth shim",
            SystemKind::Containerd2 => "containerd 2.3.4 + Go shim",
        }
    }

    /// Parses a key (see [`SystemKind::key`]).
    ///
    /// # Errors
    /// Unknown key, listing the valid ones.
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        Self::ALL
            .into_iter()
            .find(|k| k.key() == s)
            .ok_or_else(|| BenchError::Args(format!(
                "unknown system `{s}`: expected one of berth, containerd, containerd-berth-shim, containerd2"
            )))
    }
}

/// The binaries a bench run uses, resolved once.
#[derive(Debug, Clone)]
pub struct Bins {
    /// Debian's `ctr`, the client for every system.
    pub ctr: PathBuf,
    pub runc: PathBuf,
    pub berthd: PathBuf,
    /// Our `containerd-shim-runc-v2`.
    pub shim: PathBuf,
    /// containerd v2.3.4's directory, when `$BERTH_CONTAINERD2_DIR` is set.
    pub containerd2: Option<PathBuf>,
    /// berth's own client (`berth`, beside berthd), when built: the latency scenario also
    /// times `berth run --rm` against every system.
    pub berth: Option<PathBuf>,
}

impl Bins {
    /// Resolves the binaries: berth's from `dir` (default: the directory of the running
    /// executable, so a release bench uses release berthd and shim), system ones from PATH.
    ///
    /// # Errors
    /// A missing binary, with the package or cargo command that provides it.
    pub fn resolve(dir: Option<&Path>) -> Result<Self, BenchError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::var_os(bins::BIN_DIR_ENV)
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .and_then(|e| e.parent().map(Path::to_path_buf))
                })
                .unwrap_or_else(bins::berth_bin_dir),
        };
        let berth = |name: &str, pkg: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(BenchError::MissingBin {
                    bin: p,
                    fix: format!("cargo build --release -p {pkg} (or pass --bin-dir)"),
                })
            }
        };
        let system = |name: &str, pkg: &str| {
            bins::find_bin(name).ok_or_else(|| BenchError::MissingBin {
                bin: PathBuf::from(name),
                fix: format!("apt-get install -y {pkg}"),
            })
        };
        let containerd2 = std::env::var_os(bins::CONTAINERD2_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        Ok(Self {
            ctr: system("ctr", "containerd")?,
            runc: system("runc", "runc")?,
            berthd: berth("berthd", "daemon")?,
            shim: berth("containerd-shim-runc-v2", "shim")?,
            containerd2,
            berth: Some(dir.join("berth")).filter(|p| p.is_file()),
        })
    }
}

/// A started system: one of the harness daemons, with the busybox image imported.
#[derive(Debug)]
pub enum Instance {
    Berth(TestDaemon),
    Containerd(Containerd),
}

impl Instance {
    /// Starts `kind` on private directories and imports `image_archive` (the busybox test
    /// image) when given. Harness panics (a missing binary) become errors, so one broken system does not
    /// stop the others from being measured.
    ///
    /// # Errors
    /// The daemon failed to start, or the image import failed.
    pub fn start(
        kind: SystemKind,
        bins: &Bins,
        image_archive: Option<&Path>,
    ) -> Result<Self, BenchError> {
        let err = |msg: String| BenchError::Start {
            system: kind.key(),
            msg,
        };
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match kind {
            SystemKind::Berth => TestDaemon::builder()
                .bin(&bins.berthd)
                .shim_dir(ShimDir::new(&bins.shim))
                .extra_config("")
                .start()
                .map(Instance::Berth)
                .map_err(|e| e.to_string()),
            SystemKind::Containerd => Containerd::v1()
                .start()
                .map(Instance::Containerd)
                .map_err(|e| e.to_string()),
            SystemKind::ContainerdBerthShim => Containerd::v1()
                .shim_dir(ShimDir::new(&bins.shim))
                .start()
                .map(Instance::Containerd)
                .map_err(|e| e.to_string()),
            SystemKind::Containerd2 => match Containerd::v2("berth-bench containerd2 column") {
                Some(b) => b
                    .start()
                    .map(Instance::Containerd)
                    .map_err(|e| e.to_string()),
                None => Err(format!("{} is not set", bins::CONTAINERD2_ENV)),
            },
        }));
        let inst = match started {
            Ok(Ok(i)) => i,
            Ok(Err(msg)) => return Err(err(msg)),
            Err(panic) => return Err(err(panic_message(panic.as_ref()))),
        };
        let Some(image_archive) = image_archive else {
            return Ok(inst);
        };
        let client = inst.client(bins);
        let o = client
            .command(&["images", "import", &image_archive.to_string_lossy()])
            .output()
            .map_err(|e| err(format!("running ctr images import: {e}")))?;
        if !o.status.success() {
            return Err(err(format!(
                "ctr images import failed: {}\ndaemon log tail:\n{}",
                String::from_utf8_lossy(&o.stderr).trim(),
                inst.log_tail(20)
            )));
        }
        Ok(inst)
    }

    /// The gRPC socket.
    #[must_use]
    pub fn address(&self) -> PathBuf {
        match self {
            Instance::Berth(d) => d.address(),
            Instance::Containerd(c) => c.address(),
        }
    }

    /// Namespace the bench uses on this instance.
    #[must_use]
    pub fn namespace(&self) -> &str {
        match self {
            Instance::Berth(d) => d.namespace(),
            Instance::Containerd(c) => c.namespace(),
        }
    }

    /// The daemon's pid while it runs.
    #[must_use]
    pub fn daemon_pid(&self) -> Option<i32> {
        match self {
            Instance::Berth(d) => d.pid(),
            Instance::Containerd(c) => c.pid(),
        }
        .and_then(|p| i32::try_from(p).ok())
    }

    /// The last lines of the daemon's log (for error reports).
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Instance::Berth(d) => d.log_tail(lines),
            Instance::Containerd(c) => c.log_tail(lines),
        }
    }

    /// SIGKILL the daemon; shims and containers keep running.
    pub fn kill9(&mut self) {
        match self {
            Instance::Berth(d) => d.kill9(),
            Instance::Containerd(c) => c.kill9(),
        }
    }

    /// Starts the daemon again on the same directories; returns once its socket answers
    /// (berthd: accepts a connection; containerd: `ctr version` succeeds — the harness polls
    /// every 25 / 50 ms).
    ///
    /// # Errors
    /// The daemon failed to come back.
    pub fn restart(&mut self) -> Result<(), String> {
        match self {
            Instance::Berth(d) => d.restart().map_err(|e| e.to_string()),
            Instance::Containerd(c) => c.restart().map_err(|e| e.to_string()),
        }
    }

    /// The shim processes serving this instance (argv names our address; zombies excluded).
    #[must_use]
    pub fn shim_pids(&self) -> Vec<i32> {
        let addr = self.address().to_string_lossy().into_owned();
        let daemon = self.daemon_pid();
        procs::all_processes()
            .into_iter()
            .filter(|p| p.state != 'Z' && Some(p.pid) != daemon)
            .filter(|p| {
                let argv = procs::cmdline(p.pid);
                argv.first()
                    .is_some_and(|a0| a0.ends_with("containerd-shim-runc-v2"))
                    && argv
                        .iter()
                        .any(|a| a == &addr || a.trim_start_matches("unix://") == addr)
            })
            .map(|p| p.pid)
            .collect()
    }

    /// A client bound to this instance.
    #[must_use]
    pub fn client(&self, bins: &Bins) -> Client {
        Client {
            ctr: bins.ctr.clone(),
            berth: bins.berth.clone(),
            address: self.address(),
            namespace: self.namespace().to_string(),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Debian's `ctr` bound to one instance (address + namespace).
#[derive(Debug, Clone)]
pub struct Client {
    ctr: PathBuf,
    /// berth's CLI, when built (see [`Bins::berth`]).
    berth: Option<PathBuf>,
    address: PathBuf,
    namespace: String,
}

impl Client {
    /// A blocking `ctr` command with the global flags set.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.ctr);
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs `ctr <args>` and returns its wall time and stdout, or the error (stderr, exit
    /// status, or "timed out after …" — the process is killed then).
    ///
    /// # Errors
    /// As described: a message for the report.
    pub async fn run(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<(Duration, String), String> {
        let what = format!("ctr {}", args.first().copied().unwrap_or_default());
        timed(self.command(args), timeout, &what).await
    }

    /// Whether berth's CLI is available for [`Client::run_berth`].
    #[must_use]
    pub fn has_berth(&self) -> bool {
        self.berth.is_some()
    }

    /// Runs `berth <args>` (berth's own client, same global flags as ctr) like
    /// [`Client::run`].
    ///
    /// # Errors
    /// As [`Client::run`]; also when berth's CLI was not built.
    pub async fn run_berth(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> Result<(Duration, String), String> {
        let Some(berth) = &self.berth else {
            return Err("berth CLI not built (cargo build --release -p cli)".into());
        };
        let mut c = std::process::Command::new(berth);
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null());
        let what = format!("berth {}", args.first().copied().unwrap_or_default());
        timed(c, timeout, &what).await
    }
}

/// Runs `cmd` (stdout and stderr captured) and returns its wall time and stdout, or an error
/// message naming `what` (stderr and exit status, spawn failure, or timeout — the process is
/// killed then).
///
/// # Errors
/// As described: a message for the report.
pub async fn timed(
    cmd: std::process::Command,
    timeout: Duration,
    what: &str,
) -> Result<(Duration, String), String> {
    let mut c = tokio::process::Command::from(cmd);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let child = c.spawn().map_err(|e| format!("spawning {what}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!("{what} timed out after {}s", timeout.as_secs())),
        Ok(Err(e)) => Err(format!("waiting for {what}: {e}")),
        Ok(Ok(o)) => {
            let elapsed = start.elapsed();
            if o.status.success() {
                Ok((elapsed, String::from_utf8_lossy(&o.stdout).into_owned()))
            } else {
                Err(format!(
                    "{what} failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        }
    }
}

/// Writes the busybox test image as an importable archive into `dir`; returns its path and
/// the image reference.
///
/// # Errors
/// Building or writing the image.
pub fn write_image(dir: &Path) -> Result<(PathBuf, String), BenchError> {
    let img = TestImage::busybox().map_err(|e| BenchError::Image(e.to_string()))?;
    let path = dir.join("busybox.oci.tar");
    img.write_oci_archive(&path)
        .map_err(|e| BenchError::Image(e.to_string()))?;
    Ok((path, img.name))
}
