//! `berth content …`: ls, get, ingest, active, delete, label (ctr's `content`).

use std::collections::HashMap;
use std::io::Read;

use clap::Subcommand;
use protos::services::content::v1::{
    DeleteContentRequest, Info, ListContentRequest, ListStatusesRequest, UpdateRequest,
};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::image::store::{self, Commit, Piece};
use crate::tabwriter::TabWriter;
use crate::util::{human_duration, human_size_decimal, labels_from_args, time_ago};
use crate::{client, Globals};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List all blobs in the store.
    #[command(alias = "ls")]
    List {
        /// Print only the blob digest.
        #[arg(short, long)]
        quiet: bool,
        filters: Vec<String>,
    },
    /// Fetch all content for an image reference from a registry (no image is created).
    Fetch {
        #[command(flatten)]
        registry: crate::image::distribution::RegistryFlags,
        /// Fetch content for a specific platform.
        #[arg(long)]
        platform: Option<String>,
        /// Fetch content for all platforms.
        #[arg(long)]
        all_platforms: bool,
        reference: String,
    },
    /// Get the data for an object (written to stdout).
    Get { digest: String },
    /// Accept content from stdin into the store under ingest ref <key>.
    Ingest {
        /// Validate against the provided size.
        #[arg(long)]
        expected_size: Option<i64>,
        /// Verify content against the expected digest.
        #[arg(long)]
        expected_digest: Option<String>,
        reference: String,
    },
    /// Display active transfers.
    Active {
        /// Only refs matching this regular expression.
        filter: Option<String>,
    },
    /// Permanently delete one or more blobs.
    #[command(aliases = ["del", "remove", "rm"])]
    Delete { digests: Vec<String> },
    /// Add labels to content: <digest> [<label>=<value>...].
    Label { digest: String, labels: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("invalid digest {0:?}: expected <algorithm>:<hex>, e.g. sha256:…")]
    Digest(String),
    #[error(transparent)]
    Registry(#[from] crate::image::distribution::Error),
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    Platform(String),
    #[error("must specify a transaction reference")]
    NoRef,
    #[error("read stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("unexpected commit digest {got}, expected {want}: failed precondition")]
    Mismatch { got: String, want: String },
    #[error("unexpected commit size {got}, expected {want}: failed precondition")]
    Size { got: i64, want: i64 },
}

/// `digest.Parse`: `sha256:` + 64 lowercase hex.
pub fn parse_digest(s: &str) -> Result<String, Error> {
    match s.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
        {
            Ok(s.to_string())
        }
        _ => Err(Error::Digest(s.to_string())),
    }
}

fn label_string(info: &Info) -> String {
    let mut pairs: Vec<String> = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if pairs.is_empty() {
        return "-".to_string();
    }
    pairs.sort();
    pairs.join(",")
}

