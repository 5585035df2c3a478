//! Benchmark, not a test (`#[ignore]`; run with `cargo test -p integration --test
//! runtime_bench_restore -- --ignored --nocapture`): how long berthd's start-up re-adoption
//! of many running tasks takes (issue 6 target: ≤ 1 s for 300 tasks; containerd 2.57 s after
//! its PR #12142). Tasks are created through the gRPC API by `ctr run -d` in parallel, berthd
//! is killed with SIGKILL and restarted, and the time berthd itself logs for `load` is
//! reported together with the time until its socket answers.
//!
//! `BERTH_BENCH_TASKS` (default 300) and `BERTH_BENCH_SHIM` (`ours`, `debian`, `go23`;
//! default `ours`) choose the size and the shim.

mod runtime_common;

use std::time::{Duration, Instant};

use runtime_common::{Env, Shim};

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn restart_with_many_running_tasks() {
    let n: usize = std::env::var("BERTH_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let shim = match std::env::var("BERTH_BENCH_SHIM").as_deref() {
        Ok("debian") => Shim::DebianGo,
        Ok("go23") => Shim::Go23,
        _ => Shim::Ours,
    };
    let Some(mut env) = Env::start(shim, "restart_with_many_running_tasks", "") else {
        return;
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4 {
            let env = &env;
            s.spawn(move || {
                for i in (w..n).step_by(4) {
                    env.ctr_ok(&["run", "-d", &env.image, &format!("b{i}"), "sleep", "100000"]);
                }
            });
        }
    });
    eprintln!("started {n} tasks with {shim:?} in {:?}", t0.elapsed());
    env.d.kill9();
    let t1 = Instant::now();
    env.d.restart().expect("restart");
    let ready = t1.elapsed();
    let listed = env.ctr_ok(&["t", "ls", "-q"]).lines().count();
    let log = env.d.logs();
    let load_line = log
        .lines()
        .rev()
        .find(|l| l.contains("runtime: re-adopted"))
        .unwrap_or("(no load line)")
        .to_string();
    eprintln!(
        "BENCH restore of {n} tasks ({shim:?}): socket ready after {ready:?}; berthd: {load_line}"
    );
    assert_eq!(listed, n, "all tasks listed after the restart");
    // Tear down in parallel (kill -a, then delete).
    std::thread::scope(|s| {
        for w in 0..4 {
            let env = &env;
            s.spawn(move || {
                for i in (w..n).step_by(4) {
                    let id = format!("b{i}");
                    let _ = env.ctr(&["t", "kill", "-a", "-s", "9", &id]);
                    env.wait_status(&id, "STOPPED", Duration::from_secs(30));
                    env.ctr_ok(&["t", "rm", &id]);
                    env.ctr_ok(&["c", "rm", &id]);
                }
            });
        }
    });
    env.assert_nothing_left();
}
