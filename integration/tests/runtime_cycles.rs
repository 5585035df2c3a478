//! Churn (issue 6 "Done when" 5): 100 create → start → wait → delete cycles (`ctr run --rm`)
//! at concurrency 4 leave no mounts, fifos, sockets, bundles, work dirs, shim processes or
//! zombies behind.

mod runtime_common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime_common::{zombie_children, Env, Shim};
use sha2::Digest;

const CYCLES: usize = 100;
const CONCURRENCY: usize = 4;

/// The socket a runc v2 shim listens on for `ns/id` under daemon `address`
/// (containerd `shim.SocketAddress`: sha256 of `<address>/<ns>/<id>` in /run/containerd/s).
fn shim_socket(address: &Path, ns: &str, id: &str) -> PathBuf {
    let key = format!("{}/{ns}/{id}", address.display());
    Path::new("/run/containerd/s").join(hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

fn files_named(dir: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(prefix) {
            out.push(p.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            files_named(&p, prefix, out);
        }
    }
}

fn churn(shim: Shim, test: &str) {
    let Some(env) = Env::start(shim, test, "") else {
        return;
    };
    // Unique per test: both churn tests run at once in this process and share /run/containerd/fifo.
    let prefix = format!(
        "cyc{}{}-",
        std::process::id(),
        if shim == Shim::Ours { "o" } else { "g" }
    );
    // The leftover checks below look in the right places: a live task has its socket.
    let probe = format!("{prefix}probe");
    env.ctr_ok(&["run", "-d", &env.image, &probe, "sleep", "100"]);
    env.wait_status(&probe, "RUNNING", Duration::from_secs(10));
    let sock = shim_socket(&env.d.address(), env.d.namespace(), &probe);
    assert!(
        sock.exists(),
        "shim socket of a live task at {}",
        sock.display()
    );
    env.ctr_ok(&["t", "kill", "-s", "9", &probe]);
    env.wait_status(&probe, "STOPPED", Duration::from_secs(10));
    env.ctr_ok(&["t", "rm", &probe]);
    env.ctr_ok(&["c", "rm", &probe]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!sock.exists(), "socket removed with the task");
    let started = Instant::now();
    let ctr_stderr = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for worker in 0..CONCURRENCY {
            let env = &env;
            let prefix = &prefix;
            let ctr_stderr = &ctr_stderr;
            s.spawn(move || {
                for i in (worker..CYCLES).step_by(CONCURRENCY) {
                    let id = format!("{prefix}{i}");
                    let o = env.ctr(&["run", "--rm", &env.image, &id, "echo", &id]);
                    let (out, err) = (
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr),
                    );
                    assert!(o.status.success(), "ctr run {id}: {err}");
                    assert_eq!(out.trim(), id, "output of {id}");
                    if !err.trim().is_empty() {
                        ctr_stderr
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("{id}: {err}"));
                    }
                }
            });
        }
    });
    eprintln!(
        "{CYCLES} cycles at concurrency {CONCURRENCY}: {:?}",
        started.elapsed()
    );

    assert!(
        env.ctr_ok(&["c", "ls", "-q"]).trim().is_empty(),
        "containers left"
    );
    assert!(
        env.ctr_ok(&["t", "ls", "-q"]).trim().is_empty(),
        "tasks left"
    );
    env.assert_nothing_left();
    let ns = env.d.namespace().to_string();
    let work = env.d.root().join("io.containerd.runtime.v2.task").join(&ns);
    let work_left: Vec<_> = std::fs::read_dir(&work)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(work_left.is_empty(), "work dirs left: {work_left:?}");
    let sockets: Vec<PathBuf> = (0..CYCLES)
        .map(|i| shim_socket(&env.d.address(), &ns, &format!("{prefix}{i}")))
        .filter(|p| p.exists())
        .collect();
    assert!(sockets.is_empty(), "shim sockets left: {sockets:?}");
    let mut fifos = Vec::new();
    files_named(Path::new("/run/containerd/fifo"), &prefix, &mut fifos);
    assert!(
        fifos.is_empty(),
        "fifos left: {fifos:?}; ctr warnings: {:?}",
        ctr_stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    );
    // Orphaned shims re-parent to the test process (the subreaper), whose reaper collects
    // them: nothing stays a zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !zombie_children().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        zombie_children().is_empty(),
        "zombies: {:?}",
        zombie_children()
    );
    let log = env.d.logs();
    assert!(!log.contains("panicked"), "berthd panicked:\n{log}");
}

#[test]
fn hundred_run_rm_cycles_at_concurrency_4_leave_nothing_with_our_shim() {
    churn(
        Shim::Ours,
        "hundred_run_rm_cycles_at_concurrency_4_leave_nothing_with_our_shim",
    );
}

#[test]
fn hundred_run_rm_cycles_at_concurrency_4_leave_nothing_with_debian_go_shim() {
    churn(
        Shim::DebianGo,
        "hundred_run_rm_cycles_at_concurrency_4_leave_nothing_with_debian_go_shim",
    );
}
