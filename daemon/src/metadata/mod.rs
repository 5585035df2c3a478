//! The metadata store: namespaces, labels, images, containers, content ownership, snapshot
//! ownership and leases, kept in one embedded ACID database (redb), following containerd's
//! `metadata/` bolt schema. This is where namespaces exist: the content store and the
//! snapshotters underneath are namespace-agnostic, and this layer maps namespaced names onto
//! them and records the references the garbage collector ([`gc`]) follows.
//!
//! Database: `<root>/io.containerd.metadata.v1.bolt/meta.redb` (redb instead of bolt; the
//! directory keeps containerd's plugin name). One table per bucket kind of containerd's schema
//! (`v1/<ns>/{labels,images,containers,content/blob,content/ingests,snapshots/<sn>,leases}`),
//! keyed by `<ns>\0<name>` (`<ns>\0<snapshotter>\0<key>` for snapshots), values JSON records.
//! Every operation is one write transaction; redb commits are durable (fsync) on return.
//! Data lands first (content commit, snapshot commit), its metadata afterwards, so a crash can
//! leave unreferenced data (reclaimed by GC) but never metadata pointing at missing data.
//!
//! All methods block on disk I/O; async callers use `spawn_blocking` where it matters.

pub mod backend;
pub mod containers;
pub mod content;
pub mod gc;
pub mod images;
pub mod leases;
pub mod namespaces;
pub mod proxy;
mod record;
pub mod scheduler;
pub mod snapshots;

use crate::content as cs;
use crate::errdefs::{HasKind, Kind};
use crate::snapshots as sn;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Labels map, as everywhere in containerd.
pub type Labels = HashMap<String, String>;

type Def = TableDefinition<'static, &'static str, &'static [u8]>;
pub(crate) const NAMESPACES: Def = TableDefinition::new("namespaces");
pub(crate) const IMAGES: Def = TableDefinition::new("images");
pub(crate) const CONTAINERS: Def = TableDefinition::new("containers");
pub(crate) const CONTENT: Def = TableDefinition::new("content");
pub(crate) const INGESTS: Def = TableDefinition::new("ingests");
pub(crate) const SNAPSHOTS: Def = TableDefinition::new("snapshots");
pub(crate) const LEASES: Def = TableDefinition::new("leases");
pub(crate) const META: Def = TableDefinition::new("meta");
const ALL_TABLES: [Def; 8] = [
    NAMESPACES, IMAGES, CONTAINERS, CONTENT, INGESTS, SNAPSHOTS, LEASES, META,
];

