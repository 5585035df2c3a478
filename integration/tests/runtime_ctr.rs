//! berthd runs containers for Debian's `ctr` (issue 6 "Done when" 1–3): `ctr run --rm`,
//! the detached lifecycle (`t ls/exec/ps/pause/resume/metrics/kill/rm`, `c create/ls/info/rm`),
//! run options (`-t`, `--log-uri`, `--null-io`, `--net-host`, `--env`, `--mount`), runtime
//! selection (`--runtime` name or path, runc `BinaryName` → wrapper or youki, a named runtime
//! from config.toml), bad input, and task events — with our shim and both Go shims.

mod runtime_common;

use std::time::Duration;

use runtime_common::{assert_fails_with, runtime_wrapper, Env, Events, Shim};

fn run_rm_echo_hello(shim: Shim, test: &str) {
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    let out = env.ctr_ok(&["run", "--rm", &env.image, "hello1", "echo", "hello"]);
    assert_eq!(out, "hello\n");
    env.assert_task_gone("hello1");
    assert!(
        env.ctr_ok(&["c", "ls", "-q"]).trim().is_empty(),
        "--rm removed the container"
    );
    env.assert_nothing_left();
}

#[test]
fn ctr_run_rm_echo_hello_with_our_shim() {
    run_rm_echo_hello(Shim::Ours, "ctr_run_rm_echo_hello_with_our_shim");
}

#[test]
fn ctr_run_rm_echo_hello_with_debian_go_shim_task_api_v2() {
    run_rm_echo_hello(
        Shim::DebianGo,
        "ctr_run_rm_echo_hello_with_debian_go_shim_task_api_v2",
    );
}

#[test]
fn ctr_run_rm_echo_hello_with_containerd_2_3_go_shim_task_api_v3() {
    run_rm_echo_hello(
        Shim::Go23,
        "ctr_run_rm_echo_hello_with_containerd_2_3_go_shim_task_api_v3",
    );
}

