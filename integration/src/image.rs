//! Deterministic test images, built locally from `busybox-static` (there is no internet).
//!
//! Two images:
//! - [`TestImage::busybox`]: one layer with `/bin/busybox`, its applets as symlinks (from
//!   `busybox --list-full`), `/etc/passwd` and `/etc/group` with root and nobody, `/tmp` (1777).
//!   Config: `Cmd ["sh"]`, `Env PATH=…`. Named `docker.io/library/busybox:test`.
//! - [`TestImage::layers`]: busybox plus three layers exercising unpack: a whiteout
//!   (`.wh.name`), an opaque directory (`.wh..wh..opq`), a hardlink, symlinks, a file whose
//!   content and mode change in a later layer, a removed directory. [`LAYERS_EXPECTED`] is the
//!   resulting tree and [`LAYERS_ABSENT`] what must not exist after unpacking.
//!
//! Each can be written as an OCI image layout directory ([`TestImage::write_oci_layout`]), an
//! `image import`-able tar of that layout ([`TestImage::write_oci_archive`]) and a
//! docker-archive ([`TestImage::write_docker_archive`]). Every tar header has fixed mtime,
//! uid/gid and names, and the gzip header has no timestamp, so digests are identical across
//! runs on one machine (they depend on the busybox binary installed).
//!
//! Naming matches containerd's importer (`core/images/archive/importer.go`): it takes the
//! image name from the index annotation `io.containerd.image.name`, falling back to
//! `org.opencontainers.image.ref.name`; we set both (the latter to the tag, as containerd's
//! exporter does, which is also what `skopeo copy oci:<dir>:<tag>` looks up).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// Fixed mtime for every tar entry (2000-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 946_684_800;
/// `created` timestamp in image configs, matching [`FIXED_MTIME`].
pub const FIXED_CREATED: &str = "2000-01-01T00:00:00Z";
/// Name of the busybox test image.
pub const BUSYBOX_NAME: &str = "docker.io/library/busybox:test";
/// Name of the multi-layer test image.
pub const LAYERS_NAME: &str = "docker.io/library/berth-layers:test";

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// containerd's annotation for the full image name in an import archive's index.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation for the reference (tag) in an image layout's index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors building or writing test images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "reading {path} (install busybox-static: apt-get install -y busybox-static): {source}"
    )]
    ReadBusybox {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running `{cmd}` (apt-get install -y busybox-static): {detail}")]
    BusyboxList { cmd: String, detail: String },
    #[error("building tar entry {path}: {source}")]
    Tar {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding JSON for {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// Path of the static busybox the images are built from.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// A content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }

    /// Size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The hex part of the digest.
    #[must_use]
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    /// An OCI descriptor (`mediaType`, `digest`, `size`) for this blob.
    #[must_use]
    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size()})
    }
}

/// One image layer: the uncompressed tar (whose digest is the diff ID) and its gzip blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The gzip-compressed blob as stored in the layout/registry.
    pub blob: Blob,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: String,
}

/// A complete single-platform test image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    /// Full reference, e.g. `docker.io/library/busybox:test`.
    pub name: String,
    pub layers: Vec<Layer>,
    pub config: Blob,
    pub manifest: Blob,
}

/// The `sha256:<hex>` digest of `data`.
#[must_use]
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// OCI architecture name of this machine.
#[must_use]
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Deterministic tar writer: fixed mtime, root ownership, entries in the order given.
struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        Self { b }
    }

    fn header(kind: EntryType, mode: u32, size: u64, uid: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(FIXED_MTIME);
        h.set_uid(uid);
        h.set_gid(uid);
        h
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        let mut h = Self::header(EntryType::Directory, mode, 0, 0);
        self.b
            .append_data(
                &mut h,
                format!("{}/", path.trim_end_matches('/')),
                std::io::empty(),
            )
            .map_err(|source| tar_err(path, source))
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), ImageError> {
        self.file_owned(path, mode, data, 0)
    }

    fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        data: &[u8],
        uid: u64,
    ) -> Result<(), ImageError> {
        let mut h = Self::header(EntryType::Regular, mode, data.len() as u64, uid);
        self.b
            .append_data(&mut h, path, data)
            .map_err(|source| tar_err(path, source))
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let mut h = Self::header(EntryType::Symlink, 0o777, 0, 0);
        self.b
            .append_link(&mut h, path, target)
            .map_err(|source| tar_err(path, source))
    }

    fn hardlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        let mut h = Self::header(EntryType::Link, 0o644, 0, 0);
        self.b
            .append_link(&mut h, path, target)
            .map_err(|source| tar_err(path, source))
    }

    fn finish(self) -> Result<Vec<u8>, ImageError> {
        self.b
            .into_inner()
            .map_err(|source| tar_err("<end>", source))
    }
}

