//! Task checkpoints in the content store (containerd `services/tasks/local.go`
//! `Checkpoint`/`Create` with `CreateTaskRequest.checkpoint`).
//!
//! Data flow, as containerd's:
//! - checkpoint: a private scratch directory is handed to the shim as the CRIU image path;
//!   afterwards the directory is written to the content store as an uncompressed tar
//!   ([`MEDIA_TYPE_CHECKPOINT`], containerd's `archive.Diff("", dir)`), followed by the
//!   container's spec (the proto `Any`, [`MEDIA_TYPE_CHECKPOINT_CONFIG`]); both under the
//!   request's lease, with the scratch path as the ingest ref. The client puts the two
//!   descriptors into the checkpoint image's index.
//! - restore: the checkpoint descriptor's blob is applied with the layer applier (which keeps
//!   every entry inside the target) into a fresh scratch directory, whose path becomes the
//!   shim's `CreateTaskRequest.checkpoint`. The shim restores at `Start` (the Go shim's
//!   `createdCheckpointState`), so the directory is kept until the init starts or the task
//!   is deleted — containerd never removes it; we do.
//!
//! Scratch directories live in `<state>/checkpoints` (mode 0700) and are removed when their
//! [`ScratchDir`] drops. At start-up, what a killed berthd left there is removed, except the
//! unpacked checkpoint of a re-adopted task whose Start is still to come ([`Scratch::reclaim`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use crate::content::Digest;
use crate::errdefs::{HasKind, Kind};
use crate::metadata::{self, Ctx, Db, Labels};

/// containerd `images.MediaTypeContainerd1Checkpoint`: the tar of the CRIU image directory.
pub const MEDIA_TYPE_CHECKPOINT: &str =
    "application/vnd.containerd.container.criu.checkpoint.criu.tar";
/// containerd `images.MediaTypeContainerd1CheckpointConfig`: the container's spec.
pub const MEDIA_TYPE_CHECKPOINT_CONFIG: &str =
    "application/vnd.containerd.container.checkpoint.config.v1+proto";

/// What can go wrong writing or reading a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The descriptor is not a CRIU checkpoint tar (containerd's message).
    #[error("unsupported checkpoint type {media_type:?}: expected {MEDIA_TYPE_CHECKPOINT:?} (the criu tar of a checkpoint image's index)")]
    UnsupportedType {
        /// The media type given.
        media_type: String,
    },
    /// The descriptor's digest does not parse.
    #[error("checkpoint descriptor digest {digest:?}: {reason}")]
    BadDigest {
        /// The digest given.
        digest: String,
        /// Why it is not a digest.
        reason: String,
    },
    /// The blob is not in the namespace's content store.
    #[error("checkpoint {digest}: not found in the content store of namespace {namespace}")]
    Missing {
        /// Digest of the blob.
        digest: String,
        /// The request's namespace.
        namespace: String,
    },
    /// The blob's size differs from the descriptor's.
    #[error("checkpoint {digest}: descriptor size {expected} does not match the stored blob ({actual} bytes)")]
    SizeMismatch {
        /// Digest of the blob.
        digest: String,
        /// Size in the descriptor.
        expected: i64,
        /// Size in the store.
        actual: i64,
    },
    /// The tar could not be applied (corrupt, truncated, hostile).
    #[error("checkpoint {digest}: cannot unpack into {dir}: {source}")]
    Unpack {
        /// Digest of the blob.
        digest: String,
        /// Scratch directory.
        dir: PathBuf,
        /// The applier's error.
        source: Box<crate::diff::Error>,
    },
    /// The metadata/content layer refused.
    #[error("{what}: {source}")]
    Content {
        /// What was being done.
        what: String,
        /// The store's error.
        source: Box<metadata::Error>,
    },
    /// A scratch directory could not be made or removed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Bad runtime options for a checkpoint or restore.
    #[error("{0}")]
    InvalidOptions(String),
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::UnsupportedType { .. }
            | Error::BadDigest { .. }
            | Error::SizeMismatch { .. }
            | Error::InvalidOptions(_) => Kind::InvalidArgument,
            Error::Missing { .. } => Kind::NotFound,
            Error::Unpack { source, .. } => match source.kind() {
                crate::diff::ErrorKind::InvalidArgument => Kind::InvalidArgument,
                crate::diff::ErrorKind::NotImplemented => Kind::NotImplemented,
                crate::diff::ErrorKind::Internal => Kind::Unknown,
            },
            Error::Content { source, .. } => source.kind(),
            Error::Io { .. } => Kind::Unknown,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name prefix of the scratch directories restores unpack into: `restore+<ns>+<id>+<uuid>`.
