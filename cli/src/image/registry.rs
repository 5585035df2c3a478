//! `images pull` and `images push` against an OCI distribution registry (Docker Registry
//! HTTP API v2), client-side as containerd's client does them.
//!
//! Pull: resolve the
//! reference to a manifest (or index) by `GET /v2/<repo>/manifests/<tag>`, walk it for the
//! wanted platforms, stream every missing blob (`GET /v2/<repo>/blobs/<digest>`) into
//! Content.Write with its expected digest (the store verifies it on commit), label blobs
//! with `containerd.io/distribution.source.<host>` and parents with their GC references,
//! and create the image record.
//!
//! Push: children before parents; a blob the registry lacks (`HEAD` 404) is uploaded
//! monolithically (`POST …/blobs/uploads/` then `PUT <location>?digest=…`, streamed from the
//! content store), manifests are `PUT` by digest, the root by tag.
//!
//! Transport: HTTP/1.1 over TLS (rustls with the ring provider; the system CA bundle plus
//! `--tlscacert`, or no verification with `--skip-verify`), or over plain TCP with
//! `--plain-http` (also the default for localhost registries when no TLS option is given).
//! Authentication: Basic, and Bearer tokens from the realm a `WWW-Authenticate` challenge
//! names (with `--user` credentials when given).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, Empty};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::store::{self, Commit, Piece};
use super::{Descriptor, PlatformMatcher, JSON_LIMIT};
use crate::client::Client;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to resolve reference {0:?}: invalid reference format")]
    BadRef(String),
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
    #[error("read CA certificates from {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    TlsConfig(#[source] rustls::Error),
    #[error("access denied for {url}: {status} (check --user)")]
    Unauthorized { url: String, status: StatusCode },
    #[error("failed to resolve reference {reference:?}: {reference}: not found")]
    NotFound { reference: String },
    #[error("unexpected status from GET {url}: {status}")]
    Status { url: String, status: StatusCode },
    #[error(
        "{reference}: Docker schema 1 manifests are not supported (deprecated by containerd too)"
    )]
    Schema1 { reference: String },
    #[error("too many redirects fetching {0}")]
    Redirects(String),
    #[error("invalid token response from {realm}: {reason}")]
    Token { realm: String, reason: String },
    #[error("manifest {digest} is larger than {limit} bytes")]
    TooLarge { digest: String, limit: usize },
    #[error("digest mismatch for {url}: got {got}, want {want}")]
    Digest {
        url: String,
        got: String,
        want: String,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Image(#[from] super::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("invalid --user {0:?}: expected user:password")]
    User(String),
}

/// `host/repo:tag` or `host/repo@digest`, normalised like containerd (docker.io defaults).
#[derive(Debug, Clone)]
pub struct Reference {
    pub name: String,
    pub host: String,
    pub repo: String,
    pub object: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let name = super::import::normalize_reference(s).map_err(|_| Error::BadRef(s.into()))?;
        let (host, rest) = name
            .split_once('/')
            .ok_or_else(|| Error::BadRef(s.to_string()))?;
        let (repo, object) = match rest.split_once('@') {
            Some((r, d)) => (r.to_string(), d.to_string()),
            None => {
                let (r, t) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| Error::BadRef(s.to_string()))?;
                (r.to_string(), t.to_string())
            }
        };
        Ok(Reference {
            host: host.to_string(),
            name,
            repo,
            object,
        })
    }

    /// The API host: Docker Hub's registry lives at registry-1.docker.io.
    fn api_host(&self) -> &str {
        if self.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }
}

/// Pull options (ctr's flags).
pub struct Options {
    pub plain_http: bool,
    pub user: Option<String>,
    pub platform: PlatformMatcher,
    /// `--tlscacert`: extra CA certificates (PEM) to trust.
    pub tls_ca: Option<std::path::PathBuf>,
    /// `--skip-verify`: do not verify the registry's certificate.
    pub skip_verify: bool,
}

/// Accepts any server certificate (`--skip-verify`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The system CA bundle Debian's `ca-certificates` maintains.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn load_pem_certs(path: &std::path::Path, roots: &mut rustls::RootCertStore) -> Result<(), Error> {
    use rustls::pki_types::pem::PemObject;
    let ca_err = |reason: String| Error::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_err(e.to_string()))?;
    let mut n = 0;
    for c in certs {
        let c = c.map_err(|e| ca_err(e.to_string()))?;
        if roots.add(c).is_ok() {
            n += 1;
        }
    }
    if n == 0 {
        return Err(ca_err("no usable certificates".into()));
    }
    Ok(())
}

