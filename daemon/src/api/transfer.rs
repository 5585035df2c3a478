//! `containerd.services.transfer.v1.Transfer` (containerd
//! `plugins/services/transfer/service.go`): takes the progress stream named in the
//! options, decodes source and destination `Any`s by type URL into the core's typed
//! [`Source`]/[`Destination`] (claiming the streams they name), and runs the transfer.
//! Codes follow containerd: a stream that is not registered is NotFound, a pair no
//! operation handles is Unimplemented ("method Transfer not implemented for A to B"), a
//! type URL no one knows is Unknown ("type with url …: not found").

use super::{ctx, to_status};
use crate::errdefs::{HasKind, Kind};
use crate::transfer::oci::Platform;
use crate::transfer::stream::{type_name, StreamManager};
use crate::transfer::{
    Destination, ExportStream, ImageRef, ImageStore, ImportStream, Progress, Registry, Source,
    Transferrer, UnpackTo,
};
use prost::Message;
use prost_types::Any;
use protos::containerd::services::transfer::v1::{transfer_server::Transfer, TransferRequest};
use protos::containerd::types::transfer as tt;
use tonic::{Request, Response, Status};

/// The transfer service.
#[derive(Debug, Clone)]
pub struct Service {
    /// The operations.
    pub transfer: Transferrer,
    /// Streams the request names.
    pub streams: StreamManager,
}

const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
const IMPORT_STREAM: &str = "containerd.types.transfer.ImageImportStream";
const EXPORT_STREAM: &str = "containerd.types.transfer.ImageExportStream";
const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";

fn decode<M: Message + Default>(a: &Any) -> Result<M, Status> {
    M::decode(a.value.as_slice())
        .map_err(|e| Status::unknown(format!("decode {}: {e}", a.type_url)))
}

fn image_store(s: tt::ImageStore) -> ImageStore {
    ImageStore {
        name: s.name,
        labels: s.labels,
        platforms: s.platforms.iter().map(Platform::from_proto).collect(),
        all_metadata: s.all_metadata,
        manifest_limit: s.manifest_limit,
        extra_references: s
            .extra_references
            .into_iter()
            .map(|r| ImageRef {
                name: r.name,
                is_prefix: r.is_prefix,
                allow_overwrite: r.allow_overwrite,
                add_digest: r.add_digest,
                skip_named_digest: r.skip_named_digest,
            })
            .collect(),
        unpacks: s
            .unpacks
            .into_iter()
            .map(|u| UnpackTo {
                platform: u.platform.as_ref().map(Platform::from_proto),
                snapshotter: u.snapshotter,
            })
            .collect(),
    }
}

/// What a type URL decodes to before it is placed as source or destination.
enum Decoded {
    Store(ImageStore),
    Import(ImportStream),
    Export(ExportStream),
    Registry(Registry),
    Other,
}

impl Service {
    fn take(&self, ns: &str, id: &str) -> Result<crate::transfer::Stream, Status> {
        self.streams.take(ns, id).map_err(|e| to_status(&e))
    }

    fn decode_any(&self, ns: &str, what: &str, a: Option<Any>) -> Result<Decoded, Status> {
        let a = a.ok_or_else(|| Status::invalid_argument(format!("{what} must be set")))?;
        Ok(match type_name(&a.type_url) {
            IMAGE_STORE => Decoded::Store(image_store(decode(&a)?)),
            IMPORT_STREAM => {
                let s: tt::ImageImportStream = decode(&a)?;
                Decoded::Import(ImportStream {
                    stream: self.take(ns, &s.stream)?,
                    media_type: s.media_type,
                    force_compress: s.force_compress,
                })
            }
            EXPORT_STREAM => {
                let s: tt::ImageExportStream = decode(&a)?;
                Decoded::Export(ExportStream {
                    stream: self.take(ns, &s.stream)?,
                    media_type: s.media_type,
                    platforms: s.platforms.iter().map(Platform::from_proto).collect(),
                    all_platforms: s.all_platforms,
                    skip_compatibility_manifest: s.skip_compatibility_manifest,
                    skip_non_distributable: s.skip_non_distributable,
                })
            }
            OCI_REGISTRY => {
                let r: tt::OciRegistry = decode(&a)?;
                let res = r.resolver.unwrap_or_default();
                let auth = if res.auth_stream.is_empty() {
                    None
                } else {
                    Some(self.take(ns, &res.auth_stream)?)
                };
                if !res.logs_stream.is_empty() {
                    // HTTP debug logs are not produced; closing the stream ends the
                    // client's copy of them at once.
                    drop(self.take(ns, &res.logs_stream));
                }
                Decoded::Registry(Registry {
                    reference: r.reference,
                    headers: res.headers,
                    host_dir: res.host_dir,
                    default_scheme: res.default_scheme,
                    auth,
                })
            }
            n if n.starts_with("containerd.") || n.starts_with("google.protobuf.") => {
                Decoded::Other
            }
            _ => {
                return Err(Status::unknown(format!(
                    "type with url {}: not found (berthd's transfer service takes {IMAGE_STORE}, {OCI_REGISTRY}, {IMPORT_STREAM} and {EXPORT_STREAM})",
                    a.type_url
                )))
            }
        })
    }
}

#[tonic::async_trait]
impl Transfer for Service {
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let ns = c.ns.to_string();
        let progress = match r.options.as_ref().map(|o| o.progress_stream.as_str()) {
            Some(id) if !id.is_empty() => Progress::to_stream(self.take(&ns, id)?),
            _ => Progress::default(),
        };
        let (src_url, dst_url) = (
            r.source
                .as_ref()
                .map(|a| a.type_url.clone())
                .unwrap_or_default(),
            r.destination
                .as_ref()
                .map(|a| a.type_url.clone())
                .unwrap_or_default(),
        );
        let src = match self.decode_any(&ns, "source", r.source)? {
            Decoded::Store(s) => Source::ImageStore(s),
            Decoded::Import(i) => Source::ImportStream(i),
            Decoded::Registry(g) => Source::Registry(g),
            Decoded::Export(_) | Decoded::Other => Source::Other(src_url.clone()),
        };
        let dst = match self.decode_any(&ns, "destination", r.destination)? {
            Decoded::Store(s) => Destination::ImageStore(s),
            Decoded::Export(e) => Destination::ExportStream(e),
            Decoded::Registry(g) => Destination::Registry(g),
            Decoded::Import(_) | Decoded::Other => Destination::Other(dst_url.clone()),
        };
        let result = self.transfer.transfer(c, src, dst, progress.clone()).await;
        // The client stops drawing progress when the reply arrives: send the rest first.
        progress.finish().await;
        match result {
            Ok(()) => Ok(Response::new(())),
            Err(e @ crate::transfer::Error::Unsupported { .. }) => {
                log::debug!("transfer: {e}");
                Err(Status::unimplemented(format!(
                    "method Transfer not implemented for {src_url} to {dst_url}"
                )))
            }
            Err(e) => {
                if e.kind() == Kind::Unknown {
                    log::warn!("transfer from {src_url} to {dst_url} failed: {e}");
                }
                Err(to_status(&e))
            }
        }
    }
}
