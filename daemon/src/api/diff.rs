//! `containerd.services.diff.v1.Diff`: `Apply` reads the layer blob from the namespace's
//! content and applies it onto the given mounts with the hardened applier in `diff::apply`
//! (containerd `diff/apply/apply.go`); the reply is the uncompressed layer's descriptor,
//! which the client compares with the image's diff_id.

use super::{blocking, ctx, desc_to, mount_from, to_status, Core};
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

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        if r.right.is_empty() {
            return Err(Status::invalid_argument("right mounts must not be empty"));
        }
        let opts = crate::diff::DiffOptions::for_media_type(&r.media_type).map_err(|e| {
            to_status(&ApplyError::Diff {
                digest: String::new(),
                source: Box::new(e),
            })
        })?;
        let lower: Vec<_> = r.left.into_iter().map(mount_from).collect();
        let upper: Vec<_> = r.right.into_iter().map(mount_from).collect();
        let r#ref = if r.r#ref.is_empty() {
            // containerd's walking differ picks a unique ingest ref when none is given.
            format!("diff-{}", uuid::Uuid::new_v4().simple())
        } else {
            r.r#ref
        };
        let mut labels = r.labels;
        let db = self.0.db.clone();
        let desc = blocking(move || -> Result<Descriptor, ApplyError> {
            let mut w = db.content_writer(&c, &r#ref, 0, None)?;
            let out = crate::diff::diff_mounts(&lower, &upper, WriterAdapter(&mut w), &opts);
            let (_, res) = match out {
                Ok(v) => v,
                Err(e) => {
                    drop(w);
                    let _ = db.content_abort(&c, &r#ref);
                    return Err(ApplyError::Diff {
                        digest: String::new(),
                        source: Box::new(e),
                    });
                }
            };
            if res.descriptor.digest != res.diff_id {
                // As containerd: a compressed layer records its uncompressed digest.
                labels.insert("containerd.io/uncompressed".into(), res.diff_id.clone());
            }
            let d = Digest::parse(&res.descriptor.digest)?;
            match w.commit(res.descriptor.size, Some(d), labels) {
                Ok(_) => {}
                Err(e) if e.kind() == Kind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Descriptor {
                media_type: res.descriptor.media_type,
                digest: res.descriptor.digest,
                size: res.descriptor.size,
                annotations: Default::default(),
            })
        })
        .await?;
        Ok(Response::new(DiffResponse {
            diff: Some(desc_to(&desc)),
        }))
    }
}

/// `std::io::Write` over a namespaced content writer, for the differ's output.
struct WriterAdapter<'a>(&'a mut crate::metadata::content::NsWriter);

impl std::io::Write for WriterAdapter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
