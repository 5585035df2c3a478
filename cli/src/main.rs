//! `berth`: the command-line client for berthd, with containerd `ctr`'s command tree, flags
//! and output formats, so scripts written for `ctr` work unchanged. Because berthd speaks
//! containerd's gRPC API, `berth` also drives a real containerd.
//!
//! Code map:
//! - `client.rs`: the unix-socket gRPC channel, namespace/lease headers, service clients.
//! - `commands/`: one module per top-level command (`images`, `run`, `tasks`, …), each a
//!   clap `Args`/`Subcommand` type plus its handler; handlers print what ctr prints.
//! - `image/`: client-side image work ctr does itself: archive import/export, unpack
//!   (Snapshots.Prepare → Diff.Apply → Snapshots.Commit per layer), manifest walking,
//!   registry pull/push (`registry.rs`), content and lease helpers (`store.rs`).
//! - `spec.rs`: the default OCI runtime spec (containerd `oci.populateDefaultUnixSpec`).
//! - `cio.rs`: container stdio over fifos (containerd `cio`), pty handling.
//! - `rootfs.rs`: temporary read-only rootfs mounts for user/group lookups.
//! - `tabwriter.rs`, `gojson.rs`, `util.rs`: ctr-compatible tables, JSON and values.
//!
//! Errors print as `berth: <message>` on stderr with exit status 1; `run`, `tasks start`,
//! `tasks exec` and `tasks attach` exit with the container process's status instead.
//! One current-thread tokio runtime runs each command; the process exits when the command
//! returns (blocking stdin readers are plain threads and do not hold it up).

mod cio;
mod client;
mod commands;
mod gojson;
mod image;
mod rootfs;
mod spec;
mod tabwriter;
mod util;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Default daemon socket (berthd's; pass `-a /run/containerd/containerd.sock` for containerd).
pub const DEFAULT_ADDRESS: &str = "/run/berth/berth.sock";

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    // Go's flag package lets a later flag win over an earlier one; scripts rely on it.
    args_override_self = true,
    about = "berth CLI: containerd's ctr command tree for berthd (and containerd)"
)]
struct Cli {
    /// Enable debug output in logs.
    #[arg(long)]
    debug: bool,
    /// Address for the daemon's gRPC server.
    #[arg(short, long, env = "CONTAINERD_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Total timeout for berth commands (Go duration, e.g. 30s).
    #[arg(long, value_parser = util::parse_duration)]
    timeout: Option<Duration>,
    /// Timeout for connecting to the daemon (Go duration).
    #[arg(long, value_parser = util::parse_duration)]
    connect_timeout: Option<Duration>,
    /// Namespace to use with commands.
    #[arg(short, long, env = "CONTAINERD_NAMESPACE", default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provides information about daemon plugins.
    #[command(alias = "plugin", subcommand)]
    Plugins(commands::plugins::Cmd),
    /// Print the client and server versions.
    Version,
    /// Manage containers.
    #[command(aliases = ["c", "container"], subcommand)]
    Containers(commands::containers::Cmd),
    /// Manage content.
    #[command(subcommand)]
    Content(commands::content::Cmd),
    /// Display daemon events.
    #[command(aliases = ["event"])]
    Events(commands::events::Args),
    /// Manage images.
    #[command(aliases = ["image", "i"], subcommand)]
    Images(commands::images::Cmd),
    /// Manage leases.
    #[command(subcommand)]
    Leases(commands::leases::Cmd),
    /// Manage namespaces.
    #[command(aliases = ["namespace", "ns"], subcommand)]
    Namespaces(commands::namespaces::Cmd),
    /// OCI tools (`oci spec`: the default runtime spec).
    #[command(subcommand)]
    Oci(commands::oci::Cmd),
    /// Run a container.
    Run(Box<commands::run::Args>),
    /// Manage snapshots.
    #[command(aliases = ["snapshot"])]
    Snapshots(commands::snapshots::Cmd),
    /// Manage tasks.
    #[command(aliases = ["t", "task"], subcommand)]
    Tasks(commands::tasks::Cmd),
}

