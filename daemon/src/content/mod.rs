//! The namespace-agnostic content store: immutable blobs addressed by digest, plus in-progress
//! ingests that can be resumed by ref (containerd's `content/local`).
//!
//! On disk, under `<root>/io.containerd.content.v1.content/`:
//! - `blobs/sha256/<hex>`: committed blobs, read-only (0444).
//! - `ingest/<sha256(ref)>/{ref,data,total,startedat,updatedat}`: one directory per ingest.
//!
//! A commit fsyncs `data`, checks size and digest, renames it into `blobs/` and fsyncs the
//! directory, so a blob is on disk before any metadata can point at it. Namespaces, labels and
//! leases are added on top by `metadata::content`; this module never sees them.
//!
//! [`Backend`] is the seam the metadata layer uses: this local [`Store`], or a content store
//! in another process configured under `[proxy_plugins]` ([`proxy::ProxyStore`], containerd's
//! `content/proxy`). Backend calls take the request's namespace, which only the proxy uses
//! (containerd forwards it in the `containerd-namespace` header).

mod backend;
mod digest;
pub mod proxy;
mod writer;

pub use backend::{Backend, BackendWriter, BlobReader};
pub use digest::{Digest, DigestError};
pub use writer::Writer;

use crate::errdefs::{HasKind, Kind};
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest string was malformed.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// No blob with this digest.
    #[error("content digest {0}: not found")]
    NotFound(Digest),
    /// No ingest with this ref.
    #[error("ingest ref {0:?}: not found")]
    IngestNotFound(String),
    /// The blob was already committed.
    #[error("content {0}: already exists")]
    AlreadyExists(Digest),
    /// Another writer holds the ref.
    #[error("ref {0:?} locked: unavailable")]
    Locked(String),
    /// The committed size differs from what the caller expected.
    #[error("unexpected commit size {actual}, expected {expected}: failed precondition")]
    SizeMismatch {
        /// Size the caller announced.
        expected: i64,
        /// Bytes written.
        actual: i64,
    },
    /// The committed digest differs from what the caller expected.
    #[error("unexpected commit digest {actual}, expected {expected}: failed precondition")]
    DigestMismatch {
        /// Digest the caller announced.
        expected: Digest,
        /// Digest of the bytes written.
        actual: Digest,
    },
    /// A read outside the blob.
    #[error("read offset {offset} out of range for content {digest} of size {size}")]
    OutOfRange {
        /// Blob read from.
        digest: Digest,
        /// Requested offset.
        offset: i64,
        /// Blob size.
        size: i64,
    },
    /// Bad argument, e.g. an empty ref.
    #[error("{0}: invalid argument")]
    Invalid(String),
    /// A content proxy plugin failed: unreachable, or an error status other than the ones
    /// with a variant above (the gRPC code is kept as the kind).
    #[error("content proxy plugin {name} at {address}: {msg}")]
    Proxy {
        /// Plugin name (`[proxy_plugins.<name>]`).
        name: String,
        /// Its socket.
        address: PathBuf,
        /// errdefs class of the proxy's status.
        kind: Kind,
        /// What went wrong.
        msg: String,
    },
    /// Filesystem failure.
    #[error("content store {path}: {source}")]
    Io {
        /// Path operated on.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Digest(_) | Error::Invalid(_) => Kind::InvalidArgument,
            Error::NotFound(_) | Error::IngestNotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) => Kind::AlreadyExists,
            Error::Locked(_) => Kind::Unavailable,
            Error::SizeMismatch { .. } | Error::DigestMismatch { .. } => Kind::FailedPrecondition,
            Error::OutOfRange { .. } => Kind::OutOfRange,
            Error::Proxy { kind, .. } => *kind,
            Error::Io { .. } => Kind::Unknown,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the store knows about a committed blob.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: i64,
    /// Commit time (file modification time).
    pub created: SystemTime,
}

