//! Done-when item 8 of issue 4: the same scenarios under the unmodified containerd v2.3.4
//! (task API v3, bootstrap protocol) from `$BERTH_CONTAINERD2_DIR`, driven with its own `ctr`.

mod shim_common;

use shim_common::{assert_task_gone, our_shim, Env, Gen};

#[test]
fn containerd_2_3_run_rm_echo_hello_with_our_shim_leaves_nothing() {
    let Some(env) = Env::start(Gen::V2, "containerd_2_3_run_rm_echo_hello") else {
        return;
    };
    let out = env.ctr_ok(&["run", "--rm", &env.image, "t1", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    let log = std::fs::read_to_string(env.c.log_path()).expect("containerd log");
    assert!(
        log.contains("serving task API v2 and v3"),
        "our shim's log line missing:\n{}",
        env.c.log_tail(60)
    );
    assert_task_gone(&env, "t1");
    let _ = our_shim();
}

#[test]
fn containerd_2_3_detached_lifecycle_with_our_shim() {
    let Some(env) = Env::start(Gen::V2, "containerd_2_3_detached_lifecycle") else {
        return;
    };
    shim_common::detached_lifecycle(&env);
}
