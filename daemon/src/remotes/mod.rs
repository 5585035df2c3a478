//! `remotes`: the OCI distribution (Docker Registry HTTP API v2) client, shared by the
//! `berth` CLI (`images pull/push`, `content fetch`) and berthd's transfer service, as
//! containerd's `core/remotes/docker` is shared by ctr and containerd.
//!
//! - `reference`: `host/repo:tag` / `@digest` parsing with docker.io normalisation.
//! - `hosts`: which endpoints serve a registry (mirrors, then the server), with
//!   capabilities, TLS, headers and credentials; separate from HTTP.
//! - `tls`: rustls client configurations (system CAs + CA files, client certificates,
//!   skip-verify).
//! - `auth`: credentials, `WWW-Authenticate` challenges, Basic and Bearer tokens.
//! - `docker`: the HTTP/1.1 transport over hyper and the [`Resolver`] (tag → descriptor),
//!   [`Fetcher`] (descriptor → digest-verified byte stream) and [`Pusher`].
//!
//! Nothing here knows a content store: callers decide where fetched bytes go and where
//! pushed bytes come from.

pub mod auth;
pub mod docker;
pub mod hosts;
pub mod reference;
pub mod tls;

pub use auth::Credentials;
pub use docker::{ByteStream, Content, FetchStream, Fetcher, Pusher, Resolver};
pub use hosts::{Capabilities, ConfigHosts, HostOptions, RegistryHost, RegistryHosts};
pub use reference::Reference;
pub use tls::TlsOptions;

pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Manifests and indexes above this are refused (containerd bounds JSON reads;
/// CVE-2023-25153).
pub const MANIFEST_LIMIT: usize = 20 << 20;

/// Whether `mt` is an image manifest media type.
pub fn is_manifest(mt: &str) -> bool {
    mt == MT_DOCKER_MANIFEST || mt == MT_OCI_MANIFEST
}

/// Whether `mt` is an index / manifest list media type.
pub fn is_index(mt: &str) -> bool {
    mt == MT_DOCKER_LIST || mt == MT_OCI_INDEX
}

/// A content descriptor as the distribution API sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

impl From<&protos::types::Descriptor> for Descriptor {
    fn from(d: &protos::types::Descriptor) -> Self {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
        }
    }
}

impl From<Descriptor> for protos::types::Descriptor {
    fn from(d: Descriptor) -> Self {
        protos::types::Descriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: Default::default(),
        }
    }
}

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error(transparent)]
    Hosts(#[from] hosts::HostsError),
    #[error("invalid descriptor digest: {0}")]
    Digest(#[from] crate::content::DigestError),
    #[error("connect to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("invalid request for {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("TLS connection to {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid server name {0:?} for TLS")]
    ServerName(String),
    #[error("access denied for {url}: {status} (check the credentials, ctr's --user)")]
    Unauthorized {
        url: String,
        status: hyper::StatusCode,
    },
    #[error("{reference}: not found")]
    NotFound { reference: String },
    #[error("unexpected status from {method} {url}: {status}")]
    Status {
        method: hyper::Method,
        url: String,
        status: hyper::StatusCode,
    },
    #[error(
        "{reference}: Docker schema 1 manifests are not supported (deprecated by containerd too)"
    )]
    Schema1 { reference: String },
    #[error("too many redirects fetching {0}")]
    Redirects(String),
    #[error("invalid token response from {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("{url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("digest mismatch for {url}: got {got}, want {want}")]
    DigestMismatch {
        url: String,
        got: String,
        want: String,
    },
    #[error("size mismatch for {url}: got {got} bytes, want {want}")]
    SizeMismatch { url: String, got: u64, want: u64 },
    #[error("no host for {registry} has the {capability} capability (check hosts.toml)")]
    NoHosts {
        registry: String,
        capability: &'static str,
    },
    #[error("failed to resolve reference {reference:?}: {first}{}", tried_suffix(.tried))]
    Resolve {
        reference: String,
        first: Box<Error>,
        tried: Vec<String>,
    },
    #[error("failed to fetch {digest}: {first}{}", tried_suffix(.tried))]
    Fetch {
        digest: String,
        first: Box<Error>,
        tried: Vec<String>,
    },
    #[error("{url}: the registry asked for credentials again while a streamed upload was sent")]
    StreamConsumed { url: String },
}

/// ` (tried: a: …; b: …)` when more than one host was tried.
fn tried_suffix(tried: &[String]) -> String {
    if tried.len() > 1 {
        format!(" (hosts tried: {})", tried.join("; "))
    } else {
        String::new()
    }
}
