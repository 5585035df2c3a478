//! The logging-binary protocol (`binary://`), as containerd's `NewBinaryIO`
//! (`pkg/process/io.go`) and `runtime/v2/logging` define it:
//!
//! - the binary gets the container's stdout on fd 3 and stderr on fd 4 (read ends of pipes whose
//!   write ends runc hands to the container), and a readiness pipe on fd 5;
//! - its environment is exactly `CONTAINER_ID` and `CONTAINER_NAMESPACE`; stdio is /dev/null;
//! - the shim waits until the binary writes a byte to fd 5 or closes it before going on
//!   (`binary-v2://` requires the byte);
//! - on delete the shim sends SIGTERM and kills it after 12 s.
//!
//! The binary is started with `posix_spawn` (no fork of a tokio process, no `unsafe`), and
//! tracked with a pidfd so it is found exited even if the shim's reaper collected it first.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitid, Id, WaitPidFlag};

use super::fd::{dup_above, pidfd_open, pidfd_send_signal, pipe, AsyncPipe};
use super::uri::LoggerSpec;
use super::IoError;

/// How long a logger gets to exit after SIGTERM (containerd's `binaryIOProcTermTimeout`).
pub const LOGGER_TERM_TIMEOUT: Duration = Duration::from_secs(12);

/// A running logging binary.
#[derive(Debug)]
pub(crate) struct Logger {
    pid: i32,
    /// `None` when the binary was already gone (and reaped) right after spawning.
    pidfd: Option<AsyncPipe>,
}

/// What [`spawn`] hands back: the logger and the write ends for runc's stdout/stderr.
pub(crate) struct Spawned {
    pub logger: Logger,
    pub stdout_w: OwnedFd,
    pub stderr_w: OwnedFd,
}

/// Starts the logging binary and waits for its readiness signal.
pub(crate) async fn spawn(
    spec: &LoggerSpec,
    id: &str,
    namespace: &str,
) -> Result<Spawned, IoError> {
    let spawn_err = |source: io::Error| IoError::LoggerSpawn {
        path: spec.path.clone(),
        source,
    };
    let (out_r, out_w) = pipe().map_err(spawn_err)?;
    let (err_r, err_w) = pipe().map_err(spawn_err)?;
    let (ready_r, ready_w) = pipe().map_err(spawn_err)?;
    // Sources of the dup2s must not be 3, 4 or 5 themselves, or one dup2 would clobber the
    // next one's source.
    let srcs = [
        dup_above(out_r.as_fd(), 10).map_err(spawn_err)?,
        dup_above(err_r.as_fd(), 10).map_err(spawn_err)?,
        dup_above(ready_w.as_fd(), 10).map_err(spawn_err)?,
    ];
    drop((out_r, err_r, ready_w));

    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| IoError::InvalidUri {
            uri: format!("binary://{}", spec.path.display()),
            reason: "NUL byte in logger path or arguments".into(),
        })
    };
    let mut argv = vec![cstr(spec.path.as_os_str().as_bytes())?];
    for a in &spec.args {
        argv.push(cstr(a.as_bytes())?);
    }
    let envp = [
        cstr(format!("CONTAINER_ID={id}").as_bytes())?,
        cstr(format!("CONTAINER_NAMESPACE={namespace}").as_bytes())?,
    ];

    let nix_err = |e: nix::Error| spawn_err(io::Error::from(e));
    // In a block: PosixSpawnFileActions/Attr hold raw pointers (not Send) and must be gone
    // before the first await.
    let pid = {
        let mut actions = PosixSpawnFileActions::init().map_err(nix_err)?;
        actions
            .add_open(0, "/dev/null", OFlag::O_RDONLY, Mode::empty())
            .map_err(nix_err)?;
        for fd in [1, 2] {
            actions
                .add_open(fd, "/dev/null", OFlag::O_WRONLY, Mode::empty())
                .map_err(nix_err)?;
        }
        for (target, src) in (3..).zip(&srcs) {
            // dup2 clears FD_CLOEXEC on the target; everything else of ours is close-on-exec.
            actions.add_dup2(src.as_raw_fd(), target).map_err(nix_err)?;
        }
        let mut attr = PosixSpawnAttr::init().map_err(nix_err)?;
        // The shim may block or ignore signals (SIGPIPE is ignored by Rust's runtime); the logger
        // starts with a clean slate.
        attr.set_sigmask(&SigSet::empty()).map_err(nix_err)?;
        attr.set_sigdefault(&SigSet::all()).map_err(nix_err)?;
        attr.set_flags(
            PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
        )
        .map_err(nix_err)?;
        posix_spawn(spec.path.as_path(), &actions, &attr, &argv, &envp)
            .map_err(nix_err)?
            .as_raw()
    };
    drop(srcs);

    let pidfd = match pidfd_open(pid) {
        Ok(fd) => Some(AsyncPipe::new(fd).map_err(spawn_err)?),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
        Err(e) => return Err(spawn_err(e)),
    };
    let logger = Logger { pid, pidfd };

    let ready = AsyncPipe::new(ready_r).map_err(spawn_err)?;
    let mut byte = [0u8; 1];
    let n = match ready.read(&mut byte).await {
        Ok(n) => n,
        Err(e) => {
            logger.terminate(Duration::ZERO).await;
            return Err(spawn_err(e));
        }
    };
    if n == 0 && spec.v2 {
        logger.terminate(Duration::ZERO).await;
        return Err(IoError::LoggerNotReady {
            path: spec.path.clone(),
            reason: "binary-v2 logger closed fd 5 without writing (crashed or exited early?)"
                .into(),
        });
    }
    log::debug!("logging binary {} (pid {pid}) ready", spec.path.display());
    Ok(Spawned {
        logger,
        stdout_w: out_w,
        stderr_w: err_w,
    })
}

impl Logger {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// SIGKILL without waiting (drop paths that cannot await); the reaper collects it.
    pub(crate) fn kill_now(&self) {
        if let Some(pidfd) = &self.pidfd {
            let _ = pidfd_send_signal(pidfd.get_ref().as_fd(), Signal::SIGKILL);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps the binary unless the shim's reaper
    /// already did.
    pub(crate) async fn terminate(&self, grace: Duration) {
        let Some(pidfd) = &self.pidfd else {
            return;
        };
        let fd = pidfd.get_ref().as_fd();
        let first = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        if let Err(e) = pidfd_send_signal(fd, first) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                log::warn!("signal logging binary pid {}: {e}", self.pid);
            }
        }
        if tokio::time::timeout(grace.max(Duration::from_millis(1)), pidfd.readable())
            .await
            .is_err()
        {
            log::warn!(
                "logging binary pid {} did not exit {grace:?} after SIGTERM, killing",
                self.pid
            );
            let _ = pidfd_send_signal(fd, Signal::SIGKILL);
            let _ = pidfd.readable().await;
        }
        // ECHILD means the shim's reaper got there first; nothing else to do.
        let _ = waitid(Id::PIDFd(fd), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG);
    }
}
