//! Update of one record by containerd field paths (the `Update` RPCs' `update_mask`), shared
//! by containers and images (containerd `metadata/containers.go` and `images.go` `Update`).
//!
//! The record type says which paths it accepts ([`Record::update_path`]) and what an update
//! without paths replaces ([`Record::update_all`]); [`Db::update_record`] does the rest in one
//! write transaction: load (NotFound), apply, reject an unknown path ([`Error::BadField`]),
//! validate, stamp `updated`, store.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{db_err, encode, get, key, Ctx, Db, Def, Error, Result, Ts};

/// A metadata record that the API updates by field paths.
pub(crate) trait Record: Serialize + DeserializeOwned {
    /// Its table, keyed `<ns>\0<id>`.
    const TABLE: Def;
    /// What it is, for errors (`"container"`, `"image"`).
    const WHAT: &'static str;
    /// Sets the id, which is the key and not stored in the value.
    fn set_id(&mut self, id: &str);
    /// An update without paths: take every updatable field of `new` (errors for fields that
    /// are immutable and differ).
    fn update_all(&mut self, new: &Self) -> Result<()>;
    /// Take the field at `path` from `new`; false when `path` is not updatable.
    fn update_path(&mut self, new: &Self, path: &str) -> bool;
    /// Checks the updated record.
    fn validate(&self) -> Result<()>;
    /// Stamps the update time.
    fn set_updated(&mut self, now: Ts);
}

impl Db {
    /// Updates record `id` of namespace `ctx.ns` from `new` by `paths` (none = all
    /// updatable fields) and returns the stored record.
    pub(crate) fn update_record<T: Record>(
        &self,
        ctx: &Ctx,
        id: &str,
        new: &T,
        paths: &[String],
    ) -> Result<T> {
        let txn = self.write()?;
        let out = {
            let mut t = txn.open_table(T::TABLE).map_err(db_err(&self.path))?;
            let k = key(&[ctx.ns.as_str(), id])?;
            let mut cur: T = get(&t, &k, &self.path)?.ok_or_else(|| Error::NotFound {
                what: T::WHAT,
                id: id.to_string(),
            })?;
            cur.set_id(id);
            if paths.is_empty() {
                cur.update_all(new)?;
            }
            for p in paths {
                if !cur.update_path(new, p) {
                    return Err(Error::BadField {
                        field: p.clone(),
                        what: T::WHAT,
                        id: id.to_string(),
                    });
                }
            }
            cur.validate()?;
            cur.set_updated(Ts::now());
            t.insert(k.as_str(), encode(&cur).as_slice())
                .map_err(db_err(&self.path))?;
            cur
        };
        self.commit(txn)?;
        Ok(out)
    }
}
