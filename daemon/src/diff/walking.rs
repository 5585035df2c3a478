//! The walking differ (containerd's `diff/walking` + `archive.WriteDiff` over
//! `continuity/fs.Changes`): walk the lower and upper trees side by side and write an OCI
//! layer tar of what changed, with `.wh.<name>` whiteouts for deletions.
//!
//! Comparison follows continuity's `sameFile`: type, permissions, owner, xattrs, device
//! number; for non-directories also size and mtime, and the content (or link target) when
//! both mtimes have no sub-second part (they may have been truncated by a tar round trip).
//! Parent directories of every change are written before it; hard links within the change
//! set become tar hard links. Timestamps are written in whole seconds as containerd does.
//! xattrs are carried as `SCHILY.xattr.*` PAX records, except `trusted.*` (overlayfs
//! internals) and `security.selinux` (host labelling).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::compression::{Compression, Compressor, DigestWriter};
use super::{Descriptor, Error, Result};
use crate::snapshots::fsutil;
use crate::snapshots::mount::{Mount, TempMount};

/// How to encode the produced layer.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Compression of the blob; gzip by default, as containerd's walking differ.
    pub compression: Compression,
    /// Media type to report; defaults to the OCI layer type of `compression`.
    pub media_type: Option<String>,
}

impl DiffOptions {
    /// Options for a `DiffRequest.media_type`: empty means containerd's default (OCI
    /// tar+gzip); otherwise the media type picks the compression and is reported as given.
    pub fn for_media_type(media_type: &str) -> Result<DiffOptions> {
        if media_type.is_empty() {
            return Ok(DiffOptions::default());
        }
        let compression = Compression::from_media_type(media_type)?;
        Ok(DiffOptions {
            compression,
            media_type: Some(media_type.to_string()),
        })
    }
}

/// What a diff produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffResult {
    /// The blob as written: media type, digest and size of the compressed bytes.
    pub descriptor: Descriptor,
    /// `sha256:<hex>` of the uncompressed tar: the layer's diff_id (the
    /// `containerd.io/uncompressed` label).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

type Sink<W> = DigestWriter<Compressor<DigestWriter<W>>>;

/// Diff `upper` against `lower` (two directories) and write the layer to `out`. Returns the
/// writer back together with the digests to commit the blob under.
pub fn write_diff<W: Write>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<(W, DiffResult)> {
    let sink: Sink<W> = DigestWriter::new(
        Compressor::new(opts.compression, DigestWriter::new(out)).map_err(Error::Write)?,
    );
    let mut builder = tar::Builder::new(sink);
    builder.mode(tar::HeaderMode::Complete);
    let mut w = Walker {
        tar: builder,
        lower: lower.to_path_buf(),
        upper: upper.to_path_buf(),
        emitted_dirs: HashSet::new(),
        inodes: HashMap::new(),
    };
    w.walk(Path::new(""), true)?;
    let sink = w.tar.into_inner().map_err(Error::Write)?;
    let (compressor, diff_id, uncompressed_size) = sink.finish();
    let (out, digest, size) = compressor.finish().map_err(Error::Write)?.finish();
    let media_type = opts
        .media_type
        .clone()
        .unwrap_or_else(|| opts.compression.oci_media_type().to_string());
    Ok((
        out,
        DiffResult {
            descriptor: Descriptor {
                media_type,
                digest,
                size: i64::try_from(size).unwrap_or(i64::MAX),
            },
            diff_id,
            uncompressed_size,
        },
    ))
}

/// Diff two snapshots given by their mounts (lower may be empty for a base layer). Both are
/// mounted read-only on temporary directories, as containerd's walking differ does.
pub fn diff_mounts<W: Write>(
    lower: &[Mount],
    upper: &[Mount],
    out: W,
    opts: &DiffOptions,
) -> Result<(W, DiffResult)> {
    let lm = TempMount::new(&crate::snapshots::mount::readonly(lower))?;
    let um = TempMount::new(&crate::snapshots::mount::readonly(upper))?;
    let r = write_diff(lm.path(), um.path(), out, opts);
    let c1 = um.close();
    let c2 = lm.close();
    let r = r?;
    c1?;
    c2?;
    Ok(r)
}

struct Walker<W: Write> {
    tar: tar::Builder<Sink<W>>,
    lower: PathBuf,
    upper: PathBuf,
    emitted_dirs: HashSet<PathBuf>,
    inodes: HashMap<(u64, u64), PathBuf>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn names(dir: &Path) -> Result<BTreeSet<OsString>> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        out.insert(e.map_err(io_err("read directory", dir))?.file_name());
    }
    Ok(out)
}

