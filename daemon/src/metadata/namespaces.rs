//! Namespaces and their labels (containerd `metadata/namespaces.go`). A namespace is created
//! explicitly or implicitly by the first write into it; deleting one that still owns
//! anything is refused with FailedPrecondition naming what is left.

use super::{
    apply_label_path, db_err, encode, get, scan, scan_all, validate_labels, Db, Error, Labels,
    Namespace, Result, CONTAINERS, CONTENT, IMAGES, LEASES, NAMESPACES, SNAPSHOTS,
};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// Stored per namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// The namespace's labels.
    #[serde(default)]
    pub labels: Labels,
}

impl Db {
    /// Creates a namespace; AlreadyExists if it exists.
    pub fn namespace_create(&self, ns: &Namespace, labels: Labels) -> Result<()> {
        validate_labels(&labels)?;
        let txn = self.write()?;
        {
            let mut t = txn.open_table(NAMESPACES).map_err(db_err(&self.path))?;
            if t.get(ns.as_str()).map_err(db_err(&self.path))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "namespace",
                    id: ns.to_string(),
                });
            }
            t.insert(ns.as_str(), encode(&NamespaceRecord { labels }).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.commit(txn)
    }

    /// Labels of a namespace.
    pub fn namespace_get(&self, ns: &Namespace) -> Result<Labels> {
        let r = self.read()?;
        let t = r.open_table(NAMESPACES).map_err(db_err(&self.path))?;
        let rec: NamespaceRecord =
            get(&t, ns.as_str(), &self.path)?.ok_or_else(|| Error::NotFound {
                what: "namespace",
                id: ns.to_string(),
            })?;
        Ok(rec.labels)
    }

    /// Every namespace, sorted by name.
    pub fn namespace_list(&self) -> Result<Vec<(String, Labels)>> {
        let r = self.read()?;
        let t = r.open_table(NAMESPACES).map_err(db_err(&self.path))?;
        Ok(scan_all::<NamespaceRecord>(&t, &self.path)?
            .into_iter()
            .map(|(k, v)| (k, v.labels))
            .collect())
    }

    /// Updates labels by field paths (none = replace all labels).
    pub fn namespace_update(
        &self,
        ns: &Namespace,
        labels: &Labels,
        paths: &[String],
    ) -> Result<Labels> {
        validate_labels(labels)?;
        let txn = self.write()?;
        let out = {
            let mut t = txn.open_table(NAMESPACES).map_err(db_err(&self.path))?;
            let mut rec: NamespaceRecord =
                get(&t, ns.as_str(), &self.path)?.ok_or_else(|| Error::NotFound {
                    what: "namespace",
                    id: ns.to_string(),
                })?;
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for p in paths {
                if !apply_label_path(&mut rec.labels, labels, p) {
                    return Err(Error::BadField {
                        field: p.clone(),
                        what: "namespace",
                        id: ns.to_string(),
                    });
                }
            }
            t.insert(ns.as_str(), encode(&rec).as_slice())
                .map_err(db_err(&self.path))?;
            rec.labels
        };
        self.commit(txn)?;
        Ok(out)
    }

    /// Deletes an empty namespace.
    pub fn namespace_delete(&self, ns: &Namespace) -> Result<()> {
        let txn = self.write()?;
        {
            let mut left = Vec::new();
            let p = &self.path;
            let count = |def| -> Result<usize> {
                let t = txn.open_table(def).map_err(db_err(p))?;
                Ok(scan::<serde_json::Value>(&t, ns.as_str(), p)?.len())
            };
            if count(IMAGES)? > 0 {
                left.push("images".to_string());
            }
            if count(CONTENT)? > 0 {
                left.push("blobs".to_string());
            }
            {
                let t = txn.open_table(SNAPSHOTS).map_err(db_err(p))?;
                let mut sns: Vec<String> = scan::<serde_json::Value>(&t, ns.as_str(), p)?
                    .into_iter()
                    .filter_map(|(k, _)| k.split('\0').next().map(str::to_string))
                    .collect();
                sns.dedup();
                for s in sns {
                    left.push(format!("snapshots on {s:?} snapshotter"));
                }
            }
            if count(CONTAINERS)? > 0 {
                left.push("containers".to_string());
            }
            if count(LEASES)? > 0 {
                left.push("leases".to_string());
            }
            let mut t = txn.open_table(NAMESPACES).map_err(db_err(p))?;
            if t.get(ns.as_str()).map_err(db_err(p))?.is_none() {
                return Err(Error::NotFound {
                    what: "namespace",
                    id: ns.to_string(),
                });
            }
            if !left.is_empty() {
                return Err(Error::NamespaceNotEmpty {
                    ns: ns.to_string(),
                    left: left.join(", "),
                });
            }
            t.remove(ns.as_str()).map_err(db_err(p))?;
        }
        self.commit(txn)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil;
    use super::*;
    use crate::errdefs::{HasKind, Kind};

    #[test]
    fn lifecycle_and_labels() {
        let (_t, db) = testutil::db(Default::default());
        let ns = Namespace::new("test").unwrap();
        db.namespace_create(&ns, [("a".into(), "1".into())].into())
            .unwrap();
        assert_eq!(
            db.namespace_create(&ns, Labels::new()).unwrap_err().kind(),
            Kind::AlreadyExists
        );
        let l = db
            .namespace_update(
                &ns,
                &[("b".into(), "2".into())].into(),
                &["labels.b".into()],
            )
            .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            db.namespace_update(&ns, &Labels::new(), &["name".into()])
                .unwrap_err()
                .kind(),
            Kind::InvalidArgument
        );
        assert_eq!(db.namespace_list().unwrap().len(), 1);
        db.namespace_delete(&ns).unwrap();
        assert_eq!(db.namespace_get(&ns).unwrap_err().kind(), Kind::NotFound);
    }
}
