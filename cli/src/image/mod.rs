//! Client-side image handling, as containerd's Go client does it for ctr: the OCI/Docker
//! JSON types we read, manifest resolution for a platform, content read/write helpers
//! (`store.rs`), archive import/export (`import.rs`, `export.rs`) and unpacking layers into
//! snapshots (`unpack.rs`).

pub mod export;
pub mod import;
pub mod distribution;
pub mod store;
pub mod unpack;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::client::Client;

pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Manifests and configs above this are refused (containerd bounds JSON reads; CVE-2023-25153).
pub const JSON_LIMIT: usize = 20 << 20;

/// What went wrong resolving an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("invalid JSON in {what} {digest}: {source}")]
    Json {
        what: &'static str,
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no match for platform {platform} in manifest {digest}: not found")]
    NoPlatform { platform: String, digest: String },
    #[error("unexpected media type {media_type} for {digest}")]
    MediaType { media_type: String, digest: String },
    #[error("mismatched image rootfs and manifest layers: {diff_ids} diff ids, {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
}

/// An OCI content descriptor (JSON form).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn to_proto(&self) -> protos::types::Descriptor {
        protos::types::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone().unwrap_or_default(),
        }
    }

    pub fn from_proto(d: &protos::types::Descriptor) -> Self {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            urls: None,
            annotations: (!d.annotations.is_empty()).then(|| d.annotations.clone()),
            platform: None,
        }
    }
}

/// An OCI platform.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// The platform this binary runs on (containerd `platforms.DefaultSpec`).
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", "v8"),
            "x86" => ("386", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            other => (other, ""),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            os_version: String::new(),
            variant: variant.to_string(),
        }
    }

    /// `platforms.Format`: os/arch[/variant].
    pub fn format(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }

    /// containerd's `platforms.Only(host)` for the common cases: same OS and architecture;
    /// arm64's variant may be omitted.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant == other.variant
                || (self.architecture == "arm64"
                    && (self.variant.is_empty() || other.variant.is_empty())))
    }
}

/// Which manifests of an index an operation considers.
#[derive(Debug, Clone)]
pub enum PlatformMatcher {
    All,
    Only(Platform),
}

