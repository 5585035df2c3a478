//! `containerd.services.leases.v1.Leases` (containerd `services/leases/service.go`).

use super::{blocking, ctx, filter, to_status, ts, Core};
use protos::containerd::services::leases::v1::{
    leases_server::Leases, AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest,
    DeleteResourceRequest, Lease, ListRequest, ListResourcesRequest, ListResourcesResponse,
    ListResponse, Resource,
};
use tonic::{Request, Response, Status};

/// The leases service.
#[derive(Debug)]
pub struct Service(pub Core);

fn resource(r: Option<Resource>) -> Result<Resource, Status> {
    r.ok_or_else(|| Status::invalid_argument("resource must be set"))
}

#[tonic::async_trait]
impl Leases for Service {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let c = ctx(&req)?;
        let mut r = req.into_inner();
        if r.id.is_empty() {
            // containerd's `leases.WithRandomID`: the service picks an id when none is given.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            r.id = format!(
                "{}-{}",
                now.subsec_nanos(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
        }
        let db = self.0.db.clone();
        let l = blocking(move || db.lease_create(&c, &r.id, r.labels)).await?;
        Ok(Response::new(CreateResponse {
            lease: Some(Lease {
                id: l.id,
                created_at: ts(l.created),
                labels: l.labels,
            }),
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let db = self.0.db.clone();
        blocking(move || db.lease_delete(&c, &r.id)).await?;
        if r.sync {
            self.0.gc.collect_now().await.map_err(|e| to_status(&e))?;
        } else {
            self.0.gc.schedule();
        }
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let c = ctx(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let db = self.0.db.clone();
        let ls = blocking(move || db.lease_list(&c, &f)).await?;
        Ok(Response::new(ListResponse {
            leases: ls
                .into_iter()
                .map(|l| Lease {
                    id: l.id,
                    created_at: ts(l.created),
                    labels: l.labels,
                })
                .collect(),
        }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let res = resource(r.resource)?;
        let db = self.0.db.clone();
        blocking(move || db.lease_add_resource(&c, &r.id, &res.r#type, &res.id)).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let res = resource(r.resource)?;
        let db = self.0.db.clone();
        blocking(move || db.lease_delete_resource(&c, &r.id, &res.r#type, &res.id)).await?;
        self.0.gc.schedule();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().id;
        let db = self.0.db.clone();
        let rs = blocking(move || db.lease_list_resources(&c, &id)).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: rs
                .into_iter()
                .map(|(r#type, id)| Resource { id, r#type })
                .collect(),
        }))
    }
}
