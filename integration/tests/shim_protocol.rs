//! The shim's command-line protocol and its bad-input behaviour (issue 4 "Protocol" and
//! "Bad input"), by running our binary directly and under containerd 1.6.20: `-v`, `-info`,
//! flag errors, `start` refusing bad bundles without leaving a socket, `delete` output, the
//! socket's mode and location, the shim's oom_score_adj, fd hygiene, checkpoint's error path,
//! and ttrpc error codes for unknown ids and runtimes.

mod shim_common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::{bins, procs};
use shim_common::{assert_task_gone, our_shim, Env, Gen};

fn shim(args: &[&str], cwd: &std::path::Path, stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(our_shim())
        .args(args)
        .current_dir(cwd)
        .env_remove("TTRPC_ADDRESS")
        .env_remove("MAX_SHIM_VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn our shim");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("shim output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_info_and_flag_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let v = shim(&["-v"], dir.path(), b"");
    assert!(
        v.status.success() && text(&v.stdout).contains("Version:"),
        "{v:?}"
    );

    let bad = shim(&["-bogus", "start"], dir.path(), b"");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        text(&bad.stderr).contains("flag provided but not defined: -bogus"),
        "{bad:?}"
    );

    let no_ns = shim(&["-id", "x", "start"], dir.path(), b"");
    assert_eq!(no_ns.status.code(), Some(1));
    assert!(
        text(&no_ns.stderr).contains("namespace cannot be empty"),
        "{no_ns:?}"
    );

    let unknown = shim(
        &["-namespace", "n", "-id", "x", "frobnicate"],
        dir.path(),
        b"",
    );
    assert!(
        !unknown.status.success() && text(&unknown.stderr).contains("frobnicate"),
        "{unknown:?}"
    );

    // -info without options: name, version and runc's features document.
    let info = shim(&["-info"], dir.path(), b"");
    assert!(info.status.success(), "{info:?}");
    let out = text(&info.stdout);
    assert!(out.contains("io.containerd.runc.v2"), "{out:?}");
    assert!(
        out.contains("ociVersionMin") && out.contains("specs-go/features/Features"),
        "runc features missing: {out:?}"
    );

    // -info with a BinaryName that does not exist: the error names it.
    // containerd.runc.v1.Options{binary_name(6) = "no-such-runtime"} in an Any.
    let mut opts = vec![0x32, 15];
    opts.extend_from_slice(b"no-such-runtime");
    let url = b"containerd.runc.v1.Options";
    let mut any = vec![0x0a, url.len() as u8];
    any.extend_from_slice(url);
    any.push(0x12);
    any.push(opts.len() as u8);
    any.extend_from_slice(&opts);
    let info = shim(&["-info"], dir.path(), &any);
    assert!(!info.status.success(), "{info:?}");
    assert!(
        text(&info.stderr).contains("\"no-such-runtime\""),
        "{info:?}"
    );
}

#[test]
fn start_refuses_bad_bundles_without_leaving_a_socket() {
    let dir = tempfile::tempdir().expect("tmp");
    // The socket this start would create (containerd's SocketAddress: sha256 of
    // path.Join(address, namespace, id)). Checked by name, not by counting the shared
    // directory, which tests running in parallel fill and empty.
    let socket = std::path::Path::new("/run/containerd/s").join(hex::encode(
        <sha2::Sha256 as sha2::Digest>::digest(b"/nonexistent/containerd.sock/berth-proto/bad1"),
    ));
    assert!(
        !socket.exists(),
        "stale {} from an earlier run",
        socket.display()
    );
    let args = [
        "-namespace",
        "berth-proto",
        "-id",
        "bad1",
        "-address",
        "/nonexistent/containerd.sock",
        "start",
    ];
    // No config.json at all.
    let o = shim(&args, dir.path(), b"");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        text(&o.stderr).contains("config.json"),
        "error must name the spec: {o:?}"
    );
    // Malformed config.json.
    fs::write(dir.path().join("config.json"), b"{ not json").expect("write");
    let o = shim(&args, dir.path(), b"");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(text(&o.stderr).contains("parsing the OCI spec"), "{o:?}");
    // Options of an unknown type.
    fs::write(dir.path().join("config.json"), b"{}").expect("write");
    let mut any = vec![0x0a, 9];
    any.extend_from_slice(b"bogus.Foo");
    let o = shim(&args, dir.path(), &any);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(text(&o.stderr).contains("bogus.Foo"), "{o:?}");
    assert!(
        !socket.exists(),
        "a failed start left its socket {} behind",
        socket.display()
    );
    assert!(!dir.path().join("address").exists() && !dir.path().join("shim.pid").exists());
}

