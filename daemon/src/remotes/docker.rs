//! The registry HTTP client: one HTTP/1.1 connection per request over plain TCP or rustls,
//! auth challenges answered (Basic, or Bearer tokens from the challenge's realm) and the
//! answer remembered per host, redirects followed for GETs.
//!
//! [`Resolver`] turns a reference into a descriptor, trying the hosts with the `resolve`
//! capability in order (a host that fails — connection refused, 5xx, 404 — falls through
//! to the next, as containerd's resolver does). [`Fetcher`] streams a descriptor's bytes
//! from the `pull` hosts, verifying size and digest at the end; [`Pusher`] uploads blobs
//! (`HEAD`, then `POST …/blobs/uploads/` and a monolithic `PUT <location>?digest=…`) and
//! puts manifests by digest or tag to the first `push` host.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};

use super::auth::{self, Challenge};
use super::hosts::{RegistryHost, RegistryHosts};
use super::{is_index, is_manifest, Descriptor, Error, Reference, MANIFEST_LIMIT};

/// The manifest media types a resolve accepts, as containerd sends them.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// containerd's dialer timeout and TLS handshake timeout (`config.ConfigureHosts`).
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A stream of bytes to upload.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What [`Pusher::push`] uploads.
pub enum Content {
    /// In memory (manifests; can be resent after an auth challenge).
    Bytes(Bytes),
    /// Streamed once, `size` of the descriptor long.
    Stream(ByteStream),
}

type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A request body that may be needed twice (once more after an auth challenge).
enum Body {
    Empty,
    Bytes(Bytes),
    Stream {
        stream: Option<ByteStream>,
        len: u64,
    },
}

impl Body {
    /// (Content-Length, body) for one attempt; `None` once a stream has been sent.
    fn attempt(&mut self) -> Option<(u64, ReqBody)> {
        match self {
            Body::Empty => Some((0, Empty::new().map_err(|n| match n {}).boxed_unsync())),
            Body::Bytes(b) => Some((
                b.len() as u64,
                Full::new(b.clone()).map_err(|n| match n {}).boxed_unsync(),
            )),
            Body::Stream { stream, len } => stream.take().map(|s| {
                let frames = s.map_ok(hyper::body::Frame::data);
                (*len, StreamBody::new(frames).boxed_unsync())
            }),
        }
    }
}

/// Authorization headers that worked, per host, shared by resolver, fetchers and pushers.
#[derive(Default)]
struct Session {
    authorization: Mutex<HashMap<String, String>>,
}

fn authority_of(url: &str) -> Option<String> {
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.authority().map(ToString::to_string))
}

impl Session {
    fn cached(&self, host: &str) -> Option<String> {
        self.authorization
            .lock()
            .ok()
            .and_then(|m| m.get(host).cloned())
    }

    fn remember(&self, host: &str, auth: String) {
        if let Ok(mut m) = self.authorization.lock() {
            m.insert(host.to_string(), auth);
        }
    }

