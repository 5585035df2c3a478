//! runc shim options: decoding the `Any` containerd sends, and the files kept in the bundle.
//!
//! containerd passes `containerd.runc.v1.Options` (or, from old clients, the legacy
//! `containerd.linux.runc.CreateOptions`) on `Create` and on the `start` stdin. The shim writes
//! them to `options.json` and the binary name to `runtime` in the bundle, so that `delete`,
//! run by a fresh process after the shim died, calls the same runtime with the same root
//! (`runtime/v2/runc/container.go` `WriteOptions`/`WriteRuntime`).

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options as ProtoOptions;
use serde::{Deserialize, Serialize};

/// Default runc state root (containerd's `process.RuncRoot`); the namespace is appended.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

const OPTIONS_URL: &str = "containerd.runc.v1.Options";
const LEGACY_URL: &str = "containerd.linux.runc.CreateOptions";
const LEGACY_RUNTIME_URL: &str = "containerd.linux.runc.RuncOptions";

/// Errors decoding or persisting options.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("runtime options of type {url:?} are not understood by the runc shim (expected {OPTIONS_URL})")]
    UnknownType { url: String },
    #[error("decoding runtime options {url:?}: {source}")]
    Decode {
        url: String,
        #[source]
        source: containerd_shim_protos::protobuf::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The runc options the shim honours, in the JSON shape containerd's Go shim writes to
/// `options.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuncOptions {
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_pivot_root: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_new_keyring: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shim_cgroup: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub io_uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub io_gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binary_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub systemd_cgroup: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criu_image_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criu_work_path: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn url_is(url: &str, name: &str) -> bool {
    url == name || url.rsplit('/').next() == Some(name)
}

impl RuncOptions {
    /// Decodes the options `Any`; `None` or an empty type URL means defaults.
    pub fn from_any(any: Option<&Any>) -> Result<RuncOptions, OptionsError> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
            return Ok(RuncOptions::default());
        };
        let url = any.type_url.as_str();
        if url_is(url, OPTIONS_URL) {
            let o = ProtoOptions::parse_from_bytes(&any.value).map_err(|source| {
                OptionsError::Decode {
                    url: url.to_string(),
                    source,
                }
            })?;
            return Ok(RuncOptions {
                no_pivot_root: o.no_pivot_root,
                no_new_keyring: o.no_new_keyring,
                shim_cgroup: o.shim_cgroup,
                io_uid: o.io_uid,
                io_gid: o.io_gid,
                binary_name: o.binary_name,
                root: o.root,
                systemd_cgroup: o.systemd_cgroup,
                criu_image_path: o.criu_image_path,
                criu_work_path: o.criu_work_path,
            });
        }
        if url_is(url, LEGACY_URL) {
            return decode_legacy(&any.value).map_err(|source| OptionsError::Decode {
                url: url.to_string(),
                source,
            });
        }
        if url_is(url, LEGACY_RUNTIME_URL) {
            // RuncOptions{runtime=1, runtime_root=2, criu_path=3, systemd_cgroup=4}
            return decode_legacy_runtime(&any.value).map_err(|source| OptionsError::Decode {
                url: url.to_string(),
                source,
            });
        }
        Err(OptionsError::UnknownType {
            url: url.to_string(),
        })
    }

    /// The runc `--root` for a namespace: `<root or /run/containerd/runc>/<namespace>`.
    pub fn runc_root(&self, namespace: &str) -> PathBuf {
        let root = if self.root.is_empty() {
            RUNC_ROOT
        } else {
            &self.root
        };
        Path::new(root).join(namespace)
    }

    /// The OCI runtime binary (`runc` unless `BinaryName` says otherwise).
    pub fn binary(&self) -> &str {
        if self.binary_name.is_empty() {
            "runc"
        } else {
            &self.binary_name
        }
    }

    /// Writes `options.json` and `runtime` into the bundle.
    pub fn write(&self, bundle: &Path) -> Result<(), OptionsError> {
        let path = bundle.join("options.json");
        let data = serde_json::to_vec(self).map_err(|source| OptionsError::Parse {
            path: path.clone(),
            source,
        })?;
        write_private(&path, &data)?;
        write_private(&bundle.join("runtime"), self.binary_name.as_bytes())
    }

    /// Reads `options.json` (defaults when absent) and `runtime` back from a bundle.
    pub fn read(bundle: &Path) -> Result<RuncOptions, OptionsError> {
        let path = bundle.join("options.json");
        let mut opts = match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| OptionsError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RuncOptions::default(),
            Err(source) => return Err(OptionsError::Read { path, source }),
        };
        if opts.binary_name.is_empty() {
            if let Ok(rt) = std::fs::read_to_string(bundle.join("runtime")) {
                opts.binary_name = rt.trim().to_string();
            }
        }
        Ok(opts)
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), OptionsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|source| OptionsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Decodes the legacy `CreateOptions` by field number (the message is not in our protos):
/// no_pivot_root=1, no_new_keyring=8, shim_cgroup=9, io_uid=10, io_gid=11,
/// criu_work_path=12, criu_image_path=13; others are checkpoint flags we ignore here.
fn decode_legacy(data: &[u8]) -> Result<RuncOptions, containerd_shim_protos::protobuf::Error> {
    let mut o = RuncOptions::default();
    let mut is = CodedInputStream::from_bytes(data);
    while let Some(tag) = is.read_raw_tag_or_eof()? {
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 0) => o.no_pivot_root = is.read_bool()?,
            (8, 0) => o.no_new_keyring = is.read_bool()?,
            (9, 2) => o.shim_cgroup = is.read_string()?,
            (10, 0) => o.io_uid = is.read_uint32()?,
            (11, 0) => o.io_gid = is.read_uint32()?,
            (12, 2) => o.criu_work_path = is.read_string()?,
            (13, 2) => o.criu_image_path = is.read_string()?,
            _ => skip(&mut is, wire)?,
        }
    }
    Ok(o)
}

