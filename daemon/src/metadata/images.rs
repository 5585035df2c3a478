//! Image records (containerd `metadata/images.go`): name → target descriptor + labels.
//! The target's content is a GC root while the image exists.

use super::record::Record;
use super::{
    apply_label_path, db_err, encode, get, key, scan, validate_labels, Ctx, Db, Def, Descriptor,
    Error, Labels, Result, Ts, IMAGES,
};
use crate::content::Digest;
use crate::filters::{label_field, non_empty, Adaptor, Filter};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// An image as stored and returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Image {
    /// Name (e.g. `docker.io/library/busybox:latest`).
    #[serde(skip)]
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: Labels,
    /// Root descriptor (index or manifest).
    pub target: Descriptor,
    /// Created.
    pub created: Ts,
    /// Updated.
    pub updated: Ts,
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" => non_empty(&self.name),
            "target" => match path.get(1).map(String::as_str)? {
                "digest" => non_empty(&self.target.digest),
                "mediatype" => non_empty(&self.target.media_type),
                _ => None,
            },
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

fn validate(img: &Image) -> Result<()> {
    if img.name.is_empty() {
        return Err(Error::Invalid("image name must not be empty".into()));
    }
    validate_labels(&img.labels)?;
    Digest::parse(&img.target.digest)
        .map_err(|_| Error::Invalid(format!("Target.Digest {:?} invalid", img.target.digest)))?;
    if img.target.media_type.is_empty() {
        return Err(Error::Invalid("Target.MediaType must be set".into()));
    }
    Ok(())
}

impl Record for Image {
    const TABLE: Def = IMAGES;
    const WHAT: &'static str = "image";

    fn set_id(&mut self, id: &str) {
        self.name = id.to_string();
    }

    fn update_all(&mut self, img: &Self) -> Result<()> {
        self.labels = img.labels.clone();
        self.target = img.target.clone();
        Ok(())
    }

    fn update_path(&mut self, img: &Self, path: &str) -> bool {
        if path == "target" {
            self.target = img.target.clone();
            return true;
        }
        apply_label_path(&mut self.labels, &img.labels, path)
    }

    fn validate(&self) -> Result<()> {
        validate(self)
    }

    fn set_updated(&mut self, now: Ts) {
        self.updated = now;
    }
}

impl Db {
    /// One image by name.
    pub fn image_get(&self, ctx: &Ctx, name: &str) -> Result<Image> {
        let r = self.read()?;
        let t = r.open_table(IMAGES).map_err(db_err(&self.path))?;
        let mut img: Image =
            get(&t, &key(&[ctx.ns.as_str(), name])?, &self.path)?.ok_or_else(|| {
                Error::NotFound {
                    what: "image",
                    id: name.to_string(),
                }
            })?;
        img.name = name.to_string();
        Ok(img)
    }

    /// Images of the namespace passing the filter, sorted by name.
    pub fn image_list(&self, ctx: &Ctx, filter: &Filter) -> Result<Vec<Image>> {
        let r = self.read()?;
        let t = r.open_table(IMAGES).map_err(db_err(&self.path))?;
        Ok(scan::<Image>(&t, ctx.ns.as_str(), &self.path)?
            .into_iter()
            .map(|(name, mut img)| {
                img.name = name;
                img
            })
            .filter(|img| filter.matches(img))
            .collect())
    }

    /// Creates an image; AlreadyExists if the name is taken.
    pub fn image_create(&self, ctx: &Ctx, mut img: Image) -> Result<Image> {
        validate(&img)?;
        let txn = self.write()?;
        self.ensure_namespace(&txn, &ctx.ns)?;
        {
            let mut t = txn.open_table(IMAGES).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), &img.name])?;
            if t.get(k.as_str()).map_err(db_err(&self.path))?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "image",
                    id: img.name,
                });
            }
            let now = Ts::now();
            img.created = now;
            img.updated = now;
            t.insert(k.as_str(), encode(&img).as_slice())
                .map_err(db_err(&self.path))?;
        }
        self.commit(txn)?;
        Ok(img)
    }

    /// Updates an image by field paths (`labels`, `labels.<k>`, `target`; none = all).
    pub fn image_update(&self, ctx: &Ctx, img: &Image, paths: &[String]) -> Result<Image> {
        if img.name.is_empty() {
            return Err(Error::Invalid("image name is required for update".into()));
        }
        self.update_record(ctx, &img.name, img, paths)
    }

    /// Deletes an image record (its content goes at the next GC).
    pub fn image_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(IMAGES).map_err(db_err(&self.path))?;
            if t.remove(key(&[ctx.ns.as_str(), name])?.as_str())
                .map_err(db_err(&self.path))?
                .is_none()
            {
                return Err(Error::NotFound {
                    what: "image",
                    id: name.to_string(),
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

    fn img(name: &str) -> Image {
        Image {
            name: name.into(),
            target: Descriptor {
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                size: 10,
                annotations: Default::default(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn crud_and_filters() {
        let (_t, db) = testutil::db(Default::default());
        let c = testutil::ctx("default");
        db.image_create(&c, img("docker.io/library/busybox:latest"))
            .unwrap();
        db.image_create(&c, img("example.com/x:1")).unwrap();
        assert_eq!(
            db.image_create(&c, img("example.com/x:1"))
                .unwrap_err()
                .kind(),
            Kind::AlreadyExists
        );
        let mut bad = img("y");
        bad.target.digest = "nope".into();
        assert_eq!(
            db.image_create(&c, bad).unwrap_err().kind(),
            Kind::InvalidArgument
        );
        let f = Filter::parse("name~=busybox").unwrap();
        assert_eq!(db.image_list(&c, &f).unwrap().len(), 1);
        let mut u = img("example.com/x:1");
        u.labels.insert("k".into(), "v".into());
        let got = db.image_update(&c, &u, &["labels.k".into()]).unwrap();
        assert_eq!(got.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            db.image_update(&c, &u, &["name".into()])
                .unwrap_err()
                .kind(),
            Kind::InvalidArgument
        );
        db.image_delete(&c, "example.com/x:1").unwrap();
        assert_eq!(
            db.image_get(&c, "example.com/x:1").unwrap_err().kind(),
            Kind::NotFound
        );
    }
}
