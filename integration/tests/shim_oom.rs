//! Done-when item 5 of issue 4: a container with a small memory limit that allocates is
//! OOM-killed and `ctr events` shows `/tasks/oom` (cgroup v1 `memory.oom_control` eventfd on
//! this host), under containerd 1.6.20 and 2.3.4.

mod shim_common;

use std::time::Duration;

use shim_common::{assert_rm_status, Env, Events, Gen};

fn oom(gen: Gen, test: &str) {
    let Some(env) = Env::start(gen, test) else {
        return;
    };
    let ev = Events::start(&env);
    // busybox `tail` buffers its whole input looking for newlines; /dev/zero has none.
    env.run_ok(&[
        "-d",
        "--memory-limit",
        "16777216",
        &env.image,
        "oom1",
        "tail",
        "/dev/zero",
    ]);
    ev.wait_for("/tasks/oom", &["oom1"], 1, Duration::from_secs(30));
    env.wait_status("oom1", "STOPPED", Duration::from_secs(10));
    ev.wait_for("/tasks/exit", &["oom1", "137"], 1, Duration::from_secs(10));
    let rm = env.ctr(&["t", "rm", "oom1"]);
    assert_rm_status(&rm, 137);
    env.ctr_ok(&["c", "rm", "oom1"]);
    shim_common::assert_task_gone(&env, "oom1");
}

#[test]
fn containerd_1_6_memory_limit_oom_kill_publishes_task_oom() {
    oom(Gen::V1, "oom_1_6");
}

#[test]
fn containerd_2_3_memory_limit_oom_kill_publishes_task_oom() {
    oom(Gen::V2, "containerd_2_3_oom");
}
