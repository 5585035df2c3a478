//! `containerd.services.namespaces.v1.Namespaces` with `/namespaces/*` events.

use super::{blocking, paths, to_status, Core};
use crate::metadata::Namespace;
use protos::containerd::events as ev;
use protos::containerd::services::namespaces::v1::{
    namespaces_server::Namespaces, CreateNamespaceRequest, CreateNamespaceResponse,
    DeleteNamespaceRequest, GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest,
    ListNamespacesResponse, Namespace as PNs, UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use tonic::{Request, Response, Status};

/// The namespaces service.
#[derive(Debug)]
pub struct Service(pub Core);

fn ns(name: &str) -> Result<Namespace, Status> {
    Namespace::new(name).map_err(|e| to_status(&e))
}

#[tonic::async_trait]
impl Namespaces for Service {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let n = ns(&req.into_inner().name)?;
        let db = self.0.db.clone();
        let name = n.to_string();
        let labels = blocking(move || db.namespace_get(&n)).await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(PNs { name, labels }),
        }))
    }

    async fn list(
        &self,
        _: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let db = self.0.db.clone();
        let list = blocking(move || db.namespace_list()).await?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: list
                .into_iter()
                .map(|(name, labels)| PNs { name, labels })
                .collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let p = req.into_inner().namespace.unwrap_or_default();
        let n = ns(&p.name)?;
        let db = self.0.db.clone();
        let labels = p.labels.clone();
        blocking(move || db.namespace_create(&n, labels)).await?;
        self.0.events.publish(
            &p.name,
            &ev::NamespaceCreate {
                name: p.name.clone(),
                labels: p.labels.clone(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(p),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let r = req.into_inner();
        let p = r.namespace.unwrap_or_default();
        let n = ns(&p.name)?;
        let db = self.0.db.clone();
        let fps = paths(r.update_mask);
        let l = p.labels.clone();
        let labels = blocking(move || db.namespace_update(&n, &l, &fps)).await?;
        self.0.events.publish(
            &p.name,
            &ev::NamespaceUpdate {
                name: p.name.clone(),
                labels: labels.clone(),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(PNs {
                name: p.name,
                labels,
            }),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let n = ns(&name)?;
        let db = self.0.db.clone();
        blocking(move || db.namespace_delete(&n)).await?;
        self.0
            .events
            .publish(&name, &ev::NamespaceDelete { name: name.clone() });
        Ok(Response::new(()))
    }
}
