//! Tests of the io module against real fifos, files, pipes, ptys and child processes.
//! Every test runs on a current-thread runtime, as the shim does.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::stat::Mode;

use super::*;

fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    p
}

/// A client-side fifo reader, as containerd's `cio` opens it (non-blocking).
fn fifo_reader(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .expect("open fifo reader")
}

/// Everything currently buffered in a non-blocking reader.
fn drain(f: &mut std::fs::File) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// openpty with both ends close-on-exec, so children spawned by tests running in parallel do
/// not inherit the slave and keep the master from ever reading EIO.
fn openpty() -> nix::pty::OpenptyResult {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    pty
}

fn spec(stdin: &str, stdout: &str, stderr: &str) -> StdioSpec {
    StdioSpec {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal: false,
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

fn opts() -> IoOptions {
    IoOptions {
        id: "ctr1".into(),
        namespace: "testns".into(),
        uid: None,
        gid: None,
    }
}

/// Spawns `sh -c script` with the runc-side fds as its stdio, as runc's child would get them.
fn spawn_with(fds: RuncStdio, script: &str) -> std::process::Child {
    let to_stdio = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::null, Stdio::from);
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(to_stdio(fds.stdin))
        .stdout(to_stdio(fds.stdout))
        .stderr(to_stdio(fds.stderr))
        .spawn()
        .expect("spawn /bin/sh (Debian package dash)");
    // `fds` moved into the Command, which is dropped here: the test no longer holds them,
    // like the shim after runc create.
    child
}

/// Waits for a child without blocking the current-thread runtime.
async fn reap(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(Instant::now() < deadline, "child did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn fifo_stdout_and_stderr_are_copied_and_wait_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let out = mkfifo(dir.path(), "out");
    let err = mkfifo(dir.path(), "err");
    let mut out_r = fifo_reader(&out);
    let mut err_r = fifo_reader(&err);
    let pio = ProcessIo::create(&spec("", &path_str(&out), &path_str(&err)), &opts())
        .await
        .unwrap();
    let mut child = spawn_with(pio.take_runc_stdio(), "echo to-out; echo to-err >&2");
    assert!(
        pio.wait(Duration::from_secs(5)).await,
        "copies finish at EOF"
    );
    assert!(reap(&mut child).await.success());
    assert_eq!(drain(&mut out_r), "to-out\n");
    assert_eq!(drain(&mut err_r), "to-err\n");
    pio.close().await;
}

#[tokio::test]
async fn absent_fifo_reader_never_blocks_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let out = mkfifo(dir.path(), "out");
    // Nobody reads `out`. containerd's Go shim would wait up to 30 s in open(O_WRONLY).
    let t0 = Instant::now();
    let pio = ProcessIo::create(&spec("", &path_str(&out), ""), &opts())
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "create must not wait for a reader"
    );
    // 1 MiB: far more than the fifo (64 KiB) and pipe buffers hold.
    let mut child = spawn_with(pio.take_runc_stdio(), "/usr/bin/head -c 1048576 /dev/zero");
    // The runtime stays responsive while the copy is stuck on a full fifo...
    let t1 = Instant::now();
    assert!(
        !pio.wait(Duration::from_millis(300)).await,
        "output cannot drain"
    );
    assert!(t1.elapsed() < Duration::from_secs(2));
    // ...and Delete still completes promptly.
    let t2 = Instant::now();
    pio.close().await;
    assert!(t2.elapsed() < Duration::from_secs(1));
    // With the copy gone, the child gets EPIPE/SIGPIPE and exits.
    let st = reap(&mut child).await;
    assert!(!st.success());
}

#[tokio::test]
async fn output_written_before_the_reader_attaches_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = mkfifo(dir.path(), "out");
    let pio = ProcessIo::create(&spec("", &path_str(&out), ""), &opts())
        .await
        .unwrap();
    let mut child = spawn_with(pio.take_runc_stdio(), "echo early");
    assert!(reap(&mut child).await.success());
    // The process exited and its output was copied with no reader: exit is not held up.
    assert!(pio.wait(Duration::from_secs(5)).await);
    let mut r = fifo_reader(&out);
    assert_eq!(drain(&mut r), "early\n");
    pio.close().await;
}