fn tar_err(path: &str, source: std::io::Error) -> ImageError {
    ImageError::Tar {
        path: path.to_string(),
        source,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // GzBuilder writes mtime 0 and no file name: the output depends only on the input.
    let mut enc: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn layer_from_tar(tar: Vec<u8>) -> Layer {
    let diff_id = sha256_digest(&tar);
    Layer {
        blob: Blob::new(MEDIA_TYPE_LAYER_GZIP, gzip(&tar)),
        tar,
        diff_id,
    }
}

/// The busybox rootfs layer tar.
fn busybox_layer_tar() -> Result<Vec<u8>, ImageError> {
    let bin = fs::read(BUSYBOX_PATH).map_err(|source| ImageError::ReadBusybox {
        path: PathBuf::from(BUSYBOX_PATH),
        source,
    })?;
    let out = std::process::Command::new(BUSYBOX_PATH)
        .arg("--list-full")
        .output()
        .map_err(|e| ImageError::BusyboxList {
            cmd: format!("{BUSYBOX_PATH} --list-full"),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ImageError::BusyboxList {
            cmd: format!("{BUSYBOX_PATH} --list-full"),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != "bin/busybox")
        .collect();
    applets.sort();
    applets.dedup();

    let mut t = TarBuilder::new();
    for (d, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sbin", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
    ] {
        t.dir(d, mode)?;
    }
    t.file("bin/busybox", 0o755, &bin)?;
    for a in &applets {
        t.symlink(a, BUSYBOX_PATH)?;
    }
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    t.file("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n")?;
    t.finish()
}

/// Layer 2 of the layers image: base content that later layers modify.
fn layers_base_tar() -> Result<Vec<u8>, ImageError> {
    let mut t = TarBuilder::new();
    t.dir("data", 0o755)?;
    t.file("data/keep", 0o644, b"keep v1\n")?;
    t.file("data/remove-me", 0o644, b"to be whited out\n")?;
    t.dir("data/opaque", 0o755)?;
    t.file("data/opaque/old1", 0o644, b"old1\n")?;
    t.file("data/opaque/old2", 0o644, b"old2\n")?;
    t.dir("data/gone", 0o755)?;
    t.dir("data/gone/sub", 0o755)?;
    t.file("data/gone/sub/file", 0o644, b"in a removed dir\n")?;
    t.file("data/hardlink-src", 0o644, b"shared inode\n")?;
    t.hardlink("data/hardlink", "data/hardlink-src")?;
    t.symlink("data/rel-link", "keep")?;
    t.finish()
}

/// Layer 3: a whiteout, an opaque directory, a modified file.
fn layers_change_tar() -> Result<Vec<u8>, ImageError> {
    let mut t = TarBuilder::new();
    t.dir("data", 0o755)?;
    t.file("data/.wh.remove-me", 0o644, b"")?;
    t.file("data/keep", 0o600, b"keep v2\n")?;
    t.dir("data/opaque", 0o755)?;
    t.file("data/opaque/.wh..wh..opq", 0o644, b"")?;
    t.file("data/opaque/new", 0o644, b"new\n")?;
    t.file("data/added", 0o644, b"added in layer 3\n")?;
    t.finish()
}

/// Layer 4: removes a whole directory, adds an absolute symlink and a file owned by nobody.
fn layers_final_tar() -> Result<Vec<u8>, ImageError> {
    let mut t = TarBuilder::new();
    t.dir("data", 0o755)?;
    t.file("data/.wh.gone", 0o644, b"")?;
    t.symlink("data/abs-link", "/data/added")?;
    t.file_owned("data/nobody-owned", 0o640, b"owned by 65534\n", 65534)?;
    t.finish()
}

/// Kind and content of an entry expected after unpacking [`TestImage::layers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Regular file: content, permission bits, uid.
    File(&'static str, u32, u32),
    Dir,
    /// Symlink and its target.
    Symlink(&'static str),
}

/// The `/data` tree after unpacking every layer of [`TestImage::layers`] in order.
/// `data/hardlink` and `data/hardlink-src` must also share an inode.
pub const LAYERS_EXPECTED: &[(&str, Expected)] = &[
    ("data", Expected::Dir),
    ("data/keep", Expected::File("keep v2\n", 0o600, 0)),
    ("data/opaque", Expected::Dir),
    ("data/opaque/new", Expected::File("new\n", 0o644, 0)),
    ("data/added", Expected::File("added in layer 3\n", 0o644, 0)),
    (
        "data/hardlink-src",
        Expected::File("shared inode\n", 0o644, 0),
    ),
    ("data/hardlink", Expected::File("shared inode\n", 0o644, 0)),
    ("data/rel-link", Expected::Symlink("keep")),
    ("data/abs-link", Expected::Symlink("/data/added")),
    (
        "data/nobody-owned",
        Expected::File("owned by 65534\n", 0o640, 65534),
    ),
];

/// Paths that must NOT exist after unpacking [`TestImage::layers`] (whited out, hidden by an
/// opaque directory, or whiteout markers themselves).
pub const LAYERS_ABSENT: &[&str] = &[
    "data/remove-me",
    "data/.wh.remove-me",
    "data/opaque/old1",
    "data/opaque/old2",
    "data/opaque/.wh..wh..opq",
    "data/gone",
    "data/.wh.gone",
];

fn build_image(name: &str, tars: Vec<Vec<u8>>) -> Result<TestImage, ImageError> {
    let layers: Vec<Layer> = tars.into_iter().map(layer_from_tar).collect();
    let config = json!({
        "created": FIXED_CREATED,
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": [DEFAULT_PATH],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().enumerate().map(|(i, _)| json!({
            "created": FIXED_CREATED,
            "created_by": format!("berth integration::image layer {i}"),
        })).collect::<Vec<_>>(),
    });
    let config = Blob::new(
        MEDIA_TYPE_CONFIG,
        serde_json::to_vec(&config).map_err(|source| ImageError::Json {
            what: "config",
            source,
        })?,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
    });
    let manifest = Blob::new(
        MEDIA_TYPE_MANIFEST,
        serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
            what: "manifest",
            source,
        })?,
    );
    Ok(TestImage {
        name: name.to_string(),
        layers,
        config,
        manifest,
    })
}