/// State of an ingest (containerd's `content.Status`).
#[derive(Debug, Clone)]
pub struct IngestStatus {
    /// The caller's ref.
    pub r#ref: String,
    /// Bytes written so far.
    pub offset: i64,
    /// Announced total size (0 if unknown).
    pub total: i64,
    /// Announced digest, if any.
    pub expected: Option<Digest>,
    /// When the ingest started.
    pub started: SystemTime,
    /// Last write.
    pub updated: SystemTime,
}

/// The local content store. Cheap to clone; clones share the ref locks.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    locks: Arc<Mutex<HashSet<String>>>,
}

impl Store {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        for d in [root.join("blobs").join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(Self {
            root,
            locks: Arc::default(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a committed blob (the digest type guarantees a safe file name).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm()).join(d.hex())
    }

    fn ingest_dir(&self, r#ref: &str) -> PathBuf {
        // The ref is caller-chosen text: hash it so it never becomes a path component.
        self.root
            .join("ingest")
            .join(Digest::from_bytes(r#ref.as_bytes()).hex())
    }

    /// Size and commit time of a blob.
    pub fn info(&self, d: &Digest) -> Result<BlobInfo, Error> {
        let p = self.blob_path(d);
        let md = match fs::metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(d.clone()))
            }
            Err(e) => return Err(io_err(&p)(e)),
        };
        Ok(BlobInfo {
            digest: d.clone(),
            size: i64::try_from(md.len()).unwrap_or(i64::MAX),
            created: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Reads up to `size` bytes at `offset` (`size <= 0` means to the end).
    pub fn read_at(&self, d: &Digest, offset: i64, size: i64) -> Result<Vec<u8>, Error> {
        let info = self.info(d)?;
        if offset < 0 || offset > info.size {
            return Err(Error::OutOfRange {
                digest: d.clone(),
                offset,
                size: info.size,
            });
        }
        let avail = info.size - offset;
        let n = if size <= 0 { avail } else { size.min(avail) };
        let p = self.blob_path(d);
        let mut f = fs::File::open(&p).map_err(io_err(&p))?;
        f.seek(SeekFrom::Start(offset.unsigned_abs()))
            .map_err(io_err(&p))?;
        let mut buf = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1 << 20));
        f.take(n.unsigned_abs())
            .read_to_end(&mut buf)
            .map_err(io_err(&p))?;
        Ok(buf)
    }

    /// Opens a blob for streaming reads.
    pub fn open_blob(&self, d: &Digest) -> Result<fs::File, Error> {
        let p = self.blob_path(d);
        fs::File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(d.clone())
            } else {
                io_err(&p)(e)
            }
        })
    }

    /// Removes a blob (the caller has made sure nothing references it).
    pub fn delete(&self, d: &Digest) -> Result<(), Error> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(d.clone())),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every committed blob (file names that are not valid digests are skipped).
    pub fn walk(&self) -> Result<Vec<BlobInfo>, Error> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(d) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if let Ok(i) = self.info(&d) {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Opens a writer for `ref`, resuming an existing ingest. `expected`, if given, is checked
    /// first: a blob already committed gives `AlreadyExists` (the client then skips the copy).
    pub fn writer(
        &self,
        r#ref: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Writer, Error> {
        if r#ref.is_empty() {
            return Err(Error::Invalid("ref must not be empty".into()));
        }
        if let Some(d) = &expected {
            if self.blob_path(d).exists() {
                return Err(Error::AlreadyExists(d.clone()));
            }
        }
        {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !locks.insert(r#ref.to_string()) {
                return Err(Error::Locked(r#ref.to_string()));
            }
        }
        let unlock = RefLock {
            r#ref: r#ref.to_string(),
            locks: Arc::clone(&self.locks),
        };
        Writer::open(
            self.clone(),
            self.ingest_dir(r#ref),
            unlock,
            total,
            expected,
        )
    }

    /// Status of one ingest.
    pub fn status(&self, r#ref: &str) -> Result<IngestStatus, Error> {
        writer::read_status(&self.ingest_dir(r#ref))?
            .ok_or_else(|| Error::IngestNotFound(r#ref.to_string()))
    }

    /// Status of every ingest.
    pub fn list_statuses(&self) -> Result<Vec<IngestStatus>, Error> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            if let Ok(Some(s)) = writer::read_status(&e.path()) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Drops an ingest and its data.
    pub fn abort(&self, r#ref: &str) -> Result<(), Error> {
        let dir = self.ingest_dir(r#ref);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::IngestNotFound(r#ref.to_string()))
            }
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}

/// Releases a ref lock when the writer goes away.
#[derive(Debug)]
pub(crate) struct RefLock {
    r#ref: String,
    locks: Arc<Mutex<HashSet<String>>>,
}

impl RefLock {
    pub(crate) fn r#ref(&self) -> &str {
        &self.r#ref
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.r#ref);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_commit_read_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let data = b"hello berth";
        let d = Digest::from_bytes(data);
        let mut w = s
            .writer("ref1", data.len() as i64, Some(d.clone()))
            .unwrap();
        w.write(&data[..5]).unwrap();
        w.write(&data[5..]).unwrap();
        assert_eq!(w.commit(data.len() as i64, Some(&d)).unwrap(), d);
        assert_eq!(s.info(&d).unwrap().size, data.len() as i64);
        assert_eq!(s.read_at(&d, 6, 0).unwrap(), b"berth");
        assert_eq!(s.read_at(&d, 0, 5).unwrap(), b"hello");
        assert!(matches!(
            s.read_at(&d, 100, 1),
            Err(Error::OutOfRange { .. })
        ));
        // Re-writing committed content is AlreadyExists, as containerd.
        assert!(matches!(
            s.writer("ref2", 0, Some(d.clone())),
            Err(Error::AlreadyExists(_))
        ));
        assert!(
            s.list_statuses().unwrap().is_empty(),
            "commit removes the ingest"
        );
        s.delete(&d).unwrap();
        assert!(matches!(s.info(&d), Err(Error::NotFound(_))));
    }

    #[test]
    fn resume_after_writer_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let data = b"0123456789";
        let d = Digest::from_bytes(data);
        {
            let mut w = s.writer("resume", 10, Some(d.clone())).unwrap();
            w.write(&data[..4]).unwrap();
            // Locked while held.
            assert!(matches!(
                s.writer("resume", 10, None),
                Err(Error::Locked(_))
            ));
        }
        let st = s.status("resume").unwrap();
        assert_eq!((st.offset, st.total), (4, 10));
        assert_eq!(st.expected, Some(d.clone()));
        let mut w = s.writer("resume", 10, Some(d.clone())).unwrap();
        assert_eq!(w.offset(), 4);
        w.write(&data[4..]).unwrap();
        assert_eq!(w.commit(10, Some(&d)).unwrap(), d);
        assert_eq!(s.read_at(&d, 0, 0).unwrap(), data);
    }

    #[test]
    fn commit_verifies_size_and_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let mut w = s.writer("bad", 0, None).unwrap();
        w.write(b"abc").unwrap();
        assert!(matches!(
            w.commit(4, None),
            Err(Error::SizeMismatch {
                expected: 4,
                actual: 3
            })
        ));
        let w = s.writer("bad", 0, None).unwrap();
        let wrong = Digest::from_bytes(b"xyz");
        assert!(matches!(
            w.commit(3, Some(&wrong)),
            Err(Error::DigestMismatch { .. })
        ));
        // The failed commit leaves the ingest for a retry or an abort.
        s.abort("bad").unwrap();
        assert!(matches!(s.status("bad"), Err(Error::IngestNotFound(_))));
    }

    #[test]
    fn truncate_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        let mut w = s.writer("t", 0, None).unwrap();
        w.write(b"garbage").unwrap();
        w.truncate().unwrap();
        w.write(b"ok").unwrap();
        let d = w.commit(2, None).unwrap();
        assert_eq!(d, Digest::from_bytes(b"ok"));
    }
}
