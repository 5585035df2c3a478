//! Thin gRPC adapters, one module per containerd service: decode the request, call the typed
//! core (`metadata`, `content`, `snapshots`, `diff`, `events`), encode the reply. Nothing here
//! holds state of its own beyond handles to the core.
//!
//! [`to_status`] is the only place an error becomes a gRPC status (containerd
//! `errdefs/grpc.go` `ToGRPC`); [`ctx`] reads the `containerd-namespace` and
//! `containerd-lease` headers every namespaced call carries.

pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod version;

use crate::errdefs::{HasKind, Kind};
use crate::metadata::{self, Ctx, Descriptor, Namespace, Ts};
use protos::containerd::types as pt;
use std::collections::HashMap;
use tonic::{Code, Status};

/// gRPC header carrying the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// gRPC header carrying the lease.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The one errdefs → gRPC mapping.
pub fn to_status<E: HasKind + ?Sized>(e: &E) -> Status {
    let code = match e.kind() {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unavailable => Code::Unavailable,
        Kind::NotImplemented => Code::Unimplemented,
        Kind::OutOfRange => Code::OutOfRange,
        Kind::Unknown => Code::Unknown,
    };
    Status::new(code, e.to_string())
}

/// Namespace (required) and lease (optional) of a request.
pub fn ctx<T>(req: &tonic::Request<T>) -> Result<Ctx, Status> {
    let md = req.metadata();
    let ns = md
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ns = Namespace::new(ns).map_err(|e| to_status(&e))?;
    let lease = md
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(Ctx { ns, lease })
}

/// Runs blocking core work off the async threads and maps its error.
pub async fn blocking<T, E, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: HasKind + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| to_status(&e)),
        Err(e) => Err(Status::internal(format!("worker failed: {e}"))),
    }
}

pub(crate) fn ts(t: Ts) -> Option<prost_types::Timestamp> {
    Some(t.to_proto())
}

pub(crate) fn paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

pub(crate) fn desc_from(d: pt::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

pub(crate) fn desc_to(d: &Descriptor) -> pt::Descriptor {
    pt::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

pub(crate) fn mount_to(m: crate::snapshots::Mount) -> pt::Mount {
    pt::Mount {
        r#type: m.fs_type,
        source: m.source,
        target: String::new(),
        options: m.options,
    }
}

pub(crate) fn mount_from(m: pt::Mount) -> crate::snapshots::Mount {
    crate::snapshots::Mount {
        fs_type: m.r#type,
        source: m.source,
        options: m.options,
    }
}

pub(crate) fn filter(ss: &[String]) -> Result<crate::filters::Filter, Status> {
    crate::filters::Filter::parse_all(ss).map_err(|e| to_status(&e))
}

/// Shared handles every service gets.
#[derive(Clone, Debug)]
pub struct Core {
    /// Metadata database.
    pub db: std::sync::Arc<metadata::Db>,
    /// Event exchange.
    pub events: crate::events::Exchange,
    /// Asks for a background GC after deletes.
    pub gc: crate::metadata::gc::Scheduler,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_errdefs() {
        let cases = [
            (metadata::Error::NamespaceRequired, Code::FailedPrecondition),
            (
                metadata::Error::NotFound {
                    what: "image",
                    id: "x".into(),
                },
                Code::NotFound,
            ),
            (
                metadata::Error::AlreadyExists {
                    what: "image",
                    id: "x".into(),
                },
                Code::AlreadyExists,
            ),
            (metadata::Error::Invalid("x".into()), Code::InvalidArgument),
            (
                metadata::Error::NotImplemented("x".into()),
                Code::Unimplemented,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(to_status(&e).code(), code, "{e}");
        }
        let st = to_status(&metadata::Error::NotFound {
            what: "image",
            id: "x".into(),
        });
        assert_eq!(st.message(), "image \"x\": not found");
    }
}
