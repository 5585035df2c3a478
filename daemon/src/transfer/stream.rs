//! containerd's streaming side channels, as the Transfer service uses them
//! (`plugins/streaming/manager.go`, `core/transfer/streaming/{stream,reader,writer}.go`).
//!
//! A client opens `Streaming.Stream`, sends `StreamInit{id}` and gets an empty ack; the
//! stream is then registered under (namespace, id) in the [`StreamManager`] until a
//! Transfer call names it (`ImageImportStream.stream`, `ImageExportStream.stream`,
//! `TransferOptions.progress_stream`, `RegistryResolver.auth_stream`) and takes it.
//! Closing a stream (dropping its [`Stream`]) ends the RPC with OK, which the client reads
//! as EOF.
//!
//! Bytes flow with containerd's window protocol: the receiver grants credit with
//! `WindowUpdate{64 KiB}` whenever less than 64 KiB is outstanding, the sender sends
//! `Data` messages of at most 32 KiB within the credit it holds. [`receive_bytes`] is the
//! server as receiver (import), [`send_bytes`] the server as sender (export). Both hand a
//! blocking `std::io::Read`/`Write` to the archive code, which runs on a blocking thread.

use prost::Message;
use prost_types::Any;
use protos::containerd::types::transfer as tt;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Largest `Data` payload a sender puts in one message (containerd's `maxRead`).
pub const MAX_DATA: usize = 32 * 1024;
/// Credit a receiver grants at a time (containerd's `windowSize`).
pub const WINDOW: i32 = 2 * MAX_DATA as i32;
/// Streams waiting to be claimed, over all namespaces; more are refused.
pub const MAX_PENDING: usize = 1024;

/// Type URLs as Go's `typeurl` writes them (the message's full name, no host prefix).
pub mod urls {
    /// `containerd.types.transfer.Data`.
    pub const DATA: &str = "containerd.types.transfer.Data";
    /// `containerd.types.transfer.WindowUpdate`.
    pub const WINDOW_UPDATE: &str = "containerd.types.transfer.WindowUpdate";
    /// `containerd.types.transfer.Progress`.
    pub const PROGRESS: &str = "containerd.types.transfer.Progress";
    /// `containerd.types.transfer.AuthRequest`.
    pub const AUTH_REQUEST: &str = "containerd.types.transfer.AuthRequest";
    /// `containerd.types.transfer.AuthResponse`.
    pub const AUTH_RESPONSE: &str = "containerd.types.transfer.AuthResponse";
    /// `containerd.services.streaming.v1.StreamInit`.
    pub const STREAM_INIT: &str = "containerd.services.streaming.v1.StreamInit";
    /// `google.protobuf.Empty` (the stream ack).
    pub const EMPTY: &str = "google.protobuf.Empty";
}

/// The message name of a type URL: Go accepts both `name` and `host/path/name`
/// (`protoregistry.FindMessageByURL`), so do we.
pub fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Packs a message under its bare full name, as `typeurl.MarshalAny` does.
pub fn pack<M: Message>(url: &str, m: &M) -> Any {
    Any {
        type_url: url.to_string(),
        value: m.encode_to_vec(),
    }
}

/// Errors of the stream registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No stream by that id in the namespace (containerd: `errdefs.ErrNotFound`).
    #[error("stream {id:?} in namespace {ns:?}: not found (open it with Streaming.Stream first)")]
    NotFound {
        /// Namespace.
        ns: String,
        /// Stream id.
        id: String,
    },
    /// The id is taken.
    #[error("stream {id:?} in namespace {ns:?}: already exists")]
    AlreadyExists {
        /// Namespace.
        ns: String,
        /// Stream id.
        id: String,
    },
    /// Too many streams wait to be claimed.
    #[error("{MAX_PENDING} streams are already waiting for a transfer: try again later")]
    TooMany,
}

impl crate::errdefs::HasKind for Error {
    fn kind(&self) -> crate::errdefs::Kind {
        use crate::errdefs::Kind;
        match self {
            Error::NotFound { .. } => Kind::NotFound,
            Error::AlreadyExists { .. } => Kind::AlreadyExists,
            Error::TooMany => Kind::Unavailable,
        }
    }
}