#[test]
fn containerd_2_3_ctr_runs_echo_hello_against_berthd() {
    let test = "containerd_2_3_ctr_runs_echo_hello_against_berthd";
    let Some(dir) = integration::bins::containerd2_dir(test) else {
        return;
    };
    let Some(env) = Env::start(Shim::Ours, test, "") else {
        return;
    };
    let out = std::process::Command::new(dir.join("ctr"))
        .arg("--address")
        .arg(env.d.address())
        .args([
            "--namespace",
            env.d.namespace(),
            "run",
            "--rm",
            &env.image,
            "hello2",
            "echo",
            "hello",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run v2.3.4 ctr");
    assert!(
        out.status.success(),
        "v2.3.4 ctr run failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.d.log_tail(40)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    env.assert_nothing_left();
}

fn detached_lifecycle(shim: Shim, test: &str) {
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    detached_lifecycle_in(&env);
}

fn detached_lifecycle_in(env: &Env) {
    let img = env.image.clone();
    env.ctr_ok(&["run", "-d", &img, "d1", "sleep", "1000"]);
    let (pid, _) = env.wait_status("d1", "RUNNING", Duration::from_secs(10));
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "pid {pid}");
    let out = env.ctr_ok(&["t", "exec", "--exec-id", "e1", "d1", "echo", "from-exec"]);
    assert_eq!(out, "from-exec\n");
    let ps = env.ctr_ok(&["t", "ps", "d1"]);
    assert!(
        ps.lines().any(|l| l.starts_with(&pid)),
        "ctr t ps lists the init pid {pid}: {ps}"
    );
    env.ctr_ok(&["t", "pause", "d1"]);
    env.wait_status("d1", "PAUSED", Duration::from_secs(5));
    env.ctr_ok(&["t", "resume", "d1"]);
    env.wait_status("d1", "RUNNING", Duration::from_secs(5));
    let metrics = env.ctr_ok(&["t", "metrics", "d1"]);
    assert!(metrics.contains("d1"), "metrics: {metrics}");
    assert!(
        metrics.contains("memory") || metrics.contains("pids"),
        "metrics show cgroup data: {metrics}"
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "d1"]);
    env.wait_status("d1", "STOPPED", Duration::from_secs(10));
    let rm = env.ctr(&["t", "rm", "d1"]);
    assert!(
        rm.status.success(),
        "t rm: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("137"),
        "t rm reports exit 137: {}",
        String::from_utf8_lossy(&rm.stderr)
    );
    env.assert_task_gone("d1");
    env.ctr_ok(&["c", "rm", "d1"]);

    // kill -a: every process in the container, exec included.
    env.ctr_ok(&["run", "-d", &img, "d2", "sleep", "1000"]);
    env.wait_status("d2", "RUNNING", Duration::from_secs(10));
    env.ctr_ok(&["t", "exec", "-d", "--exec-id", "e2", "d2", "sleep", "1000"]);
    env.ctr_ok(&["t", "kill", "-a", "-s", "9", "d2"]);
    env.wait_status("d2", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "d2"]);
    env.ctr_ok(&["c", "rm", "d2"]);

    // Containers without tasks.
    env.ctr_ok(&["c", "create", &img, "c1", "true"]);
    let ls = env.ctr_ok(&["c", "ls"]);
    assert!(
        ls.lines().any(|l| l.starts_with("c1 ") && l.contains(&img)),
        "c ls: {ls}"
    );
    let info = env.ctr_ok(&["c", "info", "c1"]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("c info is JSON");
    assert_eq!(v["ID"], "c1");
    assert_eq!(v["Runtime"]["Name"], "io.containerd.runc.v2");
    assert!(
        v["Spec"]["process"]["args"].to_string().contains("true"),
        "spec stored: {info}"
    );
    // Update by field path (labels.team), filters over ListStream.
    env.ctr_ok(&["c", "label", "c1", "team=blue"]);
    assert_eq!(
        env.ctr_ok(&["c", "ls", "-q", "labels.team==blue"]).trim(),
        "c1"
    );
    assert!(env
        .ctr_ok(&["c", "ls", "-q", "labels.team==red"])
        .trim()
        .is_empty());
    let info = env.ctr_ok(&["c", "info", "c1"]);
    assert!(info.contains("\"team\": \"blue\""), "label stored: {info}");
    assert!(
        info.contains("\"Snapshotter\": \"overlayfs\"") && info.contains("\"SnapshotKey\": \"c1\""),
        "snapshot recorded: {info}"
    );
    env.ctr_ok(&["c", "rm", "c1"]);
    assert!(env.ctr_ok(&["c", "ls", "-q"]).trim().is_empty());
    env.assert_nothing_left();
}

#[test]
fn detached_lifecycle_driven_by_containerd_2_3_ctr() {
    let test = "detached_lifecycle_driven_by_containerd_2_3_ctr";
    let Some(dir) = integration::bins::containerd2_dir(test) else {
        return;
    };
    let Some(mut env) = Env::start(Shim::Ours, test, "") else {
        return;
    };
    env.ctr_bin = Some(dir.join("ctr"));
    detached_lifecycle_in(&env);
}

#[test]
fn detached_lifecycle_with_our_shim() {
    detached_lifecycle(Shim::Ours, "detached_lifecycle_with_our_shim");
}

#[test]
fn detached_lifecycle_with_debian_go_shim() {
    detached_lifecycle(Shim::DebianGo, "detached_lifecycle_with_debian_go_shim");
}

#[test]
fn detached_lifecycle_with_containerd_2_3_go_shim() {
    detached_lifecycle(Shim::Go23, "detached_lifecycle_with_containerd_2_3_go_shim");
}

fn run_options(shim: Shim, test: &str) {
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    let img = env.image.clone();
    let log = env.work.path().join("out.log");
    let uri = format!("file://{}", log.display());
    env.ctr_ok(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        &img,
        "o1",
        "echo",
        "to-the-log",
    ]);
    assert_eq!(
        std::fs::read_to_string(&log).expect("log file"),
        "to-the-log\n"
    );
    let out = env.ctr_ok(&["run", "--rm", "--null-io", &img, "o2", "echo", "nowhere"]);
    assert!(out.is_empty(), "--null-io printed {out:?}");
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--env",
        "FOO=bar-baz",
        &img,
        "o3",
        "sh",
        "-c",
        "echo $FOO",
    ]);
    assert_eq!(out, "bar-baz\n");
    let host_dir = env.work.path().join("shared");
    std::fs::create_dir(&host_dir).expect("mkdir");
    std::fs::write(host_dir.join("marker"), "from-the-host").expect("write");
    let mount = format!(
        "type=bind,src={},dst=/host,options=rbind:ro",
        host_dir.display()
    );
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--mount",
        &mount,
        &img,
        "o4",
        "cat",
        "/host/marker",
    ]);
    assert_eq!(out, "from-the-host");
    // --net-host: the container sees the host's interfaces (more than just lo).
    let host_ifaces = std::fs::read_dir("/sys/class/net")
        .expect("ls /sys/class/net")
        .count();
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--net-host",
        &img,
        "o5",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(
        out.split_whitespace().count(),
        host_ifaces,
        "--net-host interfaces: {out}"
    );
    // -t: a terminal, driven through script(1) so ctr has a tty on stdin.
    let script = integration::bins::require_bin("script", "bsdutils");
    let cmd = format!(
        "{} --address {} --namespace {} run -t --rm {img} o6 sh -c 'test -t 0 && echo is-a-tty'",
        integration::bins::require_bin("ctr", "containerd").display(),
        env.d.address().display(),
        env.d.namespace()
    );
    let o = std::process::Command::new(script)
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("is-a-tty"),
        "run -t: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    env.assert_nothing_left();
}