    /// A request with one auth challenge answered (the answer then remembered).
    async fn call(
        &self,
        host: &RegistryHost,
        method: &Method,
        url: &str,
        accept: Option<&str>,
        body: &mut Body,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let cached = self.cached(&host.host);
        let Some((len, first)) = body.attempt() else {
            return Err(Error::StreamConsumed { url: url.into() });
        };
        let resp = send(
            host,
            method,
            url,
            accept,
            cached.as_deref(),
            (len, first),
            content_type,
        )
        .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = Challenge::parse(
            resp.headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
        let auth = match challenge.scheme.as_str() {
            "basic" => host
                .credentials
                .as_ref()
                .map(auth::Credentials::basic_header),
            "bearer" => Some(self.token(host, &challenge).await?),
            _ => None,
        };
        let Some(auth) = auth else {
            return Err(Error::Unauthorized {
                url: url.to_string(),
                status: resp.status(),
            });
        };
        let Some(again) = body.attempt() else {
            return Err(Error::StreamConsumed { url: url.into() });
        };
        let resp = send(host, method, url, accept, Some(&auth), again, content_type).await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                url: url.to_string(),
                status: resp.status(),
            });
        }
        self.remember(&host.host, auth);
        Ok(resp)
    }

    /// A Bearer token for `challenge` (with the host's credentials when it has some).
    async fn token(&self, host: &RegistryHost, challenge: &Challenge) -> Result<String, Error> {
        let realm = challenge.params.get("realm").cloned().unwrap_or_default();
        let url = challenge.token_url().ok_or_else(|| Error::Token {
            realm: realm.clone(),
            reason: "the challenge names no realm".into(),
        })?;
        let basic = host
            .credentials
            .as_ref()
            .map(auth::Credentials::basic_header);
        let resp = send(
            host,
            &Method::GET,
            &url,
            None,
            basic.as_deref(),
            Body::Empty.attempt().unwrap_or_else(empty_body),
            None,
        )
        .await?;
        if !resp.status().is_success() {
            return Err(Error::Token {
                realm,
                reason: resp.status().to_string(),
            });
        }
        let body = read_limited(resp.into_body(), &url, 1 << 20).await?;
        let token = auth::token_from_response(&body).map_err(|reason| Error::Token {
            realm: realm.clone(),
            reason,
        })?;
        Ok(format!("Bearer {token}"))
    }

    /// GET with auth challenges answered and redirects followed (credentials are not sent
    /// to a redirect on another host).
    async fn get(
        &self,
        host: &RegistryHost,
        url: &str,
        accept: Option<&str>,
    ) -> Result<(String, hyper::Response<Incoming>), Error> {
        let mut url = url.to_string();
        for _ in 0..5 {
            let resp = if authority_of(&url).as_deref() == Some(host.host.as_str()) {
                self.call(host, &Method::GET, &url, accept, &mut Body::Empty, None)
                    .await?
            } else {
                send(host, &Method::GET, &url, accept, None, empty_body(), None).await?
            };
            if resp.status().is_redirection() {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                url = absolute(&url, &next);
                continue;
            }
            return Ok((url, resp));
        }
        Err(Error::Redirects(url))
    }
}

fn empty_body() -> (u64, ReqBody) {
    (0, Empty::new().map_err(|n| match n {}).boxed_unsync())
}

/// A `Location` made absolute against the URL it came from.
fn absolute(from: &str, location: &str) -> String {
    if location.starts_with('/') {
        let scheme = from.split("://").next().unwrap_or("http");
        let authority = authority_of(from).unwrap_or_default();
        format!("{scheme}://{authority}{location}")
    } else {
        location.to_string()
    }
}

/// One request on a new connection to the URL's authority (TLS with the host's config).
async fn send(
    host: &RegistryHost,
    method: &Method,
    url: &str,
    accept: Option<&str>,
    auth: Option<&str>,
    (len, body): (u64, ReqBody),
    content_type: Option<&str>,
) -> Result<hyper::Response<Incoming>, Error> {
    let uri: hyper::Uri =
        url.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| Error::Request {
                url: url.to_string(),
                source: e.into(),
            })?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri
        .authority()
        .map_or_else(String::new, ToString::to_string);
    let has_port = uri.port().is_some();
    let addr = if has_port {
        authority.clone()
    } else if https {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    let dial = host.dial_timeout.unwrap_or(DIAL_TIMEOUT);
    let stream = match tokio::time::timeout(dial, tokio::net::TcpStream::connect(&addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {dial:?}"),
        )),
    }
    .map_err(|source| Error::Connect {
        host: addr.clone(),
        source,
    })?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(hyper::header::HOST, authority.as_str());
    for (k, v) in &host.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(a) = accept {
        req = req.header(ACCEPT, a);
    }
    if let Some(a) = auth {
        req = req.header(AUTHORIZATION, a);
    }
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req = req.header(hyper::header::CONTENT_LENGTH, len);
    let req = req.body(body).map_err(|source| Error::Request {
        url: url.to_string(),
        source,
    })?;
    if https {
        let name_str = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(name_str.clone())
            .map_err(|_| Error::ServerName(name_str))?;
        let handshake = tokio_rustls::TlsConnector::from(host.tls.clone()).connect(name, stream);
        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}"),
            )),
        }
        .map_err(|source| Error::Tls { host: addr, source })?;
        send_on(tls, req, url).await
    } else {
        send_on(stream, req, url).await
    }
}

