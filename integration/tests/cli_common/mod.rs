//! Shared pieces of the `berth` CLI tests (`cli_*.rs`): one [`Daemon`] type over the two
//! servers `berth` must drive — a private Debian containerd 1.6.20 (with Debian's Go shim)
//! and berthd ([`TestDaemon`]) — each in its own namespace, plus helpers to run `berth` and
//! Debian's `ctr` against it and to write the harness's test image archives.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration::bins;
use integration::containerd::{Containerd, Generation};
use integration::daemon::TestDaemon;
use integration::image::TestImage;

/// The server under test.
pub enum Daemon {
    Containerd(Containerd),
    Berthd(TestDaemon),
}

impl Daemon {
    /// Debian's containerd 1.6.20 with Debian's Go shim.
    pub fn containerd() -> Self {
        Daemon::Containerd(
            Containerd::v1()
                .start()
                .expect("start private containerd 1.6.20"),
        )
    }

    /// containerd v2.3.4 (task API v3) from `$BERTH_CONTAINERD2_DIR`, or `None` after the
    /// harness has said loudly that `test_name` did not run.
    pub fn containerd2(test_name: &str) -> Option<Self> {
        Containerd::v2(test_name)
            .map(|b| Daemon::Containerd(b.start().expect("start private containerd 2.3.4")))
    }

    /// berthd with our shim.
    pub fn berthd() -> Self {
        Daemon::Berthd(TestDaemon::start().expect("start berthd"))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Daemon::Containerd(_) => "containerd",
            Daemon::Berthd(_) => "berthd",
        }
    }

    /// Absolute path of the shim this daemon runs by default (for `--runtime <path>`).
    pub fn shim_path(&self) -> PathBuf {
        match self {
            // containerd 2.x needs its own shim (bootstrap protocol, task API v3).
            Daemon::Containerd(c) if c.generation() == Generation::V2 => c
                .containerd_bin()
                .parent()
                .expect("containerd 2 directory")
                .join("containerd-shim-runc-v2"),
            Daemon::Containerd(_) => {
                integration::require_bin("containerd-shim-runc-v2", "containerd")
            }
            Daemon::Berthd(_) => bins::our_shim_bin(),
        }
    }

    pub fn address(&self) -> PathBuf {
        match self {
            Daemon::Containerd(c) => c.address(),
            Daemon::Berthd(d) => d.address(),
        }
    }

    pub fn namespace(&self) -> String {
        match self {
            Daemon::Containerd(c) => c.namespace().to_string(),
            Daemon::Berthd(d) => d.namespace().to_string(),
        }
    }

    fn log_tail(&self) -> String {
        match self {
            Daemon::Containerd(c) => c.log_tail(40),
            Daemon::Berthd(d) => d.log_tail(40),
        }
    }

    /// `berth --address <socket> --namespace <ns>`, stdin from /dev/null.
    pub fn berth_command(&self) -> Command {
        match self {
            Daemon::Containerd(c) => c.berth_command(),
            Daemon::Berthd(d) => d.berth_command(),
        }
    }

    /// Runs `berth <args>` (any exit status).
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running berth {args:?}: {e}"))
    }

    /// Runs `berth <args>`, requiring success; returns stdout.
    pub fn berth_ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        assert!(
            o.status.success(),
            "`berth {}` against {} failed ({}):\nstdout: {}\nstderr: {}\nlog tail:\n{}",
            args.join(" "),
            self.name(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs Debian's `ctr <args>` against the same socket and namespace; requires success.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        match self {
            Daemon::Containerd(c) => c.ctr_ok(args),
            Daemon::Berthd(d) => d.ctr_ok(args),
        }
    }
}

/// Writes the harness's busybox test image as an OCI archive and a docker archive into
/// `dir`; returns (image, oci tar, docker tar).
pub fn busybox_archives(dir: &Path) -> (TestImage, PathBuf, PathBuf) {
    let img = TestImage::busybox().expect("build busybox test image");
    let oci = dir.join("busybox.oci.tar");
    let docker = dir.join("busybox.docker.tar");
    img.write_oci_archive(&oci).expect("write OCI archive");
    img.write_docker_archive(&docker)
        .expect("write docker archive");
    (img, oci, docker)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Path argument as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
