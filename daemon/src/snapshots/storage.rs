//! The snapshot metadata store shared by every backend (containerd's `snapshots/storage`,
//! there in bolt, here in redb): key → kind, parent, labels, timestamps, cached usage and the
//! numeric id that names the snapshot's directory on disk.
//!
//! Backends do their filesystem work inside the write transaction that records it (through
//! the closures passed to [`MetaStore::create`] and [`MetaStore::commit_active`]), so the
//! metadata never commits unless the directory is in place; a directory without metadata is
//! garbage that `cleanup` reclaims.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Error, Info, Kind, Labels, Result, Usage};

/// key → JSON-encoded [`Record`].
const SNAPSHOTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshots");
/// Counters; `next_id` is the last id handed out.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: Kind,
    parent: String,
    labels: Labels,
    created: SystemTime,
    updated: SystemTime,
    usage: Usage,
}

/// An active or view snapshot as a backend needs it to build mounts: its own id and the ids
/// of its parent chain, nearest parent first.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub kind: Kind,
    pub parent_ids: Vec<String>,
}

/// The redb database of one snapshotter.
pub struct MetaStore {
    path: PathBuf,
    db: Mutex<Option<Arc<Database>>>,
}

impl MetaStore {
    /// Open (or create) the database file at `path` and its tables.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let txn = db.begin_write().map_err(|e| db_err(path, e))?;
        txn.open_table(SNAPSHOTS).map_err(|e| db_err(path, e))?;
        txn.open_table(META).map_err(|e| db_err(path, e))?;
        txn.commit().map_err(|e| db_err(path, e))?;
        Ok(MetaStore {
            path: path.to_path_buf(),
            db: Mutex::new(Some(Arc::new(db))),
        })
    }

    /// Drop the database handle; later calls fail with [`Error::Closed`]. Idempotent.
    pub fn close(&self) {
        self.lock().take();
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Database>>> {
        // A poisoned lock only means another thread panicked while cloning an Arc.
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn db(&self) -> Result<Arc<Database>> {
        self.lock().clone().ok_or_else(|| Error::Closed {
            root: self.path.clone(),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> Error {
        db_err(&self.path, e)
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<Record> {
        serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
            key: key.to_string(),
            path: self.path.clone(),
            source,
        })
    }

    fn encode(record: &Record) -> Vec<u8> {
        // Serializing plain data (strings, maps, integers, timestamps) cannot fail.
        serde_json::to_vec(record).unwrap_or_default()
    }

    fn info(key: &str, r: &Record) -> Info {
        Info {
            name: key.to_string(),
            parent: r.parent.clone(),
            kind: r.kind,
            labels: r.labels.clone(),
            created: r.created,
            updated: r.updated,
        }
    }

    /// id, info and cached usage of `key`.
    pub fn get_info(&self, key: &str) -> Result<(String, Info, Usage)> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let guard = table.get(key).map_err(|e| self.err(e))?;
        let guard = guard.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
        })?;
        let r = self.decode(key, guard.value())?;
        Ok((r.id.to_string(), Self::info(key, &r), r.usage))
    }

    /// The active or view snapshot `key` with its parent chain.
    pub fn get_snapshot(&self, key: &str) -> Result<Snapshot> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let guard = table.get(key).map_err(|e| self.err(e))?;
        let guard = guard.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
        })?;
        let r = self.decode(key, guard.value())?;
        if r.kind == Kind::Committed {
            return Err(Error::NotActiveOrView {
                key: key.to_string(),
            });
        }
        let parent_ids = self.parent_chain(&table, &r.parent)?;
        Ok(Snapshot {
            id: r.id.to_string(),
            kind: r.kind,
            parent_ids,
        })
    }

    fn parent_chain(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        first: &str,
    ) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut parent = first.to_string();
        while !parent.is_empty() {
            let guard = table.get(parent.as_str()).map_err(|e| self.err(e))?;
            let guard = guard.ok_or_else(|| Error::ParentNotFound {
                parent: parent.clone(),
            })?;
            let r = self.decode(&parent, guard.value())?;
            ids.push(r.id.to_string());
            parent = r.parent;
        }
        Ok(ids)
    }

    /// Update labels as described on [`super::Snapshotter::update`].
    pub fn update_info(&self, info: &Info, fieldpaths: &[String]) -> Result<Info> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let updated = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let mut r = {
                let guard = table.get(info.name.as_str()).map_err(|e| self.err(e))?;
                let guard = guard.ok_or_else(|| Error::NotFound {
                    key: info.name.clone(),
                })?;
                self.decode(&info.name, guard.value())?
            };
            if fieldpaths.is_empty() {
                r.labels = info.labels.clone();
            }
            for path in fieldpaths {
                if let Some(label) = path.strip_prefix("labels.") {
                    match info.labels.get(label) {
                        Some(v) => r.labels.insert(label.to_string(), v.clone()),
                        None => r.labels.remove(label),
                    };
                } else if path == "labels" {
                    r.labels = info.labels.clone();
                } else {
                    return Err(Error::ImmutableField {
                        key: info.name.clone(),
                        field: path.clone(),
                    });
                }
            }
            // containerd's boltutil.WriteLabels: an empty value means "no such label".
            r.labels.retain(|_, v| !v.is_empty());
            r.updated = SystemTime::now();
            table
                .insert(info.name.as_str(), Self::encode(&r).as_slice())
                .map_err(|e| self.err(e))?;
            Self::info(&info.name, &r)
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(updated)
    }

    /// Every snapshot with its id.
    pub fn walk(&self) -> Result<Vec<(String, Info)>> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let r = self.decode(k.value(), v.value())?;
            out.push((r.id.to_string(), Self::info(k.value(), &r)));
        }
        Ok(out)
    }

    /// Record a new active or view snapshot. `materialize` runs inside the write transaction
    /// with the new snapshot (id and parent ids) and must put its directory in place; if it
    /// fails nothing is recorded.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
        materialize: impl FnOnce(&Snapshot) -> Result<()>,
    ) -> Result<Snapshot> {
        validate_key(key)?;
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let snapshot = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            if table.get(key).map_err(|e| self.err(e))?.is_some() {
                return Err(Error::AlreadyExists {
                    key: key.to_string(),
                });
            }
            let parent_ids = if parent.is_empty() {
                Vec::new()
            } else {
                let p = {
                    let guard = table.get(parent).map_err(|e| self.err(e))?;
                    let guard = guard.ok_or_else(|| Error::ParentNotFound {
                        parent: parent.to_string(),
                    })?;
                    self.decode(parent, guard.value())?
                };
                if p.kind != Kind::Committed {
                    return Err(Error::ParentNotCommitted {
                        parent: parent.to_string(),
                        kind: p.kind,
                    });
                }
                let mut ids = vec![p.id.to_string()];
                ids.extend(self.parent_chain(&table, &p.parent)?);
                ids
            };
            let id = {
                let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
                let next = meta
                    .get(NEXT_ID)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |g| g.value())
                    + 1;
                meta.insert(NEXT_ID, next).map_err(|e| self.err(e))?;
                next
            };
            let now = SystemTime::now();
            let mut labels = labels;
            labels.retain(|_, v| !v.is_empty());
            let record = Record {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created: now,
                updated: now,
                usage: Usage::default(),
            };
            table
                .insert(key, Self::encode(&record).as_slice())
                .map_err(|e| self.err(e))?;
            Snapshot {
                id: id.to_string(),
                kind,
                parent_ids,
            }
        };
        materialize(&snapshot)?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(snapshot)
    }

    /// Turn active `key` into committed `name`. `measure` gets the snapshot id and returns the
    /// usage to cache; it runs inside the transaction. Returns the id.
    pub fn commit_active(
        &self,
        key: &str,
        name: &str,
        labels: Labels,
        measure: impl FnOnce(&str) -> Result<Usage>,
    ) -> Result<String> {
        validate_key(name)?;
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let id = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            if table.get(name).map_err(|e| self.err(e))?.is_some() {
                return Err(Error::AlreadyExists {
                    key: name.to_string(),
                });
            }
            let mut r = {
                let guard = table.get(key).map_err(|e| self.err(e))?;
                let guard = guard.ok_or_else(|| Error::NotFound {
                    key: key.to_string(),
                })?;
                self.decode(key, guard.value())?
            };
            if r.kind != Kind::Active {
                return Err(Error::NotActive {
                    key: key.to_string(),
                    kind: r.kind,
                });
            }
            let id = r.id.to_string();
            r.usage = measure(&id)?;
            r.kind = Kind::Committed;
            r.created = SystemTime::now();
            r.updated = r.created;
            // containerd: "Replace labels, do not inherit".
            r.labels = labels;
            r.labels.retain(|_, v| !v.is_empty());
            table.remove(key).map_err(|e| self.err(e))?;
            table
                .insert(name, Self::encode(&r).as_slice())
                .map_err(|e| self.err(e))?;
            id
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Delete `key`'s record; refuses while another snapshot names it as parent. Returns the
    /// id and kind of the removed snapshot.
    pub fn remove(&self, key: &str) -> Result<(String, Kind)> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let removed = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            let r = {
                let guard = table.get(key).map_err(|e| self.err(e))?;
                let guard = guard.ok_or_else(|| Error::NotFound {
                    key: key.to_string(),
                })?;
                self.decode(key, guard.value())?
            };
            let mut children = Vec::new();
            for item in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                if self.decode(k.value(), v.value())?.parent == key {
                    children.push(k.value().to_string());
                }
            }
            if !children.is_empty() {
                return Err(Error::HasChildren {
                    key: key.to_string(),
                    children,
                });
            }
            table.remove(key).map_err(|e| self.err(e))?;
            (r.id.to_string(), r.kind)
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Run `f` with the ids of all recorded snapshots (the directory names to keep) while
    /// holding the write lock, so no snapshot is created or removed meanwhile (cleanup must
    /// not delete the temporary directory of a snapshot being created).
    pub fn with_ids_locked<T>(&self, f: impl FnOnce(&HashSet<String>) -> Result<T>) -> Result<T> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| self.err(e))?;
        let mut ids = HashSet::new();
        {
            let table = txn.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            for item in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                ids.insert(self.decode(k.value(), v.value())?.id.to_string());
            }
        }
        let out = f(&ids);
        txn.abort().map_err(|e| self.err(e))?;
        out
    }
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: key.to_string(),
            reason: "must not be empty",
        });
    }
    Ok(())
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Db {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}
