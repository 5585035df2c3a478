//! Garbage collection (containerd `metadata/gc.go` + `gc/gc.go`): tricolour-free mark and
//! sweep over the whole database in one write transaction.
//!
//! Roots: unexpired leases (and everything they hold; a `containerd.io/gc.flat` lease only its
//! own resources and snapshot parents), images (their target), containers
//! (their snapshot), content and snapshots labelled `containerd.io/gc.root`, and ingests whose
//! expiry (containerd `expireat`, set on ingests opened without a lease) has not passed;
//! records from before expiries were recorded stay unless an expired lease held them.
//! References: an ingest's expected digest, `containerd.io/gc.ref.content*` labels (value =
//! digest) and `containerd.io/gc.ref.snapshot.<snapshotter>*` labels (value = key) on
//! images, containers, content and snapshots, plus a snapshot's parent. Everything unmarked
//! in the namespace tables is deleted, expired leases with it; after the commit, blobs that
//! no namespace references and backend snapshots no record points at are removed from disk,
//! removed ingests are aborted in the backend (local store or proxy), and so are local
//! ingests no record names (a crash between the two).

use super::containers::Container;
use super::content::{ContentRecord, IngestRecord};
use super::images::Image;
use super::leases::LeaseRecord;
use super::snapshots::{sweep_backend, SnapshotRecord};
use super::{
    db_err, scan_all, Db, Result, CONTAINERS, CONTENT, IMAGES, INGESTS, LEASES, NAMESPACES,
    SNAPSHOTS,
};
use crate::content::Digest;
use redb::ReadableTable;

pub use super::scheduler::Scheduler;
use std::collections::{HashSet, VecDeque};

/// Label marking an object as a GC root.
pub const ROOT_LABEL: &str = "containerd.io/gc.root";
/// Label making a lease hold only its own resources.
pub const FLAT_LABEL: &str = "containerd.io/gc.flat";
const REF_CONTENT: &str = "containerd.io/gc.ref.content";
const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Content(String, String),
    Snapshot(String, String, String),
    Ingest(String, String),
}

/// What a collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Content records removed from namespaces.
    pub content_records: usize,
    /// Blobs removed from disk.
    pub blobs: usize,
    /// Snapshot records removed.
    pub snapshot_records: usize,
    /// Backend snapshots removed.
    pub backend_snapshots: usize,
    /// Expired leases removed.
    pub leases: usize,
    /// Ingests aborted.
    pub ingests: usize,
}

fn label_refs(ns: &str, labels: &super::Labels, out: &mut Vec<Node>) {
    for (k, v) in labels {
        if k.starts_with(REF_CONTENT) {
            if Digest::parse(v).is_ok() {
                out.push(Node::Content(ns.to_string(), v.clone()));
            }
        } else if let Some(rest) = k.strip_prefix(REF_SNAPSHOT) {
            let sn = rest.split('/').next().unwrap_or(rest);
            out.push(Node::Snapshot(ns.to_string(), sn.to_string(), v.clone()));
        }
    }
}

fn split2(k: &str) -> (String, String) {
    let mut it = k.splitn(2, '\0');
    (
        it.next().unwrap_or_default().to_string(),
        it.next().unwrap_or_default().to_string(),
    )
}

fn split3(k: &str) -> (String, String, String) {
    let mut it = k.splitn(3, '\0');
    (
        it.next().unwrap_or_default().to_string(),
        it.next().unwrap_or_default().to_string(),
        it.next().unwrap_or_default().to_string(),
    )
}