#[test]
fn run_options_with_our_shim() {
    run_options(Shim::Ours, "run_options_with_our_shim");
}

#[test]
fn run_options_with_debian_go_shim() {
    run_options(Shim::DebianGo, "run_options_with_debian_go_shim");
}

#[test]
fn runtime_selection_by_name_path_binary_name_and_config() {
    let test = "runtime_selection_by_name_path_binary_name_and_config";
    let youki = std::path::PathBuf::from("/work/shared/interop/youki-0.7.0/youki");
    let youki = if youki.exists() {
        youki
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/interop/youki-0.7.0/youki")
    };
    assert!(
        youki.exists(),
        "youki 0.7.0 missing at {}: the interop bundle is required",
        youki.display()
    );
    // The configured runtime's BinaryName is a wrapper that logs, then execs youki.
    let wrappers = tempfile::tempdir().expect("tempdir");
    let youki_calls = wrappers.path().join("youki.calls");
    let youki_wrapper = runtime_wrapper(wrappers.path(), "youki-wrapper.sh", &youki, &youki_calls);
    let extra = format!(
        "[plugins.\"io.containerd.runtime.v2.task\".runtimes.youki]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.runtime.v2.task\".runtimes.youki.options]\n    BinaryName = \"{}\"\n[plugins.\"io.containerd.runtime.v2.task\".runtimes.debian]\n  runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = \"{}\"\n",
        youki_wrapper.display(),
        integration::bins::require_bin("containerd-shim-runc-v2", "containerd").display()
    );
    let Some(env) = Env::start(Shim::Ours, test, &extra) else {
        return;
    };
    let img = env.image.clone();
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runc.v2",
        &img,
        "s1",
        "echo",
        "by-name",
    ]);
    assert_eq!(out, "by-name\n");
    let debian_shim = integration::bins::require_bin("containerd-shim-runc-v2", "containerd");
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        &debian_shim.to_string_lossy(),
        &img,
        "s2",
        "echo",
        "by-path",
    ]);
    assert_eq!(out, "by-path\n");
    // A configured runtime with runtime_path: that shim binary runs the task.
    env.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        "debian",
        &img,
        "s2a",
        "sleep",
        "100",
    ]);
    env.wait_status("s2a", "RUNNING", Duration::from_secs(10));
    let shim_exe =
        std::fs::read_link(format!("/proc/{}/exe", env.shim_pid("s2a"))).expect("shim exe");
    assert_eq!(
        shim_exe,
        std::path::Path::new("/usr/bin/containerd-shim-runc-v2")
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "s2a"]);
    env.wait_status("s2a", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "s2a"]);
    env.ctr_ok(&["c", "rm", "s2a"]);
    // The deprecated io.containerd.runc.v1 resolves like any name, to Debian's
    // containerd-shim-runc-v1 (which reads its options from stdin at start).
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runc.v1",
        &img,
        "s2b",
        "echo",
        "by-runc-v1",
    ]);
    assert_eq!(out, "by-runc-v1\n");
    // runc options BinaryName → a wrapper that logs every call.
    let calls = env.work.path().join("wrapper.calls");
    let runc = integration::bins::require_bin("runc", "runc");
    let wrapper = runtime_wrapper(env.work.path(), "runc-wrapper.sh", &runc, &calls);
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--runc-binary",
        &wrapper.to_string_lossy(),
        &img,
        "s3",
        "echo",
        "via-wrapper",
    ]);
    assert_eq!(out, "via-wrapper\n");
    let log = std::fs::read_to_string(&calls).expect("wrapper was called");
    assert!(
        log.contains("create") && log.contains("s3"),
        "wrapper calls: {log}"
    );
    // BinaryName → youki.
    let out = env.ctr_ok(&[
        "run",
        "--rm",
        "--runc-binary",
        &youki.to_string_lossy(),
        &img,
        "s4",
        "echo",
        "via-youki",
    ]);
    assert_eq!(out, "via-youki\n");
    // A named runtime from config.toml whose options say BinaryName = youki.
    let out = env.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        "youki",
        &img,
        "s5",
        "sleep",
        "100",
    ]);
    assert!(out.is_empty(), "{out}");
    env.wait_status("s5", "RUNNING", Duration::from_secs(10));
    let log = std::fs::read_to_string(&youki_calls).expect("configured BinaryName was called");
    assert!(
        log.contains("create") && log.contains("s5"),
        "youki wrapper calls: {log}"
    );
    let info = env.ctr_ok(&["c", "info", "s5"]);
    assert!(
        info.contains("\"Name\": \"youki\""),
        "container runtime name: {info}"
    );
    env.ctr_ok(&["t", "kill", "-s", "9", "s5"]);
    env.wait_status("s5", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "s5"]);
    env.ctr_ok(&["c", "rm", "s5"]);
    env.assert_nothing_left();
}

