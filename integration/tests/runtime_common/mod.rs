//! Shared setup for berthd's runtime end-to-end tests (`runtime_*.rs`): berthd on a temporary
//! root with a chosen shim first in its PATH (ours, Debian's Go shim speaking task API v2, or
//! containerd v2.3.4's speaking v3), the busybox test image imported, and helpers over
//! Debian's `ctr` (which berthd must satisfy unchanged).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use integration::bins::{self, ShimDir};
use integration::daemon::TestDaemon;
use integration::image::TestImage;
use integration::procs;
use integration::tasks;

/// Which shim runs `io.containerd.runc.v2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shim {
    /// Ours (shim/), target/<profile>/containerd-shim-runc-v2.
    Ours,
    /// Debian's Go shim (containerd 1.6.20, task API v2).
    DebianGo,
    /// containerd v2.3.4's Go shim (task API v3, protobuf bootstrap).
    Go23,
}

impl Shim {
    /// The shim binary, or `None` (after saying so loudly) when v2.3.4 is not available.
    pub fn binary(self, test: &str) -> Option<PathBuf> {
        match self {
            Shim::Ours => Some(bins::our_shim_bin()),
            Shim::DebianGo => Some(bins::require_bin("containerd-shim-runc-v2", "containerd")),
            Shim::Go23 => bins::containerd2_dir(test).map(|d| d.join("containerd-shim-runc-v2")),
        }
    }
}

/// berthd with a shim and the busybox image.
pub struct Env {
    pub d: TestDaemon,
    pub image: String,
    pub shim: PathBuf,
    pub work: tempfile::TempDir,
    /// A `ctr` other than Debian's (containerd v2.3.4's) for [`Env::ctr`].
    pub ctr_bin: Option<PathBuf>,
}

impl Env {
    /// Starts berthd with `shim` first in PATH and `extra` appended to its config.
    pub fn start(shim: Shim, test: &str, extra: &str) -> Option<Env> {
        let shim_bin = shim.binary(test)?;
        let work = tempfile::tempdir().expect("tempdir");
        let img = TestImage::busybox().expect("busybox test image");
        let archive = work.path().join("busybox.oci.tar");
        img.write_oci_archive(&archive)
            .expect("write image archive");
        let d = TestDaemon::builder()
            .shim_dir(ShimDir::new(&shim_bin))
            .extra_config(extra)
            .start()
            .expect("berthd starts");
        d.ctr_ok(&["images", "import", &archive.to_string_lossy()]);
        Some(Env {
            d,
            image: img.name.clone(),
            shim: shim_bin,
            work,
            ctr_bin: None,
        })
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut ctr = match &self.ctr_bin {
            None => self.d.ctr_command(),
            Some(bin) => self.d.client_command(bin),
        };
        ctr.args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {:?} {args:?}: {e}", ctr.get_program()))
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "`ctr {}` failed ({}):\nstdout: {}\nstderr: {}\nberthd log tail:\n{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.d.log_tail(40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ctr t ls` line of a task: (pid, status).
    pub fn task_status(&self, id: &str) -> Option<(String, String)> {
        tasks::parse_status(&self.ctr_ok(&["t", "ls"]), id)
    }

    /// Waits until `ctr t ls` shows `status` for the task.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> (String, String) {
        tasks::wait_status(
            id,
            status,
            timeout,
            || self.task_status(id),
            || self.d.log_tail(40),
        )
    }

    /// The bundle directory of a task.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.d.bundle_dir(id)
    }

    /// Pid of the shim serving a task: the process started with `-namespace <ns> -id <id>`.
    pub fn shim_pid(&self, id: &str) -> i32 {
        let found = tasks::shim_pids(self.d.namespace(), id);
        assert_eq!(found.len(), 1, "one shim for {id}: {found:?}");
        found[0]
    }

    /// Asserts nothing of task `id` is left: bundle, rootfs mount, shim.
    pub fn assert_task_gone(&self, id: &str) {
        let bundle = self.bundle_dir(id);
        let deadline = Instant::now() + Duration::from_secs(5);
        while bundle.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!bundle.exists(), "bundle {} left behind", bundle.display());
        let mounts = procs::mounts_under(&bundle);
        assert!(
            mounts.is_empty(),
            "rootfs mounts of {id} left behind: {mounts:?}"
        );
    }

    /// Asserts the instance left no shim/container process, mount or bundle.
    pub fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs_left = self.d.leftover_processes();
            let mounts = procs::mounts_under(self.d.state());
            let bundles: Vec<PathBuf> = std::fs::read_dir(
                self.d
                    .state()
                    .join("io.containerd.runtime.v2.task")
                    .join(self.d.namespace()),
            )
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
            if procs_left.is_empty() && mounts.is_empty() && bundles.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: processes {procs_left:?} ({:?}), mounts {mounts:?}, bundles {bundles:?}",
                procs_left.iter().map(|p| procs::cmdline(*p).join(" ")).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Zombie children of the test process (it is the subreaper of every shim).
pub fn zombie_children() -> Vec<i32> {
    let me = i32::try_from(std::process::id()).expect("pid");
    procs::all_processes()
        .into_iter()
        .filter(|p| p.ppid == me && p.state == 'Z')
        .map(|p| p.pid)
        .collect()
}

/// `ctr events` in the background ([`Events::start`]`(&env)` subscribes with Debian's ctr
/// bound to berthd, whatever [`Env::ctr_bin`] says).
#[allow(unused_imports)] // not every test binary that includes this module subscribes
pub use integration::events::Events;

impl integration::events::CtrTarget for Env {
    fn ctr_command(&self) -> std::process::Command {
        self.d.ctr_command()
    }
}

/// Asserts a command failed and its stderr mentions every needle.
pub fn assert_fails_with(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure, got success; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for n in needles {
        assert!(err.contains(n), "stderr does not mention {n:?}: {err}");
    }
}

/// A wrapper script `name` that records each invocation in `log` then execs `target`.
pub fn runtime_wrapper(dir: &Path, name: &str, target: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            target.display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
    p
}