/// One HTTP/1.1 request on an established connection.
async fn send_on<IO>(
    io: IO,
    req: Request<ReqBody>,
    url: &str,
) -> Result<hyper::Response<Incoming>, Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |source| Error::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http_err)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(http_err)
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_limited(body: Incoming, url: &str, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut stream = BodyStream::new(body);
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|source| Error::Http {
            url: url.to_string(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err(Error::TooLarge {
                    url: url.to_string(),
                    limit: limit as u64,
                });
            }
        }
    }
    Ok(out)
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A fetched blob's bytes; the stream ends with an error if the size or digest differ
/// from the descriptor's.
pub struct FetchStream {
    inner: BoxStream<'static, Result<Bytes, Error>>,
}

impl Stream for FetchStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Verification state of a streaming fetch.
struct Verify {
    body: BodyStream<Incoming>,
    hasher: Sha256,
    read: u64,
    want_size: u64,
    want_digest: String,
    url: String,
}

impl FetchStream {
    fn verified(url: String, desc: &Descriptor, body: Incoming) -> Self {
        let state = Verify {
            body: BodyStream::new(body),
            hasher: Sha256::new(),
            read: 0,
            want_size: u64::try_from(desc.size).unwrap_or(0),
            want_digest: desc.digest.clone(),
            url,
        };
        let inner = futures::stream::unfold(Some(state), |st| async move {
            let mut v = st?;
            loop {
                match v.body.next().await {
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        v.read += data.len() as u64;
                        if v.read > v.want_size {
                            let err = Error::SizeMismatch {
                                url: v.url.clone(),
                                got: v.read,
                                want: v.want_size,
                            };
                            return Some((Err(err), None));
                        }
                        v.hasher.update(&data);
                        return Some((Ok(data), Some(v)));
                    }
                    Some(Err(source)) => {
                        let err = Error::Http { url: v.url, source };
                        return Some((Err(err), None));
                    }
                    None => {
                        if v.read != v.want_size {
                            let err = Error::SizeMismatch {
                                url: v.url,
                                got: v.read,
                                want: v.want_size,
                            };
                            return Some((Err(err), None));
                        }
                        let got = format!("sha256:{}", hex::encode(v.hasher.finalize()));
                        if got != v.want_digest {
                            let err = Error::DigestMismatch {
                                url: v.url,
                                got,
                                want: v.want_digest,
                            };
                            return Some((Err(err), None));
                        }
                        return None;
                    }
                }
            }
        });
        FetchStream {
            inner: inner.boxed(),
        }
    }

    fn from_bytes(data: Vec<u8>) -> Self {
        FetchStream {
            inner: futures::stream::iter([Ok(Bytes::from(data))]).boxed(),
        }
    }

    /// Collects the whole (verified) body, refusing more than `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() > limit {
                return Err(Error::TooLarge {
                    url: "fetched content".into(),
                    limit: limit as u64,
                });
            }
        }
        Ok(out)
    }
}

