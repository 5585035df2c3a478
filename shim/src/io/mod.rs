//! Container stdio: fifos, `file://` and `binary://` log URIs, null IO, pty via console socket.
//!
//! Why it exists: containerd hands the shim three strings per process (stdin, stdout, stderr)
//! and a terminal flag; the shim must turn them into the fds runc's child inherits and keep
//! bytes flowing between those fds and containerd's fifos (or a log file, or a logging binary)
//! for the life of the process — without ever letting a slow or absent reader stall the shim,
//! and without leaking a single fd. This mirrors containerd's `pkg/process/io.go`
//! (`createIO`, `copyPipes`, `NewBinaryIO`) and `runtime/v2/runc/platform.go` (`CopyConsole`).
//!
//! What lives here:
//! - [`uri`]: parsing the stdio strings ([`StdioSpec`] → [`Destination`]).
//! - [`ProcessIo`]: the per-process IO object the core creates, hands to runc, waits on and closes.
//! - [`console`]: the console socket that receives the pty master from runc, and resizing.
//! - `logger`: the `binary://` logging-binary protocol.
//! - `fd`: non-blocking fds on the tokio reactor, fifo opening, the copy-buffer pool.
//!
//! Runtime constraints: everything runs on the shim's single current-thread tokio runtime.
//! No `tokio::fs`/`tokio::process` (thread pool), no helper threads: fifos, pipes and the pty
//! master are non-blocking fds in `AsyncFd`; copy tasks are plain `tokio::spawn`ed futures that
//! borrow a 32 KiB buffer from a small pool only while data is flowing.
//!
//! How the core uses it (non-terminal):
//! ```ignore
//! let pio = ProcessIo::create(&spec, &opts).await?;          // opens fifos/files, starts logger
//! let fds = pio.take_runc_stdio();                             // give to `runc create` as 0/1/2
//! runc_create(.., fds).await?; /* drop `fds` once runc is spawned */
//! // ... process exits ...
//! pio.wait(Duration::from_secs(2)).await;                      // let output drain (bounded)
//! pio.close().await;                                           // on Delete
//! ```
//! Terminal: `let sock = ConsoleSocket::new()?`, run runc with `--console-socket sock.path()`,
//! then `ProcessIo::with_console(sock.receive_master().await?, &spec, &opts).await?`;
//! `resize()` for ResizePty; `close_stdin()` for CloseIO.

pub mod console;
pub(crate) mod fd;
mod logger;
pub mod uri;

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use console::{get_winsize, set_winsize, ConsoleSocket, WinSize};
pub use logger::LOGGER_TERM_TIMEOUT;
pub use uri::{parse_destination, Destination, LoggerSpec, StdioSpec};

use fd::{AsyncPipe, Sink};

/// Errors of the io module. Every variant names the path or URI at fault.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("invalid stdio URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error(
        "unknown stdio scheme {scheme:?} in {uri:?}: use a fifo path, file:///path, \
         binary:///path or binary-v2:///path"
    )]
    UnknownScheme { uri: String, scheme: String },
    #[error("open stdin fifo {path}: {source}")]
    OpenStdin { path: PathBuf, source: io::Error },
    #[error("open output {path}: {source}")]
    OpenOutput { path: PathBuf, source: io::Error },
    #[error("create log file {path}: {source}")]
    CreateLogFile { path: PathBuf, source: io::Error },
    #[error("create {stream} pipe: {source}")]
    Pipe {
        stream: &'static str,
        source: io::Error,
    },
    #[error("chown {stream} pipe to {uid}:{gid} (IoUid/IoGid): {source}")]
    Chown {
        stream: &'static str,
        uid: u32,
        gid: u32,
        source: io::Error,
    },
    #[error("start logging binary {path}: {source}")]
    LoggerSpawn { path: PathBuf, source: io::Error },
    #[error("logging binary {path} is not ready: {reason}")]
    LoggerNotReady { path: PathBuf, reason: String },
    #[error("console socket {path}: {source}")]
    ConsoleSocket { path: PathBuf, source: io::Error },
    #[error("receive pty master on console socket {path}: {reason}")]
    ReceiveMaster { path: PathBuf, reason: String },
    #[error("register pty master with the event loop: {0}")]
    Console(io::Error),
    #[error("process has no terminal (created without terminal: true), cannot resize")]
    NoTerminal,
    #[error("resize pty: {0}")]
    Resize(io::Error),
}

impl IoError {
    /// True when the caller sent bad stdio (containerd answers `InvalidArgument`); other
    /// errors are the host's fault (`Internal`/`Unknown`).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            IoError::InvalidUri { .. } | IoError::UnknownScheme { .. }
        )
    }
}

