//! The task list and shim lifecycle (containerd `runtime/v2/manager.go` `ShimManager` +
//! `TaskManager`, `shim.go` `loadShim`/`cleanupAfterDeadShim`).
//!
//! - `create`: bundle → `<shim> start` → connect → `Create`; any failure undoes every step
//!   (task `Delete`, `Shutdown`, `<shim> delete`, bundle removal), so bad input leaves no
//!   bundle, mount or shim behind.
//! - `delete`: task `Delete` → drop from the list → `Shutdown` → bundle removal.
//! - Dead shims: each live shim has a watch connection; when the shim's socket closes while
//!   the task is still listed, the task is taken off the list (whoever takes it owns the
//!   clean-up, so it happens once), `<shim> delete` reports the exit, and `/tasks/exit` +
//!   `/tasks/delete` are published.
//! - `load`: after a restart, every bundle under the state directory is probed in parallel;
//!   live shims are re-adopted, dead ones cleaned up as above. Exits berthd missed while it
//!   was down are published once: a set of published exits dedups against the shim's own
//!   (re-sent) `/tasks/exit`, see [`TaskManager::forwarded_event_is_new`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prost::Message;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

use super::binary::{self, BootstrapParams, ShimCommand};
use super::bundle::{self, Bundle};
use super::config::{LinuxV1Config, RuntimeConfig};
use super::shim::{ShimClient, TaskClient};
use super::v1;
use super::{event_any, Any, CreateOpts, Error, EventSink, Exit, Result};

/// Topic of task exit events.
pub const TOPIC_EXIT: &str = "/tasks/exit";
/// Topic of task delete events.
pub const TOPIC_DELETE: &str = "/tasks/delete";

/// How the manager runs shims.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// `<root>/io.containerd.runtime.v2.task`: persistent work directories.
    pub root: PathBuf,
    /// `<state>/io.containerd.runtime.v2.task`: bundles.
    pub state: PathBuf,
    /// berthd's gRPC socket path, given to shims as `-address`.
    pub grpc_address: String,
    /// berthd's ttrpc socket for shim events (`<address>.ttrpc`).
    pub ttrpc_address: String,
    /// The binary shims run to publish events (berthd itself).
    pub publish_binary: PathBuf,
    /// Start shims with `-debug`.
    pub debug: bool,
    /// Named runtimes from config.toml.
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    /// `[plugins.linux]`.
    pub linux_v1: LinuxV1Config,
    /// `PATH` to resolve shims in; `None` uses berthd's environment.
    pub path_env: Option<String>,
    /// Bound on `<shim> start`.
    pub start_timeout: Duration,
    /// Bound on each shim call (except `Wait`).
    pub call_timeout: Duration,
    /// Bound on reconnecting to a shim at start-up (containerd: 5 s).
    pub load_timeout: Duration,
    /// Bound on `<shim> delete` and the clean-up after a failure.
    pub cleanup_timeout: Duration,
    /// Bound on a shim's `Shutdown` (containerd `io.containerd.timeout.shim.shutdown`: 3 s).
    pub shutdown_timeout: Duration,
    /// After a restart, how long to wait before publishing the exits of tasks that ended
    /// while berthd was down: subscribers get a chance to reconnect first, and a shim that
    /// re-sends its own `/tasks/exit` in that window wins (ours is then a duplicate).
    pub restore_exit_delay: Duration,
}

impl ManagerConfig {
    /// Defaults for a daemon with `root`, `state` and gRPC socket `address`.
    pub fn new(root: &Path, state: &Path, address: &str) -> ManagerConfig {
        ManagerConfig {
            root: root.join(bundle::TASK_DIR),
            state: state.join(bundle::TASK_DIR),
            grpc_address: address.to_string(),
            ttrpc_address: format!("{address}.ttrpc"),
            publish_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berthd")),
            debug: false,
            runtimes: BTreeMap::new(),
            linux_v1: LinuxV1Config::default(),
            path_env: None,
            start_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
            load_timeout: Duration::from_secs(5),
            cleanup_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(3),
            restore_exit_delay: Duration::from_secs(2),
        }
    }
}

/// A task whose shim berthd is connected to.
pub struct ShimTask {
    /// Task (= container) id.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Runtime name the task was created with (empty after a restore).
    pub runtime: String,
    /// The bundle.
    pub bundle: Bundle,
    client: TaskClient,
    backend: Backend,
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// What it takes to clean up after the shim when it is gone.
#[derive(Debug, Clone)]
enum Backend {
    /// Runtime v2: `<shim> delete`.
    V2(ShimCommand),
    /// Runtime v1: the OCI runtime deletes the container; the shim is killed by pid.
    V1 {
        runtime: String,
        runtime_root: String,
        shim_pid: u32,
        address: String,
    },
}

impl std::fmt::Debug for ShimTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimTask")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ShimTask {
    /// The ttrpc client of this task's shim.
    pub fn client(&self) -> &TaskClient {
        &self.client
    }

