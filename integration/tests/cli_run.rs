//! `berth run` and the container/task commands against a private Debian containerd 1.6.20
//! (Debian's Go shim, real runc) and against berthd: output and exit status propagate,
//! `--rm` leaves nothing behind, env/cwd/user/mounts/stdin reach the process, `--null-io`
//! and `--log-uri`, a pty with the caller's size, and the detached lifecycle through
//! `tasks ls/exec/ps/pause/resume/kill/rm` and `containers create/info/ls/rm`.

mod cli_common;

use std::io::{Read as _, Write as _};
use std::process::Stdio;

use cli_common::{busybox_archives, s, stderr, stdout, Daemon};
use integration::image::BUSYBOX_NAME as IMG;

fn setup(d: &Daemon) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, oci, _) = busybox_archives(dir.path());
    d.berth_ok(&["images", "import", s(&oci)]);
    dir
}

fn assert_nothing_left(d: &Daemon) {
    assert_eq!(d.berth_ok(&["containers", "ls", "-q"]), "");
    assert_eq!(d.berth_ok(&["tasks", "ls", "-q"]), "");
    let snaps = d.berth_ok(&["snapshots", "ls"]);
    assert!(
        snaps.lines().skip(1).all(|l| l.starts_with("sha256:")),
        "container snapshots left: {snaps}"
    );
}