/// The rustls client configuration for `opts`.
fn tls_config(opts: &Options) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::TlsConfig)?;
    let config = if opts.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        // A missing system bundle is fine when --tlscacert names the CA.
        let _ = load_pem_certs(std::path::Path::new(SYSTEM_CA_BUNDLE), &mut roots);
        if let Some(ca) = &opts.tls_ca {
            load_pem_certs(ca, &mut roots)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// A request body: boxed so empty, in-memory and streamed bodies share one type.
type ReqBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What a request sends.
#[derive(Clone)]
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A blob streamed from the content store.
    Blob {
        client: &'a Client,
        digest: &'a str,
        size: i64,
    },
}

impl Payload<'_> {
    /// (Content-Length, body).
    async fn body(&self) -> Result<(u64, ReqBody), Error> {
        use http_body_util::{Full, StreamBody};
        Ok(match self {
            Payload::Empty => (0, Empty::new().map_err(|never| match never {}).boxed()),
            Payload::Bytes(b) => (
                b.len() as u64,
                Full::new(Bytes::copy_from_slice(b))
                    .map_err(|never| match never {})
                    .boxed(),
            ),
            Payload::Blob {
                client,
                digest,
                size,
            } => {
                let stream = client
                    .content()
                    .read(protos::services::content::v1::ReadContentRequest {
                        digest: (*digest).to_string(),
                        offset: 0,
                        size: 0,
                    })
                    .await?
                    .into_inner();
                let frames = stream.map(|r| {
                    r.map(|chunk| hyper::body::Frame::data(Bytes::from(chunk.data)))
                        .map_err(|s| std::io::Error::other(s.message().to_string()))
                });
                (
                    u64::try_from(*size).unwrap_or(0),
                    BodyExt::boxed(StreamBody::new(frames)),
                )
            }
        })
    }
}

/// A minimal registry client: one connection per request, auth remembered.
struct Registry {
    host: String,
    basic: Option<String>,
    authorization: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

/// A response with its body still streaming.
struct Response {
    headers: HeaderMap,
    body: hyper::body::Incoming,
    url: String,
}

fn is_localhost(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
    h == "localhost" || h == "127.0.0.1" || h == "::1" || h == "[::1]"
}

/// `key="value"` parameters of a `WWW-Authenticate` challenge.
fn challenge_params(header: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let rest = header.split_once(' ').map_or("", |(_, r)| r);
    let mut s = rest;
    while let Some((k, v)) = s.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, remaining) = if let Some(stripped) = v.strip_prefix('"') {
            match stripped.split_once('"') {
                Some((val, r)) => (val.to_string(), r),
                None => (stripped.to_string(), ""),
            }
        } else {
            match v.split_once(',') {
                Some((val, r)) => (val.trim().to_string(), r),
                None => (v.trim().to_string(), ""),
            }
        };
        out.insert(k, val);
        s = remaining;
    }
    out
}

