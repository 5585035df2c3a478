//! [`Backend`]: where the metadata layer's blobs live — the local [`Store`] or a
//! `[proxy_plugins]` content store ([`ProxyStore`]) — as one closed enum dispatched by `match`,
//! with the reader and writer types of both. Every call takes the request's namespace; the
//! local store ignores it, the proxy forwards it (containerd's behaviour).

use super::proxy::{ProxyReader, ProxyStore, ProxyWriter};
use super::{BlobInfo, Digest, Error, IngestStatus, Store, Writer};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// The blob store under the metadata layer.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `<root>/io.containerd.content.v1.content`.
    Local(Store),
    /// A content store in another process.
    Proxy(Arc<ProxyStore>),
}

impl From<Store> for Backend {
    fn from(s: Store) -> Self {
        Backend::Local(s)
    }
}

impl From<ProxyStore> for Backend {
    fn from(p: ProxyStore) -> Self {
        Backend::Proxy(Arc::new(p))
    }
}

/// A blob opened for streaming reads.
#[derive(Debug)]
pub enum BlobReader {
    /// A local blob file.
    Local(std::fs::File),
    /// A `Read` stream from the proxy (verified when read whole).
    Proxy(Box<ProxyReader>),
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BlobReader::Local(f) => f.read(buf),
            BlobReader::Proxy(r) => r.read(buf),
        }
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match self {
            BlobReader::Local(f) => f.seek(pos),
            BlobReader::Proxy(r) => r.seek(pos),
        }
    }
}

/// An ingest in progress in either backend.
#[derive(Debug)]
pub enum BackendWriter {
    /// Local ingest directory.
    Local(Box<Writer>),
    /// A `Write` session on the proxy.
    Proxy(Box<ProxyWriter>),
}

impl BackendWriter {
    /// Bytes written so far.
    pub fn offset(&self) -> i64 {
        match self {
            BackendWriter::Local(w) => w.offset(),
            BackendWriter::Proxy(w) => w.offset(),
        }
    }

    /// Current status (no I/O: the proxy's is as of its last reply).
    pub fn status(&self) -> IngestStatus {
        match self {
            BackendWriter::Local(w) => w.status(),
            BackendWriter::Proxy(w) => w.status(),
        }
    }

    /// Digest of what has been written so far.
    pub fn digest(&self) -> Digest {
        match self {
            BackendWriter::Local(w) => w.digest(),
            BackendWriter::Proxy(w) => w.digest(),
        }
    }

    /// Appends `buf`.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), Error> {
        match self {
            BackendWriter::Local(w) => w.write(buf),
            BackendWriter::Proxy(w) => w.write(buf),
        }
    }

    /// Restarts the ingest from zero.
    pub fn truncate(&mut self) -> Result<(), Error> {
        match self {
            BackendWriter::Local(w) => w.truncate(),
            BackendWriter::Proxy(w) => w.truncate(),
        }
    }

    /// Verifies size (`size > 0`) and digest and commits the blob.
    pub fn commit(self, size: i64, expected: Option<&Digest>) -> Result<Digest, Error> {
        match self {
            BackendWriter::Local(w) => (*w).commit(size, expected),
            BackendWriter::Proxy(w) => w.commit(size, expected),
        }
    }
}

impl Backend {
    /// The proxy, if this is one.
    pub fn proxy(&self) -> Option<&ProxyStore> {
        match self {
            Backend::Local(_) => None,
            Backend::Proxy(p) => Some(p),
        }
    }

    /// Size and commit time of a blob.
    pub fn info(&self, ns: &str, d: &Digest) -> Result<BlobInfo, Error> {
        match self {
            Backend::Local(s) => s.info(d),
            Backend::Proxy(p) => p.info(ns, d),
        }
    }

    /// Reads up to `size` bytes at `offset` (`size <= 0`: to the end).
    pub fn read_at(&self, ns: &str, d: &Digest, offset: i64, size: i64) -> Result<Vec<u8>, Error> {
        match self {
            Backend::Local(s) => s.read_at(d, offset, size),
            Backend::Proxy(p) => p.read_at(ns, d, offset, size),
        }
    }

    /// Opens a blob for streaming reads.
    pub fn open(&self, ns: &str, d: &Digest) -> Result<BlobReader, Error> {
        match self {
            Backend::Local(s) => s.open_blob(d).map(BlobReader::Local),
            Backend::Proxy(p) => p.open(ns, d).map(|r| BlobReader::Proxy(Box::new(r))),
        }
    }

    /// Removes a blob.
    pub fn delete(&self, ns: &str, d: &Digest) -> Result<(), Error> {
        match self {
            Backend::Local(s) => s.delete(d),
            Backend::Proxy(p) => p.delete(ns, d),
        }
    }

    /// Opens (or resumes) the ingest `ref`.
    pub fn writer(
        &self,
        ns: &str,
        r#ref: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<BackendWriter, Error> {
        match self {
            Backend::Local(s) => s
                .writer(r#ref, total, expected)
                .map(|w| BackendWriter::Local(Box::new(w))),
            Backend::Proxy(p) => p
                .writer(ns, r#ref, total, expected)
                .map(|w| BackendWriter::Proxy(Box::new(w))),
        }
    }

    /// Status of ingest `ref`.
    pub fn status(&self, ns: &str, r#ref: &str) -> Result<IngestStatus, Error> {
        match self {
            Backend::Local(s) => s.status(r#ref),
            Backend::Proxy(p) => p.status(ns, r#ref),
        }
    }

    /// Refs of the local store's ingests, for the collector's orphan sweep (containerd's
    /// content GC aborts backend ingests no namespace's ingest record names). A proxy lists
    /// none: its ingests are aborted one by one as their records go.
    pub fn local_ingest_refs(&self) -> Result<Vec<String>, Error> {
        match self {
            Backend::Local(s) => Ok(s.list_statuses()?.into_iter().map(|st| st.r#ref).collect()),
            Backend::Proxy(_) => Ok(Vec::new()),
        }
    }

    /// Drops ingest `ref`.
    pub fn abort(&self, ns: &str, r#ref: &str) -> Result<(), Error> {
        match self {
            Backend::Local(s) => s.abort(r#ref),
            Backend::Proxy(p) => p.abort(ns, r#ref),
        }
    }

    /// The namespaces the garbage collector sweeps blobs in: one pass (`""`) for the local
    /// store, which is not namespaced; for a proxy, `known` (berthd's namespaces and those of
    /// the records being removed) plus any the proxy lists itself.
    pub fn gc_namespaces(&self, known: &[String]) -> Vec<String> {
        match self {
            Backend::Local(_) => vec![String::new()],
            Backend::Proxy(p) => {
                let mut all: Vec<String> = known.to_vec();
                all.extend(p.namespaces());
                all.sort();
                all.dedup();
                all.retain(|n| !n.is_empty());
                all
            }
        }
    }

    /// Blobs of namespace `ns` the collector may delete if nothing references them: every
    /// local blob; on a proxy, those berthd committed there.
    pub fn walk_collectable(&self, ns: &str) -> Result<Vec<BlobInfo>, Error> {
        match self {
            Backend::Local(s) => s.walk(),
            Backend::Proxy(p) => p.walk_owned(ns),
        }
    }

    /// Blobs on this host's disk (none when the blobs live behind a proxy); for metrics.
    pub fn local_blobs(&self) -> Vec<BlobInfo> {
        match self {
            Backend::Local(s) => s.walk().unwrap_or_default(),
            Backend::Proxy(_) => Vec::new(),
        }
    }
}
