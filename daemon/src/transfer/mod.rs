//! The transfer service's operations (containerd 2.x `core/transfer/local`): what
//! `ctr images pull|push|import|export|tag` ask the daemon to do when they run without
//! `--local`. The API layer (`api::transfer`) decodes the request's `Any`s into a
//! [`Source`] and a [`Destination`]; [`Transferrer::transfer`] picks the operation from the
//! pair, as containerd's `localTransferService.Transfer` does, and answers NotImplemented
//! for pairs it does not know.
//!
//! - [`stream`]: the Streaming side channels (registry by id, window protocol, progress).
//! - [`oci`]: OCI/Docker JSON types, children walks, GC labels, bounded JSON reads.
//! - [`naming`]: `ImageStore` semantics: which image names a stored descriptor gets.
//! - [`import`]: OCI layout / docker-archive tar → content + image records (+ unpack).
//! - [`export`]: image records → OCI layout tar with a Docker `manifest.json`.
//! - [`unpack`]: layers → committed snapshots, with the daemon's hardened applier.
//! - [`registry`]: pull from and push to an OCI registry over `crate::remotes`.
//!
//! Every operation runs under a temporary lease (random id, 24 h expiry, deleted at the
//! end, as containerd's `withLease`), so GC cannot take half-written content, and then asks
//! for a collection.

pub mod export;
pub mod import;
pub mod naming;
pub mod oci;
pub mod registry;
pub mod stream;
pub mod unpack;

use crate::errdefs::{HasKind, Kind};
use crate::metadata::{self, images::Image, Ctx, Db, Labels};
use std::sync::Arc;
pub use stream::{Progress, ProgressEvent, Stream, StreamManager};

/// Errors of transfer operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the metadata store.
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    /// A malformed digest.
    #[error(transparent)]
    Digest(#[from] crate::content::DigestError),
    /// From image record operations.
    #[error(transparent)]
    Images(#[from] crate::images::Error),
    /// A stream named in the request.
    #[error(transparent)]
    Stream(#[from] stream::Error),
    /// The source/destination pair is not an operation (containerd: ErrNotImplemented).
    #[error("unable to transfer from {src} to {dst}: not implemented")]
    Unsupported {
        /// Source kind.
        src: String,
        /// Destination kind.
        dst: String,
    },
    /// An option berthd does not implement.
    #[error("{0}: not implemented")]
    NotImplemented(String),
    /// Bad input.
    #[error("{0}: invalid argument")]
    Invalid(String),
    /// Something asked for does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// Reading the archive failed.
    #[error("read archive: {0} (is it an OCI layout or docker save tar?)")]
    Archive(String),
    /// An archive whose contents are not an image (containerd's `ImportIndex` messages).
    #[error("{0}")]
    Format(String),
    /// Writing the archive failed.
    #[error("write archive: {0}")]
    Export(#[source] std::io::Error),
    /// A JSON document that does not parse.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// Parse error.
        source: serde_json::Error,
    },
    /// A JSON document above the limit.
    #[error("{what} is larger than the {limit} byte limit for JSON documents")]
    TooLarge {
        /// Which document.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// No manifest for the platform.
    #[error("no match for platform {platform} in manifest {digest}: not found")]
    NoPlatform {
        /// The index.
        digest: String,
        /// Wanted platforms.
        platform: String,
    },
    /// Applying a layer failed.
    #[error("failed to extract layer {diff_id}: {source}")]
    Apply {
        /// The layer's diff id.
        diff_id: String,
        /// Cause.
        source: Box<crate::diff::Error>,
    },
    /// From the registry client.
    #[error("{0}")]
    Remote(String, Kind),
    /// A worker thread died.
    #[error("transfer worker failed: {0}")]
    Worker(String),
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Metadata(e) => e.kind(),
            Error::Digest(e) => e.kind(),
            Error::Images(e) => e.kind(),
            Error::Stream(e) => e.kind(),
            Error::Unsupported { .. } | Error::NotImplemented(_) => Kind::NotImplemented,
            Error::Invalid(_)
            | Error::Archive(_)
            | Error::Format(_)
            | Error::Json { .. }
            | Error::TooLarge { .. } => Kind::InvalidArgument,
            Error::NotFound(_) | Error::NoPlatform { .. } => Kind::NotFound,
            Error::Apply { source, .. } => match source.kind() {
                crate::diff::ErrorKind::InvalidArgument => Kind::InvalidArgument,
                crate::diff::ErrorKind::NotImplemented => Kind::NotImplemented,
                crate::diff::ErrorKind::Internal => Kind::Unknown,
            },
            Error::Remote(_, k) => *k,
            Error::Export(_) | Error::Worker(_) => Kind::Unknown,
        }
    }
}

/// One name reference of an `ImageStore` (containerd `image.Reference`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRef {
    /// Full name, or a prefix without tag or digest.
    pub name: String,
    /// `name` is a prefix.
    pub is_prefix: bool,
    /// A full name from an annotation may replace the prefix.
    pub allow_overwrite: bool,
    /// Also store `<prefix>@<digest>`.
    pub add_digest: bool,
    /// Skip the digest name when a named one was found.
    pub skip_named_digest: bool,
}

