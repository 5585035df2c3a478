//! Pull from and push to an OCI registry (containerd `core/transfer/local/{pull,push}.go`
//! with `core/transfer/registry`), over the shared registry client `crate::remotes`.
//!
//! Pull: resolve the reference, then walk from the root descriptor: each blob is streamed
//! from the registry into the content store under the operation's lease (ref
//! `<kind>-<digest>`, expected digest, so a present blob answers AlreadyExists and is not
//! fetched), manifests and indexes are read back (bounded) for their children, parents get
//! GC labels for every child and `containerd.io/distribution.source.<host>` labels. Index
//! entries are filtered by the store's platforms; with `all_metadata` the other
//! platforms' manifests and configs are kept too (containerd's
//! `FilterManifestByPlatformHandler`). Then the manifests for the unpack platforms are
//! unpacked and the image record is stored.
//!
//! Push: walk the image for the store's platforms, upload children before parents (blobs
//! streamed from content, skipped when the registry has them), the root last under the tag.
//!
//! Hosts: `RegistryResolver.host_dir` (ctr's `--hosts-dir`) is read as containerd's
//! `hosts.toml` directories; `default_scheme = "http"` is `--plain-http`.
//! Credentials: the client's auth stream is asked once, up front (`AuthRequest` →
//! `AuthResponse`); user/password answers are used for every challenge of the operation.

use super::oci::{self, Descriptor, Index, Manifest, Matcher};
use super::stream::{pack, type_name, urls};
use super::{blocking, Error, ImageStore, Progress, ProgressEvent, Registry, Transferrer};
use crate::errdefs::{HasKind, Kind};
use crate::metadata::{Ctx, Labels};
use crate::remotes::{self, Content, HostOptions, Reference, Resolver};
use futures::StreamExt;
use hyper::body::Bytes;
use prost::Message;
use protos::containerd::types::transfer as tt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the client may take to answer a credentials request.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often download progress is reported (containerd's tracker ticks every 300 ms).
const PROGRESS_EVERY: Duration = Duration::from_millis(300);
/// Blobs downloaded at once (containerd's `max_concurrent_downloads` default).
const MAX_CONCURRENT_DOWNLOADS: usize = 3;

/// The errdefs kind of a registry error (containerd: not found stays NotFound, the rest
/// is Unknown).
fn remote_kind(e: &remotes::Error) -> Kind {
    match e {
        remotes::Error::NotFound { .. } => Kind::NotFound,
        remotes::Error::Reference(_)
        | remotes::Error::Digest(_)
        | remotes::Error::Schema1 { .. } => Kind::InvalidArgument,
        remotes::Error::Resolve { first, .. } | remotes::Error::Fetch { first, .. } => {
            remote_kind(first)
        }
        _ => Kind::Unknown,
    }
}

fn remote(what: &str, e: &remotes::Error) -> Error {
    Error::Remote(format!("{what}: {e}"), remote_kind(e))
}

/// containerd `remotes.MakeRefKey`: the ingest ref and progress name of a descriptor.
pub fn ref_key(d: &Descriptor) -> String {
    let kind = if oci::is_manifest(&d.media_type) {
        "manifest"
    } else if oci::is_index(&d.media_type) {
        "index"
    } else if oci::is_layer(&d.media_type) {
        "layer"
    } else if oci::is_config(&d.media_type) {
        "config"
    } else {
        "unknown"
    };
    match d.annotation(oci::ANNOTATION_REF_NAME) {
        Some(name) => format!("{kind}-{name}@{}", d.digest),
        None => format!("{kind}-{}", d.digest),
    }
}

fn to_remote(d: &Descriptor) -> remotes::Descriptor {
    remotes::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
    }
}

/// Asks the client's auth stream for credentials for `reference`'s host.
async fn credentials(auth: Option<super::Stream>, r: &Reference) -> Option<remotes::Credentials> {
    let mut s = auth?;
    let req = tt::AuthRequest {
        host: r.host.clone(),
        reference: r.name.clone(),
        wwwauthenticate: Vec::new(),
    };
    s.tx.send(pack(urls::AUTH_REQUEST, &req)).await.ok()?;
    let msg = tokio::time::timeout(AUTH_TIMEOUT, s.rx.recv())
        .await
        .ok()??;
    if type_name(&msg.type_url) != urls::AUTH_RESPONSE {
        log::warn!("transfer: unexpected {:?} on the auth stream", msg.type_url);
        return None;
    }
    let resp = tt::AuthResponse::decode(msg.value.as_slice()).ok()?;
    match tt::AuthType::try_from(resp.auth_type) {
        Ok(tt::AuthType::Credentials) if !resp.username.is_empty() => Some(remotes::Credentials {
            username: resp.username,
            secret: resp.secret,
        }),
        Ok(tt::AuthType::Header | tt::AuthType::Refresh) if !resp.secret.is_empty() => {
            log::warn!("transfer: header and refresh-token credentials are not supported by berthd; going on without credentials");
            None
        }
        _ => None,
    }
}

