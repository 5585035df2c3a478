//! The layer applier (containerd's `diff/apply` + `archive.Apply`), built so that no entry of
//! a hostile layer can touch anything outside the target directory.
//!
//! How it stays inside the root:
//! - tar entries are read in *raw* mode; GNU long names and PAX headers are parsed here with a
//!   1 MiB bound (Go's `archive/tar` limit), so no header size causes a large allocation;
//! - every name is cleaned lexically first (`..` cannot climb above `/`), exactly as
//!   containerd's `filepath.Clean`; the parent directory is then opened with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to an fd of the root, so
//!   symlinks in the path (absolute or relative) resolve as if the root were `/`;
//! - missing parents are created one `mkdirat` at a time on such a resolved fd; a dangling
//!   symlink in the way is followed *inside* the root, as containerd's `fs.RootPath` does;
//! - the entry itself is created with `*at` calls on the parent fd with a single-component
//!   name (`O_CREAT|O_EXCL|O_NOFOLLOW`, `symlinkat`, `mknodat`, `linkat` without
//!   `AT_SYMLINK_FOLLOW`), after removing whatever was there (never following it);
//! - owner, mode, xattrs and times are set on the created inode itself: `fchownat` with
//!   `AT_EMPTY_PATH` on an `O_PATH|O_NOFOLLOW` fd, `chmod` through `/proc/self/fd` of that fd
//!   and never on a symlink (CVE-2021-32760), `utimensat(AT_SYMLINK_NOFOLLOW)`;
//! - hard-link targets are resolved in the root the same way; whiteouts of `.`/`..` are
//!   refused (containerd's `validateWhiteout`), `trusted.*` xattrs are ignored as containerd
//!   ignores them, device numbers outside Linux's 12-bit major / 20-bit minor are refused.
//!
//! Sparse files: GNU tar's PAX sparse formats 0.0, 0.1 and 1.0 and old-GNU sparse entries
//! with up to 4 regions are written with their holes (maps validated: ordered, inside the
//! real size, matching the stored bytes, 1 MiB bound); old-GNU entries with extension headers
//! are refused (the raw reader cannot skip them). Plain files keep holes where whole buffers
//! are zero.
//!
//! Whiteouts: on a directory showing the whole snapshot (a mounted snapshot, a native
//! snapshot) `.wh.x` deletes `x` and `.wh..wh..opq` empties the directory of everything not
//! from this layer. Straight into an overlayfs upper directory they become overlay whiteouts
//! (a 0/0 character device, `trusted.overlay.opaque=y`), with new parent directories taking
//! their attributes from the lower layers (containerd's `OverlayConvertWhiteout` +
//! `WithParents`). [`apply_to_mounts`] picks between the two like containerd's
//! `apply_linux.go`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{
    fchmodat, fstat, fstatat, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use tar::EntryType;

use super::compression::{decompress, sniff_for_media_type, DigestReader, MEDIA_TYPE_LAYER};
use super::{Descriptor, Error, Result};
use crate::snapshots::fsutil;
use crate::snapshots::mount::{Mount, TempMount};

/// Where a layer is applied.
#[derive(Debug, Clone, Copy)]
pub enum ApplyTarget<'a> {
    /// A directory showing the snapshot's complete content (a mounted snapshot, or the
    /// native snapshotter's directory): whiteouts delete.
    Dir(&'a Path),
    /// An overlayfs upper directory and its lower directories, nearest first: whiteouts are
    /// written as overlay whiteouts.
    OverlayUpper {
        upper: &'a Path,
        lowers: &'a [PathBuf],
    },
}

/// Largest GNU long name / long link / PAX header accepted (Go's `maxSpecialFileSize`).
const MAX_SPECIAL: u64 = 1 << 20;
const NAME_MAX: usize = 255;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const MAX_SYMLINK_HOPS: usize = 40;

/// Apply the layer `blob` (compressed or not, as `media_type` says) onto `target`.
///
/// Returns the descriptor of the *uncompressed* layer (its digest is the diff_id). When
/// `expected_diff_id` is given and differs, the apply fails with `DigestMismatch`. On any
/// error the target holds a partial layer: the caller must discard the snapshot (remove the
/// active snapshot instead of committing it), as containerd's unpacker does.
pub fn apply_layer(
    blob: impl Read,
    media_type: &str,
    target: &ApplyTarget<'_>,
    expected_diff_id: Option<&str>,
) -> Result<Descriptor> {
    let plain: Box<dyn Read + '_> = if sniff_for_media_type(media_type)? {
        decompress(blob)
            .map_err(|source| Error::Corrupt {
                entries: 0,
                at: String::new(),
                source,
            })?
            .1
    } else {
        Box::new(blob)
    };
    let mut reader = DigestReader::new(plain);
    let mut applier = match target {
        ApplyTarget::Dir(root) => Applier::new(root, &[], false)?,
        ApplyTarget::OverlayUpper { upper, lowers } => Applier::new(upper, lowers, true)?,
    };
    applier.run(&mut reader)?;
    reader.drain().map_err(|source| Error::Corrupt {
        entries: applier.count,
        at: " at the end of the archive".into(),
        source,
    })?;
    let (digest, size) = reader.finish();
    if let Some(expected) = expected_diff_id {
        if expected != digest {
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: digest,
            });
        }
    }
    Ok(Descriptor {
        media_type: MEDIA_TYPE_LAYER.to_string(),
        digest,
        size: i64::try_from(size).unwrap_or(i64::MAX),
    })
}

