//! The `TestDaemon` API, exercised with stand-ins until berthd serves its API: a binary that
//! fails at startup, and Debian's containerd in berthd's place (same flags, same config keys,
//! same protocol), so start/ctr/kill -9/restart/stop are checked against a real daemon.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use integration::bins::debian_go_shim_dir;
use integration::daemon::{DaemonError, TestDaemon};
use integration::image::TestImage;
use integration::procs;
use integration::require_bin;

#[test]
fn startup_failure_reports_exit_status_and_log_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = dir.path().join("berthd");
    fs::write(
        &fake,
        "#!/bin/sh\necho \"boom: bad config $2\" >&2\nexit 3\n",
    )
    .expect("write");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = TestDaemon::builder()
        .bin(&fake)
        .start()
        .expect_err("must fail");
    let DaemonError::EarlyExit {
        status, tail, log, ..
    } = &err
    else {
        panic!("expected EarlyExit, got {err}");
    };
    assert!(status.contains('3'), "{status}");
    assert!(
        tail.contains("boom: bad config") && tail.contains("config.toml"),
        "{tail}"
    );
    let base = log.parent().expect("base");
    assert!(
        !base.exists(),
        "failed start must remove {}",
        base.display()
    );
}

const CONTAINERD_AS_BERTHD: &str = r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{address}"
"#;

#[test]
fn lifecycle_against_a_real_daemon_in_berthds_place() {
    let containerd = require_bin("containerd", "containerd");
    let mut d = TestDaemon::builder()
        .bin(&containerd)
        // Explicitly Debian's Go shim: this test checks the harness, not our shim.
        .shim_dir(debian_go_shim_dir())
        .config(CONTAINERD_AS_BERTHD)
        .start()
        .expect("start");
    assert!(d.address().starts_with(d.state()));
    let v = d.ctr_ok(&["version"]);
    assert!(v.contains("Server:"), "{v}");

    let work = tempfile::tempdir().expect("tmp");
    let archive = work.path().join("busybox.oci.tar");
    TestImage::busybox()
        .expect("image")
        .write_oci_archive(&archive)
        .expect("archive");
    d.ctr_ok(&["images", "import", &archive.to_string_lossy()]);
    d.ctr_ok(&[
        "run",
        "-d",
        "docker.io/library/busybox:test",
        "c1",
        "sleep",
        "1000",
    ]);

    let first_pid = d.pid().expect("running");
    d.kill9();
    assert!(!procs::is_alive(i32::try_from(first_pid).expect("pid")));
    assert!(
        d.leftover_processes().len() >= 2,
        "shim + container survive kill -9"
    );
    d.restart().expect("restart");
    assert_ne!(d.pid(), Some(first_pid));
    let tasks = d.ctr_ok(&["tasks", "ls"]);
    assert!(tasks.contains("c1") && tasks.contains("RUNNING"), "{tasks}");

    let leftovers = d.leftover_processes();
    let base = d.root().parent().expect("base").to_path_buf();
    let problems = d.stop();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!base.exists());
    assert!(
        leftovers.iter().all(|&p| !procs::is_alive(p)),
        "left: {leftovers:?}"
    );
}