const RESTORE_PREFIX: &str = "restore+";
/// Separator in scratch directory names; containerd identifiers cannot contain it.
const SEP: char = '+';

/// Where scratch directories are made: `<state>/checkpoints`.
#[derive(Debug, Clone)]
pub struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Scratch space under berthd's state directory.
    pub fn new(state: &Path) -> Scratch {
        Scratch {
            root: state.join("checkpoints"),
        }
    }

    /// The directory holding the scratch directories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Start-up: what a previous berthd left. The unpacked checkpoint of a task that was
    /// re-adopted (`live(ns, id)`; berthd died between a restore's Create and Start) is kept
    /// and returned, keyed by (namespace, id); everything else (checkpoints being written,
    /// restores of tasks that are gone) is removed.
    pub fn reclaim(
        &self,
        live: impl Fn(&str, &str) -> bool,
    ) -> Vec<((String, String), ScratchDir)> {
        let mut kept = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return kept;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let task = name
                .strip_prefix(RESTORE_PREFIX)
                .and_then(|rest| {
                    let mut parts = rest.splitn(3, SEP);
                    Some((parts.next()?, parts.next()?, parts.next()?))
                })
                .filter(|(ns, id, _)| live(ns, id));
            match task {
                Some((ns, id, _)) => kept.push((
                    (ns.to_string(), id.to_string()),
                    ScratchDir { path: e.path() },
                )),
                None => {
                    if let Err(err) = std::fs::remove_dir_all(e.path()) {
                        log::warn!(
                            "removing stale checkpoint dir {}: {err}",
                            e.path().display()
                        );
                    }
                }
            }
        }
        kept
    }

    /// The scratch directory a restore of task `ns/id` unpacks into (its name carries the
    /// task, so a restarted berthd can keep it for the task's Start; `+` is in no id).
    pub fn create_for_restore(&self, ns: &str, id: &str) -> Result<ScratchDir> {
        self.create(&format!("{RESTORE_PREFIX}{ns}{SEP}{id}"))
    }

    /// A new private (0700) directory `<root>/<prefix>+<uuid>`, removed on drop.
    pub fn create(&self, prefix: &str) -> Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| Error::Io {
                op: "create checkpoint scratch root",
                path: self.root.clone(),
                source,
            })?;
        let path = self
            .root
            .join(format!("{prefix}{SEP}{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| Error::Io {
                op: "create checkpoint scratch dir",
                path: path.clone(),
                source,
            })?;
        Ok(ScratchDir { path })
    }
}

/// A scratch directory, removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing checkpoint dir {}: {e}", self.path.display()),
        }
    }
}

/// A content descriptor as the tasks API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
}

/// `std::io::Write` over a namespaced content writer.
struct IngestWrite<'a>(&'a mut metadata::content::NsWriter);

impl Write for IngestWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// containerd `writeContent`: ingest under `ref`, commit, return the descriptor. A blob the
/// namespace already holds (a second checkpoint of an unchanged spec) is not an error here:
/// its descriptor is returned, so the checkpoint image stays complete.
fn write_content<F>(
    db: &Arc<Db>,
    ctx: &Ctx,
    media_type: &str,
    r#ref: &str,
    fill: F,
) -> Result<Descriptor>
where
    F: FnOnce(&mut metadata::content::NsWriter) -> Result<()>,
{
    let content_err = |what: String| {
        move |source| Error::Content {
            what,
            source: Box::new(source),
        }
    };
    let mut w = db
        .content_writer(ctx, r#ref, 0, None)
        .map_err(content_err(format!("open content writer {ref:?}")))?;
    if let Err(e) = fill(&mut w) {
        drop(w);
        if let Err(ae) = db.content_abort(ctx, r#ref) {
            log::warn!("aborting ingest {ref:?}: {ae}");
        }
        return Err(e);
    }
    let size = w.status().offset;
    let digest = w.digest();
    match w.commit(size, Some(digest.clone()), Labels::new()) {
        Ok(_) => {}
        Err(e) if e.kind() == Kind::AlreadyExists => {}
        Err(e) => {
            let _ = db.content_abort(ctx, r#ref);
            return Err(Error::Content {
                what: format!("commit {media_type} {digest}"),
                source: Box::new(e),
            });
        }
    }
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
    })
}

