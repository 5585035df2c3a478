//! The subreaper reaps orphans that re-parent to the test process, and leaves the statuses of
//! the test's own children alone.

use std::process::Command;
use std::time::{Duration, Instant};

use integration::procs::ProcStat;
use integration::subreaper;

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn orphan_reparents_to_test_process_and_is_reaped() {
    subreaper::ensure().expect("subreaper");
    assert!(subreaper::is_subreaper());
    // Like a daemonizing shim: the intermediate sh exits at once, its child starts a new
    // session (as shims do with setpgid/setsid) and outlives it.
    let out = Command::new("sh")
        .args(["-c", "setsid sleep 0.5 >/dev/null 2>&1 & echo $!"])
        .output()
        .expect("run sh");
    assert!(out.status.success());
    let orphan: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let me = i32::try_from(std::process::id()).expect("pid fits");
    assert!(
        wait_until(Duration::from_secs(2), || ProcStat::read(orphan)
            .is_some_and(|s| s.ppid == me)),
        "orphan {orphan} did not re-parent to the test process: {:?}",
        ProcStat::read(orphan)
    );
    // After it exits it must not stay a zombie.
    assert!(
        wait_until(Duration::from_secs(5), || ProcStat::read(orphan).is_none()),
        "orphan {orphan} was not reaped: {:?}",
        ProcStat::read(orphan)
    );
}

#[test]
fn direct_children_keep_their_exit_status() {
    subreaper::ensure().expect("subreaper");
    let mut child = Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .expect("spawn");
    // Give the reaper several scans while the child is a zombie.
    std::thread::sleep(Duration::from_millis(600));
    let status = child.wait().expect("wait must not fail with ECHILD");
    assert_eq!(status.code(), Some(7));
}

#[test]
fn registered_children_in_their_own_group_keep_their_status() {
    use std::os::unix::process::CommandExt;
    subreaper::ensure().expect("subreaper");
    let mut child = Command::new("sh")
        .args(["-c", "exit 3"])
        .process_group(0)
        .spawn()
        .expect("spawn");
    subreaper::register(child.id());
    std::thread::sleep(Duration::from_millis(600));
    let status = child.wait().expect("wait must not fail with ECHILD");
    subreaper::unregister(child.id());
    assert_eq!(status.code(), Some(3));
}
