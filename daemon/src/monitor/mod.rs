//! The cgroups task monitor (`io.containerd.monitor.v1 cgroups`, containerd 1.6
//! `metrics/cgroups`): per-task cgroup metrics on the Prometheus endpoint, named and labelled
//! exactly as containerd's (`container_<name>_<unit>{container_id, namespace[, runtime][,
//! cpu|op,device,major,minor|page|major,minor]}`), plus the OOM watch of runtime v1 tasks.
//!
//! Which tasks: containerd calls `Monitor` when a task is created or restored and `Stop`
//! before it is deleted; that set is exactly the task manager's list (a task enters it at
//! create or `load`, leaves it at delete or when its shim dies), so each scrape walks the
//! list instead of keeping a second one. A task created by `Tasks.Create` carries the
//! constant label `runtime=<runtime name>` (containerd passes it to `Monitor` there); a
//! task re-adopted at start-up does not, as in containerd (`Monitor(t, nil)`): the monitor
//! notes the tasks listed when it starts and drops a key from that set when its task is
//! created again.
//!
//! Each scrape asks every task's shim for `Stats` concurrently, each bounded by
//! [`STATS_TIMEOUT`]: a hung or stopped shim costs the scrape that long and its task is left
//! out (containerd waits for every shim with no bound). The reply's `Any` picks the metric
//! set by type URL: `io.containerd.cgroups.v1.Metrics` → [`v1::METRICS`], `…v2.Metrics` →
//! [`v2::METRICS`] (containerd picks one set by host cgroup mode and drops the other type).
//!
//! `no_prometheus = true` keeps the plugin (and the OOM events) but exports nothing.
//!
//! - `text.rs`: the exposition encoder (Go's ordering and float format).
//! - `v1.rs`, `v2.rs`: containerd's metric tables.
//! - `oom.rs`: eventfd OOM watch of runtime v1 tasks → `/tasks/oom` + `container_memory_oom_total`.

pub mod oom;
pub mod text;
pub mod v1;
pub mod v2;

use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;

use crate::api::introspection::PluginInfo;
use crate::events::Exchange;
use crate::filters::Filter;
use crate::metadata::Db;
use crate::runtime::manager::ShimTask;
use crate::runtime::shim::TaskClient;
use crate::runtime::TaskManager;
use text::{Family, Kind, Sample};

/// Plugin type.
pub const PLUGIN_TYPE: &str = "io.containerd.monitor.v1";
/// Plugin id.
pub const PLUGIN_ID: &str = "cgroups";
/// Default bound on one task's `Stats` during a scrape (`[timeouts]
/// "io.containerd.timeout.metrics.shimstats"`, containerd: 2 s).
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// containerd's metrics namespace for these families.
const PREFIX: &str = "container";

/// `[plugins."io.containerd.monitor.v1.cgroups"]`.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// Export no per-task metrics.
    pub no_prometheus: bool,
}

/// Why a task's metrics are missing from a scrape (logged, as containerd logs them).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shim's `Stats` failed.
    #[error("stat task {namespace}/{id}: {source}")]
    Stats {
        /// Namespace.
        namespace: String,
        /// Task id.
        id: String,
        /// Cause.
        source: Box<crate::runtime::Error>,
    },
    /// The shim did not answer in time (stopped, hung or overloaded).
    #[error("stat task {namespace}/{id}: no answer from its shim within {timeout:?}, left out of this scrape")]
    Timeout {
        /// Namespace.
        namespace: String,
        /// Task id.
        id: String,
        /// The bound.
        timeout: Duration,
    },
    /// `Stats` returned no metrics at all.
    #[error("stat task {namespace}/{id}: the shim returned no metrics")]
    Empty {
        /// Namespace.
        namespace: String,
        /// Task id.
        id: String,
    },
    /// The metrics message did not decode.
    #[error("unmarshal stats for {namespace}/{id} ({type_url}): {reason}")]
    Decode {
        /// Namespace.
        namespace: String,
        /// Task id.
        id: String,
        /// Its type.
        type_url: String,
        /// Decoder message.
        reason: String,
    },
    /// Neither v1 nor v2 cgroup metrics.
    #[error(
        "invalid metric type for {namespace}/{id}: {type_url} (expected {} or {})",
        shim::cgroup::METRICS_V1_TYPE_URL,
        shim::cgroup::METRICS_V2_TYPE_URL
    )]
    UnknownType {
        /// Namespace.
        namespace: String,
        /// Task id.
        id: String,
        /// What the shim sent.
        type_url: String,
    },
    /// The task's cgroup could not be opened for the OOM watch.
    #[error("OOM watch of task {namespace}/{id} (pid {pid}): {source}")]
    Cgroup {
        /// Namespace.
        namespace: String,
        /// Task id.
        id: String,
        /// Init pid.
        pid: u32,
        /// Cause.
        source: Box<shim::cgroup::CgroupError>,
    },
    /// The plugin's config section is malformed.
    #[error("[plugins.\"{PLUGIN_TYPE}.{PLUGIN_ID}\"]: {0}")]
    Config(String),
}