fn decode_legacy_runtime(
    data: &[u8],
) -> Result<RuncOptions, containerd_shim_protos::protobuf::Error> {
    let mut o = RuncOptions::default();
    let mut is = CodedInputStream::from_bytes(data);
    while let Some(tag) = is.read_raw_tag_or_eof()? {
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 2) => o.binary_name = is.read_string()?,
            (2, 2) => o.root = is.read_string()?,
            (4, 0) => o.systemd_cgroup = is.read_bool()?,
            _ => skip(&mut is, wire)?,
        }
    }
    Ok(o)
}

fn skip(
    is: &mut CodedInputStream<'_>,
    wire: u32,
) -> Result<(), containerd_shim_protos::protobuf::Error> {
    match wire {
        0 => {
            is.read_uint64()?;
        }
        1 => {
            is.read_fixed64()?;
        }
        2 => {
            is.read_bytes()?;
        }
        5 => {
            is.read_fixed32()?;
        }
        _ => {
            return Err(containerd_shim_protos::protobuf::Error::from(
                std::io::Error::other(format!("unsupported wire type {wire}")),
            ))
        }
    }
    Ok(())
}

/// Packs a message as an `Any` with containerd's bare type URL (as Go's `typeurl` does),
/// without touching protobuf reflection (which would build descriptors and cost memory).
pub fn pack_any<M: Message>(type_url: &str, msg: &M) -> Any {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = msg.write_to_bytes().unwrap_or_default();
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_runc_options() {
        let mut o = ProtoOptions::new();
        o.binary_name = "/usr/bin/crun".into();
        o.root = "/run/x".into();
        o.systemd_cgroup = true;
        o.io_uid = 7;
        let any = pack_any(OPTIONS_URL, &o);
        let d = RuncOptions::from_any(Some(&any)).expect("decode");
        assert_eq!(d.binary(), "/usr/bin/crun");
        assert_eq!(d.runc_root("ns"), PathBuf::from("/run/x/ns"));
        assert!(d.systemd_cgroup);
        assert_eq!(d.io_uid, 7);
    }

    #[test]
    fn decodes_legacy_create_options() {
        // no_pivot_root=true (1), shim_cgroup="/shim" (9), io_gid=5 (11)
        let bytes = [
            0x08, 0x01, 0x4a, 0x05, b'/', b's', b'h', b'i', b'm', 0x58, 0x05,
        ];
        let mut any = Any::new();
        any.type_url = format!("type.googleapis.com/{LEGACY_URL}");
        any.value = bytes.to_vec();
        let d = RuncOptions::from_any(Some(&any)).expect("decode");
        assert!(d.no_pivot_root);
        assert_eq!(d.shim_cgroup, "/shim");
        assert_eq!(d.io_gid, 5);
        assert_eq!(d.binary(), "runc");
    }

    #[test]
    fn unknown_type_is_named() {
        let mut any = Any::new();
        any.type_url = "example.com/Bogus".into();
        let err = RuncOptions::from_any(Some(&any)).expect_err("must fail");
        assert!(err.to_string().contains("example.com/Bogus"), "{err}");
    }

    #[test]
    fn bundle_files_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = RuncOptions {
            binary_name: "youki".into(),
            root: "/run/y".into(),
            ..Default::default()
        };
        o.write(dir.path()).expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("runtime")).expect("runtime"),
            "youki"
        );
        assert_eq!(RuncOptions::read(dir.path()).expect("read"), o);
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            RuncOptions::read(empty.path()).expect("read"),
            RuncOptions::default()
        );
    }
}
