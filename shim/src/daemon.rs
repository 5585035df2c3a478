//! The long-running shim: one current-thread tokio runtime serving ttrpc until shutdown.
//!
//! Startup: become subreaper, point stderr at the bundle's `log` fifo (non-blocking), take the
//! listening socket from fd 3 (or bind `-socket`), register the task service under both
//! `containerd.task.v3.Task` (containerd 2.x) and `containerd.task.v2.Task` (1.6/1.7) — the
//! two protos are byte-identical apart from the package name — and serve.
//!
//! Shutdown (Shutdown RPC with no containers left, or SIGTERM/SIGINT): stop the ttrpc server,
//! remove the socket named in the bundle's `address` file, give queued events up to 5 s to
//! drain (containerd's shim waits as long for its publisher), exit.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::shim_async::create_task;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use ttrpc::r#async::transport::Listener;
use ttrpc::r#async::Server;

use crate::args::Flags;
use crate::publisher::{Publisher, PublisherConfig};
use crate::reaper::{set_subreaper, Reaper};
use crate::service::Service;

const TASK_V3: &str = "containerd.task.v3.Task";
const TASK_V2: &str = "containerd.task.v2.Task";

/// Errors that stop the shim from serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("shim namespace cannot be empty (pass -namespace)")]
    NoNamespace,
    #[error(transparent)]
    Reaper(#[from] crate::reaper::ReaperError),
    #[error("building the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("fd 3 is not the listening socket `start` should have passed: {0}")]
    NoListener(String),
    #[error("binding {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ttrpc server: {0}")]
    Server(#[source] ttrpc::Error),
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Opens the bundle's `log` fifo and makes it our stderr (containerd's `openLog`).
fn redirect_stderr_to_log_fifo() {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let path = std::path::Path::new("log");
    let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    if !is_fifo {
        return;
    }
    // O_WRONLY|O_NONBLOCK fails with ENXIO when containerd is not reading (it normally opens
    // the read side before running `start`); then keep a read end ourselves so writes never
    // fail and the fifo still carries logs once containerd reconnects.
    let fd = open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .or_else(|_| {
        open(
            path,
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    });
    if let Ok(fd) = fd {
        // fd is O_CLOEXEC; the dup on fd 2 is not, which is fine: every child gets explicit
        // stdio, so fd 2 is always replaced before exec.
        let _ = nix::unistd::dup2_stderr(&fd);
    }
    crate::logger::set_stderr_nonblocking();
}

/// Takes ownership of the listener `start` passed as fd 3.
#[allow(unsafe_code)]
fn inherited_listener() -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let st = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(3) })
        .map_err(|e| DaemonError::NoListener(e.to_string()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(DaemonError::NoListener(format!(
            "mode {:o} is not a socket",
            st.st_mode
        )));
    }
    // SAFETY: fd 3 was just checked to be an open socket; `start` passed it to us for
    // exclusive ownership and nothing else in this process refers to fd 3.
    let owned = unsafe { OwnedFd::from_raw_fd(3) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Ok(std::os::unix::net::UnixListener::from(owned))
}

/// Runs the shim daemon until shutdown.
pub fn serve(flags: &Flags) -> Result<(), DaemonError> {
    if flags.namespace.is_empty() {
        return Err(DaemonError::NoNamespace);
    }
    redirect_stderr_to_log_fifo();
    let logger = crate::logger::init(flags.debug, &flags.namespace, &flags.id);
    set_subreaper()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = rt.block_on(run(flags));
    if let Err(e) = &result {
        slog::error!(logger, "shim exiting: {e}");
    }
    result
}

async fn run(flags: &Flags) -> Result<(), DaemonError> {
    // Read now: by the time we shut down, containerd may already have removed the bundle.
    let address = std::fs::read_to_string("address").ok();
    let listener = if flags.socket.is_empty() {
        inherited_listener()?
    } else {
        let path = flags.socket.trim_start_matches("unix://").to_string();
        std::os::unix::net::UnixListener::bind(&path)
            .map_err(|source| DaemonError::Bind { path, source })?
    };
    let listener =
        Listener::try_from(listener).map_err(|e| DaemonError::NoListener(e.to_string()))?;

    let reaper = Reaper::global();
    let exits = reaper.take_unsubscribed();
    tokio::spawn(async move {
        if let Err(e) = reaper.run().await {
            log::error!("reaper stopped: {e}");
        }
    });

    let (publisher, drain) = Publisher::new(PublisherConfig {
        namespace: flags.namespace.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        grpc_address: if flags.address.is_empty() {
            std::env::var("GRPC_ADDRESS").unwrap_or_default()
        } else {
            flags.address.clone()
        },
        publish_binary: flags.publish_binary.clone(),
    });
    tokio::spawn(drain);

    let shutdown = Arc::new(Notify::new());
    let (service, ooms) = Service::new(&flags.namespace, publisher.clone(), shutdown.clone());
    tokio::spawn(service.clone().handle_exits(exits));
    tokio::spawn(service.clone().handle_ooms(ooms));

    let v3 = create_task(Arc::new(service.clone()));
    let mut v2 = create_task(Arc::new(service.clone()));
    if let Some(svc) = v2.remove(TASK_V3) {
        v2.insert(TASK_V2.to_string(), svc);
    }
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(v3)
        .register_service(v2);
    server.start().await.map_err(DaemonError::Server)?;
    log::info!("serving task API v2 and v3 (pid {})", std::process::id());

    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    tokio::select! {
        () = shutdown.notified() => {}
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        _ = int.recv() => log::info!("SIGINT: shutting down"),
    }
    // Unlink the socket first: a `start` for a new task of the same id (delete then create,
    // as the restart monitor does) must not find this exiting shim listening and reuse it.
    if let Some(address) = &address {
        crate::manager::remove_socket(address.trim());
    }
    // Answer the Shutdown call before the connection goes away.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if !flags.socket.is_empty() {
        let _ = std::fs::remove_file(flags.socket.trim_start_matches("unix://"));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    if !publisher.flush(Duration::from_secs(5)).await {
        log::warn!("events still queued at shutdown were dropped");
    }
    Ok(())
}
