//! Registry hosts: which endpoints serve a registry name, in which order, with which
//! capabilities, TLS settings, headers and credentials (containerd's
//! `remotes/docker.RegistryHost` and `config.ConfigureHosts`). The resolver asks a
//! [`RegistryHosts`] for a name's hosts; this module knows nothing of HTTP.

use std::sync::Arc;

use super::auth::Credentials;
use super::tls::{self, TlsError, TlsOptions};

/// A host configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a host may be used for (containerd `HostCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch manifests and blobs by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    /// Push content and tags.
    pub push: bool,
}

impl Capabilities {
    /// Pull, resolve and push: the upstream server's default.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint serving a registry (a mirror or the server itself).
#[derive(Debug, Clone)]
pub struct RegistryHost {
    /// `host[:port]` to connect to.
    pub host: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The API root path, normally `/v2`.
    pub path: String,
    pub capabilities: Capabilities,
    /// The TLS client configuration for `https`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Credentials answering this host's auth challenges.
    pub credentials: Option<Credentials>,
}

impl RegistryHost {
    /// `scheme://host/path`, the base every API path is appended to.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }
}

/// Gives the hosts for a registry name, in the order to try them (mirrors, then server).
pub trait RegistryHosts: Send + Sync {
    fn hosts(&self, registry: &str) -> Result<Vec<RegistryHost>, HostsError>;
}

/// The options ctr's flags set for every host.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// `--plain-http`: talk HTTP, not HTTPS.
    pub plain_http: bool,
    /// `--user`: credentials for every host.
    pub credentials: Option<Credentials>,
    /// `--tlscacert`, `--tlscert`/`--tlskey`, `--skip-verify`.
    pub tls: TlsOptions,
}

/// Whether `host` (with optional port) is the local machine.
pub fn is_localhost(host: &str) -> bool {
    let h = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost" || h == "127.0.0.1" || h == "::1"
}

/// The API host for a registry name: Docker Hub's registry lives at registry-1.docker.io.
pub fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// Hosts from ctr's flags alone: the registry itself with every capability.
#[derive(Debug, Clone)]
pub struct DefaultHosts {
    pub options: HostOptions,
}

impl RegistryHosts for DefaultHosts {
    fn hosts(&self, registry: &str) -> Result<Vec<RegistryHost>, HostsError> {
        let opts = &self.options;
        let plain = opts.plain_http || (is_localhost(registry) && !opts.tls.is_set());
        Ok(vec![RegistryHost {
            host: api_host(registry).to_string(),
            scheme: if plain { "http" } else { "https" }.to_string(),
            path: "/v2".to_string(),
            capabilities: Capabilities::ALL,
            tls: tls::client_config(&opts.tls)?,
            headers: Vec::new(),
            credentials: opts.credentials.clone(),
        }])
    }
}
