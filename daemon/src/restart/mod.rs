//! The restart monitor, containerd's `io.containerd.internal.v1 restart` plugin
//! (`runtime/restart/monitor` in 1.6, `plugins/restart` in 2.x): keeps the task of every
//! container labelled `containerd.io/restart.status` in that status. nerdctl's
//! `--restart=always|unless-stopped|on-failure[:N]` and `ctr run --label
//! containerd.io/restart.status=running` rely on it.
//!
//! Every `interval` (`[plugins."io.containerd.internal.v1.restart"] interval = "10s"`, a Go
//! duration) it walks all namespaces' containers carrying the status label, in parallel per
//! namespace and per container, and for each:
//! - `running` wanted, task missing / stopped / created: if the restart policy
//!   ([`policy`]) agrees, bump `containerd.io/restart.count`, kill (SIGKILL, all) and delete
//!   the old task if any, create a task with stdout/stderr to `restart.loguri` (or
//!   `file://` + the deprecated `restart.logpath`; else no I/O) and start it;
//! - `stopped` wanted, task not stopped: kill (SIGKILL, all), wait, delete.
//!
//! Unlike containerd, which goes through its own client API in-process, the monitor uses the
//! daemon's internals directly: container records from [`crate::metadata`], rootfs mounts
//! from the container's snapshot (what the client's `NewTask` sends), tasks through
//! [`crate::runtime::TaskManager`]. Failures are logged with the container's namespace and
//! id and never stop the loop; a change still running when the next round starts (a hung
//! shim) is not started twice. A container created less than 2 s ago without a task is left
//! to its creator for one more round (containerd races with `ctr run` / nerdctl there).

pub mod policy;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protos::containerd::events::ContainerUpdate;

use crate::errdefs::{HasKind, Kind};
use crate::events::Exchange;
use crate::metadata::containers::Container;
use crate::metadata::{self, Ctx, Db, Namespace};
use crate::runtime::{self, CreateOpts, Mount, ProcessIo, TaskManager};
use policy::{LogTarget, Plan, COUNT_LABEL, STATUS_LABEL};

/// The plugin's type in `ctr plugins ls`.
pub const PLUGIN_TYPE: &str = "io.containerd.internal.v1";
/// The plugin's id in `ctr plugins ls`.
pub const PLUGIN_ID: &str = "restart";
/// containerd's default `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// containerd's `stateTimeout`: a hung shim must not hang the round.
const STATE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a killed task may take to exit before it is deleted anyway.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// How long a round waits for its changes; slower ones go on in the background and their
/// containers are skipped until they finish.
const ROUND_WAIT: Duration = Duration::from_secs(60);

/// A container younger than this without a task is left for the next round (containerd has
/// no such grace and races with the client that creates the container and then its task).
const NEW_CONTAINER_GRACE: Duration = Duration::from_secs(2);

/// Was the container created less than [`NEW_CONTAINER_GRACE`] ago?
fn is_new(c: &Container) -> bool {
    c.created
        .to_system()
        .elapsed()
        .is_ok_and(|age| age < NEW_CONTAINER_GRACE)
}

/// What can go wrong while reconciling one container (logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the metadata store.
    #[error("{what}: {source}")]
    Metadata {
        /// What was being done, with the container or namespace.
        what: String,
        /// The store's error.
        source: metadata::Error,
    },
    /// A task operation.
    #[error("{what}: {source}")]
    Runtime {
        /// What was being done, with the container.
        what: String,
        /// The runtime's error.
        source: runtime::Error,
    },
    /// The container record cannot produce a task.
    #[error("container {ns}/{id}: {reason}")]
    Container {
        /// Namespace.
        ns: String,
        /// Container id.
        id: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A blocking worker panicked or was cancelled.
    #[error("worker for {what} failed: {reason}")]
    Worker {
        /// What it was doing.
        what: String,
        /// The join error.
        reason: String,
    },
}

impl HasKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Metadata { source, .. } => source.kind(),
            Error::Runtime { source, .. } => source.kind(),
            Error::Container { .. } => Kind::FailedPrecondition,
            Error::Worker { .. } => Kind::Unknown,
        }
    }
}

