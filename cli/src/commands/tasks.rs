//! `berth tasks …` (ctr's `tasks`): ls, start, exec, ps, pause, resume, kill, rm, attach,
//! metrics; and [`drive`], the foreground loop `run`, `tasks start`, `tasks exec` and
//! `tasks attach` share: start, resize the pty / forward signals, close stdin at EOF, wait,
//! drain output.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Subcommand;
use nix::sys::signal::Signal;
use protos::services::snapshots::v1::MountsRequest;
use protos::services::tasks::v1::{
    CloseIoRequest, CreateTaskRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest,
    GetRequest, KillRequest, ListPidsRequest, ListTasksRequest, MetricsRequest, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, WaitRequest,
};

use crate::cio::{self, Io, Wiring};
use crate::tabwriter::TabWriter;
use crate::{client, Globals};

/// The `Any` type URL of an OCI runtime-spec `Process` (exec).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Io(#[from] cio::Error),
    #[error(transparent)]
    Containers(#[from] super::containers::Error),
    #[error("exec-id must be provided")]
    NoExecId,
    #[error("invalid signal {0:?}: expected a name (SIGKILL, KILL) or a number")]
    Signal(String),
    #[error("specify an exec-id or all; not both")]
    AllAndExec,
    #[error("tty and null-io cannot be used together")]
    TtyNullIo,
    #[error("can't use log-uri with tty")]
    TtyLogUri,
    #[error("container {0:?} has no spec")]
    NoSpec(String),
    #[error("invalid spec of container {id}: {source}")]
    BadSpec {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("write pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no metrics for task {0}")]
    NoMetrics(String),
    #[error("cannot convert metric data of type {0} (only cgroup v1 metrics are decoded)")]
    MetricsType(String),
    #[error("format must be table or json, not {0:?}")]
    Format(String),
    #[error("unable to delete {id}: {}", .status.message())]
    Delete { id: String, status: tonic::Status },
}

/// Stdio flags shared by `tasks start`, `tasks exec` and `run`.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct IoFlags {
    /// Send all IO to /dev/null.
    #[arg(long)]
    pub null_io: bool,
    /// Log URI for the process's stdout/stderr (file://…, binary://…).
    #[arg(long)]
    pub log_uri: Option<String>,
    /// Directory for the stdio fifos.
    #[arg(long)]
    pub fifo_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Attach to the IO of a running container.
    Attach { id: String },
    /// Delete one or more tasks.
    #[command(aliases = ["del", "remove", "rm"])]
    Delete {
        /// Force delete the task process.
        #[arg(short, long)]
        force: bool,
        /// Process id (exec id) to delete.
        #[arg(long)]
        exec_id: Option<String>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Execute an additional process in a running container.
    Exec {
        /// Working directory of the new process.
        #[arg(long)]
        cwd: Option<String>,
        /// Allocate a TTY.
        #[arg(short, long)]
        tty: bool,
        /// Detach from the process after it starts.
        #[arg(short, long)]
        detach: bool,
        /// Exec-specific id for the process.
        #[arg(long)]
        exec_id: String,
        /// Directory for the stdio fifos.
        #[arg(long)]
        fifo_dir: Option<PathBuf>,
        /// Log URI for stdout/stderr.
        #[arg(long)]
        log_uri: Option<String>,
        /// User id or name.
        #[arg(long)]
        user: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// List tasks.
    #[command(alias = "ls")]
    List {
        /// Print only the task id.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Signal a container (default: its stop signal, SIGTERM).
    Kill {
        /// Signal to send (name or number).
        #[arg(short, long)]
        signal: Option<String>,
        /// Process id (exec id) to kill.
        #[arg(long)]
        exec_id: Option<String>,
        /// Send the signal to all processes inside the container.
        #[arg(short, long)]
        all: bool,
        id: String,
    },
    /// Get a single data point of metrics for a task.
    #[command(alias = "metric")]
    Metrics {
        /// "table" or "json".
        #[arg(long, default_value = "table")]
        format: String,
        id: String,
    },
    /// Pause an existing container.
    Pause { id: String },
    /// List processes of a container.
    Ps { id: String },
    /// Resume a paused container.
    Resume { id: String },
    /// Start a container that has been created.
    Start {
        #[command(flatten)]
        io: IoFlags,
        /// File path to write the task's pid.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// Detach from the task after it has started.
        #[arg(short, long)]
        detach: bool,
        id: String,
    },
}

/// The task status as ctr prints it.
pub fn status_name(s: i32) -> &'static str {
    match protos::task_types::Status::try_from(s) {
        Ok(protos::task_types::Status::Created) => "CREATED",
        Ok(protos::task_types::Status::Running) => "RUNNING",
        Ok(protos::task_types::Status::Stopped) => "STOPPED",
        Ok(protos::task_types::Status::Paused) => "PAUSED",
        Ok(protos::task_types::Status::Pausing) => "PAUSING",
        _ => "UNKNOWN",
    }
}

/// containerd `signal.ParseSignal`: `SIGKILL`, `KILL` or `9`.
pub fn parse_signal(s: &str) -> Result<u32, Error> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|sig| u32::try_from(sig as i32).unwrap_or(15))
        .map_err(|_| Error::Signal(s.to_string()))
}