/// Global options every command sees. Like ctr's, they go before the command name
/// (`berth -n k8s.io images ls`), so subcommands are free to reuse their letters
/// (`tasks kill -a`).
pub struct Globals {
    pub address: String,
    pub namespace: String,
    pub connect_timeout: Duration,
}

impl Globals {
    /// Connects to the daemon (each command connects only when it needs to).
    pub async fn connect(&self) -> Result<client::Client, client::Error> {
        client::Client::connect(&self.address, &self.namespace, self.connect_timeout).await
    }
}

/// Any command's failure; each wraps the command module's own error enum.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Plugins(#[from] commands::plugins::Error),
    #[error(transparent)]
    Version(#[from] commands::version::Error),
    #[error(transparent)]
    Containers(#[from] commands::containers::Error),
    #[error(transparent)]
    Content(#[from] commands::content::Error),
    #[error(transparent)]
    Events(#[from] commands::events::Error),
    #[error(transparent)]
    Images(#[from] commands::images::Error),
    #[error(transparent)]
    Leases(#[from] commands::leases::Error),
    #[error(transparent)]
    Namespaces(#[from] commands::namespaces::Error),
    #[error(transparent)]
    Oci(#[from] commands::oci::Error),
    #[error(transparent)]
    Run(#[from] commands::run::Error),
    #[error(transparent)]
    Snapshots(#[from] commands::snapshots::Error),
    #[error(transparent)]
    Tasks(#[from] commands::tasks::Error),
    #[error("timeout: command did not finish within {0:?}")]
    Timeout(Duration),
}

/// Runs the command; `Ok(code)` is the process exit status.
async fn dispatch(cmd: Command, g: &Globals) -> Result<i32, Error> {
    Ok(match cmd {
        Command::Plugins(c) => commands::plugins::run(c, g).await.map(|()| 0)?,
        Command::Version => commands::version::run(g).await.map(|()| 0)?,
        Command::Containers(c) => commands::containers::run(c, g).await.map(|()| 0)?,
        Command::Content(c) => commands::content::run(c, g).await.map(|()| 0)?,
        Command::Events(a) => commands::events::run(a, g).await.map(|()| 0)?,
        Command::Images(c) => commands::images::run(c, g).await.map(|()| 0)?,
        Command::Leases(c) => commands::leases::run(c, g).await.map(|()| 0)?,
        Command::Namespaces(c) => commands::namespaces::run(c, g).await.map(|()| 0)?,
        Command::Oci(c) => commands::oci::run(&c, g).map(|()| 0)?,
        Command::Run(a) => commands::run::run(*a, g).await?,
        Command::Snapshots(c) => commands::snapshots::run(c, g).await.map(|()| 0)?,
        Command::Tasks(c) => commands::tasks::run(c, g).await?,
    })
}

/// Logs go to stderr through slog; the modules use the `log` macros, bridged here. Only
/// warnings show unless `--debug` is given (ctr's logrus default is info, but ctr logs
/// nothing at info level in the commands berth has).
fn logger(debug: bool) -> slog::Logger {
    use slog::Drain;
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let level = if debug {
        slog::Level::Debug
    } else {
        slog::Level::Warning
    };
    slog::Logger::root(slog::LevelFilter::new(drain, level).fuse(), slog::o!())
}

/// Rust starts with SIGPIPE ignored, so `berth images ls | head -1` would panic on the
/// next write; like ctr (Go kills a process whose stdout pipe is gone) we die quietly.
#[allow(unsafe_code)]
fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL installs
    // no handler code, so no async-signal-safety rules apply.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    let log = logger(cli.debug);
    let _scope = slog_scope::set_global_logger(log);
    let _ = slog_stdlog::init_with_level(if cli.debug {
        log::Level::Debug
    } else {
        log::Level::Warn
    });
    let globals = Globals {
        address: cli.address,
        namespace: cli.namespace,
        connect_timeout: cli.connect_timeout.unwrap_or(Duration::ZERO),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let fut = dispatch(cli.command, &globals);
        match cli.timeout.filter(|t| !t.is_zero()) {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .unwrap_or(Err(Error::Timeout(t))),
            None => fut.await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}