/// Percent-encodes a query value.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Registry {
    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        self.send_with(hyper::Method::GET, url, accept, auth, Payload::Empty, None)
            .await
    }

    /// One request: `payload` is built anew for each attempt (a retry after an auth
    /// challenge re-reads a blob from the content store).
    async fn send_with(
        &self,
        method: hyper::Method,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
        payload: Payload<'_>,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
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
        let addr = if authority.contains(':') {
            authority.clone()
        } else if https {
            format!("{authority}:443")
        } else {
            format!("{authority}:80")
        };
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|source| Error::Connect {
                host: addr.clone(),
                source,
            })?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority.as_str());
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let (len, body) = payload.body().await?;
        req = req.header(hyper::header::CONTENT_LENGTH, len);
        let req = req.body(body).map_err(|source| Error::Request {
            url: url.to_string(),
            source,
        })?;
        if https {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| Error::ServerName(host.clone()))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|source| Error::Tls { host: addr, source })?;
            send_on(tls, req, url).await
        } else {
            send_on(stream, req, url).await
        }
    }

    /// Fetches a token for a Bearer challenge.
    async fn token(&self, params: &HashMap<String, String>) -> Result<String, Error> {
        let realm = params.get("realm").cloned().unwrap_or_default();
        let mut url = realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            if let Some(v) = params.get(key) {
                url.push(sep);
                url.push_str(&format!("{key}={}", query_escape(v)));
                sep = '&';
            }
        }
        let resp = self.send(&url, None, self.basic.as_deref()).await?;
        if !resp.status().is_success() {
            return Err(Error::Token {
                realm,
                reason: resp.status().to_string(),
            });
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Token {
            realm: realm.clone(),
            reason: e.to_string(),
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or(Error::Token {
                realm,
                reason: "no token in response".into(),
            })
    }

    /// A request with an auth challenge answered once (credentials then remembered).
    async fn call(
        &mut self,
        method: &hyper::Method,
        url: &str,
        accept: Option<&str>,
        payload: &Payload<'_>,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        let resp = self
            .send_with(
                method.clone(),
                url,
                accept,
                self.authorization.as_deref(),
                payload.clone(),
                content_type,
            )
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(hyper::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let scheme = challenge
            .split(' ')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let auth = match scheme.as_str() {
            "basic" if self.basic.is_some() => self.basic.clone(),
            "bearer" => Some(self.token(&challenge_params(&challenge)).await?),
            _ => None,
        };
        let Some(auth) = auth else {
            return Err(Error::Unauthorized {
                url: url.to_string(),
                status: resp.status(),
            });
        };
        let resp = self
            .send_with(
                method.clone(),
                url,
                accept,
                Some(&auth),
                payload.clone(),
                content_type,
            )
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                url: url.to_string(),
                status: resp.status(),
            });
        }
        self.authorization = Some(auth);
        Ok(resp)
    }

    /// GET with auth challenges answered and redirects followed.
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response, Error> {
        let mut url = url.to_string();
        for _ in 0..5 {
            let resp = self
                .call(&hyper::Method::GET, &url, accept, &Payload::Empty, None)
                .await?;
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                url = self.absolute(&url, &next);
                continue;
            }
            if !status.is_success() {
                return Err(Error::Status { url, status });
            }
            let (parts, body) = resp.into_parts();
            return Ok(Response {
                headers: parts.headers,
                body,
                url,
            });
        }
        Err(Error::Redirects(url))
    }

    /// A `Location` made absolute against the URL it came from.
    fn absolute(&self, from: &str, location: &str) -> String {
        if location.starts_with('/') {
            let scheme = from.split("://").next().unwrap_or("http");
            format!("{scheme}://{}{location}", self.host)
        } else {
            location.to_string()
        }
    }
}

/// One HTTP/1.1 request on an established connection.
async fn send_on<IO>(
    io: IO,
    req: Request<ReqBody>,
    url: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|source| Error::Http {
            url: url.to_string(),
            source,
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|source| Error::Http {
            url: url.to_string(),
            source,
        })
}

async fn read_limited(resp: Response, limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut stream = BodyStream::new(resp.body);
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|source| Error::Http {
            url: resp.url.clone(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > limit {
                return Err(Error::TooLarge {
                    digest: resp.url.clone(),
                    limit,
                });
            }
        }
    }
    Ok(out)
}

/// Pulls `reference`; returns the image record (not yet unpacked).
pub async fn pull(
    client: &Client,
    reference: &Reference,
    opts: &Options,
) -> Result<protos::services::images::v1::Image, Error> {
    let root = fetch_all(client, reference, opts).await?;
    let image =
        super::import::create_or_update(client, reference.name.clone(), root.to_proto()).await?;
    Ok(image)
}

/// Resolves `reference` and fetches all its content for the wanted platforms (ctr's
/// `content fetch`); returns the root descriptor. No image record is created.
pub async fn fetch_all(
    client: &Client,
    reference: &Reference,
    opts: &Options,
) -> Result<Descriptor, Error> {
    let (mut reg, base) = registry_for(reference, opts)?;

    // Resolve.
    let url = format!("{base}/manifests/{}", reference.object);
    let resp = match reg.get(&url, Some(MANIFEST_ACCEPT)).await {
        Err(Error::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
            return Err(Error::NotFound {
                reference: reference.name.clone(),
            })
        }
        r => r?,
    };
    let media_type = resp
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let body = read_limited(resp, JSON_LIMIT).await?;
    // Some registries answer with a generic content type: the manifest names its own.
    let media_type = if super::is_manifest(&media_type) || super::is_index(&media_type) {
        media_type
    } else {
        let declared = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
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
            })
            .unwrap_or_default();
        if declared == "schema1" {
            return Err(Error::Schema1 {
                reference: reference.name.clone(),
            });
        }
        declared
    };
    let digest = store::digest_of(&body);
    if reference.object.starts_with("sha256:") && reference.object != digest {
        return Err(Error::Digest {
            url,
            got: digest,
            want: reference.object.clone(),
        });
    }
    let root = Descriptor {
        media_type,
        digest,
        size: i64::try_from(body.len()).unwrap_or(i64::MAX),
        ..Descriptor::default()
    };
    println!("{}: resolved", reference.name);

    let source_label = (
        format!("containerd.io/distribution.source.{}", reference.host),
        reference.repo.clone(),
    );
    // Fetch depth-first: a parent is written after its children, with their GC labels.
    let mut written = 0usize;
    fetch(
        client,
        &mut reg,
        &base,
        &root,
        Some(body),
        opts,
        &source_label,
        &mut written,
    )
    .await?;
    println!("elapsed: done, {written} blob(s) fetched");
    Ok(root)
}

