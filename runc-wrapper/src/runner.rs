//! One runtime call: argv, stdio, spawn through the [`Spawner`], stdin feeding, output
//! collection, timeout, and error-message extraction.
//!
//! Output is read while waiting for the exit; once the exit is known, whatever is still in the
//! pipes is drained *without* waiting for EOF, because a container started by `run`/`exec`
//! may hold our pipe open long after the runtime exited (go-runc avoids this by handing the
//! container its own IO; we do both: detached calls default to `/dev/null`).
//!
//! Descriptor hygiene (CVE-2024-21626 class): before exec the child marks every fd above its
//! stdio (and above explicitly passed `extra_files`) close-on-exec with `close_range`, so a
//! descriptor some library opened without `O_CLOEXEC` can never reach the runtime or the
//! container.

use std::ffi::OsString;
use std::fs::File;
use std::future::pending;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::error::{Error, Result};
use crate::options::{LogFormat, ProcessIo};
use crate::spawn::Spawned;
use crate::tempdir::PrivateDir;
use crate::{Output, Runc, Waits};

/// How long to wait for a killed (timed out) runtime to be reaped before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Stdio for one stream of the runtime process.
#[derive(Debug)]
pub(crate) enum Stdio {
    /// Captured (stdout/stderr) or fed (stdin) through a pipe.
    Pipe,
    /// `/dev/null`.
    Null,
    /// A descriptor supplied by the caller.
    Fd(OwnedFd),
}

impl Stdio {
    fn into_std(self) -> std::process::Stdio {
        match self {
            Stdio::Pipe => std::process::Stdio::piped(),
            Stdio::Null => std::process::Stdio::null(),
            Stdio::Fd(fd) => std::process::Stdio::from(fd),
        }
    }
}

/// Everything about one call except the global flags.
#[derive(Debug)]
pub(crate) struct Call {
    args: Vec<OsString>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    stdin_data: Option<Vec<u8>>,
    extra_files: Vec<OwnedFd>,
}

impl Call {
    /// Null stdin, captured stdout and stderr.
    pub(crate) fn new(args: Vec<OsString>) -> Self {
        Call {
            args,
            stdin: Stdio::Null,
            stdout: Stdio::Pipe,
            stderr: Stdio::Pipe,
            stdin_data: None,
            extra_files: Vec::new(),
        }
    }

    /// Feeds `data` on stdin, then closes it.
    pub(crate) fn stdin_bytes(mut self, data: Vec<u8>) -> Self {
        self.stdin = Stdio::Pipe;
        self.stdin_data = Some(data);
        self
    }

    /// The container outlives the call: streams the caller did not supply are `/dev/null`.
    pub(crate) fn detached_io(mut self, io: ProcessIo) -> Self {
        self.stdin = io.stdin.map_or(Stdio::Null, Stdio::Fd);
        self.stdout = io.stdout.map_or(Stdio::Null, Stdio::Fd);
        self.stderr = io.stderr.map_or(Stdio::Null, Stdio::Fd);
        self
    }

    /// The call waits for the container: streams the caller did not supply are captured
    /// (stdin: `/dev/null`).
    pub(crate) fn foreground_io(mut self, io: ProcessIo) -> Self {
        self.stdin = io.stdin.map_or(Stdio::Null, Stdio::Fd);
        self.stdout = io.stdout.map_or(Stdio::Pipe, Stdio::Fd);
        self.stderr = io.stderr.map_or(Stdio::Pipe, Stdio::Fd);
        self
    }

    /// Descriptors passed to the runtime as 3, 4, … (with `--preserve-fds`).
    pub(crate) fn extra_files(mut self, files: Vec<OwnedFd>) -> Self {
        self.extra_files = files;
        self
    }
}

/// Where this call's runtime log goes and from which byte offset it is ours.
struct LogTarget {
    path: PathBuf,
    format: LogFormat,
    offset: u64,
    // Keeps a per-call log's directory alive until the message is extracted.
    _dir: Option<PrivateDir>,
}