async fn resolver(reg: Registry, r: &Reference) -> Result<Resolver, Error> {
    if !reg.headers.is_empty() {
        log::warn!("transfer: extra registry headers are not sent by berthd's transfer service");
    }
    let credentials = credentials(reg.auth, r).await;
    let options = HostOptions {
        plain_http: reg.default_scheme == "http",
        credentials,
        hosts_dir: (!reg.host_dir.is_empty()).then(|| reg.host_dir.into()),
        ..HostOptions::default()
    };
    Ok(Resolver::new(Arc::new(remotes::ConfigHosts { options })))
}

/// Streams `desc` from the registry into content; false if it was already there.
async fn fetch_blob(
    t: &Transferrer,
    ctx: &Ctx,
    fetcher: &remotes::Fetcher,
    desc: &Descriptor,
    parents: &[String],
    progress: &Progress,
) -> Result<bool, Error> {
    let d = crate::content::Digest::parse(&desc.digest)?;
    let r#ref = ref_key(desc);
    // Another transfer of the same blob holds the ref: wait for it (containerd retries
    // a locked ingest too), then find the blob present.
    let mut waited = Duration::ZERO;
    let writer = loop {
        let (db, c, rf, dd) = (t.db.clone(), ctx.clone(), r#ref.clone(), d.clone());
        let size = desc.size;
        match blocking(move || Ok(db.content_writer(&c, &rf, size, Some(dd))?)).await {
            Ok(w) => break w,
            Err(e) if e.kind() == Kind::AlreadyExists => return Ok(false),
            Err(e) if e.kind() == Kind::Unavailable && waited < Duration::from_secs(600) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                waited += Duration::from_millis(250);
            }
            Err(e) => return Err(e),
        }
    };
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(8);
    let (db, c, rf, size) = (t.db.clone(), ctx.clone(), r#ref.clone(), desc.size);
    let write = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let mut w = writer;
        if w.status().offset > 0 {
            w.truncate()?;
        }
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Some(b) => w.write(&b)?,
                None => {
                    return match w.commit(size, Some(d), Labels::new()) {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == Kind::AlreadyExists => Ok(()),
                        Err(e) => Err(e.into()),
                    };
                }
            }
        }
        // The fetch failed: leave nothing half-written behind.
        drop(w);
        let _ = db.content_abort(&c, &rf);
        Ok(())
    });
    let fetched = async {
        let mut stream = fetcher
            .fetch(&to_remote(desc))
            .await
            .map_err(|e| remote(&format!("failed to fetch {}", desc.digest), &e))?;
        let mut done: i64 = 0;
        let mut last = Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| remote(&format!("failed to fetch {}", desc.digest), &e))?;
            done += i64::try_from(chunk.len()).unwrap_or(0);
            if tx.send(Some(chunk)).await.is_err() {
                break;
            }
            if progress.enabled() && last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                progress.send(ProgressEvent {
                    event: "downloading".into(),
                    name: ref_key(desc),
                    parents: parents.to_vec(),
                    progress: done,
                    total: desc.size,
                    desc: Some(desc.to_meta()),
                });
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    if fetched.is_ok() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let written = write.await.map_err(|e| Error::Worker(e.to_string()))?;
    fetched?;
    written?;
    Ok(true)
}

/// One descriptor to fetch, with the progress names of its parents.
struct Job {
    desc: Descriptor,
    parents: Vec<String>,
    /// Whether its children are wanted (a manifest of another platform kept for its
    /// metadata only has its config fetched).
    full: bool,
}

