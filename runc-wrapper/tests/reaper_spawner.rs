//! The `Spawner` seam as the shim uses it: this test process is a child subreaper with its own
//! `waitpid(-1)` thread reaping *every* child and routing exit statuses by pid to subscribers.
//! Nothing may go through tokio's child reaping here. Its own test binary (one test) because a
//! `waitpid(-1)` loop would steal the children of any other test in the same process.

mod common;

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use runc_wrapper::{
    ContainerStatus, CreateOpts, DeleteOpts, ExecOpts, ExitFuture, KillOpts, Runc, Spawned, Spawner,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

type Exit = (i32, ExitStatus);

/// A minimal subreaper: one thread calls `waitpid(-1)` and broadcasts each exit.
#[derive(Debug, Default)]
struct Reaper {
    subscribers: Mutex<Vec<UnboundedSender<Exit>>>,
}

impl Reaper {
    fn start() -> Arc<Reaper> {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let reaper = Arc::new(Reaper::default());
        let r = Arc::clone(&reaper);
        std::thread::spawn(move || loop {
            let raw = match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => Some((pid, code << 8)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    Some((pid, sig as i32 | if core { 0x80 } else { 0 }))
                }
                Ok(_) => None,
                Err(_) => {
                    // ECHILD: no children right now.
                    std::thread::sleep(Duration::from_millis(5));
                    None
                }
            };
            if let Some((pid, raw)) = raw {
                let exit = (pid.as_raw(), ExitStatus::from_raw(raw));
                r.subscribers
                    .lock()
                    .unwrap()
                    .retain(|s| s.send(exit).is_ok());
            }
        });
        reaper
    }

    fn subscribe(&self) -> UnboundedReceiver<Exit> {
        let (tx, rx) = unbounded_channel();
        self.subscribers.lock().unwrap().push(tx);
        rx
    }
}

/// What the shim's spawner looks like: subscribe, *then* start, then filter by pid.
#[derive(Debug)]
struct ReaperSpawner(Arc<Reaper>);

impl Spawner for ReaperSpawner {
    fn spawn(&self, mut cmd: Command) -> io::Result<Spawned> {
        let mut exits = self.0.subscribe();
        let child = cmd.spawn()?;
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        let exit: ExitFuture = Box::pin(async move {
            while let Some((p, status)) = exits.recv().await {
                if p == pid {
                    return Ok(status);
                }
            }
            Err(io::Error::other("reaper stopped"))
        });
        Spawned::from_std_child(child, exit)
    }
}

#[tokio::test]
async fn runc_calls_work_under_a_waitpid_all_reaper() {
    common::require(common::RUNC, "runc");
    // Everything that uses std's own waiting (bundle creation) happens before the reaper runs.
    let mut env = Env::new("reaper");
    let bundle = env.bundle("b", &["sleep", "30"]);
    let fake_dir = tempfile::tempdir().unwrap();
    let hang = fake_dir.path().join("hang");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let reaper = Reaper::start();
    let spawner = Arc::new(ReaperSpawner(Arc::clone(&reaper)));
    env.runc = Runc::builder()
        .binary(common::RUNC)
        .root(env.root())
        .timeout(Some(Duration::from_secs(20)))
        .spawner(spawner.clone())
        .build();
    let runc = env.runc.clone();

    // Fast failures: runc exits within milliseconds, possibly before `spawn` returns. A lost
    // exit would show up as a Timeout here.
    for i in 0..10 {
        let err = runc
            .create(
                &format!("missing-{i}"),
                &env.dir.path().join("nope"),
                CreateOpts::default(),
            )
            .await
            .expect_err("create without bundle");
        assert!(!err.is_timeout(), "exit lost: {err}");
        assert!(
            err.runtime_message()
                .unwrap_or_default()
                .contains("no such file or directory"),
            "{err}"
        );
    }

    let id = env.id("c");
    runc.create(&id, &bundle, CreateOpts::default())
        .await
        .expect("create");
    runc.start(&id).await.expect("start");
    let out = runc
        .exec(
            &id,
            &Env::process(&bundle, &["sh", "-c", "echo under-reaper; exit 4"]),
            ExecOpts::default(),
        )
        .await
        .expect("exec");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "under-reaper\n");
    assert_eq!(
        runc.state(&id).await.unwrap().status,
        ContainerStatus::Running
    );

    // The container's init is our grandchild; once runc exits it is reparented to us
    // (subreaper) and its exit reaches the reaper like any other.
    let init = runc.state(&id).await.unwrap().pid;
    let mut init_exit = reaper.subscribe();
    runc.kill(&id, 9, &KillOpts::default()).await.expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((pid, status)) = init_exit.recv().await {
            if pid == init {
                return Some(status);
            }
        }
        None
    })
    .await
    .expect("init exit never routed to the subreaper")
    .expect("reaper stopped");
    assert_eq!(status.signal(), Some(9));
    runc.delete(&id, &DeleteOpts::default())
        .await
        .expect("delete");

    // Timeout through the custom spawner: killed by pid, reaped by our loop.
    let hung = Runc::builder()
        .binary(&hang)
        .timeout(Some(Duration::from_millis(300)))
        .spawner(spawner)
        .build();
    let err = hung.version().await.expect_err("timeout");
    assert!(err.is_timeout(), "{err}");
}