#[tokio::test]
async fn stdin_fifo_is_copied_and_close_io_delivers_eof() {
    let dir = tempfile::tempdir().unwrap();
    let stdin = mkfifo(dir.path(), "in");
    let out = mkfifo(dir.path(), "out");
    let mut out_r = fifo_reader(&out);
    let pio = ProcessIo::create(&spec(&path_str(&stdin), &path_str(&out), ""), &opts())
        .await
        .unwrap();
    let mut child = spawn_with(pio.take_runc_stdio(), "/bin/cat; echo done");
    {
        // The client writes and closes its end; the shim's writer keeps EOF away...
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&stdin)
            .unwrap();
        std::io::Write::write_all(&mut w, b"ping\n").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(child.try_wait().unwrap().is_none(), "no EOF before CloseIO");
    // ...until CloseIO.
    pio.close_stdin();
    assert!(reap(&mut child).await.success());
    assert!(pio.wait(Duration::from_secs(5)).await);
    assert_eq!(drain(&mut out_r), "ping\ndone\n");
    pio.close().await;
}

#[tokio::test]
async fn file_uri_creates_parents_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a/b/c.log");
    let uri = format!("file://{}", log.display());
    for word in ["first", "second"] {
        let pio = ProcessIo::create(&spec("", &uri, &uri), &opts())
            .await
            .unwrap();
        let mut child = spawn_with(
            pio.take_runc_stdio(),
            &format!("echo {word}-out; echo {word}-err >&2"),
        );
        assert!(reap(&mut child).await.success());
        assert!(pio.wait(Duration::from_secs(5)).await);
        pio.close().await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<_> = text.lines().collect();
    // stdout and stderr of one run may interleave; runs are appended in order.
    assert_eq!(lines.len(), 4, "{text:?}");
    assert!(lines[..2].contains(&"first-out") && lines[..2].contains(&"first-err"));
    lines.drain(..2);
    assert!(lines.contains(&"second-out") && lines.contains(&"second-err"));
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644 & !current_umask());
    let dmode = std::fs::metadata(log.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o755 & !current_umask());
}

fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[tokio::test]
async fn null_io_gives_dev_null_and_nothing_to_wait_for() {
    let pio = ProcessIo::create(&spec("", "", ""), &opts()).await.unwrap();
    let fds = pio.take_runc_stdio();
    for fd in [&fds.stdin, &fds.stdout, &fds.stderr] {
        let fd = fd.as_ref().expect("null IO still gives runc an fd");
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(target, Path::new("/dev/null"));
    }
    assert!(pio.wait(Duration::from_millis(10)).await);
    assert!(matches!(
        pio.resize(WinSize::default()),
        Err(IoError::NoTerminal)
    ));
    pio.close().await;
}

fn write_logger(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("logger.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test]
async fn binary_logger_gets_stdout_stderr_env_and_signals_ready() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    // $1 $2 = "dir" "<outdir>" from the query string. No PATH in the env: absolute paths.
    let logger = write_logger(
        dir.path(),
        r#"/bin/cat <&3 > "$2/stdout" &
/bin/cat <&4 > "$2/stderr" &
exec 3<&- 4<&-
/usr/bin/tr '\0' '\n' < /proc/$$/environ > "$2/env"
/bin/sleep 0.2
printf x >&5
exec 5>&-
wait
: > "$2/done""#,
    );
    let uri = format!("binary://{}?dir={}", logger.display(), outdir.display());
    let t0 = Instant::now();
    let pio = ProcessIo::create(&spec("", &uri, &uri), &opts())
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "create waits for readiness"
    );
    let logger_pid = pio.logger_pid().expect("logger pid");
    let mut child = spawn_with(pio.take_runc_stdio(), "echo hello; echo oops >&2");
    assert!(reap(&mut child).await.success());
    // The shim holds no write end after runc start: the logger sees EOF and finishes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !outdir.join("done").exists() {
        assert!(Instant::now() < deadline, "logger never saw EOF");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read_to_string(outdir.join("stdout")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(outdir.join("stderr")).unwrap(),
        "oops\n"
    );
    // Exactly the two variables containerd sets, nothing inherited from the shim.
    assert_eq!(
        std::fs::read_to_string(outdir.join("env")).unwrap(),
        "CONTAINER_ID=ctr1\nCONTAINER_NAMESPACE=testns\n"
    );
    pio.close().await;
    // close() reaped it: no zombie left behind.
    assert!(!Path::new(&format!("/proc/{logger_pid}")).exists());
}

