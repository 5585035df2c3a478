//! Export of images as an OCI image layout tar (containerd `core/transfer/local/export.go`
//! over `core/images/archive/exporter.go`): `oci-layout`, `index.json` naming each image
//! (containerd and OCI ref-name annotations), every blob reachable for the chosen
//! platforms under `blobs/<alg>/<hex>`, and a Docker-compatible `manifest.json` unless
//! skipped. Entries are sorted by name, as containerd writes them, so the same content
//! gives the same tar.
//!
//! The archive writer ([`write_archive`]) is written once, generic over a
//! [`BlobReader`]: the Transfer service's [`export`] reads the namespace's content
//! directly ([`DbBlobs`], on a blocking thread straight into the stream, within the window
//! the client grants), the `berth` CLI reads it over the content gRPC service. No blob is
//! held in memory whole.

use super::oci::{self, BlobSource, DbBlobs, Descriptor, Index, Manifest, Matcher, Platform};
use super::Transferrer;
use super::{blocking, naming, Error, ExportStream, ImageStore, Progress, ProgressEvent};
use crate::metadata::Ctx;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// What the archive writer itself finds wrong; the blob reader's error takes it in.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A digest that cannot name a path under `blobs/`.
    #[error("invalid digest {0:?}")]
    Digest(String),
    /// An image whose target is not a manifest or index.
    #[error("only manifests may be exported: {name} has media type {media_type}")]
    NotManifest {
        /// The image.
        name: String,
        /// Its target's media type.
        media_type: String,
    },
    /// Writing the tar failed.
    #[error("write archive: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding `index.json` or `manifest.json` failed.
    #[error("export index: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<ArchiveError> for Error {
    fn from(e: ArchiveError) -> Self {
        match e {
            e @ (ArchiveError::Digest(_) | ArchiveError::NotManifest { .. }) => {
                Error::Invalid(e.to_string())
            }
            ArchiveError::Io(e) => Error::Export(e),
            ArchiveError::Json(source) => Error::Json {
                what: "export index".into(),
                source,
            },
        }
    }
}

/// Where [`write_archive`] reads: the walks' JSON documents ([`BlobSource`]) and whole
/// blobs as a stream of known size.
pub trait BlobReader: BlobSource<Error: From<ArchiveError>> {
    /// A blob's bytes.
    type Blob: Read;
    /// Opens the blob `digest`; returns it with its size.
    fn open_blob(
        &self,
        digest: &str,
    ) -> impl std::future::Future<Output = Result<(Self::Blob, u64), Self::Error>>;
}

impl BlobReader for DbBlobs<'_> {
    type Blob = std::io::BufReader<crate::content::BlobReader>;
    async fn open_blob(&self, digest: &str) -> Result<(Self::Blob, u64), Error> {
        let d = crate::content::Digest::parse(digest)?;
        let (blob, size) = self.db.content_open(self.ctx, &d)?;
        Ok((
            std::io::BufReader::with_capacity(1 << 20, blob),
            u64::try_from(size).unwrap_or(0),
        ))
    }
}

/// Options of one export.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// The platforms whose manifests (and their blobs) go in.
    pub matcher: Matcher,
    /// Write Docker's `manifest.json` too.
    pub manifest_json: bool,
    /// Leave out non-distributable (foreign) layers.
    pub skip_non_distributable: bool,
    /// Give `index.json` its `mediaType`, as containerd 2 does (1.6's `ctr` leaves it out).
    pub index_media_type: bool,
}

fn blob_path(digest: &str) -> Result<String, ArchiveError> {
    match digest.split_once(':') {
        Some((alg, hex))
            if !alg.is_empty() && !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(format!("blobs/{alg}/{hex}"))
        }
        _ => Err(ArchiveError::Digest(digest.to_string())),
    }
}

/// docker/distribution `FamiliarString`: `docker.io/library/busybox:latest` → `busybox:latest`.
fn familiar(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
        None => name.to_string(),
    }
}

/// The tag (or digest) part of a name, for `org.opencontainers.image.ref.name`.
fn ref_name(name: &str) -> String {
    let last = name.rsplit_once('/').map_or(name, |(_, t)| t);
    if let Some((_, d)) = last.split_once('@') {
        return d.to_string();
    }
    last.rsplit_once(':').map_or(name, |(_, t)| t).to_string()
}

enum Record {
    Dir,
    Bytes(Vec<u8>),
    /// A blob of the content store, by digest.
    Blob(String),
}

