//! Layer diffs: applying an OCI/Docker layer tar onto a snapshot, and producing one from two
//! snapshots (containerd's `diff/apply`, `diff/walking` and `archive/`).
//!
//! - [`apply`]: the layer applier. It never uses `tar::Archive::unpack` (RUSTSEC-2021-0080):
//!   it walks raw tar entries, resolves every parent with `openat2(RESOLVE_IN_ROOT)` on a
//!   directory fd of the target, and creates each file itself with `*at` syscalls on that fd,
//!   so no entry, symlink or hard link can reach outside the target (containerd's
//!   TestBreakouts cases are the test table). Whiteouts are deleted on a mounted snapshot, or
//!   converted to overlayfs whiteouts when applying straight into an overlay upper directory,
//!   as containerd does for each snapshotter.
//! - [`walking`]: the walking differ: compares a lower and an upper tree and writes an OCI
//!   layer (gzip by default) with `.wh.` whiteouts for deletions.
//! - [`compression`]: media types, compression sniffing, digesting readers and writers.
//!
//! Content access is the caller's: apply takes any `Read` of the blob, diff writes to any
//! `Write` and returns the digests to commit it under. The gRPC adapters call, inside
//! `spawn_blocking`:
//! - `Apply`: `apply_to_mounts(&mounts, blob_reader, &desc.media_type, None)` → the
//!   uncompressed layer's [`Descriptor`] (reply `applied`); [`Error::kind`] picks the code.
//! - `Diff`: `diff_mounts(&left, &right, content_writer, &DiffOptions::for_media_type(&req.media_type)?)`
//!   → `(writer, DiffResult)`; commit the written blob under `result.descriptor.digest` with
//!   the label `containerd.io/uncompressed = result.diff_id`, reply `result.descriptor`.

pub mod apply;
pub mod compression;
pub mod walking;

use std::path::PathBuf;

pub use apply::{apply_layer, apply_to_mounts, ApplyTarget};
pub use compression::Compression;
pub use walking::{diff_mounts, write_diff, DiffOptions, DiffResult};

/// An OCI content descriptor: media type, `sha256:<hex>` digest and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// The error classes the API layer maps to gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a corrupt, truncated or hostile layer, a digest mismatch.
    InvalidArgument,
    /// A media type this differ does not handle (containerd: `ErrNotImplemented`).
    NotImplemented,
    /// Local I/O or mount failures.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported layer media type {media_type:?}: expected an OCI layer (tar, tar+gzip, tar+zstd) or docker rootfs.diff.tar.gzip")]
    UnsupportedMediaType { media_type: String },
    #[error("layer diff_id mismatch: the uncompressed layer is {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid layer: entry {entry:?}: {reason}")]
    InvalidArchive { entry: String, reason: String },
    #[error("corrupt or truncated layer (after {entries} entries{at}): {source}")]
    Corrupt {
        entries: usize,
        at: String,
        #[source]
        source: std::io::Error,
    },
    #[error("applying layer entry {entry:?} in {root}: {op}: {source}")]
    Apply {
        root: PathBuf,
        entry: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write layer: {0}")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    TempMount(#[from] crate::snapshots::mount::TempMountError),
    #[error(transparent)]
    Unmount(#[from] crate::snapshots::mount::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnsupportedMediaType { .. } => ErrorKind::NotImplemented,
            Error::DigestMismatch { .. } | Error::InvalidArchive { .. } | Error::Corrupt { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Apply { .. }
            | Error::Io { .. }
            | Error::Write(_)
            | Error::TempMount(_)
            | Error::Unmount(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
