//! Container records (containerd `metadata/containers.go`). The containers gRPC service and
//! the task runtime (added by the runtime subsystem) read and write these; the record holds a
//! GC reference to its snapshot (`snapshotter` + `snapshot_key`) and to anything named by
//! `containerd.io/gc.ref.*` labels.

use super::record::Record;
use super::{
    apply_label_path, db_err, encode, get, key, scan, validate_identifier, validate_labels, Ctx,
    Db, Def, Error, Labels, Result, Ts, CONTAINERS,
};
use crate::filters::{label_field, non_empty, Adaptor, Filter};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A protobuf `Any` kept opaque (type URL + encoded bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AnyValue {
    /// Type URL.
    pub type_url: String,
    /// Encoded message.
    pub value: Vec<u8>,
}

/// The runtime a container runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Runtime {
    /// e.g. `io.containerd.runc.v2`.
    pub name: String,
    /// Runtime options (`containerd.runc.v1.Options`).
    pub options: Option<AnyValue>,
}

/// A container record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Container {
    /// Id (not stored in the value; it is the key).
    #[serde(skip)]
    pub id: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Image name.
    #[serde(default)]
    pub image: String,
    /// Runtime.
    pub runtime: Runtime,
    /// OCI spec.
    pub spec: Option<AnyValue>,
    /// Snapshotter name.
    #[serde(default)]
    pub snapshotter: String,
    /// Snapshot key (root filesystem).
    #[serde(default)]
    pub snapshot_key: String,
    /// Created.
    pub created: Ts,
    /// Updated.
    pub updated: Ts,
    /// Client extensions.
    #[serde(default)]
    pub extensions: BTreeMap<String, AnyValue>,
    /// Sandbox this container belongs to.
    #[serde(default)]
    pub sandbox_id: String,
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "id" => non_empty(&self.id),
            "image" => non_empty(&self.image),
            "runtime" => match path.get(1).map(String::as_str) {
                None | Some("name") => non_empty(&self.runtime.name),
                _ => None,
            },
            "snapshotter" => non_empty(&self.snapshotter),
            "snapshotkey" => non_empty(&self.snapshot_key),
            "sandbox" => non_empty(&self.sandbox_id),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

fn validate(c: &Container) -> Result<()> {
    validate_identifier("container id", &c.id)?;
    validate_labels(&c.labels)?;
    if c.runtime.name.is_empty() {
        return Err(Error::Invalid("must specify a runtime name".into()));
    }
    if c.spec.is_none() {
        return Err(Error::Invalid("must specify a spec".into()));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::Invalid(
            "must set snapshotter when snapshot key is set".into(),
        ));
    }
    Ok(())
}

impl Record for Container {
    const TABLE: Def = CONTAINERS;
    const WHAT: &'static str = "container";

    fn set_id(&mut self, id: &str) {
        self.id = id.to_string();
    }

    fn update_all(&mut self, c: &Self) -> Result<()> {
        if c.runtime.name != self.runtime.name {
            return Err(Error::Invalid(format!(
                "container {:?}: runtime field is immutable",
                c.id
            )));
        }
        if c.snapshotter != self.snapshotter {
            return Err(Error::Invalid(format!(
                "container {:?}: snapshotter field is immutable",
                c.id
            )));
        }
        self.labels = c.labels.clone();
        self.spec = c.spec.clone();
        self.extensions = c.extensions.clone();
        self.image = c.image.clone();
        self.snapshot_key = c.snapshot_key.clone();
        Ok(())
    }

    fn update_path(&mut self, c: &Self, path: &str) -> bool {
        match path {
            "spec" => self.spec = c.spec.clone(),
            "image" => self.image = c.image.clone(),
            "snapshotkey" => self.snapshot_key = c.snapshot_key.clone(),
            "extensions" => self.extensions = c.extensions.clone(),
            p if p.starts_with("extensions.") => {
                let k = &p["extensions.".len()..];
                match c.extensions.get(k) {
                    Some(v) => self.extensions.insert(k.to_string(), v.clone()),
                    None => self.extensions.remove(k),
                };
            }
            p => return apply_label_path(&mut self.labels, &c.labels, p),
        }
        true
    }

    fn validate(&self) -> Result<()> {
        validate(self)
    }

    fn set_updated(&mut self, now: Ts) {
        self.updated = now;
    }
}

impl Db {
    /// One container.
    pub fn container_get(&self, ctx: &Ctx, id: &str) -> Result<Container> {
        let r = self.read()?;
        let t = r.open_table(CONTAINERS).map_err(db_err(&self.path))?;
        let mut c: Container =
            get(&t, &key(&[ctx.ns.as_str(), id])?, &self.path)?.ok_or_else(|| Error::NotFound {
                what: "container",
                id: id.to_string(),
            })?;
        c.id = id.to_string();
        Ok(c)
    }

    /// Containers passing the filter (fields id, image, runtime.name, snapshotter, labels).
    pub fn container_list(&self, ctx: &Ctx, filter: &Filter) -> Result<Vec<Container>> {
        let r = self.read()?;
        let t = r.open_table(CONTAINERS).map_err(db_err(&self.path))?;
        Ok(scan::<Container>(&t, ctx.ns.as_str(), &self.path)?
            .into_iter()
            .map(|(id, mut c)| {
                c.id = id;
                c
            })
            .filter(|c| filter.matches(c))
            .collect())
    }

