//! Import of an image archive from a stream (containerd `core/transfer/local/import.go`
//! over `core/images/archive/importer.go` `ImportIndex`).
//!
//! The tar (gzip/zstd sniffed and decompressed when the client gave no media type) is read
//! on a blocking thread as it arrives: every regular file goes straight into the content
//! store under the operation's lease (`tar-<name>` refs), `oci-layout` and `manifest.json`
//! are parsed (bounded). An OCI layout's `index.json` is the result; a `docker save`
//! archive gets a Docker schema 2 manifest per image and an OCI index over them, annotated
//! with the normalised repo tags — byte-for-byte what containerd writes, so digests match
//! `ctr import --local`. Then the index is walked like containerd's handler chain: GC
//! labels on every parent, children filtered by the store's platforms, each index entry
//! named by the `ImageStore` rules ([`super::naming`]), manifests for the unpack platforms
//! unpacked into snapshots.

use super::naming::REF_SOURCE;
use super::oci::{self, Descriptor, Index, Manifest, Matcher, Platform};
use super::{blocking, Error, ImageStore, ImportStream, Progress, ProgressEvent, Transferrer};
use crate::errdefs::{HasKind, Kind};
use crate::metadata::{Ctx, Db, Labels};
use crate::remotes::reference::ReferenceError;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

const CHUNK: usize = 1 << 20;

/// An OCI layout's `oci-layout` file.
#[derive(serde::Deserialize)]
pub struct OciLayout {
    /// Must be `1.0.0`.
    #[serde(rename = "imageLayoutVersion")]
    pub version: String,
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifest {
    /// Path of the config file in the archive.
    pub config: String,
    /// The names it was saved under.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer files, bottom first.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// A tar error for humans: the tar crate quotes raw header bytes, which for a file that is
/// not a tar at all is binary noise.
pub fn tar_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.chars().any(|c| c.is_control() || c == '\u{fffd}') {
        return "invalid tar header: not a tar archive".into();
    }
    text
}

#[allow(clippy::needless_pass_by_value)]
fn tar_err(e: std::io::Error) -> Error {
    Error::Archive(tar_error_text(&e))
}

/// The archive name a symlink entry `name` pointing at `link` stands for.
pub fn symlink_target(name: &str, link: &str) -> String {
    clean(&format!("{}/{link}", dir_of(name)))
}

/// What one tar entry of an image archive is to the importer.
pub enum ArchiveEntry {
    /// A regular file, by cleaned name.
    File(String),
    /// A symlink (`docker save` links repeated layers): `name` stands for `target`.
    Symlink {
        /// Cleaned name of the link.
        name: String,
        /// Cleaned name it points at.
        target: String,
    },
    /// Directories and anything else: ignored.
    Skip,
}

impl ArchiveEntry {
    /// Classifies `entry` (names cleaned as Go's `path.Clean`).
    pub fn of<R: Read>(entry: &tar::Entry<'_, R>) -> Self {
        let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let target = symlink_target(&name, &link);
            ArchiveEntry::Symlink { name, target }
        } else if kind.is_file() {
            ArchiveEntry::File(name)
        } else {
            ArchiveEntry::Skip
        }
    }
}

/// Makes every symlink name an alias of its target's blob (and first bytes); the
/// `(name, target)` of a link whose target is not in the archive is the error.
pub fn resolve_symlinks(
    blobs: &mut HashMap<String, Descriptor>,
    heads: &mut HashMap<String, Vec<u8>>,
    symlinks: &HashMap<String, String>,
) -> Result<(), (String, String)> {
    for (name, target) in symlinks {
        let desc = blobs
            .get(target)
            .cloned()
            .ok_or_else(|| (name.clone(), target.clone()))?;
        if let Some(h) = heads.get(target).cloned() {
            heads.insert(name.clone(), h);
        }
        blobs.insert(name.clone(), desc);
    }
    Ok(())
}

/// Go's `path.Clean` for the relative names in an archive.
pub fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn dir_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(d, _)| d)
}

/// docker/distribution `ParseDockerRef` (shared with the registry client):
/// `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_reference(reference: &str) -> Result<String, Error> {
    crate::remotes::reference::normalize(reference)
        .map_err(|e| Error::Invalid(format!("normalize image ref {reference:?}: {e}")))
}