/// Builds the archive's records for `images` (name, target).
async fn records<S: BlobReader>(
    src: &S,
    images: &[(String, Descriptor)],
    o: &ArchiveOptions,
) -> Result<BTreeMap<String, Record>, S::Error> {
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    records.insert(
        "oci-layout".into(),
        Record::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    let mut index_manifests = Vec::new();
    // The Docker manifest of each image, with every name that chose it.
    let mut docker: Vec<(Descriptor, Manifest, Vec<String>)> = Vec::new();
    for (name, target) in images {
        if !oci::is_manifest(&target.media_type) && !oci::is_index(&target.media_type) {
            return Err(ArchiveError::NotManifest {
                name: name.clone(),
                media_type: target.media_type.clone(),
            }
            .into());
        }
        let mut d = target.clone();
        let ann = d.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(oci::ANNOTATION_IMAGE_NAME.into(), name.clone());
        ann.insert(oci::ANNOTATION_REF_NAME.into(), ref_name(name));
        index_manifests.push(d);

        // Walk, keeping only children for the wanted platforms.
        let mut stack = vec![target.clone()];
        while let Some(desc) = stack.pop() {
            if o.skip_non_distributable && oci::is_non_distributable(&desc.media_type) {
                continue;
            }
            let mut children = oci::children_in(src, &desc).await?;
            children.retain(|c| o.matcher.matches(c.platform.as_ref()));
            records.insert(blob_path(&desc.digest)?, Record::Blob(desc.digest.clone()));
            stack.extend(children);
        }
        if let Ok((m, manifest)) = oci::resolve_manifest_in(src, target, &o.matcher).await {
            match docker.iter_mut().find(|(d, _, _)| d.digest == m.digest) {
                Some((_, _, names)) => names.push(name.clone()),
                None => docker.push((m, manifest, vec![name.clone()])),
            }
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: o.index_media_type.then(|| oci::MT_OCI_INDEX.to_string()),
        manifests: index_manifests,
        annotations: None,
    };
    let json = serde_json::to_vec(&index).map_err(ArchiveError::from)?;
    records.insert("index.json".into(), Record::Bytes(json));
    if o.manifest_json && !docker.is_empty() {
        let mut entries = Vec::new();
        for (_, manifest, names) in &docker {
            let layers = manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect::<Result<Vec<_>, _>>()?;
            entries.push(serde_json::json!({
                "Config": blob_path(&manifest.config.digest)?,
                "RepoTags": names.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
                "Layers": layers,
            }));
        }
        let json = serde_json::to_vec(&entries).map_err(ArchiveError::from)?;
        records.insert("manifest.json".into(), Record::Bytes(json));
    }
    let algorithms: Vec<String> = records
        .keys()
        .filter_map(|k| k.strip_prefix("blobs/"))
        .filter_map(|k| k.split_once('/').map(|(a, _)| a.to_string()))
        .collect();
    if !algorithms.is_empty() {
        records.insert("blobs/".into(), Record::Dir);
        for a in algorithms {
            records.insert(format!("blobs/{a}/"), Record::Dir);
        }
    }
    Ok(records)
}

/// Writes `images` (name, target) to `out` as an OCI image layout tar, reading from `src`.
pub async fn write_archive<S: BlobReader>(
    src: &S,
    images: &[(String, Descriptor)],
    o: &ArchiveOptions,
    out: impl Write,
) -> Result<(), S::Error> {
    let records = records(src, images, o).await?;
    let io = |e: std::io::Error| S::Error::from(ArchiveError::Io(e));
    let mut tar = tar::Builder::new(out);
    for (name, record) in records {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match record {
            Record::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_cksum();
                tar.append_data(&mut header, &name, std::io::empty())
                    .map_err(io)?;
            }
            Record::Bytes(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                // containerd writes the layout file read-only, like the blobs.
                header.set_mode(if name == "oci-layout" { 0o444 } else { 0o644 });
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, &name, data.as_slice())
                    .map_err(io)?;
            }
            Record::Blob(digest) => {
                let (blob, size) = src.open_blob(&digest).await?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o444);
                header.set_size(size);
                header.set_cksum();
                tar.append_data(&mut header, &name, blob).map_err(io)?;
            }
        }
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)
}

/// The whole export.
pub async fn export(
    t: &Transferrer,
    ctx: Ctx,
    src: ImageStore,
    dst: ExportStream,
    progress: &Progress,
) -> Result<(), Error> {
    progress.send(ProgressEvent::status("Exporting"));
    let names = naming::lookup_names(&src)?;
    let mut images = Vec::new();
    for n in names {
        let img = t.images.get(ctx.clone(), n.clone()).await?;
        images.push((n, Descriptor::from_meta(&img.target)));
    }
    let o = ArchiveOptions {
        matcher: if dst.all_platforms {
            Matcher::All
        } else if dst.platforms.is_empty() {
            Matcher::Any(vec![Platform::host()])
        } else {
            Matcher::Any(dst.platforms.clone())
        },
        manifest_json: !dst.skip_compatibility_manifest,
        skip_non_distributable: dst.skip_non_distributable,
        index_media_type: true,
    };
    let writer = super::stream::send_bytes(dst.stream);
    let db = t.db.clone();
    blocking(move || {
        // The store's reads never wait: the walk's futures are ready at once.
        futures::executor::block_on(write_archive(
            &DbBlobs { db: &db, ctx: &ctx },
            &images,
            &o,
            writer,
        ))
    })
    .await?;
    progress.send(ProgressEvent::status("Completed export"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/me/x:1"), "me/x:1");
        assert_eq!(familiar("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(ref_name("localhost:5000/x:1"), "1");
        assert_eq!(blob_path("sha256:ab").unwrap(), "blobs/sha256/ab");
        assert!(blob_path("sha256:../x").is_err());
    }
}
