//! `images export`: writes images as an OCI image layout tar (containerd
//! `archive.Export`): `oci-layout`, `index.json` naming each image (containerd and OCI ref
//! name annotations), every reachable blob for the chosen platforms under
//! `blobs/sha256/`, and a Docker-compatible `manifest.json` unless skipped. Entries are
//! sorted by name, as containerd writes them, so the same content gives the same tar.

use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom, Write};

use super::{store, Descriptor, Index, PlatformMatcher, JSON_LIMIT};
use crate::client::Client;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] super::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("write archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("only manifests may be exported: {name} has media type {media_type}")]
    NotManifest { name: String, media_type: String },
    #[error("invalid digest {0:?}")]
    Digest(String),
}

fn blob_path(digest: &str) -> Result<String, Error> {
    match digest.split_once(':') {
        Some((alg, hex)) if !alg.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(format!("blobs/{alg}/{hex}"))
        }
        _ => Err(Error::Digest(digest.to_string())),
    }
}

/// docker/distribution `FamiliarString`: `docker.io/library/busybox:latest` → `busybox:latest`.
fn familiar(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
        None => name.to_string(),
    }
}

enum Record {
    Dir,
    Bytes(Vec<u8>),
    /// A blob of the content store, by digest.
    Blob(String),
}

/// Exports `images` (name, target) to `out`.
pub async fn export<W: Write>(
    client: &Client,
    images: &[(String, Descriptor)],
    platform: &PlatformMatcher,
    manifest_json: bool,
    out: W,
) -> Result<(), Error> {
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    records.insert(
        "oci-layout".into(),
        Record::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    let mut index_manifests = Vec::new();
    // manifest digest → (manifest descriptor, names) for manifest.json.
    let mut docker: Vec<(Descriptor, Vec<String>)> = Vec::new();
    for (name, target) in images {
        let mut d = target.clone();
        let mut ann = d.annotations.take().unwrap_or_default();
        ann.insert("io.containerd.image.name".into(), name.clone());
        let refname = name
            .rsplit_once('/')
            .map_or(name.as_str(), |(_, t)| t)
            .rsplit_once(':')
            .map_or(name.as_str(), |(_, t)| t);
        ann.insert(
            "org.opencontainers.image.ref.name".into(),
            refname.to_string(),
        );
        d.annotations = Some(ann);
        index_manifests.push(d);

        if !super::is_manifest(&target.media_type) && !super::is_index(&target.media_type) {
            return Err(Error::NotManifest {
                name: name.clone(),
                media_type: target.media_type.clone(),
            });
        }
        // Walk, keeping only children for the wanted platforms.
        let mut stack = vec![target.clone()];
        while let Some(desc) = stack.pop() {
            let mut children = super::children(client, &desc).await?;
            children.retain(|c| platform.matches(c.platform.as_ref()));
            records.insert(blob_path(&desc.digest)?, Record::Blob(desc.digest.clone()));
            stack.extend(children);
        }
        if let Ok((m, _)) = super::resolve_manifest(client, target, platform).await {
            match docker.iter_mut().find(|(d, _)| d.digest == m.digest) {
                Some((_, names)) => names.push(name.clone()),
                None => docker.push((m, vec![name.clone()])),
            }
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: None,
        manifests: index_manifests,
        annotations: None,
    };
    records.insert(
        "index.json".into(),
        Record::Bytes(serde_json::to_vec(&index).map_err(std::io::Error::other)?),
    );
    if manifest_json && !docker.is_empty() {
        let mut entries = Vec::new();
        for (m, names) in &docker {
            let data = store::read_blob(client, &m.digest, JSON_LIMIT).await?;
            let manifest: super::Manifest =
                serde_json::from_slice(&data).map_err(std::io::Error::other)?;
            let layers: Result<Vec<String>, Error> = manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect();
            let mut entry = serde_json::Map::new();
            entry.insert("Config".into(), blob_path(&manifest.config.digest)?.into());
            entry.insert(
                "RepoTags".into(),
                names.iter().map(|n| familiar(n)).collect::<Vec<_>>().into(),
            );
            entry.insert("Layers".into(), layers?.into());
            entries.push(serde_json::Value::Object(entry));
        }
        records.insert(
            "manifest.json".into(),
            Record::Bytes(serde_json::to_vec(&entries).map_err(std::io::Error::other)?),
        );
    }
    let algorithms: Vec<String> = records
        .keys()
        .filter_map(|k| k.strip_prefix("blobs/"))
        .filter_map(|k| k.split_once('/').map(|(a, _)| a.to_string()))
        .collect();
    if !algorithms.is_empty() {
        records.insert("blobs/".into(), Record::Dir);
        for a in algorithms {
            records.insert(format!("blobs/{a}/"), Record::Dir);
        }
    }

    let mut tar = tar::Builder::new(out);
    let mut written: HashMap<String, ()> = HashMap::new();
    for (name, record) in records {
        if written.insert(name.clone(), ()).is_some() {
            continue;
        }
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match record {
            Record::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_cksum();
                tar.append_data(&mut header, &name, std::io::empty())?;
            }
            Record::Bytes(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                // containerd writes the layout file read-only, like the blobs.
                header.set_mode(if name == "oci-layout" { 0o444 } else { 0o644 });
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, &name, data.as_slice())?;
            }
            Record::Blob(digest) => {
                // Spooled through a temporary file: layers can be far larger than memory.
                let mut spool = tempfile::tempfile()?;
                let n = store::copy_blob(client, &digest, &mut spool).await?;
                spool.seek(SeekFrom::Start(0))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o444);
                header.set_size(n);
                header.set_cksum();
                tar.append_data(&mut header, &name, spool)?;
            }
        }
    }
    tar.into_inner()?.flush()?;
    Ok(())
}