/// (values of a metric's extra labels, value) of each sample.
pub type Values = Vec<(Vec<String>, f64)>;

/// One of containerd's per-task metrics: `container_<name>_<unit>`, its help, the labels
/// after `container_id` and `namespace`, and the (label values, value) pairs it reads from a
/// metrics message `M`.
#[derive(Debug)]
pub struct Def<M: 'static> {
    /// Name without prefix and unit.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Unit suffix (`bytes`, `total`, `nanoseconds`, `limit`, …).
    pub unit: &'static str,
    /// Extra label names.
    pub labels: &'static [&'static str],
    /// Samples: values of `labels`, and the value.
    pub values: fn(&M) -> Values,
}

impl<M> Def<M> {
    /// The exported name: `container_<name>_<unit>` (go-metrics `Namespace.NewDesc`).
    pub fn full_name(&self) -> String {
        format!("{PREFIX}_{}_{}", self.name, self.unit)
    }

    /// This metric's family for one task with `base` labels.
    fn family(&self, m: &M, base: &[(String, String)]) -> Family {
        Family {
            name: self.full_name(),
            help: self.help.to_string(),
            kind: Kind::Gauge,
            samples: (self.values)(m)
                .into_iter()
                .map(|(values, value)| {
                    let mut labels = base.to_vec();
                    labels.extend(self.labels.iter().map(|l| (*l).to_string()).zip(values));
                    Sample { labels, value }
                })
                .collect(),
        }
    }
}

/// Decoded metrics of one task.
#[derive(Debug)]
pub enum TaskMetrics {
    /// cgroup v1.
    V1(containerd_shim_protos::cgroups::metrics::Metrics),
    /// cgroup v2.
    V2(containerd_shim_protos::cgroups_v2::metrics::Metrics),
}

impl TaskMetrics {
    /// Decodes a `Stats` reply by its type URL (with or without a `types.googleapis.com/`
    /// style prefix).
    pub fn decode(ns: &str, id: &str, any: &crate::runtime::Any) -> Result<TaskMetrics, Error> {
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        let decode_err = |e: protobuf::Error| Error::Decode {
            namespace: ns.to_string(),
            id: id.to_string(),
            type_url: any.type_url.clone(),
            reason: e.to_string(),
        };
        if name == shim::cgroup::METRICS_V1_TYPE_URL {
            containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&any.value)
                .map(TaskMetrics::V1)
                .map_err(decode_err)
        } else if name == shim::cgroup::METRICS_V2_TYPE_URL {
            containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(&any.value)
                .map(TaskMetrics::V2)
                .map_err(decode_err)
        } else {
            Err(Error::UnknownType {
                namespace: ns.to_string(),
                id: id.to_string(),
                type_url: any.type_url.clone(),
            })
        }
    }

    /// The task's families: every metric of its set with at least one sample.
    pub fn families(&self, base: &[(String, String)]) -> Vec<Family> {
        match self {
            TaskMetrics::V1(m) => v1::METRICS.iter().map(|d| d.family(m, base)).collect(),
            TaskMetrics::V2(m) => v2::METRICS.iter().map(|d| d.family(m, base)).collect(),
        }
    }
}

/// `container_id`, `namespace` and, for tasks created by this daemon, `runtime`.
pub fn base_labels(ns: &str, id: &str, runtime: &str) -> Vec<(String, String)> {
    let mut l = vec![
        ("container_id".to_string(), id.to_string()),
        ("namespace".to_string(), ns.to_string()),
    ];
    if !runtime.is_empty() {
        l.push(("runtime".to_string(), runtime.to_string()));
    }
    l
}

