//! `containerd.services.snapshots.v1.Snapshots` (containerd `services/snapshots/service.go`)
//! over the namespaced snapshot metadata, with `/snapshot/*` events.

use super::{blocking, ctx, filter, mount_to, paths, to_status, ts, Core};
use crate::metadata::snapshots::Info as MInfo;
use crate::snapshots::Kind;
use futures::Stream;
use protos::containerd::events as ev;
use protos::containerd::services::snapshots::v1::{
    snapshots_server::Snapshots, CleanupRequest, CommitSnapshotRequest, Info, Kind as PKind,
    ListSnapshotsRequest, ListSnapshotsResponse, MountsRequest, MountsResponse,
    PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest,
    StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest,
    UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The snapshots service.
#[derive(Debug)]
pub struct Service(pub Core);

fn info_to(i: MInfo) -> Info {
    let kind = match i.kind {
        Kind::View => PKind::View,
        Kind::Active => PKind::Active,
        Kind::Committed => PKind::Committed,
    };
    Info {
        name: i.name,
        parent: i.parent,
        kind: kind as i32,
        created_at: ts(i.created),
        updated_at: ts(i.updated),
        labels: i.labels,
    }
}

fn snapshotter(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("snapshotter argument missing"));
    }
    Ok(name.to_string())
}

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let ns = c.ns.to_string();
        let (k, p, s2) = (r.key.clone(), r.parent.clone(), sn.clone());
        let mounts = blocking(move || db.snapshot_create(&c, &s2, &k, &p, r.labels, false)).await?;
        self.0.events.publish(
            &ns,
            &ev::SnapshotPrepare {
                key: r.key,
                parent: r.parent,
                snapshotter: sn,
            },
        );
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: mounts.into_iter().map(mount_to).collect(),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let mounts =
            blocking(move || db.snapshot_create(&c, &sn, &r.key, &r.parent, r.labels, true))
                .await?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: mounts.into_iter().map(mount_to).collect(),
        }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let mounts = blocking(move || db.snapshot_mounts(&c, &sn, &r.key)).await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts.into_iter().map(mount_to).collect(),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let ns = c.ns.to_string();
        let (n, k, s2) = (r.name.clone(), r.key.clone(), sn.clone());
        blocking(move || db.snapshot_commit(&c, &s2, &n, &k, r.labels)).await?;
        self.0.events.publish(
            &ns,
            &ev::SnapshotCommit {
                key: r.key,
                name: r.name,
                snapshotter: sn,
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let ns = c.ns.to_string();
        let (k, s2) = (r.key.clone(), sn.clone());
        blocking(move || db.snapshot_remove(&c, &s2, &k)).await?;
        self.0.events.publish(
            &ns,
            &ev::SnapshotRemove {
                key: r.key,
                snapshotter: sn,
            },
        );
        self.0.gc.schedule();
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let i = blocking(move || db.snapshot_stat(&c, &sn, &r.key)).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let info = r.info.unwrap_or_default();
        let fps = paths(r.update_mask);
        let db = self.0.db.clone();
        let i =
            blocking(move || db.snapshot_update(&c, &sn, &info.name, &info.labels, &fps)).await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to(i)),
        }))
    }

    type ListStream =
        Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send + 'static>>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let f = filter(&r.filters)?;
        let db = self.0.db.clone();
        let all = blocking(move || db.snapshot_list(&c, &sn, &f)).await?;
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = all
            .chunks(100)
            .map(|ch| {
                Ok(ListSnapshotsResponse {
                    info: ch.iter().cloned().map(info_to).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let sn = snapshotter(&r.snapshotter)?;
        let db = self.0.db.clone();
        let u = blocking(move || db.snapshot_usage(&c, &sn, &r.key)).await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        let _c = ctx(&req)?;
        let sn = snapshotter(&req.into_inner().snapshotter)?;
        self.0.gc.collect_now().await.map_err(|e| to_status(&e))?;
        let db = self.0.db.clone();
        blocking(move || -> Result<(), crate::metadata::Error> { db.snapshotter(&sn)?.cleanup() })
            .await?;
        Ok(Response::new(()))
    }
}