/// Schema version stored under `meta/version` (containerd's bolt schema is "v1", version 3).
pub const SCHEMA_VERSION: &str = "v1.3-berth-redb";

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request carried no namespace.
    #[error("namespace is required: failed precondition")]
    NamespaceRequired,
    /// A name or id that does not pass containerd's identifier rules.
    #[error("{what} {name:?}: must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*, at most 76 characters: invalid argument")]
    InvalidIdentifier {
        /// What was named.
        what: &'static str,
        /// The bad value.
        name: String,
    },
    /// Object missing.
    #[error("{what} {id:?}: not found")]
    NotFound {
        /// Object kind.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Object exists.
    #[error("{what} {id:?}: already exists")]
    AlreadyExists {
        /// Object kind.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Namespace delete refused.
    #[error("namespace {ns:?} must be empty, but it still has {left}: failed precondition")]
    NamespaceNotEmpty {
        /// The namespace.
        ns: String,
        /// What is left, comma separated.
        left: String,
    },
    /// Field path not updatable.
    #[error("cannot update {field:?} field on {what} {id:?}: invalid argument")]
    BadField {
        /// The field path.
        field: String,
        /// Object kind.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Other invalid input.
    #[error("{0}: invalid argument")]
    Invalid(String),
    /// State does not allow the operation.
    #[error("{0}: failed precondition")]
    Precondition(String),
    /// Not supported.
    #[error("{0}: not implemented")]
    NotImplemented(String),
    /// No snapshotter by that name.
    #[error("snapshotter {0:?} not loaded: invalid argument")]
    NoSnapshotter(String),
    /// Content store failure.
    #[error(transparent)]
    Content(#[from] cs::Error),
    /// Digest parse failure.
    #[error(transparent)]
    Digest(#[from] cs::DigestError),
    /// Filter parse failure.
    #[error(transparent)]
    Filter(#[from] crate::filters::ParseError),
    /// Snapshotter failure.
    #[error(transparent)]
    Snapshot(#[from] sn::Error),
    /// Database failure.
    #[error("metadata database {path}: {msg}")]
    Db {
        /// Database file.
        path: PathBuf,
        /// redb's message.
        msg: String,
    },
    /// A proxy plugin failed (connection or unexpected status).
    #[error("proxy snapshotter {name} at {address}: {msg}")]
    Proxy {
        /// Plugin name.
        name: String,
        /// Its socket.
        address: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A record that does not decode.
    #[error("metadata record {key:?} is corrupt: {source}")]
    Corrupt {
        /// Table key.
        key: String,
        /// Decode error.
        source: serde_json::Error,
    },
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::NamespaceRequired | Error::NamespaceNotEmpty { .. } | Error::Precondition(_) => {
                Kind::FailedPrecondition
            }
            Error::InvalidIdentifier { .. }
            | Error::BadField { .. }
            | Error::Invalid(_)
            | Error::NoSnapshotter(_)
            | Error::Filter(_) => Kind::InvalidArgument,
            Error::NotFound { .. } => Kind::NotFound,
            Error::AlreadyExists { .. } => Kind::AlreadyExists,
            Error::NotImplemented(_) => Kind::NotImplemented,
            Error::Content(e) => e.kind(),
            Error::Digest(e) => e.kind(),
            Error::Snapshot(e) => match e.kind() {
                sn::ErrorKind::NotFound => Kind::NotFound,
                sn::ErrorKind::AlreadyExists => Kind::AlreadyExists,
                sn::ErrorKind::FailedPrecondition => Kind::FailedPrecondition,
                sn::ErrorKind::InvalidArgument => Kind::InvalidArgument,
                sn::ErrorKind::Internal => Kind::Unknown,
            },
            Error::Db { .. } | Error::Corrupt { .. } | Error::Proxy { .. } => Kind::Unknown,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A namespace name, validated by containerd's identifier rules (`identifiers.Validate`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

/// containerd's `identifiers.Validate`: alphanumerics separated by single `.`, `_` or `-`.
pub fn validate_identifier(what: &'static str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 76
        && s.split(['.', '_', '-'])
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidIdentifier {
            what,
            name: s.to_string(),
        })
    }
}

impl Namespace {
    /// Validates a namespace name; empty means "not given".
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::NamespaceRequired);
        }
        validate_identifier("namespace", s)?;
        Ok(Self(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-request context: the namespace, and the lease new resources are attached to.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Namespace of the request (`containerd-namespace` gRPC header).
    pub ns: Namespace,
    /// Lease from the `containerd-lease` header, if any.
    pub lease: Option<String>,
}

/// A point in time, stored as nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Ts(pub i64);

impl Ts {
    /// Now.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// As a protobuf timestamp.
    pub fn to_proto(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.0.div_euclid(1_000_000_000),
            nanos: i32::try_from(self.0.rem_euclid(1_000_000_000)).unwrap_or(0),
        }
    }

    /// As a `SystemTime`.
    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }
}

impl From<SystemTime> for Ts {
    fn from(t: SystemTime) -> Self {
        Self(
            t.duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        )
    }
}

/// An OCI descriptor as stored in image records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest string (validated on create).
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// containerd's `labels.Validate`: key plus value at most 4096 bytes.
pub fn validate_labels(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.len() + v.len() > 4096 {
            return Err(Error::Invalid(format!(
                "label key and value length ({} bytes) greater than maximum size (4096 bytes), key: {:.20}",
                k.len() + v.len(),
                k
            )));
        }
    }
    Ok(())
}

/// Applies containerd's label field paths (`labels` replaces all, `labels.<k>` sets or, when
/// the new value is absent/empty, deletes one key). Returns false for a non-label path.
pub(crate) fn apply_label_path(current: &mut Labels, new: &Labels, path: &str) -> bool {
    if path == "labels" {
        *current = new.clone();
        return true;
    }
    if let Some(k) = path.strip_prefix("labels.") {
        match new.get(k) {
            Some(v) if !v.is_empty() => {
                current.insert(k.to_string(), v.clone());
            }
            _ => {
                current.remove(k);
            }
        }
        return true;
    }
    false
}

pub(crate) fn key(parts: &[&str]) -> Result<String> {
    if parts.iter().any(|p| p.contains('\0')) {
        return Err(Error::Invalid("names must not contain NUL bytes".into()));
    }
    Ok(parts.join("\0"))
}

/// One snapshotter as the metadata layer sees it.
pub struct SnapshotterEntry {
    /// containerd's name (`overlayfs`, `native`).
    pub name: String,
    /// The backend.
    pub backend: backend::SnapBackend,
}

/// How content is shared between namespaces (containerd's bolt `content_sharing_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharingPolicy {
    /// A blob committed in one namespace is usable from every namespace that writes it again.
    #[default]
    Shared,
    /// Every namespace must ingest its own copy of the bytes.
    Isolated,
}

/// The metadata database plus the backends it owns references into.
pub struct Db {
    path: PathBuf,
    db: redb::Database,
    content: cs::Backend,
    snapshotters: BTreeMap<String, backend::SnapBackend>,
    policy: SharingPolicy,
    // Serialises GC against backend-visible mutations (containerd's wlock).
    gc_lock: Mutex<()>,
    // Told about every committed write transaction (the GC scheduler's mutation count).
    on_mutation: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn db_err<E: Into<redb::Error>>(path: &Path) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Db {
        path: path.to_path_buf(),
        msg: e.into().to_string(),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(k: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|source| Error::Corrupt {
        key: k.replace('\0', "/"),
        source,
    })
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain structs of strings and integers to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Read-only or read-write table, for the scan helpers.
pub(crate) fn get<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    k: &str,
    path: &Path,
) -> Result<Option<T>> {
    match t.get(k).map_err(db_err(path))? {
        Some(v) => Ok(Some(decode(k, v.value())?)),
        None => Ok(None),
    }
}

/// All records whose key starts with `prefix\0`, as (rest of key, record).
pub(crate) fn scan<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    path: &Path,
) -> Result<Vec<(String, T)>> {
    let p = format!("{prefix}\0");
    let mut out = Vec::new();
    for item in t.range(p.as_str()..).map_err(db_err(path))? {
        let (k, v) = item.map_err(db_err(path))?;
        let k = k.value();
        let Some(rest) = k.strip_prefix(p.as_str()) else {
            break;
        };
        out.push((rest.to_string(), decode(k, v.value())?));
    }
    Ok(out)
}

/// Every record of a table as (full key, record).
pub(crate) fn scan_all<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in t.iter().map_err(db_err(path))? {
        let (k, v) = item.map_err(db_err(path))?;
        out.push((k.value().to_string(), decode(k.value(), v.value())?));
    }
    Ok(out)
}

impl Db {
    /// Opens (creating) the database in `dir` (`<root>/io.containerd.metadata.v1.bolt`).
    pub fn open(
        dir: &Path,
        content: impl Into<cs::Backend>,
        snapshotters: Vec<SnapshotterEntry>,
        policy: SharingPolicy,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Db {
            path: dir.to_path_buf(),
            msg: e.to_string(),
        })?;
        let path = dir.join("meta.redb");
        let db = redb::Database::create(&path).map_err(db_err(&path))?;
        let txn = db.begin_write().map_err(db_err(&path))?;
        for t in ALL_TABLES {
            txn.open_table(t).map_err(db_err(&path))?;
        }
        {
            let mut meta = txn.open_table(META).map_err(db_err(&path))?;
            meta.insert("version", SCHEMA_VERSION.as_bytes())
                .map_err(db_err(&path))?;
        }
        txn.commit().map_err(db_err(&path))?;
        Ok(Self {
            path,
            db,
            content: content.into(),
            snapshotters: snapshotters
                .into_iter()
                .map(|e| (e.name, e.backend))
                .collect(),
            policy,
            gc_lock: Mutex::new(()),
            on_mutation: std::sync::OnceLock::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backing content store (local or proxy).
    pub fn content_store(&self) -> &cs::Backend {
        &self.content
    }

    /// Registers the callback told about every committed change (containerd's
    /// `RegisterMutationCallback`); only the first registration counts.
    pub fn set_mutation_callback(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_mutation.set(f);
    }

    /// Names of the loaded snapshotters.
    pub fn snapshotter_names(&self) -> Vec<String> {
        self.snapshotters.keys().cloned().collect()
    }

    /// The backend called `name`.
    pub fn snapshotter(&self, name: &str) -> Result<&backend::SnapBackend> {
        self.snapshotters
            .get(name)
            .ok_or_else(|| Error::NoSnapshotter(name.to_string()))
    }

    pub(crate) fn read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(db_err(&self.path))
    }

    pub(crate) fn write(&self) -> Result<redb::WriteTransaction> {
        self.db.begin_write().map_err(db_err(&self.path))
    }

    pub(crate) fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        txn.commit().map_err(db_err(&self.path))?;
        if let Some(f) = self.on_mutation.get() {
            f();
        }
        Ok(())
    }

    pub(crate) fn gc_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gc_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates the namespace record if missing (containerd creates namespace buckets on the
    /// first write into them). Returns true if it was created.
    pub(crate) fn ensure_namespace(
        &self,
        txn: &redb::WriteTransaction,
        ns: &Namespace,
    ) -> Result<bool> {
        let mut t = txn.open_table(NAMESPACES).map_err(db_err(&self.path))?;
        if t.get(ns.as_str()).map_err(db_err(&self.path))?.is_some() {
            return Ok(false);
        }
        t.insert(
            ns.as_str(),
            encode(&namespaces::NamespaceRecord::default()).as_slice(),
        )
        .map_err(db_err(&self.path))?;
        Ok(true)
    }

    /// Adds a resource to the context's lease, if there is one (containerd `addContentLease`,
    /// `addSnapshotLease`, `addIngestLease`). The lease must exist.
    pub(crate) fn add_to_ctx_lease(
        &self,
        txn: &redb::WriteTransaction,
        ctx: &Ctx,
        kind: &str,
        id: &str,
    ) -> Result<()> {
        let Some(lease) = &ctx.lease else {
            return Ok(());
        };
        let mut t = txn.open_table(LEASES).map_err(db_err(&self.path))?;
        let k = key(&[ctx.ns.as_str(), lease])?;
        let mut rec: leases::LeaseRecord =
            get(&t, &k, &self.path)?.ok_or_else(|| Error::NotFound {
                what: "lease",
                id: lease.clone(),
            })?;
        rec.resources.insert((kind.to_string(), id.to_string()));
        t.insert(k.as_str(), encode(&rec).as_slice())
            .map_err(db_err(&self.path))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A Db with a content store and a native snapshotter in a temp dir.
    pub fn db(policy: SharingPolicy) -> (tempfile::TempDir, Db) {
        let tmp = tempfile::tempdir().unwrap();
        let content = cs::Store::open(tmp.path().join("content")).unwrap();
        let native = sn::NativeSnapshotter::open(&tmp.path().join("native")).unwrap();
        let db = Db::open(
            &tmp.path().join("meta"),
            content,
            vec![SnapshotterEntry {
                name: "native".into(),
                backend: backend::SnapBackend::Builtin(std::sync::Arc::new(sn::Backend::Native(
                    native,
                ))),
            }],
            policy,
        )
        .unwrap();
        (tmp, db)
    }

    pub fn ctx(ns: &str) -> Ctx {
        Ctx {
            ns: Namespace::new(ns).unwrap(),
            lease: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["default", "k8s.io", "a-b_c.d", "A1"] {
            validate_identifier("namespace", ok).unwrap();
        }
        for bad in ["", "-a", "a..b", "a/b", "a b", &"x".repeat(77)] {
            assert!(validate_identifier("namespace", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_paths() {
        let mut cur: Labels = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into();
        let new: Labels = [("a".to_string(), "9".to_string())].into();
        assert!(apply_label_path(&mut cur, &new, "labels.a"));
        assert!(apply_label_path(&mut cur, &new, "labels.b"));
        assert_eq!(cur, new);
        assert!(!apply_label_path(&mut cur, &new, "target"));
    }
}