fn carried_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in fsutil::llistxattr(path).map_err(io_err("list xattrs", path))? {
        let b = name.as_bytes();
        if b.starts_with(b"trusted.") || b == b"security.selinux" {
            continue;
        }
        if let Some(v) = fsutil::lgetxattr(path, &name).map_err(io_err("read xattr", path))? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).map_err(io_err("open", p));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_err("read", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_err("read", b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// continuity's `sameFile`.
fn same_file(lp: &Path, lm: &Metadata, up: &Path, um: &Metadata) -> Result<bool> {
    if lm.mode() != um.mode()
        || lm.uid() != um.uid()
        || lm.gid() != um.gid()
        || lm.rdev() != um.rdev()
    {
        return Ok(false);
    }
    if carried_xattrs(lp)? != carried_xattrs(up)? {
        return Ok(false);
    }
    if um.is_dir() {
        return Ok(true);
    }
    if lm.size() != um.size() || lm.mtime() != um.mtime() {
        return Ok(false);
    }
    if um.file_type().is_symlink() {
        return Ok(fs::read_link(lp).map_err(io_err("readlink", lp))?
            == fs::read_link(up).map_err(io_err("readlink", up))?);
    }
    if lm.mtime_nsec() == 0 && um.mtime_nsec() == 0 {
        if um.size() == 0 || !um.is_file() {
            return Ok(true);
        }
        return same_content(lp, up);
    }
    Ok(lm.mtime_nsec() == um.mtime_nsec())
}

impl<W: Write> Walker<W> {
    fn walk(&mut self, rel: &Path, lower_exists: bool) -> Result<()> {
        let udir = self.upper.join(rel);
        let ldir = self.lower.join(rel);
        let unames = names(&udir)?;
        let lnames = if lower_exists {
            names(&ldir)?
        } else {
            BTreeSet::new()
        };
        let all: BTreeSet<&OsString> = unames.iter().chain(lnames.iter()).collect();
        for name in all {
            let r = rel.join(name);
            let (up, lp) = (self.upper.join(&r), self.lower.join(&r));
            match (unames.contains(name), lnames.contains(name)) {
                (false, true) => self.whiteout(&r)?,
                (true, false) => {
                    let um = fs::symlink_metadata(&up).map_err(io_err("stat", &up))?;
                    self.add(&r, &um)?;
                    if um.is_dir() {
                        self.walk(&r, false)?;
                    }
                }
                (true, true) => {
                    let um = fs::symlink_metadata(&up).map_err(io_err("stat", &up))?;
                    let lm = fs::symlink_metadata(&lp).map_err(io_err("stat", &lp))?;
                    let same = um.file_type() == lm.file_type() && same_file(&lp, &lm, &up, &um)?;
                    if !same {
                        self.add(&r, &um)?;
                    }
                    if um.is_dir() {
                        self.walk(&r, lm.is_dir())?;
                    }
                }
                (false, false) => {}
            }
        }
        Ok(())
    }

    /// Write the directories above `rel` that are not in the tar yet.
    fn parents(&mut self, rel: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut p = rel.parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() || self.emitted_dirs.contains(d) {
                break;
            }
            missing.push(d.to_path_buf());
            p = d.parent();
        }
        for d in missing.into_iter().rev() {
            let full = self.upper.join(&d);
            let md = fs::symlink_metadata(&full).map_err(io_err("stat", &full))?;
            self.entry(&d, &md)?;
        }
        Ok(())
    }

    fn add(&mut self, rel: &Path, md: &Metadata) -> Result<()> {
        self.parents(rel)?;
        self.entry(rel, md)
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        self.parents(rel)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let mut name = OsString::from(".wh.");
        name.push(rel.file_name().unwrap_or_default());
        let pmd =
            fs::symlink_metadata(self.upper.join(parent)).map_err(io_err("stat", &self.upper))?;
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(u64::try_from(pmd.mtime()).unwrap_or(0));
        self.tar
            .append_data(&mut h, parent.join(name), io::empty())
            .map_err(Error::Write)
    }

    fn entry(&mut self, rel: &Path, md: &Metadata) -> Result<()> {
        let full = self.upper.join(rel);
        let ft = md.file_type();
        if ft.is_socket() {
            log::warn!(
                "diff: socket {} skipped: sockets cannot be stored in a layer",
                full.display()
            );
            return Ok(());
        }
        let mut h = Header::new_gnu();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(u64::from(md.uid()));
        h.set_gid(u64::from(md.gid()));
        h.set_mtime(u64::try_from(md.mtime()).unwrap_or(0));
        h.set_size(0);
        let xattrs = carried_xattrs(&full)?;
        if !xattrs.is_empty() {
            let keys: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| {
                    (
                        format!("SCHILY.xattr.{}", k.to_string_lossy()),
                        v.as_slice(),
                    )
                })
                .collect();
            self.tar
                .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(Error::Write)?;
        }
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            self.tar
                .append_data(&mut h, rel, io::empty())
                .map_err(Error::Write)?;
            self.emitted_dirs.insert(rel.to_path_buf());
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(&full).map_err(io_err("readlink", &full))?;
            self.tar
                .append_link(&mut h, rel, target)
                .map_err(Error::Write)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.inodes.get(&(md.dev(), md.ino())) {
                    h.set_entry_type(EntryType::Link);
                    let first = first.clone();
                    return self
                        .tar
                        .append_link(&mut h, rel, first)
                        .map_err(Error::Write);
                }
                self.inodes.insert((md.dev(), md.ino()), rel.to_path_buf());
            }
            h.set_entry_type(EntryType::Regular);
            h.set_size(md.size());
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&full)
                .map_err(io_err("open", &full))?;
            self.tar
                .append_data(&mut h, rel, f.take(md.size()))
                .map_err(Error::Write)?;
        } else {
            let (t, major, minor) = if ft.is_char_device() || ft.is_block_device() {
                let t = if ft.is_char_device() {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                let rdev = md.rdev();
                (t, nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
            } else {
                (EntryType::Fifo, 0, 0)
            };
            h.set_entry_type(t);
            h.set_device_major(u32::try_from(major).unwrap_or(u32::MAX))
                .map_err(Error::Write)?;
            h.set_device_minor(u32::try_from(minor).unwrap_or(u32::MAX))
                .map_err(Error::Write)?;
            self.tar
                .append_data(&mut h, rel, io::empty())
                .map_err(Error::Write)?;
        }
        Ok(())
    }
}