/// Where and for which platform to unpack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackTo {
    /// Platform (default: host).
    pub platform: Option<oci::Platform>,
    /// Snapshotter (empty: the daemon's default).
    pub snapshotter: String,
}

/// The local image store as source or destination (`containerd.types.transfer.ImageStore`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageStore {
    /// Image name.
    pub name: String,
    /// Labels of images created.
    pub labels: Labels,
    /// Platforms to fetch or push (empty: all).
    pub platforms: Vec<oci::Platform>,
    /// Keep metadata (manifests, configs) of the other platforms too.
    pub all_metadata: bool,
    /// At most this many manifests (0: no limit).
    pub manifest_limit: u32,
    /// More names.
    pub extra_references: Vec<ImageRef>,
    /// Unpack configurations.
    pub unpacks: Vec<UnpackTo>,
}

/// An import archive on a stream (`containerd.types.transfer.ImageImportStream`).
#[derive(Debug)]
pub struct ImportStream {
    /// The bytes.
    pub stream: Stream,
    /// Empty: sniff and decompress; else the archive's media type.
    pub media_type: String,
    /// Compress uncompressed layers (`ctr import --compress-blobs`).
    pub force_compress: bool,
}

/// An export archive to a stream (`containerd.types.transfer.ImageExportStream`).
#[derive(Debug)]
pub struct ExportStream {
    /// Where the tar goes.
    pub stream: Stream,
    /// Media type (unused: always an OCI layout tar).
    pub media_type: String,
    /// Platforms (empty: the host's, strictly).
    pub platforms: Vec<oci::Platform>,
    /// Every platform.
    pub all_platforms: bool,
    /// No Docker `manifest.json`.
    pub skip_compatibility_manifest: bool,
    /// Leave out non-distributable layers.
    pub skip_non_distributable: bool,
}

/// An OCI registry (`containerd.types.transfer.OCIRegistry`).
#[derive(Debug)]
pub struct Registry {
    /// Image reference.
    pub reference: String,
    /// Extra HTTP headers.
    pub headers: std::collections::HashMap<String, String>,
    /// `hosts.toml` directory.
    pub host_dir: String,
    /// `http` for plain-HTTP registries.
    pub default_scheme: String,
    /// Where credentials are asked for.
    pub auth: Option<Stream>,
}

/// A transfer source.
#[derive(Debug)]
pub enum Source {
    /// The local image store.
    ImageStore(ImageStore),
    /// An archive on a stream.
    ImportStream(ImportStream),
    /// A registry.
    Registry(Registry),
    /// A type berthd knows but cannot read from (its type URL).
    Other(String),
}

/// A transfer destination.
#[derive(Debug)]
pub enum Destination {
    /// The local image store.
    ImageStore(ImageStore),
    /// An archive to a stream.
    ExportStream(ExportStream),
    /// A registry.
    Registry(Registry),
    /// A type berthd knows but cannot write to (its type URL).
    Other(String),
}

