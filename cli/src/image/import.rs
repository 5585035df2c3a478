//! `images import`: reads an OCI image layout tar or a `docker save` archive and stores it
//! the way containerd's client does (`Client.Import` + `archive.ImportIndex`): every file
//! is streamed into the content store under ref `tar-<name>`, a Docker archive gets a
//! synthesised Docker schema 2 manifest per image and an OCI index over them, parents get
//! `containerd.io/gc.ref.content.*` labels for their children, and one image record is
//! created (or retargeted) per named manifest. The caller holds a lease around all of it.
//!
//! The tar is read on a blocking thread; file data flows to the async side in chunks over
//! a channel, so a layer is never held in memory whole.

use std::collections::HashMap;
use std::io::Read;

use futures::StreamExt;
use protos::services::images::v1::{CreateImageRequest, Image, UpdateImageRequest};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::store::{self, Commit, Piece};
use super::{Descriptor, Platform, PlatformMatcher, JSON_LIMIT};
use crate::client::Client;
use berthd::transfer::import::{
    docker_index, tar_error_text, ArchiveEntry, CompressedLayer, DockerArchiveError,
    DockerManifest, DockerStore, OciLayout,
};
use berthd::transfer::naming::translate;
use berthd::transfer::oci::{gc_labels, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read archive: {0} (is it an OCI layout or docker save tar?)")]
    Tar(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Image(#[from] super::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("untar {name:?}: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{name:?} in the archive is larger than the {limit} byte limit")]
    TooLarge { name: String, limit: usize },
    #[error("unsupported OCI version {0}")]
    OciVersion(String),
    #[error("missing index.json in OCI layout 1.0.0")]
    NoIndex,
    #[error("unrecognized image format: neither an OCI layout (oci-layout) nor a docker archive (manifest.json)")]
    Unrecognized,
    #[error(transparent)]
    Docker(#[from] DockerArchiveError),
    #[error("archive reader stopped unexpectedly")]
    ReaderGone,
}

/// `images import` options (ctr's flags).
pub struct Options {
    /// `--base-name`: prefix for tag-only names; without it `import-<date>` is used.
    pub base_name: Option<String>,
    /// `--digests`: also create `<prefix>@<digest>` images.
    pub digests: bool,
    /// `--index-name`: keep the index as an image with this name.
    pub index_name: Option<String>,
    /// Which manifests to import (`--all-platforms`, `--platform`).
    pub platform: PlatformMatcher,
}

enum Event {
    File {
        name: String,
        size: u64,
        data: mpsc::Receiver<Piece>,
    },
    Done {
        name: String,
        digest: String,
        head: Vec<u8>,
    },
    Symlink {
        name: String,
        target: String,
    },
}

#[allow(clippy::needless_pass_by_value)]
fn tar_err(e: std::io::Error) -> Error {
    Error::Tar(tar_error_text(&e))
}

/// Reads the tar on this (blocking) thread and sends its files to the async side.
fn read_archive(reader: Box<dyn Read + Send>, tx: &mpsc::Sender<Event>) -> Result<(), Error> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let name = match ArchiveEntry::of(&entry) {
            ArchiveEntry::Symlink { name, target } => {
                tx.blocking_send(Event::Symlink { name, target })
                    .map_err(|_| Error::ReaderGone)?;
                continue;
            }
            ArchiveEntry::Skip => continue,
            ArchiveEntry::File(name) => name,
        };
        let size = entry.header().size().map_err(tar_err)?;
        let (dtx, drx) = mpsc::channel(4);
        tx.blocking_send(Event::File {
            name: name.clone(),
            size,
            data: drx,
        })
        .map_err(|_| Error::ReaderGone)?;
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = entry.read(&mut buf).map_err(tar_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if head.len() < 16 {
                let take = (16 - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            dtx.blocking_send(Piece::Data(buf[..n].to_vec()))
                .map_err(|_| Error::ReaderGone)?;
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        // The consumer may have stopped listening for data (JSON files): ignore that.
        let _ = dtx.blocking_send(Piece::End(Commit {
            digest: digest.clone(),
            labels: HashMap::new(),
        }));
        drop(dtx);
        tx.blocking_send(Event::Done { name, digest, head })
            .map_err(|_| Error::ReaderGone)?;
    }
    Ok(())
}

/// Imports the archive; returns the image records created or updated.
pub async fn import(
    client: &Client,
    reader: Box<dyn Read + Send>,
    opts: &Options,
) -> Result<Vec<Image>, Error> {
    let (tx, mut rx) = mpsc::channel(1);
    let reader_thread = tokio::task::spawn_blocking(move || read_archive(reader, &tx));

    let mut layout: Option<OciLayout> = None;
    let mut docker: Option<Vec<DockerManifest>> = None;
    let mut blobs: HashMap<String, Descriptor> = HashMap::new();
    let mut heads: HashMap<String, Vec<u8>> = HashMap::new();
    let mut symlinks: HashMap<String, String> = HashMap::new();
    let mut failure = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Symlink { name, target } => {
                symlinks.insert(name, target);
            }
            Event::File { name, size, data } => {
                let result = if name == "oci-layout" || name == "manifest.json" {
                    collect_json(&name, data).await.and_then(|bytes| {
                        let json_err = |source| Error::Json {
                            name: name.clone(),
                            source,
                        };
                        if name == "oci-layout" {
                            layout = Some(serde_json::from_slice(&bytes).map_err(json_err)?);
                        } else {
                            docker = Some(serde_json::from_slice(&bytes).map_err(json_err)?);
                        }
                        Ok(())
                    })
                } else {
                    let total = i64::try_from(size).unwrap_or(i64::MAX);
                    let reference = format!("tar-{name}");
                    store::write_stream(client, &reference, total, ReceiverStream::new(data))
                        .await
                        .map_err(Error::from)
                        .map(|()| {
                            blobs.insert(
                                name.clone(),
                                Descriptor {
                                    digest: String::new(),
                                    size: total,
                                    ..Descriptor::default()
                                },
                            );
                        })
                };
                if let Err(e) = result {
                    failure = Some(e);
                    break;
                }
            }
            Event::Done { name, digest, head } => {
                if let Some(d) = blobs.get_mut(&name) {
                    d.digest = digest;
                    heads.insert(name, head);
                }
            }
        }
    }
    drop(rx);
    let read_result = reader_thread.await.map_err(|_| Error::ReaderGone)?;
    if let Some(e) = failure {
        return Err(e);
    }
    read_result?;

    let index = if let Some(layout) = layout {
        if layout.version != "1.0.0" {
            return Err(Error::OciVersion(layout.version));
        }
        let mut idx = blobs.get("index.json").cloned().ok_or(Error::NoIndex)?;
        idx.media_type = super::MT_OCI_INDEX.to_string();
        idx
    } else if let Some(manifests) = docker {
        docker_index(&Remote(client), manifests, blobs.clone(), heads, &symlinks).await?
    } else {
        return Err(Error::Unrecognized);
    };

    log::debug!("imported {} blobs, index {}", blobs.len(), index.digest);
    let names = label_and_name(client, &index, opts).await?;
    let mut images = Vec::new();
    for (name, target) in names {
        images.push(create_or_update(client, name, target.to_proto()).await?);
    }
    Ok(images)
}

async fn collect_json(name: &str, data: mpsc::Receiver<Piece>) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut stream = ReceiverStream::new(data);
    while let Some(p) = stream.next().await {
        if let Piece::Data(d) = p {
            out.extend_from_slice(&d);
            if out.len() > JSON_LIMIT {
                return Err(Error::TooLarge {
                    name: name.to_string(),
                    limit: JSON_LIMIT,
                });
            }
        }
    }
    Ok(out)
}

/// berthd's content service over gRPC, as the Docker-archive index builder's store.
struct Remote<'a>(&'a Client);