static BUSYBOX: OnceLock<Result<TestImage, String>> = OnceLock::new();
static LAYERS: OnceLock<Result<TestImage, String>> = OnceLock::new();

impl TestImage {
    /// The busybox image (built once per process, then cloned).
    ///
    /// # Errors
    /// busybox-static missing or not runnable.
    pub fn busybox() -> Result<Self, ImageError> {
        BUSYBOX
            .get_or_init(|| Self::build_busybox().map_err(|e| e.to_string()))
            .clone()
            .map_err(|detail| ImageError::BusyboxList {
                cmd: "building the busybox image".into(),
                detail,
            })
    }

    /// Builds the busybox image from scratch (no cache; used to check determinism).
    ///
    /// # Errors
    /// busybox-static missing or not runnable.
    pub fn build_busybox() -> Result<Self, ImageError> {
        build_image(BUSYBOX_NAME, vec![busybox_layer_tar()?])
    }

    /// The multi-layer unpack test image: busybox, then three layers (see module docs).
    ///
    /// # Errors
    /// busybox-static missing or not runnable.
    pub fn layers() -> Result<Self, ImageError> {
        LAYERS
            .get_or_init(|| Self::build_layers().map_err(|e| e.to_string()))
            .clone()
            .map_err(|detail| ImageError::BusyboxList {
                cmd: "building the layers image".into(),
                detail,
            })
    }

