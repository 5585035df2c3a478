//! Runtime configuration from config.toml.
//!
//! A named runtime maps a name that containers carry (`ctr run --runtime <name>`) to a shim
//! (`runtime_type`, or an explicit `runtime_path`) plus default runc options (`options`, e.g.
//! `BinaryName = "youki"`), the shape of containerd's CRI `runtimes.<name>` tables. The
//! legacy `[plugins.linux]` table configures runtime v1 (`io.containerd.runtime.v1.linux`).
//! These structs are tolerant (containerd's users bring their own config.toml); `config.rs`
//! embeds them.

use std::collections::BTreeMap;

use prost::Message;
use serde::Deserialize;

use super::{Any, Error, Result};

/// One `[…runtimes.<name>]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RuntimeConfig {
    /// The runtime v2 name that selects the shim, e.g. `io.containerd.runc.v2`.
    pub runtime_type: String,
    /// Absolute path of the shim binary; wins over `runtime_type` resolution.
    pub runtime_path: String,
    /// runc shim options (`containerd.runc.v1.Options` field names as containerd spells
    /// them in TOML: `BinaryName`, `Root`, `SystemdCgroup`, `NoPivotRoot`, `NoNewKeyring`,
    /// `ShimCgroup`, `IoUid`, `IoGid`, `CriuImagePath`, `CriuWorkPath`).
    pub options: BTreeMap<String, toml::Value>,
}

/// The legacy `[plugins.linux]` table of containerd 1.x (runtime v1).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct LinuxV1Config {
    /// The v1 shim binary (`containerd-shim`).
    pub shim: String,
    /// The OCI runtime binary (`runc`).
    pub runtime: String,
    /// runc's `--root`.
    pub runtime_root: String,
    /// Run without a shim (not supported by berthd).
    pub no_shim: bool,
    /// Send the shim's output to the daemon log.
    pub shim_debug: bool,
}

impl Default for LinuxV1Config {
    fn default() -> Self {
        LinuxV1Config {
            shim: "containerd-shim".into(),
            runtime: "runc".into(),
            runtime_root: String::new(),
            no_shim: false,
            shim_debug: false,
        }
    }
}

impl RuntimeConfig {
    /// The configured options as a `containerd.runc.v1.Options` `Any`, or `None` when no
    /// options are configured. Unknown keys are an error naming the key.
    pub fn runc_options(&self, name: &str) -> Result<Option<Any>> {
        if self.options.is_empty() {
            return Ok(None);
        }
        let mut o = protos::runc_options::Options::default();
        for (key, value) in &self.options {
            let bad = || Error::InvalidArgument {
                what: format!("runtime {name:?}: option {key} has the wrong type ({value})"),
            };
            let s = || value.as_str().map(str::to_string).ok_or_else(bad);
            let b = || value.as_bool().ok_or_else(bad);
            let u = || {
                value
                    .as_integer()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(bad)
            };
            match key.as_str() {
                "BinaryName" => o.binary_name = s()?,
                "Root" => o.root = s()?,
                "SystemdCgroup" => o.systemd_cgroup = b()?,
                "NoPivotRoot" => o.no_pivot_root = b()?,
                "NoNewKeyring" => o.no_new_keyring = b()?,
                "ShimCgroup" => o.shim_cgroup = s()?,
                "IoUid" => o.io_uid = u()?,
                "IoGid" => o.io_gid = u()?,
                "CriuImagePath" => o.criu_image_path = s()?,
                "CriuWorkPath" => o.criu_work_path = s()?,
                "CriuPath" | "TypeUrl" => {}
                other => {
                    return Err(Error::InvalidArgument {
                        what: format!("runtime {name:?}: unknown runc option {other:?}"),
                    })
                }
            }
        }
        Ok(Some(Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: o.encode_to_vec(),
        }))
    }
}

/// Type URL of runc shim options (containerd registers it under this bare name).
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_name_option_encodes_as_runc_options() {
        let cfg: RuntimeConfig = toml::from_str(
            "runtime_type = \"io.containerd.runc.v2\"\n[options]\nBinaryName = \"youki\"\nSystemdCgroup = false\n",
        )
        .expect("parse");
        let any = cfg.runc_options("youki").expect("options").expect("some");
        assert_eq!(any.type_url, RUNC_OPTIONS_TYPE);
        let o = protos::runc_options::Options::decode(any.value.as_slice()).expect("decode");
        assert_eq!(o.binary_name, "youki");
    }

    #[test]
    fn unknown_option_is_rejected_with_its_name() {
        let cfg: RuntimeConfig = toml::from_str("[options]\nBinaryNam = \"x\"\n").expect("parse");
        let err = cfg.runc_options("r").expect_err("must fail").to_string();
        assert!(err.contains("BinaryNam"), "{err}");
    }
}
