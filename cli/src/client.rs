//! The connection to berthd (or containerd): one tonic `Channel` over the daemon's unix socket,
//! with the namespace sent on every call as the `containerd-namespace` gRPC metadata header
//! (containerd `namespaces/grpc.go`, `GRPCHeader`). Every command gets its service clients here.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use protos::services;

/// Largest response we accept: containerd raises its own send limit to 16 MiB; lists of
/// containers with big specs can exceed tonic's 4 MiB default.
const MAX_MESSAGE: usize = 64 << 20;

/// gRPC metadata key carrying the namespace (containerd `namespaces.GRPCHeader`).
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// What went wrong while connecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to dial {address:?}: {source}")]
    Dial {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("failed to dial {address:?}: connect timeout after {timeout:?}")]
    DialTimeout { address: String, timeout: Duration },
    #[error("invalid namespace {0:?}: must be printable ASCII")]
    BadNamespace(String),
    #[error("invalid lease id {0:?}: must be printable ASCII")]
    BadLease(String),
}

/// gRPC metadata key carrying the lease that protects new content and snapshots from GC
/// (containerd `leases.GRPCHeader`).
pub const LEASE_HEADER: &str = "containerd-lease";

/// Adds the namespace (and, inside a lease, the lease) header to each request.
#[derive(Clone)]
pub struct Headers {
    namespace: MetadataValue<Ascii>,
    lease: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = &self.lease {
            req.metadata_mut().insert(LEASE_HEADER, lease.clone());
        }
        Ok(req)
    }
}

/// The transport every service client shares.
pub type Transport = InterceptedService<Channel, Headers>;

/// A connected client: cheap to clone, one HTTP/2 connection underneath.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: String,
    lease: Option<String>,
    header: Headers,
}

/// Strips the optional `unix://` scheme containerd's clients accept.
fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.strip_prefix("unix://").unwrap_or(address))
}

impl Client {
    /// Connects to the daemon at `address` (a unix socket path, optionally `unix://`-prefixed).
    /// `connect_timeout` of zero means containerd's default of 10 s.
    pub async fn connect(
        address: &str,
        namespace: &str,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        let header = namespace
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| Error::BadNamespace(namespace.to_string()))?;
        let path = socket_path(address);
        // The URI is required by tonic but unused: the connector below ignores it.
        let endpoint = Endpoint::from_static("http://berth.invalid");
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        let timeout = if connect_timeout.is_zero() {
            Duration::from_secs(10)
        } else {
            connect_timeout
        };
        let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| Error::DialTimeout {
                address: address.to_string(),
                timeout,
            })?
            .map_err(|source| Error::Dial {
                address: address.to_string(),
                source,
            })?;
        log::debug!("connected to {address} (namespace {namespace})");
        Ok(Client {
            channel,
            namespace: namespace.to_string(),
            lease: None,
            header: Headers {
                namespace: header,
                lease: None,
            },
        })
    }

    /// A client whose calls all run inside lease `id` (what containerd's `leases.WithLease`
    /// context does), so content and snapshots written are held until the lease goes.
    pub fn with_lease(&self, id: &str) -> Result<Self, Error> {
        let lease = id
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| Error::BadLease(id.to_string()))?;
        let mut client = self.clone();
        client.header.lease = Some(lease);
        client.lease = Some(id.to_string());
        Ok(client)
    }

    /// The lease this client's calls run in, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// The namespace every call is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.header.clone())
    }

    pub fn version(&self) -> services::version::v1::version_client::VersionClient<Transport> {
        services::version::v1::version_client::VersionClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn introspection(
        &self,
    ) -> services::introspection::v1::introspection_client::IntrospectionClient<Transport> {
        services::introspection::v1::introspection_client::IntrospectionClient::new(
            self.transport(),
        )
        .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn namespaces(
        &self,
    ) -> services::namespaces::v1::namespaces_client::NamespacesClient<Transport> {
        services::namespaces::v1::namespaces_client::NamespacesClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn images(&self) -> services::images::v1::images_client::ImagesClient<Transport> {
        services::images::v1::images_client::ImagesClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn content(&self) -> services::content::v1::content_client::ContentClient<Transport> {
        services::content::v1::content_client::ContentClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn leases(&self) -> services::leases::v1::leases_client::LeasesClient<Transport> {
        services::leases::v1::leases_client::LeasesClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn snapshots(
        &self,
    ) -> services::snapshots::v1::snapshots_client::SnapshotsClient<Transport> {
        services::snapshots::v1::snapshots_client::SnapshotsClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn diff(&self) -> services::diff::v1::diff_client::DiffClient<Transport> {
        services::diff::v1::diff_client::DiffClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn containers(
        &self,
    ) -> services::containers::v1::containers_client::ContainersClient<Transport> {
        services::containers::v1::containers_client::ContainersClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn tasks(&self) -> services::tasks::v1::tasks_client::TasksClient<Transport> {
        services::tasks::v1::tasks_client::TasksClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn events(&self) -> services::events::v1::events_client::EventsClient<Transport> {
        services::events::v1::events_client::EventsClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }
}