/// The index entries for one docker-archive image: one per repo tag, annotated with the
/// normalised name and its OCI ref name, or `desc` alone when it has none.
pub fn tagged_entries(
    desc: &Descriptor,
    repo_tags: Option<Vec<String>>,
) -> Result<Vec<Descriptor>, ReferenceError> {
    let Some(tags) = repo_tags.filter(|t| !t.is_empty()) else {
        return Ok(vec![desc.clone()]);
    };
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        let normalized = crate::remotes::reference::normalize(&t)?;
        let mut d = desc.clone();
        d.annotations = Some(BTreeMap::from([
            (oci::ANNOTATION_IMAGE_NAME.to_string(), normalized.clone()),
            (
                oci::ANNOTATION_REF_NAME.to_string(),
                oci_reference_name(&normalized),
            ),
        ]));
        out.push(d);
    }
    Ok(out)
}

/// `ociReferenceName`: the object part of a normalised name (its tag, or `@digest`).
pub fn oci_reference_name(normalized: &str) -> String {
    if let Some((_, d)) = normalized.split_once('@') {
        return format!("@{d}");
    }
    let last_slash = normalized.rfind('/').map_or(0, |i| i + 1);
    normalized[last_slash..]
        .rsplit_once(':')
        .map_or_else(|| normalized.to_string(), |(_, t)| t.to_string())
}

/// What the tar held.
#[derive(Default)]
struct Ingested {
    layout: Option<OciLayout>,
    docker: Option<Vec<DockerManifest>>,
    blobs: HashMap<String, Descriptor>,
    heads: HashMap<String, Vec<u8>>,
    symlinks: HashMap<String, String>,
}

fn read_json_entry<T: serde::de::DeserializeOwned>(
    name: &str,
    entry: impl Read,
) -> Result<T, Error> {
    let mut buf = Vec::new();
    entry
        .take(oci::JSON_LIMIT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(tar_err)?;
    if buf.len() > oci::JSON_LIMIT {
        return Err(Error::TooLarge {
            what: format!("{name:?} in the archive"),
            limit: oci::JSON_LIMIT,
        });
    }
    serde_json::from_slice(&buf).map_err(|source| Error::Json {
        what: format!("untar {name:?}"),
        source,
    })
}

/// Streams one archive file into content; returns its digest and first bytes.
fn write_entry(
    db: &Arc<Db>,
    ctx: &Ctx,
    r#ref: &str,
    size: u64,
    mut entry: impl Read,
) -> Result<(String, Vec<u8>), Error> {
    let total = i64::try_from(size).unwrap_or(i64::MAX);
    let mut w = db.content_writer(ctx, r#ref, total, None)?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = entry.read(&mut buf).map_err(tar_err)?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16 - head.len())]);
        }
        w.write(&buf[..n])?;
    }
    let digest = w.digest().to_string();
    match w.commit(total, None, Labels::new()) {
        Ok(_) => {}
        Err(e) if e.kind() == Kind::AlreadyExists => {}
        Err(e) => {
            let _ = db.content_abort(ctx, r#ref);
            return Err(e.into());
        }
    }
    Ok((digest, head))
}

fn read_archive(db: &Arc<Db>, ctx: &Ctx, reader: impl Read) -> Result<Ingested, Error> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut out = Ingested::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(tar_err)? {
        let entry = entry.map_err(tar_err)?;
        let name = match ArchiveEntry::of(&entry) {
            ArchiveEntry::Symlink { name, target } => {
                out.symlinks.insert(name, target);
                continue;
            }
            ArchiveEntry::Skip => continue,
            ArchiveEntry::File(name) => name,
        };
        match name.as_str() {
            "oci-layout" => out.layout = Some(read_json_entry(&name, entry)?),
            "manifest.json" => out.docker = Some(read_json_entry(&name, entry)?),
            _ => {
                let size = entry.header().size().map_err(tar_err)?;
                // Unique per import, so concurrent imports of one archive do not collide
                // on the ingest ref lock.
                let r#ref = format!("tar-{name}-{}", &tag[..12]);
                let (digest, head) = write_entry(db, ctx, &r#ref, size, entry)?;
                out.blobs.insert(
                    name.clone(),
                    Descriptor {
                        digest,
                        size: i64::try_from(size).unwrap_or(i64::MAX),
                        ..Descriptor::default()
                    },
                );
                out.heads.insert(name, head);
            }
        }
    }
    Ok(out)
}

/// A stored blob labelled as the compressed form of uncompressed digest `diff_id`.
fn compressed_form(db: &Db, ctx: &Ctx, diff_id: &str) -> Result<Option<(String, i64)>, Error> {
    let f = crate::filters::Filter::parse_all([format!(
        "labels.\"{}\"=={diff_id}",
        oci::LABEL_UNCOMPRESSED
    )])
    .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(db
        .content_list(ctx, &f)?
        .into_iter()
        .next()
        .map(|i| (i.digest.to_string(), i.size)))
}

/// The Docker layer media type for a layer file starting with `head` (containerd's
/// `DetectCompression`: anything compressed is labelled gzip).
pub fn layer_media_type(head: &[u8]) -> &'static str {
    if crate::diff::Compression::detect(head) == crate::diff::Compression::Uncompressed {
        oci::MT_DOCKER_LAYER
    } else {
        oci::MT_DOCKER_LAYER_GZIP
    }
}