/// Fetches `desc` and (for manifests and indexes) its children for the wanted platforms.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    client: &Client,
    reg: &mut Registry,
    base: &str,
    desc: &Descriptor,
    known_body: Option<Vec<u8>>,
    opts: &Options,
    source_label: &(String, String),
    written: &mut usize,
) -> Result<(), Error> {
    let is_parent = super::is_index(&desc.media_type) || super::is_manifest(&desc.media_type);
    if is_parent {
        let body = match known_body {
            Some(b) => b,
            None => {
                let url = format!("{base}/manifests/{}", desc.digest);
                read_limited(reg.get(&url, Some(MANIFEST_ACCEPT)).await?, JSON_LIMIT).await?
            }
        };
        let mut children: Vec<Descriptor> = if super::is_index(&desc.media_type) {
            let idx: super::Index =
                serde_json::from_slice(&body).map_err(|source| super::Error::Json {
                    what: "index",
                    digest: desc.digest.clone(),
                    source,
                })?;
            idx.manifests
        } else {
            let m: super::Manifest =
                serde_json::from_slice(&body).map_err(|source| super::Error::Json {
                    what: "manifest",
                    digest: desc.digest.clone(),
                    source,
                })?;
            let mut v = vec![m.config];
            v.extend(m.layers);
            v
        };
        children.retain(|c| opts.platform.matches(c.platform.as_ref()));
        for c in &children {
            Box::pin(fetch(
                client,
                reg,
                base,
                c,
                None,
                opts,
                source_label,
                written,
            ))
            .await?;
        }
        let mut labels: HashMap<String, String> = HashMap::new();
        labels.insert(source_label.0.clone(), source_label.1.clone());
        labels.extend(super::import::gc_labels(&children));
        if !store::have_and_hold(client, &desc.digest).await? {
            let got = store::write_bytes(
                client,
                &format!("manifest-{}", desc.digest),
                body,
                labels.clone(),
            )
            .await?;
            if got != desc.digest {
                return Err(Error::Digest {
                    url: base.to_string(),
                    got,
                    want: desc.digest.clone(),
                });
            }
            *written += 1;
        }
        store::set_labels(client, &desc.digest, labels).await?;
        return Ok(());
    }
    if store::have_and_hold(client, &desc.digest).await? {
        let labels = [source_label.clone()].into_iter().collect();
        store::set_labels(client, &desc.digest, labels).await?;
        return Ok(());
    }
    let url = format!("{base}/blobs/{}", desc.digest);
    let resp = reg.get(&url, None).await?;
    let labels: HashMap<String, String> = [source_label.clone()].into_iter().collect();
    let digest = desc.digest.clone();
    let body = BodyStream::new(resp.body)
        .filter_map(|f| async move { f.ok().and_then(|f| f.into_data().ok()) })
        .map(|b: Bytes| Piece::Data(b.to_vec()))
        .chain(futures::stream::iter([Piece::End(Commit {
            digest,
            labels,
        })]));
    store::write_stream(client, &format!("fetch-{}", desc.digest), desc.size, body).await?;
    println!("{}: done", desc.digest);
    *written += 1;
    Ok(())
}