/// containerd `archive.Diff("", dir)`: every entry of `dir` as an uncompressed tar, names
/// relative to `dir`, symlinks kept as links, owners/modes/times complete. Written straight
/// to the ingest (which digests it once) through a 1 MiB buffer.
fn archive_dir(dir: &Path, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_dir_all("", dir)?;
    b.into_inner()?.flush()
}

/// Writes the CRIU image directory `dir` as a tar, then `spec` (the container's spec `Any`,
/// proto-encoded), into the namespace's content store. Blocking.
pub fn store_checkpoint(
    db: &Arc<Db>,
    ctx: &Ctx,
    dir: &Path,
    spec: &prost_types::Any,
) -> Result<Vec<Descriptor>> {
    let tar = write_content(
        db,
        ctx,
        MEDIA_TYPE_CHECKPOINT,
        &dir.display().to_string(),
        |w| {
            archive_dir(dir, IngestWrite(w)).map_err(|source| Error::Io {
                op: "archive checkpoint directory",
                path: dir.to_path_buf(),
                source,
            })
        },
    )?;
    let data = spec.encode_to_vec();
    let spec = write_content(
        db,
        ctx,
        MEDIA_TYPE_CHECKPOINT_CONFIG,
        &dir.join("spec").display().to_string(),
        |w| {
            w.write(&data).map_err(|source| Error::Content {
                what: "write checkpoint spec".into(),
                source: Box::new(source),
            })
        },
    )?;
    Ok(vec![tar, spec])
}

/// Checks the descriptor and unpacks its blob into `dir`. Blocking.
pub fn unpack_checkpoint(db: &Db, ctx: &Ctx, desc: &Descriptor, dir: &Path) -> Result<()> {
    if desc.media_type != MEDIA_TYPE_CHECKPOINT {
        return Err(Error::UnsupportedType {
            media_type: desc.media_type.clone(),
        });
    }
    let digest = Digest::parse(&desc.digest).map_err(|e| Error::BadDigest {
        digest: desc.digest.clone(),
        reason: e.to_string(),
    })?;
    let (file, size) = db.content_open(ctx, &digest).map_err(|e| {
        if e.kind() == Kind::NotFound {
            Error::Missing {
                digest: desc.digest.clone(),
                namespace: ctx.ns.as_str().to_string(),
            }
        } else {
            Error::Content {
                what: format!("open checkpoint {}", desc.digest),
                source: Box::new(e),
            }
        }
    })?;
    if desc.size > 0 && desc.size != size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: size,
        });
    }
    crate::diff::apply_layer(
        std::io::BufReader::new(file),
        crate::diff::compression::MEDIA_TYPE_LAYER,
        &crate::diff::ApplyTarget::Dir(dir),
        None,
    )
    .map_err(|source| Error::Unpack {
        digest: desc.digest.clone(),
        dir: dir.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(())
}

/// runc `CheckpointOptions` / runctypes `CheckpointOptions` for a runtime, as containerd's
/// `getCheckpointPath` reads them: the image path (empty: checkpoint into the content store).
pub fn checkpoint_path(runtime: &str, options: Option<&prost_types::Any>) -> Result<String> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty()) else {
        return Ok(String::new());
    };
    if is_runc(runtime) {
        if !any
            .type_url
            .ends_with("containerd.runc.v1.CheckpointOptions")
        {
            return Err(Error::InvalidOptions(format!(
                "invalid task checkpoint option for {runtime}: got {:?}, want containerd.runc.v1.CheckpointOptions",
                any.type_url
            )));
        }
        let o = protos::runc_options::CheckpointOptions::decode(any.value.as_slice())
            .map_err(|e| Error::InvalidOptions(format!("checkpoint options for {runtime}: {e}")))?;
        return Ok(o.image_path);
    }
    if runtime == super::v1::RUNTIME_NAME {
        if !any
            .type_url
            .ends_with("containerd.linux.runc.CheckpointOptions")
        {
            return Err(Error::InvalidOptions(format!(
                "invalid task checkpoint option for {runtime}: got {:?}, want containerd.linux.runc.CheckpointOptions",
                any.type_url
            )));
        }
        let o = LinuxCheckpointOptions::decode(any.value.as_slice())
            .map_err(|e| Error::InvalidOptions(format!("checkpoint options for {runtime}: {e}")))?;
        return Ok(o.image_path);
    }
    Ok(String::new())
}