/// What [`docker_index`] finds wrong in a `docker save` archive.
#[derive(Debug, thiserror::Error)]
pub enum DockerArchiveError {
    /// A symlinked file whose target is not in the archive.
    #[error("no target for symlink layer from {name:?} to {target:?}")]
    Symlink {
        /// The link.
        name: String,
        /// Where it points.
        target: String,
    },
    /// `manifest.json` names a config the archive lacks.
    #[error("image config {0:?} not found")]
    NoConfig(String),
    /// `manifest.json` names a layer the archive lacks.
    #[error("failed to resolve layers: layer {0:?} not found")]
    NoLayer(String),
    /// A repo tag that is no image reference.
    #[error("normalize image ref {0:?}: invalid reference format")]
    BadRef(String),
    /// Encoding a generated manifest or index failed.
    #[error("generated manifest: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<DockerArchiveError> for Error {
    fn from(e: DockerArchiveError) -> Self {
        match e {
            DockerArchiveError::BadRef(t) => Error::Invalid(format!(
                "normalize image ref {t:?}: {}",
                ReferenceError::Invalid(t.clone())
            )),
            DockerArchiveError::Json(source) => Error::Json {
                what: "generated manifest".into(),
                source,
            },
            e => Error::Format(e.to_string()),
        }
    }
}

/// A stored compressed form of an uncompressed layer.
pub struct CompressedLayer {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: i64,
    /// Its first bytes (enough to detect the compression).
    pub head: Vec<u8>,
}

/// Where [`docker_index`] looks up and stores: the namespace's content here
/// ([`DbArchive`]), the content service over gRPC in the `berth` CLI.
pub trait DockerStore {
    /// The caller's error; [`DockerArchiveError`] converts into it.
    type Error: From<DockerArchiveError>;
    /// containerd's `resolveLayers`: a stored blob labelled as the compressed form of
    /// uncompressed layer `diff_id`.
    fn compressed_form(
        &self,
        diff_id: &str,
    ) -> impl std::future::Future<Output = Result<Option<CompressedLayer>, Self::Error>>;
    /// Stores a generated manifest or index; returns its digest and size.
    fn write_json(
        &self,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(String, i64), Self::Error>>;
    /// The platform of the index entry for a manifest with image config `config`.
    fn manifest_platform(
        &self,
        config: &Descriptor,
    ) -> impl std::future::Future<Output = Result<Option<Platform>, Self::Error>>;
}

/// The OCI index of a `docker save` archive (containerd `ImportIndex`, Docker branch):
/// per `manifest.json` entry, its config and layers looked up among the archive's files
/// (`blobs`, `heads`: name → descriptor, first bytes; `symlinks` resolved first), a
/// Docker schema 2 manifest stored for them, and an index over those, annotated with the
/// normalised repo tags.
pub async fn docker_index<S: DockerStore>(
    store: &S,
    manifests: Vec<DockerManifest>,
    mut blobs: HashMap<String, Descriptor>,
    mut heads: HashMap<String, Vec<u8>>,
    symlinks: &HashMap<String, String>,
) -> Result<Descriptor, S::Error> {
    resolve_symlinks(&mut blobs, &mut heads, symlinks)
        .map_err(|(name, target)| DockerArchiveError::Symlink { name, target })?;
    let mut index = Index {
        schema_version: 2,
        media_type: None,
        manifests: Vec::new(),
        annotations: None,
    };
    for m in manifests {
        let mut config = blobs
            .get(&clean(&m.config))
            .cloned()
            .ok_or_else(|| DockerArchiveError::NoConfig(m.config.clone()))?;
        config.media_type = oci::MT_DOCKER_CONFIG.to_string();
        let mut layers = Vec::new();
        for l in &m.layers {
            let key = clean(l);
            let mut d = blobs
                .get(&key)
                .cloned()
                .ok_or_else(|| DockerArchiveError::NoLayer(l.clone()))?;
            let mut head = heads.get(&key).cloned().unwrap_or_default();
            // containerd's resolveLayers: an uncompressed layer whose compressed form is
            // already stored (labelled `containerd.io/uncompressed`) is referenced compressed.
            if let Some(c) = store.compressed_form(&d.digest).await? {
                head = c.head;
                d.digest = c.digest;
                d.size = c.size;
            }
            d.media_type = layer_media_type(&head).to_string();
            layers.push(d);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MT_DOCKER_MANIFEST.to_string()),
            config: config.clone(),
            layers,
        };
        let bytes = serde_json::to_vec(&manifest).map_err(DockerArchiveError::from)?;
        let (digest, size) = store.write_json(bytes).await?;
        let desc = Descriptor {
            media_type: oci::MT_DOCKER_MANIFEST.to_string(),
            digest,
            size,
            platform: store.manifest_platform(&config).await?,
            ..Descriptor::default()
        };
        let entries = tagged_entries(&desc, m.repo_tags).map_err(|e| match e {
            ReferenceError::Invalid(t) => DockerArchiveError::BadRef(t),
        })?;
        index.manifests.extend(entries);
    }
    let bytes = serde_json::to_vec(&index).map_err(DockerArchiveError::from)?;
    let (digest, size) = store.write_json(bytes).await?;
    Ok(Descriptor {
        media_type: oci::MT_OCI_INDEX.to_string(),
        digest,
        size,
        ..Descriptor::default()
    })
}

