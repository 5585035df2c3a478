//! `berth run`: ctr's run — create the container (see `containers::create`), create the
//! task with stdio, start it, and in the foreground wait for it and exit with its status;
//! `--rm` deletes task, container and snapshot afterwards, `-d` returns once started.

use std::path::PathBuf;

use protos::services::tasks::v1::{DeleteTaskRequest, StartRequest};

use super::containers::{self, ContainerFlags};
use super::tasks::{self, IoFlags};
use crate::{client, Globals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove the container after running (cannot be used with --detach).
    #[arg(long)]
    rm: bool,
    /// Detach from the task after it has started execution.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    io: IoFlags,
    /// File path to write the task's pid.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[command(flatten)]
    container: ContainerFlags,
    /// Image reference (with --config: the container id).
    image: String,
    /// Container id.
    id: Option<String>,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Containers(#[from] containers::Error),
    #[error(transparent)]
    Tasks(#[from] tasks::Error),
    #[error("flags --detach and --rm cannot be specified together")]
    RmDetach,
    #[error("write pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(mut args: Args, g: &Globals) -> Result<i32, Error> {
    // ctr's run (not `containers create`) has `--cpu-shares` defaulting to 1024.
    args.container.cpu_shares.get_or_insert(1024);
    if args.rm && args.detach {
        return Err(Error::RmDetach);
    }
    let wiring = tasks::wiring(args.container.tty, &args.io)?;
    // With --config the single positional argument is the container id (ctr's rule).
    let (image, id) = match (&args.container.config, args.id.take()) {
        (Some(_), None) => (String::new(), args.image.clone()),
        (Some(_), Some(_)) => return Err(containers::Error::ConfigWithImage.into()),
        (None, Some(id)) => (args.image.clone(), id),
        (None, None) => return Err(containers::Error::NoId.into()),
    };
    let client = g.connect().await?;
    let mut lease = None;
    let container = containers::create(
        &client,
        &args.container,
        &image,
        &id,
        &args.args,
        Some(&mut lease),
    )
    .await?;
    // The create's temporary lease goes while the task is created (both requests in flight
    // on the one connection); a lease delete is a metadata commit the task does not need.
    let release = async {
        if let Some(lease) = lease {
            lease.release(&client).await;
        }
    };
    let ((result, task_deleted), ()) = tokio::join!(run_task(&client, &args, &id, wiring), release);
    if args.rm {
        // After our own successful task Delete the container is known to have no task:
        // remove it (and its snapshot) without re-reading both first. Otherwise ctr's
        // checking delete, which refuses a task still running.
        let removed = if task_deleted {
            let snapshot = (!container.snapshot_key.is_empty()).then_some(&container);
            containers::remove(&client, &id, snapshot).await
        } else {
            containers::delete(&client, &id, true).await
        };
        if let Err(e) = removed {
            eprintln!("berth: failed to remove container {id}: {e}");
        }
    }
    result
}

/// Creates, starts and (in the foreground) waits for and deletes the task. Returns the exit
/// code and whether the task was deleted here.
async fn run_task(
    client: &client::Client,
    args: &Args,
    id: &str,
    wiring: crate::cio::Wiring,
) -> (Result<i32, Error>, bool) {
    let mut deleted = false;
    let result = run_task_inner(client, args, id, wiring, &mut deleted).await;
    (result, deleted)
}

async fn run_task_inner(
    client: &client::Client,
    args: &Args,
    id: &str,
    wiring: crate::cio::Wiring,
    deleted_here: &mut bool,
) -> Result<i32, Error> {
    let (io, pid) = tasks::create_task(client, id, wiring, args.io.fifo_dir.as_deref()).await?;
    if let Some(p) = &args.pid_file {
        std::fs::write(p, pid.to_string()).map_err(|source| Error::PidFile {
            path: p.clone(),
            source,
        })?;
    }
    if args.detach {
        // Like ctr exiting after start: we stop reading, the fifos stay for `tasks attach`.
        io.keep();
        client
            .tasks()
            .start(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })
            .await?;
        return Ok(0);
    }
    let status = tasks::drive(client, id, "", io, args.container.tty, true).await;
    let deleted = client
        .tasks()
        .delete(DeleteTaskRequest {
            container_id: id.to_string(),
        })
        .await;
    *deleted_here = deleted.is_ok();
    let code = status?;
    deleted?;
    Ok(i32::try_from(code).unwrap_or(1))
}