/// runc `Options.CriuImagePath` / runctypes `CreateOptions.CriuImagePath`, as containerd's
/// `getRestorePath`: a checkpoint directory to restore from (empty: none).
pub fn restore_path(runtime: &str, options: Option<&prost_types::Any>) -> Result<String> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty()) else {
        return Ok(String::new());
    };
    if is_runc(runtime) {
        if !any.type_url.ends_with("containerd.runc.v1.Options") {
            return Err(Error::InvalidOptions(format!(
                "invalid task create option for {runtime}: got {:?}, want containerd.runc.v1.Options",
                any.type_url
            )));
        }
        let o = protos::runc_options::Options::decode(any.value.as_slice())
            .map_err(|e| Error::InvalidOptions(format!("task options for {runtime}: {e}")))?;
        return Ok(o.criu_image_path);
    }
    if runtime == super::v1::RUNTIME_NAME {
        if !any
            .type_url
            .ends_with("containerd.linux.runc.CreateOptions")
        {
            return Err(Error::InvalidOptions(format!(
                "invalid task create option for {runtime}: got {:?}, want containerd.linux.runc.CreateOptions",
                any.type_url
            )));
        }
        let o = LinuxCreateOptions::decode(any.value.as_slice())
            .map_err(|e| Error::InvalidOptions(format!("task options for {runtime}: {e}")))?;
        return Ok(o.criu_image_path);
    }
    Ok(String::new())
}

/// containerd's `checkRuntime(runtime, "io.containerd.runc")`: the name without its version.
fn is_runc(runtime: &str) -> bool {
    runtime
        .rsplit_once('.')
        .is_some_and(|(base, _)| base == "io.containerd.runc")
}

/// The fields of runctypes `CheckpointOptions` (`runtime/linux/runctypes/runc.proto`) read
/// here.
#[derive(Clone, PartialEq, prost::Message)]
struct LinuxCheckpointOptions {
    #[prost(string, tag = "9")]
    image_path: String,
}

