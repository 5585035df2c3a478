//! `containerd.services.containers.v1.Containers` (containerd `services/containers/local.go`):
//! container records in the metadata store, with `/containers/create|update|delete` events.

use super::{blocking, ctx, filter, paths, ts, Core};
use crate::metadata::containers::{AnyValue, Container as MContainer, Runtime as MRuntime};
use protos::containerd::events::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use protos::containerd::services::containers::v1::{
    container::Runtime, containers_server::Containers, Container, CreateContainerRequest,
    CreateContainerResponse, DeleteContainerRequest, GetContainerRequest, GetContainerResponse,
    ListContainerMessage, ListContainersRequest, ListContainersResponse, UpdateContainerRequest,
    UpdateContainerResponse,
};
use std::pin::Pin;
use tonic::{Request, Response, Status};

/// The containers service.
#[derive(Debug)]
pub struct Service(pub Core);

fn any_from(a: prost_types::Any) -> AnyValue {
    AnyValue {
        type_url: a.type_url,
        value: a.value,
    }
}

fn any_to(a: AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

/// Record → proto (containerd `containerToProto`).
pub fn to_proto(c: MContainer) -> Container {
    Container {
        id: c.id,
        labels: c.labels,
        image: c.image,
        runtime: Some(Runtime {
            name: c.runtime.name,
            options: c.runtime.options.map(any_to),
        }),
        spec: c.spec.map(any_to),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: ts(c.created),
        updated_at: ts(c.updated),
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_to(v)))
            .collect(),
        sandbox: c.sandbox_id,
    }
}

/// Proto → record (containerd `containerFromProto`).
pub fn from_proto(c: Container) -> MContainer {
    let runtime = c.runtime.unwrap_or_default();
    MContainer {
        id: c.id,
        labels: c.labels,
        image: c.image,
        runtime: MRuntime {
            name: runtime.name,
            options: runtime.options.map(any_from),
        },
        spec: c.spec.map(any_from),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_from(v)))
            .collect(),
        sandbox_id: c.sandbox,
        ..Default::default()
    }
}

type ListStream = Pin<Box<dyn futures::Stream<Item = Result<ListContainerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for Service {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(Status::invalid_argument("container id must not be empty"));
        }
        let db = self.0.db.clone();
        let rec = blocking(move || db.container_get(&c, &id)).await?;
        Ok(Response::new(GetContainerResponse {
            container: Some(to_proto(rec)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let c = ctx(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let db = self.0.db.clone();
        let recs = blocking(move || db.container_list(&c, &f)).await?;
        Ok(Response::new(ListContainersResponse {
            containers: recs.into_iter().map(to_proto).collect(),
        }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let c = ctx(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let db = self.0.db.clone();
        let recs = blocking(move || db.container_list(&c, &f)).await?;
        let items = recs.into_iter().map(|r| {
            Ok(ListContainerMessage {
                container: Some(to_proto(r)),
            })
        });
        Ok(Response::new(
            Box::pin(futures::stream::iter(items.collect::<Vec<_>>())) as ListStream,
        ))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let c = ctx(&req)?;
        let Some(container) = req.into_inner().container else {
            return Err(Status::invalid_argument("Container required"));
        };
        let ns = c.ns.as_str().to_string();
        let db = self.0.db.clone();
        let created =
            to_proto(blocking(move || db.container_create(&c, from_proto(container))).await?);
        let runtime = created.runtime.clone().unwrap_or_default();
        self.0.events.publish(
            &ns,
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: runtime.name,
                    options: runtime.options,
                }),
            },
        );
        Ok(Response::new(CreateContainerResponse {
            container: Some(created),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let container = r.container.unwrap_or_default();
        if container.id.is_empty() {
            return Err(Status::invalid_argument("Container.ID required"));
        }
        let fps = paths(r.update_mask);
        let ns = c.ns.as_str().to_string();
        let db = self.0.db.clone();
        let updated = to_proto(
            blocking(move || db.container_update(&c, &from_proto(container), &fps)).await?,
        );
        self.0.events.publish(
            &ns,
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone(),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        Ok(Response::new(UpdateContainerResponse {
            container: Some(updated),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().id;
        let ns = c.ns.as_str().to_string();
        let db = self.0.db.clone();
        let del_id = id.clone();
        blocking(move || db.container_delete(&c, &del_id)).await?;
        // The snapshot (and anything else only this record referenced) goes with the next GC.
        self.0.gc.schedule();
        self.0.events.publish(&ns, &ContainerDelete { id });
        Ok(Response::new(()))
    }
}