#[test]
fn bad_input_gets_containerd_errors_and_leaves_nothing() {
    let test = "bad_input_gets_containerd_errors_and_leaves_nothing";
    let Some(env) = Env::start(Shim::Ours, test, "") else {
        return;
    };
    let img = env.image.clone();
    // Unknown runtime: the missing shim binary is named, nothing half-created remains.
    let o = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.nosuch.v1",
        &img,
        "b1",
        "true",
    ]);
    assert_fails_with(&o, &["containerd-shim-nosuch-v1"]);
    env.assert_task_gone("b1");
    let _ = env.ctr(&["c", "rm", "b1"]);
    // An unknown runtime v1 flavour: a clear error, not a hang.
    let o = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.runtime.v1.bsd",
        &img,
        "b2",
        "true",
    ]);
    assert_fails_with(
        &o,
        &[
            "io.containerd.runtime.v1.bsd",
            "io.containerd.runtime.v1.linux",
        ],
    );
    env.assert_task_gone("b2");
    let _ = env.ctr(&["c", "rm", "b2"]);
    // Container id already used.
    env.ctr_ok(&["run", "-d", &img, "b3", "sleep", "100"]);
    let o = env.ctr(&["c", "create", &img, "b3", "true"]);
    assert_fails_with(&o, &["already exists"]);
    // Exec with a duplicate exec id.
    env.ctr_ok(&["t", "exec", "-d", "--exec-id", "x1", "b3", "sleep", "100"]);
    let o = env.ctr(&["t", "exec", "--exec-id", "x1", "b3", "true"]);
    assert_fails_with(&o, &["already exists"]);
    // Task for a missing container.
    let o = env.ctr(&["t", "start", "nosuch"]);
    assert_fails_with(&o, &["not found"]);
    // Kill of an exited task.
    env.ctr_ok(&["t", "kill", "-a", "-s", "9", "b3"]);
    env.wait_status("b3", "STOPPED", Duration::from_secs(10));
    let o = env.ctr(&["t", "kill", "-s", "9", "b3"]);
    assert_fails_with(&o, &["not found"]);
    env.ctr_ok(&["t", "rm", "b3"]);
    env.ctr_ok(&["c", "rm", "b3"]);
    env.assert_nothing_left();
}

