//! Low-level fd plumbing shared by the io module: non-blocking fds registered with the tokio
//! reactor, fifo opening with containerd's semantics, the copy-buffer pool and pidfds.
//!
//! Everything here is single-threaded friendly: no blocking syscalls on fds that can stall
//! (fifos, pipes, ptys), no helper threads.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;

/// Size of one copy buffer. Buffers are only held while data is flowing (see [`copy_fd`]), so an
/// idle shim holds none; at most [`POOL_KEEP`] are cached between bursts.
pub(crate) const BUF_SIZE: usize = 32 * 1024;
const POOL_KEEP: usize = 1;

static POOL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// A copy buffer borrowed from the process-wide pool; returned on drop.
pub(crate) struct PooledBuf(Option<Box<[u8]>>);

impl PooledBuf {
    pub(crate) fn get() -> Self {
        let cached = POOL.lock().ok().and_then(|mut p| p.pop());
        PooledBuf(Some(
            cached.unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice()),
        ))
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let (Some(buf), Ok(mut pool)) = (self.0.take(), POOL.lock()) {
            if pool.len() < POOL_KEEP {
                pool.push(buf);
            }
        }
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A non-blocking fd registered with the tokio reactor (pipe, fifo, pty master, eventfd,
/// inotify, pidfd). All operations are `&self`, so one `Arc<AsyncPipe>` can be read by one task
/// and written by another (the pty master is).
#[derive(Debug)]
pub(crate) struct AsyncPipe(AsyncFd<OwnedFd>);

impl AsyncPipe {
    /// Makes `fd` non-blocking and registers it. Must run inside a tokio runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_fd())?;
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open (and the same description)
        // until the AsyncFd is dropped; only `&OwnedFd` is ever handed out.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(AsyncPipe(registered))
    }

    /// Reads once, waiting for readiness. `EIO` (pty master whose slaves are all closed) reads
    /// as end of file, like containerd's console copy.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Waits until the fd is readable or hung up, without consuming anything (pidfds become
    /// readable when the process exits).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.0.readable().await.map(|_| ())
    }

    /// Writes the whole buffer, waiting for the reader to make room as needed.
    pub(crate) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Bytes queued in a pipe/fifo and not read yet (`FIONREAD`).
    pub(crate) fn unread_bytes(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, valid for the call.
        #[allow(unsafe_code)]
        let r = unsafe { libc::ioctl(self.0.get_ref().as_raw_fd(), libc::FIONREAD, &mut n) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub(crate) fn get_ref(&self) -> &OwnedFd {
        self.0.get_ref()
    }

    /// Copies everything readable from `self` into `sink` until end of file.
    ///
    /// A pooled buffer is taken only once data is ready and given back as soon as the source
    /// would block, so an idle copy holds no buffer.
    pub(crate) async fn copy_into(&self, sink: &Sink) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let mut guard = self.0.readable().await?;
            let mut buf = PooledBuf::get();
            loop {
                let read = guard.try_io(|fd| {
                    nix::unistd::read(fd.get_ref(), buf.as_mut()).map_err(io::Error::from)
                });
                match read {
                    Ok(Ok(0)) => return Ok(total),
                    Ok(Ok(n)) => {
                        sink.write_all(&buf.as_mut()[..n]).await?;
                        total += n as u64;
                    }
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(total),
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => break,
                }
            }
        }
    }
}

/// Where copied bytes go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// A pipe or pty master (non-blocking, waits for room).
    Pipe(std::sync::Arc<AsyncPipe>),
    /// An output fifo opened read-write (see [`open_output_fifo`]).
    Fifo(std::sync::Arc<AsyncPipe>),
    /// A regular file opened for append; shared when stdout and stderr name the same file.
    File(std::sync::Arc<File>),
    /// Drop the bytes (terminal without stdout).
    Discard,
}

impl Sink {
    /// After the last write: keep a fifo open until a reader has taken everything queued in it.
    ///
    /// The shim opens output fifos read-write so it never waits for containerd's reader; the
    /// price is that closing our (only) fd would throw away whatever the reader has not read
    /// yet — e.g. a short-lived process whose client attaches late. containerd instead waits
    /// in `open` for the reader before copying. Polling `FIONREAD` only runs in this
    /// after-exit state; `ProcessIo::close` (Delete) ends it.
    pub(crate) async fn linger_until_read(&self) {
        if let Sink::Fifo(p) = self {
            let mut delay = std::time::Duration::from_millis(20);
            while p.unread_bytes().is_ok_and(|n| n > 0) {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }

    pub(crate) async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Pipe(p) | Sink::Fifo(p) => p.write_all(buf).await,
            // Regular files never return EAGAIN; a short local write is the cost of not
            // using tokio::fs and its thread pool.
            Sink::File(f) => io::Write::write_all(&mut &**f, buf),
            Sink::Discard => Ok(()),
        }
    }
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// Duplicates `fd` to a number >= `min`, close-on-exec.
pub(crate) fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else owns it.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(owned)
}

/// Whether `path` exists and is a fifo.
pub(crate) fn is_fifo(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.file_type().is_fifo()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens an output fifo for writing without ever blocking.
///
/// containerd's shim opens the fifo `O_WRONLY` (waiting for containerd's reader) and then also
/// `O_RDONLY` itself, so its writes never hit `EPIPE` when the client goes away and data queue
/// in the pipe until someone reads (`pkg/process/io.go` `copyPipes`). One `O_RDWR` open gives
/// both ends at once and never waits for a reader: an absent reader can never stall the shim.
pub(crate) fn open_output_fifo(path: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the stdin fifo: a non-blocking reader for the copy, plus a writer the shim keeps so the
/// reader does not see end-of-file while the client reconnects; dropping the writer
/// (`CloseIO`) lets EOF through once the client has closed too. This is containerd's
/// `copyPipes` reader plus `Init.openStdin` writer.
pub(crate) fn open_stdin_fifo(path: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    if !is_fifo(path)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a fifo (stdin must be a fifo path)",
        ));
    }
    let reader = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // Succeeds without blocking because a reader (ours) now exists.
    let keeper = nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok((reader, keeper))
}

/// Opens an existing regular file for appending (`O_WRONLY|O_APPEND`, as containerd).
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// `pidfd_open(2)`: a handle on a child that cannot be confused with a recycled pid.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the result is checked before use.
    #[allow(unsafe_code)]
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = RawFd::try_from(raw).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // pidfd_open sets O_CLOEXEC itself. SAFETY: the syscall returned a new fd we own.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(owned)
}

/// `pidfd_send_signal(2)`.
pub(crate) fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    sig: nix::sys::signal::Signal,
) -> io::Result<()> {
    // SAFETY: plain syscall; a null siginfo is allowed and means "as kill(2)".
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
