//! Prometheus metrics on `[metrics] address` (containerd serves `/v1/metrics` there): gRPC
//! requests per method (counted by a tower layer on the server), storage gauges read from
//! the metadata store at scrape time, and — from the cgroups monitor (`crate::monitor`) —
//! containerd's per-task `container_*` families, collected from the shims on each scrape.
//! A deliberately small HTTP/1.1 responder: one GET per connection, no keep-alive.

use crate::filters::Filter;
use crate::metadata::{Ctx, Db, Namespace};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Request counters shared by the gRPC layer and the scrape handler.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    requests: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Metrics {
    fn inc(&self, method: &str) {
        let mut m = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(method.to_string()).or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, db: &Db) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP berth_build_info berthd version.\n# TYPE berth_build_info gauge"
        );
        let _ = writeln!(
            out,
            "berth_build_info{{version=\"{}\",revision=\"{}\"}} 1",
            crate::api::version::VERSION,
            crate::api::version::REVISION
        );
        let _ = writeln!(out, "# HELP berth_grpc_requests_total gRPC requests received, by method.\n# TYPE berth_grpc_requests_total counter");
        for (m, n) in self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "berth_grpc_requests_total{{method=\"{m}\"}} {n}");
        }
        let namespaces = db.namespace_list().unwrap_or_default();
        let _ = writeln!(out, "# HELP berth_namespaces Namespaces.\n# TYPE berth_namespaces gauge\nberth_namespaces {}", namespaces.len());
        let _ = writeln!(
            out,
            "# HELP berth_images Images per namespace.\n# TYPE berth_images gauge"
        );
        let mut snaps = String::new();
        let mut unpacked = String::new();
        for (ns, _) in &namespaces {
            let Ok(ns) = Namespace::new(ns) else { continue };
            let ctx = Ctx {
                ns: ns.clone(),
                lease: None,
            };
            let list = db.image_list(&ctx, &Filter::default()).unwrap_or_default();
            let images = list.len();
            for sn in db.snapshotter_names() {
                let n = list
                    .iter()
                    .filter(|i| crate::images::unpacked(db, &ctx, i, &sn).unwrap_or(false))
                    .count();
                let _ = writeln!(
                    unpacked,
                    "berth_images_unpacked{{namespace=\"{ns}\",snapshotter=\"{sn}\"}} {n}"
                );
            }
            let _ = writeln!(out, "berth_images{{namespace=\"{ns}\"}} {images}");
            for sn in db.snapshotter_names() {
                let n = db
                    .snapshot_list(&ctx, &sn, &Filter::default())
                    .map(|v| v.len())
                    .unwrap_or(0);
                let _ = writeln!(
                    snaps,
                    "berth_snapshots{{namespace=\"{ns}\",snapshotter=\"{sn}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP berth_snapshots Snapshots per namespace and snapshotter.\n# TYPE berth_snapshots gauge");
        out.push_str(&snaps);
        let _ = writeln!(
            out,
            "# HELP berth_images_unpacked Images whose layers are unpacked, per snapshotter.\n# TYPE berth_images_unpacked gauge"
        );
        out.push_str(&unpacked);
        let blobs = db.content_store().local_blobs();
        let _ = writeln!(out, "# HELP berth_content_blobs Committed blobs on disk.\n# TYPE berth_content_blobs gauge\nberth_content_blobs {}", blobs.len());
        let _ = writeln!(
            out,
            "# HELP berth_content_bytes Bytes of committed blobs on disk.\n# TYPE berth_content_bytes gauge\nberth_content_bytes {}",
            blobs.iter().map(|b| b.size).sum::<i64>()
        );
        out
    }

    /// The tower layer counting requests by gRPC method (the URI path).
    pub fn layer(&self) -> CountLayer {
        CountLayer(self.clone())
    }
}

/// Counts requests by path.
#[derive(Debug, Clone)]
pub struct CountLayer(Metrics);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The counting service.
#[derive(Debug, Clone)]
pub struct Count<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for Count<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        self.metrics.inc(req.uri().path());
        self.inner.call(req)
    }
}

/// Reads one request head and returns (method, path).
async fn read_request<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> (String, String) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        match conn.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    )
}

async fn respond<S: tokio::io::AsyncWrite + Unpin>(
    conn: &mut S,
    status: &str,
    ctype: &str,
    body: &str,
) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Serves `GET /v1/metrics` (and `/metrics`) until the task is dropped; with a cgroups
/// `monitor`, each scrape also carries the per-task families (bounded per task, see
/// [`crate::monitor::STATS_TIMEOUT`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    db: Arc<Db>,
    monitor: Option<crate::monitor::CgroupsMonitor>,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, db, monitor) = (metrics.clone(), Arc::clone(&db), monitor.clone());
        tokio::spawn(async move {
            let (method, path) = read_request(&mut conn).await;
            if method != "GET" {
                respond(
                    &mut conn,
                    "405 Method Not Allowed",
                    "text/plain",
                    "method not allowed\n",
                )
                .await;
            } else if path == "/v1/metrics" || path == "/metrics" {
                let tasks = async {
                    match &monitor {
                        Some(m) => m.render().await,
                        None => String::new(),
                    }
                };
                let store = tokio::task::spawn_blocking(move || metrics.render(&db));
                let (tasks, store) = tokio::join!(tasks, store);
                let mut body = store.unwrap_or_default();
                body.push_str(&tasks);
                respond(&mut conn, "200 OK", "text/plain; version=0.0.4", &body).await;
            } else {
                respond(
                    &mut conn,
                    "404 Not Found",
                    "text/plain",
                    "not found: try /v1/metrics\n",
                )
                .await;
            }
        });
    }
}

/// The `[debug] address` socket. containerd serves Go's pprof and expvar there; berthd serves
/// `/debug/vars`: a JSON object with its pid, version, uptime, resident memory and gRPC request
/// counts.
pub async fn serve_debug(
    listener: tokio::net::UnixListener,
    metrics: Metrics,
    started: std::time::Instant,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let (method, path) = read_request(&mut conn).await;
            if method == "GET" && path == "/debug/vars" {
                let rss_kib = std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| {
                                v.split_whitespace()
                                    .next()
                                    .and_then(|n| n.parse::<u64>().ok())
                            })
                    })
                    .unwrap_or(0);
                let requests = metrics
                    .requests
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let body = serde_json::json!({
                    "pid": std::process::id(),
                    "version": crate::api::version::VERSION,
                    "uptime_seconds": started.elapsed().as_secs(),
                    "memstats": {"rss_kib": rss_kib},
                    "grpc_requests": requests,
                })
                .to_string();
                respond(&mut conn, "200 OK", "application/json", &body).await;
            } else {
                respond(
                    &mut conn,
                    "404 Not Found",
                    "text/plain",
                    "not found: try /debug/vars\n",
                )
                .await;
            }
        });
    }
}
