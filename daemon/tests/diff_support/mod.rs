//! Test support for the diff tests: a layer builder that writes any tar entry byte-for-byte
//! (including the hostile names the `tar` crate's own builder refuses), and tree helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tar::{EntryType, Header};

/// Builds a layer tar entry by entry.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
    uid: u64,
    gid: u64,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
            uid: 0,
            gid: 0,
        }
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Layer {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Layer {
        self.mtime = mtime;
        self
    }

    fn gnu_long(&mut self, kind: EntryType, value: &[u8]) {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(kind);
        h.set_size(value.len() as u64 + 1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut data = value.to_vec();
        data.push(0);
        self.b
            .append(&h, data.as_slice())
            .expect("append long name");
    }

    /// Append an entry with exactly these name/link bytes (GNU long records when needed).
    pub fn raw(
        mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        mode: u32,
        data: &[u8],
    ) -> Layer {
        if name.len() > 100 {
            self.gnu_long(EntryType::GNULongName, name);
        }
        if link.len() > 100 {
            self.gnu_long(EntryType::GNULongLink, link);
        }
        let mut h = Header::new_gnu();
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).expect("append entry");
        self
    }

    pub fn dir(self, name: &str, mode: u32) -> Layer {
        self.raw(EntryType::Directory, name.as_bytes(), b"", mode, b"")
    }
    pub fn file(self, name: &str, data: &[u8], mode: u32) -> Layer {
        self.raw(EntryType::Regular, name.as_bytes(), b"", mode, data)
    }
    pub fn symlink(self, target: &str, name: &str) -> Layer {
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            0o777,
            b"",
        )
    }
    pub fn link(self, target: &str, name: &str) -> Layer {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            0o644,
            b"",
        )
    }
    pub fn whiteout(self, name: &str) -> Layer {
        self.file(name, b"", 0o644)
    }
    pub fn fifo(self, name: &str, mode: u32) -> Layer {
        self.raw(EntryType::Fifo, name.as_bytes(), b"", mode, b"")
    }

    /// A device node; numbers are written as raw octal so out-of-range values can be tested.
    pub fn device(mut self, kind: EntryType, name: &str, major: u32, minor: u32) -> Layer {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(self.mtime);
        h.set_size(0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.b.append(&h, &b""[..]).expect("append device");
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Layer {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .expect("pax");
        self
    }

    /// A PAX header entry with arbitrary (possibly huge) content.
    pub fn raw_pax(mut self, body: &[u8]) -> Layer {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
        h.set_entry_type(EntryType::XHeader);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.b.append(&h, body).expect("append pax");
        self
    }

    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }

    pub fn gzip(self) -> Vec<u8> {
        gzip(&self.tar())
    }

    pub fn zstd(self) -> Vec<u8> {
        zstd::stream::encode_all(self.tar().as_slice(), 3).expect("zstd")
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).expect("gzip");
    g.finish().expect("gzip finish")
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Per path: type, permissions, owner, size/content digest or link target, xattrs; with
/// `times`, also the mtime in seconds.
pub fn describe(root: &Path, times: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).expect("lstat");
        let name = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            for e in fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink->{}",
                fs::read_link(&p).expect("readlink").display()
            )
        } else if ft.is_file() {
            format!("file:{}", sha256(&fs::read(&p).expect("read")))
        } else {
            format!("special:{:o}:{}", md.mode() & libc::S_IFMT, md.rdev())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        let mut xattrs = Vec::new();
        if let Ok(names) = daemon::snapshots::fsutil::llistxattr(&p) {
            for n in names {
                if n.as_bytes().starts_with(b"trusted.") || n.as_bytes() == b"security.selinux" {
                    continue;
                }
                let v = daemon::snapshots::fsutil::lgetxattr(&p, &n)
                    .expect("getxattr")
                    .unwrap_or_default();
                xattrs.push(format!(
                    "{}={}",
                    n.to_string_lossy(),
                    String::from_utf8_lossy(&v)
                ));
            }
        }
        xattrs.sort();
        let t = if times && !ft.is_dir() {
            format!(" mtime={}", md.mtime())
        } else {
            String::new()
        };
        out.insert(
            name,
            format!(
                "{what} mode={mode:o} uid={} gid={} xattrs={xattrs:?}{t}",
                md.uid(),
                md.gid()
            ),
        );
    }
    out
}

pub fn assert_same_tree(expected: &Path, actual: &Path, times: bool, what: &str) {
    let (e, a) = (describe(expected, times), describe(actual, times));
    if e != a {
        let mut diff = String::new();
        for (k, v) in &e {
            match a.get(k) {
                None => diff.push_str(&format!("  missing {k}: {v}\n")),
                Some(av) if av != v => {
                    diff.push_str(&format!("  {k}: expected {v}\n  {k}:      got {av}\n"));
                }
                _ => {}
            }
        }
        for (k, v) in &a {
            if !e.contains_key(k) {
                diff.push_str(&format!("  extra {k}: {v}\n"));
            }
        }
        panic!("{what}: trees differ:\n{diff}");
    }
}

/// Write an OCI image layout at `layout` with `layers` (blob bytes, media type, diff_id),
/// tagged `ref_name` (also annotated with containerd's image name `image_name`).
pub fn oci_layout(
    layout: &Path,
    layers: &[(Vec<u8>, String, String)],
    ref_name: &str,
    image_name: &str,
) {
    fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir layout");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write");
    let put = |data: &[u8]| {
        let d = sha256(data);
        fs::write(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .expect("write blob");
        (d, data.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, media_type, diff_id) in layers {
        let (digest, size) = put(blob);
        descs.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
        diff_ids.push(diff_id.clone());
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                       "annotations": {"org.opencontainers.image.ref.name": ref_name,
                                       "io.containerd.image.name": image_name}}]
    });
    fs::write(layout.join("index.json"), index.to_string()).expect("write index");
}
