//! A content store in another process (`[proxy_plugins.<name>] type = "content"`), reached
//! over containerd's Content gRPC API on its Unix socket, as containerd's `content/proxy`
//! (`proxyContentStore`, `remoteWriter`, `remoteReaderAt`).
//!
//! Like containerd, every request carries the caller's namespace in the `containerd-namespace`
//! header (containerd's server interceptor copies the incoming namespace onto outgoing calls),
//! so a proxy that is itself a containerd keeps the blobs of namespace `x` in its namespace
//! `x`. The ingest refs are the metadata layer's backend refs (`<ns>/<ref>`).
//!
//! Where berthd is stricter than containerd, and why:
//! - Reads are verified: a full read (and a streaming read that goes from offset 0 to the end
//!   without seeking) is hashed and must match the requested digest and the size `Info`
//!   reported, so a misbehaving proxy cannot hand a different manifest or layer to the
//!   unpacker. containerd's proxy trusts the bytes.
//! - Commits carry two labels: `containerd.io/gc.root`, so a proxy that is a containerd does
//!   not garbage-collect blobs berthd's metadata still points at (containerd's proxy sends no
//!   labels and no lease, so the remote's GC removes them), and [`OWNER_LABEL`], which marks
//!   the blobs berthd's own GC may delete there. Blobs the remote has without that label are
//!   never deleted by berthd (containerd's GC deletes everything it does not reference).
//!
//! The metadata layer is synchronous and runs on blocking threads, so each call enters the
//! daemon's runtime with `Handle::block_on`, as the snapshot proxy does: `Db` content methods
//! must be called from `spawn_blocking` (every caller does), never on an async worker.
//!
//! A proxy that is a containerd keeps unleased ingests for 24 hours (its metadata's
//! `expireAt`): an interrupted ingest resumes within that window, as with containerd.

use super::{BlobInfo, Digest, Error, IngestStatus};
use crate::errdefs::Kind;
use protos::containerd::services::content::v1 as api;
use protos::containerd::services::namespaces::v1 as nsapi;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Label on blobs berthd committed through a proxy: its GC only deletes blobs carrying it.
pub const OWNER_LABEL: &str = "berth.io/content.owner";
const GC_ROOT_LABEL: &str = "containerd.io/gc.root";
/// Largest chunk sent in one `Write` message (containerd's clients send 1 MiB).
const WRITE_CHUNK: usize = 1 << 20;
/// Message size limit for replies from the proxy (containerd's default 16 MiB).
const MAX_MSG: usize = 16 << 20;

/// A proxy content store client.
pub struct ProxyStore {
    name: String,
    address: PathBuf,
    handle: tokio::runtime::Handle,
    channel: Channel,
}

impl std::fmt::Debug for ProxyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.name, self.address.display())
    }
}

fn ts(t: Option<prost_types::Timestamp>) -> SystemTime {
    t.map_or(UNIX_EPOCH, |t| {
        UNIX_EPOCH
            + Duration::new(
                u64::try_from(t.seconds).unwrap_or(0),
                u32::try_from(t.nanos).unwrap_or(0),
            )
    })
}

fn kind_of(code: tonic::Code) -> Kind {
    match code {
        tonic::Code::InvalidArgument => Kind::InvalidArgument,
        tonic::Code::NotFound => Kind::NotFound,
        tonic::Code::AlreadyExists => Kind::AlreadyExists,
        tonic::Code::FailedPrecondition => Kind::FailedPrecondition,
        // Not Unavailable: clients (ctr's `content.OpenWriter`) retry Unavailable forever, as
        // it means "ref locked" in the content API; a proxy that cannot be reached must fail
        // the request instead. A locked ref on the proxy is mapped to `Locked` by `ref_err`.
        tonic::Code::Unavailable => Kind::Unknown,
        tonic::Code::Unimplemented => Kind::NotImplemented,
        tonic::Code::OutOfRange => Kind::OutOfRange,
        _ => Kind::Unknown,
    }
}

