//! Content-store and lease helpers over containerd's Content and Leases services: bounded
//! blob reads, streamed blob writes (`Write` STAT → WRITE… → COMMIT, as containerd's remote
//! content writer does), label updates, and the temporary lease a client holds while it
//! writes content (containerd `Client.WithLease`: random id, 24 h `gc.expire`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use protos::services::content::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use protos::services::leases::v1::{CreateRequest, DeleteRequest};
use sha2::{Digest as _, Sha256};

use crate::client::Client;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The daemon's message names the digest already ("content digest …: not found").
    #[error("{}", .status.message())]
    Read {
        digest: String,
        status: tonic::Status,
    },
    #[error("content {digest} is larger than the {limit} byte limit for JSON documents")]
    TooLarge { digest: String, limit: usize },
    #[error("failed to write content {reference}: {}", .status.message())]
    Write {
        reference: String,
        status: tonic::Status,
    },
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
}

/// sha256 digest string of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Reads a whole blob, refusing more than `limit` bytes.
pub async fn read_blob(client: &Client, digest: &str, limit: usize) -> Result<Vec<u8>, Error> {
    let read_err = |status| Error::Read {
        digest: digest.to_string(),
        status,
    };
    let mut stream = client
        .content()
        .read(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })
        .await
        .map_err(read_err)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(read_err)? {
        out.extend_from_slice(&chunk.data);
        if out.len() > limit {
            return Err(Error::TooLarge {
                digest: digest.to_string(),
                limit,
            });
        }
    }
    Ok(out)
}

/// Reads the first `n` bytes of a blob (compression sniffing).
pub async fn read_head(client: &Client, digest: &str, n: i64) -> Result<Vec<u8>, Error> {
    let read_err = |status| Error::Read {
        digest: digest.to_string(),
        status,
    };
    let mut stream = client
        .content()
        .read(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: n,
        })
        .await
        .map_err(read_err)?
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(read_err)? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// Streams a blob to `sink` chunk by chunk.
pub async fn copy_blob<W: std::io::Write>(
    client: &Client,
    digest: &str,
    sink: &mut W,
) -> Result<u64, Error> {
    let read_err = |status| Error::Read {
        digest: digest.to_string(),
        status,
    };
    let mut stream = client
        .content()
        .read(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })
        .await
        .map_err(read_err)?
        .into_inner();
    let mut n = 0u64;
    while let Some(chunk) = stream.message().await.map_err(read_err)? {
        sink.write_all(&chunk.data).map_err(|e| Error::Read {
            digest: digest.to_string(),
            status: tonic::Status::internal(format!("write to output: {e}")),
        })?;
        n += chunk.data.len() as u64;
    }
    Ok(n)
}

/// What to commit a streamed write with.
pub struct Commit {
    pub digest: String,
    pub labels: HashMap<String, String>,
}

/// A piece of a streamed write.
pub enum Piece {
    Data(Vec<u8>),
    /// The end of the data; the expected digest (computed by the producer) and labels.
    End(Commit),
}

/// Writes a blob from a stream of pieces under ingest ref `reference`; an already-existing
/// blob counts as success (containerd `content.WriteBlob`).
pub async fn write_stream<S>(
    client: &Client,
    reference: &str,
    total: i64,
    pieces: S,
) -> Result<(), Error>
where
    S: Stream<Item = Piece> + Send + 'static,
{
    // containerd locks an ingest by its ref: a concurrent berth (or ctr) writing the same
    // blob under the same ref would fail with "ref … locked". Our process id makes the ref
    // ours; two writers of one blob both succeed (the second commit finds it present).
    let r = format!("{reference}@berth-{}", std::process::id());
    let first = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: r.clone(),
        total,
        ..Default::default()
    };
    let mut offset = 0i64;
    let rest = pieces.map(move |p| match p {
        Piece::Data(data) => {
            let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
            let req = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: r.clone(),
                total,
                offset,
                data,
                ..Default::default()
            };
            offset += len;
            req
        }
        Piece::End(c) => WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: r.clone(),
            total: offset,
            offset,
            expected: c.digest,
            labels: c.labels,
            ..Default::default()
        },
    });
    let requests = futures::stream::iter([first]).chain(rest);
    let write_err = |status: tonic::Status| Error::Write {
        reference: reference.to_string(),
        status,
    };
    let result = async {
        let mut responses = client.content().write(requests).await?.into_inner();
        while responses.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    }
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(write_err(s)),
    }
}