/// Per-shim settings that shape a process's IO.
#[derive(Clone, Debug, Default)]
pub struct IoOptions {
    /// Container id (`CONTAINER_ID` of a logging binary).
    pub id: String,
    /// containerd namespace (`CONTAINER_NAMESPACE` of a logging binary).
    pub namespace: String,
    /// runc `Options.IoUid`/`IoGid`: owner of the runc-side pipe ends, so a container running
    /// as that user (e.g. in a user namespace) can reopen `/proc/self/fd/N`. `None` keeps root.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The fds runc's child gets as stdin/stdout/stderr. `None` means "inherit /dev/null".
/// All are close-on-exec; the spawner dup2s them to 0/1/2. Drop them right after runc was
/// spawned: as long as the shim holds a write end, the output copy never sees end-of-file.
#[derive(Debug, Default)]
pub struct RuncStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The IO of one process (init or exec). Cheap to share behind an `Arc`: all methods take
/// `&self`. Dropping it aborts the copies; call [`ProcessIo::close`] for an orderly end.
#[derive(Debug)]
pub struct ProcessIo {
    runc: Mutex<Option<RuncStdio>>,
    /// Our writer on the stdin fifo; dropping it is CloseIO.
    stdin_keeper: Mutex<Option<OwnedFd>>,
    /// The pty master, for resize; shared with the console copy tasks.
    console: Arc<Mutex<Option<Arc<AsyncPipe>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Number of output copies still running.
    pending: watch::Receiver<usize>,
    logger: Mutex<Option<logger::Logger>>,
}

/// Decrements the pending-output count when an output copy ends (or is aborted).
struct CopyDone(Arc<watch::Sender<usize>>);

impl Drop for CopyDone {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ProcessIo {
    /// Sets up IO for a process without a terminal: pipes for runc plus copies to the fifos or
    /// file, or a started-and-ready logging binary. Must run inside the tokio runtime.
    /// Fails without leaving anything open (fds close on drop, a started logger is killed).
    pub async fn create(spec: &StdioSpec, opts: &IoOptions) -> Result<ProcessIo, IoError> {
        let dest = parse_destination(spec)?;
        let mut b = Builder::default();
        let mut runc = RuncStdio::default();
        match dest {
            Destination::Null => {
                runc.stdin = Some(open_dev_null("stdin")?);
                runc.stdout = Some(open_dev_null("stdout")?);
                runc.stderr = Some(open_dev_null("stderr")?);
            }
            Destination::Binary(l) => {
                let spawned = logger::spawn(&l, &opts.id, &opts.namespace).await?;
                b.logger = Some(spawned.logger);
                runc.stdout = Some(spawned.stdout_w);
                runc.stderr = Some(spawned.stderr_w);
            }
            Destination::File(path) => {
                let file = Arc::new(create_log_file(&path)?);
                for (stream, wanted, slot) in [
                    ("stdout", !spec.stdout.is_empty(), &mut runc.stdout),
                    ("stderr", !spec.stderr.is_empty(), &mut runc.stderr),
                ] {
                    if wanted {
                        *slot = Some(b.output(stream, Sink::File(file.clone()))?);
                    }
                }
            }
            Destination::Fifo { stdout, stderr } => {
                let mut shared_file: Option<(PathBuf, Arc<std::fs::File>)> = None;
                for (stream, path, slot) in [
                    ("stdout", stdout, &mut runc.stdout),
                    ("stderr", stderr, &mut runc.stderr),
                ] {
                    let Some(path) = path else { continue };
                    let sink = match &shared_file {
                        Some((p, f)) if *p == path => Sink::File(f.clone()),
                        _ => open_output(&path)?,
                    };
                    if let Sink::File(f) = &sink {
                        shared_file = Some((path.clone(), f.clone()));
                    }
                    *slot = Some(b.output(stream, sink)?);
                }
            }
        }
        // binary:// has no stdin, as containerd's binaryIO.
        if !spec.stdin.is_empty() && b.logger.is_none() {
            let pipe_err = |source| IoError::Pipe {
                stream: "stdin",
                source,
            };
            let (r, w) = fd::pipe().map_err(pipe_err)?;
            let w = AsyncPipe::new(w).map_err(pipe_err)?;
            b.stdin(Path::new(&spec.stdin), Sink::Pipe(Arc::new(w)), None)?;
            runc.stdin = Some(r);
        }
        if (opts.uid.is_some() || opts.gid.is_some()) && !spec.is_null() {
            chown_runc_side(&runc, opts)?;
        }
        Ok(b.finish(runc))
    }