impl ProxyStore {
    /// A client for plugin `name` at `address` (a Unix socket path, optionally `unix://`);
    /// connects lazily, as containerd's `grpc.Dial`, so an unreachable proxy is reported by
    /// the first request. Must be called inside the daemon's runtime.
    pub fn new(name: &str, address: &str) -> Result<Self, Error> {
        let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(address));
        let p2 = path.clone();
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Invalid(format!("content proxy plugin {name}: {e}")))?
            .connect_timeout(Duration::from_secs(10))
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

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The socket it talks to.
    pub fn address(&self) -> &std::path::Path {
        &self.address
    }

    fn client(&self) -> api::content_client::ContentClient<Channel> {
        api::content_client::ContentClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MSG)
            .max_encoding_message_size(MAX_MSG)
    }

    fn req<T>(ns: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(ns) {
            r.metadata_mut().insert(crate::api::NAMESPACE_HEADER, v);
        }
        r
    }

    /// A failure of the proxy itself, naming plugin and socket.
    fn fail(&self, kind: Kind, msg: String) -> Error {
        Error::Proxy {
            name: self.name.clone(),
            address: self.address.clone(),
            kind,
            msg,
        }
    }

    fn status_err(&self, s: &tonic::Status) -> Error {
        let mut msg = s.message().to_string();
        if msg.is_empty() {
            msg = s.to_string();
        }
        // Transport failures (nothing listening, connection reset) surface as Unavailable with
        // the cause in the source chain; keep it, it names the socket problem.
        let mut src = std::error::Error::source(s);
        while let Some(e) = src {
            let m = e.to_string();
            if !msg.contains(&m) {
                msg = format!("{msg}: {m}");
            }
            src = e.source();
        }
        self.fail(kind_of(s.code()), msg)
    }

    fn blob_err(&self, d: &Digest, s: &tonic::Status) -> Error {
        match s.code() {
            tonic::Code::NotFound => Error::NotFound(d.clone()),
            tonic::Code::AlreadyExists => Error::AlreadyExists(d.clone()),
            _ => self.status_err(s),
        }
    }

    fn ref_err(&self, r#ref: &str, s: &tonic::Status) -> Error {
        match s.code() {
            tonic::Code::NotFound => Error::IngestNotFound(r#ref.to_string()),
            tonic::Code::Unavailable if s.message().contains("locked") => {
                Error::Locked(r#ref.to_string())
            }
            _ => self.status_err(s),
        }
    }

    fn info_from(&self, i: api::Info) -> Result<(BlobInfo, HashMap<String, String>), Error> {
        let digest = Digest::parse(&i.digest).map_err(|e| {
            self.fail(
                Kind::Unknown,
                format!("returned an invalid digest {:?}: {e}", i.digest),
            )
        })?;
        if i.size < 0 {
            return Err(self.fail(
                Kind::Unknown,
                format!("returned negative size {} for {digest}", i.size),
            ));
        }
        Ok((
            BlobInfo {
                digest,
                size: i.size,
                created: ts(i.created_at),
            },
            i.labels,
        ))
    }

    /// `Info` of a blob in namespace `ns`.
    pub fn info(&self, ns: &str, d: &Digest) -> Result<BlobInfo, Error> {
        let mut c = self.client();
        let r = self
            .handle
            .block_on(c.info(Self::req(
                ns,
                api::InfoRequest {
                    digest: d.to_string(),
                },
            )))
            .map_err(|s| self.blob_err(d, &s))?;
        let info = r
            .into_inner()
            .info
            .ok_or_else(|| self.fail(Kind::Unknown, format!("Info of {d} returned no info")))?;
        let (bi, _) = self.info_from(info)?;
        if bi.digest != *d {
            return Err(self.fail(Kind::Unknown, format!("Info of {d} returned {}", bi.digest)));
        }
        Ok(bi)
    }

    /// Every blob of namespace `ns` that berthd committed (carries [`OWNER_LABEL`]).
    pub fn walk_owned(&self, ns: &str) -> Result<Vec<BlobInfo>, Error> {
        let mut c = self.client();
        let infos = self
            .handle
            .block_on(async {
                let mut s = c
                    .list(Self::req(ns, api::ListContentRequest { filters: vec![] }))
                    .await?
                    .into_inner();
                let mut out = Vec::new();
                while let Some(batch) = s.message().await? {
                    out.extend(batch.info);
                }
                Ok(out)
            })
            .map_err(|s: tonic::Status| self.status_err(&s))?;
        let mut out = Vec::new();
        for i in infos {
            let (bi, labels) = self.info_from(i)?;
            if labels.contains_key(OWNER_LABEL) {
                out.push(bi);
            }
        }
        Ok(out)
    }

    /// Namespaces the proxy knows, if it serves containerd's Namespaces API (a plain content
    /// plugin does not: then none).
    pub fn namespaces(&self) -> Vec<String> {
        let mut c = nsapi::namespaces_client::NamespacesClient::new(self.channel.clone());
        match self.handle.block_on(c.list(nsapi::ListNamespacesRequest {
            filter: String::new(),
        })) {
            Ok(r) => r
                .into_inner()
                .namespaces
                .into_iter()
                .map(|n| n.name)
                .collect(),
            Err(s) => {
                log::debug!("content proxy {}: no namespace list: {s}", self.name);
                Vec::new()
            }
        }
    }

    /// Deletes a blob from namespace `ns`.
    pub fn delete(&self, ns: &str, d: &Digest) -> Result<(), Error> {
        let mut c = self.client();
        self.handle
            .block_on(c.delete(Self::req(
                ns,
                api::DeleteContentRequest {
                    digest: d.to_string(),
                },
            )))
            .map(|_| ())
            .map_err(|s| self.blob_err(d, &s))
    }

    /// Status of ingest `ref` in namespace `ns`.
    pub fn status(&self, ns: &str, r#ref: &str) -> Result<IngestStatus, Error> {
        let mut c = self.client();
        let st = self
            .handle
            .block_on(c.status(Self::req(
                ns,
                api::StatusRequest {
                    r#ref: r#ref.to_string(),
                },
            )))
            .map_err(|s| self.ref_err(r#ref, &s))?
            .into_inner()
            .status
            .ok_or_else(|| self.fail(Kind::Unknown, format!("Status of {ref:?} returned none")))?;
        Ok(IngestStatus {
            r#ref: st.r#ref,
            offset: st.offset,
            total: st.total,
            expected: Digest::parse(&st.expected).ok(),
            started: ts(st.started_at),
            updated: ts(st.updated_at),
        })
    }

    /// Aborts ingest `ref` in namespace `ns`.
    pub fn abort(&self, ns: &str, r#ref: &str) -> Result<(), Error> {
        let mut c = self.client();
        self.handle
            .block_on(c.abort(Self::req(
                ns,
                api::AbortRequest {
                    r#ref: r#ref.to_string(),
                },
            )))
            .map(|_| ())
            .map_err(|s| self.ref_err(r#ref, &s))
    }

    /// Reads `size` bytes at `offset` (`size <= 0`: to the end). A read of the whole blob is
    /// verified against `d`.
    pub fn read_at(
        self: &Arc<Self>,
        ns: &str,
        d: &Digest,
        offset: i64,
        size: i64,
    ) -> Result<Vec<u8>, Error> {
        let info = self.info(ns, d)?;
        if offset < 0 || offset > info.size {
            return Err(Error::OutOfRange {
                digest: d.clone(),
                offset,
                size: info.size,
            });
        }
        let avail = info.size - offset;
        let n = if size <= 0 { avail } else { size.min(avail) };
        let mut r = ProxyReader::new(Arc::clone(self), ns, d.clone(), info.size);
        // The reader's errors already name the plugin.
        let prefix = format!(
            "content proxy plugin {} at {}: ",
            self.name,
            self.address.display()
        );
        let io = |e: std::io::Error| {
            let m = e.to_string();
            self.fail(
                Kind::Unknown,
                m.strip_prefix(&prefix).unwrap_or(&m).to_string(),
            )
        };
        r.seek(SeekFrom::Start(offset.unsigned_abs())).map_err(io)?;
        let mut buf = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1 << 20));
        r.by_ref()
            .take(n.unsigned_abs())
            .read_to_end(&mut buf)
            .map_err(io)?;
        if i64::try_from(buf.len()).unwrap_or(i64::MAX) != n {
            return Err(self.fail(
                Kind::Unknown,
                format!("read of {d} returned {} bytes, want {n}", buf.len()),
            ));
        }
        if offset == 0 && n == info.size && Digest::from_bytes(&buf) != *d {
            return Err(self.fail(
                Kind::Unknown,
                format!("returned bytes for {d} that do not match that digest"),
            ));
        }
        Ok(buf)
    }

    /// A streaming reader of a blob (size from `Info`).
    pub fn open(self: &Arc<Self>, ns: &str, d: &Digest) -> Result<ProxyReader, Error> {
        let info = self.info(ns, d)?;
        Ok(ProxyReader::new(Arc::clone(self), ns, d.clone(), info.size))
    }

    /// Opens a write session for `ref` (containerd's `negotiate`: a STAT first, whose reply
    /// gives the offset an earlier session reached, so the ingest resumes there).
    pub fn writer(
        self: &Arc<Self>,
        ns: &str,
        r#ref: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<ProxyWriter, Error> {
        if r#ref.is_empty() {
            return Err(Error::Invalid("ref must not be empty".into()));
        }
        let (tx, rx) = mpsc::channel::<api::WriteContentRequest>(2);
        let first = api::WriteContentRequest {
            action: api::WriteAction::Stat as i32,
            r#ref: r#ref.to_string(),
            total,
            expected: expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ..Default::default()
        };
        let mut c = self.client();
        let (stream, resp) = self
            .handle
            .block_on(async {
                // The first message goes in before the call: the server answers the call's
                // headers only with its first reply, which needs the STAT.
                tx.send(first)
                    .await
                    .map_err(|_| tonic::Status::internal("write stream closed"))?;
                let mut stream = c
                    .write(Self::req(
                        ns,
                        tokio_stream::wrappers::ReceiverStream::new(rx),
                    ))
                    .await?
                    .into_inner();
                let resp = stream
                    .message()
                    .await?
                    .ok_or_else(|| tonic::Status::unknown("write stream ended before STAT"))?;
                Ok((stream, resp))
            })
            .map_err(|s: tonic::Status| match (&expected, s.code()) {
                (Some(d), tonic::Code::AlreadyExists) => Error::AlreadyExists(d.clone()),
                _ => self.ref_err(r#ref, &s),
            })?;
        Ok(ProxyWriter {
            store: Arc::clone(self),
            r#ref: r#ref.to_string(),
            tx,
            stream,
            offset: resp.offset,
            total: if resp.total > 0 { resp.total } else { total },
            digest: Digest::parse(&resp.digest).ok(),
            expected,
            started: ts(resp.started_at),
            updated: ts(resp.updated_at),
        })
    }
}

/// A `Write` session on the proxy. Dropping it ends the stream, which releases the ref on the
/// proxy; the ingest stays there to be resumed.
pub struct ProxyWriter {
    store: Arc<ProxyStore>,
    r#ref: String,
    tx: mpsc::Sender<api::WriteContentRequest>,
    stream: tonic::Streaming<api::WriteContentResponse>,
    offset: i64,
    total: i64,
    digest: Option<Digest>,
    expected: Option<Digest>,
    started: SystemTime,
    updated: SystemTime,
}

impl std::fmt::Debug for ProxyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyWriter({:?} on {:?})", self.r#ref, self.store)
    }
}

impl ProxyWriter {
    /// One request/reply cycle (containerd's `remoteWriter.send`).
    fn send(&mut self, req: api::WriteContentRequest) -> Result<api::WriteContentResponse, Error> {
        let (tx, stream) = (&self.tx, &mut self.stream);
        let r = self.store.handle.block_on(async {
            tx.send(req)
                .await
                .map_err(|_| tonic::Status::unavailable("write stream closed by the proxy"))?;
            stream
                .message()
                .await?
                .ok_or_else(|| tonic::Status::unavailable("write stream ended by the proxy"))
        });
        let resp = r.map_err(|s| self.store.ref_err(&self.r#ref, &s))?;
        if let Ok(d) = Digest::parse(&resp.digest) {
            self.digest = Some(d);
        }
        self.updated = SystemTime::now();
        Ok(resp)
    }

    /// Bytes the proxy holds for this ingest.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Status as of the last reply.
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            r#ref: self.r#ref.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started: self.started,
            updated: self.updated,
        }
    }

    /// Digest of the data so far, as the proxy last reported it.
    pub fn digest(&self) -> Digest {
        self.digest
            .clone()
            .unwrap_or_else(|| Digest::from_bytes(b""))
    }

    /// Appends `buf` (in chunks of at most 1 MiB); the proxy must confirm every byte.
    pub fn write(&mut self, buf: &[u8]) -> Result<(), Error> {
        for chunk in buf.chunks(WRITE_CHUNK) {
            let offset = self.offset;
            let resp = self.send(api::WriteContentRequest {
                action: api::WriteAction::Write as i32,
                offset,
                data: chunk.to_vec(),
                ..Default::default()
            })?;
            let want = offset + i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            if resp.offset != want {
                return Err(self.store.fail(
                    Kind::Unknown,
                    format!(
                        "short write to ingest {:?}: offset {} after writing {} bytes at {offset}",
                        self.r#ref,
                        resp.offset,
                        chunk.len()
                    ),
                ));
            }
            self.offset = resp.offset;
        }
        Ok(())
    }

    /// Restarts from zero: the next write (or commit) at offset 0 makes the proxy truncate, as
    /// containerd's `remoteWriter.Truncate`.
    pub fn truncate(&mut self) -> Result<(), Error> {
        self.offset = 0;
        self.digest = Some(Digest::from_bytes(b""));
        Ok(())
    }

    /// Commits; the proxy verifies size and digest, and berthd checks its reply again
    /// (containerd's `remoteWriter.Commit`).
    pub fn commit(mut self, size: i64, expected: Option<&Digest>) -> Result<Digest, Error> {
        let expected = expected.cloned().or_else(|| self.expected.clone());
        let labels: HashMap<String, String> = [
            (
                GC_ROOT_LABEL.to_string(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            (OWNER_LABEL.to_string(), "berthd".to_string()),
        ]
        .into();
        let resp = match self.send(api::WriteContentRequest {
            action: api::WriteAction::Commit as i32,
            total: size,
            offset: self.offset,
            expected: expected
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            labels,
            ..Default::default()
        }) {
            Ok(r) => r,
            Err(Error::Proxy {
                kind: Kind::AlreadyExists,
                ..
            }) => {
                let d = expected.unwrap_or_else(|| self.digest());
                return Err(Error::AlreadyExists(d));
            }
            Err(e) => return Err(e),
        };
        if size > 0 && resp.offset != size {
            return Err(Error::SizeMismatch {
                expected: size,
                actual: resp.offset,
            });
        }
        let actual = Digest::parse(&resp.digest).map_err(|e| {
            self.store.fail(
                Kind::Unknown,
                format!(
                    "commit of {:?} returned digest {:?}: {e}",
                    self.r#ref, resp.digest
                ),
            )
        })?;
        if let Some(e) = expected {
            if e != actual {
                return Err(Error::DigestMismatch {
                    expected: e,
                    actual,
                });
            }
        }
        Ok(actual)
    }
}

/// Streams a blob from the proxy (containerd's `remoteReaderAt`, as a `Read + Seek`). Reading
/// from offset 0 to the end without seeking elsewhere verifies the digest at the end.
pub struct ProxyReader {
    store: Arc<ProxyStore>,
    ns: String,
    digest: Digest,
    size: i64,
    pos: i64,
    stream: Option<tonic::Streaming<api::ReadContentResponse>>,
    // Blob offset the current stream was opened at.
    stream_start: i64,
    buf: Vec<u8>,
    buf_pos: usize,
    hasher: Option<Sha256>,
}

impl std::fmt::Debug for ProxyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProxyReader({} @{} from {:?})",
            self.digest, self.pos, self.store
        )
    }
}

