//! `containerd.services.images.v1.Images` (containerd `services/images/local.go`), with the
//! `/images/*` events and a synchronous GC for `Delete{sync: true}`.

use super::{blocking, ctx, desc_from, desc_to, filter, paths, to_status, ts, Core};
use crate::metadata::images::Image as MImage;
use protos::containerd::services::images::v1::{
    images_server::Images, CreateImageRequest, CreateImageResponse, DeleteImageRequest,
    GetImageRequest, GetImageResponse, Image, ImageCreate, ImageDelete, ImageUpdate,
    ListImagesRequest, ListImagesResponse, UpdateImageRequest, UpdateImageResponse,
};
use tonic::{Request, Response, Status};

/// The images service.
#[derive(Debug)]
pub struct Service(pub Core);

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

#[tonic::async_trait]
impl Images for Service {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let c = ctx(&req)?;
        let name = req.into_inner().name;
        let db = self.0.db.clone();
        let img = blocking(move || db.image_get(&c, &name)).await?;
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
        let db = self.0.db.clone();
        let imgs = blocking(move || db.image_list(&c, &f)).await?;
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
        let db = self.0.db.clone();
        let ns = c.ns.to_string();
        let created = blocking(move || db.image_create(&c, from_proto(img))).await?;
        self.0.events.publish(
            &ns,
            &ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone(),
            },
        );
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
        let fps = paths(r.update_mask);
        let db = self.0.db.clone();
        let ns = c.ns.to_string();
        let updated = blocking(move || db.image_update(&c, &from_proto(img), &fps)).await?;
        self.0.events.publish(
            &ns,
            &ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        Ok(Response::new(UpdateImageResponse {
            image: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let db = self.0.db.clone();
        let ns = c.ns.to_string();
        let name = r.name.clone();
        let target = r.target.clone();
        blocking(move || {
            if let Some(t) = target {
                let cur = db.image_get(&c, &name)?;
                if cur.target.digest != t.digest {
                    return Err(crate::metadata::Error::Precondition(format!(
                        "image {name:?} target is {}, not {}",
                        cur.target.digest, t.digest
                    )));
                }
            }
            db.image_delete(&c, &name)
        })
        .await?;
        self.0.events.publish(&ns, &ImageDelete { name: r.name });
        if r.sync {
            self.0.gc.collect_now().await.map_err(|e| to_status(&e))?;
        } else {
            self.0.gc.schedule();
        }
        Ok(Response::new(()))
    }
}