/// Creates the task of container `id` with stdio per `wiring` (Tasks.Create with the
/// snapshot's mounts as rootfs).
pub async fn create_task(
    client: &client::Client,
    id: &str,
    wiring: Wiring,
    fifo_dir: Option<&std::path::Path>,
) -> Result<(Io, u32), Error> {
    let container = super::containers::get(client, id).await?;
    let rootfs = if container.snapshot_key.is_empty() {
        Vec::new()
    } else {
        client
            .snapshots()
            .mounts(MountsRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            })
            .await?
            .into_inner()
            .mounts
    };
    let mut io = Io::new(id, wiring, fifo_dir)?;
    let resp = client
        .tasks()
        .create(CreateTaskRequest {
            container_id: id.to_string(),
            rootfs,
            stdin: io.paths.stdin.clone(),
            stdout: io.paths.stdout.clone(),
            stderr: io.paths.stderr.clone(),
            terminal: io.paths.terminal,
            ..Default::default()
        })
        .await?
        .into_inner();
    io.start_stdin();
    log::debug!("created task {id} (pid {}, stdio {:?})", resp.pid, io.paths);
    Ok((io, resp.pid))
}

/// How the wiring for a process follows from the flags (ctr's `NewTask` rules).
pub fn wiring(tty: bool, io: &IoFlags) -> Result<Wiring, Error> {
    match (tty, io.null_io, &io.log_uri) {
        (true, true, _) => Err(Error::TtyNullIo),
        (true, _, Some(_)) => Err(Error::TtyLogUri),
        (true, false, None) => Ok(Wiring::Fifos {
            terminal: true,
            stdin: true,
        }),
        (false, true, _) => Ok(Wiring::Null),
        (false, false, Some(u)) => Ok(Wiring::LogUri(u.clone())),
        (false, false, None) => Ok(Wiring::Fifos {
            terminal: false,
            stdin: true,
        }),
    }
}