/// One open stream: what the client sent (in order; `None` once it closed its side) and
/// a sender back to it. Dropping the stream closes it.
#[derive(Debug)]
pub struct Stream {
    /// Messages from the client.
    pub rx: mpsc::Receiver<Any>,
    /// Messages to the client.
    pub tx: mpsc::Sender<Any>,
    /// Fires once everything sent has been handed to the transport and the stream ended
    /// (after every `tx` clone is dropped).
    pub flushed: Option<oneshot::Receiver<()>>,
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<Key, (u64, Stream)>,
    next: u64,
}

/// Streams by (namespace, id), waiting for the transfer that names them.
#[derive(Debug, Clone, Default)]
pub struct StreamManager {
    inner: Arc<Mutex<Inner>>,
}

/// Keeps a registration alive; dropping it (the client's RPC ended) forgets the stream if
/// no transfer took it.
#[derive(Debug)]
pub struct Registration {
    manager: StreamManager,
    key: Key,
    generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut g = self.manager.lock();
        if g.streams.get(&self.key).map(|(gen, _)| *gen) == Some(self.generation) {
            g.streams.remove(&self.key);
        }
    }
}

impl StreamManager {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `stream` as `id` in `ns` (containerd `streamManager.Register`).
    pub fn register(&self, ns: &str, id: &str, stream: Stream) -> Result<Registration, Error> {
        let mut g = self.lock();
        let key = (ns.to_string(), id.to_string());
        if g.streams.contains_key(&key) {
            return Err(Error::AlreadyExists {
                ns: ns.to_string(),
                id: id.to_string(),
            });
        }
        if g.streams.len() >= MAX_PENDING {
            return Err(Error::TooMany);
        }
        g.next += 1;
        let generation = g.next;
        g.streams.insert(key.clone(), (generation, stream));
        Ok(Registration {
            manager: self.clone(),
            key,
            generation,
        })
    }

    /// Takes the stream `id` of `ns`; a stream serves one transfer.
    pub fn take(&self, ns: &str, id: &str) -> Result<Stream, Error> {
        self.lock()
            .streams
            .remove(&(ns.to_string(), id.to_string()))
            .map(|(_, s)| s)
            .ok_or_else(|| Error::NotFound {
                ns: ns.to_string(),
                id: id.to_string(),
            })
    }

    /// Streams waiting to be claimed.
    pub fn pending(&self) -> usize {
        self.lock().streams.len()
    }
}

/// A blocking reader over the bytes a client sends on a stream (containerd
/// `ReceiveStream`). Must be read from a blocking thread.
#[derive(Debug)]
pub struct ByteReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl io::Read for ByteReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Receives the bytes the client sends on `stream`, granting window credit as they are
/// consumed. The stream closes when the client closes its side or the reader is dropped.
pub fn receive_bytes(stream: Stream) -> ByteReader {
    let (dtx, drx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    tokio::spawn(async move {
        let Stream { mut rx, tx, .. } = stream;
        let mut window: i64 = 0;
        loop {
            if window < i64::from(WINDOW) {
                let up = pack(urls::WINDOW_UPDATE, &tt::WindowUpdate { update: WINDOW });
                if tx.send(up).await.is_ok() {
                    window += i64::from(WINDOW);
                }
            }
            let Some(msg) = rx.recv().await else {
                return; // the client closed its side: end of data
            };
            match type_name(&msg.type_url) {
                urls::DATA => {
                    let data = match tt::Data::decode(msg.value.as_slice()) {
                        Ok(d) => d.data,
                        Err(e) => {
                            let _ = dtx
                                .send(Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!("stream message is not a valid Data: {e}"),
                                )))
                                .await;
                            return;
                        }
                    };
                    window -= i64::try_from(data.len()).unwrap_or(i64::MAX);
                    if window < 0 {
                        // containerd's senders stay within the credit granted; a client that
                        // does not would make berthd buffer without bound.
                        let _ = dtx
                            .send(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "stream client sent {} bytes past the window it was granted",
                                    -window
                                ),
                            )))
                            .await;
                        return;
                    }
                    if dtx.send(Ok(data)).await.is_err() {
                        return; // reader dropped
                    }
                }
                other => log::warn!("ignoring unexpected {other:?} on a byte stream"),
            }
        }
    });
    ByteReader {
        rx: drx,
        buf: Vec::new(),
        pos: 0,
    }
}

#[derive(Debug, Default)]
struct Credit {
    remaining: i64,
    closed: bool,
}

/// A blocking writer sending bytes to the client within the credit it grants (containerd
/// `WriteByteStream`). Dropping it closes the stream: the client sees EOF.
#[derive(Debug)]
pub struct ByteWriter {
    tx: mpsc::Sender<Any>,
    credit: Arc<(Mutex<Credit>, Condvar)>,
}

