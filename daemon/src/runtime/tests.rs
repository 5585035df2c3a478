//! The shim manager against real shims: Debian's Go `containerd-shim-runc-v2` (task API v2,
//! plain-address start reply) and containerd v2.3.4's (task API v3, protobuf bootstrap),
//! with real runc and a busybox rootfs bind-mounted by the shim. No daemon is involved:
//! berthd's sockets are absent, so shims cannot deliver events (they log and carry on).
//!
//! The test process becomes a child subreaper so the daemonised shims re-parent to it; each
//! test reaps the shim pids it learned (by pid, never `waitpid(-1)`, which would steal
//! tokio's children) and asserts they exited.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

const DEBIAN_SHIM_DIR: &str = "/usr/bin";
const V2_3_SHIM_DIR: &str = "/work/shared/interop/containerd-v2.3.4";
const NS: &str = "berth-rt-test";

/// Records every published event.
#[derive(Default)]
struct Capture(Mutex<Vec<(String, String, Any)>>);

impl EventSink for Capture {
    fn publish(&self, namespace: &str, topic: &str, event: Any) {
        self.0
            .lock()
            .expect("lock")
            .push((namespace.into(), topic.into(), event));
    }
}

impl Capture {
    fn topics(&self, id: &str) -> Vec<String> {
        use prost::Message;
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, topic, ev)| match topic.as_str() {
                "/tasks/exit" => protos::events::TaskExit::decode(ev.value.as_slice())
                    .is_ok_and(|e| e.container_id == id),
                "/tasks/delete" => protos::events::TaskDelete::decode(ev.value.as_slice())
                    .is_ok_and(|e| e.container_id == id),
                _ => false,
            })
            .map(|(_, t, _)| t.clone())
            .collect()
    }

    fn exit_status(&self, id: &str) -> Vec<u32> {
        use prost::Message;
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, t, _)| t == "/tasks/exit")
            .filter_map(|(_, _, ev)| protos::events::TaskExit::decode(ev.value.as_slice()).ok())
            .filter(|e| e.container_id == id)
            .map(|e| e.exit_status)
            .collect()
    }
}

/// berthd's ttrpc events endpoint, reduced to recording what shims forward, so shims can
/// deliver their events (and exit promptly instead of retrying undeliverable ones). Like
/// berthd's, it asks the newest manager whether an event is new and tells it what went out.
struct ForwardSink(Arc<Capture>, Arc<Mutex<Option<TaskManager>>>);