    fn stop_background(&self) {
        for h in lock(&self.background).drain(..) {
            h.abort();
        }
    }
}

impl Drop for ShimTask {
    fn drop(&mut self) {
        self.stop_background();
    }
}

type Key = (String, String);

struct Inner {
    cfg: ManagerConfig,
    tasks: Mutex<HashMap<Key, Arc<ShimTask>>>,
    /// Ids between "create started" and "in the list", so two creates cannot race.
    creating: Mutex<HashSet<Key>>,
    /// (namespace, container id, process id, pid) of every exit published or forwarded.
    exits: Mutex<HashSet<(String, String, String, u32)>>,
    /// (namespace, id, exit, shim dead) found by `load`, published after `restore_exit_delay`.
    pending_exits: Mutex<Vec<(String, String, Exit, bool)>>,
    /// The restore grace period: which tasks' forwarded exits wait for it, and until when.
    restore: Mutex<RestoreWindow>,
    /// When each task's `/tasks/delete` was published (by berthd or forwarded by its shim):
    /// a later copy is dropped, so subscribers see one per task. See [`TaskManager::delete`].
    deletes_published: Mutex<HashMap<Key, std::time::Instant>>,
    /// `delete`s waiting for the shim to forward the task's `/tasks/delete`.
    delete_waiters: Mutex<HashMap<Key, Arc<tokio::sync::Notify>>>,
    events: Arc<dyn EventSink>,
}

/// How long `delete` waits for the shim's `/tasks/delete` before shutting the shim down;
/// past it berthd publishes the event itself (and drops the shim's late copy).
const DELETE_EVENT_WAIT: Duration = Duration::from_secs(3);
/// How long a published `/tasks/delete` is remembered, to drop a shim's late re-send.
const DELETE_EVENT_MEMORY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct RestoreWindow {
    until: Option<tokio::time::Instant>,
    held: HashSet<(String, String)>,
}

/// The runtime v2 task manager: cheap to clone, shared by the tasks service and start-up.
#[derive(Clone)]
pub struct TaskManager {
    inner: Arc<Inner>,
}

