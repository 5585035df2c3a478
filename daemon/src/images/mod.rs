//! Image-level operations above the metadata store (containerd `services/images/local.go`
//! around `metadata/images.go`): create/update/delete with their `/images/*` events, the
//! optional target check and synchronous GC on delete; and reading an image's index,
//! manifest and config back from content with containerd's size bound on JSON blobs
//! (CVE-2023-25153: a hostile manifest must not make the daemon allocate without limit),
//! platform selection and chain ids, to tell whether an image is unpacked in a snapshotter.

use crate::content::{Digest, DigestError};
use crate::errdefs::{HasKind, Kind};
use crate::events::Exchange;
use crate::filters::Filter;
use crate::metadata::gc::Scheduler;
use crate::metadata::images::Image;
use crate::metadata::{self, Ctx, Db, Descriptor};
use protos::containerd::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// Largest manifest, index or config read from content (containerd's `MaxManifestSize`).
pub const MAX_JSON_SIZE: i64 = 4 << 20;

/// Errors of image operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the metadata store.
    #[error(transparent)]
    Metadata(#[from] metadata::Error),
    /// A descriptor with a malformed digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A JSON blob above [`MAX_JSON_SIZE`].
    #[error("{what} {digest} is {size} bytes, more than the {limit} bytes allowed")]
    TooLarge {
        /// Index, manifest or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Its size.
        size: i64,
        /// The bound.
        limit: i64,
    },
    /// A blob that is not the JSON it should be.
    #[error("{what} {digest}: {source}")]
    Json {
        /// Index, manifest or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Parse error.
        source: serde_json::Error,
    },
    /// An index without a manifest for the platform.
    #[error("image index {digest} has no manifest for {platform}")]
    NoPlatform {
        /// The index.
        digest: String,
        /// `os/arch`.
        platform: String,
    },
    /// A media type that is neither an index nor a manifest.
    #[error("unsupported image media type {0:?}")]
    MediaType(String),
    /// Delete with a target that is no longer the image's.
    #[error("image {name:?} target is {actual}, not {expected}: failed precondition")]
    TargetMismatch {
        /// Image name.
        name: String,
        /// Target asked for.
        expected: String,
        /// Current target.
        actual: String,
    },
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Metadata(e) => e.kind(),
            Error::Digest(e) => e.kind(),
            Error::TooLarge { .. } | Error::Json { .. } | Error::MediaType(_) => {
                Kind::InvalidArgument
            }
            Error::NoPlatform { .. } => Kind::NotFound,
            Error::TargetMismatch { .. } => Kind::FailedPrecondition,
        }
    }
}

/// Image operations with their side effects (events, GC).
#[derive(Debug, Clone)]
pub struct Images {
    db: Arc<Db>,
    events: Exchange,
    gc: Scheduler,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Error::Metadata(metadata::Error::Precondition(format!(
            "image worker failed: {e}"
        )))
    })?
}

impl Images {
    /// Over `db`, publishing to `events`, collecting with `gc`.
    pub fn new(db: Arc<Db>, events: Exchange, gc: Scheduler) -> Self {
        Self { db, events, gc }
    }

    /// One image.
    pub async fn get(&self, ctx: Ctx, name: String) -> Result<Image, Error> {
        let db = Arc::clone(&self.db);
        blocking(move || Ok(db.image_get(&ctx, &name)?)).await
    }

    /// Images passing `filter`.
    pub async fn list(&self, ctx: Ctx, filter: Filter) -> Result<Vec<Image>, Error> {
        let db = Arc::clone(&self.db);
        blocking(move || Ok(db.image_list(&ctx, &filter)?)).await
    }

    /// Creates an image and publishes `/images/create`.
    pub async fn create(&self, ctx: Ctx, img: Image) -> Result<Image, Error> {
        let db = Arc::clone(&self.db);
        let ns = ctx.ns.to_string();
        let created = blocking(move || Ok(db.image_create(&ctx, img)?)).await?;
        let ev = ImageCreate {
            name: created.name.clone(),
            labels: created.labels.clone(),
        };
        self.events.publish(&ns, &ev);
        Ok(created)
    }

    /// Updates by field paths and publishes `/images/update`.
    pub async fn update(&self, ctx: Ctx, img: Image, paths: Vec<String>) -> Result<Image, Error> {
        let db = Arc::clone(&self.db);
        let ns = ctx.ns.to_string();
        let updated = blocking(move || Ok(db.image_update(&ctx, &img, &paths)?)).await?;
        let ev = ImageUpdate {
            name: updated.name.clone(),
            labels: updated.labels.clone(),
        };
        self.events.publish(&ns, &ev);
        Ok(updated)
    }

    /// Deletes (only if its target is still `target`, when given), publishes
    /// `/images/delete`, then collects now (`sync`) or soon.
    pub async fn delete(
        &self,
        ctx: Ctx,
        name: String,
        target: Option<String>,
        sync: bool,
    ) -> Result<(), Error> {
        let db = Arc::clone(&self.db);
        let ns = ctx.ns.to_string();
        let n = name.clone();
        blocking(move || {
            if let Some(expected) = target {
                let cur = db.image_get(&ctx, &n)?;
                if cur.target.digest != expected {
                    return Err(Error::TargetMismatch {
                        name: n,
                        expected,
                        actual: cur.target.digest,
                    });
                }
            }
            Ok(db.image_delete(&ctx, &n)?)
        })
        .await?;
        self.events.publish(&ns, &ImageDelete { name });
        if sync {
            self.gc.collect_now().await?;
        } else {
            self.gc.schedule();
        }
        Ok(())
    }
}