/// The monitor: cheap to clone; background tasks end when the last clone is dropped.
#[derive(Clone)]
pub struct CgroupsMonitor {
    tasks: TaskManager,
    db: Arc<Db>,
    /// (namespace, id) of tasks re-adopted at start-up and not created since.
    restored: Arc<Restored>,
    prometheus: bool,
    timeout: Duration,
    oom: Arc<oom::OomWatch>,
    _background: Arc<Background>,
}

impl std::fmt::Debug for CgroupsMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupsMonitor")
            .field("prometheus", &self.prometheus)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Keys of re-adopted tasks.
type Restored = std::sync::Mutex<std::collections::HashSet<(String, String)>>;

fn was_restored(restored: &Restored, ns: &str, id: &str) -> bool {
    restored
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&(ns.to_string(), id.to_string()))
}

fn forget_restored(restored: &Restored, ns: &str, id: &str) {
    restored
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&(ns.to_string(), id.to_string()));
}

#[derive(Debug)]
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

impl CgroupsMonitor {
    /// Per-task metrics of every task, as exposition text (empty with `no_prometheus`).
    pub async fn render(&self) -> String {
        if !self.prometheus {
            return String::new();
        }
        text::encode(self.collect().await)
    }

    /// The families of every task, shims asked concurrently.
    pub async fn collect(&self) -> Vec<Family> {
        let tasks = all_tasks(&self.tasks, &self.db);
        let timeout = self.timeout;
        let stats = futures::future::join_all(tasks.iter().map(|t| async move {
            stat(t, timeout)
                .await
                .and_then(|any| TaskMetrics::decode(&t.namespace, &t.id, &any))
        }))
        .await;
        let mut out = Vec::new();
        for (t, m) in tasks.iter().zip(stats) {
            match m {
                Ok(m) => {
                    let runtime = if was_restored(&self.restored, &t.namespace, &t.id) {
                        ""
                    } else {
                        t.runtime.as_str()
                    };
                    out.extend(m.families(&base_labels(&t.namespace, &t.id, runtime)));
                }
                Err(e @ Error::Timeout { .. }) => log::warn!("{e}"),
                Err(e) => log::error!("{e}"),
            }
        }
        // The OOM counter of v1 tasks still listed (containerd drops an entry once its
        // cgroup is deleted, which happens at task delete).
        let listed: std::collections::HashSet<(&str, &str)> = tasks
            .iter()
            .map(|t| (t.namespace.as_str(), t.id.as_str()))
            .collect();
        out.push(Family {
            name: format!("{PREFIX}_memory_oom_total"),
            help: "The number of times a container has received an oom event".into(),
            kind: Kind::Counter,
            samples: self
                .oom
                .counts()
                .into_iter()
                .filter(|((ns, id), _)| listed.contains(&(ns.as_str(), id.as_str())))
                .map(|((ns, id), n)| Sample {
                    labels: base_labels(&ns, &id, ""),
                    value: n as f64,
                })
                .collect(),
        });
        out
    }
}

/// Every listed task, in every namespace.
fn all_tasks(tasks: &TaskManager, db: &Db) -> Vec<Arc<ShimTask>> {
    match db.namespace_list() {
        Ok(namespaces) => namespaces
            .iter()
            .flat_map(|(ns, _)| tasks.list(ns))
            .collect(),
        Err(e) => {
            log::error!("cgroups monitor: list namespaces: {e}");
            Vec::new()
        }
    }
}

/// `Stats` of one task's shim (or, for runtime v1, its cgroup), bounded by `timeout`.
async fn stat(t: &ShimTask, timeout: Duration) -> Result<crate::runtime::Any, Error> {
    match tokio::time::timeout(timeout, t.client().stats()).await {
        Ok(Ok(Some(any))) => Ok(any),
        Ok(Ok(None)) => Err(Error::Empty {
            namespace: t.namespace.clone(),
            id: t.id.clone(),
        }),
        Ok(Err(source)) => Err(Error::Stats {
            namespace: t.namespace.clone(),
            id: t.id.clone(),
            source: Box::new(source),
        }),
        Err(_) => Err(Error::Timeout {
            namespace: t.namespace.clone(),
            id: t.id.clone(),
            timeout,
        }),
    }
}

/// Whether a `/tasks/create` bundle path is a runtime v1 bundle
/// (`<state>/io.containerd.runtime.v1.linux/<ns>/<id>`).
fn is_v1_bundle(bundle: &str) -> bool {
    std::path::Path::new(bundle)
        .ancestors()
        .nth(2)
        .and_then(std::path::Path::file_name)
        .is_some_and(|n| n == crate::runtime::v1::TASK_DIR)
}

