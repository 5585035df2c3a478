//! Done-when item 6 of issue 4 (and its item-8 twin): live restore with our shim.

mod shim_common;

use shim_common::{Env, Gen};

#[test]
fn containerd_1_6_kill_9_and_restart_keeps_task_running_with_our_shim() {
    let mut env = Env::start(Gen::V1, "live_restore_1_6").expect("containerd 1.6");
    shim_common::live_restore(&mut env);
}

#[test]
fn containerd_2_3_kill_9_and_restart_keeps_task_running_with_our_shim() {
    let Some(mut env) = Env::start(Gen::V2, "containerd_2_3_live_restore") else {
        return;
    };
    shim_common::live_restore(&mut env);
}