    /// Sets up IO for a process with a terminal, given the pty master runc sent on the console
    /// socket: stdin fifo → master, master → stdout (fifo, file or logging binary).
    pub async fn with_console(
        master: OwnedFd,
        spec: &StdioSpec,
        opts: &IoOptions,
    ) -> Result<ProcessIo, IoError> {
        let master = Arc::new(AsyncPipe::new(master).map_err(IoError::Console)?);
        let mut b = Builder::default();
        let sink = match parse_destination(spec)? {
            Destination::Null => Sink::Discard,
            Destination::Fifo { stdout: None, .. } => Sink::Discard,
            Destination::Fifo {
                stdout: Some(p), ..
            } => open_output(&p)?,
            Destination::File(p) => Sink::File(Arc::new(create_log_file(&p)?)),
            Destination::Binary(l) => {
                let spawned = logger::spawn(&l, &opts.id, &opts.namespace).await?;
                b.logger = Some(spawned.logger);
                // A terminal merges stderr into stdout; the logger's fd 4 just sees EOF.
                drop(spawned.stderr_w);
                let w = AsyncPipe::new(spawned.stdout_w).map_err(|source| IoError::Pipe {
                    stream: "stdout",
                    source,
                })?;
                Sink::Pipe(Arc::new(w))
            }
        };
        let console = Arc::new(Mutex::new(Some(master.clone())));
        let shutdown = Arc::new(Notify::new());
        b.console_output(master.clone(), sink, shutdown.clone());
        if !spec.stdin.is_empty() {
            b.stdin(
                Path::new(&spec.stdin),
                Sink::Pipe(master),
                Some((console.clone(), shutdown)),
            )?;
        }
        let mut pio = b.finish(RuncStdio::default());
        pio.console = console;
        Ok(pio)
    }

    /// The fds to hand to runc as its stdio (once; later calls return empty).
    pub fn take_runc_stdio(&self) -> RuncStdio {
        lock(&self.runc).take().unwrap_or_default()
    }

    /// Waits until every output copy reached end-of-file (the process and everything holding
    /// its stdout/stderr exited), at most `timeout`. True when all output was copied.
    /// containerd waits 2 s (1.6) / 10 s (2.x) for this on Delete.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.pending.clone();
        let done = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await;
        matches!(done, Ok(Ok(_)))
    }

    /// CloseIO: drop the shim's writer on the stdin fifo, so the process sees end-of-file once
    /// the client has closed its end too and everything written so far was copied.
    pub fn close_stdin(&self) {
        drop(lock(&self.stdin_keeper).take());
    }

    /// ResizePty.
    pub fn resize(&self, size: WinSize) -> Result<(), IoError> {
        let guard = lock(&self.console);
        let master = guard.as_ref().ok_or(IoError::NoTerminal)?;
        set_winsize(master.get_ref().as_fd(), size).map_err(IoError::Resize)
    }

    /// Whether this process has a terminal (still open).
    pub fn has_console(&self) -> bool {
        lock(&self.console).is_some()
    }

    /// Pid of the logging binary, if any (so the core's reaper can ignore its exit).
    pub fn logger_pid(&self) -> Option<i32> {
        lock(&self.logger).as_ref().map(logger::Logger::pid)
    }

    /// Delete: stop all copies, close every fd, SIGTERM the logging binary (SIGKILL after
    /// [`LOGGER_TERM_TIMEOUT`]). Call [`ProcessIo::wait`] first to let output drain.
    pub async fn close(&self) {
        drop(lock(&self.runc).take());
        drop(lock(&self.stdin_keeper).take());
        drop(lock(&self.console).take());
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let logger = lock(&self.logger).take();
        if let Some(l) = logger {
            l.terminate(LOGGER_TERM_TIMEOUT).await;
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        for t in lock(&self.tasks).iter() {
            t.abort();
        }
        if let Some(l) = lock(&self.logger).take() {
            l.kill_now();
        }
    }
}

/// Collects copy tasks while a [`ProcessIo`] is being set up; dropping it (on error) aborts them.
struct Builder {
    tasks: Vec<JoinHandle<()>>,
    pending: Arc<watch::Sender<usize>>,
    keeper: Option<OwnedFd>,
    logger: Option<logger::Logger>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            tasks: Vec::new(),
            pending: Arc::new(watch::channel(0).0),
            keeper: None,
            logger: None,
        }
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(l) = self.logger.take() {
            l.kill_now();
        }
    }
}

type ConsoleSlot = Arc<Mutex<Option<Arc<AsyncPipe>>>>;

