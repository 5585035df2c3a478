//! The process-spawning seam.
//!
//! Who reaps the runtime's process depends on the caller: the daemon and tests are happy with
//! tokio's own child handling ([`TokioSpawner`]), but the shim is a child subreaper with its
//! own `waitpid(-1)` loop, and tokio's reaping would race it (one of them would get `ECHILD`
//! and lose the exit status). So [`crate::Runc`] never waits for a child itself: it builds a
//! [`std::process::Command`] and hands it to a [`Spawner`], which starts it and returns the pid,
//! the parent ends of the stdio pipes, and a future that resolves to the exit status.
//! This mirrors go-runc's `ProcessMonitor` (`Start`/`Wait`) and containerd's `reaper.Default`.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus};

/// A boxed, sendable future resolving to the exit status of a spawned process.
pub type ExitFuture = Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + 'static>>;

/// A process started by a [`Spawner`].
pub struct Spawned {
    /// The process id of the started runtime process.
    pub pid: u32,
    /// Parent end of the stdin pipe, when the command asked for `Stdio::piped()` stdin.
    pub stdin: Option<OwnedFd>,
    /// Parent end of the stdout pipe, when the command asked for `Stdio::piped()` stdout.
    pub stdout: Option<OwnedFd>,
    /// Parent end of the stderr pipe, when the command asked for `Stdio::piped()` stderr.
    pub stderr: Option<OwnedFd>,
    /// Resolves once the process has exited (and has been reaped) with its raw wait status.
    pub exit: ExitFuture,
}

impl fmt::Debug for Spawned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawned")
            .field("pid", &self.pid)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish_non_exhaustive()
    }
}

impl Spawned {
    /// Builds a [`Spawned`] from a `std` child whose exit will be reported by `exit` (for
    /// example a subscription to the caller's reaper). The child's pipes are taken out of it;
    /// the `Child` handle itself is dropped, which neither kills nor waits for the process.
    ///
    /// # Errors
    /// None today; returns `io::Result` so implementations can `?` it.
    pub fn from_std_child(mut child: Child, exit: ExitFuture) -> io::Result<Self> {
        Ok(Spawned {
            pid: child.id(),
            stdin: child.stdin.take().map(OwnedFd::from),
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
            exit,
        })
    }
}

/// Starts runtime processes and reports their exit.
///
/// [`crate::Runc`] prepares the [`Command`] completely (argv, stdio as pipes/null/fds,
/// `CLOEXEC` sweep, parent-death signal) and calls [`Spawner::spawn`] exactly once per call.
///
/// # What an implementation must guarantee
/// - **No lost exits.** The runtime can exit before `spawn` returns (a failing `runc create`
///   exits within milliseconds). The exit must still be delivered to [`Spawned::exit`]. A
///   reaper-based implementation must therefore *subscribe to exit notifications before it
///   starts the command* (containerd's `reaper.Default.Start` does exactly this), and then
///   filter the notifications by the returned pid.
/// - **The pid stays valid until `exit` resolves.** Nobody else may reap the process before
///   the exit is routed to this future; [`crate::Runc`] sends `SIGKILL` to `pid` when a call
///   times out, so an early reap could let that signal hit a recycled pid. (A `waitpid(-1)`
///   reaper has an unavoidable tiny window between reaping and delivery; it must not *delay*
///   delivery.)
/// - **`exit` resolves exactly once**, with the raw wait status
///   (`ExitStatus::from_raw(status)` from `std::os::unix::process::ExitStatusExt`), so callers
///   can tell an exit code from a terminating signal.
/// - **Pipes are handed back untouched.** The parent ends of any piped stdio are returned in
///   [`Spawned`]; the implementation must not read from or write to them.
/// - **Dropping `exit` must not leave a zombie forever**: the implementation still reaps the
///   process even if nobody awaits the future any more.
/// - **Drop the `Command` once the process is started.** It owns the parent's copies of the
///   child's stdio descriptors (caller-supplied pipes); keeping it alive keeps those open and
///   the container's readers would never see EOF.
/// - `spawn` must not block for long (it is called from async code): starting the process
///   (fork/exec) is fine, waiting for it is not.
pub trait Spawner: Send + Sync + fmt::Debug {
    /// Starts `cmd` and returns its pid, stdio pipes and exit future.
    ///
    /// # Errors
    /// The `io::Error` from starting the process (binary missing, fork failure...).
    fn spawn(&self, cmd: Command) -> io::Result<Spawned>;
}

/// The default [`Spawner`]: starts processes with `tokio::process` and lets tokio reap them.
///
/// Right for every caller that does *not* run its own `waitpid(-1)` loop (daemon, tests,
/// tools). Do not use it in a process that reaps all children itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSpawner;

impl Spawner for TokioSpawner {
    fn spawn(&self, cmd: Command) -> io::Result<Spawned> {
        let mut cmd = tokio::process::Command::from(cmd);
        // A cancelled call must not leave an unreaped runtime behind; tokio reaps children
        // of dropped handles in the background.
        cmd.kill_on_drop(false);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
        let stdin = child
            .stdin
            .take()
            .map(tokio::process::ChildStdin::into_owned_fd)
            .transpose()?;
        let stdout = child
            .stdout
            .take()
            .map(tokio::process::ChildStdout::into_owned_fd)
            .transpose()?;
        let stderr = child
            .stderr
            .take()
            .map(tokio::process::ChildStderr::into_owned_fd)
            .transpose()?;
        let exit: ExitFuture = Box::pin(async move { child.wait().await });
        Ok(Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            exit,
        })
    }
}
