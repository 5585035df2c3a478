//! `containerd.services.diff.v1.Diff`: `Apply` reads the layer blob from the namespace's
//! content and applies it onto the given mounts with the hardened applier in `diff::apply`
//! (containerd `diff/apply/apply.go`); the reply is the uncompressed layer's descriptor,
//! which the client compares with the image's diff_id.

use super::{blocking, ctx, desc_to, mount_from, Core};
use crate::content::Digest;
use crate::errdefs::{HasKind, Kind};
use crate::metadata::Descriptor;
use protos::containerd::services::diff::v1::{
    diff_server::Diff, ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use tonic::{Request, Response, Status};

/// The diff service.
#[derive(Debug)]
pub struct Service(pub Core);

/// Errors of an apply, classified for `to_status`.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Meta(#[from] crate::metadata::Error),
    #[error(transparent)]
    Digest(#[from] crate::content::DigestError),
    #[error("apply layer {digest}: {source}")]
    Diff {
        digest: String,
        #[source]
        source: Box<crate::diff::Error>,
    },
}

impl HasKind for ApplyError {
    fn kind(&self) -> Kind {
        match self {
            ApplyError::Meta(e) => e.kind(),
            ApplyError::Digest(e) => e.kind(),
            ApplyError::Diff { source, .. } => match source.kind() {
                crate::diff::ErrorKind::InvalidArgument => Kind::InvalidArgument,
                crate::diff::ErrorKind::NotImplemented => Kind::NotImplemented,
                crate::diff::ErrorKind::Internal => Kind::Unknown,
            },
        }
    }
}

#[tonic::async_trait]
impl Diff for Service {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor must be set"))?;
        if r.mounts.is_empty() {
            return Err(Status::invalid_argument("mounts must not be empty"));
        }
        let mounts: Vec<_> = r.mounts.into_iter().map(mount_from).collect();
        let db = self.0.db.clone();
        let applied = blocking(move || -> Result<Descriptor, ApplyError> {
            let d = Digest::parse(&desc.digest)?;
            let (file, _) = db.content_open(&c, &d)?;
            let blob = std::io::BufReader::with_capacity(1 << 20, file);
            let out = crate::diff::apply_to_mounts(&mounts, blob, &desc.media_type, None).map_err(
                |e| ApplyError::Diff {
                    digest: desc.digest.clone(),
                    source: Box::new(e),
                },
            )?;
            Ok(Descriptor {
                media_type: out.media_type,
                digest: out.digest,
                size: out.size,
                annotations: Default::default(),
            })
        })
        .await?;
        Ok(Response::new(ApplyResponse {
            applied: Some(desc_to(&applied)),
        }))
    }

    async fn diff(&self, _req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        Err(Status::unimplemented(
            "diff: the walking differ is not wired yet",
        ))
    }
}
