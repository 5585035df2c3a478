//! Filesystem helpers the snapshotters and the differ share: disk usage of a layer
//! (containerd's `continuity/fs.DiskUsage`), a metadata-preserving tree copy for the native
//! snapshotter (`fs.CopyDir`), and `l*xattr` wrappers (the only `unsafe` here).
//!
//! Nothing in this module follows a symlink found inside a tree: every stat is an `lstat`,
//! every chown/utime uses `AT_SYMLINK_NOFOLLOW`.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{mknodat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

use super::Usage;

/// Inodes and allocated bytes of the tree at `root`, counting each hard-linked inode once.
pub fn disk_usage(root: &Path) -> io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p)?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += i64::try_from(md.blocks())
                .unwrap_or(i64::MAX)
                .saturating_mul(512);
        }
        if md.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(usage)
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Names of the extended attributes of `path` (not following a final symlink). An
/// unsupported filesystem yields an empty list.
pub fn llistxattr(path: &Path) -> io::Result<Vec<OsString>> {
    listxattr_impl(path, false)
}

/// As [`llistxattr`] but following a final symlink (for `/proc/self/fd/N` paths).
pub fn llistxattr_follow(path: &Path) -> io::Result<Vec<OsString>> {
    listxattr_impl(path, true)
}

/// The value of xattr `name` on `path` (not following a final symlink); `None` if unset.
pub fn lgetxattr(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    getxattr_impl(path, name, false)
}

/// As [`lgetxattr`] but following a final symlink (for `/proc/self/fd/N` paths).
pub fn getxattr_follow(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    getxattr_impl(path, name, true)
}

/// Set xattr `name` on `path` without following a final symlink.
pub fn lsetxattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    setxattr_impl(path, name, value, false)
}

/// As [`lsetxattr`] but following a final symlink (for `/proc/self/fd/N` paths).
pub fn setxattr_follow(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    setxattr_impl(path, name, value, true)
}

#[allow(unsafe_code)]
fn listxattr_impl(path: &Path, follow: bool) -> io::Result<Vec<OsString>> {
    let c = cstr(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `buf` is a writable buffer of the
        // length passed; the kernel writes at most that many bytes.
        let n = unsafe {
            if follow {
                libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            } else {
                libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            }
        };
        if n >= 0 {
            buf.truncate(usize::try_from(n).unwrap_or(0));
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect())
}

#[allow(unsafe_code)]
fn getxattr_impl(path: &Path, name: &OsStr, follow: bool) -> io::Result<Option<Vec<u8>>> {
    let c = cstr(path)?;
    let n =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; `buf` is writable for `buf.len()` bytes.
        let r = unsafe {
            if follow {
                libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            } else {
                libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            }
        };
        if r >= 0 {
            buf.truncate(usize::try_from(r).unwrap_or(0));
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENODATA | libc::ENOTSUP) => return Ok(None),
            _ => return Err(e),
        }
    }
}

#[allow(unsafe_code)]
fn setxattr_impl(path: &Path, name: &OsStr, value: &[u8], follow: bool) -> io::Result<()> {
    let c = cstr(path)?;
    let n =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated; `value` is readable for `value.len()` bytes.
    let r = unsafe {
        if follow {
            libc::setxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        } else {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copy owner, mode (not for symlinks), xattrs and timestamps of `md` (from `src`) to `dst`.
pub fn copy_metadata(src: &Path, dst: &Path, md: &fs::Metadata) -> io::Result<()> {
    fchownat(
        AT_FDCWD,
        dst,
        Some(Uid::from_raw(md.uid())),
        Some(Gid::from_raw(md.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    for name in llistxattr(src)? {
        if let Some(v) = lgetxattr(src, &name)? {
            if let Err(e) = lsetxattr(dst, &name, &v) {
                // security.* often cannot be copied (moby/buildkit#1189); containerd ignores it.
                log::debug!("copy xattr {:?} to {}: {e}", name, dst.display());
            }
        }
    }
    let at = TimeSpec::new(md.atime(), md.atime_nsec());
    let mt = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(AT_FDCWD, dst, &at, &mt, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// Copy the tree under `src` into the existing directory `dst`, preserving types, owners,
/// modes, xattrs, timestamps and hard links (containerd's `fs.CopyDir`).
pub fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let md = fs::symlink_metadata(src)?;
    copy_tree(src, dst, &mut links)?;
    copy_metadata(src, dst, &md)
}

fn copy_tree(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let md = fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                fs::hard_link(first, &d)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), d.clone());
        }
        if ft.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(&d)?;
            copy_tree(&s, &d, links)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else {
            let kind = SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
            mknodat(
                AT_FDCWD,
                &d,
                kind,
                Mode::from_bits_truncate(md.mode() & 0o7777),
                md.rdev(),
            )
            .map_err(io::Error::from)?;
        }
        copy_metadata(&s, &d, &md)?;
    }
    Ok(())
}

/// Delete every entry of `snapshots_dir` whose name is not the id of a recorded snapshot
/// (containerd's `getCleanupDirectories`), holding the metadata write lock while scanning.
pub(crate) fn remove_unreferenced(
    ms: &super::storage::MetaStore,
    snapshots_dir: &Path,
) -> super::Result<()> {
    use super::Error;
    ms.with_ids_locked(|ids| {
        let rd = fs::read_dir(snapshots_dir).map_err(|e| Error::io("read", snapshots_dir, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io("read", snapshots_dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                if let Err(err) = fs::remove_dir_all(e.path()) {
                    log::warn!("remove snapshot directory {}: {err}", e.path().display());
                }
            }
        }
        Ok(())
    })
}

/// Flush the filesystem holding `dir` (`syncfs`), so a layer's data is on disk before the
/// metadata that makes it a committed snapshot.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let f = fs::File::open(dir)?;
    nix::unistd::syncfs(&f).map_err(io::Error::from)
}

/// fsync a directory, making renames and creations inside it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
