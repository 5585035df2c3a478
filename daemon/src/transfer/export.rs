//! Export of images to a stream as an OCI image layout tar (containerd
//! `core/transfer/local/export.go` over `core/images/archive/exporter.go`): `oci-layout`,
//! `index.json` naming each image (containerd and OCI ref-name annotations), every blob
//! reachable for the chosen platforms under `blobs/<alg>/<hex>`, and a Docker-compatible
//! `manifest.json` unless skipped. Entries are sorted by name, as containerd writes them.
//! The tar is written on a blocking thread straight from the content store into the
//! stream, within the window the client grants; no blob is held in memory whole.

use super::oci::{self, Descriptor, Index, Manifest, Matcher, Platform};
use super::Transferrer;
use super::{blocking, naming, Error, ExportStream, ImageStore, Progress, ProgressEvent};
use crate::metadata::{Ctx, Db};
use std::collections::BTreeMap;
use std::io::Write;

fn blob_path(digest: &str) -> Result<String, Error> {
    match digest.split_once(':') {
        Some((alg, hex))
            if !alg.is_empty() && !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(format!("blobs/{alg}/{hex}"))
        }
        _ => Err(Error::Invalid(format!("invalid digest {digest:?}"))),
    }
}

/// docker/distribution `FamiliarString`: `docker.io/library/busybox:latest` → `busybox:latest`.
fn familiar(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
        None => name.to_string(),
    }
}

/// The tag (or digest) part of a name, for `org.opencontainers.image.ref.name`.
fn ref_name(name: &str) -> String {
    let last = name.rsplit_once('/').map_or(name, |(_, t)| t);
    if let Some((_, d)) = last.split_once('@') {
        return d.to_string();
    }
    last.rsplit_once(':').map_or(name, |(_, t)| t).to_string()
}

enum Record {
    Dir,
    Bytes(Vec<u8>),
    Blob(String),
}

/// Options of one export.
struct Opts {
    matcher: Matcher,
    manifest_json: bool,
    skip_non_distributable: bool,
}

/// Builds the archive's records for `images` (name, target).
fn records(
    db: &Db,
    ctx: &Ctx,
    images: &[(String, Descriptor)],
    o: &Opts,
) -> Result<BTreeMap<String, Record>, Error> {
    let mut records: BTreeMap<String, Record> = BTreeMap::new();
    records.insert(
        "oci-layout".into(),
        Record::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    let mut index_manifests = Vec::new();
    let mut docker: Vec<(Descriptor, Manifest, Vec<String>)> = Vec::new();
    for (name, target) in images {
        if !oci::is_manifest(&target.media_type) && !oci::is_index(&target.media_type) {
            return Err(Error::Invalid(format!(
                "only manifests may be exported: {name} has media type {}",
                target.media_type
            )));
        }
        let mut d = target.clone();
        let ann = d.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(oci::ANNOTATION_IMAGE_NAME.into(), name.clone());
        ann.insert(oci::ANNOTATION_REF_NAME.into(), ref_name(name));
        index_manifests.push(d);

        let mut stack = vec![target.clone()];
        while let Some(desc) = stack.pop() {
            if o.skip_non_distributable && oci::is_non_distributable(&desc.media_type) {
                continue;
            }
            let mut children = oci::children(db, ctx, &desc)?;
            children.retain(|c| o.matcher.matches(c.platform.as_ref()));
            records.insert(blob_path(&desc.digest)?, Record::Blob(desc.digest.clone()));
            stack.extend(children);
        }
        if let Ok((m, manifest)) = oci::resolve_manifest(db, ctx, target, &o.matcher) {
            match docker.iter_mut().find(|(d, _, _)| d.digest == m.digest) {
                Some((_, _, names)) => names.push(name.clone()),
                None => docker.push((m, manifest, vec![name.clone()])),
            }
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::MT_OCI_INDEX.to_string()),
        manifests: index_manifests,
        annotations: None,
    };
    records.insert("index.json".into(), Record::Bytes(to_json(&index)?));
    if o.manifest_json && !docker.is_empty() {
        let mut entries = Vec::new();
        for (_, manifest, names) in &docker {
            let layers = manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect::<Result<Vec<_>, _>>()?;
            entries.push(serde_json::json!({
                "Config": blob_path(&manifest.config.digest)?,
                "RepoTags": names.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
                "Layers": layers,
            }));
        }
        records.insert("manifest.json".into(), Record::Bytes(to_json(&entries)?));
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
    Ok(records)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|source| Error::Json {
        what: "export index".into(),
        source,
    })
}

fn write_tar(
    db: &Db,
    ctx: &Ctx,
    records: BTreeMap<String, Record>,
    out: impl Write,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(out);
    for (name, record) in records {
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
                tar.append_data(&mut header, &name, std::io::empty())
                    .map_err(Error::Export)?;
            }
            Record::Bytes(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if name == "oci-layout" { 0o444 } else { 0o644 });
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, &name, data.as_slice())
                    .map_err(Error::Export)?;
            }
            Record::Blob(digest) => {
                let d = crate::content::Digest::parse(&digest)?;
                let (blob, size) = db.content_open(ctx, &d)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o444);
                header.set_size(u64::try_from(size).unwrap_or(0));
                header.set_cksum();
                let blob = std::io::BufReader::with_capacity(1 << 20, blob);
                tar.append_data(&mut header, &name, blob)
                    .map_err(Error::Export)?;
            }
        }
    }
    tar.into_inner()
        .map_err(Error::Export)?
        .flush()
        .map_err(Error::Export)
}

/// The whole export.
pub async fn export(
    t: &Transferrer,
    ctx: Ctx,
    src: ImageStore,
    dst: ExportStream,
    progress: &Progress,
) -> Result<(), Error> {
    progress.send(ProgressEvent::status("Exporting"));
    let names = naming::lookup_names(&src)?;
    let mut images = Vec::new();
    for n in names {
        let img = t.images.get(ctx.clone(), n.clone()).await?;
        images.push((n, Descriptor::from_meta(&img.target)));
    }
    let o = Opts {
        matcher: if dst.all_platforms {
            Matcher::All
        } else if dst.platforms.is_empty() {
            Matcher::Any(vec![Platform::host()])
        } else {
            Matcher::Any(dst.platforms.clone())
        },
        manifest_json: !dst.skip_compatibility_manifest,
        skip_non_distributable: dst.skip_non_distributable,
    };
    let writer = super::stream::send_bytes(dst.stream);
    let db = t.db.clone();
    blocking(move || {
        let recs = records(&db, &ctx, &images, &o)?;
        write_tar(&db, &ctx, recs, writer)
    })
    .await?;
    progress.send(ProgressEvent::status("Completed export"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/me/x:1"), "me/x:1");
        assert_eq!(familiar("localhost:5000/x:1"), "localhost:5000/x:1");
        assert_eq!(ref_name("localhost:5000/x:1"), "1");
        assert_eq!(blob_path("sha256:ab").unwrap(), "blobs/sha256/ab");
        assert!(blob_path("sha256:../x").is_err());
    }
}