fn run_foreground(d: &Daemon) {
    let dir = setup(d);

    let o = d.berth(&["run", "--rm", IMG, "cli-r1", "echo", "hello"]);
    assert_eq!(stdout(&o), "hello\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));

    // Exit status and stderr propagate; arguments after the id are the command's own.
    let o = d.berth(&[
        "run",
        "--rm",
        IMG,
        "cli-r2",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");

    // Env, working directory, user (resolved from the image's /etc/passwd) and a bind mount.
    let host = dir.path().join("shared");
    std::fs::create_dir(&host).expect("mkdir");
    std::fs::write(host.join("f"), "from host").expect("write");
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.display()
    );
    let o = d.berth(&[
        "run",
        "--rm",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--user",
        "nobody",
        "--mount",
        &mount,
        IMG,
        "cli-r3",
        "sh",
        "-c",
        "echo $FOO; pwd; id -u; cat /data/f",
    ]);
    assert_eq!(
        stdout(&o),
        "bar\n/tmp\n65534\nfrom host",
        "stderr: {}",
        stderr(&o)
    );

    // Our stdin reaches the process, and its end closes the process's stdin.
    let mut child = d
        .berth_command()
        .args(["run", "--rm", IMG, "cli-r4", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn berth run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"piped\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped\ndone\n");

    // --null-io prints nothing; --log-uri file:// sends output to the file.
    let o = d.berth(&["run", "--rm", "--null-io", IMG, "cli-r5", "echo", "lost"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let log = dir.path().join("out.log");
    let uri = format!("file://{}", log.display());
    let o = d.berth(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        IMG,
        "cli-r6",
        "echo",
        "logged",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&log).expect("log file"), "logged\n");

    // --rootfs: a host directory instead of an image snapshot.
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir rootfs");
    integration::image::TestImage::busybox()
        .expect("test image")
        .unpack_to(&rootfs)
        .expect("unpack to rootfs");
    let o = d.berth(&[
        "run",
        "--rm",
        "--rootfs",
        s(&rootfs),
        "cli-r7",
        "sh",
        "-c",
        "echo on host dir; id -un",
    ]);
    assert_eq!(stdout(&o), "on host dir\nroot\n", "{}", stderr(&o));

    // --runtime as an absolute shim path, and --runc-binary through a wrapper that logs.
    let shim = d.shim_path();
    let o = d.berth(&[
        "run",
        "--rm",
        "--runtime",
        s(&shim),
        IMG,
        "cli-r9",
        "echo",
        "abs runtime",
    ]);
    assert_eq!(stdout(&o), "abs runtime\n", "{}", stderr(&o));
    let wrapper = dir.path().join("runc-wrapper");
    let log = dir.path().join("wrapper.log");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec runc \"$@\"\n",
            log.display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod wrapper");
    let o = d.berth(&[
        "run",
        "--rm",
        "--runc-binary",
        s(&wrapper),
        IMG,
        "cli-r10",
        "echo",
        "wrapped",
    ]);
    assert_eq!(stdout(&o), "wrapped\n", "{}", stderr(&o));
    let calls = std::fs::read_to_string(&log).expect("wrapper was not called");
    assert!(calls.lines().any(|l| l.contains("create")), "{calls}");

    // --config: a runtime spec file used as is; the one positional argument is the id.
    d.berth_ok(&[
        "containers",
        "create",
        "--rootfs",
        s(&rootfs),
        "cli-src",
        "echo",
        "from spec file",
    ]);
    let spec = d.berth_ok(&["containers", "info", "--spec", "cli-src"]);
    d.berth_ok(&["containers", "rm", "cli-src"]);
    let spec_file = dir.path().join("config.json");
    std::fs::write(&spec_file, spec).expect("write spec");
    let o = d.berth(&["run", "--rm", "--config", s(&spec_file), "cli-r8"]);
    assert_eq!(stdout(&o), "from spec file\n", "{}", stderr(&o));

    assert_nothing_left(d);

    // Bad input: clear messages, status 1, nothing created.
    let o = d.berth(&["run", "--rm", "no/such:image", "cli-bad", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "berth: image \"no/such:image\": not found\n");
    let o = d.berth(&["run", "--rm", "-d", IMG, "cli-bad", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "berth: flags --detach and --rm cannot be specified together\n"
    );
    let o = d.berth(&[
        "run",
        "--mount",
        "type=bind,bogus=1",
        IMG,
        "cli-bad",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "berth: mount option \"bogus\" not supported\n");
    assert_nothing_left(d);
}

fn status_of(d: &Daemon, id: &str) -> String {
    let ls = d.berth_ok(&["tasks", "ls"]);
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no task {id} in:\n{ls}"))
        .to_string()
}

fn detached_lifecycle(d: &Daemon) {
    let dir = setup(d);
    // Detached stdio fifos stay (for `tasks attach`) until the task is deleted.
    let fifos = dir.path().join("fifos");
    assert_eq!(
        d.berth_ok(&[
            "run",
            "-d",
            "--fifo-dir",
            s(&fifos),
            IMG,
            "cli-d1",
            "sleep",
            "1000"
        ]),
        ""
    );
    assert_eq!(std::fs::read_dir(&fifos).expect("fifo dir").count(), 1);
    assert_eq!(status_of(d, "cli-d1"), "RUNNING");
    let ls = d.berth_ok(&["tasks", "ls"]);
    assert!(
        ls.starts_with("TASK    PID      STATUS    \n") || ls.starts_with("TASK "),
        "{ls}"
    );

    let o = d.berth(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "cli-d1",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(stdout(&o), "hi\n", "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(3));

    // exec --user resolves the name in the container's rootfs.
    let o = d.berth(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "--user",
        "nobody",
        "cli-d1",
        "id",
        "-u",
    ]);
    assert_eq!(stdout(&o), "65534\n", "{}", stderr(&o));
    let o = d.berth(&[
        "tasks",
        "exec",
        "--exec-id",
        "e3",
        "--user",
        "ghost",
        "cli-d1",
        "id",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "berth: unable to find user ghost: no matching entries in passwd file\n"
    );

    let ps = d.berth_ok(&["tasks", "ps", "cli-d1"]);
    assert!(ps.starts_with("PID "), "{ps}");
    assert_eq!(ps.lines().count(), 2, "{ps}");

    // Same table as ctr: cgroup v1 metrics of the task.
    let metrics = d.berth_ok(&["tasks", "metrics", "cli-d1"]);
    assert!(metrics.starts_with("ID "), "{metrics}");
    assert!(metrics.contains("\nMETRIC "), "{metrics}");
    assert!(metrics.contains("\npids.current "), "{metrics}");

    d.berth_ok(&["tasks", "pause", "cli-d1"]);
    assert_eq!(status_of(d, "cli-d1"), "PAUSED");
    d.berth_ok(&["tasks", "resume", "cli-d1"]);
    assert_eq!(status_of(d, "cli-d1"), "RUNNING");

    // A running container cannot be removed.
    let o = d.berth(&["containers", "rm", "cli-d1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot delete a non stopped container"),
        "{}",
        stderr(&o)
    );

    d.berth_ok(&["tasks", "kill", "-s", "SIGKILL", "cli-d1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_of(d, "cli-d1") != "STOPPED" {
        assert!(std::time::Instant::now() < deadline, "task did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = d.berth(&["tasks", "rm", "cli-d1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "berth: task cli-d1 exit with non-zero exit code 137\n"
    );
    assert_eq!(
        std::fs::read_dir(&fifos).expect("fifo dir").count(),
        0,
        "fifo directory left after tasks rm"
    );
    d.berth_ok(&["containers", "rm", "cli-d1"]);

    // kill -a reaches every process; containers create + tasks start in the foreground.
    d.berth_ok(&["containers", "create", IMG, "cli-d2", "sh", "-c", "exit 4"]);
    let ls = d.berth_ok(&["containers", "ls"]);
    assert!(
        ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["cli-d2", IMG, "io.containerd.runc.v2"]),
        "{ls}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&d.berth_ok(&["containers", "info", "cli-d2"])).expect("JSON");
    assert_eq!(info["ID"], "cli-d2");
    assert_eq!(
        info["Spec"]["process"]["args"],
        serde_json::json!(["sh", "-c", "exit 4"])
    );
    let o = d.berth(&["tasks", "start", "cli-d2"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    d.berth_ok(&["containers", "rm", "cli-d2"]);

    d.berth_ok(&[
        "run",
        "-d",
        "--fifo-dir",
        s(&fifos),
        IMG,
        "cli-d3",
        "sh",
        "-c",
        "sleep 1000 & sleep 1000",
    ]);
    d.berth_ok(&["tasks", "kill", "-a", "-s", "9", "cli-d3"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_of(d, "cli-d3") != "STOPPED" {
        assert!(std::time::Instant::now() < deadline, "task did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = d.berth(&["tasks", "kill", "-s", "NOPE", "cli-d3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid signal \"NOPE\""),
        "{}",
        stderr(&o)
    );
    d.berth_ok(&["tasks", "rm", "cli-d3"]);
    d.berth_ok(&["containers", "rm", "cli-d3"]);
    assert_eq!(std::fs::read_dir(&fifos).expect("fifo dir").count(), 0);
    assert_nothing_left(d);
}

/// `run -t`: the process gets a pty of our terminal's size; raw mode; status propagates.
fn tty(d: &Daemon) {
    use nix::pty::{openpty, Winsize};
    let _dir = setup(d);
    let ws = Winsize {
        ws_row: 45,
        ws_col: 123,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&ws), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut child = d
        .berth_command()
        .args([
            "run",
            "-t",
            "--rm",
            IMG,
            "cli-t1",
            "sh",
            "-c",
            "tty; stty size; exit 5",
        ])
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("spawn berth run -t");
    let mut master = std::fs::File::from(pty.master);
    let status = child.wait().expect("wait");
    // The child has exited: everything it wrote is in the pty buffer. Read without blocking.
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .expect("nonblock");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status.code(), Some(5), "output: {text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("45 123"), "{text:?}");
    assert_nothing_left(d);
}

/// `berth events` prints the task lifecycle in order, one exit, in ctr's line format.
fn events(d: &Daemon) {
    let _dir = setup(d);
    let mut sub = d
        .berth_command()
        .args(["events", "topic~=\"/tasks/\""])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn berth events");
    let mut out = sub.stdout.take().expect("stdout");
    // Give the subscription a moment to be registered before the events happen.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = d.berth(&["run", "--rm", IMG, "cli-e1", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(sub.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = sub.wait();
    let mut text = String::new();
    out.read_to_string(&mut text).expect("read events");
    let topics: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"cli-e1\""))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{text}"
    );
    let exit = text
        .lines()
        .find(|l| l.contains(" /tasks/exit "))
        .expect("exit line");
    // `2026-01-02 15:04:05.999 +0000 UTC <ns> /tasks/exit {json}`
    assert!(exit.contains(" +0000 UTC "), "{exit}");
    let json: serde_json::Value =
        serde_json::from_str(exit.split_whitespace().nth(6).expect("json")).expect("event JSON");
    assert_eq!(json["container_id"], "cli-e1");
    assert_eq!(json["exit_status"], 3);
}

/// Signals to a foreground `berth run` reach the container; `tasks attach` joins a
/// detached task's stdio; `--timeout` bounds a command.
fn signals_attach_timeout(d: &Daemon) {
    let _dir = setup(d);
    let mut child = d
        .berth_command()
        .args([
            "run",
            "--rm",
            IMG,
            "cli-s1",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo ready; sleep 100 & wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn berth run");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    out.read_exact(&mut first).expect("ready line");
    assert_eq!(&first, b"ready\n");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill berth");
    let status = child.wait().expect("wait berth");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("rest");
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(9));

    d.berth_ok(&[
        "run",
        "-d",
        IMG,
        "cli-a1",
        "sh",
        "-c",
        "read x; echo got $x; exit 6",
    ]);
    let mut att = d
        .berth_command()
        .args(["tasks", "attach", "cli-a1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn attach");
    att.stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    let o = att.wait_with_output().expect("attach output");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got hello\n");
    assert_eq!(o.status.code(), Some(6));
    d.berth_ok(&["tasks", "rm", "cli-a1"]);
    d.berth_ok(&["containers", "rm", "cli-a1"]);

    let started = std::time::Instant::now();
    let o = d.berth(&["--timeout", "300ms", "events"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("berth: timeout"), "{}", stderr(&o));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_nothing_left(d);
}

#[test]
fn signals_attach_timeout_against_containerd() {
    signals_attach_timeout(&Daemon::containerd());
}

#[test]
fn signals_attach_timeout_against_berthd() {
    signals_attach_timeout(&Daemon::berthd());
}

/// The spec `berth containers create` generates is the one Debian's `ctr` generates for
/// the same flags (defaults, image config, env, mounts, host network, tty, caps, limits).
fn spec_matches_ctr(d: &Daemon) {
    let _dir = setup(d);
    let flags = [
        "--env",
        "A=1",
        "--env",
        "PATH=/x",
        "--mount",
        "type=bind,src=/tmp,dst=/data,options=rbind:ro",
        "--net-host",
        "--cwd",
        "/tmp",
        "--label",
        "x=y",
        "--memory-limit",
        "1000000",
        "--cap-add",
        "CAP_SYS_ADMIN",
        "--cap-drop",
        "CAP_CHOWN",
        "--read-only",
        "--allow-new-privs",
        "-t",
        "--with-ns",
        "ipc:/proc/1/ns/ipc",
        "--device",
        "/dev/null",
    ];
    let create = |id: &str| {
        let mut args = vec!["containers", "create"];
        args.extend(flags);
        args.extend([IMG, id, "echo", "hi"]);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let ours: Vec<String> = create("cli-spec-b");
    d.berth_ok(&ours.iter().map(String::as_str).collect::<Vec<_>>());
    let theirs: Vec<String> = create("cli-spec-c");
    d.ctr_ok(&theirs.iter().map(String::as_str).collect::<Vec<_>>());
    let spec = |id: &str| -> serde_json::Value {
        let info: serde_json::Value =
            serde_json::from_str(&d.ctr_ok(&["containers", "info", id])).expect("info JSON");
        let text = info["Spec"].to_string().replace(id, "ID");
        serde_json::from_str(&text).expect("spec JSON")
    };
    assert_eq!(spec("cli-spec-b"), spec("cli-spec-c"));
    // And printed like ctr prints it, byte for byte (Go field order, 4-space indent).
    for args in [
        ["containers", "info", "--spec", "cli-spec-b"].as_slice(),
        ["containers", "info", "cli-spec-b"].as_slice(),
    ] {
        let (ours, theirs) = (d.berth_ok(args), d.ctr_ok(args));
        let first = ours
            .lines()
            .zip(theirs.lines())
            .position(|(a, b)| a != b)
            .map(|i| {
                let ctx = |t: &str| {
                    t.lines()
                        .skip(i.saturating_sub(6))
                        .take(10)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                format!(
                    "line {i}:\nours:\n{}\ntheirs:\n{}",
                    ctx(&ours),
                    ctx(&theirs)
                )
            });
        assert_eq!(
            ours, theirs,
            "berth {args:?} differs from ctr, first: {first:?}"
        );
    }
    assert_eq!(d.berth_ok(&["oci", "spec"]), d.ctr_ok(&["oci", "spec"]));
    d.berth_ok(&["containers", "rm", "cli-spec-b", "cli-spec-c"]);

    // --privileged: every current capability, host devices, nothing masked.
    for (tool, id) in [("berth", "cli-priv-b"), ("ctr", "cli-priv-c")] {
        let args = ["containers", "create", "--privileged", IMG, id, "true"];
        if tool == "berth" {
            d.berth_ok(&args);
        } else {
            d.ctr_ok(&args);
        }
    }
    let privileged = spec("cli-priv-b");
    assert_eq!(privileged, spec("cli-priv-c"));
    assert!(privileged["linux"]["devices"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
    d.berth_ok(&["containers", "rm", "cli-priv-b", "cli-priv-c"]);
    assert_nothing_left(d);
}

#[test]
fn spec_matches_ctr_against_containerd() {
    spec_matches_ctr(&Daemon::containerd());
}

#[test]
fn spec_matches_ctr_against_berthd() {
    spec_matches_ctr(&Daemon::berthd());
}

#[test]
fn events_against_containerd() {
    events(&Daemon::containerd());
}

#[test]
fn events_against_berthd() {
    events(&Daemon::berthd());
}

#[test]
fn run_foreground_against_containerd() {
    run_foreground(&Daemon::containerd());
}

#[test]
fn detached_lifecycle_against_containerd() {
    detached_lifecycle(&Daemon::containerd());
}

#[test]
fn run_tty_against_containerd() {
    tty(&Daemon::containerd());
}

/// The same client against containerd 2.x's API (task API v3 shims underneath).
#[test]
fn run_foreground_and_detached_against_containerd2() {
    let Some(d) = Daemon::containerd2("run_foreground_and_detached_against_containerd2") else {
        return;
    };
    run_foreground(&d);
    detached_lifecycle(&d);
}

#[test]
fn run_foreground_against_berthd() {
    run_foreground(&Daemon::berthd());
}

#[test]
fn detached_lifecycle_against_berthd() {
    detached_lifecycle(&Daemon::berthd());
}

#[test]
fn run_tty_against_berthd() {
    tty(&Daemon::berthd());
}

/// `run` prepares the container snapshot straight on the image's top layer; when the
/// image's snapshots are gone (removed here, as GC would after `images rm`), the Prepare's
/// NotFound makes it unpack the image again and retry. The run works, leaves nothing but
/// the re-created layer snapshot, and `--rm` removes container and snapshot.
fn run_reunpacks_missing_layers(d: &Daemon) {
    let _dir = setup(d);
    let layers = |d: &Daemon| -> Vec<String> {
        d.berth_ok(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .filter(|k| k.starts_with("sha256:"))
            .map(str::to_string)
            .collect()
    };
    let before = layers(d);
    assert!(!before.is_empty(), "import unpacked no layer");
    // Children first: retry until every layer snapshot is gone.
    for _ in 0..=before.len() {
        for k in layers(d) {
            let _ = d.berth(&["snapshots", "rm", &k]);
        }
    }
    assert_eq!(
        layers(d),
        Vec::<String>::new(),
        "layer snapshots not removed"
    );

    let o = d.berth(&["run", "--rm", IMG, "cli-unpack", "echo", "again"]);
    assert_eq!(stdout(&o), "again\n", "stderr: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
    let mut after = layers(d);
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "the image's layers are unpacked again");
    assert_nothing_left(d);
}

#[test]
fn run_reunpacks_missing_layers_against_containerd() {
    run_reunpacks_missing_layers(&Daemon::containerd());
}

#[test]
fn run_reunpacks_missing_layers_against_berthd() {
    run_reunpacks_missing_layers(&Daemon::berthd());
}
