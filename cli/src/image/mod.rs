//! Client-side image handling, as containerd's Go client does it for ctr: the OCI/Docker
//! JSON types we read, manifest resolution for a platform, content read/write helpers
//! (`store.rs`), archive import/export (`import.rs`, `export.rs`) and unpacking layers into
//! snapshots (`unpack.rs`).

pub mod distribution;
pub mod export;
pub mod import;
pub mod store;
pub mod unpack;

use serde::Deserialize;

use crate::client::Client;

use berthd::transfer::oci::{self, BlobSource};
/// The OCI/Docker JSON types, media types and walks are the daemon's (one implementation,
/// shared with berthd's Transfer service); the CLI reads blobs over gRPC.
pub use berthd::transfer::oci::{
    is_config, is_index, is_manifest, Descriptor, Manifest, Matcher, Platform, RootFs, WalkError,
    JSON_LIMIT, MT_OCI_INDEX,
};

/// What went wrong resolving an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("mismatched image rootfs and manifest layers: {diff_ids} diff ids, {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
}

/// Which manifests of an index an operation considers: ctr's `--all-platforms` or one
/// `--platform` (default: this host).
#[derive(Debug, Clone)]
pub enum PlatformMatcher {
    All,
    Only(Platform),
}

impl PlatformMatcher {
    /// As the shared walks take it.
    pub fn matcher(&self) -> Matcher {
        match self {
            PlatformMatcher::All => Matcher::All,
            PlatformMatcher::Only(p) => Matcher::Any(vec![p.clone()]),
        }
    }

    pub fn matches(&self, p: Option<&Platform>) -> bool {
        match (self, p) {
            (PlatformMatcher::All, _) | (_, None) => true,
            (PlatformMatcher::Only(want), Some(p)) => want.matches(p),
        }
    }

    pub fn describe(&self) -> String {
        self.matcher().describe()
    }
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

/// berthd's content service over gRPC, as the shared walks' blob source.
struct Remote<'a>(&'a Client);

impl BlobSource for Remote<'_> {
    type Error = Error;
    async fn read_json_blob(
        &self,
        _what: &'static str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        Ok(store::read_blob(self.0, &desc.digest, JSON_LIMIT).await?)
    }
}

/// The children of a descriptor (containerd `images.Children`).
pub async fn children(client: &Client, desc: &Descriptor) -> Result<Vec<Descriptor>, Error> {
    oci::children_in(&Remote(client), desc).await
}

/// containerd `images.Manifest`: the manifest of `target` for `platform`.
pub async fn resolve_manifest(
    client: &Client,
    target: &Descriptor,
    platform: &PlatformMatcher,
) -> Result<(Descriptor, Manifest), Error> {
    oci::resolve_manifest_in(&Remote(client), target, &platform.matcher()).await
}

/// Reads and parses an image config blob.
pub async fn read_config(client: &Client, desc: &Descriptor) -> Result<ImageConfig, Error> {
    let data = store::read_blob(client, &desc.digest, JSON_LIMIT).await?;
    Ok(oci::parse_json("image config", &desc.digest, &data)?)
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
            let m: Manifest = oci::parse_json("manifest", &d.digest, &data)?;
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

pub use berthd::images::chain_ids;
