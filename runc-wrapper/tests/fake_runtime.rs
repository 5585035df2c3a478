//! The wrapper against fake runtimes (shell scripts): timeouts, descriptor hygiene, stdin
//! feeding, error extraction from the JSON log, spawn and decode errors. These are the cases a
//! real runc cannot be made to produce on demand.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runc_wrapper::{CreateOpts, Error, Runc};

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            dir: tempfile::Builder::new()
                .prefix("rw-fake-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable `/bin/sh` script; `@DIR@` is replaced by the fake's directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        let text = format!(
            "#!/bin/sh\n{}\n",
            body.replace("@DIR@", self.dir.path().to_str().unwrap())
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

/// The value following `--log` in the script's argv (shell helper).
const FIND_LOG: &str =
    r#"log=""; prev=""; for a in "$@"; do [ "$prev" = "--log" ] && log="$a"; prev="$a"; done"#;

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn hung_runtime_is_killed_and_reported_as_timeout() {
    let fake = Fake::new();
    let bin = fake.script("hang", "echo $$ > @DIR@/pid\nexec sleep 60");
    let runc = Runc::builder()
        .binary(&bin)
        .timeout(Some(Duration::from_millis(500)))
        .build();
    let started = Instant::now();
    let err = runc.state("c1").await.expect_err("must time out");
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(took >= Duration::from_millis(500), "took {took:?}");
    let Error::Timeout { pid, command, .. } = &err else {
        unreachable!()
    };
    assert!(command.contains("state c1"), "{command}");
    assert_eq!(fake.read("pid").trim(), pid.to_string());
    assert!(!alive(*pid), "timed-out runtime {pid} still alive");
    assert!(
        err.to_string().contains("was killed"),
        "message should say what happened: {err}"
    );
}

#[tokio::test]
async fn timeout_with_setpgid_kills_the_runtimes_children_too() {
    let fake = Fake::new();
    let bin = fake.script(
        "hang-tree",
        "sleep 60 & echo $! > @DIR@/child\necho $$ > @DIR@/pid\nwait",
    );
    let runc = Runc::builder()
        .binary(&bin)
        .setpgid(true)
        .timeout(Some(Duration::from_millis(500)))
        .build();
    let err = runc.start("c1").await.expect_err("must time out");
    assert!(err.is_timeout(), "{err:?}");
    let child: u32 = fake.read("child").trim().parse().unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !alive(child) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "runtime's child {child} survived the group kill");
}

