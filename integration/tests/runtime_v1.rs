//! Legacy runtime v1 (`io.containerd.runtime.v1.linux`, the seeds' `[plugins.linux]`):
//! berthd runs containers through Debian's `containerd-shim` v1 for Debian's `ctr`, with the
//! `[plugins.linux]` keys honoured, task events in order, live restore across `kill -9`,
//! metrics read by berthd from the task's cgroup (as containerd 1.6.20 does, checked against
//! it), and a clear error when the configured v1 shim is not installed.

mod runtime_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use integration::containerd::Containerd;
use runtime_common::{assert_fails_with, Env, Events, Shim};

const V1: &str = "io.containerd.runtime.v1.linux";

fn bundle_v1(env: &Env, id: &str) -> std::path::PathBuf {
    env.d
        .state()
        .join("io.containerd.runtime.v1.linux")
        .join(env.d.namespace())
        .join(id)
}

/// `[plugins.linux]` with Debian's `containerd-shim` (required: fails naming the package) and
/// runc state under `runc_root`; `extra` lines appended.
fn linux_v1_config(runc_root: &std::path::Path, extra: &str) -> String {
    let _ = integration::bins::require_bin("containerd-shim", "containerd");
    format!(
        "[plugins.linux]\n  shim = \"containerd-shim\"\n  runtime = \"runc\"\n  runtime_root = \"{}\"\n{extra}",
        runc_root.display()
    )
}