impl Db {
    /// Runs one full collection.
    pub fn garbage_collect(&self) -> Result<Stats> {
        let _g = self.gc_guard();
        let mut stats = Stats::default();
        let now = chrono::Utc::now();
        let p = &self.path;
        let txn = self.write()?;
        let (contents, snaps, ingests, leases) = {
            let contents: Vec<(String, ContentRecord)> =
                scan_all(&txn.open_table(CONTENT).map_err(db_err(p))?, p)?;
            let snaps: Vec<(String, SnapshotRecord)> =
                scan_all(&txn.open_table(SNAPSHOTS).map_err(db_err(p))?, p)?;
            let ingests: Vec<(String, IngestRecord)> =
                scan_all(&txn.open_table(INGESTS).map_err(db_err(p))?, p)?;
            let leases: Vec<(String, LeaseRecord)> =
                scan_all(&txn.open_table(LEASES).map_err(db_err(p))?, p)?;
            (contents, snaps, ingests, leases)
        };
        let images: Vec<(String, Image)> =
            scan_all(&txn.open_table(IMAGES).map_err(db_err(p))?, p)?;
        let containers: Vec<(String, Container)> =
            scan_all(&txn.open_table(CONTAINERS).map_err(db_err(p))?, p)?;

        // Roots.
        let mut queue: VecDeque<Node> = VecDeque::new();
        let mut flat: Vec<Node> = Vec::new();
        let mut leased_ingests = HashSet::new();
        let mut expired = Vec::new();
        for (k, l) in &leases {
            let (ns, _) = split2(k);
            if l.expired(now) {
                expired.push(k.clone());
                continue;
            }
            // A flat lease holds exactly its resources (and a snapshot's parents), not what
            // their labels reference (containerd's `containerd.io/gc.flat`).
            let is_flat = l.labels.contains_key(FLAT_LABEL);
            for (kind, id) in &l.resources {
                let node = match kind.as_str() {
                    "content" => Some(Node::Content(ns.clone(), id.clone())),
                    k => k
                        .strip_prefix("snapshots/")
                        .map(|sn| Node::Snapshot(ns.clone(), sn.to_string(), id.clone())),
                };
                if let (true, Some(n)) = (is_flat, node) {
                    flat.push(n);
                    continue;
                }
                match kind.as_str() {
                    "content" => queue.push_back(Node::Content(ns.clone(), id.clone())),
                    "ingests" => {
                        leased_ingests.insert((ns.clone(), id.clone()));
                        queue.push_back(Node::Ingest(ns.clone(), id.clone()));
                    }
                    k => {
                        if let Some(sn) = k.strip_prefix("snapshots/") {
                            queue.push_back(Node::Snapshot(ns.clone(), sn.to_string(), id.clone()));
                        }
                    }
                }
            }
        }
        // Ingests held only by expired leases are collectable too.
        for (k, l) in &leases {
            if l.expired(now) {
                let (ns, _) = split2(k);
                for (kind, id) in &l.resources {
                    if kind == "ingests" {
                        leased_ingests.insert((ns.clone(), id.clone()));
                    }
                }
            }
        }
        let now_ts = super::Ts::from(std::time::SystemTime::from(now));
        for (k, rec) in &ingests {
            let (ns, r) = split2(k);
            let in_lease = leased_ingests.contains(&(ns.clone(), r.clone()));
            if rec.gc_root(now_ts, in_lease) {
                queue.push_back(Node::Ingest(ns, r));
            }
        }
        for (k, img) in &images {
            let (ns, _) = split2(k);
            queue.push_back(Node::Content(ns.clone(), img.target.digest.clone()));
            let mut refs = Vec::new();
            label_refs(&ns, &img.labels, &mut refs);
            queue.extend(refs);
        }
        for (k, c) in &containers {
            let (ns, _) = split2(k);
            if !c.snapshotter.is_empty() && !c.snapshot_key.is_empty() {
                queue.push_back(Node::Snapshot(
                    ns.clone(),
                    c.snapshotter.clone(),
                    c.snapshot_key.clone(),
                ));
            }
            let mut refs = Vec::new();
            label_refs(&ns, &c.labels, &mut refs);
            queue.extend(refs);
        }
        for (k, c) in &contents {
            if c.labels.contains_key(ROOT_LABEL) {
                let (ns, d) = split2(k);
                queue.push_back(Node::Content(ns, d));
            }
        }
        for (k, s) in &snaps {
            if s.labels.contains_key(ROOT_LABEL) {
                let (ns, sn, key) = split3(k);
                queue.push_back(Node::Snapshot(ns, sn, key));
            }
        }

        // Mark.
        let content_by_key: std::collections::HashMap<&str, &ContentRecord> =
            contents.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let snap_by_key: std::collections::HashMap<&str, &SnapshotRecord> =
            snaps.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ingest_by_key: std::collections::HashMap<&str, &IngestRecord> =
            ingests.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut marked: HashSet<Node> = HashSet::new();
        while let Some(n) = queue.pop_front() {
            if !marked.insert(n.clone()) {
                continue;
            }
            let mut refs = Vec::new();
            match &n {
                Node::Content(ns, d) => {
                    if let Some(c) = content_by_key.get(format!("{ns}\0{d}").as_str()) {
                        label_refs(ns, &c.labels, &mut refs);
                    }
                }
                Node::Snapshot(ns, sn, key) => {
                    if let Some(s) = snap_by_key.get(format!("{ns}\0{sn}\0{key}").as_str()) {
                        if !s.parent.is_empty() {
                            refs.push(Node::Snapshot(ns.clone(), sn.clone(), s.parent.clone()));
                        }
                        label_refs(ns, &s.labels, &mut refs);
                    }
                }
                Node::Ingest(ns, r) => {
                    // containerd: an ingest references the content it expects.
                    if let Some(d) = ingest_by_key
                        .get(format!("{ns}\0{r}").as_str())
                        .and_then(|i| i.expected.as_ref())
                    {
                        refs.push(Node::Content(ns.clone(), d.clone()));
                    }
                }
            }
            queue.extend(refs.into_iter().filter(|r| !marked.contains(r)));
        }
        // Flat roots last: whatever a full root reaches was expanded above already.
        for n in flat {
            let mut next = Some(n);
            while let Some(n) = next.take() {
                if !marked.insert(n.clone()) {
                    break;
                }
                if let Node::Snapshot(ns, sn, key) = &n {
                    next = snap_by_key
                        .get(format!("{ns}\0{sn}\0{key}").as_str())
                        .filter(|s| !s.parent.is_empty())
                        .map(|s| Node::Snapshot(ns.clone(), sn.clone(), s.parent.clone()));
                }
            }
        }

        // Sweep the metadata.
        let mut aborted = Vec::new();
        {
            let mut t = txn.open_table(CONTENT).map_err(db_err(p))?;
            for (k, _) in &contents {
                let (ns, d) = split2(k);
                if !marked.contains(&Node::Content(ns, d)) {
                    t.remove(k.as_str()).map_err(db_err(p))?;
                    stats.content_records += 1;
                }
            }
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err(p))?;
            for (k, _) in &snaps {
                let (ns, sn, key) = split3(k);
                if !marked.contains(&Node::Snapshot(ns, sn, key)) {
                    t.remove(k.as_str()).map_err(db_err(p))?;
                    stats.snapshot_records += 1;
                }
            }
            let mut t = txn.open_table(INGESTS).map_err(db_err(p))?;
            for (k, rec) in &ingests {
                let (ns, r) = split2(k);
                if !marked.contains(&Node::Ingest(ns.clone(), r)) {
                    t.remove(k.as_str()).map_err(db_err(p))?;
                    aborted.push((ns, rec.backend_ref.clone()));
                }
            }
            let mut t = txn.open_table(LEASES).map_err(db_err(p))?;
            for k in &expired {
                t.remove(k.as_str()).map_err(db_err(p))?;
                stats.leases += 1;
            }
        }
        let keep_snaps = self.snapshot_backend_keys(&txn)?;
        // Namespaces whose blobs a proxy may hold: every namespace, and those of the records
        // removed now (a namespace may be gone by the time its content is collected).
        let mut namespaces: Vec<String> = {
            let t = txn.open_table(NAMESPACES).map_err(db_err(p))?;
            let mut v = Vec::new();
            for item in t.iter().map_err(db_err(p))? {
                let (k, _) = item.map_err(db_err(p))?;
                v.push(k.value().to_string());
            }
            v
        };
        namespaces.extend(contents.iter().map(|(k, _)| split2(k).0));
        let keep_blobs: HashSet<String> = {
            let t = txn.open_table(CONTENT).map_err(db_err(p))?;
            scan_all::<ContentRecord>(&t, p)?
                .into_iter()
                .map(|(k, _)| split2(&k).1)
                .collect()
        };
        // Nothing removed: end the transaction without a commit (a commit is an fdatasync
        // even when empty, and GC runs after every lease and container delete).
        if stats.content_records + stats.snapshot_records + stats.leases > 0 || !aborted.is_empty()
        {
            self.commit(txn)?;
        } else {
            txn.abort().map_err(db_err(p))?;
        }

