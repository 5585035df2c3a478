//! Private temporary directories (mode 0700, unique name, removed on drop).
//!
//! Process specs for `exec`, per-call runtime logs and console sockets go here: other users
//! on the machine must not be able to read a process spec or swap a socket, so the directory
//! is created with `mkdir(0700)` (failing if the name exists) rather than reusing a shared one.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory removed (recursively) when dropped.
#[derive(Debug)]
pub(crate) struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates `<tmp>/berth-<prefix>-<pid>-<n>-<nanos>` with mode 0700.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!("berth-{prefix}-{pid}-{n}-{nanos:x}"));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(Error::TempFile {
                        what: "a private temporary directory",
                        path,
                        source,
                    })
                }
            }
        }
        Err(Error::TempFile {
            what: "a private temporary directory",
            path: base,
            source: io::Error::new(io::ErrorKind::AlreadyExists, "no free name"),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_dir_is_0700_unique_and_removed() {
        let a = PrivateDir::new("t").unwrap();
        let b = PrivateDir::new("t").unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let p = a.path().to_path_buf();
        std::fs::write(p.join("f"), b"x").unwrap();
        drop(a);
        assert!(!p.exists());
    }
}
