//! Done-when item 3 of issue 4: `ctr run -t` through a real pty driven by the test, with the
//! initial size and a later resize (SIGWINCH → ctr → ResizePty → our shim → pty master)
//! visible inside the container, under containerd 1.6.20 and 2.3.4.

mod shim_common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shim_common::{Env, Gen};

fn winsize(rows: u16, cols: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

#[allow(unsafe_code)]
fn set_size(master: &OwnedFd, rows: u16, cols: u16) {
    let ws = winsize(rows, cols);
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which is valid for the
    // duration of the call; `master` is an open pty master.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

struct Pty {
    master: std::fs::File,
    out: Arc<Mutex<String>>,
}

impl Pty {
    fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self
                .out
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if text.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not seen on the terminal within {timeout:?}; got:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("write to pty");
    }
}

/// Spawns `ctr <args>` with a fresh pty (rows×cols) as its controlling terminal.
#[allow(unsafe_code)]
fn spawn_in_pty(
    env: &Env,
    args: &[&str],
    rows: u16,
    cols: u16,
) -> (std::process::Child, Pty, OwnedFd) {
    let pty = nix::pty::openpty(Some(&winsize(rows, cols)), None).expect("openpty");
    let slave = pty.slave;
    let mut cmd = env.c.ctr_command();
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave.try_clone().expect("dup")));
    // SAFETY: setsid(2) and ioctl(TIOCSCTTY) are async-signal-safe; the closure touches no
    // Rust-managed state. ctr gets the pty as its controlling terminal, so a resize of the
    // master sends it SIGWINCH like a real terminal emulator would.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn ctr with a pty");
    // ctr runs in its own session: tell the harness's orphan reaper that we wait on it.
    integration::subreaper::register(child.id());
    drop(slave);
    let master_fd = pty.master;
    let reader = std::fs::File::from(master_fd.try_clone().expect("dup master"));
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let term = Pty {
        master: std::fs::File::from(master_fd.try_clone().expect("dup master")),
        out,
    };
    (child, term, master_fd)
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().expect("wait ctr") {
            integration::subreaper::unregister(child.id());
            return s;
        }
        assert!(Instant::now() < deadline, "ctr did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drives an interactive shell: output, initial size, a resize, exit status.
fn drive_shell(mut child: std::process::Child, mut term: Pty, master_fd: &OwnedFd, code: i32) {
    term.send("echo tty-$((6*7)); tty\n");
    term.wait_for("tty-42", Duration::from_secs(20));
    term.wait_for("/dev/pts/", Duration::from_secs(5));
    term.send("stty size\n");
    term.wait_for("40 123", Duration::from_secs(5));
    set_size(master_fd, 50, 100);
    std::thread::sleep(Duration::from_millis(300));
    term.send("stty size\n");
    term.wait_for("50 100", Duration::from_secs(5));
    term.send(&format!("exit {code}\n"));
    let status = wait_exit(&mut child);
    assert_eq!(
        status.code(),
        Some(code),
        "ctr exits with the shell's status"
    );
}

fn run_with_pty(gen: Gen, test: &str) {
    let Some(env) = Env::start(gen, test) else {
        return;
    };
    let (child, term, master) = spawn_in_pty(
        &env,
        &["run", "-t", "--rm", &env.image, "tty1", "sh"],
        40,
        123,
    );
    drive_shell(child, term, &master, 3);
    shim_common::assert_task_gone(&env, "tty1");

    // An exec'd process with its own terminal in a running container.
    env.run_ok(&["-d", &env.image, "tty2", "sleep", "1000"]);
    env.wait_status("tty2", "RUNNING", Duration::from_secs(10));
    let (child, term, master) = spawn_in_pty(
        &env,
        &["t", "exec", "-t", "--exec-id", "sh1", "tty2", "sh"],
        40,
        123,
    );
    drive_shell(child, term, &master, 4);
    env.ctr_ok(&["t", "kill", "-s", "9", "tty2"]);
    env.wait_status("tty2", "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", "tty2"]);
    env.ctr_ok(&["c", "rm", "tty2"]);
    shim_common::assert_task_gone(&env, "tty2");
}

#[test]
fn containerd_1_6_run_with_pty_and_resize_through_our_shim() {
    run_with_pty(Gen::V1, "pty_1_6");
}

#[test]
fn containerd_2_3_run_with_pty_and_resize_through_our_shim() {
    run_with_pty(Gen::V2, "containerd_2_3_pty");
}
