//! The OCI/Docker JSON the transfer operations read and write, and the walks over it that
//! containerd's `images` package provides: children of a descriptor, platform matching,
//! the GC reference labels a parent gets for its children (`images.SetChildrenLabels`),
//! and bounded reads of JSON blobs from the namespace's content (CVE-2023-25153).

use super::Error;
use crate::content::Digest;
use crate::metadata::{Ctx, Db, Descriptor as MDesc, Labels};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Docker schema 2 manifest.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker uncompressed layer.
pub const MT_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker gzip layer.
pub const MT_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker schema 1 (refused, as containerd 2 does).
pub const MT_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI manifest.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI index.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI config.
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Largest JSON document read from an archive or from content (containerd's `jsonLimit`
/// for archives; manifests are bounded by `images::MAX_JSON_SIZE` when read back).
pub const JSON_LIMIT: usize = 20 << 20;

/// `io.containerd.image.name` annotation.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// `org.opencontainers.image.ref.name` annotation.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Label of a compressed layer naming its uncompressed digest.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// An OCI platform (JSON form).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// OS (`linux`).
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v8`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// This host, as containerd's `platforms.DefaultSpec`.
    pub fn host() -> Self {
        let (os, arch) = crate::images::host_platform();
        Platform {
            architecture: arch.to_string(),
            os: os.to_string(),
            variant: if arch == "arm64" {
                "v8".into()
            } else {
                String::new()
            },
            ..Platform::default()
        }
    }

    /// `os/arch[/variant]`.
    pub fn format(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }

    /// From the API's platform message.
    pub fn from_proto(p: &protos::containerd::types::Platform) -> Self {
        Platform {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            os_version: p.os_version.clone(),
            os_features: Vec::new(),
            variant: p.variant.clone(),
        }
    }

    /// containerd's `platforms.Normalize` for the architectures berth meets: `x86_64` is
    /// `amd64` (variant `v1` dropped), `aarch64` is `arm64` (variant `v8` dropped), `arm`
    /// without a variant is `arm/v7`; the OS is lower case.
    #[must_use]
    pub fn normalize(mut self) -> Self {
        self.os = self.os.to_lowercase();
        match self.architecture.as_str() {
            "x86_64" | "x86-64" | "amd64" => {
                self.architecture = "amd64".into();
                if self.variant == "v1" {
                    self.variant.clear();
                }
            }
            "aarch64" | "arm64" => {
                self.architecture = "arm64".into();
                if matches!(self.variant.as_str(), "8" | "v8" | "v8.0") {
                    self.variant.clear();
                }
            }
            "armhf" => {
                self.architecture = "arm".into();
                self.variant = "v7".into();
            }
            "armel" => {
                self.architecture = "arm".into();
                self.variant = "v6".into();
            }
            "arm" => match self.variant.as_str() {
                "" | "7" => self.variant = "v7".into(),
                "5" | "6" | "8" => self.variant = format!("v{}", self.variant),
                _ => {}
            },
            _ => {}
        }
        self
    }

    /// containerd's platform matcher (`platforms.Only` without its fallbacks to older
    /// variants): OS, architecture and variant equal once both are normalised, so arm64's
    /// `v8` may be left out on either side while `amd64` does not take `amd64/v3`.
    pub fn matches(&self, other: &Platform) -> bool {
        let (a, b) = (self.clone().normalize(), other.clone().normalize());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

/// Which manifests of an index an operation considers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Every platform (`platforms.All`).
    All,
    /// Any of these.
    Any(Vec<Platform>),
}

impl Matcher {
    /// `platforms.All` for an empty list, else any of `ps`.
    pub fn of(ps: Vec<Platform>) -> Self {
        if ps.is_empty() {
            Matcher::All
        } else {
            Matcher::Any(ps)
        }
    }

    /// Whether a descriptor with this platform (none = platform-less) passes.
    pub fn matches(&self, p: Option<&Platform>) -> bool {
        match (self, p) {
            (Matcher::All, _) | (_, None) => true,
            (Matcher::Any(want), Some(p)) => want.iter().any(|w| w.matches(p)),
        }
    }

    /// The wanted platforms for messages: `all`, or `os/arch[/variant]`s joined by `, `.
    pub fn describe(&self) -> String {
        match self {
            Matcher::All => "all".into(),
            Matcher::Any(ps) => ps
                .iter()
                .map(Platform::format)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// An OCI content descriptor (JSON form).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size.
    pub size: i64,
    /// Alternate URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// As the metadata layer stores it.
    pub fn to_meta(&self) -> MDesc {
        MDesc {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self.annotations.clone().unwrap_or_default(),
        }
    }

    /// From an image record's target.
    pub fn from_meta(d: &MDesc) -> Self {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            urls: None,
            annotations: (!d.annotations.is_empty()).then(|| d.annotations.clone()),
            platform: None,
        }
    }

    /// As the containerd API carries it (clients of berthd, the `berth` CLI).
    pub fn to_proto(&self) -> protos::types::Descriptor {
        protos::types::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self
                .annotations
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// From the containerd API's descriptor.
    pub fn from_proto(d: &protos::types::Descriptor) -> Self {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            urls: None,
            annotations: (!d.annotations.is_empty()).then(|| {
                d.annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            platform: None,
        }
    }

    /// One annotation.
    pub fn annotation(&self, k: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(k).map(String::as_str)
    }
}

/// An OCI index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: i32,
    /// Media type, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An OCI or Docker schema 2 manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: i32,
    /// Media type, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config unpacking needs.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Config {
    /// Architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// Variant.
    #[serde(default)]
    pub variant: String,
    /// Layer diff ids.
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    /// Uncompressed layer digests.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Index or manifest list.
pub fn is_index(mt: &str) -> bool {
    mt == MT_DOCKER_LIST || mt == MT_OCI_INDEX
}

/// OCI or Docker manifest.
pub fn is_manifest(mt: &str) -> bool {
    mt == MT_DOCKER_MANIFEST || mt == MT_OCI_MANIFEST
}

/// Image config.
pub fn is_config(mt: &str) -> bool {
    mt == MT_DOCKER_CONFIG || mt == MT_OCI_CONFIG
}

/// A layer of any compression.
pub fn is_layer(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.")
        || mt.starts_with("application/vnd.docker.image.rootfs.")
}

/// Non-distributable (foreign) layers.
pub fn is_non_distributable(mt: &str) -> bool {
    mt.contains(".nondistributable.") || mt.contains(".foreign.")
}

/// sha256 digest string of `data`.
pub fn digest_of(data: &[u8]) -> String {
    Digest::from_bytes(data).to_string()
}

/// Reads a whole JSON blob of the namespace, refusing more than [`JSON_LIMIT`] bytes.
pub fn read_bounded(
    db: &Db,
    ctx: &Ctx,
    what: &'static str,
    digest: &str,
) -> Result<Vec<u8>, Error> {
    let d = Digest::parse(digest)?;
    let info = db.content_info(ctx, &d)?;
    if usize::try_from(info.size).unwrap_or(usize::MAX) > JSON_LIMIT {
        return Err(Error::TooLarge {
            what: what.to_string(),
            limit: JSON_LIMIT,
        });
    }
    Ok(db.content_read(ctx, &d, 0, 0)?)
}

/// Reads and parses a whole JSON blob of the namespace ([`read_bounded`]).
pub fn read_json<T: serde::de::DeserializeOwned>(
    db: &Db,
    ctx: &Ctx,
    what: &'static str,
    digest: &str,
) -> Result<T, Error> {
    let data = read_bounded(db, ctx, what, digest)?;
    Ok(parse_json(what, digest, &data)?)
}

/// What the shared walks below find wrong; each caller turns it into its own error.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A manifest, index or config that does not parse.
    #[error("invalid JSON in {what} {digest}: {source}")]
    Json {
        /// Which kind of document.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An index with no manifest for the wanted platforms.
    #[error("no match for platform {platform} in manifest {digest}: not found")]
    NoPlatform {
        /// Wanted platforms ([`Matcher::describe`]).
        platform: String,
        /// The index.
        digest: String,
    },
    /// A target that is neither a manifest nor an index.
    #[error("unexpected media type {media_type} for {digest}")]
    MediaType {
        /// The target's media type.
        media_type: String,
        /// The target.
        digest: String,
    },
}

impl From<WalkError> for Error {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Json {
                what,
                digest,
                source,
            } => Error::Json {
                what: format!("{what} {digest}"),
                source,
            },
            WalkError::NoPlatform { platform, digest } => Error::NoPlatform { digest, platform },
            e @ WalkError::MediaType { .. } => Error::NotFound(e.to_string()),
        }
    }
}

/// Where the walks read manifests, indexes and configs: the namespace's content here
/// ([`DbBlobs`]), the content service over gRPC in the `berth` CLI. The walks are written
/// once, async; the daemon's reads are synchronous, so its futures are ready at once.
pub trait BlobSource {
    /// The caller's error; the walks' own findings convert into it.
    type Error: From<WalkError>;
    /// The whole blob of a JSON document, bounded by [`JSON_LIMIT`].
    fn read_json_blob(
        &self,
        what: &'static str,
        desc: &Descriptor,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Self::Error>>;
}

/// Parses a JSON document read for `what` `digest`.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &str,
    data: &[u8],
) -> Result<T, WalkError> {
    serde_json::from_slice(data).map_err(|source| WalkError::Json {
        what,
        digest: digest.to_string(),
        source,
    })
}

/// containerd `images.Children` of an already read `body`: an index's manifests, a
/// manifest's config and layers, nothing for anything else.
pub fn parse_children(desc: &Descriptor, body: &[u8]) -> Result<Vec<Descriptor>, WalkError> {
    if is_manifest(&desc.media_type) {
        let m: Manifest = parse_json("manifest", &desc.digest, body)?;
        let mut out = vec![m.config];
        out.extend(m.layers);
        Ok(out)
    } else if is_index(&desc.media_type) {
        let i: Index = parse_json("index", &desc.digest, body)?;
        Ok(i.manifests)
    } else {
        Ok(Vec::new())
    }
}

async fn read_parsed<S: BlobSource, T: serde::de::DeserializeOwned>(
    src: &S,
    what: &'static str,
    desc: &Descriptor,
) -> Result<T, S::Error> {
    let data = src.read_json_blob(what, desc).await?;
    Ok(parse_json(what, &desc.digest, &data)?)
}

/// containerd `images.Children`, reading from `src` (blobs are not read).
pub async fn children_in<S: BlobSource>(
    src: &S,
    desc: &Descriptor,
) -> Result<Vec<Descriptor>, S::Error> {
    if !is_manifest(&desc.media_type) && !is_index(&desc.media_type) {
        return Ok(Vec::new());
    }
    let what = if is_index(&desc.media_type) {
        "index"
    } else {
        "manifest"
    };
    let body = src.read_json_blob(what, desc).await?;
    Ok(parse_children(desc, &body)?)
}

/// The platform a manifest's config declares.
pub async fn config_platform_in<S: BlobSource>(
    src: &S,
    manifest: &Manifest,
) -> Result<Platform, S::Error> {
    let c: Config = read_parsed(src, "image config", &manifest.config).await?;
    Ok(Platform {
        architecture: c.architecture,
        os: c.os,
        variant: c.variant,
        ..Platform::default()
    })
}

/// containerd `images.Manifest`: the manifest of `target` for `matcher`. A manifest
/// target is taken as it is; an index's entries are filtered by their platform (entries
/// without one by their config's), nested indexes searched in order, the first match wins.
pub async fn resolve_manifest_in<S: BlobSource>(
    src: &S,
    target: &Descriptor,
    matcher: &Matcher,
) -> Result<(Descriptor, Manifest), S::Error> {
    if is_manifest(&target.media_type) {
        let m = read_parsed(src, "manifest", target).await?;
        return Ok((target.clone(), m));
    }
    if !is_index(&target.media_type) {
        return Err(WalkError::MediaType {
            media_type: target.media_type.clone(),
            digest: target.digest.clone(),
        }
        .into());
    }
    let mut stack = vec![(target.clone(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        if is_manifest(&d.media_type) {
            let m: Manifest = read_parsed(src, "manifest", &d).await?;
            if d.platform.is_none() && matcher != &Matcher::All {
                let p = config_platform_in(src, &m).await?;
                if !matcher.matches(Some(&p)) {
                    continue;
                }
            }
            return Ok((d, m));
        }
        if is_index(&d.media_type) && depth < 4 {
            let i: Index = read_parsed(src, "index", &d).await?;
            for m in i.manifests.into_iter().rev() {
                if matcher.matches(m.platform.as_ref()) {
                    stack.push((m, depth + 1));
                }
            }
        }
    }
    Err(WalkError::NoPlatform {
        digest: target.digest.clone(),
        platform: matcher.describe(),
    }
    .into())
}

/// The namespace's content in berthd's metadata store, as a [`BlobSource`].
pub struct DbBlobs<'a> {
    /// The store.
    pub db: &'a Db,
    /// The namespace.
    pub ctx: &'a Ctx,
}

impl BlobSource for DbBlobs<'_> {
    type Error = Error;
    async fn read_json_blob(
        &self,
        what: &'static str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        read_bounded(self.db, self.ctx, what, &desc.digest)
    }
}

/// Runs a walk over [`DbBlobs`]: its reads never wait, so the future is ready at once.
fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// containerd `images.Children` over the namespace's content.
pub fn children(db: &Db, ctx: &Ctx, desc: &Descriptor) -> Result<Vec<Descriptor>, Error> {
    ready(children_in(&DbBlobs { db, ctx }, desc))
}

/// The platform a manifest's config declares.
pub fn config_platform(db: &Db, ctx: &Ctx, manifest: &Manifest) -> Result<Platform, Error> {
    ready(config_platform_in(&DbBlobs { db, ctx }, manifest))
}

/// containerd `images.Manifest` over the namespace's content ([`resolve_manifest_in`]).
pub fn resolve_manifest(
    db: &Db,
    ctx: &Ctx,
    target: &Descriptor,
    matcher: &Matcher,
) -> Result<(Descriptor, Manifest), Error> {
    ready(resolve_manifest_in(&DbBlobs { db, ctx }, target, matcher))
}

/// `images.ChildGCLabels`: the label key prefix a parent uses for a child.
fn gc_label_key(child: &Descriptor) -> (&'static str, bool) {
    if is_config(&child.media_type) {
        ("containerd.io/gc.ref.content.config", false)
    } else if is_manifest(&child.media_type) || is_index(&child.media_type) {
        ("containerd.io/gc.ref.content.m.", true)
    } else if is_layer(&child.media_type) {
        ("containerd.io/gc.ref.content.l.", true)
    } else {
        ("containerd.io/gc.ref.content.", true)
    }
}

/// `images.SetChildrenLabels`: the GC reference labels a parent gets for its children.
pub fn gc_labels(children: &[Descriptor]) -> Labels {
    let mut labels = HashMap::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for c in children {
        let (key, indexed) = gc_label_key(c);
        let n = counts.entry(key).or_insert(0);
        let k = if *n > 0 || indexed {
            format!("{key}{n}")
        } else {
            key.to_string()
        };
        *n += 1;
        labels.insert(k, c.digest.clone());
    }
    labels
}

/// Adds `labels` to a blob's labels (paths `labels.<k>`).
pub fn set_labels(db: &Db, ctx: &Ctx, digest: &str, labels: &Labels) -> Result<(), Error> {
    if labels.is_empty() {
        return Ok(());
    }
    let d = Digest::parse(digest)?;
    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    db.content_update(ctx, &d, labels, &paths)?;
    Ok(())
}

/// Writes a small JSON document into content (AlreadyExists is success).
pub fn write_json<T: Serialize>(
    db: &std::sync::Arc<Db>,
    ctx: &Ctx,
    value: &T,
) -> Result<(String, i64), Error> {
    let bytes = serde_json::to_vec(value).map_err(|source| Error::Json {
        what: "generated manifest".into(),
        source,
    })?;
    let digest = digest_of(&bytes);
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    write_blob(db, ctx, &format!("manifest-{digest}"), &bytes, &digest)?;
    Ok((digest, size))
}

/// Writes `bytes` as blob `digest` under ingest ref `r#ref` (AlreadyExists is success).
pub fn write_blob(
    db: &std::sync::Arc<Db>,
    ctx: &Ctx,
    r#ref: &str,
    bytes: &[u8],
    digest: &str,
) -> Result<(), Error> {
    use crate::errdefs::{HasKind, Kind};
    let d = Digest::parse(digest)?;
    let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
    let mut w = match db.content_writer(ctx, r#ref, size, Some(d.clone())) {
        Ok(w) => w,
        Err(e) if e.kind() == Kind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if w.status().offset > 0 {
        w.truncate()?;
    }
    w.write(bytes)?;
    match w.commit(size, Some(d), Labels::new()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == Kind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(mt: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: mt.into(),
            digest: format!("sha256:{}", hex::encode([n; 32])),
            size: 1,
            ..Descriptor::default()
        }
    }

    #[test]
    fn gc_labels_match_containerd_keys() {
        let l = gc_labels(&[
            d(MT_OCI_CONFIG, 1),
            d("application/vnd.oci.image.layer.v1.tar+gzip", 2),
            d("application/vnd.oci.image.layer.v1.tar+gzip", 3),
        ]);
        assert_eq!(l["containerd.io/gc.ref.content.config"], d("", 1).digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], d("", 2).digest);
        assert_eq!(l["containerd.io/gc.ref.content.l.1"], d("", 3).digest);
        let m = gc_labels(&[d(MT_OCI_MANIFEST, 4)]);
        assert_eq!(m["containerd.io/gc.ref.content.m.0"], d("", 4).digest);
    }

    #[test]
    fn platform_matching() {
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Platform::default()
        };
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: "v8".into(),
            ..Platform::default()
        };
        let arm_bare = Platform {
            variant: String::new(),
            ..arm.clone()
        };
        assert!(Matcher::All.matches(Some(&arm)));
        assert!(Matcher::of(vec![amd.clone()]).matches(None));
        assert!(!Matcher::of(vec![amd.clone()]).matches(Some(&arm)));
        assert!(Matcher::of(vec![arm]).matches(Some(&arm_bare)));
        assert_eq!(amd.format(), "linux/amd64");
        // Exact once normalised, as containerd's matcher: amd64 does not take amd64/v3,
        // arm without a variant is arm/v7.
        let v3 = Platform {
            variant: "v3".into(),
            ..amd.clone()
        };
        assert!(!amd.matches(&v3));
        let arm32 = |v: &str| Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: v.into(),
            ..Platform::default()
        };
        assert!(arm32("").matches(&arm32("v7")));
        assert!(!arm32("v6").matches(&arm32("v7")));
        assert_eq!(Matcher::All.describe(), "all");
        assert_eq!(Matcher::of(vec![amd]).describe(), "linux/amd64");
    }
}