/// What [`TaskManager::load`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Shims reconnected to.
    pub live: Vec<(String, String)>,
    /// Dead shims cleaned up (their exits were published).
    pub cleaned: Vec<(String, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TaskManager {
    /// A manager publishing task events to `events`.
    pub fn new(cfg: ManagerConfig, events: Arc<dyn EventSink>) -> TaskManager {
        TaskManager {
            inner: Arc::new(Inner {
                cfg,
                tasks: Mutex::new(HashMap::new()),
                creating: Mutex::new(HashSet::new()),
                exits: Mutex::new(HashSet::new()),
                pending_exits: Mutex::new(Vec::new()),
                restore: Mutex::new(RestoreWindow::default()),
                deletes_published: Mutex::new(HashMap::new()),
                delete_waiters: Mutex::new(HashMap::new()),
                events,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// The task `id` in `ns`.
    pub fn get(&self, ns: &str, id: &str) -> Result<Arc<ShimTask>> {
        lock(&self.inner.tasks)
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: format!("task {id}"),
            })
    }

    /// All tasks in `ns`, sorted by id.
    pub fn list(&self, ns: &str) -> Vec<Arc<ShimTask>> {
        let mut v: Vec<_> = lock(&self.inner.tasks)
            .values()
            .filter(|t| t.namespace == ns)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Resolve the shim binary and default options for a container's runtime.
    fn resolve(&self, opts: &CreateOpts) -> Result<(PathBuf, Option<Any>)> {
        let cfg = &self.inner.cfg;
        let mut options = opts
            .task_options
            .clone()
            .or_else(|| opts.runtime_options.clone());
        let mut name = opts.runtime.clone();
        let mut explicit_path = opts.runtime_path.clone();
        if let Some(rc) = cfg.runtimes.get(&opts.runtime) {
            if !rc.runtime_type.is_empty() {
                name.clone_from(&rc.runtime_type);
            }
            if explicit_path.is_empty() {
                explicit_path.clone_from(&rc.runtime_path);
            }
            if options.is_none() {
                options = rc.runc_options(&opts.runtime)?;
            }
        }
        if name.starts_with("io.containerd.runtime.v1.")
            && name != v1::RUNTIME_NAME
            && explicit_path.is_empty()
        {
            return Err(Error::Unimplemented {
                what: format!(
                    "runtime {name:?} is not implemented by berthd: of runtime v1 only {:?} exists",
                    v1::RUNTIME_NAME
                ),
            });
        }
        let path = if explicit_path.is_empty() {
            name
        } else {
            explicit_path
        };
        Ok((binary::resolve(&path, cfg.path_env.as_deref())?, options))
    }

    /// `[plugins.linux]` settings for a v1 task: the shim binary (resolved) and command.
    fn v1_command(&self, name: &str) -> Result<v1::V1Command> {
        let cfg = &self.inner.cfg;
        let c = &cfg.linux_v1;
        if c.no_shim {
            return Err(Error::Unimplemented {
                what: format!("runtime {name:?} with [plugins.linux] no_shim = true (tasks inside the daemon) is not supported by berthd"),
            });
        }
        let binary = binary::resolve_plain(&c.shim, cfg.path_env.as_deref()).ok_or_else(|| Error::NotFound {
            what: format!(
                "runtime {name:?} needs the v1 shim binary {:?} ([plugins.linux] shim), which is not installed (Debian package containerd)",
                c.shim
            ),
        })?;
        Ok(v1::V1Command {
            binary,
            grpc_address: cfg.grpc_address.clone(),
            publish_binary: cfg.publish_binary.clone(),
            runtime_root: c.runtime_root.clone(),
            debug: c.shim_debug || cfg.debug,
        })
    }

    fn v1_dirs(&self) -> (PathBuf, PathBuf) {
        let cfg = &self.inner.cfg;
        let up = |p: &Path| p.parent().unwrap_or(p).join(v1::TASK_DIR);
        (up(&cfg.root), up(&cfg.state))
    }

    async fn create_v1(&self, ns: &str, opts: &CreateOpts) -> Result<u32> {
        let cfg = &self.inner.cfg;
        let command = self.v1_command(&opts.runtime)?;
        let (root, state) = self.v1_dirs();
        let bundle = Bundle::create(&root, &state, ns, &opts.id, &opts.spec.value)?;
        let work = root.join(ns).join(&opts.id);
        let address = v1::socket_address(&cfg.grpc_address, ns, &opts.id);
        let mut child = match command
            .start(
                ns,
                &opts.id,
                &bundle.path,
                &work,
                &address,
                cfg.start_timeout,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = bundle.delete();
                return Err(e);
            }
        };
        let shim_pid = child.id().unwrap_or_default();
        let undo = |e: Error, mut child: tokio::process::Child| {
            let address = address.clone();
            let bundle = bundle.clone();
            async move {
                let _ = child.kill().await;
                let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
                let _ = bundle.delete();
                e
            }
        };
        let client = match v1::V1Client::connect(
            &opts.id,
            ns,
            &bundle.path,
            &address,
            cfg.call_timeout,
            self.inner.events.clone(),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => return Err(undo(e, child).await),
        };
        let runtime = cfg.linux_v1.runtime.clone();
        let options = opts.task_options.clone();
        let pid = match client
            .create(
                &runtime,
                &opts.rootfs,
                &opts.io,
                &opts.checkpoint,
                options.as_ref(),
            )
            .await
        {
            Ok(pid) => pid,
            Err(e) => return Err(undo(e, child).await),
        };
        // The v1 shim is berthd's child until berthd exits: reap it.
        let mut background = v1::copy_logs(ns, &opts.id, &work);
        background.push(tokio::spawn(async move {
            let _ = child.wait().await;
        }));
        let backend = Backend::V1 {
            runtime,
            runtime_root: cfg.linux_v1.runtime_root.clone(),
            shim_pid,
            address: address.clone(),
        };
        let task = Arc::new(ShimTask {
            id: opts.id.clone(),
            namespace: ns.to_string(),
            runtime: opts.runtime.clone(),
            bundle,
            client: TaskClient::V1(client),
            backend,
            background: Mutex::new(background),
        });
        lock(&self.inner.tasks).insert((ns.to_string(), opts.id.clone()), task.clone());
        self.watch_address(&task, &address);
        Ok(pid)
    }

    fn shim_command(&self, binary: PathBuf) -> ShimCommand {
        let cfg = &self.inner.cfg;
        ShimCommand {
            binary,
            grpc_address: cfg.grpc_address.clone(),
            ttrpc_address: cfg.ttrpc_address.clone(),
            publish_binary: cfg.publish_binary.clone(),
            debug: cfg.debug,
        }
    }

    /// Create the task for a container: bundle, shim, `Create`. Returns the task's pid.
    pub async fn create(&self, ns: &str, opts: CreateOpts) -> Result<u32> {
        bundle::validate_id("namespace", ns)?;
        bundle::validate_id("task id", &opts.id)?;
        let key = (ns.to_string(), opts.id.clone());
        {
            let tasks = lock(&self.inner.tasks);
            let mut creating = lock(&self.inner.creating);
            if tasks.contains_key(&key) || !creating.insert(key.clone()) {
                return Err(Error::AlreadyExists {
                    what: format!("task {}", opts.id),
                });
            }
        }
        // A new task under this id: its /tasks/delete is a new one.
        lock(&self.inner.deletes_published).remove(&key);
        let result = self.create_inner(ns, &opts).await;
        lock(&self.inner.creating).remove(&key);
        result
    }

    async fn create_inner(&self, ns: &str, opts: &CreateOpts) -> Result<u32> {
        let cfg = &self.inner.cfg;
        let v1_name = cfg
            .runtimes
            .get(&opts.runtime)
            .map_or(opts.runtime.as_str(), |r| r.runtime_type.as_str());
        if v1_name == v1::RUNTIME_NAME && opts.runtime_path.is_empty() {
            return self.create_v1(ns, opts).await;
        }
        let (shim_path, options) = self.resolve(opts)?;
        let bundle = Bundle::create(&cfg.root, &cfg.state, ns, &opts.id, &opts.spec.value)?;
        let command = self.shim_command(shim_path);
        let log_reader = match open_log_fifo(&bundle, true) {
            Ok(r) => r,
            Err(e) => {
                let _ = bundle.delete();
                return Err(e);
            }
        };
        let log_task = tokio::spawn(copy_shim_log(ns.to_string(), opts.id.clone(), log_reader));
        let options_bytes = options.as_ref().map(|a| {
            // The shim reads a protobuf Any from stdin (v1 shims only).
            Any {
                type_url: a.type_url.clone(),
                value: a.value.clone(),
            }
            .encode_to_vec()
        });
        let params = match command
            .start(&bundle, options_bytes.as_deref(), cfg.start_timeout)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                log::warn!("shim start for {ns}/{} failed: {e}", opts.id);
                self.cleanup_failed_start(&command, &bundle).await;
                log_task.abort();
                return Err(e);
            }
        };
        let undo = |e: Error| async {
            self.cleanup_failed_start(&command, &bundle).await;
            log_task.abort();
            e
        };
        if let Err(e) = save_start_files(&bundle, &command.binary, &params) {
            return Err(undo(e).await);
        }
        let client = match ShimClient::connect(&opts.id, ns, &params, cfg.call_timeout).await {
            Ok(c) => c,
            Err(e) => return Err(undo(e).await),
        };
        let pid = match client.create(&bundle.path, opts, options.as_ref()).await {
            Ok(pid) => pid,
            Err(e) => {
                // containerd TaskManager.Create: delete the half-created task, shut the shim
                // down, then make sure with `<shim> delete`.
                let _ = client.delete("").await;
                let _ = client.shutdown(true, self.inner.cfg.shutdown_timeout).await;
                return Err(undo(e).await);
            }
        };
        let task = Arc::new(ShimTask {
            id: opts.id.clone(),
            namespace: ns.to_string(),
            runtime: opts.runtime.clone(),
            bundle,
            client: TaskClient::V2(client),
            backend: Backend::V2(command),
            background: Mutex::new(vec![log_task]),
        });
        lock(&self.inner.tasks).insert((ns.to_string(), opts.id.clone()), task.clone());
        self.watch(&task, &params);
        Ok(pid)
    }

    async fn cleanup_failed_start(&self, command: &ShimCommand, bundle: &Bundle) {
        if let Err(e) = command.delete(bundle, self.inner.cfg.cleanup_timeout).await {
            log::debug!(
                "cleanup of failed shim {}/{}: {e}",
                bundle.namespace,
                bundle.id
            );
        }
        if let Err(e) = bundle.delete() {
            log::warn!(
                "remove bundle of failed task {}/{}: {e}",
                bundle.namespace,
                bundle.id
            );
        }
    }

    /// Watch the shim's socket: when it closes while the task is listed, the shim died.
    fn watch(&self, task: &Arc<ShimTask>, params: &BootstrapParams) {
        self.watch_address(task, &params.address);
    }

    fn watch_address(&self, task: &Arc<ShimTask>, address: &str) {
        let this = self.clone();
        let address = address.to_string();
        let weak = Arc::downgrade(task);
        let handle = tokio::spawn(async move {
            if let Ok(mut stream) = connect_raw(&address).await {
                let mut buf = [0u8; 64];
                loop {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            let Some(task) = weak.upgrade() else { return };
            let key = (task.namespace.clone(), task.id.clone());
            let taken = {
                let mut tasks = lock(&this.inner.tasks);
                match tasks.get(&key) {
                    Some(t) if Arc::ptr_eq(t, &task) => tasks.remove(&key),
                    _ => None,
                }
            };
            drop(task);
            if let Some(task) = taken {
                log::info!("shim of {}/{} disconnected", key.0, key.1);
                this.cleanup_dead(&task.backend, &task.bundle).await;
                task.stop_background();
            }
        });
        lock(&task.background).push(handle);
    }

    /// `<shim> delete`, bundle removal, and one `/tasks/exit` + `/tasks/delete`
    /// (containerd `cleanupAfterDeadShim`). Returns the exit published.
    async fn cleanup_dead(&self, backend: &Backend, bundle: &Bundle) -> Exit {
        let exit = self.reap_dead(backend, bundle).await;
        self.publish_dead_exit(&bundle.namespace, &bundle.id, &exit);
        exit
    }

    /// `<shim> delete` and bundle removal for a dead shim; returns its exit.
    async fn reap_dead(&self, backend: &Backend, bundle: &Bundle) -> Exit {
        let command = match backend {
            Backend::V2(command) => command,
            Backend::V1 {
                runtime,
                runtime_root,
                address,
                ..
            } => {
                let exit = v1::cleanup_dead(
                    runtime,
                    runtime_root,
                    &bundle.namespace,
                    &bundle.id,
                    &bundle.rootfs(),
                )
                .await;
                let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
                if let Err(e) = bundle.delete() {
                    log::warn!(
                        "remove bundle of dead v1 shim {}/{}: {e}",
                        bundle.namespace,
                        bundle.id
                    );
                }
                return exit;
            }
        };
        let exit = match command.delete(bundle, self.inner.cfg.cleanup_timeout).await {
            Ok(exit) => exit,
            Err(e) => {
                log::warn!(
                    "failed to clean up after dead shim {}/{}: {e}",
                    bundle.namespace,
                    bundle.id
                );
                Exit {
                    pid: 0,
                    status: 255,
                    timestamp: Some(now()),
                }
            }
        };
        if let Err(e) = bundle.delete() {
            log::warn!(
                "remove bundle of dead shim {}/{}: {e}",
                bundle.namespace,
                bundle.id
            );
        }
        exit
    }

    /// `/tasks/exit` (once) + `/tasks/delete` for a task whose shim died.
    fn publish_dead_exit(&self, ns: &str, id: &str, exit: &Exit) {
        self.publish_exit(ns, id, id, exit);
        self.publish_delete_once(ns, id, exit);
        self.forget_exits(ns, id);
    }

    /// Publish `/tasks/delete` for `id` unless it was already published or forwarded.
    fn publish_delete_once(&self, ns: &str, id: &str, exit: &Exit) {
        if !self.mark_delete_published(ns, id) {
            return;
        }
        self.publish(
            ns,
            TOPIC_DELETE,
            event_any(
                "containerd.events.TaskDelete",
                &protos::events::TaskDelete {
                    container_id: id.to_string(),
                    pid: exit.pid,
                    exit_status: exit.status,
                    exited_at: exit.timestamp,
                    id: String::new(),
                },
            ),
        );
    }

    /// Records that `/tasks/delete` of `ns/id` is being published; `false` if it already
    /// was (the caller then drops its copy). Forgets records older than a minute.
    fn mark_delete_published(&self, ns: &str, id: &str) -> bool {
        let mut published = lock(&self.inner.deletes_published);
        published.retain(|_, at| at.elapsed() < DELETE_EVENT_MEMORY);
        published
            .insert((ns.to_string(), id.to_string()), std::time::Instant::now())
            .is_none()
    }

    /// The init `TaskDelete` forwarded by a shim: (container id) if `event` is one.
    fn forwarded_task_delete(topic: &str, event: &Any) -> Option<String> {
        if topic != TOPIC_DELETE {
            return None;
        }
        let ev = protos::events::TaskDelete::decode(event.value.as_slice()).ok()?;
        (ev.id.is_empty() || ev.id == ev.container_id).then_some(ev.container_id)
    }

    /// For the ttrpc events service, after it forwarded an event `forwarded_event_is_new`
    /// let through: wakes a `delete` waiting for this task's `/tasks/delete`, so the shim
    /// is only shut down once its event reached subscribers.
    pub fn event_forwarded(&self, ns: &str, topic: &str, event: &Any) {
        let Some(id) = Self::forwarded_task_delete(topic, event) else {
            return;
        };
        if let Some(n) = lock(&self.inner.delete_waiters).get(&(ns.to_string(), id)) {
            n.notify_one();
        }
    }

    fn publish(&self, ns: &str, topic: &str, event: Any) {
        self.inner.events.publish(ns, topic, event);
    }

    /// Publish `/tasks/exit` unless this exit was already published or forwarded.
    fn publish_exit(&self, ns: &str, container_id: &str, process_id: &str, exit: &Exit) {
        let key = (
            ns.to_string(),
            container_id.to_string(),
            process_id.to_string(),
            exit.pid,
        );
        if !lock(&self.inner.exits).insert(key) {
            return;
        }
        let ev = protos::events::TaskExit {
            container_id: container_id.into(),
            id: process_id.into(),
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit.timestamp,
        };
        self.publish(ns, TOPIC_EXIT, event_any("containerd.events.TaskExit", &ev));
    }

    fn forget_exits(&self, ns: &str, container_id: &str) {
        lock(&self.inner.exits).retain(|(n, c, _, _)| !(n == ns && c == container_id));
    }

    /// For the ttrpc events service: `false` if a `/tasks/exit` forwarded by a shim was
    /// already published (berthd published it on restore, or the shim re-sent it), so
    /// every exit reaches subscribers once. Likewise a task's `/tasks/delete` passes once
    /// (berthd publishes it itself when the shim's copy is late, see [`TaskManager::delete`]).
    /// Other events are always new.
    ///
    /// After a restart, a re-sent exit of a task berthd found stopped is held until the
    /// restore grace period ends (when berthd would publish it itself), so subscribers that
    /// reconnect within it see that exit once, whoever delivers it.
    pub async fn forwarded_event_is_new(&self, ns: &str, topic: &str, event: &Any) -> bool {
        if let Some(id) = Self::forwarded_task_delete(topic, event) {
            return self.mark_delete_published(ns, &id);
        }
        if topic != TOPIC_EXIT {
            return true;
        }
        let Ok(ev) = protos::events::TaskExit::decode(event.value.as_slice()) else {
            return true;
        };
        let hold_until = {
            let restore = lock(&self.inner.restore);
            restore
                .held
                .contains(&(ns.to_string(), ev.container_id.clone()))
                .then_some(restore.until)
                .flatten()
        };
        if let Some(until) = hold_until {
            tokio::time::sleep_until(until).await;
        }
        lock(&self.inner.exits).insert((ns.to_string(), ev.container_id, ev.id, ev.pid))
    }

    /// Delete the task: the shim deletes the container, then exits; the bundle goes.
    ///
    /// A v2 shim queues `/tasks/delete` in `Delete` and forwards it asynchronously; the
    /// containerd 2.3 Go shim exits as soon as `Shutdown` ran its callbacks without waiting
    /// for that forward, so shutting it down at once can lose the event. So berthd waits
    /// (up to [`DELETE_EVENT_WAIT`]) until the shim's `/tasks/delete` went through the ttrpc
    /// events service before `Shutdown`, and publishes it itself if it never came; the
    /// events service drops whichever copy comes second.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<Exit> {
        let task = self.get(ns, id)?;
        let key = (ns.to_string(), id.to_string());
        let delete_event = match &task.client {
            TaskClient::V2(_) => {
                let n = Arc::new(tokio::sync::Notify::new());
                lock(&self.inner.delete_waiters).insert(key.clone(), n.clone());
                Some(n)
            }
            TaskClient::V1(_) => None,
        };
        let result = task.client.delete("").await;
        if let (Ok(exit), Some(n)) = (&result, &delete_event) {
            let forwarded = lock(&self.inner.deletes_published).contains_key(&key)
                || tokio::time::timeout(DELETE_EVENT_WAIT, n.notified())
                    .await
                    .is_ok();
            if !forwarded {
                log::warn!(
                    "shim of {ns}/{id} did not forward /tasks/delete within {DELETE_EVENT_WAIT:?}: publishing it"
                );
            }
            self.publish_delete_once(ns, id, exit);
        }
        if delete_event.is_some() {
            lock(&self.inner.delete_waiters).remove(&key);
        }
        match result {
            Ok(exit) => {
                lock(&self.inner.tasks).remove(&key);
                task.stop_background();
                match (&task.client, &task.backend) {
                    (TaskClient::V2(c), _) => {
                        if let Err(e) = c.shutdown(false, self.inner.cfg.shutdown_timeout).await {
                            log::warn!("shutdown shim of {ns}/{id}: {e}");
                        }
                    }
                    (
                        TaskClient::V1(_),
                        Backend::V1 {
                            shim_pid, address, ..
                        },
                    ) => {
                        // containerd v1 `KillShim`: the v1 shim does not exit by itself.
                        if let Ok(pid) = i32::try_from(*shim_pid) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::SIGKILL,
                            );
                        }
                        let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
                    }
                    (TaskClient::V1(_), Backend::V2(_)) => {}
                }
                if let Err(e) = task.bundle.delete() {
                    log::warn!("remove bundle of {ns}/{id}: {e}");
                }
                if let TaskClient::V1(c) = &task.client {
                    // v1 shims leave /tasks/delete to the runtime.
                    c.published_delete(&exit);
                }
                self.forget_exits(ns, id);
                Ok(exit)
            }
            Err(Error::ShimGone { .. }) => {
                // The shim died under us: clean up here unless the watcher already does.
                let taken = {
                    let mut tasks = lock(&self.inner.tasks);
                    match tasks.get(&key) {
                        Some(t) if Arc::ptr_eq(t, &task) => tasks.remove(&key),
                        _ => None,
                    }
                };
                match taken {
                    Some(t) => {
                        t.stop_background();
                        Ok(self.cleanup_dead(&t.backend, &t.bundle).await)
                    }
                    None => Err(Error::NotFound {
                        what: format!("task {id}"),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Re-adopt every task in the state directory after a restart, in parallel: live shims
    /// are reconnected, dead ones cleaned up with their exits published once.
    pub async fn load(&self) -> LoadReport {
        let mut report = LoadReport::default();
        let mut set = tokio::task::JoinSet::new();
        let v1_state = self.v1_dirs().1;
        let dirs = [(self.inner.cfg.state.clone(), false), (v1_state, true)];
        let namespaces = dirs.iter().filter_map(|(dir, is_v1)| {
            std::fs::read_dir(dir)
                .ok()
                .map(|rd| rd.flatten().map(move |e| (e, *is_v1)))
        });
        for (ns, is_v1) in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            if !ns.path().is_dir() || ns_name.starts_with('.') {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if id.starts_with('.') {
                    // Left over from an interrupted atomic delete.
                    let _ = std::fs::remove_dir_all(entry.path());
                    continue;
                }
                let this = self.clone();
                let ns_name = ns_name.clone();
                set.spawn(async move {
                    let live = if is_v1 {
                        this.load_one_v1(&ns_name, &id).await
                    } else {
                        this.load_one(&ns_name, &id).await
                    };
                    (ns_name, id, live)
                });
            }
        }
        while let Some(res) = set.join_next().await {
            match res {
                Ok((ns, id, true)) => report.live.push((ns, id)),
                Ok((ns, id, false)) => report.cleaned.push((ns, id)),
                Err(e) => log::error!("task load panicked: {e}"),
            }
        }
        report.live.sort();
        report.cleaned.sort();
        let pending = std::mem::take(&mut *lock(&self.inner.pending_exits));
        if !pending.is_empty() {
            let this = self.clone();
            let until = tokio::time::Instant::now() + self.inner.cfg.restore_exit_delay;
            {
                let mut restore = lock(&self.inner.restore);
                restore.until = Some(until);
                restore.held = pending
                    .iter()
                    .map(|(ns, id, _, _)| (ns.clone(), id.clone()))
                    .collect();
            }
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                for (ns, id, exit, dead) in pending {
                    if dead {
                        this.publish_dead_exit(&ns, &id, &exit);
                    } else {
                        this.publish_exit(&ns, &id, &id, &exit);
                    }
                }
                *lock(&this.inner.restore) = RestoreWindow::default();
            });
        }
        report
    }

    /// Re-adopt a v1 task: connect to the address its bundle records, else clean up.
    async fn load_one_v1(&self, ns: &str, id: &str) -> bool {
        let cfg = &self.inner.cfg;
        let (_, state) = self.v1_dirs();
        let bundle = Bundle::open(&state, ns, id);
        let address = std::fs::read_to_string(bundle.path.join("address")).unwrap_or_default();
        let shim_pid: u32 = std::fs::read_to_string(bundle.path.join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let backend = Backend::V1 {
            runtime: cfg.linux_v1.runtime.clone(),
            runtime_root: cfg.linux_v1.runtime_root.clone(),
            shim_pid,
            address: address.clone(),
        };
        let bundle_path = bundle.path.clone();
        let attempt = async {
            let client = v1::V1Client::connect(
                id,
                ns,
                &bundle_path,
                &address,
                cfg.call_timeout,
                self.inner.events.clone(),
            )
            .await?;
            client.shim_pid().await?;
            let state = client.state("").await?;
            Ok::<_, Error>((client, state))
        };
        let connected = if address.is_empty() {
            None
        } else {
            match tokio::time::timeout(cfg.load_timeout, attempt).await {
                Ok(Ok(v)) => Some(v),
                Ok(Err(e)) => {
                    log::warn!("v1 shim of {ns}/{id} is gone: {e}");
                    None
                }
                Err(_) => None,
            }
        };
        let Some((client, state)) = connected else {
            let exit = self.reap_dead(&backend, &bundle).await;
            lock(&self.inner.pending_exits).push((ns.to_string(), id.to_string(), exit, true));
            return false;
        };
        let task = Arc::new(ShimTask {
            id: id.to_string(),
            namespace: ns.to_string(),
            runtime: v1::RUNTIME_NAME.to_string(),
            bundle,
            client: TaskClient::V1(client),
            backend,
            background: Mutex::new(v1::copy_logs(ns, id, &self.v1_dirs().0.join(ns).join(id))),
        });
        lock(&self.inner.tasks).insert((ns.to_string(), id.to_string()), task.clone());
        self.watch_address(&task, &address);
        if state.status == super::Status::Stopped {
            let exit = Exit {
                pid: state.pid,
                status: state.exit_status,
                timestamp: state.exited_at,
            };
            lock(&self.inner.pending_exits).push((ns.to_string(), id.to_string(), exit, false));
        }
        true
    }

    /// Returns true if the shim was live and is listed again.
    async fn load_one(&self, ns: &str, id: &str) -> bool {
        let cfg = &self.inner.cfg;
        let bundle = Bundle::open(&cfg.state, ns, id);
        let binary_path = std::fs::read_to_string(bundle.path.join("shim-binary-path")).ok();
        let Some(binary_path) = binary_path.filter(|p| !p.is_empty()) else {
            // Never got as far as a started shim: nothing runs, just remove it.
            log::info!("removing bundle {} without a shim", bundle.path.display());
            let _ = bundle.delete();
            return false;
        };
        let command = self.shim_command(PathBuf::from(binary_path.trim()));
        let params = read_start_files(&bundle);
        let connected = match params {
            Ok(params) => {
                let attempt = async {
                    let client = ShimClient::connect(id, ns, &params, cfg.call_timeout).await?;
                    client.connect_info().await?;
                    let state = client.state("").await?;
                    Ok::<_, Error>((client, state))
                };
                match tokio::time::timeout(cfg.load_timeout, attempt).await {
                    Ok(Ok(v)) => Some((params, v)),
                    Ok(Err(e)) => {
                        log::warn!("shim of {ns}/{id} is gone: {e}");
                        None
                    }
                    Err(_) => {
                        log::warn!(
                            "shim of {ns}/{id} did not answer within {:?}",
                            cfg.load_timeout
                        );
                        None
                    }
                }
            }
            Err(e) => {
                log::warn!("cannot read shim address of {ns}/{id}: {e}");
                None
            }
        };
        let Some((params, (client, state))) = connected else {
            // Published with the other restore exits, once subscribers are back.
            let exit = self.reap_dead(&Backend::V2(command), &bundle).await;
            lock(&self.inner.pending_exits).push((ns.to_string(), id.to_string(), exit, true));
            return false;
        };
        let mut background = Vec::new();
        match open_log_fifo(&bundle, false) {
            Ok(r) => background.push(tokio::spawn(copy_shim_log(
                ns.to_string(),
                id.to_string(),
                r,
            ))),
            Err(e) => log::debug!("shim log of {ns}/{id}: {e}"),
        }
        let task = Arc::new(ShimTask {
            id: id.to_string(),
            namespace: ns.to_string(),
            runtime: String::new(),
            bundle,
            client: TaskClient::V2(client),
            backend: Backend::V2(command),
            background: Mutex::new(background),
        });
        lock(&self.inner.tasks).insert((ns.to_string(), id.to_string()), task.clone());
        self.watch(&task, &params);
        if state.status == super::Status::Stopped {
            // It exited while berthd was down: subscribers never saw the exit.
            let exit = Exit {
                pid: state.pid,
                status: state.exit_status,
                timestamp: state.exited_at,
            };
            lock(&self.inner.pending_exits).push((ns.to_string(), id.to_string(), exit, false));
        }
        true
    }
}

fn save_start_files(bundle: &Bundle, binary: &Path, params: &BootstrapParams) -> Result<()> {
    let p = bundle.path.join("shim-binary-path");
    std::fs::write(&p, binary.to_string_lossy().as_bytes())
        .map_err(|e| Error::io("write", &p, e))?;
    let p = bundle.path.join("bootstrap.json");
    let json = serde_json::to_vec(params).map_err(|e| Error::Codec {
        context: "bootstrap.json".into(),
        reason: e.to_string(),
    })?;
    let tmp = bundle.path.join(".bootstrap.json.tmp");
    std::fs::write(&tmp, json).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::io("rename", &p, e))
}

/// `bootstrap.json` (written by berthd and containerd 2.x) or the shim's `address` file.
fn read_start_files(bundle: &Bundle) -> std::result::Result<BootstrapParams, String> {
    let p = bundle.path.join("bootstrap.json");
    match std::fs::read(&p) {
        Ok(data) => binary::parse_start_reply(&data).map_err(|e| format!("{}: {e}", p.display())),
        Err(_) => {
            let p = bundle.path.join("address");
            let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            binary::parse_start_reply(&data).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

async fn connect_raw(address: &str) -> std::io::Result<tokio::net::UnixStream> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let std_stream = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        std::os::unix::net::UnixStream::connect_addr(&addr)?
    } else {
        std::os::unix::net::UnixStream::connect(path)?
    };
    std_stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std_stream)
}

/// Create (when `create`) and open the bundle's `log` fifo the shim writes its log to.
/// Opened read-write so it never reports EOF while the shim reopens it.
fn open_log_fifo(bundle: &Bundle, create: bool) -> Result<tokio::net::unix::pipe::Receiver> {
    let path = bundle.path.join("log");
    if create {
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o700))
            .map_err(|e| Error::io("create shim log fifo", &path, e.into()))?;
    }
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
        .map_err(|e| Error::io("open shim log fifo", &path, e))
}

async fn copy_shim_log(ns: String, id: String, reader: tokio::net::unix::pipe::Receiver) {
    let mut lines = tokio::io::BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        #[cfg(test)]
        eprintln!("shim {ns}/{id}: {line}");
        log::info!(target: "berthd::shim", "{ns}/{id}: {line}");
    }
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
