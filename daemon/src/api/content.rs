//! `containerd.services.content.v1.Content`, including the resumable bidirectional `Write`
//! protocol of containerd's `services/content/service.go` (STAT → WRITE* → COMMIT, offsets
//! checked, AlreadyExists when the blob is known).

use super::{blocking, ctx, filter, paths, to_status, ts, Core};
use crate::content::{Digest, IngestStatus};
use crate::metadata::{content::Info as MInfo, content::NsWriter, Ctx, Labels, Ts};
use futures::Stream;
use protos::containerd::events as ev;
use protos::containerd::services::content::v1::{
    content_server::Content, AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse,
    ListContentRequest, ListContentResponse, ListStatusesRequest, ListStatusesResponse,
    ReadContentRequest, ReadContentResponse, Status as PStatus, StatusRequest, StatusResponse,
    UpdateRequest, UpdateResponse, WriteAction, WriteContentRequest, WriteContentResponse,
};
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Chunk size of `Read` replies (containerd uses 1 MiB).
const READ_CHUNK: usize = 1 << 20;

/// The content service.
#[derive(Debug)]
pub struct Service(pub Core);

fn digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(|e| to_status(&e))
}

fn info_to(i: MInfo) -> Info {
    Info {
        digest: i.digest.to_string(),
        size: i.size,
        created_at: ts(i.created),
        updated_at: ts(i.updated),
        labels: i.labels,
    }
}

