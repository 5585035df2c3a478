//! Leases (containerd `metadata/leases.go`): named GC roots that hold content, snapshots and
//! ingests while a client works (e.g. during `ctr images import` before the image exists).
//! A lease with a `containerd.io/gc.expire` label (RFC 3339) stops protecting at that time
//! and is removed by the next GC.

use super::{
    db_err, encode, get, key, scan, validate_labels, Ctx, Db, Error, Labels, Result, Ts, LEASES,
};
use crate::content::Digest;
use crate::filters::{label_field, Adaptor, Filter};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Label holding a lease's expiry time.
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// Stored per (namespace, lease id).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Creation time.
    pub created: Ts,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// (type, id) pairs: `content`/digest, `snapshots/<snapshotter>`/key, `ingests`/ref.
    #[serde(default)]
    pub resources: BTreeSet<(String, String)>,
}

/// A lease as returned.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Id.
    pub id: String,
    /// Created.
    pub created: Ts,
    /// Labels.
    pub labels: Labels,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" => Some(self.id.clone()),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

impl LeaseRecord {
    /// Whether the expiry label is set and has passed at `now`.
    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.labels
            .get(EXPIRE_LABEL)
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
            .is_some_and(|t| t < now)
    }
}

fn validate_resource(db: &Db, kind: &str, id: &str) -> Result<()> {
    match kind {
        "content" => {
            Digest::parse(id)?;
        }
        "ingests" => {
            if id.is_empty() {
                return Err(Error::Invalid("ingest ref must not be empty".into()));
            }
        }
        k => match k.strip_prefix("snapshots/") {
            Some(sn) => {
                db.snapshotter(sn)?;
                if id.is_empty() {
                    return Err(Error::Invalid("snapshot key must not be empty".into()));
                }
            }
            None => {
                return Err(Error::NotImplemented(format!(
                    "unsupported lease resource type {kind:?}"
                )))
            }
        },
    }
    Ok(())
}