/// Resolves references against a registry's hosts (containerd `docker.NewResolver`).
#[derive(Clone)]
pub struct Resolver {
    hosts: Arc<dyn RegistryHosts>,
    session: Arc<Session>,
    /// Manifest bodies read while resolving, handed to the first fetch of that digest.
    resolved: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

/// The hosts for `reference` with one capability, in order.
fn hosts_with(
    hosts: &dyn RegistryHosts,
    reference: &Reference,
    capability: &'static str,
) -> Result<Vec<RegistryHost>, Error> {
    let all = hosts.hosts(&reference.host)?;
    let picked: Vec<RegistryHost> = all
        .into_iter()
        .filter(|h| match capability {
            "resolve" => h.capabilities.resolve,
            "push" => h.capabilities.push,
            _ => h.capabilities.pull,
        })
        .collect();
    if picked.is_empty() {
        return Err(Error::NoHosts {
            registry: reference.host.clone(),
            capability,
        });
    }
    Ok(picked)
}

/// `?ns=<registry>` when `host` is a mirror of `registry` (containerd `addNamespace`).
fn ns_query(host: &RegistryHost, registry: &str) -> String {
    if host.is_proxy_for(registry) {
        format!("?ns={}", auth::query_escape(registry))
    } else {
        String::new()
    }
}

/// The media type of a manifest body served with a generic content type.
fn sniff_media_type(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    if v.get("schemaVersion").and_then(serde_json::Value::as_i64) == Some(1) {
        return Some("schema1".to_string());
    }
    v.get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or_else(|| {
            // An OCI index or manifest may omit mediaType.
            if v.get("manifests").is_some() {
                Some(super::MT_OCI_INDEX.to_string())
            } else if v.get("layers").is_some() {
                Some(super::MT_OCI_MANIFEST.to_string())
            } else {
                None
            }
        })
}

impl Resolver {
    pub fn new(hosts: Arc<dyn RegistryHosts>) -> Self {
        Resolver {
            hosts,
            session: Arc::default(),
            resolved: Arc::default(),
        }
    }

    /// The reference's name and root descriptor (manifest or index), from the first
    /// `resolve` host that has it.
    pub async fn resolve(&self, reference: &Reference) -> Result<(String, Descriptor), Error> {
        let hosts = hosts_with(self.hosts.as_ref(), reference, "resolve")?;
        let mut tried = Vec::new();
        let mut first_err: Option<Error> = None;
        for host in &hosts {
            match self.resolve_on(host, reference).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => tried.push(format!("{}: not found", host.host)),
                Err(e) => {
                    log::debug!("resolve {} on {}: {e}", reference.name, host.host);
                    tried.push(format!("{}: {e}", host.host));
                    first_err.get_or_insert(e);
                }
            }
        }
        let first = first_err.unwrap_or_else(|| Error::NotFound {
            reference: reference.name.clone(),
        });
        Err(Error::Resolve {
            reference: reference.name.clone(),
            first: Box::new(first),
            tried,
        })
    }