        // Sweep the backends (data after metadata: a crash here leaves only orphans, which
        // the next collection finds below).
        let gone: HashSet<String> = aborted.iter().map(|(_, r)| r.clone()).collect();
        for (ns, r) in aborted {
            match self.content.abort(&ns, &r) {
                Ok(()) => stats.ingests += 1,
                Err(crate::content::Error::IngestNotFound(_)) => {}
                Err(e) => log::warn!("gc: aborting ingest {r:?} (namespace {ns:?}): {e}"),
            }
        }
        // Local ingests no record names (containerd: abort backend ingests not seen in any
        // namespace). Writers open the backend ingest and commit its record under the GC
        // lock, so a fresh ingest is never taken for an orphan.
        let live: HashSet<&str> = ingests
            .iter()
            .map(|(_, rec)| rec.backend_ref.as_str())
            .filter(|r| !gone.contains(*r))
            .collect();
        for r in self.content.local_ingest_refs()? {
            if !live.contains(r.as_str()) && self.content.abort("", &r).is_ok() {
                log::debug!("gc: aborted orphaned ingest {r:?}");
                stats.ingests += 1;
            }
        }
        let mut removed: HashSet<String> = HashSet::new();
        for ns in self.content.gc_namespaces(&namespaces) {
            let blobs = match self.content.walk_collectable(&ns) {
                Ok(b) => b,
                // The local store failing to list is fatal; an unreachable proxy only delays
                // its part of the sweep to the next collection.
                Err(e) if self.content.proxy().is_some() => {
                    log::warn!("gc: listing proxy content of namespace {ns}: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for b in blobs {
                if keep_blobs.contains(b.digest.as_str()) {
                    continue;
                }
                match self.content.delete(&ns, &b.digest) {
                    Ok(()) => {
                        if removed.insert(b.digest.to_string()) {
                            stats.blobs += 1;
                        }
                    }
                    Err(e) => log::warn!("gc: removing blob {} (namespace {ns:?}): {e}", b.digest),
                }
            }
        }
        for (name, backend) in &self.snapshotters {
            let keep: HashSet<String> = keep_snaps
                .iter()
                .filter(|(s, _)| s == name)
                .map(|(_, k)| k.clone())
                .collect();
            stats.backend_snapshots += sweep_backend(backend, &keep)?;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::super::images::Image;
    use super::super::{testutil, Descriptor, Labels};
    use super::*;
    use crate::content::Digest;
    use std::sync::Arc;

    fn put(db: &Arc<Db>, ctx: &super::super::Ctx, data: &[u8], labels: Labels) -> Digest {
        let d = Digest::from_bytes(data);
        let mut w = db.content_writer(ctx, &format!("r-{d}"), 0, None).unwrap();
        w.write(data).unwrap();
        w.commit(0, None, labels).unwrap()
    }

    #[test]
    fn image_roots_refs_and_leases() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        let layer = put(&db, &c, b"layer", Labels::new());
        db.snapshot_create(&c, "native", "tmp", "", Labels::new(), false)
            .unwrap();
        db.snapshot_commit(&c, "native", "chain1", "tmp", Labels::new())
            .unwrap();
        let manifest = put(
            &db,
            &c,
            b"manifest",
            [
                (
                    "containerd.io/gc.ref.content.l.0".to_string(),
                    layer.to_string(),
                ),
                (
                    "containerd.io/gc.ref.snapshot.native".to_string(),
                    "chain1".to_string(),
                ),
            ]
            .into(),
        );
        let orphan = put(&db, &c, b"orphan", Labels::new());
        db.lease_create(&c, "hold", Labels::new()).unwrap();
        let held = put(&db, &c, b"held", Labels::new());
        db.lease_add_resource(&c, "hold", "content", held.as_str())
            .unwrap();
        db.image_create(
            &c,
            Image {
                name: "img".into(),
                target: Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: manifest.to_string(),
                    size: 8,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();

        let s = db.garbage_collect().unwrap();
        assert_eq!(s.content_records, 1, "only the orphan goes: {s:?}");
        assert!(db.content_info(&c, &orphan).is_err());
        assert!(
            db.content_store().info("", &orphan).is_err(),
            "blob removed from disk"
        );
        for d in [&layer, &manifest, &held] {
            assert!(db.content_info(&c, d).is_ok());
        }
        assert!(db.snapshot_stat(&c, "native", "chain1").is_ok());

        db.image_delete(&c, "img").unwrap();
        let s = db.garbage_collect().unwrap();
        assert_eq!(
            (s.content_records, s.snapshot_records, s.backend_snapshots),
            (2, 1, 1),
            "{s:?}"
        );
        assert!(db.content_info(&c, &held).is_ok(), "lease keeps it");
        db.lease_delete(&c, "hold").unwrap();
        db.garbage_collect().unwrap();
        assert!(db.content_store().local_blobs().is_empty());
    }

    #[test]
    fn flat_lease_holds_only_its_own_resources() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        let layer = put(&db, &c, b"layer", Labels::new());
        let manifest = put(
            &db,
            &c,
            b"manifest",
            [(
                "containerd.io/gc.ref.content.l.0".to_string(),
                layer.to_string(),
            )]
            .into(),
        );
        db.lease_create(&c, "flat", [(FLAT_LABEL.to_string(), String::new())].into())
            .unwrap();
        db.lease_add_resource(&c, "flat", "content", manifest.as_str())
            .unwrap();
        db.snapshot_create(&c, "native", "p", "", Labels::new(), false)
            .unwrap();
        db.snapshot_commit(&c, "native", "parent", "p", Labels::new())
            .unwrap();
        db.snapshot_create(&c, "native", "child", "parent", Labels::new(), false)
            .unwrap();
        db.lease_add_resource(&c, "flat", "snapshots/native", "child")
            .unwrap();
        db.garbage_collect().unwrap();
        assert!(db.content_info(&c, &manifest).is_ok());
        assert!(
            db.content_info(&c, &layer).is_err(),
            "a flat lease does not follow labels"
        );
        assert!(
            db.snapshot_stat(&c, "native", "parent").is_ok(),
            "parents are kept"
        );
    }

    #[test]
    fn expired_lease_is_removed() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        db.lease_create(
            &c,
            "old",
            [(
                super::super::leases::EXPIRE_LABEL.to_string(),
                "2001-01-01T00:00:00Z".to_string(),
            )]
            .into(),
        )
        .unwrap();
        let d = put(&db, &c, b"x", Labels::new());
        db.lease_add_resource(&c, "old", "content", d.as_str())
            .unwrap();
        let s = db.garbage_collect().unwrap();
        assert_eq!((s.leases, s.content_records), (1, 1));
    }

    fn partial_ingest(db: &Arc<Db>, ctx: &super::super::Ctx, r: &str) -> String {
        let mut w = db.content_writer(ctx, r, 10, None).unwrap();
        w.write(b"part").unwrap();
        drop(w);
        db.ingest_record(ctx, r).unwrap().backend_ref
    }

    #[test]
    fn expired_ingest_is_collected_and_aborted() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        let bref = partial_ingest(&db, &c, "old");
        db.set_ingest_expiry(&c, "old", Some(super::super::Ts(1)))
            .unwrap();
        let s = db.garbage_collect().unwrap();
        assert_eq!(s.ingests, 1, "{s:?}");
        assert!(db.content_status(&c, "old").is_err(), "record removed");
        assert!(
            db.content_list_statuses(&c, &Default::default())
                .unwrap()
                .is_empty(),
            "not listed as active"
        );
        assert!(
            db.content_store().status("default", &bref).is_err(),
            "backend ingest aborted"
        );
    }

    #[test]
    fn unexpired_ingest_is_kept_with_a_24h_expiry() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        let before = super::super::Ts::now();
        partial_ingest(&db, &c, "fresh");
        let rec = db.ingest_record(&c, "fresh").unwrap();
        let at = rec.expire_at.expect("an unleased ingest records an expiry");
        let day = i64::try_from(super::super::content::INGEST_EXPIRY.as_nanos()).unwrap();
        assert!(at.0 >= before.0 + day && at.0 <= super::super::Ts::now().0 + day);
        assert!(!rec.leased);
        let s = db.garbage_collect().unwrap();
        assert_eq!(s.ingests, 0);
        let st = db.content_status(&c, "fresh").unwrap();
        assert_eq!(st.offset, 4);
        assert_eq!(
            db.content_list_statuses(&c, &Default::default())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn leased_ingest_has_no_expiry_and_goes_with_its_lease() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let plain = testutil::ctx("default");
        db.lease_create(&plain, "l", Labels::new()).unwrap();
        let c = super::super::Ctx {
            lease: Some("l".into()),
            ..plain.clone()
        };
        let bref = partial_ingest(&db, &c, "held");
        let rec = db.ingest_record(&c, "held").unwrap();
        assert_eq!((rec.expire_at, rec.leased), (None, true));
        assert_eq!(db.garbage_collect().unwrap().ingests, 0, "lease holds it");
        db.lease_delete(&plain, "l").unwrap();
        assert_eq!(db.garbage_collect().unwrap().ingests, 1);
        assert!(db.content_status(&plain, "held").is_err());
        assert!(db.content_store().status("default", &bref).is_err());
    }

    #[test]
    fn record_without_expiry_from_older_berthd_is_kept() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        partial_ingest(&db, &c, "legacy");
        db.set_ingest_expiry(&c, "legacy", None).unwrap();
        assert_eq!(db.garbage_collect().unwrap().ingests, 0);
        assert!(db.content_status(&c, "legacy").is_ok());
    }