/// `[plugins."io.containerd.internal.v1.restart"]` (containerd 2.x:
/// `io.containerd.monitor.container.v1.restart`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Reconcile interval, a Go duration (`"10s"`); empty or `"0"` means 10 s.
    pub interval: String,
}

impl Config {
    /// The interval to sleep between rounds (containerd: zero means 10 s).
    pub fn interval(&self) -> Result<Duration, String> {
        if self.interval.trim().is_empty() {
            return Ok(DEFAULT_INTERVAL);
        }
        match crate::config::parse_go_duration(&self.interval) {
            Some(d) if d.is_zero() => Ok(DEFAULT_INTERVAL),
            Some(d) => Ok(d),
            None => Err(format!(
                "interval {:?} is not a duration like \"10s\" or \"500ms\"",
                self.interval
            )),
        }
    }

    /// The section from berthd's config: the 1.x id, else the 2.x one.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Config, String> {
        for id in [crate::config::ids::RESTART, crate::config::ids::RESTART_V2] {
            if cfg.plugins.contains_key(id) {
                return cfg
                    .plugin_config::<Config>(id)
                    .map_err(|e| format!("plugins.{id:?}: {e}"));
            }
        }
        Ok(Config::default())
    }
}

/// The monitor: handles to the metadata store, the task manager and the event exchange.
#[derive(Clone)]
pub struct Monitor {
    db: Arc<Db>,
    tasks: TaskManager,
    events: Exchange,
    /// (namespace, container id) with a change under way.
    busy: Arc<Mutex<HashSet<(String, String)>>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("restart::Monitor").finish_non_exhaustive()
    }
}

/// Removes a container from the busy set when its change ends (or is dropped).
struct BusyGuard {
    set: Arc<Mutex<HashSet<(String, String)>>>,
    key: (String, String),
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Runs blocking metadata work off the async threads.
async fn blocking<T, F>(what: String, f: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, metadata::Error> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|source| Error::Metadata { what, source }),
        Err(e) => Err(Error::Worker {
            what,
            reason: e.to_string(),
        }),
    }
}