    /// `Ok(None)` when the host answers 404.
    async fn resolve_on(
        &self,
        host: &RegistryHost,
        reference: &Reference,
    ) -> Result<Option<(String, Descriptor)>, Error> {
        let url = format!(
            "{}/{}/manifests/{}{}",
            host.base_url(),
            reference.repo,
            reference.object,
            ns_query(host, &reference.host)
        );
        let (url, resp) = self.session.get(host, &url, Some(MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Status {
                method: Method::GET,
                url,
                status,
            });
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = read_limited(resp.into_body(), &url, MANIFEST_LIMIT).await?;
        // Some registries answer with a generic content type: the manifest names its own.
        let media_type = if is_manifest(&media_type) || is_index(&media_type) {
            media_type
        } else {
            let declared = sniff_media_type(&body).unwrap_or_default();
            if declared == "schema1" {
                return Err(Error::Schema1 {
                    reference: reference.name.clone(),
                });
            }
            declared
        };
        let digest = sha256_digest(&body);
        if reference.is_digest() && reference.object != digest {
            return Err(Error::DigestMismatch {
                url,
                got: digest,
                want: reference.object.clone(),
            });
        }
        let desc = Descriptor {
            media_type,
            digest: digest.clone(),
            size: i64::try_from(body.len()).unwrap_or(i64::MAX),
        };
        if let Ok(mut cache) = self.resolved.lock() {
            cache.insert(digest, body);
        }
        Ok(Some((reference.name.clone(), desc)))
    }

    /// A fetcher for content of `reference`'s repository.
    pub fn fetcher(&self, reference: &Reference) -> Result<Fetcher, Error> {
        Ok(Fetcher {
            hosts: hosts_with(self.hosts.as_ref(), reference, "pull")?,
            repo: reference.repo.clone(),
            registry: reference.host.clone(),
            session: self.session.clone(),
            resolved: self.resolved.clone(),
        })
    }

    /// A pusher to `reference`'s repository (the first host with the push capability).
    pub fn pusher(&self, reference: &Reference) -> Result<Pusher, Error> {
        let mut hosts = hosts_with(self.hosts.as_ref(), reference, "push")?;
        Ok(Pusher {
            host: hosts.remove(0),
            reference: reference.clone(),
            session: self.session.clone(),
        })
    }
}

/// Fetches content by descriptor from a repository's `pull` hosts, in order.
pub struct Fetcher {
    hosts: Vec<RegistryHost>,
    repo: String,
    /// The registry name the reference uses (for mirrors' `?ns=`).
    registry: String,
    session: Arc<Session>,
    resolved: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Fetcher {
    /// The bytes of `desc` (manifests and indexes from `/manifests/`, the rest from
    /// `/blobs/`), verified against its size and digest as they stream.
    pub async fn fetch(&self, desc: &Descriptor) -> Result<FetchStream, Error> {
        crate::content::Digest::parse(&desc.digest)?;
        if let Some(body) = self
            .resolved
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&desc.digest))
        {
            if sha256_digest(&body) == desc.digest && body.len() as u64 == desc.size as u64 {
                return Ok(FetchStream::from_bytes(body));
            }
        }
        let kind = if is_manifest(&desc.media_type) || is_index(&desc.media_type) {
            "manifests"
        } else {
            "blobs"
        };
        let mut tried = Vec::new();
        let mut first_err = None;
        for host in &self.hosts {
            let url = format!(
                "{}/{}/{kind}/{}{}",
                host.base_url(),
                self.repo,
                desc.digest,
                ns_query(host, &self.registry)
            );
            let accept = (kind == "manifests").then_some(MANIFEST_ACCEPT);
            let err = match self.session.get(host, &url, accept).await {
                Ok((url, resp)) if resp.status().is_success() => {
                    return Ok(FetchStream::verified(url, desc, resp.into_body()));
                }
                Ok((url, resp)) => Error::Status {
                    method: Method::GET,
                    url,
                    status: resp.status(),
                },
                Err(e) => e,
            };
            log::debug!("fetch {} from {}: {err}", desc.digest, host.host);
            tried.push(format!("{}: {err}", host.host));
            first_err.get_or_insert(err);
        }
        Err(Error::Fetch {
            digest: desc.digest.clone(),
            first: Box::new(first_err.unwrap_or(Error::NotFound {
                reference: desc.digest.clone(),
            })),
            tried,
        })
    }
}

/// Pushes content to one repository on one host.
pub struct Pusher {
    host: RegistryHost,
    reference: Reference,
    session: Arc<Session>,
}

impl Pusher {
    fn url(&self, kind: &str, object: &str) -> String {
        format!(
            "{}/{}/{kind}/{object}",
            self.host.base_url(),
            self.reference.repo
        )
    }

    /// Whether the registry already has `desc` (`HEAD`).
    pub async fn exists(&self, desc: &Descriptor) -> Result<bool, Error> {
        crate::content::Digest::parse(&desc.digest)?;
        let kind = if is_manifest(&desc.media_type) || is_index(&desc.media_type) {
            "manifests"
        } else {
            "blobs"
        };
        let url = self.url(kind, &desc.digest);
        let resp = self
            .session
            .call(
                &self.host,
                &Method::HEAD,
                &url,
                None,
                &mut Body::Empty,
                None,
            )
            .await?;
        Ok(resp.status().is_success())
    }