impl ProxyReader {
    fn new(store: Arc<ProxyStore>, ns: &str, digest: Digest, size: i64) -> Self {
        Self {
            store,
            ns: ns.to_string(),
            digest,
            size,
            pos: 0,
            stream: None,
            stream_start: 0,
            buf: Vec::new(),
            buf_pos: 0,
            hasher: Some(Sha256::new()),
        }
    }

    /// The blob's size.
    pub fn size(&self) -> i64 {
        self.size
    }

    fn io_err(&self, msg: &str) -> std::io::Error {
        std::io::Error::other(format!(
            "content proxy plugin {} at {}: {msg}",
            self.store.name,
            self.store.address.display()
        ))
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let pos = self.pos;
        let (store, ns, d) = (
            Arc::clone(&self.store),
            self.ns.clone(),
            self.digest.clone(),
        );
        let (stream, start) = (&mut self.stream, &mut self.stream_start);
        let r: Result<Option<api::ReadContentResponse>, tonic::Status> =
            store.handle.block_on(async {
                if stream.is_none() {
                    *start = pos;
                    let mut c = store.client();
                    let s = c
                        .read(ProxyStore::req(
                            &ns,
                            api::ReadContentRequest {
                                digest: d.to_string(),
                                offset: pos,
                                size: 0,
                            },
                        ))
                        .await?
                        .into_inner();
                    *stream = Some(s);
                }
                match stream.as_mut() {
                    Some(s) => s.message().await,
                    None => Ok(None),
                }
            });
        let msg = r.map_err(|s| self.io_err(&format!("read {}: {s}", self.digest)))?;
        let Some(msg) = msg else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                self.io_err(&format!(
                    "read of {} ended at offset {pos} of {}",
                    self.digest, self.size
                )),
            ));
        };
        // containerd's server numbers the replies from the start of the read (its
        // `readResponseWriter` starts at 0 whatever the requested offset); berthd's from the
        // start of the blob. Either is accepted, nothing else.
        let relative = pos - self.stream_start;
        if msg.offset != pos && msg.offset != relative {
            return Err(self.io_err(&format!(
                "read of {} returned offset {} where {pos} was next",
                self.digest, msg.offset
            )));
        }
        self.buf = msg.data;
        self.buf_pos = 0;
        Ok(())
    }
}