#[test]
fn runtime_v1_runs_restores_and_cleans_up() {
    let runc_root = tempfile::tempdir().expect("tempdir");
    let extra = linux_v1_config(runc_root.path(), "  no_shim = false\n  shim_debug = true\n");
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

/// A daemon `ctr` talks to, berthd or containerd, for running one scenario against both.
trait Daemon {
    fn ctr(&self, args: &[&str]) -> Output;
    fn kill9_and_restart(&mut self, while_down: Duration);
    fn log_tail(&self) -> String;

    fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "`ctr {}` failed ({}):\nstdout: {}\nstderr: {}\nlog tail:\n{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until `ctr t ls` shows `status` for task `id`.
    fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ls = self.ctr_ok(&["t", "ls"]);
            let now = ls.lines().skip(1).find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id) && f.len() >= 3).then(|| f[2].to_string())
            });
            if now.as_deref() == Some(status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} not {status} within 10s: {now:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Daemon for Env {
    fn ctr(&self, args: &[&str]) -> Output {
        Env::ctr(self, args)
    }
    fn kill9_and_restart(&mut self, while_down: Duration) {
        self.d.kill9();
        std::thread::sleep(while_down);
        self.d.restart().expect("berthd restarts");
    }
    fn log_tail(&self) -> String {
        self.d.log_tail(40)
    }
}

impl Daemon for Containerd {
    fn ctr(&self, args: &[&str]) -> Output {
        Containerd::ctr(self, args)
    }
    fn kill9_and_restart(&mut self, while_down: Duration) {
        self.kill9();
        std::thread::sleep(while_down);
        self.restart().expect("containerd restarts");
    }
    fn log_tail(&self) -> String {
        Containerd::log_tail(self, 40)
    }
}

/// `ctr t metrics` table: metric name → value.
fn metrics_table(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .skip_while(|l| !l.starts_with("METRIC"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn num(table: &BTreeMap<String, String>, name: &str) -> u64 {
    table
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number for {name} in {table:?}"))
}

/// `ctr t metrics --format json`, parsed.
fn metrics_json(d: &dyn Daemon, id: &str) -> serde_json::Value {
    let out = d.ctr_ok(&["t", "metrics", "--format", "json", id]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("metrics JSON of {id}: {e}\n{out}"))
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Keys of `v` whose values are objects (sub-messages, present whatever their values).
fn message_keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// What one daemon answered in [`metrics_scenario`].
#[derive(Debug)]
struct Seen {
    /// Table of a running v1 task.
    running: BTreeMap<String, String>,
    /// JSON of the same task.
    json: serde_json::Value,
    /// Table of a v1 task whose init exited (not deleted yet), or ctr's error.
    exited: Result<BTreeMap<String, String>, String>,
    /// Table of the running task after a `kill -9` + restart of the daemon.
    after_restart: BTreeMap<String, String>,
    /// ctr's error for a task whose init exited while the daemon was down (its pid, and so
    /// its cgroup, cannot be found on restore).
    gone_while_down: String,
}

fn outcome(o: &Output) -> Result<BTreeMap<String, String>, String> {
    if o.status.success() {
        Ok(metrics_table(&String::from_utf8_lossy(&o.stdout)))
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// v1 tasks through their lifecycle, metrics at each step; the same for berthd and containerd.
fn metrics_scenario(d: &mut dyn Daemon, image: &str) -> Seen {
    d.ctr_ok(&["run", "-d", "--runtime", V1, image, "m1", "sleep", "1000"]);
    d.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        V1,
        image,
        "m1x",
        "sh",
        "-c",
        "exit 3",
    ]);
    d.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        V1,
        image,
        "m1e",
        "sh",
        "-c",
        "sleep 2",
    ]);
    d.wait_status("m1", "RUNNING");
    d.wait_status("m1x", "STOPPED");
    // A second process: pids.current counts it.
    d.ctr_ok(&["t", "exec", "-d", "--exec-id", "x1", "m1", "sleep", "1000"]);
    let running = metrics_table(&d.ctr_ok(&["t", "metrics", "m1"]));
    let json = metrics_json(d, "m1");
    let exited = outcome(&d.ctr(&["t", "metrics", "m1x"]));

    d.kill9_and_restart(Duration::from_secs(3));
    d.wait_status("m1", "RUNNING");
    d.wait_status("m1e", "STOPPED");
    let after_restart = metrics_table(&d.ctr_ok(&["t", "metrics", "m1"]));
    let gone_while_down = match outcome(&d.ctr(&["t", "metrics", "m1e"])) {
        Ok(t) => panic!("metrics of a task whose cgroup is gone: {t:?}"),
        Err(e) => e,
    };

    d.ctr_ok(&["t", "kill", "-a", "-s", "9", "m1"]);
    d.wait_status("m1", "STOPPED");
    for id in ["m1", "m1x", "m1e"] {
        d.ctr_ok(&["t", "rm", id]);
        d.ctr_ok(&["c", "rm", id]);
    }
    Seen {
        running,
        json,
        exited,
        after_restart,
        gone_while_down,
    }
}

#[test]
fn runtime_v1_metrics_match_containerd_and_survive_restart() {
    let runc_root = tempfile::tempdir().expect("tempdir");
    let extra = linux_v1_config(runc_root.path(), "");
    let Some(mut env) = Env::start(
        Shim::Ours,
        "runtime_v1_metrics_match_containerd_and_survive_restart",
        &extra,
    ) else {
        return;
    };
    let img = env.image.clone();

    // The same shape as a runtime v2 task's metrics (our shim reads the same cgroup files).
    env.ctr_ok(&["run", "-d", &img, "m2", "sleep", "1000"]);
    env.wait_status("m2", "RUNNING", Duration::from_secs(10));
    let v2_table = metrics_table(&env.ctr_ok(&["t", "metrics", "m2"]));
    let v2_json = metrics_json(&env, "m2");
    env.ctr_ok(&["t", "kill", "-s", "9", "m2"]);
    env.wait_status("m2", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "m2"]);
    env.ctr_ok(&["c", "rm", "m2"]);

    let ours = metrics_scenario(&mut env, &img);
    eprintln!("berthd: {ours:#?}");

    assert!(num(&ours.running, "memory.usage_in_bytes") > 0, "{ours:?}");
    assert!(
        num(&ours.running, "pids.current") >= 2,
        "init + exec: {ours:?}"
    );
    assert_eq!(
        ours.running.keys().collect::<Vec<_>>(),
        v2_table.keys().collect::<Vec<_>>(),
        "v1 task's metrics table has the v2 task's rows"
    );
    assert!(
        ours.json["memory"]["usage"]["usage"].as_u64() > Some(0),
        "{}",
        ours.json
    );
    assert!(
        ours.json["pids"]["current"].as_u64() >= Some(2),
        "{}",
        ours.json
    );
    assert!(
        ours.json["cpu"]["usage"]["total"].as_u64() > Some(0),
        "{}",
        ours.json
    );
    assert_eq!(
        keys(&ours.json),
        keys(&v2_json),
        "{}\n{}",
        ours.json,
        v2_json
    );
    assert!(num(&ours.after_restart, "memory.usage_in_bytes") > 0);
    assert!(num(&ours.after_restart, "pids.current") >= 2, "{ours:?}");
    assert!(
        ours.gone_while_down.contains("no metrics received"),
        "{}",
        ours.gone_while_down
    );

    // containerd v2.3.4's ctr reads the same answer (v1 metrics type, table and JSON).
    if let Some(dir) = integration::bins::containerd2_dir("runtime v1 metrics with ctr 2.3.4") {
        env.ctr_ok(&["run", "-d", "--runtime", V1, &img, "m3", "sleep", "1000"]);
        env.wait_status("m3", "RUNNING", Duration::from_secs(10));
        env.ctr_bin = Some(dir.join("ctr"));
        let table = metrics_table(&env.ctr_ok(&["t", "metrics", "m3"]));
        assert!(num(&table, "memory.usage_in_bytes") > 0, "{table:?}");
        assert!(num(&table, "pids.current") >= 1, "{table:?}");
        let json = metrics_json(&env, "m3");
        assert!(json["pids"]["current"].as_u64() >= Some(1), "{json}");
        env.ctr_bin = None;
        env.ctr_ok(&["t", "kill", "-s", "9", "m3"]);
        env.wait_status("m3", "STOPPED", Duration::from_secs(10));
        env.ctr_ok(&["t", "rm", "m3"]);
        env.ctr_ok(&["c", "rm", "m3"]);
    }
    env.assert_nothing_left();
    drop(env);

    // containerd 1.6.20 with its own v1 runtime, same scenario: same rows, same JSON
    // sections, same answers for exited and vanished tasks.
    let shim = integration::bins::our_shim_bin();
    let mut c = Containerd::v1()
        .shim_dir(integration::bins::ShimDir::new(&shim))
        .start()
        .expect("containerd starts");
    let archive = tempfile::tempdir().expect("tempdir");
    let tar = archive.path().join("busybox.oci.tar");
    let test_img = integration::image::TestImage::busybox().expect("busybox test image");
    test_img.write_oci_archive(&tar).expect("write archive");
    c.import(&tar);
    let theirs = metrics_scenario(&mut c, &test_img.name);
    eprintln!("containerd: {theirs:#?}");
    assert_eq!(
        ours.running.keys().collect::<Vec<_>>(),
        theirs.running.keys().collect::<Vec<_>>()
    );
    assert_eq!(keys(&ours.json), keys(&theirs.json));
    // Go's JSON leaves out zero numbers, so only the sub-messages of each section are
    // compared by name (which counters are zero differs from run to run).
    for section in ["memory", "pids", "cpu", "blkio"] {
        assert_eq!(
            message_keys(&ours.json[section]),
            message_keys(&theirs.json[section]),
            "{section}: {} vs {}",
            ours.json[section],
            theirs.json[section]
        );
    }
    // An exited (not yet deleted) task's cgroup still exists: metrics, with no process.
    let exited = ours.exited.as_ref().expect("metrics of an exited v1 task");
    assert_eq!(exited.get("pids.current").map(String::as_str), Some("0"));
    match (&ours.exited, &theirs.exited) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            assert_eq!(a.get("pids.current"), b.get("pids.current"));
        }
        (a, b) => assert_eq!(a, b, "exited task"),
    }
    assert_eq!(ours.gone_while_down, theirs.gone_while_down);
}
