//! The io module with the real runc: pipes handed to `runc create` reach the container's
//! stdout/stderr fifos; with `terminal: true` runc sends the pty master to our console socket,
//! we resize it before `runc start` and the container sees the size. Also the container's
//! cgroup, found from its pid, gives metrics. Needs root, runc (Debian package runc) and
//! busybox (busybox-static). One test in its own binary: it is a child subreaper and reaps the
//! container's init by pid.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use shim::io::{ConsoleSocket, IoOptions, ProcessIo, StdioSpec, WinSize};

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";

struct Bundle {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Bundle {
    /// A busybox rootfs and a config running `args`, terminal or not.
    fn new(args: &[&str], terminal: bool) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        std::fs::set_permissions(
            rootfs.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        let st = Command::new(RUNC)
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .expect("run runc spec (Debian package runc)");
        assert!(st.success());
        let cfg_path = dir.path().join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = serde_json::Value::Bool(terminal);
        cfg["process"]["args"] = serde_json::json!(args);
        cfg["root"]["readonly"] = serde_json::Value::Bool(false);
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let root = dir.path().join("runc-root");
        Bundle { dir, root }
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(RUNC);
        c.arg("--root").arg(&self.root);
        c
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn mkfifo(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).unwrap();
    p.to_str().unwrap().to_string()
}

fn reader(p: &str) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .unwrap()
}

fn drain(f: &mut std::fs::File) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a runc command to completion without blocking the runtime for long.
async fn runc_ok(mut cmd: Command, what: &str) {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn runc {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "runc {what} failed: {st:?}");
            return;
        }
        assert!(Instant::now() < deadline, "runc {what} hangs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reaps the container init (we are its subreaper) and returns its exit code.
async fn reap(pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::Exited(_, code) => return code,
            WaitStatus::Signaled(_, sig, _) => return 128 + sig as i32,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "container init {pid} did not exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_pid(bundle: &Bundle) -> i32 {
    std::fs::read_to_string(bundle.path().join("init.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn opts(id: &str) -> IoOptions {
    IoOptions {
        id: id.into(),
        namespace: "berth-test".into(),
        uid: None,
        gid: None,
    }
}

#[tokio::test]
async fn runc_containers_with_pipes_and_with_a_console_socket() {
    assert!(
        Path::new(RUNC).exists(),
        "{RUNC} missing: apt-get install runc"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} missing: apt-get install busybox-static"
    );
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let unique = format!("{}", std::process::id());

    // 1. Pipes: stdout and stderr reach their fifos; the container's cgroup has metrics.
    {
        let id = format!("berth-io-pipes-{unique}");
        let b = Bundle::new(&["sh", "-c", "read x; echo out-$x; echo err-$x >&2"], false);
        let (stdin, out, err) = (
            mkfifo(b.path(), "in"),
            mkfifo(b.path(), "out"),
            mkfifo(b.path(), "err"),
        );
        let (mut out_r, mut err_r) = (reader(&out), reader(&err));
        let spec = StdioSpec {
            stdin: stdin.clone(),
            stdout: out,
            stderr: err,
            terminal: false,
        };
        let pio = ProcessIo::create(&spec, &opts(&id)).await.unwrap();
        let fds = pio.take_runc_stdio();
        let s = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::null, Stdio::from);
        let mut create = b.runc();
        create
            .args(["create", "--pid-file"])
            .arg(b.path().join("init.pid"))
            .arg("--bundle")
            .arg(b.path())
            .arg(&id)
            .stdin(s(fds.stdin))
            .stdout(s(fds.stdout))
            .stderr(s(fds.stderr));
        runc_ok(create, "create").await; // the Command (and our runc-side fds) dropped here
        let pid = read_pid(&b);

        let cg = shim::cgroup::Cgroup::for_pid(pid).expect("container cgroup");
        let any = cg.stats().unwrap().to_any().unwrap();
        assert!(any.type_url.starts_with("io.containerd.cgroups.v"));

        let mut start = b.runc();
        start.args(["start", &id]);
        runc_ok(start, "start").await;
        {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&stdin)
                .unwrap();
            std::io::Write::write_all(&mut w, b"42\n").unwrap();
        }
        assert_eq!(reap(pid).await, 0);
        assert!(
            pio.wait(Duration::from_secs(10)).await,
            "output drained after exit"
        );
        assert_eq!(drain(&mut out_r), "out-42\n");
        assert_eq!(drain(&mut err_r), "err-42\n");
        pio.close().await;
        let mut del = b.runc();
        del.args(["delete", "--force", &id]);
        runc_ok(del, "delete").await;
    }

    // 2. Terminal: console socket, resize before start, output through the pty.
    {
        let id = format!("berth-io-tty-{unique}");
        let b = Bundle::new(&["sh", "-c", "busybox stty size; echo tty-ok"], true);
        let out = mkfifo(b.path(), "out");
        let mut out_r = reader(&out);
        let sock = ConsoleSocket::new().unwrap();
        let mut create = b.runc();
        create
            .args(["create", "--pid-file"])
            .arg(b.path().join("init.pid"))
            .arg("--console-socket")
            .arg(sock.path())
            .arg("--bundle")
            .arg(b.path())
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut create = create.spawn().unwrap();
        let master = tokio::time::timeout(Duration::from_secs(30), sock.receive_master())
            .await
            .expect("runc sends the master")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while create.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "runc create hangs");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(sock);
        let spec = StdioSpec {
            stdin: String::new(),
            stdout: out,
            stderr: String::new(),
            terminal: true,
        };
        let pio = ProcessIo::with_console(master, &spec, &opts(&id))
            .await
            .unwrap();
        pio.resize(WinSize {
            width: 123,
            height: 45,
        })
        .unwrap();
        let pid = read_pid(&b);
        let mut start = b.runc();
        start.args(["start", &id]);
        runc_ok(start, "start").await;
        assert_eq!(reap(pid).await, 0);
        assert!(pio.wait(Duration::from_secs(10)).await);
        let text = drain(&mut out_r);
        assert!(
            text.contains("45 123\r\n"),
            "stty size in the container: {text:?}"
        );
        assert!(text.contains("tty-ok\r\n"), "{text:?}");
        pio.close().await;
        let mut del = b.runc();
        del.args(["delete", "--force", &id]);
        runc_ok(del, "delete").await;
    }
}
