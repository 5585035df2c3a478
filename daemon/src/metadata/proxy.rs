//! A snapshotter in another process (`[proxy_plugins.<name>] type = "snapshot"`), reached
//! over containerd's Snapshots gRPC API on its Unix socket, as containerd's
//! `snapshots/proxy`. Requests name the snapshotter as the plugin is named and carry the
//! namespace [`PROXY_NAMESPACE`] (the keys are already namespaced by the metadata layer;
//! plugins that are plain snapshotters ignore it).
//!
//! The metadata layer is synchronous and runs on blocking threads, so each call enters the
//! daemon's runtime with `Handle::block_on`.

use super::{Error, Labels, Result};
use crate::snapshots::{Mount, Usage};
use protos::containerd::services::snapshots::v1 as api;
use std::path::PathBuf;
use tonic::transport::Channel;

/// Namespace sent with proxy requests.
pub const PROXY_NAMESPACE: &str = "berth-proxy";

/// A proxy snapshotter client.
pub struct ProxySnapshotter {
    name: String,
    address: PathBuf,
    handle: tokio::runtime::Handle,
    channel: Channel,
}

impl std::fmt::Debug for ProxySnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.name, self.address.display())
    }
}

impl ProxySnapshotter {
    /// A client for plugin `name` at `address`; connects lazily. Must be called inside the
    /// daemon's runtime.
    pub fn new(name: &str, address: &str) -> Result<Self> {
        let path = PathBuf::from(address);
        let p2 = path.clone();
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Invalid(format!("proxy plugin {name}: {e}")))?
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = p2.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Self {
            name: name.to_string(),
            address: path,
            handle: tokio::runtime::Handle::current(),
            channel,
        })
    }

    fn client(&self) -> api::snapshots_client::SnapshotsClient<Channel> {
        api::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    fn req<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            crate::api::NAMESPACE_HEADER,
            tonic::metadata::MetadataValue::from_static(PROXY_NAMESPACE),
        );
        r
    }

    fn err(&self, key: &str, s: &tonic::Status) -> Error {
        let msg = format!("proxy snapshotter {}: {}", self.name, s.message());
        match s.code() {
            tonic::Code::NotFound => Error::NotFound {
                what: "snapshot",
                id: key.to_string(),
            },
            tonic::Code::AlreadyExists => Error::AlreadyExists {
                what: "snapshot",
                id: key.to_string(),
            },
            tonic::Code::InvalidArgument => Error::Invalid(msg),
            tonic::Code::FailedPrecondition => Error::Precondition(msg),
            tonic::Code::Unimplemented => Error::NotImplemented(msg),
            _ => Error::Proxy {
                name: self.name.clone(),
                address: self.address.clone(),
                msg: s.to_string(),
            },
        }
    }

    fn mounts_from(ms: Vec<protos::containerd::types::Mount>) -> Vec<Mount> {
        ms.into_iter()
            .map(|m| Mount {
                fs_type: m.r#type,
                source: m.source,
                options: m.options,
            })
            .collect()
    }

    /// Prepare or view.
    pub fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        view: bool,
    ) -> Result<Vec<Mount>> {
        let mut c = self.client();
        let r = self.handle.block_on(async {
            if view {
                c.view(Self::req(api::ViewSnapshotRequest {
                    snapshotter: self.name.clone(),
                    key: key.into(),
                    parent: parent.into(),
                    labels,
                }))
                .await
                .map(|r| r.into_inner().mounts)
            } else {
                c.prepare(Self::req(api::PrepareSnapshotRequest {
                    snapshotter: self.name.clone(),
                    key: key.into(),
                    parent: parent.into(),
                    labels,
                }))
                .await
                .map(|r| r.into_inner().mounts)
            }
        });
        r.map(Self::mounts_from).map_err(|s| self.err(key, &s))
    }

    /// Commit.
    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let mut c = self.client();
        let msg = api::CommitSnapshotRequest {
            snapshotter: self.name.clone(),
            name: name.into(),
            key: key.into(),
            labels,
        };
        self.handle
            .block_on(c.commit(Self::req(msg)))
            .map(|_| ())
            .map_err(|s| self.err(key, &s))
    }

    /// Remove.
    pub fn remove(&self, key: &str) -> Result<()> {
        let mut c = self.client();
        let msg = api::RemoveSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        self.handle
            .block_on(c.remove(Self::req(msg)))
            .map(|_| ())
            .map_err(|s| self.err(key, &s))
    }

    /// Mounts.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let mut c = self.client();
        let msg = api::MountsRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        self.handle
            .block_on(c.mounts(Self::req(msg)))
            .map(|r| Self::mounts_from(r.into_inner().mounts))
            .map_err(|s| self.err(key, &s))
    }

    /// Usage.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let mut c = self.client();
        let msg = api::UsageRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        self.handle
            .block_on(c.usage(Self::req(msg)))
            .map(|r| {
                let u = r.into_inner();
                Usage {
                    inodes: u.inodes,
                    size: u.size,
                }
            })
            .map_err(|s| self.err(key, &s))
    }

    /// Every snapshot as (name, parent).
    pub fn list(&self) -> Result<Vec<(String, String)>> {
        let mut c = self.client();
        let msg = api::ListSnapshotsRequest {
            snapshotter: self.name.clone(),
            filters: vec![],
        };
        self.handle
            .block_on(async {
                let mut s = c.list(Self::req(msg)).await?.into_inner();
                let mut out = Vec::new();
                while let Some(batch) = s.message().await? {
                    out.extend(batch.info.into_iter().map(|i| (i.name, i.parent)));
                }
                Ok(out)
            })
            .map_err(|s: tonic::Status| self.err("", &s))
    }

    /// Cleanup.
    pub fn cleanup(&self) -> Result<()> {
        let mut c = self.client();
        let msg = api::CleanupRequest {
            snapshotter: self.name.clone(),
        };
        match self.handle.block_on(c.cleanup(Self::req(msg))) {
            Ok(_) => Ok(()),
            // Cleanup is optional for snapshotters (containerd's `Cleaner` interface).
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Err(s) => Err(self.err("", &s)),
        }
    }
}