fn status_to(s: IngestStatus) -> PStatus {
    PStatus {
        started_at: ts(Ts::from(s.started)),
        updated_at: ts(Ts::from(s.updated)),
        r#ref: s.r#ref,
        offset: s.offset,
        total: s.total,
        expected: s.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Content for Service {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let c = ctx(&req)?;
        let d = digest(&req.into_inner().digest)?;
        let db = self.0.db.clone();
        let i = blocking(move || db.content_info(&c, &d)).await?;
        Ok(Response::new(InfoResponse {
            info: Some(info_to(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let info = r.info.unwrap_or_default();
        let d = digest(&info.digest)?;
        let fps = paths(r.update_mask);
        let db = self.0.db.clone();
        let i = blocking(move || db.content_update(&c, &d, &info.labels, &fps)).await?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_to(i)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let c = ctx(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let db = self.0.db.clone();
        let all = blocking(move || db.content_list(&c, &f)).await?;
        let batches: Vec<Result<ListContentResponse, Status>> = all
            .chunks(100)
            .map(|ch| {
                Ok(ListContentResponse {
                    info: ch.iter().cloned().map(info_to).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let d = digest(&req.into_inner().digest)?;
        let db = self.0.db.clone();
        let (ns, ds) = (c.ns.to_string(), d.to_string());
        blocking(move || db.content_delete(&c, &d)).await?;
        self.0
            .events
            .publish(&ns, &ev::ContentDelete { digest: ds });
        self.0.gc.schedule();
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let d = digest(&r.digest)?;
        if r.offset < 0 || r.size < 0 {
            return Err(Status::invalid_argument(format!(
                "read offset {} and size {} must not be negative",
                r.offset, r.size
            )));
        }
        let db = self.0.db.clone();
        let (file, size) = blocking(move || db.content_open(&c, &d)).await?;
        if r.offset > size {
            return Err(Status::out_of_range(format!(
                "read offset {} beyond content size {size}",
                r.offset
            )));
        }
        let end = if r.size == 0 {
            size
        } else {
            (r.offset + r.size).min(size)
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            if let Err(e) = file.seek(SeekFrom::Start(r.offset.unsigned_abs())) {
                let _ = tx.blocking_send(Err(Status::unknown(format!("seek: {e}"))));
                return;
            }
            let mut off = r.offset;
            while off < end {
                let want = usize::try_from(end - off)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let mut buf = vec![0u8; want];
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx
                            .blocking_send(Ok(ReadContentResponse {
                                offset: off,
                                data: buf,
                            }))
                            .is_err()
                        {
                            return;
                        }
                        off += i64::try_from(n).unwrap_or(0);
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::unknown(format!("read: {e}"))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let c = ctx(&req)?;
        let r#ref = req.into_inner().r#ref;
        let db = self.0.db.clone();
        let st = blocking(move || db.content_status(&c, &r#ref)).await?;
        Ok(Response::new(StatusResponse {
            status: Some(status_to(st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let c = ctx(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let db = self.0.db.clone();
        let sts = blocking(move || db.content_list_statuses(&c, &f)).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: sts.into_iter().map(status_to).collect(),
        }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let c = ctx(&req)?;
        let mut stream = req.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "write stream closed before the first message",
            ));
        };
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        let expected = if first.expected.is_empty() {
            None
        } else {
            Some(digest(&first.expected)?)
        };
        let db = self.0.db.clone();
        let (c2, r, total) = (c.clone(), first.r#ref.clone(), first.total);
        let w = blocking(move || db.content_writer(&c2, &r, total, expected)).await?;
        let (tx, rx) = mpsc::channel(4);
        let core = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = write_session(core, c, w, first, stream, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r#ref = req.into_inner().r#ref;
        let db = self.0.db.clone();
        blocking(move || db.content_abort(&c, &r#ref)).await?;
        Ok(Response::new(()))
    }
}

async fn in_worker<T: Send + 'static>(
    w: NsWriter,
    f: impl FnOnce(&mut NsWriter) -> Result<T, crate::metadata::Error> + Send + 'static,
) -> Result<(NsWriter, T), Status> {
    let r = tokio::task::spawn_blocking(move || {
        let mut w = w;
        let r = f(&mut w);
        (w, r)
    })
    .await
    .map_err(|e| Status::internal(format!("writer worker: {e}")))?;
    match r {
        (w, Ok(v)) => Ok((w, v)),
        (_, Err(e)) => Err(to_status(&e)),
    }
}

/// One `Write` session: the writer is held (locking the ref) until the stream ends.
async fn write_session(
    core: Core,
    c: Ctx,
    mut w: NsWriter,
    first: WriteContentRequest,
    mut stream: Streaming<WriteContentRequest>,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let mut total = first.total;
    let mut expected: Option<Digest> = None;
    let mut req = first;
    loop {
        let ws = w.status();
        let mut msg = WriteContentResponse {
            action: req.action,
            offset: ws.offset,
            ..Default::default()
        };
        if !req.expected.is_empty() {
            let d = digest(&req.expected)?;
            let (db, c2, d2) = (core.db.clone(), c.clone(), d.clone());
            if blocking(move || db.content_info(&c2, &d2)).await.is_ok() {
                drop(w);
                let (db, c2, r) = (core.db.clone(), c.clone(), req.r#ref.clone());
                let _ = blocking(move || db.content_abort(&c2, &r)).await;
                return Err(Status::already_exists(format!(
                    "blob with expected digest {d} exists"
                )));
            }
            expected = Some(d);
        }
        if req.total > 0 {
            total = req.total;
        }
        match WriteAction::try_from(req.action) {
            Ok(WriteAction::Stat) => {
                msg.digest = w.digest().to_string();
                msg.started_at = ts(Ts::from(ws.started));
                msg.updated_at = ts(Ts::from(ws.updated));
                msg.total = total;
            }
            Ok(action @ (WriteAction::Write | WriteAction::Commit)) => {
                if req.offset > 0 && req.offset != ws.offset {
                    return Err(Status::out_of_range(format!(
                        "write @{} must occur at current offset {}",
                        req.offset, ws.offset
                    )));
                }
                if req.offset == 0 && ws.offset > 0 {
                    let (nw, ()) = in_worker(w, NsWriter::truncate).await?;
                    w = nw;
                    msg.offset = 0;
                }
                if !req.data.is_empty() {
                    let data = std::mem::take(&mut req.data);
                    let n = i64::try_from(data.len()).unwrap_or(0);
                    let (nw, ()) = in_worker(w, move |w| w.write(&data)).await?;
                    w = nw;
                    msg.offset += n;
                }
                msg.digest = w.digest().to_string();
                if action == WriteAction::Commit {
                    let labels: Labels = std::mem::take(&mut req.labels);
                    let exp = expected.clone();
                    let size = msg.offset;
                    let res = tokio::task::spawn_blocking(move || w.commit(total, exp, labels))
                        .await
                        .map_err(|e| Status::internal(format!("commit worker: {e}")))?;
                    let d = res.map_err(|e| to_status(&e))?;
                    core.events.publish(
                        c.ns.as_str(),
                        &ev::ContentCreate {
                            digest: d.to_string(),
                            size,
                        },
                    );
                    msg.digest = d.to_string();
                    if tx.send(Ok(msg)).await.is_err() {
                        return Ok(());
                    }
                    // The writer is gone; containerd ends the session after a commit too.
                    while let Some(_extra) = stream.message().await? {}
                    return Ok(());
                }
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown write action {}",
                    req.action
                )))
            }
        }
        if tx.send(Ok(msg)).await.is_err() {
            return Ok(());
        }
        req = match stream.message().await? {
            Some(r) => r,
            None => return Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_conversion_keeps_ref_and_expected() {
        let d = Digest::from_bytes(b"x");
        let s = status_to(IngestStatus {
            r#ref: "r".into(),
            offset: 1,
            total: 2,
            expected: Some(d.clone()),
            started: std::time::SystemTime::now(),
            updated: std::time::SystemTime::now(),
        });
        assert_eq!(
            (s.r#ref.as_str(), s.offset, s.total, s.expected.as_str()),
            ("r", 1, 2, d.as_str())
        );
    }
}