    /// Creates a container record.
    pub fn container_create(&self, ctx: &Ctx, mut c: Container) -> Result<Container> {
        validate(&c)?;
        let txn = self.write()?;
        self.ensure_namespace(&txn, &ctx.ns)?;
        {
            let mut t = txn.open_table(CONTAINERS).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), &c.id])?;
            if t.get(k.as_str()).map_err(db_err(&self.path))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "container",
                    id: c.id,
                });
            }
            let now = Ts::now();
            c.created = now;
            c.updated = now;
            t.insert(k.as_str(), encode(&c).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.commit(txn)?;
        Ok(c)
    }

    /// Updates by field paths: `labels[.k]`, `extensions[.k]`, `spec`, `image`, `snapshotkey`
    /// (none = all of them). Runtime and snapshotter are immutable, as containerd.
    pub fn container_update(
        &self,
        ctx: &Ctx,
        c: &Container,
        paths: &[String],
    ) -> Result<Container> {
        self.update_record(ctx, &c.id, c, paths)
    }

    /// Deletes a container record.
    pub fn container_delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(CONTAINERS).map_err(db_err(&self.path))?;
            if t.remove(key(&[ctx.ns.as_str(), id])?.as_str())
                .map_err(db_err(&self.path))?
                .is_none()
            {
                return Err(Error::NotFound {
                    what: "container",
                    id: id.to_string(),
                });
            }
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
    fn crud() {
        let (_t, db) = testutil::db(Default::default());
        let c = testutil::ctx("default");
        let rec = Container {
            id: "c1".into(),
            runtime: Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{}".to_vec(),
            }),
            snapshotter: "native".into(),
            snapshot_key: "c1".into(),
            ..Default::default()
        };
        db.container_create(&c, rec.clone()).unwrap();
        assert_eq!(
            db.container_create(&c, rec.clone()).unwrap_err().kind(),
            Kind::AlreadyExists
        );
        let mut u = rec.clone();
        u.image = "busybox".into();
        db.container_update(&c, &u, &["image".into()]).unwrap();
        assert_eq!(db.container_get(&c, "c1").unwrap().image, "busybox");
        assert_eq!(
            db.container_list(&c, &Filter::parse("image==busybox").unwrap())
                .unwrap()
                .len(),
            1
        );
        db.container_delete(&c, "c1").unwrap();
        assert_eq!(
            db.container_get(&c, "c1").unwrap_err().kind(),
            Kind::NotFound
        );
    }

    #[test]
    fn update_by_field_paths() {
        let (_t, db) = testutil::db(Default::default());
        let c = testutil::ctx("default");
        let any = |v: &str| AnyValue {
            type_url: "t".into(),
            value: v.as_bytes().to_vec(),
        };
        let rec = Container {
            id: "c1".into(),
            runtime: Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(any("{}")),
            labels: [("a".to_string(), "1".to_string())].into(),
            extensions: [("x".to_string(), any("x1"))].into(),
            ..Default::default()
        };
        let created = db.container_create(&c, rec.clone()).unwrap();

        // One label set, one deleted (empty value), one extension replaced, one removed.
        let mut u = rec.clone();
        u.labels = [("a".to_string(), String::new()), ("b".into(), "2".into())].into();
        u.extensions = [("y".to_string(), any("y1"))].into();
        u.image = "not-in-paths".into();
        let paths: Vec<String> = ["labels.a", "labels.b", "extensions.x", "extensions.y"]
            .map(String::from)
            .into();
        let got = db.container_update(&c, &u, &paths).unwrap();
        assert_eq!(got.labels, [("b".to_string(), "2".to_string())].into());
        assert_eq!(got.extensions, [("y".to_string(), any("y1"))].into());
        assert_eq!(got.image, "", "fields not named stay");
        assert!(got.updated >= created.updated);
        assert_eq!(db.container_get(&c, "c1").unwrap(), got);

        // No paths: every updatable field, but runtime and snapshotter are immutable.
        let mut all = rec.clone();
        all.image = "busybox".into();
        assert_eq!(db.container_update(&c, &all, &[]).unwrap().image, "busybox");
        let mut other = rec.clone();
        other.runtime.name = "io.containerd.other.v1".into();
        let err = db.container_update(&c, &other, &[]).unwrap_err();
        assert!(
            err.to_string().contains("runtime field is immutable"),
            "{err}"
        );
        other = rec.clone();
        other.snapshotter = "native".into();
        let err = db.container_update(&c, &other, &[]).unwrap_err();
        assert!(err.to_string().contains("snapshotter"), "{err}");

        // Unknown path, missing container, invalid result: nothing stored.
        let err = db
            .container_update(&c, &all, &["runtime".into()])
            .unwrap_err();
        assert_eq!(err.kind(), Kind::InvalidArgument);
        assert!(err.to_string().contains("\"runtime\""), "{err}");
        let mut gone = rec.clone();
        gone.id = "c2".into();
        assert_eq!(
            db.container_update(&c, &gone, &["image".into()])
                .unwrap_err()
                .kind(),
            Kind::NotFound
        );
        let mut bad = rec.clone();
        bad.spec = None;
        assert_eq!(
            db.container_update(&c, &bad, &["spec".into()])
                .unwrap_err()
                .kind(),
            Kind::InvalidArgument
        );
        assert!(db.container_get(&c, "c1").unwrap().spec.is_some());
    }
}