fn src_name(s: &Source) -> String {
    match s {
        Source::ImageStore(i) => format!("Local Image Store ({})", i.name),
        Source::ImportStream(_) => "image import stream".into(),
        Source::Registry(r) => format!("OCI Registry ({})", r.reference),
        Source::Other(u) => u.clone(),
    }
}

fn dst_name(d: &Destination) -> String {
    match d {
        Destination::ImageStore(i) => format!("Local Image Store ({})", i.name),
        Destination::ExportStream(_) => "image export stream".into(),
        Destination::Registry(r) => format!("OCI Registry ({})", r.reference),
        Destination::Other(u) => u.clone(),
    }
}

/// The local transfer service.
#[derive(Debug, Clone)]
pub struct Transferrer {
    db: Arc<Db>,
    images: crate::images::Images,
    gc: metadata::gc::Scheduler,
    default_snapshotter: String,
}

/// A lease held for one operation.
struct OpLease {
    db: Arc<Db>,
    ctx: Ctx,
    id: Option<String>,
}

impl OpLease {
    async fn release(self, gc: &metadata::gc::Scheduler) {
        if let Some(id) = self.id {
            let (db, ctx) = (self.db, self.ctx);
            let r = tokio::task::spawn_blocking(move || db.lease_delete(&ctx, &id)).await;
            if let Ok(Err(e)) = r {
                log::warn!("transfer: releasing its lease: {e}");
            }
            gc.schedule();
        }
    }
}

/// Runs blocking transfer work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Worker(e.to_string()))?
}

impl Transferrer {
    /// Over the metadata store; image records go through `images` (events), snapshots
    /// into `default_snapshotter` when an unpack names none.
    pub fn new(
        db: Arc<Db>,
        images: crate::images::Images,
        gc: metadata::gc::Scheduler,
        default_snapshotter: impl Into<String>,
    ) -> Self {
        Self {
            db,
            images,
            gc,
            default_snapshotter: default_snapshotter.into(),
        }
    }

    /// containerd's `withLease`: the caller's lease if it has one, else a new one that
    /// expires in 24 h and is deleted when the operation ends.
    async fn lease(&self, ctx: &Ctx) -> Result<(Ctx, OpLease), Error> {
        if ctx.lease.is_some() {
            return Ok((
                ctx.clone(),
                OpLease {
                    db: Arc::clone(&self.db),
                    ctx: ctx.clone(),
                    id: None,
                },
            ));
        }
        let id = format!("transfer-{}", uuid::Uuid::new_v4().simple());
        let expire = chrono::Utc::now() + chrono::Duration::hours(24);
        let labels: Labels = [(
            "containerd.io/gc.expire".to_string(),
            expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )]
        .into();
        let (db, c, i) = (Arc::clone(&self.db), ctx.clone(), id.clone());
        blocking(move || Ok(db.lease_create(&c, &i, labels)?)).await?;
        let leased = Ctx {
            ns: ctx.ns.clone(),
            lease: Some(id.clone()),
        };
        Ok((
            leased,
            OpLease {
                db: Arc::clone(&self.db),
                ctx: ctx.clone(),
                id: Some(id),
            },
        ))
    }

    /// containerd's `getSupportedPlatform`: an unpack configuration is used when its
    /// platform (default: the host's) is the host's and its snapshotter (default: the
    /// daemon's) is loaded; any other is skipped with a warning, as containerd does.
    pub(crate) fn supported_unpack(&self, u: &UnpackTo) -> Option<(String, oci::Platform)> {
        let name = if u.snapshotter.is_empty() {
            self.default_snapshotter.clone()
        } else {
            u.snapshotter.clone()
        };
        let platform = u.platform.clone().unwrap_or_else(oci::Platform::host);
        if !oci::Platform::host().matches(&platform) || self.db.snapshotter(&name).is_err() {
            log::warn!(
                "transfer: unpack configuration not supported, skipping: platform {}, snapshotter {name:?}",
                platform.format()
            );
            return None;
        }
        Some((name, platform))
    }