impl containerd_shim_protos::shim_async::Events for ForwardSink {
    fn forward<'a, 'b, 'c>(
        &'a self,
        _ctx: &'b ttrpc::r#async::TtrpcContext,
        req: containerd_shim_protos::api::ForwardRequest,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = ttrpc::Result<
                        containerd_shim_protos::protobuf::well_known_types::empty::Empty,
                    >,
                > + Send
                + 'c,
        >,
    >
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            if let Some(env) = req.envelope.as_ref() {
                let ev = env
                    .event
                    .as_ref()
                    .map(|a| Any {
                        type_url: a.type_url.clone(),
                        value: a.value.clone(),
                    })
                    .unwrap_or_default();
                let manager = self.1.lock().expect("lock").clone();
                if let Some(m) = &manager {
                    if !m
                        .forwarded_event_is_new(&env.namespace, &env.topic, &ev)
                        .await
                    {
                        return Ok(
                            containerd_shim_protos::protobuf::well_known_types::empty::Empty::new(),
                        );
                    }
                }
                self.0 .0.lock().expect("lock").push((
                    env.namespace.clone(),
                    format!("shim:{}", env.topic),
                    ev.clone(),
                ));
                if let Some(m) = &manager {
                    m.event_forwarded(&env.namespace, &env.topic, &ev);
                }
            }
            Ok(containerd_shim_protos::protobuf::well_known_types::empty::Empty::new())
        })
    }
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}`"
    );
}

struct Env {
    _server: ttrpc::r#async::Server,
    shim_events: Arc<Capture>,
    /// The manager the events endpoint consults (the newest one made).
    forward_to: Arc<Mutex<Option<TaskManager>>>,
    tmp: tempfile::TempDir,
    rootfs: PathBuf,
    shim_dir: &'static str,
}

impl Env {
    async fn new(shim_dir: &'static str) -> Env {
        require("/bin/busybox", "busybox-static");
        require("/usr/sbin/runc", "runc");
        require(
            &format!("{shim_dir}/containerd-shim-runc-v2"),
            "containerd (or the v2.3.4 interop bundle)",
        );
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = tmp.path().join("image-rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        let shim_events = Arc::new(Capture::default());
        let forward_to = Arc::new(Mutex::new(None));
        let address = format!("unix://{}/berthd.sock.ttrpc", tmp.path().display());
        let mut server = ttrpc::r#async::Server::new()
            .bind(&address)
            .expect("bind events socket")
            .register_service(containerd_shim_protos::shim_async::create_events(Arc::new(
                ForwardSink(shim_events.clone(), forward_to.clone()),
            )));
        server.start().await.expect("start events server");
        Env {
            _server: server,
            shim_events,
            forward_to,
            tmp,
            rootfs,
            shim_dir,
        }
    }

    fn shim_topics(&self) -> Vec<String> {
        self.shim_events
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect()
    }

    fn manager(&self, events: Arc<dyn EventSink>) -> TaskManager {
        let root = self.tmp.path().join("root");
        let state = self.tmp.path().join("state");
        // A socket path nobody listens on: shims only use it to derive their own socket name
        // and to publish events (which fail harmlessly here).
        let address = self.tmp.path().join("berthd.sock");
        let mut cfg = ManagerConfig::new(&root, &state, address.to_str().expect("utf8"));
        cfg.path_env = Some(format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.shim_dir));
        cfg.call_timeout = Duration::from_secs(20);
        cfg.restore_exit_delay = Duration::from_millis(200);
        let m = TaskManager::new(cfg, events);
        *self.forward_to.lock().expect("lock") = Some(m.clone());
        m
    }

    fn spec(&self, args: &[&str]) -> Any {
        let dir = self.tmp.path().join("spec");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = std::process::Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .expect("runc spec");
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("read spec"))
                .expect("json");
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        spec["root"]["readonly"] = false.into();
        Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: serde_json::to_vec(&spec).expect("encode"),
        }
    }

    fn opts(&self, id: &str, args: &[&str], stdout: &Path) -> CreateOpts {
        CreateOpts {
            id: id.into(),
            spec: self.spec(args),
            runtime: "io.containerd.runc.v2".into(),
            rootfs: vec![Mount {
                kind: "bind".into(),
                source: self.rootfs.to_string_lossy().into(),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()],
            }],
            // Go shims need stdout and stderr together for a file:// URI.
            io: ProcessIo {
                stdout: format!("file://{}", stdout.display()),
                stderr: format!("file://{}", stdout.display()),
                ..ProcessIo::default()
            },
            ..CreateOpts::default()
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.tmp
            .path()
            .join("state")
            .join(bundle::TASK_DIR)
            .join(NS)
    }
}

/// Wait for `pid` (a re-parented shim) to exit and reap it.
fn reap(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {}
            Ok(_) => return,
            // Not our child (re-parented elsewhere): fall back to polling for it to vanish.
            Err(nix::errno::Errno::ECHILD) => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return;
                }
            }
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "shim {pid} still running 10 s after its task was deleted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let p = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

async fn lifecycle(shim_dir: &'static str, expect_api: i32) {
    let env = Env::new(shim_dir).await;
    let events = Arc::new(Capture::default());
    let m = env.manager(events.clone());
    let id = format!("life-{expect_api}");
    let out = env.tmp.path().join("out.log");
    let pid = m
        .create(NS, env.opts(&id, &["/bin/busybox", "echo", "hello"], &out))
        .await
        .expect("create");
    assert!(pid > 0);
    let task = m.get(NS, &id).expect("listed");
    assert_eq!(task.client().version(), expect_api, "task API version");
    let bundle_rootfs = task.bundle.rootfs();
    assert!(is_mounted(&bundle_rootfs), "shim mounted the rootfs");
    let (shim_pid, _) = task.client().connect_info().await.expect("connect");
    assert_eq!(
        task.client().state("").await.expect("state").status,
        Status::Created
    );
    // Concurrent calls reach the shim in stream-id order (Go ttrpc 1.2 rejects reordering).
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let c = task.client().clone();
            tokio::spawn(async move { c.state("").await })
        })
        .collect();
    for call in calls {
        let r = call.await.expect("join");
        assert!(r.is_ok(), "concurrent calls from many tasks: {r:?}");
    }
    let started = task.client().start("").await.expect("start");
    assert_eq!(started, pid);
    let exit = tokio::time::timeout(Duration::from_secs(20), task.client().wait(""))
        .await
        .expect("wait in time")
        .expect("wait");
    assert_eq!(exit.status, 0);
    assert_eq!(
        std::fs::read_to_string(&out).expect("stdout file"),
        "hello\n"
    );
    drop(task);
    let exit = m.delete(NS, &id).await.expect("delete");
    assert_eq!((exit.pid, exit.status), (pid, 0));
    assert!(m.get(NS, &id).is_err());
    assert!(!env.state_dir().join(&id).exists(), "bundle removed");
    assert!(!is_mounted(&bundle_rootfs), "rootfs unmounted");
    reap(shim_pid);
    assert!(
        events.topics(&id).is_empty(),
        "berthd itself publishes nothing on a normal lifecycle"
    );
    // The shim forwards the task events over ttrpc; `delete` waits for its /tasks/delete
    // before shutting it down (the 2.3 shim would otherwise exit with it still queued).
    let topics = env.shim_topics();
    assert_eq!(
        topics,
        [
            "shim:/tasks/create",
            "shim:/tasks/start",
            "shim:/tasks/exit",
            "shim:/tasks/delete"
        ],
        "{topics:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_go_shim_runs_a_task_over_task_api_v2() {
    lifecycle(DEBIAN_SHIM_DIR, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_2_3_go_shim_runs_a_task_over_task_api_v3() {
    lifecycle(V2_3_SHIM_DIR, 3).await;
}

async fn restart_reconnects(shim_dir: &'static str, tag: &str) {
    let env = Env::new(shim_dir).await;
    let out = env.tmp.path().join("out.log");
    // Ids are unique across tests: runc's state directory is shared.
    let id = &format!("restart-{tag}");
    let first = env.manager(Arc::new(NoEvents));
    first
        .create(NS, env.opts(id, &["/bin/busybox", "sleep", "60"], &out))
        .await
        .expect("create");
    let t = first.get(NS, id).expect("task");
    t.client().start("").await.expect("start");
    let (shim_pid, _) = t.client().connect_info().await.expect("connect");
    drop(t);
    // "berthd restarts": the old manager (and its connections) go away, the shim stays.
    drop(first);
    let events = Arc::new(Capture::default());
    let second = env.manager(events.clone());
    let report = second.load().await;
    assert_eq!(report.live, vec![(NS.to_string(), id.clone())]);
    assert!(report.cleaned.is_empty());
    let t = second.get(NS, id).expect("re-adopted");
    assert_eq!(
        t.client().state("").await.expect("state").status,
        Status::Running
    );
    t.client().kill("", 9, false).await.expect("kill");
    let exit = tokio::time::timeout(Duration::from_secs(20), t.client().wait(""))
        .await
        .expect("wait in time")
        .expect("wait");
    assert_eq!(exit.status, 137);
    drop(t);
    second.delete(NS, id).await.expect("delete");
    reap(shim_pid);
    assert!(
        events.topics(id).is_empty(),
        "a live shim's exit is the shim's to publish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconnects_to_a_live_debian_shim() {
    restart_reconnects(DEBIAN_SHIM_DIR, "deb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconnects_to_a_live_containerd_2_3_shim() {
    restart_reconnects(V2_3_SHIM_DIR, "v23").await;
}

async fn exited_while_down(shim_dir: &'static str, tag: &str) {
    let env = Env::new(shim_dir).await;
    let out = env.tmp.path().join("out.log");
    let (gone, done) = (&*format!("shim-gone-{tag}"), &*format!("exited-{tag}"));
    let first = env.manager(Arc::new(NoEvents));
    let mut shim_pids = Vec::new();
    for (id, args) in [
        (gone, &["/bin/busybox", "sleep", "60"][..]),
        (done, &["/bin/busybox", "sh", "-c", "exit 3"][..]),
    ] {
        first
            .create(NS, env.opts(id, args, &out))
            .await
            .expect("create");
        let t = first.get(NS, id).expect("task");
        t.client().start("").await.expect("start");
        shim_pids.push(t.client().connect_info().await.expect("connect").0);
    }
    let exit = first
        .get(NS, done)
        .expect("task")
        .client()
        .wait("")
        .await
        .expect("wait");
    assert_eq!(exit.status, 3);
    drop(first);
    // While "berthd is down", the first shim dies.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(shim_pids[0]).expect("pid")),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill shim");
    reap(shim_pids[0]);
    let events = Arc::new(Capture::default());
    let second = env.manager(events.clone());
    let report = second.load().await;
    assert_eq!(report.live, vec![(NS.to_string(), done.to_string())]);
    assert_eq!(report.cleaned, vec![(NS.to_string(), gone.to_string())]);
    // Nothing is published before subscribers had a chance to come back.
    assert!(events.topics(gone).is_empty());
    assert!(events.exit_status(done).is_empty());
    // Wait (bounded, not timed) for the deferred publication of both exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.topics(gone).len() < 2 || events.exit_status(done).is_empty() {
        assert!(
            Instant::now() < deadline,
            "exits not published: {:?} / {:?}",
            events.topics(gone),
            events.exit_status(done)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything else would arrive now: give duplicates a moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The dead shim: `shim delete` killed the container, one exit + one delete published.
    assert_eq!(events.topics(gone), vec!["/tasks/exit", "/tasks/delete"]);
    assert_eq!(events.exit_status(gone), vec![137]);
    assert!(!env.state_dir().join(gone).exists());
    // The task that exited while berthd was down: its exit, once, with its status.
    assert_eq!(events.exit_status(done), vec![3]);
    // The shim re-sending the same exit is recognised as a duplicate.
    let dup = events
        .0
        .lock()
        .expect("lock")
        .iter()
        .find(|(_, t, e)| {
            use prost::Message;
            t == "/tasks/exit"
                && protos::events::TaskExit::decode(e.value.as_slice())
                    .is_ok_and(|e| e.container_id == done)
        })
        .map(|(_, _, e)| e.clone())
        .expect("exit event");
    assert!(!second.forwarded_event_is_new(NS, "/tasks/exit", &dup).await);
    second.delete(NS, done).await.expect("delete");
    reap(shim_pids[1]);
    assert!(
        std::fs::read_dir(env.state_dir())
            .expect("ls")
            .next()
            .is_none(),
        "no bundles left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_during_downtime_are_published_once_debian_shim() {
    exited_while_down(DEBIAN_SHIM_DIR, "deb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_during_downtime_are_published_once_containerd_2_3_shim() {
    exited_while_down(V2_3_SHIM_DIR, "v23").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shim_dying_under_a_running_daemon_is_cleaned_up_with_one_exit() {
    let env = Env::new(DEBIAN_SHIM_DIR).await;
    let events = Arc::new(Capture::default());
    let m = env.manager(events.clone());
    let out = env.tmp.path().join("out.log");
    let id = "dies";
    m.create(NS, env.opts(id, &["/bin/busybox", "sleep", "60"], &out))
        .await
        .expect("create");
    let t = m.get(NS, id).expect("task");
    t.client().start("").await.expect("start");
    let (shim_pid, _) = t.client().connect_info().await.expect("connect");
    drop(t);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(shim_pid).expect("pid")),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill shim");
    reap(shim_pid);
    let deadline = Instant::now() + Duration::from_secs(15);
    while m.get(NS, id).is_ok() || events.topics(id).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "dead shim not noticed: {:?}",
            events.topics(id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.topics(id), vec!["/tasks/exit", "/tasks/delete"]);
    assert_eq!(events.exit_status(id), vec![137]);
    assert!(!env.state_dir().join(id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shim_that_fails_to_start_leaves_nothing_and_says_why() {
    let env = Env::new(DEBIAN_SHIM_DIR).await;
    let m = env.manager(Arc::new(NoEvents));
    let out = env.tmp.path().join("out.log");
    let broken = env.tmp.path().join("containerd-shim-broken-v2");
    std::fs::write(&broken, "#!/bin/sh\nfor a; do last=$a; done\n[ \"$last\" = start ] && { echo 'boom: no runtime here' >&2; exit 1; }\nexit 0\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut opts = env.opts("broken", &["/bin/busybox", "true"], &out);
    opts.runtime_path = broken.to_string_lossy().into();
    let err = m.create(NS, opts).await.expect_err("must fail");
    assert!(err.to_string().contains("boom: no runtime here"), "{err}");
    assert!(
        std::fs::read_dir(env.state_dir())
            .expect("ls")
            .next()
            .is_none(),
        "no bundle left"
    );

    let mut opts = env.opts("unknown", &["/bin/busybox", "true"], &out);
    opts.runtime = "io.containerd.nosuch.v7".into();
    let err = m.create(NS, opts).await.expect_err("must fail");
    assert!(
        err.to_string().contains("containerd-shim-nosuch-v7"),
        "{err}"
    );
    assert_eq!(
        crate::errdefs::HasKind::kind(&err),
        crate::errdefs::Kind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_removes_bundle_mount_and_shim() {
    let env = Env::new(DEBIAN_SHIM_DIR).await;
    let m = env.manager(Arc::new(NoEvents));
    let out = env.tmp.path().join("out.log");
    let mut opts = env.opts("badmount", &["/bin/busybox", "true"], &out);
    opts.rootfs[0].source = "/nonexistent/rootfs".into();
    let err = m.create(NS, opts).await.expect_err("must fail");
    assert!(err.to_string().contains("nonexistent"), "{err}");
    assert!(m.get(NS, "badmount").is_err());
    assert!(
        std::fs::read_dir(env.state_dir())
            .expect("ls")
            .next()
            .is_none(),
        "no bundle left"
    );
    // No shim for it still runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim-runc-v2")
                        && c.contains("badmount")
                        && c.contains(env.tmp.path().to_str().unwrap_or("-"))
                })
            });
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shim of the failed create still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second create with the same id works: nothing half-created blocks it.
    let pid = m
        .create(NS, env.opts("badmount", &["/bin/busybox", "true"], &out))
        .await
        .expect("create again");
    assert!(pid > 0);
    let t = m.get(NS, "badmount").expect("task");
    let (shim_pid, _) = t.client().connect_info().await.expect("connect");
    drop(t);
    m.delete(NS, "badmount").await.expect("delete");
    reap(shim_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_task_and_bad_ids_are_rejected() {
    let env = Env::new(DEBIAN_SHIM_DIR).await;
    let m = env.manager(Arc::new(NoEvents));
    let out = env.tmp.path().join("out.log");
    m.create(NS, env.opts("dup", &["/bin/busybox", "sleep", "30"], &out))
        .await
        .expect("create");
    let err = m
        .create(NS, env.opts("dup", &["/bin/busybox", "true"], &out))
        .await
        .expect_err("dup");
    assert_eq!(
        crate::errdefs::HasKind::kind(&err),
        crate::errdefs::Kind::AlreadyExists,
        "{err}"
    );
    let err = m
        .create(NS, env.opts("../evil", &["/bin/busybox", "true"], &out))
        .await
        .expect_err("bad id");
    assert_eq!(
        crate::errdefs::HasKind::kind(&err),
        crate::errdefs::Kind::InvalidArgument,
        "{err}"
    );
    let t = m.get(NS, "dup").expect("task");
    let (shim_pid, _) = t.client().connect_info().await.expect("connect");
    drop(t);
    m.delete(NS, "dup").await.expect("delete created-only task");
    reap(shim_pid);
}

/// A "shim" whose socket accepts connections but never answers: every call must be bounded,
/// the failure must say which call hung, and clean-up (`<shim> delete`) must still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shim_is_reported_not_waited_on() {
    let env = Env::new(DEBIAN_SHIM_DIR).await;
    let pidfile = env.tmp.path().join("listener.pid");
    let deleted = env.tmp.path().join("delete.called");
    let script = format!(
        r#"#!/bin/sh
for a; do last=$a; done
case "$last" in
start)
  sock="$PWD/hang.sock"
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(16); c=[]
while True: c.append(s.accept())' "$sock" </dev/null >/dev/null 2>&1 &
  echo $! > {pidfile}
  i=0; while [ ! -S "$sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  echo "unix://$sock";;
delete)
  touch {deleted}; kill $(cat {pidfile});;
esac
"#,
        pidfile = pidfile.display(),
        deleted = deleted.display()
    );
    let hung = env.tmp.path().join("containerd-shim-hung-v2");
    std::fs::write(&hung, script).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hung, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cfg = env.manager(Arc::new(NoEvents)).config().clone();
    cfg.call_timeout = Duration::from_secs(1);
    let m = TaskManager::new(cfg, Arc::new(NoEvents));
    let out = env.tmp.path().join("out.log");
    let mut opts = env.opts("hung", &["/bin/busybox", "true"], &out);
    opts.runtime_path = hung.to_string_lossy().into();
    let started = Instant::now();
    let err = m
        .create(NS, opts)
        .await
        .expect_err("a hung shim cannot create");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Timeout {
                method: "Create",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Create"), "{err}");
    assert!(deleted.exists(), "`<shim> delete` ran to clean up");
    assert!(
        std::fs::read_dir(env.state_dir())
            .expect("ls")
            .next()
            .is_none(),
        "no bundle left"
    );
    let listener: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    reap(listener);
}