/// Empty `Read` replies tolerated in a row before a read fails (see `ProxyReader::read`).
const MAX_EMPTY_READS: usize = 64;

impl Read for ProxyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        // A proxy that keeps replying with no bytes before the blob's end must not make this
        // loop forever: a few empty messages are tolerated, then the read fails.
        let mut empty = 0;
        while self.buf_pos >= self.buf.len() {
            if empty == MAX_EMPTY_READS {
                return Err(self.io_err(&format!(
                    "read of {}: {MAX_EMPTY_READS} empty messages in a row at offset {}",
                    self.digest, self.pos
                )));
            }
            self.fill()?;
            empty += 1;
        }
        let avail = &self.buf[self.buf_pos..];
        let left = usize::try_from(self.size - self.pos).unwrap_or(usize::MAX);
        let n = avail.len().min(out.len()).min(left);
        out[..n].copy_from_slice(&avail[..n]);
        if let Some(h) = &mut self.hasher {
            h.update(&avail[..n]);
        }
        self.buf_pos += n;
        self.pos += i64::try_from(n).unwrap_or(0);
        if self.pos == self.size {
            if self.buf_pos < self.buf.len() {
                return Err(self.io_err(&format!(
                    "read of {} returned more than its size {}",
                    self.digest, self.size
                )));
            }
            if let Some(h) = self.hasher.take() {
                let got = Digest::from_hasher(h);
                if got != self.digest {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        self.io_err(&format!(
                            "returned bytes whose digest {got} is not the requested {}",
                            self.digest
                        )),
                    ));
                }
            }
        }
        Ok(n)
    }
}