#[tokio::test]
async fn binary_logger_is_terminated_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let logger = write_logger(dir.path(), "exec 5>&-\nexec /bin/sleep 1000");
    let uri = format!("binary://{}", logger.display());
    let pio = ProcessIo::create(&spec("", &uri, &uri), &opts())
        .await
        .unwrap();
    let pid = pio.logger_pid().unwrap();
    let t0 = Instant::now();
    pio.close().await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM ends sleep at once"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn binary_v2_logger_that_exits_without_ready_byte_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let logger = write_logger(dir.path(), "exit 3");
    let uri = format!("binary-v2://{}", logger.display());
    let err = ProcessIo::create(&spec("", &uri, &uri), &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, IoError::LoggerNotReady { .. }), "{err}");
    assert!(err.to_string().contains("logger.sh"), "{err}");
    // Plain binary:// accepts EOF as ready (containerd's backward compatibility).
    let uri = format!("binary://{}", logger.display());
    let pio = ProcessIo::create(&spec("", &uri, &uri), &opts())
        .await
        .unwrap();
    pio.close().await;
}

#[tokio::test]
async fn missing_logger_binary_names_the_path() {
    let err = ProcessIo::create(
        &spec(
            "",
            "binary:///nonexistent/logger",
            "binary:///nonexistent/logger",
        ),
        &opts(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IoError::LoggerSpawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/logger"), "{err}");
}

#[tokio::test]
async fn bad_scheme_and_missing_fifo_are_clear_errors() {
    let err = ProcessIo::create(&spec("", "tcp:///x", ""), &opts())
        .await
        .unwrap_err();
    assert!(err.is_invalid_argument());
    assert!(err.to_string().contains("tcp:///x"), "{err}");

    let err = ProcessIo::create(&spec("/nonexistent/in", "/nonexistent/out", ""), &opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/out"), "{err}");
    assert!(!err.is_invalid_argument());
}

#[tokio::test]
async fn io_uid_gid_owns_the_runc_side_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let out = mkfifo(dir.path(), "out");
    let stdin = mkfifo(dir.path(), "in");
    let o = IoOptions {
        uid: Some(1234),
        gid: Some(4321),
        ..opts()
    };
    let pio = ProcessIo::create(&spec(&path_str(&stdin), &path_str(&out), ""), &o)
        .await
        .unwrap();
    let fds = pio.take_runc_stdio();
    for fd in [fds.stdin.as_ref().unwrap(), fds.stdout.as_ref().unwrap()] {
        let st = nix::sys::stat::fstat(fd.as_fd()).unwrap();
        assert_eq!((st.st_uid, st.st_gid), (1234, 4321));
    }
    drop(fds);
    pio.close().await;
}

#[tokio::test]
async fn console_copies_pty_both_ways_and_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let stdin = mkfifo(dir.path(), "in");
    let out = mkfifo(dir.path(), "out");
    let mut out_r = fifo_reader(&out);
    let pty = openpty();
    let mut s = spec(&path_str(&stdin), &path_str(&out), "");
    s.terminal = true;
    let pio = ProcessIo::with_console(pty.master, &s, &opts())
        .await
        .unwrap();

    pio.resize(WinSize {
        width: 132,
        height: 43,
    })
    .unwrap();
    let ws = get_winsize(pty.slave.as_fd()).unwrap();
    assert_eq!(
        ws,
        WinSize {
            width: 132,
            height: 43
        }
    );

    // A "container" on the slave: cat echoes its input back to the terminal.
    let slave_fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
    let mut child = Command::new("/bin/sh")
        .args(["-c", "/bin/stty -echo; read line; echo \"got $line\""])
        .stdin(slave_fd(&pty.slave))
        .stdout(slave_fd(&pty.slave))
        .stderr(slave_fd(&pty.slave))
        .spawn()
        .unwrap();
    drop(pty.slave);
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .open(&stdin)
            .unwrap();
        std::io::Write::write_all(&mut w, b"abc\n").unwrap();
    }
    assert!(reap(&mut child).await.success());
    // All slave fds closed: the master reads EIO, which ends the copy.
    assert!(pio.wait(Duration::from_secs(5)).await);
    let text = drain(&mut out_r);
    assert!(text.contains("got abc\r\n"), "{text:?}");
    pio.close().await;
    assert!(matches!(
        pio.resize(WinSize::default()),
        Err(IoError::NoTerminal)
    ));
}

