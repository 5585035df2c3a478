//! Namespaced content (containerd `metadata/content.go`): which namespace owns which blob,
//! with labels and timestamps, and ingests keyed by the caller's ref. The blobs themselves
//! live in a [`crate::content::Backend`]: the local store, or a `[proxy_plugins]` content
//! store, which this layer wraps exactly as containerd's metadata wraps its proxy — records,
//! labels, leases and GC stay here; the backend only holds bytes and ingests (keyed by
//! `<ns>/<ref>`), and is called with the request's namespace.
//!
//! Ingest expiry (containerd's `expireat` in the ingest bucket): an ingest opened without a
//! lease records an expiry [`INGEST_EXPIRY`] after the writer was (re)opened — containerd
//! hard-codes 24 h and has no label or option for it. Until then the ingest is a GC root;
//! after it, the collector removes the record and aborts the backend ingest. An ingest opened
//! under a lease has no expiry and lives as long as a lease holds it.

use super::{
    apply_label_path, db_err, encode, get, key, scan, validate_labels, Ctx, Db, Error, Labels,
    Result, SharingPolicy, Ts, CONTENT, INGESTS, LEASES,
};
use crate::content::{self as cs, Digest, IngestStatus};
use crate::filters::{label_field, Adaptor, Filter};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Stored per (namespace, digest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRecord {
    /// Blob size.
    pub size: i64,
    /// Labels (GC references live here).
    #[serde(default)]
    pub labels: Labels,
    /// First commit into this namespace.
    pub created: Ts,
    /// Last label update.
    pub updated: Ts,
}

/// Stored per (namespace, ref) while an ingest is open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestRecord {
    /// The ref in the backend store (namespace-prefixed).
    pub backend_ref: String,
    /// Expected digest, if announced.
    #[serde(default)]
    pub expected: Option<String>,
    /// containerd's `expireat`: when an ingest opened without a lease becomes collectable.
    #[serde(default)]
    pub expire_at: Option<Ts>,
    /// Opened under a lease (so without an expiry: the lease decides). False on records
    /// written before berthd recorded expiries, which, like before, stay until aborted.
    #[serde(default)]
    pub leased: bool,
}

/// How long an ingest opened without a lease stays before GC may abort it (containerd
/// `metadata/content.go`: `time.Now().UTC().Add(24 * time.Hour)`).
pub const INGEST_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

impl IngestRecord {
    /// Whether the collector must keep this ingest without a lease holding it (containerd
    /// `scanRoots`: an ingest whose `expireat` has not passed). `in_lease` says a lease record
    /// (live or expired) lists it; a record from before expiries were recorded is then left to
    /// that lease, and otherwise kept, as before.
    pub fn gc_root(&self, now: Ts, in_lease: bool) -> bool {
        match self.expire_at {
            Some(t) => t >= now,
            None => !self.leased && !in_lease,
        }
    }
}

/// Content info as the API returns it.
#[derive(Debug, Clone)]
pub struct Info {
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: i64,
    /// Labels.
    pub labels: Labels,
    /// Created.
    pub created: Ts,
    /// Updated.
    pub updated: Ts,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "digest" => Some(self.digest.to_string()),
            "size" => Some(self.size.to_string()),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

struct StatusAdaptor<'a>(&'a IngestStatus);

impl Adaptor for StatusAdaptor<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "ref" => Some(self.0.r#ref.clone()),
            _ => None,
        }
    }
}