pub async fn run(cmd: Cmd, g: &Globals) -> Result<(), Error> {
    let client = g.connect().await?;
    match cmd {
        Cmd::List { quiet, filters } => {
            let mut stream = client
                .content()
                .list(ListContentRequest { filters })
                .await?
                .into_inner();
            let mut infos = Vec::new();
            while let Some(r) = stream.message().await? {
                infos.extend(r.info);
            }
            if quiet {
                for i in &infos {
                    println!("{}", i.digest);
                }
                return Ok(());
            }
            let mut tw = TabWriter::with_tabs(1, 1);
            tw.line("DIGEST\tSIZE\tAGE\tLABELS");
            for i in &infos {
                tw.line(&format!(
                    "{}\t{}\t{}\t{}",
                    i.digest,
                    human_size_decimal(i.size),
                    time_ago(i.created_at.as_ref()),
                    label_string(i)
                ));
            }
            print!("{}", tw.finish());
        }
        Cmd::Fetch {
            registry: flags,
            platform,
            all_platforms,
            reference,
        } => {
            use crate::image::{distribution as registry, Platform, PlatformMatcher};
            let reference = registry::parse_reference(&reference)?;
            let platform = if all_platforms {
                PlatformMatcher::All
            } else if let Some(p) = platform {
                PlatformMatcher::Only(
                    super::images::parse_platform(&p).map_err(|_| Error::Platform(p.clone()))?,
                )
            } else {
                PlatformMatcher::Only(Platform::host())
            };
            let opts = registry::Options::new(flags, platform);
            // Fetched content is only held by this temporary lease (and its GC labels), as
            // with ctr: an image record or another lease must reference it to keep it.
            let lease = store::TempLease::create(&client).await?;
            let leased = client.with_lease(&lease.id)?;
            let result = registry::fetch_all(&leased, &reference, &opts).await;
            lease.release(&client).await;
            result?;
        }
        Cmd::Get { digest } => {
            let digest = parse_digest(&digest)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            store::copy_blob(&client, &digest, &mut out).await?;
        }
        Cmd::Ingest {
            expected_size,
            expected_digest,
            reference,
        } => {
            if reference.is_empty() {
                return Err(Error::NoRef);
            }
            let expected = expected_digest.as_deref().map(parse_digest).transpose()?;
            ingest(&client, &reference, expected_size.unwrap_or(0), expected).await?;
        }
        Cmd::Active { filter } => {
            let filters = filter
                .map(|f| vec![format!("ref~={f}")])
                .unwrap_or_default();
            let statuses = client
                .content()
                .list_statuses(ListStatusesRequest { filters })
                .await?
                .into_inner()
                .statuses;
            let mut tw = TabWriter::with_tabs(1, 1);
            tw.line("REF\tSIZE\tAGE\t");
            for s in &statuses {
                let age = s.started_at.as_ref().map_or_else(
                    || "-".to_string(),
                    |t| {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        let secs = now.saturating_sub(u64::try_from(t.seconds).unwrap_or(0));
                        human_duration(std::time::Duration::from_secs(secs))
                    },
                );
                tw.line(&format!(
                    "{}\t{}\t{age}\t",
                    s.r#ref,
                    human_size_decimal(s.offset)
                ));
            }
            print!("{}", tw.finish());
        }
        Cmd::Delete { digests } => {
            let mut first_err = None;
            for d in digests {
                let digest = match parse_digest(&d) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("berth: could not delete {d}: {e}");
                        first_err.get_or_insert(e);
                        continue;
                    }
                };
                match client
                    .content()
                    .delete(DeleteContentRequest {
                        digest: digest.clone(),
                    })
                    .await
                {
                    Ok(_) => println!("{digest}"),
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => {
                        eprintln!("berth: could not delete {digest}: {}", s.message());
                        first_err.get_or_insert(Error::Rpc(s));
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Cmd::Label { digest, labels } => {
            let digest = parse_digest(&digest)?;
            let labels = labels_from_args(&labels);
            let info = if labels.is_empty() {
                store::info(&client, &digest).await?
            } else {
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                let set: HashMap<String, String> =
                    labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                client
                    .content()
                    .update(UpdateRequest {
                        info: Some(Info {
                            digest,
                            labels: set,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })
                    .await?
                    .into_inner()
                    .info
                    .unwrap_or_default()
            };
            let mut pairs: Vec<String> = info
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            pairs.sort();
            println!("{}", pairs.join(","));
        }
    }
    Ok(())
}

/// `content ingest`: stdin → Content.Write under `reference`, verified against the
/// expected size and digest when given.
async fn ingest(
    client: &client::Client,
    reference: &str,
    expected_size: i64,
    expected: Option<String>,
) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || -> Result<(String, i64), Error> {
        let mut stdin = std::io::stdin().lock();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0i64;
        loop {
            let n = stdin.read(&mut buf).map_err(Error::Stdin)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += i64::try_from(n).unwrap_or(0);
            if tx.blocking_send(Piece::Data(buf[..n].to_vec())).is_err() {
                return Ok((String::new(), total));
            }
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        let commit_digest = expected.clone().unwrap_or_else(|| digest.clone());
        if let Some(want) = &expected {
            if *want != digest {
                return Err(Error::Mismatch {
                    got: digest,
                    want: want.clone(),
                });
            }
        }
        if expected_size > 0 && expected_size != total {
            return Err(Error::Size {
                got: total,
                want: expected_size,
            });
        }
        let _ = tx.blocking_send(Piece::End(Commit {
            digest: commit_digest,
            labels: HashMap::new(),
        }));
        Ok((digest, total))
    });
    // Without an End piece (a failed check) the stream just ends: the ingest stays
    // uncommitted and resumable, as with containerd.
    let write =
        store::write_stream(client, reference, expected_size, ReceiverStream::new(rx)).await;
    reader.await.map_err(|_| Error::NoRef)??;
    write?;
    Ok(())
}