/// Fetches one descriptor, labels it (GC references to its children, distribution
/// source) and returns its children (and, for a manifest, the parsed manifest).
async fn fetch_job(
    t: &Transferrer,
    ctx: &Ctx,
    fetcher: &remotes::Fetcher,
    job: Job,
    source_label: &(String, String),
    progress: &Progress,
) -> Result<(Job, Vec<Descriptor>, Option<Manifest>), Error> {
    let d = &job.desc;
    progress.send(ProgressEvent {
        event: "waiting".into(),
        name: ref_key(d),
        parents: job.parents.clone(),
        total: d.size,
        desc: Some(d.to_meta()),
        ..ProgressEvent::default()
    });
    let fetched = fetch_blob(t, ctx, fetcher, d, &job.parents, progress).await?;
    progress.send(ProgressEvent {
        event: if fetched {
            "complete"
        } else {
            "already exists"
        }
        .into(),
        name: ref_key(d),
        parents: job.parents.clone(),
        progress: d.size,
        total: d.size,
        desc: Some(d.to_meta()),
    });
    let (tt2, c, dd, sl) = (t.clone(), ctx.clone(), d.clone(), source_label.clone());
    let (children, manifest) = blocking(move || {
        let db = &tt2.db;
        let mut labels: Labels = [sl].into();
        let (children, manifest) = if oci::is_manifest(&dd.media_type) {
            let m: Manifest = oci::read_json(db, &c, "manifest", &dd.digest)?;
            let mut kids = vec![m.config.clone()];
            kids.extend(m.layers.iter().cloned());
            (kids, Some(m))
        } else if oci::is_index(&dd.media_type) {
            let i: Index = oci::read_json(db, &c, "index", &dd.digest)?;
            (i.manifests, None)
        } else {
            (Vec::new(), None)
        };
        labels.extend(oci::gc_labels(&children));
        oci::set_labels(db, &c, &dd.digest, &labels)?;
        Ok((children, manifest))
    })
    .await?;
    Ok((job, children, manifest))
}