/// Reads and parses a JSON blob of at most [`MAX_JSON_SIZE`] bytes.
pub fn read_json<T: DeserializeOwned>(
    db: &Db,
    ctx: &Ctx,
    what: &'static str,
    desc: &Descriptor,
) -> Result<T, Error> {
    let d = Digest::parse(&desc.digest)?;
    let info = db.content_info(ctx, &d)?;
    if info.size > MAX_JSON_SIZE || desc.size > MAX_JSON_SIZE {
        return Err(Error::TooLarge {
            what,
            digest: desc.digest.clone(),
            size: info.size.max(desc.size),
            limit: MAX_JSON_SIZE,
        });
    }
    let data = db.content_read(ctx, &d, 0, 0)?;
    serde_json::from_slice(&data).map_err(|source| Error::Json {
        what,
        digest: desc.digest.clone(),
        source,
    })
}

fn is_index(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

fn is_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

/// Follows `target` (an index or a manifest) to the manifest for `os`/`arch`.
pub fn manifest_for(
    db: &Db,
    ctx: &Ctx,
    target: &Descriptor,
    os: &str,
    arch: &str,
) -> Result<oci_spec::image::ImageManifest, Error> {
    let mut desc = target.clone();
    // Nested indexes are legal; a bound on depth keeps a hostile cycle finite.
    for _ in 0..4 {
        if is_manifest(&desc.media_type) {
            return read_json(db, ctx, "manifest", &desc);
        }
        if !is_index(&desc.media_type) {
            return Err(Error::MediaType(desc.media_type));
        }
        let index: oci_spec::image::ImageIndex = read_json(db, ctx, "index", &desc)?;
        let m = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_none_or(|p| {
                    p.os().to_string() == os && p.architecture().to_string() == arch
                })
            })
            .ok_or_else(|| Error::NoPlatform {
                digest: desc.digest.clone(),
                platform: format!("{os}/{arch}"),
            })?;
        desc = Descriptor {
            media_type: m.media_type().to_string(),
            digest: m.digest().to_string(),
            size: i64::try_from(m.size()).unwrap_or(i64::MAX),
            annotations: Default::default(),
        };
    }
    Err(Error::MediaType(format!(
        "{} (index nesting too deep)",
        desc.media_type
    )))
}

/// containerd's chain ids: chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// The host platform as OCI names it.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// Whether the image's top layer chain exists as a committed snapshot in `snapshotter`.
pub fn unpacked(db: &Db, ctx: &Ctx, img: &Image, snapshotter: &str) -> Result<bool, Error> {
    let (os, arch) = host_platform();
    let manifest = manifest_for(db, ctx, &img.target, os, arch)?;
    let cfg_desc = manifest.config();
    let config: oci_spec::image::ImageConfiguration = read_json(
        db,
        ctx,
        "config",
        &Descriptor {
            media_type: cfg_desc.media_type().to_string(),
            digest: cfg_desc.digest().to_string(),
            size: i64::try_from(cfg_desc.size()).unwrap_or(i64::MAX),
            annotations: Default::default(),
        },
    )?;
    let chains = chain_ids(config.rootfs().diff_ids());
    let Some(top) = chains.last() else {
        return Ok(false);
    };
    Ok(db.snapshot_stat(ctx, snapshotter, top).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{testutil, Labels};

    fn put(db: &Arc<Db>, ctx: &Ctx, data: &[u8]) -> Descriptor {
        let d = Digest::from_bytes(data);
        let mut w = db.content_writer(ctx, &format!("r-{d}"), 0, None).unwrap();
        w.write(data).unwrap();
        match w.commit(0, None, Labels::new()) {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::AlreadyExists => {}
            Err(e) => panic!("{e}"),
        }
        Descriptor {
            media_type: String::new(),
            digest: d.to_string(),
            size: data.len() as i64,
            annotations: Default::default(),
        }
    }

    #[test]
    fn chain_ids_match_containerd() {
        // Values from containerd's identity.ChainIDs for two layers.
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
            )
        );
    }

    #[test]
    fn index_to_manifest_to_unpacked() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let ctx = testutil::ctx("default");
        let (os, arch) = host_platform();
        let diff = format!("sha256:{}", "c".repeat(64));
        let config = put(&db, &ctx, serde_json::json!({"architecture": arch, "os": os, "rootfs": {"type": "layers", "diff_ids": [diff]}}).to_string().as_bytes());
        let manifest = put(&db, &ctx, serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.size},
            "layers": []}).to_string().as_bytes());
        let index = put(&db, &ctx, serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "d".repeat(64)), "size": 1, "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest.digest, "size": manifest.size, "platform": {"os": os, "architecture": arch}}
            ]}).to_string().as_bytes());
        let img = Image {
            name: "x".into(),
            target: Descriptor {
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                ..index
            },
            ..Default::default()
        };
        assert!(!unpacked(&db, &ctx, &img, "native").unwrap());
        db.snapshot_create(&ctx, "native", "tmp", "", Labels::new(), false)
            .unwrap();
        db.snapshot_commit(&ctx, "native", &diff, "tmp", Labels::new())
            .unwrap();
        assert!(unpacked(&db, &ctx, &img, "native").unwrap());
        let err = manifest_for(&db, &ctx, &img.target, "linux", "riscv64").unwrap_err();
        assert_eq!(err.kind(), Kind::NotFound, "{err}");
    }

    #[test]
    fn oversized_json_is_refused_before_reading() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let ctx = testutil::ctx("default");
        let big = vec![b' '; usize::try_from(MAX_JSON_SIZE).unwrap() + 1];
        let mut d = put(&db, &ctx, &big);
        d.media_type = "application/vnd.oci.image.manifest.v1+json".into();
        let err = manifest_for(&db, &ctx, &d, "linux", "amd64").unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
