//! Container stdio for `run`, `tasks start`, `tasks exec` and `tasks attach`, as containerd's
//! `cio` package does it: a fresh directory under the fifo root holding `<id>-stdin`,
//! `<id>-stdout` and `<id>-stderr` named pipes whose paths go to the shim, which opens the
//! other ends; we copy our stdin into one and the others to our stdout/stderr. With a
//! terminal only stdin and stdout exist and our terminal is put into raw mode. `--null-io`
//! and `--log-uri` send no fifos at all.
//!
//! We hold a write end of each output fifo ourselves until the process has exited, so a
//! read never sees end-of-file before the shim has opened its end.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// Where containerd's clients create fifo directories.
pub const DEFAULT_FIFO_DIR: &str = "/run/containerd/fifo";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to create fifo directory under {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create fifo {path}: {source}")]
    Mkfifo {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to open fifo {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("terminal: {0}")]
    Terminal(#[source] nix::Error),
}

/// The stdio paths handed to the daemon in Create/Exec requests.
#[derive(Debug, Default, Clone)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// How a process's stdio is wired.
pub enum Wiring {
    /// Fifos copied to and from our stdio.
    Fifos { terminal: bool, stdin: bool },
    /// No stdio.
    Null,
    /// The shim writes stdout and stderr to this URI (`file://…`, `binary://…`).
    LogUri(String),
}

/// Running stdio copies; dropping it removes the fifos.
pub struct Io {
    pub paths: Paths,
    dir: Option<PathBuf>,
    holders: Vec<pipe::Sender>,
    copies: Vec<JoinHandle<()>>,
    stdin_done: Option<tokio::sync::oneshot::Receiver<()>>,
    stdin_pipe: Option<pipe::Sender>,
}

fn mkfifo(path: &Path) -> Result<(), Error> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o700)).map_err(|source| Error::Mkfifo {
        path: path.to_path_buf(),
        source,
    })
}

fn open_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Open {
        path: path.to_path_buf(),
        source,
    }
}

impl Io {
    /// Creates the stdio for process `id` (container id or exec id) under `fifo_dir`.
    pub fn new(id: &str, mode: Wiring, fifo_dir: Option<&Path>) -> Result<Self, Error> {
        let (terminal, want_stdin) = match mode {
            Wiring::Null => {
                return Ok(Io {
                    paths: Paths::default(),
                    dir: None,
                    holders: Vec::new(),
                    copies: Vec::new(),
                    stdin_done: None,
                    stdin_pipe: None,
                })
            }
            Wiring::LogUri(uri) => {
                return Ok(Io {
                    paths: Paths {
                        stdout: uri.clone(),
                        stderr: uri,
                        ..Paths::default()
                    },
                    dir: None,
                    holders: Vec::new(),
                    copies: Vec::new(),
                    stdin_done: None,
                    stdin_pipe: None,
                })
            }
            Wiring::Fifos { terminal, stdin } => (terminal, stdin),
        };
        let root = fifo_dir.unwrap_or(Path::new(DEFAULT_FIFO_DIR));
        std::fs::create_dir_all(root).map_err(|source| Error::Dir {
            dir: root.to_path_buf(),
            source,
        })?;
        let dir = tempfile::Builder::new()
            .prefix("")
            .tempdir_in(root)
            .map_err(|source| Error::Dir {
                dir: root.to_path_buf(),
                source,
            })?
            .keep();
        let mut io = Io {
            paths: Paths {
                terminal,
                ..Paths::default()
            },
            dir: Some(dir.clone()),
            holders: Vec::new(),
            copies: Vec::new(),
            stdin_done: None,
            stdin_pipe: None,
        };
        let stdout = dir.join(format!("{id}-stdout"));
        mkfifo(&stdout)?;
        io.paths.stdout = stdout.display().to_string();
        io.copy_out(&stdout, false)?;
        if !terminal {
            let stderr = dir.join(format!("{id}-stderr"));
            mkfifo(&stderr)?;
            io.paths.stderr = stderr.display().to_string();
            io.copy_out(&stderr, true)?;
        }
        if want_stdin {
            let stdin = dir.join(format!("{id}-stdin"));
            mkfifo(&stdin)?;
            io.paths.stdin = stdin.display().to_string();
            io.copy_in(&stdin)?;
        }
        Ok(io)
    }

