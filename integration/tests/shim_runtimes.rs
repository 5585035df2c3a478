//! Done-when item 7 of issue 4: `--runtime` with an absolute path to our shim, and runc
//! `Options.BinaryName` honoured — a recording wrapper around runc, and youki, a real second
//! OCI runtime — under containerd 1.6.20 and 2.3.4.

mod shim_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use integration::bins;
use shim_common::{assert_task_gone, our_shim, Env, Gen};

const YOUKI: &str = "/work/shared/interop/youki-0.7.0/youki";

/// A runc wrapper that appends its argv to `calls.log`, then execs the real runc.
fn runc_wrapper(dir: &Path) -> (PathBuf, PathBuf) {
    let runc = bins::require_bin("runc", "runc");
    let log = dir.join("calls.log");
    let script = dir.join("runc-recording");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{log}'\nl=; n=0; while [ $n -lt 256 ]; do [ -e /proc/$$/fd/$n ] && l=\"$l $n\"; n=$((n+1)); done\necho \"$l\" >> '{log}.fds'\nexec '{runc}' \"$@\"\n",
            log = log.display(),
            runc = runc.display()
        ),
    )
    .expect("write wrapper");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, log)
}

fn youki() -> PathBuf {
    let p = PathBuf::from(YOUKI);
    assert!(
        p.is_file(),
        "youki missing at {YOUKI} (see /work/shared/interop/youki-0.7.0/README.md)"
    );
    p
}

fn absolute_runtime_path_runs_our_shim(gen: Gen, test: &str) {
    let Some(mut env) = Env::start(gen, test) else {
        return;
    };
    let shim = our_shim();
    env.run_flags = vec!["--runtime".into(), shim.display().to_string()];
    let out = env.run_ok(&["--rm", &env.image, "abs1", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    env.run_ok(&["-d", &env.image, "abs2", "sleep", "100"]);
    assert_eq!(env.shim_exe("abs2"), shim);
    let recorded = fs::read_to_string(env.c.bundle_dir("abs2").join("shim-binary-path"))
        .expect("shim-binary-path");
    assert_eq!(
        recorded.trim(),
        shim.display().to_string(),
        "containerd records the absolute shim path"
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "abs2"]);
    env.wait_status("abs2", "STOPPED", std::time::Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "abs2"]);
    env.ctr_ok(&["c", "rm", "abs2"]);
    assert_task_gone(&env, "abs2");
}

fn binary_name_wrapper_is_used(gen: Gen, test: &str) {
    let Some(mut env) = Env::start(gen, test) else {
        return;
    };
    let (wrapper, log) = runc_wrapper(env.work.path());
    env.run_flags = vec!["--runc-binary".into(), wrapper.display().to_string()];
    let out = env.run_ok(&["--rm", &env.image, "w1", "echo", "wrapped"]);
    assert_eq!(out.trim(), "wrapped");
    let calls = fs::read_to_string(&log).expect("the wrapper was never called");
    for cmd in ["create", "start", "delete"] {
        assert!(
            calls.lines().any(|l| l.contains(&format!(" {cmd} "))),
            "no `{cmd}` through the wrapper:\n{calls}"
        );
    }
    assert_task_gone(&env, "w1");
    // What the runtime inherits from our shim: stdio only. The fd numbers are probed with the
    // `[` builtin (stat, no fd of its own) before any redirection (a redirect makes dash park
    // a copy of fd 1 above 10); fd 10 is dash's handle on this script itself.
    let fds = fs::read_to_string(log.with_extension("log.fds")).expect("fd listing");
    for line in fds.lines() {
        let mut got: Vec<&str> = line.split_whitespace().collect();
        got.sort_unstable();
        assert_eq!(
            got,
            ["0", "1", "10", "2"],
            "fds inherited by the OCI runtime:\n{fds}"
        );
    }
}

fn youki_runs_scenarios_1_and_2(gen: Gen, test: &str) {
    let Some(mut env) = Env::start(gen, test) else {
        return;
    };
    env.run_flags = vec!["--runc-binary".into(), youki().display().to_string()];
    let out = env.run_ok(&["--rm", &env.image, "y1", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    assert_task_gone(&env, "y1");
    shim_common::detached_lifecycle(&env);
    let opts = fs::read_to_string(env.c.state().join("io.containerd.runtime.v2.task")).ok();
    let _ = opts;
}

#[test]
fn containerd_1_6_runtime_absolute_path_to_our_shim() {
    absolute_runtime_path_runs_our_shim(Gen::V1, "abs_1_6");
}

#[test]
fn containerd_2_3_runtime_absolute_path_to_our_shim() {
    absolute_runtime_path_runs_our_shim(Gen::V2, "containerd_2_3_runtime_absolute_path");
}

#[test]
fn containerd_1_6_binary_name_wrapper_around_runc_is_honoured() {
    binary_name_wrapper_is_used(Gen::V1, "wrapper_1_6");
}

#[test]
fn containerd_2_3_binary_name_wrapper_around_runc_is_honoured() {
    binary_name_wrapper_is_used(Gen::V2, "containerd_2_3_binary_name_wrapper");
}

#[test]
fn containerd_1_6_youki_as_binary_name_runs_scenarios_1_and_2() {
    youki_runs_scenarios_1_and_2(Gen::V1, "youki_1_6");
}

#[test]
fn containerd_2_3_youki_as_binary_name_runs_scenarios_1_and_2() {
    youki_runs_scenarios_1_and_2(Gen::V2, "containerd_2_3_youki");
}