/// The fields of runctypes `CreateOptions` read here.
#[derive(Clone, PartialEq, prost::Message)]
struct LinuxCreateOptions {
    #[prost(string, tag = "13")]
    criu_image_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.into(),
            value,
        }
    }

    #[test]
    fn options_are_read_per_runtime_like_containerd() {
        let o = protos::runc_options::CheckpointOptions {
            image_path: "/ck".into(),
            ..Default::default()
        };
        let a = any("containerd.runc.v1.CheckpointOptions", o.encode_to_vec());
        assert_eq!(
            checkpoint_path("io.containerd.runc.v2", Some(&a)).unwrap(),
            "/ck"
        );
        assert_eq!(checkpoint_path("io.containerd.runc.v2", None).unwrap(), "");
        // An empty Any is no options (some clients send one).
        let empty = any("", Vec::new());
        assert_eq!(
            checkpoint_path("io.containerd.runc.v2", Some(&empty)).unwrap(),
            ""
        );
        assert_eq!(
            restore_path("io.containerd.runc.v2", Some(&empty)).unwrap(),
            ""
        );
        // Another runtime: options are not runc's, no path.
        assert_eq!(
            checkpoint_path("io.containerd.kata.v2", Some(&a)).unwrap(),
            ""
        );
        let wrong = any("containerd.runc.v1.Options", Vec::new());
        let e = checkpoint_path("io.containerd.runc.v1", Some(&wrong)).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert!(
            e.to_string().contains("invalid task checkpoint option"),
            "{e}"
        );

        let v1 = LinuxCheckpointOptions {
            image_path: "/v1".into(),
        };
        let a = any(
            "containerd.linux.runc.CheckpointOptions",
            v1.encode_to_vec(),
        );
        assert_eq!(
            checkpoint_path(super::super::v1::RUNTIME_NAME, Some(&a)).unwrap(),
            "/v1"
        );

        let o = protos::runc_options::Options {
            criu_image_path: "/restore".into(),
            ..Default::default()
        };
        let a = any("containerd.runc.v1.Options", o.encode_to_vec());
        assert_eq!(
            restore_path("io.containerd.runc.v2", Some(&a)).unwrap(),
            "/restore"
        );
        let e = restore_path("io.containerd.runc.v2", Some(&wrong_create())).unwrap_err();
        assert!(e.to_string().contains("invalid task create option"), "{e}");
    }

    fn wrong_create() -> prost_types::Any {
        any("containerd.runc.v1.CheckpointOptions", Vec::new())
    }

    #[test]
    fn scratch_dirs_are_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let s = Scratch::new(t.path());
        let d = s.create("ctrd-checkpoint").unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(p.join("x"), b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        drop(d);
        assert!(!p.exists());
        let left = s.create("ctrd-checkpoint").unwrap();
        let stale = left.path().to_path_buf();
        std::mem::forget(left);
        let keep = s.create_for_restore("ns-1", "c.1").unwrap();
        let keep_path = keep.path().to_path_buf();
        std::mem::forget(keep);
        let gone = s.create_for_restore("ns-1", "dead").unwrap();
        let gone_path = gone.path().to_path_buf();
        std::mem::forget(gone);
        let kept = s.reclaim(|ns, id| ns == "ns-1" && id == "c.1");
        assert!(!stale.exists(), "a checkpoint being written is removed");
        assert!(
            !gone_path.exists(),
            "a restore of a task that is gone is removed"
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].0, ("ns-1".to_string(), "c.1".to_string()));
        assert_eq!(kept[0].1.path(), keep_path);
        drop(kept);
        assert!(!keep_path.exists(), "removed once dropped");
    }

    #[test]
    fn checkpoint_round_trips_through_the_content_store() {
        let (t, db) = metadata::testutil::db(metadata::SharingPolicy::Shared);
        let db = Arc::new(db);
        let ctx = metadata::testutil::ctx("ns1");
        let scratch = Scratch::new(t.path());
        let img = scratch.create("ctrd-checkpoint").unwrap();
        std::fs::create_dir(img.path().join("sub")).unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(img.path().join("sub/pages-1.img"), &payload).unwrap();
        std::os::unix::fs::symlink("sub/pages-1.img", img.path().join("link")).unwrap();
        let spec = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{\"ociVersion\":\"1.0.2\"}".to_vec(),
        };
        let descs = store_checkpoint(&db, &ctx, img.path(), &spec).unwrap();
        assert_eq!(descs.len(), 2);
        assert_eq!(descs[0].media_type, MEDIA_TYPE_CHECKPOINT);
        assert_eq!(descs[1].media_type, MEDIA_TYPE_CHECKPOINT_CONFIG);
        let spec_back = db
            .content_read(&ctx, &Digest::parse(&descs[1].digest).unwrap(), 0, 0)
            .unwrap();
        assert_eq!(
            prost_types::Any::decode(spec_back.as_slice()).unwrap(),
            spec
        );
        // A second checkpoint with the same spec still returns both descriptors.
        let again = store_checkpoint(&db, &ctx, img.path(), &spec).unwrap();
        assert_eq!(again[1], descs[1]);

        let out = scratch.create("ctrd-checkpoint").unwrap();
        unpack_checkpoint(&db, &ctx, &descs[0], out.path()).unwrap();
        assert_eq!(
            std::fs::read(out.path().join("sub/pages-1.img")).unwrap(),
            payload
        );
        assert_eq!(
            std::fs::read_link(out.path().join("link")).unwrap(),
            std::path::Path::new("sub/pages-1.img")
        );

        // Bad input: the wrong media type, a missing blob, a corrupt tar.
        let mut wrong = descs[0].clone();
        wrong.media_type = MEDIA_TYPE_CHECKPOINT_CONFIG.into();
        let e = unpack_checkpoint(&db, &ctx, &wrong, out.path()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
        assert!(e.to_string().contains("unsupported checkpoint type"), "{e}");
        let mut missing = descs[0].clone();
        missing.digest = Digest::from_bytes(b"nothing").to_string();
        let e = unpack_checkpoint(&db, &ctx, &missing, out.path()).unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound, "{e}");
        let e = unpack_checkpoint(
            &db,
            &metadata::testutil::ctx("other"),
            &descs[0],
            out.path(),
        )
        .unwrap_err();
        assert_eq!(
            e.kind(),
            Kind::NotFound,
            "other namespaces do not see it: {e}"
        );
        let junk = write_content(&db, &ctx, MEDIA_TYPE_CHECKPOINT, "junk", |w| {
            w.write(&[0x55; 1536]).map_err(|source| Error::Content {
                what: "junk".into(),
                source: Box::new(source),
            })
        })
        .unwrap();
        let e = unpack_checkpoint(&db, &ctx, &junk, out.path()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(&junk.digest), "{e}");
    }
}