impl PlatformMatcher {
    pub fn matches(&self, p: Option<&Platform>) -> bool {
        match (self, p) {
            (PlatformMatcher::All, _) | (_, None) => true,
            (PlatformMatcher::Only(want), Some(p)) => want.matches(p),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PlatformMatcher::All => "all".to_string(),
            PlatformMatcher::Only(p) => p.format(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config that `run` and unpack need.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub fn is_manifest(mt: &str) -> bool {
    mt == MT_DOCKER_MANIFEST || mt == MT_OCI_MANIFEST
}

pub fn is_index(mt: &str) -> bool {
    mt == MT_DOCKER_LIST || mt == MT_OCI_INDEX
}

pub fn is_config(mt: &str) -> bool {
    mt == MT_DOCKER_CONFIG || mt == MT_OCI_CONFIG
}

pub fn is_layer(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.")
        || mt.starts_with("application/vnd.docker.image.rootfs.")
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &str,
    data: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(data).map_err(|source| Error::Json {
        what,
        digest: digest.to_string(),
        source,
    })
}

/// The children of a descriptor (containerd `images.Children`): an index's manifests, a
/// manifest's config and layers, nothing for blobs.
pub async fn children(client: &Client, desc: &Descriptor) -> Result<Vec<Descriptor>, Error> {
    if is_manifest(&desc.media_type) {
        let data = store::read_blob(client, &desc.digest, JSON_LIMIT).await?;
        let m: Manifest = parse("manifest", &desc.digest, &data)?;
        let mut out = vec![m.config];
        out.extend(m.layers);
        Ok(out)
    } else if is_index(&desc.media_type) {
        let data = store::read_blob(client, &desc.digest, JSON_LIMIT).await?;
        let i: Index = parse("index", &desc.digest, &data)?;
        Ok(i.manifests)
    } else {
        Ok(Vec::new())
    }
}

/// containerd `images.Manifest`: the manifest of `target` for `platform` (an index's
/// manifests are filtered by their platform, or by their config's when they have none).
pub async fn resolve_manifest(
    client: &Client,
    target: &Descriptor,
    platform: &PlatformMatcher,
) -> Result<(Descriptor, Manifest), Error> {
    if is_manifest(&target.media_type) {
        let data = store::read_blob(client, &target.digest, JSON_LIMIT).await?;
        return Ok((target.clone(), parse("manifest", &target.digest, &data)?));
    }
    if !is_index(&target.media_type) {
        return Err(Error::MediaType {
            media_type: target.media_type.clone(),
            digest: target.digest.clone(),
        });
    }
    let data = store::read_blob(client, &target.digest, JSON_LIMIT).await?;
    let index: Index = parse("index", &target.digest, &data)?;
    for m in &index.manifests {
        if !platform.matches(m.platform.as_ref()) {
            continue;
        }
        if is_index(&m.media_type) {
            if let Ok(found) = Box::pin(resolve_manifest(client, m, platform)).await {
                return Ok(found);
            }
            continue;
        }
        if !is_manifest(&m.media_type) {
            continue;
        }
        let data = store::read_blob(client, &m.digest, JSON_LIMIT).await?;
        let manifest: Manifest = parse("manifest", &m.digest, &data)?;
        if m.platform.is_none() {
            let cfg = read_config(client, &manifest.config).await?;
            let p = Platform {
                architecture: cfg.architecture,
                os: cfg.os,
                ..Platform::default()
            };
            if !platform.matches(Some(&p)) {
                continue;
            }
        }
        return Ok((m.clone(), manifest));
    }
    Err(Error::NoPlatform {
        platform: platform.describe(),
        digest: target.digest.clone(),
    })
}

/// Reads and parses an image config blob.
pub async fn read_config(client: &Client, desc: &Descriptor) -> Result<ImageConfig, Error> {
    let data = store::read_blob(client, &desc.digest, JSON_LIMIT).await?;
    parse("image config", &desc.digest, &data)
}

/// containerd `images.Platforms`: every platform the image offers.
pub async fn platforms(client: &Client, target: &Descriptor) -> Result<Vec<Platform>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![target.clone()];
    while let Some(d) = stack.pop() {
        if let Some(p) = &d.platform {
            out.push(p.clone());
            continue;
        }
        if is_config(&d.media_type) {
            let cfg = read_config(client, &d).await?;
            out.push(Platform {
                architecture: cfg.architecture,
                os: cfg.os,
                ..Platform::default()
            });
            continue;
        }
        if is_manifest(&d.media_type) {
            let data = store::read_blob(client, &d.digest, JSON_LIMIT).await?;
            let m: Manifest = parse("manifest", &d.digest, &data)?;
            stack.push(m.config);
        } else if is_index(&d.media_type) {
            stack.extend(children(client, &d).await?);
        }
    }
    Ok(out)
}

/// containerd `Image.Size`: target, one matching manifest, its config and layers.
pub async fn size(client: &Client, target: &Descriptor, platform: &PlatformMatcher) -> i64 {
    let mut total = target.size;
    if is_index(&target.media_type) {
        if let Ok((m, manifest)) = resolve_manifest(client, target, platform).await {
            total += m.size + manifest.config.size;
            total += manifest.layers.iter().map(|l| l.size).sum::<i64>();
        }
    } else if let Ok(children) = children(client, target).await {
        total += children.iter().map(|c| c.size).sum::<i64>();
    }
    total
}

/// The OCI image-spec chain ID of a list of diff IDs:
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_two_layers_follows_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let ids = chain_ids(&[a.clone(), b]);
        assert_eq!(ids[0], a);
        use sha2::{Digest as _, Sha256};
        let want = hex::encode(Sha256::digest(b"sha256:aaaa sha256:bbbb"));
        assert_eq!(ids[1], format!("sha256:{want}"));
    }

    #[test]
    fn arm64_variant_is_optional() {
        let host = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: "v8".into(),
            ..Platform::default()
        };
        let img = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            ..Platform::default()
        };
        assert!(host.matches(&img));
        assert!(!Platform::host().matches(&Platform {
            architecture: "s390x-nope".into(),
            os: "linux".into(),
            ..Platform::default()
        }));
    }
}
