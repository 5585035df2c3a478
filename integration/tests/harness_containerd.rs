//! The private containerd harness works end to end with real containerd 1.6.20 and v2.3.4,
//! real Go shims and runc, and cleans up after itself.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use integration::bins::{self, ShimDir};
use integration::containerd::{Builder, Containerd};
use integration::image::TestImage;
use integration::procs;

/// A shim dir whose `containerd-shim-runc-v2` records its argv, then execs `real_shim`:
/// proves the daemon took the shim from the PATH entry we chose.
fn recording_shim_dir(work: &Path, real_shim: &Path) -> (ShimDir, std::path::PathBuf) {
    let marker = work.join("shim-calls.log");
    let script = work.join("recording-shim");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            marker.display(),
            real_shim.display()
        ),
    )
    .expect("write shim script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    (ShimDir::new(&script), marker)
}

fn run_busybox_end_to_end(builder: Builder, real_shim: &Path, expect_version: &str) {
    let work = tempfile::tempdir().expect("tmp");
    let img = TestImage::busybox().expect("image");
    let archive = work.path().join("busybox.oci.tar");
    img.write_oci_archive(&archive).expect("archive");
    let (shim_dir, marker) = recording_shim_dir(work.path(), real_shim);

    let mut c = builder
        .shim_dir(shim_dir)
        .start()
        .expect("containerd starts");
    let version = c.ctr_ok(&["version"]);
    assert!(
        version.contains("Server:") && version.contains(expect_version),
        "ctr version should show server {expect_version}:\n{version}"
    );

    c.import(&archive);
    let images = c.ctr_ok(&["images", "ls"]);
    assert!(
        images.contains(&img.name) && images.contains(img.manifest_digest()),
        "imported image {} {} not listed:\n{images}",
        img.name,
        img.manifest_digest()
    );

    let out = c.ctr_ok(&["run", "--rm", &img.name, "t-hello", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    let calls = fs::read_to_string(&marker).expect("our PATH shim was never called");
    assert!(calls.contains("start"), "shim calls: {calls}");

    let base = c.root().parent().expect("base").to_path_buf();
    let problems = c.stop();
    assert!(problems.is_empty(), "cleanup problems: {problems:?}");
    assert!(!base.exists(), "{} not removed", base.display());
    assert!(procs::mounts_under(&base).is_empty());
    assert!(
        procs::processes_mentioning(&base.to_string_lossy()).is_empty(),
        "processes left behind"
    );
}

#[test]
fn containerd_1_6_imports_and_runs_busybox_with_debian_go_shim() {
    let shim = bins::require_bin("containerd-shim-runc-v2", "containerd");
    run_busybox_end_to_end(Containerd::v1(), &shim, "1.6.");
}

#[test]
fn containerd_2_3_imports_and_runs_busybox_with_its_go_shim() {
    let Some(builder) = Containerd::v2("containerd_2_3_imports_and_runs_busybox_with_its_go_shim")
    else {
        return;
    };
    let dir = bins::containerd2_dir("containerd v2 shim").expect("checked above");
    run_busybox_end_to_end(builder, &dir.join("containerd-shim-runc-v2"), "2.3.4");
}

#[test]
fn kill_9_restart_and_cleanup_of_running_container() {
    let work = tempfile::tempdir().expect("tmp");
    let img = TestImage::busybox().expect("image");
    let archive = work.path().join("busybox.oci.tar");
    img.write_oci_archive(&archive).expect("archive");
    let mut c = Containerd::v1().start().expect("containerd starts");
    c.import(&archive);
    c.ctr_ok(&["run", "-d", &img.name, "t-sleep", "sleep", "1000"]);

    c.kill9();
    let leftovers = c.leftover_processes();
    assert!(
        leftovers.len() >= 2,
        "shim and container must survive kill -9 of containerd: {leftovers:?}"
    );
    c.restart().expect("restart on the same root/state");
    let tasks = c.ctr_ok(&["tasks", "ls"]);
    assert!(
        tasks.contains("t-sleep") && tasks.contains("RUNNING"),
        "{tasks}"
    );

    // Cleanup with a running container: shim, container, mounts, runc state all go.
    let base = c.root().parent().expect("base").to_path_buf();
    let runc_state = Path::new(integration::containerd::RUNC_ROOT).join(c.namespace());
    let problems = c.stop();
    assert!(problems.is_empty(), "cleanup problems: {problems:?}");
    assert!(!base.exists());
    assert!(
        !runc_state.exists(),
        "runc state {} left",
        runc_state.display()
    );
    let still: Vec<i32> = leftovers
        .into_iter()
        .filter(|&p| procs::is_alive(p))
        .collect();
    assert!(still.is_empty(), "processes left: {still:?}");
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn cleanup_runs_when_a_test_panics_with_a_running_container() {
    let work = tempfile::tempdir().expect("tmp");
    let img = TestImage::busybox().expect("image");
    // The docker-archive form imports too (containerd reads manifest.json + repositories).
    let archive = work.path().join("busybox.docker.tar");
    img.write_docker_archive(&archive).expect("archive");
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Containerd::v1().start().expect("containerd starts");
        c.import(&archive);
        let images = c.ctr_ok(&["images", "ls", "-q"]);
        assert!(images.contains(&img.name), "{images}");
        c.ctr_ok(&["run", "-d", &img.name, "t-panic", "sleep", "1000"]);
        let base = c.root().parent().expect("base").to_path_buf();
        *seen.lock().expect("lock") = Some((base, c.leftover_processes()));
        panic!("simulated test failure");
    }));
    assert!(r.is_err());
    let (base, procs_before) = seen.lock().expect("lock").take().expect("recorded");
    assert!(
        procs_before.len() >= 2,
        "shim and container were running: {procs_before:?}"
    );
    assert!(
        !base.exists(),
        "{} must be removed after a panic",
        base.display()
    );
    assert!(
        procs_before.iter().all(|&p| !procs::is_alive(p)),
        "processes left after panic"
    );
}
