//! Shared setup for the shim end-to-end tests (`shim_*.rs`): a private containerd (1.6.20 or
//! v2.3.4) with OUR `containerd-shim-runc-v2` first in its PATH and the busybox test image
//! imported, plus helpers to look at shims, bundles and runc state.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::bins;
use integration::containerd::{Builder, Containerd};
use integration::image::TestImage;
use integration::procs;

/// A private containerd running our shim, with the busybox image imported.
pub struct Env {
    pub c: Containerd,
    pub image: String,
    pub work: tempfile::TempDir,
}

/// Which containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gen {
    V1,
    V2,
}

impl Env {
    /// containerd 1.6.20 (or 2.3.4; `None` when BERTH_CONTAINERD2_DIR is unset, already
    /// reported loudly by the harness) with our shim first in PATH.
    pub fn start(gen: Gen, test: &str) -> Option<Env> {
        Self::start_with(gen, test, bins::our_shim_dir(), "")
    }

    pub fn start_with(gen: Gen, test: &str, shim_dir: bins::ShimDir, extra: &str) -> Option<Env> {
        let builder: Builder = match gen {
            Gen::V1 => Containerd::v1(),
            Gen::V2 => Containerd::v2(test)?,
        };
        let work = tempfile::tempdir().expect("tempdir");
        let img = TestImage::busybox().expect("busybox test image");
        let archive = work.path().join("busybox.oci.tar");
        img.write_oci_archive(&archive).expect("write image archive");
        let c = builder
            .shim_dir(shim_dir)
            .extra_config(extra)
            .start()
            .expect("containerd starts");
        c.import(&archive);
        Some(Env {
            c,
            image: img.name.clone(),
            work,
        })
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        self.c.ctr(args)
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        self.c.ctr_ok(args)
    }

    /// `ctr t ls` line of a task: (pid, status).
    pub fn task_status(&self, id: &str) -> Option<(String, String)> {
        let out = self.ctr_ok(&["t", "ls"]);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| (f[1].to_string(), f[2].to_string()))
        })
    }

    /// Waits until `ctr t ls` shows `status` for the task.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> (String, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.task_status(id);
            if let Some(s) = &s {
                if s.1 == status {
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "task {id} did not reach {status} within {timeout:?}; last: {s:?}\nlog:\n{}",
                self.c.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pid of the shim serving a task (from its `shim.pid` in the bundle).
    pub fn shim_pid(&self, id: &str) -> i32 {
        let p = self.c.bundle_dir(id).join("shim.pid");
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            .trim()
            .parse()
            .expect("shim.pid holds a number")
    }

    /// The shim's executable (resolved), to prove it is ours.
    pub fn shim_exe(&self, id: &str) -> PathBuf {
        let pid = self.shim_pid(id);
        fs::read_link(format!("/proc/{pid}/exe")).expect("shim exe link")
    }

    pub fn runc_state_dir(&self, id: &str) -> PathBuf {
        Path::new(integration::containerd::RUNC_ROOT)
            .join(self.c.namespace())
            .join(id)
    }
}

/// Our shim binary, canonicalized.
pub fn our_shim() -> PathBuf {
    fs::canonicalize(bins::our_shim_bin()).expect("our shim binary")
}

/// Asserts nothing of task `id` is left: bundle dir, runc state, processes, mounts.
pub fn assert_task_gone(env: &Env, id: &str) {
    let bundle = env.c.bundle_dir(id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bundle.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!bundle.exists(), "bundle {} left behind", bundle.display());
    assert!(!env.runc_state_dir(id).exists(), "runc state of {id} left behind");
    assert!(
        procs::mounts_under(&env.c.state().join("io.containerd.runtime.v2.task")).is_empty(),
        "rootfs mounts left behind"
    );
}
