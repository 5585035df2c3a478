//! `containerd.services.images.v1.Images` (containerd `services/images/local.go`), with the
//! `/images/*` events and a synchronous GC for `Delete{sync: true}`.

use super::{ctx, desc_from, desc_to, filter, paths, to_status, ts};
use crate::metadata::images::Image as MImage;
use protos::containerd::services::images::v1::{
    images_server::Images, CreateImageRequest, CreateImageResponse, DeleteImageRequest,
    GetImageRequest, GetImageResponse, Image, ListImagesRequest, ListImagesResponse,
    UpdateImageRequest, UpdateImageResponse,
};
use tonic::{Request, Response, Status};

/// The images service.
#[derive(Debug)]
pub struct Service(pub crate::images::Images);

fn to_proto(i: MImage) -> Image {
    Image {
        target: Some(desc_to(&i.target)),
        name: i.name,
        labels: i.labels,
        created_at: ts(i.created),
        updated_at: ts(i.updated),
    }
}

fn from_proto(i: Image) -> MImage {
    MImage {
        name: i.name,
        labels: i.labels,
        target: i.target.map(desc_from).unwrap_or_default(),
        ..Default::default()
    }
}

fn st(e: &crate::images::Error) -> Status {
    to_status(e)
}

#[tonic::async_trait]
impl Images for Service {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let c = ctx(&req)?;
        let img = self
            .0
            .get(c, req.into_inner().name)
            .await
            .map_err(|e| st(&e))?;
        Ok(Response::new(GetImageResponse {
            image: Some(to_proto(img)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let c = ctx(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let imgs = self.0.list(c, f).await.map_err(|e| st(&e))?;
        Ok(Response::new(ListImagesResponse {
            images: imgs.into_iter().map(to_proto).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let c = ctx(&req)?;
        let img = req.into_inner().image.unwrap_or_default();
        if img.name.is_empty() {
            return Err(Status::invalid_argument("Image.Name required"));
        }
        let created = self
            .0
            .create(c, from_proto(img))
            .await
            .map_err(|e| st(&e))?;
        Ok(Response::new(CreateImageResponse {
            image: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let img = r.image.unwrap_or_default();
        if img.name.is_empty() {
            return Err(Status::invalid_argument("Image.Name required"));
        }
        let updated = self
            .0
            .update(c, from_proto(img), paths(r.update_mask))
            .await
            .map_err(|e| st(&e))?;
        Ok(Response::new(UpdateImageResponse {
            image: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let target = r.target.map(|t| t.digest);
        self.0
            .delete(c, r.name, target, r.sync)
            .await
            .map_err(|e| st(&e))?;
        Ok(Response::new(()))
    }
}
