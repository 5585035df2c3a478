//! The shim's one reaper: `PR_SET_CHILD_SUBREAPER` plus a SIGCHLD-driven `waitpid(-1)` loop.
//!
//! Container processes are re-parented to the shim (it is their subreaper), and the shim also
//! forks the OCI runtime for every operation. Exactly one place may call `waitpid`, or exit
//! statuses get lost to `ECHILD` races (containerd's `sys/reaper`). Exits are routed by pid:
//! - a runtime process started through [`ReaperSpawner`] has a one-shot subscriber, registered
//!   under the same lock that `waitpid` runs under, *before* anyone can reap it — so a runtime
//!   that exits within microseconds is never missed (subscribe-before-start);
//! - every other exit (container init, exec'd processes, orphans re-parented to us) goes to the
//!   channel the task service consumes; it matches pids to processes and handles exits that
//!   arrive before the pid is known (see `service::ExitRouter`).

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runc_wrapper::{ExitFuture, Spawned, Spawner};
use tokio::sync::{mpsc, oneshot};

/// Errors from setting up the reaper.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("prctl(PR_SET_CHILD_SUBREAPER): {0}")]
    Subreaper(#[source] Errno),
    #[error("installing the SIGCHLD handler: {0}")]
    Signal(#[source] io::Error),
}

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    /// Exit code, or 128 + signal number for a process killed by a signal (containerd's
    /// `reaper.exitStatus`).
    pub status: u32,
    /// The raw wait status (for the `Spawner` contract).
    pub raw: i32,
    pub at: SystemTime,
}

struct Inner {
    subscribers: HashMap<u32, oneshot::Sender<Exit>>,
    others: Option<mpsc::UnboundedSender<Exit>>,
}

/// Routes exit statuses from the single `waitpid(-1)` loop to whoever waits for them.
pub struct Reaper {
    inner: Mutex<Inner>,
}

static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();

impl Reaper {
    /// The process-wide reaper.
    pub fn global() -> Arc<Reaper> {
        REAPER
            .get_or_init(|| {
                Arc::new(Reaper {
                    inner: Mutex::new(Inner {
                        subscribers: HashMap::new(),
                        others: None,
                    }),
                })
            })
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exits of processes nobody subscribed to are sent to the returned channel.
    pub fn take_unsubscribed(&self) -> mpsc::UnboundedReceiver<Exit> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().others = Some(tx);
        rx
    }

    /// Starts `cmd` and subscribes to its exit atomically with respect to the reap loop.
    pub fn spawn(
        &self,
        mut cmd: Command,
    ) -> io::Result<(std::process::Child, oneshot::Receiver<Exit>)> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let child = cmd.spawn()?;
        inner.subscribers.insert(child.id(), tx);
        Ok((child, rx))
    }

    /// Reaps every exited child without blocking and routes each status.
    pub fn reap(&self) {
        loop {
            let mut inner = self.lock();
            let ws = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("waitpid(-1): {e}");
                    return;
                }
                Ok(ws) => ws,
            };
            let (pid, status, raw) = match ws {
                WaitStatus::Exited(pid, code) => (pid, code as u32, (code & 0xff) << 8),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid,
                    128 + sig as u32,
                    sig as i32 | if core { 0x80 } else { 0 },
                ),
                // Stopped/continued/ptrace events are not exits.
                _ => continue,
            };
            let exit = Exit {
                pid: pid.as_raw() as u32,
                status,
                raw,
                at: SystemTime::now(),
            };
            if let Some(tx) = inner.subscribers.remove(&exit.pid) {
                let _ = tx.send(exit);
            } else if let Some(tx) = &inner.others {
                let _ = tx.send(exit);
            }
        }
    }

    /// Runs the SIGCHLD loop forever (spawn it as a task).
    pub async fn run(self: Arc<Self>) -> Result<(), ReaperError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        // Children may have exited before the handler was installed.
        self.reap();
        while sigchld.recv().await.is_some() {
            self.reap();
        }
        Ok(())
    }
}

/// Makes this process the subreaper of its descendants (container processes re-parent here).
pub fn set_subreaper() -> Result<(), ReaperError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(ReaperError::Subreaper)
}

/// The runc-wrapper [`Spawner`] backed by the shim's reaper.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaperSpawner;

impl Spawner for ReaperSpawner {
    fn spawn(&self, cmd: Command) -> io::Result<Spawned> {
        let (child, rx) = Reaper::global().spawn(cmd)?;
        let exit: ExitFuture = Box::pin(async move {
            rx.await
                .map(|e| ExitStatus::from_raw(e.raw))
                .map_err(|_| io::Error::other("reaper dropped the exit subscription"))
        });
        Spawned::from_std_child(child, exit)
    }
}
