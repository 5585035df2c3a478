//! cgroup v1 for real: a memory (+pids, cpu, cpuacct, blkio) cgroup created under
//! /sys/fs/cgroup, a busybox process moved into it, metrics read, an OOM provoked and its
//! notification received through the eventfd watch. Needs root and a v1 memory hierarchy
//! (this host: hybrid), and busybox (Debian package busybox-static).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shim::cgroup::{mode, Cgroup, CgroupMode, Metrics, OomMonitor};

const BUSYBOX: &str = "/bin/busybox";
const CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "blkio"];

/// Test cgroups named `berth-test-<pid>-<nanos>` in each controller; removed on drop, after
/// the process in them is killed.
struct TestCgroup {
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl TestCgroup {
    fn create() -> TestCgroup {
        let m = mode().expect("statfs /sys/fs/cgroup");
        assert_ne!(
            m,
            CgroupMode::Unified,
            "this test needs cgroup v1 hierarchies (legacy or hybrid host)"
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("berth-test-{}-{nanos}", std::process::id());
        let mut dirs = Vec::new();
        for c in CONTROLLERS {
            let root = Path::new("/sys/fs/cgroup").join(c);
            assert!(root.is_dir(), "no v1 {c} hierarchy at {}", root.display());
            let d = root.join(&name);
            std::fs::create_dir(&d)
                .unwrap_or_else(|e| panic!("mkdir {}: {e} (root?)", d.display()));
            dirs.push(d);
        }
        TestCgroup { dirs, child: None }
    }

    fn dir(&self, controller: &str) -> &Path {
        let i = CONTROLLERS.iter().position(|c| *c == controller).unwrap();
        &self.dirs[i]
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            // rmdir of a cgroup succeeds once it has no processes.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "child did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn v1_metrics_and_oom_notification_from_a_real_memory_cgroup() {
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing: apt-get install busybox-static"
    );
    let mut tc = TestCgroup::create();
    std::fs::write(tc.dir("memory").join("memory.limit_in_bytes"), "33554432").unwrap();
    std::fs::write(tc.dir("pids").join("pids.max"), "20").unwrap();

    // Waits for a line on stdin, then allocates and touches 64 MiB: twice the limit.
    let mut child = Command::new(BUSYBOX)
        .args([
            "sh",
            "-c",
            "read go; exec /bin/busybox dd if=/dev/zero of=/dev/null bs=64M count=1",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn busybox");
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    tc.child = Some(child);

    // Move it in (every controller directory), then find it again from its pid.
    let placed = Cgroup::V1(shim::cgroup::CgroupV1::from_paths(
        CONTROLLERS
            .iter()
            .map(|c| (c.to_string(), tc.dir(c).to_path_buf()))
            .collect(),
    ));
    placed.add_pid(pid).unwrap();
    let cg = Cgroup::for_pid(pid).unwrap();
    let Cgroup::V1(v1) = &cg else {
        panic!("expected v1 on a hybrid host, got {cg:?}")
    };
    for c in CONTROLLERS {
        assert_eq!(v1.path(c), Some(tc.dir(c)), "{c} path of pid {pid}");
    }

    let Metrics::V1(m) = cg.stats().unwrap() else {
        panic!("v1 cgroup gave v2 metrics")
    };
    assert_eq!(m.pids.current, 1, "one busybox in the cgroup");
    assert_eq!(m.pids.limit, 20);
    assert_eq!(m.memory.usage.limit, 33554432);
    // (Usage may still be 0: charges made before the move stay with the old cgroup.)
    assert_eq!(m.memory_oom_control.oom_kill, 0);
    let any = cg.stats().unwrap().to_any().unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");

    let (mon, mut ooms) = OomMonitor::new();
    mon.add("oom-ctr", &cg).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ooms.recv())
            .await
            .is_err(),
        "no OOM yet"
    );

    stdin.write_all(b"go\n").unwrap();
    let id = tokio::time::timeout(Duration::from_secs(20), ooms.recv())
        .await
        .expect("OOM notification within 20 s")
        .expect("monitor alive");
    assert_eq!(id, "oom-ctr");

    let mut child = tc.child.take().unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(10)).await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "the OOM killer killed dd: {st:?}"
    );

    let Metrics::V1(m) = cg.stats().unwrap() else {
        unreachable!()
    };
    assert!(
        m.memory_oom_control.oom_kill >= 1,
        "oom_kill counter recorded"
    );
    assert!(m.memory.usage.failcnt > 0);
    assert!(
        m.memory.usage.max > 16 << 20,
        "dd got close to the 32 MiB limit before being killed: max {}",
        m.memory.usage.max
    );

    // Removing the cgroup fires the eventfd once more; that must not look like an OOM.
    drop(tc);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ooms.recv())
            .await
            .is_err(),
        "cgroup removal is not an OOM"
    );
    drop(mon);
}