    fn copy_out(&mut self, path: &Path, to_stderr: bool) -> Result<(), Error> {
        let mut rx = pipe::OpenOptions::new()
            .open_receiver(path)
            .map_err(open_err(path))?;
        // Our own writer keeps the reader from seeing EOF before the shim has opened its end.
        let holder = pipe::OpenOptions::new()
            .open_sender(path)
            .map_err(open_err(path))?;
        self.holders.push(holder);
        self.copies.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            // Plain blocking writes: our stdout is a terminal, pipe or file that the user
            // reads; tokio's async stdio is not among the workspace's features.
            let mut out: Box<dyn std::io::Write + Send> = if to_stderr {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            };
            loop {
                match rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let _ = out.flush();
                    }
                }
            }
        }));
        Ok(())
    }

    /// Opens the stdin fifo now (read-write, so it never fails for want of a reader); the
    /// copying waits for [`Io::start_stdin`].
    fn copy_in(&mut self, path: &Path) -> Result<(), Error> {
        let tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)
            .map_err(open_err(path))?;
        self.stdin_pipe = Some(tx);
        Ok(())
    }

    /// Starts copying our stdin into the process's, once the shim holds the fifo's read
    /// end (after Tasks.Create / Exec): data written before that would be lost when we
    /// close our end. Our stdin is read on a plain thread (a blocking terminal read must
    /// never keep the runtime from shutting down); `stdin_done` fires at its EOF.
    pub fn start_stdin(&mut self) {
        let Some(tx) = self.stdin_pipe.take() else {
            return;
        };
        let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if chunk_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.stdin_done = Some(done_rx);
        self.copies.push(tokio::spawn(async move {
            let mut tx = tx;
            while let Some(chunk) = chunk_rx.recv().await {
                if tx.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            drop(tx);
            let _ = done_tx.send(());
        }));
    }

    /// Connects to the fifos of an existing process (`tasks attach`).
    pub fn attach(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<Self, Error> {
        let mut io = Io {
            paths: Paths {
                stdin: stdin.to_string(),
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
                terminal,
            },
            dir: None,
            holders: Vec::new(),
            copies: Vec::new(),
            stdin_done: None,
            stdin_pipe: None,
        };
        if !stdout.is_empty() {
            io.copy_out(Path::new(stdout), false)?;
        }
        if !stderr.is_empty() {
            io.copy_out(Path::new(stderr), true)?;
        }
        if !stdin.is_empty() {
            io.copy_in(Path::new(stdin))?;
        }
        Ok(io)
    }

    /// Detaches: stops copying but leaves the fifos for a later `tasks attach` (what ctr
    /// leaves behind with `-d`).
    pub fn keep(mut self) {
        self.dir = None;
    }

    /// Resolves when our stdin reached EOF (never, without stdin).
    pub fn take_stdin_done(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.stdin_done.take()
    }

    /// After the process exited: lets output copies finish (bounded), then cleans up.
    pub async fn finish(mut self) {
        self.holders.clear();
        for c in self.copies.drain(..) {
            let abort = c.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), c)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        for c in &self.copies {
            c.abort();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Removes the fifo directory a detached process's stdio lives in, once its task is
/// deleted (containerd's `cio.Load` + `Close` does this for `ctr tasks rm`). Only a
/// directory holding nothing but named pipes is removed, so a `--log-uri` file or any
/// other path is never touched.
pub fn remove_fifo_dir(paths: &[&str]) {
    use std::os::unix::fs::FileTypeExt;
    let Some(dir) = paths
        .iter()
        .filter(|p| p.starts_with('/'))
        .find_map(|p| Path::new(p).parent())
    else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let all_fifos = entries
        .filter_map(Result::ok)
        .all(|e| e.file_type().is_ok_and(|t| t.is_fifo()));
    if all_fifos {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Our terminal in raw mode; restored on drop.
pub struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    pub fn enable() -> Result<Self, Error> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).map_err(Error::Terminal)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(Error::Terminal)?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Whether our stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false)
}

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// (width, height) of our terminal.
pub fn terminal_size() -> Option<(u32, u32)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let fd = std::io::stdout().as_raw_fd();
    #[allow(unsafe_code)]
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`; an
    // invalid fd only makes the call fail.
    let r = unsafe { tiocgwinsz(fd, &raw mut ws) };
    match r {
        Ok(_) if ws.ws_col > 0 => Some((u32::from(ws.ws_col), u32::from(ws.ws_row))),
        _ => None,
    }
}