/// The namespace's content in berthd's metadata store, as a [`DockerStore`].
struct DbArchive<'a> {
    db: &'a Arc<Db>,
    ctx: &'a Ctx,
}

impl DockerStore for DbArchive<'_> {
    type Error = Error;
    async fn compressed_form(&self, diff_id: &str) -> Result<Option<CompressedLayer>, Error> {
        let Some((digest, size)) = compressed_form(self.db, self.ctx, diff_id)? else {
            return Ok(None);
        };
        let head =
            self.db
                .content_read(self.ctx, &crate::content::Digest::parse(&digest)?, 0, 10)?;
        Ok(Some(CompressedLayer { digest, size, head }))
    }

    async fn write_json(&self, bytes: Vec<u8>) -> Result<(String, i64), Error> {
        let digest = oci::digest_of(&bytes);
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        oci::write_blob(
            self.db,
            self.ctx,
            &format!("manifest-{digest}"),
            &bytes,
            &digest,
        )?;
        Ok((digest, size))
    }

    async fn manifest_platform(&self, config: &Descriptor) -> Result<Option<Platform>, Error> {
        let cfg: oci::Config = oci::read_json(self.db, self.ctx, "image config", &config.digest)?;
        // containerd 2 leaves an empty platform out and normalises the rest.
        Ok(
            (!cfg.os.is_empty() || !cfg.architecture.is_empty()).then(|| {
                Platform::normalize(Platform {
                    architecture: cfg.architecture,
                    os: cfg.os,
                    variant: cfg.variant,
                    ..Platform::default()
                })
            }),
        )
    }
}

/// `ImportIndex`: the archive into content; returns the index descriptor.
fn import_index(db: &Arc<Db>, ctx: &Ctx, reader: impl Read) -> Result<Descriptor, Error> {
    let ing = read_archive(db, ctx, reader)?;
    if let Some(layout) = &ing.layout {
        if layout.version != "1.0.0" {
            return Err(Error::Format(format!(
                "unsupported OCI version {}",
                layout.version
            )));
        }
        let mut idx = ing
            .blobs
            .get("index.json")
            .cloned()
            .ok_or_else(|| Error::Format("missing index.json in OCI layout 1.0.0".into()))?;
        idx.media_type = oci::MT_OCI_INDEX.to_string();
        return Ok(idx);
    }
    if ing.docker.is_none() {
        return Err(Error::Format(
            "unrecognized image format: neither an OCI layout (oci-layout) nor a docker archive (manifest.json)".into(),
        ));
    }
    let manifests = ing.docker.unwrap_or_default();
    // The store's reads never wait: the future is ready at once.
    futures::executor::block_on(docker_index(
        &DbArchive { db, ctx },
        manifests,
        ing.blobs,
        ing.heads,
        &ing.symlinks,
    ))
}

/// What the walk found: descriptors to name, manifests reached.
pub(crate) struct Walked {
    /// The index and its entries (entries marked for naming from annotations).
    pub to_name: Vec<Descriptor>,
    /// Every manifest reached, with its parsed JSON.
    pub manifests: Vec<(Descriptor, Manifest)>,
}

