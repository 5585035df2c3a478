//! Console socket: how the runtime hands us the pty master of a `terminal: true` process.
//!
//! With `--console-socket <path>`, runc creates the pty inside the container, connects to the
//! unix socket at `<path>` and sends the master end as `SCM_RIGHTS` ancillary data (with the
//! pty's name as payload). [`ConsoleSocket`] owns a listener in a private (0700) directory and
//! turns the received descriptor into an [`OwnedFd`] (`CLOEXEC`). It matches go-runc's
//! `console.go` (`NewTempConsoleSocket`, `ReceiveMaster`).

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixListener;

use crate::error::{Error, Result};
use crate::tempdir::PrivateDir;

/// A listening console socket in a private temporary directory, removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    // Dropped last: removes the directory (and the socket file in it).
    dir: PrivateDir,
}

impl ConsoleSocket {
    /// Creates a socket `pty.sock` in a new private directory under the system temp dir.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::TempFile`] when the directory cannot be made, [`Error::ConsoleSocket`] when
    /// the socket cannot be bound.
    pub fn new() -> Result<Self> {
        let dir = PrivateDir::new("pty")?;
        let path = dir.path().join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(|e| Error::ConsoleSocket {
            path: path.clone(),
            reason: format!("cannot bind: {e}"),
        })?;
        Ok(ConsoleSocket {
            listener,
            path,
            dir,
        })
    }

    /// The socket path to pass as `console_socket` in the create/run/exec options.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The private directory holding the socket.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Accepts one connection from the runtime and returns the pty master it sends.
    ///
    /// Waits for as long as it takes: wrap it in `tokio::time::timeout`. runc connects during
    /// `create`/`exec`, so calling this after `create` returned works (the connection waits in
    /// the listen backlog).
    ///
    /// # Errors
    /// [`Error::ConsoleSocket`] when accepting or receiving fails, or the peer closed the
    /// connection without sending a descriptor.
    pub async fn receive_master(&self) -> Result<OwnedFd> {
        let fail = |reason: String| Error::ConsoleSocket {
            path: self.path.clone(),
            reason,
        };
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| fail(format!("accept failed: {e}")))?;
        loop {
            stream
                .readable()
                .await
                .map_err(|e| fail(format!("waiting for the runtime's message: {e}")))?;
            match stream.try_io(Interest::READABLE, || recv_fd(stream.as_raw_fd())) {
                Ok(Some(fd)) => return Ok(fd),
                Ok(None) => {
                    return Err(fail(
                        "the runtime closed the connection without sending a pty master fd".into(),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(format!("recvmsg failed: {e}"))),
            }
        }
    }
}

/// One `recvmsg` with room for a few fds. `Ok(None)`: the message carried no descriptor.
fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    // runc sends the pty name (at most a path) as payload.
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                received.push(owned(fd));
            }
        }
    }
    // Any extra descriptors are closed when `received` drops.
    Ok(if received.is_empty() {
        None
    } else {
        Some(received.swap_remove(0))
    })
}

#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just installed in our fd table by the kernel as part of this
    // SCM_RIGHTS message; nothing else in the process knows it, so we are its sole owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