fn events_in_order(shim: Shim, test: &str) {
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    let img = env.image.clone();
    let events = Events::start(&env);
    let o = env.ctr(&["run", "--rm", &img, "ev1", "sh", "-c", "exit 7"]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "ctr run exits with the task's status"
    );
    events.wait_for(
        "/containers/delete",
        &["\"ev1\""],
        1,
        Duration::from_secs(10),
    );
    let topics: Vec<String> = events
        .topics(&["\"ev1\""])
        .into_iter()
        .filter(|t| t.starts_with("/tasks/") || t.starts_with("/containers/"))
        .collect();
    assert_eq!(
        topics,
        [
            "/containers/create",
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
            "/containers/delete"
        ],
        "events:\n{}",
        events.text()
    );
    assert_eq!(
        events.count("/tasks/exit", &["\"ev1\"", "\"exit_status\":7"]),
        1
    );

    // An exec: exec-added, exec-started, its own exit; one exit per process.
    env.ctr_ok(&["run", "-d", &img, "ev2", "sleep", "100"]);
    env.wait_status("ev2", "RUNNING", Duration::from_secs(10));
    let o = env.ctr(&["t", "exec", "--exec-id", "x1", "ev2", "sh", "-c", "exit 3"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "ctr t exec exits with the exec's status"
    );
    env.ctr_ok(&["t", "pause", "ev2"]);
    env.ctr_ok(&["t", "resume", "ev2"]);
    env.ctr_ok(&["t", "kill", "-s", "9", "ev2"]);
    env.wait_status("ev2", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "ev2"]);
    events.wait_for("/tasks/delete", &["\"ev2\""], 1, Duration::from_secs(10));
    let topics: Vec<String> = events
        .topics(&["\"ev2\""])
        .into_iter()
        .filter(|t| t.starts_with("/tasks/"))
        .collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "events:\n{}",
        events.text()
    );
    assert_eq!(
        events.count(
            "/tasks/exit",
            &["\"ev2\"", "\"id\":\"x1\"", "\"exit_status\":3"]
        ),
        1
    );
    assert_eq!(
        events.count("/tasks/exit", &["\"ev2\"", "\"exit_status\":137"]),
        1
    );
    env.ctr_ok(&["c", "rm", "ev2"]);
}

#[test]
fn ctr_events_show_task_events_in_order_with_our_shim() {
    events_in_order(
        Shim::Ours,
        "ctr_events_show_task_events_in_order_with_our_shim",
    );
}

#[test]
fn ctr_events_show_task_events_in_order_with_debian_go_shim() {
    events_in_order(
        Shim::DebianGo,
        "ctr_events_show_task_events_in_order_with_debian_go_shim",
    );
}

#[test]
fn ctr_events_show_task_events_in_order_with_containerd_2_3_go_shim() {
    events_in_order(
        Shim::Go23,
        "ctr_events_show_task_events_in_order_with_containerd_2_3_go_shim",
    );
}

#[test]
fn a_hung_shim_shows_as_unknown_instead_of_blocking_ctr() {
    let test = "a_hung_shim_shows_as_unknown_instead_of_blocking_ctr";
    let Some(env) = Env::start(Shim::DebianGo, test, "") else {
        return;
    };
    let img = env.image.clone();
    env.ctr_ok(&["run", "-d", &img, "h1", "sleep", "1000"]);
    env.ctr_ok(&["run", "-d", &img, "h2", "sleep", "1000"]);
    env.wait_status("h1", "RUNNING", Duration::from_secs(10));
    let shim = nix::unistd::Pid::from_raw(env.shim_pid("h1"));
    nix::sys::signal::kill(shim, nix::sys::signal::SIGSTOP).expect("stop shim");
    let started = std::time::Instant::now();
    let ls = env.ctr_ok(&["t", "ls"]);
    let took = started.elapsed();
    nix::sys::signal::kill(shim, nix::sys::signal::SIGCONT).expect("continue shim");
    assert!(
        took < Duration::from_secs(5),
        "ctr t ls took {took:?} with a hung shim"
    );
    let line = |id: &str| {
        ls.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("h1").contains("UNKNOWN"),
        "hung task reported as UNKNOWN: {ls}"
    );
    assert!(
        line("h2").contains("RUNNING"),
        "the other task is unaffected: {ls}"
    );
    env.wait_status("h1", "RUNNING", Duration::from_secs(5));
    for id in ["h1", "h2"] {
        env.ctr_ok(&["t", "kill", "-s", "9", id]);
        env.wait_status(id, "STOPPED", Duration::from_secs(10));
        env.ctr_ok(&["t", "rm", id]);
        env.ctr_ok(&["c", "rm", id]);
    }
    env.assert_nothing_left();
}
