//! `containerd.services.version.v1.Version`.

use protos::containerd::services::version::v1::{version_server::Version, VersionResponse};
use tonic::{Request, Response, Status};

/// berthd's version, reported as containerd's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Build revision (`BERTH_REVISION` at build time, else "unknown").
pub const REVISION: &str = match option_env!("BERTH_REVISION") {
    Some(r) => r,
    None => "unknown",
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