/// Writes an in-memory blob (manifests, indexes, configs).
pub async fn write_bytes(
    client: &Client,
    reference: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<String, Error> {
    let digest = digest_of(&data);
    let total = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let pieces = futures::stream::iter([
        Piece::Data(data),
        Piece::End(Commit {
            digest: digest.clone(),
            labels,
        }),
    ]);
    write_stream(client, reference, total, pieces).await?;
    Ok(digest)
}

/// Content info for a digest.
pub async fn info(client: &Client, digest: &str) -> Result<Info, tonic::Status> {
    client
        .content()
        .info(InfoRequest {
            digest: digest.to_string(),
        })
        .await?
        .into_inner()
        .info
        .ok_or_else(|| tonic::Status::internal("empty info response"))
}

/// Whether a blob is stored; when it is and the client runs in a lease, the blob is first
/// added to the lease so garbage collection cannot take it between this check and its use
/// (what containerd's metadata writer does when a write finds the blob present).
pub async fn have_and_hold(client: &Client, digest: &str) -> Result<bool, tonic::Status> {
    use protos::services::leases::v1::{AddResourceRequest, Resource};
    if let Some(lease) = client.lease() {
        client
            .leases()
            .add_resource(AddResourceRequest {
                id: lease.to_string(),
                resource: Some(Resource {
                    id: digest.to_string(),
                    r#type: "content".to_string(),
                }),
            })
            .await?;
    }
    match info(client, digest).await {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(s),
    }
}

/// Sets labels on a blob, touching only the given keys (`labels.<key>` field paths).
pub async fn set_labels(
    client: &Client,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<(), tonic::Status> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    client
        .content()
        .update(UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        })
        .await?;
    Ok(())
}

/// `containerd.io/gc.expire` value 24 h from now.
fn expiry_24h() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    crate::util::rfc3339(Some(&prost_types::Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap_or(0) + 24 * 3600,
        nanos: 0,
    }))
}

/// A temporary lease as containerd's `Client.WithLease` takes one: random id, expiring in
/// 24 h so an interrupted client leaks nothing for long.
pub struct TempLease {
    pub id: String,
}

impl TempLease {
    /// A lease with a chosen id and labels expiring in 24 h (`images mount` names it after
    /// the mount target); an existing lease of that id is reused.
    pub async fn named(
        client: &Client,
        id: &str,
        mut labels: HashMap<String, String>,
    ) -> Result<Self, tonic::Status> {
        labels.insert("containerd.io/gc.expire".to_string(), expiry_24h());
        match client
            .leases()
            .create(CreateRequest {
                id: id.to_string(),
                labels,
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s),
        }
        Ok(TempLease { id: id.to_string() })
    }

    pub async fn create(client: &Client) -> Result<Self, tonic::Status> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let id = format!(
            "berth-{}-{}",
            now.as_nanos(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let labels = [("containerd.io/gc.expire".to_string(), expiry_24h())]
            .into_iter()
            .collect();
        client
            .leases()
            .create(CreateRequest {
                id: id.clone(),
                labels,
            })
            .await?;
        log::debug!("created lease {id}");
        Ok(TempLease { id })
    }

    /// Deletes the lease (asynchronously collected, like ctr's `done`).
    pub async fn release(self, client: &Client) {
        log::debug!("releasing lease {}", self.id);
        let _ = client
            .leases()
            .delete(DeleteRequest {
                id: self.id,
                sync: false,
            })
            .await;
    }
}