    /// Runs one transfer (containerd `localTransferService.Transfer`).
    pub async fn transfer(
        &self,
        ctx: Ctx,
        src: Source,
        dst: Destination,
        progress: Progress,
    ) -> Result<(), Error> {
        match (src, dst) {
            (Source::ImportStream(i), Destination::ImageStore(s)) => {
                let (lctx, lease) = self.lease(&ctx).await?;
                let r = import::import(self, lctx, i, s, &progress).await;
                lease.release(&self.gc).await;
                r
            }
            (Source::ImportStream(i), Destination::ExportStream(e)) => echo(i, e).await,
            (Source::ImageStore(s), Destination::ExportStream(e)) => {
                let (lctx, lease) = self.lease(&ctx).await?;
                let r = export::export(self, lctx, s, e, &progress).await;
                lease.release(&self.gc).await;
                r
            }
            (Source::Registry(r), Destination::ImageStore(s)) => {
                let (lctx, lease) = self.lease(&ctx).await?;
                let res = registry::pull(self, lctx, r, s, &progress).await;
                lease.release(&self.gc).await;
                res
            }
            (Source::ImageStore(s), Destination::Registry(r)) => {
                // containerd's push takes no lease: it only reads.
                registry::push(self, ctx, s, r, &progress).await
            }
            (Source::ImageStore(from), Destination::ImageStore(to)) => {
                let (lctx, lease) = self.lease(&ctx).await?;
                let r = self.tag(lctx, from, to).await;
                lease.release(&self.gc).await;
                r
            }
            (s, d) => Err(Error::Unsupported {
                src: src_name(&s),
                dst: dst_name(&d),
            }),
        }
    }

    /// containerd `tag`: the source image's target stored under the destination's names.
    async fn tag(&self, ctx: Ctx, from: ImageStore, to: ImageStore) -> Result<(), Error> {
        let img = self.images.get(ctx.clone(), from.name.clone()).await?;
        let target = oci::Descriptor::from_meta(&img.target);
        self.store(&ctx, &to, &target).await?;
        Ok(())
    }

    /// `ImageStore.Store`: creates (or updates) every image the store names for `desc`.
    /// NotFound when it names none.
    pub(crate) async fn store(
        &self,
        ctx: &Ctx,
        store: &ImageStore,
        desc: &oci::Descriptor,
    ) -> Result<Vec<Image>, Error> {
        let imgs = naming::images_for(store, desc)?;
        let mut out = Vec::new();
        for img in imgs {
            out.push(self.create_or_update(ctx, img).await?);
        }
        Ok(out)
    }

    async fn create_or_update(&self, ctx: &Ctx, img: Image) -> Result<Image, Error> {
        // containerd retries a create after an update found the image removed meanwhile.
        for _ in 0..3 {
            match self.images.create(ctx.clone(), img.clone()).await {
                Ok(i) => return Ok(i),
                Err(e) if e.kind() == Kind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            match self
                .images
                .update(ctx.clone(), img.clone(), Vec::new())
                .await
            {
                Ok(i) => return Ok(i),
                Err(e) if e.kind() == Kind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Worker(format!(
            "image {:?} keeps being created and removed concurrently",
            img.name
        )))
    }
}

/// containerd's `echo`: an import stream copied to an export stream unchanged.
async fn echo(i: ImportStream, e: ExportStream) -> Result<(), Error> {
    let reader = stream::receive_bytes(i.stream);
    let writer = stream::send_bytes(e.stream);
    blocking(move || {
        let (mut r, mut w) = (reader, writer);
        std::io::copy(&mut r, &mut w).map_err(Error::Export)?;
        Ok(())
    })
    .await
}

/// The snapshotter an unpack without one uses: containerd's default (`overlayfs`) when it
/// is loaded, else the first loaded one.
pub fn default_snapshotter(loaded: &[String]) -> String {
    if loaded.iter().any(|s| s == "overlayfs") {
        "overlayfs".into()
    } else {
        loaded
            .first()
            .cloned()
            .unwrap_or_else(|| "overlayfs".into())
    }
}