impl LogTarget {
    fn for_call(runc: &Runc) -> Result<Self> {
        if let Some(path) = &runc.config.log {
            let offset = std::fs::metadata(path).map_or(0, |m| m.len());
            Ok(LogTarget {
                path: path.clone(),
                format: runc.config.log_format,
                offset,
                _dir: None,
            })
        } else {
            let dir = PrivateDir::new("runc-log")?;
            Ok(LogTarget {
                path: dir.path().join("log.json"),
                format: LogFormat::Json,
                offset: 0,
                _dir: Some(dir),
            })
        }
    }

    /// The text the runtime appended to the log during this call.
    fn appended(&self) -> String {
        let Ok(mut f) = File::open(&self.path) else {
            return String::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        // A log rotated/truncated under us: read it all.
        let from = if len >= self.offset { self.offset } else { 0 };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
            return String::new();
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Runs `call` with `runc`'s global options; see the module doc.
pub(crate) async fn run(runc: &Runc, call: Call, waits: Waits, lenient: bool) -> Result<Output> {
    let log = LogTarget::for_call(runc)?;
    let mut argv = runc.global_args(Some((log.path.as_path(), log.format)));
    argv.extend(call.args.iter().cloned());
    let command = runc.command_line(&call.args);

    let mut cmd = base_command(&runc.config.binary, &argv);
    cmd.stdin(call.stdin.into_std())
        .stdout(call.stdout.into_std())
        .stderr(call.stderr.into_std());
    if runc.config.setpgid {
        cmd.process_group(0);
    }
    let extra: Vec<RawFd> = call.extra_files.iter().map(AsRawFd::as_raw_fd).collect();
    install_pre_exec(&mut cmd, extra, runc.config.pdeath_signal);

    let spawned = runc.spawner.spawn(cmd).map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    // The child has its copies now; ours must go so pipes passed in reach EOF.
    drop(call.extra_files);
    log::debug!("started `{command}` as pid {}", spawned.pid);
    let started = std::time::Instant::now();

    let timeout = runc.timeout_for(waits);
    let out = drive(
        spawned,
        call.stdin_data,
        timeout,
        runc.config.setpgid,
        &command,
    )
    .await?;

    log::debug!(
        "`{command}` finished in {:?}: {}",
        started.elapsed(),
        out.status
    );
    if out.status.success() {
        return Ok(out);
    }
    let logged = last_error(&log.appended(), log.format);
    if lenient && logged.is_none() {
        // Foreground run/exec: the exit status is the container process's.
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let message = logged
        .or_else(|| last_error_in_stderr(&stderr))
        .unwrap_or_else(|| "the runtime printed no error message to its log or stderr".into());
    Err(Error::CommandFailed {
        command,
        status: out.status,
        message,
        stderr,
    })
}

/// The command line and environment of a runtime call (stdio and hooks are added by `run`).
fn base_command(binary: &std::path::Path, argv: &[OsString]) -> std::process::Command {
    let mut cmd = std::process::Command::new(binary);
    // NOTIFY_SOCKET makes runc proxy sd_notify for the container; it is only meant to be
    // set when systemd itself runs the runtime (go-runc's command_linux.go filters it too).
    cmd.env_remove("NOTIFY_SOCKET").args(argv);
    cmd
}

/// Captures one pipe until EOF or until drained after the exit.
struct Reader {
    rx: Option<pipe::Receiver>,
    buf: Vec<u8>,
}

impl Reader {
    fn new(fd: Option<OwnedFd>) -> io::Result<Self> {
        Ok(Reader {
            rx: fd.map(pipe::Receiver::from_owned_fd).transpose()?,
            buf: Vec::new(),
        })
    }

    fn open(&self) -> bool {
        self.rx.is_some()
    }

    /// One read; cancel-safe (used in `select!`).
    async fn read_some(&mut self) -> io::Result<()> {
        let Some(rx) = self.rx.as_mut() else {
            return pending().await;
        };
        let mut chunk = [0u8; 8192];
        let n = rx.read(&mut chunk).await?;
        if n == 0 {
            self.rx = None;
        } else {
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    /// Takes what is already in the pipe without waiting for more.
    fn drain(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match rx.try_read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Feeds stdin; dropping the sender closes the pipe.
struct Writer {
    tx: Option<pipe::Sender>,
    data: Vec<u8>,
    pos: usize,
}

impl Writer {
    /// One write; cancel-safe.
    async fn write_some(&mut self) {
        let Some(tx) = self.tx.as_mut() else {
            return pending().await;
        };
        match tx.write(&self.data[self.pos..]).await {
            Ok(n) => {
                self.pos += n;
                if self.pos >= self.data.len() {
                    self.tx = None;
                }
            }
            // EPIPE: the runtime exited or closed stdin; its exit status tells the story.
            Err(_) => self.tx = None,
        }
    }
}

async fn drive(
    spawned: Spawned,
    stdin_data: Option<Vec<u8>>,
    timeout: Option<Duration>,
    group: bool,
    command: &str,
) -> Result<Output> {
    let Spawned {
        pid,
        stdin,
        stdout,
        stderr,
        mut exit,
    } = spawned;
    let io_err = |source| Error::Io {
        command: command.to_string(),
        source,
    };
    let mut writer = Writer {
        tx: match (stdin, stdin_data.is_some()) {
            (Some(fd), true) => Some(pipe::Sender::from_owned_fd(fd).map_err(io_err)?),
            // A stdin pipe with nothing to send is closed right away (EOF).
            _ => None,
        },
        data: stdin_data.unwrap_or_default(),
        pos: 0,
    };
    if writer.data.is_empty() {
        writer.tx = None;
    }
    let mut out = Reader::new(stdout).map_err(io_err)?;
    let mut err = Reader::new(stderr).map_err(io_err)?;

    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let expire = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => pending().await,
        }
    };
    tokio::pin!(expire);

    let status = loop {
        tokio::select! {
            r = &mut exit => break r.map_err(io_err)?,
            () = writer.write_some(), if writer.tx.is_some() => {}
            r = out.read_some(), if out.open() => r.map_err(io_err)?,
            r = err.read_some(), if err.open() => r.map_err(io_err)?,
            () = &mut expire => {
                log::warn!("`{command}` (pid {pid}) did not finish within {timeout:?}; killing it");
                kill(pid, group);
                // Reap it (the spawner's future) so no zombie is left; a process stuck in
                // uninterruptible sleep is given up on after the grace period.
                let _ = tokio::time::timeout(KILL_GRACE, &mut exit).await;
                return Err(Error::Timeout {
                    command: command.to_string(),
                    pid,
                    timeout: timeout.unwrap_or_default(),
                });
            }
        }
    };
    drop(writer);
    out.drain();
    err.drain();
    Ok(Output {
        status,
        stdout: out.buf,
        stderr: err.buf,
    })
}

fn kill(pid: u32, group: bool) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else { return };
    if group {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
}

/// In the child between fork and exec: parent-death signal, move `extra` fds to 3.., and mark
/// every other fd above them close-on-exec.
#[allow(unsafe_code)]
fn install_pre_exec(cmd: &mut std::process::Command, extra: Vec<RawFd>, pdeath: Option<i32>) {
    let mut fds = extra;
    let n = i32::try_from(fds.len()).unwrap_or(i32::MAX - 3);
    let first_free = 3 + n;
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls below: no allocation, no locks.
        if let Some(sig) = pdeath {
            // SAFETY: plain prctl with integer arguments.
            if unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::c_ulong::from(sig.unsigned_abs()),
                )
            } != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        // First move every source out of the target range 3..3+n so dup2 cannot clobber one.
        for fd in &mut fds {
            if *fd < first_free {
                // SAFETY: fcntl on a descriptor we own (inherited copy in the child).
                let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first_free) };
                if moved < 0 {
                    return Err(io::Error::last_os_error());
                }
                *fd = moved;
            }
        }
        for (target, fd) in (3..).zip(fds.iter()) {
            // SAFETY: dup2 onto a number in 3..3+n; the new descriptor has CLOEXEC clear.
            if unsafe { libc::dup2(*fd, target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: close_range only changes descriptor flags; errors (ENOSYS on kernels before
        // 5.11) are ignored because std and tokio open everything with O_CLOEXEC anyway.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                libc::c_uint::try_from(first_free).unwrap_or(3),
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        Ok(())
    };
    // SAFETY: the hook only performs async-signal-safe system calls on integers and on
    // memory it owns (no allocation), as required between fork and exec.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// The last error-level message in a runtime log (JSON lines or logrus text).
pub(crate) fn last_error(log: &str, format: LogFormat) -> Option<String> {
    let mut last = None;
    for line in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let found = match format {
            LogFormat::Json => json_error(line),
            LogFormat::Text => text_error(line),
        };
        // A text line can also appear in a JSON log (and vice versa) when several runtimes
        // or versions shared the file; try the other form too.
        let found = found.or_else(|| match format {
            LogFormat::Json => text_error(line),
            LogFormat::Text => json_error(line),
        });
        if found.is_some() {
            last = found;
        }
    }
    last
}

fn is_error_level(level: &str) -> bool {
    matches!(
        level.to_ascii_lowercase().as_str(),
        "error" | "fatal" | "panic"
    )
}

fn json_error(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let level = v.get("level")?.as_str()?;
    if !is_error_level(level) {
        return None;
    }
    let msg = v.get("msg").or_else(|| v.get("message"))?.as_str()?;
    Some(msg.trim().to_string())
}

/// `time="..." level=error msg="container with id exists: x"` → the msg value.
fn text_error(line: &str) -> Option<String> {
    let level = logfmt_value(line, "level")?;
    if !is_error_level(&level) {
        return None;
    }
    logfmt_value(line, "msg")
}

fn logfmt_value(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let mut search = 0;
    let start = loop {
        let i = search + line[search..].find(&pat)?;
        // Must be at the start or after a space (so `xlevel=` does not match `level=`).
        if i == 0 || line.as_bytes()[i - 1] == b' ' {
            break i + pat.len();
        }
        search = i + pat.len();
    };
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => break,
                },
                '"' => return Some(out),
                c => out.push(c),
            }
        }
        Some(out)
    } else {
        Some(rest.split(' ').next().unwrap_or_default().to_string())
    }
}

/// Stderr fallback: the last error-level logrus line, else the last non-empty line.
pub(crate) fn last_error_in_stderr(stderr: &str) -> Option<String> {
    last_error(stderr, LogFormat::Text).or_else(|| {
        stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_is_not_passed_to_the_runtime() {
        let cmd = base_command(std::path::Path::new("runc"), &["state".into()]);
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "NOTIFY_SOCKET" && v.is_none()));
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["state"]);
    }

    #[test]
    fn last_json_error_wins() {
        let log = r#"{"level":"info","msg":"starting","time":"t"}
{"level":"error","msg":"first problem","time":"t"}
not json at all
{"level":"warning","msg":"later warning","time":"t"}
{"level":"error","msg":"container with id exists: c1","time":"t"}
"#;
        assert_eq!(
            last_error(log, LogFormat::Json).as_deref(),
            Some("container with id exists: c1")
        );
        assert_eq!(
            last_error(r#"{"level":"info","msg":"x"}"#, LogFormat::Json),
            None
        );
    }

    #[test]
    fn logrus_text_error_is_unquoted() {
        let line = r#"time="2026-11-23T11:00:00Z" level=error msg="runc run failed: \"quoted\" thing\nnext""#;
        assert_eq!(
            last_error(line, LogFormat::Text).as_deref(),
            Some("runc run failed: \"quoted\" thing\nnext")
        );
        assert_eq!(
            text_error(r#"level=fatal msg=bare_word other=1"#).as_deref(),
            Some("bare_word")
        );
        assert_eq!(text_error(r#"xlevel=error msg="no""#), None);
    }

    #[test]
    fn stderr_fallback_takes_last_line() {
        assert_eq!(
            last_error_in_stderr("usage...\n\nopen config.json: no such file\n\n").as_deref(),
            Some("open config.json: no such file")
        );
        assert_eq!(last_error_in_stderr("  \n"), None);
    }
}