impl Seek for ProxyReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => i64::try_from(n).unwrap_or(i64::MAX),
            SeekFrom::Current(d) => self.pos.saturating_add(d),
            SeekFrom::End(d) => self.size.saturating_add(d),
        };
        if new < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the blob",
            ));
        }
        if new != self.pos {
            self.stream = None;
            self.buf.clear();
            self.buf_pos = 0;
            // Only a read that covers the blob from its start can be verified.
            self.hasher = (new == 0).then(Sha256::new);
            self.pos = new;
        }
        Ok(new.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    //! The seam end to end: a second berthd's Content service (its own metadata and local
    //! store) is the proxy, and a metadata `Db` over a [`ProxyStore`] writes, resumes, reads,
    //! inspects and collects through it. A fake proxy that returns other bytes is refused.

    use super::*;
    use crate::metadata::{self, Ctx, Labels, Namespace, SharingPolicy};
    use protos::containerd::services::content::v1::content_server::{Content, ContentServer};
    use std::path::Path;

    macro_rules! serve {
        ($svc:expr, $path:expr) => {{
            let l = tokio::net::UnixListener::bind($path).unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service($svc)
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l)),
            );
        }};
    }

    fn ctx(ns: &str) -> Ctx {
        Ctx {
            ns: Namespace::new(ns).unwrap(),
            lease: None,
        }
    }

    /// A second berthd's metadata + content store served over gRPC in `tmp`, and a metadata
    /// store whose blobs live there through a [`ProxyStore`]: `(remote, proxied)`.
    fn proxied_db(tmp: &Path) -> (Arc<metadata::Db>, Arc<metadata::Db>) {
        let dir = tmp.join("remote");
        let store = super::super::Store::open(dir.join("content")).unwrap();
        let remote = Arc::new(
            metadata::Db::open(&dir.join("meta"), store, vec![], SharingPolicy::Shared).unwrap(),
        );
        let core = crate::api::Core {
            db: Arc::clone(&remote),
            events: crate::events::Exchange::new(),
            gc: crate::metadata::gc::Scheduler::new(&remote),
        };
        let sock = tmp.join("cs.sock");
        serve!(
            ContentServer::new(crate::api::content::Service(core)),
            &sock
        );
        let ps = ProxyStore::new("remote", sock.to_str().unwrap()).unwrap();
        let db = Arc::new(
            metadata::Db::open(&tmp.join("meta"), ps, vec![], SharingPolicy::Shared).unwrap(),
        );
        (remote, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_over_a_second_berthd_content_service() {
        let tmp = tempfile::tempdir().unwrap();
        let (remote, db) = proxied_db(tmp.path());
        let remote2 = Arc::clone(&remote);
        tokio::task::spawn_blocking(move || {
            let c = ctx("x");
            let data = b"0123456789abcdef".repeat(1000);
            let d = Digest::from_bytes(&data);
            // An ingest interrupted after 5000 bytes, resumed by a new writer.
            {
                let mut w = db
                    .content_writer(&c, "ref-1", data.len() as i64, Some(d.clone()))
                    .unwrap();
                w.write(&data[..5000]).unwrap();
            }
            let st = db.content_status(&c, "ref-1").unwrap();
            assert_eq!((st.offset, st.total), (5000, data.len() as i64));
            let mut w = db
                .content_writer(&c, "ref-1", data.len() as i64, Some(d.clone()))
                .unwrap();
            assert_eq!(w.status().offset, 5000, "resumed at the proxy's offset");
            w.write(&data[5000..]).unwrap();
            assert_eq!(w.digest(), d);
            assert_eq!(
                w.commit(data.len() as i64, Some(d.clone()), Labels::new())
                    .unwrap(),
                d
            );
            // The bytes are in the remote's namespace x, labelled for its GC and ours.
            let ri = remote2.content_info(&c, &d).unwrap();
            assert_eq!(ri.size, data.len() as i64);
            assert!(ri.labels.contains_key(OWNER_LABEL) && ri.labels.contains_key(GC_ROOT_LABEL));
            // Reads: whole (verified), ranged, streamed.
            assert_eq!(db.content_read(&c, &d, 0, 0).unwrap(), data);
            assert_eq!(db.content_read(&c, &d, 16, 4).unwrap(), b"0123");
            let (mut r, size) = db.content_open(&c, &d).unwrap();
            assert_eq!(size, data.len() as i64);
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            assert_eq!(all, data);
            r.seek(SeekFrom::Start(15990)).unwrap();
            let mut tail = Vec::new();
            r.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, &data[15990..]);
            // Abort through the proxy.
            let mut w = db.content_writer(&c, "ref-2", 0, None).unwrap();
            w.write(b"partial").unwrap();
            drop(w);
            db.content_abort(&c, "ref-2").unwrap();
            assert!(remote2.content_status(&c, "x/ref-2").is_err());
            // A wrong expected digest fails the commit, leaving the ingest.
            let mut w = db.content_writer(&c, "ref-3", 0, None).unwrap();
            w.write(b"abc").unwrap();
            let err = w
                .commit(3, Some(Digest::from_bytes(b"xyz")), Labels::new())
                .unwrap_err();
            assert_eq!(
                crate::errdefs::HasKind::kind(&err),
                crate::errdefs::Kind::FailedPrecondition,
                "{err}"
            );
            // GC deletes unreferenced blobs through the proxy.
            db.content_delete(&c, &d).unwrap();
            let s = db.garbage_collect().unwrap();
            assert_eq!(s.blobs, 1, "{s:?}");
            assert!(
                remote2.content_info(&c, &d).is_err(),
                "deleted on the proxy"
            );
        })
        .await
        .unwrap();
    }

    /// Answers Info with a size and Read with other bytes of that size.
    struct Liar(Vec<u8>);

    type Stream<T> =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

    #[tonic::async_trait]
    impl Content for Liar {
        async fn info(
            &self,
            r: tonic::Request<api::InfoRequest>,
        ) -> Result<tonic::Response<api::InfoResponse>, tonic::Status> {
            Ok(tonic::Response::new(api::InfoResponse {
                info: Some(api::Info {
                    digest: r.into_inner().digest,
                    size: self.0.len() as i64,
                    ..Default::default()
                }),
            }))
        }
        async fn update(
            &self,
            _: tonic::Request<api::UpdateRequest>,
        ) -> Result<tonic::Response<api::UpdateResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("update"))
        }
        type ListStream = Stream<api::ListContentResponse>;
        async fn list(
            &self,
            _: tonic::Request<api::ListContentRequest>,
        ) -> Result<tonic::Response<Self::ListStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("list"))
        }
        async fn delete(
            &self,
            _: tonic::Request<api::DeleteContentRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            Err(tonic::Status::unimplemented("delete"))
        }
        type ReadStream = Stream<api::ReadContentResponse>;
        async fn read(
            &self,
            r: tonic::Request<api::ReadContentRequest>,
        ) -> Result<tonic::Response<Self::ReadStream>, tonic::Status> {
            let off = r.into_inner().offset;
            let data = self.0[usize::try_from(off).unwrap()..].to_vec();
            Ok(tonic::Response::new(Box::pin(tokio_stream::iter([Ok(
                api::ReadContentResponse { offset: off, data },
            )]))))
        }
        async fn status(
            &self,
            _: tonic::Request<api::StatusRequest>,
        ) -> Result<tonic::Response<api::StatusResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("status"))
        }
        async fn list_statuses(
            &self,
            _: tonic::Request<api::ListStatusesRequest>,
        ) -> Result<tonic::Response<api::ListStatusesResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("list_statuses"))
        }
        type WriteStream = Stream<api::WriteContentResponse>;
        async fn write(
            &self,
            _: tonic::Request<tonic::Streaming<api::WriteContentRequest>>,
        ) -> Result<tonic::Response<Self::WriteStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("write"))
        }
        async fn abort(
            &self,
            _: tonic::Request<api::AbortRequest>,
        ) -> Result<tonic::Response<()>, tonic::Status> {
            Err(tonic::Status::unimplemented("abort"))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_that_do_not_match_the_digest_are_refused_and_errors_name_the_plugin() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("liar.sock");
        serve!(ContentServer::new(Liar(b"evil layer".to_vec())), &sock);
        let ps = Arc::new(ProxyStore::new("liar", sock.to_str().unwrap()).unwrap());
        let gone = Arc::new(
            ProxyStore::new("gone", tmp.path().join("nothing.sock").to_str().unwrap()).unwrap(),
        );
        tokio::task::spawn_blocking(move || {
            let d = Digest::from_bytes(b"good layer");
            let err = ps.read_at("x", &d, 0, 0).unwrap_err().to_string();
            assert!(
                err.starts_with("content proxy plugin liar at ")
                    && err.matches("liar").count() == 2
                    && err.contains("is not the requested"),
                "{err}"
            );
            let mut r = ps.open("x", &d).unwrap();
            let mut buf = Vec::new();
            let err = r.read_to_end(&mut buf).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
            // A ranged read cannot be verified and is returned as is.
            assert_eq!(ps.read_at("x", &d, 5, 5).unwrap(), b"layer");
            let err = gone.info("x", &d).unwrap_err();
            assert_eq!(crate::errdefs::HasKind::kind(&err), Kind::Unknown, "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("content proxy plugin gone at") && msg.contains("nothing.sock"),
                "{msg}"
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_aborts_an_expired_ingest_on_the_proxy() {
        let tmp = tempfile::tempdir().unwrap();
        let (remote, db) = proxied_db(tmp.path());
        tokio::task::spawn_blocking(move || {
            let c = ctx("x");
            for r in ["old", "fresh"] {
                let mut w = db.content_writer(&c, r, 0, None).unwrap();
                w.write(b"partial").unwrap();
            }
            db.set_ingest_expiry(&c, "old", Some(metadata::Ts(1)))
                .unwrap();
            assert_eq!(remote.content_status(&c, "x/old").unwrap().offset, 7);
            let s = db.garbage_collect().unwrap();
            assert_eq!(s.ingests, 1, "{s:?}");
            assert!(db.content_status(&c, "old").is_err());
            assert!(
                remote.content_status(&c, "x/old").is_err(),
                "aborted in the proxy's store"
            );
            assert_eq!(db.content_status(&c, "fresh").unwrap().offset, 7);
            assert!(remote.content_status(&c, "x/fresh").is_ok());
        })
        .await
        .unwrap();
    }
}