    #[test]
    fn ingest_keeps_its_expected_content() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        let d = Digest::from_bytes(b"blob");
        let w = db
            .content_writer(&c, "pending", 4, Some(d.clone()))
            .unwrap();
        drop(w);
        assert_eq!(put(&db, &c, b"blob", Labels::new()), d);
        db.garbage_collect().unwrap();
        assert!(
            db.content_info(&c, &d).is_ok(),
            "an ingest references the digest it expects"
        );
        db.content_abort(&c, "pending").unwrap();
        db.garbage_collect().unwrap();
        assert!(db.content_info(&c, &d).is_err());
    }

    #[test]
    fn local_ingest_without_a_record_is_aborted() {
        let (_t, db) = testutil::db(Default::default());
        let db = Arc::new(db);
        let c = testutil::ctx("default");
        let kept = partial_ingest(&db, &c, "recorded");
        let mut w = db
            .content_store()
            .writer("default", "default/orphan", 0, None)
            .unwrap();
        w.write(b"left behind").unwrap();
        drop(w);
        let s = db.garbage_collect().unwrap();
        assert_eq!(s.ingests, 1, "{s:?}");
        assert!(db.content_store().status("", "default/orphan").is_err());
        assert!(db.content_store().status("", &kept).is_ok());
        assert!(db.content_status(&c, "recorded").is_ok());
    }
}
