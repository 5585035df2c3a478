//! Shared setup for the shim end-to-end tests (`shim_*.rs`): a private containerd (1.6.20 or
//! v2.3.4) with OUR `containerd-shim-runc-v2` first in its PATH and the busybox test image
//! imported, plus helpers to look at shims, bundles and runc state.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::bins;
use integration::containerd::{Builder, Containerd};
use integration::image::TestImage;
use integration::procs;
use integration::tasks;

/// A private containerd running our shim, with the busybox image imported.
pub struct Env {
    pub c: Containerd,
    /// Extra `ctr run` flags every scenario uses (e.g. `--runc-binary youki`).
    pub run_flags: Vec<String>,
    pub image: String,
    pub work: tempfile::TempDir,
}

/// Which containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gen {
    V1,
    V2,
}

impl Env {
    /// containerd 1.6.20 (or 2.3.4; `None` when BERTH_CONTAINERD2_DIR is unset, already
    /// reported loudly by the harness) with our shim first in PATH.
    pub fn start(gen: Gen, test: &str) -> Option<Env> {
        Self::start_with(gen, test, bins::our_shim_dir(), "")
    }

    pub fn start_with(gen: Gen, test: &str, shim_dir: bins::ShimDir, extra: &str) -> Option<Env> {
        let builder: Builder = match gen {
            Gen::V1 => Containerd::v1(),
            Gen::V2 => Containerd::v2(test)?,
        };
        let work = tempfile::tempdir().expect("tempdir");
        let img = TestImage::busybox().expect("busybox test image");
        let archive = work.path().join("busybox.oci.tar");
        img.write_oci_archive(&archive)
            .expect("write image archive");
        let c = builder
            .shim_dir(shim_dir)
            .extra_config(extra)
            .start()
            .expect("containerd starts");
        c.import(&archive);
        Some(Env {
            c,
            run_flags: Vec::new(),
            image: img.name.clone(),
            work,
        })
    }

    /// `ctr run <run_flags> <args>`, requiring success.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = vec!["run"];
        all.extend(self.run_flags.iter().map(String::as_str));
        all.extend(args);
        self.c.ctr_ok(&all)
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        self.c.ctr(args)
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        self.c.ctr_ok(args)
    }

    /// `ctr t ls` line of a task: (pid, status).
    pub fn task_status(&self, id: &str) -> Option<(String, String)> {
        tasks::parse_status(&self.ctr_ok(&["t", "ls"]), id)
    }

    /// Waits until `ctr t ls` shows `status` for the task.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> (String, String) {
        tasks::wait_status(
            id,
            status,
            timeout,
            || self.task_status(id),
            || self.c.log_tail(40),
        )
    }

    /// Pid of the shim serving a task (from its `shim.pid` in the bundle).
    pub fn shim_pid(&self, id: &str) -> i32 {
        let p = self.c.bundle_dir(id).join("shim.pid");
        fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            .trim()
            .parse()
            .expect("shim.pid holds a number")
    }

    /// The shim's executable (resolved), to prove it is ours.
    pub fn shim_exe(&self, id: &str) -> PathBuf {
        let pid = self.shim_pid(id);
        fs::read_link(format!("/proc/{pid}/exe")).expect("shim exe link")
    }

    pub fn runc_state_dir(&self, id: &str) -> PathBuf {
        Path::new(integration::containerd::RUNC_ROOT)
            .join(self.c.namespace())
            .join(id)
    }
}

/// Our shim binary, canonicalized.
pub fn our_shim() -> PathBuf {
    fs::canonicalize(bins::our_shim_bin()).expect("our shim binary")
}

/// Asserts nothing of task `id` is left: bundle dir, runc state, processes, mounts.
pub fn assert_task_gone(env: &Env, id: &str) {
    let bundle = env.c.bundle_dir(id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bundle.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!bundle.exists(), "bundle {} left behind", bundle.display());
    assert!(
        !env.runc_state_dir(id).exists(),
        "runc state of {id} left behind"
    );
    assert!(
        procs::mounts_under(&env.c.state().join("io.containerd.runtime.v2.task")).is_empty(),
        "rootfs mounts left behind"
    );
}

/// `ctr events` in the background ([`Events::start`]`(&env)` subscribes with the ctr matching
/// the private containerd).
#[allow(unused_imports)] // not every test binary that includes this module subscribes
pub use integration::events::Events;

impl integration::events::CtrTarget for Env {
    fn ctr_command(&self) -> std::process::Command {
        self.c.ctr_command()
    }
}

