//! No fd leaks: every kind of process IO, created, used and closed, leaves the shim's fd table
//! exactly as it found it. One test in its own binary, so nothing else opens fds meanwhile.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::stat::Mode;
use shim::io::{ConsoleSocket, IoOptions, ProcessIo, RuncStdio, StdioSpec, WinSize};

fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(Result::ok)
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    v.sort();
    v
}

fn spec(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioSpec {
    StdioSpec {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
    }
}

fn mkfifo(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    p.to_str().unwrap().to_string()
}

async fn run(fds: RuncStdio, script: &str) {
    let s = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::null, Stdio::from);
    let mut child = Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(s(fds.stdin))
        .stdout(s(fds.stdout))
        .stderr(s(fds.stderr))
        .spawn()
        .expect("spawn /bin/sh");
    for _ in 0..500 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn cycle(name: &str, before: &[String], f: impl std::future::Future<Output = ()>) {
    f.await;
    // Aborted tasks are dropped on the next scheduler pass.
    tokio::task::yield_now().await;
    let after = open_fds();
    assert_eq!(before, after.as_slice(), "fd leak after {name}");
}

#[tokio::test]
async fn every_io_kind_closes_all_its_fds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = IoOptions {
        id: "leak".into(),
        namespace: "ns".into(),
        uid: None,
        gid: None,
    };
    let before = open_fds();

    cycle("fifo with stdin", &before, async {
        let stdin = mkfifo(dir.path(), "in1");
        let out = mkfifo(dir.path(), "out1");
        let err = mkfifo(dir.path(), "err1");
        let pio = ProcessIo::create(&spec(&stdin, &out, &err, false), &opts)
            .await
            .unwrap();
        run(pio.take_runc_stdio(), "echo a; echo b >&2").await;
        pio.close_stdin();
        assert!(pio.wait(Duration::from_secs(5)).await);
        pio.close().await;
    })
    .await;

    cycle(
        "fifo without reader, process still writing",
        &before,
        async {
            let out = mkfifo(dir.path(), "out2");
            let pio = ProcessIo::create(&spec("", &out, "", false), &opts)
                .await
                .unwrap();
            let fds = pio.take_runc_stdio();
            let s = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::null, Stdio::from);
            let mut child = Command::new("/usr/bin/head")
                .args(["-c", "1000000", "/dev/zero"])
                .stdout(s(fds.stdout))
                .spawn()
                .unwrap();
            assert!(!pio.wait(Duration::from_millis(100)).await);
            pio.close().await;
            let _ = child.kill();
            let _ = child.wait();
        },
    )
    .await;

    cycle("file://", &before, async {
        let uri = format!("file://{}/logs/x.log", dir.path().display());
        let pio = ProcessIo::create(&spec("", &uri, &uri, false), &opts)
            .await
            .unwrap();
        run(pio.take_runc_stdio(), "echo a; echo b >&2").await;
        assert!(pio.wait(Duration::from_secs(5)).await);
        pio.close().await;
    })
    .await;

    cycle("binary://", &before, async {
        let logger = dir.path().join("logger.sh");
        std::fs::write(&logger, "#!/bin/sh\nexec 5>&-\n/bin/cat <&3 >/dev/null\n").unwrap();
        std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).unwrap();
        let uri = format!("binary://{}", logger.display());
        let pio = ProcessIo::create(&spec("", &uri, &uri, false), &opts)
            .await
            .unwrap();
        run(pio.take_runc_stdio(), "echo a").await;
        pio.close().await;
    })
    .await;

    cycle("null", &before, async {
        let pio = ProcessIo::create(&spec("", "", "", false), &opts)
            .await
            .unwrap();
        run(pio.take_runc_stdio(), "echo a").await;
        pio.close().await;
    })
    .await;

    cycle("error path (bad stdin after good stdout)", &before, async {
        let out = mkfifo(dir.path(), "out3");
        let missing = dir.path().join("missing-stdin");
        let r = ProcessIo::create(&spec(missing.to_str().unwrap(), &out, "", false), &opts).await;
        assert!(r.is_err());
    })
    .await;

    cycle("console socket + pty", &before, async {
        let sock = ConsoleSocket::new().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        {
            use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
            use std::os::fd::AsRawFd;
            let client = std::os::unix::net::UnixStream::connect(sock.path()).unwrap();
            sendmsg::<UnixAddr>(
                client.as_raw_fd(),
                &[std::io::IoSlice::new(b"pty")],
                &[ControlMessage::ScmRights(&[pty.master.as_raw_fd()])],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        }
        let master = sock.receive_master().await.unwrap();
        drop(sock);
        drop(pty.master);
        let stdin = mkfifo(dir.path(), "in4");
        let out = mkfifo(dir.path(), "out4");
        let pio = ProcessIo::with_console(master, &spec(&stdin, &out, "", true), &opts)
            .await
            .unwrap();
        pio.resize(WinSize {
            width: 10,
            height: 10,
        })
        .unwrap();
        let _ = shim::io::get_winsize(pty.slave.as_fd()).unwrap();
        drop(pty.slave);
        assert!(pio.wait(Duration::from_secs(5)).await);
        pio.close().await;
    })
    .await;
}
