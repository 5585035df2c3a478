//! Unpacking an image's layers into snapshots, client-side, as containerd's `Image.Unpack`
//! and `rootfs.ApplyLayers` do: for each layer, if the chain's snapshot does not exist,
//! `Snapshots.Prepare("extract-<unique> <chainID>", parent chain ID)` →
//! `Diff.Apply(layer blob, mounts)` (checking the returned diff ID) →
//! `Snapshots.Commit(chainID)`; then the layer blob gets `containerd.io/uncompressed` and
//! the config gets `containerd.io/gc.ref.snapshot.<snapshotter>` so GC keeps the rootfs.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use protos::services::diff::v1::ApplyRequest;
use protos::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};

use super::{Descriptor, PlatformMatcher};
use crate::client::Client;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] super::Error),
    #[error("failed to stat snapshot {chain_id}: {}", .status.message())]
    Stat {
        chain_id: String,
        status: tonic::Status,
    },
    #[error("failed to prepare extraction snapshot {key:?}: {}", .status.message())]
    Prepare { key: String, status: tonic::Status },
    #[error("failed to extract layer {diff_id}: {}", .status.message())]
    Apply {
        diff_id: String,
        status: tonic::Status,
    },
    #[error("wrong diff id calculated on extraction {got:?} (expected {want})")]
    DiffId { got: String, want: String },
    #[error("failed to commit snapshot {key}: {}", .status.message())]
    Commit { key: String, status: tonic::Status },
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
}

fn unique_part() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{nanos}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..4]
    )
}

/// Unpacks the image whose target is `target` into `snapshotter`; returns the chain ID of
/// the top layer (the snapshot a container's rootfs is prepared from).
pub async fn unpack(
    client: &Client,
    target: &Descriptor,
    platform: &PlatformMatcher,
    snapshotter: &str,
) -> Result<String, Error> {
    let (_, manifest) = super::resolve_manifest(client, target, platform).await?;
    let config = super::read_config(client, &manifest.config).await?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(super::Error::LayerCount {
            diff_ids: diff_ids.len(),
            layers: manifest.layers.len(),
        }
        .into());
    }
    let chain = super::chain_ids(&diff_ids);
    for (i, layer) in manifest.layers.iter().enumerate() {
        let chain_id = &chain[i];
        let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
        let applied =
            apply_layer(client, snapshotter, layer, &diff_ids[i], chain_id, parent).await?;
        if applied {
            let labels = [(
                "containerd.io/uncompressed".to_string(),
                diff_ids[i].clone(),
            )]
            .into_iter()
            .collect();
            super::store::set_labels(client, &layer.digest, labels).await?;
        }
    }
    let top = chain.last().cloned().unwrap_or_default();
    let labels: HashMap<String, String> = [(
        format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
        top.clone(),
    )]
    .into_iter()
    .collect();
    super::store::set_labels(client, &manifest.config.digest, labels).await?;
    Ok(top)
}

/// Chain ID of the image's top layer without unpacking (for `run` and `images mount`).
pub async fn top_chain_id(
    client: &Client,
    target: &Descriptor,
    platform: &PlatformMatcher,
) -> Result<String, Error> {
    let (_, manifest) = super::resolve_manifest(client, target, platform).await?;
    let config = super::read_config(client, &manifest.config).await?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    Ok(super::chain_ids(&diff_ids).pop().unwrap_or_default())
}

/// Whether the chain's snapshot already exists. Inside a lease the snapshot is added to
/// the lease first, so garbage collection (say, after an `images rm`) cannot remove it
/// between this check and the unpack or container that builds on it.
pub async fn snapshot_exists(
    client: &Client,
    snapshotter: &str,
    key: &str,
) -> Result<bool, tonic::Status> {
    if let Some(lease) = client.lease() {
        use protos::services::leases::v1::{AddResourceRequest, Resource};
        client
            .leases()
            .add_resource(AddResourceRequest {
                id: lease.to_string(),
                resource: Some(Resource {
                    id: key.to_string(),
                    r#type: format!("snapshots/{snapshotter}"),
                }),
            })
            .await?;
    }
    match client
        .snapshots()
        .stat(StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(s),
    }
}

/// `rootfs.ApplyLayerWithOpts`: returns whether the layer was applied now.
async fn apply_layer(
    client: &Client,
    snapshotter: &str,
    layer: &Descriptor,
    diff_id: &str,
    chain_id: &str,
    parent: &str,
) -> Result<bool, Error> {
    if snapshot_exists(client, snapshotter, chain_id)
        .await
        .map_err(|status| Error::Stat {
            chain_id: chain_id.to_string(),
            status,
        })?
    {
        return Ok(false);
    }
    let key = format!("extract-{} {chain_id}", unique_part());
    log::debug!(
        "applying layer {} as {chain_id} (parent {parent:?})",
        layer.digest
    );
    let mounts = client
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        })
        .await
        .map_err(|status| Error::Prepare {
            key: key.clone(),
            status,
        })?
        .into_inner()
        .mounts;
    let result = async {
        let applied = client
            .diff()
            .apply(ApplyRequest {
                diff: Some(layer.to_proto()),
                mounts,
                ..Default::default()
            })
            .await
            .map_err(|status| Error::Apply {
                diff_id: diff_id.to_string(),
                status,
            })?
            .into_inner()
            .applied
            .unwrap_or_default();
        if applied.digest != diff_id {
            return Err(Error::DiffId {
                got: applied.digest,
                want: diff_id.to_string(),
            });
        }
        client
            .snapshots()
            .commit(CommitSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels: HashMap::new(),
            })
            .await
            .map_err(|status| Error::Commit {
                key: key.clone(),
                status,
            })?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(true),
        Err(Error::Commit { status, .. }) if status.code() == tonic::Code::AlreadyExists => {
            let _ = remove(client, snapshotter, &key).await;
            Ok(false)
        }
        Err(e) => {
            let _ = remove(client, snapshotter, &key).await;
            Err(e)
        }
    }
}

async fn remove(client: &Client, snapshotter: &str, key: &str) -> Result<(), tonic::Status> {
    client
        .snapshots()
        .remove(RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        })
        .await
        .map(|_| ())
}
