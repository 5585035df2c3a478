//! Namespaced snapshots (containerd `metadata/snapshot.go`): each namespace sees its own keys;
//! the backend snapshotter sees `<ns>/<seq>/<key>`, unique forever, so a removed key can be
//! reused at once while the backend copy waits for GC. Labels live here (the backend only gets
//! the `containerd.io/snapshot/` ones, as containerd), as do the lease references.
//!
//! Backend calls run inside the metadata write transaction, which serialises them against
//! each other and against GC, as containerd's bolt `Update` does.

use super::{
    db_err, encode, get, key, scan, scan_all, validate_labels, Ctx, Db, Error, Labels, Result, Ts,
    META, SNAPSHOTS,
};
use crate::filters::{label_field, non_empty, Adaptor, Filter};
use crate::snapshots::{Kind, Mount, Usage};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// Stored per (namespace, snapshotter, key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Key in the backend.
    pub backend_key: String,
    /// Parent's key in this namespace ("" for none).
    #[serde(default)]
    pub parent: String,
    /// Active, view or committed.
    pub kind: Kind,
    /// All labels.
    #[serde(default)]
    pub labels: Labels,
    /// Created.
    pub created: Ts,
    /// Updated.
    pub updated: Ts,
}

/// A snapshot as the API sees it.
#[derive(Debug, Clone)]
pub struct Info {
    /// Key/name in the namespace.
    pub name: String,
    /// Parent name ("" for none).
    pub parent: String,
    /// Kind.
    pub kind: Kind,
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
            "kind" => Some(self.kind.as_str().to_string()),
            "name" => non_empty(&self.name),
            "parent" => non_empty(&self.parent),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

fn info(name: String, r: SnapshotRecord) -> Info {
    Info {
        name,
        parent: r.parent,
        kind: r.kind,
        labels: r.labels,
        created: r.created,
        updated: r.updated,
    }
}

/// Labels passed down to the backend (containerd's `filterInheritedLabels`).
fn backend_labels(l: &Labels) -> Labels {
    l.iter()
        .filter(|(k, _)| k.starts_with("containerd.io/snapshot/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Db {
    fn snap_record(&self, ctx: &Ctx, snapshotter: &str, k: &str) -> Result<SnapshotRecord> {
        self.snapshotter(snapshotter)?;
        let r = self.read()?;
        let t = r.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
        get(&t, &key(&[ctx.ns.as_str(), snapshotter, k])?, &self.path)?.ok_or_else(|| {
            Error::NotFound {
                what: "snapshot",
                id: k.to_string(),
            }
        })
    }

    /// Stat of a snapshot.
    pub fn snapshot_stat(&self, ctx: &Ctx, snapshotter: &str, k: &str) -> Result<Info> {
        Ok(info(k.to_string(), self.snap_record(ctx, snapshotter, k)?))
    }

    /// Mounts of an active or view snapshot.
    pub fn snapshot_mounts(&self, ctx: &Ctx, snapshotter: &str, k: &str) -> Result<Vec<Mount>> {
        let rec = self.snap_record(ctx, snapshotter, k)?;
        self.snapshotter(snapshotter)?.mounts(&rec.backend_key)
    }

    /// Disk usage of a snapshot's own layer.
    pub fn snapshot_usage(&self, ctx: &Ctx, snapshotter: &str, k: &str) -> Result<Usage> {
        let rec = self.snap_record(ctx, snapshotter, k)?;
        self.snapshotter(snapshotter)?.usage(&rec.backend_key)
    }

    /// Snapshots of the namespace in one snapshotter, passing the filter.
    pub fn snapshot_list(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        filter: &Filter,
    ) -> Result<Vec<Info>> {
        self.snapshotter(snapshotter)?;
        let r = self.read()?;
        let t = r.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
        let prefix = key(&[ctx.ns.as_str(), snapshotter])?;
        Ok(scan::<SnapshotRecord>(&t, &prefix, &self.path)?
            .into_iter()
            .map(|(k, r)| info(k, r))
            .filter(|i| filter.matches(i))
            .collect())
    }

    fn next_seq(&self, txn: &redb::WriteTransaction) -> Result<u64> {
        let mut t = txn.open_table(META).map_err(db_err(&self.path))?;
        let cur = t
            .get("snapshot_seq")
            .map_err(db_err(&self.path))?
            .and_then(|v| {
                std::str::from_utf8(v.value())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            })
            .unwrap_or(0);
        let next = cur + 1;
        t.insert("snapshot_seq", next.to_string().as_bytes())
            .map_err(db_err(&self.path))?;
        Ok(next)
    }

    /// Prepare (`readonly == false`) or View a snapshot on top of `parent` ("" for none).
    pub fn snapshot_create(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        k: &str,
        parent: &str,
        labels: Labels,
        readonly: bool,
    ) -> Result<Vec<Mount>> {
        if k.is_empty() {
            return Err(Error::Invalid("snapshot key must not be empty".into()));
        }
        validate_labels(&labels)?;
        let backend = self.snapshotter(snapshotter)?;
        let _gc = self.gc_guard();
        let txn = self.write()?;
        self.ensure_namespace(&txn, &ctx.ns)?;
        let seq = self.next_seq(&txn)?;
        let bkey = format!("{}/{}/{}", ctx.ns, seq, k);
        let mounts = {
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
            let rk = key(&[ctx.ns.as_str(), snapshotter, k])?;
            if t.get(rk.as_str()).map_err(db_err(&self.path))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "snapshot",
                    id: k.to_string(),
                });
            }
            let parent_bkey = if parent.is_empty() {
                String::new()
            } else {
                let p: SnapshotRecord = get(
                    &t,
                    &key(&[ctx.ns.as_str(), snapshotter, parent])?,
                    &self.path,
                )?
                .ok_or_else(|| Error::NotFound {
                    what: "parent snapshot",
                    id: parent.to_string(),
                })?;
                if p.kind != Kind::Committed {
                    return Err(Error::Invalid(format!(
                        "parent {parent:?} is not a committed snapshot"
                    )));
                }
                p.backend_key
            };
            let bl = backend_labels(&labels);
            let mounts = if readonly {
                backend.view(&bkey, &parent_bkey, bl)?
            } else {
                backend.prepare(&bkey, &parent_bkey, bl)?
            };
            let now = Ts::now();
            let kind = if readonly { Kind::View } else { Kind::Active };
            let rec = SnapshotRecord {
                backend_key: bkey.clone(),
                parent: parent.to_string(),
                kind,
                labels,
                created: now,
                updated: now,
            };
            t.insert(rk.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
            mounts
        };
        let lease = self.add_to_ctx_lease(&txn, ctx, &format!("snapshots/{snapshotter}"), k);
        let res = lease.and_then(|()| self.commit(txn));
        if let Err(e) = res {
            let _ = backend.remove(&bkey);
            return Err(e);
        }
        Ok(mounts)
    }

    /// Commits active snapshot `k` as `name`.
    pub fn snapshot_commit(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        name: &str,
        k: &str,
        labels: Labels,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::Invalid("snapshot name must not be empty".into()));
        }
        validate_labels(&labels)?;
        let backend = self.snapshotter(snapshotter)?;
        let _gc = self.gc_guard();
        let txn = self.write()?;
        let seq = self.next_seq(&txn)?;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
            let kk = key(&[ctx.ns.as_str(), snapshotter, k])?;
            let nk = key(&[ctx.ns.as_str(), snapshotter, name])?;
            let rec: SnapshotRecord = get(&t, &kk, &self.path)?.ok_or_else(|| Error::NotFound {
                what: "snapshot",
                id: k.to_string(),
            })?;
            if rec.kind != Kind::Active {
                return Err(Error::Precondition(format!("snapshot {k:?} is not active")));
            }
            if t.get(nk.as_str()).map_err(db_err(&self.path))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "snapshot",
                    id: name.to_string(),
                });
            }
            let nbkey = format!("{}/{}/{}", ctx.ns, seq, name);
            backend.commit(&nbkey, &rec.backend_key, backend_labels(&labels))?;
            let now = Ts::now();
            let new = SnapshotRecord {
                backend_key: nbkey,
                parent: rec.parent,
                kind: Kind::Committed,
                labels,
                created: now,
                updated: now,
            };
            t.remove(kk.as_str()).map_err(db_err(&self.path))?;
            t.insert(nk.as_str(), encode(&new).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.add_to_ctx_lease(&txn, ctx, &format!("snapshots/{snapshotter}"), name)?;
        self.commit(txn)
    }

    /// Removes a snapshot from the namespace (refused while it has children); the backend
    /// copy is removed by the next GC.
    pub fn snapshot_remove(&self, ctx: &Ctx, snapshotter: &str, k: &str) -> Result<()> {
        self.snapshotter(snapshotter)?;
        let txn = self.write()?;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
            let prefix = key(&[ctx.ns.as_str(), snapshotter])?;
            let rk = key(&[ctx.ns.as_str(), snapshotter, k])?;
            if t.get(rk.as_str()).map_err(db_err(&self.path))?.is_none() {
                return Err(Error::NotFound {
                    what: "snapshot",
                    id: k.to_string(),
                });
            }
            let children: Vec<String> = scan::<SnapshotRecord>(&t, &prefix, &self.path)?
                .into_iter()
                .filter(|(_, r)| r.parent == k)
                .map(|(c, _)| c)
                .collect();
            if !children.is_empty() {
                return Err(Error::Precondition(format!(
                    "cannot remove snapshot {k:?} with children {children:?}"
                )));
            }
            t.remove(rk.as_str()).map_err(db_err(&self.path))?;
        }
        self.commit(txn)
    }

    /// Updates labels (`labels`, `labels.<k>`; none = replace all). Other fields immutable.
    pub fn snapshot_update(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        k: &str,
        labels: &Labels,
        paths: &[String],
    ) -> Result<Info> {
        validate_labels(labels)?;
        self.snapshotter(snapshotter)?;
        let txn = self.write()?;
        let rec = {
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
            let rk = key(&[ctx.ns.as_str(), snapshotter, k])?;
            let mut rec: SnapshotRecord =
                get(&t, &rk, &self.path)?.ok_or_else(|| Error::NotFound {
                    what: "snapshot",
                    id: k.to_string(),
                })?;
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for p in paths {
                if !super::apply_label_path(&mut rec.labels, labels, p) {
                    return Err(Error::BadField {
                        field: p.clone(),
                        what: "snapshot",
                        id: k.to_string(),
                    });
                }
            }
            rec.updated = Ts::now();
            t.insert(rk.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
            rec
        };
        self.commit(txn)?;
        Ok(info(k.to_string(), rec))
    }

    /// Every backend key referenced from any namespace, per snapshotter (for GC).
    pub(crate) fn snapshot_backend_keys(
        &self,
        txn: &redb::WriteTransaction,
    ) -> Result<Vec<(String, String)>> {
        let t = txn.open_table(SNAPSHOTS).map_err(db_err(&self.path))?;
        Ok(scan_all::<SnapshotRecord>(&t, &self.path)?
            .into_iter()
            .filter_map(|(k, r)| k.split('\0').nth(1).map(|s| (s.to_string(), r.backend_key)))
            .collect())
    }
}