#[tokio::test]
async fn runtime_inherits_only_stdio_even_if_a_descriptor_lacks_cloexec() {
    let fake = Fake::new();
    let bin = fake.script("lsfd", "exec /bin/busybox ls /proc/self/fd > @DIR@/fds");
    let leaky = std::fs::File::open("/dev/null").unwrap();
    nix::fcntl::fcntl(
        &leaky,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let runc = Runc::builder().binary(&bin).build();
    runc.start("c1").await.expect("fake start");
    let mut fds: Vec<String> = fake
        .read("fds")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    fds.sort();
    // 0-2 stdio, 3 the directory `ls` reads; nothing else from the test process.
    assert_eq!(fds, ["0", "1", "2", "3"], "runtime saw {fds:?}");
    drop(leaky);
}

#[tokio::test]
async fn update_feeds_resources_json_on_stdin_and_renders_argv() {
    let fake = Fake::new();
    let bin = fake.script("upd", r#"echo "$@" > @DIR@/args; cat > @DIR@/stdin"#);
    let runc = Runc::builder()
        .binary(&bin)
        .root("/run/fake-root")
        .systemd_cgroup(true)
        .build();
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(
        serde_json::json!({"memory": {"limit": 1_048_576}, "pids": {"limit": 10}}),
    )
    .unwrap();
    runc.update("c1", &resources).await.expect("update");
    let args = fake.read("args");
    assert!(args.starts_with("--root /run/fake-root --log "), "{args}");
    assert!(
        args.trim_end()
            .ends_with("--log-format json --systemd-cgroup update --resources - c1"),
        "{args}"
    );
    let sent: serde_json::Value = serde_json::from_str(&fake.read("stdin")).unwrap();
    assert_eq!(sent["memory"]["limit"], 1_048_576);
    assert_eq!(sent["pids"]["limit"], 10);
}

#[tokio::test]
async fn large_stdin_and_stdout_do_not_deadlock() {
    let fake = Fake::new();
    // Echo stdin back: more than a pipe buffer in both directions at once.
    let bin = fake.script("echo", "cat");
    let runc = Runc::builder().binary(&bin).build();
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(serde_json::json!({"unified": {"x": "y".repeat(1 << 20)}})).unwrap();
    // update ignores stdout, but the runner must keep reading it while writing stdin.
    tokio::time::timeout(Duration::from_secs(20), runc.update("c1", &resources))
        .await
        .expect("deadlocked")
        .expect("update");
}

#[tokio::test]
async fn last_error_of_the_json_log_is_reported() {
    let fake = Fake::new();
    let bin = fake.script(
        "fail",
        &format!(
            r#"{FIND_LOG}
echo '{{"level":"info","msg":"starting","time":"t"}}' >> "$log"
echo '{{"level":"error","msg":"first failure","time":"t"}}' >> "$log"
echo '{{"level":"error","msg":"container_linux.go:380: starting container process caused: exec: \"nope\": executable file not found in $PATH","time":"t"}}' >> "$log"
echo 'some stderr noise' >&2
exit 2"#
        ),
    );
    let runc = Runc::builder().binary(&bin).build();
    let err = runc
        .create("c1", Path::new("/bundle"), CreateOpts::default())
        .await
        .expect_err("fake create fails");
    let Error::CommandFailed {
        status,
        message,
        stderr,
        command,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        message,
        "container_linux.go:380: starting container process caused: exec: \"nope\": executable file not found in $PATH"
    );
    // A detached call (create) without caller IO gives the runtime /dev/null stdio, because
    // the container would inherit it; the message comes from the log.
    assert_eq!(stderr, "");
    assert!(command.ends_with("create --bundle /bundle c1"), "{command}");
    let shown = err.to_string();
    assert!(shown.contains("exit status: 2"), "{shown}");
    assert!(shown.contains("executable file not found"), "{shown}");
}

#[tokio::test]
async fn shared_log_reports_only_this_calls_error() {
    let fake = Fake::new();
    let log = fake.path("log.json");
    std::fs::write(
        &log,
        "{\"level\":\"error\",\"msg\":\"old failure from an earlier call\"}\n",
    )
    .unwrap();
    let bin = fake.script(
        "fail2",
        &format!(
            r#"{FIND_LOG}
echo '{{"level":"error","msg":"fresh failure","time":"t"}}' >> "$log"
exit 1"#
        ),
    );
    let runc = Runc::builder().binary(&bin).log(&log).build();
    let err = runc.start("c1").await.expect_err("fails");
    assert_eq!(err.runtime_message(), Some("fresh failure"));

    // A call that logs nothing must not pick up the old lines: stderr is the fallback.
    let bin = fake.script("fail3", "echo 'only on stderr' >&2; exit 1");
    let runc = Runc::builder().binary(&bin).log(&log).build();
    let err = runc.start("c1").await.expect_err("fails");
    assert_eq!(err.runtime_message(), Some("only on stderr"));
}

#[tokio::test]
async fn silent_failure_says_so() {
    let fake = Fake::new();
    let bin = fake.script("silent", "kill -TERM $$");
    let runc = Runc::builder().binary(&bin).build();
    let err = runc.pause("c1").await.expect_err("fails");
    let status = err.exit_status().expect("status");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    assert!(
        err.to_string().contains("printed no error message"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_binary_is_a_spawn_error_naming_the_package() {
    let runc = Runc::builder().binary("/nonexistent/runc").build();
    let err = runc.version().await.expect_err("no binary");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/runc"), "{text}");
    assert!(text.contains("install Debian package runc"), "{text}");
}

#[tokio::test]
async fn garbage_json_is_a_decode_error_with_the_output() {
    let fake = Fake::new();
    let bin = fake.script("garbage", "echo 'this is not json'");
    let runc = Runc::builder().binary(&bin).build();
    let err = runc.state("c1").await.expect_err("decode error");
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("this is not json"), "{err}");
}

#[tokio::test]
async fn output_of_a_daemonized_grandchild_does_not_block_the_call() {
    let fake = Fake::new();
    // The runtime leaves a background process holding its stdout open (as a detached
    // container would); the call must return when the runtime exits, not at EOF.
    let bin = fake.script(
        "bg",
        "sleep 30 & echo $! > @DIR@/bg\necho '{\"id\":\"c1\",\"status\":\"running\",\"pid\":1}'",
    );
    let runc = Runc::builder().binary(&bin).build();
    let started = Instant::now();
    let st = tokio::time::timeout(Duration::from_secs(10), runc.state("c1"))
        .await
        .expect("call waited for the grandchild")
        .expect("state");
    assert_eq!(st.id, "c1");
    assert!(started.elapsed() < Duration::from_secs(5));
    if let Ok(pid) = fake.read("bg").trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[tokio::test]
async fn bad_container_ids_never_reach_the_runtime() {
    let fake = Fake::new();
    let bin = fake.script("never", "touch @DIR@/ran");
    let runc = Runc::builder().binary(&bin).build();
    let err = runc
        .delete("--all", &runc_wrapper::DeleteOpts::default())
        .await;
    assert!(matches!(err, Err(Error::InvalidArgument(_))), "{err:?}");
    assert!(!fake.path("ran").exists());
}