/// The whole pull.
pub async fn pull(
    t: &Transferrer,
    ctx: Ctx,
    reg: Registry,
    store: ImageStore,
    progress: &Progress,
) -> Result<(), Error> {
    let label = format!("OCI Registry ({})", reg.reference);
    progress.send(ProgressEvent::status(format!("Resolving from {label}")));
    let reference = Reference::parse(&reg.reference)
        .map_err(|e| Error::Invalid(format!("failed to resolve image: {e}")))?;
    let resolver = resolver(reg, &reference).await?;
    let (name, root) = resolver
        .resolve(&reference)
        .await
        .map_err(|e| remote("failed to resolve image", &e))?;
    if root.media_type == oci::MT_DOCKER_SCHEMA1 {
        return Err(Error::Invalid(
            "schema 1 image manifests are no longer supported".into(),
        ));
    }
    let root = Descriptor {
        media_type: root.media_type,
        digest: root.digest,
        size: root.size,
        ..Descriptor::default()
    };
    progress.send(ProgressEvent::status(format!("Pulling from {label}")));
    progress.send(ProgressEvent {
        event: "fetching image content".into(),
        name: name.clone(),
        desc: Some(root.to_meta()),
        ..ProgressEvent::default()
    });
    let fetcher = resolver
        .fetcher(&reference)
        .map_err(|e| remote("failed to get fetcher", &e))?;
    let matcher = Matcher::of(store.platforms.clone());
    let source_label = (
        format!("containerd.io/distribution.source.{}", reference.host),
        reference.repo.clone(),
    );

    let mut manifests: Vec<(Descriptor, Manifest)> = Vec::new();
    let mut level = vec![Job {
        desc: root.clone(),
        parents: vec![name.clone()],
        full: true,
    }];
    let mut seen = std::collections::HashSet::new();
    // Breadth first; the blobs of one level (a manifest's config and layers) download
    // concurrently, as containerd's dispatch does (3 at a time by default).
    while !level.is_empty() {
        let batch: Vec<Job> = std::mem::take(&mut level)
            .into_iter()
            .filter(|j| seen.insert(j.desc.digest.clone()))
            .collect();
        let results: Vec<(Job, Vec<Descriptor>, Option<Manifest>)> = futures::stream::iter(
            batch
                .into_iter()
                .map(|job| fetch_job(t, &ctx, &fetcher, job, &source_label, progress)),
        )
        .buffer_unordered(MAX_CONCURRENT_DOWNLOADS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
        for (job, children, manifest) in results {
            let me = vec![ref_key(&job.desc)];
            if let Some(m) = manifest {
                manifests.push((job.desc.clone(), m));
                for c in children {
                    if job.full || oci::is_config(&c.media_type) {
                        level.push(Job {
                            desc: c,
                            parents: me.clone(),
                            full: true,
                        });
                    }
                }
            } else {
                let mut kept = Vec::new();
                for c in children {
                    let wanted = matcher.matches(c.platform.as_ref());
                    if wanted || (store.all_metadata && oci::is_manifest(&c.media_type)) {
                        kept.push(Job {
                            desc: c,
                            parents: me.clone(),
                            full: wanted,
                        });
                    }
                }
                if store.manifest_limit > 0 {
                    kept.truncate(store.manifest_limit as usize);
                }
                level.extend(kept);
            }
        }
    }

    // Unpack what matches the unpack platforms (only fully fetched manifests).
    let fetched: Vec<(Descriptor, Manifest)> = manifests
        .into_iter()
        .filter(|(d, _)| d.platform.as_ref().is_none_or(|p| matcher.matches(Some(p))))
        .collect();
    if !store.unpacks.is_empty() {
        let (tt2, c, s, p) = (t.clone(), ctx.clone(), store.clone(), progress.clone());
        blocking(move || {
            super::unpack::unpack_matching(&tt2, &c, &s.unpacks, &fetched, &p, &ref_key)
        })
        .await?;
    }

    let imgs = t.store(&ctx, &store, &root).await?;
    for img in imgs {
        progress.send(ProgressEvent {
            event: "saved".into(),
            name: img.name,
            desc: Some(img.target),
            ..ProgressEvent::default()
        });
    }
    progress.send(ProgressEvent::status(format!(
        "Completed pull from {label}"
    )));
    // containerd's tracker sends its last update after this status, so ctr redraws with
    // it; repeating the root's final state does the same.
    progress.send(ProgressEvent {
        event: "complete".into(),
        name: ref_key(&root),
        parents: vec![name],
        progress: root.size,
        total: root.size,
        desc: Some(root.to_meta()),
    });
    Ok(())
}

/// A blob of the content store as an upload stream (read on a blocking thread).
fn blob_stream(
    t: &Transferrer,
    ctx: &Ctx,
    desc: &Descriptor,
) -> Result<remotes::ByteStream, Error> {
    let d = crate::content::Digest::parse(&desc.digest)?;
    let (db, c) = (t.db.clone(), ctx.clone());
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut blob = match db.content_open(&c, &d) {
            Ok((b, _)) => b,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; 1 << 20];
            match blob.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

/// The whole push.
pub async fn push(
    t: &Transferrer,
    ctx: Ctx,
    store: ImageStore,
    reg: Registry,
    progress: &Progress,
) -> Result<(), Error> {
    let matcher = Matcher::of(store.platforms.clone());
    let img = t.images.get(ctx.clone(), store.name.clone()).await?;
    let target = Descriptor::from_meta(&img.target);
    let label = format!("OCI Registry ({})", reg.reference);
    progress.send(ProgressEvent::status(format!("Pushing to {label}")));
    progress.send(ProgressEvent {
        event: "pushing content".into(),
        name: img.name.clone(),
        desc: Some(img.target.clone()),
        ..ProgressEvent::default()
    });
    let reference = Reference::parse(&reg.reference)
        .map_err(|e| Error::Invalid(format!("failed to push: {e}")))?;
    let resolver = resolver(reg, &reference).await?;
    let pusher = resolver
        .pusher(&reference)
        .map_err(|e| remote("failed to get pusher", &e))?;

    // Post-order: children before their parents, the root last.
    let (c, tt2, root) = (ctx.clone(), t.clone(), target.clone());
    let (pre, order) = blocking(move || {
        let mut pre: Vec<(Descriptor, String)> = Vec::new();
        let mut order: Vec<(Descriptor, String)> = Vec::new();
        let mut stack = vec![(root, img.name.clone(), false)];
        let mut seen = std::collections::HashSet::new();
        while let Some((d, parent, expanded)) = stack.pop() {
            if expanded {
                order.push((d, parent));
                continue;
            }
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            if oci::is_non_distributable(&d.media_type) {
                continue;
            }
            let mut kids = oci::children(&tt2.db, &c, &d)?;
            if oci::is_index(&d.media_type) {
                kids.retain(|k| matcher.matches(k.platform.as_ref()));
            }
            let me = ref_key(&d);
            pre.push((d.clone(), parent.clone()));
            stack.push((d, parent, true));
            for k in kids {
                stack.push((k, me.clone(), false));
            }
        }
        Ok((pre, order))
    })
    .await?;
    // The tree first, parents before children (ctr draws children under known parents).
    for (d, parent) in &pre {
        progress.send(ProgressEvent {
            event: "waiting".into(),
            name: ref_key(d),
            parents: vec![parent.clone()],
            total: d.size,
            desc: Some(d.to_meta()),
            ..ProgressEvent::default()
        });
    }

    let n = order.len();
    for (i, (d, parent)) in order.into_iter().enumerate() {
        let is_root = i + 1 == n;
        let rd = to_remote(&d);
        let exists = !is_root
            && pusher
                .exists(&rd)
                .await
                .map_err(|e| remote(&format!("failed to push {}", d.digest), &e))?;
        if exists {
            progress.send(ProgressEvent {
                event: "already exists".into(),
                name: ref_key(&d),
                progress: d.size,
                total: d.size,
                desc: Some(d.to_meta()),
                ..ProgressEvent::default()
            });
            continue;
        }
        progress.send(ProgressEvent {
            event: "uploading".into(),
            name: ref_key(&d),
            parents: vec![parent.clone()],
            total: d.size,
            desc: Some(d.to_meta()),
            ..ProgressEvent::default()
        });
        let content = if oci::is_manifest(&d.media_type) || oci::is_index(&d.media_type) {
            let (db, c, dg) = (t.db.clone(), ctx.clone(), d.digest.clone());
            let bytes = blocking(move || {
                let dd = crate::content::Digest::parse(&dg)?;
                Ok(db.content_read(&c, &dd, 0, 0)?)
            })
            .await?;
            Content::Bytes(Bytes::from(bytes))
        } else {
            Content::Stream(blob_stream(t, &ctx, &d)?)
        };
        let r = if is_root {
            pusher.push_tagged(&rd, content).await
        } else {
            pusher.push(&rd, content).await
        };
        r.map_err(|e| remote(&format!("failed to push {}", d.digest), &e))?;
        progress.send(ProgressEvent {
            event: "complete".into(),
            name: ref_key(&d),
            parents: vec![parent],
            progress: d.size,
            total: d.size,
            desc: Some(d.to_meta()),
        });
    }
    progress.send(ProgressEvent {
        event: "pushed content".into(),
        name: store.name.clone(),
        desc: Some(target.to_meta()),
        ..ProgressEvent::default()
    });
    progress.send(ProgressEvent {
        event: format!("Completed push to {label}"),
        desc: Some(target.to_meta()),
        ..ProgressEvent::default()
    });
    // As after a pull: the tracker's last update makes ctr redraw with the final status.
    progress.send(ProgressEvent {
        event: "complete".into(),
        name: ref_key(&target),
        parents: vec![store.name.clone()],
        progress: target.size,
        total: target.size,
        desc: Some(target.to_meta()),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_keys_match_containerd() {
        let d = |mt: &str| Descriptor {
            media_type: mt.into(),
            digest: "sha256:ab".into(),
            ..Descriptor::default()
        };
        assert_eq!(ref_key(&d(oci::MT_OCI_MANIFEST)), "manifest-sha256:ab");
        assert_eq!(ref_key(&d(oci::MT_OCI_INDEX)), "index-sha256:ab");
        assert_eq!(ref_key(&d(oci::MT_DOCKER_LAYER_GZIP)), "layer-sha256:ab");
        assert_eq!(ref_key(&d(oci::MT_OCI_CONFIG)), "config-sha256:ab");
        assert_eq!(ref_key(&d("application/x")), "unknown-sha256:ab");
        let mut named = d(oci::MT_OCI_MANIFEST);
        named.annotations =
            Some([(oci::ANNOTATION_REF_NAME.to_string(), "test".to_string())].into());
        assert_eq!(ref_key(&named), "manifest-test@sha256:ab");
        let e = remotes::Error::Resolve {
            reference: "x".into(),
            first: Box::new(remotes::Error::NotFound {
                reference: "x".into(),
            }),
            tried: Vec::new(),
        };
        assert_eq!(remote_kind(&e), Kind::NotFound);
    }
}