/// Removes backend snapshots not in `keep`, children before parents. Returns how many.
pub(crate) fn sweep_backend(
    backend: &super::backend::SnapBackend,
    keep: &std::collections::HashSet<String>,
) -> Result<usize> {
    let mut all = backend.list()?;
    let mut doomed: Vec<(String, String)> = all
        .iter()
        .filter(|(n, _)| !keep.contains(n))
        .cloned()
        .collect();
    let mut removed = 0;
    // Leaves first: repeat while progress is made.
    loop {
        let parents: std::collections::HashSet<String> =
            all.iter().map(|(_, p)| p.clone()).collect();
        let (leaves, rest): (Vec<_>, Vec<_>) =
            doomed.into_iter().partition(|(n, _)| !parents.contains(n));
        if leaves.is_empty() {
            break;
        }
        for (n, _) in &leaves {
            match backend.remove(n) {
                Ok(()) => removed += 1,
                Err(e) => log::warn!("gc: removing backend snapshot {n:?}: {e}"),
            }
        }
        all.retain(|(n, _)| !leaves.iter().any(|(l, _)| l == n));
        doomed = rest;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use super::*;
    use crate::errdefs::{HasKind, Kind as K};

    #[test]
    fn namespaced_lifecycle() {
        let (_t, db) = testutil::db(Default::default());
        let a = testutil::ctx("a");
        let b = testutil::ctx("b");
        db.snapshot_create(&a, "native", "k1", "", Labels::new(), false)
            .unwrap();
        // Same key in another namespace is independent.
        db.snapshot_create(&b, "native", "k1", "", Labels::new(), false)
            .unwrap();
        assert_eq!(
            db.snapshot_create(&a, "native", "k1", "", Labels::new(), false)
                .unwrap_err()
                .kind(),
            K::AlreadyExists
        );
        db.snapshot_commit(&a, "native", "c1", "k1", Labels::new())
            .unwrap();
        assert_eq!(
            db.snapshot_stat(&a, "native", "c1").unwrap().kind,
            Kind::Committed
        );
        assert_eq!(
            db.snapshot_stat(&a, "native", "k1").unwrap_err().kind(),
            K::NotFound
        );
        db.snapshot_create(&a, "native", "v1", "c1", Labels::new(), true)
            .unwrap();
        assert_eq!(db.snapshot_stat(&a, "native", "v1").unwrap().parent, "c1");
        assert_eq!(
            db.snapshot_remove(&a, "native", "c1").unwrap_err().kind(),
            K::FailedPrecondition
        );
        assert_eq!(
            db.snapshot_create(&a, "native", "x", "nope", Labels::new(), false)
                .unwrap_err()
                .kind(),
            K::NotFound
        );
        let f = Filter::parse("kind==view").unwrap();
        assert_eq!(db.snapshot_list(&a, "native", &f).unwrap().len(), 1);
        db.snapshot_remove(&a, "native", "v1").unwrap();
        db.snapshot_remove(&a, "native", "c1").unwrap();
        assert_eq!(
            db.snapshot_list(&a, "native", &Filter::default())
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            db.snapshot_list(&b, "native", &Filter::default())
                .unwrap()
                .len(),
            1
        );
    }
}
