//! Terminal support: the console socket runc sends the pty master to, and window resizing.
//!
//! With `terminal: true` the shim passes `--console-socket <path>` to `runc create`/`exec`;
//! runc connects, sends the pty master over `SCM_RIGHTS` and hangs up. go-runc's
//! `NewTempConsoleSocket` puts the socket at `$XDG_RUNTIME_DIR` (or the temp dir)
//! `/pty<random>/pty.sock`; we do the same and remove the directory when the socket is dropped.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use tokio::io::Interest;
use tokio::net::UnixListener;

use super::IoError;

/// A listening console socket for one `runc create`/`runc exec --tty`.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    dir: PathBuf,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Creates `<runtime dir>/ptyXXXXXX/pty.sock` (directory mode 0700) and listens on it.
    /// Must run inside a tokio runtime.
    pub fn new() -> Result<Self, IoError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let template = base.join("ptyXXXXXX");
        let dir = nix::unistd::mkdtemp(&template).map_err(|e| IoError::ConsoleSocket {
            path: template.clone(),
            source: e.into(),
        })?;
        let path = dir.join("pty.sock");
        match UnixListener::bind(&path) {
            Ok(listener) => Ok(ConsoleSocket {
                listener,
                dir,
                path,
            }),
            Err(source) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(IoError::ConsoleSocket { path, source })
            }
        }
    }

    /// The path to give runc as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts runc's connection and receives the pty master (close-on-exec). Wrap in a
    /// timeout: if runc fails before sending, this waits forever.
    pub async fn receive_master(&self) -> Result<OwnedFd, IoError> {
        let err = |reason: String| IoError::ReceiveMaster {
            path: self.path.clone(),
            reason,
        };
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| err(format!("accept: {e}")))?;
        loop {
            stream
                .readable()
                .await
                .map_err(|e| err(format!("wait: {e}")))?;
            match stream.try_io(Interest::READABLE, || recv_fd(stream.as_raw_fd())) {
                Ok(Some(fd)) => return Ok(fd),
                Ok(None) => return Err(err("runc closed the socket without sending a fd".into())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(err(format!("recvmsg: {e}"))),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            log::warn!("remove console socket dir {}: {e}", self.dir.display());
        }
    }
}

/// One `recvmsg` taking the first passed fd; extra fds are closed.
fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    // runc sends the pty name (e.g. "/dev/pts/3") as the payload.
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<UnixAddr>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut first = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed these descriptors in our table for this
                // message; nothing else refers to them.
                #[allow(unsafe_code)]
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                if first.is_none() {
                    first = Some(fd);
                }
            }
        }
    }
    if first.is_none() && msg.bytes > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message carried no file descriptor",
        ));
    }
    Ok(first)
}

/// Terminal window size in character cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WinSize {
    pub width: u16,
    pub height: u16,
}

/// `TIOCSWINSZ` on a pty master (containerd's `console.Resize`: rows = height, cols = width).
pub fn set_winsize(master: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TIOCGWINSZ`: the current window size of a terminal.
pub fn get_winsize(tty: BorrowedFd<'_>) -> io::Result<WinSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and writable.
    #[allow(unsafe_code)]
    let r = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(WinSize {
        width: ws.ws_col,
        height: ws.ws_row,
    })
}
