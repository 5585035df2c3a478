//! An ingest in progress: append-only `data` file plus small state files, resumable after the
//! writer (or the daemon) went away. Commit is fsync → verify → rename → fsync(dir).

use super::{io_err, Digest, Error, IngestStatus, RefLock, Store};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn write_small(path: &Path, data: &str) -> Result<(), Error> {
    fs::write(path, data).map_err(io_err(path))
}

fn ts_string(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn parse_ts(s: &str) -> SystemTime {
    let (secs, nanos) = s.trim().split_once('.').unwrap_or((s.trim(), "0"));
    let secs = secs.parse().unwrap_or(0);
    let nanos = nanos.parse().unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// Reads an ingest directory's state; `None` if it is not a (complete) ingest.
pub(crate) fn read_status(dir: &Path) -> Result<Option<IngestStatus>, Error> {
    let Ok(r#ref) = fs::read_to_string(dir.join("ref")) else {
        return Ok(None);
    };
    let data = dir.join("data");
    let md = match fs::metadata(&data) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&data)(e)),
    };
    let read = |n: &str| fs::read_to_string(dir.join(n)).unwrap_or_default();
    Ok(Some(IngestStatus {
        r#ref,
        offset: i64::try_from(md.len()).unwrap_or(i64::MAX),
        total: read("total").trim().parse().unwrap_or(0),
        expected: Digest::parse(read("expected").trim()).ok(),
        started: parse_ts(&read("startedat")),
        updated: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }))
}

/// Writes one ingest. Holds the ref lock until dropped or committed.
#[derive(Debug)]
pub struct Writer {
    store: Store,
    dir: PathBuf,
    data: File,
    hasher: Sha256,
    offset: i64,
    total: i64,
    expected: Option<Digest>,
    started: SystemTime,
    lock: RefLock,
}

impl Writer {
    pub(super) fn open(
        store: Store,
        dir: PathBuf,
        lock: RefLock,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Self, Error> {
        let data_path = dir.join("data");
        let existing = read_status(&dir)?;
        let (started, hasher, offset, saved_total, mut expected_saved) = match existing {
            Some(st) => {
                // Resume: re-hash what is already there.
                let mut h = Sha256::new();
                let mut f = File::open(&data_path).map_err(io_err(&data_path))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf).map_err(io_err(&data_path))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                (st.started, h, st.offset, st.total, st.expected)
            }
            None => {
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                let now = SystemTime::now();
                write_small(&dir.join("ref"), lock.r#ref())?;
                write_small(&dir.join("startedat"), &ts_string(now))?;
                File::create(&data_path).map_err(io_err(&data_path))?;
                (now, Sha256::new(), 0, 0, None)
            }
        };
        let total = if total > 0 { total } else { saved_total };
        if total > 0 {
            write_small(&dir.join("total"), &total.to_string())?;
        }
        if let Some(e) = expected {
            write_small(&dir.join("expected"), e.as_str())?;
            expected_saved = Some(e);
        }
        let data = OpenOptions::new()
            .append(true)
            .open(&data_path)
            .map_err(io_err(&data_path))?;
        Ok(Self {
            store,
            dir,
            data,
            hasher,
            offset,
            total,
            expected: expected_saved,
            started,
            lock,
        })
    }

    /// Bytes written so far.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Current status of this ingest.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            r#ref: self.lock.r#ref().to_string(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started: self.started,
            updated: SystemTime::now(),
        }
    }

    /// The ingest's ref.
    pub fn r#ref(&self) -> &str {
        self.lock.r#ref()
    }

    /// Digest of what has been written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Appends `buf`.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), Error> {
        let p = self.dir.join("data");
        self.data.write_all(buf).map_err(io_err(&p))?;
        self.hasher.update(buf);
        self.offset += i64::try_from(buf.len()).unwrap_or(i64::MAX);
        Ok(())
    }

    /// Discards everything written (only truncation to 0 is supported, as containerd).
    pub fn truncate(&mut self) -> Result<(), Error> {
        let p = self.dir.join("data");
        self.data.set_len(0).map_err(io_err(&p))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Verifies and commits the blob; returns its digest. `size == 0` skips the size check.
    /// On a mismatch the ingest stays for the caller to fix or abort.
    pub fn commit(mut self, size: i64, expected: Option<&Digest>) -> Result<Digest, Error> {
        let p = self.dir.join("data");
        self.data.flush().map_err(io_err(&p))?;
        self.data.sync_all().map_err(io_err(&p))?;
        if size > 0 && size != self.offset {
            return Err(Error::SizeMismatch {
                expected: size,
                actual: self.offset,
            });
        }
        let actual = self.digest();
        if let Some(e) = expected.or(self.expected.as_ref()) {
            if *e != actual {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual,
                });
            }
        }
        let target = self.store.blob_path(&actual);
        if target.exists() {
            let _ = fs::remove_dir_all(&self.dir);
            return Err(Error::AlreadyExists(actual));
        }
        // Blobs are immutable: read-only before they become visible.
        let mut perms = self.data.metadata().map_err(io_err(&p))?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(&p, perms).map_err(io_err(&p))?;
        fs::rename(&p, &target).map_err(io_err(&target))?;
        if let Some(parent) = target.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err(parent))?;
        }
        let _ = fs::remove_dir_all(&self.dir);
        Ok(actual)
    }
}
