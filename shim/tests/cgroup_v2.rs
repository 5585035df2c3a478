//! cgroup v2 against a real cgroup2 hierarchy. On this host (hybrid) that is the cgroup2 mount
//! at /sys/fs/cgroup/unified, which has no controllers enabled: path resolution, moving pids
//! (`ShimCgroup`), the core `cpu.stat` metrics and the "no memory controller" OOM error are
//! real; memory metrics and OOM kills under v2 are covered by fixture tests in
//! `src/cgroup/v2.rs` and `src/cgroup/tests.rs`. Needs root and busybox (busybox-static).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shim::cgroup::{join_cgroup_in, paths, Cgroup, CgroupMode, CgroupV2, Metrics, OomMonitor};

/// The cgroup2 mountpoint, from mountinfo.
fn cgroup2_mount() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    paths::parse_mountinfo(&mi)
        .into_iter()
        .find(|m| m.v2)
        .map(|m| m.mountpoint)
        .expect("no cgroup2 mount on this host (expected /sys/fs/cgroup or /sys/fs/cgroup/unified)")
}

struct Guard {
    dir: PathBuf,
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn v2_path_resolution_pid_moves_and_core_metrics() {
    let mount = cgroup2_mount();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("berth-test-{}-{nanos}", std::process::id());
    let dir = mount.join(&name);
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e} (root?)", dir.display()));
    let child = Command::new("/bin/busybox")
        .args(["sleep", "30"])
        .spawn()
        .expect("spawn /bin/busybox (busybox-static)");
    let pid = child.id() as i32;
    let g = Guard { dir, child };

    // ShimCgroup-style move by relative path in the unified hierarchy.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    join_cgroup_in(CgroupMode::Unified, &mi, &format!("/{name}"), pid).unwrap();
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        proc_cgroup.lines().any(|l| l == format!("0::/{name}")),
        "{proc_cgroup}"
    );

    // Resolve it back from /proc/<pid>/cgroup as a unified-mode shim would.
    let cg = Cgroup::from_proc(pid, CgroupMode::Unified, &proc_cgroup, &mi).unwrap();
    assert_eq!(cg, Cgroup::V2(CgroupV2::from_path(&g.dir)));

    let Metrics::V2(m) = cg.stats().unwrap() else {
        panic!("v2 cgroup gave v1 metrics")
    };
    // cpu.stat exists in every cgroup2 directory; the counters only grow, so what we parsed
    // is at most what the file says now, and user + system never exceed usage by much.
    let cpu_stat = std::fs::read_to_string(g.dir.join("cpu.stat")).unwrap();
    let now: u64 = cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .expect("usage_usec in cpu.stat")
        .parse()
        .unwrap();
    assert!(m.cpu.usage_usec <= now, "{} > {now}", m.cpu.usage_usec);
    assert!(m.memory_events.is_none(), "no memory controller here");
    let any = cg.stats().unwrap().to_any().unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");

    // OOM watch needs memory.events: a clear error naming it.
    let (mon, _rx) = OomMonitor::new();
    let err = mon.add("v2", &cg).unwrap_err();
    assert!(err.to_string().contains("memory.events"), "{err}");

    // Move back out with Cgroup::add_pid on the root.
    Cgroup::V2(CgroupV2::from_path(&mount))
        .add_pid(pid)
        .unwrap();
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(proc_cgroup.lines().any(|l| l == "0::/"), "{proc_cgroup}");

    let err = join_cgroup_in(CgroupMode::Unified, &mi, "/berth-no-such-cgroup", pid).unwrap_err();
    assert!(err.to_string().contains("berth-no-such-cgroup"), "{err}");
    drop(g);
}
