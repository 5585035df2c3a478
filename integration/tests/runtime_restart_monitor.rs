//! The restart monitor (`io.containerd.internal.v1 restart`) end to end, with Debian's `ctr`
//! and our shim, berthd reconciling every second: `containerd.io/restart.status=running`
//! restarts an exiting task (new pid, `containerd.io/restart.count` growing as containerd
//! 2.x, output of every run in `restart.loguri`); `restart.policy` `on-failure:2` stops after
//! two restarts and does not restart a clean exit; `unless-stopped` honours
//! `restart.explicitly-stopped`; `status=stopped` kills and deletes the task; after berthd is
//! SIGKILLed and started again (the task killed meanwhile) the monitor still reconciles.
//!
//! No timing is asserted: changes are polled for with a generous deadline; "nothing more
//! happens" is checked over several intervals.

mod runtime_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use runtime_common::{Env, Shim};

const STATUS: &str = "containerd.io/restart.status";
const COUNT: &str = "containerd.io/restart.count";
const POLICY: &str = "containerd.io/restart.policy";
const LOGURI: &str = "containerd.io/restart.loguri";
const STOPPED_BY_USER: &str = "containerd.io/restart.explicitly-stopped";

/// Deadline for anything the monitor should do (it runs every second).
const DEADLINE: Duration = Duration::from_secs(20);
/// Several monitor intervals: long enough for an unwanted restart to show up.
const QUIET: Duration = Duration::from_secs(4);

const CONFIG: &str = "[plugins.\"io.containerd.internal.v1.restart\"]\n  interval = \"1s\"\n";

fn start(test: &str) -> Env {
    start_with(Shim::Ours, test).expect("our shim is always available")
}

fn start_with(shim: Shim, test: &str) -> Option<Env> {
    Env::start(shim, test, CONFIG)
}