/// Done-when item 2: the detached lifecycle, driven with `ctr`, checked through `ctr` output,
/// exit codes and `ctr events`.
pub fn detached_lifecycle(env: &Env) {
    let ev = Events::start(env);
    env.run_ok(&["-d", &env.image, "t2", "sleep", "1000"]);
    assert_eq!(
        env.shim_exe("t2"),
        our_shim(),
        "task t2 is not served by our shim"
    );
    let t2_shim = env.shim_pid("t2");
    let t2_sock = fs::read_to_string(env.c.bundle_dir("t2").join("address")).expect("address");
    let t2_sock = t2_sock.trim_start_matches("unix://").to_string();
    let (pid, status) = env.wait_status("t2", "RUNNING", Duration::from_secs(10));

    let hi = env.ctr_ok(&["t", "exec", "--exec-id", "e1", "t2", "sh", "-c", "echo hi"]);
    assert_eq!(hi.trim(), "hi");
    let ps = env.ctr_ok(&["t", "ps", "t2"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(pid.as_str())),
        "ctr t ps lacks init {pid} ({status}):\n{ps}"
    );

    // Processes that exit at once (often before `runc exec` returns and the shim reads the
    // pid file): every exit status still arrives, exactly once.
    for code in 1..=8 {
        let o = env.ctr(&[
            "t",
            "exec",
            "--exec-id",
            &format!("q{code}"),
            "t2",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(o.status.code(), Some(code), "fast exec q{code}: {o:?}");
    }
    ev.wait_for("/tasks/exit", &["\"t2\"", "q8"], 1, Duration::from_secs(5));
    for code in 1..=8 {
        assert_eq!(
            ev.count("/tasks/exit", &["\"t2\"", &format!("\"q{code}\"")]),
            1,
            "one exit for q{code}:\n{}",
            ev.text()
        );
    }

    env.ctr_ok(&["t", "pause", "t2"]);
    env.wait_status("t2", "PAUSED", Duration::from_secs(5));
    env.ctr_ok(&["t", "resume", "t2"]);
    env.wait_status("t2", "RUNNING", Duration::from_secs(5));

    let metrics = env.ctr_ok(&["t", "metrics", "t2"]);
    assert!(
        metrics.contains("t2") && metrics.contains("memory"),
        "ctr t metrics:\n{metrics}"
    );

    kill9_and_remove(env, "t2");
    assert_shim_gone(t2_shim, &t2_sock);

    // kill -a takes down the init and an exec'd process.
    env.run_ok(&["-d", &env.image, "t3", "sleep", "1000"]);
    env.wait_status("t3", "RUNNING", Duration::from_secs(10));
    let t3_shim = env.shim_pid("t3");
    let t3_sock = fs::read_to_string(env.c.bundle_dir("t3").join("address")).expect("address");
    let t3_sock = t3_sock.trim_start_matches("unix://").to_string();
    env.ctr_ok(&["t", "exec", "-d", "--exec-id", "e2", "t3", "sleep", "1000"]);
    ev.wait_for(
        "/tasks/exec-started",
        &["\"t3\"", "e2"],
        1,
        Duration::from_secs(5),
    );
    env.ctr_ok(&["t", "kill", "-a", "-s", "9", "t3"]);
    env.wait_status("t3", "STOPPED", Duration::from_secs(10));
    ev.wait_for("/tasks/exit", &["\"t3\"", "e2"], 1, Duration::from_secs(5));
    // The exec's exit is published before the init's (containerd 2.x relies on it).
    ev.wait_for("/tasks/exit", &["\"id\":\"t3\""], 1, Duration::from_secs(5));
    let text = ev.text();
    let pos = |needle: &str| {
        text.lines()
            .position(|l| l.contains(" /tasks/exit ") && l.contains(needle))
            .unwrap_or_else(|| panic!("no exit with {needle}:\n{text}"))
    };
    assert!(
        pos("\"id\":\"e2\"") < pos("\"id\":\"t3\""),
        "init exit published before its exec's:\n{text}"
    );
    let rm = env.ctr(&["t", "rm", "t3"]);
    assert_rm_status(&rm, 137);
    env.ctr_ok(&["c", "rm", "t3"]);
    assert_task_gone(env, "t3");
    assert_shim_gone(t3_shim, &t3_sock);

    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/delete",
    ] {
        ev.wait_for(topic, &["t2"], 1, Duration::from_secs(5));
    }
    ev.wait_for("/tasks/exit", &["\"t2\"", "137"], 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    // Exactly one exit per process: init t2, exec e1 (ctr's own events carry the same ids).
    let t2_exits: Vec<String> = ev
        .text()
        .lines()
        .filter(|l| l.contains(" /tasks/exit ") && l.contains("\"t2\""))
        .map(str::to_string)
        .collect();
    let id_count = |id: &str| {
        t2_exits
            .iter()
            .filter(|l| l.contains(&format!("\"id\":\"{id}\"")))
            .count()
    };
    assert_eq!(id_count("t2"), 1, "exits of the t2 init:\n{t2_exits:#?}");
    assert_eq!(id_count("e1"), 1, "exits of e1:\n{t2_exits:#?}");
}

/// `ctr t kill -s 9`, the task goes STOPPED, `ctr t rm` reports 137, `ctr c rm`, and nothing
/// of the task is left.
pub fn kill9_and_remove(env: &Env, id: &str) {
    env.ctr_ok(&["t", "kill", "-s", "9", id]);
    env.wait_status(id, "STOPPED", Duration::from_secs(10));
    let rm = env.ctr(&["t", "rm", id]);
    assert_rm_status(&rm, 137);
    env.ctr_ok(&["c", "rm", id]);
    assert_task_gone(env, id);
}

/// `ctr t rm` of a stopped task reports its exit code (1.6 and 2.x ctr warn
/// "exit with non-zero exit code N" and exit 0).
pub fn assert_rm_status(rm: &std::process::Output, code: u32) {
    let err = String::from_utf8_lossy(&rm.stderr);
    assert!(
        rm.status.code() == Some(code as i32) || err.contains(&format!("exit code {code}")),
        "ctr t rm should report exit status {code}: {rm:?}"
    );
}

/// How many `TaskExit` events our shims report as delivered to containerd for `subject`
/// (`container/process`), from the shim log lines containerd copies into its log.
pub fn forwarded_exits(env: &Env, subject: &str) -> usize {
    let needle = format!("event /tasks/exit for {subject} forwarded to containerd");
    fs::read_to_string(env.c.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// Done-when item 6: containerd is SIGKILLed and restarted on the same root/state while our
/// shims keep running; the running task is restored (RUNNING, exec works, kill reports the
/// exit) and a task that exited while containerd was down has its exit delivered once.
///
/// r1 and r2 share one shim (the `io.containerd.runc.v2.group` annotation), which also proves
/// grouping: `start` for r2 returns the address of r1's shim.
pub fn live_restore(env: &mut Env) {
    let group = "io.containerd.runc.v2.group=restore-g";
    env.ctr_ok(&[
        "run",
        "-d",
        "--annotation",
        group,
        &env.image,
        "r1",
        "sleep",
        "1000",
    ]);
    env.ctr_ok(&[
        "run",
        "-d",
        "--annotation",
        group,
        &env.image,
        "r2",
        "sh",
        "-c",
        "sleep 2; exit 7",
    ]);
    let addr =
        |id: &str| fs::read_to_string(env.c.bundle_dir(id).join("address")).expect("address file");
    assert_eq!(
        addr("r1"),
        addr("r2"),
        "grouped tasks share one shim socket"
    );
    let (pid1, _) = env.wait_status("r1", "RUNNING", Duration::from_secs(10));
    env.wait_status("r2", "RUNNING", Duration::from_secs(10));
    let shim1 = env.shim_pid("r1");

    env.c.kill9();
    // r2 exits while nobody listens.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        procs::is_alive(shim1),
        "shim of r1 must survive containerd's death"
    );
    env.c.restart().expect("containerd restarts");

    let (pid1_after, _) = env.wait_status("r1", "RUNNING", Duration::from_secs(10));
    assert_eq!(pid1, pid1_after, "restored task has the same init pid");
    assert_eq!(
        env.shim_pid("r1"),
        shim1,
        "the same shim serves r1 after restart"
    );
    let hi = env.ctr_ok(&[
        "t",
        "exec",
        "--exec-id",
        "after-restart",
        "r1",
        "sh",
        "-c",
        "echo restored",
    ]);
    assert_eq!(hi.trim(), "restored");

    // containerd 1.6 shows r2 STOPPED; 2.3.4 asks the shim for pids on load and deletes a
    // task without processes right away ("cleaning leaked shim process"), as with its Go shim.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r2_listed = loop {
        match env.task_status("r2") {
            Some((_, s)) if s == "STOPPED" => break true,
            None => break false,
            s => assert!(
                Instant::now() < deadline,
                "r2 neither STOPPED nor gone: {s:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The queued exit of r2 reaches the new daemon once (the publisher retries in order);
    // the exec'd process above adds exactly one more.
    let deadline = Instant::now() + Duration::from_secs(15);
    while forwarded_exits(env, "r2/r2") < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        forwarded_exits(env, "r2/r2"),
        1,
        "exactly one TaskExit for r2 delivered after restart:\n{}",
        env.c.log_tail(80)
    );
    assert_eq!(
        forwarded_exits(env, "r1/after-restart"),
        1,
        "one TaskExit for the exec"
    );
    if r2_listed {
        let rm = env.ctr(&["t", "rm", "r2"]);
        assert_rm_status(&rm, 7);
    }
    env.ctr_ok(&["c", "rm", "r2"]);

    kill9_and_remove(env, "r1");
    assert_task_gone(env, "r2");
}

/// The shim process exited and removed its socket.
pub fn assert_shim_gone(pid: i32, socket: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (procs::is_alive(pid) || Path::new(socket).exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !procs::is_alive(pid),
        "shim {pid} still running after its task was deleted"
    );
    assert!(
        !Path::new(socket).exists(),
        "shim socket {socket} left behind"
    );
}