    /// Builds the multi-layer image from scratch.
    ///
    /// # Errors
    /// busybox-static missing or not runnable.
    pub fn build_layers() -> Result<Self, ImageError> {
        build_image(
            LAYERS_NAME,
            vec![
                busybox_layer_tar()?,
                layers_base_tar()?,
                layers_change_tar()?,
                layers_final_tar()?,
            ],
        )
    }

    /// Manifest digest (`sha256:…`): what `ctr images ls` and registries show.
    #[must_use]
    pub fn manifest_digest(&self) -> &str {
        &self.manifest.digest
    }

    /// Config digest: the image ID.
    #[must_use]
    pub fn config_digest(&self) -> &str {
        &self.config.digest
    }

    /// Compressed layer blob digests, in order.
    #[must_use]
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.blob.digest.clone()).collect()
    }

    /// Uncompressed layer digests (config `rootfs.diff_ids`), in order.
    #[must_use]
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The tag part of the name (`test` for `docker.io/library/busybox:test`).
    #[must_use]
    pub fn tag(&self) -> &str {
        self.name.rsplit_once(':').map_or("latest", |(_, t)| t)
    }

    /// The repository part without registry and tag (`library/busybox`).
    #[must_use]
    pub fn repository(&self) -> &str {
        let without_tag = self
            .name
            .rsplit_once(':')
            .map_or(self.name.as_str(), |(r, _)| r);
        without_tag.split_once('/').map_or(without_tag, |(_, r)| r)
    }

    /// Docker's short name (`busybox:test`), as used in docker-archive `RepoTags`.
    #[must_use]
    pub fn familiar_name(&self) -> String {
        format!(
            "{}:{}",
            self.repository().trim_start_matches("library/"),
            self.tag()
        )
    }

    /// All blobs: config, layers, manifest.
    #[must_use]
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut v = vec![&self.config, &self.manifest];
        v.extend(self.layers.iter().map(|l| &l.blob));
        v
    }

    /// The layout's `index.json` bytes.
    ///
    /// # Panics
    /// Never in practice (serializing a `json!` value cannot fail).
    #[must_use]
    pub fn index_json(&self) -> Vec<u8> {
        let mut d = self.manifest.descriptor();
        d["platform"] = json!({"architecture": oci_arch(), "os": "linux"});
        d["annotations"] = json!({
            ANNOTATION_IMAGE_NAME: self.name,
            ANNOTATION_REF_NAME: self.tag(),
        });
        let index = json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": [d]});
        serde_json::to_vec(&index).unwrap_or_default()
    }

    /// Layout files as (relative path, content), in a fixed order.
    fn layout_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for b in self.blobs() {
            files.insert(format!("blobs/sha256/{}", b.hex()), b.data.clone());
        }
        let mut out = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), self.index_json()),
        ];
        out.extend(files);
        out
    }

    /// Writes an OCI image layout directory at `dir` (created if missing). Usable with
    /// `skopeo copy oci:<dir>:<tag>` and `umoci`.
    ///
    /// # Errors
    /// Filesystem errors, with the path.
    pub fn write_oci_layout(&self, dir: &Path) -> Result<(), ImageError> {
        fs::create_dir_all(dir.join("blobs/sha256")).map_err(|source| ImageError::Write {
            path: dir.join("blobs/sha256"),
            source,
        })?;
        for (rel, data) in self.layout_files() {
            let p = dir.join(&rel);
            fs::write(&p, data).map_err(|source| ImageError::Write { path: p, source })?;
        }
        Ok(())
    }

    /// The OCI layout as a tar (what `ctr images import` and `docker load` read).
    ///
    /// # Errors
    /// Tar encoding errors.
    pub fn oci_archive(&self) -> Result<Vec<u8>, ImageError> {
        let mut t = TarBuilder::new();
        t.dir("blobs", 0o755)?;
        t.dir("blobs/sha256", 0o755)?;
        for (rel, data) in self.layout_files() {
            t.file(&rel, 0o644, &data)?;
        }
        t.finish()
    }

    /// Writes [`TestImage::oci_archive`] to `path`.
    ///
    /// # Errors
    /// Filesystem errors, with the path.
    pub fn write_oci_archive(&self, path: &Path) -> Result<(), ImageError> {
        let data = self.oci_archive()?;
        fs::write(path, data).map_err(|source| ImageError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The image as a docker-archive (`docker save` format: `manifest.json`, `repositories`,
    /// `<config hex>.json`, `<diff id hex>/layer.tar` uncompressed).
    ///
    /// # Errors
    /// Tar or JSON encoding errors.
    pub fn docker_archive(&self) -> Result<Vec<u8>, ImageError> {
        let config_name = format!("{}.json", self.config.hex());
        let layer_names: Vec<String> = self
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:")))
            .collect();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [self.familiar_name()],
            "Layers": layer_names,
        }]);
        let top = self
            .layers
            .last()
            .map(|l| l.diff_id.trim_start_matches("sha256:").to_string())
            .unwrap_or_default();
        let familiar = self.familiar_name();
        let (repo, tag) = familiar
            .rsplit_once(':')
            .unwrap_or((familiar.as_str(), "latest"));
        let repositories = json!({ repo: { tag: top } });
        let mut t = TarBuilder::new();
        for (l, name) in self.layers.iter().zip(&layer_names) {
            let dir = name.trim_end_matches("/layer.tar");
            t.dir(dir, 0o755)?;
            t.file(name, 0o644, &l.tar)?;
        }
        t.file(&config_name, 0o644, &self.config.data)?;
        t.file(
            "manifest.json",
            0o644,
            &serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
                what: "manifest.json",
                source,
            })?,
        )?;
        t.file(
            "repositories",
            0o644,
            &serde_json::to_vec(&repositories).map_err(|source| ImageError::Json {
                what: "repositories",
                source,
            })?,
        )?;
        t.finish()
    }

    /// Writes [`TestImage::docker_archive`] to `path`.
    ///
    /// # Errors
    /// Filesystem errors, with the path.
    pub fn write_docker_archive(&self, path: &Path) -> Result<(), ImageError> {
        let data = self.docker_archive()?;
        fs::write(path, data).map_err(|source| ImageError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Unpacks every layer, in order, into `rootfs` applying whiteouts (`.wh.` files and
    /// opaque directories) — a simple reference unpacker for tests and the interim quickstart,
    /// not the daemon's implementation.
    ///
    /// # Errors
    /// Filesystem errors, with the path.
    pub fn unpack_to(&self, rootfs: &Path) -> Result<(), ImageError> {
        for l in &self.layers {
            unpack_layer(&l.tar, rootfs)?;
        }
        Ok(())
    }

    /// A JSON summary of names and digests (what `berth-testimage` writes as `digests.json`).
    #[must_use]
    pub fn digests_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "manifest": self.manifest_digest(),
            "manifest_size": self.manifest.size(),
            "config": self.config_digest(),
            "layers": self.layer_digests(),
            "diff_ids": self.diff_ids(),
        })
    }
}