/// Apply a layer onto the snapshot described by `mounts` (what `Snapshotter::prepare`
/// returned). A single overlay mount with an `upperdir` is applied straight into the upper
/// directory with overlay whiteouts; anything else is mounted on a temporary directory first.
pub fn apply_to_mounts(
    mounts: &[Mount],
    blob: impl Read,
    media_type: &str,
    expected_diff_id: Option<&str>,
) -> Result<Descriptor> {
    if let [m] = mounts {
        if m.fs_type == "overlay" {
            let opt = |k: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(k))
                    .map(str::to_string)
            };
            if let Some(upper) = opt("upperdir=") {
                let lowers: Vec<PathBuf> = opt("lowerdir=")
                    .map(|l| l.split(':').map(PathBuf::from).collect())
                    .unwrap_or_default();
                let target = ApplyTarget::OverlayUpper {
                    upper: Path::new(&upper),
                    lowers: &lowers,
                };
                return apply_layer(blob, media_type, &target, expected_diff_id);
            }
        }
    }
    let tm = TempMount::new(mounts)?;
    let applied = apply_layer(
        blob,
        media_type,
        &ApplyTarget::Dir(tm.path()),
        expected_diff_id,
    );
    let closed = tm.close();
    let d = applied?;
    closed?;
    Ok(d)
}

/// One tar entry with GNU/PAX extensions folded in.
struct Hdr {
    display: String,
    comps: Vec<OsString>,
    link: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    size: u64,
    major: u32,
    minor: u32,
    xattrs: Vec<(OsString, Vec<u8>)>,
    sparse: Option<Sparse>,
}

/// A sparse regular file: its real size and where its stored data goes.
struct Sparse {
    real_size: u64,
    map: SparseMap,
}

enum SparseMap {
    /// (offset, length) regions, in order; the entry data is their concatenation.
    Regions(Vec<(u64, u64)>),
    /// GNU PAX sparse 1.0: the map is at the start of the entry data.
    InData,
}

/// The `GNU.sparse.*` PAX records of one entry (GNU tar's formats 0.0, 0.1 and 1.0).
#[derive(Default)]
struct PaxSparse {
    any: bool,
    major: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    map: Option<Vec<u8>>,
    offsets: Vec<u64>,
    lengths: Vec<u64>,
}

struct Applier {
    root: OwnedFd,
    root_path: PathBuf,
    lowers: Vec<OwnedFd>,
    overlay: bool,
    userns: bool,
    /// (dev, ino) of a parent directory and a name created in it by this layer.
    unpacked: HashSet<(u64, u64, OsString)>,
    /// Directories whose times are set at the end, after their children were created.
    dirs: Vec<(Vec<OsString>, TimeSpec, TimeSpec)>,
    buf: Vec<u8>,
    count: usize,
    last: String,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn is_type(st: &FileStat, t: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == t
}

fn join(comps: &[OsString]) -> OsString {
    if comps.is_empty() {
        return OsString::from(".");
    }
    let mut v = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c.as_bytes());
    }
    OsString::from_vec(v)
}

/// Lexical clean of a tar name as `filepath.Clean("/" + name)`: `.` and empty components
/// vanish, `..` pops (and cannot climb above the root).
fn clean_into(out: &mut Vec<OsString>, name: &[u8]) {
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
}