impl Db {
    /// Creates a lease.
    pub fn lease_create(&self, ctx: &Ctx, id: &str, labels: Labels) -> Result<Lease> {
        // containerd accepts any non-empty lease id (clients generate `<nanos>-<base64>`).
        if id.is_empty() {
            return Err(Error::Invalid("lease id must be provided".into()));
        }
        validate_labels(&labels)?;
        let txn = self.write()?;
        self.ensure_namespace(&txn, &ctx.ns)?;
        let rec = {
            let mut t = txn.open_table(LEASES).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), id])?;
            if t.get(k.as_str()).map_err(db_err(&self.path))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "lease",
                    id: id.to_string(),
                });
            }
            let rec = LeaseRecord {
                created: Ts::now(),
                labels,
                resources: BTreeSet::new(),
            };
            t.insert(k.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
            rec
        };
        self.commit(txn)?;
        Ok(Lease {
            id: id.to_string(),
            created: rec.created,
            labels: rec.labels,
        })
    }

    /// Deletes a lease (what it held goes at the next GC unless referenced elsewhere).
    pub fn lease_delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(LEASES).map_err(db_err(&self.path))?;
            if t.remove(key(&[ctx.ns.as_str(), id])?.as_str())
                .map_err(db_err(&self.path))?
                .is_none()
            {
                return Err(Error::NotFound {
                    what: "lease",
                    id: id.to_string(),
                });
            }
        }
        self.commit(txn)
    }

    /// Leases of the namespace passing the filter (fields `id`, `labels`).
    pub fn lease_list(&self, ctx: &Ctx, filter: &Filter) -> Result<Vec<Lease>> {
        let r = self.read()?;
        let t = r.open_table(LEASES).map_err(db_err(&self.path))?;
        Ok(scan::<LeaseRecord>(&t, ctx.ns.as_str(), &self.path)?
            .into_iter()
            .map(|(id, rec)| Lease {
                id,
                created: rec.created,
                labels: rec.labels,
            })
            .filter(|l| filter.matches(l))
            .collect())
    }

    fn lease_modify(&self, ctx: &Ctx, id: &str, f: impl FnOnce(&mut LeaseRecord)) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(LEASES).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), id])?;
            let mut rec: LeaseRecord = get(&t, &k, &self.path)?.ok_or_else(|| Error::NotFound {
                what: "lease",
                id: id.to_string(),
            })?;
            f(&mut rec);
            t.insert(k.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.commit(txn)
    }

    /// Adds a resource reference to a lease.
    pub fn lease_add_resource(&self, ctx: &Ctx, id: &str, kind: &str, rid: &str) -> Result<()> {
        validate_resource(self, kind, rid)?;
        self.lease_modify(ctx, id, |r| {
            r.resources.insert((kind.to_string(), rid.to_string()));
        })
    }

    /// Removes a resource reference from a lease.
    pub fn lease_delete_resource(&self, ctx: &Ctx, id: &str, kind: &str, rid: &str) -> Result<()> {
        validate_resource(self, kind, rid)?;
        self.lease_modify(ctx, id, |r| {
            r.resources.remove(&(kind.to_string(), rid.to_string()));
        })
    }

    /// The (type, id) resources a lease holds.
    pub fn lease_list_resources(&self, ctx: &Ctx, id: &str) -> Result<Vec<(String, String)>> {
        let r = self.read()?;
        let t = r.open_table(LEASES).map_err(db_err(&self.path))?;
        let rec: LeaseRecord =
            get(&t, &key(&[ctx.ns.as_str(), id])?, &self.path)?.ok_or_else(|| Error::NotFound {
                what: "lease",
                id: id.to_string(),
            })?;
        Ok(rec.resources.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use super::*;
    use crate::errdefs::{HasKind, Kind};

    #[test]
    fn lease_resources() {
        let (_t, db) = testutil::db(Default::default());
        let c = testutil::ctx("default");
        db.lease_create(&c, "l1", Labels::new()).unwrap();
        db.lease_create(&c, "902342901-_DeT", Labels::new())
            .unwrap();
        assert_eq!(
            db.lease_create(&c, "", Labels::new()).unwrap_err().kind(),
            Kind::InvalidArgument
        );
        assert_eq!(
            db.lease_create(&c, "l1", Labels::new()).unwrap_err().kind(),
            Kind::AlreadyExists
        );
        let d = format!("sha256:{}", "b".repeat(64));
        db.lease_add_resource(&c, "l1", "content", &d).unwrap();
        db.lease_add_resource(&c, "l1", "snapshots/native", "k")
            .unwrap();
        assert_eq!(
            db.lease_add_resource(&c, "l1", "content", "bad")
                .unwrap_err()
                .kind(),
            Kind::InvalidArgument
        );
        assert_eq!(
            db.lease_add_resource(&c, "l1", "bogus", "x")
                .unwrap_err()
                .kind(),
            Kind::NotImplemented
        );
        assert_eq!(db.lease_list_resources(&c, "l1").unwrap().len(), 2);
        db.lease_delete_resource(&c, "l1", "content", &d).unwrap();
        assert_eq!(db.lease_list_resources(&c, "l1").unwrap().len(), 1);
        assert_eq!(
            db.lease_list(&c, &Filter::parse("id==l1").unwrap())
                .unwrap()
                .len(),
            1
        );
        db.lease_delete(&c, "l1").unwrap();
        assert_eq!(
            db.lease_delete(&c, "l1").unwrap_err().kind(),
            Kind::NotFound
        );
    }

    #[test]
    fn expiry() {
        let mut r = LeaseRecord::default();
        let now = chrono::Utc::now();
        assert!(!r.expired(now));
        r.labels
            .insert(EXPIRE_LABEL.into(), "2000-01-01T00:00:00Z".into());
        assert!(r.expired(now));
        r.labels
            .insert(EXPIRE_LABEL.into(), "2999-01-01T00:00:00Z".into());
        assert!(!r.expired(now));
    }
}