/// Unpacks the first image of an OCI layout directory (as written by
/// [`TestImage::write_oci_layout`] or skopeo) into `rootfs`, verifying every blob's digest.
/// A reference unpacker for scripts and tests, not the daemon's implementation.
///
/// # Errors
/// Missing or malformed `index.json`/manifest, a blob whose content does not match its
/// digest, or filesystem errors.
pub fn unpack_oci_layout(layout: &Path, rootfs: &Path) -> Result<(), ImageError> {
    let read_json = |p: PathBuf| -> Result<serde_json::Value, ImageError> {
        let data = fs::read(&p).map_err(|source| ImageError::Write {
            path: p.clone(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| ImageError::Json {
            what: "OCI layout JSON",
            source,
        })
    };
    let read_blob = |digest: &str| -> Result<Vec<u8>, ImageError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let p = layout.join("blobs/sha256").join(hex);
        let data = fs::read(&p).map_err(|source| ImageError::Write {
            path: p.clone(),
            source,
        })?;
        if sha256_digest(&data) != digest {
            return Err(ImageError::Write {
                path: p,
                source: std::io::Error::other(format!("content does not match digest {digest}")),
            });
        }
        Ok(data)
    };
    let index = read_json(layout.join("index.json"))?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(&read_blob(&manifest_digest)?)
        .map_err(|source| ImageError::Json {
            what: "manifest",
            source,
        })?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    fs::create_dir_all(rootfs).map_err(|source| ImageError::Write {
        path: rootfs.to_path_buf(),
        source,
    })?;
    for l in layers {
        let digest = l["digest"].as_str().unwrap_or_default();
        let blob = read_blob(digest)?;
        let tar = if l["mediaType"].as_str().is_some_and(|m| m.ends_with("gzip")) {
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(blob.as_slice()),
                &mut out,
            )
            .map_err(|source| ImageError::Write {
                path: layout.join(digest),
                source,
            })?;
            out
        } else {
            blob
        };
        unpack_layer(&tar, rootfs)?;
    }
    Ok(())
}