/// The container's labels (`ctr c info`).
fn labels(env: &Env, id: &str) -> serde_json::Map<String, serde_json::Value> {
    let out = env.ctr_ok(&["c", "info", id]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctr c info {id}: {e}: {out}"));
    v.get("Labels")
        .and_then(serde_json::Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn label(env: &Env, id: &str, key: &str) -> Option<String> {
    labels(env, id)
        .get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// The restart count label as a number (absent = 0).
fn count(env: &Env, id: &str) -> u32 {
    label(env, id, COUNT).map_or(0, |c| {
        c.parse()
            .unwrap_or_else(|e| panic!("{COUNT}={c:?} of {id}: {e}"))
    })
}

/// Polls `check` until it returns `Some`, failing with `what` and berthd's log after
/// [`DEADLINE`].
fn wait_for<T>(env: &Env, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}\nberthd's restart monitor said:\n{}",
            monitor_log(env)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last 40 lines berthd logged about the restart monitor.
fn monitor_log(env: &Env) -> String {
    let logs = env.d.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("restart monitor"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Every change the monitor made went through: no "apply change" errors in berthd's log.
fn assert_no_monitor_errors(env: &Env) {
    let logs = env.d.logs();
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("restart monitor") && l.contains("ERRO"))
        .collect();
    assert!(
        errors.is_empty(),
        "restart monitor errors:\n{}\nmonitor log:\n{}",
        errors.join("\n"),
        monitor_log(env)
    );
}

/// Lines of a log file equal to `line` (0 when it does not exist yet).
fn lines_in(path: &Path, line: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

fn pid_of(env: &Env, id: &str) -> Option<u32> {
    env.task_status(id)
        .filter(|(_, s)| s == "RUNNING")
        .and_then(|(p, _)| p.parse().ok())
}

#[test]
fn running_status_restarts_an_exiting_task_with_new_pids_count_and_log_uri() {
    restarts_with_new_pids_count_and_log_uri(
        Shim::Ours,
        "running_status_restarts_an_exiting_task_with_new_pids_count_and_log_uri",
    );
}

#[test]
fn running_status_restarts_with_debian_go_shim_task_api_v2() {
    restarts_with_new_pids_count_and_log_uri(
        Shim::DebianGo,
        "running_status_restarts_with_debian_go_shim_task_api_v2",
    );
}

#[test]
fn running_status_restarts_with_containerd_2_3_go_shim_task_api_v3() {
    restarts_with_new_pids_count_and_log_uri(
        Shim::Go23,
        "running_status_restarts_with_containerd_2_3_go_shim_task_api_v3",
    );
}

fn restarts_with_new_pids_count_and_log_uri(shim: Shim, test: &str) {
    let Some(env) = start_with(shim, test) else {
        return;
    };
    let plugins = env.ctr_ok(&["plugins", "ls"]);
    assert!(
        plugins.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"io.containerd.internal.v1")
                && f.get(1) == Some(&"restart")
                && f.last() == Some(&"ok")
        }),
        "ctr plugins ls lists the restart monitor as ok:\n{plugins}"
    );
    let log = env.work.path().join("c1.log");
    let status = format!("{STATUS}=running");
    let loguri = format!("{LOGURI}=file://{}", log.display());
    env.ctr_ok(&[
        "run",
        "-d",
        "--null-io",
        "--label",
        &status,
        "--label",
        &loguri,
        &env.image,
        "c1",
        "sh",
        "-c",
        "echo run; sleep 2; exit 3",
    ]);
    // Watch pids until the monitor restarted the task at least twice.
    let mut pids = BTreeSet::new();
    wait_for(&env, "c1 restarted twice with new pids", || {
        if let Some(p) = pid_of(&env, "c1") {
            pids.insert(p);
        }
        (count(&env, "c1") >= 2 && pids.len() >= 3).then_some(())
    });
    // Every run the monitor started wrote to the log URI (ctr's own run had no I/O).
    wait_for(&env, "two runs' output in the log uri", || {
        (lines_in(&log, "run") >= 2).then_some(())
    });
    let runs = lines_in(&log, "run");
    let n = count(&env, "c1");
    assert!(
        usize::try_from(n).expect("count") + 1 >= runs,
        "no more monitor runs ({runs}) than restarts counted ({n})"
    );
    // The count label is the monitor's own: the container keeps its other labels.
    let l = labels(&env, "c1");
    assert_eq!(l.get(STATUS).and_then(|v| v.as_str()), Some("running"));
    assert!(l.contains_key(LOGURI), "{l:?}");
    assert!(
        env.d
            .logs()
            .contains("restart monitor: starting task of container"),
        "berthd logs its restarts"
    );
    assert_no_monitor_errors(&env);
}

#[test]
fn on_failure_and_unless_stopped_policies_limit_restarts() {
    let env = start("on_failure_and_unless_stopped_policies_limit_restarts");
    let log = env.work.path().join("c3.log");
    let running = format!("{STATUS}=running");
    let run = |id: &str, extra: &[String], script: &str| {
        let mut args: Vec<String> = ["run", "-d", "--null-io", "--label", &running]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        for l in extra {
            args.push("--label".into());
            args.push(l.clone());
        }
        args.extend([env.image.clone(), id.into(), "sh".into(), "-c".into()]);
        args.push(script.into());
        env.ctr_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    // Fails every time: restarted twice, then left stopped.
    run(
        "c3",
        &[
            format!("{POLICY}=on-failure:2"),
            format!("{LOGURI}=file://{}", log.display()),
        ],
        "echo run; exit 3",
    );
    // Clean exit: on-failure never restarts it.
    run("c4", &[format!("{POLICY}=on-failure")], "exit 0");
    // Explicitly stopped: unless-stopped leaves it down.
    run(
        "c5",
        &[
            format!("{POLICY}=unless-stopped"),
            format!("{STOPPED_BY_USER}=true"),
        ],
        "exit 0",
    );
    // unless-stopped restarts a clean exit until it is marked explicitly stopped.
    run(
        "c6",
        &[format!("{POLICY}=unless-stopped")],
        "sleep 1; exit 0",
    );

    wait_for(&env, "c3 restarted twice and stopped", || {
        let st = env.task_status("c3").map(|(_, s)| s);
        (count(&env, "c3") == 2 && st.as_deref() == Some("STOPPED")).then_some(())
    });
    wait_for(&env, "c6 restarted", || {
        (count(&env, "c6") >= 1).then_some(())
    });
    env.ctr_ok(&["c", "label", "c6", &format!("{STOPPED_BY_USER}=true")]);
    // A restart already under way may still land; after that, nothing moves.
    std::thread::sleep(Duration::from_secs(2));
    let c6_count = count(&env, "c6");
    std::thread::sleep(QUIET);

    assert_eq!(
        count(&env, "c3"),
        2,
        "on-failure:2 stops after two restarts"
    );
    assert_eq!(
        env.task_status("c3").map(|(_, s)| s).as_deref(),
        Some("STOPPED")
    );
    assert_eq!(
        lines_in(&log, "run"),
        2,
        "each of the two restarts ran once with the log uri"
    );
    assert_eq!(
        label(&env, "c4", COUNT),
        None,
        "a clean exit is not a failure"
    );
    assert_eq!(
        env.task_status("c4").map(|(_, s)| s).as_deref(),
        Some("STOPPED")
    );
    assert_eq!(label(&env, "c5", COUNT), None, "explicitly stopped");
    assert_eq!(
        count(&env, "c6"),
        c6_count,
        "no restart after explicitly-stopped=true"
    );
    assert_no_monitor_errors(&env);
}

#[test]
fn stopped_status_kills_the_task_and_the_monitor_survives_a_berthd_kill9() {
    let mut env = start("stopped_status_kills_the_task_and_the_monitor_survives_a_berthd_kill9");
    let running = format!("{STATUS}=running");
    env.ctr_ok(&[
        "run",
        "-d",
        "--null-io",
        "--label",
        &running,
        &env.image,
        "c2",
        "sleep",
        "1000",
    ]);
    let (first, _) = env.wait_status("c2", "RUNNING", Duration::from_secs(10));
    // A running task is left alone.
    std::thread::sleep(QUIET);
    assert_eq!(
        pid_of(&env, "c2").map(|p| p.to_string()),
        Some(first.clone())
    );
    assert_eq!(label(&env, "c2", COUNT), None);

    // status=stopped: SIGKILL and delete; the container stays.
    env.ctr_ok(&["c", "label", "c2", &format!("{STATUS}=stopped")]);
    wait_for(&env, "c2's task killed and deleted", || {
        env.task_status("c2").is_none().then_some(())
    });
    assert!(
        env.ctr_ok(&["c", "ls", "-q"]).lines().any(|l| l == "c2"),
        "the container is kept"
    );
    assert!(
        !Path::new(&format!("/proc/{first}")).exists(),
        "the old init process {first} is gone"
    );

    // Back to running: a new task.
    env.ctr_ok(&["c", "label", "c2", &running]);
    let second = wait_for(&env, "c2 started again", || pid_of(&env, "c2"));
    assert_ne!(second.to_string(), first);
    assert_eq!(count(&env, "c2"), 1);

    // berthd dies; the container is killed while it is down; the restarted berthd's monitor
    // restarts it.
    env.d.kill9();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(second).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill the container");
    env.d.restart().expect("berthd starts again");
    let third = wait_for(&env, "c2 restarted after berthd's restart", || {
        pid_of(&env, "c2").filter(|p| *p != second)
    });
    assert_ne!(third.to_string(), first);
    assert_eq!(count(&env, "c2"), 2);

    // Stop for good: clear the label, kill the task; nothing restarts it.
    env.ctr_ok(&["c", "label", "c2", &format!("{STATUS}=")]);
    assert_eq!(
        label(&env, "c2", STATUS),
        None,
        "empty value removes the label"
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "c2"]);
    env.wait_status("c2", "STOPPED", Duration::from_secs(10));
    std::thread::sleep(QUIET);
    assert_eq!(
        env.task_status("c2").map(|(_, s)| s).as_deref(),
        Some("STOPPED")
    );
    assert_eq!(count(&env, "c2"), 2);
    assert_no_monitor_errors(&env);
}