impl io::Write for ByteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (lock, cv) = &*self.credit;
        let n = {
            let mut c = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while c.remaining <= 0 && !c.closed {
                c = cv.wait(c).unwrap_or_else(PoisonError::into_inner);
            }
            if c.remaining <= 0 {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client closed the export stream",
                ));
            }
            let n = buf
                .len()
                .min(MAX_DATA)
                .min(usize::try_from(c.remaining).unwrap_or(MAX_DATA));
            c.remaining -= i64::try_from(n).unwrap_or(0);
            n
        };
        let msg = pack(
            urls::DATA,
            &tt::Data {
                data: buf[..n].to_vec(),
            },
        );
        self.tx.blocking_send(msg).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the export stream is closed")
        })?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends bytes to the client on `stream` as it grants window credit.
pub fn send_bytes(stream: Stream) -> ByteWriter {
    let Stream { mut rx, tx, .. } = stream;
    let credit = Arc::new((Mutex::new(Credit::default()), Condvar::new()));
    let c2 = Arc::clone(&credit);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match type_name(&msg.type_url) {
                urls::WINDOW_UPDATE => {
                    let Ok(w) = tt::WindowUpdate::decode(msg.value.as_slice()) else {
                        log::warn!("ignoring an undecodable WindowUpdate");
                        continue;
                    };
                    let (lock, cv) = &*c2;
                    lock.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remaining += i64::from(w.update);
                    cv.notify_all();
                }
                other => log::warn!("ignoring unexpected {other:?} on an export stream"),
            }
        }
        let (lock, cv) = &*c2;
        lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        cv.notify_all();
    });
    ByteWriter { tx, credit }
}

/// One progress event (containerd `transfer.Progress`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressEvent {
    /// What happened: `waiting`, `downloading`, `complete`, `saved`, or a status line.
    pub event: String,
    /// What it is about (a ref key or image name); empty for status lines.
    pub name: String,
    /// Names of the parents in the progress tree.
    pub parents: Vec<String>,
    /// Bytes done.
    pub progress: i64,
    /// Bytes in all.
    pub total: i64,
    /// The descriptor concerned.
    pub desc: Option<crate::metadata::Descriptor>,
}

impl ProgressEvent {
    /// A status line (no name).
    pub fn status(event: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            ..Self::default()
        }
    }
}

/// How long closing a progress stream waits for its last events to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where progress goes: the client's progress stream, or nowhere. Events queue without
/// bound (a few per blob) and are forwarded in order, so none is lost to a slow client;
/// [`Progress::finish`] waits until they are out, so the client has them before the
/// transfer's reply (ctr stops drawing progress when the reply arrives).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    tx: Option<mpsc::UnboundedSender<Any>>,
    done: Option<Arc<Mutex<Option<oneshot::Receiver<()>>>>>,
}

