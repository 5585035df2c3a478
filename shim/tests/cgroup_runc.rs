//! The cgroup module on a real runc container: the cgroup runc made is found from the init
//! pid, an OOM inside the container (memory limit 32 MiB, busybox dd of 64 MiB) arrives on the
//! OomMonitor channel, and the metrics show the limit and the kill — the path the shim takes
//! for `TaskOOM` and `Stats`. Needs root, runc (Debian package runc), busybox (busybox-static).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use shim::cgroup::{Cgroup, Metrics, OomMonitor};

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";
const LIMIT: u64 = 32 << 20;

async fn run(mut cmd: Command, what: &str) {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn runc {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "runc {what}: {st:?}");
            return;
        }
        assert!(Instant::now() < deadline, "runc {what} hangs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn oom_in_a_runc_container_is_reported_and_counted() {
    assert!(
        Path::new(RUNC).exists(),
        "{RUNC} missing: apt-get install runc"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing: apt-get install busybox-static"
    );
    nix::sys::prctl::set_child_subreaper(true).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    std::fs::set_permissions(
        rootfs.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    assert!(Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = serde_json::Value::Bool(false);
    cfg["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "busybox dd if=/dev/zero of=/dev/null bs=64M count=1"
    ]);
    cfg["linux"]["resources"]["memory"] = serde_json::json!({ "limit": LIMIT });
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();

    let id = format!("berth-cg-oom-{}", std::process::id());
    let root = dir.path().join("runc-root");
    let runc = || {
        let mut c = Command::new(RUNC);
        c.arg("--root").arg(&root);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut create = runc();
    create
        .args(["create", "--pid-file"])
        .arg(dir.path().join("init.pid"))
        .arg("--bundle")
        .arg(dir.path())
        .arg(&id);
    run(create, "create").await;
    let pid: i32 = std::fs::read_to_string(dir.path().join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // What the shim does after create/start: find the cgroup, watch it.
    let cg = Cgroup::for_pid(pid).unwrap();
    let (mon, mut ooms) = OomMonitor::new();
    mon.add(&id, &cg).unwrap();
    if let Metrics::V1(m) = cg.stats().unwrap() {
        assert_eq!(m.memory.usage.limit, LIMIT, "runc applied the limit");
    }

    let mut start = runc();
    start.args(["start", &id]);
    run(start, "start").await;

    let got = tokio::time::timeout(Duration::from_secs(20), ooms.recv())
        .await
        .expect("OOM notification within 20 s")
        .unwrap();
    assert_eq!(got, id);

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {}
            other => break other,
        }
        assert!(Instant::now() < deadline, "container init did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // sh ran dd as a child; the OOM killer killed dd, sh reports 128+9.
    assert!(
        matches!(
            status,
            WaitStatus::Exited(_, 137)
                | WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
        ),
        "{status:?}"
    );
    match cg.stats().unwrap() {
        Metrics::V1(m) => assert!(m.memory_oom_control.oom_kill >= 1),
        Metrics::V2(m) => assert!(m.memory_events.oom_kill >= 1),
    }

    let mut del = runc();
    del.args(["delete", "--force", &id]);
    run(del, "delete").await;
    // runc removed the cgroup: the eventfd fires once more, which is not an OOM.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ooms.recv())
            .await
            .is_err()
    );
    drop(mon);
}