impl DockerStore for Remote<'_> {
    type Error = Error;

    async fn compressed_form(&self, diff_id: &str) -> Result<Option<CompressedLayer>, Error> {
        let filter = format!("labels.\"containerd.io/uncompressed\"=={diff_id}");
        let mut stream = self
            .0
            .content()
            .list(protos::services::content::v1::ListContentRequest {
                filters: vec![filter],
            })
            .await?
            .into_inner();
        while let Some(resp) = stream.message().await? {
            if let Some(info) = resp.info.into_iter().next() {
                let head = store::read_head(self.0, &info.digest, 16).await?;
                return Ok(Some(CompressedLayer {
                    digest: info.digest,
                    size: info.size,
                    head,
                }));
            }
        }
        Ok(None)
    }

    async fn write_json(&self, bytes: Vec<u8>) -> Result<(String, i64), Error> {
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let digest = store::digest_of(&bytes);
        store::write_bytes(self.0, &format!("manifest-{digest}"), bytes, HashMap::new()).await?;
        Ok((digest, size))
    }

    async fn manifest_platform(&self, config: &Descriptor) -> Result<Option<Platform>, Error> {
        let cfg = super::read_config(self.0, config).await?;
        // As ctr 1.6 writes it: os and architecture only, as the config has them.
        Ok(Some(Platform {
            architecture: cfg.architecture,
            os: cfg.os,
            ..Platform::default()
        }))
    }
}

