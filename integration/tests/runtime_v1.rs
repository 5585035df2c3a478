//! Legacy runtime v1 (`io.containerd.runtime.v1.linux`, the seeds' `[plugins.linux]`):
//! berthd runs containers through Debian's `containerd-shim` v1 for Debian's `ctr`, with the
//! `[plugins.linux]` keys honoured, task events in order, live restore across `kill -9`, and
//! a clear error when the configured v1 shim is not installed.

mod runtime_common;

use std::time::Duration;

use runtime_common::{assert_fails_with, Env, Events, Shim};

const V1: &str = "io.containerd.runtime.v1.linux";

fn bundle_v1(env: &Env, id: &str) -> std::path::PathBuf {
    env.d
        .state()
        .join("io.containerd.runtime.v1.linux")
        .join(env.d.namespace())
        .join(id)
}

#[test]
fn runtime_v1_runs_restores_and_cleans_up() {
    let _ = integration::bins::require_bin("containerd-shim", "containerd");
    let runc_root = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[plugins.linux]\n  shim = \"containerd-shim\"\n  runtime = \"runc\"\n  runtime_root = \"{}\"\n  no_shim = false\n  shim_debug = true\n",
        runc_root.path().display()
    );
    let Some(mut env) = Env::start(Shim::Ours, "runtime_v1_runs_restores_and_cleans_up", &extra)
    else {
        return;
    };
    let img = env.image.clone();
    let events = Events::start(&env);

    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        V1,
        &img,
        "v1a",
        "echo",
        "hello-v1",
    ]);
    assert_eq!(out, "hello-v1\n");
    events.wait_for(
        "/containers/delete",
        &["\"v1a\""],
        1,
        Duration::from_secs(10),
    );
    let topics: Vec<String> = events
        .topics(&["\"v1a\""])
        .into_iter()
        .filter(|t| t.starts_with("/tasks/"))
        .collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "events:\n{}",
        events.text()
    );
    assert!(!bundle_v1(&env, "v1a").exists(), "v1 bundle removed");

    // Detached: runc state lives under the configured runtime_root.
    env.ctr_ok(&["run", "-d", "--runtime", V1, &img, "v1d", "sleep", "1000"]);
    let (pid, _) = env.wait_status("v1d", "RUNNING", Duration::from_secs(10));
    assert!(
        runc_root
            .path()
            .join(env.d.namespace())
            .join("v1d")
            .exists(),
        "runc state under [plugins.linux] runtime_root"
    );
    // shim_debug: the shim's own output reaches berthd's log.
    let ns = env.d.namespace().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !env.d.logs().contains(&format!("{ns}/v1d: ")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no v1 shim output in berthd's log:\n{}",
            env.d.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        env.ctr_ok(&["t", "exec", "--exec-id", "x1", "v1d", "echo", "exec-v1"]),
        "exec-v1\n"
    );
    env.ctr_ok(&["t", "pause", "v1d"]);
    env.wait_status("v1d", "PAUSED", Duration::from_secs(5));
    env.ctr_ok(&["t", "resume", "v1d"]);
    env.wait_status("v1d", "RUNNING", Duration::from_secs(5));
    env.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        V1,
        &img,
        "v1e",
        "sh",
        "-c",
        "sleep 2; exit 5",
    ]);
    env.wait_status("v1e", "RUNNING", Duration::from_secs(10));
    env.ctr_ok(&["run", "-d", "--runtime", V1, &img, "v1f", "sleep", "1000"]);
    env.wait_status("v1f", "RUNNING", Duration::from_secs(10));
    let v1f_shim: i32 = std::fs::read_to_string(bundle_v1(&env, "v1f").join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    drop(events);

    // kill -9 berthd; v1e exits and v1f's shim dies while it is down.
    env.d.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(v1f_shim),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill v1 shim");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        integration::procs::is_alive(pid.parse().expect("pid")),
        "v1 container survives berthd"
    );
    env.d.restart().expect("restart");
    let events = Events::start(&env);
    let (pid_after, _) = env.wait_status("v1d", "RUNNING", Duration::from_secs(5));
    assert_eq!(pid_after, pid);
    env.wait_status("v1e", "STOPPED", Duration::from_secs(5));
    // The dead shim's task: cleaned up (runc delete --force, rootfs unmounted), one exit.
    assert!(
        env.task_status("v1f").is_none(),
        "task of the dead v1 shim is gone"
    );
    assert!(!bundle_v1(&env, "v1f").exists(), "its bundle is removed");
    events.wait_for(
        "/tasks/exit",
        &["\"v1f\"", "\"exit_status\":137"],
        1,
        Duration::from_secs(10),
    );
    env.ctr_ok(&["c", "rm", "v1f"]);
    events.wait_for(
        "/tasks/exit",
        &["\"v1e\"", "\"exit_status\":5"],
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        env.ctr_ok(&[
            "t",
            "exec",
            "--exec-id",
            "x2",
            "v1d",
            "echo",
            "after-restart"
        ]),
        "after-restart\n"
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "v1d"]);
    env.wait_status("v1d", "STOPPED", Duration::from_secs(10));
    for id in ["v1d", "v1e"] {
        env.ctr_ok(&["t", "rm", id]);
        env.ctr_ok(&["c", "rm", id]);
        assert!(!bundle_v1(&env, id).exists(), "v1 bundle of {id} removed");
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        events.count("/tasks/exit", &["\"v1e\""]),
        1,
        "one exit for v1e:\n{}",
        events.text()
    );
    assert_eq!(
        events.count("/tasks/exit", &["\"v1f\""]),
        1,
        "{}",
        events.text()
    );
    assert_eq!(
        events.count("/tasks/delete", &["\"v1d\""]),
        1,
        "{}",
        events.text()
    );
    drop(events);
    env.assert_nothing_left();
}

#[test]
fn runtime_v1_without_its_shim_names_the_missing_binary() {
    let extra = "[plugins.linux]\n  shim = \"containerd-shim-not-installed\"\n";
    let Some(env) = Env::start(
        Shim::Ours,
        "runtime_v1_without_its_shim_names_the_missing_binary",
        extra,
    ) else {
        return;
    };
    let o = env.ctr(&["run", "--rm", "--runtime", V1, &env.image, "nov1", "true"]);
    assert_fails_with(&o, &["containerd-shim-not-installed", "not installed"]);
    assert!(!bundle_v1(&env, "nov1").exists(), "no bundle left");
    let _ = env.ctr(&["c", "rm", "nov1"]);
    env.assert_nothing_left();
}