/// Follows task creates and deletes: runtime v1 tasks get an OOM watch at create and lose
/// it at delete. Tasks re-adopted at start-up (already in the manager's list) are watched
/// first.
async fn follow_tasks(
    tasks: TaskManager,
    db: Arc<Db>,
    events: Exchange,
    oom: Arc<oom::OomWatch>,
    restored: Arc<Restored>,
) {
    let filter = match Filter::parse_all([r#"topic=="/tasks/create""#, r#"topic=="/tasks/delete""#])
    {
        Ok(f) => f,
        Err(e) => {
            log::error!("cgroups monitor: event filter: {e}");
            return;
        }
    };
    // Subscribe before looking at the list, so no create falls between the two.
    let mut sub = events.subscribe(filter);
    for t in all_tasks(&tasks, &db) {
        if let TaskClient::V1(c) = t.client() {
            match c.state("").await {
                Ok(s) if s.pid > 0 => {
                    if let Err(e) = oom.add(&t.namespace, &t.id, s.pid) {
                        log::warn!("{e}");
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("OOM watch of restored task {}/{}: {e}", t.namespace, t.id),
            }
        }
    }
    while let Some(env) = sub.next().await {
        use prost::Message as _;
        match env.topic.as_str() {
            "/tasks/create" => {
                let Ok(ev) = protos::events::TaskCreate::decode(env.event.value.as_slice()) else {
                    continue;
                };
                forget_restored(&restored, &env.namespace, &ev.container_id);
                if is_v1_bundle(&ev.bundle) && ev.pid > 0 {
                    if let Err(e) = oom.add(&env.namespace, &ev.container_id, ev.pid) {
                        log::warn!("{e}");
                    }
                }
            }
            "/tasks/delete" => {
                let Ok(ev) = protos::events::TaskDelete::decode(env.event.value.as_slice()) else {
                    continue;
                };
                // The init's delete (an exec's delete has a process id).
                if (ev.id.is_empty() || ev.id == ev.container_id)
                    && oom.contains(&env.namespace, &ev.container_id)
                {
                    oom.remove(&env.namespace, &ev.container_id);
                }
            }
            _ => {}
        }
    }
}

/// The monitor's `ctr plugins ls` row and the monitor, unless disabled. Reads
/// `no_prometheus`; starts the OOM watch of runtime v1 tasks.
pub fn register(
    cfg: &crate::config::Config,
    db: Arc<Db>,
    tasks: TaskManager,
    events: Exchange,
    disabled: &dyn Fn(&str) -> bool,
) -> (Option<PluginInfo>, Option<CgroupsMonitor>) {
    if disabled(&format!("{PLUGIN_TYPE}.{PLUGIN_ID}")) {
        return (None, None);
    }
    let row = PluginInfo {
        platform: true,
        ..PluginInfo::ok(PLUGIN_TYPE, PLUGIN_ID, &["io.containerd.event.v1"])
    };
    let config = match cfg
        .plugin_config::<Config>(&format!("{PLUGIN_TYPE}.{PLUGIN_ID}"))
        .map_err(Error::Config)
    {
        Ok(c) => c,
        Err(e) => {
            log::error!("cgroups monitor not started: {e}");
            return (Some(row.failed(e.to_string())), None);
        }
    };
    // Start-up has re-adopted the previous run's tasks by now, and nothing is served yet:
    // whatever is listed was restored.
    let restored: Arc<Restored> = Arc::new(std::sync::Mutex::new(
        all_tasks(&tasks, &db)
            .iter()
            .map(|t| (t.namespace.clone(), t.id.clone()))
            .collect(),
    ));
    let (oom, oom_task) = oom::OomWatch::new(events.clone());
    let follow = tokio::spawn(follow_tasks(
        tasks.clone(),
        Arc::clone(&db),
        events,
        Arc::clone(&oom),
        Arc::clone(&restored),
    ));
    let monitor = CgroupsMonitor {
        tasks,
        db,
        restored,
        prometheus: !config.no_prometheus,
        timeout: cfg.timeout("io.containerd.timeout.metrics.shimstats", STATS_TIMEOUT),
        oom,
        _background: Arc::new(Background(vec![oom_task, follow])),
    };
    (Some(row), Some(monitor))
}

#[cfg(test)]
mod tests;
