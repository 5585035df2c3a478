//! Done-when items 1 and 2 of issue 4 against real containerd 1.6.20 (task API v2) with OUR
//! shim first in its PATH, driven with Debian's `ctr`.

mod shim_common;

use std::time::Duration;

use shim_common::{assert_task_gone, our_shim, Env, Gen};

#[test]
fn containerd_1_6_run_rm_echo_hello_with_our_shim_leaves_nothing() {
    let env = Env::start(Gen::V1, "containerd_1_6_run_rm_echo_hello").expect("containerd 1.6");
    let out = env.ctr_ok(&["run", "--rm", &env.image, "t1", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    // Our shim logs through the bundle's log fifo into containerd's log.
    let log = std::fs::read_to_string(env.c.log_path()).expect("containerd log");
    assert!(
        log.contains("serving task API v2 and v3"),
        "our shim's log line missing:\n{}",
        env.c.log_tail(60)
    );
    assert_task_gone(&env, "t1");
    assert!(env.ctr_ok(&["t", "ls"]).lines().count() <= 1);
    let _ = our_shim();
    let _ = Duration::ZERO;
}

#[test]
fn containerd_1_6_detached_lifecycle_exec_ps_pause_metrics_kill_with_our_shim() {
    let env = Env::start(Gen::V1, "detached_lifecycle").expect("containerd 1.6");
    shim_common::detached_lifecycle(&env);
}

#[test]
#[ignore = "debugging aid: prints the containerd log of one run"]
fn debug_print_log() {
    let gen = if std::env::var("DEBUG_GEN").as_deref() == Ok("2") {
        Gen::V2
    } else {
        Gen::V1
    };
    let Some(env) = Env::start(gen, "debug") else {
        return;
    };
    env.ctr_ok(&["run", "--rm", &env.image, "t1", "echo", "hello"]);
    std::thread::sleep(Duration::from_millis(500));
    println!("{}", env.c.log_tail(80));
}
