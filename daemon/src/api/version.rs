//! `containerd.services.version.v1.Version`.

use protos::containerd::services::version::v1::{version_server::Version, VersionResponse};
use tonic::{Request, Response, Status};

/// berthd's version, reported as containerd's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Build revision: the git commit of the tree (set by `daemon/build.rs`; empty outside git,
/// then "unknown").
pub const REVISION: &str = match env!("BERTH_REVISION").as_bytes() {
    [] => "unknown",
    _ => env!("BERTH_REVISION"),
};

/// The version service.
#[derive(Debug, Default)]
pub struct Service;

#[tonic::async_trait]
impl Version for Service {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: format!("v{VERSION}-berth"),
            revision: REVISION.to_string(),
        }))
    }
}
