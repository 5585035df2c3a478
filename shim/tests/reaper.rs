//! The shim's reaper, in its own process (it owns `waitpid(-1)`): subscribe-before-start means
//! no exit of a runtime process is lost however fast it exits, statuses keep exit codes and
//! signals apart, and exits nobody subscribed to (re-parented orphans, container processes)
//! reach the service's channel.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use runc_wrapper::Spawner;
use shim::reaper::{set_subreaper, Reaper, ReaperSpawner};

#[test]
fn fast_exits_signals_and_orphans_are_routed() {
    set_subreaper().expect("PR_SET_CHILD_SUBREAPER");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let reaper = Reaper::global();
        let mut others = reaper.take_unsubscribed();
        tokio::spawn(reaper.clone().run());

        // 64 processes that exit immediately, all started before any is awaited.
        let mut spawned = Vec::new();
        for code in 0..64 {
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", &format!("exit {}", code % 7)])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            spawned.push((code % 7, ReaperSpawner.spawn(cmd).expect("spawn sh")));
        }
        for (code, s) in spawned {
            let status = tokio::time::timeout(Duration::from_secs(10), s.exit)
                .await
                .expect("exit delivered in time")
                .expect("exit status");
            assert_eq!(status.code(), Some(code), "pid {}", s.pid);
        }

        // A signal is a signal, not an exit code.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "kill -9 $$"]);
        let s = ReaperSpawner.spawn(cmd).expect("spawn");
        let status = s.exit.await.expect("status");
        assert_eq!(status.signal(), Some(9));

        // An orphan: the background sleep re-parents to us (the subreaper) and its exit, which
        // nobody subscribed to, arrives on the unsubscribed channel with 128+signal / code.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "sleep 0.2 & echo $!"])
            .stdout(Stdio::piped());
        let mut s = ReaperSpawner.spawn(cmd).expect("spawn");
        let mut out = Vec::new();
        {
            use std::io::Read;
            let fd = s.stdout.take().expect("stdout");
            std::fs::File::from(fd).read_to_end(&mut out).expect("read");
        }
        let orphan: u32 = String::from_utf8_lossy(&out)
            .trim()
            .parse()
            .expect("orphan pid");
        assert_eq!(s.exit.await.expect("status").code(), Some(0));
        let exit = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = others.recv().await.expect("channel open");
                if e.pid == orphan {
                    return e;
                }
            }
        })
        .await
        .expect("orphan exit routed to the unsubscribed channel");
        assert_eq!(exit.status, 0);
    });
}