/// The import handler chain: GC labels on every parent, children filtered by platform,
/// index entries marked for naming from their annotations (`WalkNotEmpty`).
pub(crate) fn walk(
    db: &Db,
    ctx: &Ctx,
    index: &Descriptor,
    store: &ImageStore,
) -> Result<Walked, Error> {
    let matcher = Matcher::of(store.platforms.clone());
    let top: Index = oci::read_json(db, ctx, "index", &index.digest)?;
    let mut w = Walked {
        to_name: vec![index.clone()],
        manifests: Vec::new(),
    };
    let mut children = top.manifests;
    for c in &mut children {
        c.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REF_SOURCE.into(), "annotation".into());
        w.to_name.push(c.clone());
    }
    oci::set_labels(db, ctx, &index.digest, &oci::gc_labels(&children))?;
    children.retain(|c| matcher.matches(c.platform.as_ref()));
    if store.manifest_limit > 0 {
        children.truncate(store.manifest_limit as usize);
    }
    if children.is_empty() {
        return Err(Error::NotFound(format!(
            "image might be filtered out: no manifest of index {} matches the requested platforms",
            index.digest
        )));
    }
    let mut stack = children;
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = stack.pop() {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        if oci::is_manifest(&d.media_type) {
            let m: Manifest = oci::read_json(db, ctx, "manifest", &d.digest)?;
            let mut kids = vec![m.config.clone()];
            kids.extend(m.layers.iter().cloned());
            oci::set_labels(db, ctx, &d.digest, &oci::gc_labels(&kids))?;
            w.manifests.push((d, m));
        } else if oci::is_index(&d.media_type) {
            let i: Index = oci::read_json(db, ctx, "index", &d.digest)?;
            oci::set_labels(db, ctx, &d.digest, &oci::gc_labels(&i.manifests))?;
            stack.extend(
                i.manifests
                    .into_iter()
                    .filter(|c| matcher.matches(c.platform.as_ref())),
            );
        }
    }
    Ok(w)
}

/// The whole import.
pub async fn import(
    t: &Transferrer,
    ctx: Ctx,
    src: ImportStream,
    store: ImageStore,
    progress: &Progress,
) -> Result<(), Error> {
    if src.force_compress {
        return Err(Error::NotImplemented(
            "compressing uncompressed layers on import (ctr import --compress-blobs)".into(),
        ));
    }
    progress.send(ProgressEvent::status("Importing"));
    let reader = super::stream::receive_bytes(src.stream);
    let (db, c) = (Arc::clone(&t.db), ctx.clone());
    let sniff = src.media_type.is_empty();
    let index = blocking(move || {
        if sniff {
            let (_, r) = crate::diff::compression::decompress(reader)
                .map_err(|e| Error::Archive(e.to_string()))?;
            import_index(&db, &c, r)
        } else {
            import_index(&db, &c, reader)
        }
    })
    .await?;
    log::debug!("transfer: imported index {}", index.digest);

    let (tt, c, s) = (t.clone(), ctx.clone(), store.clone());
    let to_name = blocking(move || {
        let w = walk(&tt.db, &c, &index, &s)?;
        // containerd reports no extraction progress for imports.
        super::unpack::unpack_matching(
            &tt,
            &c,
            &s.unpacks,
            &w.manifests,
            &Progress::default(),
            &|l: &Descriptor| format!("layer-{}", l.digest),
        )?;
        Ok(w.to_name)
    })
    .await?;

    for desc in to_name {
        match t.store(&ctx, &store, &desc).await {
            Ok(imgs) => {
                for img in imgs {
                    progress.send(ProgressEvent {
                        event: "saved".into(),
                        name: img.name,
                        desc: Some(img.target),
                        ..ProgressEvent::default()
                    });
                }
            }
            Err(e) if e.kind() == Kind::NotFound => {
                log::debug!("transfer: no image name for {}", desc.digest);
            }
            Err(e) => return Err(e),
        }
    }
    progress.send(ProgressEvent::status("Completed import"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_refs_normalize() {
        assert_eq!(
            normalize_reference("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("me/app:1.0").unwrap(),
            "docker.io/me/app:1.0"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert!(normalize_reference("Bad/Name").is_err());
        assert_eq!(
            oci_reference_name("docker.io/library/busybox:latest"),
            "latest"
        );
    }

    #[test]
    fn archive_names_clean_like_go_path() {
        assert_eq!(clean("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean("a/../b"), "b");
    }

    #[test]
    fn platforms_normalize() {
        let p = Platform::normalize(Platform {
            architecture: "aarch64".into(),
            os: "Linux".into(),
            variant: "v8".into(),
            ..Platform::default()
        });
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
            ("linux", "arm64", "")
        );
    }
}