    /// Uploads `desc`: manifests and indexes are put by digest, blobs uploaded
    /// monolithically.
    pub async fn push(&self, desc: &Descriptor, content: Content) -> Result<(), Error> {
        crate::content::Digest::parse(&desc.digest)?;
        if is_manifest(&desc.media_type) || is_index(&desc.media_type) {
            return self.put_manifest(desc, content, &desc.digest).await;
        }
        let start = self.url("blobs", "uploads/");
        let resp = self
            .session
            .call(
                &self.host,
                &Method::POST,
                &start,
                None,
                &mut Body::Empty,
                None,
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Error::Status {
                method: Method::POST,
                url: start,
                status: resp.status(),
            });
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
            .to_string();
        let location = absolute(&start, &location);
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={}", auth::query_escape(&desc.digest));
        let mut body = body_of(content, desc);
        let resp = self
            .session
            .call(
                &self.host,
                &Method::PUT,
                &put,
                None,
                &mut body,
                Some("application/octet-stream"),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Error::Status {
                method: Method::PUT,
                url: put,
                status: resp.status(),
            });
        }
        Ok(())
    }

    /// Puts the manifest or index `desc` under the reference's tag (or its digest when
    /// the reference names one): the last step of pushing an image.
    pub async fn push_tagged(&self, desc: &Descriptor, content: Content) -> Result<(), Error> {
        crate::content::Digest::parse(&desc.digest)?;
        let object = if self.reference.is_digest() {
            desc.digest.clone()
        } else {
            self.reference.object.clone()
        };
        self.put_manifest(desc, content, &object).await
    }

    async fn put_manifest(
        &self,
        desc: &Descriptor,
        content: Content,
        object: &str,
    ) -> Result<(), Error> {
        let url = self.url("manifests", object);
        let mut body = body_of(content, desc);
        let resp = self
            .session
            .call(
                &self.host,
                &Method::PUT,
                &url,
                None,
                &mut body,
                Some(&desc.media_type),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Error::Status {
                method: Method::PUT,
                url,
                status: resp.status(),
            });
        }
        Ok(())
    }
}

fn body_of(content: Content, desc: &Descriptor) -> Body {
    match content {
        Content::Bytes(b) => Body::Bytes(b),
        Content::Stream(stream) => Body::Stream {
            stream: Some(stream),
            len: u64::try_from(desc.size).unwrap_or(0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotes::{Capabilities, HostOptions};

    struct Fixed(Vec<RegistryHost>);

    impl RegistryHosts for Fixed {
        fn hosts(&self, _: &str) -> Result<Vec<RegistryHost>, crate::remotes::hosts::HostsError> {
            Ok(self.0.clone())
        }
    }

    fn dead_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn host(port: u16, capabilities: Capabilities) -> RegistryHost {
        RegistryHost {
            host: format!("127.0.0.1:{port}"),
            scheme: "http".into(),
            path: "/v2".into(),
            capabilities,
            tls: crate::remotes::tls::client_config(&HostOptions::default().tls).unwrap(),
            headers: Vec::new(),
            credentials: None,
            dial_timeout: None,
        }
    }

    #[tokio::test]
    async fn resolve_errors_name_every_host_tried_and_skip_non_resolvers() {
        let (a, b, c) = (dead_port(), dead_port(), dead_port());
        let pull_only = Capabilities {
            resolve: false,
            ..Capabilities::ALL
        };
        let resolver = Resolver::new(Arc::new(Fixed(vec![
            host(a, Capabilities::ALL),
            host(b, pull_only),
            host(c, Capabilities::ALL),
        ])));
        let r = Reference::parse(&format!("127.0.0.1:{c}/x/y:1")).unwrap();
        let err = resolver.resolve(&r).await.unwrap_err().to_string();
        assert!(err.starts_with("failed to resolve reference"), "{err}");
        let ia = err.find(&format!("127.0.0.1:{a}: connect to")).expect(&err);
        let ic = err
            .rfind(&format!("127.0.0.1:{c}: connect to"))
            .expect(&err);
        assert!(ia < ic, "{err}");
        assert!(
            !err.contains(&format!("127.0.0.1:{b}")),
            "pull-only host used to resolve: {err}"
        );

        let only_pull = Resolver::new(Arc::new(Fixed(vec![host(b, pull_only)])));
        let err = only_pull.resolve(&r).await.unwrap_err().to_string();
        assert!(err.contains("resolve capability"), "{err}");
    }
}