/// Connection settings for `reference` from `opts`.
fn registry_for(reference: &Reference, opts: &Options) -> Result<(Registry, String), Error> {
    let basic = opts
        .user
        .as_ref()
        .map(|u| {
            if u.contains(':') {
                Ok(format!("Basic {}", crate::util::base64(u.as_bytes())))
            } else {
                Err(Error::User(u.clone()))
            }
        })
        .transpose()?;
    let tls_options = opts.tls_ca.is_some() || opts.skip_verify;
    let plain = opts.plain_http || (is_localhost(&reference.host) && !tls_options);
    let scheme = if plain { "http" } else { "https" };
    let reg = Registry {
        host: reference.api_host().to_string(),
        basic,
        authorization: None,
        tls: tls_config(opts)?,
    };
    let base = format!("{scheme}://{}/v2/{}", reference.api_host(), reference.repo);
    Ok((reg, base))
}

/// Pushes the image whose target is `target` as `reference` (children first; the root
/// manifest or index last, by tag).
pub async fn push(
    client: &Client,
    reference: &Reference,
    target: &Descriptor,
    opts: &Options,
) -> Result<(), Error> {
    let (mut reg, base) = registry_for(reference, opts)?;
    push_tree(
        client,
        &mut reg,
        &base,
        target,
        opts,
        true,
        &reference.object,
    )
    .await?;
    println!("{}: pushed", reference.name);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn push_tree(
    client: &Client,
    reg: &mut Registry,
    base: &str,
    desc: &Descriptor,
    opts: &Options,
    root: bool,
    tag: &str,
) -> Result<(), Error> {
    let is_parent = super::is_index(&desc.media_type) || super::is_manifest(&desc.media_type);
    if !is_parent {
        return push_blob(client, reg, base, desc).await;
    }
    let body = store::read_blob(client, &desc.digest, JSON_LIMIT).await?;
    let mut children = if super::is_index(&desc.media_type) {
        serde_json::from_slice::<super::Index>(&body)
            .map_err(|source| super::Error::Json {
                what: "index",
                digest: desc.digest.clone(),
                source,
            })?
            .manifests
    } else {
        let m: super::Manifest =
            serde_json::from_slice(&body).map_err(|source| super::Error::Json {
                what: "manifest",
                digest: desc.digest.clone(),
                source,
            })?;
        let mut v = vec![m.config];
        v.extend(m.layers);
        v
    };
    children.retain(|c| opts.platform.matches(c.platform.as_ref()));
    for c in &children {
        Box::pin(push_tree(client, reg, base, c, opts, false, tag)).await?;
    }
    let target = if root && !tag.starts_with("sha256:") {
        tag.to_string()
    } else {
        desc.digest.clone()
    };
    let url = format!("{base}/manifests/{target}");
    let resp = reg
        .call(
            &hyper::Method::PUT,
            &url,
            None,
            &Payload::Bytes(&body),
            Some(&desc.media_type),
        )
        .await?;
    if !resp.status().is_success() {
        return Err(Error::Status {
            url,
            status: resp.status(),
        });
    }
    println!("manifest-{}: done", desc.digest);
    Ok(())
}

async fn push_blob(
    client: &Client,
    reg: &mut Registry,
    base: &str,
    desc: &Descriptor,
) -> Result<(), Error> {
    let url = format!("{base}/blobs/{}", desc.digest);
    let head = reg
        .call(&hyper::Method::HEAD, &url, None, &Payload::Empty, None)
        .await?;
    if head.status().is_success() {
        println!("{}: exists", desc.digest);
        return Ok(());
    }
    let start = format!("{base}/blobs/uploads/");
    let resp = reg
        .call(&hyper::Method::POST, &start, None, &Payload::Empty, None)
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(Error::Status {
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
    let location = reg.absolute(&start, &location);
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={}", query_escape(&desc.digest));
    let payload = Payload::Blob {
        client,
        digest: &desc.digest,
        size: desc.size,
    };
    let resp = reg
        .call(
            &hyper::Method::PUT,
            &put,
            None,
            &payload,
            Some("application/octet-stream"),
        )
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(Error::Status {
            url: put,
            status: resp.status(),
        });
    }
    println!("{}: done", desc.digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_host_repo_object() {
        let r = Reference::parse("127.0.0.1:5000/library/busybox:test").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.object.as_str()),
            ("127.0.0.1:5000", "library/busybox", "test")
        );
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.name, "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn bearer_challenge_parameters_parse() {
        let p = challenge_params(
            r#"Bearer realm="http://a/token",service="reg",scope="repository:x:pull""#,
        );
        assert_eq!(p["realm"], "http://a/token");
        assert_eq!(p["service"], "reg");
        assert_eq!(p["scope"], "repository:x:pull");
    }
}