/// Starts process (`exec_id` empty: the task) and, in the foreground, waits for it:
/// resizes the pty on SIGWINCH with a terminal, forwards signals without one, closes the
/// process's stdin when ours ends. Returns the exit status.
pub async fn drive(
    client: &client::Client,
    id: &str,
    exec_id: &str,
    mut io: Io,
    tty: bool,
    start: bool,
) -> Result<u32, Error> {
    let raw = if tty && cio::stdin_is_tty() {
        Some(cio::RawTerminal::enable()?)
    } else {
        None
    };
    // Handlers first: a signal arriving as soon as the process runs must be forwarded,
    // not kill us.
    let mut side_tasks = Vec::new();
    if tty {
        let (c, id2, e2) = (client.clone(), id.to_string(), exec_id.to_string());
        side_tasks.push(tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                resize_pty(&c, &id2, &e2).await;
            }
        }));
    } else {
        use tokio::signal::unix::{signal, SignalKind};
        for (kind, num) in [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
            (SignalKind::user_defined1(), libc::SIGUSR1),
            (SignalKind::user_defined2(), libc::SIGUSR2),
        ] {
            let Ok(mut s) = signal(kind) else { continue };
            let (c, id2, e2) = (client.clone(), id.to_string(), exec_id.to_string());
            side_tasks.push(tokio::spawn(async move {
                while s.recv().await.is_some() {
                    let _ = c
                        .tasks()
                        .kill(KillRequest {
                            container_id: id2.clone(),
                            exec_id: e2.clone(),
                            signal: u32::try_from(num).unwrap_or(15),
                            all: false,
                        })
                        .await;
                }
            }));
        }
    }
    // The init process's pty exists from create on: size it before the process runs, and
    // again after start (an exec's pty only exists then).
    if tty {
        resize_pty(client, id, exec_id).await;
    }
    if start {
        client
            .tasks()
            .start(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
            .await?;
        if tty {
            resize_pty(client, id, exec_id).await;
        }
    }
    if let Some(done) = io.take_stdin_done() {
        let (c, id2, e2) = (client.clone(), id.to_string(), exec_id.to_string());
        side_tasks.push(tokio::spawn(async move {
            if done.await.is_ok() {
                let _ = c
                    .tasks()
                    .close_io(CloseIoRequest {
                        container_id: id2,
                        exec_id: e2,
                        stdin: true,
                    })
                    .await;
            }
        }));
    }
    let status = client
        .tasks()
        .wait(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await
        .map(|r| r.into_inner().exit_status);
    log::debug!("process {id}/{exec_id} exited: {status:?}");
    io.finish().await;
    for t in side_tasks {
        t.abort();
    }
    drop(raw);
    Ok(status?)
}

/// `tasks exec` arguments.
struct ExecArgs {
    cwd: Option<String>,
    tty: bool,
    detach: bool,
    exec_id: String,
    fifo_dir: Option<PathBuf>,
    log_uri: Option<String>,
    user: Option<String>,
    id: String,
    args: Vec<String>,
}

/// `tasks exec`: the container's process spec with the new args (and tty, cwd, user),
/// Tasks.Exec with fresh stdio, then start and, in the foreground, wait and delete it.
async fn exec(client: &client::Client, a: ExecArgs) -> Result<i32, Error> {
    let ExecArgs {
        cwd,
        tty,
        detach,
        exec_id,
        fifo_dir,
        log_uri,
        user,
        id,
        args,
    } = a;
    if exec_id.is_empty() {
        return Err(Error::NoExecId);
    }
    let spec = container_spec(client, &id).await?;
    let mut process = spec["process"].clone();
    process["terminal"] = serde_json::json!(tty);
    if tty {
        // Sized from the start: a short-lived exec can finish before ResizePty lands.
        if let Some((width, height)) = cio::terminal_size() {
            process["consoleSize"] = serde_json::json!({"height": height, "width": width});
        }
    }
    process["args"] = serde_json::json!(args);
    if let Some(c) = cwd {
        process["cwd"] = serde_json::json!(c);
    }
    if let Some(u) = user {
        // Names resolve in the container's rootfs, as ctr's `oci.WithUser` does: its
        // snapshot mounted read-only, or the spec's root path for --rootfs/--config ones.
        let c = super::containers::get(client, &id).await?;
        let mut s = serde_json::json!({ "process": process });
        if c.snapshot_key.is_empty() {
            let root = spec["root"]["path"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let root = std::path::Path::new(&root);
            crate::spec::with_user(&mut s, &u, root.is_absolute().then_some(root))
                .map_err(super::containers::Error::from)?;
        } else {
            let mounts = client
                .snapshots()
                .mounts(MountsRequest {
                    snapshotter: c.snapshotter.clone(),
                    key: c.snapshot_key.clone(),
                })
                .await?
                .into_inner()
                .mounts;
            crate::rootfs::with_readonly_mount(&mounts, |root| {
                crate::spec::with_user(&mut s, &u, Some(root))
            })
            .map_err(super::containers::Error::from)?
            .map_err(super::containers::Error::from)?;
        }
        process = s["process"].take();
    }
    let w = wiring(
        tty,
        &IoFlags {
            null_io: false,
            log_uri,
            fifo_dir: fifo_dir.clone(),
        },
    )?;
    let mut io = Io::new(&exec_id, w, fifo_dir.as_deref())?;
    client
        .tasks()
        .exec(ExecProcessRequest {
            container_id: id.clone(),
            stdin: io.paths.stdin.clone(),
            stdout: io.paths.stdout.clone(),
            stderr: io.paths.stderr.clone(),
            terminal: io.paths.terminal,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: serde_json::to_vec(&process).unwrap_or_default(),
            }),
            exec_id: exec_id.clone(),
        })
        .await?;
    io.start_stdin();
    if detach {
        io.keep();
        client
            .tasks()
            .start(StartRequest {
                container_id: id.clone(),
                exec_id: exec_id.clone(),
            })
            .await?;
        return Ok(0);
    }
    let result = drive(client, &id, &exec_id, io, tty, true).await;
    let _ = client
        .tasks()
        .delete_process(DeleteProcessRequest {
            container_id: id.clone(),
            exec_id: exec_id.clone(),
        })
        .await;
    Ok(i32::try_from(result?).unwrap_or(1))
}

