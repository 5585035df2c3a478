//! Unit tests with fixture texts and fake cgroup directories. The real-hierarchy tests (OOM in
//! a memory cgroup, cgroup2 moves) are in `shim/tests/cgroup_*.rs`.

use std::time::Duration;

use protobuf::Message;

use super::*;

#[test]
fn mode_of_this_host_is_detected() {
    // The test machine is v1 hybrid; any host must at least give an answer.
    let m = mode().expect("statfs /sys/fs/cgroup");
    let unified_is_cgroup2 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup/unified ") && l.contains(" - cgroup2 "));
    let root_is_cgroup2 = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
    let want = if root_is_cgroup2 {
        CgroupMode::Unified
    } else if unified_is_cgroup2 {
        CgroupMode::Hybrid
    } else {
        CgroupMode::Legacy
    };
    assert_eq!(m, want);
}

#[test]
fn mode_of_a_plain_directory_is_legacy_and_missing_is_unavailable() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(mode_at(d.path()).unwrap(), CgroupMode::Legacy);
    let err = mode_at(&d.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn own_cgroup_is_found_and_has_stats() {
    let cg = Cgroup::for_pid(std::process::id() as i32).expect("own cgroup");
    match (&cg, mode().unwrap()) {
        (Cgroup::V1(c), CgroupMode::Legacy | CgroupMode::Hybrid) => {
            assert!(c
                .path("memory")
                .is_some_and(|p| p.join("memory.stat").exists()));
        }
        (Cgroup::V2(c), CgroupMode::Unified) => assert!(c.path().join("cgroup.procs").exists()),
        other => panic!("unexpected {other:?}"),
    }
    let m = cg.stats().expect("stats of own cgroup");
    if let Metrics::V1(v) = &m {
        assert!(v.memory.usage.usage > 0, "this process uses memory");
    }
}

#[test]
fn from_proc_picks_version_by_mode() {
    let mi = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
              35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let pc = "4:memory:/a\n0::/b\n";
    let v1 = Cgroup::from_proc(1, CgroupMode::Hybrid, pc, mi).unwrap();
    assert_eq!(
        v1,
        Cgroup::V1(CgroupV1::from_paths(
            [(
                "memory".to_string(),
                PathBuf::from("/sys/fs/cgroup/memory/a")
            )]
            .into_iter()
            .collect()
        ))
    );
    let v2 = Cgroup::from_proc(1, CgroupMode::Unified, pc, mi).unwrap();
    assert_eq!(
        v2,
        Cgroup::V2(CgroupV2::from_path("/sys/fs/cgroup/unified/b"))
    );
    let err = Cgroup::from_proc(7, CgroupMode::Legacy, "0::/x\n", mi).unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { pid: 7, .. }), "{err}");
}

#[test]
fn metrics_pack_into_any_with_containerd_type_urls() {
    let mut v1 = containerd_shim_protos::cgroups::metrics::Metrics::new();
    v1.pids.mut_or_insert_default().current = 5;
    let any = Metrics::V1(v1.clone()).to_any().unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    let back =
        containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&any.value).unwrap();
    assert_eq!(back, v1);

    let mut v2 = containerd_shim_protos::cgroups_v2::metrics::Metrics::new();
    v2.memory.mut_or_insert_default().usage = 42;
    let any = Metrics::V2(v2.clone()).to_any().unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    let back =
        containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(&any.value).unwrap();
    assert_eq!(back, v2);
}

#[test]
fn join_cgroup_writes_every_hierarchy_that_has_the_cgroup() {
    let d = tempfile::tempdir().unwrap();
    let (mem, cpu, pids) = (
        d.path().join("memory"),
        d.path().join("cpu"),
        d.path().join("pids"),
    );
    for h in [&mem, &cpu] {
        std::fs::create_dir_all(h.join("shim/grp")).unwrap();
    }
    std::fs::create_dir_all(&pids).unwrap(); // hierarchy without the cgroup: skipped
    let mi = format!(
        "1 0 0:1 / {} rw - cgroup cgroup rw,memory\n2 0 0:2 / {} rw - cgroup cgroup rw,cpu\n\
         3 0 0:3 / {} rw - cgroup cgroup rw,pids\n",
        mem.display(),
        cpu.display(),
        pids.display()
    );
    join_cgroup_in(CgroupMode::Legacy, &mi, "/shim/grp", 4242).unwrap();
    for h in [&mem, &cpu] {
        assert_eq!(
            std::fs::read_to_string(h.join("shim/grp/cgroup.procs")).unwrap(),
            "4242"
        );
    }
    assert!(!pids.join("shim/grp").exists());
    let err = join_cgroup_in(CgroupMode::Legacy, &mi, "nope", 1).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// The v2 watch logic against a fake cgroup directory: inotify sees plain file writes too.
#[tokio::test]
async fn v2_oom_watch_reports_oom_kill_increases_and_ends_when_empty() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let events = |oom_kill: u32| {
        format!("low 0\nhigh 0\nmax 1\noom 1\noom_kill {oom_kill}\noom_group_kill 0\n")
    };
    std::fs::write(dir.join("memory.events"), events(0)).unwrap();
    std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    let (mon, mut rx) = OomMonitor::new();
    mon.add("c1", &Cgroup::V2(CgroupV2::from_path(dir)))
        .unwrap();

    // A change without a new oom_kill: nothing.
    std::fs::write(dir.join("memory.events"), events(0)).unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());
    // oom_kill 0 -> 1: one event.
    std::fs::write(dir.join("memory.events"), events(1)).unwrap();
    let id = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(id.as_deref(), Some("c1"));
    // Same count again: no duplicate.
    std::fs::write(dir.join("memory.events"), events(1)).unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());
    // 1 -> 3: one more event per change, as containerd.
    std::fs::write(dir.join("memory.events"), events(3)).unwrap();
    let id = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(id.as_deref(), Some("c1"));
    // Cgroup empties: the watch ends, later changes are ignored.
    std::fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(dir.join("memory.events"), events(9)).unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv())
        .await
        .is_err());
    drop(mon);
}

#[tokio::test]
async fn oom_watch_without_memory_controller_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (mon, _rx) = OomMonitor::new();
    // v2 without memory.events (like /sys/fs/cgroup/unified here).
    let err = mon
        .add("c2", &Cgroup::V2(CgroupV2::from_path(d.path())))
        .unwrap_err();
    assert!(err.to_string().contains("memory.events"), "{err}");
    // v1 without a memory hierarchy.
    let cg = Cgroup::V1(CgroupV1::from_paths(
        [("pids".to_string(), d.path().to_path_buf())]
            .into_iter()
            .collect(),
    ));
    let err = mon.add("c3", &cg).unwrap_err();
    assert!(
        matches!(err, CgroupError::NoMemoryController { .. }),
        "{err}"
    );
}