fn backend_ref(ctx: &Ctx, r#ref: &str) -> String {
    format!("{}/{}", ctx.ns, r#ref)
}

impl Db {
    fn content_record(&self, ctx: &Ctx, d: &Digest) -> Result<ContentRecord> {
        let r = self.read()?;
        let t = r.open_table(CONTENT).map_err(db_err(&self.path))?;
        get(&t, &key(&[ctx.ns.as_str(), d.as_str()])?, &self.path)?.ok_or_else(|| Error::NotFound {
            what: "content digest",
            id: d.to_string(),
        })
    }

    /// Info of a blob owned by the namespace.
    pub fn content_info(&self, ctx: &Ctx, d: &Digest) -> Result<Info> {
        let rec = self.content_record(ctx, d)?;
        Ok(Info {
            digest: d.clone(),
            size: rec.size,
            labels: rec.labels,
            created: rec.created,
            updated: rec.updated,
        })
    }

    /// Updates labels (paths `labels`, `labels.<k>`; none = replace all).
    pub fn content_update(
        &self,
        ctx: &Ctx,
        d: &Digest,
        labels: &Labels,
        paths: &[String],
    ) -> Result<Info> {
        validate_labels(labels)?;
        let txn = self.write()?;
        let rec = {
            let mut t = txn.open_table(CONTENT).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), d.as_str()])?;
            let mut rec: ContentRecord =
                get(&t, &k, &self.path)?.ok_or_else(|| Error::NotFound {
                    what: "content digest",
                    id: d.to_string(),
                })?;
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for p in paths {
                if !apply_label_path(&mut rec.labels, labels, p) {
                    return Err(Error::BadField {
                        field: p.clone(),
                        what: "content info",
                        id: d.to_string(),
                    });
                }
            }
            rec.updated = Ts::now();
            t.insert(k.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
            rec
        };
        self.commit(txn)?;
        Ok(Info {
            digest: d.clone(),
            size: rec.size,
            labels: rec.labels,
            created: rec.created,
            updated: rec.updated,
        })
    }

    /// Blobs of the namespace passing the filter, sorted by digest.
    pub fn content_list(&self, ctx: &Ctx, filter: &Filter) -> Result<Vec<Info>> {
        let r = self.read()?;
        let t = r.open_table(CONTENT).map_err(db_err(&self.path))?;
        let mut out = Vec::new();
        for (k, rec) in scan::<ContentRecord>(&t, ctx.ns.as_str(), &self.path)? {
            let Ok(digest) = Digest::parse(&k) else {
                continue;
            };
            let info = Info {
                digest,
                size: rec.size,
                labels: rec.labels,
                created: rec.created,
                updated: rec.updated,
            };
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Removes the namespace's record of a blob; the bytes go at the next GC if no other
    /// namespace holds them.
    pub fn content_delete(&self, ctx: &Ctx, d: &Digest) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(CONTENT).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), d.as_str()])?;
            if t.remove(k.as_str()).map_err(db_err(&self.path))?.is_none() {
                return Err(Error::NotFound {
                    what: "content digest",
                    id: d.to_string(),
                });
            }
        }
        self.commit(txn)
    }

    /// Reads bytes of a blob the namespace owns.
    pub fn content_read(&self, ctx: &Ctx, d: &Digest, offset: i64, size: i64) -> Result<Vec<u8>> {
        self.content_record(ctx, d)?;
        Ok(self.content.read_at(ctx.ns.as_str(), d, offset, size)?)
    }

    /// Opens a blob the namespace owns for streaming.
    pub fn content_open(&self, ctx: &Ctx, d: &Digest) -> Result<(cs::BlobReader, i64)> {
        let rec = self.content_record(ctx, d)?;
        Ok((self.content.open(ctx.ns.as_str(), d)?, rec.size))
    }

    /// Status of the namespace's ingest `ref`.
    pub fn content_status(&self, ctx: &Ctx, r#ref: &str) -> Result<IngestStatus> {
        let r = self.read()?;
        let t = r.open_table(INGESTS).map_err(db_err(&self.path))?;
        let rec: IngestRecord =
            get(&t, &key(&[ctx.ns.as_str(), r#ref])?, &self.path)?.ok_or_else(|| {
                Error::NotFound {
                    what: "ingest ref",
                    id: r#ref.to_string(),
                }
            })?;
        let mut st = self.content.status(ctx.ns.as_str(), &rec.backend_ref)?;
        st.r#ref = r#ref.to_string();
        Ok(st)
    }

    /// Every ingest of the namespace passing the filter (field `ref`).
    pub fn content_list_statuses(&self, ctx: &Ctx, filter: &Filter) -> Result<Vec<IngestStatus>> {
        let r = self.read()?;
        let t = r.open_table(INGESTS).map_err(db_err(&self.path))?;
        let mut out = Vec::new();
        for (r#ref, rec) in scan::<IngestRecord>(&t, ctx.ns.as_str(), &self.path)? {
            if let Ok(mut st) = self.content.status(ctx.ns.as_str(), &rec.backend_ref) {
                st.r#ref = r#ref;
                if filter.matches(&StatusAdaptor(&st)) {
                    out.push(st);
                }
            }
        }
        Ok(out)
    }

    /// Aborts the namespace's ingest `ref`.
    pub fn content_abort(&self, ctx: &Ctx, r#ref: &str) -> Result<()> {
        let txn = self.write()?;
        let rec: IngestRecord = {
            let mut t = txn.open_table(INGESTS).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), r#ref])?;
            let rec = get(&t, &k, &self.path)?.ok_or_else(|| Error::NotFound {
                what: "ingest ref",
                id: r#ref.to_string(),
            })?;
            t.remove(k.as_str()).map_err(db_err(&self.path))?;
            rec
        };
        self.commit(txn)?;
        match self.content.abort(ctx.ns.as_str(), &rec.backend_ref) {
            Ok(()) | Err(cs::Error::IngestNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored record of the namespace's ingest `ref`.
    pub fn ingest_record(&self, ctx: &Ctx, r#ref: &str) -> Result<IngestRecord> {
        let r = self.read()?;
        let t = r.open_table(INGESTS).map_err(db_err(&self.path))?;
        get(&t, &key(&[ctx.ns.as_str(), r#ref])?, &self.path)?.ok_or_else(|| Error::NotFound {
            what: "ingest ref",
            id: r#ref.to_string(),
        })
    }

    /// Test hook: moves an ingest's expiry (containerd's is a fixed 24 h).
    #[cfg(test)]
    pub(crate) fn set_ingest_expiry(&self, ctx: &Ctx, r#ref: &str, at: Option<Ts>) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(INGESTS).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), r#ref])?;
            let mut rec: IngestRecord =
                get(&t, &k, &self.path)?.ok_or_else(|| Error::NotFound {
                    what: "ingest ref",
                    id: r#ref.to_string(),
                })?;
            rec.expire_at = at;
            t.insert(k.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.commit(txn)
    }

    /// Opens a namespaced writer. If the namespace already has `expected`, or (shared policy)
    /// the store has it from another namespace — which is then adopted into this namespace and
    /// the context's lease — the result is AlreadyExists, as containerd's.
    pub fn content_writer(
        self: &Arc<Self>,
        ctx: &Ctx,
        r#ref: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<NsWriter> {
        if r#ref.is_empty() {
            return Err(Error::Invalid("ref must not be empty".into()));
        }
        if let Some(d) = &expected {
            if self.content_record(ctx, d).is_ok() {
                return Err(Error::AlreadyExists {
                    what: "content",
                    id: d.to_string(),
                });
            }
            if self.policy == SharingPolicy::Shared {
                // Held until the record commits, so GC cannot remove the blob in between.
                let _gc = self.gc_guard();
                if let Ok(bi) = self.content.info(ctx.ns.as_str(), d) {
                    if total <= 0 || total == bi.size {
                        let txn = self.write()?;
                        self.ensure_namespace(&txn, &ctx.ns)?;
                        {
                            let mut t = txn.open_table(CONTENT).map_err(db_err(&self.path))?;
                            let now = Ts::now();
                            let rec = ContentRecord {
                                size: bi.size,
                                labels: Labels::new(),
                                created: now,
                                updated: now,
                            };
                            t.insert(
                                key(&[ctx.ns.as_str(), d.as_str()])?.as_str(),
                                encode(&rec).as_slice(),
                            )
                            .map_err(db_err(&self.path))?;
                        }
                        self.add_to_ctx_lease(&txn, ctx, "content", d.as_str())?;
                        self.commit(txn)?;
                        return Err(Error::AlreadyExists {
                            what: "content",
                            id: d.to_string(),
                        });
                    }
                }
            }
        }
        let bref = backend_ref(ctx, r#ref);
        // Backend ingest and record appear together for the collector, which aborts local
        // ingests without a record.
        let _gc = self.gc_guard();
        let inner = match self.content.writer(ctx.ns.as_str(), &bref, total, None) {
            Ok(w) => w,
            Err(cs::Error::Locked(_)) => return Err(cs::Error::Locked(r#ref.to_string()).into()),
            Err(e) => return Err(e.into()),
        };
        let txn = self.write()?;
        self.ensure_namespace(&txn, &ctx.ns)?;
        {
            let mut t = txn.open_table(INGESTS).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), r#ref])?;
            let prior: Option<IngestRecord> = get(&t, &k, &self.path)?;
            let leased = ctx.lease.is_some();
            // containerd: a reopened ingest keeps its record; without a lease the expiry is
            // pushed out again, with one the old expiry (if any) stays and the lease holds it.
            let expire_at = if leased {
                prior.as_ref().and_then(|p| p.expire_at)
            } else {
                Some(Ts::from(std::time::SystemTime::now() + INGEST_EXPIRY))
            };
            let rec = IngestRecord {
                backend_ref: bref,
                expected: expected.as_ref().map(ToString::to_string),
                expire_at,
                leased: leased || prior.is_some_and(|p| p.leased),
            };
            t.insert(k.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.add_to_ctx_lease(&txn, ctx, "ingests", r#ref)?;
        self.commit(txn)?;
        Ok(NsWriter {
            db: Arc::clone(self),
            ctx: ctx.clone(),
            r#ref: r#ref.to_string(),
            inner,
            expected,
        })
    }
}

/// A writer into a namespace's ingest; `commit` records the blob in the namespace.
#[derive(Debug)]
pub struct NsWriter {
    db: Arc<Db>,
    ctx: Ctx,
    r#ref: String,
    inner: cs::BackendWriter,
    expected: Option<Digest>,
}

impl NsWriter {
    /// Status with the caller's ref.
    pub fn status(&self) -> IngestStatus {
        let mut st = self.inner.status();
        st.r#ref = self.r#ref.clone();
        if st.expected.is_none() {
            st.expected = self.expected.clone();
        }
        st
    }

    /// Appends data.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        Ok(self.inner.write(buf)?)
    }

    /// Restarts the ingest from zero.
    pub fn truncate(&mut self) -> Result<()> {
        Ok(self.inner.truncate()?)
    }

    /// Digest of the data so far.
    pub fn digest(&self) -> Digest {
        self.inner.digest()
    }

    /// Verifies, commits the bytes, then records them in the namespace (moving the lease
    /// reference from the ingest to the blob). AlreadyExists if the namespace had it.
    pub fn commit(self, size: i64, expected: Option<Digest>, labels: Labels) -> Result<Digest> {
        validate_labels(&labels)?;
        let db = &self.db;
        let _gc = db.gc_guard();
        let expected = expected.or_else(|| self.expected.clone());
        let d = match self.inner.commit(size, expected.as_ref()) {
            Ok(d) => d,
            Err(cs::Error::AlreadyExists(d)) => d,
            Err(e) => return Err(e.into()),
        };
        let size = db.content.info(self.ctx.ns.as_str(), &d)?.size;
        let txn = db.write()?;
        db.ensure_namespace(&txn, &self.ctx.ns)?;
        let existed = {
            let mut t = txn.open_table(INGESTS).map_err(db_err(&db.path))?;
            t.remove(key(&[self.ctx.ns.as_str(), &self.r#ref])?.as_str())
                .map_err(db_err(&db.path))?;
            let mut t = txn.open_table(CONTENT).map_err(db_err(&db.path))?;
            let k = key(&[self.ctx.ns.as_str(), d.as_str()])?;
            let existed = t.get(k.as_str()).map_err(db_err(&db.path))?.is_some();
            if !existed {
                let now = Ts::now();
                let rec = ContentRecord {
                    size,
                    labels,
                    created: now,
                    updated: now,
                };
                t.insert(k.as_str(), encode(&rec).as_slice())
                    .map_err(db_err(&db.path))?;
            }
            existed
        };
        if let Some(lease) = &self.ctx.lease {
            let mut t = txn.open_table(LEASES).map_err(db_err(&db.path))?;
            let k = key(&[self.ctx.ns.as_str(), lease])?;
            if let Some(mut rec) = get::<super::leases::LeaseRecord>(&t, &k, &db.path)? {
                rec.resources
                    .remove(&("ingests".to_string(), self.r#ref.clone()));
                rec.resources.insert(("content".to_string(), d.to_string()));
                t.insert(k.as_str(), encode(&rec).as_slice())
                    .map_err(db_err(&db.path))?;
            }
        }
        db.commit(txn)?;
        if existed {
            return Err(Error::AlreadyExists {
                what: "content",
                id: d.to_string(),
            });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use super::*;
    use crate::errdefs::{HasKind, Kind};

    fn put(db: &Arc<Db>, ctx: &Ctx, data: &[u8]) -> Result<Digest> {
        let d = Digest::from_bytes(data);
        let mut w =
            db.content_writer(ctx, &format!("ref-{d}"), data.len() as i64, Some(d.clone()))?;
        w.write(data)?;
        w.commit(data.len() as i64, Some(d), Labels::new())
    }

    #[test]
    fn namespaced_ownership_shared() {
        let (_t, db) = testutil::db(SharingPolicy::Shared);
        let db = Arc::new(db);
        let a = testutil::ctx("a");
        let b = testutil::ctx("b");
        let d = put(&db, &a, b"blob").unwrap();
        assert_eq!(db.content_info(&b, &d).unwrap_err().kind(), Kind::NotFound);
        // Shared: writing in b finds it and adopts it without new bytes.
        assert_eq!(
            put(&db, &b, b"blob").unwrap_err().kind(),
            Kind::AlreadyExists
        );
        assert_eq!(db.content_info(&b, &d).unwrap().size, 4);
        assert_eq!(db.content_list(&a, &Filter::default()).unwrap().len(), 1);
        db.content_delete(&a, &d).unwrap();
        assert_eq!(db.content_read(&b, &d, 0, 0).unwrap(), b"blob");
    }

    #[test]
    fn isolated_requires_own_copy() {
        let (_t, db) = testutil::db(SharingPolicy::Isolated);
        let db = Arc::new(db);
        let d = put(&db, &testutil::ctx("a"), b"blob").unwrap();
        let b = testutil::ctx("b");
        let mut w = db.content_writer(&b, "r", 4, Some(d.clone())).unwrap();
        w.write(b"blob").unwrap();
        assert_eq!(w.commit(4, Some(d.clone()), Labels::new()).unwrap(), d);
        assert!(db.content_info(&b, &d).is_ok());
    }

    #[test]
    fn update_labels_and_filter() {
        let (_t, db) = testutil::db(SharingPolicy::Shared);
        let db = Arc::new(db);
        let a = testutil::ctx("a");
        let d = put(&db, &a, b"x").unwrap();
        let l: Labels = [("containerd.io/gc.ref.content.m.0".into(), "v".into())].into();
        db.content_update(
            &a,
            &d,
            &l,
            &["labels.containerd.io/gc.ref.content.m.0".into()],
        )
        .unwrap();
        let f = Filter::parse("labels.\"containerd.io/gc.ref.content.m.0\"==v").unwrap();
        assert_eq!(db.content_list(&a, &f).unwrap().len(), 1);
        assert_eq!(
            db.content_update(&a, &d, &l, &["size".into()])
                .unwrap_err()
                .kind(),
            Kind::InvalidArgument
        );
    }

    #[test]
    fn ingest_status_and_abort() {
        let (_t, db) = testutil::db(SharingPolicy::Shared);
        let db = Arc::new(db);
        let a = testutil::ctx("a");
        {
            let mut w = db.content_writer(&a, "my-ref", 10, None).unwrap();
            w.write(b"abc").unwrap();
        }
        let st = db.content_status(&a, "my-ref").unwrap();
        assert_eq!((st.r#ref.as_str(), st.offset, st.total), ("my-ref", 3, 10));
        assert_eq!(
            db.content_list_statuses(&testutil::ctx("b"), &Filter::default())
                .unwrap()
                .len(),
            0
        );
        db.content_abort(&a, "my-ref").unwrap();
        assert_eq!(
            db.content_status(&a, "my-ref").unwrap_err().kind(),
            Kind::NotFound
        );
    }
}