/// Tasks.ResizePty to our terminal's size (errors ignored, as ctr logs and goes on).
async fn resize_pty(client: &client::Client, id: &str, exec_id: &str) {
    if let Some((width, height)) = cio::terminal_size() {
        let _ = client
            .tasks()
            .resize_pty(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            })
            .await;
    }
}

async fn container_spec(client: &client::Client, id: &str) -> Result<serde_json::Value, Error> {
    let c = super::containers::get(client, id).await?;
    let any = c.spec.ok_or_else(|| Error::NoSpec(id.to_string()))?;
    serde_json::from_slice(&any.value).map_err(|source| Error::BadSpec {
        id: id.to_string(),
        source,
    })
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<i32, Error> {
    let client = g.connect().await?;
    match cmd {
        Cmd::List { quiet } => {
            let tasks = client
                .tasks()
                .list(ListTasksRequest::default())
                .await?
                .into_inner()
                .tasks;
            if quiet {
                for t in &tasks {
                    println!("{}", t.id);
                }
                return Ok(0);
            }
            let mut tw = TabWriter::new(4, 4);
            tw.line("TASK\tPID\tSTATUS\t");
            for t in &tasks {
                tw.line(&format!("{}\t{}\t{}", t.id, t.pid, status_name(t.status)));
            }
            print!("{}", tw.finish());
        }
        Cmd::Start {
            io,
            pid_file,
            detach,
            id,
        } => {
            let spec = container_spec(&client, &id).await?;
            let tty = spec["process"]["terminal"].as_bool().unwrap_or(false);
            let (io_handle, pid) =
                create_task(&client, &id, wiring(tty, &io)?, io.fifo_dir.as_deref()).await?;
            if let Some(p) = pid_file {
                std::fs::write(&p, pid.to_string())
                    .map_err(|source| Error::PidFile { path: p, source })?;
            }
            if detach {
                io_handle.keep();
                client
                    .tasks()
                    .start(StartRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                    })
                    .await?;
                return Ok(0);
            }
            let code = drive(&client, &id, "", io_handle, tty, true).await?;
            client
                .tasks()
                .delete(DeleteTaskRequest {
                    container_id: id.clone(),
                })
                .await?;
            return Ok(i32::try_from(code).unwrap_or(1));
        }
        Cmd::Exec {
            cwd,
            tty,
            detach,
            exec_id,
            fifo_dir,
            log_uri,
            user,
            id,
            args,
        } => {
            let req = ExecArgs {
                cwd,
                tty,
                detach,
                exec_id,
                fifo_dir,
                log_uri,
                user,
                id,
                args,
            };
            return exec(&client, req).await;
        }
        Cmd::Kill {
            signal,
            exec_id,
            all,
            id,
        } => {
            if all && exec_id.is_some() {
                return Err(Error::AllAndExec);
            }
            let c = super::containers::get(&client, &id).await?;
            let sig = match signal {
                Some(s) => parse_signal(&s)?,
                None => parse_signal(
                    c.labels
                        .get("io.containerd.image.config.stop-signal")
                        .map_or("SIGTERM", String::as_str),
                )?,
            };
            client
                .tasks()
                .kill(KillRequest {
                    container_id: id,
                    exec_id: exec_id.unwrap_or_default(),
                    signal: sig,
                    all,
                })
                .await?;
        }
        Cmd::Delete {
            force,
            exec_id,
            ids,
        } => {
            if let Some(e) = exec_id {
                let id = ids.first().cloned().unwrap_or_default();
                if force {
                    let _ = client
                        .tasks()
                        .kill(KillRequest {
                            container_id: id.clone(),
                            exec_id: e.clone(),
                            signal: 9,
                            all: false,
                        })
                        .await;
                }
                let r = client
                    .tasks()
                    .delete_process(DeleteProcessRequest {
                        container_id: id,
                        exec_id: e,
                    })
                    .await?
                    .into_inner();
                return Ok(i32::try_from(r.exit_status).unwrap_or(1));
            }
            let mut first_err = None;
            for id in ids {
                if force {
                    force_kill(&client, &id).await;
                }
                let stdio = task_stdio(&client, &id).await;
                match client
                    .tasks()
                    .delete(DeleteTaskRequest {
                        container_id: id.clone(),
                    })
                    .await
                {
                    Ok(r) => {
                        // ctr only warns about a non-zero status here.
                        let ec = r.into_inner().exit_status;
                        if ec != 0 {
                            eprintln!("berth: task {id} exit with non-zero exit code {ec}");
                        }
                        let refs: Vec<&str> = stdio.iter().map(String::as_str).collect();
                        cio::remove_fifo_dir(&refs);
                    }
                    Err(status) => {
                        eprintln!("berth: unable to delete {id}: {}", status.message());
                        first_err.get_or_insert(Error::Delete { id, status });
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Cmd::Pause { id } => {
            client
                .tasks()
                .pause(PauseTaskRequest { container_id: id })
                .await?;
        }
        Cmd::Resume { id } => {
            client
                .tasks()
                .resume(ResumeTaskRequest { container_id: id })
                .await?;
        }
        Cmd::Ps { id } => {
            let procs = client
                .tasks()
                .list_pids(ListPidsRequest { container_id: id })
                .await?
                .into_inner()
                .processes;
            let mut tw = TabWriter::new(1, 4);
            tw.line("PID\tINFO");
            for p in &procs {
                let info = p.info.as_ref().map_or_else(
                    || "-".to_string(),
                    |any| {
                        use prost::Message;
                        protos::runc_options::ProcessDetails::decode(&any.value[..]).map_or_else(
                            |_| any.type_url.clone(),
                            |d| {
                                format!(
                                    "&ProcessDetails{{ExecID:{},XXX_unrecognized:[],}}",
                                    d.exec_id
                                )
                            },
                        )
                    },
                );
                tw.line(&format!("{}\t{info}", p.pid));
            }
            print!("{}", tw.finish());
        }
        Cmd::Attach { id } => {
            let p = client
                .tasks()
                .get(GetRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                })
                .await?
                .into_inner()
                .process
                .unwrap_or_default();
            let mut io = Io::attach(&p.stdin, &p.stdout, &p.stderr, p.terminal)?;
            io.start_stdin();
            let code = drive(&client, &id, "", io, p.terminal, false).await?;
            return Ok(i32::try_from(code).unwrap_or(1));
        }
        Cmd::Metrics { format, id } => {
            let metrics = client
                .tasks()
                .metrics(MetricsRequest {
                    filters: vec![format!("id=={id}")],
                })
                .await?
                .into_inner()
                .metrics;
            let Some(m) = metrics.first() else {
                return Err(Error::NoMetrics(id));
            };
            let data = m.data.clone().unwrap_or_default();
            let decoded = (data.type_url.rsplit('/').next() == Some(super::metrics::V1_TYPE_URL))
                .then(|| {
                    use prost::Message;
                    super::metrics::Metrics::decode(data.value.as_slice()).ok()
                })
                .flatten();
            match (format.as_str(), decoded) {
                ("table", Some(v1)) => {
                    let mut tw = TabWriter::new(1, 4);
                    tw.line("ID\tTIMESTAMP\t");
                    tw.line(&format!(
                        "{}\t{}\t",
                        m.id,
                        super::events::go_time(m.timestamp.as_ref())
                    ));
                    tw.line("");
                    for row in super::metrics::v1_table_rows(&v1) {
                        tw.line(&row);
                    }
                    print!("{}", tw.finish());
                }
                ("json", Some(v1)) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&super::metrics::v1_json(&v1))
                            .unwrap_or_default()
                    );
                }
                ("table" | "json", None) => return Err(Error::MetricsType(data.type_url)),
                _ => return Err(Error::Format(format)),
            }
        }
    }
    Ok(0)
}

/// The stdio paths of a task's init process (empty when unknown).
pub async fn task_stdio(client: &client::Client, id: &str) -> Vec<String> {
    client
        .tasks()
        .get(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().process)
        .map(|p| vec![p.stdin, p.stdout, p.stderr])
        .unwrap_or_default()
}

/// containerd's `WithProcessKill`: SIGKILL everything and wait for the exit.
async fn force_kill(client: &client::Client, id: &str) {
    let killed = client
        .tasks()
        .kill(KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        })
        .await;
    if killed.is_ok() {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.tasks().wait(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }),
        )
        .await;
    }
}