#[test]
fn delete_of_a_dead_shims_bundle_prints_a_delete_response() {
    let root = tempfile::tempdir().expect("tmp");
    let bundle = root.path().join("gone1");
    fs::create_dir(&bundle).expect("mkdir");
    fs::write(bundle.join("init.pid"), b"4242").expect("pid");
    let o = shim(
        &[
            "-namespace",
            "berth-proto",
            "-id",
            "gone1",
            "-bundle",
            &bundle.display().to_string(),
            "delete",
        ],
        &bundle,
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    // DeleteResponse{pid(1)=4242, exit_status(2)=137, exited_at(3)=...}
    assert!(
        o.stdout
            .starts_with(&[0x08, 0x92, 0x21, 0x10, 0x89, 0x01, 0x1a]),
        "{:x?}",
        o.stdout
    );
}

#[test]
fn containerd_1_6_socket_oom_score_fds_checkpoint_and_error_codes() {
    let env = Env::start(Gen::V1, "protocol_1_6").expect("containerd 1.6");
    let cpid = env.c.pid().expect("containerd pid");
    fs::write(format!("/proc/{cpid}/oom_score_adj"), b"300").expect("set containerd oom_score_adj");

    env.run_ok(&["-d", &env.image, "p1", "sleep", "1000"]);
    env.wait_status("p1", "RUNNING", Duration::from_secs(10));
    let shim_pid = env.shim_pid("p1");

    // Socket: a filesystem socket (never abstract), 0600 in a 0700 directory.
    let addr = fs::read_to_string(env.c.bundle_dir("p1").join("address")).expect("address");
    let path = addr.strip_prefix("unix://").expect("unix:// address");
    let meta = fs::metadata(path).expect("socket exists on the filesystem");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = fs::metadata(std::path::Path::new(path).parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode();
    // Created 0700 by us; containerd 1.6's Go shims create it 0600. Either way: owner only.
    assert_eq!(
        dir_mode & 0o077,
        0,
        "socket dir open to group/others: {:o}",
        dir_mode & 0o777
    );
    let net_unix = fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    assert!(
        !net_unix.contains(&format!("@{path}")),
        "abstract socket found"
    );

    // oom_score_adj: containerd's + 1.
    let score = fs::read_to_string(format!("/proc/{shim_pid}/oom_score_adj")).expect("score");
    assert_eq!(score.trim(), "301");

    // No fd but stdio in the container's init; the shim's own fds do not grow with execs.
    let fds = env.ctr_ok(&["t", "exec", "--exec-id", "fd1", "p1", "ls", "/proc/1/fd"]);
    let mut fds: Vec<&str> = fds.split_whitespace().collect();
    fds.sort_unstable();
    assert_eq!(fds, ["0", "1", "2"], "fds leaked into the container");
    let count = || {
        fs::read_dir(format!("/proc/{shim_pid}/fd"))
            .expect("shim fds")
            .count()
    };
    let before = count();
    for i in 0..5 {
        env.ctr_ok(&["t", "exec", "--exec-id", &format!("x{i}"), "p1", "true"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(),
        before,
        "shim fds grew after 5 execs (fifo/socket leak)"
    );

    // ttrpc error codes for unknown things.
    let o = env.ctr(&["t", "kill", "--exec-id", "nope", "p1"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("nope") && err.contains("not found"), "{err}");
    let o = env.ctr(&["t", "exec", "--exec-id", "fd1", "p1", "true"]);
    let _ = o; // fd1 was deleted by ctr after it exited; reuse is allowed
    let o = env.ctr(&["t", "pause", "p1"]);
    assert!(o.status.success());
    let o = env.ctr(&["t", "pause", "p1"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("paused"),
        "{o:?}"
    );
    env.ctr_ok(&["t", "resume", "p1"]);

    // Checkpoint: criu cannot work here; the error comes back and the task keeps running.
    let o = env.ctr(&["t", "checkpoint", "p1"]);
    assert!(
        !o.status.success(),
        "checkpoint unexpectedly succeeded: {o:?}"
    );
    assert!(text(&o.stderr).contains("checkpoint"), "{o:?}");
    env.wait_status("p1", "RUNNING", Duration::from_secs(5));

    env.ctr_ok(&["t", "kill", "-s", "9", "p1"]);
    env.wait_status("p1", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "p1"]);
    env.ctr_ok(&["c", "rm", "p1"]);
    assert_task_gone(&env, "p1");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while procs::is_alive(shim_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !procs::is_alive(shim_pid),
        "shim still running after its last task was deleted"
    );
    assert!(
        !std::path::Path::new(path).exists(),
        "shim socket {path} not removed after delete"
    );

    // An OCI runtime that does not exist: the error names it and nothing is left behind.
    let o = env.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        "/nonexistent/runc-x",
        &env.image,
        "p2",
        "true",
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("/nonexistent/runc-x"), "{o:?}");
    let _ = env.ctr(&["c", "rm", "p2"]);
    assert_task_gone(&env, "p2");
    let _ = bins::our_shim_bin();
}

/// The shim is SIGKILLed under a running container: containerd notices the disconnect and runs
/// our `delete` (runc delete --force, rootfs unmount), reports the task gone with exit 137, and
/// nothing is left behind.
fn dead_shim_is_cleaned_up_by_delete(gen: Gen, test: &str) {
    let Some(env) = Env::start(gen, test) else {
        return;
    };
    let ev = shim_common::Events::start(&env);
    env.run_ok(&["-d", &env.image, "k1", "sleep", "1000"]);
    let (pid, _) = env.wait_status("k1", "RUNNING", Duration::from_secs(10));
    let shim_pid = env.shim_pid("k1");
    let sock = fs::read_to_string(env.c.bundle_dir("k1").join("address")).expect("address");
    let sock = sock.trim_start_matches("unix://").to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill shim");
    ev.wait_for("/tasks/exit", &["k1", "137"], 1, Duration::from_secs(15));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.task_status("k1").is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        env.task_status("k1").is_none(),
        "task k1 still listed after its shim died"
    );
    let init: i32 = pid.parse().expect("pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while procs::is_alive(init) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !procs::is_alive(init),
        "container init {init} survived the cleanup"
    );
    env.ctr_ok(&["c", "rm", "k1"]);
    assert_task_gone(&env, "k1");
    assert!(
        !std::path::Path::new(&sock).exists(),
        "socket {sock} of the dead shim left behind"
    );
}

#[test]
fn containerd_1_6_dead_shim_is_cleaned_up_by_our_delete() {
    dead_shim_is_cleaned_up_by_delete(Gen::V1, "dead_shim_1_6");
}

#[test]
fn containerd_2_3_dead_shim_is_cleaned_up_by_our_delete() {
    dead_shim_is_cleaned_up_by_delete(Gen::V2, "containerd_2_3_dead_shim");
}