impl Monitor {
    /// A monitor over the daemon's store, tasks and events.
    pub fn new(db: Arc<Db>, tasks: TaskManager, events: Exchange) -> Monitor {
        Monitor {
            db,
            tasks,
            events,
            busy: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Reconciles now, then every `interval`, forever (abort the handle to stop).
    pub fn spawn(self, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.reconcile().await;
                tokio::time::sleep(interval).await;
            }
        })
    }

    /// One round over every namespace (containerd `monitor.reconcile`).
    pub async fn reconcile(&self) {
        let db = self.db.clone();
        let namespaces = match blocking("list namespaces".into(), move || db.namespace_list()).await
        {
            Ok(n) => n,
            Err(e) => {
                log::error!("restart monitor: reconcile: {e}");
                return;
            }
        };
        futures::future::join_all(
            namespaces
                .into_iter()
                .map(|(ns, _)| self.reconcile_namespace(ns)),
        )
        .await;
    }

    async fn reconcile_namespace(&self, ns: String) {
        let Ok(namespace) = Namespace::new(&ns) else {
            return;
        };
        let c = Ctx {
            ns: namespace,
            lease: None,
        };
        let filter = match crate::filters::Filter::parse(&format!("labels.{STATUS_LABEL:?}")) {
            Ok(f) => f,
            Err(e) => {
                log::error!("restart monitor: status label filter: {e}");
                return;
            }
        };
        let db = self.db.clone();
        let containers = match blocking(format!("list containers in namespace {ns}"), move || {
            db.container_list(&c, &filter)
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                log::error!("restart monitor: monitor for changes: {e}");
                return;
            }
        };
        let mut changes = Vec::new();
        for container in containers {
            let key = (ns.clone(), container.id.clone());
            if self
                .busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key)
            {
                log::debug!(
                    "restart monitor: container {ns}/{}: previous change still running",
                    container.id
                );
                continue;
            }
            let observed = self.observe(&ns, &container.id).await;
            if observed.is_none() && is_new(&container) {
                // Its creator (`ctr run`, nerdctl) is most likely creating the task right now:
                // starting one too would fail either its create or ours.
                log::debug!(
                    "restart monitor: container {ns}/{} is new and has no task yet; next round",
                    container.id
                );
                continue;
            }
            let plan = match policy::plan(&container.labels, observed) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    log::error!("restart monitor: container {ns}/{}: {e}", container.id);
                    continue;
                }
            };
            self.busy
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone());
            let guard = BusyGuard {
                set: self.busy.clone(),
                key,
            };
            let m = self.clone();
            let ns = ns.clone();
            changes.push(tokio::spawn(async move {
                let _guard = guard;
                let id = container.id.clone();
                if let Err(e) = m.apply(&ns, container, plan).await {
                    log::error!("restart monitor: apply change to container {ns}/{id}: {e}");
                }
            }));
        }
        if changes.is_empty() {
            return;
        }
        if tokio::time::timeout(ROUND_WAIT, futures::future::join_all(changes))
            .await
            .is_err()
        {
            log::warn!(
                "restart monitor: changes in namespace {ns} still running after {ROUND_WAIT:?}; their containers are skipped until they finish"
            );
        }
    }

    /// The task's (status, exit status), `None` without a task or when its shim does not
    /// answer (containerd's `Task` / `Status` errors).
    async fn observe(&self, ns: &str, id: &str) -> policy::Observed {
        let task = self.tasks.get(ns, id).ok()?;
        match tokio::time::timeout(STATE_TIMEOUT, task.client().state("")).await {
            Ok(Ok(s)) => Some((s.status, s.exit_status)),
            Ok(Err(e)) => {
                log::warn!("restart monitor: state of task {ns}/{id}: {e}");
                None
            }
            Err(_) => {
                log::warn!(
                    "restart monitor: state of task {ns}/{id}: shim did not answer within {STATE_TIMEOUT:?}"
                );
                None
            }
        }
    }

    async fn apply(&self, ns: &str, container: Container, plan: Plan) -> Result<(), Error> {
        match plan {
            Plan::Stop => {
                log::info!(
                    "restart monitor: stopping task of container {ns}/{}",
                    container.id
                );
                self.kill_task(ns, &container.id).await
            }
            Plan::Start { count, log } => {
                log::info!(
                    "restart monitor: starting task of container {ns}/{} (restart count {count})",
                    container.id
                );
                self.set_count(ns, &container.id, count).await?;
                // As containerd: a failure to remove the old task shows up in Create.
                if let Err(e) = self.kill_task(ns, &container.id).await {
                    log::warn!("restart monitor: {e}");
                }
                self.start_task(ns, &container, &log).await
            }
        }
    }

    /// Writes `containerd.io/restart.count` (containerd `WithAdditionalContainerLabels` +
    /// `Update`) and publishes `/containers/update` as the containers service does.
    async fn set_count(&self, ns: &str, id: &str, count: i64) -> Result<(), Error> {
        let c = Ctx {
            ns: Namespace::new(ns).map_err(|source| Error::Metadata {
                what: format!("namespace {ns}"),
                source,
            })?,
            lease: None,
        };
        let update = Container {
            id: id.to_string(),
            labels: [(COUNT_LABEL.to_string(), count.to_string())].into(),
            ..Container::default()
        };
        let db = self.db.clone();
        let path = format!("labels.{COUNT_LABEL}");
        let updated = blocking(
            format!("set {COUNT_LABEL} of container {ns}/{id}"),
            move || db.container_update(&c, &update, &[path]),
        )
        .await?;
        self.events.publish(
            ns,
            &ContainerUpdate {
                id: updated.id,
                image: updated.image,
                labels: updated.labels,
                snapshot_key: updated.snapshot_key,
            },
        );
        Ok(())
    }

    /// containerd `killTask`: SIGKILL every process of the task, wait for the exit, delete.
    /// Nothing to do without a task; a task that cannot be killed is deleted if it can be.
    async fn kill_task(&self, ns: &str, id: &str) -> Result<(), Error> {
        let Ok(task) = self.tasks.get(ns, id) else {
            return Ok(());
        };
        let rt = |what: &str, source| Error::Runtime {
            what: format!("{what} task of container {ns}/{id}"),
            source,
        };
        if let Err(e) = task
            .client()
            .kill("", nix::sys::signal::Signal::SIGKILL as u32, true)
            .await
        {
            return match self.tasks.delete(ns, id).await {
                Ok(_) => Ok(()),
                Err(_) => Err(rt("kill", e)),
            };
        }
        match tokio::time::timeout(KILL_WAIT, task.client().wait("")).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("restart monitor: wait for task {ns}/{id}: {e}"),
            Err(_) => log::warn!(
                "restart monitor: task {ns}/{id} did not exit within {KILL_WAIT:?} of SIGKILL"
            ),
        }
        drop(task);
        self.tasks
            .delete(ns, id)
            .await
            .map(drop)
            .map_err(|e| rt("delete", e))
    }

    /// containerd `container.NewTask(ctx, log)` then `task.Start`: rootfs mounts from the
    /// container's snapshot, runtime and options from its record, no task options.
    async fn start_task(
        &self,
        ns: &str,
        container: &Container,
        log: &LogTarget,
    ) -> Result<(), Error> {
        let id = container.id.clone();
        let bad = |reason: String| Error::Container {
            ns: ns.to_string(),
            id: id.clone(),
            reason,
        };
        let Some(spec) = container.spec.clone() else {
            return Err(bad("has no spec".into()));
        };
        let spec_json: serde_json::Value = serde_json::from_slice(&spec.value)
            .map_err(|e| bad(format!("spec is not JSON: {e}")))?;
        let terminal = spec_json
            .pointer("/process/terminal")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let mount_label = spec_json
            .pointer("/linux/mountLabel")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        let rootfs = self.rootfs(ns, container, &mount_label).await?;
        let io = match log {
            LogTarget::Null => ProcessIo::default(),
            // containerd 2.x `TerminalLogURI` for a terminal spec.
            LogTarget::Uri(u) => ProcessIo {
                stdin: String::new(),
                stdout: u.clone(),
                stderr: u.clone(),
                terminal,
            },
        };
        let opts = CreateOpts {
            id: id.clone(),
            spec: prost_types::Any {
                type_url: spec.type_url,
                value: spec.value,
            },
            runtime: container.runtime.name.clone(),
            runtime_path: String::new(),
            runtime_options: container.runtime.options.clone().map(|o| prost_types::Any {
                type_url: o.type_url,
                value: o.value,
            }),
            task_options: None,
            rootfs,
            io,
            checkpoint: String::new(),
        };
        let rt = |what: &str, source| Error::Runtime {
            what: format!("{what} task of container {ns}/{id}"),
            source,
        };
        self.tasks
            .create(ns, opts)
            .await
            .map_err(|e| rt("create", e))?;
        let task = self.tasks.get(ns, &id).map_err(|e| rt("find new", e))?;
        let pid = task.client().start("").await.map_err(|e| rt("start", e))?;
        log::info!("restart monitor: started task of container {ns}/{id}, pid {pid}");
        Ok(())
    }

    /// The client's rootfs: the snapshot's mounts, with the spec's SELinux mount label as a
    /// `context=` option (containerd `label.FormatMountLabel`).
    async fn rootfs(
        &self,
        ns: &str,
        container: &Container,
        mount_label: &str,
    ) -> Result<Vec<Mount>, Error> {
        if container.snapshot_key.is_empty() {
            return Ok(Vec::new());
        }
        if container.snapshotter.is_empty() {
            return Err(Error::Container {
                ns: ns.to_string(),
                id: container.id.clone(),
                reason: "unable to resolve rootfs mounts without snapshotter on container".into(),
            });
        }
        let c = Ctx {
            ns: Namespace::new(ns).map_err(|source| Error::Metadata {
                what: format!("namespace {ns}"),
                source,
            })?,
            lease: None,
        };
        let db = self.db.clone();
        let (snapshotter, key) = (
            container.snapshotter.clone(),
            container.snapshot_key.clone(),
        );
        let mounts = blocking(
            format!(
                "mounts of snapshot {:?} ({}) of container {ns}/{}",
                container.snapshot_key, container.snapshotter, container.id
            ),
            move || db.snapshot_mounts(&c, &snapshotter, &key),
        )
        .await?;
        Ok(mounts
            .into_iter()
            .map(|m| {
                let mut options = m.options;
                if !mount_label.is_empty() {
                    options.push(format!("context=\"{mount_label}\""));
                }
                Mount {
                    kind: m.fs_type,
                    source: m.source,
                    target: String::new(),
                    options,
                }
            })
            .collect())
    }
}