#[tokio::test]
async fn console_socket_receives_the_master_over_scm_rights() {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let sock = ConsoleSocket::new().unwrap();
    let sock_dir = sock.path().parent().unwrap().to_path_buf();
    let mode = std::fs::metadata(&sock_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let pty = openpty();
    set_winsize(
        pty.master.as_fd(),
        WinSize {
            width: 7,
            height: 9,
        },
    )
    .unwrap();
    // What runc does: connect, send the master with its name, hang up.
    let client = std::os::unix::net::UnixStream::connect(sock.path()).unwrap();
    let fds = [pty.master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"/dev/pts/x")];
    sendmsg::<UnixAddr>(
        client.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(client);
    let got = tokio::time::timeout(Duration::from_secs(5), sock.receive_master())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        get_winsize(got.as_fd()).unwrap(),
        WinSize {
            width: 7,
            height: 9
        }
    );
    let flags = nix::fcntl::fcntl(got.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert!(
        flags & libc::FD_CLOEXEC != 0,
        "received master must be close-on-exec"
    );
    drop(sock);
    assert!(!sock_dir.exists(), "socket dir removed on drop");
}

#[tokio::test]
async fn console_socket_reports_runc_hanging_up_without_a_fd() {
    let sock = ConsoleSocket::new().unwrap();
    drop(std::os::unix::net::UnixStream::connect(sock.path()).unwrap());
    let err = sock.receive_master().await.unwrap_err();
    assert!(err.to_string().contains("pty.sock"), "{err}");
}

#[tokio::test]
async fn terminal_with_binary_logger_copies_master_to_fd3() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("o");
    std::fs::create_dir(&outdir).unwrap();
    let logger = write_logger(
        dir.path(),
        "exec 5>&-\n/bin/cat <&3 > \"$2/stdout\"\n: > \"$2/done\"",
    );
    let uri = format!("binary://{}?d={}", logger.display(), outdir.display());
    let pty = openpty();
    let mut s = spec("", &uri, &uri);
    s.terminal = true;
    let pio = ProcessIo::with_console(pty.master, &s, &opts())
        .await
        .unwrap();
    {
        let mut slave = std::fs::File::from(pty.slave);
        std::io::Write::write_all(&mut slave, b"tty-out\n").unwrap();
    }
    assert!(pio.wait(Duration::from_secs(5)).await);
    // The logger's stdout pipe closes when the console copy ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !outdir.join("done").exists() {
        assert!(Instant::now() < deadline, "logger never saw EOF");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(outdir.join("stdout")).unwrap();
    assert_eq!(text, "tty-out\r\n");
    pio.close().await;
}