impl Progress {
    /// Progress to `stream`; it closes when every clone is dropped or finished.
    pub fn to_stream(stream: Stream) -> Self {
        let Stream {
            mut rx,
            tx,
            flushed,
        } = stream;
        // Nothing is expected from the client; drain so its sends never block.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let (utx, mut urx) = mpsc::unbounded_channel::<Any>();
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(async move {
            while let Some(m) = urx.recv().await {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
            drop(tx);
            if let Some(f) = flushed {
                let _ = tokio::time::timeout(FLUSH_TIMEOUT, f).await;
            }
            let _ = done_tx.send(());
        });
        Self {
            tx: Some(utx),
            done: Some(Arc::new(Mutex::new(Some(done_rx)))),
        }
    }

    /// Whether anyone listens.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event.
    pub fn send(&self, p: ProgressEvent) {
        let Some(tx) = &self.tx else { return };
        let msg = pack(
            urls::PROGRESS,
            &tt::Progress {
                event: p.event,
                name: p.name,
                parents: p.parents,
                progress: p.progress,
                total: p.total,
                desc: p.desc.as_ref().map(crate::api::desc_to),
            },
        );
        if tx.send(msg).is_err() {
            log::debug!("progress event dropped (client gone)");
        }
    }

    /// Closes this handle and waits (bounded) until the events of every handle are out.
    pub async fn finish(self) {
        let done = self
            .done
            .and_then(|d| d.lock().unwrap_or_else(PoisonError::into_inner).take());
        drop(self.tx);
        if let Some(d) = done {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pair() -> (Stream, mpsc::Sender<Any>, mpsc::Receiver<Any>) {
        let (ctx, srx) = mpsc::channel(64);
        let (stx, crx) = mpsc::channel(64);
        (
            Stream {
                rx: srx,
                tx: stx,
                flushed: None,
            },
            ctx,
            crx,
        )
    }

    #[test]
    fn type_names_accept_both_url_forms() {
        assert_eq!(
            type_name("type.googleapis.com/containerd.types.transfer.Data"),
            urls::DATA
        );
        assert_eq!(type_name(urls::DATA), urls::DATA);
    }

    #[test]
    fn registry_takes_once_and_forgets_on_drop() {
        let m = StreamManager::default();
        let (s, _c, _r) = pair();
        let reg = m.register("default", "a", s).unwrap();
        let (s2, _c2, _r2) = pair();
        assert!(matches!(
            m.register("default", "a", s2),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(m.take("other", "a"), Err(Error::NotFound { .. })));
        let (s3, _c3, _r3) = pair();
        let reg3 = m.register("default", "b", s3).unwrap();
        assert_eq!(m.pending(), 2);
        m.take("default", "a").unwrap();
        drop(reg);
        drop(reg3);
        assert_eq!(m.pending(), 0, "an unclaimed stream goes with its RPC");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_sending_past_its_window_fails_the_stream() {
        let (s, client_tx, _client_rx) = pair();
        let reader = receive_bytes(s);
        // One message twice the size of the whole initial grant.
        let big = vec![0u8; 2 * usize::try_from(WINDOW).unwrap()];
        client_tx
            .send(pack(urls::DATA, &tt::Data { data: big }))
            .await
            .unwrap();
        let read = tokio::task::spawn_blocking(move || {
            let mut r = reader;
            let mut got = Vec::new();
            r.read_to_end(&mut got)
        });
        let err = read.await.unwrap().expect_err("overrun must fail");
        assert!(err.to_string().contains("past the window"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receive_grants_window_and_reads_until_client_closes() {
        let (s, client_tx, mut client_rx) = pair();
        let reader = receive_bytes(s);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let want = payload.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut r = reader;
            let mut got = Vec::new();
            r.read_to_end(&mut got).map(|_| got)
        });
        // The client side of containerd's SendStream: wait for credit, send within it.
        let mut credit: i64 = 0;
        let mut off = 0;
        while off < payload.len() {
            while credit <= 0 {
                let m = client_rx.recv().await.expect("window update");
                assert_eq!(m.type_url, urls::WINDOW_UPDATE);
                credit += i64::from(tt::WindowUpdate::decode(m.value.as_slice()).unwrap().update);
            }
            let n = (payload.len() - off)
                .min(MAX_DATA)
                .min(usize::try_from(credit).unwrap());
            client_tx
                .send(pack(
                    urls::DATA,
                    &tt::Data {
                        data: payload[off..off + n].to_vec(),
                    },
                ))
                .await
                .unwrap();
            credit -= n as i64;
            off += n;
            while let Ok(m) = client_rx.try_recv() {
                credit += i64::from(tt::WindowUpdate::decode(m.value.as_slice()).unwrap().update);
            }
        }
        drop(client_tx);
        assert_eq!(read.await.unwrap().unwrap(), want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn send_waits_for_credit_and_closes_with_eof() {
        let (s, client_tx, mut client_rx) = pair();
        let writer = send_bytes(s);
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
        let want = payload.clone();
        let write = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            w.write_all(&payload)
        });
        let mut got = Vec::new();
        let mut outstanding: i64 = 0;
        loop {
            if outstanding < i64::from(WINDOW) {
                client_tx
                    .send(pack(
                        urls::WINDOW_UPDATE,
                        &tt::WindowUpdate { update: WINDOW },
                    ))
                    .await
                    .unwrap();
                outstanding += i64::from(WINDOW);
            }
            let Some(m) = client_rx.recv().await else {
                break;
            };
            let d = tt::Data::decode(m.value.as_slice()).unwrap().data;
            assert!(d.len() <= MAX_DATA);
            outstanding -= d.len() as i64;
            assert!(outstanding >= 0, "sender exceeded its credit");
            got.extend(d);
        }
        write.await.unwrap().unwrap();
        assert_eq!(got, want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_fails_when_client_goes_away() {
        let (s, client_tx, _client_rx) = pair();
        let writer = send_bytes(s);
        drop(client_tx);
        let r = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            w.write_all(b"x")
        })
        .await
        .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
