//! Unpacking a manifest's layers into snapshots, daemon-side (containerd
//! `core/unpack/unpacker.go` + `rootfs.ApplyLayers`): for each layer whose chain's snapshot
//! does not exist yet, prepare `extract-<unique> <chainID>` on the parent chain, apply the
//! blob with `diff::apply_to_mounts` (the hardened applier, checking the diff id), commit
//! as the chain id. Then the layer blob gets `containerd.io/uncompressed` and the config
//! `containerd.io/gc.ref.snapshot.<snapshotter>` so GC keeps the rootfs with the image.
//! Runs on a blocking thread; snapshots it creates join the context's lease.

use super::oci::{self, Descriptor, Manifest, LABEL_UNCOMPRESSED};
use super::{Error, Progress, ProgressEvent, Transferrer, UnpackTo};
use crate::content::Digest;
use crate::errdefs::{HasKind, Kind};
use crate::metadata::{Ctx, Db, Labels};

/// Label a snapshot carries naming the chain it unpacks (containerd's `labelSnapshotRef`).
const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{nanos}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Unpacks `manifest` (whose config lists the diff ids) into `snapshotter`; returns the
/// top chain id. `name_of` gives the progress name of a layer.
pub fn unpack(
    db: &Db,
    ctx: &Ctx,
    manifest: &Manifest,
    snapshotter: &str,
    progress: &Progress,
    name_of: &dyn Fn(&Descriptor) -> String,
) -> Result<String, Error> {
    let config: oci::Config = oci::read_json(db, ctx, "image config", &manifest.config.digest)?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::Invalid(format!(
            "mismatched image rootfs and manifest layers: {} diff ids, {} layers in {}",
            diff_ids.len(),
            manifest.layers.len(),
            manifest.config.digest
        )));
    }
    let chain = crate::images::chain_ids(&diff_ids);
    for (i, layer) in manifest.layers.iter().enumerate() {
        let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
        if apply(db, ctx, snapshotter, layer, &diff_ids[i], &chain[i], parent)? {
            let labels: Labels = [(LABEL_UNCOMPRESSED.to_string(), diff_ids[i].clone())].into();
            oci::set_labels(db, ctx, &layer.digest, &labels)?;
        }
        if progress.enabled() {
            progress.send(ProgressEvent {
                event: "extracted".into(),
                name: name_of(layer),
                progress: layer.size,
                total: layer.size,
                desc: Some(layer.to_meta()),
                ..ProgressEvent::default()
            });
        }
    }
    let top = chain.last().cloned().unwrap_or_default();
    if !top.is_empty() {
        let labels: Labels = [(
            format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
            top.clone(),
        )]
        .into();
        oci::set_labels(db, ctx, &manifest.config.digest, &labels)?;
    }
    Ok(top)
}

/// Applies one layer as snapshot `chain_id`; false if it already existed.
fn apply(
    db: &Db,
    ctx: &Ctx,
    snapshotter: &str,
    layer: &Descriptor,
    diff_id: &str,
    chain_id: &str,
    parent: &str,
) -> Result<bool, Error> {
    if db.snapshot_stat(ctx, snapshotter, chain_id).is_ok() {
        return Ok(false);
    }
    let key = format!("extract-{} {chain_id}", unique());
    let labels: Labels = [(LABEL_SNAPSHOT_REF.to_string(), chain_id.to_string())].into();
    let mounts = db.snapshot_create(ctx, snapshotter, &key, parent, labels.clone(), false)?;
    let result = (|| -> Result<(), Error> {
        let d = Digest::parse(&layer.digest)?;
        let (blob, _) = db.content_open(ctx, &d)?;
        let blob = std::io::BufReader::with_capacity(1 << 20, blob);
        crate::diff::apply_to_mounts(&mounts, blob, &layer.media_type, Some(diff_id)).map_err(
            |e| Error::Apply {
                diff_id: diff_id.to_string(),
                source: Box::new(e),
            },
        )?;
        db.snapshot_commit(ctx, snapshotter, chain_id, &key, labels)?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(true),
        Err(Error::Metadata(e)) if e.kind() == Kind::AlreadyExists => {
            // Someone else unpacked the same chain meanwhile.
            let _ = db.snapshot_remove(ctx, snapshotter, &key);
            Ok(false)
        }
        Err(e) => {
            let _ = db.snapshot_remove(ctx, snapshotter, &key);
            Err(e)
        }
    }
}

/// Unpacks each manifest whose platform matches a supported unpack configuration (see
/// `Transferrer::supported_unpack`), once per snapshotter.
pub fn unpack_matching(
    t: &Transferrer,
    ctx: &Ctx,
    unpacks: &[UnpackTo],
    manifests: &[(Descriptor, Manifest)],
    progress: &Progress,
    name_of: &dyn Fn(&Descriptor) -> String,
) -> Result<(), Error> {
    for u in unpacks {
        let Some((snapshotter, platform)) = t.supported_unpack(u) else {
            continue;
        };
        let want = oci::Matcher::Any(vec![platform]);
        let mut done = std::collections::HashSet::new();
        for (d, m) in manifests {
            let p = match &d.platform {
                Some(p) => p.clone(),
                None => oci::config_platform(&t.db, ctx, m)?,
            };
            if want.matches(Some(&p)) && done.insert(d.digest.clone()) {
                unpack(&t.db, ctx, m, &snapshotter, progress, name_of)?;
            }
        }
    }
    Ok(())
}