impl Builder {
    fn done_guard(&self) -> CopyDone {
        self.pending.send_modify(|n| *n += 1);
        CopyDone(self.pending.clone())
    }

    /// A pipe for runc's `stream`, copied into `sink`; returns runc's write end.
    fn output(&mut self, stream: &'static str, sink: Sink) -> Result<OwnedFd, IoError> {
        let (r, w) = fd::pipe().map_err(|source| IoError::Pipe { stream, source })?;
        let r = AsyncPipe::new(r).map_err(|source| IoError::Pipe { stream, source })?;
        let done = self.done_guard();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = r.copy_into(&sink).await {
                log::warn!("copy {stream}: {e}");
            }
            drop((r, done));
            sink.linger_until_read().await;
        }));
        Ok(w)
    }

    fn console_output(&mut self, master: Arc<AsyncPipe>, sink: Sink, shutdown: Arc<Notify>) {
        let done = self.done_guard();
        self.tasks.push(tokio::spawn(async move {
            tokio::select! {
                r = master.copy_into(&sink) => {
                    if let Err(e) = r {
                        log::warn!("copy console output: {e}");
                    }
                }
                () = shutdown.notified() => {}
            }
            drop((master, done));
            sink.linger_until_read().await;
        }));
    }

    /// Opens the stdin fifo and copies it into `sink` until EOF. With a console, EOF hangs the
    /// console up, as containerd's `CopyConsole` does (`epollConsole.Shutdown` + `Close`).
    fn stdin(
        &mut self,
        path: &Path,
        sink: Sink,
        console: Option<(ConsoleSlot, Arc<Notify>)>,
    ) -> Result<(), IoError> {
        let (reader, keeper) = fd::open_stdin_fifo(path).map_err(|source| IoError::OpenStdin {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = AsyncPipe::new(reader).map_err(|source| IoError::OpenStdin {
            path: path.to_path_buf(),
            source,
        })?;
        self.keeper = Some(keeper);
        self.tasks.push(tokio::spawn(async move {
            match reader.copy_into(&sink).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => log::warn!("copy stdin: {e}"),
            }
            drop((reader, sink));
            if let Some((slot, shutdown)) = console {
                drop(lock(&slot).take());
                shutdown.notify_one();
            }
        }));
        Ok(())
    }

    fn finish(mut self, runc: RuncStdio) -> ProcessIo {
        ProcessIo {
            runc: Mutex::new(Some(runc)),
            stdin_keeper: Mutex::new(self.keeper.take()),
            console: Arc::new(Mutex::new(None)),
            tasks: Mutex::new(std::mem::take(&mut self.tasks)),
            pending: self.pending.subscribe(),
            logger: Mutex::new(self.logger.take()),
        }
    }
}

fn open_dev_null(stream: &'static str) -> Result<OwnedFd, IoError> {
    nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| IoError::Pipe {
        stream,
        source: e.into(),
    })
}

/// An output path from a fifo-style spec: a fifo is opened read-write non-blocking; anything
/// else must be an existing file and is appended to (containerd's `copyPipes`).
fn open_output(path: &Path) -> Result<Sink, IoError> {
    let err = |source| IoError::OpenOutput {
        path: path.to_path_buf(),
        source,
    };
    if fd::is_fifo(path).map_err(err)? {
        let fifo = fd::open_output_fifo(path).map_err(err)?;
        Ok(Sink::Fifo(Arc::new(AsyncPipe::new(fifo).map_err(err)?)))
    } else {
        Ok(Sink::File(Arc::new(fd::open_append(path).map_err(err)?)))
    }
}

/// `file://`: parents created 0755, file created 0644 and opened for append, as containerd.
fn create_log_file(path: &Path) -> Result<std::fs::File, IoError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |source| IoError::CreateLogFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(err)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(err)
}

/// go-runc `NewPipeIO`: the runc-side ends belong to IoUid/IoGid.
fn chown_runc_side(runc: &RuncStdio, opts: &IoOptions) -> Result<(), IoError> {
    for (stream, fd) in [
        ("stdin", &runc.stdin),
        ("stdout", &runc.stdout),
        ("stderr", &runc.stderr),
    ] {
        if let Some(fd) = fd {
            nix::unistd::fchown(
                fd.as_fd(),
                opts.uid.map(Uid::from_raw),
                opts.gid.map(Gid::from_raw),
            )
            .map_err(|e| IoError::Chown {
                stream,
                uid: opts.uid.unwrap_or(0),
                gid: opts.gid.unwrap_or(0),
                source: e.into(),
            })?;
        }
    }
    Ok(())
}