fn parse_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, ch) in frac.chars().take(9).enumerate() {
        nanos += i64::from(ch.to_digit(10)?) * 10i64.pow(8 - u32::try_from(i).ok()?);
    }
    if secs < 0 && nanos > 0 {
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

impl Applier {
    fn new(root: &Path, lowers: &[PathBuf], overlay: bool) -> Result<Self> {
        let open_root = |p: &Path| {
            nix::fcntl::open(
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::Io {
                op: "open apply target",
                path: p.to_path_buf(),
                source: errno(e),
            })
        };
        let fd = open_root(root)?;
        let root_path = std::fs::canonicalize(root).map_err(|source| Error::Io {
            op: "resolve apply target",
            path: root.to_path_buf(),
            source,
        })?;
        let lowers = lowers
            .iter()
            .map(|l| open_root(l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Applier {
            root: fd,
            root_path,
            lowers,
            overlay,
            userns: crate::snapshots::overlay::in_user_namespace(),
            unpacked: HashSet::new(),
            dirs: Vec::new(),
            buf: vec![0; 128 * 1024],
            count: 0,
            last: String::new(),
        })
    }

    fn corrupt(&self, source: io::Error) -> Error {
        let at = if self.last.is_empty() {
            String::new()
        } else {
            format!(", last {:?}", self.last)
        };
        Error::Corrupt {
            entries: self.count,
            at,
            source,
        }
    }

    fn invalid(entry: &str, reason: impl Into<String>) -> Error {
        Error::InvalidArchive {
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn fail(&self, entry: &str, op: &'static str, source: io::Error) -> Error {
        Error::Apply {
            root: self.root_path.clone(),
            entry: entry.to_string(),
            op,
            source,
        }
    }

    fn run<R: Read>(&mut self, r: R) -> Result<()> {
        let mut archive = tar::Archive::new(r);
        let entries = archive.entries().map_err(|e| self.corrupt(e))?.raw(true);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            let kind = entry.header().entry_type();
            match kind {
                EntryType::GNULongName => {
                    long_name = Some(self.read_special(&mut entry, "GNU long name")?);
                    continue;
                }
                EntryType::GNULongLink => {
                    long_link = Some(self.read_special(&mut entry, "GNU long link name")?);
                    continue;
                }
                EntryType::XHeader => {
                    pax = Some(self.read_special(&mut entry, "PAX header")?);
                    continue;
                }
                // containerd: "PAX Global Extended Headers found and ignored".
                EntryType::XGlobalHeader => continue,
                _ => {}
            }
            let hdr = Self::parse(
                &entry,
                long_name.take(),
                long_link.take(),
                pax.take().as_deref(),
            )?;
            self.last.clone_from(&hdr.display);
            self.entry(&hdr, &mut entry)?;
            self.count += 1;
        }
        self.finish_dirs()
    }

    fn read_special<R: Read>(&self, entry: &mut tar::Entry<'_, R>, what: &str) -> Result<Vec<u8>> {
        let size = entry.size();
        if size > MAX_SPECIAL {
            return Err(Self::invalid(
                &self.last,
                format!("{what} of {size} bytes exceeds the {MAX_SPECIAL}-byte limit"),
            ));
        }
        let mut v = Vec::new();
        entry
            .take(MAX_SPECIAL)
            .read_to_end(&mut v)
            .map_err(|e| self.corrupt(e))?;
        if v.len() as u64 != size {
            return Err(self.corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{what} truncated"),
            )));
        }
        Ok(v)
    }

    fn parse<R: Read>(
        entry: &tar::Entry<'_, R>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<&[u8]>,
    ) -> Result<Hdr> {
        let h = entry.header();
        let strip = |mut v: Vec<u8>| {
            while v.last() == Some(&0) {
                v.pop();
            }
            v
        };
        let mut name = long_name.map_or_else(|| entry.path_bytes().into_owned(), strip);
        let mut link = long_link.map_or_else(
            || {
                entry
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default()
            },
            strip,
        );
        let display0 = String::from_utf8_lossy(&name).into_owned();
        let bad = |what: &str, e: io::Error| Self::invalid(&display0, format!("{what}: {e}"));
        // Go's archive/tar reads an all-NUL numeric field as 0; so do we.
        let old = h.as_old();
        let blank = |raw: &[u8]| raw.iter().all(|b| *b == 0 || *b == b' ');
        let or_zero = |r: io::Result<u64>, raw: &[u8], what: &str| match r {
            Ok(v) => Ok(v),
            Err(_) if blank(raw) => Ok(0),
            Err(e) => Err(bad(what, e)),
        };
        let mut uid = or_zero(h.uid(), &old.uid, "uid")?;
        let mut gid = or_zero(h.gid(), &old.gid, "gid")?;
        let mtime_s = or_zero(h.mtime(), &old.mtime, "mtime")?;
        let mut mtime = TimeSpec::new(i64::try_from(mtime_s).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        let mut ps = PaxSparse::default();
        if let Some(pax) = pax {
            for ext in tar::PaxExtensions::new(pax) {
                let ext = ext.map_err(|e| bad("PAX header", e))?;
                let key = ext.key_bytes();
                let val = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(val)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                };
                match key {
                    b"path" => name = val.to_vec(),
                    b"linkpath" => link = val.to_vec(),
                    b"uid" => uid = num().ok_or_else(|| Self::invalid(&display0, "bad PAX uid"))?,
                    b"gid" => gid = num().ok_or_else(|| Self::invalid(&display0, "bad PAX gid"))?,
                    b"mtime" => {
                        mtime = parse_time(val)
                            .ok_or_else(|| Self::invalid(&display0, "bad PAX mtime"))?;
                    }
                    b"atime" => atime = parse_time(val),
                    b"size" if num() != Some(entry.size()) => {
                        return Err(Self::invalid(
                            &display0,
                            "PAX size override (files over 8 GiB) is not supported",
                        ));
                    }
                    k if k.starts_with(b"GNU.sparse.") => {
                        let n = || {
                            num().ok_or_else(|| Self::invalid(&display0, "bad GNU.sparse number"))
                        };
                        ps.any = true;
                        match &k[b"GNU.sparse.".len()..] {
                            b"major" => ps.major = Some(val.to_vec()),
                            b"minor" => {}
                            b"name" => ps.name = Some(val.to_vec()),
                            b"size" | b"realsize" => ps.real_size = Some(n()?),
                            b"map" => ps.map = Some(val.to_vec()),
                            b"offset" => ps.offsets.push(n()?),
                            b"numbytes" => ps.lengths.push(n()?),
                            _ => {}
                        }
                    }
                    k if k.starts_with(b"SCHILY.xattr.") => {
                        xattrs.push((
                            OsStr::from_bytes(&k[b"SCHILY.xattr.".len()..]).to_os_string(),
                            val.to_vec(),
                        ));
                    }
                    _ => {}
                }
            }
        }
        let mut sparse = None;
        if ps.any {
            // GNU tar's PAX sparse formats (Go's readGNUSparsePAXHeaders).
            if let Some(n) = ps.name.take() {
                name = n;
            }
            let real_size = ps.real_size.ok_or_else(|| {
                Self::invalid(
                    &display0,
                    "PAX sparse file without GNU.sparse.size/realsize",
                )
            })?;
            let map = if ps.major.as_deref() == Some(b"1") {
                SparseMap::InData
            } else if let Some(m) = &ps.map {
                let nums = std::str::from_utf8(m)
                    .ok()
                    .and_then(|t| {
                        t.split(',')
                            .map(|x| x.parse::<u64>().ok())
                            .collect::<Option<Vec<_>>>()
                    })
                    .filter(|v| v.len() % 2 == 0)
                    .ok_or_else(|| Self::invalid(&display0, "bad GNU.sparse.map"))?;
                SparseMap::Regions(nums.chunks(2).map(|c| (c[0], c[1])).collect())
            } else if ps.offsets.len() == ps.lengths.len() {
                SparseMap::Regions(
                    ps.offsets
                        .iter()
                        .copied()
                        .zip(ps.lengths.iter().copied())
                        .collect(),
                )
            } else {
                return Err(Self::invalid(
                    &display0,
                    "GNU.sparse.offset/numbytes do not pair up",
                ));
            };
            sparse = Some(Sparse { real_size, map });
        }
        let display = String::from_utf8_lossy(&name).into_owned();
        if name.contains(&0) || link.contains(&0) {
            return Err(Self::invalid(&display, "name contains a NUL byte"));
        }
        let mut kind = h.entry_type();
        if kind == EntryType::GNUSparse {
            // Old GNU sparse: up to 4 regions in the header. More regions need extension
            // headers between header and data, which a raw reader cannot skip: refused.
            let gnu = h
                .as_gnu()
                .ok_or_else(|| Self::invalid(&display, "sparse entry without a GNU header"))?;
            if gnu.is_extended() {
                return Err(Self::invalid(
                    &display,
                    "GNU sparse file with more than 4 regions (extended sparse headers) is not supported; \
                     write it with --format=posix",
                ));
            }
            let real_size = gnu.real_size().map_err(|e| bad("sparse real size", e))?;
            let mut regions = Vec::new();
            for r in gnu.sparse.iter().filter(|r| !r.is_empty()) {
                regions.push((
                    r.offset().map_err(|e| bad("sparse offset", e))?,
                    r.length().map_err(|e| bad("sparse length", e))?,
                ));
            }
            sparse = Some(Sparse {
                real_size,
                map: SparseMap::Regions(regions),
            });
            kind = EntryType::Regular;
        }
        if sparse.is_some() && !(kind.is_file() || kind == EntryType::Continuous) {
            return Err(Self::invalid(
                &display,
                "sparse records on a non-regular entry",
            ));
        }
        let mut comps = Vec::new();
        clean_into(&mut comps, &name);
        if let Some(c) = comps.iter().find(|c| c.len() > NAME_MAX) {
            return Err(Self::invalid(
                &display,
                format!(
                    "path component of {} bytes exceeds NAME_MAX ({NAME_MAX})",
                    c.len()
                ),
            ));
        }
        let (mut major, mut minor) = (0, 0);
        if kind.is_character_special() || kind.is_block_special() {
            major = h
                .device_major()
                .map_err(|e| bad("device major", e))?
                .unwrap_or(0);
            minor = h
                .device_minor()
                .map_err(|e| bad("device minor", e))?
                .unwrap_or(0);
            if major >= 1 << 12 || minor >= 1 << 20 {
                return Err(Self::invalid(
                    &display,
                    format!("device number {major}:{minor} out of range (major < 4096, minor < 1048576)"),
                ));
            }
        }
        let uid = u32::try_from(uid)
            .map_err(|_| Self::invalid(&display, format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .map_err(|_| Self::invalid(&display, format!("gid {gid} out of range")))?;
        let mode = u32::try_from(or_zero(h.mode().map(u64::from), &old.mode, "mode")? & 0o7777)
            .unwrap_or(0);
        // containerd: atime = latest(atime, mtime); times before the epoch are clamped.
        let clamp = |t: TimeSpec| {
            if t.tv_sec() < 0 {
                TimeSpec::new(0, 0)
            } else {
                t
            }
        };
        let mtime = clamp(mtime);
        let atime = clamp(match atime {
            Some(a) if (a.tv_sec(), a.tv_nsec()) > (mtime.tv_sec(), mtime.tv_nsec()) => a,
            _ => mtime,
        });
        Ok(Hdr {
            display,
            comps,
            link,
            kind,
            mode,
            uid,
            gid,
            atime,
            mtime,
            size: entry.size(),
            major,
            minor,
            xattrs,
            sparse,
        })
    }

    /// Open a directory of the tree, resolving symlinks as if the root were `/`.
    fn open_in(base: &OwnedFd, comps: &[OsString], flags: OFlag) -> io::Result<OwnedFd> {
        let path = join(comps);
        let how = OpenHow::new()
            .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut tries = 0;
        loop {
            match openat2(base, path.as_os_str(), how) {
                // openat2 asks for a retry when a rename raced with the lookup.
                Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                r => return r.map_err(errno),
            }
        }
    }

    fn open_dir(&self, comps: &[OsString]) -> io::Result<OwnedFd> {
        Self::open_in(&self.root, comps, OFlag::O_DIRECTORY)
    }

    /// The path of an fd relative to the root, to resolve relative symlink targets from.
    fn rel_of(&self, fd: &OwnedFd) -> Option<Vec<OsString>> {
        let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let rel = p.strip_prefix(&self.root_path).ok()?;
        let mut comps = Vec::new();
        clean_into(&mut comps, rel.as_os_str().as_bytes());
        Some(comps)
    }

    /// Resolve `comps` as a directory in the root, creating missing directories (mode 0755,
    /// or copied from the lower layers in overlay mode) as containerd's `mkparent`.
    fn mkdir_all(&self, comps: &[OsString]) -> io::Result<OwnedFd> {
        self.resolve(comps, true)
    }

    /// Resolve `comps` as an existing directory in the root. Like containerd's `fs.RootPath`,
    /// a symlink whose target the kernel cannot walk (`missing/../x`) is resolved lexically.
    fn resolve_dir(&self, comps: &[OsString]) -> io::Result<OwnedFd> {
        self.resolve(comps, false)
    }

    fn resolve(&self, comps: &[OsString], create: bool) -> io::Result<OwnedFd> {
        let mut path = comps.to_vec();
        let mut hops = 0;
        'restart: loop {
            match self.open_dir(&path) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let mut dirfd = self.open_dir(&[])?;
            for i in 0..path.len() {
                match self.open_dir(&path[..=i]) {
                    Ok(fd) => {
                        dirfd = fd;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
                let name = path[i].clone();
                match fstatat(&dirfd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Err(Errno::ENOENT) if !create => return Err(errno(Errno::ENOENT)),
                    Err(Errno::ENOENT) => {
                        match mkdirat(&dirfd, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(errno(e)),
                        }
                        let fd = openat(
                            &dirfd,
                            name.as_os_str(),
                            OFlag::O_PATH
                                | OFlag::O_DIRECTORY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(errno)?;
                        chmod_fd(&fd, 0o755)?;
                        if self.overlay {
                            self.copy_lower_dir_info(&path[..=i], &fd)?;
                        }
                        dirfd = fd;
                    }
                    Ok(st) if is_type(&st, libc::S_IFLNK) => {
                        // A dangling symlink: follow it inside the root (fs.RootPath).
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            return Err(io::Error::from_raw_os_error(libc::ELOOP));
                        }
                        let target = readlinkat(&dirfd, name.as_os_str()).map_err(errno)?;
                        let mut next = if target.as_bytes().starts_with(b"/") {
                            Vec::new()
                        } else {
                            self.rel_of(&dirfd).unwrap_or_else(|| path[..i].to_vec())
                        };
                        clean_into(&mut next, target.as_bytes());
                        next.extend_from_slice(&path[i + 1..]);
                        path = next;
                        continue 'restart;
                    }
                    Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                    Err(e) => return Err(errno(e)),
                }
            }
            return Ok(dirfd);
        }
    }

    /// Overlay mode: a directory created in the upper layer takes owner, mode, times and
    /// xattrs from the nearest lower layer that has it (containerd's `WithParents`).
    fn copy_lower_dir_info(&self, comps: &[OsString], fd: &OwnedFd) -> io::Result<()> {
        for lower in &self.lowers {
            let lfd = match Self::open_in(lower, comps, OFlag::O_NOFOLLOW) {
                Ok(f) => f,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let st = fstat(&lfd).map_err(errno)?;
            if !is_type(&st, libc::S_IFDIR) {
                break;
            }
            fchownat(
                fd,
                "",
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(errno)?;
            chmod_fd(fd, st.st_mode & 0o7777)?;
            let (lp, dp) = (proc_fd(&lfd), proc_fd(fd));
            for name in fsutil::llistxattr_follow(&lp)? {
                if name.as_bytes().starts_with(b"trusted.") {
                    continue;
                }
                if let Some(v) = fsutil::getxattr_follow(&lp, &name)? {
                    fsutil::setxattr_follow(&dp, &name, &v)?;
                }
            }
            let at = TimeSpec::new(st.st_atime, st.st_atime_nsec);
            let mt = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
            utimensat(AT_FDCWD, &dp, &at, &mt, UtimensatFlags::FollowSymlink).map_err(errno)?;
            return Ok(());
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, hdr: &Hdr, data: &mut R) -> Result<()> {
        let Some((base, parent)) = hdr.comps.split_last() else {
            log::debug!(
                "layer entry {:?} resolves to the root: ignored",
                hdr.display
            );
            return Ok(());
        };
        let e = &hdr.display;
        if (hdr.kind.is_character_special() || hdr.kind.is_block_special()) && self.userns {
            log::warn!("layer entry {e:?} (device node) ignored: running in a user namespace");
            return Ok(());
        }
        if base.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(hdr, parent, base);
        }
        let pfd = self
            .mkdir_all(parent)
            .map_err(|s| self.fail(e, "create parent directories", s))?;
        match fstatat(&pfd, base.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_type(&st, libc::S_IFDIR) && hdr.kind.is_dir() => {}
            Ok(_) => {
                remove_all_at(&pfd, base).map_err(|s| self.fail(e, "replace existing entry", s))?;
            }
            Err(Errno::ENOENT) => {}
            Err(err) => return Err(self.fail(e, "stat existing entry", errno(err))),
        }
        let name = base.as_os_str();
        match hdr.kind {
            EntryType::Directory => match mkdirat(&pfd, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(err) => return Err(self.fail(e, "mkdir", errno(err))),
            },
            EntryType::Regular | EntryType::Continuous => {
                let fd = openat(
                    &pfd,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| self.fail(e, "create file", errno(err)))?;
                let mut f = File::from(fd);
                let n = match &hdr.sparse {
                    None => self.copy_sparse(data, &mut f, e)?,
                    Some(sp) => self.write_sparse(data, &mut f, sp, hdr.size, e)?,
                };
                if n != hdr.size {
                    return Err(self.corrupt(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file {e:?} has {n} of its {} bytes", hdr.size),
                    )));
                }
            }
            EntryType::Symlink => {
                symlinkat(OsStr::from_bytes(&hdr.link), &pfd, name)
                    .map_err(|err| self.fail(e, "symlink", errno(err)))?;
            }
            EntryType::Link => {
                let mut target = Vec::new();
                clean_into(&mut target, &hdr.link);
                let Some((tbase, tparent)) = target.split_last() else {
                    return Err(Self::invalid(e, "hard link to the root directory"));
                };
                let tfd = self
                    .resolve_dir(tparent)
                    .map_err(|s| self.fail(e, "resolve hard link target", s))?;
                linkat(&tfd, tbase.as_os_str(), &pfd, name, AtFlags::empty())
                    .map_err(|err| self.fail(e, "hard link", errno(err)))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match hdr.kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = nix::sys::stat::makedev(u64::from(hdr.major), u64::from(hdr.minor));
                mknodat(&pfd, name, kind, Mode::from_bits_truncate(hdr.mode), dev)
                    .map_err(|err| self.fail(e, "mknod", errno(err)))?;
            }
            other => {
                return Err(Self::invalid(
                    e,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        }
        self.set_metadata(&pfd, name, hdr)?;
        let pst = fstat(&pfd).map_err(|err| self.fail(e, "stat parent", errno(err)))?;
        self.unpacked.insert((pst.st_dev, pst.st_ino, base.clone()));
        if hdr.kind.is_dir() {
            self.dirs.push((hdr.comps.clone(), hdr.atime, hdr.mtime));
        }
        Ok(())
    }

    /// Write a sparse entry: each stored region at its offset, holes in between, the file
    /// extended to its real size. Returns the entry bytes consumed (map included).
    fn write_sparse<R: Read>(
        &mut self,
        data: &mut R,
        f: &mut File,
        sp: &Sparse,
        size: u64,
        e: &str,
    ) -> Result<u64> {
        let mut consumed = 0u64;
        let in_data;
        let regions = match &sp.map {
            SparseMap::Regions(r) => r,
            SparseMap::InData => {
                in_data = self.read_sparse_map(data, &mut consumed, e)?;
                &in_data
            }
        };
        let mut end = 0u64;
        let mut stored = 0u64;
        for &(off, len) in regions {
            let stop = off.checked_add(len);
            if off < end || stop.is_none_or(|s| s > sp.real_size) {
                return Err(Self::invalid(
                    e,
                    "sparse map regions overlap or exceed the real size",
                ));
            }
            end = stop.unwrap_or(u64::MAX);
            stored = stored.saturating_add(len);
        }
        if consumed.saturating_add(stored) != size {
            return Err(Self::invalid(
                e,
                format!(
                    "sparse map covers {stored} bytes but the entry stores {}",
                    size - consumed.min(size)
                ),
            ));
        }
        for &(off, len) in regions {
            f.seek(SeekFrom::Start(off))
                .map_err(|s| self.fail(e, "seek", s))?;
            let mut left = len;
            while left > 0 {
                let want =
                    usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
                let n = match data.read(&mut self.buf[..want]) {
                    Ok(0) => return Ok(consumed),
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(self.corrupt(err)),
                };
                f.write_all(&self.buf[..n])
                    .map_err(|s| self.fail(e, "write", s))?;
                left -= n as u64;
                consumed += n as u64;
            }
        }
        f.set_len(sp.real_size)
            .map_err(|s| self.fail(e, "truncate", s))?;
        Ok(consumed)
    }

    /// GNU sparse 1.0: decimal numbers, one per line (count, then offset/length pairs), padded
    /// to a 512-byte block, at the start of the entry data. Bounded like other headers.
    fn read_sparse_map<R: Read>(
        &self,
        data: &mut R,
        consumed: &mut u64,
        e: &str,
    ) -> Result<Vec<(u64, u64)>> {
        let mut next = |consumed: &mut u64| -> Result<u64> {
            let mut digits = Vec::new();
            loop {
                let mut b = [0u8; 1];
                match data.read(&mut b) {
                    Ok(0) => {
                        return Err(self.corrupt(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "sparse map truncated",
                        )))
                    }
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => return Err(self.corrupt(err)),
                }
                *consumed += 1;
                if *consumed > MAX_SPECIAL {
                    return Err(Self::invalid(e, "sparse map exceeds the 1 MiB limit"));
                }
                if b[0] == b'\n' {
                    break;
                }
                digits.push(b[0]);
            }
            std::str::from_utf8(&digits)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| Self::invalid(e, "bad number in the sparse map"))
        };
        let count = next(consumed)?;
        let mut regions = Vec::new();
        for _ in 0..count {
            let off = next(consumed)?;
            let len = next(consumed)?;
            regions.push((off, len));
        }
        let pad = (512 - *consumed % 512) % 512;
        let skipped =
            io::copy(&mut data.take(pad), &mut io::sink()).map_err(|err| self.corrupt(err))?;
        if skipped != pad {
            return Err(self.corrupt(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sparse map truncated",
            )));
        }
        *consumed += pad;
        Ok(regions)
    }

    /// Copy file data, leaving holes where whole buffers are zero (sparse-safe).
    fn copy_sparse<R: Read>(&mut self, data: &mut R, f: &mut File, e: &str) -> Result<u64> {
        let mut total = 0u64;
        let mut hole = false;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.corrupt(err)),
            };
            total += n as u64;
            let chunk = &self.buf[..n];
            if chunk.iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(n as i64))
                    .map_err(|s| self.fail(e, "seek", s))?;
                hole = true;
            } else {
                f.write_all(chunk).map_err(|s| self.fail(e, "write", s))?;
                hole = false;
            }
        }
        if hole {
            f.set_len(total).map_err(|s| self.fail(e, "truncate", s))?;
        }
        Ok(total)
    }

    fn set_metadata(&self, pfd: &OwnedFd, name: &OsStr, hdr: &Hdr) -> Result<()> {
        let e = &hdr.display;
        let fd = openat(
            pfd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| self.fail(e, "open created entry", errno(err)))?;
        let st = fstat(&fd).map_err(|err| self.fail(e, "stat created entry", errno(err)))?;
        let symlink = is_type(&st, libc::S_IFLNK);
        fchownat(
            &fd,
            "",
            Some(Uid::from_raw(hdr.uid)),
            Some(Gid::from_raw(hdr.gid)),
            AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|err| self.fail(e, "chown", errno(err)))?;
        if !hdr.xattrs.is_empty() {
            // `/proc/self/fd/<parent>/<name>` with l*xattr: the parent is the resolved fd, the
            // final component is not followed.
            let mut p = proc_fd(pfd).into_os_string();
            p.push("/");
            p.push(name);
            let p = PathBuf::from(p);
            for (key, value) in &hdr.xattrs {
                if key.as_bytes().starts_with(b"trusted.") {
                    log::warn!("layer entry {e:?}: ignored xattr {key:?}: admin attributes from archive not supported");
                    continue;
                }
                match fsutil::lsetxattr(&p, key, value) {
                    Ok(()) => {}
                    Err(err) if err.raw_os_error() == Some(libc::ENOTSUP) => {
                        log::warn!("layer entry {e:?}: ignored xattr {key:?}: {err}");
                    }
                    Err(err)
                        if err.raw_os_error() == Some(libc::EPERM)
                            && key.as_bytes().starts_with(b"user.")
                            && !is_type(&st, libc::S_IFREG)
                            && !is_type(&st, libc::S_IFDIR) =>
                    {
                        log::warn!(
                            "layer entry {e:?}: ignored xattr {key:?} on a special file: {err}"
                        );
                    }
                    Err(err) => return Err(self.fail(e, "setxattr", err)),
                }
            }
        }
        // chmod after chown (which clears set-id bits), never through a symlink.
        if !symlink {
            chmod_fd(&fd, hdr.mode).map_err(|s| self.fail(e, "chmod", s))?;
        }
        if !hdr.kind.is_dir() {
            utimensat(
                pfd,
                name,
                &hdr.atime,
                &hdr.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|err| self.fail(e, "set times", errno(err)))?;
        }
        Ok(())
    }

    fn whiteout(&mut self, hdr: &Hdr, parent: &[OsString], base: &OsString) -> Result<()> {
        let e = &hdr.display;
        if base.as_bytes() == WHITEOUT_OPAQUE {
            let dfd = self
                .mkdir_all(parent)
                .map_err(|s| self.fail(e, "resolve opaque directory", s))?;
            if self.overlay {
                return fsutil::setxattr_follow(
                    &proc_fd(&dfd),
                    OsStr::new("trusted.overlay.opaque"),
                    b"y",
                )
                .map_err(|s| self.fail(e, "mark directory opaque", s));
            }
            return self
                .clear_not_unpacked(&dfd)
                .map_err(|s| self.fail(e, "clear opaque directory", s));
        }
        let original = OsStr::from_bytes(&base.as_bytes()[WHITEOUT_PREFIX.len()..]);
        if matches!(original.as_bytes(), b"" | b"." | b"..") {
            return Err(Self::invalid(
                e,
                "invalid whiteout name: it would remove a directory above the entry",
            ));
        }
        if self.overlay {
            let pfd = self
                .mkdir_all(parent)
                .map_err(|s| self.fail(e, "create parent directories", s))?;
            mknodat(&pfd, original, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|err| self.fail(e, "create overlay whiteout", errno(err)))?;
            return fchownat(
                &pfd,
                original,
                Some(Uid::from_raw(hdr.uid)),
                Some(Gid::from_raw(hdr.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|err| self.fail(e, "chown overlay whiteout", errno(err)));
        }
        let pfd = match self.resolve_dir(parent) {
            Ok(fd) => fd,
            // Nothing to delete under a missing or non-directory parent.
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(())
            }
            Err(err) => return Err(self.fail(e, "resolve whiteout parent", err)),
        };
        remove_all_at(&pfd, original).map_err(|s| self.fail(e, "remove whited-out entry", s))
    }

    /// Opaque directory on a full view: remove every child not created by this layer,
    /// descending into directories that were (containerd walks the same way).
    fn clear_not_unpacked(&self, dfd: &OwnedFd) -> io::Result<()> {
        let st = fstat(dfd).map_err(errno)?;
        for name in list_dir(dfd)? {
            if self
                .unpacked
                .contains(&(st.st_dev, st.st_ino, name.clone()))
            {
                let cst =
                    fstatat(dfd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
                if is_type(&cst, libc::S_IFDIR) {
                    let child = openat(
                        dfd,
                        name.as_os_str(),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno)?;
                    self.clear_not_unpacked(&child)?;
                }
            } else {
                remove_all_at(dfd, &name)?;
            }
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        for (comps, atime, mtime) in std::mem::take(&mut self.dirs) {
            let Some((base, parent)) = comps.split_last() else {
                continue;
            };
            let display = String::from_utf8_lossy(join(&comps).as_bytes()).into_owned();
            let pfd = match self.resolve_dir(parent) {
                Ok(fd) => fd,
                Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    continue
                }
                Err(err) => return Err(self.fail(&display, "resolve directory", err)),
            };
            match utimensat(
                &pfd,
                base.as_os_str(),
                &atime,
                &mtime,
                UtimensatFlags::NoFollowSymlink,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(err) => return Err(self.fail(&display, "set directory times", errno(err))),
            }
        }
        Ok(())
    }
}

fn proc_fd(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// chmod the exact inode behind an `O_PATH` fd (via its `/proc/self/fd` link); callers never
/// pass a symlink.
fn chmod_fd(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    fchmodat(
        AT_FDCWD,
        &proc_fd(fd),
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(errno)
}

fn list_dir(dfd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let dir = nix::dir::Dir::openat(
        dfd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let mut names = Vec::new();
    let mut dir = dir;
    for ent in dir.iter() {
        let ent = ent.map_err(errno)?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

/// Remove `name` in `dfd` and everything under it, never following symlinks. A missing
/// entry is not an error.
fn remove_all_at(dfd: &impl AsFd, name: &OsStr) -> io::Result<()> {
    let st = match fstatat(dfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(errno(e)),
    };
    if is_type(&st, libc::S_IFDIR) {
        let child = openat(
            dfd,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        for n in list_dir(&child)? {
            remove_all_at(&child, &n)?;
        }
        match unlinkat(dfd, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    } else {
        match unlinkat(dfd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }
}