/// Starts the monitor unless disabled, and returns its `ctr plugins ls` row (and the handle
/// to abort at shutdown). A bad `interval` fails the plugin, not the daemon.
pub fn register(
    cfg: &crate::config::Config,
    db: Arc<Db>,
    tasks: TaskManager,
    events: Exchange,
    disabled: &dyn Fn(&str) -> bool,
) -> (
    Option<crate::api::introspection::PluginInfo>,
    Option<tokio::task::JoinHandle<()>>,
) {
    use crate::api::introspection::PluginInfo;
    if disabled(&format!("{PLUGIN_TYPE}.{PLUGIN_ID}")) {
        return (None, None);
    }
    let row = PluginInfo::ok(
        PLUGIN_TYPE,
        PLUGIN_ID,
        &["io.containerd.event.v1", "io.containerd.service.v1"],
    );
    let interval = match Config::from_config(cfg).and_then(|c| c.interval()) {
        Ok(i) => i,
        Err(e) => {
            log::error!("restart monitor not started: {e}");
            return (Some(row.failed(e)), None);
        }
    };
    log::debug!("restart monitor: reconciling every {interval:?}");
    let handle = Monitor::new(db, tasks, events).spawn(interval);
    (Some(row), Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<crate::config::Config, crate::config::Error> {
        let text = format!("version = 2\nroot = \"/var/lib/berth\"\nstate = \"/run/berth\"\n{src}");
        crate::config::Config::parse(&text, std::path::Path::new("config.toml")).map(|c| c.0)
    }

    #[test]
    fn interval_comes_from_either_plugin_id_and_defaults_to_10s() {
        let cases: &[(&str, Result<Duration, &str>)] = &[
            ("", Ok(DEFAULT_INTERVAL)),
            (
                "[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"1s\"",
                Ok(Duration::from_secs(1)),
            ),
            (
                "[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"1m30s\"",
                Ok(Duration::from_secs(90)),
            ),
            (
                "[plugins.\"io.containerd.internal.v1.restart\"]\ninterval = \"0\"",
                Ok(DEFAULT_INTERVAL),
            ),
            (
                "[plugins.\"io.containerd.monitor.container.v1.restart\"]\ninterval = \"250ms\"",
                Ok(Duration::from_millis(250)),
            ),
        ];
        for (src, want) in cases {
            let cfg = parse(src).expect("config parses");
            let got = Config::from_config(&cfg).and_then(|c| c.interval());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, *w, "{src}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{src}: {g}"),
                (g, w) => panic!("{src}: got {g:?}, want {w:?}"),
            }
        }
        // Not a Go duration: berthd does not start, naming the key (containerd fails to
        // decode the plugin's config).
        for bad in ["interval = 5", "interval = \"10 seconds\""] {
            let src = format!("[plugins.\"io.containerd.internal.v1.restart\"]\n{bad}");
            let e = parse(&src).expect_err(bad).to_string();
            assert!(
                e.contains("io.containerd.internal.v1.restart") && e.contains("interval"),
                "{bad}: {e}"
            );
        }
        let bad = Config {
            interval: "10 seconds".into(),
        };
        let e = bad.interval().expect_err("bad duration");
        assert!(e.contains("\"10 seconds\""), "{e}");
    }
}