/// Walks from the index like containerd's import handler chain (`FilterPlatforms` →
/// `SetChildrenLabels` → `WalkNotEmpty`) and returns the (name, target) pairs to create.
async fn label_and_name(
    client: &Client,
    index: &Descriptor,
    opts: &Options,
) -> Result<Vec<(String, Descriptor)>, Error> {
    let (prefix, filter) = match &opts.base_name {
        Some(p) => (p.clone(), true),
        None => (format!("import-{}", today()), false),
    };
    let mut names = Vec::new();
    if let Some(n) = &opts.index_name {
        names.push((n.clone(), index.clone()));
    }
    let mut stack = vec![index.clone()];
    while let Some(desc) = stack.pop() {
        let mut children = super::children(client, &desc).await?;
        if desc.digest == index.digest {
            for m in &children {
                let ann = m.annotations.clone().unwrap_or_default();
                let name = ann.get(ANNOTATION_IMAGE_NAME).cloned().or_else(|| {
                    ann.get(ANNOTATION_REF_NAME)
                        .map(|r| translate(&prefix, filter, r))
                        .filter(|n| !n.is_empty())
                });
                if let Some(n) = name {
                    names.push((n, m.clone()));
                }
                if opts.digests {
                    names.push((format!("{prefix}@{}", m.digest), m.clone()));
                }
            }
        }
        children.retain(|c| opts.platform.matches(c.platform.as_ref()));
        if children.is_empty() {
            continue;
        }
        store::set_labels(client, &desc.digest, gc_labels(&children)).await?;
        stack.extend(children);
    }
    Ok(names)
}

/// containerd's import: `Update(target)`, falling back to `Create` when it does not exist.
pub async fn create_or_update(
    client: &Client,
    name: String,
    target: protos::types::Descriptor,
) -> Result<Image, tonic::Status> {
    let image = Image {
        name,
        target: Some(target),
        ..Default::default()
    };
    match client
        .images()
        .update(UpdateImageRequest {
            image: Some(image.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["target".into()],
            }),
            ..Default::default()
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().image.unwrap_or(image)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(client
            .images()
            .create(CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .image
            .unwrap_or(image)),
        Err(s) => Err(s),
    }
}

/// Today's date as `yyyy-MM-dd` (UTC), for `import-<date>` names.
fn today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ts = prost_types::Timestamp {
        seconds: i64::try_from(now).unwrap_or(0),
        nanos: 0,
    };
    crate::util::rfc3339(Some(&ts))[..10].to_string()
}
