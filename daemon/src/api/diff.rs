//! `containerd.services.diff.v1.Diff`: Apply (layer blob from the content store onto
//! snapshot mounts) and Diff (walking differ), over the `diff` subsystem.

use super::Core;
use protos::containerd::services::diff::v1::{diff_server::Diff, ApplyRequest, ApplyResponse, DiffRequest, DiffResponse};
use tonic::{Request, Response, Status};

/// The diff service.
#[derive(Debug)]
pub struct Service(pub Core);

#[tonic::async_trait]
impl Diff for Service {
    async fn apply(&self, _req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        Err(Status::unimplemented("diff apply: waiting for the diff subsystem"))
    }

    async fn diff(&self, _req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        Err(Status::unimplemented("diff: waiting for the diff subsystem"))
    }
}