/// Applies one uncompressed layer tar on top of `rootfs`.
fn unpack_layer(tar_bytes: &[u8], rootfs: &Path) -> Result<(), ImageError> {
    let werr = |path: &Path, source: std::io::Error| ImageError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(tar_bytes);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(|e| werr(rootfs, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| werr(rootfs, e))?;
        let rel = entry.path().map_err(|e| werr(rootfs, e))?.into_owned();
        // Whiteouts are applied by path below, outside tar's own traversal checks: refuse
        // anything that could leave the rootfs.
        if rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        }) {
            return Err(werr(
                &rootfs.join(&rel),
                std::io::Error::other("layer entry escapes the rootfs (absolute or `..` path)"),
            ));
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = rootfs.join(rel.parent().unwrap_or_else(|| Path::new("")));
        if name == ".wh..wh..opq" {
            if let Ok(rd) = fs::read_dir(&parent) {
                for e in rd.filter_map(Result::ok) {
                    remove_any(&e.path()).map_err(|s| werr(&e.path(), s))?;
                }
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            let victim = parent.join(target);
            remove_any(&victim).map_err(|s| werr(&victim, s))?;
            continue;
        }
        let dest = rootfs.join(&rel);
        if entry.header().entry_type() != EntryType::Directory {
            remove_any(&dest).map_err(|s| werr(&dest, s))?;
        }
        entry.unpack_in(rootfs).map_err(|e| werr(&dest, e))?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_references() {
        let img = TestImage {
            name: BUSYBOX_NAME.into(),
            layers: vec![],
            config: Blob::new(MEDIA_TYPE_CONFIG, vec![]),
            manifest: Blob::new(MEDIA_TYPE_MANIFEST, vec![]),
        };
        assert_eq!(img.tag(), "test");
        assert_eq!(img.repository(), "library/busybox");
        assert_eq!(img.familiar_name(), "busybox:test");
    }

    #[test]
    fn unpacker_refuses_entries_escaping_the_rootfs() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        // `set_path` refuses `..`, so write the raw name bytes as a hostile layer would.
        h.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"../.wh.victim");
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("append");
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").expect("victim");
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).expect("rootfs");
        let err = unpack_layer(&tar, &rootfs).expect_err("must refuse");
        assert!(err.to_string().contains("escapes"), "{err}");
        assert!(victim.exists());
    }

    #[test]
    fn gzip_has_no_timestamp() {
        let a = gzip(b"hello");
        assert_eq!(&a[4..8], &[0, 0, 0, 0], "gzip MTIME must be zero");
        assert_eq!(a, gzip(b"hello"));
    }
}
